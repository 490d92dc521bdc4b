//! One recipient's copy of a message: the envelope lines local adds
//! (`Return-Path:`, `Delivered-To:`), the mbox `From ` line and quoting, the
//! copy a program gets (as Postfix's local(8) gives it: `From ` line,
//! `Return-Path:`, `X-Original-To:`, `Delivered-To:`, no quoting), and the
//! mail-loop check on existing `Delivered-To:` headers. The message stays
//! in its queue file: every copy is streamed from there by common's one copy
//! routine (`postern_common::mail`), which also does the `>From ` quoting,
//! and an earlier copy in an mbox is looked for by reading it in pieces.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;

use postern_common::mail::{copy_body, for_each_field, from_line, MessageFile, Quoting, CHUNK};

/// A message as local received it, with its envelope.
#[derive(Debug, Clone, Copy)]
pub struct Copy<'a> {
    /// The message (headers and body) as queued, in its queue file.
    pub body: &'a MessageFile,
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

/// How much of a copy's start is read to recognise it (its envelope
/// headers and the message's own `Received:` header are at the top).
pub const HEAD: usize = 64 * 1024;

/// The recipients a message's `Delivered-To:` headers name, lowercased:
/// read once per message, each recipient is then looked up in them.
pub fn delivered_to(message: &MessageFile) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for_each_field(message.reader(), |name, value| {
        if name.eq_ignore_ascii_case("delivered-to") {
            out.push(value.to_ascii_lowercase());
        }
        true
    })?;
    Ok(out)
}

/// Whether `recipient` is among `delivered_to` (from [`delivered_to`]): a
/// mail loop.
pub fn is_loop(delivered_to: &[String], recipient: &str) -> bool {
    let recipient = recipient.to_ascii_lowercase();
    delivered_to.contains(&recipient)
}

/// Where the messages of the mbox `file` (of `len` bytes) start: at 0, and
/// after each newline that a `From ` follows. Read in pieces.
fn message_starts(file: &File, len: u64) -> io::Result<Vec<u64>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let mut starts = vec![0];
    // The last 5 bytes of a piece (a window that ends in the next) are
    // looked at again with the next piece.
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 5);
    let mut pos = 0u64;
    while pos < len {
        let base = pos - buf.len() as u64; // the file offset of buf[0]
        let n = (len - pos).min(CHUNK as u64) as usize;
        let old = buf.len();
        buf.resize(old + n, 0);
        file.read_exact_at(&mut buf[old..], pos)?;
        pos += n as u64;
        for (j, w) in buf.windows(6).enumerate() {
            if w == b"\nFrom " && base + j as u64 >= 1 {
                starts.push(base + j as u64 + 1);
            }
        }
        let seen = buf.len().saturating_sub(5);
        buf.drain(..seen);
    }
    Ok(starts)
}

/// A writer that compares what is written with a file from an offset,
/// up to `left` bytes, and stops (with an error) at the first difference.
struct Compare<'f> {
    file: &'f File,
    pos: u64,
    left: u64,
    matched: u64,
    stopped: bool,
    buf: Vec<u8>,
}

impl Write for Compare<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data
            .len()
            .min(CHUNK)
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if n == 0 && !data.is_empty() {
            self.stopped = true;
            return Err(io::Error::other("compared far enough"));
        }
        self.buf.resize(n, 0);
        self.file.read_exact_at(&mut self.buf, self.pos)?;
        let same = self
            .buf
            .iter()
            .zip(data)
            .take_while(|(a, b)| a == b)
            .count();
        self.matched += same as u64;
        if same < n {
            self.stopped = true;
            return Err(io::Error::other("differs"));
        }
        self.pos += n as u64;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Copy<'_> {
    /// Whether `delivered` (the start of a copy as local wrote it, at its
    /// envelope headers) is this copy: the same `Delivered-To:` recipient
    /// and a `Received:` header naming this queue id. Used only for
    /// uncertain deliveries, to avoid writing a second copy.
    pub fn is_same_delivery(&self, delivered: &[u8]) -> bool {
        if self.queue_id.is_empty() {
            return false;
        }
        let mut first_delivered_to = None;
        let mut ours = false;
        let id = format!(" id {};", self.queue_id);
        let read = for_each_field(delivered, |name, value| {
            if name.eq_ignore_ascii_case("delivered-to") && first_delivered_to.is_none() {
                // Only the first Delivered-To is the one local wrote.
                let to_us = value.eq_ignore_ascii_case(self.recipient);
                first_delivered_to = Some(to_us);
                return to_us;
            }
            if name.eq_ignore_ascii_case("received") && format!(" {value}").contains(&id) {
                ours = true;
            }
            true
        });
        read.is_ok() && first_delivered_to == Some(true) && ours
    }

    /// How many of the first `max` bytes from `at` of `file` are the start
    /// of this copy in mbox format.
    fn mbox_prefix_len(&self, file: &File, at: u64, max: u64) -> io::Result<u64> {
        let mut compare = Compare {
            file,
            pos: at,
            left: max,
            matched: 0,
            stopped: false,
            buf: Vec::new(),
        };
        match self.write_mbox(&mut compare) {
            Ok(_) => Ok(compare.matched),
            Err(_) if compare.stopped => Ok(compare.matched),
            Err(e) => Err(e),
        }
    }

    /// What the mbox `file` (of `len` bytes) holds of this copy, read in
    /// pieces.
    ///
    /// A copy whose envelope headers name this delivery counts as written,
    /// even if a mail reader has since changed it (a `Status:` header). The
    /// exception is the last message of the file when it is a strict prefix
    /// of this copy (at least its `From ` line): a write that a killed
    /// delivery process left unfinished, which must be cut away and written
    /// again, never counted as delivered.
    pub fn in_mbox(&self, file: &File, len: u64) -> io::Result<Earlier> {
        let starts = message_starts(file, len)?;
        let whole = self.mbox_len()?;
        let from_line = self.envelope_from_line().len() as u64;
        for (k, &at) in starts.iter().enumerate() {
            let end = starts.get(k + 1).copied().unwrap_or(len);
            let size = end - at;
            if end == len
                && size >= from_line
                && size < whole
                && self.mbox_prefix_len(file, at, size)? == size
            {
                return Ok(Earlier::Truncated { at });
            }
            let mut head = vec![0u8; size.min(HEAD as u64) as usize];
            file.read_exact_at(&mut head, at)?;
            // Skip the "From " line itself. A copy cut short that others
            // follow (a newline put after it to keep their boundary) is not
            // this delivery made: it is written again.
            if let Some(nl) = head.iter().position(|&b| b == b'\n') {
                if self.is_same_delivery(&head[nl + 1..]) {
                    let mut last = [0u8; 1];
                    file.read_exact_at(&mut last, end - 1)?;
                    let want = size - u64::from(last[0] == b'\n');
                    let cut_short = size < whole && self.mbox_prefix_len(file, at, want)? == want;
                    if !cut_short {
                        return Ok(Earlier::Whole);
                    }
                }
            }
        }
        Ok(Earlier::None)
    }

    /// `Return-Path:` and `Delivered-To:` lines.
    fn envelope_headers(&self) -> Vec<u8> {
        format!(
            "Return-Path: <{}>\nDelivered-To: {}\n",
            self.sender, self.recipient
        )
        .into_bytes()
    }

    /// The mbox `From sender  date` line.
    fn envelope_from_line(&self) -> String {
        from_line(self.sender, self.arrival)
    }

    /// The length of [`Copy::write_mbox`]'s copy.
    pub fn mbox_len(&self) -> io::Result<u64> {
        let body = self.body.quoted()?;
        let newline = u64::from(body.last.is_some_and(|b| b != b'\n'));
        Ok(self.envelope_from_line().len() as u64
            + self.envelope_headers().len() as u64
            + body.bytes
            + newline
            + 1)
    }

    /// Writes the copy in mbox format: `From ` line, envelope headers, the
    /// message with `From ` lines quoted, and an empty line. Returns the
    /// bytes written.
    pub fn write_mbox(&self, out: &mut impl Write) -> io::Result<u64> {
        let from = self.envelope_from_line();
        let envelope = self.envelope_headers();
        out.write_all(from.as_bytes())?;
        out.write_all(&envelope)?;
        let body = copy_body(&mut self.body.reader(), out, Quoting::FromLines)?;
        let end: &[u8] = match body.last {
            Some(b) if b != b'\n' => b"\n\n",
            _ => b"\n",
        };
        out.write_all(end)?;
        Ok(from.len() as u64 + envelope.len() as u64 + body.bytes + end.len() as u64)
    }

    /// The envelope lines a program gets before the message, as Postfix's
    /// local(8) gives a copy to a command (procmail and other mbox writers
    /// rely on the `From ` line): the `From sender  date` line,
    /// `Return-Path: <sender>`, `X-Original-To: original` (when the
    /// original recipient is known), `Delivered-To: recipient`. The message
    /// follows unchanged ([`Quoting::None`]): no `>From ` quoting and no
    /// empty line appended (the program, which writes the mailbox, does
    /// what its format needs).
    pub fn program_envelope(&self, original: Option<&str>) -> Vec<u8> {
        let mut out = self.envelope_from_line().into_bytes();
        out.extend_from_slice(format!("Return-Path: <{}>\n", self.sender).as_bytes());
        if let Some(original) = original {
            out.extend_from_slice(format!("X-Original-To: {original}\n").as_bytes());
        }
        out.extend_from_slice(format!("Delivered-To: {}\n", self.recipient).as_bytes());
        out
    }

    /// Writes the copy for a Maildir file: envelope headers and the
    /// message, unchanged.
    pub fn write_plain(&self, out: &mut impl Write) -> io::Result<()> {
        out.write_all(&self.envelope_headers())?;
        copy_body(&mut self.body.reader(), out, Quoting::None).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message in a file of its own (kept for the test's whole run).
    fn message(body: &[u8]) -> &'static MessageFile {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(body).unwrap();
        Box::leak(Box::new(MessageFile::new(file, 0, None).unwrap()))
    }

    /// The copies as bytes, to compare.
    trait InMemory {
        fn mbox(&self) -> Vec<u8>;
        fn plain(&self) -> Vec<u8>;
        fn for_program(&self, original: Option<&str>) -> Vec<u8>;
        fn is_loop(&self) -> bool;
    }

    impl InMemory for Copy<'_> {
        fn mbox(&self) -> Vec<u8> {
            let mut out = Vec::new();
            let n = self.write_mbox(&mut out).unwrap();
            assert_eq!((n, n), (out.len() as u64, self.mbox_len().unwrap()));
            out
        }
        fn plain(&self) -> Vec<u8> {
            let mut out = Vec::new();
            self.write_plain(&mut out).unwrap();
            out
        }
        fn for_program(&self, original: Option<&str>) -> Vec<u8> {
            let mut out = self.program_envelope(original);
            std::io::Read::read_to_end(&mut self.body.reader(), &mut out).unwrap();
            out
        }
        fn is_loop(&self) -> bool {
            is_loop(&delivered_to(self.body).unwrap(), self.recipient)
        }
    }

    /// [`Copy::in_mbox`] of a mailbox holding `mailbox`.
    fn earlier(c: &Copy<'_>, mailbox: &[u8]) -> Earlier {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(mailbox).unwrap();
        c.in_mbox(&file, mailbox.len() as u64).unwrap()
    }

    fn copy(body: &[u8]) -> Copy<'static> {
        Copy {
            body: message(body),
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
        assert_eq!(earlier(&c, &mbox), Earlier::Whole);
        let mut two = copy(b"Subject: other\n\nFrom x\n").mbox();
        two.extend_from_slice(&mbox);
        assert_eq!(earlier(&c, &two), Earlier::Whole);
        assert_eq!(
            earlier(&c, &copy(b"Subject: other\n\n").mbox()),
            Earlier::None
        );
        assert_eq!(earlier(&c, b""), Earlier::None);
        let other_rcpt = Copy {
            recipient: "carol@example.org",
            ..c
        };
        assert_eq!(earlier(&other_rcpt, &mbox), Earlier::None);
        let other_id = Copy {
            queue_id: "Q2",
            ..c
        };
        assert_eq!(earlier(&other_id, &mbox), Earlier::None);
        assert!(c.is_same_delivery(&c.plain()));
        // A reader that added a Status: header does not make it a new copy.
        let text = String::from_utf8(mbox.clone()).unwrap();
        let read = text.replace("Subject: x\n", "Subject: x\nStatus: RO\n");
        assert_eq!(earlier(&c, read.as_bytes()), Earlier::Whole);
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
                earlier(&c, &text),
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
        assert_eq!(earlier(&c, &patched), Earlier::None);
        // Once another message follows it, it is not the last: the headers
        // decide (here: complete enough to name the delivery).
        before.extend_from_slice(&whole[..whole.len() - 3]);
        before.extend_from_slice(b"\n\n");
        before.extend_from_slice(&copy(b"Subject: later\n\n").mbox());
        assert_eq!(earlier(&c, &before), Earlier::Whole);
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
