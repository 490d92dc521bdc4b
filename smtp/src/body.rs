//! The message body on the wire: read from the queue file's descriptor in
//! chunks (memory does not grow with the message), line ends made CRLF,
//! lines starting with `.` doubled (RFC 5321 4.5.2), and the final
//! `CRLF.CRLF`.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

/// Bytes read from the queue file at a time.
const CHUNK: usize = 64 * 1024;

/// The SMTP encoding of a byte stream, fed chunk by chunk.
#[derive(Debug, Clone)]
pub struct Encoder {
    at_line_start: bool,
    last_cr: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            at_line_start: true,
            last_cr: false,
        }
    }
}

impl Encoder {
    /// Appends the encoding of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        for &b in input {
            if self.at_line_start && b == b'.' {
                out.push(b'.');
            }
            if b == b'\n' && !self.last_cr {
                out.push(b'\r');
            }
            out.push(b);
            self.at_line_start = b == b'\n';
            self.last_cr = b == b'\r';
        }
    }

    /// The end of the data: a line end if the message lacks its last one,
    /// then `.CRLF`.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.extend_from_slice(if self.last_cr { b"\n" } else { b"\r\n" });
        }
        out.extend_from_slice(b".\r\n");
    }
}

/// Whether the message has bytes above 127 (it then goes with
/// `BODY=8BITMIME` when the server offers it).
pub fn is_8bit(fd: &OwnedFd, offset: u64, size: u64) -> std::io::Result<bool> {
    let file = std::fs::File::from(fd.try_clone()?);
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < size {
        let want = usize::try_from((size - done).min(CHUNK as u64)).unwrap_or(CHUNK);
        let n = file.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|&b| b >= 0x80) {
            return Ok(true);
        }
        done += n as u64;
    }
    Ok(false)
}

/// Why the body could not be sent.
#[derive(Debug)]
pub enum SendError {
    /// Reading the queue file failed (ours, not the server's fault).
    Read(std::io::Error),
    /// Writing to the server failed.
    Write(std::io::Error),
}

/// Streams `size` bytes from `offset` of `fd`, encoded, to `to`, with the
/// final dot; `size` `None`: to the end of the file. The queue file
/// shrinking under us is a read error.
pub fn send(
    fd: &OwnedFd,
    offset: u64,
    size: Option<u64>,
    to: &mut impl Write,
) -> Result<(), SendError> {
    let end = send_body(fd, offset, size, to)?;
    to.write_all(&end).map_err(SendError::Write)?;
    to.flush().map_err(SendError::Write)
}

/// As [`send`], but without the end of the data: returns it (with a
/// known `size`, the last piece of the text too; the last line end if
/// missing; then `.CRLF`), for the caller to send in one write once it
/// checked the server said nothing meanwhile.
pub fn send_body(
    fd: &OwnedFd,
    offset: u64,
    size: Option<u64>,
    to: &mut impl Write,
) -> Result<Vec<u8>, SendError> {
    let file = std::fs::File::from(fd.try_clone().map_err(SendError::Read)?);
    let mut buf = vec![0u8; CHUNK];
    let mut out = Vec::with_capacity(CHUNK + CHUNK / 8);
    let mut enc = Encoder::default();
    let mut done = 0u64;
    loop {
        let want = match size {
            Some(s) if done >= s => break,
            Some(s) => usize::try_from((s - done).min(CHUNK as u64)).unwrap_or(CHUNK),
            None => CHUNK,
        };
        let n = file
            .read_at(&mut buf[..want], offset + done)
            .map_err(SendError::Read)?;
        if n == 0 {
            if size.is_some() {
                return Err(SendError::Read(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the queue file is shorter than its message",
                )));
            }
            break;
        }
        done += n as u64;
        out.clear();
        enc.feed(&buf[..n], &mut out);
        if size.is_some_and(|s| done >= s) {
            // The last piece of the text is returned with the final dot, for
            // the caller to send in one write: a small write of its own
            // would wait for the acknowledgement of the previous one
            // (Nagle's algorithm against the server's delayed ACK: some
            // 40 ms per message on Linux).
            to.flush().map_err(SendError::Write)?;
            enc.finish(&mut out);
            return Ok(out);
        }
        to.write_all(&out).map_err(SendError::Write)?;
    }
    to.flush().map_err(SendError::Write)?;
    out.clear();
    enc.finish(&mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(chunks: &[&[u8]]) -> Vec<u8> {
        let mut e = Encoder::default();
        let mut out = Vec::new();
        for c in chunks {
            e.feed(c, &mut out);
        }
        e.finish(&mut out);
        out
    }

    #[test]
    fn line_ends_dots_and_the_end() {
        assert_eq!(encode(&[b"a\nb\n"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(encode(&[b"a\r\nb"]), b"a\r\nb\r\n.\r\n");
        assert_eq!(encode(&[b".x\n..\n.\n"]), b"..x\r\n...\r\n..\r\n.\r\n");
        assert_eq!(encode(&[b"a.b\n"]), b"a.b\r\n.\r\n");
        assert_eq!(encode(&[b""]), b".\r\n");
        // Chunk boundaries change nothing.
        assert_eq!(encode(&[b"a\r", b"\n.", b"b"]), b"a\r\n..b\r\n.\r\n");
        assert_eq!(encode(&[b"a\r"]), b"a\r\n.\r\n");
    }

    #[test]
    fn streams_a_slice_of_a_file() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"ENVELOPE\nhello\n.dot\n\xe9t\xe9\n").unwrap();
        let fd = OwnedFd::from(f);
        let mut out = Vec::new();
        send(&fd, 9, Some(11), &mut out).unwrap();
        assert_eq!(out, b"hello\r\n..dot\r\n.\r\n");
        assert!(!is_8bit(&fd, 9, 11).unwrap());
        assert!(is_8bit(&fd, 9, 16).unwrap());
        assert!(matches!(
            send(&fd, 9, Some(100), &mut Vec::new()),
            Err(SendError::Read(_))
        ));
    }

    /// Records each write apart.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_final_dot_goes_with_the_end_of_the_text() {
        let mut f = tempfile::tempfile().unwrap();
        let text = vec![b'x'; CHUNK + 10];
        f.write_all(&text).unwrap();
        let fd = OwnedFd::from(f);
        let mut small = Writes::default();
        send(&fd, 0, Some(10), &mut small).unwrap();
        assert_eq!(small.0, vec![b"xxxxxxxxxx\r\n.\r\n".to_vec()]);
        let mut large = Writes::default();
        send(&fd, 0, Some(text.len() as u64), &mut large).unwrap();
        assert_eq!(large.0.len(), 2);
        assert!(large.0[1].ends_with(b"xx\r\n.\r\n"));
    }
}
