//! End to end, as root, with the programs users read and send mail with:
//! Dovecot (its `doveadm`, reading the mailboxes local wrote, as the
//! mailbox's owner, without a Dovecot server) and mutt (sending through
//! `postern sendmail` in batch mode, as an ordinary user). Both come from
//! Debian (`.ci/run` installs dovecot-core and mutt).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use postern_tests::{bin, eventually, run, run_with_input, test_account, Instance, WAIT};

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      qmgr fifo n - n 300 1 qmgr\n";

/// An instance whose users' mailboxes are `spool/USER` (mbox), or
/// `~/Maildir/` with `maildir`.
fn instance(maildir: bool) -> Instance {
    let mut inst = Instance::new(
        &format!(
            "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n{}",
            if maildir {
                "home_mailbox = Maildir/\n"
            } else {
                ""
            }
        ),
        MASTER,
    );
    inst.own_spool();
    inst.start();
    inst
}

/// The messages of the Dovecot test: (subject, the rest after the header
/// block as sent).
const MESSAGES: [(&str, &str); 6] = [
    ("plain", "hello\n"),
    (
        "from lines",
        "From the start\n>From quoted already\n From indented\nend\n",
    ),
    ("no final newline", "the last line has no newline"),
    ("dots", ".\n..\n.after\n"),
    ("eight bit", "k\u{e4}se und \u{fc}ber\n"),
    ("blank lines at the end", "text\n\n\n"),
];

/// What a reader of the mailbox must see as the body of a message sent
/// with `body`: one newline ends every message; in an mbox, a line that
/// starts with "From " is quoted with '>' (which a reader shows as is).
fn expected_body(body: &str, mbox: bool) -> String {
    let mut out = String::new();
    for line in body.split_inclusive('\n') {
        if mbox && line.starts_with("From ") {
            out.push('>');
        }
        out.push_str(line);
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out
}

/// `doveadm fetch` of every message's subject and body, sorted, run as
/// `user` with a configuration of its own; `location(dir)` is the
/// `mail_location`, Dovecot's own files (index, lock) going to `dir`, a
/// directory of the user's.
fn dovecot_fetch(
    user: &str,
    home: &Path,
    location: impl FnOnce(&Path) -> String,
) -> Vec<(String, String)> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (uid, gid) = postern_tests::ids_of(user);
    nix::unistd::chown(dir, Some(uid.into()), Some(gid.into())).unwrap();
    let location = location(dir);
    let conf = dir.join("dovecot.conf");
    std::fs::write(&conf, "ssl = no\nlog_path = /dev/stderr\n").unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = run(Command::new("runuser")
        .args(["-u", user, "--", "env"])
        .arg(format!("USER={user}"))
        .arg(format!("HOME={}", home.display()))
        .arg("doveadm")
        .arg("-f")
        .arg("json")
        .arg("-c")
        .arg(&conf)
        .arg("-o")
        .arg(format!("mail_location={location}"))
        .args(["fetch", "hdr.subject body", "mailbox", "INBOX", "all"]));
    assert_eq!(
        out.code,
        Some(0),
        "doveadm (apt-get install dovecot-core): {out:?}"
    );
    let records: Vec<serde_json::Value> =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let mut got: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["hdr.subject"].as_str().unwrap_or_default().to_string(),
                r["body"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    // Two deliveries may run at once, and a Maildir has no order of its
    // own: compared as sets.
    got.sort();
    got
}

/// (subject, body) of every message of [`MESSAGES`] as a reader of an
/// mbox (`mbox`) or a Maildir must see it, sorted.
fn expected(mbox: bool) -> Vec<(String, String)> {
    let mut want: Vec<(String, String)> = MESSAGES
        .iter()
        .map(|(s, b)| (s.to_string(), expected_body(b, mbox)))
        .collect();
    want.sort();
    want
}

fn send_all(inst: &Instance, user: &str) {
    for (subject, body) in MESSAGES {
        inst.sendmail(
            &["-i", "-f", "sender@example.org", user],
            format!("Subject: {subject}\n\n{body}").as_bytes(),
        );
    }
}

#[test]
fn dovecot_reads_every_message_local_wrote_to_an_mbox() {
    let user = "cl-mbox";
    let (_, _, home) = test_account(user, "/bin/bash");
    let inst = instance(false);
    send_all(&inst, user);
    let mbox = inst.dir.path().join("spool").join(user);
    let ok = eventually(WAIT, || {
        std::fs::read_to_string(&mbox)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("From "))
            .count()
            == MESSAGES.len()
    });
    assert!(ok, "{}", inst.log());
    // (Dovecot adds its X-UID headers to the mbox: read after the check.)
    let got = dovecot_fetch(user, &home, |dir| {
        format!(
            "mbox:{}:INBOX={}:INDEX=MEMORY",
            dir.display(),
            mbox.display()
        )
    });
    assert_eq!(
        got,
        expected(true),
        "mbox:\n{}",
        String::from_utf8_lossy(&std::fs::read(&mbox).unwrap())
    );
}

#[test]
fn dovecot_reads_every_message_local_wrote_to_a_maildir() {
    let user = "cl-mdir";
    let (_, _, home) = test_account(user, "/bin/bash");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let maildir = home.join("Maildir");
    let _ = std::fs::remove_dir_all(&maildir);
    let inst = instance(true);
    send_all(&inst, user);
    let new = maildir.join("new");
    let ok = eventually(WAIT, || {
        std::fs::read_dir(&new).map_or(0, |d| d.count()) == MESSAGES.len()
    });
    assert!(ok, "{}", inst.log());
    let got = dovecot_fetch(user, &home, |dir| {
        format!("maildir:{}:INDEX={}", maildir.display(), dir.display())
    });
    assert_eq!(got, expected(false));
    let _ = std::fs::remove_dir_all(&maildir);
}

/// A `sendmail` command for mutt: a wrapper script that runs `postern -c
/// ETC sendmail` with mutt's arguments (mutt splits `$sendmail` on spaces,
/// and the test instance's path may not be one word forever).
fn sendmail_wrapper(inst: &Instance) -> PathBuf {
    let path = inst.dir.path().join("sendmail-for-mutt");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nexec {} -c {} sendmail \"$@\"\n",
            bin("postern").display(),
            inst.etc().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn mutt_sends_through_postern_sendmail_as_its_user() {
    let (from, to) = ("cl-mutt", "cl-rcpt");
    let (from_uid, _, from_home) = test_account(from, "/bin/bash");
    test_account(to, "/bin/bash");
    let inst = instance(false);
    let wrapper = sendmail_wrapper(&inst);
    // The instance's directory must be reachable by the user who runs it.
    std::fs::set_permissions(inst.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let body = b"Hello from mutt.\nFrom a line mutt does not quote\n";
    let out = run_with_input(
        Command::new("runuser")
            .args(["-u", from, "--", "env"])
            .arg(format!("HOME={}", from_home.display()))
            .args(["mutt", "-n", "-F", "/dev/null"])
            .arg("-e")
            .arg(format!("set sendmail=\"{}\"", wrapper.display()))
            .args([
                "-e",
                "set use_from=yes",
                "-e",
                "set from=\"Mutt User <cl-mutt@localhost>\"",
                "-e",
                "set charset=utf-8",
                "-e",
                "set send_charset=utf-8",
                "-e",
                "set record=\"\"",
                "-s",
                "sent by mutt",
                "--",
                &format!("{to}@localhost"),
            ]),
        body,
    );
    assert_eq!(
        out.code,
        Some(0),
        "mutt (apt-get install mutt): {out:?}\n{}",
        inst.log()
    );
    let mbox = inst.dir.path().join("spool").join(to);
    let ok = eventually(WAIT, || {
        std::fs::read_to_string(&mbox).is_ok_and(|t| t.contains("Hello from mutt."))
    });
    assert!(ok, "{}", inst.log());
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(text.starts_with("From cl-mutt@localhost "), "{text}");
    assert!(text.contains("\nSubject: sent by mutt\n"), "{text}");
    assert!(
        text.contains("\nFrom: Mutt User <cl-mutt@localhost>\n"),
        "{text}"
    );
    assert!(
        text.contains(&format!("(postern, from userid {from_uid})")),
        "{text}"
    );
    assert!(
        text.contains("\n\nHello from mutt.\n>From a line mutt does not quote\n"),
        "{text}"
    );
    // One message, and mutt's own copy went nowhere else.
    assert_eq!(
        text.lines().filter(|l| l.starts_with("From ")).count(),
        1,
        "{text}"
    );
}
