//! # postern-tests
//!
//! **Name**: postern-tests — the end-to-end test harness.
//!
//! **Description**: runs the real `postern` binaries, built by the same
//! `cargo test --workspace` run (each binary crate has integration tests of
//! its own, so cargo builds its binaries before any test runs), from
//! `target/<profile>/`. Every command runs under a deadline and is killed if
//! it passes it; nothing waits on a fixed sleep.
//!
//! **Security**: tests run as root on the test machine and create temporary
//! directories only; what they start they kill.

pub mod certs;
pub mod remote;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long any one command may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The directory the workspace's binaries are built into.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

/// The path of the workspace binary `name`, which must have been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` so that cargo builds every binary",
        path.display()
    );
    path
}

/// What a finished command left.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion with standard input closed, within [`DEADLINE`].
pub fn run(cmd: &mut Command) -> Outcome {
    finish(cmd.stdin(Stdio::null()))
}

/// Spawns `cmd` (standard input already set), collects its output, and
/// waits for it within [`DEADLINE`], killing it past that.
fn finish(cmd: &mut Command) -> Outcome {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = String::new();
        let mut stderr = String::new();
        let _ = out.read_to_string(&mut stdout);
        let _ = err.read_to_string(&mut stderr);
        let _ = tx.send((child.wait(), stdout, stderr));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok((status, stdout, stderr)) => Outcome {
            code: status.expect("wait").code(),
            stdout,
            stderr,
        },
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not finish within {DEADLINE:?}; killed");
        }
    }
}

/// Runs `cmd` with `input` on its standard input, within [`DEADLINE`].
pub fn run_with_input(cmd: &mut Command, input: &[u8]) -> Outcome {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stdin");
    std::fs::write(&path, input).expect("write stdin");
    let file = std::fs::File::open(&path).expect("open stdin");
    finish(cmd.stdin(Stdio::from(file)))
}

/// Runs `postern` with `args`, with `$POSTERN_CONFIG` removed from its environment.
pub fn postern(args: &[&str]) -> Outcome {
    run(Command::new(bin("postern"))
        .args(args)
        .env_remove("POSTERN_CONFIG"))
}

/// A string no other test or run uses (`what-PID-NANOS`): a subject to
/// find one message by in a shared mailbox.
pub fn unique(what: &str) -> String {
    format!(
        "{what}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Fails the test unless it runs as root where Debian's postfix package
/// is installed (its daemons and stock files are test input).
pub fn require_postfix() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests run as root"
    );
    assert!(
        Path::new("/usr/lib/postfix/sbin/smtpd").is_file()
            && Path::new("/etc/postfix/main.cf").is_file(),
        "Postfix is not installed: apt-get install postfix (see .ci/run)"
    );
}

/// How long a readiness wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// Waits until `cond` holds, re-checking every few milliseconds, for at most
/// `limit`; returns whether it held. This is a readiness wait with a
/// deadline (the condition is re-checked, the loop ends as soon as it holds).
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    const RECHECK: Duration = Duration::from_millis(20);
    let deadline = std::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(RECHECK);
    }
}

/// A free TCP port on 127.0.0.1 (bound, then released, for a service to take).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Makes this test process a child subreaper, so that a master started by
/// `postern start` (which daemonises) becomes our child and can be reaped.
fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        nix::sys::prctl::set_child_subreaper(true).expect("PR_SET_CHILD_SUBREAPER");
    });
}

/// A postern instance in a temporary directory, stopped (and reaped) on drop.
#[derive(Debug)]
pub struct Instance {
    /// The temporary directory (etc/, queue/, data/, maillog).
    pub dir: tempfile::TempDir,
    /// The master's pid while it runs.
    pub master_pid: Option<u32>,
}

impl Instance {
    /// `postern init --self-contained`, then `main_extra` appended to
    /// main.cf (after `maillog_file` and `myhostname = localhost`) and `master_extra` to master.cf. The
    /// default master.cf's demo service is removed (it has a fixed port).
    pub fn new(main_extra: &str, master_extra: &str) -> Self {
        become_subreaper();
        // The master finds its daemons beside the postern command.
        for daemon in [
            "postern-master",
            "postern-spawn",
            "postern-pipe",
            "postern-local",
            "postern-submit",
            "postern-qmgr",
            "postern-smtp",
            "postern-sendmail",
            "postern-queue",
            "postern-showq",
        ] {
            bin(daemon);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        // Test users must reach the trusted program directory inside it.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod instance");
        let etc = dir.path().join("etc");
        let out = run(Command::new(bin("postern"))
            .arg("init")
            .arg("--self-contained")
            .arg(&etc));
        assert_eq!(out.code, Some(0), "postern init: {out:?}");
        // myhostname is pinned so that what tests expect of addresses and
        // headers does not depend on the machine's name.
        let main = format!(
            "{}\nmaillog_file = {}\nmyhostname = localhost\n{main_extra}\n",
            std::fs::read_to_string(etc.join("main.cf")).expect("main.cf"),
            dir.path().join("maillog").display()
        );
        std::fs::write(etc.join("main.cf"), main).expect("write main.cf");
        let master: String = std::fs::read_to_string(etc.join("master.cf"))
            .expect("master.cf")
            .lines()
            .filter(|l| l.starts_with('#') || l.trim().is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(etc.join("master.cf"), format!("{master}{master_extra}\n"))
            .expect("write master.cf");
        Instance {
            dir,
            master_pid: None,
        }
    }

    /// The configuration directory.
    pub fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// A public unix endpoint's path.
    pub fn public(&self, name: &str) -> PathBuf {
        self.etc().join("queue/public").join(name)
    }

    /// Runs `postern -c ETC args...`.
    pub fn postern(&self, args: &[&str]) -> Outcome {
        run(Command::new(bin("postern"))
            .arg("-c")
            .arg(self.etc())
            .args(args)
            .env_remove("POSTERN_CONFIG"))
    }

    /// `postern start`, which must succeed.
    pub fn start(&mut self) {
        let out = self.postern(&["start"]);
        self.started(out);
    }

    /// `postern start` in a private mount namespace (`unshare --mount
    /// --propagation private`) where `resolv_conf` is bind-mounted on
    /// `/etc/resolv.conf`: the master and every child it starts resolve
    /// names through the servers that file names, while the machine's own
    /// file stays as it is. `postern stop` from outside still reaches the
    /// master (the instance directory is the same in both namespaces).
    pub fn start_with_resolv_conf(&mut self, resolv_conf: &Path) {
        let out = run(Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .args([
                "sh",
                "-ec",
                r#"mount --bind "$0" /etc/resolv.conf; exec "$@""#,
            ])
            .arg(resolv_conf)
            .arg(bin("postern"))
            .arg("-c")
            .arg(self.etc())
            .arg("start")
            .env_remove("POSTERN_CONFIG"));
        self.started(out);
    }

    /// Checks what `postern start` left and records the master's pid.
    fn started(&mut self, out: Outcome) {
        assert_eq!(
            out.code,
            Some(0),
            "postern start: {out:?}\nlog:\n{}",
            self.log()
        );
        let pid = out
            .stdout
            .split("master pid ")
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no master pid in {out:?}"));
        self.master_pid = Some(pid);
    }

    /// `postern -c ETC sendmail args...` with `message` as input, which
    /// must exit 0.
    pub fn sendmail(&self, args: &[&str], message: &[u8]) -> Outcome {
        let out = run_with_input(
            Command::new(bin("postern"))
                .arg("-c")
                .arg(self.etc())
                .arg("sendmail")
                .args(args)
                .env_remove("POSTERN_CONFIG"),
            message,
        );
        assert_eq!(out.code, Some(0), "sendmail: {out:?}");
        out
    }

    /// `postern stop` (or abort), which must succeed; reaps the master.
    pub fn stop(&mut self, abort: bool) -> Outcome {
        let out = self.postern(&[if abort { "abort" } else { "stop" }]);
        if out.code == Some(0) {
            self.reap();
        }
        out
    }

    fn reap(&mut self) {
        if let Some(pid) = self.master_pid.take() {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        }
    }

    /// Appends to master.cf.
    pub fn append_master(&self, text: &str) {
        append(&self.etc().join("master.cf"), text);
    }

    /// `postern deliver` with `input` as the message.
    pub fn deliver(&self, args: &[&str], input: &[u8]) -> Outcome {
        run_with_input(
            Command::new(bin("postern"))
                .arg("-c")
                .arg(self.etc())
                .arg("deliver")
                .args(args)
                .env_remove("POSTERN_CONFIG"),
            input,
        )
    }

    /// The local service's socket (`local unix - n n - - local` in master.cf).
    pub fn local_socket(&self) -> PathBuf {
        self.etc().join("queue/private/local")
    }

    /// Appends to main.cf.
    pub fn append_main(&self, text: &str) {
        append(&self.etc().join("main.cf"), text);
    }

    /// Gives the instance a mail spool of its own, `dir/spool` (sticky
    /// and world-writable, as /var/mail may be): `mail_spool_directory`
    /// names it and the destination policy allows `spool/$user`, so that
    /// tests do not share mailboxes. Returns its path.
    pub fn own_spool(&self) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let spool = self.dir.path().join("spool");
        std::fs::create_dir(&spool).expect("spool");
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777))
            .expect("spool mode");
        self.append_main(&format!("mail_spool_directory = {}\n", spool.display()));
        append(
            &self.etc().join("destinations"),
            &format!("mailbox {}/$user\n", spool.display()),
        );
        spool
    }

    /// Sends SIGHUP to the master directly (bypassing `postern reload`'s checks).
    pub fn sighup(&self) {
        let pid = self.master_pid.expect("master running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .expect("SIGHUP");
    }

    /// The maillog so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits until the maillog contains `needle` `count` times; panics at the deadline.
    pub fn wait_log(&self, needle: &str, count: usize) {
        let ok = eventually(WAIT, || self.log().matches(needle).count() >= count);
        assert!(ok, "log never had {count}x {needle:?}:\n{}", self.log());
    }

    /// `postern status` output (exit 0 healthy or 1 degraded: running).
    pub fn status(&self) -> String {
        let out = self.postern(&["status"]);
        assert!(matches!(out.code, Some(0 | 1)), "postern status: {out:?}");
        out.stdout
    }

    /// SIGKILL to `pid` if it is still a process of this instance (a
    /// descendant of its master), through a pidfd opened before the check:
    /// the pid was read a moment ago, and on a busy machine whose pids wrap
    /// it may since belong to another process — another instance's qmgr
    /// once, which left that test's mail waiting for its next wakeup.
    pub fn sigkill_own(&self, pid: u32) -> bool {
        let Some(master) = self.master_pid else {
            return false;
        };
        let Ok(pidfd) = postern_sys::pidfd_open(pid as i32) else {
            return false;
        };
        descends_from(pid, master) && postern_sys::pidfd_kill(&pidfd).is_ok()
    }

    /// Pids of the spawn children of service `name` (from /proc).
    pub fn children_of(&self, name: &str) -> Vec<u32> {
        let Some(master) = self.master_pid else {
            return Vec::new();
        };
        proc_entries()
            .into_iter()
            .filter(|p| p.ppid == master && p.cmdline.iter().any(|a| a == name) && p.state != 'Z')
            .map(|p| p.pid)
            .collect()
    }
}

/// Whether `ancestor` is `pid`'s parent, grandparent or great-grandparent.
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let parent = |p: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
        // pid (comm) state ppid ...: comm may hold spaces and parentheses.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let mut p = pid;
    for _ in 0..3 {
        match parent(p) {
            Some(pp) if pp == ancestor => return true,
            Some(pp) if pp > 1 => p = pp,
            _ => return false,
        }
    }
    false
}

impl Drop for Instance {
    fn drop(&mut self) {
        if self.master_pid.is_some() {
            let out = self.postern(&["abort"]);
            if out.code != Some(0) {
                if let Some(pid) = self.master_pid {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            self.reap();
        }
    }
}

fn append(path: &Path, text: &str) {
    let mut body = std::fs::read_to_string(path).expect("read");
    body.push_str(text);
    if !body.ends_with('\n') {
        body.push('\n');
    }
    std::fs::write(path, body).expect("write");
}

/// One process, from /proc.
#[derive(Debug, Clone)]
pub struct ProcEntry {
    /// pid.
    pub pid: u32,
    /// Parent pid.
    pub ppid: u32,
    /// Process group.
    pub pgid: u32,
    /// State letter (Z = zombie).
    pub state: char,
    /// Command line.
    pub cmdline: Vec<String>,
    /// Environment.
    pub environ: Vec<String>,
}

/// Every process on the machine.
pub fn proc_entries() -> Vec<ProcEntry> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| stat[i + 1..].to_string()) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let split = |name: &str| -> Vec<String> {
            std::fs::read(format!("/proc/{pid}/{name}"))
                .unwrap_or_default()
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        };
        out.push(ProcEntry {
            pid,
            ppid: f[1].parse().unwrap_or(0),
            pgid: f[2].parse().unwrap_or(0),
            state: f[0].chars().next().unwrap_or('?'),
            cmdline: split("cmdline"),
            environ: split("environ"),
        });
    }
    out
}

/// Sends `input` on a fresh connection with the [`WAIT`] timeouts set,
/// half-closes with `shutdown`, and reads to end-of-file.
fn exchange<S: std::io::Read + std::io::Write>(
    mut s: S,
    input: &[u8],
    shutdown: impl FnOnce(&S) -> std::io::Result<()>,
) -> std::io::Result<Vec<u8>> {
    s.write_all(input)?;
    shutdown(&s)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out)
}

/// Connects to a unix endpoint, sends `input`, half-closes, reads to EOF.
pub fn unix_exchange(path: &Path, input: &[u8]) -> std::io::Result<Vec<u8>> {
    let s = std::os::unix::net::UnixStream::connect(path)?;
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    exchange(s, input, |s| s.shutdown(std::net::Shutdown::Write))
}

/// Connects to 127.0.0.1:`port`, sends `input`, half-closes, reads to EOF.
pub fn tcp_exchange(port: u16, input: &[u8]) -> std::io::Result<Vec<u8>> {
    let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(WAIT))?;
    s.set_write_timeout(Some(WAIT))?;
    exchange(s, input, |s| s.shutdown(std::net::Shutdown::Write))
}

/// The uid and gid of `name` (from `id`).
pub fn ids_of(name: &str) -> (u32, u32) {
    let out = run(Command::new("id").arg("-u").arg(name));
    let uid = out.stdout.trim().parse().expect("uid");
    let out = run(Command::new("id").arg("-g").arg(name));
    (uid, out.stdout.trim().parse().expect("gid"))
}

/// Creates (once per test process) a system account with a home directory
/// and the given login shell; returns its (uid, gid, home).
pub fn test_account(name: &str, shell: &str) -> (u32, u32, PathBuf) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exists = Command::new("id")
        .arg(name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        let out = run(Command::new("useradd").args([
            "--create-home",
            "--shell",
            shell,
            "--comment",
            "postern test account",
            name,
        ]));
        // Another test process may have created it meanwhile.
        let now = Command::new("id")
            .arg(name)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(out.code == Some(0) || now, "useradd {name}: {out:?}");
    }
    let (uid, gid) = ids_of(name);
    let home = PathBuf::from(format!("/home/{name}"));
    (uid, gid, home)
}

/// The `p`-th percentile of sorted values (nearest rank), in milliseconds
/// (shared by the benchmark clients).
pub fn percentile_ms(sorted: &[Duration], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    // Nearest rank: the value at 1-based rank ceil(p/100 * n).
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).map(|d| d.as_secs_f64() * 1000.0)
}

/// Milliseconds with three decimals, or `nan`.
pub fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "nan".to_string(), |v| format!("{v:.3}"))
}

/// The timing part of a benchmark client's result line, from the sorted
/// latencies of `secs` seconds of work:
/// `secs=… rate=… p50_ms=… p99_ms=… max_ms=…`.
pub fn rate_summary(sorted: &[Duration], secs: f64) -> String {
    let rate = if secs > 0.0 {
        sorted.len() as f64 / secs
    } else {
        0.0
    };
    format!(
        "secs={secs:.3} rate={rate:.1} p50_ms={} p99_ms={} max_ms={}",
        fmt_ms(percentile_ms(sorted, 50.0)),
        fmt_ms(percentile_ms(sorted, 99.0)),
        fmt_ms(sorted.last().map(|d| d.as_secs_f64() * 1000.0)),
    )
}

/// A small seedable random generator (xorshift64*) for tests that attack
/// at random moments with random bytes: reproducible from its seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A run's seed: the environment variable `var` when set (to replay a
/// failure), else one from the clock; never 0 (xorshift's fixed point).
pub fn seed_from_env(var: &str) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1
}
