//! `postern start | stop | abort | reload | status`: operating an instance.
//!
//! `start` validates everything first (the same checks as `postern check`),
//! creates what a fresh machine lacks (the default mail owner account, the
//! directories) and says what it created, then starts `postern-master` in a
//! new session and waits — with a deadline — for the master to say that every
//! endpoint is open. `stop` and `abort` signal the master whose pid is in
//! the locked pid file and wait for it to exit. `reload` and `status` ask
//! the master over its root-only control socket: `reload` waits for the
//! master's verdict, `status` adds the queue's state and exits 0 healthy,
//! 1 degraded, 3 not running. Each says `permission denied: run as root`
//! to an ordinary user rather than a wrong answer.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use postern_common::{account, sysexits};
use postern_conf::{params, Config, Source};
use postern_sys as sys;

use postern_common::check;
use postern_common::instance::{self, Paths};

use crate::cli::{describe, load};

/// How long `start` waits for the master to be ready.
const START_DEADLINE: Duration = Duration::from_secs(60);

/// Prints `postern check`'s errors and refuses with 78 when there are any.
fn refuse_on_problems(config: &Config, what: &str) -> Result<(), i32> {
    let problems: Vec<_> = check::check(config)
        .into_iter()
        .filter(|d| d.is_error())
        .collect();
    if problems.is_empty() {
        return Ok(());
    }
    for d in &problems {
        eprintln!("{d}");
    }
    eprintln!(
        "postern: {what}: {} problem(s) (postern check lists them all)",
        problems.len()
    );
    Err(sysexits::EX_CONFIG)
}

/// The configuration, or its errors printed and exit status 78.
pub fn loaded(source: &Source) -> Result<Config, i32> {
    let (config, diags) = load(source);
    match config {
        Some(c) => Ok(c),
        None => {
            for d in diags.iter().filter(|d| d.is_error()) {
                eprintln!("{d}");
            }
            eprintln!("postern: fatal: the configuration has errors (run postern check)");
            Err(sysexits::EX_CONFIG)
        }
    }
}

/// The configuration for commands that only need the instance's
/// directories: all of it when valid, else main.cf alone (with a warning).
fn loaded_for_operation(source: &Source) -> Result<Config, i32> {
    let (config, _) = load(source);
    if let Some(c) = config {
        return Ok(c);
    }
    let main_only = Config::load_main_only(source, &postern_conf::ServicesFile::system());
    match main_only.config {
        Some(c) => {
            eprintln!("postern: warning: master.cf has errors (run postern check); using main.cf to find the instance");
            Ok(c)
        }
        None => loaded(source),
    }
}

/// `postern start [--foreground]`.
pub fn start(source: &Source, foreground: bool) -> i32 {
    if !account::running_as_root() {
        eprintln!(
            "postern: start must run as root: the master opens the endpoints and runs every service as its \
             own user (the mail owner, and the users spawn's commands run as), which only root can do. \
             As an ordinary user you can still run 'postern check' and 'postern config'; to run an \
             instance, use 'sudo postern start'."
        );
        return sysexits::EX_NOPERM;
    }
    let config = match loaded(source) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = create_mail_owner(&config) {
        return code;
    }
    if let Err(code) = refuse_on_problems(&config, "not starting") {
        return code;
    }
    let paths = Paths::of(&config);
    if let Some(pid) = instance::running_master(&paths) {
        eprintln!(
            "postern: the instance is already running (master pid {pid}, {})",
            describe(source)
        );
        return 1;
    }
    let owner = match account::user_by_name(config.text(params::MAIL_OWNER)) {
        Ok(Some(o)) => o,
        _ => {
            eprintln!(
                "postern: fatal: mail_owner {} does not exist",
                config.text(params::MAIL_OWNER)
            );
            return sysexits::EX_CONFIG;
        }
    };
    match instance::ensure_directories(&config, &owner) {
        Ok(created) => {
            for d in created {
                println!("postern: created directory {}", d.display());
            }
        }
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return sysexits::EX_CANTCREAT;
        }
    }
    let master = config.postern_directory().join("postern-master");
    if !master.is_file() {
        eprintln!(
            "postern: fatal: {} does not exist (check daemon_directory)",
            master.display()
        );
        return sysexits::EX_CONFIG;
    }
    if foreground {
        let err = Command::new(&master)
            .args(instance::master_args(source, true, None))
            .exec();
        eprintln!("postern: fatal: cannot run {}: {err}", master.display());
        return sysexits::EX_OSERR;
    }
    daemonise(&master, source)
}

/// Creates the default mail owner account when it is missing.
fn create_mail_owner(config: &Config) -> Result<(), i32> {
    let name = config.text(params::MAIL_OWNER);
    match account::user_by_name(name) {
        Ok(Some(_)) => return Ok(()),
        Ok(None) => {}
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return Err(sysexits::EX_TEMPFAIL);
        }
    }
    let default = params::spec(params::MAIL_OWNER).map(|s| s.default);
    if Some(name) != default {
        eprintln!("postern: fatal: mail_owner {name}: no such user; create it (a system account with its own group)");
        return Err(sysexits::EX_CONFIG);
    }
    let out = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
        ])
        .args([
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "postern mail owner",
            name,
        ])
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => {
            println!("postern: created system account {name} (mail_owner) with its own group");
            Ok(())
        }
        // Another `postern start` may have created it meanwhile.
        Ok(_) if matches!(account::user_by_name(name), Ok(Some(_))) => Ok(()),
        Ok(o) => {
            eprintln!(
                "postern: fatal: useradd {name} failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            Err(sysexits::EX_CANTCREAT)
        }
        Err(e) => {
            eprintln!("postern: fatal: cannot run useradd to create mail_owner {name}: {e}");
            Err(sysexits::EX_CANTCREAT)
        }
    }
}

/// Starts the master in a new session and waits until it is ready.
fn daemonise(master: &Path, source: &Source) -> i32 {
    let (read_end, write_end) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("postern: fatal: pipe: {e}");
            return sysexits::EX_OSERR;
        }
    };
    const READY_FD: i32 = 3;
    let mut cmd = Command::new(master);
    cmd.args(instance::master_args(source, false, Some(READY_FD)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let raw = write_end.as_raw_fd();
    sys::BeforeExec::new()
        .new_session()
        .copy_fd(raw, READY_FD)
        .install(&mut cmd);
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern: fatal: cannot run {}: {e}", master.display());
            return sysexits::EX_OSERR;
        }
    };
    drop(write_end);
    let answer = postern_sys::wait::read_to_end_within(read_end, START_DEADLINE, 64 * 1024)
        .ok()
        .map(|b| String::from_utf8_lossy(&b).into_owned());
    let pid = child.id();
    match answer.as_deref().map(str::trim) {
        Some("ready") => {
            println!("postern: started: master pid {pid}, {}", describe(source));
            0
        }
        Some(text) if !text.is_empty() => {
            // "error CODE: why" (the master's exit status and reason).
            let (code, why) = text
                .strip_prefix("error ")
                .and_then(|t| t.split_once(": "))
                .and_then(|(c, w)| c.parse::<i32>().ok().map(|c| (c, w)))
                .unwrap_or((1, text.trim_start_matches("error: ")));
            eprintln!("postern: start failed: {why}");
            code
        }
        _ => {
            eprintln!(
                "postern: start failed: the master (pid {pid}) exited or did not answer within {}s; see the log",
                START_DEADLINE.as_secs()
            );
            1
        }
    }
}

fn running(config: &Config) -> Result<(Paths, u32), i32> {
    let paths = Paths::of(config);
    match instance::running_master(&paths) {
        Some(pid) => Ok((paths, pid)),
        None => {
            eprintln!(
                "postern: the instance is not running ({})",
                describe(&config.source)
            );
            Err(1)
        }
    }
}

/// `postern stop` (graceful) or `postern abort` (immediate).
pub fn stop(source: &Source, immediate: bool) -> i32 {
    if let Err(code) = require_root(if immediate { "abort" } else { "stop" }) {
        return code;
    }
    let config = match loaded_for_operation(source) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (_, pid) = match running(&config) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let signal = if immediate {
        Signal::SIGINT
    } else {
        Signal::SIGTERM
    };
    if let Err(e) = kill(Pid::from_raw(pid as i32), signal) {
        eprintln!("postern: cannot signal the master (pid {pid}): {e}");
        return sysexits::EX_NOPERM;
    }
    let limit = config.time(params::SHUTDOWN_TIMEOUT) + Duration::from_secs(30);
    if postern_sys::wait::process_exit_within(pid as i32, limit) {
        println!(
            "postern: {} (master pid {pid})",
            if immediate { "aborted" } else { "stopped" }
        );
        0
    } else {
        eprintln!(
            "postern: the master (pid {pid}) did not exit within {}s",
            limit.as_secs()
        );
        sysexits::EX_TEMPFAIL
    }
}

/// Refuses a command that needs root (the master's files are root's), so
/// that an ordinary user gets the reason instead of a wrong answer.
fn require_root(what: &str) -> Result<(), i32> {
    if account::running_as_root() {
        return Ok(());
    }
    eprintln!(
        "postern: {what}: permission denied: run as root (the master's pid file and control socket are root's)"
    );
    Err(sysexits::EX_NOPERM)
}

/// Sends one request to the master's control socket and reads the reply.
fn ask(paths: &Paths, request: &str, timeout: Duration) -> std::io::Result<String> {
    let mut s = std::os::unix::net::UnixStream::connect(&paths.control)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(format!("{request}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// How long `postern reload` waits for the master's verdict (it resolves
/// addresses and opens endpoints).
const RELOAD_DEADLINE: Duration = Duration::from_secs(60);

/// `postern reload [SERVICE]`: validates first (an invalid configuration is
/// not sent), then asks the master over the control socket and waits for
/// its verdict: exit 0 when applied, 1 with the reason when the master kept
/// the running configuration (or could not start a service).
pub fn reload(source: &Source, service: Option<&str>) -> i32 {
    if let Err(code) = require_root("reload") {
        return code;
    }
    let config = match loaded(source) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Err(code) = refuse_on_problems(
        &config,
        "not reloading: the running configuration stays in force",
    ) {
        return code;
    }
    let (_, pid) = match running(&config) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let paths = Paths::of(&config);
    let request = match service {
        Some(s) => format!("reload {s}"),
        None => "reload".to_string(),
    };
    match ask(&paths, &request, RELOAD_DEADLINE) {
        Ok(reply) => {
            let reply = reply.trim();
            if let Some(ok) = reply.strip_prefix("ok: ") {
                println!("postern: {ok} (master pid {pid})");
                0
            } else {
                eprintln!(
                    "postern: reload refused by the master (pid {pid}): {}",
                    reply.trim_start_matches("error: ")
                );
                1
            }
        }
        Err(e) => {
            eprintln!(
                "postern: no verdict from the master (pid {pid}) at {}: {e}",
                paths.control.display()
            );
            sysexits::EX_TEMPFAIL
        }
    }
}

/// `postern status [--json]`: exit 0 healthy, 1 degraded (a service
/// throttled, mail in incoming for more than a minute), 3 not running.
pub fn status(source: &Source, json: bool) -> i32 {
    const NOT_RUNNING: i32 = 3;
    if let Err(code) = require_root("status") {
        return code;
    }
    let config = match loaded_for_operation(source) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let paths = Paths::of(&config);
    if instance::running_master(&paths).is_none() {
        if json {
            println!("{{\"master\":null,\"running\":false}}");
        }
        eprintln!(
            "postern: the instance is not running ({})",
            describe(&config.source)
        );
        return NOT_RUNNING;
    }
    let reply = match ask(&paths, "status json", Duration::from_secs(10)) {
        Ok(text) => text,
        Err(e) => {
            eprintln!(
                "postern: cannot ask the master at {}: {e}",
                paths.control.display()
            );
            return sysexits::EX_TEMPFAIL;
        }
    };
    let mut snapshot: postern_common::control::Snapshot = match serde_json::from_str(&reply) {
        Ok(s) => s,
        Err(e) => {
            eprintln!(
                "postern: the master's status reply is not understood: {e}: {}",
                reply.trim()
            );
            return sysexits::EX_SOFTWARE;
        }
    };
    let queue = postern_common::queue_health::read(Path::new(config.text(params::QUEUE_DIRECTORY)));
    let degraded = snapshot.services.iter().any(|s| s.throttled.is_some()) || queue.stuck();
    snapshot.queue = Some(queue);
    if json {
        match serde_json::to_string_pretty(&snapshot) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("postern: cannot encode the status: {e}");
                return sysexits::EX_SOFTWARE;
            }
        }
    } else {
        print!("{}", postern_common::control::human(&snapshot));
        if let Some(q) = &snapshot.queue {
            print!("{}", queue_lines(q));
        }
    }
    i32::from(degraded)
}

fn queue_lines(q: &postern_common::queue_health::QueueHealth) -> String {
    let counts: Vec<String> = postern_common::queue_health::QUEUES
        .iter()
        .map(|n| format!("{n} {}", q.messages.get(*n).copied().unwrap_or(0)))
        .collect();
    let mut out = format!("queue: {}\n", counts.join(", "));
    if let Some(age) = q.oldest_incoming_seconds {
        out.push_str(&format!(
            "    oldest in incoming: {age}s{}\n",
            if q.stuck() {
                " (stuck: is qmgr running?)"
            } else {
                ""
            }
        ));
    }
    if let Some(o) = &q.oldest_deferred {
        out.push_str(&format!(
            "    oldest deferred: {}, {}s old\n",
            o.id,
            o.age_seconds.unwrap_or(0)
        ));
    }
    if let Some(e) = &q.last_delivery_error {
        out.push_str(&format!(
            "    last delivery error: {}: {}\n",
            e.id,
            e.reason.as_deref().unwrap_or("")
        ));
    }
    for p in &q.problems {
        out.push_str(&format!("    {p}\n"));
    }
    out
}
