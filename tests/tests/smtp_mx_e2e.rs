//! End to end, as root: postern-smtp finds the next hop through a real DNS
//! server on loopback. Each test runs `dnsmasq` in the foreground on an
//! address of its own (127.0.0.31 and up, port 53) with the test's MX and
//! A records, and starts the instance in a private mount namespace where
//! `/etc/resolv.conf` names that server (the machine's own file is left
//! alone); the smtp agent, a child of the master, resolves through it.
//! A failed lookup (no answer, or a server's failure code) defers, never
//! bounces nor falls back to the domain's address.
//! There is no relayhost: mail goes to port 25 of the recipient domain's
//! mail exchangers (`tests/smtp_server.py` on 127.0.0.21 and up), or of
//! the domain itself when it has no MX records.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use postern_tests::remote::Remote;
use postern_tests::{eventually, Instance, WAIT};

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      qmgr fifo n - n 300 1 qmgr\n\
                      smtp unix - - n - - smtp\n";

/// A DNS server (dnsmasq in the foreground, answering only from the
/// records it is given, without upstream servers: with `--local=/test/`
/// every other name under `.test` does not exist (NXDOMAIN), without it a
/// question it has no record for is REFUSED), killed on drop.
struct Dns {
    child: Child,
    ip: &'static str,
    dir: tempfile::TempDir,
}

impl Dns {
    fn start(ip: &'static str, records: &[&str]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).unwrap();
        let child = Command::new("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--conf-file=/dev/null",
                "--pid-file",
                "--bind-interfaces",
                "--port=53",
                "--log-queries",
                "--log-facility=-",
            ])
            .arg(format!("--listen-address={ip}"))
            .args(records)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dnsmasq (apt-get install dnsmasq-base, see .ci/run)");
        let mut dns = Dns { child, ip, dir };
        // Readiness: it answers a query.
        let ready = eventually(WAIT, || {
            let gone = dns.child.try_wait().unwrap().is_some();
            assert!(!gone, "dnsmasq exited:\n{}", dns.log());
            answers(ip)
        });
        assert!(ready, "dnsmasq on {ip} never answered:\n{}", dns.log());
        dns
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether a DNS server on `ip`:53 answers a query (for `probe.test`, A).
fn answers(ip: &str) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    // Header: id, flags (recursion desired), one question.
    let mut query = vec![0x70, 0x57, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["probe", "test"] {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    if sock.send_to(&query, (ip, 53)).is_err() {
        return false;
    }
    let mut reply = [0u8; 512];
    matches!(sock.recv(&mut reply), Ok(n) if n >= 12 && reply[..2] == query[..2] && reply[2] & 0x80 != 0)
}

/// A resolv.conf naming `ip` as the only server, with short time limits.
fn resolv_conf(dir: &Path, ip: &str) -> PathBuf {
    let path = dir.join("resolv.conf");
    std::fs::write(
        &path,
        format!("nameserver {ip}\noptions timeout:1 attempts:2\n"),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    path
}

/// A remote server on `ip`:25.
fn remote(ip: &str, args: &[&str]) -> Remote {
    let remote = Remote::start_at(&format!("{ip}:25"), args);
    assert_eq!(remote.port, 25);
    remote
}

/// The envelope of each message `remote` received, once it has `n`.
fn envelopes(remote: &Remote, n: usize, inst: &Instance) -> Vec<String> {
    remote
        .wait_messages(n, inst)
        .into_iter()
        .map(|(env, _)| env)
        .collect()
}

/// A running instance without a relayhost whose resolver is `dns_ip`
/// (IPv4 unless `main_extra` says otherwise).
fn instance(dns_ip: &str, main_extra: &str) -> Instance {
    let mut inst = Instance::new(
        &format!(
            "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n\
             default_transport = smtp\nsmtp_tls_security_level = none\ninet_protocols = ipv4\n\
             smtp_helo_timeout = 5s\nsmtp_connect_timeout = 5s\n{main_extra}"
        ),
        MASTER,
    );
    let conf = resolv_conf(inst.dir.path(), dns_ip);
    inst.start_with_resolv_conf(&conf);
    inst
}

fn log_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

fn send(inst: &Instance, to: &str) {
    inst.sendmail(
        &["-i", "-f", "ann@localhost", to],
        format!("Subject: to {to}\n\nhello\n").as_bytes(),
    );
}

#[test]
fn mail_goes_to_the_mx_hosts_in_preference_order() {
    let dns = Dns::start(
        "127.0.0.31",
        &[
            "--local=/test/",
            "--mx-host=mx.test,mx2.mx.test,20",
            "--mx-host=mx.test,mx1.mx.test,10",
            "--host-record=mx1.mx.test,127.0.0.21",
            "--host-record=mx2.mx.test,127.0.0.22",
        ],
    );
    let busy = remote("127.0.0.21", &["--greeting", "421 4.3.2 try again later"]);
    let good = remote("127.0.0.22", &[]);
    let inst = instance(dns.ip, "");
    send(&inst, "bob@mx.test");
    let got = envelopes(&good, 1, &inst);
    assert!(got[0].contains("to=bob@mx.test\n"), "{}", got[0]);
    inst.wait_log("status=sent", 1);
    let log = inst.log();
    // The preferred host was tried first and turned the client away.
    assert_eq!(busy.max_sessions(), 1, "{log}");
    let refused = log
        .find("host mx1.mx.test[127.0.0.21] refused to talk to me: 421 4.3.2 try again later")
        .unwrap_or_else(|| panic!("{log}"));
    let sent = log_lines(&log, "status=sent");
    assert!(
        sent[0].contains("to=<bob@mx.test>")
            && sent[0].contains("relay=mx2.mx.test[127.0.0.22]:25")
            && sent[0].contains("dsn=2.0.0"),
        "{log}"
    );
    assert!(refused < log.find("status=sent").unwrap(), "{log}");

    // The preferred host down altogether: the next one still gets the mail.
    drop(busy);
    send(&inst, "carl@mx.test");
    let got = envelopes(&good, 2, &inst);
    assert!(got[1].contains("to=carl@mx.test\n"), "{}", got[1]);
    inst.wait_log("status=sent", 2);
    let log = inst.log();
    assert!(
        log.contains("connect to mx1.mx.test[127.0.0.21]:25: Connection refused"),
        "{log}"
    );
    let sent = log_lines(&log, "status=sent");
    assert!(
        sent[1].contains("to=<carl@mx.test>")
            && sent[1].contains("relay=mx2.mx.test[127.0.0.22]:25"),
        "{log}"
    );
    assert!(!log.contains("status=bounced"), "{log}");
}

#[test]
fn a_domain_without_mx_records_gets_mail_at_its_own_address() {
    let dns = Dns::start(
        "127.0.0.32",
        &["--local=/test/", "--host-record=plain.test,127.0.0.23"],
    );
    let remote = remote("127.0.0.23", &[]);
    let inst = instance(dns.ip, "");
    send(&inst, "dora@plain.test");
    let got = envelopes(&remote, 1, &inst);
    assert!(got[0].contains("to=dora@plain.test\n"), "{}", got[0]);
    inst.wait_log("status=sent", 1);
    let log = inst.log();
    assert!(
        log_lines(&log, "status=sent")[0].contains("relay=plain.test[127.0.0.23]:25"),
        "{log}"
    );
    // The MX question was asked (and had no answer) before the address one.
    let queries = dns.log();
    let mx = queries
        .find("query[MX] plain.test")
        .unwrap_or_else(|| panic!("{queries}"));
    let a = queries
        .find("query[A] plain.test")
        .unwrap_or_else(|| panic!("{queries}"));
    assert!(mx < a, "{queries}");
}

#[test]
fn a_domain_that_does_not_exist_or_has_no_address_bounces() {
    let dns = Dns::start(
        "127.0.0.33",
        &[
            "--local=/test/",
            "--txt-record=noaddr.test,no mail here",
            // Mail exchangers whose names do not exist.
            "--mx-host=ghost.test,gone1.test,10",
            "--mx-host=ghost.test,gone2.test,20",
        ],
    );
    let inst = instance(dns.ip, "");
    send(&inst, "eve@nowhere.test");
    send(&inst, "ian@noaddr.test");
    send(&inst, "kim@ghost.test");
    // (The notices to the sender, ann@localhost, are logged too.)
    inst.wait_log("to=<eve@nowhere.test>", 1);
    inst.wait_log("to=<ian@noaddr.test>", 1);
    inst.wait_log("to=<kim@ghost.test>", 1);
    let log = inst.log();
    let why = format!("{log}\ndnsmasq:\n{}", dns.log());
    let nowhere = log_lines(&log, "to=<eve@nowhere.test>");
    assert!(
        nowhere[0].contains(
            "dsn=5.4.4, status=bounced (Host or domain name not found. \
             Name service error for name=nowhere.test type=MX: Host not found)"
        ),
        "{why}"
    );
    // No MX records, and the name has no address either.
    let noaddr = log_lines(&log, "to=<ian@noaddr.test>");
    assert!(
        noaddr[0].contains(
            "dsn=5.4.4, status=bounced (Host or domain name not found. \
             Name service error for name=noaddr.test type="
        ) && noaddr[0].ends_with(": Host found but no data record of requested type)"),
        "{why}"
    );
    // MX records, none of whose hosts exists: bounced as Postfix does
    // (smtp_defer_if_no_mx_address_found = no), with a warning.
    let ghost = log_lines(&log, "to=<kim@ghost.test>");
    assert!(
        ghost[0].contains(
            "dsn=5.4.4, status=bounced (Host or domain name not found. \
             Name service error for name=gone1.test type=A: Host not found)"
        ),
        "{why}"
    );
    assert!(
        log.contains("no MX host for ghost.test has a valid address record"),
        "{why}"
    );
    for rcpt in [
        "to=<eve@nowhere.test>",
        "to=<ian@noaddr.test>",
        "to=<kim@ghost.test>",
    ] {
        let deferred = log_lines(&log, rcpt)
            .into_iter()
            .any(|l| l.contains("status=deferred"));
        assert!(!deferred, "{why}");
    }
}

#[test]
fn mail_exchangers_one_missing_one_unresolvable_for_now_defer() {
    // gone.test does not exist (final); the name server of broken.test
    // does not answer (nothing on 127.0.0.39), so mx.broken.test may well
    // have an address: deferred, never bounced.
    let dns = Dns::start(
        "127.0.0.37",
        &[
            "--local=/test/",
            "--server=/broken.test/127.0.0.39",
            "--mx-host=mixed.test,gone.test,10",
            "--mx-host=mixed.test,mx.broken.test,20",
        ],
    );
    let inst = instance(dns.ip, "");
    send(&inst, "max@mixed.test");
    inst.wait_log("status=deferred", 1);
    let log = inst.log();
    let why = format!("{log}\ndnsmasq:\n{}", dns.log());
    let deferred = log_lines(&log, "status=deferred");
    assert!(
        deferred[0].contains("to=<max@mixed.test>")
            && deferred[0].contains(
                "dsn=4.4.3, status=deferred (Host or domain name not found. \
                 Name service error for name=mx.broken.test type=A:"
            ),
        "{why}"
    );
    assert!(!log.contains("status=bounced"), "{why}");
}

#[test]
fn a_mail_exchanger_named_by_an_address_gets_the_mail_there() {
    // `MX 10 127.0.0.26`: not a host name, but Postfix takes it for the
    // address it spells. Looked up as a name, it does not exist (as under
    // the real root: there is no top-level domain `26`).
    let dns = Dns::start(
        "127.0.0.36",
        &[
            "--local=/test/",
            "--local=/26/",
            "--mx-host=numeric.test,127.0.0.26,10",
        ],
    );
    let remote = remote("127.0.0.26", &[]);
    let inst = instance(dns.ip, "");
    send(&inst, "lea@numeric.test");
    let got = envelopes(&remote, 1, &inst);
    assert!(got[0].contains("to=lea@numeric.test\n"), "{}", got[0]);
    inst.wait_log("status=sent", 1);
    let log = inst.log();
    assert!(
        log_lines(&log, "status=sent")[0].contains("relay=127.0.0.26[127.0.0.26]:25"),
        "{log}\ndnsmasq:\n{}",
        dns.log()
    );
    assert!(!log.contains("status=bounced"), "{log}");
}

#[test]
fn an_unreachable_name_server_defers_and_never_bounces() {
    // Nothing listens on 127.0.0.39:53.
    let inst = instance("127.0.0.39", "");
    send(&inst, "fred@mx.test");
    inst.wait_log("status=deferred", 2);
    let log = inst.log();
    let deferred = log_lines(&log, "status=deferred");
    assert!(
        deferred[0].contains("to=<fred@mx.test>")
            && deferred[0].contains(
                "dsn=4.4.3, status=deferred (Host or domain name not found. \
                 Name service error for name=mx.test type=MX:"
            ),
        "{log}"
    );
    assert!(!log.contains("status=bounced"), "{log}");
    let queue = inst.postern(&["queue", "list"]);
    assert!(queue.stdout.contains("fred@mx.test"), "{queue:?}\n{log}");
}

#[test]
fn a_failed_mx_lookup_defers_and_does_not_fall_back_to_the_address() {
    // The MX question is REFUSED (the server has no upstream), the A one
    // answered: a failure, not an absence of MX records.
    let dns = Dns::start("127.0.0.34", &["--host-record=refused.test,127.0.0.24"]);
    let remote = remote("127.0.0.24", &[]);
    let inst = instance(dns.ip, "");
    send(&inst, "gus@refused.test");
    // Deferred, then deferred again on the retry.
    inst.wait_log("status=deferred", 2);
    let log = inst.log();
    let deferred = log_lines(&log, "status=deferred");
    assert!(
        deferred[0].contains("to=<gus@refused.test>")
            && deferred[0].contains(
                "dsn=4.4.3, status=deferred (Host or domain name not found. \
                 Name service error for name=refused.test type=MX:"
            ),
        "{log}\ndnsmasq:\n{}",
        dns.log()
    );
    assert!(
        dns.log().contains("query[MX] refused.test"),
        "{}",
        dns.log()
    );
    assert_eq!(remote.max_sessions(), 0, "{log}");
    assert!(
        !log.contains("status=sent") && !log.contains("status=bounced"),
        "{log}"
    );
}

#[test]
fn an_ipv6_only_client_reaches_a_dual_stack_domain_over_ipv6() {
    let dns = Dns::start(
        "127.0.0.35",
        &["--local=/test/", "--host-record=dual.test,127.0.0.25,::1"],
    );
    let remote = Remote::start("[::1]", &[]);
    // `host:port`: an MX lookup (there is none: the domain's addresses),
    // at the server's port.
    let map = tempfile::tempdir().unwrap();
    let transport = map.path().join("transport");
    std::fs::write(
        &transport,
        format!("dual.test smtp:dual.test:{}\n", remote.port),
    )
    .unwrap();
    let inst = instance(
        dns.ip,
        &format!(
            "inet_protocols = ipv6\ntransport_maps = {}\n",
            transport.display()
        ),
    );
    send(&inst, "hal@dual.test");
    let got = envelopes(&remote, 1, &inst);
    assert!(got[0].contains("to=hal@dual.test\n"), "{}", got[0]);
    inst.wait_log("status=sent", 1);
    let log = inst.log();
    let relay = format!("relay=dual.test[::1]:{}", remote.port);
    assert!(log_lines(&log, "status=sent")[0].contains(&relay), "{log}");
}
