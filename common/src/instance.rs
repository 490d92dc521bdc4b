//! An instance on disk: its directories, the pid lock and the control socket.
//!
//! Layout (Postfix's, with the master's own files in a root-only directory):
//!
//! ```text
//! queue_directory/            root      0755
//!     private/                mail_owner 0700   unix endpoints for the mail owner
//!     public/                 mail_owner 0755   unix endpoints for anyone
//!     incoming/ active/ deferred/ hold/ corrupt/
//!                             mail_owner 0700   the queue (see postern-queue)
//!     slots/                  mail_owner 0700   submit's per-uid slot locks
//!     pid/                    root      0755
//!         master.pid          the pid and configuration of the master
//!                             using this queue, locked (fs2) while it runs
//! data_directory/             root      0755
//!     master/                 root      0700
//!         master.pid          the pid, locked (fs2) while the master runs
//!         master.control      the control socket (status), root only
//! ```
//!
//! In a Postfix instance (master.cf runs Postfix's daemons:
//! `postern_conf::programs`) Postfix's layout applies instead: Postfix's
//! `postfix check` creates the queue (as `postfix start` does),
//! `data_directory` is the mail owner's (0700; the master holds
//! `data_directory/master.lock` there as Postfix's master does, see
//! [`lock_postfix_data`]), and the master's own files move to
//! `queue_directory/pid/postern/` (root 0700), under directories that are
//! root's in Postfix's layout too.
//!
//! The pid file and the control socket live in directories only root can
//! change (unlike Postfix's mail-owner-owned data_directory), so that the
//! mail owner can neither point `postern stop` at another process nor make
//! root change a file of its choosing; `postern stop`, `reload` and `status`
//! verify that before they trust the pid file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::account::Account;
use fs2::FileExt;
use postern_conf::embedded::Layout;
use postern_conf::{params, Config, Source, DEFAULT_CONFIG_DIR};

/// Which configuration a command uses, the one rule of `postern`,
/// `sendmail` and `postern-queue`: `explicit` (`-c`, `-C`), else the first
/// of the environment variables `vars` that is set and not empty, else
/// the system's configuration directory when it holds a main.cf, else the
/// embedded configuration with the system layout (everyone addresses the
/// same instance, root or not, as sendmail does).
pub fn choose_source(explicit: Option<PathBuf>, vars: &[&str]) -> Source {
    let from_env = || {
        vars.iter()
            .find_map(|v| std::env::var_os(v).filter(|d| !d.is_empty()))
            .map(PathBuf::from)
    };
    if let Some(dir) = explicit.or_else(from_env) {
        return Source::Dir(dir);
    }
    let default = Path::new(DEFAULT_CONFIG_DIR);
    if crate::check::has_main_cf(default) {
        return Source::Dir(default.to_path_buf());
    }
    Source::Embedded(Layout::system())
}

/// Where an instance keeps the master's own files.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `data_directory/master`.
    pub master_dir: PathBuf,
    /// The pid lock file.
    pub pid_file: PathBuf,
    /// The control socket.
    pub control: PathBuf,
}

impl Paths {
    /// The paths of `config`'s instance.
    pub fn of(config: &Config) -> Self {
        let master_dir = if config.postfix_instance() {
            Path::new(config.text(params::QUEUE_DIRECTORY)).join("pid/postern")
        } else {
            Path::new(config.text(params::DATA_DIRECTORY)).join("master")
        };
        Paths {
            pid_file: master_dir.join("master.pid"),
            control: master_dir.join("master.control"),
            master_dir,
        }
    }
}

/// Creates (or fixes the owner and mode of) one directory; returns true if
/// it had to be created.
fn ensure_dir(path: &Path, uid: u32, gid: u32, mode: u32) -> Result<bool, String> {
    let created = match std::fs::symlink_metadata(path) {
        Ok(md) if md.is_dir() => false,
        Ok(_) => return Err(format!("{} exists and is not a directory", path.display())),
        Err(_) => {
            std::fs::create_dir_all(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            true
        }
    };
    let md = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if md.uid() != uid || md.gid() != gid {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into()))
            .map_err(|e| format!("cannot chown {}: {e}", path.display()))?;
    }
    if md.mode() & 0o7777 != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot chmod {}: {e}", path.display()))?;
    }
    Ok(created)
}

/// Creates the instance's directories with the right owners and modes;
/// returns the ones it created.
pub fn ensure_directories(config: &Config, owner: &Account) -> Result<Vec<PathBuf>, String> {
    let queue = Path::new(config.text(params::QUEUE_DIRECTORY));
    let data = Path::new(config.text(params::DATA_DIRECTORY));
    let paths = Paths::of(config);
    let queues =
        ["incoming", "active", "deferred", "hold", "corrupt", "slots"].map(|q| queue.join(q));
    let mut plan: Vec<(&Path, u32, u32, u32)> = Vec::new();
    let pid_dir = queue.join("pid");
    if config.postfix_instance() {
        // The rest is Postfix's to create (`postfix check`, run by the master).
        plan.extend([
            (queue, 0, 0, 0o755),
            (pid_dir.as_path(), 0, 0, 0o755),
            (paths.master_dir.as_path(), 0, 0, 0o700),
        ]);
        let mut created = Vec::new();
        for (path, uid, gid, mode) in plan {
            if ensure_dir(path, uid, gid, mode)? {
                created.push(path.to_path_buf());
            }
        }
        return Ok(created);
    }
    let (private, public) = (queue.join("private"), queue.join("public"));
    plan.push((queue, 0, 0, 0o755));
    plan.push((&private, owner.uid, owner.gid, 0o700));
    plan.push((&public, owner.uid, owner.gid, 0o755));
    for q in &queues {
        plan.push((q, owner.uid, owner.gid, 0o700));
    }
    plan.push((data, 0, 0, 0o755));
    plan.push((&paths.master_dir, 0, 0, 0o700));
    let mut created = Vec::new();
    for (path, uid, gid, mode) in plan {
        if ensure_dir(path, uid, gid, mode)? {
            created.push(path.to_path_buf());
        }
    }
    Ok(created)
}

/// The held pid lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct PidLock {
    _file: File,
}

/// Why the lock could not be taken.
#[derive(Debug)]
pub enum LockError {
    /// Another master holds it: which one (its pid and configuration).
    Running(String),
    /// Something else went wrong.
    Io(String),
}

fn open_pid_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
}

/// A lock file's holder: the pid (first line) and what it runs (second
/// line, e.g. "configuration directory /etc/postern").
fn read_holder(file: &mut File) -> (Option<u32>, Option<String>) {
    let mut s = String::new();
    if file.rewind().is_err() || file.read_to_string(&mut s).is_err() {
        return (None, None);
    }
    let mut lines = s.lines();
    let pid = lines.next().and_then(|l| l.trim().parse().ok());
    let what = lines.next().map(str::to_string).filter(|l| !l.is_empty());
    (pid, what)
}

fn read_pid(file: &mut File) -> Option<u32> {
    read_holder(file).0
}

/// "master pid N, configuration directory D" for a held lock.
fn holder_text(file: &mut File) -> String {
    match read_holder(file) {
        (Some(pid), Some(what)) => format!("master pid {pid}, {what}"),
        (Some(pid), None) => format!("master pid {pid}"),
        _ => "master pid unknown".to_string(),
    }
}

/// Takes an exclusive lock on `path` and writes this process's pid and
/// `what` into it.
fn lock_file(path: &Path, what: &str) -> Result<PidLock, LockError> {
    let mut file = open_pid_file(path)
        .map_err(|e| LockError::Io(format!("cannot open {}: {e}", path.display())))?;
    if FileExt::try_lock_exclusive(&file).is_err() {
        return Err(LockError::Running(holder_text(&mut file)));
    }
    let write = |f: &mut File| -> std::io::Result<()> {
        f.set_len(0)?;
        f.rewind()?;
        writeln!(f, "{}\n{what}", std::process::id())?;
        f.sync_all()
    };
    write(&mut file).map_err(|e| LockError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(PidLock { _file: file })
}

/// Takes the instance lock and writes this process's pid and `what` (which
/// configuration it runs).
pub fn acquire(paths: &Paths, what: &str) -> Result<PidLock, LockError> {
    lock_file(&paths.pid_file, what)
}

/// The queue directory's lock, `queue_directory/pid/master.pid` (as
/// Postfix's): one master per queue, whatever its data_directory.
pub fn lock_queue(queue_directory: &Path, what: &str) -> Result<PidLock, LockError> {
    let dir = queue_directory.join("pid");
    ensure_dir(&dir, 0, 0, 0o755).map_err(LockError::Io)?;
    lock_file(&dir.join("master.pid"), what)
}

/// `data_directory/master.lock` of a Postfix instance, opened as the mail
/// owner and locked as Postfix's master locks it (one master per data
/// directory); held until dropped.
pub fn lock_postfix_data(config: &Config, owner: &Account) -> Result<PidLock, LockError> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = Path::new(config.text(params::DATA_DIRECTORY)).join("master.lock");
    let who = postern_sys::privilege::MailOwner {
        uid: owner.uid,
        gid: owner.gid,
    };
    let file = postern_sys::privilege::as_filesystem_user(who, 0o077, || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&path)
    })
    .map_err(|e| {
        LockError::Io(format!(
            "cannot open {} as the mail owner: {e}",
            path.display()
        ))
    })?
    .map_err(|e| LockError::Io(format!("cannot open {}: {e}", path.display())))?;
    if FileExt::try_lock_exclusive(&file).is_err() {
        return Err(LockError::Running(format!(
            "{} is locked by another master",
            path.display()
        )));
    }
    Ok(PidLock { _file: file })
}

/// The pid of the running master, if one holds the lock. The pid file, its
/// directory and their parents must be root's (else nothing is trusted).
pub fn running_master(paths: &Paths) -> Option<u32> {
    use std::os::unix::fs::OpenOptionsExt;
    // No directory yet: never started here, so not running.
    if !paths.master_dir.exists() {
        return None;
    }
    if let Err(why) = postern_sys::trust::root_controlled(&paths.master_dir) {
        log::warn!("not trusting {}: {why}", paths.pid_file.display());
        eprintln!(
            "postern: warning: not trusting {}: {why}",
            paths.pid_file.display()
        );
        return None;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(&paths.pid_file)
        .ok()?;
    let md = file.metadata().ok()?;
    if md.uid() != 0 || !md.is_file() {
        eprintln!(
            "postern: warning: not trusting {}: not a regular file owned by root",
            paths.pid_file.display()
        );
        return None;
    }
    if FileExt::try_lock_shared(&file).is_ok() {
        let _ = FileExt::unlock(&file);
        return None;
    }
    read_pid(&mut file)
}
/// The directory of private or public endpoints.
pub fn endpoint_dir(config: &Config, private: bool) -> PathBuf {
    Path::new(config.text(params::QUEUE_DIRECTORY)).join(if private { "private" } else { "public" })
}

/// The command line that starts a master for `source` (used by `postern
/// start`; the master parses it back).
pub fn master_args(
    source: &postern_conf::Source,
    foreground: bool,
    ready_fd: Option<std::os::fd::RawFd>,
) -> Vec<String> {
    let mut v = crate::server::source_args(source);
    if foreground {
        v.push("--foreground".into());
    }
    if let Some(fd) = ready_fd {
        v.extend(["--ready-fd".into(), fd.to_string()]);
    }
    v
}
