//! End to end, as root: a real postern-master in a temporary instance, with
//! spawn services reached over real sockets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;

use postern_tests::{
    eventually, free_port, ids_of, proc_entries, tcp_exchange, unix_exchange, Instance, WAIT,
};

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests run as root (the master switches users)"
    );
}

#[test]
fn echo_over_inet_and_unix() {
    require_root();
    let port = free_port();
    let mut inst = Instance::new(
        "",
        &format!("127.0.0.1:{port} inet n n n - 4 spawn user=nobody argv=/bin/cat\necho unix n n n - 4 spawn user=nobody argv=/bin/cat"),
    );
    inst.start();
    assert_eq!(tcp_exchange(port, b"over inet\n").unwrap(), b"over inet\n");
    assert_eq!(
        unix_exchange(&inst.public("echo"), b"over unix\n").unwrap(),
        b"over unix\n"
    );
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(unix_exchange(&inst.public("echo"), &big).unwrap(), big);
}

#[test]
fn command_sees_exactly_its_user_groups_descriptors_and_environment() {
    require_root();
    let mut inst = Instance::new(
        "export_environment = TZ MAIL_CONFIG LANG POSTERN_LITERAL=yes\nTZ_UNUSED = x",
        "ids unix n n n - 4 spawn user=nobody argv=/usr/bin/id\n\
         groups unix n n n - 4 spawn user=nobody:daemon argv=/usr/bin/id\n\
         env unix n n n - 4 spawn user=nobody argv=/usr/bin/env\n\
         fds unix n n n - 4 spawn user=nobody argv=/bin/sh -c { echo $$; exec sleep 30 }",
    );
    inst.start();
    let (uid, gid) = ids_of("nobody");
    let id = String::from_utf8(unix_exchange(&inst.public("ids"), b"").unwrap()).unwrap();
    assert!(
        id.starts_with(&format!("uid={uid}(nobody) gid={gid}(")),
        "{id}"
    );
    // No supplementary groups but the one it runs with.
    let groups = id.split("groups=").nth(1).unwrap().trim();
    assert_eq!(groups.split(',').count(), 1, "{id}");
    assert!(groups.starts_with(&gid.to_string()), "{id}");
    // user=name:group runs with that group only.
    let id = String::from_utf8(unix_exchange(&inst.public("groups"), b"").unwrap()).unwrap();
    let daemon_gid = postern_common_gid("daemon");
    assert!(
        id.contains(&format!(
            "gid={daemon_gid}(daemon) groups={daemon_gid}(daemon)"
        )),
        "{id}"
    );
    // The environment is export_environment plus PATH, nothing else.
    let env = String::from_utf8(unix_exchange(&inst.public("env"), b"").unwrap()).unwrap();
    let names: BTreeSet<&str> = env.lines().map(|l| l.split('=').next().unwrap()).collect();
    let allowed: BTreeSet<&str> = ["TZ", "MAIL_CONFIG", "LANG", "POSTERN_LITERAL", "PATH"].into();
    assert!(names.is_subset(&allowed), "unexpected variables: {env}");
    assert!(env.lines().any(|l| l == "PATH=/usr/bin:/bin"), "{env}");
    assert!(env.lines().any(|l| l == "POSTERN_LITERAL=yes"), "{env}");
    // Descriptors 0, 1, 2 only, seen from outside the process.
    let s = UnixStream::connect(inst.public("fds")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    let pid: u32 = line.trim().parse().unwrap();
    // After the exec the pid is sleep's; wait for the exec to have happened.
    assert!(eventually(WAIT, || std::fs::read_to_string(format!(
        "/proc/{pid}/comm"
    ))
    .is_ok_and(|c| c.trim() == "sleep")));
    let fds: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        fds,
        ["0", "1", "2"].iter().map(|s| s.to_string()).collect(),
        "descriptors of the command"
    );
    // It leads its own session and process group.
    let me = proc_entries().into_iter().find(|p| p.pid == pid).unwrap();
    assert_eq!(me.pgid, pid, "process group leader");
    // No signal blocked or ignored (spawn itself ignores SIGPIPE and
    // handles others), working directory /.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    for field in ["SigBlk:", "SigIgn:"] {
        let line = status.lines().find(|l| l.starts_with(field)).unwrap();
        assert!(
            line.split_whitespace()
                .nth(1)
                .unwrap()
                .chars()
                .all(|c| c == '0'),
            "{line}"
        );
    }
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
        std::path::Path::new("/")
    );
    drop(s);
}

#[test]
fn a_bare_command_name_is_found_in_path_and_a_missing_command_is_logged() {
    require_root();
    // A script without `#!` runs through /bin/sh, as execvp does it.
    let dir = tempfile::Builder::new()
        .prefix("postern-spawn-script")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let script = dir.path().join("noshebang");
    std::fs::write(&script, "echo \"run by sh: $1\"\n").unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut inst = Instance::new(
        "",
        &format!(
            "script unix n n n - 2 spawn user=nobody argv={} arg1\n\
         bare unix n n n - 2 spawn user=nobody argv=cat\n\
         missing unix n n n - 2 spawn user=nobody argv=/nonexistent/command -x\n\
         notexec unix n n n - 2 spawn user=nobody argv=/etc/passwd",
            script.display()
        ),
    );
    inst.start();
    assert_eq!(
        unix_exchange(&inst.public("script"), b"").unwrap(),
        b"run by sh: arg1\n"
    );
    assert_eq!(
        unix_exchange(&inst.public("bare"), b"found in PATH").unwrap(),
        b"found in PATH"
    );
    // The connection is closed unanswered, the reason logged; the service
    // keeps its child and serves the next connection the same way.
    for _ in 0..2 {
        assert_eq!(unix_exchange(&inst.public("missing"), b"").unwrap(), b"");
    }
    inst.wait_log(
        "service missing: cannot run /nonexistent/command as nobody: execve: No such file or directory",
        2,
    );
    assert_eq!(unix_exchange(&inst.public("notexec"), b"").unwrap(), b"");
    inst.wait_log(
        "service notexec: cannot run /etc/passwd as nobody: execve: Permission denied",
        1,
    );
    assert!(!inst.log().contains("throttling"), "{}", inst.log());
}

fn postern_common_gid(group: &str) -> u32 {
    let out = std::process::Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

/// The pid of the spawn child that ran the command (its parent).
fn served_by(inst: &Instance, name: &str) -> u32 {
    let out = unix_exchange(&inst.public(name), b"").unwrap();
    String::from_utf8(out).unwrap().trim().parse().unwrap()
}

#[test]
fn max_use_recycles_the_child() {
    require_root();
    let mut inst = Instance::new(
        "",
        "ppid unix n n n - 1 spawn -o max_use=3 user=nobody argv=/bin/sh -c { echo $PPID }",
    );
    inst.start();
    let pids: Vec<u32> = (0..4).map(|_| served_by(&inst, "ppid")).collect();
    assert_eq!(pids[0], pids[1]);
    assert_eq!(pids[1], pids[2]);
    assert_ne!(
        pids[2], pids[3],
        "the fourth request is served by a new child"
    );
}

#[test]
fn max_idle_child_exits_and_the_next_connection_is_served() {
    require_root();
    let mut inst = Instance::new(
        "",
        "ppid unix n n n - 1 spawn -o max_idle=1s user=nobody argv=/bin/sh -c { echo $PPID }",
    );
    inst.start();
    let first = served_by(&inst, "ppid");
    assert!(eventually(WAIT, || !std::path::Path::new(&format!(
        "/proc/{first}"
    ))
    .exists()
        || std::fs::read_to_string(format!("/proc/{first}/stat"))
            .is_ok_and(|s| s.contains(") Z "))));
    let second = served_by(&inst, "ppid");
    assert_ne!(first, second);
}

#[test]
fn time_limit_kills_the_command_and_its_grandchild() {
    require_root();
    let mut inst = Instance::new(
        "slow_time_limit = 2s",
        "slow unix n n n - 2 spawn user=nobody argv=/bin/sh -c { sleep 300 & echo $!; sleep 300 }\n\
         echo unix n n n - 2 spawn user=nobody argv=/bin/cat",
    );
    inst.start();
    let s = UnixStream::connect(inst.public("slow")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let grandchild: u32 = line.trim().parse().unwrap();
    assert!(std::path::Path::new(&format!("/proc/{grandchild}")).exists());
    // At the limit the whole group dies: the connection reaches end-of-file.
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(eventually(WAIT, || {
        std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
            .map_or(true, |s| s.contains(") Z "))
    }));
    inst.wait_log("exceeded the time limit of 2s: killed its process group", 1);
    // The service keeps working.
    assert_eq!(
        unix_exchange(&inst.public("echo"), b"still here").unwrap(),
        b"still here"
    );
    let mut s2 = UnixStream::connect(inst.public("slow")).unwrap();
    s2.set_read_timeout(Some(WAIT)).unwrap();
    let mut l2 = String::new();
    BufReader::new(&s2).read_line(&mut l2).unwrap();
    assert!(l2.trim().parse::<u32>().is_ok());
    let _ = s2.write_all(b"x");
}

/// A command that exits leaving a job in its process group: the job does
/// not outlive the command (else no time limit would ever reach it).
#[test]
fn what_a_command_leaves_in_its_group_is_killed_when_it_exits() {
    require_root();
    let mut inst = Instance::new(
        "",
        "leaver unix n n n - 2 spawn user=nobody argv=/bin/sh -c { sleep 300 >/dev/null 2>&1 & echo $! }",
    );
    inst.start();
    let out = unix_exchange(&inst.public("leaver"), b"").unwrap();
    let job: u32 = String::from_utf8_lossy(&out).trim().parse().unwrap();
    assert!(eventually(WAIT, || {
        std::fs::read_to_string(format!("/proc/{job}/stat")).map_or(true, |s| s.contains(") Z "))
    }));
}

#[test]
fn forbidden_users_are_refused_named_by_check_and_do_not_affect_other_services() {
    require_root();
    let mut inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    inst.start();
    let master = inst.etc().join("master.cf");
    let lines = std::fs::read_to_string(&master).unwrap().lines().count();
    inst.append_master(
        "asroot unix n n n - 2 spawn user=root argv=/bin/cat\n\
         asowner unix n n n - 2 spawn user=postern argv=/bin/cat\n\
         rootgroup unix n n n - 2 spawn user=nobody:root argv=/bin/cat",
    );
    // postern check names each line.
    let out = inst.postern(&["check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let shown = master.display();
    assert!(
        out.stderr.contains(&format!(
            "{shown}:{}: service asroot/unix: user=root: uid 0 (root) is not allowed",
            lines + 1
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{shown}:{}: service asowner/unix: user=postern: uid",
            lines + 2
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("is the mail owner's, which is not allowed"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&format!("{shown}:{}: service rootgroup/unix: user=nobody:root: gid 0 (root's group) is not allowed", lines + 3)), "{}", out.stderr);
    // postern reload refuses such a configuration; a SIGHUP makes the master
    // take it, and each child refuses at startup with the reason.
    assert_eq!(inst.postern(&["reload"]).code, Some(78));
    inst.sighup();
    inst.wait_log("reload: done, 4 service(s)", 1);
    // Each connection starts a child that refuses to run; the connection is
    // never served (it waits in the queue of the throttled service).
    let _pending: Vec<UnixStream> = ["asroot", "asowner", "rootgroup"]
        .iter()
        .map(|n| UnixStream::connect(inst.public(n)).unwrap())
        .collect();
    inst.wait_log(
        "fatal: service asroot: user=root: uid 0 (root) is not allowed",
        1,
    );
    inst.wait_log("fatal: service asowner: user=postern: uid", 1);
    inst.wait_log(
        "fatal: service rootgroup: user=nobody:root: gid 0 (root's group) is not allowed",
        1,
    );
    // The throttle line carries the child's own reason.
    inst.wait_log(": throttling the service for", 3);
    assert!(
        inst.log().contains(
            "before taking its first request: service asroot: user=root: uid 0 (root) is not allowed: throttling the service for"
        ),
        "{}",
        inst.log()
    );
    assert_eq!(
        unix_exchange(&inst.public("echo"), b"unaffected").unwrap(),
        b"unaffected"
    );
}

#[test]
fn a_child_that_fails_at_startup_is_throttled_to_one_fork_per_period() {
    require_root();
    let mut inst = Instance::new(
        "service_throttle_time = 60s",
        "broken unix n n n - 5 spawn user=no-such-user-here argv=/bin/cat\necho unix n n n - 2 spawn user=nobody argv=/bin/cat",
    );
    // postern start refuses a configuration that check rejects; add the
    // broken service after start, with a SIGHUP.
    let master = inst.etc().join("master.cf");
    let text = std::fs::read_to_string(&master).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("broken"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&master, without).unwrap();
    inst.start();
    inst.append_master("broken unix n n n - 5 spawn user=no-such-user-here argv=/bin/cat");
    inst.sighup();
    inst.wait_log("reload: done, 2 service(s)", 1);
    let mut clients = Vec::new();
    for _ in 0..5 {
        let s = UnixStream::connect(inst.public("broken")).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_millis(300)))
            .unwrap();
        clients.push(s);
        inst.wait_log("throttling the service", 1);
    }
    // Other services are not affected, and still only one fork happened.
    assert_eq!(
        unix_exchange(&inst.public("echo"), b"fine").unwrap(),
        b"fine"
    );
    let log = inst.log();
    // One fork: one child's fatal line, which the throttle line repeats.
    assert_eq!(log.matches("fatal: service broken:").count(), 1, "{log}");
    assert!(
        log.contains("before taking its first request: service broken: user=no-such-user-here: no such user 'no-such-user-here': throttling the service for 60s"),
        "{log}"
    );
    assert_eq!(log.matches("throttling the service").count(), 1, "{log}");
    assert!(inst.status().contains("throttled for"), "{}", inst.status());
}

#[test]
fn maxproc_limits_children_and_the_extra_client_waits_its_turn() {
    require_root();
    let mut inst =
        Instance::new("", "limited unix n n n - 2 spawn user=nobody argv=/bin/sh -c { read line; echo \"got $line\" }");
    inst.start();
    let connect = || {
        let s = UnixStream::connect(inst.public("limited")).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    };
    let mut a = connect();
    let mut b = connect();
    assert!(eventually(WAIT, || inst.children_of("limited").len() == 2));
    let mut c = connect();
    inst.wait_log("has reached its process limit 2", 1);
    // Never more than two, while the third client waits.
    for _ in 0..10 {
        assert!(inst.children_of("limited").len() <= 2);
    }
    let exchange = |s: &mut UnixStream, text: &str| {
        s.write_all(format!("{text}\n").as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    assert_eq!(exchange(&mut a, "a"), "got a\n");
    assert_eq!(exchange(&mut c, "c"), "got c\n");
    assert_eq!(exchange(&mut b, "b"), "got b\n");
    assert!(inst.children_of("limited").len() <= 2);
}

/// Whether a `sleep MARKER` is alive (not a zombie). (The spawn child's own
/// command line holds the marker too, inside its master.cf arguments.)
fn alive_with(marker: &str) -> bool {
    proc_entries().iter().any(|p| {
        p.state != 'Z'
            && p.cmdline.first().is_some_and(|a| a.ends_with("sleep"))
            && p.cmdline.get(1).is_some_and(|a| a == marker)
    })
}

/// A descendant that leaves the command's session (`setsid`) is still
/// reached by the time limit, and by the end of the command: the client
/// sees end-of-file, and no such process survives.
#[test]
fn a_descendant_that_calls_setsid_does_not_escape_the_limit() {
    require_root();
    let id = std::process::id();
    // Unique arguments to find the escapees by (`sleep 1000.PID1`, ...).
    let stays = format!("1000.{id}1");
    let leaves = format!("1000.{id}2");
    let mut inst = Instance::new(
        "stays_time_limit = 2s\nleaves_time_limit = 2s",
        &format!(
            "stays unix n n n - 2 spawn user=nobody argv=/bin/sh -c {{ setsid sleep {stays} & echo started; sleep 300 }}\n\
             leaves unix n n n - 2 spawn user=nobody argv=/bin/sh -c {{ setsid sleep {leaves} & echo started }}"
        ),
    );
    inst.start();
    for (service, marker) in [("stays", &stays), ("leaves", &leaves)] {
        let s = UnixStream::connect(inst.public(service)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        assert_eq!(line, "started\n", "{service}");
        // The escapee holds the connection open until it is killed: at the
        // 2 s limit for `stays`, when the shell exits for `leaves`. WAIT is
        // the test's generous deadline (a read timeout fails the test).
        let began = std::time::Instant::now();
        let mut rest = Vec::new();
        reader
            .read_to_end(&mut rest)
            .unwrap_or_else(|e| panic!("{service}: no end-of-file: {e}\n{}", inst.log()));
        assert!(began.elapsed() < WAIT, "{service}");
        assert!(
            eventually(WAIT, || !alive_with(marker)),
            "{service}: sleep {marker} survived\n{}",
            inst.log()
        );
    }
    inst.wait_log("exceeded the time limit of 2s: killed its process group", 1);
}

/// Process group and session of `pid` (`/proc/PID/stat` fields 5 and 6),
/// and its controlling terminal's device number (field 7, 0 for none).
fn group_session_tty(pid: i32) -> (i32, i32, i64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // After the command name in parentheses: state, ppid, pgrp, session, tty_nr.
    let after = stat.rsplit_once(')').unwrap().1;
    let f: Vec<&str> = after.split_whitespace().collect();
    (
        f[2].parse().unwrap(),
        f[3].parse().unwrap(),
        f[4].parse().unwrap(),
    )
}

/// The command's own report: its pid, process group and session, then
/// whether it could open its controlling terminal (`/dev/tty`).
const REPORT: &str = "/bin/sh -c { read -r p c s pp g sid rest < /proc/$$/stat; echo $p $g $sid; \
                      if (exec 3</dev/tty) 2>/dev/null; then echo tty; else echo no-tty; fi }";

fn report(path: &std::path::Path) -> (i32, i32, i32, String) {
    let out = String::from_utf8(unix_exchange(path, b"").unwrap()).unwrap();
    let mut lines = out.lines();
    let ids: Vec<i32> = lines
        .next()
        .unwrap_or_else(|| panic!("no report: {out:?}"))
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 3, "{out:?}");
    (
        ids[0],
        ids[1],
        ids[2],
        lines.next().unwrap_or("").to_string(),
    )
}

/// A command leads its own process group (the time limit kills the group)
/// and stays in the master's session when the master has no controlling
/// terminal (a daemon: one scheduling autogroup for the whole instance).
#[test]
fn a_command_leads_its_group_in_the_daemons_session() {
    require_root();
    let mut inst = Instance::new(
        "",
        &format!("report unix n n n - 2 spawn user=nobody argv={REPORT}"),
    );
    inst.start();
    let master = inst.master_pid.unwrap() as i32;
    let (_, master_session, master_tty) = group_session_tty(master);
    assert_eq!(
        master_tty, 0,
        "postern start leaves the master without a terminal"
    );
    let (pid, group, session, tty) = report(&inst.public("report"));
    assert_eq!(group, pid, "its own process group");
    assert_eq!(session, master_session, "the master's session");
    assert_eq!(tty, "no-tty");
}

/// With the master in the foreground on a terminal (a pseudo-terminal made
/// its controlling terminal by `setsid -c`), a command leads its own
/// session and cannot open that terminal.
#[test]
fn a_command_never_gets_the_foreground_masters_terminal() {
    require_root();
    let inst = Instance::new(
        "",
        &format!("report unix n n n - 2 spawn user=nobody argv={REPORT}"),
    );
    let pty = nix::pty::openpty(None, None).unwrap();
    let slave = |fd: &std::os::fd::OwnedFd| std::process::Stdio::from(fd.try_clone().unwrap());
    // The terminal's output (the master logs to it) is read and dropped so
    // that the master never blocks on it; the reader ends with the terminal.
    let mut output = std::fs::File::from(pty.master);
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        // An error (EIO) is how a pseudo-terminal reports that no one has
        // its other side open any more: the end of the output.
        let _ = output.read_to_end(&mut sink);
    });
    let child = std::process::Command::new("setsid")
        .arg("-c")
        .arg(postern_tests::bin("postern"))
        .arg("-c")
        .arg(inst.etc())
        .args(["start", "--foreground"])
        .env_remove("POSTERN_CONFIG")
        .stdin(slave(&pty.slave))
        .stdout(slave(&pty.slave))
        .stderr(slave(&pty.slave))
        .spawn()
        .expect("setsid -c postern start --foreground");
    drop(pty.slave);
    struct Reaped(std::process::Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            // Already gone when the test stopped it; else it is ended here.
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut master = Reaped(child);
    let path = inst.public("report");
    assert!(
        eventually(WAIT, || UnixStream::connect(&path).is_ok()),
        "the foreground master did not open its service\n{}",
        inst.log()
    );
    let master_pid = master.0.id() as i32;
    let (_, master_session, master_tty) = group_session_tty(master_pid);
    assert_eq!(
        master_session, master_pid,
        "setsid -c made it a session leader"
    );
    assert_ne!(master_tty, 0, "the master has the terminal");
    let (pid, group, session, tty) = report(&path);
    assert_eq!(tty, "no-tty", "the command opened the master's terminal");
    assert_eq!((group, session), (pid, pid), "its own group and session");
    assert_eq!(inst.postern(&["stop"]).code, Some(0));
    assert!(
        eventually(WAIT, || matches!(master.0.try_wait(), Ok(Some(_)))),
        "the foreground master did not exit"
    );
    drop(master);
    drain.join().unwrap();
}

/// A real policy server under spawn, as Postfix's smtpd would use it
/// (`check_policy_service unix:private/policyd`): Debian's policyd-spf,
/// run as its own account, answers each access-policy request of a
/// connection (several per connection, as smtpd sends them) and leaves
/// when the client closes. A local client needs no DNS: the answer is
/// fixed.
#[test]
fn a_real_policy_server_answers_each_request_of_a_connection() {
    require_root();
    assert!(
        std::path::Path::new("/usr/bin/policyd-spf").exists(),
        "policyd-spf missing (apt-get install postfix-policyd-spf-python, see .ci/run)"
    );
    let mut inst = Instance::new(
        "",
        "policyd unix n n n - 4 spawn user=policyd-spf argv=/usr/bin/policyd-spf",
    );
    inst.start();
    let request = |n: u32, client: &str| {
        format!(
            "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n\
             helo_name=client.example\nqueue_id=\nsender=ann{n}@example.org\n\
             recipient=bob@localhost\nclient_address={client}\nclient_name=localhost\n\
             instance={n}.1\n\n"
        )
    };
    let s = UnixStream::connect(inst.public("policyd")).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(&s);
    for (n, client) in [(1, "127.0.0.1"), (2, "::1")] {
        (&s).write_all(request(n, client).as_bytes()).unwrap();
        // One answer: `action=...` and an empty line.
        let mut answer = String::new();
        reader.read_line(&mut answer).unwrap();
        let mut end = String::new();
        reader.read_line(&mut end).unwrap();
        assert!(
            answer.starts_with("action=prepend X-Comment: SPF check N/A for local connections")
                && answer.contains(&format!("client-ip={client};"))
                && answer.contains(&format!("envelope-from=ann{n}@example.org;"))
                && end == "\n",
            "answer {n}: {answer:?} {end:?}\nlog:\n{}",
            inst.log()
        );
    }
    drop(reader);
    drop(s);
    // The client gone, the server leaves: nothing of it is left running.
    let gone = eventually(WAIT, || {
        !proc_entries()
            .iter()
            .any(|p| p.cmdline.iter().any(|a| a == "/usr/bin/policyd-spf"))
    });
    assert!(gone, "policyd-spf still running\n{}", inst.log());
}
