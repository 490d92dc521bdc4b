//! End to end, as root: program delivery through postern-local, for each
//! state of the trusted program directory (DESIGN.md's table).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use postern_common::handoff::{self, DeliveryRequest, Destination, Instruction, Outcome};
use postern_tests::{eventually, ids_of, test_account, Instance, WAIT};

const USER: &str = "pt-prog";

struct Setup {
    inst: Instance,
    markers: tempfile::TempDir,
}

impl Setup {
    fn new(extra_main: &str) -> Self {
        test_account(USER, "/bin/bash");
        let mut inst = Instance::new(
            &format!("command_time_limit = 3s\n{extra_main}"),
            "local unix - n n - - local",
        );
        inst.start();
        let markers = tempfile::tempdir().unwrap();
        std::fs::set_permissions(markers.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        Setup { inst, markers }
    }

    fn programs(&self) -> PathBuf {
        self.inst.etc().join("programs")
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.markers.path().join(name)
    }

    /// Installs a root-owned 0755 script in the trusted directory.
    fn install(&self, name: &str, body: &str) {
        write_script(&self.programs().join(name), body);
    }

    fn deliver(&self, user: &str, programs: &[&str]) -> postern_tests::Outcome {
        let mut args = vec![
            "-f",
            "sender@example.org",
            "--user",
            user,
            "--recipient",
            "prog+ext@example.org",
        ];
        for p in programs {
            args.push("--program");
            args.push(p);
        }
        self.inst
            .deliver(&args, b"Subject: program test\n\nthe body\n")
    }
}

fn write_script(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Whether the process whose pid a program wrote to `marker` ends (is gone
/// or a zombie) within the usual deadline.
fn ends_eventually(marker: &Path) -> bool {
    let pid: u32 = std::fs::read_to_string(marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually(WAIT, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |st| st.contains(") Z "))
    })
}

/// The recording program: identity, directory, exact environment, input.
fn recorder(marker: &Path) -> String {
    format!(
        "{{ echo \"uid=$(id -u) gid=$(id -g) groups=$(id -G)\"; echo \"cwd=$(pwd)\"; tr '\\0' '\\n' < /proc/$$/environ; echo ---; cat; }} > {}",
        marker.display()
    )
}

#[test]
fn empty_trusted_directory_means_disabled() {
    let s = Setup::new("");
    let out = s.deliver(USER, &["record"]);
    assert_eq!(out.code, Some(69), "{out:?}");
    assert!(
        out.stdout.contains("bounced (5.3.0)")
            && out
                .stdout
                .contains("no programs in the trusted program directory"),
        "{}",
        out.stdout
    );
}

#[test]
fn secure_mode_runs_only_the_trusted_program_as_the_user_with_the_allowed_environment() {
    let s = Setup::new("");
    s.install("record", &recorder(&s.marker("record.out")));
    // A program of the same name elsewhere, and one that exists only elsewhere.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    write_script(
        &elsewhere.path().join("record"),
        &format!("touch {}", s.marker("decoy-ran").display()),
    );
    write_script(
        &elsewhere.path().join("evil"),
        &format!("touch {}", s.marker("evil-ran").display()),
    );
    let path_given = format!("{}/record arg1", elsewhere.path().display());
    let out = s.deliver(USER, &[&path_given]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", s.inst.log());
    assert!(
        !s.marker("decoy-ran").exists(),
        "the path the user gave was ignored"
    );
    let record = std::fs::read_to_string(s.marker("record.out")).unwrap();
    let (uid, gid) = ids_of(USER);
    assert!(
        record.starts_with(&format!("uid={uid} gid={gid} groups={gid}\n")),
        "{record}"
    );
    assert!(record.contains(&format!("cwd=/home/{USER}\n")), "{record}");
    let (env_part, input) = record.split_once("---\n").unwrap();
    let names: BTreeSet<&str> = env_part
        .lines()
        .skip(2)
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    // Postfix local(8)'s environment, nothing else.
    let allowed: BTreeSet<&str> = [
        "TZ",
        "AGENT",
        "SENDER",
        "RECIPIENT",
        "ORIGINAL_RECIPIENT",
        "USER",
        "LOGNAME",
        "HOME",
        "SHELL",
        "LOCAL",
        "EXTENSION",
        "DOMAIN",
        "PATH",
    ]
    .into();
    assert!(names.is_subset(&allowed), "environment {names:?}");
    for want in [
        "SENDER=sender@example.org",
        "RECIPIENT=prog+ext@example.org",
        "ORIGINAL_RECIPIENT=prog+ext@example.org",
        &format!("USER={USER}"),
        &format!("LOGNAME={USER}"),
        &format!("HOME=/home/{USER}"),
        "SHELL=/bin/bash",
        "LOCAL=prog+ext",
        "DOMAIN=example.org",
        "PATH=/usr/bin:/bin",
        "AGENT=postern-local",
    ] {
        assert!(env_part.lines().any(|l| l == want), "{want} in {env_part}");
    }
    // The envelope Postfix's local(8) gives a command: From_ line,
    // Return-Path:, X-Original-To:, Delivered-To:, no quoting.
    let (from_line, rest) = input.split_once('\n').unwrap();
    assert!(
        from_line.starts_with("From sender@example.org  "),
        "{input}"
    );
    assert!(
        rest.starts_with(
            "Return-Path: <sender@example.org>\nX-Original-To: prog+ext@example.org\nDelivered-To: prog+ext@example.org\n"
        ),
        "{input}"
    );
    assert!(input.ends_with("\nthe body\n"), "{input}");
    // A program outside the trusted directory never runs.
    let evil = format!("{}/evil", elsewhere.path().display());
    let out = s.deliver(USER, &[&evil]);
    assert!(
        out.stdout.contains("bounced (5.3.0)")
            && out
                .stdout
                .contains("is not in the trusted program directory"),
        "{}",
        out.stdout
    );
    assert!(!s.marker("evil-ran").exists(), "the untrusted program ran");
}

fn handoff_program(
    s: &Setup,
    user: &str,
    command: &str,
) -> postern_common::handoff::RecipientStatus {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"Subject: x\n\nbody\n").unwrap();
    let fd = OwnedFd::from(f);
    let req = DeliveryRequest {
        queue_id: "PROG".into(),
        sender: "s@example.org".into(),
        arrival: 0,
        message_offset: 0,
        message_size: None,
        recipients: vec![Instruction {
            recipient: format!("{user}@example.org"),
            original_recipient: None,
            user: user.into(),
            extension: None,
            destination: Destination::Programs(vec![command.into()]),
            uncertain: false,
        }],
    };
    handoff::deliver(&s.inst.local_socket(), &req, &fd, WAIT)
        .unwrap()
        .statuses
        .remove(0)
}

#[test]
fn flag_files_disable_suspend_and_make_insecure() {
    let s = Setup::new("");
    s.install("record", &recorder(&s.marker("record.out")));
    let outside = tempfile::tempdir().unwrap();
    std::fs::set_permissions(outside.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let evil = outside.path().join("evil");
    write_script(
        &evil,
        &format!("cat > /dev/null; touch {}", s.marker("evil-ran").display()),
    );
    // NO-PROGRAM-DELIVERIES: bounce, and the postmaster is to be told.
    std::fs::write(s.programs().join("NO-PROGRAM-DELIVERIES"), "").unwrap();
    let st = handoff_program(&s, USER, "record");
    assert_eq!(
        (st.outcome, st.dsn.as_str(), st.notify_postmaster),
        (Outcome::Bounced, "5.3.0", true),
        "{st:?}"
    );
    assert!(st.reason.contains("NO-PROGRAM-DELIVERIES"), "{st:?}");
    std::fs::remove_file(s.programs().join("NO-PROGRAM-DELIVERIES")).unwrap();
    // SUSPEND-PROGRAM-DELIVERIES: deferred, stays queued.
    std::fs::write(s.programs().join("SUSPEND-PROGRAM-DELIVERIES"), "").unwrap();
    let out = s.deliver(USER, &["record"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(
        out.stdout.contains("deferred (4.3.0)")
            && out.stdout.contains("SUSPEND-PROGRAM-DELIVERIES"),
        "{}",
        out.stdout
    );
    assert!(!s.marker("record.out").exists());
    std::fs::remove_file(s.programs().join("SUSPEND-PROGRAM-DELIVERIES")).unwrap();
    // INSECURE-PROGRAM-DELIVERIES: absolute paths run as given; relative ones do not.
    std::fs::write(s.programs().join("INSECURE-PROGRAM-DELIVERIES"), "").unwrap();
    let out = s.deliver(USER, &["evil"]);
    assert!(
        out.stdout.contains("requires an absolute path"),
        "{}",
        out.stdout
    );
    assert!(!s.marker("evil-ran").exists());
    // The destination policy still applies: the program must be allowed there too.
    let out = s.deliver(USER, &[evil.to_str().unwrap()]);
    assert!(
        out.stdout.contains("bounced (5.7.1)") && out.stdout.contains("is not allowed by"),
        "{}",
        out.stdout
    );
    assert!(!s.marker("evil-ran").exists());
    let mut policy = std::fs::OpenOptions::new()
        .append(true)
        .open(s.inst.etc().join("destinations"))
        .unwrap();
    writeln!(policy, "program {}/*", outside.path().display()).unwrap();
    let out = s.deliver(USER, &[evil.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        s.marker("evil-ran").exists(),
        "non-secure mode runs the absolute path"
    );
}

#[test]
fn a_trusted_directory_writable_by_others_disables_program_delivery() {
    let s = Setup::new("");
    s.install("record", &recorder(&s.marker("record.out")));
    std::fs::set_permissions(s.programs(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = s.deliver(USER, &["record"]);
    assert!(
        out.stdout.contains("bounced (5.3.0)")
            && out
                .stdout
                .contains("is writable by group or others (mode 0777)"),
        "{}",
        out.stdout
    );
    assert!(!s.marker("record.out").exists());
    let check = s.inst.postern(&["check"]);
    assert!(
        check.stderr.contains("program delivery is disabled")
            && check.stderr.contains("writable by group or others"),
        "{}",
        check.stderr
    );
}

#[test]
fn root_runs_as_default_privs_and_a_shell_outside_etc_shells_is_refused() {
    let s = Setup::new("");
    s.install("record", &recorder(&s.marker("root.out")));
    let out = s.deliver("root", &["record"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let (nobody, _) = ids_of("nobody");
    let record = std::fs::read_to_string(s.marker("root.out")).unwrap();
    assert!(
        record.starts_with(&format!("uid={nobody} ")),
        "root's program ran as default_privs: {record}"
    );
    test_account("pt-noshell", "/usr/sbin/nologin");
    let out = s.deliver("pt-noshell", &["record"]);
    assert!(
        out.stdout.contains("bounced (5.7.1)") && out.stdout.contains("is not in /etc/shells"),
        "{}",
        out.stdout
    );
}

#[test]
fn hangs_are_killed_with_their_group_and_exit_codes_map_to_outcomes() {
    let s = Setup::new("");
    s.install(
        "hang",
        &format!(
            "sleep 300 &\necho $! > {}\nsleep 300",
            s.marker("hang.pid").display()
        ),
    );
    s.install("later", "cat > /dev/null; echo 'try again later'; exit 75");
    s.install(
        "broken",
        "cat > /dev/null; printf 'oops\\033[31m\\n'; exit 1",
    );
    s.install(
        "fine",
        &format!("cat > /dev/null; touch {}", s.marker("fine-ran").display()),
    );
    s.install("chatty", "cat > /dev/null; echo hello; exit 0");
    let out = s.deliver(USER, &["hang"]);
    assert!(
        out.stdout.contains("bounced (5.3.0)")
            && out.stdout.contains("exceeded the time limit of 3s"),
        "{}",
        out.stdout
    );
    assert!(ends_eventually(&s.marker("hang.pid")));
    let out = s.deliver(USER, &["later"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(
        out.stdout.contains("deferred (4.3.0)") && out.stdout.contains("try again later"),
        "{}",
        out.stdout
    );
    let out = s.deliver(USER, &["broken"]);
    assert!(
        out.stdout.contains("bounced (5.3.0)")
            && out.stdout.contains("exited with status 1: oops?[31m"),
        "{}",
        out.stdout
    );
    // Several programs run in order; the first failure stops the rest.
    let out = s.deliver(USER, &["broken", "fine"]);
    assert!(out.stdout.contains("bounced"), "{}", out.stdout);
    assert!(!s.marker("fine-ran").exists());
    let out = s.deliver(USER, &["fine", "chatty"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(s.marker("fine-ran").exists());
}

/// The delivery process runs with the user's ids, so the user (here: the
/// user's program, through its parent) can stop it. local must not wait for
/// it until the time limit (3s + 60s here), nor hang reaping it.
#[test]
fn a_delivery_process_stopped_by_its_user_is_given_up_at_once() {
    let s = Setup::new("");
    s.install("stopper", "cat > /dev/null; kill -STOP $PPID; exit 0");
    s.install(
        "fine",
        &format!("cat > /dev/null; touch {}", s.marker("fine-ran").display()),
    );
    let out = s.deliver(USER, &["stopper"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(
        out.stdout.contains("deferred (4.3.0)")
            && out
                .stdout
                .contains("stopped by a signal before it reported"),
        "{}",
        out.stdout
    );
    // The stopped process was killed and reaped: no child of local is left
    // stopped, and the service goes on.
    let local = s.inst.children_of("local");
    assert!(!local.is_empty());
    assert!(eventually(WAIT, || postern_tests::proc_entries()
        .iter()
        .all(|p| !(local.contains(&p.ppid) && p.state == 'T'))));
    let out = s.deliver(USER, &["fine"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(s.marker("fine-ran").exists());
    // A program that stops its delivery process and goes on running: it is
    // killed with its group when local gives the delivery process up (its
    // own time limit would otherwise never be enforced).
    s.install(
        "stop-and-stay",
        &format!(
            "cat > /dev/null; sleep 300 & echo $! > {}; kill -STOP $PPID; wait",
            s.marker("stay.pid").display()
        ),
    );
    let out = s.deliver(USER, &["stop-and-stay"]);
    assert!(
        out.stdout
            .contains("stopped by a signal before it reported"),
        "{}",
        out.stdout
    );
    assert!(ends_eventually(&s.marker("stay.pid")));
}

#[test]
fn strict_output_rule_counts_any_output_as_failure() {
    let s = Setup::new("program_output_is_failure = yes");
    s.install("chatty", "cat > /dev/null; echo hello; exit 0");
    let out = s.deliver(USER, &["chatty"]);
    assert!(
        out.stdout.contains("bounced (5.3.0)") && out.stdout.contains("printed output"),
        "{}",
        out.stdout
    );
}

/// Background work a program leaves, even in a session of its own
/// (`setsid`), may finish after the program exits (the status is reported
/// at once), but does not outlive the program's time limit: it is killed
/// then, whether the program exited or still runs.
#[test]
fn a_programs_background_work_finishes_but_not_past_its_time_limit() {
    let s = Setup::new("");
    s.install(
        "later",
        &format!(
            "cat > /dev/null; {{ sleep 2; touch {}; }} </dev/null >/dev/null 2>&1 & exit 0",
            s.marker("later-done").display()
        ),
    );
    s.install(
        "escape",
        &format!(
            "cat > /dev/null; setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {}; exit 0",
            s.marker("escape.pid").display()
        ),
    );
    s.install(
        "escape-and-hang",
        &format!(
            "cat > /dev/null; setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $! > {}; sleep 300",
            s.marker("hang.pid").display()
        ),
    );
    let out = s.deliver(USER, &["later"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    // Reported before the background work finished; it finishes after.
    assert!(!s.marker("later-done").exists(), "the report waited");
    assert!(
        eventually(WAIT, || s.marker("later-done").exists()),
        "the background work was killed when the program exited:\n{}",
        s.inst.log()
    );
    let started = std::time::Instant::now();
    let out = s.deliver(USER, &["escape"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    assert!(ends_eventually(&s.marker("escape.pid")));
    let out = s.deliver(USER, &["escape-and-hang"]);
    assert!(
        out.stdout.contains("exceeded the time limit of 3s"),
        "{}",
        out.stdout
    );
    assert!(ends_eventually(&s.marker("hang.pid")));
}

/// Links in the trusted directory: one root owns, to a root-only
/// executable, runs; a link a user owns, or to a file a user can change,
/// bounces naming why; `postern check` says which is which.
#[test]
fn links_in_the_trusted_directory() {
    use std::os::unix::fs::symlink;
    let s = Setup::new("");
    let (uid, _) = ids_of(USER);
    let bin = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let good = bin.path().join("good");
    write_script(
        &good,
        &format!("cat > /dev/null; touch {}", s.marker("good-ran").display()),
    );
    let writable = bin.path().join("writable");
    write_script(
        &writable,
        &format!(
            "cat > /dev/null; touch {}",
            s.marker("writable-ran").display()
        ),
    );
    std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o777)).unwrap();
    symlink(&good, s.programs().join("good")).unwrap();
    symlink(&good, s.programs().join("users")).unwrap();
    std::os::unix::fs::lchown(s.programs().join("users"), Some(uid), None).unwrap();
    symlink(&writable, s.programs().join("writable")).unwrap();
    let out = s.deliver(USER, &["good"]);
    assert_eq!(out.code, Some(0), "{out:?}\n{}", s.inst.log());
    assert!(s.marker("good-ran").exists());
    std::fs::remove_file(s.marker("good-ran")).unwrap();
    let out = s.deliver(USER, &["users"]);
    assert!(
        out.stdout.contains("bounced (5.3.0)")
            && out
                .stdout
                .contains(&format!("is a symbolic link owned by uid {uid}, not root")),
        "{}",
        out.stdout
    );
    let out = s.deliver(USER, &["writable"]);
    assert!(
        out.stdout.contains("bounced (5.3.0)")
            && out
                .stdout
                .contains("writable by group or others (mode 0777)"),
        "{}",
        out.stdout
    );
    assert!(!s.marker("good-ran").exists() && !s.marker("writable-ran").exists());
    let check = s.inst.postern(&["check"]);
    let text = check.stderr;
    assert!(
        text.contains(&format!(
            "note: trusted program good: deliveries run {}",
            good.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("warning: trusted program users: refused, deliveries to it bounce")
            && text.contains("warning: trusted program writable: refused"),
        "{text}"
    );
}

/// The classic procmail lines of a .forward are taken as smrsh takes them,
/// without a shell; other shell syntax bounces, naming what was refused.
#[test]
fn smrsh_forms_run_without_a_shell_and_other_shell_syntax_is_refused() {
    let s = Setup::new("");
    s.install(
        "args",
        &format!(
            "cat > /dev/null; echo \"$@\" > {}",
            s.marker("args.out").display()
        ),
    );
    s.install("fail", "cat > /dev/null; echo no; exit 1");
    let out = s.deliver(
        USER,
        &["IFS=' ' && exec /usr/bin/args -f- 'a b' || exit 75 #pt-prog"],
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", s.inst.log());
    assert_eq!(
        std::fs::read_to_string(s.marker("args.out")).unwrap(),
        "-f- a b\n"
    );
    // "|| exit 75": the failure defers.
    let out = s.deliver(USER, &["exec /usr/bin/fail || exit 75"]);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(out.stdout.contains("deferred (4.3.0)"), "{}", out.stdout);
    let out = s.deliver(USER, &["fail"]);
    assert!(out.stdout.contains("bounced (5.3.0)"), "{}", out.stdout);
    let out = s.deliver(USER, &["args; touch /tmp/x"]);
    assert!(
        out.stdout.contains("bounced (5.3.0)") && out.stdout.contains("shell metacharacter ';'"),
        "{}",
        out.stdout
    );
    s.inst.wait_log("refused: shell metacharacter ';'", 1);
}

/// A relative configuration directory (`postern -c etc start`, from the
/// instance's parent directory) still finds the trusted directory.
#[test]
fn a_relative_configuration_directory_delivers_to_programs() {
    test_account(USER, "/bin/bash");
    let mut inst = Instance::new("command_time_limit = 3s\n", "local unix - n n - - local");
    let markers = tempfile::tempdir().unwrap();
    std::fs::set_permissions(markers.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let marker = markers.path().join("ran");
    write_script(
        &inst.etc().join("programs").join("record"),
        &format!("cat > /dev/null; touch {}", marker.display()),
    );
    let out = postern_tests::run(
        std::process::Command::new(postern_tests::bin("postern"))
            .args(["-c", "etc", "start"])
            .current_dir(inst.dir.path())
            .env_remove("POSTERN_CONFIG"),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    inst.master_pid = out
        .stdout
        .split("master pid ")
        .nth(1)
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|s| s.parse().ok());
    assert!(inst.master_pid.is_some(), "{out:?}");
    let check = postern_tests::run(
        std::process::Command::new(postern_tests::bin("postern"))
            .args(["-c", "etc", "check"])
            .current_dir(inst.dir.path())
            .env_remove("POSTERN_CONFIG"),
    );
    assert!(
        check.stderr.contains("note: trusted program record"),
        "{check:?}"
    );
    let out = inst.deliver(
        &["-f", "s@example.org", "--user", USER, "--program", "record"],
        b"Subject: x\n\nbody\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", inst.log());
    assert!(marker.exists());
}

/// A program's input is streamed from the queue file: a large message
/// reaches it whole and unchanged (no `>From ` quoting), after the envelope
/// lines Postfix's local(8) gives a command.
#[test]
fn a_large_message_reaches_a_program_whole() {
    let s = Setup::new("");
    let kept = s.marker("kept");
    s.install("keep", &format!("cat > {}", kept.display()));
    let mut body = b"Subject: large\n\n".to_vec();
    let mut n = 0u32;
    while body.len() < 20 << 20 {
        body.extend_from_slice(format!("From line {n}\nbody line {n}\n").as_bytes());
        n += 1;
    }
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(b"ENVELOPE RECORDS").unwrap();
    f.write_all(&body).unwrap();
    let fd = OwnedFd::from(f);
    let req = DeliveryRequest {
        queue_id: "PROGLARGE".into(),
        sender: "s@example.org".into(),
        arrival: 0,
        message_offset: 16,
        message_size: Some(body.len() as u64),
        recipients: vec![Instruction {
            recipient: format!("{USER}@example.org"),
            original_recipient: None,
            user: USER.into(),
            extension: None,
            destination: Destination::Programs(vec!["keep".into()]),
            uncertain: false,
        }],
    };
    let status = handoff::deliver(&s.inst.local_socket(), &req, &fd, WAIT)
        .unwrap()
        .statuses
        .remove(0);
    assert_eq!(status.outcome, Outcome::Delivered, "{status:?}");
    let got = std::fs::read(&kept).unwrap();
    let envelope = format!(
        "From s@example.org  Thu Jan  1 00:00:00 1970\nReturn-Path: <s@example.org>\nDelivered-To: {USER}@example.org\n"
    );
    assert!(got.starts_with(envelope.as_bytes()), "{:?}", &got[..200]);
    assert!(
        got[envelope.len()..] == body[..],
        "the program got another message"
    );
}
