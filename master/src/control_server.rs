//! One client of the master's control socket, served without blocking.
//!
//! The master never waits for a client of any socket: each control
//! connection is non-blocking, registered on the master's event loop with
//! its own buffers, and closed at a short deadline ([`DEADLINE`]) whether or
//! not it has said anything, so an idle or slow client never delays forking,
//! status records or reaping. At most [`MAX_CLIENTS`] are served at once;
//! more are closed at once with a log line. What a request and its reply
//! look like is the protocol, in `postern_common::control`; the connection
//! is closed after every reply.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

use postern_common::control::{parse, Parsed, MAX_REQUEST};

/// How long a client has to send its request and take the reply.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// Control connections served at once.
pub const MAX_CLIENTS: usize = 32;

/// A connection being served.
#[derive(Debug)]
pub struct Client {
    stream: mio::net::UnixStream,
    request: Vec<u8>,
    reply: Option<Vec<u8>>,
    written: usize,
    /// When the master closes it, finished or not.
    pub deadline: Instant,
    /// The peer's pid (`SO_PEERCRED`), for the log.
    pub peer_pid: Option<i32>,
}

impl Client {
    /// A newly accepted (non-blocking) connection.
    pub fn new(stream: mio::net::UnixStream, now: Instant) -> Self {
        Client {
            stream,
            request: Vec::new(),
            reply: None,
            written: 0,
            deadline: now + DEADLINE,
            peer_pid: None,
        }
    }

    /// The stream, to register on the event loop.
    pub fn stream(&mut self) -> &mut mio::net::UnixStream {
        &mut self.stream
    }

    /// Reads and writes what can be without blocking. `answer` makes the
    /// reply once the request is complete. Returns true when the
    /// connection is finished (replied, closed by the peer, or failed).
    pub fn progress(&mut self, answer: impl FnOnce(&Parsed) -> Option<String>) -> bool {
        if self.reply.is_none() {
            let mut eof = false;
            let mut buf = [0u8; MAX_REQUEST];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        self.request.extend_from_slice(&buf[..n]);
                        if self.request.len() >= MAX_REQUEST || buf[..n].contains(&b'\n') {
                            break;
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(_) => return true,
                }
            }
            let parsed = parse(&self.request, eof);
            if parsed == Parsed::Incomplete {
                return false;
            }
            match answer(&parsed) {
                Some(text) => self.reply = Some(text.into_bytes()),
                None => return true,
            }
        }
        let Some(reply) = &self.reply else {
            return true;
        };
        while self.written < reply.len() {
            match self.stream.write(&reply[self.written..]) {
                Ok(0) => return true,
                Ok(n) => self.written += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return true,
            }
        }
        self.discard_unread();
        true
    }

    /// Reads away (a bounded amount of) what the client sent beyond its
    /// request: closing a unix socket with unread data resets the
    /// connection, and the client would lose the reply.
    fn discard_unread(&mut self) {
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match self.stream.read(&mut buf) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_common::control::reply;

    #[test]
    fn a_client_is_served_without_blocking() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        theirs.set_nonblocking(true).unwrap();
        let mut c = Client::new(mio::net::UnixStream::from_std(theirs), Instant::now());
        // Nothing sent yet: not finished, and it did not wait.
        assert!(!c.progress(|p| reply(p, |_| String::new())));
        (&ours).write_all(b"stat").unwrap();
        assert!(!c.progress(|p| reply(p, |_| String::new())));
        (&ours).write_all(b"us\n").unwrap();
        assert!(c.progress(|p| reply(p, |_| "up\n".into())));
        drop(c);
        let mut out = String::new();
        (&ours).read_to_string(&mut out).unwrap();
        assert_eq!(out, "up\n");
    }
}
