//! One recipient's copy of a message: the envelope lines local adds
//! (`Return-Path:`, `Delivered-To:`), the mbox `From ` line and quoting, and
//! the mail-loop check on existing `Delivered-To:` headers.

use postern_common::log::asctime;

/// A message as local received it, with its envelope.
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    /// The message (headers and body) as queued.
    pub body: &'a [u8],
    /// The envelope sender ("" for the null sender).
    pub sender: &'a str,
    /// The recipient address.
    pub recipient: &'a str,
    /// Arrival time, seconds since the epoch.
    pub arrival: u64,
    /// The queue id (named in the message's own `Received:` header).
    pub queue_id: &'a str,
    /// An earlier attempt may already have delivered this copy.
    pub uncertain: bool,
}

/// The unfolded header lines of `message` (up to the first empty line).
fn unfolded_headers(message: &[u8]) -> Vec<String> {
    let end = message
        .windows(2)
        .position(|w| w == b"\n\n")
        .map_or(message.len(), |i| i + 1);
    let headers = String::from_utf8_lossy(&message[..end]);
    let mut unfolded: Vec<String> = Vec::new();
    for line in headers.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = unfolded.last_mut() {
                last.push(' ');
                last.push_str(line.trim_start());
            }
        } else {
            unfolded.push(line.to_string());
        }
    }
    unfolded
}

/// The recipients a message's `Delivered-To:` headers name, lowercased:
/// read once per message, each recipient is then looked up in them.
pub fn delivered_to(message: &[u8]) -> Vec<String> {
    unfolded_headers(message)
        .iter()
        .filter_map(|h| {
            h.split_once(':')
                .filter(|(name, _)| name.trim().eq_ignore_ascii_case("delivered-to"))
                .map(|(_, value)| value.trim().to_ascii_lowercase())
        })
        .collect()
}

/// Whether `recipient` is among `delivered_to` (from [`delivered_to`]): a
/// mail loop.
pub fn is_loop(delivered_to: &[String], recipient: &str) -> bool {
    let recipient = recipient.to_ascii_lowercase();
    delivered_to.contains(&recipient)
}

impl Copy<'_> {
    /// Whether the message already carries `Delivered-To: <recipient>`: a loop.
    /// (local reads the headers once per message: [`delivered_to`].)
    #[cfg(test)]
    pub fn is_loop(&self) -> bool {
        is_loop(&delivered_to(self.body), self.recipient)
    }

    /// Whether `delivered` (a copy as local wrote it, starting at its
    /// envelope headers) is this copy: the same `Delivered-To:` recipient
    /// and a `Received:` header naming this queue id. Used only for
    /// uncertain deliveries, to avoid writing a second copy.
    pub fn is_same_delivery(&self, delivered: &[u8]) -> bool {
        if self.queue_id.is_empty() {
            return false;
        }
        let headers = unfolded_headers(delivered);
        let mut to_us = false;
        let mut ours = false;
        for h in &headers {
            let Some((name, value)) = h.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.eq_ignore_ascii_case("delivered-to") && !to_us {
                // Only the first Delivered-To is the one local wrote.
                to_us = value.trim().eq_ignore_ascii_case(self.recipient);
                if !to_us {
                    return false;
                }
            } else if name.eq_ignore_ascii_case("received")
                && value.contains(&format!(" id {};", self.queue_id))
            {
                ours = true;
            }
        }
        to_us && ours
    }

    /// Whether the mbox text `mailbox` already holds this copy.
    pub fn in_mbox(&self, mailbox: &[u8]) -> bool {
        let mut at = 0usize;
        while at < mailbox.len() {
            let rest = &mailbox[at..];
            let next = rest
                .windows(6)
                .skip(1)
                .position(|w| w == b"\nFrom ")
                .map_or(rest.len(), |i| i + 2);
            let message = &rest[..next];
            // Skip the "From " line itself.
            if let Some(nl) = message.iter().position(|&b| b == b'\n') {
                if self.is_same_delivery(&message[nl + 1..]) {
                    return true;
                }
            }
            at += next;
        }
        false
    }

    /// `Return-Path:` and `Delivered-To:` lines.
    fn envelope_headers(&self) -> Vec<u8> {
        format!(
            "Return-Path: <{}>\nDelivered-To: {}\n",
            self.sender, self.recipient
        )
        .into_bytes()
    }

    /// The copy in mbox format: `From ` line, envelope headers, the message
    /// with `From ` lines quoted, and an empty line.
    pub fn mbox(&self) -> Vec<u8> {
        let sender = if self.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            self.sender
        };
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(format!("From {sender}  {}\n", asctime(self.arrival)).as_bytes());
        out.extend_from_slice(&self.envelope_headers());
        let mut at_line_start = true;
        for (i, &b) in self.body.iter().enumerate() {
            if at_line_start && self.body[i..].starts_with(b"From ") {
                out.push(b'>');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !self.body.is_empty() && !self.body.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }

    /// The copy for a Maildir file or a program: envelope headers and the
    /// message, unchanged.
    pub fn plain(&self) -> Vec<u8> {
        let mut out = self.envelope_headers();
        out.extend_from_slice(self.body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(body: &'static [u8]) -> Copy<'static> {
        Copy {
            body,
            sender: "ann@example.org",
            recipient: "bob@example.org",
            arrival: 1_795_245_296,
            queue_id: "Q1",
            uncertain: true,
        }
    }

    #[test]
    fn earlier_copies_are_recognised() {
        let c = copy(b"Received: by h (postern)\n\tid Q1; Sat\nSubject: x\n\nbody\n");
        let mbox = c.mbox();
        assert!(c.in_mbox(&mbox));
        let mut two = copy(b"Subject: other\n\nFrom x\n").mbox();
        two.extend_from_slice(&mbox);
        assert!(c.in_mbox(&two));
        assert!(!c.in_mbox(&copy(b"Subject: other\n\n").mbox()));
        let other_rcpt = Copy {
            recipient: "carol@example.org",
            ..c
        };
        assert!(!other_rcpt.in_mbox(&mbox));
        let other_id = Copy {
            queue_id: "Q2",
            ..c
        };
        assert!(!other_id.in_mbox(&mbox));
        assert!(c.is_same_delivery(&c.plain()));
    }

    #[test]
    fn from_line_and_quoting() {
        let c = copy(b"Subject: x\n\nFrom here\n>From there\nnot From\nFrom");
        let text = String::from_utf8(c.mbox()).unwrap();
        assert_eq!(
            text,
            "From ann@example.org  Sat Nov 21 07:14:56 2026\nReturn-Path: <ann@example.org>\nDelivered-To: bob@example.org\n\
             Subject: x\n\n>From here\n>From there\nnot From\nFrom\n\n"
        );
        let null = Copy {
            sender: "",
            ..copy(b"x\n")
        };
        assert!(String::from_utf8(null.mbox())
            .unwrap()
            .starts_with("From MAILER-DAEMON  "));
    }

    #[test]
    fn loops_are_found_in_headers_only() {
        assert!(copy(b"Delivered-To: BOB@example.org\nSubject: x\n\nbody\n").is_loop());
        assert!(copy(b"delivered-to:\n  bob@example.org\n\nbody\n").is_loop());
        assert!(!copy(b"Subject: x\n\nDelivered-To: bob@example.org\n").is_loop());
        assert!(!copy(b"Delivered-To: carol@example.org\n\n").is_loop());
    }
}
