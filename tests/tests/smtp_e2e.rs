//! End to end, as root: `postern sendmail` → submit → qmgr → smtp → a
//! remote server on loopback (several 127.0.0.x addresses stand for
//! several hosts). The remote server is `tests/smtp_server.py`, which can
//! offer STARTTLS with a certificate made here by `openssl`, require AUTH,
//! refuse or defer recipients, drop the connection in the middle of the
//! data, never answer, or close a session kept between two messages; it
//! counts connections, QUITs and transactions at once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use postern_tests::certs::TestCerts;
use postern_tests::remote::Remote;
use postern_tests::{eventually, Instance, WAIT};

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      qmgr fifo n - n 300 1 qmgr\n\
                      smtp unix - - n - - smtp\n";

/// A running instance that sends remote mail through smtp.
fn instance(main_extra: &str) -> Instance {
    instance_with(main_extra, MASTER)
}

fn instance_with(main_extra: &str, master: &str) -> Instance {
    let mut inst = Instance::new(
        &format!(
            "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n\
             default_transport = smtp\nsmtp_tls_security_level = may\n\
             smtp_helo_timeout = 3s\nsmtp_connect_timeout = 3s\n{main_extra}"
        ),
        master,
    );
    inst.start();
    inst
}

/// CRLF line ends back to LF (the server keeps what came over the wire).
fn lf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for (i, &b) in data.iter().enumerate() {
        if b == b'\r' && data.get(i + 1) == Some(&b'\n') {
            continue;
        }
        out.push(b);
    }
    out
}

/// Messages "Subject: i" for r0@remote.test, r1@remote.test, ...
fn send_numbered(inst: &Instance, n: usize) {
    for i in 0..n {
        inst.sendmail(
            &[&format!("r{i}@remote.test")],
            format!("Subject: {i}\n\nhello\n").as_bytes(),
        );
    }
}

fn log_lines<'a>(log: &'a str, needle: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(needle)).collect()
}

/// A remote server on 127.0.0.2 with STARTTLS (a certificate for
/// relay.test and 127.0.0.2) and AUTH for ann.
fn tls_auth_remote() -> (TestCerts, Remote) {
    let certs = TestCerts::make("relay.test", "IP:127.0.0.2,DNS:relay.test");
    let remote = Remote::start(
        "127.0.0.2",
        &[
            "--tls",
            &certs.path("server.crt"),
            &certs.path("server.key"),
            "--auth",
            "ann:s3cret:pw",
        ],
    );
    (certs, remote)
}

/// main.cf lines for the server of [`tls_auth_remote`] as the relay, at `verify`, with AUTH; the
/// password table is written in `secrets`.
fn verified_relay_with_auth(remote: &Remote, certs: &TestCerts, secrets: &Path) -> String {
    let passwd: PathBuf = secrets.join("sasl_passwd");
    std::fs::write(
        &passwd,
        format!("[127.0.0.2]:{} ann:s3cret:pw\n", remote.port),
    )
    .unwrap();
    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    format!(
        "relayhost = [127.0.0.2]:{}\nsmtp_tls_security_level = verify\nsmtp_tls_CAfile = {}\n\
         smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = {}\nsmtp_helo_name = client.test\n",
        remote.port,
        certs.path("ca.crt"),
        passwd.display()
    )
}

#[test]
fn relay_through_starttls_with_auth_arrives_byte_exact() {
    let (certs, remote) = tls_auth_remote();
    let secrets = tempfile::tempdir().unwrap();
    let inst = instance(&verified_relay_with_auth(&remote, &certs, secrets.path()));
    let mut body = b"Subject: over TLS\nFrom: ann@localhost\n\n.a line with a dot\n..two dots\n.\n\
                     caf\xc3\xa9 8-bit\n"
        .to_vec();
    body.extend(std::iter::repeat_n(b'x', 3000));
    body.extend_from_slice(b"\nlast line without an end");
    inst.sendmail(&["-i", "-f", "ann@localhost", "bob@remote.test"], &body);
    let got = remote.wait_messages(1, &inst);
    let (env, data) = &got[0];
    assert!(env.contains("tls=yes"), "{env}");
    assert!(env.contains("user=ann\n"), "{env}");
    assert!(env.contains("helo=client.test\n"), "{env}");
    assert!(
        env.contains("from=ann@localhost\nto=bob@remote.test\n"),
        "{env}"
    );
    // Every line went as CRLF; the body is the one sent, byte for byte (with
    // the line end its last line lacked), after the headers, which postern
    // completes (Received:, Date:, Message-ID:).
    let received = lf(data);
    assert!(!received.contains(&b'\r'));
    let split = |m: &[u8]| {
        let at = m
            .windows(2)
            .position(|w| w == b"\n\n")
            .expect("a header end");
        (m[..at + 1].to_vec(), m[at + 2..].to_vec())
    };
    let (sent_head, sent_body) = split(&body);
    let (got_head, got_body) = split(&received);
    let mut want = sent_body.clone();
    want.push(b'\n');
    assert!(
        got_body == want,
        "not byte-exact:\n{}",
        String::from_utf8_lossy(&received)
    );
    let got_head = String::from_utf8_lossy(&got_head).to_string();
    assert!(
        got_head.contains(&*String::from_utf8_lossy(&sent_head)),
        "{got_head}"
    );
    inst.wait_log("status=sent (250 2.0.0 Ok: queued as T1)", 1);
    let log = inst.log();
    let relay = format!("relay=127.0.0.2[127.0.0.2]:{}", remote.port);
    let sent = log_lines(&log, "status=sent");
    assert!(
        sent[0].contains("postern/smtp[")
            && sent[0].contains(&relay)
            && sent[0].contains("dsn=2.0.0"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Verified TLS connection established to 127.0.0.2[127.0.0.2]:{}: TLSv1.3 with cipher TLS_",
            remote.port
        )),
        "{log}"
    );
}

#[test]
fn passwords_go_in_plaintext_only_when_allowed() {
    let remote = Remote::start("127.0.0.2", &["--auth", "ann:pw", "--auth-without-tls"]);
    let secrets = tempfile::tempdir().unwrap();
    let passwd = secrets.path().join("sasl_passwd");
    std::fs::write(&passwd, format!("[127.0.0.2]:{} ann:pw\n", remote.port)).unwrap();
    std::fs::set_permissions(&passwd, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let main = format!(
        "relayhost = [127.0.0.2]:{}\nsmtp_tls_security_level = none\n\
         smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = {}\n",
        remote.port,
        passwd.display()
    );
    // By default PLAIN and LOGIN need TLS: the mail waits.
    let inst = instance(&main);
    inst.sendmail(&["bob@remote.test"], b"Subject: secret\n\nhello\n");
    inst.wait_log("status=deferred (SASL authentication failed; cannot authenticate to server 127.0.0.2[127.0.0.2]: no mechanism available (PLAIN and LOGIN need TLS", 1);
    assert!(remote.messages().is_empty());
    drop(inst);
    // Allowed explicitly, they go without it.
    let inst = instance(&format!("{main}smtp_sasl_security_options = noanonymous\n"));
    inst.sendmail(&["bob@remote.test"], b"Subject: secret\n\nhello\n");
    let got = remote.wait_messages(1, &inst);
    assert!(got[0].0.contains("tls=no\nuser=ann\n"), "{}", got[0].0);
}

#[test]
fn verify_refuses_a_server_whose_certificate_names_another_host() {
    let certs = TestCerts::make("relay.test", "IP:127.0.0.2,DNS:relay.test");
    // The certificate names 127.0.0.2; this server is 127.0.0.3.
    let remote = Remote::start(
        "127.0.0.3",
        &[
            "--tls",
            &certs.path("server.crt"),
            &certs.path("server.key"),
        ],
    );
    let inst = instance(&format!(
        "relayhost = [127.0.0.3]:{}\nsmtp_tls_security_level = verify\nsmtp_tls_CAfile = {}\n",
        remote.port,
        certs.path("ca.crt")
    ));
    inst.sendmail(&["bob@remote.test"], b"Subject: x\n\nhello\n");
    inst.wait_log("status=deferred (Server certificate not verified", 1);
    assert!(remote.messages().is_empty());
    assert!(!inst.log().contains("status=sent"), "{}", inst.log());
}

#[test]
fn opportunistic_tls_that_fails_falls_back_to_plaintext() {
    let remote = Remote::start("127.0.0.2", &["--tls-broken"]);
    let inst = instance(&format!("relayhost = [127.0.0.2]:{}\n", remote.port));
    inst.sendmail(&["bob@remote.test"], b"Subject: plain\n\nhello\n");
    let got = remote.wait_messages(1, &inst);
    assert!(got[0].0.contains("tls=no"), "{}", got[0].0);
    inst.wait_log("status=sent (250 2.0.0 Ok: queued as T1)", 1);
    assert!(
        inst.log()
            .contains("TLS is not required: trying 127.0.0.2[127.0.0.2]:"),
        "{}",
        inst.log()
    );
}

/// A null client, as Postfix's documentation sets one up (`myorigin =
/// $mydomain`, `mydestination =`, a relayhost): a bare recipient and the
/// submitting user become user@$myorigin, in the envelope and in the
/// `From:` added, and mail for this host's own name goes to the relay too.
#[test]
fn a_null_client_sends_everything_to_the_relay_as_its_domain() {
    let remote = Remote::start("127.0.0.2", &[]);
    let inst = instance(&format!(
        "relayhost = [127.0.0.2]:{}\nsmtp_tls_security_level = none\n\
         myhostname = host.example.org\nmyorigin = $mydomain\nmydestination =\n",
        remote.port
    ));
    inst.sendmail(&["root"], b"Subject: to root\n\nfrom cron\n");
    inst.sendmail(&["ann@host.example.org"], b"Subject: to ann\n\nhello\n");
    let got = remote.wait_messages(2, &inst);
    let find = |subject: &str| {
        got.iter()
            .find(|(_, d)| String::from_utf8_lossy(d).contains(subject))
            .unwrap_or_else(|| panic!("no {subject:?} in {got:?}"))
    };
    let (env, data) = find("Subject: to root");
    assert!(
        env.contains("from=root@example.org\n") && env.contains("to=root@example.org\n"),
        "{env}"
    );
    let data = String::from_utf8_lossy(data);
    assert!(data.contains("\r\nFrom: root@example.org\r\n"), "{data}");
    assert!(
        data.contains("Message-ID: <") && data.contains("@host.example.org>"),
        "{data}"
    );
    let (env, _) = find("Subject: to ann");
    assert!(env.contains("to=ann@host.example.org\n"), "{env}");
    assert!(!inst.log().contains("postern/local["), "{}", inst.log());
}

#[test]
fn a_refused_recipient_bounces_alone_and_a_deferred_one_is_retried() {
    let remote = Remote::start(
        "127.0.0.2",
        &[
            "--reject",
            "bad@remote.test",
            "--defer-once",
            "later@remote.test",
        ],
    );
    let inst = instance(&format!("relayhost = [127.0.0.2]:{}\n", remote.port));
    inst.sendmail(
        &[
            "-f",
            "sender@remote.test",
            "good@remote.test",
            "bad@remote.test",
            "later@remote.test",
        ],
        b"Subject: three\n\nhello\n",
    );
    // The message to good, the bounce to the sender (through the relay
    // too), then the retry to later.
    let got = remote.wait_messages(3, &inst);
    let to = |env: &str| {
        env.lines()
            .find_map(|l| l.strip_prefix("to="))
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(to(&got[0].0), "good@remote.test");
    let bounce = got
        .iter()
        .find(|(env, _)| to(env) == "sender@remote.test")
        .expect("a bounce to the sender");
    assert!(bounce.0.contains("from=\n"), "{}", bounce.0);
    let text = String::from_utf8_lossy(&bounce.1);
    assert!(text.contains("bad@remote.test"), "{text}");
    assert!(
        text.contains("550 5.1.1 <bad@remote.test>: Recipient address rejected: User unknown"),
        "{text}"
    );
    assert!(!text.contains("good@remote.test"), "{text}");
    assert!(got.iter().any(|(env, _)| to(env) == "later@remote.test"));
    // The retry's log line follows the server's reply.
    let retried = eventually(WAIT, || {
        log_lines(&inst.log(), "to=<later@remote.test>")
            .iter()
            .any(|l| l.contains("status=sent"))
    });
    assert!(retried, "{}", inst.log());
    let log = inst.log();
    let bad = log_lines(&log, "to=<bad@remote.test>");
    assert!(
        bad[0].contains("dsn=5.1.1, status=bounced (host 127.0.0.2[127.0.0.2] said: 550 5.1.1"),
        "{log}"
    );
    assert!(bad[0].contains("(in reply to RCPT TO command)"), "{log}");
    let later = log_lines(&log, "to=<later@remote.test>");
    assert!(later[0].contains("dsn=4.2.0, status=deferred"), "{log}");
}

#[test]
fn broken_and_silent_servers_defer_and_a_dead_destination_does_not_hold_up_others() {
    let good = Remote::start("127.0.0.2", &[]);
    let dropper = Remote::start("127.0.0.4", &["--drop-data"]);
    let silent = Remote::start("127.0.0.5", &["--silent"]);
    // Nothing listens on 127.0.0.6 at this port.
    let down = postern_tests::free_port();
    let transport = tempfile::tempdir().unwrap();
    let map = transport.path().join("transport");
    std::fs::write(
        &map,
        format!(
            "up.test smtp:[127.0.0.2]:{}\ndrop.test smtp:[127.0.0.4]:{}\n\
             silent.test smtp:[127.0.0.5]:{}\ndown.test smtp:[127.0.0.6]:{down}\n",
            good.port, dropper.port, silent.port
        ),
    )
    .unwrap();
    let inst = instance(&format!(
        "transport_maps = {}\ninitial_destination_concurrency = 1\nminimal_backoff_time = 60s\n\
         maximal_backoff_time = 60s\nsmtp_helo_timeout = 1s\n",
        map.display()
    ));
    inst.sendmail(&["x@drop.test"], b"Subject: dropped\n\nhello\n");
    inst.sendmail(&["x@silent.test"], b"Subject: silent\n\nhello\n");
    inst.sendmail(&["x@down.test"], b"Subject: down\n\nhello\n");
    inst.sendmail(&["x@up.test"], b"Subject: up\n\nhello\n");
    let got = good.wait_messages(1, &inst);
    assert!(got[0].0.contains("to=x@up.test"));
    inst.wait_log("to=<x@drop.test>", 1);
    inst.wait_log("to=<x@silent.test>", 1);
    inst.wait_log("to=<x@down.test>", 1);
    let log = inst.log();
    let dropped = log_lines(&log, "to=<x@drop.test>");
    assert!(
        dropped[0]
            .contains("status=deferred (lost connection with 127.0.0.4[127.0.0.4] while sending"),
        "{log}"
    );
    assert!(dropped[0].contains("dsn=4.4.2"), "{log}");
    assert!(dropper.messages().is_empty());
    let silent_line = log_lines(&log, "to=<x@silent.test>");
    assert!(
        silent_line[0].contains(
            "status=deferred (conversation with 127.0.0.5[127.0.0.5] timed out while receiving the initial server greeting)"
        ),
        "{log}"
    );
    let down_line = log_lines(&log, "to=<x@down.test>");
    assert!(
        down_line[0].contains(&format!(
            "dsn=4.4.1, status=deferred (connect to 127.0.0.6[127.0.0.6]:{down}: Connection refused"
        )),
        "{log}"
    );
    // The failed destination is now dead for minimal_backoff_time: more
    // mail for it is deferred without a connection attempt, while the other
    // destinations go on.
    inst.sendmail(&["y@down.test"], b"Subject: down again\n\nhello\n");
    inst.sendmail(&["y@up.test"], b"Subject: up again\n\nhello\n");
    good.wait_messages(2, &inst);
    inst.wait_log("to=<y@down.test>", 1);
    let log = inst.log();
    let again = log_lines(&log, "to=<y@down.test>");
    assert!(
        again[0].contains("status=deferred (delivery temporarily suspended: connect to 127.0.0.6"),
        "{log}"
    );
    assert!(
        !log_lines(&log, "status=sent")
            .iter()
            .any(|l| l.contains("down.test")),
        "{log}"
    );
}

#[test]
fn concurrency_to_one_destination_stays_within_its_limit() {
    // Each end of data waits a moment at the server, so that deliveries
    // overlap if the queue manager lets them.
    let remote = Remote::start("127.0.0.2", &["--hold", "0.2"]);
    let inst = instance(&format!(
        "relayhost = [127.0.0.2]:{}\ninitial_destination_concurrency = 1\n\
         smtp_destination_concurrency_limit = 2\nsmtp_destination_recipient_limit = 2\n",
        remote.port
    ));
    send_numbered(&inst, 8);
    // One message for three recipients goes in two deliveries (2 + 1).
    inst.sendmail(
        &["a@remote.test", "b@remote.test", "c@remote.test"],
        b"Subject: three\n\nhello\n",
    );
    let got = remote.wait_messages(10, &inst);
    // Deliveries at once, that is; a session kept open between two is not
    // one.
    let max = remote.counter("transactions.max");
    assert!((1..=2).contains(&max), "{max} transactions at once");
    let split: Vec<&str> = got
        .iter()
        .filter_map(|(env, _)| env.lines().find_map(|l| l.strip_prefix("to=")))
        .filter(|to| to.contains("a@") || to.contains("b@") || to.contains("c@"))
        .collect();
    assert_eq!(split.len(), 2, "{split:?}");
    assert!(
        split.iter().all(|to| to.split(',').count() <= 2),
        "{split:?}"
    );
}

/// One smtp process, so that every delivery goes through the same one
/// (and its cached session).
const MASTER_ONE_SMTP: &str = "local unix - n n - - local\n\
                               submit unix n - n - - submit\n\
                               qmgr fifo n - n 300 1 qmgr\n\
                               smtp unix - - n - 1 smtp\n";

/// An instance relaying through `remote` with one smtp process, whose
/// kept session lasts `cache_limit` unused.
fn through_one_smtp_process(remote: &Remote, cache_limit: &str) -> Instance {
    instance_with(
        &format!(
            "relayhost = [127.0.0.2]:{}\nsmtp_connection_cache_time_limit = {cache_limit}\n",
            remote.port
        ),
        MASTER_ONE_SMTP,
    )
}

#[test]
fn deliveries_to_one_relay_reuse_the_session_and_a_stop_ends_it() {
    let remote = Remote::start("127.0.0.2", &[]);
    // A cache time limit far longer than the test: the session stays.
    let mut inst = through_one_smtp_process(&remote, "600s");
    send_numbered(&inst, 4);
    remote.wait_messages(4, &inst);
    inst.wait_log("status=sent", 4);
    assert_eq!(remote.counter("connections"), 1, "{}", inst.log());
    let log = inst.log();
    let sent = log_lines(&log, "status=sent");
    assert!(
        sent.iter().any(|l| l.contains(&format!(
            "relay=127.0.0.2[127.0.0.2]:{}, conn_use=4, delay=",
            remote.port
        ))),
        "{log}"
    );
    assert_eq!(
        sent.iter().filter(|l| !l.contains("conn_use=")).count(),
        1,
        "{log}"
    );
    // The session is still open; a stop closes it with QUIT and does not
    // wait for it.
    assert_eq!(remote.counter("quits"), 0);
    let out = inst.stop(false);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        eventually(WAIT, || remote.counter("quits") == 1),
        "no QUIT at stop:\n{}",
        inst.log()
    );
}

#[test]
fn a_session_with_tls_and_auth_is_reused_without_a_new_handshake() {
    let (certs, remote) = tls_auth_remote();
    let secrets = tempfile::tempdir().unwrap();
    let inst = instance_with(
        &format!(
            "{}smtp_connection_cache_time_limit = 600s\n",
            verified_relay_with_auth(&remote, &certs, secrets.path())
        ),
        MASTER_ONE_SMTP,
    );
    send_numbered(&inst, 3);
    let got = remote.wait_messages(3, &inst);
    inst.wait_log("status=sent", 3);
    // Each message went over TLS, authenticated, on the one connection.
    for (env, _) in &got {
        assert!(env.contains("tls=yes\nuser=ann\n"), "{env}");
    }
    assert_eq!(remote.counter("connections"), 1, "{}", inst.log());
    let log = inst.log();
    assert_eq!(
        log.matches("TLS connection established").count(),
        1,
        "{log}"
    );
    assert!(log.contains("conn_use=3, delay="), "{log}");
}

#[test]
fn a_kept_session_unused_for_the_cache_time_limit_is_closed() {
    let remote = Remote::start("127.0.0.2", &[]);
    let inst = through_one_smtp_process(&remote, "1s");
    inst.sendmail(&["one@remote.test"], b"Subject: one\n\nhello\n");
    inst.wait_log("status=sent", 1);
    // The idle process says QUIT once the limit has passed (max_idle is
    // 100s: the process itself stays).
    assert!(
        eventually(WAIT, || remote.counter("quits") == 1),
        "the kept session was never closed:\n{}",
        inst.log()
    );
    inst.sendmail(&["two@remote.test"], b"Subject: two\n\nhello\n");
    inst.wait_log("status=sent", 2);
    assert_eq!(remote.counter("connections"), 2, "{}", inst.log());
    assert!(!inst.log().contains("conn_use="), "{}", inst.log());
}

#[test]
fn a_request_for_another_next_hop_closes_the_kept_session() {
    let first = Remote::start("127.0.0.2", &[]);
    let second = Remote::start("127.0.0.3", &[]);
    let transport = tempfile::tempdir().unwrap();
    let map = transport.path().join("transport");
    std::fs::write(
        &map,
        format!(
            "first.test smtp:[127.0.0.2]:{}\nsecond.test smtp:[127.0.0.3]:{}\n",
            first.port, second.port
        ),
    )
    .unwrap();
    let inst = instance_with(
        &format!(
            "transport_maps = {}\nsmtp_connection_cache_time_limit = 600s\n",
            map.display()
        ),
        MASTER_ONE_SMTP,
    );
    inst.sendmail(&["x@first.test"], b"Subject: first\n\nhello\n");
    inst.wait_log("status=sent", 1);
    assert_eq!(first.counter("quits"), 0);
    inst.sendmail(&["x@second.test"], b"Subject: second\n\nhello\n");
    inst.wait_log("status=sent", 2);
    assert!(
        eventually(WAIT, || first.counter("quits") == 1),
        "the first relay's session was never closed:\n{}",
        inst.log()
    );
    assert_eq!(second.counter("quits"), 0, "{}", inst.log());
    assert_eq!(second.messages().len(), 1);
}

#[test]
fn a_kept_session_the_server_closed_is_replaced_without_deferring() {
    // "rset": the server closes the session while it waits for the next
    // message; "mail": it is still there, but goes away without a word at
    // the next MAIL FROM.
    for how in ["rset", "mail"] {
        let remote = Remote::start("127.0.0.2", &["--close-idle", how]);
        let inst = through_one_smtp_process(&remote, "600s");
        inst.sendmail(&["one@remote.test"], b"Subject: one\n\nhello\n");
        inst.wait_log("status=sent", 1);
        inst.sendmail(&["two@remote.test"], b"Subject: two\n\nhello\n");
        inst.wait_log("status=sent", 2);
        let log = inst.log();
        assert_eq!(remote.messages().len(), 2, "{how}: {log}");
        assert!(!log.contains("status=deferred"), "{how}: {log}");
        assert!(!log.contains("conn_use="), "{how}: {log}");
        assert_eq!(remote.counter("connections"), 2, "{how}: {log}");
        if how == "mail" {
            assert!(
                log.contains("the cached session with 127.0.0.2[127.0.0.2]:"),
                "{how}: {log}"
            );
        }
    }
}

/// Postfix's smtp-sink, killed on drop.
struct Sink {
    child: Child,
    port: u16,
    dumps: tempfile::TempDir,
}

impl Sink {
    fn start() -> Sink {
        let dumps = tempfile::tempdir().unwrap();
        // smtp-sink drops to nobody, who writes the dumps.
        std::fs::set_permissions(
            dumps.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let port = postern_tests::free_port();
        let child = Command::new("/usr/sbin/smtp-sink")
            .arg("-u")
            .arg("nobody")
            .arg("-d")
            .arg(format!("{}/%H%M%S.", dumps.path().display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("20")
            .stdin(Stdio::null())
            .spawn()
            .expect("/usr/sbin/smtp-sink (Debian's postfix package)");
        let sink = Sink { child, port, dumps };
        // Readiness: it accepts connections.
        let up = eventually(WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", sink.port)).is_ok()
        });
        assert!(up, "smtp-sink never listened on port {}", sink.port);
        sink
    }

    fn dumps(&self) -> Vec<String> {
        std::fs::read_dir(self.dumps.path())
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        // Already gone is fine: the test is over either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn many_messages_reach_postfixs_smtp_sink() {
    let sink = Sink::start();
    let inst = instance(&format!("relayhost = [127.0.0.1]:{}\n", sink.port));
    for i in 0..20 {
        inst.sendmail(
            &[&format!("r{i}@remote.test")],
            format!("Subject: sink {i}\n\nhello {i}\n").as_bytes(),
        );
    }
    // A dump is written as the message arrives (smtp-sink writes LF line
    // ends): wait for all of them whole.
    let has_all = || {
        let dumps = sink.dumps();
        (0..20).all(|i| {
            dumps
                .iter()
                .any(|d| d.contains(&format!("\n\nhello {i}\n")))
        })
    };
    assert!(
        eventually(WAIT, has_all),
        "smtp-sink did not get all 20 messages:\n{}",
        inst.log()
    );
    inst.wait_log("status=sent (250", 20);
    assert!(!inst.log().contains("status=deferred"), "{}", inst.log());
    // pflogsumm reads the smtp agent's lines as Postfix's: 20 delivered,
    // all to remote.test, none deferred.
    let out = postern_tests::run(
        Command::new("pflogsumm")
            .arg("--syslog-name=postern")
            .arg(inst.dir.path().join("maillog")),
    );
    assert_eq!(out.code, Some(0), "{out:?}");
    let report = &out.stdout;
    let delivered = report.lines().find_map(|l| {
        l.trim()
            .strip_suffix("delivered")?
            .trim()
            .parse::<u32>()
            .ok()
    });
    assert_eq!(delivered, Some(20), "{report}\n{}", inst.log());
    let section = report
        .split("Host/Domain Summary: Message Delivery")
        .nth(1)
        .unwrap_or_default();
    let row = section
        .lines()
        .find(|l| l.trim_end().ends_with(" remote.test"))
        .unwrap_or_else(|| panic!("no remote.test row:\n{report}"));
    let fields: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"20"), "{row}\n{report}");
    assert_eq!(fields.get(2), Some(&"0"), "deferrals: {row}\n{report}");
}
