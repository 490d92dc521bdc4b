//! End to end, as root: procmail run from a `.forward` with its classic
//! line, through submit, qmgr and local, writing an mbox that Python's
//! `mailbox` module reads back message for message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use postern_tests::{bin, eventually, run, run_with_input, test_account, Instance, WAIT};

const USER: &str = "pt-procmail";

fn owned_by_user(path: &Path, text: &str, mode: u32) {
    let (uid, gid, _) = test_account(USER, "/bin/bash");
    std::fs::write(path, text).unwrap();
    nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// How many messages Python's mailbox module finds in `mbox`, and each
/// one's envelope sender, Subject, X-Original-To and body, one line each.
fn read_mbox(mbox: &Path) -> String {
    let script = r#"
import mailbox, sys
for m in mailbox.mbox(sys.argv[1]):
    print(m.get_from().split()[0], "|", m["Subject"], "|", m["X-Original-To"], "|", m["Delivered-To"], "|", m.get_payload().replace("\n", "\\n"))
"#;
    let out = run(Command::new("python3").arg("-c").arg(script).arg(mbox));
    assert_eq!(out.code, Some(0), "{out:?}");
    out.stdout
}

#[test]
fn procmail_from_forward_writes_a_clean_mbox_and_its_c_copy_arrives() {
    let (_, _, home) = test_account(USER, "/bin/bash");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    for f in ["procmail.mbox", "copy.mbox", "procmail.log"] {
        let _ = std::fs::remove_file(home.join(f));
    }
    let mut inst = Instance::new(
        "minimal_backoff_time = 1s\nqueue_run_delay = 1s\ncommand_time_limit = 30s\n",
        "local unix - n n - - local\nsubmit unix n - n - - submit\nqmgr fifo n - n 300 1 qmgr\n",
    );
    std::os::unix::fs::symlink("/usr/bin/procmail", inst.etc().join("programs/procmail")).unwrap();
    owned_by_user(
        &home.join(".forward"),
        "\"|exec /usr/bin/procmail -f- || exit 75\"\n",
        0o644,
    );
    // The c flag on a block: procmail clones itself; the clone delivers the
    // copy (after a pause) while the parent delivers and exits.
    owned_by_user(
        &home.join(".procmailrc"),
        &format!(
            "MAILDIR={h}\nLOGFILE={h}/procmail.log\n:0 c\n{{\n  :0\n  * ? sleep 2\n  copy.mbox\n}}\n:0:\nprocmail.mbox\n",
            h = home.display()
        ),
        0o644,
    );
    inst.start();
    for i in 0..10 {
        let message =
            format!("Subject: message {i}\n\nline one of {i}\nFrom the middle of {i}\nlast line\n");
        let out = run_with_input(
            Command::new(bin("postern"))
                .arg("-c")
                .arg(inst.etc())
                .args(["sendmail", "-f", "ann@example.org", USER])
                .env_remove("POSTERN_CONFIG"),
            message.as_bytes(),
        );
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    let mbox = home.join("procmail.mbox");
    let copy = home.join("copy.mbox");
    let count = |p: &Path| {
        std::fs::read_to_string(p)
            .map_or(0, |t| t.lines().filter(|l| l.starts_with("From ")).count())
    };
    let ok = eventually(WAIT * 3, || count(&mbox) >= 10 && count(&copy) >= 10);
    assert!(
        ok,
        "mbox {} copy {}\n{}\nprocmail.log:\n{}",
        count(&mbox),
        count(&copy),
        inst.log(),
        std::fs::read_to_string(home.join("procmail.log")).unwrap_or_default()
    );
    for path in [&mbox, &copy] {
        let read = read_mbox(path);
        let lines: Vec<&str> = read.lines().collect();
        assert_eq!(lines.len(), 10, "{read}");
        let mut seen: Vec<String> = lines
            .iter()
            .map(|l| {
                let f: Vec<&str> = l.split(" | ").collect();
                assert_eq!(f[0], "ann@example.org", "{l}");
                // The recipient as given to sendmail, before .forward.
                assert_eq!(f[2], USER, "{l}");
                assert_eq!(f[3], format!("{USER}@localhost"), "{l}");
                let n = f[1].strip_prefix("message ").unwrap().to_string();
                assert_eq!(
                    f[4],
                    format!("line one of {n}\\n>From the middle of {n}\\nlast line\\n"),
                    "{l}"
                );
                n
            })
            .collect();
        seen.sort();
        assert_eq!(seen, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }
}
