//! End to end, as root: `postern sendmail` → submit → qmgr → local, under a
//! real master, with test accounts created by the suite. Mailboxes live in
//! a spool directory inside each test's instance, so tests do not share
//! them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use postern_tests::{bin, eventually, run_with_input, test_account, Instance, Outcome, WAIT};

const DAN: &str = "pq-dan";
const EVE: &str = "pq-eve";
const FAY: &str = "pq-fay";
/// Only the Maildir test uses this account.
const GUS: &str = "pq-gus";
/// Only the program retry test uses this account.
const HAL: &str = "pq-hal";
/// Only the killed-qmgr test uses this account.
const IVY: &str = "pq-ivy";

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      qmgr fifo n - n 300 1 qmgr\n";

/// A running instance with the queue, short retry times, its own mail
/// spool (sticky, world-writable) and aliases file.
struct Mail {
    inst: Instance,
}

impl Mail {
    fn new(main_extra: &str, aliases: &str) -> Mail {
        Mail::with_master(main_extra, aliases, MASTER)
    }

    fn with_master(main_extra: &str, aliases: &str, master: &str) -> Mail {
        for u in [DAN, EVE, FAY, GUS, HAL, IVY] {
            let (_, _, home) = test_account(u, "/bin/bash");
            // The queue manager (the mail owner) must search homes for .forward.
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let inst = Instance::new(
            &format!(
                "minimal_backoff_time = 1s\nmaximal_backoff_time = 4s\nqueue_run_delay = 1s\ncommand_time_limit = 10s\n{main_extra}"
            ),
            master,
        );
        inst.own_spool();
        let alias_file = inst.dir.path().join("aliases");
        std::fs::write(&alias_file, aliases).unwrap();
        inst.append_main(&format!("alias_maps = {}\n", alias_file.display()));
        let mut m = Mail { inst };
        m.inst.start();
        m
    }

    /// Like [`Mail::new`], with `before_start` run on the instance first.
    fn prepared(before_start: impl FnOnce(&Instance)) -> Mail {
        // Built stopped: with_master starts it, so stop, prepare, start.
        let mut m = Mail::new("", "");
        m.inst.stop(false);
        before_start(&m.inst);
        m.inst.start();
        m
    }

    fn spool(&self, user: &str) -> PathBuf {
        self.inst.dir.path().join("spool").join(user)
    }

    fn mbox(&self, user: &str) -> String {
        std::fs::read_to_string(self.spool(user)).unwrap_or_default()
    }

    fn sendmail(&self, args: &[&str], message: &[u8]) -> Outcome {
        run_with_input(
            Command::new(bin("postern"))
                .arg("-c")
                .arg(self.inst.etc())
                .arg("sendmail")
                .args(args)
                .env_remove("POSTERN_CONFIG"),
            message,
        )
    }

    fn queue(&self, args: &[&str]) -> Outcome {
        let mut all = vec!["queue"];
        all.extend_from_slice(args);
        self.inst.postern(&all)
    }

    /// Installs a root-owned 0755 script in the trusted program directory.
    fn install(&self, name: &str, body: &str) {
        let path = self.inst.etc().join("programs").join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A directory anyone may write (program output).
    fn scratch(&self) -> PathBuf {
        let d = self.inst.dir.path().join("scratch");
        let _ = std::fs::create_dir(&d);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
        d
    }

    /// Waits until the mbox of `user` holds `n` messages.
    fn wait_messages(&self, user: &str, n: usize) {
        let ok = eventually(WAIT, || count_messages(&self.mbox(user)) >= n);
        assert!(
            ok,
            "{user} never had {n} messages; mbox:\n{}\nlog:\n{}",
            self.mbox(user),
            self.inst.log()
        );
    }
}

fn count_messages(mbox: &str) -> usize {
    mbox.lines().filter(|l| l.starts_with("From ")).count()
}

/// The uses `postern status` shows for the first child of `service`.
fn status_uses(status: &str, service: &str) -> Option<u32> {
    let mut lines = status
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{service} ")));
    lines.next()?;
    let child = lines.next()?;
    child
        .split(", ")
        .find_map(|part| part.strip_suffix(" use(s)"))
        .and_then(|n| n.trim().parse().ok())
}

/// A child that has served (submit, local) or run (qmgr) and is then killed
/// is not a startup failure: nothing is throttled, the next message goes
/// through at once, and `postern status` counts qmgr's runs as uses.
#[test]
fn killing_children_that_served_does_not_throttle_their_services() {
    let m = Mail::new("", "");
    let out = m.sendmail(&[DAN], b"Subject: before\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
    let ok = eventually(WAIT, || m.queue(&["list"]).stdout.contains("-- 0 messages"));
    assert!(ok, "{:?}", m.queue(&["list"]));
    let status = m.inst.status();
    assert!(
        status_uses(&status, "qmgr").is_some_and(|n| n >= 1),
        "qmgr's runs are not counted as uses:\n{status}"
    );
    let mut killed = 0;
    for service in ["submit", "local", "qmgr"] {
        let pids = m.inst.children_of(service);
        assert!(!pids.is_empty(), "no {service} child:\n{status}");
        for pid in pids {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            killed += 1;
        }
    }
    m.inst.wait_log("killed by signal 9", killed);
    // Served promptly: a throttle (service_throttle_time, 60s) would hold
    // the message past WAIT.
    let out = m.sendmail(&[DAN], b"Subject: after\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}\n{}", m.inst.log());
    m.wait_messages(DAN, 2);
    let log = m.inst.log();
    assert!(!log.contains("throttling"), "{log}");
    let status = m.inst.status();
    assert!(!status.contains("throttled"), "{status}");
}

#[test]
fn sendmail_to_a_local_user_lands_in_the_mailbox_with_headers() {
    let m = Mail::new("", "");
    let out = m.sendmail(
        &["-f", "sender@example.org", DAN],
        b"Subject: first\r\n\r\nhello\r\nFrom the start\r\n.\r\nnot this\r\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", m.inst.log());
    m.wait_messages(DAN, 1);
    let mbox = m.mbox(DAN);
    assert!(mbox.starts_with("From sender@example.org  "), "{mbox}");
    assert!(
        mbox.contains("\nReturn-Path: <sender@example.org>\n"),
        "{mbox}"
    );
    assert!(
        mbox.contains(&format!("\nDelivered-To: {DAN}@localhost\n")),
        "{mbox}"
    );
    assert!(
        mbox.contains("\nReceived: by localhost (postern, from userid 0)\n\tid "),
        "{mbox}"
    );
    assert!(mbox.contains("\nSubject: first\n"), "{mbox}");
    assert!(mbox.contains("\nDate: "), "{mbox}");
    assert!(mbox.contains("\nMessage-ID: <"), "{mbox}");
    assert!(mbox.contains("\nFrom: sender@example.org\n"), "{mbox}");
    // Line ends normalised, From quoted, the lone dot ended the message.
    assert!(mbox.contains("\n\nhello\n>From the start\n\n"), "{mbox}");
    assert!(!mbox.contains("not this"), "{mbox}");
    // The queue is empty again.
    let ok = eventually(WAIT, || m.queue(&["list"]).stdout.contains("-- 0 messages"));
    assert!(ok, "{:?}", m.queue(&["list"]));
}

/// Writes `user`'s ~/.forward (owned by the user, mode 0644 unless `mode`).
fn forward(user: &str, text: &str, mode: u32) {
    let (uid, gid, home) = test_account(user, "/bin/bash");
    let f = home.join(".forward");
    std::fs::write(&f, text).unwrap();
    nix::unistd::chown(&f, Some(uid.into()), Some(gid.into())).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn maildir_delivery_with_home_mailbox() {
    let (_, _, home) = test_account(GUS, "/bin/bash");
    let maildir = home.join("Maildir");
    let _ = std::fs::remove_dir_all(&maildir);
    let m = Mail::new("home_mailbox = Maildir/\n", "");
    let out = m.sendmail(&["-i", GUS], b"Subject: to maildir\n\nline\n.\nmore\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    let new = maildir.join("new");
    let ok = eventually(WAIT, || {
        std::fs::read_dir(&new).map_or(0, |d| d.count()) == 1
    });
    assert!(ok, "nothing in {}:\n{}", new.display(), m.inst.log());
    let file = std::fs::read_dir(&new)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.starts_with("Return-Path: <root@localhost>\nDelivered-To: pq-gus@localhost\n"),
        "{text}"
    );
    assert!(text.contains("\nSubject: to maildir\n"), "{text}");
    // -i: the lone dot is message text.
    assert!(text.ends_with("\n\nline\n.\nmore\n"), "{text}");
    let owner = std::fs::metadata(&file)
        .map(|md| std::os::unix::fs::MetadataExt::uid(&md))
        .unwrap();
    assert_eq!(owner, postern_tests::ids_of(GUS).0);
}

#[test]
fn aliases_and_forward_files_route_as_configured() {
    let (_, _, fay_home) = test_account(FAY, "/bin/bash");
    let m = Mail::new("", "team: pq-dan, pq-eve\nfan: team\n");
    let out_dir = m.scratch();
    m.install(
        "record",
        &format!("cat > {}/record.$USER", out_dir.display()),
    );
    // FAY forwards to DAN, keeps a copy in a file, and pipes to a program.
    let copy = fay_home
        .join("Mail")
        .join(format!("fwd-{}", std::process::id()));
    let _ = std::fs::create_dir_all(copy.parent().unwrap());
    let (uid, gid) = postern_tests::ids_of(FAY);
    nix::unistd::chown(copy.parent().unwrap(), Some(uid.into()), Some(gid.into())).unwrap();
    let _ = std::fs::remove_file(&copy);
    forward(
        FAY,
        &format!("pq-dan, {}, \"|record\"\n", copy.display()),
        0o644,
    );
    let out = m.sendmail(&["fan", FAY], b"Subject: routed\n\nbody\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    // DAN is reached through the alias and through FAY's .forward: the
    // duplicate filter makes that one delivery. EVE once.
    m.wait_messages(DAN, 1);
    m.wait_messages(EVE, 1);
    assert!(m.mbox(EVE).contains("Delivered-To: pq-eve@localhost"));
    // Complete files (a program may still be writing when its file appears).
    let done = |p: &Path| std::fs::read_to_string(p).is_ok_and(|t| t.contains("\nbody\n"));
    let ok = eventually(WAIT, || {
        done(&copy) && done(&out_dir.join(format!("record.{FAY}")))
    });
    assert!(ok, "no file copy or program output:\n{}", m.inst.log());
    assert!(std::fs::read_to_string(&copy)
        .unwrap()
        .contains("Subject: routed"));
    let recorded = std::fs::read_to_string(out_dir.join(format!("record.{FAY}"))).unwrap();
    assert!(
        recorded.contains("Delivered-To: pq-fay@localhost\n"),
        "{recorded}"
    );
    assert!(recorded.contains("Subject: routed"), "{recorded}");
    // FAY's own mailbox got nothing: the .forward replaced it.
    assert_eq!(count_messages(&m.mbox(FAY)), 0);
    let ok = eventually(WAIT, || m.queue(&["list"]).stdout.contains("-- 0 messages"));
    assert!(ok, "{:?}", m.queue(&["list"]));
    assert_eq!(count_messages(&m.mbox(DAN)), 1, "{}", m.mbox(DAN));
    assert!(m.inst.log().contains("not repeated"), "{}", m.inst.log());

    // A .forward writable by others is not used: the mail stays with EVE.
    forward(EVE, "pq-dan\n", 0o666);
    let out = m.sendmail(&[EVE], b"Subject: unsafe forward\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(EVE, 2);
    m.inst
        .wait_log("writable by group or others (mode 666): not used", 1);
    // ... and one owned by another user neither.
    forward(EVE, "pq-dan\n", 0o644);
    let f = PathBuf::from(format!("/home/{EVE}/.forward"));
    let (dan_uid, _) = postern_tests::ids_of(DAN);
    nix::unistd::chown(&f, Some(dan_uid.into()), None).unwrap();
    let out = m.sendmail(&[EVE], b"Subject: foreign forward\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(EVE, 3);
    m.inst.wait_log(
        &format!("owned by uid {dan_uid}, not by {EVE} or root: not used"),
        1,
    );
    assert_eq!(count_messages(&m.mbox(DAN)), 1, "{}", m.mbox(DAN));
    std::fs::remove_file(&f).unwrap();
    forward(FAY, "", 0o644);
}

#[test]
fn a_deferring_program_is_retried_with_growing_intervals_until_it_succeeds() {
    let m = Mail::new("", "");
    let dir = m.scratch();
    // Fails (75) three times, then takes the message.
    m.install(
        "flaky",
        &format!(
            "n=$(cat {d}/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > {d}/count\n\
             if [ $n -le 3 ]; then echo 'try later' ; exit 75; fi\ncat > {d}/got",
            d = dir.display()
        ),
    );
    forward(HAL, "\"|flaky\"\n", 0o644);
    let out = m.sendmail(&[HAL], b"Subject: retry me\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    let got = dir.join("got");
    // The program may still be writing when the file appears.
    let ok = eventually(Duration::from_secs(60), || {
        std::fs::read_to_string(&got).is_ok_and(|t| t.contains("Subject: retry me"))
    });
    assert!(ok, "never delivered:\n{}", m.inst.log());
    let log = m.inst.log();
    let delays: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("deferred; next attempt in ").nth(1))
        .filter_map(|r| r.trim_end_matches('s').parse().ok())
        .collect();
    assert_eq!(delays.len(), 3, "{log}");
    assert!(
        delays.windows(2).all(|w| w[0] <= w[1]) && delays[2] > delays[0],
        "{delays:?}\n{log}"
    );
    assert!(log.contains("exited with status 75: try later"), "{log}");
    forward(HAL, "", 0o644);
}

#[test]
fn a_killed_queue_manager_is_back_for_the_deferred_mail_before_its_next_wakeup() {
    let m = Mail::new("", "");
    let dir = m.scratch();
    // Defers once, then takes the message.
    m.install(
        "once",
        &format!(
            "if [ -e {d}/tried ]; then cat > {d}/got; exit 0; fi\n\
             touch {d}/tried; echo 'not yet'; exit 75",
            d = dir.display()
        ),
    );
    forward(IVY, "\"|once\"\n", 0o644);
    let out = m.sendmail(&[IVY], b"Subject: after the crash\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.inst.wait_log("deferred; next attempt in", 1);
    // The retry is due in a second, but the queue manager is gone, and
    // nothing triggers it: without the master's early wakeup it would wait
    // for the 300 s one (longer than this test waits).
    let qmgr = m.inst.children_of("qmgr");
    assert_eq!(qmgr.len(), 1, "{qmgr:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qmgr[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let got = dir.join("got");
    let ok = eventually(WAIT, || {
        std::fs::read_to_string(&got).is_ok_and(|t| t.contains("Subject: after the crash"))
    });
    assert!(ok, "never delivered after the kill:\n{}", m.inst.log());
    assert!(
        m.inst.log().contains("killed by signal 9"),
        "{}",
        m.inst.log()
    );
    forward(IVY, "", 0o644);
}

#[test]
fn an_unknown_user_bounces_to_the_sender_with_a_delivery_status_part() {
    let m = Mail::new("", "");
    let out = m.sendmail(
        &["-f", &format!("{DAN}@localhost"), "nosuchuser-pq"],
        b"Subject: lost\n\nbody\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
    let script = r#"
import mailbox, sys
box = mailbox.mbox(sys.argv[1])
msgs = list(box)
assert len(msgs) == 1, len(msgs)
m = msgs[0]
assert m.get_content_type() == "multipart/report", m.get_content_type()
assert m.get_param("report-type") == "delivery-status"
parts = [p.get_content_type() for p in m.get_payload()]
assert parts == ["text/plain", "message/delivery-status", "text/rfc822-headers"], parts
status = m.get_payload()[1]
blocks = status.get_payload()
rcpt = blocks[1]
print(rcpt["Final-Recipient"], rcpt["Status"], rcpt["Action"])
"#;
    let out = postern_tests::run(
        Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(m.spool(DAN)),
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", m.mbox(DAN));
    assert_eq!(
        out.stdout.trim(),
        "rfc822; nosuchuser-pq 5.1.1 failed",
        "{}",
        m.mbox(DAN)
    );
    assert!(
        m.mbox(DAN).contains("From MAILER-DAEMON "),
        "{}",
        m.mbox(DAN)
    );
    // The bounce itself came from the null sender: a failure of it would
    // go to the postmaster, never back.
    let ok = eventually(WAIT, || m.queue(&["list"]).stdout.contains("-- 0 messages"));
    assert!(ok, "{:?}", m.queue(&["list"]));
}

#[test]
fn queue_commands_hold_release_show_delete() {
    // A program that defers keeps the message in the queue.
    let m = Mail::new(
        "minimal_backoff_time = 1h\nmaximal_backoff_time = 1h\n",
        "stuck: \"|stuck\"\n",
    );
    m.install("stuck", "exit 75");
    let out = m.sendmail(&["stuck"], b"Subject: held\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    let listed = || m.queue(&["list"]).stdout;
    assert!(
        eventually(WAIT, || listed().contains(" deferred ")),
        "{}\n{}",
        listed(),
        m.inst.log()
    );
    let list = listed();
    let id = list
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let show = m.queue(&["show", &id]);
    assert_eq!(show.code, Some(0), "{show:?}");
    assert!(
        show.stdout.contains("recipient: <stuck> pending"),
        "{show:?}"
    );
    assert!(show.stdout.contains("Subject: held"), "{show:?}");
    assert_eq!(m.queue(&["hold", &id]).code, Some(0));
    assert!(listed().contains(" hold "), "{}", listed());
    assert_eq!(m.queue(&["release", &id]).code, Some(0));
    assert!(
        eventually(WAIT, || listed().contains(" deferred ")),
        "{}",
        listed()
    );
    assert_eq!(m.queue(&["flush"]).code, Some(0));
    m.inst
        .wait_log("flush: retrying every deferred message now", 1);
    let del = m.queue(&["delete", "ALL"]);
    assert!(
        eventually(WAIT, || {
            let d = m.queue(&["delete", "ALL"]);
            listed().contains("-- 0 messages")
                || d.code == Some(0) && listed().contains("-- 0 messages")
        }),
        "{del:?} {}",
        listed()
    );
    assert_eq!(m.queue(&["show", &id]).code, Some(1));
}

#[test]
fn kill_9_of_qmgr_and_local_under_load_loses_and_duplicates_nothing() {
    const N: usize = 2000;
    const SENDERS: usize = 4;
    // The master pokes qmgr every second, so a killed one comes back.
    let m = Mail::with_master(
        "service_throttle_time = 1s\n",
        "",
        "local unix - n n - - local\nsubmit unix n - n - - submit\nqmgr fifo n - n 1 1 qmgr\n",
    );
    let etc = m.inst.etc();
    // A kill each time STEP more messages have arrived, alternating qmgr and
    // local, until each was killed three times.
    const STEP: usize = 100;
    let delivered = || count_messages(&m.mbox(DAN));
    let kills = std::thread::scope(|scope| {
        let killer = scope.spawn(|| {
            let mut kills = (0, 0);
            let mut round = 0;
            while kills.0 < 3 || kills.1 < 3 {
                let before = delivered();
                // A stall ends the loop; the assertion on the kills reports it.
                if before >= N || !eventually(WAIT, || delivered() >= (before + STEP).min(N)) {
                    break;
                }
                round += 1;
                let name = if round % 2 == 0 { "qmgr" } else { "local" };
                for pid in m.inst.children_of(name) {
                    if nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .is_ok()
                    {
                        if name == "qmgr" {
                            kills.0 += 1;
                        } else {
                            kills.1 += 1;
                        }
                    }
                }
            }
            kills
        });
        let senders: Vec<_> = (0..SENDERS)
            .map(|t| {
                let etc = etc.clone();
                scope.spawn(move || {
                    for i in (t..N).step_by(SENDERS) {
                        let out = run_with_input(
                            Command::new(bin("postern-sendmail"))
                                .arg("-C")
                                .arg(&etc)
                                .arg(DAN),
                            format!("Subject: crash {i}\n\nbody {i}\n").as_bytes(),
                        );
                        assert_eq!(out.code, Some(0), "message {i}: {out:?}");
                    }
                })
            })
            .collect();
        for s in senders {
            s.join().unwrap();
        }
        killer.join().unwrap()
    });
    assert!(
        kills.0 >= 3 && kills.1 >= 3,
        "kills (qmgr, local): {kills:?}"
    );
    let delivered = eventually(Duration::from_secs(180), || {
        count_messages(&m.mbox(DAN)) >= N && m.queue(&["list"]).stdout.contains("-- 0 messages")
    });
    let mbox = m.mbox(DAN);
    assert!(
        delivered,
        "{} of {N} delivered; queue:\n{}",
        count_messages(&mbox),
        m.queue(&["list"]).stdout
    );
    let mut seen = vec![0u32; N];
    for l in mbox.lines() {
        if let Some(i) = l.strip_prefix("Subject: crash ") {
            seen[i.parse::<usize>().unwrap()] += 1;
        }
    }
    let wrong: Vec<(usize, u32)> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| **c != 1)
        .map(|(i, c)| (i, *c))
        .collect();
    if !wrong.is_empty() {
        // Name the queue ids and show what the log says about them.
        let log = m.inst.log();
        let mut story = String::new();
        for (i, _) in &wrong {
            let needle = format!("Subject: crash {i}\n");
            for msg in mbox.split("\nFrom ").filter(|t| t.contains(&needle)) {
                if let Some(id) = msg.split("\tid ").nth(1).and_then(|r| r.split(';').next()) {
                    story.push_str(&format!("--- {i}: {id}\n"));
                    for l in log.lines().filter(|l| l.contains(id)) {
                        story.push_str(l);
                        story.push('\n');
                    }
                }
            }
        }
        panic!("messages not delivered exactly once (index, count): {wrong:?}\n{story}");
    }
    assert_eq!(count_messages(&mbox), N);
    eprintln!("kills (qmgr, local): {kills:?}");
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_queue_disk_refuses_the_message_and_keeps_nothing() {
    let mut mount = None;
    let m = Mail::prepared(|inst| {
        // The whole queue on a small file system (renames stay inside it).
        let queue = inst.etc().join("queue");
        let out = postern_tests::run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs"])
                .arg(&queue),
        );
        assert_eq!(out.code, Some(0), "mount: {out:?}");
        mount = Some(Mount(queue));
    });
    let incoming = m.inst.etc().join("queue/incoming");
    let big = format!("Subject: big\n\n{}\n", "x".repeat(1 << 20));
    let out = m.sendmail(&[DAN], big.as_bytes());
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(
        out.stderr
            .contains("message not queued: 4.3.0 cannot store the message"),
        "{out:?}"
    );
    assert!(out.stderr.contains("No space left on device"), "{out:?}");
    let left: Vec<_> = std::fs::read_dir(&incoming).unwrap().collect();
    assert!(left.is_empty(), "incoming holds {left:?}");
    m.inst.wait_log("refused a submission from uid 0", 1);
    // A message that fits still goes through.
    let out = m.sendmail(&[DAN], b"Subject: small\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
    assert!(!m.mbox(DAN).contains("Subject: big"));
    drop(m);
    drop(mount);
}

#[test]
fn a_spool_directory_users_cannot_write_still_gets_their_mailbox() {
    // Like Debian's /var/mail (root:mail 2775): local creates the mailbox
    // as root for the user, and locks it with fcntl (no dotlock possible).
    let m = Mail::new("", "");
    let spool = m.inst.dir.path().join("spool");
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let out = m.sendmail(&[DAN], b"Subject: spool\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
    let md = std::fs::metadata(m.spool(DAN)).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&md),
        postern_tests::ids_of(DAN).0
    );
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    m.inst
        .wait_log(&format!("created mailbox {}", m.spool(DAN).display()), 1);
    m.inst.wait_log("relying on the other lock methods", 1);
}

#[test]
fn a_pipe_transport_runs_its_command_as_its_user_with_the_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = dir.path().join("deliver");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$2\" in fail*) echo 'no such list' ; exit 67 ;; esac\n\
             {{ id -u; echo \"$@\"; cat; }} > {d}/got.tmp && mv {d}/got.tmp {d}/got\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let transport = dir.path().join("transport");
    std::fs::write(&transport, "pipe.test tee:hub\n").unwrap();
    let m = Mail::with_master(
        &format!("transport_maps = {}\n", transport.display()),
        "",
        &format!(
            "{MASTER}tee unix - n n - - pipe flags=RD user={DAN} argv={} ${{sender}} ${{recipient}} ${{nexthop}} ${{user}}\n",
            script.display()
        ),
    );
    let out = m.sendmail(
        &["-f", &format!("{GUS}@localhost"), "someone@pipe.test"],
        b"Subject: piped\n\nbody\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let got = dir.path().join("got");
    let ok = eventually(WAIT, || got.exists());
    assert!(ok, "the command never ran:\n{}", m.inst.log());
    let text = std::fs::read_to_string(&got).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        postern_tests::ids_of(DAN).0.to_string()
    );
    assert_eq!(
        lines.next().unwrap(),
        format!("{GUS}@localhost someone@pipe.test hub someone")
    );
    assert!(text.contains("\nSubject: piped\n"), "{text}");
    assert!(
        text.contains(&format!(
            "\nReturn-Path: <{GUS}@localhost>\nDelivered-To: someone@pipe.test\nReceived: "
        )),
        "{text}"
    );
    m.inst.wait_log("relay=tee", 1);
    // A command that fails with EX_NOUSER bounces with its output.
    let out = m.sendmail(
        &["-f", &format!("{GUS}@localhost"), "fail@pipe.test"],
        b"Subject: piped\n\nbody\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(GUS, 1);
    let bounce = m.mbox(GUS);
    assert!(bounce.contains("Status: 5.1.1"), "{bounce}");
    assert!(
        bounce.contains("exited with status 67: no such list"),
        "{bounce}"
    );
}

#[test]
fn reloads_during_a_load_deliver_every_message_once() {
    const N: usize = 400;
    let m = Mail::new("", "");
    let etc = m.inst.etc();
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            for i in 0..N {
                let out = run_with_input(
                    Command::new(bin("postern-sendmail"))
                        .arg("-C")
                        .arg(&etc)
                        .arg(DAN),
                    format!("Subject: reload {i}\n\nbody\n").as_bytes(),
                );
                assert_eq!(out.code, Some(0), "message {i}: {out:?}");
            }
        });
        // A new queue manager per reload, while the old one finishes: one
        // reload each time 60 more messages have arrived.
        for _ in 0..4 {
            let before = count_messages(&m.mbox(DAN));
            assert!(
                eventually(WAIT, || count_messages(&m.mbox(DAN)) >= before + 60),
                "no progress between reloads:\n{}",
                m.inst.log()
            );
            let out = m.inst.postern(&["reload"]);
            assert_eq!(out.code, Some(0), "{out:?}");
        }
        sender.join().unwrap();
    });
    let ok = eventually(Duration::from_secs(120), || {
        count_messages(&m.mbox(DAN)) >= N && m.queue(&["list"]).stdout.contains("-- 0 messages")
    });
    let mbox = m.mbox(DAN);
    assert!(
        ok,
        "{} of {N}:\n{}",
        count_messages(&mbox),
        m.queue(&["list"]).stdout
    );
    let mut seen = vec![0u32; N];
    for l in mbox.lines() {
        if let Some(i) = l.strip_prefix("Subject: reload ") {
            seen[i.parse::<usize>().unwrap()] += 1;
        }
    }
    let wrong: Vec<usize> = (0..N).filter(|i| seen[*i] != 1).collect();
    assert!(
        wrong.is_empty(),
        "not exactly once: {wrong:?}\n{}",
        m.inst.log()
    );
    assert!(!m.inst.log().contains("corrupt"), "{}", m.inst.log());
}

#[test]
fn program_failures_reach_the_postmaster_and_old_mail_expires() {
    let m = Mail::new(
        &format!("bounce_notice_recipient = {GUS}\nmaximal_queue_lifetime = 3s\n"),
        "broken: \"|failer\"\nslow: \"|stuck\"\n",
    );
    m.install("failer", "echo kaput; exit 1");
    m.install("stuck", "exit 75");
    let sender = format!("{DAN}@localhost");
    let out = m.sendmail(&["-f", &sender, "broken"], b"Subject: to a program\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    // The sender gets the bounce, the postmaster a copy.
    m.wait_messages(DAN, 1);
    m.wait_messages(GUS, 1);
    let bounce = m.mbox(DAN);
    assert!(bounce.contains("Status: 5.3.0"), "{bounce}");
    assert!(bounce.contains("exited with status 1: kaput"), "{bounce}");
    let copy = m.mbox(GUS);
    assert!(
        copy.contains("Subject: Postmaster Copy: Undelivered Mail"),
        "{copy}"
    );
    assert!(copy.contains("Subject: to a program"), "{copy}");

    // Deferred past maximal_queue_lifetime: bounced with the last reason.
    let out = m.sendmail(&["-f", &sender, "slow"], b"Subject: too slow\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 2);
    let both = m.mbox(DAN);
    let expired = both.split("\nFrom ").last().unwrap();
    assert!(expired.contains("delivery time expired: program"), "{both}");
    assert!(expired.contains("exited with status 75"), "{both}");
    assert!(expired.contains("Status: 5.3.0"), "{both}");
    let ok = eventually(WAIT, || m.queue(&["list"]).stdout.contains("-- 0 messages"));
    assert!(ok, "{:?}", m.queue(&["list"]));
}

#[test]
fn a_bounce_that_cannot_be_returned_goes_to_the_postmaster_once() {
    let m = Mail::new(&format!("bounce_notice_recipient = {GUS}\n"), "");
    let out = m.sendmail(
        &["-f", "ghost-pq@localhost", "nobody-pq-at-all"],
        b"Subject: lost twice\n\nx\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(GUS, 1);
    let copy = m.mbox(GUS);
    assert!(copy.contains("Subject: Postmaster Copy"), "{copy}");
    assert!(copy.contains("unknown user: \"ghost-pq\""), "{copy}");
    // Nothing loops: the queue empties and the postmaster got one notice.
    let ok = eventually(WAIT, || m.queue(&["list"]).stdout.contains("-- 0 messages"));
    assert!(ok, "{:?}", m.queue(&["list"]));
    assert_eq!(count_messages(&m.mbox(GUS)), 1, "{}", m.mbox(GUS));
}

#[test]
fn garbage_on_the_submit_socket_is_refused_and_nothing_is_queued() {
    let m = Mail::new("", "");
    let socket = m.inst.public("submit");
    for junk in [
        &b"\x00\x00\x00\x05hello"[..],
        b"\xff\xff\xff\xff",
        b"\x00\x00",
        b"GET / HTTP/1.0\r\n\r\n",
    ] {
        let reply = postern_tests::unix_exchange(&socket, junk).unwrap_or_default();
        // A refusal frame that says why (or a closed connection).
        let text = String::from_utf8_lossy(&reply);
        assert!(
            reply.is_empty() || text.contains("bad submission"),
            "{text}"
        );
    }
    m.inst.wait_log("bad submission from pid", 4);
    assert!(m.queue(&["list"]).stdout.contains("-- 0 messages"));
    // The service still takes good mail.
    let out = m.sendmail(&[DAN], b"Subject: after the junk\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
}

/// A child process this test started, killed (and reaped) on drop.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Started {
    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), sig).unwrap();
    }

    /// Waits for the exit within `limit`; its code, or `None` if it is still running.
    fn exit_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        eventually(limit, || {
            status = self.0.try_wait().unwrap();
            status.is_some()
        });
        status
    }
}

impl Mail {
    /// `postern sendmail args` with a pipe for its standard input.
    fn start_sendmail(&self, args: &[&str]) -> Started {
        Started(
            Command::new(bin("postern"))
                .arg("-c")
                .arg(self.inst.etc())
                .arg("sendmail")
                .args(args)
                .env_remove("POSTERN_CONFIG")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap(),
        )
    }

    fn incoming(&self) -> PathBuf {
        self.inst.etc().join("queue/incoming")
    }

    /// The temporaries (`tmp.*`) in incoming.
    fn temporaries(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.incoming())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with("tmp."))
            .map(|e| e.path())
            .collect()
    }

    /// Waits until submit is writing a temporary that contains `text`.
    fn wait_receiving(&self, text: &str) {
        let ok = eventually(WAIT, || {
            self.temporaries().iter().any(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .contains(text)
            })
        });
        assert!(
            ok,
            "submit never received {text:?}; log:\n{}",
            self.inst.log()
        );
    }

    fn queue_is_empty(&self) -> bool {
        self.queue(&["list"]).stdout.contains("-- 0 messages")
    }

    fn signal_submit(&self, sig: nix::sys::signal::Signal) -> usize {
        let pids = self.inst.children_of("submit");
        for pid in &pids {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid as i32), sig).unwrap();
        }
        pids.len()
    }
}

/// A header line, then 100 KiB or more of body lines of `line`.
fn long_text(header: &str, line: &str) -> Vec<u8> {
    let mut text = format!("{header}\n\n");
    while text.len() < 100 * 1024 {
        text.push_str(line);
        text.push('\n');
    }
    text.into_bytes()
}

#[test]
fn a_sendmail_killed_mid_message_queues_nothing_and_leaves_no_temporary() {
    let m = Mail::new("", "");
    let mut sendmail = m.start_sendmail(&[DAN]);
    {
        use std::io::Write;
        let stdin = sendmail.0.stdin.as_mut().unwrap();
        // More than a client's buffer holds: the first half reaches submit.
        stdin
            .write_all(&long_text("Subject: half", "the first half of the body"))
            .unwrap();
        stdin.flush().unwrap();
    }
    m.wait_receiving("the first half of the body");
    sendmail.signal(nix::sys::signal::Signal::SIGKILL);
    m.inst.wait_log(
        "aborted before the end of the message: the connection ended",
        1,
    );
    assert!(m.temporaries().is_empty(), "{:?}", m.temporaries());
    assert!(m.queue_is_empty(), "{}", m.queue(&["list"]).stdout);
    // A message after it is delivered alone.
    let out = m.sendmail(&[DAN], b"Subject: whole\n\nall of it\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
    let mbox = m.mbox(DAN);
    assert!(!mbox.contains("first half"), "{mbox}");
    assert_eq!(count_messages(&mbox), 1, "{mbox}");
}

/// Opens `n` connections to the socket and collects the refusals; prints
/// `connected N`, then `refused K`, then waits for its standard input to
/// close (holding the connections that were not refused).
const FLOODER: &str = r#"
import select, socket, sys, time
path, n, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
socks = []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    socks.append(s)
print("connected", len(socks), flush=True)
refused, pending, deadline = 0, set(socks), time.time() + 30
while pending and refused < n - limit and time.time() < deadline:
    ready, _, _ = select.select(list(pending), [], [], 0.5)
    for s in ready:
        if b"4.7.0" in s.recv(4096):
            refused += 1
        pending.discard(s)
print("refused", refused, flush=True)
sys.stdin.read()
"#;

#[test]
fn one_users_idle_connections_do_not_hold_up_anothers_mail() {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    const FLOOD: usize = 60;
    const LIMIT: usize = 2;
    // Four submit processes; the flood's held connections are not cut by
    // the input timeout during the test.
    let m = Mail::with_master(
        &format!(
            "submit_client_connection_count_limit = {LIMIT}\nsubmit_input_timeout = 300s\nsubmit_timeout = 30s\n"
        ),
        "",
        "local unix - n n - - local\nsubmit unix n - n - 4 submit\nqmgr fifo n - n 300 1 qmgr\n",
    );
    let (eve_uid, eve_gid, _) = test_account(EVE, "/bin/bash");
    let (fay_uid, fay_gid, _) = test_account(FAY, "/bin/bash");
    let mut flooder = Started(
        Command::new("python3")
            .arg("-c")
            .arg(FLOODER)
            .arg(m.inst.public("submit"))
            .arg(FLOOD.to_string())
            .arg(LIMIT.to_string())
            .uid(eve_uid)
            .gid(eve_gid)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(flooder.0.stdout.take().unwrap()).lines();
    let connected = lines.next().unwrap().unwrap();
    assert_eq!(connected, format!("connected {FLOOD}"));
    // While the flood is being refused, another user's mail goes through.
    let started = std::time::Instant::now();
    let out = run_with_input(
        Command::new(bin("postern"))
            .arg("-c")
            .arg(m.inst.etc())
            .arg("sendmail")
            .arg(DAN)
            .env_remove("POSTERN_CONFIG")
            .uid(fay_uid)
            .gid(fay_gid),
        b"Subject: from fay\n\nduring the flood\n",
    );
    let took = started.elapsed();
    assert_eq!(out.code, Some(0), "{out:?}\nlog:\n{}", m.inst.log());
    assert!(
        took < Duration::from_secs(10),
        "fay's sendmail took {took:?}"
    );
    eprintln!("fay's sendmail during the flood took {took:?}");
    m.wait_messages(DAN, 1);
    let refused = lines.next().unwrap().unwrap();
    assert_eq!(
        refused,
        format!("refused {}", FLOOD - LIMIT),
        "log:\n{}",
        m.inst.log()
    );
    m.inst.wait_log(
        &format!("refused a submission from uid {eve_uid} pid"),
        FLOOD - LIMIT,
    );
    drop(flooder);
}

#[test]
fn sendmail_waits_for_a_slow_submit_to_decide_and_does_not_say_75() {
    // submit_timeout bounds the waits before the end of the message only.
    let m = Mail::with_master(
        "submit_timeout = 1s\n",
        "",
        "local unix - n n - - local\nsubmit unix n - n - 1 submit\nqmgr fifo n - n 300 1 qmgr\n",
    );
    let mut sendmail = m.start_sendmail(&[DAN]);
    {
        use std::io::Write;
        let stdin = sendmail.0.stdin.as_mut().unwrap();
        stdin
            .write_all(&long_text("Subject: slow", "slow body"))
            .unwrap();
        stdin.flush().unwrap();
    }
    m.wait_receiving("slow body");
    assert_eq!(m.signal_submit(nix::sys::signal::Signal::SIGSTOP), 1);
    // The end of the message goes out; the stopped submit cannot answer.
    drop(sendmail.0.stdin.take());
    // Well past submit_timeout, sendmail is still waiting for the decision.
    let early = sendmail.exit_within(Duration::from_secs(4));
    m.signal_submit(nix::sys::signal::Signal::SIGCONT);
    assert!(early.is_none(), "sendmail gave up: {early:?}");
    let status = sendmail.exit_within(WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    m.wait_messages(DAN, 1);
    assert!(m.mbox(DAN).contains("slow body"));
}

#[test]
fn exit_75_means_the_message_is_never_queued() {
    let m = Mail::with_master(
        "submit_timeout = 1s\n",
        "",
        "local unix - n n - - local\nsubmit unix n - n - 1 submit\nqmgr fifo n - n 300 1 qmgr\n",
    );
    // A first message, so that the one submit process exists (idle).
    let out = m.sendmail(&[DAN], b"Subject: first\n\nfirst\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
    assert_eq!(m.signal_submit(nix::sys::signal::Signal::SIGSTOP), 1);
    let out = m.sendmail(&[DAN], b"Subject: never\n\nnever\n");
    m.signal_submit(nix::sys::signal::Signal::SIGCONT);
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(out.stderr.contains("message not queued"), "{out:?}");
    // submit takes the connection later: it must not queue it.
    m.inst.wait_log("aborted before the end of the message", 1);
    assert!(m.temporaries().is_empty(), "{:?}", m.temporaries());
    assert!(m.queue_is_empty(), "{}", m.queue(&["list"]).stdout);
    // The next message is delivered, and "never" never is.
    let out = m.sendmail(&[DAN], b"Subject: second\n\nsecond\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 2);
    assert!(!m.mbox(DAN).contains("never"), "{}", m.mbox(DAN));
}

#[test]
fn a_recipient_named_10000_times_gets_one_copy() {
    let m = Mail::new("", "");
    let args = vec![DAN; 10_000];
    let out = m.sendmail(&args, b"Subject: once\n\nonly once\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(DAN, 1);
    assert!(eventually(WAIT, || m.queue_is_empty()));
    assert_eq!(count_messages(&m.mbox(DAN)), 1);
    m.inst
        .wait_log("nrcpt=1 (9999 repeated recipients dropped)", 1);
}

#[test]
fn an_idle_submission_is_cut_after_submit_input_timeout() {
    use std::io::Read;
    let m = Mail::new("submit_input_timeout = 1s\n", "");
    // Connected, and silent: submit gives up on it after a second.
    let mut idle = std::os::unix::net::UnixStream::connect(m.inst.public("submit")).unwrap();
    idle.set_read_timeout(Some(WAIT)).unwrap();
    let mut reply = Vec::new();
    let _ = idle.read_to_end(&mut reply);
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.contains("4.3.0 ") || text.contains("no request for 1s"),
        "{text:?}"
    );
    m.inst.wait_log(
        "aborted before the end of the message: no request for 1s",
        1,
    );
    // One that stops in the middle of the message is cut too, and nothing
    // of it is queued.
    let mut sendmail = m.start_sendmail(&[DAN]);
    {
        use std::io::Write;
        let stdin = sendmail.0.stdin.as_mut().unwrap();
        stdin
            .write_all(&long_text("Subject: stalled", "stalled"))
            .unwrap();
        stdin.flush().unwrap();
    }
    m.wait_receiving("stalled");
    sendmail.signal(nix::sys::signal::Signal::SIGSTOP);
    m.inst
        .wait_log("aborted before the end of the message: no input for 1s", 1);
    assert!(m.temporaries().is_empty(), "{:?}", m.temporaries());
    assert!(m.queue_is_empty(), "{}", m.queue(&["list"]).stdout);
    sendmail.signal(nix::sys::signal::Signal::SIGCONT);
    drop(sendmail.0.stdin.take());
    let status = sendmail.exit_within(WAIT);
    assert_eq!(status.and_then(|s| s.code()), Some(75), "{status:?}");
}

#[test]
fn a_queue_manager_on_a_unix_socket_as_postfix_writes_it_is_woken() {
    // Postfix's stock master.cf: `qmgr unix n - n 300 1 qmgr`; submit's
    // wake-up is then one short connection.
    let m = Mail::with_master(
        "",
        "",
        "local unix - n n - - local\nsubmit unix n - n - - submit\nqmgr unix n - n 300 1 qmgr\n",
    );
    for n in 0..3 {
        let out = m.sendmail(&[DAN], format!("Subject: unix qmgr {n}\n\nx\n").as_bytes());
        assert_eq!(out.code, Some(0), "{out:?}");
        m.wait_messages(DAN, n + 1);
    }
    assert!(!m.inst.log().contains("cannot wake"), "{}", m.inst.log());
}
