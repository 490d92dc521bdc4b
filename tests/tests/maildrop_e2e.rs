//! End to end, as root: maildrop (Courier's delivery agent) run from a
//! `.forward` through a link in the trusted program directory, filtering
//! with the user's `~/.mailfilter` into a Maildir that Python's `mailbox`
//! module reads back message for message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use postern_tests::{bin, eventually, run, run_with_input, test_account, Instance, WAIT};

const USER: &str = "pt-maildrop";

fn owned_by_user(path: &Path, text: &str, mode: u32) {
    let (uid, gid, _) = test_account(USER, "/bin/bash");
    std::fs::write(path, text).unwrap();
    nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Each message of the Maildir `dir` (new/ and cur/): Subject, the
/// envelope headers local added, and the body, one line each, sorted.
fn read_maildir(dir: &Path) -> Vec<String> {
    let script = r#"
import mailbox, sys
for m in mailbox.Maildir(sys.argv[1], factory=None):
    print(m["Subject"], "|", m["Return-Path"], "|", m["Delivered-To"], "|", m.get_payload().replace("\n", "\\n"))
"#;
    let out = run(Command::new("python3").arg("-c").arg(script).arg(dir));
    assert_eq!(out.code, Some(0), "{out:?}");
    let mut lines: Vec<String> = out.stdout.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

#[test]
fn maildrop_from_forward_files_into_maildirs_by_its_mailfilter() {
    let (uid, gid, home) = test_account(USER, "/bin/bash");
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (inbox, lists) = (home.join("Maildir"), home.join("Lists"));
    for d in [&inbox, &lists] {
        let _ = std::fs::remove_dir_all(d);
        for sub in ["", "new", "cur", "tmp"] {
            let p = d.join(sub);
            std::fs::create_dir_all(&p).unwrap();
            nix::unistd::chown(&p, Some(uid.into()), Some(gid.into())).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
    }
    let mut inst = Instance::new(
        "minimal_backoff_time = 1s\nqueue_run_delay = 1s\ncommand_time_limit = 30s\n",
        "local unix - n n - - local\nsubmit unix n - n - - submit\nqmgr fifo n - n 300 1 qmgr\n",
    );
    std::os::unix::fs::symlink("/usr/bin/maildrop", inst.etc().join("programs/maildrop")).unwrap();
    owned_by_user(&home.join(".forward"), "\"|maildrop\"\n", 0o644);
    // maildrop insists on a private filter file.
    owned_by_user(
        &home.join(".mailfilter"),
        &format!(
            "if (/^Subject: list /)\n{{\n  to \"{l}/\"\n}}\nto \"{i}/\"\n",
            l = lists.display(),
            i = inbox.display()
        ),
        0o600,
    );
    inst.start();
    for i in 0..6 {
        let subject = if i % 2 == 0 { "list" } else { "personal" };
        let message = format!("Subject: {subject} {i}\n\nbody of {i}\nFrom the middle\n");
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
    let count = |d: &Path| {
        ["new", "cur"]
            .iter()
            .map(|s| std::fs::read_dir(d.join(s)).map_or(0, Iterator::count))
            .sum::<usize>()
    };
    let ok = eventually(WAIT, || count(&inbox) >= 3 && count(&lists) >= 3);
    assert!(
        ok,
        "inbox {} lists {}\n{}",
        count(&inbox),
        count(&lists),
        inst.log()
    );
    let delivered = format!("{USER}@localhost");
    for (dir, kind, numbers) in [(&inbox, "personal", [1, 3, 5]), (&lists, "list", [0, 2, 4])] {
        let want: Vec<String> = numbers
            .iter()
            .map(|n| {
                format!(
                    "{kind} {n} | <ann@example.org> | {delivered} | body of {n}\\nFrom the middle\\n"
                )
            })
            .collect();
        assert_eq!(read_maildir(dir), want, "{}", dir.display());
    }
}
