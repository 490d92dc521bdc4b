//! End to end, as root: `postern sendmail` → submit → qmgr → smtp → the
//! real Postfix `smtpd` (Debian's postfix package) of a private Postfix
//! instance run by Postfix's own master (`postfix -c DIR start`), with
//! STARTTLS (a certificate made here by `openssl`) and SASL through
//! Dovecot's auth server (`dovecot -F -c FILE`, a private configuration
//! with one user in a passwd-file and its socket in the Postfix queue's
//! `private/auth`). Postfix's local then delivers into a test account's
//! `~/Maildir`.
//!
//! The Postfix instance is the package's stock main.cf and master.cf with
//! only these changed: the paths (queue, data, log), the smtpd listener
//! (`127.0.0.2:PORT` instead of `smtp`, and no chroot on any service: a
//! chroot would need copies of the system's files in the queue), the host
//! and mydestination (`relay.test`, `remote.test`), TLS and SASL, and the
//! local delivery (stock `alias_maps` names an aliases.db a fresh machine
//! lacks; stock `mailbox_command` is procmail into /var/mail: a Maildir is
//! read back per message).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use postern_tests::certs::TestCerts;
use postern_tests::{
    eventually, free_port, proc_entries, require_postfix, run, test_account, unique, Instance, WAIT,
};

/// The far side's address (loopback; a host of its own).
const FAR: &str = "127.0.0.2";
/// The account Postfix's local delivers to, and its SASL login at Dovecot.
const USER: &str = "pt-smtpreal";
const SASL_USER: &str = "ann";
const SASL_PASSWORD: &str = "s3cret-pw";

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      qmgr fifo n - n 300 1 qmgr\n\
                      smtp unix - - n - - smtp\n";

fn require_postfix_and_dovecot() {
    require_postfix();
    assert!(
        Path::new("/usr/sbin/dovecot").is_file(),
        "Dovecot is not installed: apt-get install dovecot-core (see .ci/run)"
    );
}

/// A private Postfix instance with Dovecot's auth server beside it;
/// `postfix stop`, Dovecot ended and whatever remains killed on drop, even
/// when the test fails.
struct FarSide {
    dir: tempfile::TempDir,
    port: u16,
    dovecot: Option<Child>,
}

impl FarSide {
    /// Starts it with `extra` main.cf settings beside the test's own.
    fn start(certs: &TestCerts, extra: &str) -> FarSide {
        require_postfix_and_dovecot();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        for sub in ["etc", "queue", "data"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        let postfix = nix::unistd::User::from_name("postfix")
            .unwrap()
            .expect("the postfix account (Debian's postfix package)");
        nix::unistd::chown(&d.join("data"), Some(postfix.uid), Some(postfix.gid)).unwrap();
        let port = free_port();
        let changes = format!(
            "queue_directory = {d}/queue\ndata_directory = {d}/data\n\
             maillog_file = {d}/maillog\nmaillog_file_prefixes = {d}\n\
             myhostname = relay.test\nmydestination = remote.test\n\
             alias_maps =\nalias_database =\nmailbox_command =\nhome_mailbox = Maildir/\n\
             smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n\
             smtpd_tls_security_level = may\nsmtpd_tls_auth_only = yes\nsmtpd_tls_loglevel = 1\n\
             smtpd_sasl_auth_enable = yes\nsmtpd_sasl_type = dovecot\n\
             smtpd_sasl_path = private/auth\n\
             smtpd_relay_restrictions = permit_sasl_authenticated, reject\n{extra}",
            d = d.display(),
            cert = certs.path("server.crt"),
            key = certs.path("server.key"),
        );
        let main = far_main_cf(&changes);
        std::fs::write(d.join("etc/main.cf"), main).unwrap();
        std::fs::write(d.join("etc/master.cf"), far_master_cf(port)).unwrap();
        let mut far = FarSide {
            dir,
            port,
            dovecot: None,
        };
        let out = far.postfix("start");
        assert_eq!(
            out.code,
            Some(0),
            "postfix start: {out:?}\n{}",
            far.maillog()
        );
        let up = eventually(WAIT, || std::net::TcpStream::connect((FAR, port)).is_ok());
        assert!(
            up,
            "Postfix's smtpd never listened on {FAR}:{port}:\n{}",
            far.maillog()
        );
        far.start_dovecot();
        far
    }

    /// Dovecot's auth server, its client socket in the queue's private/
    /// (which `postfix start` made).
    fn start_dovecot(&mut self) {
        let d = self.dir.path();
        let users = d.join("dovecot-users");
        std::fs::write(
            &users,
            format!("{SASL_USER}:{{PLAIN}}{SASL_PASSWORD}::::::\n"),
        )
        .unwrap();
        let conf = d.join("dovecot.conf");
        std::fs::write(
            &conf,
            format!(
                "protocols =\nbase_dir = {d}/dovecot-run\nstate_dir = {d}/dovecot-state\n\
                 log_path = {d}/dovecot.log\nssl = no\nauth_mechanisms = plain login\n\
                 passdb {{\n  driver = passwd-file\n  args = {users}\n}}\n\
                 userdb {{\n  driver = static\n  args = uid=nobody gid=nogroup home=/nonexistent\n}}\n\
                 service auth {{\n  unix_listener {d}/queue/private/auth {{\n    mode = 0660\n    \
                 user = postfix\n    group = postfix\n  }}\n}}\n",
                d = d.display(),
                users = users.display(),
            ),
        )
        .unwrap();
        let child = Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("dovecot");
        self.dovecot = Some(child);
        let socket = d.join("queue/private/auth");
        let up = eventually(WAIT, || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
        assert!(
            up,
            "Dovecot's auth socket {} never accepted:\n{}",
            socket.display(),
            std::fs::read_to_string(d.join("dovecot.log")).unwrap_or_default()
        );
    }

    fn etc(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    /// Postfix's own `postfix -c ETC what`.
    fn postfix(&self, what: &str) -> postern_tests::Outcome {
        run(Command::new("postfix").arg("-c").arg(self.etc()).arg(what))
    }

    fn maillog(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// Waits until Postfix's log has `needle`, and returns the log: a
    /// daemon's line reaches postlogd as a datagram and may be written a
    /// moment after what it tells of (a mailbox written, a reply sent).
    fn wait_maillog(&self, needle: &str) -> String {
        let ok = eventually(WAIT, || self.maillog().contains(needle));
        assert!(ok, "Postfix never logged {needle:?}:\n{}", self.maillog());
        self.maillog()
    }

    /// Live processes of this instance: Postfix's master passes
    /// `MAIL_CONFIG` on to every daemon.
    fn processes(&self) -> Vec<u32> {
        let needle = format!("MAIL_CONFIG={}", self.etc().display());
        proc_entries()
            .into_iter()
            .filter(|p| p.state != 'Z' && p.environ.contains(&needle))
            .map(|p| p.pid)
            .collect()
    }
}

impl Drop for FarSide {
    fn drop(&mut self) {
        // Best effort all through: the test is over either way, and a
        // failure here must not hide its own.
        if let Ok(mut stop) = Command::new("postfix")
            .arg("-c")
            .arg(self.etc())
            .arg("stop")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            if !eventually(WAIT, || matches!(stop.try_wait(), Ok(Some(_)))) {
                let _ = stop.kill();
                let _ = stop.wait();
            }
        }
        let gone = eventually(WAIT, || self.processes().is_empty());
        if !gone {
            for pid in self.processes() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(mut child) = self.dovecot.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            if !eventually(WAIT, || matches!(child.try_wait(), Ok(Some(_)))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// The stock main.cf with the entries `changes` sets taken out (Postfix
/// would warn of each one set twice, on every command), then `changes`.
fn far_main_cf(changes: &str) -> String {
    let name = |line: &str| {
        line.split('=')
            .next()
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    };
    let changed: Vec<String> = changes.lines().map(name).collect();
    let stock = std::fs::read_to_string("/etc/postfix/main.cf").unwrap();
    let mut main = String::new();
    let mut dropping = false;
    for line in stock.lines() {
        if line.starts_with(|c: char| c.is_whitespace()) && !line.trim().is_empty() {
            // A continuation line belongs to the entry above it.
        } else {
            dropping = !line.starts_with('#') && changed.contains(&name(line));
        }
        if !dropping {
            main.push_str(line);
            main.push('\n');
        }
    }
    main.push_str("# changed for the test\n");
    main.push_str(changes);
    main
}

/// The stock master.cf with the smtpd listener on `FAR:port` and no chroot.
fn far_master_cf(port: u16) -> String {
    let stock = std::fs::read_to_string("/etc/postfix/master.cf").unwrap();
    let mut master = String::new();
    let mut listener = false;
    for line in stock.lines() {
        let mut fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        let service = !line.starts_with(|c: char| c == '#' || c.is_whitespace());
        if !service || fields.len() < 8 {
            master.push_str(line);
            master.push('\n');
            continue;
        }
        if fields[0] == "smtp" && fields[1] == "inet" {
            fields[0] = format!("{FAR}:{port}");
            listener = true;
        }
        fields[4] = "n".to_string();
        master.push_str(&fields.join(" "));
        master.push('\n');
    }
    assert!(listener, "no smtp inet line in the stock master.cf");
    master
}

/// A postern instance relaying everything to the far side.
fn postern_to(far: &FarSide, certs: &TestCerts, secrets: &Path, extra: &str) -> Instance {
    let passwd = secrets.join("sasl_passwd");
    std::fs::write(
        &passwd,
        format!("[{FAR}]:{} {SASL_USER}:{SASL_PASSWORD}\n", far.port),
    )
    .unwrap();
    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut inst = Instance::new(
        &format!(
            "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n\
             default_transport = smtp\nrelayhost = [{FAR}]:{port}\n\
             smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca}\n\
             smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = {passwd}\n\
             smtp_helo_name = client.test\nsmtp_helo_timeout = 10s\nsmtp_connect_timeout = 10s\n\
             {extra}",
            port = far.port,
            ca = certs.path("ca.crt"),
            passwd = passwd.display(),
        ),
        MASTER,
    );
    inst.start();
    inst
}

/// The test account's Maildir messages that contain `needle`: (path, content).
fn maildir_with(needle: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let new = PathBuf::from(format!("/home/{USER}/Maildir/new"));
    let Ok(entries) = std::fs::read_dir(new) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| Some((e.path(), std::fs::read(e.path()).ok()?)))
        .filter(|(_, m)| m.windows(needle.len()).any(|w| w == needle.as_bytes()))
        .collect()
}

/// Waits until `n` Maildir messages contain `needle`; removes them from
/// the shared Maildir and returns their contents.
fn take_maildir(needle: &str, n: usize, far: &FarSide, inst: &Instance) -> Vec<Vec<u8>> {
    let ok = eventually(WAIT, || maildir_with(needle).len() >= n);
    assert!(
        ok,
        "{n} messages with {needle:?} never reached ~{USER}/Maildir\npostern:\n{}\nPostfix:\n{}",
        inst.log(),
        far.maillog()
    );
    maildir_with(needle)
        .into_iter()
        .map(|(path, m)| {
            let _ = std::fs::remove_file(path);
            m
        })
        .collect()
}

/// Splits a message at its first empty line: (header block with its last
/// newline, body).
fn split_message(m: &[u8]) -> (&[u8], &[u8]) {
    let at = m
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("a header end");
    (&m[..at + 1], &m[at + 2..])
}

fn log_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

#[test]
fn relay_through_starttls_with_auth_to_postfix_arrives_byte_exact() {
    test_account(USER, "/bin/sh");
    let certs = TestCerts::make("relay.test", &format!("IP:{FAR},DNS:relay.test"));
    let far = FarSide::start(&certs, "");
    let secrets = tempfile::tempdir().unwrap();
    let inst = postern_to(&far, &certs, secrets.path(), "");
    let subject = unique("byte-exact");
    let mut message = format!(
        "Subject: {subject}\nFrom: {USER}@remote.test\nX-Test: folded\n\tcontinuation\n\n\
         .a line with a dot\n..two dots\n.\nFrom the start of a line\n\n\
         caf\u{e9} 8-bit\n"
    )
    .into_bytes();
    message.extend(std::iter::repeat_n(b'x', 1500));
    message
        .extend_from_slice(b"\n\n\ttabbed  line with trailing spaces  \nlast line without an end");
    inst.sendmail(
        &[
            "-i",
            "-f",
            &format!("{USER}@remote.test"),
            &format!("{USER}@remote.test"),
        ],
        &message,
    );
    let got = take_maildir(&subject, 1, &far, &inst);
    let (got_head, got_body) = split_message(&got[0]);
    let (sent_head, sent_body) = split_message(&message);
    // The body is the one sent, byte for byte, with the line end its last
    // line lacked.
    let mut want = sent_body.to_vec();
    want.push(b'\n');
    assert!(
        got_body == want.as_slice(),
        "not byte-exact:\n{}",
        String::from_utf8_lossy(&got[0])
    );
    // The headers sent are there, unchanged and in order, after what
    // Postfix and postern added (Return-Path:, Delivered-To:, Received:,
    // Date:, Message-ID:).
    let got_head = String::from_utf8_lossy(got_head);
    assert!(
        got_head.contains(&*String::from_utf8_lossy(sent_head)),
        "{got_head}"
    );
    // Postfix says how the message came: ESMTP over TLS (S), authenticated (A).
    assert!(
        got_head.contains("from client.test (localhost [127.0.0.1])")
            && got_head.contains("by relay.test (Postfix) with ESMTPSA id "),
        "{got_head}"
    );

    inst.wait_log("status=sent (250 2.0.0 Ok: queued as ", 1);
    let log = inst.log();
    let sent = log_lines(&log, "status=sent");
    let relay = format!("relay={FAR}[{FAR}]:{}", far.port);
    assert!(
        sent[0].contains("postern/smtp[")
            && sent[0].contains(&relay)
            && sent[0].contains("dsn=2.0.0"),
        "{log}"
    );
    // The TLS line names the session as Postfix's smtpd saw it (OpenSSL's
    // names; smtpd goes on with the server's signature).
    let tls_line = format!(
        "Verified TLS connection established to {FAR}[{FAR}]:{}: ",
        far.port
    );
    let ours = log
        .split(&tls_line)
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("no {tls_line:?} in:\n{log}"));
    let from = "Anonymous TLS connection established from localhost[127.0.0.1]: ";
    let pf = far.wait_maillog(from);
    let theirs = pf
        .split(from)
        .nth(1)
        .and_then(|rest| rest.lines().next())
        .unwrap_or_else(|| panic!("Postfix logged no TLS session:\n{pf}"));
    assert!(
        ours.starts_with("TLSv1.3 with cipher TLS_")
            && ours.contains(" bits) key-exchange ")
            && theirs.starts_with(ours),
        "postern: {ours}\nPostfix: {theirs}"
    );
    // The queue id Postfix gave is the one postern logged, and Postfix
    // logged the authentication for it.
    let queue_id = sent[0]
        .split("queued as ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("a queue id");
    far.wait_maillog(&format!(
        "{queue_id}: client=localhost[127.0.0.1], sasl_method=PLAIN, sasl_username={SASL_USER}"
    ));
}

#[test]
fn verify_refuses_postfix_whose_certificate_names_another_host() {
    test_account(USER, "/bin/sh");
    let certs = TestCerts::make("elsewhere.test", "DNS:elsewhere.test,IP:127.0.0.9");
    let far = FarSide::start(&certs, "");
    let secrets = tempfile::tempdir().unwrap();
    let inst = postern_to(&far, &certs, secrets.path(), "");
    let subject = unique("verify");
    inst.sendmail(
        &[&format!("{USER}@remote.test")],
        format!("Subject: {subject}\n\nhello\n").as_bytes(),
    );
    inst.wait_log("status=deferred (", 1);
    let log = inst.log();
    let deferred = log_lines(&log, "status=deferred (");
    assert!(
        deferred[0].contains(&format!(
            "status=deferred (Server certificate not verified: {FAR}[{FAR}] ("
        )) && deferred[0].contains("not valid for name"),
        "{log}"
    );
    assert!(!log.contains("status=sent"), "{log}");
    assert!(!log.contains("TLS connection established"), "{log}");
    // Nothing reached Postfix's queue.
    assert!(
        !far.maillog().contains("client=localhost"),
        "{}",
        far.maillog()
    );
    assert!(maildir_with(&subject).is_empty());
}

#[test]
fn a_recipient_postfix_refuses_bounces_alone_with_postfix_s_reply() {
    test_account(USER, "/bin/sh");
    let certs = TestCerts::make("relay.test", &format!("IP:{FAR},DNS:relay.test"));
    let far = FarSide::start(&certs, "");
    let secrets = tempfile::tempdir().unwrap();
    let inst = postern_to(&far, &certs, secrets.path(), "");
    let subject = unique("refused");
    let unknown = format!("{}@remote.test", unique("nosuch"));
    let good = format!("{USER}@remote.test");
    // The sender is at the far side too: the bounce goes through Postfix
    // into the same Maildir.
    inst.sendmail(
        &["-f", &good, &good, &unknown],
        format!("Subject: {subject}\n\nhello\n").as_bytes(),
    );
    // The message, and the bounce that quotes its headers.
    let got = take_maildir(&subject, 2, &far, &inst);
    let (bounce, message): (Vec<_>, Vec<_>) = got
        .iter()
        .map(|m| String::from_utf8_lossy(m).to_string())
        .partition(|m| m.contains(&unknown));
    assert_eq!((bounce.len(), message.len()), (1, 1), "{got:?}");
    assert!(message[0].ends_with("\n\nhello\n"), "{}", message[0]);
    let reply = format!(
        "550 5.1.1 <{unknown}>: Recipient address rejected: User unknown in local recipient table"
    );
    assert!(bounce[0].contains("Return-Path: <>"), "{}", bounce[0]);
    assert!(bounce[0].contains(&reply), "{}", bounce[0]);

    let log = inst.log();
    let refused = log_lines(&log, &format!("to=<{unknown}>"));
    assert!(
        refused.len() == 1
            && refused[0].contains(&format!(
                "dsn=5.1.1, status=bounced (host {FAR}[{FAR}] said: {reply} (in reply to RCPT TO command))"
            )),
        "{log}"
    );
    let accepted = log_lines(&log, &format!("to=<{good}>"));
    assert!(
        accepted
            .iter()
            .any(|l| l.contains("status=sent (250 2.0.0 Ok: queued as ")),
        "{log}"
    );
    assert!(!log.contains("status=deferred"), "{log}");
}

#[test]
fn a_message_over_postfix_s_size_limit_bounces_without_being_sent() {
    test_account(USER, "/bin/sh");
    let certs = TestCerts::make("relay.test", &format!("IP:{FAR},DNS:relay.test"));
    let far = FarSide::start(&certs, "message_size_limit = 20000\n");
    let secrets = tempfile::tempdir().unwrap();
    let inst = postern_to(&far, &certs, secrets.path(), "");
    let subject = unique("too-big");
    let to = format!("{USER}@remote.test");
    let mut message = format!("Subject: {subject}\n\n").into_bytes();
    for _ in 0..400 {
        message.extend_from_slice(&[b'y'; 76]);
        message.push(b'\n');
    }
    inst.sendmail(&["-f", &to, &to], &message);
    // Only the bounce (the headers, not the body) arrives.
    let got = take_maildir(&subject, 1, &far, &inst);
    let bounce = String::from_utf8_lossy(&got[0]);
    let reason = format!("exceeds size limit 20000 of server {FAR}[{FAR}]");
    assert!(
        bounce.contains("Return-Path: <>") && bounce.contains(&reason),
        "{bounce}"
    );
    let log = inst.log();
    let line = log_lines(&log, "status=bounced");
    assert!(
        line.len() == 1
            && line[0].contains(&format!("to=<{to}>"))
            && line[0].contains("dsn=5.3.4, status=bounced (message size ")
            && line[0].contains(&reason),
        "{log}"
    );
    // Postfix took one message, the bounce: the big one never went.
    let pf = far.wait_maillog("from=<>, size=");
    assert_eq!(
        pf.matches(": client=localhost[127.0.0.1]").count(),
        1,
        "{pf}"
    );
}
