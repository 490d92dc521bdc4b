//! Delivery to an mbox file, as the recipient (the caller has already
//! switched to the user's ids).
//!
//! The file is opened with `O_NOFOLLOW` (created 0600 when missing, in an
//! existing directory), then checked with `fstat`: a regular file with one
//! link, owned by the user (with `strict_mailbox_ownership`). Anything else
//! is refused and left untouched. It is locked as `mailbox_delivery_lock`
//! says (`fcntl`, `flock`, `dotlock`; bounded attempts, then a deferral),
//! each copy is appended under the lock (`From ` line, `Return-Path:`,
//! `Delivered-To:`, body with `From ` lines quoted as `>From `, a blank
//! line), streamed from the queue file in pieces by
//! `postern_common::mail::copy_body`, and the file is fsynced before any
//! copy is reported delivered. An uncertain retry reads the mailbox in
//! pieces too: memory does not grow with the message or the mailbox.
//! Several copies for the same mailbox (one request carrying several
//! messages) share the open, the lock and the fsync. On any error the file
//! is truncated back to its size before the failed write (or, if the fsync
//! fails, before the first copy): a mailbox is never left half-written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use postern_common::handoff::RecipientStatus;
use postern_common::mail::CHUNK;

use crate::message::{Copy, Earlier};

/// Locking methods, from `mailbox_delivery_lock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lock {
    /// POSIX record lock on the whole file.
    Fcntl,
    /// BSD lock.
    Flock,
    /// `mailbox.lock` beside the mailbox.
    Dotlock,
}

/// How to lock and how long to try.
#[derive(Debug, Clone)]
pub struct LockPolicy {
    /// Methods, all applied.
    pub methods: Vec<Lock>,
    /// Attempts before giving up (`deliver_lock_attempts`).
    pub attempts: u32,
    /// The longest pause between attempts (`deliver_lock_delay`).
    pub delay: Duration,
    /// A dotlock older than this is removed (`stale_lock_time`).
    pub stale: Duration,
}

/// What a delivery needs besides the message.
#[derive(Debug, Clone)]
pub struct Target<'a> {
    /// The mailbox path.
    pub path: &'a Path,
    /// The uid it must belong to.
    pub uid: u32,
    /// `strict_mailbox_ownership`.
    pub strict_owner: bool,
    /// `mailbox_size_limit` (0: none).
    pub size_limit: u64,
    /// Locking.
    pub lock: &'a LockPolicy,
}

fn defer(why: String) -> RecipientStatus {
    RecipientStatus::deferred("4.2.0", why)
}

/// Delivers `copies` to the mailbox, in order, under one lock and with one
/// fsync; one status per copy.
pub fn deliver_many(target: &Target<'_>, copies: &[Copy<'_>]) -> Vec<RecipientStatus> {
    // The mailbox is opened before it is locked: a mail reader that held
    // the lock may meanwhile have removed the file or renamed a new one into
    // its place. What is written must be the file that the path names once
    // the lock is held, else the copy would go to an unlinked inode.
    for _ in 0..3 {
        let file = match open_checked(target) {
            Ok(f) => f,
            Err(status) => return vec![status; copies.len()],
        };
        let guard = match lock(&file, target.path, target.lock) {
            Ok(g) => g,
            Err(why) => return vec![defer(why); copies.len()],
        };
        if !still_named_by(&file, target.path) {
            drop(guard);
            continue;
        }
        let statuses = append(&file, target, copies);
        drop(guard);
        return statuses;
    }
    vec![
        defer(format!(
            "mailbox {} was replaced or removed while it was being locked, three times",
            target.path.display()
        ));
        copies.len()
    ]
}

/// Delivers `copies` to a mailbox that root opened and checked
/// ([`open_for_root`]) and handed to this process, which runs as
/// `default_privs` and could not open it: as [`deliver_many`], except that
/// a mailbox replaced while it was being locked is not opened again here
/// (the delivery is deferred, and the next attempt opens it afresh).
pub fn deliver_opened(
    file: &File,
    target: &Target<'_>,
    copies: &[Copy<'_>],
) -> Vec<RecipientStatus> {
    let guard = match lock(file, target.path, target.lock) {
        Ok(g) => g,
        Err(why) => return vec![defer(why); copies.len()],
    };
    if !still_named_by(file, target.path) {
        drop(guard);
        let why = format!(
            "mailbox {} was replaced or removed while it was being locked",
            target.path.display()
        );
        return vec![defer(why); copies.len()];
    }
    let statuses = append(file, target, copies);
    drop(guard);
    statuses
}

/// Opens root's mailbox for a delivery that will run as `default_privs`:
/// called as root. The mailbox is created, when missing, owned by root
/// with mode 0600; whatever is there must be a regular file with one link
/// owned by root (a file that someone else placed at that name is refused).
pub fn open_for_root(target: &Target<'_>) -> Result<File, RecipientStatus> {
    let created = OpenOptions::new()
        .read(true)
        .append(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(target.path);
    match created {
        Ok(f) => {
            // Created with root's uid and this process's group: root's.
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(0), Some(0)) {
                return Err(defer(format!(
                    "cannot give mailbox {} to root: {e}",
                    target.path.display()
                )));
            }
            log::info!("created mailbox {} for root", target.path.display());
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(_) => {} // open_checked below says what is wrong
    }
    open_checked(&Target {
        uid: 0,
        strict_owner: true,
        ..target.clone()
    })
}

/// Whether `path` (not followed) is still the open `file`, with one link.
fn still_named_by(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::symlink_metadata(path)) {
        (Ok(open), Ok(named)) => {
            open.dev() == named.dev() && open.ino() == named.ino() && open.nlink() == 1
        }
        _ => false,
    }
}

/// Opens the mailbox (created when missing) and checks what was opened.
fn open_checked(target: &Target<'_>) -> Result<File, RecipientStatus> {
    let path = target.path;
    let shown = path.display();
    let file = match OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(RecipientStatus::bounced(
                "5.2.0",
                format!("mailbox {shown} is a symbolic link: refused"),
            ))
        }
        Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {
            return Err(RecipientStatus::bounced(
                "5.2.0",
                format!("mailbox {shown} is a directory: refused"),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(RecipientStatus::bounced(
                "5.2.0",
                format!("cannot open mailbox {shown}: {e}"),
            ))
        }
        Err(e) => return Err(defer(format!("cannot open mailbox {shown}: {e}"))),
    };
    let md = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Err(defer(format!("cannot examine mailbox {shown}: {e}"))),
    };
    if !md.file_type().is_file() {
        return Err(RecipientStatus::bounced(
            "5.2.0",
            format!("mailbox {shown} is not a regular file: refused"),
        ));
    }
    if md.nlink() != 1 {
        return Err(RecipientStatus::bounced(
            "5.2.0",
            format!("mailbox {shown} has {} hard links: refused", md.nlink()),
        ));
    }
    if target.strict_owner && md.uid() != target.uid {
        return Err(RecipientStatus::bounced(
            "5.2.0",
            format!(
                "mailbox {shown} is owned by uid {}, not the recipient (uid {}): refused",
                md.uid(),
                target.uid
            ),
        ));
    }
    // Back to blocking writes (O_NONBLOCK only kept open() from hanging on a fifo).
    let _ = nix::fcntl::fcntl(
        file.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_APPEND),
    );
    Ok(file)
}

fn append(file: &File, target: &Target<'_>, copies: &[Copy<'_>]) -> Vec<RecipientStatus> {
    let shown = target.path.display();
    let original = match file.metadata() {
        Ok(m) => m.len(),
        Err(e) => return vec![defer(format!("cannot examine mailbox {shown}: {e}")); copies.len()],
    };
    // The end of the file must be a message boundary before anything is
    // appended: a copy that a killed delivery process left unfinished is
    // cut away (its delivery is uncertain and will be made again, whole),
    // and any other unterminated last line gets its newline, so that the
    // next `From ` line starts a line of its own.
    let original = match repair_tail(file, original) {
        Ok(Some((len, note))) => {
            log::warn!("mailbox {shown}: {note}");
            len
        }
        Ok(None) => original,
        Err(e) => {
            return vec![
                defer(format!("cannot repair the end of mailbox {shown}: {e}"));
                copies.len()
            ]
        }
    };
    // An earlier attempt may have written an uncertain copy before the
    // queue manager heard back: look for it (under the lock) first, reading
    // the mailbox in pieces.
    let mut statuses: Vec<Option<RecipientStatus>> = vec![None; copies.len()];
    let mut original = original;
    for (i, copy) in copies.iter().enumerate().filter(|(_, c)| c.uncertain) {
        let earlier = match copy.in_mbox(file, original) {
            Ok(e) => e,
            Err(e) => {
                return vec![defer(format!("cannot read mailbox {shown}: {e}")); copies.len()]
            }
        };
        match earlier {
            Earlier::Whole => {
                statuses[i] = Some(RecipientStatus::delivered(format!(
                    "already delivered to mailbox {shown} by an earlier attempt"
                )))
            }
            // A killed attempt's unfinished write: cut it away (the lock
            // is held) and write the copy whole below.
            Earlier::Truncated { at } => {
                if let Err(e) = file.set_len(at).and_then(|()| file.sync_data()) {
                    let why = format!(
                        "cannot remove an unfinished earlier copy from mailbox {shown}: {e}"
                    );
                    return vec![defer(why); copies.len()];
                }
                log::warn!(
                    "removed an unfinished copy of {} for {} from mailbox {shown} ({} bytes at offset {at})",
                    copy.queue_id,
                    copy.recipient,
                    original - at
                );
                original = at;
            }
            Earlier::None => {}
        }
    }
    let mut newline_first = match ends_mid_line(file, original) {
        Ok(b) => b,
        Err(e) => return vec![defer(format!("cannot read mailbox {shown}: {e}")); copies.len()],
    };
    let mut end = original;
    for (i, copy) in copies.iter().enumerate() {
        if statuses[i].is_some() {
            continue;
        }
        let len = match copy.mbox_len() {
            Ok(n) => n + u64::from(newline_first),
            Err(e) => {
                statuses[i] = Some(defer(format!(
                    "cannot read the message of {}: {e}",
                    copy.queue_id
                )));
                continue;
            }
        };
        if target.size_limit > 0 && end + len > target.size_limit {
            statuses[i] = Some(RecipientStatus::bounced(
                "5.2.2",
                format!(
                    "mailbox {shown} would exceed mailbox_size_limit ({} bytes)",
                    target.size_limit
                ),
            ));
            continue;
        }
        // Streamed from the queue file in pieces of CHUNK bytes (the lock
        // is held: no other writer comes between them).
        let written = {
            let mut w = std::io::BufWriter::with_capacity(CHUNK, file);
            let first: &[u8] = if newline_first { b"\n" } else { b"" };
            w.write_all(first)
                .and_then(|()| copy.write_mbox(&mut w))
                .and_then(|n| w.flush().map(|()| n + first.len() as u64))
        };
        let failed = match written {
            Ok(n) if n == len => None,
            Ok(n) => Some(format!("wrote {n} bytes where {len} were due")),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = failed {
            // This copy and the ones after it are not delivered; the
            // copies before it still get their fsync below.
            let note = restore(file, end);
            let why = format!("cannot write mailbox {shown}: {e}; {note}");
            for s in statuses[i..].iter_mut().filter(|s| s.is_none()) {
                *s = Some(defer(why.clone()));
            }
            break;
        }
        end += len;
        newline_first = false;
    }
    // One fsync for every copy written; if it fails, none of them counts
    // and the file goes back to its size before the first.
    let failed = match end > original {
        true => file.sync_data().err().map(|e| {
            format!(
                "cannot write mailbox {shown}: {e}; {}",
                restore(file, original)
            )
        }),
        false => None,
    };
    statuses
        .into_iter()
        .map(|s| match (s, &failed) {
            (Some(s), _) => s,
            (None, None) => RecipientStatus::delivered(format!("delivered to mailbox {shown}")),
            (None, Some(why)) => defer(why.clone()),
        })
        .collect()
}

/// How far back from the end [`repair_tail`] looks for the start of the
/// last message.
const TAIL_WINDOW: u64 = 1 << 20;

/// Makes the end of an mbox of `len` bytes a message boundary (see
/// [`append`]); returns the new length and what was done, if anything.
fn repair_tail(file: &File, len: u64) -> std::io::Result<Option<(u64, String)>> {
    use std::os::unix::fs::FileExt;
    if len == 0 {
        return Ok(None);
    }
    // The usual case, read from two bytes: the mailbox ends with a whole
    // message (and its blank line).
    let mut end = [0u8; 2];
    let from = len.saturating_sub(2);
    file.read_exact_at(&mut end[..(len - from) as usize], from)?;
    if end == *b"\n\n" || (len == 1 && end[0] == b'\n') {
        return Ok(None);
    }
    let start = len.saturating_sub(TAIL_WINDOW);
    let mut tail = vec![0u8; (len - start) as usize];
    file.read_exact_at(&mut tail, start)?;
    // The last message: after the last "\nFrom " (or the file's start).
    let at = tail
        .windows(6)
        .rposition(|w| w == b"\nFrom ")
        .map(|i| i + 1)
        .or_else(|| (start == 0 && tail.starts_with(b"From ")).then_some(0));
    if let Some(at) = at {
        let last = &tail[at..];
        let headers = last
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&last[last.len()..], |nl| &last[nl + 1..]);
        // postern's own copy: Return-Path, then Delivered-To, then the
        // message; anything else is another program's and is kept.
        let ours = headers.starts_with(b"Return-Path: <")
            && headers
                .iter()
                .position(|&b| b == b'\n')
                .is_some_and(|nl| headers[nl + 1..].starts_with(b"Delivered-To: "));
        // Cut only what no program would have left: postern's copy ending
        // mid-line (a write cut short), or a `From ` line with nothing
        // after it. A last message that ends with a newline is kept, even
        // without the blank line: a mail reader may have written it so.
        if (ours && !tail.ends_with(b"\n")) || headers.is_empty() {
            let new_len = start + at as u64;
            file.set_len(new_len)?;
            file.sync_data()?;
            return Ok(Some((
                new_len,
                format!(
                    "removed an unfinished copy ({} bytes at offset {new_len}) that a killed delivery left",
                    len - new_len
                ),
            )));
        }
    }
    Ok(None)
}

/// Whether the mbox of `len` bytes ends in the middle of a line (another
/// program's last message without its newline): the next copy is then
/// written after a newline, in the same write, so that its `From ` line
/// starts a line of its own (and a failed write takes both back).
fn ends_mid_line(file: &File, len: u64) -> std::io::Result<bool> {
    use std::os::unix::fs::FileExt;
    if len == 0 {
        return Ok(false);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(last[0] != b'\n')
}

/// Truncates the mailbox back to `size` (and syncs that); says how it went.
fn restore(file: &File, size: u64) -> String {
    match file.set_len(size).and_then(|()| file.sync_data()) {
        Ok(()) => "truncated back to its original size".to_string(),
        Err(t) => format!("COULD NOT truncate it back to {size} bytes: {t}"),
    }
}

/// Locks held for one delivery; released on drop.
struct Guard<'a> {
    file: &'a File,
    dotlock: Option<PathBuf>,
    fcntl: bool,
    flock: bool,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.fcntl {
            let _ = fcntl_lock(self.file, libc::F_UNLCK as i16);
        }
        if self.flock {
            let _ = fs2::FileExt::unlock(self.file);
        }
        if let Some(p) = &self.dotlock {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn fcntl_lock(file: &File, kind: i16) -> nix::Result<()> {
    let fl = libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    nix::fcntl::fcntl(file.as_raw_fd(), nix::fcntl::FcntlArg::F_SETLK(&fl)).map(|_| ())
}

fn lock<'a>(file: &'a File, path: &Path, policy: &LockPolicy) -> Result<Guard<'a>, String> {
    let mut guard = Guard {
        file,
        dotlock: None,
        fcntl: false,
        flock: false,
    };
    // Postfix's budget, deliver_lock_attempts x deliver_lock_delay, spent in
    // short pauses: a lock held for a moment costs a moment, not a second.
    let started = Instant::now();
    let budget = policy.delay * policy.attempts.max(1);
    let cap = policy.delay.min(Duration::from_millis(25));
    let mut pause = Duration::from_millis(1);
    // A user who may not write the spool directory (Debian's /var/mail is
    // root:mail 2775) cannot make a dotlock there; with another method in
    // force the delivery goes on under that lock, as mail readers use it too.
    let mut no_dotlock = false;
    let others = policy.methods.iter().any(|m| *m != Lock::Dotlock);
    for attempt in 1.. {
        let mut busy = None;
        for m in &policy.methods {
            let already = match m {
                Lock::Fcntl => guard.fcntl,
                Lock::Flock => guard.flock,
                Lock::Dotlock => guard.dotlock.is_some() || no_dotlock,
            };
            if already {
                continue;
            }
            match m {
                Lock::Fcntl => match fcntl_lock(file, libc::F_WRLCK as i16) {
                    Ok(()) => guard.fcntl = true,
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EACCES) => {
                        busy = Some("fcntl lock")
                    }
                    Err(e) => return Err(format!("cannot fcntl-lock {}: {e}", path.display())),
                },
                Lock::Flock => match fs2::FileExt::try_lock_exclusive(file) {
                    Ok(()) => guard.flock = true,
                    Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                        busy = Some("flock lock")
                    }
                    Err(e) => return Err(format!("cannot flock {}: {e}", path.display())),
                },
                Lock::Dotlock => match dotlock(path, policy.stale) {
                    Ok(Some(p)) => guard.dotlock = Some(p),
                    Ok(None) => busy = Some("dotlock"),
                    Err(DotlockError::Denied(e)) if others => {
                        log::warn!("{e}: relying on the other lock methods");
                        no_dotlock = true;
                    }
                    Err(DotlockError::Denied(e) | DotlockError::Other(e)) => return Err(e),
                },
            }
            if busy.is_some() {
                break;
            }
        }
        let Some(what) = busy else { return Ok(guard) };
        if started.elapsed() + pause > budget {
            let holder = match what {
                "dotlock" => dotlock_holder(path),
                _ => "another process".to_string(),
            };
            return Err(format!(
                "mailbox {} is locked ({what} held by {holder}) after {attempt} attempts in {:.1}s",
                path.display(),
                started.elapsed().as_secs_f64()
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(cap);
    }
    Err(format!("mailbox {} stayed locked", path.display()))
}

/// Who holds the dotlock of `path`, for the deferral's reason: the pid in
/// the lock file, or that it names none (then only stale_lock_time ends it).
fn dotlock_holder(path: &Path) -> String {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let text = std::fs::read_to_string(&lock).unwrap_or_default();
    let age = std::fs::symlink_metadata(&lock)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or_else(String::new, |a| format!(", made {}s ago", a.as_secs()));
    match text.trim().parse::<i32>() {
        Ok(pid) => format!("process {pid}, which is alive ({}{age})", lock.display()),
        Err(_) => format!(
            "another program ({} names no process{age}; removed after stale_lock_time)",
            lock.display()
        ),
    }
}

/// Creates `path.lock` exclusively; `Ok(None)` when someone else holds it.
/// A lock older than `stale` is removed first.
enum DotlockError {
    /// The directory is not writable by the user.
    Denied(String),
    Other(String),
}

/// The pid written in the lock file `lock` (a regular file, read without
/// following a link or blocking, at most 32 bytes), if the process it
/// names does not exist. An empty or foreign lock, or a live process (or
/// one this user may not signal), gives `None`: only stale_lock_time ends
/// such a lock.
fn dead_maker(lock: &Path) -> Option<i32> {
    use std::io::Read;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(lock)
        .ok()?;
    let md = f.metadata().ok()?;
    if !md.is_file() {
        return None;
    }
    let made = md.modified().ok()?;
    let mut text = String::new();
    f.take(32).read_to_string(&mut text).ok()?;
    let pid: i32 = text.trim().parse().ok().filter(|&p| p > 1)?;
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => Some(pid),
        // A zombie (dead, its parent has not reaped it yet) holds nothing.
        _ if postern_sys::procfs::stat(pid).is_some_and(|s| s.zombie()) => Some(pid),
        // Pids come round again (pid_max may be 32768): a process that
        // started after the lock was made did not make it.
        _ if postern_sys::procfs::started_at(pid)
            .is_some_and(|t| t > made + Duration::from_secs(1)) =>
        {
            Some(pid)
        }
        _ => None,
    }
}

fn dotlock(path: &Path, stale: Duration) -> Result<Option<PathBuf>, DotlockError> {
    let mut name = path.as_os_str().to_os_string();
    name.push(".lock");
    let lock = PathBuf::from(name);
    // The lock holds its maker's pid (as liblockfile writes it), so that
    // the lock of a delivery process killed with SIGKILL is known for what
    // it is at once instead of after stale_lock_time. It never exists
    // without it: the pid is written to `X.lock.<pid>` first, which is then
    // linked to `X.lock` (the link fails if the lock is held) and removed.
    let create_ours = || -> std::io::Result<()> {
        let mut tmp = lock.as_os_str().to_os_string();
        tmp.push(format!(".{}", std::process::id()));
        let tmp = PathBuf::from(tmp);
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .and_then(|mut f| writeln!(f, "{}", std::process::id()));
        let linked = written.and_then(|()| std::fs::hard_link(&tmp, &lock));
        let _ = std::fs::remove_file(&tmp);
        linked
    };
    match create_ours() {
        Ok(()) => Ok(Some(lock)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let old = std::fs::symlink_metadata(&lock)
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > stale);
            let dead = dead_maker(&lock);
            if (old || dead.is_some()) && std::fs::remove_file(&lock).is_ok() {
                match dead {
                    Some(pid) => log::warn!(
                        "removed lock file {} of process {pid}, which no longer exists",
                        lock.display()
                    ),
                    None => log::warn!("removed stale lock file {}", lock.display()),
                }
                return match create_ours() {
                    Ok(()) => Ok(Some(lock)),
                    Err(_) => Ok(None),
                };
            }
            Ok(None)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(DotlockError::Denied(
            format!("cannot create lock file {}: {e}", lock.display()),
        )),
        Err(e) => Err(DotlockError::Other(format!(
            "cannot create lock file {}: {e}",
            lock.display()
        ))),
    }
}

#[cfg(test)]
mod tests {

    /// The end of the mailbox is made a message boundary before a copy is
    /// appended: a postern copy cut mid-line goes, anything else is kept.
    #[test]
    fn an_unfinished_last_message_is_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let whole = "From a  Sat\nReturn-Path: <s>\nDelivered-To: r\n\nbody\n\n";
        let run = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let f = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .unwrap();
            let len = text.len() as u64;
            let r = repair_tail(&f, len).unwrap().map(|(l, _)| l);
            (r, std::fs::read_to_string(&path).unwrap())
        };
        assert_eq!(run(""), (None, String::new()));
        assert_eq!(run(whole), (None, whole.to_string()));
        let cut = format!("{whole}From b  Sat\nReturn-Path: <s>\nDelivered-To: r\n\nbo");
        assert_eq!(run(&cut), (Some(whole.len() as u64), whole.to_string()));
        let from_only = format!("{whole}From b  Sat\n");
        assert_eq!(
            run(&from_only),
            (Some(whole.len() as u64), whole.to_string())
        );
        // Another program's last message without its newline is kept; the
        // next copy is written after a newline (ends_mid_line).
        let foreign = format!("{whole}From x  Sat\nSubject: y\n\nbody");
        assert_eq!(run(&foreign), (None, foreign.clone()));
        let f = File::open(&path).unwrap();
        assert!(ends_mid_line(&f, foreign.len() as u64).unwrap());
        assert!(!ends_mid_line(&f, whole.len() as u64).unwrap());
        // A last message that ends with a newline is left alone.
        let kept = format!("{whole}From b  Sat\nReturn-Path: <s>\nDelivered-To: r\n\nbody\n");
        assert_eq!(run(&kept), (None, kept.clone()));
    }
    use super::*;

    fn copy(body: &[u8]) -> Copy<'static> {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(body).unwrap();
        let message = postern_common::mail::MessageFile::new(file, 0, None).unwrap();
        Copy {
            body: Box::leak(Box::new(message)),
            sender: "s@example.org",
            recipient: "r@example.org",
            arrival: 1_795_245_296,
            queue_id: "Q1",
            uncertain: false,
        }
    }

    /// A dotlock left by a process that no longer exists is taken over at
    /// once; one of a live process, or one without a pid, is respected.
    #[test]
    fn the_dotlock_of_a_dead_process_is_removed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let lock_file = dir.path().join("box.lock");
        let mut gone = std::process::Command::new("true").spawn().unwrap();
        let dead = gone.id();
        gone.wait().unwrap();
        let hour = Duration::from_secs(3600);
        std::fs::write(&lock_file, format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(dotlock(&path, hour), Ok(None)), "a live holder");
        // A live process that started after the lock was made (its pid
        // came round again) did not make it.
        let mut later = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::write(&lock_file, format!("{}\n", later.id())).unwrap();
        File::options()
            .write(true)
            .open(&lock_file)
            .unwrap()
            .set_modified(old)
            .unwrap();
        assert!(matches!(dotlock(&path, hour), Ok(Some(_))), "a reused pid");
        later.kill().unwrap();
        later.wait().unwrap();
        std::fs::write(&lock_file, b"").unwrap();
        assert!(matches!(dotlock(&path, hour), Ok(None)), "no pid");
        std::fs::write(&lock_file, format!("{dead}\n")).unwrap();
        assert!(matches!(dotlock(&path, hour), Ok(Some(_))), "a dead holder");
        // A holder that has exited but is not reaped yet: dead too.
        let mut zombie = std::process::Command::new("true").spawn().unwrap();
        let zpid = zombie.id();
        // Waits for its exit without reaping it (WNOWAIT): a zombie now.
        use nix::sys::wait::{waitid, Id, WaitPidFlag};
        waitid(
            Id::Pid(nix::unistd::Pid::from_raw(zpid as i32)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        )
        .unwrap();
        assert!(postern_sys::procfs::stat(zpid as i32).is_some_and(|s| s.zombie()));
        std::fs::write(&lock_file, format!("{zpid}\n")).unwrap();
        assert!(
            matches!(dotlock(&path, hour), Ok(Some(_))),
            "a zombie holder"
        );
        zombie.wait().unwrap();
        let ours = std::fs::read_to_string(&lock_file).unwrap();
        assert_eq!(ours.trim(), std::process::id().to_string());
    }

    /// A mail reader holding the dotlock replaces the mailbox by rename
    /// while the delivery waits for the lock: the message goes to the new
    /// file, not to the orphaned one.
    #[test]
    fn a_mailbox_replaced_while_locked_is_opened_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        std::fs::write(&path, b"").unwrap();
        let old = File::open(&path).unwrap();
        let lock_file = dir.path().join("box.lock");
        std::fs::write(&lock_file, b"reader\n").unwrap();
        let policy = LockPolicy {
            methods: vec![Lock::Dotlock],
            attempts: 200,
            delay: Duration::from_millis(50),
            stale: Duration::from_secs(500),
        };
        let uid = nix::unistd::Uid::effective().as_raw();
        let (p, pol) = (path.clone(), policy.clone());
        let delivery = std::thread::spawn(move || {
            let target = Target {
                path: &p,
                uid,
                strict_owner: false,
                size_limit: 0,
                lock: &pol,
            };
            deliver_many(&target, &[copy(b"Subject: x\n\nbody\n")])
        });
        // Once the delivery has the old file open (a second descriptor of
        // this process names it) and waits for the dotlock, the reader
        // renames a new mailbox into place and lets go of the lock.
        let opened = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l == path))
                .count()
                >= 2
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !opened() {
            assert!(
                Instant::now() < deadline,
                "the delivery never opened the mailbox"
            );
            std::thread::yield_now();
        }
        let fresh = dir.path().join("box.new");
        std::fs::write(&fresh, b"").unwrap();
        std::fs::rename(&fresh, &path).unwrap();
        std::fs::remove_file(&lock_file).unwrap();
        let statuses = delivery.join().unwrap();
        assert_eq!(
            statuses[0].outcome,
            postern_common::handoff::Outcome::Delivered,
            "{statuses:?}"
        );
        assert_eq!(
            old.metadata().unwrap().len(),
            0,
            "the orphaned file was written"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("From s@example.org ") && text.contains("\nbody\n"),
            "{text}"
        );
    }

    /// Copies are streamed in; an uncertain retry finds the copy already
    /// there, and the size limit counts the quoted copy.
    #[test]
    fn copies_are_streamed_found_again_and_limited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("box");
        let policy = LockPolicy {
            methods: vec![Lock::Fcntl],
            attempts: 1,
            delay: Duration::from_millis(10),
            stale: Duration::from_secs(500),
        };
        let uid = nix::unistd::Uid::effective().as_raw();
        let mut target = Target {
            path: &path,
            uid,
            strict_owner: true,
            size_limit: 0,
            lock: &policy,
        };
        let mut body = b"Received: by h (postern)\n\tid Q1; Sat\nSubject: big\n\n".to_vec();
        for i in 0..30_000 {
            body.extend_from_slice(format!("From line {i}\n").as_bytes());
        }
        let c = copy(&body);
        let delivered = |s: &[RecipientStatus]| {
            s.iter()
                .map(|s| s.outcome == postern_common::handoff::Outcome::Delivered)
                .collect::<Vec<_>>()
        };
        assert_eq!(delivered(&deliver_many(&target, &[c])), [true]);
        let once = std::fs::read(&path).unwrap();
        assert_eq!(once.len() as u64, c.mbox_len().unwrap());
        assert!(once.ends_with(b">From line 29999\n\n"));
        let again = deliver_many(
            &target,
            &[Copy {
                uncertain: true,
                ..c
            }],
        );
        assert!(again[0].reason.contains("already delivered"), "{again:?}");
        assert_eq!(std::fs::read(&path).unwrap(), once);
        target.size_limit = once.len() as u64 * 2 - 1;
        let limited = deliver_many(&target, &[c]);
        assert_eq!(limited[0].dsn, "5.2.2", "{limited:?}");
        assert_eq!(std::fs::read(&path).unwrap(), once);
        // A copy cut short at the end is cut away and written again whole.
        std::fs::write(&path, &once[..once.len() - 1000]).unwrap();
        target.size_limit = 0;
        let redone = deliver_many(
            &target,
            &[Copy {
                uncertain: true,
                ..c
            }],
        );
        assert_eq!(delivered(&redone), [true], "{redone:?}");
        assert_eq!(std::fs::read(&path).unwrap(), once);
    }
}
