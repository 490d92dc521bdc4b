//! End to end, as root: the sendmail(1) command line as programs use it
//! (the names mailq and newaliases, `-bs` SMTP sessions, `-t` with an mbox
//! `From ` line, `-q`), and what postern logs for Postfix's log readers
//! (syslog_name, the maillog after a reload, pflogsumm's counts).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use postern_tests::{bin, eventually, run_with_input, test_account, Instance, Outcome, WAIT};

const ANN: &str = "pc-ann";
const BOB: &str = "pc-bob";

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      showq unix n - n - - showq\n\
                      qmgr fifo n - n 300 1 qmgr\n";

/// A running instance with the queue, short retry times, its own mail
/// spool and aliases file.
struct Mail {
    inst: Instance,
}

impl Mail {
    fn new(main_extra: &str) -> Mail {
        for u in [ANN, BOB] {
            let (_, _, home) = test_account(u, "/bin/bash");
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let inst = Instance::new(
            &format!(
                "minimal_backoff_time = 1s\nmaximal_backoff_time = 4s\nqueue_run_delay = 1s\n{main_extra}"
            ),
            MASTER,
        );
        inst.own_spool();
        let alias_file = inst.dir.path().join("aliases");
        std::fs::write(&alias_file, "").unwrap();
        inst.append_main(&format!("alias_maps = {}\n", alias_file.display()));
        let mut m = Mail { inst };
        m.inst.start();
        m
    }

    fn mbox(&self, user: &str) -> String {
        std::fs::read_to_string(self.inst.dir.path().join("spool").join(user)).unwrap_or_default()
    }

    /// Runs `program` (a path) with `-C ETC` and `args`, `input` on stdin.
    fn run(&self, program: &PathBuf, args: &[&str], input: &[u8]) -> Outcome {
        run_with_input(
            Command::new(program)
                .arg("-C")
                .arg(self.inst.etc())
                .args(args)
                .env_remove("POSTERN_CONFIG")
                .env_remove("MAIL_CONFIG"),
            input,
        )
    }

    fn sendmail(&self, args: &[&str], input: &[u8]) -> Outcome {
        self.run(&bin("postern-sendmail"), args, input)
    }

    /// Waits until the mbox of `user` holds `n` messages.
    fn wait_messages(&self, user: &str, n: usize) {
        let ok = eventually(WAIT, || {
            self.mbox(user)
                .lines()
                .filter(|l| l.starts_with("From "))
                .count()
                >= n
        });
        assert!(
            ok,
            "{user} never had {n} messages; mbox:\n{}\nlog:\n{}",
            self.mbox(user),
            self.inst.log()
        );
    }
}

/// Debian's cron mails a job's output with `-FCronDaemon -i -B8BITMIME
/// -oem USER` and headers of its own: all taken, the message as cron wrote
/// it (its From: kept, no full name added to it), a line with a lone dot
/// kept (-i).
#[test]
fn cron_s_command_line_and_headers_are_taken_as_cron_writes_them() {
    let m = Mail::new("");
    let out = m.sendmail(
        &["-FCronDaemon", "-i", "-B8BITMIME", "-oem", BOB],
        format!(
            "From: root (Cron Daemon)\nTo: {BOB}\nSubject: Cron <root@host> run-parts --report /etc/cron.hourly\n\
             MIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\nContent-Transfer-Encoding: 8bit\n\
             X-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n\n\
             job output: \u{e9}t\u{e9}\n.\nlast line\n"
        )
        .as_bytes(),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(BOB, 1);
    let mbox = m.mbox(BOB);
    assert!(mbox.starts_with("From root@localhost "), "{mbox}");
    for h in [
        "\nFrom: root (Cron Daemon)\n",
        "\nSubject: Cron <root@host> run-parts --report /etc/cron.hourly\n",
        "\nX-Cron-Env: <SHELL=/bin/sh>\nX-Cron-Env: <HOME=/root>\n",
        "\nContent-Transfer-Encoding: 8bit\n",
    ] {
        assert!(mbox.contains(h), "{h:?} missing:\n{mbox}");
    }
    assert_eq!(mbox.matches("\nFrom: ").count(), 1, "{mbox}");
    assert!(
        mbox.contains("\n\njob output: \u{e9}t\u{e9}\n.\nlast line\n"),
        "{mbox}"
    );
}

/// `git format-patch | sendmail -t`: the mbox `From ` line before the
/// headers is dropped, so the headers stay headers (and -t finds To:).
#[test]
fn a_leading_from_line_is_dropped() {
    let m = Mail::new("");
    let patch = format!(
        "From 1234abcd Mon Sep 17 00:00:00 2001\nFrom: Ann <{ANN}@localhost>\nTo: {BOB}\nSubject: [PATCH] fix it\n\nbody\nFrom here on\n"
    );
    let out = m.sendmail(&["-t", "-i"], patch.as_bytes());
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(BOB, 1);
    let mbox = m.mbox(BOB);
    let (head, body) = mbox.split_once("\n\n").unwrap();
    assert!(head.contains("\nSubject: [PATCH] fix it\n"), "{mbox}");
    assert!(
        head.contains(&format!("\nFrom: Ann <{ANN}@localhost>\n")),
        "{mbox}"
    );
    assert!(!mbox.contains("1234abcd"), "{mbox}");
    assert_eq!(body, "body\n>From here on\n\n", "{mbox}");
}

/// syslog_name names every line after a restart, and a reload moves the
/// master's own lines to the new maillog_file.
#[test]
fn syslog_name_and_the_maillog_follow_the_configuration() {
    let mut m = Mail::new("");
    m.inst.wait_log("postern/master[", 1);
    m.inst.stop(false);
    m.inst.append_main("syslog_name = postfix\n");
    m.inst.start();
    let out = m.sendmail(&[ANN], b"Subject: named\n\nx\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(ANN, 1);
    let log = m.inst.log();
    let after = &log[log.rfind("postern/master[").unwrap()..];
    for tag in ["postfix/master[", "postfix/submit[", "postfix/qmgr["] {
        assert!(after.contains(tag), "no {tag} after the restart:\n{log}");
    }
    let second = m.inst.dir.path().join("maillog2");
    m.inst
        .append_main(&format!("maillog_file = {}\n", second.display()));
    let out = m.inst.postern(&["reload"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let ok = eventually(WAIT, || {
        std::fs::read_to_string(&second)
            .is_ok_and(|t| t.contains("postfix/master[") && t.contains("reload: done"))
    });
    assert!(
        ok,
        "the master does not log to the new maillog_file:\n{}\nold:\n{}",
        std::fs::read_to_string(&second).unwrap_or_default(),
        m.inst.log()
    );
}

/// Links named `name` (sendmail, mailq, newaliases) to postern-sendmail,
/// in the instance's directory, as Debian links them.
fn link(m: &Mail, name: &str) -> PathBuf {
    let dir = m.inst.dir.path().join("bin");
    let _ = std::fs::create_dir(&dir);
    let path = dir.join(name);
    if !path.exists() {
        std::os::unix::fs::symlink(bin("postern-sendmail"), &path).unwrap();
    }
    path
}

/// Runs `program` as the test user `user`.
fn run_as(m: &Mail, user: &str, program: &PathBuf, args: &[&str]) -> Outcome {
    let (uid, gid, _) = test_account(user, "/bin/bash");
    run_with_input(
        std::os::unix::process::CommandExt::gid(
            std::os::unix::process::CommandExt::uid(
                Command::new(program)
                    .arg("-C")
                    .arg(m.inst.etc())
                    .args(args)
                    .env_remove("POSTERN_CONFIG")
                    .env_remove("MAIL_CONFIG"),
                uid,
            ),
            gid,
        ),
        b"",
    )
}

/// A transport_maps file that sends `@defer.test` to a transport that is
/// not there (deferred, retried) — a message that stays in the queue.
const DEFERRING: &str = "defer.test nosuchtransport:\n";

fn with_deferring_transport() -> Mail {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("transport");
    std::fs::write(&file, DEFERRING).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // Kept for the life of the test process (the instance reads it).
    let file = dir.keep().join("transport");
    Mail::new(&format!("transport_maps = {}\n", file.display()))
}

/// `mailq` and `newaliases` (links to postern-sendmail) behave by their
/// names; mailq works for an ordinary user, through the showq service, in
/// Postfix's layout.
#[test]
fn mailq_and_newaliases_by_their_names() {
    let mut m = with_deferring_transport();
    let mailq = link(&m, "mailq");
    let newaliases = link(&m, "newaliases");
    let out = run_as(&m, ANN, &mailq, &[]);
    assert_eq!(
        (out.code, out.stdout.as_str()),
        (Some(0), "Mail queue is empty\n"),
        "{out:?}\n{}",
        m.inst.log()
    );
    let out = m.sendmail(
        &["-f", &format!("{ANN}@localhost"), "someone@defer.test"],
        b"Subject: stays\n\nx\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    m.inst.wait_log("status=deferred", 1);
    let out = run_as(&m, BOB, &mailq, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[0], "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------",
        "{}",
        out.stdout
    );
    let entry: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(
        entry.last(),
        Some(&format!("{ANN}@localhost").as_str()),
        "{}",
        out.stdout
    );
    assert!(entry[1].parse::<u64>().is_ok(), "{}", out.stdout);
    assert!(
        lines.contains(&format!("{:41}someone@defer.test", "").as_str()),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("(4."),
        "no deferral reason: {}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("\n-- 0 Kbytes in 1 Request.\n"),
        "{}",
        out.stdout
    );
    // sendmail -bp is the same listing.
    let out2 = run_as(&m, ANN, &bin("postern-sendmail"), &["-bp"]);
    assert_eq!(out2.stdout, out.stdout);
    // Not authorized: refused (77), by the service.
    m.inst.stop(false);
    m.inst
        .append_main(&format!("authorized_mailq_users = {BOB}\n"));
    m.inst.start();
    let out = run_as(&m, ANN, &mailq, &[]);
    assert_eq!(out.code, Some(77), "{out:?}");
    assert!(out.stderr.contains("authorized_mailq_users"), "{out:?}");
    assert_eq!(run_as(&m, BOB, &mailq, &[]).code, Some(0));
    // newaliases says what postern does with the alias files.
    let out = run_as(&m, ANN, &newaliases, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("reads the alias files directly"),
        "{out:?}"
    );
    let out = m.sendmail(&["-bi"], b"");
    assert_eq!(out.code, Some(0), "{out:?}");
    // -q: the deferred message is retried at once.
    let before = m.inst.log().matches("status=deferred").count();
    let out = run_as(&m, ANN, &link(&m, "sendmail"), &["-q"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    m.inst
        .wait_log("flush: retrying every deferred message now", 1);
    m.inst.wait_log("status=deferred", before + 1);
    // What is not supported is refused.
    for args in [&["-bd"][..], &["-bv", "x"], &["-qRsite"], &["-Z"]] {
        let out = m.sendmail(args, b"");
        assert_eq!(out.code, Some(64), "{args:?}: {out:?}");
        assert!(out.stderr.contains("usage:"), "{out:?}");
    }
}

/// Runs `postern-sendmail -bs` under swaks --pipe.
fn swaks(m: &Mail, args: &[&str]) -> Outcome {
    let pipe = format!(
        "{} -C {} -bs",
        bin("postern-sendmail").display(),
        m.inst.etc().display()
    );
    run_with_input(
        Command::new("swaks").args(["--pipe", &pipe]).args(args),
        b"",
    )
}

/// `swaks --pipe 'sendmail -bs'`: an SMTP session on standard input and
/// output queues each message, the 250 after DATA naming its queue id.
#[test]
fn an_smtp_session_on_standard_input() {
    let m = Mail::new("");
    let out = swaks(
        &m,
        &[
            "--from",
            &format!("{ANN}@localhost"),
            "--to",
            BOB,
            "--header",
            "Subject: over smtp",
            "--body",
            "line one\n.starts with a dot\n",
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", m.inst.log());
    assert!(
        out.stdout.contains("<-  250 2.0.0 Ok: queued as "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("<-  221 2.0.0 Bye"), "{}", out.stdout);
    m.wait_messages(BOB, 1);
    let mbox = m.mbox(BOB);
    assert!(mbox.contains("\nSubject: over smtp\n"), "{mbox}");
    assert!(
        mbox.contains(&format!("\nReturn-Path: <{ANN}@localhost>\n")),
        "{mbox}"
    );
    assert!(mbox.contains("\nline one\n.starts with a dot\n"), "{mbox}");
    // Two recipients.
    let out = swaks(
        &m,
        &[
            "--from",
            &format!("{BOB}@localhost"),
            "--to",
            &format!("{ANN},{BOB}@localhost"),
        ],
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    m.wait_messages(ANN, 1);
    m.wait_messages(BOB, 2);
    // RSET drops the transaction; the next one goes through.
    let session = format!(
        "HELO me\r\nMAIL FROM:<{ANN}@localhost>\r\nRCPT TO:<nobody-pc>\r\nRSET\r\nDATA\r\n\
         MAIL FROM:<{ANN}@localhost>\r\nRCPT TO:<{ANN}>\r\nDATA\r\nSubject: after rset\r\n\r\n..x\r\n.\r\nQUIT\r\n"
    );
    let out = m.sendmail(&["-bs"], session.as_bytes());
    assert_eq!(out.code, Some(0), "{out:?}");
    let codes: Vec<&str> = out.stdout.lines().map(|l| &l[..3]).collect();
    assert_eq!(
        codes,
        ["220", "250", "250", "250", "250", "503", "250", "250", "354", "250", "221"],
        "{}",
        out.stdout
    );
    m.wait_messages(ANN, 2);
    let mbox = m.mbox(ANN);
    let last = &mbox[mbox.rfind("\nFrom ").unwrap()..];
    assert!(last.contains("\nSubject: after rset\n"), "{mbox}");
    assert!(last.ends_with(">\n\n.x\n\n"), "{mbox}");
    assert!(!m.inst.log().contains("nobody-pc"), "{}", m.inst.log());
}

/// The number pflogsumm prints before `what` in its Grand Totals.
fn total(report: &str, what: &str) -> u64 {
    report
        .lines()
        .find_map(|l| {
            let l = l.trim();
            let (n, rest) = l.split_once(' ')?;
            (rest.trim() == what || rest.trim().starts_with(&format!("{what}  ")))
                .then(|| n.parse().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("no {what:?} in:\n{report}"))
}

/// pflogsumm counts what postern logs: messages received, delivered,
/// deferred and bounced; and `delay=` counts from the arrival.
#[test]
fn pflogsumm_counts_the_message_lifecycle() {
    let m = with_deferring_transport();
    let sender = format!("{ANN}@localhost");
    for to in [BOB, "someone@defer.test", "nosuchuser-pc"] {
        let out = m.sendmail(&["-f", &sender, to], b"Subject: counted\n\nx\n");
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    m.wait_messages(BOB, 1);
    // The bounce comes back to Ann.
    m.wait_messages(ANN, 1);
    m.inst.wait_log("sender non-delivery notification: ", 1);
    // Deferred twice (delay= grows from the arrival).
    m.inst.wait_log("status=deferred", 2);
    let log = m.inst.log();
    for needle in [
        "postern/pickup[",
        "postern/cleanup[",
        ": message-id=<",
        "(queue active)",
        "postern/local[",
        "postern/bounce[",
        ": removed",
        ", delays=",
    ] {
        assert!(log.contains(needle), "no {needle:?} in:\n{log}");
    }
    let delays: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("status=deferred"))
        .filter_map(|l| l.split("delay=").nth(1)?.split(',').next()?.parse().ok())
        .collect();
    assert!(delays.len() >= 2 && delays[1] >= 1.0, "{delays:?}\n{log}");
    let maillog = m.inst.dir.path().join("maillog");
    let out = postern_tests::run(
        Command::new("pflogsumm")
            .arg("--syslog-name=postern")
            .arg(&maillog),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let report = out.stdout;
    assert_eq!(total(&report, "received"), 3, "{report}\n{log}");
    assert_eq!(total(&report, "delivered"), 2, "{report}\n{log}");
    assert_eq!(total(&report, "deferred"), 1, "{report}\n{log}");
    assert_eq!(total(&report, "bounced"), 1, "{report}\n{log}");
}

/// Idle connections to showq are cut once its request deadline passes, so
/// that one user's idle clients cannot hold every showq process; mailq
/// answers meanwhile.
#[test]
fn idle_showq_clients_are_cut_and_mailq_answers() {
    let m = Mail::new("");
    let socket = m.inst.etc().join("queue/public/showq");
    let idle: Vec<std::os::unix::net::UnixStream> = (0..5)
        .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
        .collect();
    let mailq = link(&m, "mailq");
    let out = run_as(&m, ANN, &mailq, &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    m.inst.wait_log("no complete request within 2s", idle.len());
    drop(idle);
}
