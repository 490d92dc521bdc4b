//! The one frame codec of postern's own channels: the queue↔agent handoff
//! ([`crate::handoff`]), showq and submit (queue crate) and the report of
//! local's delivery process to its agent.
//!
//! A frame is a 4-byte big-endian length ([`prefix`]), then that many bytes;
//! a typed frame's bytes are a postcard payload that starts with its
//! channel's version ([`encode`], [`decode`], [`version_of`]). Every read
//! ([`read`]) checks the length against the caller's maximum (at most
//! [`MAX_FRAME`]) before anything is allocated, and every error names the
//! peer it came from. [`Deadline`] bounds the reads of a whole frame in time.
//!
//! Not this codec: the master↔child status record (`status.rs`), which is
//! Postfix's native-endian layout, a foreign format.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use serde::{de::DeserializeOwned, Serialize};

/// The length prefix's size in bytes.
pub const PREFIX: usize = 4;
/// The largest frame any channel accepts (payload bytes).
pub const MAX_FRAME: u32 = 1 << 20;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection inside a frame (or before it).
    #[error("{peer} ended mid-frame")]
    Cut {
        /// Who sent it.
        peer: String,
    },
    /// Reading from the peer failed (including timeouts).
    #[error("{peer}: {source}")]
    Io {
        /// Who was read.
        peer: String,
        /// What failed.
        source: io::Error,
    },
    /// A length over the reader's maximum.
    #[error("frame of {len} bytes exceeds the limit of {max} (from {peer})")]
    Oversize {
        /// Who sent it.
        peer: String,
        /// The length it announced.
        len: u32,
        /// The reader's maximum.
        max: u32,
    },
    /// A payload that does not decode.
    #[error("malformed frame from {peer}: {reason}")]
    Malformed {
        /// Who sent it.
        peer: String,
        /// The decoder's complaint.
        reason: String,
    },
    /// A value of ours that does not fit in a frame (never sent).
    #[error("a frame of {0} bytes to send exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// A value of ours that does not encode.
    #[error("cannot encode a frame: {0}")]
    Unencodable(String),
}

/// The length prefix of a frame of `len` bytes.
pub fn prefix(len: u32) -> [u8; PREFIX] {
    len.to_be_bytes()
}

/// One frame: the length prefix and the postcard payload of `value`.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0u8; PREFIX];
    frame =
        postcard::to_extend(value, frame).map_err(|e| FrameError::Unencodable(e.to_string()))?;
    let len = frame.len() - PREFIX;
    match u32::try_from(len) {
        Ok(n) if n <= MAX_FRAME => {
            frame[..PREFIX].copy_from_slice(&prefix(n));
            Ok(frame)
        }
        _ => Err(FrameError::TooLarge(len)),
    }
}

/// Encodes `value` and writes the frame to `peer`.
pub fn send<T: Serialize>(w: &mut impl Write, value: &T, peer: &str) -> Result<(), FrameError> {
    w.write_all(&encode(value)?)
        .map_err(|source| FrameError::Io {
            peer: peer.to_string(),
            source,
        })
}

/// Decodes a postcard payload from `peer`.
pub fn decode<T: DeserializeOwned>(payload: &[u8], peer: &str) -> Result<T, FrameError> {
    postcard::from_bytes(payload).map_err(|e| FrameError::Malformed {
        peer: peer.to_string(),
        reason: e.to_string(),
    })
}

/// The version a payload from `peer` starts with (every version of every
/// channel's frames starts with it), to refuse another version by name
/// rather than misread it.
pub fn version_of(payload: &[u8], peer: &str) -> Result<u16, FrameError> {
    postcard::take_from_bytes::<u16>(payload)
        .map(|(v, _)| v)
        .map_err(|e| FrameError::Malformed {
            peer: peer.to_string(),
            reason: e.to_string(),
        })
}

/// Fills `buf` from `peer`; an end of input is [`FrameError::Cut`].
pub fn read_exact(r: &mut impl Read, buf: &mut [u8], peer: &str) -> Result<(), FrameError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => FrameError::Cut {
            peer: peer.to_string(),
        },
        _ => FrameError::Io {
            peer: peer.to_string(),
            source: e,
        },
    })
}

/// Reads one length prefix from `peer`.
pub fn read_length(r: &mut impl Read, peer: &str) -> Result<u32, FrameError> {
    let mut header = [0u8; PREFIX];
    read_exact(r, &mut header, peer)?;
    Ok(u32::from_be_bytes(header))
}

/// Reads one frame's payload of at most `max` bytes (checked before
/// anything is allocated) from `peer`. `first` holds bytes of the frame
/// already read (e.g. by `recvmsg` with its descriptors).
pub fn read(r: &mut impl Read, first: &[u8], max: u32, peer: &str) -> Result<Vec<u8>, FrameError> {
    let mut header = [0u8; PREFIX];
    let from_first = first.len().min(PREFIX);
    header[..from_first].copy_from_slice(&first[..from_first]);
    read_exact(r, &mut header[from_first..], peer)?;
    let len = u32::from_be_bytes(header);
    let max = max.min(MAX_FRAME);
    if len > max {
        return Err(FrameError::Oversize {
            peer: peer.to_string(),
            len,
            max,
        });
    }
    let len = len as usize;
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&first[from_first..first.len().min(PREFIX + len)]);
    let have = payload.len();
    payload.resize(len, 0);
    read_exact(r, &mut payload[have..], peer)?;
    Ok(payload)
}

/// A reader whose reads all end by one deadline: a slow or silent peer
/// gets [`io::ErrorKind::TimedOut`]. While it waits, `check` runs at least
/// once every `every`; an error of its ends the read (local: a delivery
/// process found stopped gets no more time).
pub struct Deadline<R, F> {
    inner: R,
    deadline: Instant,
    every: Duration,
    check: F,
}

impl<R, F> std::fmt::Debug for Deadline<R, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deadline")
            .field("deadline", &self.deadline)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl<R: Read + AsFd, F: FnMut() -> io::Result<()>> Deadline<R, F> {
    /// Reads from `inner` until `deadline`, running `check` every `every`.
    pub fn new(inner: R, deadline: Instant, every: Duration, check: F) -> Self {
        Deadline {
            inner,
            deadline,
            every,
            check,
        }
    }
}

impl<R: Read + AsFd> Deadline<R, fn() -> io::Result<()>> {
    /// Reads from `inner` until `deadline`.
    pub fn until(inner: R, deadline: Instant) -> Self {
        Deadline::new(inner, deadline, Duration::MAX, || Ok(()))
    }
}

impl<R: Read + AsFd, F: FnMut() -> io::Result<()>> Read for Deadline<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let now = Instant::now();
            if now >= self.deadline {
                return Err(io::ErrorKind::TimedOut.into());
            }
            let slice = now.checked_add(self.every).unwrap_or(self.deadline);
            if postern_sys::wait::readable_by(self.inner.as_fd(), self.deadline.min(slice)) {
                match self.inner.read(buf) {
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                        ) => {}
                    other => return other,
                }
            } else {
                (self.check)()?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_or_without_bytes_read_before() {
        let value = (7u16, String::from("payload"), vec![1u32, 2, 3]);
        let frame = encode(&value).unwrap();
        assert_eq!(&frame[..PREFIX], &prefix((frame.len() - PREFIX) as u32));
        for split in [0, 2, 4, 7, frame.len()] {
            let payload = read(&mut &frame[split..], &frame[..split], MAX_FRAME, "p").unwrap();
            assert_eq!(
                decode::<(u16, String, Vec<u32>)>(&payload, "p").unwrap(),
                value
            );
            assert_eq!(version_of(&payload, "p").unwrap(), 7);
        }
    }

    #[test]
    fn lengths_are_big_endian_and_bounded_before_allocation() {
        assert_eq!(prefix(0x0102_0304), [1, 2, 3, 4]);
        let e = read(&mut &[0u8, 0, 0, 65][..], &[], 64, "the client").unwrap_err();
        assert_eq!(
            e.to_string(),
            "frame of 65 bytes exceeds the limit of 64 (from the client)"
        );
        // No caller's maximum goes beyond MAX_FRAME.
        let huge = prefix(MAX_FRAME + 1);
        assert!(matches!(
            read(&mut &huge[..], &[], u32::MAX, "p"),
            Err(FrameError::Oversize { max: MAX_FRAME, .. })
        ));
        assert!(matches!(
            encode(&vec![0u8; MAX_FRAME as usize]),
            Err(FrameError::TooLarge(_))
        ));
    }

    #[test]
    fn errors_name_the_peer() {
        for cut in [&[][..], &[0u8, 0][..], &[0, 0, 0, 9, 1, 2][..]] {
            let e = read(&mut &cut[..], &[], MAX_FRAME, "delivery process 12").unwrap_err();
            assert_eq!(e.to_string(), "delivery process 12 ended mid-frame");
        }
        let e = decode::<(u16, String)>(&[1, 9, b'a'], "uid 5 pid 6").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("malformed frame from uid 5 pid 6: "),
            "{e}"
        );
    }

    #[test]
    fn a_deadline_ends_a_silent_peer_and_checks_run_while_waiting() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let start = Instant::now();
        let mut r = Deadline::until(&b, start + Duration::from_millis(50));
        let e = read(&mut r, &[], MAX_FRAME, "p").unwrap_err();
        assert!(
            matches!(&e, FrameError::Io { source, .. } if source.kind() == io::ErrorKind::TimedOut),
            "{e}"
        );
        let mut checked = 0;
        let mut r = Deadline::new(
            &b,
            Instant::now() + Duration::from_secs(3600),
            Duration::from_millis(1),
            || {
                checked += 1;
                if checked == 3 {
                    Err(io::Error::other("stopped"))
                } else {
                    Ok(())
                }
            },
        );
        let e = read(&mut r, &[], MAX_FRAME, "p").unwrap_err();
        assert_eq!(e.to_string(), "p: stopped");
        // Data within the deadline is read whole.
        let frame = encode(&1u16).unwrap();
        std::io::Write::write_all(&mut &a, &frame).unwrap();
        let mut r = Deadline::until(&b, Instant::now() + Duration::from_secs(3600));
        assert_eq!(read(&mut r, &[], MAX_FRAME, "p").unwrap(), vec![1]);
    }
}
