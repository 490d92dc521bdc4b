//! The master's control protocol: what `postern` (reload, status) and the
//! master say to each other over the root-only control socket
//! (`data_directory/master/master.control`, see [`crate::instance`]).
//!
//! Version: none; one request per connection. A request is one line of at
//! most [`MAX_REQUEST`] bytes (end-of-file also ends it): `status`,
//! `status json`, `reload` or `reload SERVICE` ([`Request`]). The reply is
//! text, after which the master closes the connection: for `status` the
//! human table ([`human`]), for `status json` one JSON line (a
//! [`Snapshot`]), for `reload` `ok: ...` or `error: why the running
//! configuration was kept`, and for anything else `error: ...`
//! ([`reply`]). The client side is in `postern-cli`, the serving side
//! (non-blocking, with a deadline) in `postern-master`.

/// The longest request line, newline included.
pub const MAX_REQUEST: usize = 256;
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
    /// Set while the service is under stress (a Postfix daemon's service
    /// whose last process slot was taken: its new children run with `-o
    /// stress=yes`): the seconds left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stress_seconds_left: Option<u64>,
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
        let mut state = match &svc.throttled {
            Some(t) => format!("throttled for {}s: {}", t.seconds_left, t.reason),
            None => svc.state.clone(),
        };
        if let Some(left) = svc.stress_seconds_left {
            state.push_str(&format!(", under stress for {left}s"));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_says_which_service_is_under_stress() {
        let svc = |name: &str, stress| ServiceSnapshot {
            name: name.into(),
            kind: "inet".into(),
            endpoints: vec!["127.0.0.1:25".into()],
            maxproc: Some(2),
            state: "at process limit".into(),
            throttled: None,
            stress_seconds_left: stress,
            children: Vec::new(),
        };
        let snap = Snapshot {
            master: MasterSnapshot {
                pid: 1,
                uptime_seconds: 5,
                configuration: "/etc/postern".into(),
                stopping: false,
                retired_children: 0,
            },
            services: vec![svc("smtp", Some(998)), svc("other", None)],
            queue: None,
        };
        let table = human(&snap);
        let line = |name: &str| {
            table
                .lines()
                .find(|l| l.starts_with(name))
                .unwrap_or_default()
                .to_string()
        };
        assert!(
            line("smtp").ends_with("at process limit, under stress for 998s"),
            "{table}"
        );
        assert!(line("other").ends_with("at process limit"), "{table}");
    }

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
}
