//! End to end, as root: reload, stop, abort, status, wakeup timers and
//! malformed status records, against a real postern-master.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postern_tests::{
    eventually, free_port, proc_entries, tcp_exchange, unix_exchange, Instance, WAIT,
};

/// Clients that exchange with a service back to back until stopped,
/// counting successes and failures (a refused, reset or wrong answer).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

enum Target {
    Tcp(u16),
    Unix(std::path::PathBuf),
}

impl Load {
    fn start(targets: Vec<Target>, per_target: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for t in targets {
            let t = Arc::new(t);
            for n in 0..per_target {
                let (stop, ok, failed, errors, t) = (
                    stop.clone(),
                    ok.clone(),
                    failed.clone(),
                    errors.clone(),
                    t.clone(),
                );
                threads.push(std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let msg = format!("client {n} request {i}\n");
                        let got = match &*t {
                            Target::Tcp(p) => tcp_exchange(*p, msg.as_bytes()),
                            Target::Unix(p) => unix_exchange(p, msg.as_bytes()),
                        };
                        match got {
                            Ok(g) if g == msg.as_bytes() => ok.fetch_add(1, Ordering::Relaxed),
                            other => {
                                errors.lock().unwrap().push(format!("{other:?}"));
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                }));
            }
        }
        Load {
            stop,
            ok,
            failed,
            errors,
            threads,
        }
    }

    fn wait_for(&self, n: usize) {
        let base = self.ok.load(Ordering::Relaxed);
        assert!(
            eventually(WAIT, || self.ok.load(Ordering::Relaxed) >= base + n),
            "load made no progress"
        );
    }

    fn finish(self) -> (usize, usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        let errors = self.errors.lock().unwrap().clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            errors,
        )
    }
}

#[test]
fn reload_under_load_refuses_nothing() {
    let port = free_port();
    let mut inst = Instance::new(
        "",
        &format!(
            "127.0.0.1:{port} inet n n n - 8 spawn user=nobody argv=/bin/cat\n\
             echo unix n n n - 8 spawn user=nobody argv=/bin/cat\n\
             doomed unix n n n - 2 spawn user=nobody argv=/bin/cat\n\
             slow unix n n n - 2 spawn user=nobody argv=/bin/sh -c {{ read line; echo \"late $line\" }}"
        ),
    );
    inst.start();
    let load = Load::start(
        vec![Target::Tcp(port), Target::Unix(inst.public("echo"))],
        3,
    );
    load.wait_for(20);
    // A slow request started before the reloads.
    let mut slow = UnixStream::connect(inst.public("slow")).unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    assert!(eventually(WAIT, || inst.children_of("slow").len() == 1));
    let master = inst.etc().join("master.cf");
    let original = std::fs::read_to_string(&master).unwrap();
    // 1: add a service, remove one, change one (maxproc and max_use).
    let changed = original
        .lines()
        .filter(|l| !l.starts_with("doomed"))
        .map(|l| {
            if l.starts_with("echo") {
                "echo unix n n n - 4 spawn -o max_use=2 user=nobody argv=/bin/cat".to_string()
            } else {
                l.to_string()
            }
        })
        .chain(["added unix n n n - 2 spawn user=nobody argv=/bin/cat".to_string()])
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&master, format!("{changed}\n")).unwrap();
    assert_eq!(inst.postern(&["reload"]).code, Some(0));
    inst.wait_log("reload: done, 4 service(s)", 1);
    load.wait_for(20);
    assert_eq!(
        unix_exchange(&inst.public("added"), b"new").unwrap(),
        b"new"
    );
    assert!(
        !inst.public("doomed").exists(),
        "a removed service's endpoint is gone"
    );
    // 2..5: several reloads in a row.
    for n in 2..=5 {
        inst.sighup();
        inst.wait_log("reload: done", n);
        load.wait_for(5);
    }
    // A broken master.cf: logged with file:line, the running services stay.
    let broken_line = changed.lines().count() + 1;
    std::fs::write(
        &master,
        format!("{changed}\nbroken unix - - n - ten spawn\n"),
    )
    .unwrap();
    inst.sighup();
    inst.wait_log("reload failed: the configuration has errors", 1);
    assert!(
        inst.log().contains(&format!(
            "{}:{broken_line}: maxproc 'ten' is not a number",
            master.display()
        )),
        "{}",
        inst.log()
    );
    load.wait_for(20);
    let still = unix_exchange(&inst.public("added"), b"still");
    assert_eq!(
        still.unwrap_or_else(|e| panic!("added: {e}\n{}\n{}", inst.status(), inst.log())),
        b"still"
    );
    // The slow request from before the reloads completes.
    slow.write_all(b"request\n").unwrap();
    let mut answer = String::new();
    slow.read_to_string(&mut answer)
        .unwrap_or_else(|e| panic!("slow: {e}\n{}\n{}", inst.status(), inst.log()));
    assert_eq!(answer, "late request\n");
    let (ok, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} failed of {}: {:?}",
        ok + failed,
        &errors[..errors.len().min(5)]
    );
    assert!(ok > 100, "only {ok} exchanges");
}

#[test]
fn stop_under_load_leaves_nothing_and_start_works_again() {
    let marker = format!("POSTERN_TEST_MARKER={}", std::process::id());
    let port = free_port();
    let mut inst = Instance::new(
        &format!("export_environment = TZ LANG {marker}\nshutdown_timeout = 3s"),
        &format!(
            "127.0.0.1:{port} inet n n n - 8 spawn user=nobody argv=/bin/cat\n\
             stuck unix n n n - 4 spawn user=nobody argv=/bin/sh -c {{ sleep 600 & sleep 600 }}"
        ),
    );
    inst.start();
    let master_pid = inst.master_pid.unwrap();
    let load = Load::start(vec![Target::Tcp(port)], 4);
    load.wait_for(20);
    // Two requests that would never finish on their own.
    let stuck: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(inst.public("stuck")).unwrap())
        .collect();
    // Both stuck commands run (two `sleep 600` each): the load's `cat`s
    // carry the marker too, so count the sleeps, or stop could come while
    // a stuck connection still waits in the listen queue.
    assert!(eventually(WAIT, || proc_entries()
        .iter()
        .filter(|p| p.environ.contains(&marker))
        .filter(|p| p.cmdline.first().is_some_and(|c| c.ends_with("sleep")))
        .count()
        >= 4));
    let out = inst.stop(false);
    assert_eq!(out.code, Some(0), "{out:?}");
    load.finish();
    // Nothing of the instance remains: no master, no child, no command, no grandchild.
    let left: Vec<_> = proc_entries()
        .into_iter()
        .filter(|p| p.state != 'Z')
        .filter(|p| {
            p.pid == master_pid
                || p.ppid == master_pid
                || p.environ.contains(&marker)
                || p.cmdline
                    .iter()
                    .any(|a| a.contains(inst.etc().to_str().unwrap()))
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:#?}");
    drop(stuck);
    assert!(inst.log().contains("stop: killing"), "{}", inst.log());
    // The lock is released: start works again, and serves.
    inst.start();
    assert_eq!(tcp_exchange(port, b"again").unwrap(), b"again");
    let out = inst.stop(true);
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn start_twice_says_so_and_status_shows_the_services() {
    let port = free_port();
    let mut inst = Instance::new(
        "",
        &format!("127.0.0.1:{port} inet n n n - 3 spawn user=nobody argv=/bin/cat"),
    );
    inst.start();
    let again = inst.postern(&["start"]);
    assert_eq!(again.code, Some(1), "{again:?}");
    assert!(
        again.stderr.contains("already running (master pid"),
        "{}",
        again.stderr
    );
    assert_eq!(tcp_exchange(port, b"x").unwrap(), b"x");
    let status = inst.status();
    assert!(
        status.contains(&format!("master: pid {}", inst.master_pid.unwrap())),
        "{status}"
    );
    assert!(
        status.contains(&format!("127.0.0.1:{port}")) && status.contains("inet"),
        "{status}"
    );
    assert!(status.contains("       3"), "maxproc column: {status}");
    // The client sees end-of-file when cat exits, a moment before the child
    // reports itself idle again.
    assert!(
        eventually(WAIT, || inst.status().contains("idle, 1 use(s)")),
        "{}",
        inst.status()
    );
    assert_eq!(inst.stop(false).code, Some(0));
    let out = inst.postern(&["stop"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("not running"), "{}", out.stderr);
}

#[test]
fn start_as_an_ordinary_user_is_refused_with_the_reason() {
    let inst = Instance::new("", "");
    // A copy of the binary that nobody can run, wherever the checkout is.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let postern = dir.path().join("postern");
    std::fs::copy(postern_tests::bin("postern"), &postern).unwrap();
    std::fs::set_permissions(&postern, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = postern_tests::run(
        std::process::Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg(&postern)
            .arg("-c")
            .arg(inst.etc())
            .arg("start"),
    );
    assert_eq!(out.code, Some(77), "{out:?}");
    assert!(
        out.stderr.contains("start must run as root"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("sudo postern start"), "{}", out.stderr);
}

#[test]
fn wakeup_timers_poke_the_service_and_question_mark_waits_for_first_use() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let always = dir.path().join("always");
    let used = dir.path().join("used");
    let mut inst = Instance::new(
        "",
        &format!(
            "ticker unix n n n 1 1 spawn user=nobody argv=/bin/sh -c {{ cat >> {} }}\n\
             lazy unix n n n 1? 1 spawn user=nobody argv=/bin/sh -c {{ cat >> {} }}",
            always.display(),
            used.display()
        ),
    );
    inst.start();
    let count =
        |p: &std::path::Path| std::fs::read_to_string(p).map_or(0, |s| s.matches('W').count());
    assert!(
        eventually(WAIT, || count(&always) >= 2),
        "ticker was not woken twice"
    );
    // Two wakeup periods have passed: the unused "?" service was never poked.
    assert_eq!(count(&used), 0);
    unix_exchange(&inst.public("lazy"), b"").unwrap();
    assert!(
        eventually(WAIT, || count(&used) >= 1),
        "lazy was not woken after its first use"
    );
}

#[test]
fn malformed_status_records_are_ignored_with_a_warning() {
    // A daemon_directory whose postern-spawn first writes garbage on the
    // status channel, then runs the real one.
    let daemons = tempfile::tempdir().unwrap();
    let real = postern_tests::bin("postern-spawn");
    let fake = daemons.path().join("postern-spawn");
    // Records: too short; an unknown state; well formed but for a pid that
    // is no child of the service (the generation comes from -g, argument 6).
    let script = r#"#!/bin/sh
printf 'garbage' >&3
printf '0123456789ab' >&3
printf "0123\\$(printf %03o "$6")\\000\\000\\000\\001\\000\\000\\000" >&3
exec REAL "$@"
"#;
    std::fs::write(&fake, script.replace("REAL", &real.display().to_string())).unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(
        postern_tests::bin("postern-master"),
        daemons.path().join("postern-master"),
    )
    .unwrap();
    let mut inst = Instance::new(
        &format!("daemon_directory = {}", daemons.path().display()),
        "echo unix n n n - 2 spawn user=nobody argv=/bin/cat",
    );
    inst.start();
    assert_eq!(unix_exchange(&inst.public("echo"), b"ok").unwrap(), b"ok");
    inst.wait_log(
        "malformed status record ignored: status record of 7 bytes",
        1,
    );
    inst.wait_log(
        "malformed status record ignored: status record with unknown state",
        1,
    );
    inst.wait_log("status record for pid 858927408 sent by pid", 1);
    assert_eq!(
        unix_exchange(&inst.public("echo"), b"still ok").unwrap(),
        b"still ok"
    );
}

#[test]
fn ipv6_loopback_service() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback on this machine: nothing to test");
        return;
    }
    let port = free_port();
    let mut inst = Instance::new(
        "",
        &format!("[::1]:{port} inet n n n - 2 spawn user=nobody argv=/bin/cat"),
    );
    inst.start();
    let mut s = std::net::TcpStream::connect(("::1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(b"six").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    BufReader::new(s).read_line(&mut out).unwrap();
    assert_eq!(out, "six");
    let _ = Duration::ZERO;
}

#[test]
fn endpoints_belong_to_the_mail_owner_and_an_untrusted_pid_file_is_not_signalled() {
    use std::os::unix::fs::MetadataExt;
    let mut inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    inst.start();
    // Created with the mail owner's filesystem ids and a umask: no chown or
    // chmod by path as root.
    let (owner, _) = postern_tests::ids_of("postern");
    let md = std::fs::symlink_metadata(inst.public("echo")).unwrap();
    assert_eq!((md.uid(), md.mode() & 0o777), (owner, 0o666));
    // The master's directory must be root's: if it is not, postern stop does
    // not trust the pid file in it.
    let master_dir = inst.dir.path().join("etc/data/master");
    let (nobody, nogroup) = postern_tests::ids_of("nobody");
    nix::unistd::chown(&master_dir, Some(nobody.into()), Some(nogroup.into())).unwrap();
    let out = inst.postern(&["stop"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("not trusting")
            && out.stderr.contains("only root may be able to change it"),
        "{}",
        out.stderr
    );
    nix::unistd::chown(&master_dir, Some(0.into()), Some(0.into())).unwrap();
    assert_eq!(inst.stop(false).code, Some(0));
}

/// A descriptor the master inherited without close-on-exec (a careless
/// caller's) does not reach its children, which may run as the mail owner.
#[test]
fn descriptors_the_master_inherits_do_not_reach_its_children() {
    use std::os::fd::AsRawFd;
    let marker = tempfile::NamedTempFile::new().unwrap();
    let file = std::fs::File::open(marker.path()).unwrap();
    // dup2 gives the copy no close-on-exec flag: `postern start` and the
    // master inherit it, as from a shell or a unit.
    const LEAKED: i32 = 217;
    nix::unistd::dup2(file.as_raw_fd(), LEAKED).unwrap();
    let mut inst = Instance::new(
        "",
        "leakcheck unix n n n - 2 spawn user=nobody argv=/bin/cat",
    );
    inst.start();
    nix::unistd::close(LEAKED).unwrap();
    assert_eq!(
        unix_exchange(&inst.public("leakcheck"), b"ping").unwrap(),
        b"ping"
    );
    let children = inst.children_of("leakcheck");
    assert!(!children.is_empty());
    let target = marker.path().to_path_buf();
    for child in children {
        for fd in std::fs::read_dir(format!("/proc/{child}/fd"))
            .unwrap()
            .flatten()
        {
            assert_ne!(
                std::fs::read_link(fd.path()).ok(),
                Some(target.clone()),
                "child {child} has the master's inherited descriptor {:?}",
                fd.file_name()
            );
        }
    }
    inst.stop(false);
}

/// A reload that takes one of a service's addresses away (inet_protocols
/// all -> ipv4) keeps the others open: a busy child still holds the old
/// listeners, so closing and binding 127.0.0.1 again would fail and leave
/// the service down.
#[test]
fn a_reload_that_drops_one_address_keeps_the_others_serving() {
    let port = free_port();
    let mut inst = Instance::new(
        "inet_protocols = all",
        &format!(
            "{port} inet n n n - 4 spawn user=nobody argv=/bin/sh -c {{ read line; echo \"got $line\" }}"
        ),
    );
    inst.start();
    // A request in progress: its child holds both listeners.
    let mut busy = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    busy.set_read_timeout(Some(WAIT)).unwrap();
    assert!(eventually(WAIT, || !inst
        .children_of(&port.to_string())
        .is_empty()));
    inst.append_main("inet_protocols = ipv4");
    assert_eq!(inst.postern(&["reload"]).code, Some(0));
    inst.wait_log("reload: done", 1);
    assert!(
        !inst.log().contains("service not started"),
        "{}",
        inst.log()
    );
    assert_eq!(tcp_exchange(port, b"after\n").unwrap(), b"got after\n");
    busy.write_all(b"before\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&busy).read_line(&mut answer).unwrap();
    assert_eq!(answer, "got before\n");
}

/// A reload whose new configuration names an address that cannot be
/// worked out (a host name that does not resolve) fails as a whole: the
/// running services go on serving, and the log says why.
#[test]
fn a_reload_with_an_unresolvable_address_keeps_the_running_services() {
    let mut inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    inst.start();
    let port = free_port();
    inst.append_master(&format!(
        "no-such-host.invalid:{port} inet n n n - 2 spawn user=nobody argv=/bin/cat"
    ));
    inst.sighup();
    inst.wait_log("reload failed: the running configuration stays in force", 1);
    assert!(
        inst.log().contains("no-such-host.invalid"),
        "{}",
        inst.log()
    );
    assert_eq!(
        unix_exchange(&inst.public("echo"), b"still").unwrap(),
        b"still"
    );
}

/// Idle clients of the control socket never hold the master up: with many
/// of them connected and silent, `postern status` and a spawn service still
/// answer at once; a client sending garbage gets an error and is closed.
#[test]
fn idle_control_clients_do_not_stall_the_master() {
    const IDLE: usize = 16;
    let mut inst = Instance::new("", "echo unix n n n - 4 spawn user=nobody argv=/bin/cat");
    inst.start();
    let control = inst.etc().join("data/master/master.control");
    let idle: Vec<UnixStream> = (0..IDLE)
        .map(|_| UnixStream::connect(&control).unwrap())
        .collect();
    // Served one after the other with a 2 s wait each, these would take
    // more than half a minute; without waiting, a moment.
    let began = std::time::Instant::now();
    let status = inst.status();
    assert!(status.contains("master: pid"), "{status}");
    assert_eq!(
        unix_exchange(&inst.public("echo"), b"still served").unwrap(),
        b"still served"
    );
    let took = began.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "status and a spawn exchange took {took:?} with {IDLE} idle control clients\n{}",
        inst.log()
    );
    // Each idle client is closed at the master's deadline, by the master.
    for s in &idle {
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut rest = Vec::new();
        assert_eq!((&*s).read_to_end(&mut rest).unwrap(), 0);
    }
    // Garbage: an error line, then end-of-file.
    for junk in [&b"hello\n"[..], &[b'x'; 1000][..], b"\xff\x00status\n"] {
        let mut s = UnixStream::connect(&control).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(junk);
        let mut reply = String::new();
        s.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("error: "), "{junk:?}: {reply}");
    }
    let log = inst.log();
    assert!(!log.contains("stall"), "{log}");
    assert!(inst.status().contains("echo"), "still answering");
}

/// The account that owns what the configuration must not trust.
const MALLORY: &str = "pm-mallory";

/// A configuration directory inside a directory a user owns: `check` says
/// why, and `start` refuses, naming the directory and the reason.
#[test]
fn a_configuration_a_user_controls_is_refused() {
    let (uid, _, _) = postern_tests::test_account(MALLORY, "/bin/sh");
    let mut inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    let top = inst.dir.path().to_path_buf();
    std::os::unix::fs::chown(&top, Some(uid), None).unwrap();
    let why = format!("{} is owned by uid {uid}, not root", top.display());
    let check = inst.postern(&["check"]);
    assert_eq!(check.code, Some(1), "{check:?}");
    assert!(check.stderr.contains(&why), "{}", check.stderr);
    let start = inst.postern(&["start"]);
    assert_eq!(start.code, Some(78), "{start:?}");
    assert!(
        start.stderr.contains(&why) && start.stderr.contains("main.cf"),
        "{}",
        start.stderr
    );
    std::os::unix::fs::chown(&top, Some(0), None).unwrap();
    // Once root's again, it starts.
    inst.start();
}

/// A reload (by `postern reload` or SIGHUP) of a main.cf the user was
/// given is refused, and the running configuration keeps serving.
#[test]
fn a_reload_of_a_file_a_user_owns_is_refused_and_the_old_configuration_runs_on() {
    let (uid, _, _) = postern_tests::test_account(MALLORY, "/bin/sh");
    let mut inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    inst.start();
    inst.append_master("late unix n n n - 2 spawn user=nobody argv=/bin/cat");
    let main = inst.etc().join("main.cf");
    std::os::unix::fs::chown(&main, Some(uid), None).unwrap();
    let out = inst.postern(&["reload"]);
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "{} is owned by uid {uid}, not root",
            main.display()
        )),
        "{}",
        out.stderr
    );
    // SIGHUP straight to the master: refused there too.
    inst.sighup();
    inst.wait_log("reload refused:", 1);
    assert!(
        inst.log()
            .contains("the running configuration stays in force"),
        "{}",
        inst.log()
    );
    let status = inst.status();
    assert!(!status.contains("late"), "{status}");
    assert_eq!(unix_exchange(&inst.public("echo"), b"old").unwrap(), b"old");
    // Root's again: the reload goes through.
    std::os::unix::fs::chown(&main, Some(0), None).unwrap();
    let out = inst.postern(&["reload"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(eventually(WAIT, || inst.status().contains("late")));
}

/// daemon_directory in a directory others can write: refused by check and
/// start, named with the reason.
#[test]
fn a_daemon_directory_others_can_write_is_refused() {
    let inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    let daemons = inst.dir.path().join("daemons");
    std::fs::create_dir(&daemons).unwrap();
    std::fs::set_permissions(&daemons, std::fs::Permissions::from_mode(0o777)).unwrap();
    inst.append_main(&format!("daemon_directory = {}\n", daemons.display()));
    let why = format!("{} is writable by everyone (mode 0777)", daemons.display());
    let check = inst.postern(&["check"]);
    assert_eq!(check.code, Some(1), "{check:?}");
    assert!(check.stderr.contains(&why), "{}", check.stderr);
    let start = inst.postern(&["start"]);
    assert_eq!(start.code, Some(78), "{start:?}");
    assert!(start.stderr.contains(&why), "{}", start.stderr);
}
