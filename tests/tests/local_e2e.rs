//! End to end, as root: postern-local under a real master, with test
//! accounts created by the suite, reached with `postern deliver` and with
//! the handoff client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;

use postern_common::frame;
use postern_common::handoff::{self, DeliveryRequest, Destination, Instruction, Outcome};
use postern_tests::{run, test_account, Instance, WAIT};

const ANN: &str = "pt-ann";
const BOB: &str = "pt-bob";
/// Only the per-user policy test uses this account (it writes its policy file).
const CAROL: &str = "pt-carol";

/// An instance with a local service and a short program time limit.
fn local_instance(extra_main: &str, extra_master: &str) -> Instance {
    test_account(ANN, "/bin/bash");
    test_account(BOB, "/bin/bash");
    let mut inst = Instance::new(
        &format!("command_time_limit = 3s\n{extra_main}"),
        &format!("local unix - n n - - local\n{extra_master}"),
    );
    inst.start();
    inst
}

/// `postern deliver` from s@example.org, as `user`, to the mbox at `path`.
fn to_mailbox(inst: &Instance, user: &str, path: &str, body: &[u8]) -> postern_tests::Outcome {
    inst.deliver(
        &["-f", "s@example.org", "--user", user, "--mailbox", path],
        body,
    )
}

/// Adds `line` to the instance's destination policy.
fn allow(inst: &Instance, line: &str) {
    let mut policy = std::fs::OpenOptions::new()
        .append(true)
        .open(inst.etc().join("destinations"))
        .unwrap();
    writeln!(policy, "{line}").unwrap();
}

/// A fresh directory for one test inside `user`'s ~/Mail, owned by the user.
fn mail_dir(user: &str, test: &str) -> PathBuf {
    let home = PathBuf::from(format!("/home/{user}"));
    let dir = home
        .join("Mail")
        .join(format!("{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (uid, gid) = postern_tests::ids_of(user);
    for d in [home.join("Mail"), dir.clone()] {
        nix::unistd::chown(&d, Some(uid.into()), Some(gid.into())).unwrap();
    }
    dir
}

fn python(script: &str, args: &[&str]) -> String {
    let out = run(Command::new("python3").arg("-c").arg(script).args(args));
    assert_eq!(out.code, Some(0), "python: {out:?}");
    out.stdout
}

const BODY: &str = "Subject: test\nFrom: ann@example.org\n\nline one\nFrom the start of a line\n  From indented\nFrom\nlast line\n";

#[test]
fn mbox_and_maildir_read_back_by_pythons_mailbox_module() {
    let inst = local_instance("", "");
    let dir = mail_dir(ANN, "readback");
    allow(&inst, "maildir ~/Mail/**");
    let mbox = dir.join("inbox");
    for _ in 0..2 {
        let out = inst.deliver(
            &[
                "-f",
                "sender@example.org",
                "--user",
                ANN,
                "--recipient",
                "ann@example.org",
                "--mailbox",
                mbox.to_str().unwrap(),
            ],
            BODY.as_bytes(),
        );
        assert_eq!(out.code, Some(0), "{out:?}\n{}", inst.log());
        assert!(
            out.stdout.starts_with("ann@example.org: delivered (2.0.0)"),
            "{}",
            out.stdout
        );
    }
    let md = std::fs::metadata(&mbox).unwrap();
    assert_eq!(
        md.uid(),
        postern_tests::ids_of(ANN).0,
        "created as the user"
    );
    assert_eq!(md.mode() & 0o777, 0o600);
    let script = r#"
import mailbox, sys
mb = mailbox.mbox(sys.argv[1])
msgs = list(mb)
print(len(msgs))
for m in msgs:
    body = m.get_payload()
    # mboxo: local quoted lines starting with "From " as ">From ".
    body = "\n".join(l[1:] if l.startswith(">From ") else l for l in body.split("\n"))
    print("|".join([m["Return-Path"], m["Delivered-To"], m["Subject"], body.encode().hex(), m.get_from()]))
"#;
    let out = python(script, &[mbox.to_str().unwrap()]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "2");
    let body = BODY.split_once("\n\n").unwrap().1;
    let hex: String = body.bytes().map(|b| format!("{b:02x}")).collect();
    for l in &lines[1..] {
        assert!(
            l.starts_with(&format!(
                "<sender@example.org>|ann@example.org|test|{hex}|sender@example.org  "
            )),
            "{l}"
        );
    }
    // Maildir: created with tmp/ new/ cur/ (0700), one file in new/.
    let maildir = dir.join("Maildir/");
    let out = inst.deliver(
        &[
            "-f",
            "sender@example.org",
            "--user",
            ANN,
            "--recipient",
            "ann@example.org",
            "--maildir",
            maildir.to_str().unwrap(),
        ],
        BODY.as_bytes(),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    for sub in ["tmp", "new", "cur"] {
        let m = std::fs::metadata(maildir.join(sub)).unwrap();
        assert_eq!(m.mode() & 0o777, 0o700, "{sub}");
    }
    assert_eq!(std::fs::read_dir(maildir.join("tmp")).unwrap().count(), 0);
    let script = r#"
import mailbox, sys
md = mailbox.Maildir(sys.argv[1], factory=None)
msgs = list(md)
print(len(msgs))
m = msgs[0]
print("|".join([m["Return-Path"], m["Delivered-To"], m.get_payload().encode().hex()]))
"#;
    let out = python(script, &[maildir.to_str().unwrap()]);
    assert_eq!(
        out,
        format!("1\n<sender@example.org>|ann@example.org|{hex}\n")
    );
}

/// A message file for the handoff client.
fn message_fd(body: &[u8]) -> OwnedFd {
    let mut f = tempfile::tempfile().unwrap();
    f.write_all(body).unwrap();
    OwnedFd::from(f)
}

fn request(user: &str, destination: Destination) -> DeliveryRequest {
    DeliveryRequest {
        queue_id: "TEST".into(),
        sender: "sender@example.org".into(),
        arrival: 1_795_245_296,
        message_offset: 0,
        message_size: None,
        recipients: vec![Instruction {
            recipient: format!("{user}@example.org"),
            original_recipient: None,
            user: user.into(),
            extension: None,
            destination,
            uncertain: false,
        }],
    }
}

#[test]
fn eight_concurrent_writers_lose_and_interleave_nothing() {
    let inst = local_instance("", "");
    let dir = mail_dir(BOB, "concurrent");
    let mbox = dir.join("inbox");
    let socket = inst.local_socket();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (socket, mbox) = (socket.clone(), mbox.clone());
            std::thread::spawn(move || {
                for n in 0..200 {
                    let body = format!("Subject: {t}-{n}\n\nwriter {t} message {n}\nFrom line {t} {n}\n{}\nend {t} {n}\n", "x".repeat(200 + n));
                    let fd = message_fd(body.as_bytes());
                    let reply = handoff::deliver(&socket, &request(BOB, Destination::Mailbox(mbox.clone())), &fd, WAIT).unwrap();
                    assert_eq!(reply.statuses[0].outcome, Outcome::Delivered, "{:?}", reply.statuses[0]);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let script = r#"
import mailbox, sys, re
seen = set()
for m in mailbox.mbox(sys.argv[1]):
    s = m["Subject"]
    t, n = s.split("-")
    body = m.get_payload()
    want = "writer %s message %s\n>From line %s %s\n%s\nend %s %s\n" % (t, n, t, n, "x" * (200 + int(n)), t, n)
    assert body == want, (s, body[:80])
    assert s not in seen, s
    seen.add(s)
print(len(seen))
"#;
    assert_eq!(python(script, &[mbox.to_str().unwrap()]).trim(), "1600");
}

#[test]
fn mailboxes_that_are_links_directories_or_not_the_users_are_refused_untouched() {
    let inst = local_instance("", "");
    let dir = mail_dir(ANN, "refusals");
    let victim = dir.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let (uid, gid) = postern_tests::ids_of(ANN);
    nix::unistd::chown(&victim, Some(uid.into()), Some(gid.into())).unwrap();
    std::os::unix::fs::symlink(&victim, dir.join("symlink")).unwrap();
    std::fs::hard_link(&victim, dir.join("hardlink")).unwrap();
    std::fs::create_dir(dir.join("directory")).unwrap();
    let foreign = dir.join("foreign");
    std::fs::write(&foreign, "bob's\n").unwrap();
    let (bob, bob_gid) = postern_tests::ids_of(BOB);
    nix::unistd::chown(&foreign, Some(bob.into()), Some(bob_gid.into())).unwrap();
    std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o666)).unwrap();
    for (name, why) in [
        ("symlink", "is a symbolic link"),
        ("hardlink", "hard links"),
        ("directory", "is a directory"),
        ("foreign", "not the recipient"),
    ] {
        let path = dir.join(name);
        let out = to_mailbox(&inst, ANN, path.to_str().unwrap(), b"Subject: x\n\nbody\n");
        assert_eq!(out.code, Some(69), "{name}: {out:?}");
        assert!(
            out.stdout.contains("bounced (5.2.0)") && out.stdout.contains(why),
            "{name}: {}",
            out.stdout
        );
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(std::fs::read_to_string(&foreign).unwrap(), "bob's\n");
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_defers_and_restores_the_mailbox_exactly() {
    let inst = local_instance("", "");
    let full = inst.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let (uid, gid) = postern_tests::ids_of(ANN);
    // The user's own small file system: room for the lock file, not the message.
    let opts = format!("size=64k,mode=0700,uid={uid},gid={gid}");
    let out = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", &opts])
        .arg("tmpfs")
        .arg(&full));
    assert_eq!(out.code, Some(0), "mount tmpfs: {out:?}");
    let _mount = Mount(full.clone());
    let root_md = std::fs::metadata(&full).unwrap();
    assert_eq!(
        (root_md.uid(), root_md.mode() & 0o777),
        (uid, 0o700),
        "the tmpfs root belongs to the user"
    );
    let mbox = full.join("inbox");
    std::fs::write(&mbox, vec![b'x'; 20_000]).unwrap();
    nix::unistd::chown(&mbox, Some(uid.into()), Some(gid.into())).unwrap();
    std::fs::set_permissions(&mbox, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Fill the rest so that the next delivery cannot fit.
    std::fs::write(full.join("filler"), vec![0u8; 36_000]).unwrap();
    allow(&inst, &format!("mailbox {}/*", full.display()));
    let before = std::fs::read(&mbox).unwrap();
    let big = format!("Subject: big\n\n{}\n", "y".repeat(40_000));
    let out = to_mailbox(&inst, ANN, mbox.to_str().unwrap(), big.as_bytes());
    assert_eq!(out.code, Some(75), "{out:?}");
    assert!(
        out.stdout.contains("deferred (4.2.0)")
            && out.stdout.contains("truncated back to its original size"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read(&mbox).unwrap(),
        before,
        "mailbox back to its exact original content"
    );
    // Several messages in one exchange, room for only some: the first ones
    // are delivered (and fsynced), the one that hit the full disk and those
    // after it are deferred, and nothing of them is left in the file.
    std::fs::remove_file(full.join("filler")).unwrap();
    std::fs::write(full.join("filler"), vec![0u8; 20_000]).unwrap();
    let bodies: Vec<String> = (0..5)
        .map(|n| format!("Subject: b{n}\n\n{}\n", "z".repeat(10_000)))
        .collect();
    let fds: Vec<OwnedFd> = bodies.iter().map(|b| message_fd(b.as_bytes())).collect();
    let req = request(ANN, Destination::Mailbox(mbox.clone()));
    let batch: Vec<(&DeliveryRequest, &OwnedFd)> = fds.iter().map(|fd| (&req, fd)).collect();
    let replies = handoff::deliver_batch(&inst.local_socket(), &batch, WAIT).unwrap();
    let outcomes: Vec<Outcome> = replies.iter().map(|r| r.statuses[0].outcome).collect();
    let delivered = outcomes
        .iter()
        .take_while(|o| **o == Outcome::Delivered)
        .count();
    assert!(
        (1..5).contains(&delivered)
            && outcomes[delivered..]
                .iter()
                .all(|o| *o == Outcome::Deferred),
        "{replies:?}"
    );
    let after = std::fs::read(&mbox).unwrap();
    assert!(after.starts_with(&before));
    let text = String::from_utf8_lossy(&after[before.len()..]).into_owned();
    for (n, _) in bodies.iter().enumerate() {
        let want = usize::from(n < delivered);
        assert_eq!(
            text.matches(&format!("\nSubject: b{n}\n")).count(),
            want,
            "b{n}"
        );
    }
    assert!(text.ends_with(&format!("{}\n\n", "z".repeat(10_000))));
}

#[test]
fn one_exchange_with_several_messages_reports_each_one() {
    let inst = local_instance("", "");
    allow(&inst, "maildir ~/Mail/**");
    let bob_mbox = mail_dir(BOB, "batch").join("inbox");
    let ann_dir = mail_dir(ANN, "batch");
    let ann_maildir = PathBuf::from(format!("{}/", ann_dir.join("Maildir").display()));
    std::os::unix::fs::symlink("/etc/passwd", ann_dir.join("link")).unwrap();
    let mut requests = Vec::new();
    let mut bodies = Vec::new();
    for n in 0..6 {
        // Alternating users and destinations; one delivery process per user.
        let (user, dest) = if n % 2 == 0 {
            (BOB, Destination::Mailbox(bob_mbox.clone()))
        } else {
            (ANN, Destination::Maildir(ann_maildir.clone()))
        };
        let mut r = request(user, dest);
        r.queue_id = format!("BATCH{n}");
        requests.push(r);
        bodies.push(format!(
            "Received: by localhost id BATCH{n}; Sat, 21 Nov 2026 09:00:00 +0000\n\
             Subject: m{n}\n\nFrom me, message {n}\n"
        ));
    }
    // Three that must fail, each on its own: a symbolic link as mailbox,
    // an unknown user, a destination outside the policy.
    requests.push(request(ANN, Destination::Mailbox(ann_dir.join("link"))));
    requests.push(request(
        "pt-nosuchuser",
        Destination::Mailbox("/tmp/x".into()),
    ));
    requests.push(request(BOB, Destination::Mailbox("/etc/postern-no".into())));
    for _ in 0..3 {
        bodies.push("Subject: bad\n\nx\n".into());
    }
    let fds: Vec<OwnedFd> = bodies.iter().map(|b| message_fd(b.as_bytes())).collect();
    let batch: Vec<(&DeliveryRequest, &OwnedFd)> = requests.iter().zip(&fds).collect();
    let replies = handoff::deliver_batch(&inst.local_socket(), &batch, WAIT).unwrap();
    assert_eq!(replies.len(), 9);
    for r in &replies[..6] {
        assert_eq!(r.statuses[0].outcome, Outcome::Delivered, "{replies:?}");
    }
    let dsns: Vec<&str> = replies[6..]
        .iter()
        .map(|r| r.statuses[0].dsn.as_str())
        .collect();
    assert_eq!(dsns, ["5.2.0", "5.1.1", "5.7.1"], "{replies:?}");
    assert!(!std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .contains("Subject: bad"));
    let script = r#"
import mailbox, sys
box = mailbox.mbox(sys.argv[1])
print(",".join(m["Subject"] + "=" + m.get_payload().strip() for m in box))
md = mailbox.Maildir(sys.argv[2], factory=None)
print(",".join(sorted(m["Subject"] + "=" + m.get_payload().strip() for m in md)))
"#;
    let out = python(
        script,
        &[
            bob_mbox.to_str().unwrap(),
            ann_dir.join("Maildir").to_str().unwrap(),
        ],
    );
    assert_eq!(
        out,
        "m0=>From me, message 0,m2=>From me, message 2,m4=>From me, message 4\n\
         m1=From me, message 1,m3=From me, message 3,m5=From me, message 5\n"
    );
    // The same message handed twice in one exchange, the second time as
    // uncertain: the copy the first one wrote is found, not doubled.
    let mut again = request(BOB, Destination::Mailbox(bob_mbox.clone()));
    again.queue_id = "BATCH0".into();
    again.recipients[0].uncertain = true;
    let fd = message_fd(bodies[0].as_bytes());
    let replies = handoff::deliver(&inst.local_socket(), &again, &fd, WAIT).unwrap();
    assert!(
        replies.statuses[0].reason.contains("already delivered"),
        "{replies:?}"
    );
    // The same for the Maildir.
    let mut again = request(ANN, Destination::Maildir(ann_maildir.clone()));
    again.queue_id = "BATCH1".into();
    again.recipients[0].uncertain = true;
    let fd = message_fd(bodies[1].as_bytes());
    let replies = handoff::deliver(&inst.local_socket(), &again, &fd, WAIT).unwrap();
    assert!(
        replies.statuses[0].reason.contains("already delivered"),
        "{replies:?}"
    );
}

#[test]
fn destinations_outside_the_policy_bounce_and_write_nothing() {
    let inst = local_instance("", "");
    let outside = PathBuf::from(format!("/tmp/postern-outside-{}", std::process::id()));
    let out = to_mailbox(&inst, ANN, outside.to_str().unwrap(), b"Subject: x\n\nb\n");
    assert_eq!(out.code, Some(69), "{out:?}");
    assert!(
        out.stdout.contains("bounced (5.7.1)") && out.stdout.contains("is not allowed by"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&inst.etc().join("destinations").display().to_string()),
        "names the policy: {}",
        out.stdout
    );
    assert!(!outside.exists());
    // Through a symbolic link in the path: refused too.
    let dir = mail_dir(ANN, "linkedpath");
    std::os::unix::fs::symlink("/tmp", dir.join("escape")).unwrap();
    let sneaky = dir
        .join("escape")
        .join(format!("postern-sneaky-{}", std::process::id()));
    let out = to_mailbox(&inst, ANN, sneaky.to_str().unwrap(), b"Subject: x\n\nb\n");
    assert!(
        out.stdout.contains("bounced (5.7.1)") && out.stdout.contains("symbolic link"),
        "{}",
        out.stdout
    );
    assert!(!Path::new(&format!("/tmp/postern-sneaky-{}", std::process::id())).exists());
    // A spool directory reached through the administrator's link (root's
    // link in root's directory, as /var/mail -> spool/mail on some
    // systems) is where the policy's rule points: delivered.
    let top = tempfile::tempdir().unwrap();
    let spool = top.path().join("spool/mail");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::symlink("spool/mail", top.path().join("mail")).unwrap();
    allow(
        &inst,
        &format!("mailbox {}/mail/$user", top.path().display()),
    );
    let via_link = top.path().join("mail").join(ANN);
    let out = to_mailbox(&inst, ANN, via_link.to_str().unwrap(), b"Subject: x\n\nb\n");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(spool.join(ANN).is_file());
}

#[test]
fn per_user_policy_narrows_and_widens_only_inside_home_when_allowed() {
    let inst = local_instance("", "");
    test_account(CAROL, "/bin/bash");
    let dir = mail_dir(CAROL, "userpolicy");
    let (uid, gid) = postern_tests::ids_of(CAROL);
    let user_file = PathBuf::from("/home/pt-carol/.postern-destinations");
    let inside_not_system = PathBuf::from("/home/pt-carol/private-box");
    let write_user_policy = |text: &str| {
        std::fs::write(&user_file, text).unwrap();
        nix::unistd::chown(&user_file, Some(uid.into()), Some(gid.into())).unwrap();
        std::fs::set_permissions(&user_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    let allowed_by_user = dir.join("only-this");
    write_user_policy(&format!(
        "mailbox {}\nmailbox ~/private-box\nmailbox /tmp/carol-anywhere\n",
        allowed_by_user.display()
    ));
    let deliver = |p: &Path| to_mailbox(&inst, CAROL, p.to_str().unwrap(), b"Subject: x\n\nb\n");
    // Narrowing: the system allows ~/Mail/**, the user only one file.
    assert_eq!(deliver(&allowed_by_user).code, Some(0));
    let out = deliver(&dir.join("something-else"));
    assert!(
        out.stdout.contains("bounced (5.7.1)") && out.stdout.contains(".postern-destinations"),
        "{}",
        out.stdout
    );
    // Without user-policy widen, the user file cannot allow more.
    assert!(deliver(&inside_not_system)
        .stdout
        .contains("bounced (5.7.1)"));
    // With widen: inside the home yes, outside never.
    let mut sys = std::fs::OpenOptions::new()
        .append(true)
        .open(inst.etc().join("destinations"))
        .unwrap();
    writeln!(sys, "user-policy widen").unwrap();
    assert_eq!(
        deliver(&inside_not_system).code,
        Some(0),
        "{}",
        deliver(&inside_not_system).stdout
    );
    assert!(deliver(Path::new("/tmp/carol-anywhere"))
        .stdout
        .contains("bounced (5.7.1)"));
    assert!(!Path::new("/tmp/carol-anywhere").exists());
    // A FIFO in its place is ignored (the system policy alone applies) and
    // does not hold the delivery: it is never read.
    std::fs::remove_file(&user_file).unwrap();
    nix::unistd::mkfifo(&user_file, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    nix::unistd::chown(&user_file, Some(uid.into()), Some(gid.into())).unwrap();
    let out = deliver(&dir.join("with-a-fifo-policy"));
    assert_eq!(out.code, Some(0), "{out:?}");
    let _ = std::fs::remove_file(&user_file);
    let _ = std::fs::remove_file(&inside_not_system);
}

#[test]
fn loops_size_limits_and_unknown_users_bounce() {
    let inst = local_instance("mailbox_size_limit = 5000", "");
    let dir = mail_dir(ANN, "limits");
    let mbox = dir.join("inbox");
    let out = inst.deliver(
        &[
            "-f",
            "s@example.org",
            "--user",
            ANN,
            "--recipient",
            "ann@example.org",
            "--mailbox",
            mbox.to_str().unwrap(),
        ],
        b"Delivered-To: ann@example.org\nSubject: loop\n\nb\n",
    );
    assert!(
        out.stdout.contains("bounced (5.4.6)") && out.stdout.contains("loop"),
        "{}",
        out.stdout
    );
    let big = format!("Subject: big\n\n{}\n", "z".repeat(6000));
    let out = to_mailbox(&inst, ANN, mbox.to_str().unwrap(), big.as_bytes());
    assert!(out.stdout.contains("bounced (5.2.2)"), "{}", out.stdout);
    let out = to_mailbox(&inst, "pt-nobody-here", "/tmp/x", b"x\n");
    assert!(
        out.stdout.contains("bounced (5.1.1)") && out.stdout.contains("no such user"),
        "{}",
        out.stdout
    );
    assert!(!mbox.exists() || std::fs::metadata(&mbox).unwrap().len() == 0);
}

#[test]
fn malformed_frames_and_foreign_peers_are_refused_and_service_continues() {
    let inst = local_instance("", "localpub unix n n n - - local");
    let socket = inst.local_socket();
    let exchange = |bytes: &[u8]| -> Vec<u8> {
        let mut s = UnixStream::connect(&socket).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        out
    };
    // Garbage, a truncated frame, an oversize length, a frame without a descriptor.
    assert!(exchange(b"\xde\xad\xbe\xef garbage garbage").is_empty());
    assert!(exchange(&[0, 0, 0, 50, 1, 2, 3]).is_empty());
    assert!(exchange(&[0x7f, 0xff, 0xff, 0xff]).is_empty());
    let payload = postcard_free_request();
    assert!(exchange(&payload).is_empty());
    inst.wait_log("bad request from pid", 4);
    inst.wait_log("frame of 2147483647 bytes exceeds the limit", 1);
    inst.wait_log("0 message file descriptors attached for 1 messages", 1);
    // Two messages, one descriptor.
    let (fd, req) = (
        message_fd(b"x"),
        request(ANN, Destination::Mailbox("/tmp/never".into())),
    );
    let short = frame::encode(&handoff::RequestFrame {
        version: handoff::PROTOCOL_VERSION,
        messages: vec![req.clone(), req],
    })
    .unwrap();
    let conn = UnixStream::connect(&socket).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    nix::sys::socket::sendmsg::<nix::sys::socket::UnixAddr>(
        std::os::fd::AsRawFd::as_raw_fd(&conn),
        &[std::io::IoSlice::new(&short)],
        &[nix::sys::socket::ControlMessage::ScmRights(&[
            std::os::fd::AsRawFd::as_raw_fd(&fd),
        ])],
        nix::sys::socket::MsgFlags::empty(),
        None,
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = (&conn).read_to_end(&mut out);
    assert!(out.is_empty());
    inst.wait_log("1 message file descriptors attached for 2 messages", 1);
    // A peer that is neither root nor the mail owner.
    let public = inst.public("localpub");
    let tools = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let client = tools.path().join("postern-loadgen");
    std::fs::copy(postern_tests::bin("postern-loadgen"), &client).unwrap();
    let out = run(Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(&client)
        .args([
            "--unix",
            public.to_str().unwrap(),
            "--count",
            "1",
            "--concurrency",
            "1",
        ]));
    assert_ne!(out.code, Some(0), "a foreign peer got an answer: {out:?}");
    inst.wait_log("refused a connection from uid", 1);
    // Still serving.
    let dir = mail_dir(ANN, "aftergarbage");
    let out = to_mailbox(
        &inst,
        ANN,
        dir.join("inbox").to_str().unwrap(),
        b"Subject: ok\n\nb\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// A well-formed request frame (sent without the message descriptor).
fn postcard_free_request() -> Vec<u8> {
    frame::encode(&handoff::RequestFrame {
        version: handoff::PROTOCOL_VERSION,
        messages: vec![request(ANN, Destination::Mailbox("/tmp/never".into()))],
    })
    .unwrap()
}

#[test]
fn a_symlinked_maildir_and_control_characters_in_addresses_are_refused() {
    let inst = local_instance("", "");
    allow(&inst, "maildir ~/Mail/**");
    let dir = mail_dir(ANN, "maildirlink");
    let elsewhere = mail_dir(ANN, "maildir-elsewhere");
    std::os::unix::fs::symlink(&elsewhere, dir.join("Maildir")).unwrap();
    // The trailing slash must not make the checks follow the link.
    let out = inst.deliver(
        &[
            "-f",
            "s@example.org",
            "--user",
            ANN,
            "--maildir",
            &format!("{}/Maildir/", dir.display()),
        ],
        b"Subject: x\n\nb\n",
    );
    assert!(
        out.stdout.contains("bounced") && out.stdout.contains("symbolic link"),
        "{}",
        out.stdout
    );
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "nothing written through the link"
    );
    let mbox = dir.join("inbox");
    let out = inst.deliver(
        &[
            "-f",
            "evil\nFrom forged@example.org",
            "--user",
            ANN,
            "--mailbox",
            mbox.to_str().unwrap(),
        ],
        b"Subject: x\n\nb\n",
    );
    assert!(
        out.stdout.contains("bounced (5.1.7)") && out.stdout.contains("control characters"),
        "{}",
        out.stdout
    );
    assert!(!mbox.exists());
}

#[test]
fn roots_mailbox_is_roots_and_default_privs_never_opens_it() {
    let inst = local_instance("", "");
    // A spool like /var/mail: sticky and writable by everyone, so that
    // default_privs could place a file of its own at root's name.
    let spool = inst.dir.path().join("rootspool");
    std::fs::create_dir(&spool).unwrap();
    std::fs::set_permissions(&spool, std::fs::Permissions::from_mode(0o1777)).unwrap();
    allow(&inst, &format!("mailbox {}/$user", spool.display()));
    let mbox = spool.join("root");
    let out = to_mailbox(
        &inst,
        "root",
        mbox.to_str().unwrap(),
        b"Subject: r1\n\nfor root\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", inst.log());
    let md = std::fs::metadata(&mbox).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o777),
        (0, 0, 0o600),
        "root's mailbox is root's, 0600"
    );
    // Written by a process that runs as default_privs, which cannot open it.
    let out = run(Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "cat"])
        .arg(&mbox));
    assert_ne!(out.code, Some(0), "nobody reads root's mailbox: {out:?}");
    let out = to_mailbox(
        &inst,
        "root",
        mbox.to_str().unwrap(),
        b"Subject: r2\n\nagain\n",
    );
    assert_eq!(out.code, Some(0), "{out:?}\n{}", inst.log());
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(
        text.contains("Subject: r1") && text.contains("Subject: r2"),
        "{text}"
    );
    // A file default_privs put at root's name first is never used.
    let spool2 = inst.dir.path().join("rootspool2");
    std::fs::create_dir(&spool2).unwrap();
    std::fs::set_permissions(&spool2, std::fs::Permissions::from_mode(0o1777)).unwrap();
    allow(&inst, &format!("mailbox {}/$user", spool2.display()));
    let planted = spool2.join("root");
    let out = run(Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "touch",
        ])
        .arg(&planted));
    assert_eq!(out.code, Some(0), "{out:?}");
    let out = to_mailbox(
        &inst,
        "root",
        planted.to_str().unwrap(),
        b"Subject: r3\n\nno\n",
    );
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("owned by uid") && out.stdout.contains("refused"),
        "{}",
        out.stdout
    );
    assert_eq!(std::fs::metadata(&planted).unwrap().len(), 0);
}

/// The message is streamed from the queue file for every copy: a 100 MB
/// message to two mboxes and a Maildir leaves the delivery process's peak
/// memory (VmHWM, which it logs before it reports) far below the message's
/// size. The bound is generous (64 MB; streaming needs a few): a copy held
/// in memory, even once, would exceed it.
#[test]
fn a_large_message_is_streamed_and_memory_does_not_grow_with_it() {
    const SIZE: usize = 100 << 20;
    const BOUND_KB: u64 = 64 << 10;
    let inst = local_instance("mailbox_size_limit = 0\n", "");
    allow(&inst, "maildir ~/Mail/**");
    let dir = mail_dir(BOB, "streamed");
    let boxes = [dir.join("inbox1"), dir.join("inbox2")];
    let maildir = PathBuf::from(format!("{}/", dir.join("Maildir").display()));
    // Lines of 64 bytes, every 16th a "From " line that the mbox copies quote.
    let mut body = b"Subject: large\n\n".to_vec();
    let mut quoted = 0u64;
    let mut n = 0u64;
    while body.len() < SIZE {
        if n % 16 == 0 {
            body.extend_from_slice(format!("From line {n:053}\n").as_bytes());
            quoted += 1;
        } else {
            body.extend_from_slice(format!("body line {n:053}\n").as_bytes());
        }
        n += 1;
    }
    let mut req = request(BOB, Destination::Mailbox(boxes[0].clone()));
    let one = req.recipients[0].clone();
    req.recipients = vec![
        one.clone(),
        Instruction {
            destination: Destination::Mailbox(boxes[1].clone()),
            ..one.clone()
        },
        Instruction {
            destination: Destination::Maildir(maildir.clone()),
            ..one
        },
    ];
    let fd = message_fd(&body);
    let reply = handoff::deliver(&inst.local_socket(), &req, &fd, WAIT).unwrap();
    for s in &reply.statuses {
        assert_eq!(s.outcome, Outcome::Delivered, "{reply:?}");
    }
    let envelope = format!("Return-Path: <sender@example.org>\nDelivered-To: {BOB}@example.org\n");
    for mbox in &boxes {
        let mut text = std::fs::File::open(mbox).unwrap();
        let mut head = [0u8; 200];
        text.read_exact(&mut head).unwrap();
        let from_line = head.iter().position(|&b| b == b'\n').unwrap() as u64 + 1;
        let want = from_line + envelope.len() as u64 + body.len() as u64 + quoted + 1;
        assert_eq!(std::fs::metadata(mbox).unwrap().len(), want);
        assert!(head[from_line as usize..].starts_with(envelope.as_bytes()));
    }
    let new: Vec<_> = std::fs::read_dir(dir.join("Maildir/new"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(new.len(), 1);
    let copy = std::fs::read(&new[0]).unwrap();
    assert!(copy.starts_with(envelope.as_bytes()) && copy.ends_with(&body));
    drop(copy);
    let log = inst.log();
    let line = log
        .lines()
        .find(|l| {
            l.contains(&format!(
                "delivery process for {BOB}: 3 copies, peak memory"
            ))
        })
        .unwrap_or_else(|| panic!("no peak memory line:\n{log}"));
    let kb: u64 = line
        .rsplit_once("peak memory ")
        .and_then(|(_, v)| v.strip_suffix(" kB"))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the peak in {line}"));
    eprintln!("{line}");
    assert!(
        kb < BOUND_KB,
        "peak memory {kb} kB for a {SIZE}-byte message: {line}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
