//! Delivery status notifications (RFC 3464): the `multipart/report` a
//! sender gets for recipients that failed, and the notice the postmaster
//! gets for failures that need an administrator (program delivery, a bounce
//! that could not be returned).

use postern_common::log::rfc5322_date;

/// One failed recipient, for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedRecipient {
    /// The address as submitted.
    pub original: String,
    /// Where it was going (`user|destination`).
    pub delivery: String,
    /// Enhanced status code.
    pub dsn: String,
    /// Why.
    pub reason: String,
}

/// What a report is about.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// This machine's name.
    pub host: &'a str,
    /// The failed message's queue id.
    pub queue_id: &'a str,
    /// Its envelope sender.
    pub sender: &'a str,
    /// Its arrival time.
    pub arrival: u64,
    /// Its header block.
    pub headers: &'a [u8],
    /// The failures.
    pub failures: &'a [FailedRecipient],
    /// Now.
    pub now: u64,
}

/// Who a notification is for, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The sender of the failed message.
    Sender,
    /// The postmaster (a copy for the administrator).
    Postmaster,
}

/// The notification text (headers and body), addressed to `to`.
pub fn compose(report: &Report<'_>, to: &str, audience: Audience, new_id: &str) -> Vec<u8> {
    let boundary = format!("{}.{}/{}", report.queue_id, new_id, report.host);
    let subject = match audience {
        Audience::Sender => "Undelivered Mail Returned to Sender",
        Audience::Postmaster => "Postmaster Copy: Undelivered Mail",
    };
    let mut m = String::new();
    m.push_str(&format!(
        "From: MAILER-DAEMON@{host} (Mail Delivery System)\nTo: {to}\nSubject: {subject}\nDate: {date}\nMessage-ID: <{new_id}@{host}>\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status;\n\tboundary=\"{boundary}\"\n\n",
        host = report.host,
        date = rfc5322_date(report.now),
    ));
    m.push_str("This is a MIME-encapsulated message.\n\n");
    m.push_str(&format!(
        "--{boundary}\nContent-Description: Notification\nContent-Type: text/plain; charset=utf-8\n\n"
    ));
    m.push_str(&format!(
        "This is the mail system at host {}.\n\nI'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients. It's attached below.\n\n",
        report.host
    ));
    if audience == Audience::Postmaster {
        m.push_str(&format!(
            "(A copy for the postmaster: the message from <{}>, queue id {}.)\n\n",
            report.sender, report.queue_id
        ));
    }
    for f in report.failures {
        m.push_str(&format!("<{}>: {} {}\n", f.original, f.dsn, f.reason));
    }
    m.push('\n');
    m.push_str(&format!(
        "--{boundary}\nContent-Description: Delivery report\nContent-Type: message/delivery-status\n\n"
    ));
    m.push_str(&format!(
        "Reporting-MTA: dns; {}\nX-Postern-Queue-ID: {}\nX-Postern-Sender: rfc822; {}\nArrival-Date: {}\n",
        report.host,
        report.queue_id,
        report.sender,
        rfc5322_date(report.arrival)
    ));
    for f in report.failures {
        m.push_str(&format!(
            "\nFinal-Recipient: rfc822; {}\nOriginal-Recipient: rfc822;{}\nAction: failed\nStatus: {}\nDiagnostic-Code: X-Postern; {}\n",
            f.original,
            f.original,
            f.dsn,
            one_line(&format!("{} (delivery {})", f.reason, f.delivery))
        ));
    }
    m.push('\n');
    m.push_str(&format!(
        "--{boundary}\nContent-Description: Undelivered Message Headers\nContent-Type: text/rfc822-headers\n\n"
    ));
    let mut out = m.into_bytes();
    out.extend_from_slice(report.headers);
    if !report.headers.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.extend_from_slice(format!("\n--{boundary}--\n").as_bytes());
    out
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The header block of a message (up to the empty line, or all of it).
pub fn header_block(message: &[u8]) -> &[u8] {
    message
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(message, |i| &message[..=i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_shape() {
        let failures = [FailedRecipient {
            original: "nosuch@localhost".into(),
            delivery: "nosuch@localhost|bounce".into(),
            dsn: "5.1.1".into(),
            reason: "unknown user: \"nosuch\"\nsecond line".into(),
        }];
        let r = Report {
            host: "h.test",
            queue_id: "Q1",
            sender: "ann@h.test",
            arrival: 0,
            headers: b"Subject: hi\nFrom: ann@h.test\n",
            failures: &failures,
            now: 60,
        };
        let text = String::from_utf8(compose(&r, "ann@h.test", Audience::Sender, "Q2")).unwrap();
        assert!(text.contains("Content-Type: multipart/report; report-type=delivery-status;"));
        assert!(text.contains("\nStatus: 5.1.1\n"));
        assert!(text.contains("Final-Recipient: rfc822; nosuch@localhost\n"));
        assert!(text.contains("Diagnostic-Code: X-Postern; unknown user: \"nosuch\" second line"));
        assert!(text.contains("\nSubject: hi\n"));
        assert!(text.ends_with("--Q1.Q2/h.test--\n"));
        assert_eq!(header_block(b"A: b\n\nbody"), b"A: b\n");
    }
}
