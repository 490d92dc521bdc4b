//! Mail formatting shared by the delivery agents, streamed so that memory
//! does not grow with the message:
//!
//! - [`MessageFile`]: a message as a section of the queue file whose
//!   descriptor came with the handoff, read in place with `pread` (each
//!   reader keeps its own offset, so every recipient reads it afresh and
//!   nothing is held in memory);
//! - [`copy_body`]: the one copy routine every writer uses — mbox (with
//!   `>From ` quoting), Maildir and a program's standard input (unchanged,
//!   or quoted for pipe's `flags=>`);
//! - [`for_each_field`]: the one header parser (unfolded fields up to the
//!   first empty line, read in bounded pieces).
//!
//! The quoting and the header scan are written here rather than taken from
//! a crate: the mail-parsing crates read the whole message into memory,
//! which is what this module exists to avoid.

use std::borrow::Borrow;
use std::cell::Cell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;

/// The size of the pieces a message is read and written in.
pub const CHUNK: usize = 64 * 1024;

/// The most of one header field's value [`for_each_field`] keeps; the rest
/// of a longer field is read past.
pub const FIELD_LIMIT: usize = 64 * 1024;

/// A message: `len` bytes from `offset` of an open file.
#[derive(Debug)]
pub struct MessageFile {
    file: File,
    offset: u64,
    len: u64,
    /// The body's length once quoted for an mbox, and its last byte
    /// (computed once, by [`MessageFile::quoted`]).
    quoted: Cell<Option<Copied>>,
}

impl MessageFile {
    /// The message of `size` bytes (or to the end of the file) from
    /// `offset` of `file`, which must be a regular file that holds it.
    pub fn new(file: File, offset: u64, size: Option<u64>) -> io::Result<Self> {
        let md = file.metadata()?;
        if !md.is_file() {
            return Err(io::Error::other(
                "the attached descriptor is not a regular file",
            ));
        }
        let available = md.len().saturating_sub(offset);
        let len = size.unwrap_or(available);
        if len > available {
            return Err(io::Error::other(format!(
                "the request names {len} bytes at offset {offset}, the file holds {available}"
            )));
        }
        Ok(MessageFile {
            file,
            offset,
            len,
            quoted: Cell::new(None),
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A reader from its first byte, with an offset of its own.
    pub fn reader(&self) -> Section<&File> {
        Section {
            file: &self.file,
            pos: self.offset,
            end: self.offset + self.len,
        }
    }

    /// An owned reader from its first byte (on a duplicate of the
    /// descriptor), for another thread.
    pub fn owned_reader(&self) -> io::Result<Section<File>> {
        Ok(Section {
            file: self.file.try_clone()?,
            pos: self.offset,
            end: self.offset + self.len,
        })
    }

    /// Its first `max` bytes (or all of it, if shorter).
    pub fn head(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut head = Vec::new();
        self.reader().take(max as u64).read_to_end(&mut head)?;
        Ok(head)
    }

    /// What [`copy_body`] with [`Quoting::FromLines`] writes for it: read
    /// once (the same for every recipient), then remembered.
    pub fn quoted(&self) -> io::Result<Copied> {
        if let Some(c) = self.quoted.get() {
            return Ok(c);
        }
        let c = copy_body(&mut self.reader(), &mut io::sink(), Quoting::FromLines)?;
        self.quoted.set(Some(c));
        Ok(c)
    }
}

/// A reader of a file section by `pread`, with its own offset.
#[derive(Debug)]
pub struct Section<F> {
    file: F,
    pos: u64,
    end: u64,
}

impl<F: Borrow<File>> Read for Section<F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let got = self.file.borrow().read_at(&mut buf[..want], self.pos)?;
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the message file ended before the message did",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
}

/// How [`copy_body`] writes the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// Unchanged (Maildir, a program's input).
    None,
    /// A line that starts with `From ` gets a `>` in front (mbox).
    FromLines,
}

/// What [`copy_body`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Bytes written.
    pub bytes: u64,
    /// The last byte written, if any.
    pub last: Option<u8>,
}

const FROM: &[u8; 5] = b"From ";

/// Copies `src` to `out` in pieces of [`CHUNK`] bytes, quoting as
/// `quoting` says; the one copy routine of every writer of a message.
pub fn copy_body(
    src: &mut impl Read,
    out: &mut impl Write,
    quoting: Quoting,
) -> io::Result<Copied> {
    let mut buf = vec![0u8; CHUNK];
    let mut copied = Copied {
        bytes: 0,
        last: None,
    };
    // Quoting state, across pieces: at the start of a line, and how much of
    // "From " has been matched there (held back until it is decided).
    let mut line_start = true;
    let mut pending = 0usize;
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let piece = &buf[..n];
        copied.last = Some(piece[n - 1]);
        if quoting == Quoting::None {
            out.write_all(piece)?;
            copied.bytes += n as u64;
            continue;
        }
        let mut run = 0; // piece[run..i] is written as it is
        let mut i = 0;
        while i < n {
            let b = piece[i];
            if line_start || pending > 0 {
                if b == FROM[pending] {
                    if pending == 0 {
                        out.write_all(&piece[run..i])?;
                    }
                    pending += 1;
                    i += 1;
                    if pending == FROM.len() {
                        out.write_all(b">From ")?;
                        copied.bytes += 1;
                        pending = 0;
                        line_start = false;
                        run = i;
                    }
                    continue;
                }
                if pending > 0 {
                    out.write_all(&FROM[..pending])?;
                    pending = 0;
                    run = i;
                }
                line_start = false;
            }
            match piece[i..].iter().position(|&c| c == b'\n') {
                Some(nl) => {
                    i += nl + 1;
                    line_start = true;
                }
                None => i = n,
            }
        }
        if pending == 0 {
            out.write_all(&piece[run..])?;
        }
        copied.bytes += n as u64;
    }
    if pending > 0 {
        out.write_all(&FROM[..pending])?;
    }
    Ok(copied)
}

/// The mbox `From sender  date` line (with its newline) that starts a copy
/// in an mbox or a program's input: `MAILER-DAEMON` for the null sender,
/// the arrival time in `asctime` form (UTC).
pub fn from_line(sender: &str, arrival: u64) -> String {
    let sender = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    format!("From {sender}  {}\n", crate::log::asctime(arrival))
}

/// Reads one line into `line` (without its `\n`, and without a `\r`
/// before it), keeping at most `max` bytes of it; `false` at the end of
/// the input.
fn read_line_bounded(r: &mut impl BufRead, line: &mut Vec<u8>, max: usize) -> io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let (used, done) = {
            let buf = match r.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if buf.is_empty() {
                break;
            }
            any = true;
            let (used, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(nl) => (nl + 1, true),
                None => (buf.len(), false),
            };
            let text = &buf[..if done { used - 1 } else { used }];
            let room = max.saturating_sub(line.len());
            line.extend_from_slice(&text[..text.len().min(room)]);
            (used, done)
        };
        r.consume(used);
        if done {
            break;
        }
    }
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(any)
}

/// Calls `each(name, value)` for each header field of the message read
/// from `message`, up to the first empty line: continuation lines joined to
/// their field by one space, the name and value trimmed, text decoded
/// leniently, at most [`FIELD_LIMIT`] bytes of a value kept. A line without
/// a colon is not a field. Stops when `each` returns `false`.
pub fn for_each_field(message: impl Read, each: impl FnMut(&str, &str) -> bool) -> io::Result<()> {
    for_each_field_up_to(message, FIELD_LIMIT, each)
}

/// As [`for_each_field`], keeping at most `limit` bytes of a field (for a
/// header block already in memory, whose fields are all wanted whole).
pub fn for_each_field_up_to(
    message: impl Read,
    limit: usize,
    mut each: impl FnMut(&str, &str) -> bool,
) -> io::Result<()> {
    let mut r = BufReader::with_capacity(CHUNK, message);
    let mut line = Vec::new();
    let mut field: Vec<u8> = Vec::new();
    let emit = |field: &[u8], each: &mut dyn FnMut(&str, &str) -> bool| -> bool {
        let text = String::from_utf8_lossy(field);
        match text.split_once(':') {
            Some((name, value)) => each(name.trim(), value.trim()),
            None => true,
        }
    };
    while read_line_bounded(&mut r, &mut line, limit)? {
        if line.is_empty() {
            break;
        }
        if line.starts_with(b" ") || line.starts_with(b"\t") {
            if !field.is_empty() && field.len() < limit {
                let rest = line.trim_ascii_start();
                field.push(b' ');
                field.extend_from_slice(&rest[..rest.len().min(limit - field.len())]);
            }
            continue;
        }
        if !field.is_empty() && !emit(&field, &mut each) {
            return Ok(());
        }
        field.clear();
        field.extend_from_slice(&line);
    }
    if !field.is_empty() {
        emit(&field, &mut each);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out one byte at a time: every piece boundary.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((&b, rest)), Some(slot)) => {
                    *slot = b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    fn quoted(input: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let c = copy_body(&mut &input[..], &mut out, Quoting::FromLines).unwrap();
        let mut out2 = Vec::new();
        let c2 = copy_body(&mut Trickle(input), &mut out2, Quoting::FromLines).unwrap();
        let mut out3 = b"prefix".to_vec();
        copy_body(&mut &input[..], &mut out3, Quoting::FromLines).unwrap();
        assert_eq!(&out3[6..], out.as_slice());
        assert_eq!(out, out2, "the same across piece boundaries");
        assert_eq!((c, c2.bytes), (c2, out.len() as u64));
        assert_eq!(c.last, input.last().copied());
        out
    }

    #[test]
    fn from_lines_are_quoted_wherever_the_pieces_break() {
        assert_eq!(quoted(b""), b"");
        assert_eq!(quoted(b"From a\n"), b">From a\n");
        assert_eq!(
            quoted(b"x\nFrom here\n>From there\nnot From\nFrom"),
            b"x\n>From here\n>From there\nnot From\nFrom"
        );
        assert_eq!(quoted(b"Fro\nFromX\nFrom \n"), b"Fro\nFromX\n>From \n");
        assert_eq!(quoted(b"FFrom a\n\nFrom b"), b"FFrom a\n\n>From b");
        let mut out = Vec::new();
        let c = copy_body(&mut &b"From x\n"[..], &mut out, Quoting::None).unwrap();
        assert_eq!((out.as_slice(), c.bytes), (&b"From x\n"[..], 7));
    }

    #[test]
    fn the_from_line() {
        assert_eq!(from_line("a@b", 0), "From a@b  Thu Jan  1 00:00:00 1970\n");
        assert!(from_line("", 0).starts_with("From MAILER-DAEMON  Thu"));
    }

    #[test]
    fn a_large_message_is_copied_through_a_file_in_pieces() {
        let mut file = tempfile::tempfile().unwrap();
        let mut text = b"ENVELOPE".to_vec();
        for i in 0..20_000 {
            text.extend_from_slice(format!("From line {i}\nbody {i}\n").as_bytes());
        }
        file.write_all(&text).unwrap();
        let message = MessageFile::new(file, 8, None).unwrap();
        assert_eq!(message.len(), text.len() as u64 - 8);
        let mut out = Vec::new();
        let c = copy_body(&mut message.reader(), &mut out, Quoting::FromLines).unwrap();
        assert_eq!(c, message.quoted().unwrap());
        assert_eq!(out.len(), text.len() - 8 + 20_000);
        assert!(out.starts_with(b">From line 0\nbody 0\n>From line 1\n"));
        let mut all = Vec::new();
        message.reader().read_to_end(&mut all).unwrap();
        assert_eq!(all, &text[8..]);
        assert_eq!(message.head(5).unwrap(), b"From ");
        let short = MessageFile::new(tempfile::tempfile().unwrap(), 0, Some(1));
        assert!(short.unwrap_err().to_string().contains("the file holds 0"));
    }

    fn fields(text: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for_each_field(text, |n, v| {
            out.push((n.to_string(), v.to_string()));
            true
        })
        .unwrap();
        out
    }

    #[test]
    fn header_fields_are_unfolded_up_to_the_empty_line() {
        let f = fields(b"Subject: a\n  b\r\nTo:\n\tx@y\nnot a field\nX: 1\n\nBody: no\n");
        let f: Vec<(&str, &str)> = f.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        assert_eq!(f, [("Subject", "a b"), ("To", "x@y"), ("X", "1")], "{f:?}");
        assert_eq!(fields(b"A: 1\r\n\r\nB: 2\n").len(), 1);
        assert_eq!(fields(b"").len(), 0);
        let long = [
            b"Long: ".to_vec(),
            vec![b'x'; FIELD_LIMIT * 3],
            b"\nNext: y\n".to_vec(),
        ];
        let f = fields(&long.concat());
        assert_eq!(f.len(), 2);
        assert!(f[0].1.len() <= FIELD_LIMIT);
        assert_eq!(f[1], ("Next".to_string(), "y".to_string()));
        let mut seen = 0;
        for_each_field(&b"A: 1\nB: 2\n"[..], |_, _| {
            seen += 1;
            false
        })
        .unwrap();
        assert_eq!(seen, 1);
    }
}
