//! End to end, as root: Postfix's own daemons (Debian's postfix package,
//! `/usr/lib/postfix/sbin`) under postern's master, in a private Postfix
//! instance made from the package's stock main.cf and master.cf with only
//! paths and the SMTP port changed (and `alias_maps` emptied: the stock
//! value names the system's /etc/aliases.db, which a fresh machine lacks;
//! `mailbox_command` emptied: Debian's postinst sets it to procmail when
//! procmail is installed with Postfix, as it is on CI, and these tests look
//! for Postfix local's own mailbox delivery).
//! Mail goes in by SMTP (Python's smtplib) and Postfix's `sendmail`, and
//! lands in a mailbox by Postfix's local; Postfix's own `postfix status`,
//! `reload`, `stop` and `postqueue` reach postern's master.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use postern_tests::{
    eventually, free_port, require_postfix, run, run_with_input, test_account, unique, Instance,
    WAIT,
};

/// A private Postfix instance from the stock files; `main_extra` and
/// `master_extra` are appended.
struct Postfix {
    inst: Instance,
    port: u16,
}

impl Postfix {
    fn new(main_extra: &str, master_extra: &str) -> Self {
        require_postfix();
        let inst = Instance::new("", "");
        let etc = inst.etc();
        let dir = inst.dir.path();
        let port = free_port();
        // The system's main.cf with the instance's own directories; no
        // mailbox_command (Debian sets procmail there when it is installed).
        let main = format!(
            "{}\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
             maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
             alias_maps =\nalias_database =\nmailbox_command =\n{main_extra}\n",
            std::fs::read_to_string("/etc/postfix/main.cf").unwrap(),
            d = dir.display()
        );
        std::fs::write(etc.join("main.cf"), main).unwrap();
        let stock = std::fs::read_to_string("/etc/postfix/master.cf").unwrap();
        let mut master = String::new();
        let mut replaced = false;
        for line in stock.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() >= 8 && fields[0] == "smtp" && fields[1] == "inet" {
                master.push_str(&line.replacen("smtp ", &format!("127.0.0.1:{port} "), 1));
                replaced = true;
            } else {
                master.push_str(line);
            }
            master.push('\n');
        }
        assert!(replaced, "no smtp inet line in the stock master.cf");
        master.push_str(master_extra);
        master.push('\n');
        std::fs::write(etc.join("master.cf"), master).unwrap();
        Postfix { inst, port }
    }

    fn etc(&self) -> PathBuf {
        self.inst.etc()
    }

    /// Postfix's own `postfix -c ETC what`.
    fn postfix(&self, what: &str) -> postern_tests::Outcome {
        run(Command::new("postfix").arg("-c").arg(self.etc()).arg(what))
    }

    /// Sends one message by SMTP with Python's smtplib; returns its output
    /// (the refused recipients, or the error).
    fn smtp(&self, to: &[&str], subject: &str) -> postern_tests::Outcome {
        let script = format!(
            "import smtplib,sys\n\
             s = smtplib.SMTP('127.0.0.1', {port}, timeout=30)\n\
             try:\n    print(s.sendmail('sender@localhost', {to:?}, 'Subject: {subject}\\r\\n\\r\\nbody\\r\\n'))\n\
             except smtplib.SMTPRecipientsRefused as e:\n    print('refused', e.recipients)\n\
             s.quit()\n",
            port = self.port,
        );
        run(Command::new("python3").arg("-c").arg(script))
    }

    /// Rewrites master.cf's lines: each `(from, to)` replaces the line
    /// that starts with `from` (which must be there) by `to`.
    fn edit_master(&self, edits: &[(&str, String)]) {
        let path = self.etc().join("master.cf");
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (from, to) in edits {
            let line = text
                .lines()
                .find(|l| l.starts_with(from))
                .unwrap_or_else(|| panic!("no line {from:?} in master.cf:\n{text}"))
                .to_string();
            text = text.replacen(&line, to, 1);
        }
        std::fs::write(path, text).unwrap();
    }

    /// The stock master.cf's postscreen lines enabled, as its comments
    /// say: postscreen on the SMTP port in place of smtpd, which becomes a
    /// `pass` service behind it, with dnsblog and tlsproxy.
    fn enable_postscreen(&self) {
        let stock = std::fs::read_to_string("/etc/postfix/master.cf").unwrap();
        let enabled = |start: &str| -> String {
            let line = stock
                .lines()
                .find(|l| l.starts_with(start))
                .unwrap_or_else(|| panic!("no line {start:?} in the stock master.cf"));
            line[1..].to_string()
        };
        let screen = enabled("#smtp      inet");
        assert!(screen.contains("postscreen"), "{screen}");
        let smtpd = format!("127.0.0.1:{} ", self.port);
        self.edit_master(&[
            (smtpd.as_str(), screen.replacen("smtp ", &smtpd, 1)),
            ("#smtpd     pass", enabled("#smtpd     pass")),
            ("#dnsblog", enabled("#dnsblog")),
            ("#tlsproxy", enabled("#tlsproxy")),
        ]);
    }

    /// Sends a message to `user` by SMTP, every recipient accepted, and
    /// waits until it is in `user`'s mailbox.
    fn smtp_to_mailbox(&self, user: &str, what: &str) {
        let subject = unique(what);
        let out = self.smtp(&[&format!("{user}@localhost")], &subject);
        assert_eq!(out.code, Some(0), "{out:?}");
        assert_eq!(out.stdout.trim(), "{}", "{out:?}");
        wait_mailbox(user, &subject, || self.inst.log());
    }

    /// Pids of the live processes that run with this instance's
    /// configuration (`MAIL_CONFIG` in their environment): its Postfix daemons.
    fn daemons(&self) -> Vec<u32> {
        let needle = format!("MAIL_CONFIG={}", self.etc().display());
        postern_tests::proc_entries()
            .into_iter()
            .filter(|p| p.state != 'Z')
            .filter(|p| {
                std::fs::read(format!("/proc/{}/environ", p.pid))
                    .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            })
            .map(|p| p.pid)
            .collect()
    }
}

/// Waits until `user`'s mailbox holds a message with `subject`.
fn wait_mailbox(user: &str, subject: &str, log: impl Fn() -> String) {
    let path = format!("/var/mail/{user}");
    let ok = eventually(WAIT, || {
        std::fs::read_to_string(&path).is_ok_and(|m| m.contains(&format!("Subject: {subject}")))
    });
    assert!(ok, "{subject} never reached {path}; log:\n{}", log());
}

#[test]
fn stock_postfix_delivers_smtp_to_a_mailbox_and_postfix_s_tools_reach_the_master() {
    let user = "pt-pfmail";
    test_account(user, "/bin/sh");
    let mut pf = Postfix::new("", "");
    let check = pf.inst.postern(&["check"]);
    assert_eq!(check.code, Some(0), "{check:?}");
    assert!(
        check
            .stderr
            .contains("a Postfix instance (master.cf runs Postfix's smtpd)")
            && check.stderr.contains(
                "note: service cleanup/unix: Postfix daemon /usr/lib/postfix/sbin/cleanup"
            ),
        "{}",
        check.stderr
    );
    pf.inst.start();
    let status = pf.inst.status();
    assert!(
        status.contains(&format!("127.0.0.1:{}", pf.port)) && status.contains("postlog"),
        "{status}"
    );

    // SMTP in: smtpd → cleanup → qmgr → local → the mailbox.
    pf.smtp_to_mailbox(user, "smtp");
    // Postfix's local logs after it has written the mailbox, through
    // postlog: the line may trail the mail by a moment (mailbox_command
    // is emptied above, so it is local's own mailbox delivery).
    assert!(
        eventually(WAIT, || pf
            .inst
            .log()
            .contains("status=sent (delivered to mailbox)")),
        "no delivery logged; log:\n{}",
        pf.inst.log()
    );

    // Postfix's sendmail (postdrop → pickup) and postqueue.
    let subject = unique("sendmail");
    let out = run_with_input(
        Command::new("sendmail")
            .arg("-C")
            .arg(pf.etc())
            .arg(format!("{user}@localhost")),
        format!("Subject: {subject}\n\nvia Postfix's sendmail\n").as_bytes(),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    wait_mailbox(user, &subject, || pf.inst.log());
    let out = run(Command::new("postqueue").arg("-c").arg(pf.etc()).arg("-p"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("Mail queue is empty"), "{out:?}");

    // postfix status finds postern's master through pid/master.pid.
    let master = pf.inst.master_pid.unwrap();
    let out = pf.postfix("status");
    assert_eq!(out.code, Some(0), "{out:?}");
    pf.inst.wait_log(
        &format!("the Postfix mail system is running: PID: {master}"),
        1,
    );

    // postfix stop: the master leaves and so does every Postfix daemon.
    assert!(!pf.daemons().is_empty(), "no Postfix daemon seen");
    let out = pf.postfix("stop");
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        eventually(WAIT, || {
            // Reaps the master once it exits (this test is its subreaper);
            // while it runs there is nothing to reap.
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(master as i32),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            !Path::new(&format!("/proc/{master}")).exists() && pf.daemons().is_empty()
        }),
        "left running: master {master}, daemons {:?}; log:\n{}",
        pf.daemons(),
        pf.inst.log()
    );
    pf.inst.master_pid = None;
    let out = pf.postfix("status");
    assert_eq!(out.code, Some(1), "{out:?}");
}

#[test]
fn a_daemon_that_exits_at_once_is_reported_with_its_own_fatal_line() {
    // qmgr needs a process limit of 1: with 2 it exits at startup.
    let mut pf = Postfix::new("", "");
    let master = std::fs::read_to_string(pf.etc().join("master.cf")).unwrap();
    let master = master
        .lines()
        .map(|l| {
            if l.starts_with("qmgr ") {
                "qmgr      unix  n       -       n       300     2       qmgr".to_string()
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(pf.etc().join("master.cf"), master + "\n").unwrap();
    pf.inst.start();
    let reason = "fatal: service qmgr requires a process limit of 1";
    assert!(
        eventually(WAIT, || pf.inst.status().contains(reason)),
        "status:\n{}\nlog:\n{}",
        pf.inst.status(),
        pf.inst.log()
    );
    pf.inst.wait_log(reason, 1);
    let status = pf.inst.status();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("qmgr ") && l.contains("throttled")),
        "{status}"
    );
    // The other services are not confused: mail still goes in by SMTP.
    let out = pf.smtp(&["nobody@localhost"], &unique("queued"));
    assert_eq!(out.code, Some(0), "{out:?}");
    pf.inst.stop(false);
}

#[test]
fn reload_under_smtp_load_refuses_no_connection() {
    let mut pf = Postfix::new("", "");
    pf.inst.start();
    let port = pf.port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut served = 0u32;
            let mut failures = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) || served < 20 {
                let r = (|| -> std::io::Result<String> {
                    let s = std::net::TcpStream::connect(("127.0.0.1", port))?;
                    s.set_read_timeout(Some(WAIT))?;
                    let mut banner = String::new();
                    BufReader::new(&s).read_line(&mut banner)?;
                    (&s).write_all(b"QUIT\r\n")?;
                    Ok(banner)
                })();
                match r {
                    Ok(b) if b.starts_with("220 ") => served += 1,
                    Ok(b) => failures.push(format!("banner {b:?}")),
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (served, failures)
        })
    };
    for i in 0..4 {
        // A reload that changes nothing, one that recycles smtpd (a new
        // -o), and Postfix's own reload (SIGHUP through pid/master.pid).
        if i == 1 {
            let master = std::fs::read_to_string(pf.etc().join("master.cf")).unwrap();
            let master = master.replacen(
                &format!("127.0.0.1:{port} inet  n       -       y       -       -       smtpd"),
                &format!("127.0.0.1:{port} inet  n       -       y       -       -       smtpd -o smtpd_banner=$myhostname"),
                1,
            );
            std::fs::write(pf.etc().join("master.cf"), master).unwrap();
        }
        let out = if i == 3 {
            pf.postfix("reload")
        } else {
            pf.inst.postern(&["reload"])
        };
        assert_eq!(out.code, Some(0), "{out:?}");
    }
    pf.inst.wait_log("reload: done", 3);
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (served, failures) = client.join().unwrap();
    assert!(failures.is_empty(), "{failures:?} ({served} served)");
    pf.inst.stop(false);
}

#[test]
fn a_postern_spawn_policy_service_answers_postfix_s_smtpd() {
    let user = "pt-pfpolicy";
    test_account(user, "/bin/sh");
    let pf = Postfix::new(
        "smtpd_recipient_restrictions = check_policy_service unix:private/policy, permit_mynetworks, reject_unauth_destination",
        "policy unix - n n - 0 postern-spawn user=nobody argv=POLICY",
    );
    let script2 = pf.inst.dir.path().join("policy");
    write_policy(&script2);
    let master = std::fs::read_to_string(pf.etc().join("master.cf"))
        .unwrap()
        .replace("argv=POLICY", &format!("argv={}", script2.display()));
    std::fs::write(pf.etc().join("master.cf"), master).unwrap();
    let mut pf = pf;
    let check = pf.inst.postern(&["check"]);
    assert!(
        check
            .stderr
            .contains("service policy/unix: postern's spawn"),
        "{check:?}"
    );
    pf.inst.start();
    let out = pf.smtp(&["blocked@localhost"], &unique("blocked"));
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains("refused")
            && out.stdout.contains("blocked by the postern policy service"),
        "{out:?}\nlog:\n{}",
        pf.inst.log()
    );
    pf.smtp_to_mailbox(user, "allowed");
    // The child logs as the instance does: Postfix's syslog_name (and
    // runs with Postfix's mail_owner), though it reads main.cf alone.
    pf.inst.wait_log("postfix/spawn[", 1);
    let log = pf.inst.log();
    let line: Vec<&str> = log.lines().filter(|l| l.contains("/spawn[")).collect();
    assert!(
        line[0].contains("postfix/spawn[") && line[0].contains("exited with status 3"),
        "{log}"
    );
    pf.inst.stop(false);
}

/// The policy script: one request, one answer (REJECT for blocked@,
/// after which it exits with status 3, which spawn logs).
fn write_policy(path: &Path) {
    std::fs::write(
        path,
        "#!/bin/sh\n\
         verdict=DUNNO\n\
         while read -r line; do\n\
           line=$(printf '%s' \"$line\" | tr -d '\\r')\n\
           [ -z \"$line\" ] && break\n\
           case \"$line\" in recipient=blocked@*) verdict='REJECT blocked by the postern policy service';; esac\n\
         done\n\
         printf 'action=%s\\n\\n' \"$verdict\"\n\
         [ \"$verdict\" = DUNNO ] || exit 3\n",
    )
    .unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

#[test]
fn a_hostile_daemon_on_its_status_channel_does_not_confuse_the_master() {
    // Postfix's daemons from a daemon_directory of links to the real ones,
    // plus "flood": a daemon that writes garbage, half records, records for
    // another pid and another generation, then floods its channel, and
    // never reports a real state.
    let pf = Postfix::new("", "flood unix n - n 1 1 flood");
    let daemons = pf.inst.dir.path().join("daemons");
    std::fs::create_dir(&daemons).unwrap();
    for e in std::fs::read_dir("/usr/lib/postfix/sbin").unwrap() {
        let e = e.unwrap();
        std::os::unix::fs::symlink(e.path(), daemons.join(e.file_name())).unwrap();
    }
    std::fs::write(
        daemons.join("flood"),
        "#!/usr/bin/python3\n\
         import os, struct, time\n\
         me = os.getpid()\n\
         gen = int(os.environ.get('GENERATION', '0'), 8)\n\
         os.write(5, struct.pack('=iIi', 1, gen, 0))\n\
         os.write(5, struct.pack('=iIi', me, gen + 1, 0))\n\
         os.write(5, struct.pack('=iIi', me, gen, 7))\n\
         os.write(5, b'\\xff' * 7)\n\
         while True:\n\
         \x20   os.write(5, b'garbage!' * 64)\n\
         \x20   time.sleep(0.001)\n",
    )
    .unwrap();
    std::fs::set_permissions(
        daemons.join("flood"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    pf.inst
        .append_main(&format!("daemon_directory = {}\n", daemons.display()));
    let mut pf = pf;
    pf.inst.start();
    pf.inst
        .wait_log("more status channel warning(s) suppressed", 1);
    let log = pf.inst.log();
    for expected in [
        "service flood/unix: status record for pid 1 sent by pid",
        "(its generation is",
        "unknown state 7",
    ] {
        assert!(log.contains(expected), "{expected}:\n{log}");
    }
    // The other services are served as ever, and the master answers.
    for _ in 0..5 {
        let s = std::net::TcpStream::connect(("127.0.0.1", pf.port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut banner = String::new();
        BufReader::new(&s).read_line(&mut banner).unwrap();
        assert!(banner.starts_with("220 "), "{banner:?}");
        (&s).write_all(b"QUIT\r\n").unwrap();
    }
    let status = pf.inst.status();
    assert!(status.lines().any(|l| l.starts_with("flood ")), "{status}");
    let out = pf.inst.stop(false);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        eventually(WAIT, || pf.daemons().is_empty()),
        "left running: {:?}",
        pf.daemons()
    );
}

#[test]
fn postscreen_hands_an_smtp_client_to_smtpd_through_a_pass_service() {
    let user = "pt-pfscreen";
    test_account(user, "/bin/sh");
    // postscreen's pregreet test runs for real (127.0.0.1 is in
    // mynetworks, which the stock access list would allowlist) with the
    // shortest greeting wait it accepts.
    let mut pf = Postfix::new("postscreen_access_list =\npostscreen_greet_wait = 1s", "");
    pf.enable_postscreen();
    let check = pf.inst.postern(&["check"]);
    assert_eq!(check.code, Some(0), "{check:?}");
    for note in [
        format!(
            "note: service 127.0.0.1:{}/inet: Postfix daemon /usr/lib/postfix/sbin/postscreen",
            pf.port
        ),
        "note: service smtpd/pass: Postfix daemon /usr/lib/postfix/sbin/smtpd".to_string(),
        "note: service dnsblog/unix: Postfix daemon".to_string(),
        "note: service tlsproxy/unix: Postfix daemon".to_string(),
    ] {
        assert!(check.stderr.contains(&note), "{note}:\n{}", check.stderr);
    }
    pf.inst.start();
    let status = pf.inst.status();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("smtpd ") && l.contains("pass") && l.contains("private/smtpd")),
        "{status}"
    );

    // SMTP in: postscreen → (the descriptor, over private/smtpd) smtpd →
    // cleanup → qmgr → local → the mailbox.
    pf.smtp_to_mailbox(user, "postscreen");
    // The smtpd that took the client is the pass service's: `-t pass`,
    // and `-o stress=` (remote clients are likely behind postscreen).
    let children = smtpd_children(&pf);
    assert!(
        children.iter().any(
            |(_, argv)| argv.windows(2).any(|w| w[0] == "-t" && w[1] == "pass")
                && argv.iter().any(|a| a == "stress=")
        ),
        "{children:?}"
    );
    let log = pf.inst.log();
    assert!(
        log.contains("postfix/postscreen[") && log.contains("PASS NEW [127.0.0.1]"),
        "postscreen did not judge the client:\n{log}"
    );
    assert!(
        log.contains("postfix/smtpd[") && log.contains("connect from localhost[127.0.0.1]"),
        "smtpd did not take the client:\n{log}"
    );
    let out = pf.inst.stop(false);
    assert_eq!(out.code, Some(0), "{out:?}");
}

/// The smtpd children of an instance's master, with their arguments.
fn smtpd_children(pf: &Postfix) -> Vec<(u32, Vec<String>)> {
    let master = pf.inst.master_pid.unwrap();
    postern_tests::proc_entries()
        .into_iter()
        .filter(|p| p.ppid == master && p.state != 'Z')
        .filter(|p| p.cmdline.first().is_some_and(|a| a == "smtpd"))
        .map(|p| (p.pid, p.cmdline))
        .collect()
}

#[test]
fn a_public_smtpd_at_its_process_limit_forks_under_stress() {
    // A public address (a service only on loopback is never under stress)
    // and a process limit of 2: the second client takes the last slot.
    let mut pf = Postfix::new("", "");
    let port = pf.port;
    pf.edit_master(&[(
        &format!("127.0.0.1:{port} "),
        format!("0.0.0.0:{port} inet n - y - 2 smtpd"),
    )]);
    pf.inst.start();
    let greet = || {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        let mut banner = String::new();
        BufReader::new(&s).read_line(&mut banner).unwrap();
        assert!(banner.starts_with("220 "), "{banner:?}");
        s
    };
    // The first client is served by a child forked in calm: -o stress=.
    let first = greet();
    let children = smtpd_children(&pf);
    assert_eq!(children.len(), 1, "{children:?}");
    let (calm, argv) = children[0].clone();
    assert!(argv.iter().any(|a| a == "stress="), "{argv:?}");
    // The second, while the first is held, takes the last slot: its
    // child is forked under stress, and the master warns as Postfix's does.
    let second = greet();
    let children = smtpd_children(&pf);
    assert_eq!(children.len(), 2, "{children:?}");
    let (stressed, argv) = children.iter().find(|(p, _)| *p != calm).unwrap().clone();
    assert!(argv.iter().any(|a| a == "stress=yes"), "{argv:?}");
    pf.inst.wait_log(
        &format!(
            "service \"0.0.0.0:{port}\" ([0.0.0.0]:{port}) has reached its process limit \"2\""
        ),
        1,
    );
    // Entering stress renewed the service's status channel: the calm
    // child leaves once its client is done (it would otherwise wait
    // max_idle for the next); the stressed one stays.
    (&first).write_all(b"QUIT\r\n").unwrap();
    drop(first);
    assert!(
        eventually(WAIT, || !smtpd_children(&pf)
            .iter()
            .any(|(p, _)| *p == calm)),
        "the calm child {calm} stayed; log:\n{}",
        pf.inst.log()
    );
    assert!(smtpd_children(&pf).iter().any(|(p, _)| *p == stressed));
    // The operator sees it: `postern status` names the stress and its end.
    let status = pf.inst.postern(&["status"]);
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("0.0.0.0:{port}")))
        .unwrap_or_default();
    assert!(line.contains(", under stress for "), "{status:?}");
    (&second).write_all(b"QUIT\r\n").unwrap();
    let out = pf.inst.stop(false);
    assert_eq!(out.code, Some(0), "{out:?}");
}
