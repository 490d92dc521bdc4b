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
        let spool = inst.dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let alias_file = inst.dir.path().join("aliases");
        std::fs::write(&alias_file, "").unwrap();
        inst.append_main(&format!(
            "mail_spool_directory = {}\nalias_maps = {}\n",
            spool.display(),
            alias_file.display()
        ));
        let policy = inst.etc().join("destinations");
        let mut text = std::fs::read_to_string(&policy).unwrap();
        text.push_str(&format!("mailbox {}/$user\n", spool.display()));
        std::fs::write(&policy, text).unwrap();
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
