//! One recipient's copy of a message: the envelope lines local adds
//! (`Return-Path:`, `Delivered-To:`), the mbox `From ` line and quoting, the
//! copy a program gets (as Postfix's local(8) gives it: `From ` line,
//! `Return-Path:`, `X-Original-To:`, `Delivered-To:`, no quoting), and the
//! mail-loop check on existing `Delivered-To:` headers.

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

/// What an mbox holds of a copy an earlier attempt may have written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earlier {
    /// Nothing of it.
    None,
    /// The copy, whole (or changed by a mail reader since).
    Whole,
    /// The start of the copy, cut short, at this offset up to the end of
    /// the file.
    Truncated {
        /// Where the unfinished copy starts.
        at: u64,
    },
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

    /// What the mbox text `mailbox` holds of this copy.
    ///
    /// A copy whose envelope headers name this delivery counts as written,
    /// even if a mail reader has since changed it (a `Status:` header). The
    /// exception is the last message of the file when it is a strict prefix
    /// of this copy (at least its `From ` line): a write that a killed
    /// delivery process left unfinished, which must be cut away and written
    /// again, never counted as delivered.
    pub fn in_mbox(&self, mailbox: &[u8]) -> Earlier {
        let whole = self.mbox();
        let from_line = whole.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        let mut at = 0usize;
        while at < mailbox.len() {
            let rest = &mailbox[at..];
            let next = rest
                .windows(6)
                .skip(1)
                .position(|w| w == b"\nFrom ")
                .map_or(rest.len(), |i| i + 2);
            let message = &rest[..next];
            let last = at + next == mailbox.len();
            if last
                && message.len() >= from_line
                && message.len() < whole.len()
                && whole.starts_with(message)
            {
                return Earlier::Truncated { at: at as u64 };
            }
            // Skip the "From " line itself. A copy cut short that others
            // follow (a newline put after it to keep their boundary) is not
            // this delivery made: it is written again.
            if let Some(nl) = message.iter().position(|&b| b == b'\n') {
                let cut_short = message.len() < whole.len()
                    && whole.starts_with(message.strip_suffix(b"\n").unwrap_or(message));
                if self.is_same_delivery(&message[nl + 1..]) && !cut_short {
                    return Earlier::Whole;
                }
            }
            at += next;
        }
        Earlier::None
    }

    /// `Return-Path:` and `Delivered-To:` lines.
    fn envelope_headers(&self) -> Vec<u8> {
        format!(
            "Return-Path: <{}>\nDelivered-To: {}\n",
            self.sender, self.recipient
        )
        .into_bytes()
    }

    /// The mbox `From sender  date` line (`MAILER-DAEMON` for the null
    /// sender; the arrival time).
    fn envelope_from_line(&self) -> String {
        let sender = if self.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            self.sender
        };
        format!("From {sender}  {}\n", asctime(self.arrival))
    }

    /// The copy in mbox format: `From ` line, envelope headers, the message
    /// with `From ` lines quoted, and an empty line.
    pub fn mbox(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(self.envelope_from_line().as_bytes());
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

    /// The copy for a program, as Postfix's local(8) gives one to a command
    /// (procmail and other mbox writers rely on the `From ` line): the
    /// `From sender  date` line, `Return-Path: <sender>`, `X-Original-To:
    /// original` (when the original recipient is known), `Delivered-To:
    /// recipient`, then the message unchanged: no `>From ` quoting and no
    /// empty line appended (the program, which writes the mailbox, does
    /// what its format needs).
    pub fn for_program(&self, original: Option<&str>) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 256);
        out.extend_from_slice(self.envelope_from_line().as_bytes());
        out.extend_from_slice(format!("Return-Path: <{}>\n", self.sender).as_bytes());
        if let Some(original) = original {
            out.extend_from_slice(format!("X-Original-To: {original}\n").as_bytes());
        }
        out.extend_from_slice(format!("Delivered-To: {}\n", self.recipient).as_bytes());
        out.extend_from_slice(self.body);
        out
    }

    /// The copy for a Maildir file: envelope headers and the message,
    /// unchanged.
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
        assert_eq!(c.in_mbox(&mbox), Earlier::Whole);
        let mut two = copy(b"Subject: other\n\nFrom x\n").mbox();
        two.extend_from_slice(&mbox);
        assert_eq!(c.in_mbox(&two), Earlier::Whole);
        assert_eq!(
            c.in_mbox(&copy(b"Subject: other\n\n").mbox()),
            Earlier::None
        );
        assert_eq!(c.in_mbox(b""), Earlier::None);
        let other_rcpt = Copy {
            recipient: "carol@example.org",
            ..c
        };
        assert_eq!(other_rcpt.in_mbox(&mbox), Earlier::None);
        let other_id = Copy {
            queue_id: "Q2",
            ..c
        };
        assert_eq!(other_id.in_mbox(&mbox), Earlier::None);
        assert!(c.is_same_delivery(&c.plain()));
        // A reader that added a Status: header does not make it a new copy.
        let text = String::from_utf8(mbox.clone()).unwrap();
        let read = text.replace("Subject: x\n", "Subject: x\nStatus: RO\n");
        assert_eq!(c.in_mbox(read.as_bytes()), Earlier::Whole);
    }

    #[test]
    fn an_unfinished_copy_at_the_end_is_never_delivered() {
        let c = copy(b"Received: by h (postern)\n\tid Q1; Sat\nSubject: x\n\nbody\nmore\n");
        let whole = c.mbox();
        let mut before = copy(b"Subject: other\n\nx\n").mbox();
        let start = before.len() as u64;
        let from_line = whole.iter().position(|&b| b == b'\n').unwrap() + 1;
        // Cut anywhere from the end of its From line to one byte short.
        for cut in from_line..whole.len() {
            let mut text = before.clone();
            text.extend_from_slice(&whole[..cut]);
            assert_eq!(
                c.in_mbox(&text),
                Earlier::Truncated { at: start },
                "cut at {cut}"
            );
        }
        // Cut short with a newline put after it, and another message after
        // that: not made, so written again.
        let mut patched = copy(b"Subject: other\n\nx\n").mbox();
        patched.extend_from_slice(&whole[..whole.len() - 7]);
        patched.push(b'\n');
        patched.extend_from_slice(&copy(b"Subject: later\n\n").mbox());
        assert_eq!(c.in_mbox(&patched), Earlier::None);
        // Once another message follows it, it is not the last: the headers
        // decide (here: complete enough to name the delivery).
        before.extend_from_slice(&whole[..whole.len() - 3]);
        before.extend_from_slice(b"\n\n");
        before.extend_from_slice(&copy(b"Subject: later\n\n").mbox());
        assert_eq!(c.in_mbox(&before), Earlier::Whole);
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
    fn a_program_gets_the_envelope_postfix_gives_it() {
        let c = copy(b"Subject: x\n\nFrom here\nbody");
        let text = String::from_utf8(c.for_program(Some("list@example.org"))).unwrap();
        assert_eq!(
            text,
            "From ann@example.org  Sat Nov 21 07:14:56 2026\nReturn-Path: <ann@example.org>\n\
             X-Original-To: list@example.org\nDelivered-To: bob@example.org\n\
             Subject: x\n\nFrom here\nbody"
        );
        let null = Copy {
            sender: "",
            ..copy(b"x\n")
        };
        assert_eq!(
            String::from_utf8(null.for_program(None)).unwrap(),
            "From MAILER-DAEMON  Sat Nov 21 07:14:56 2026\nReturn-Path: <>\nDelivered-To: bob@example.org\nx\n"
        );
    }

    #[test]
    fn loops_are_found_in_headers_only() {
        assert!(copy(b"Delivered-To: BOB@example.org\nSubject: x\n\nbody\n").is_loop());
        assert!(copy(b"delivered-to:\n  bob@example.org\n\nbody\n").is_loop());
        assert!(!copy(b"Subject: x\n\nDelivered-To: bob@example.org\n").is_loop());
        assert!(!copy(b"Delivered-To: carol@example.org\n\n").is_loop());
    }
}
