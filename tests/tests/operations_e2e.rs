//! Operating an instance: the service manager's notifications, `status
//! --json` and its exit codes, `reload`'s verdict, the queue lock, logging
//! without syslog. Every test runs the real binaries as root.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use postern_tests::{bin, eventually, free_port, unix_exchange, Instance, WAIT};

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests run as root (see README)"
    );
}

/// A master run in the foreground by the test (not through `postern
/// start`), killed and reaped on drop.
struct Foreground {
    child: Option<Child>,
}

impl Foreground {
    fn start(inst: &Instance, env: &[(&str, &std::path::Path)], stderr: std::fs::File) -> Self {
        let mut cmd = Command::new(bin("postern"));
        cmd.arg("-c")
            .arg(inst.etc())
            .args(["start", "--foreground"])
            .env_remove("POSTERN_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Foreground {
            child: Some(cmd.spawn().expect("postern start --foreground")),
        }
    }

    /// Waits for the master to exit (after `postern stop`); its status.
    fn wait(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let ok = eventually(WAIT, || matches!(child.try_wait(), Ok(Some(_))));
        assert!(ok, "the foreground master did not exit");
        child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Receives the next notification within the deadline.
fn next_notification(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .expect("a notification on NOTIFY_SOCKET within the deadline");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Receives notifications until one has `line`; returns every one seen.
fn until(sock: &UnixDatagram, line: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let n = next_notification(sock);
        let done = n.lines().any(|l| l == line);
        seen.push(n);
        if done {
            return seen;
        }
    }
}

#[test]
fn the_service_manager_hears_ready_reloading_and_stopping_in_order() {
    require_root();
    let inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    let notify = inst.dir.path().join("notify");
    let sock = UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(WAIT)).unwrap();
    let stderr = std::fs::File::create(inst.dir.path().join("stderr")).unwrap();
    let mut master = Foreground::start(&inst, &[("NOTIFY_SOCKET", &notify)], stderr);
    let first = next_notification(&sock);
    assert!(first.lines().any(|l| l == "READY=1"), "{first}");
    assert!(
        first.lines().any(|l| l == "STATUS=1 service(s) running"),
        "{first}"
    );
    // Ready means served.
    assert_eq!(unix_exchange(&inst.public("echo"), b"hi").unwrap(), b"hi");
    let out = inst.postern(&["reload"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let reloading = next_notification(&sock);
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = next_notification(&sock);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    let out = inst.postern(&["stop"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let seen = until(&sock, "STOPPING=1");
    assert!(seen.iter().all(|n| !n.contains("READY=1")), "{seen:?}");
    assert_eq!(master.wait(), Some(0));
    // Children never see the service manager's socket.
    let log = std::fs::read_to_string(inst.dir.path().join("stderr")).unwrap();
    assert!(log.contains("stopped"), "{log}");
}

#[test]
fn a_throttled_service_makes_status_degraded_with_the_childs_reason() {
    require_root();
    let mut inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    inst.start();
    let out = inst.postern(&["status", "--json"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        v["master"]["pid"].as_u64(),
        inst.master_pid.map(u64::from),
        "{v}"
    );
    assert_eq!(v["services"][0]["name"], "echo", "{v}");
    assert_eq!(v["services"][0]["maxproc"], 2, "{v}");
    assert_eq!(v["queue"]["messages"]["incoming"], 0, "{v}");
    assert_eq!(v["queue"]["messages"]["deferred"], 0, "{v}");
    // Mail in incoming for more than a minute (no qmgr here) is degraded.
    let stuck = inst.etc().join("queue/incoming/STUCKTEST1");
    std::fs::write(&stuck, "postern-queue 1\n").unwrap();
    let touched = postern_tests::run(
        Command::new("touch")
            .args(["-d", "2 minutes ago"])
            .arg(&stuck),
    );
    assert_eq!(touched.code, Some(0), "{touched:?}");
    let out = inst.postern(&["status", "--json"]);
    assert_eq!(out.code, Some(1), "stuck mail is degraded: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert!(
        v["queue"]["oldest_incoming_seconds"].as_u64().unwrap_or(0) >= 60,
        "{v}"
    );
    std::fs::remove_file(&stuck).unwrap();
    assert_eq!(inst.postern(&["status"]).code, Some(0));
    // A service whose child refuses to start (postern check would refuse
    // it: the SIGHUP bypasses that).
    inst.append_master("asroot unix n n n - 2 spawn user=root argv=/bin/cat");
    inst.sighup();
    inst.wait_log("reload: done, 2 service(s)", 1);
    let _pending = std::os::unix::net::UnixStream::connect(inst.public("asroot")).unwrap();
    inst.wait_log(": throttling the service for", 1);
    let out = inst.postern(&["status", "--json"]);
    assert_eq!(out.code, Some(1), "degraded: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let asroot = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "asroot")
        .expect("asroot in status")
        .clone();
    assert_eq!(asroot["state"], "throttled", "{asroot}");
    let reason = asroot["throttled"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exit status 78")
            && reason.contains("user=root: uid 0 (root) is not allowed"),
        "{asroot}"
    );
    assert!(asroot["throttled"]["until"].as_str().is_some(), "{asroot}");
    // The plain table says so too, with the same exit status.
    let out = inst.postern(&["status"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.contains("throttled for") && out.stdout.contains("uid 0 (root)"),
        "{}",
        out.stdout
    );
    assert_eq!(inst.stop(true).code, Some(0));
    let out = inst.postern(&["status", "--json"]);
    assert_eq!(out.code, Some(3), "not running: {out:?}");
}

/// The pids of service `name`'s children, from `status --json`.
fn children(inst: &Instance, name: &str) -> Vec<u64> {
    let out = inst.postern(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    v["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["name"] == name)
        .flat_map(|s| s["children"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| c["pid"].as_u64())
        .collect()
}

#[test]
fn reload_waits_for_the_verdict_and_recycles_only_what_changed() {
    require_root();
    let mut inst = Instance::new(
        "",
        "one unix n n n - 2 spawn user=nobody argv=/bin/cat\n\
         two unix n n n - 2 spawn user=nobody argv=/bin/cat",
    );
    inst.start();
    for n in ["one", "two"] {
        assert_eq!(unix_exchange(&inst.public(n), b"x").unwrap(), b"x");
    }
    let one = children(&inst, "one");
    assert_eq!(one.len(), 1, "an idle child of one");
    assert_eq!(children(&inst, "two").len(), 1, "an idle child of two");
    // Only two changes: one keeps its child.
    let master = inst.etc().join("master.cf");
    let text = std::fs::read_to_string(&master).unwrap();
    std::fs::write(
        &master,
        text.replace("two unix n n n - 2", "two unix n n n - 3"),
    )
    .unwrap();
    let out = inst.postern(&["reload"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("1 new or recycled"), "{out:?}");
    assert_eq!(children(&inst, "one"), one);
    assert!(children(&inst, "two").is_empty());
    // reload SERVICE recycles that one.
    let out = inst.postern(&["reload", "one"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(children(&inst, "one").is_empty());
    assert_eq!(unix_exchange(&inst.public("one"), b"y").unwrap(), b"y");
    let out = inst.postern(&["reload", "nosuch"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no running service nosuch"), "{out:?}");
    // A configuration the master cannot apply: its address is taken.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    inst.append_master(&format!(
        "127.0.0.1:{port} inet n n n - 2 spawn user=nobody argv=/bin/cat"
    ));
    let out = inst.postern(&["reload"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("reload refused by the master")
            && out.stderr.contains(&format!("127.0.0.1:{port}")),
        "{out:?}"
    );
    assert_eq!(unix_exchange(&inst.public("one"), b"z").unwrap(), b"z");
}

#[test]
fn a_second_master_on_the_same_queue_refuses_and_the_first_keeps_working() {
    require_root();
    let mut first = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    first.start();
    // Another configuration with its own data_directory, the same queue.
    let second = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    second.append_main(&format!(
        "queue_directory = {}",
        first.etc().join("queue").display()
    ));
    let out = second.postern(&["start"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "master pid {}",
            first.master_pid.expect("running")
        )) && out.stderr.contains(&first.etc().display().to_string()),
        "names the running instance: {out:?}"
    );
    assert_eq!(
        unix_exchange(&first.public("echo"), b"still").unwrap(),
        b"still"
    );
    assert!(first.status().contains("echo"));
}

#[test]
fn without_syslog_logs_go_to_maillog_file_or_start_refuses_with_the_options() {
    require_root();
    if std::path::Path::new("/dev/log").exists() {
        eprintln!("skipped: this machine has /dev/log");
        return;
    }
    // Instance::new sets maillog_file: the log lands there.
    let mut inst = Instance::new("", "echo unix n n n - 2 spawn user=nobody argv=/bin/cat");
    inst.start();
    inst.wait_log("daemon started", 1);
    assert_eq!(inst.stop(false).code, Some(0));
    // Without maillog_file, start refuses and says what to do.
    let main = inst.etc().join("main.cf");
    let text: String = std::fs::read_to_string(&main)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("maillog_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&main, text).unwrap();
    let out = inst.postern(&["start"]);
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("/dev/log")
            && out.stderr.contains("maillog_file")
            && out.stderr.contains("--foreground"),
        "{out:?}"
    );
    // In the foreground, standard error.
    let stderr_path = inst.dir.path().join("stderr");
    let stderr = std::fs::File::create(&stderr_path).unwrap();
    let mut master = Foreground::start(&inst, &[], stderr);
    let ok = eventually(WAIT, || {
        std::fs::read_to_string(&stderr_path)
            .unwrap_or_default()
            .contains("daemon started")
    });
    assert!(ok, "no log on standard error");
    assert_eq!(inst.postern(&["stop"]).code, Some(0));
    assert_eq!(master.wait(), Some(0));
}

#[test]
fn a_port_in_use_at_start_exits_71() {
    require_root();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let inst = Instance::new(
        "",
        &format!("127.0.0.1:{port} inet n n n - 2 spawn user=nobody argv=/bin/cat"),
    );
    let out = inst.postern(&["start"]);
    assert_eq!(out.code, Some(71), "{out:?}");
    assert!(out.stderr.contains(&format!("127.0.0.1:{port}")), "{out:?}");
    let _ = free_port;
    let _ = Duration::ZERO;
}

/// The unit passes `systemd-analyze verify` (no running systemd needed),
/// with its commands pointed at the binaries under test; man pages are
/// checked by the package, not here.
#[test]
fn the_systemd_unit_verifies() {
    let unit =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/systemd/postern.service");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(text.contains("Type=notify"), "{text}");
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("postern.service");
    std::fs::write(
        &copy,
        text.replace("/usr/sbin/postern", &bin("postern").display().to_string()),
    )
    .unwrap();
    let out = postern_tests::run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy),
    );
    assert_eq!(out.code, Some(0), "systemd-analyze verify: {out:?}");
    assert!(out.stderr.trim().is_empty(), "{out:?}");
}

/// `postern check` reports main.cf's problems even when master.cf has a
/// syntax error, and every parameter a daemon reads has one default.
#[test]
fn check_reports_every_error_at_once_and_defaults_are_declared_once() {
    let inst = Instance::new(
        "mail_owner = no-such-owner-here",
        "broken unix n n n - ten spawn\nasroot unix n n n - 2 spawn user=root argv=/bin/cat",
    );
    let out = inst.postern(&["check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("'ten'"), "the syntax error: {out:?}");
    assert!(
        out.stderr.contains("no-such-owner-here"),
        "main.cf: {out:?}"
    );
    assert!(
        out.stderr
            .contains("user=root: uid 0 (root) is not allowed"),
        "the service behind the syntax error: {out:?}"
    );
    // A wrong value in main.cf hides nothing either: the checks run on the
    // rest, with the parameter's default in its place.
    let inst = Instance::new(
        "queue_run_delay = soon",
        "asroot unix n n n - 2 spawn user=root argv=/bin/cat",
    );
    let out = inst.postern(&["check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("queue_run_delay"), "main.cf: {out:?}");
    assert!(
        out.stderr
            .contains("user=root: uid 0 (root) is not allowed"),
        "the service behind the bad value: {out:?}"
    );
    let out = postern_tests::postern(&["config", "-d", "local_destination_concurrency_limit"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "local_destination_concurrency_limit = 2");
}

/// Every command addresses the same instance by default, root or not, and
/// one that needs root says so.
#[test]
fn an_ordinary_user_addresses_the_same_instance_and_is_told_to_be_root() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let inst = Instance::new("", "");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let postern = dir.path().join("postern");
    std::fs::copy(bin("postern"), &postern).unwrap();
    std::fs::set_permissions(&postern, std::fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        let run = || {
            postern_tests::run(
                Command::new("setpriv")
                    .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
                    .arg(&postern)
                    .args(args)
                    .env("HOME", dir.path())
                    .env_remove("POSTERN_CONFIG"),
            )
        };
        // The copy was open for writing a moment ago, and a process another
        // test thread forked meanwhile may hold that descriptor until its
        // own exec: the kernel then refuses to run the file (ETXTBSY).
        let mut out = run();
        let deadline = std::time::Instant::now() + postern_tests::WAIT;
        while out.stderr.contains("Text file busy") && std::time::Instant::now() < deadline {
            out = run();
        }
        out
    };
    let mine = as_nobody(&["config", "-h", "queue_directory"]);
    let roots = postern_tests::postern(&["config", "-h", "queue_directory"]);
    assert_eq!(mine.code, Some(0), "{mine:?}");
    assert_eq!(mine.stdout, roots.stdout, "{mine:?} {roots:?}");
    for cmd in ["status", "stop", "reload"] {
        let etc = inst.etc().display().to_string();
        let out = as_nobody(&["-c", &etc, cmd]);
        assert_eq!(out.code, Some(77), "{cmd}: {out:?}");
        assert!(
            out.stderr.contains("permission denied: run as root"),
            "{cmd}: {out:?}"
        );
    }
}

/// `init --self-contained` moves the demo service off the default's port.
#[test]
fn a_self_contained_init_picks_a_free_demo_port_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc");
    let out = postern_tests::postern(&["init", "--self-contained", &etc.display().to_string()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let master = std::fs::read_to_string(etc.join("master.cf")).unwrap();
    assert!(!master.contains("10026"), "{master}");
    let port = out
        .stdout
        .split("demo service on 127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("{out:?}"));
    assert!(
        master.contains(&format!("127.0.0.1:{port} inet")),
        "{master}"
    );
}

/// `scripts/install` into a DESTDIR lays out the platform's files, and the
/// installed `postern` finds its tools in PREFIX/libexec/postern.
#[test]
fn the_install_script_lays_out_the_files_in_destdir() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dest = tempfile::tempdir().unwrap();
    let out = postern_tests::run(
        Command::new("sh")
            .arg(root.join("scripts/install"))
            .args(["--no-build", "--sendmail-links"])
            .env("DESTDIR", dest.path())
            .env("PREFIX", "/usr")
            .env("TARGET_DIR", postern_tests::bin_dir()),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let d = dest.path();
    for f in [
        "usr/sbin/postern",
        "usr/sbin/postern-sendmail",
        "usr/sbin/sendmail",
        "usr/bin/mailq",
        "usr/bin/newaliases",
        "usr/libexec/postern/postern-master",
        "usr/libexec/postern/postern-spawn",
        "usr/libexec/postern/postern-pipe",
        "usr/libexec/postern/postern-local",
        "usr/libexec/postern/postern-submit",
        "usr/libexec/postern/postern-qmgr",
        "usr/libexec/postern/postern-queue",
        "usr/share/man/man1/postern.1",
        "usr/share/man/man1/postern-status.1",
        "usr/share/man/man1/postern-sendmail.1",
        "usr/share/man/man5/postern.conf.5",
        "lib/systemd/system/postern.service",
        "etc/postern/main.cf",
        "etc/postern/master.cf",
        "etc/postern/destinations",
    ] {
        assert!(d.join(f).exists(), "{f} missing: {out:?}");
    }
    assert!(d.join("etc/postern/programs").is_dir());
    let destinations = std::fs::read_to_string(d.join("etc/postern/destinations")).unwrap();
    assert!(
        !destinations.contains(&d.display().to_string()),
        "{destinations}"
    );
    // An existing configuration is left alone.
    std::fs::write(d.join("etc/postern/main.cf"), "# mine\n").unwrap();
    let again = postern_tests::run(
        Command::new("sh")
            .arg(root.join("scripts/install"))
            .arg("--no-build")
            .env("DESTDIR", d)
            .env("TARGET_DIR", postern_tests::bin_dir()),
    );
    assert_eq!(again.code, Some(0), "{again:?}");
    assert_eq!(
        std::fs::read_to_string(d.join("etc/postern/main.cf")).unwrap(),
        "# mine\n"
    );
    // The installed command runs its tools from PREFIX/libexec/postern.
    let out = postern_tests::run(
        Command::new(d.join("usr/sbin/postern"))
            .arg("-c")
            .arg(d.join("etc/postern"))
            .args(["queue", "list"]),
    );
    assert!(!out.stderr.contains("cannot run"), "{out:?}");
}
