//! One client of the master's control socket, served without blocking.
//!
//! The master never waits for a client of any socket: each control
//! connection is non-blocking, registered on the master's event loop with
//! its own buffers, and closed at a short deadline ([`DEADLINE`]) whether or
//! not it has said anything, so an idle or slow client never delays forking,
//! status records or reaping. At most [`MAX_CLIENTS`] are served at once;
//! more are closed at once with a log line. A request is one line of at
//! most [`MAX_REQUEST`] bytes (end-of-file also ends it); anything the
//! master does not understand gets an `error: ...` line, and the connection
//! is closed after every reply.

use std::io::{ErrorKind, Read, Write};
use std::time::{Duration, Instant};

/// How long a client has to send its request and take the reply.
pub const DEADLINE: Duration = Duration::from_secs(2);
/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 256;
/// Control connections served at once.
pub const MAX_CLIENTS: usize = 32;

/// What the bytes a client has sent so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// No complete line yet: wait for more.
    Incomplete,
    /// The client closed without sending anything.
    Empty,
    /// One request line, trimmed.
    Line(String),
    /// [`MAX_REQUEST`] bytes without a newline.
    TooLong,
}

/// Parses a request from `buf`; `eof` when the client has closed its side.
pub fn parse(buf: &[u8], eof: bool) -> Parsed {
    let line = match buf.iter().position(|&b| b == b'\n') {
        Some(end) if end < MAX_REQUEST => &buf[..end],
        None if buf.len() < MAX_REQUEST && !eof => return Parsed::Incomplete,
        None if buf.len() < MAX_REQUEST && buf.is_empty() => return Parsed::Empty,
        None if buf.len() < MAX_REQUEST => buf,
        _ => return Parsed::TooLong,
    };
    Parsed::Line(String::from_utf8_lossy(line).trim().to_string())
}

/// A request the master understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `status`: the human table.
    Status,
    /// `status json`: a [`Snapshot`] as one JSON line.
    StatusJson,
    /// `reload` (everything) or `reload SERVICE` (recycle one): the reply
    /// is `ok: ...` or `error: why the running configuration was kept`.
    Reload(Option<String>),
}

impl Request {
    /// Parses a request line.
    pub fn parse(line: &str) -> Option<Request> {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["status"] => Some(Request::Status),
            ["status", "json"] => Some(Request::StatusJson),
            ["reload"] => Some(Request::Reload(None)),
            ["reload", service] => Some(Request::Reload(Some((*service).to_string()))),
            _ => None,
        }
    }
}

/// The reply to a request: `answer` for a known one; anything else an error.
pub fn reply(parsed: &Parsed, answer: impl FnOnce(&Request) -> String) -> Option<String> {
    match parsed {
        Parsed::Incomplete | Parsed::Empty => None,
        Parsed::Line(l) => match Request::parse(l) {
            Some(r) => Some(answer(&r)),
            None => Some(format!(
                "error: unknown request '{}' (known: status, status json, reload [SERVICE])\n",
                l.escape_default()
            )),
        },
        Parsed::TooLong => Some(format!("error: request longer than {MAX_REQUEST} bytes\n")),
    }
}

/// `postern status --json`: the master, its services and the queue.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// The master.
    pub master: MasterSnapshot,
    /// Every service, in master.cf order.
    pub services: Vec<ServiceSnapshot>,
    /// The queue (filled in by `postern status`, which reads the queue
    /// directory; the master does not look at the queue).
    pub queue: Option<crate::queue_health::QueueHealth>,
}

/// The master process.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MasterSnapshot {
    /// Its pid.
    pub pid: u32,
    /// Seconds since it started.
    pub uptime_seconds: u64,
    /// Which configuration it runs.
    pub configuration: String,
    /// Whether it is stopping.
    pub stopping: bool,
    /// Children of removed or recycled services still finishing a request.
    pub retired_children: usize,
}

/// One service.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ServiceSnapshot {
    /// master.cf's name.
    pub name: String,
    /// inet, unix, fifo.
    pub kind: String,
    /// Where it listens.
    pub endpoints: Vec<String>,
    /// Its process limit (none: unlimited).
    pub maxproc: Option<u32>,
    /// listening, throttled, at process limit, idle child waiting.
    pub state: String,
    /// Set while the service is throttled.
    pub throttled: Option<Throttle>,
    /// Its children.
    pub children: Vec<ChildSnapshot>,
}

/// Why and until when a service is throttled.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Throttle {
    /// Seconds until it serves again.
    pub seconds_left: u64,
    /// When it serves again (UTC).
    pub until: String,
    /// The failing child's exit and its own fatal message.
    pub reason: String,
}

/// One child.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChildSnapshot {
    /// Its pid.
    pub pid: i32,
    /// starting, idle, busy.
    pub state: String,
    /// Requests taken.
    pub uses: u32,
    /// Seconds since it was started.
    pub age_seconds: u64,
}

/// The human table of `postern status`.
pub fn human(s: &Snapshot) -> String {
    let m = &s.master;
    let mut out = format!(
        "master: pid {}, up {}s, {}{}\n",
        m.pid,
        m.uptime_seconds,
        m.configuration,
        if m.stopping { ", stopping" } else { "" }
    );
    out.push_str(&format!(
        "{:<24} {:<5} {:<28} {:>7} {:>8}  state\n",
        "service", "type", "endpoint", "maxproc", "children"
    ));
    for svc in &s.services {
        let maxproc = svc
            .maxproc
            .map_or("unlimited".to_string(), |l| l.to_string());
        let state = match &svc.throttled {
            Some(t) => format!("throttled for {}s: {}", t.seconds_left, t.reason),
            None => svc.state.clone(),
        };
        out.push_str(&format!(
            "{:<24} {:<5} {:<28} {:>7} {:>8}  {state}\n",
            svc.name,
            svc.kind,
            svc.endpoints.join(","),
            maxproc,
            svc.children.len()
        ));
        for c in &svc.children {
            out.push_str(&format!(
                "    pid {} {}, {} use(s), age {}s\n",
                c.pid, c.state, c.uses, c.age_seconds
            ));
        }
    }
    if m.retired_children > 0 {
        out.push_str(&format!(
            "retired children finishing their request: {}\n",
            m.retired_children
        ));
    }
    out
}

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

    #[test]
    fn requests_are_one_bounded_line() {
        assert_eq!(parse(b"", false), Parsed::Incomplete);
        assert_eq!(parse(b"sta", false), Parsed::Incomplete);
        assert_eq!(parse(b"", true), Parsed::Empty);
        assert_eq!(parse(b"status\n", false), Parsed::Line("status".into()));
        assert_eq!(
            parse(b" status \r\nmore", false),
            Parsed::Line("status".into())
        );
        // End-of-file ends a request without a newline.
        assert_eq!(parse(b"status", true), Parsed::Line("status".into()));
        assert_eq!(parse(&[b'x'; MAX_REQUEST], false), Parsed::TooLong);
        let mut long = vec![b'x'; MAX_REQUEST];
        long.push(b'\n');
        assert_eq!(parse(&long, false), Parsed::TooLong);
        assert_eq!(
            parse(b"\xff\xfe\n", false),
            Parsed::Line("\u{fffd}\u{fffd}".into())
        );
    }

    #[test]
    fn replies() {
        let status = |r: &Request| format!("{r:?}\n");
        assert_eq!(reply(&Parsed::Incomplete, status), None);
        assert_eq!(reply(&Parsed::Empty, status), None);
        assert_eq!(
            reply(&Parsed::Line("status".into()), status).as_deref(),
            Some("Status\n")
        );
        assert_eq!(
            reply(&Parsed::Line("status json".into()), status).as_deref(),
            Some("StatusJson\n")
        );
        assert_eq!(
            reply(&Parsed::Line("reload echo".into()), status).as_deref(),
            Some("Reload(Some(\"echo\"))\n")
        );
        assert_eq!(
            reply(&Parsed::Line("reload".into()), status).as_deref(),
            Some("Reload(None)\n")
        );
        let e = reply(&Parsed::Line("hello\u{1b}".into()), status).unwrap();
        assert_eq!(
            e,
            "error: unknown request 'hello\\u{1b}' (known: status, status json, reload [SERVICE])\n"
        );
        assert!(reply(&Parsed::TooLong, status)
            .unwrap()
            .starts_with("error: request longer than"));
    }

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
