//! End to end, as root: `postern sendmail` → submit → qmgr → local, under a
//! real master, with test accounts created by the suite. Mailboxes live in
//! a spool directory inside each test's instance, so tests do not share
//! them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use postern_tests::{bin, eventually, run_with_input, test_account, Instance, Outcome, WAIT};

const DAN: &str = "pq-dan";
const EVE: &str = "pq-eve";
const FAY: &str = "pq-fay";

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
        for u in [DAN, EVE, FAY] {
            let (_, _, home) = test_account(u, "/bin/bash");
            // The queue manager (the mail owner) must search homes for .forward.
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let inst = Instance::new(
            &format!(
                "minimal_backoff_time = 1s\nmaximal_backoff_time = 4s\nqueue_run_delay = 1s\ncommand_time_limit = 10s\n{main_extra}"
            ),
            MASTER,
        );
        let spool = inst.dir.path().join("spool");
        std::fs::create_dir(&spool).unwrap();
        std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let alias_file = inst.dir.path().join("aliases");
        std::fs::write(&alias_file, aliases).unwrap();
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

    /// Waits until the mbox of `user` holds `n` messages.
    fn wait_messages(&self, user: &str, n: usize) {
        let ok = eventually(WAIT, || {
            self.mbox(user).matches("\nFrom ").count()
                + usize::from(self.mbox(user).starts_with("From "))
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

fn count_messages(mbox: &str) -> usize {
    mbox.lines().filter(|l| l.starts_with("From ")).count()
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
    assert!(mbox.contains("\nFrom: sender@example.org\n"), "{mbox}");
    // Line ends normalised, From quoted, the lone dot ended the message.
    assert!(mbox.contains("\n\nhello\n>From the start\n\n"), "{mbox}");
    assert!(!mbox.contains("not this"), "{mbox}");
    // The queue is empty again.
    let ok = eventually(WAIT, || m.queue(&["list"]).stdout.contains("-- 0 messages"));
    assert!(ok, "{:?}", m.queue(&["list"]));
}
