//! End to end, as root: the smtp agent against next hops that break the
//! protocol on purpose (`tests/smtp_server.py --hostile MODE`), one domain
//! each, routed by `transport_maps`: a reply line of megabytes, `250-`
//! forever, a reply dripped a line at a time past the time limit,
//! thousands of EHLO extensions, NUL and invalid UTF-8 in a
//! reply, codes out of range or changing within a reply, 250 to DATA, a
//! 250 for the end of data sent with the 354 (before the dot), an
//! unsolicited reply after the greeting. Each ends as it must — deferred
//! with the host and what went wrong, bounced only on a real 5xx, sent
//! only when the server accepted the data after the dot — and mail to a
//! good server still goes, before and after.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use postern_tests::remote::Remote;
use postern_tests::Instance;

const MASTER: &str = "local unix - n n - - local\n\
                      submit unix n - n - - submit\n\
                      qmgr fifo n - n 300 1 qmgr\n\
                      smtp unix - - n - - smtp\n";

/// Each mode, and what its delivery's log line must say.
const CASES: &[(&str, &str)] = &[
    (
        "longline",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while receiving the initial server greeting: malformed reply: reply line longer than 4096 bytes)",
    ),
    (
        "endless",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while performing the EHLO handshake: malformed reply: reply longer than 262144 bytes)",
    ),
    (
        "drip",
        "dsn=4.4.2, status=deferred (conversation with 127.0.0.3[127.0.0.3] timed out while performing the EHLO handshake)",
    ),
    ("manyext", "dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as T1)"),
    (
        "garbage",
        "dsn=5.1.1, status=bounced (host 127.0.0.3[127.0.0.3] said: 550 5.1.1 bad????news (in reply to RCPT TO command))",
    ),
    (
        "code000",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while sending MAIL FROM: malformed reply: reply code 0 out of range)",
    ),
    (
        "code999",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while sending MAIL FROM: malformed reply: reply code 999 out of range)",
    ),
    (
        "code2x0",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while sending MAIL FROM: malformed reply: malformed reply line \"2x0 2.1.0 Ok\")",
    ),
    (
        "mixed",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while sending MAIL FROM: malformed reply: reply lines with different codes)",
    ),
    (
        "data250",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while sending DATA: 250 2.0.0 Ok in reply to DATA command, not 354)",
    ),
    (
        "liar",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while sending message body: unexpected reply before the message body: \"250 2.0.0 Ok: queued as LIE??\")",
    ),
    (
        "early",
        "dsn=4.5.0, status=deferred (protocol error with 127.0.0.3[127.0.0.3] while performing the EHLO handshake: unexpected reply before EHLO: \"250 2.0.0 unsolicited??\")",
    ),
];

#[test]
fn hostile_servers_end_in_clear_outcomes_and_good_mail_still_goes() {
    let good = Remote::start("127.0.0.2", &[]);
    let hostile: Vec<Remote> = CASES
        .iter()
        .map(|(mode, _)| Remote::start("127.0.0.3", &["--hostile", mode]))
        .collect();
    let transport = tempfile::tempdir().unwrap();
    let map = transport.path().join("transport");
    let mut routes = format!("good.test smtp:[127.0.0.2]:{}\n", good.port);
    for ((mode, _), remote) in CASES.iter().zip(&hostile) {
        routes.push_str(&format!("{mode}.test smtp:[127.0.0.3]:{}\n", remote.port));
    }
    std::fs::write(&map, routes).unwrap();
    let mut inst = Instance::new(
        &format!(
            "default_transport = smtp\nsmtp_tls_security_level = may\n\
             transport_maps = {}\nminimal_backoff_time = 60s\nmaximal_backoff_time = 60s\n\
             queue_run_delay = 60s\nsmtp_helo_timeout = 3s\nsmtp_connect_timeout = 3s\n",
            map.display()
        ),
        MASTER,
    );
    inst.start();
    inst.sendmail(&["x@good.test"], b"Subject: before\n\nhello\n");
    good.wait_messages(1, &inst);
    for (mode, _) in CASES {
        inst.sendmail(
            &["-f", "root@localhost", &format!("x@{mode}.test")],
            format!("Subject: {mode}\n\nhello\n").as_bytes(),
        );
    }
    for (mode, _) in CASES {
        inst.wait_log(&format!("to=<x@{mode}.test>"), 1);
    }
    inst.sendmail(&["y@good.test"], b"Subject: after\n\nhello\n");
    good.wait_messages(2, &inst);
    let log = inst.log();
    for ((mode, want), remote) in CASES.iter().zip(&hostile) {
        let needle = format!("to=<x@{mode}.test>");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
        assert_eq!(lines.len(), 1, "{mode}:\n{log}");
        assert!(lines[0].contains(want), "{mode}: want {want}\n{log}");
        assert!(
            lines[0].contains(&format!("relay=127.0.0.3[127.0.0.3]:{}", remote.port)),
            "{mode}:\n{log}"
        );
        // Only the well-behaved one got the message.
        let got = remote.messages().len();
        assert_eq!(got, usize::from(*mode == "manyext"), "{mode}:\n{log}");
    }
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("fatal"), "{log}");
}

#[test]
fn plaintext_garbage_after_starttls_defers_when_tls_is_required() {
    // 220 to STARTTLS, then plaintext instead of a handshake.
    let remote = Remote::start("127.0.0.3", &["--tls-broken"]);
    let mut inst = Instance::new(
        &format!(
            "default_transport = smtp\nsmtp_tls_security_level = encrypt\n\
             relayhost = [127.0.0.3]:{}\nminimal_backoff_time = 60s\n\
             maximal_backoff_time = 60s\nqueue_run_delay = 60s\nsmtp_helo_timeout = 3s\n",
            remote.port
        ),
        MASTER,
    );
    inst.start();
    inst.sendmail(&["x@tls.test"], b"Subject: tls\n\nhello\n");
    inst.wait_log("to=<x@tls.test>", 1);
    let log = inst.log();
    let line = log.lines().find(|l| l.contains("to=<x@tls.test>")).unwrap();
    // Whether the garbage came with the 220 or after it, TLS is refused.
    assert!(
        line.contains("dsn=4.7.5, status=deferred (")
            && line.contains("127.0.0.3[127.0.0.3]")
            && (line.contains("plaintext after the STARTTLS reply")
                || line.contains("Cannot start TLS: handshake failure")),
        "{log}"
    );
    assert!(remote.messages().is_empty());
}
