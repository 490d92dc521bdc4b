//! master.cf: one line per service, eight fields, as master(5) defines them.
//!
//! ```text
//! # service type  private unpriv  chroot  wakeup  maxproc command + args
//! demo      inet  n       -       n       -       4       spawn user=nobody argv=/bin/cat
//! ```
//!
//! `-` in a field means its default (private `y`, unpriv `y`, chroot `n`, no
//! wakeup, maxproc `default_process_limit`). Service types are `inet`, `unix`,
//! `unix-dgram`, `fifo` and `pass`. An inet service name is `[host:]port`, the
//! host an IPv4 address, a host name or a bracketed IPv6 address, the port a
//! number or a name from /etc/services. Other service names are file names
//! under `queue_directory/private` or `public`. The command is followed by
//! arguments: `-o name=value` and `-o { name = value }` override main.cf for
//! this service (only before the first non-option argument, like getopt), and
//! `{ text with spaces }` is one argument. A later entry with the same name and
//! type replaces the earlier one, with a warning.

use std::time::Duration;

use crate::diag::Diagnostic;
use crate::logical::logical_lines;
use crate::maincf::valid_name;
use crate::params::parse_time;

/// The transport type of a service (master.cf field 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceType {
    /// TCP socket.
    Inet,
    /// Unix-domain stream socket.
    Unix,
    /// Unix-domain datagram socket.
    UnixDgram,
    /// Named pipe.
    Fifo,
    /// Unix-domain socket over which connections are passed as descriptors.
    Pass,
}

impl ServiceType {
    /// The master.cf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "inet" => ServiceType::Inet,
            "unix" => ServiceType::Unix,
            "unix-dgram" => ServiceType::UnixDgram,
            "fifo" => ServiceType::Fifo,
            "pass" => ServiceType::Pass,
            _ => return None,
        })
    }
}

impl std::fmt::Display for ServiceType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a service listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A TCP port; without a host, on `inet_interfaces`.
    Inet {
        /// Host part: an address or host name (IPv6 without brackets), or none.
        host: Option<String>,
        /// Port number.
        port: u16,
    },
    /// A file name under `queue_directory/private` or `public`.
    Local {
        /// The name (no `/`).
        name: String,
        /// Under `private` (true) or `public`.
        private: bool,
    },
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Inet { host: None, port } => write!(f, "*:{port}"),
            Endpoint::Inet {
                host: Some(h),
                port,
            } if h.contains(':') => write!(f, "[{h}]:{port}"),
            Endpoint::Inet {
                host: Some(h),
                port,
            } => write!(f, "{h}:{port}"),
            Endpoint::Local {
                name,
                private: true,
            } => write!(f, "private/{name}"),
            Endpoint::Local {
                name,
                private: false,
            } => write!(f, "public/{name}"),
        }
    }
}

/// The wakeup field: how often the master pokes the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// Interval between wakeups.
    pub interval: Duration,
    /// `?` suffix: only after the service has been used at least once.
    pub only_if_used: bool,
}

/// The maxproc field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxProc {
    /// `-`: `default_process_limit`.
    Default,
    /// `0`: no limit.
    Unlimited,
    /// A positive limit.
    Limit(u32),
}

/// A `-o name=value` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// Parameter name.
    pub name: String,
    /// Raw value.
    pub value: String,
}

/// One master.cf service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceEntry {
    /// Field 1 as written.
    pub name: String,
    /// Field 2.
    pub kind: ServiceType,
    /// Where it listens (from fields 1, 2 and 3).
    pub endpoint: Endpoint,
    /// Field 3 (`-` resolved: y, but n for inet).
    pub private: bool,
    /// Field 4 (`-` resolved: y).
    pub unpriv: bool,
    /// Field 5 (`-` resolved: n).
    pub chroot: bool,
    /// Field 6.
    pub wakeup: Option<Wakeup>,
    /// Field 7.
    pub maxproc: MaxProc,
    /// Field 8: the program name.
    pub command: String,
    /// `-o` overrides, in order.
    pub overrides: Vec<Override>,
    /// The remaining arguments, in order (options other than `-o` included).
    pub args: Vec<String>,
    /// Fields 3 to 7 exactly as written, for printing.
    pub raw_fields: [String; 5],
    /// Line where the entry starts.
    pub line: usize,
}

impl ServiceEntry {
    /// `name/type`, the way Postfix names a service.
    pub fn id(&self) -> String {
        format!("{}/{}", self.name, self.kind)
    }

    /// The process limit, with `-` resolved to `default_limit`; `None` = unlimited.
    pub fn process_limit(&self, default_limit: u32) -> Option<u32> {
        match self.maxproc {
            MaxProc::Default => Some(default_limit),
            MaxProc::Unlimited => None,
            MaxProc::Limit(n) => Some(n),
        }
    }
}

/// Looks up a TCP service name (e.g. in /etc/services).
pub trait PortNames {
    /// The port of `name`, if known.
    fn port(&self, name: &str) -> Option<u16>;
}

/// The services from an `/etc/services`-format text.
#[derive(Debug, Clone, Default)]
pub struct ServicesFile {
    entries: Vec<(String, u16)>,
}

impl ServicesFile {
    /// Reads `/etc/services` (an empty table when it cannot be read).
    pub fn system() -> Self {
        std::fs::read("/etc/services")
            .map(|b| Self::parse(&String::from_utf8_lossy(&b)))
            .unwrap_or_default()
    }

    /// Parses `/etc/services` format: `name port/proto aliases... # comment`.
    pub fn parse(text: &str) -> Self {
        let mut entries = Vec::new();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(name), Some(port_proto)) = (words.next(), words.next()) else {
                continue;
            };
            let Some((port, "tcp")) = port_proto.split_once('/') else {
                continue;
            };
            let Ok(port) = port.parse::<u16>() else {
                continue;
            };
            entries.push((name.to_string(), port));
            entries.extend(words.map(|alias| (alias.to_string(), port)));
        }
        ServicesFile { entries }
    }
}

impl PortNames for ServicesFile {
    fn port(&self, name: &str) -> Option<u16> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| *p)
    }
}

/// The services of one master.cf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MasterCf {
    /// The file name used in diagnostics.
    pub file: String,
    /// Services in file order (a replaced entry takes the later position).
    pub services: Vec<ServiceEntry>,
}

impl MasterCf {
    /// The service called `name` (any type).
    pub fn find(&self, name: &str) -> Option<&ServiceEntry> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// Parses master.cf text.
pub fn parse_master_cf(
    file: &str,
    bytes: &[u8],
    ports: &dyn PortNames,
    diags: &mut Vec<Diagnostic>,
) -> MasterCf {
    let mut cf = MasterCf {
        file: file.to_string(),
        services: Vec::new(),
    };
    for ll in logical_lines(file, bytes, diags) {
        let mut errors = Vec::new();
        let entry = parse_entry(&ll.text, ll.line, ports, &mut errors);
        let failed = !errors.is_empty();
        diags.extend(
            errors
                .into_iter()
                .map(|m| Diagnostic::error(file, Some(ll.line), m)),
        );
        let Some(entry) = entry.filter(|_| !failed) else {
            continue;
        };
        if let Some(pos) = cf
            .services
            .iter()
            .position(|s| s.name == entry.name && s.kind == entry.kind)
        {
            let earlier = cf.services.remove(pos);
            diags.push(Diagnostic::warning(
                file,
                Some(ll.line),
                format!(
                    "service {} is defined again (first at line {}); this entry replaces it",
                    entry.id(),
                    earlier.line
                ),
            ));
        }
        cf.services.push(entry);
    }
    cf
}

fn parse_flag(value: &str, field: &str, default: bool, errors: &mut Vec<String>) -> bool {
    match value {
        "-" => default,
        "y" => true,
        "n" => false,
        other => {
            errors.push(format!("{field} field '{other}' must be y, n or -"));
            default
        }
    }
}

/// Parses one logical line; problems go to `errors` (all of them, not just the first).
fn parse_entry(
    text: &str,
    line: usize,
    ports: &dyn PortNames,
    errors: &mut Vec<String>,
) -> Option<ServiceEntry> {
    let mut fields = Vec::with_capacity(8);
    let mut rest = text;
    for _ in 0..7 {
        let trimmed = rest.trim_start();
        let end = trimmed.find(char::is_whitespace).unwrap_or(trimmed.len());
        if end == 0 {
            break;
        }
        fields.push(&trimmed[..end]);
        rest = &trimmed[end..];
    }
    let rest = rest.trim();
    if fields.len() < 7 || rest.is_empty() {
        let found = fields.len() + usize::from(!rest.is_empty());
        errors.push(format!(
            "expected 8 fields (service type private unpriv chroot wakeup maxproc command), found {found}"
        ));
        return None;
    }
    let name = fields[0];
    let kind = ServiceType::parse(fields[1]);
    if kind.is_none() {
        errors.push(format!(
            "service type '{}' is not one of inet, unix, unix-dgram, fifo, pass",
            fields[1]
        ));
    }
    let is_inet = kind == Some(ServiceType::Inet);
    let private = match (fields[2], is_inet) {
        ("y", true) => {
            errors
                .push("an inet service cannot be private (use n or - in the private field)".into());
            false
        }
        (value, _) => parse_flag(value, "private", !is_inet, errors),
    };
    let unpriv = parse_flag(fields[3], "unpriv", true, errors);
    let chroot = parse_flag(fields[4], "chroot", false, errors);
    let wakeup = parse_wakeup(fields[5], errors);
    let maxproc = parse_maxproc(fields[6], errors);
    let endpoint = match kind {
        Some(ServiceType::Inet) => parse_inet_name(name, ports, errors),
        Some(_) => {
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                errors.push(format!(
                    "service name '{name}' must be a plain file name (no '/', not '.' or '..')"
                ));
            }
            Some(Endpoint::Local {
                name: name.to_string(),
                private,
            })
        }
        None => None,
    };
    let words = split_args(rest, errors)?;
    let (command, args) = words.split_first()?;
    let (overrides, args) = split_overrides(args, errors);
    Some(ServiceEntry {
        name: name.to_string(),
        kind: kind?,
        endpoint: endpoint?,
        private,
        unpriv,
        chroot,
        wakeup,
        maxproc,
        command: command.clone(),
        overrides,
        args,
        raw_fields: [fields[2], fields[3], fields[4], fields[5], fields[6]].map(str::to_string),
        line,
    })
}

fn parse_wakeup(value: &str, errors: &mut Vec<String>) -> Option<Wakeup> {
    if value == "-" {
        return None;
    }
    let (time, only_if_used) = match value.strip_suffix('?') {
        Some(t) => (t, true),
        None => (value, false),
    };
    match parse_time(time, 's') {
        Ok(d) if d.is_zero() => None,
        Ok(interval) => Some(Wakeup {
            interval,
            only_if_used,
        }),
        Err(_) => {
            errors.push(format!(
                "wakeup time '{value}' is not a number of seconds (optionally with '?')"
            ));
            None
        }
    }
}

fn parse_maxproc(value: &str, errors: &mut Vec<String>) -> MaxProc {
    if value == "-" {
        return MaxProc::Default;
    }
    match value.parse::<u32>() {
        Ok(0) => MaxProc::Unlimited,
        Ok(n) => MaxProc::Limit(n),
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
            errors.push(format!("maxproc '{value}' is too large"));
            MaxProc::Default
        }
        Err(_) => {
            errors.push(format!("maxproc '{value}' is not a number"));
            MaxProc::Default
        }
    }
}

/// `[host:]port` with `host` an IPv4 address, a host name, or `[IPv6]`.
fn parse_inet_name(
    name: &str,
    ports: &dyn PortNames,
    errors: &mut Vec<String>,
) -> Option<Endpoint> {
    let (host, port) = if let Some(after) = name.strip_prefix('[') {
        let Some((addr, port)) = after.split_once("]:") else {
            errors.push(format!(
                "inet service '{name}': expected [IPv6-address]:port"
            ));
            return None;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            errors.push(format!(
                "inet service '{name}': '{addr}' is not an IPv6 address"
            ));
            return None;
        }
        (Some(addr.to_string()), port)
    } else if let Some((host, port)) = name.rsplit_once(':') {
        if host.contains(':') {
            errors.push(format!(
                "inet service '{name}': an IPv6 address must be in brackets, as [{host}]:{port}"
            ));
            return None;
        }
        let valid_host = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
        if !valid_host {
            errors.push(format!(
                "inet service '{name}': '{host}' is not a host name or address"
            ));
            return None;
        }
        (Some(host.to_string()), port)
    } else {
        (None, name)
    };
    let number = if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        match port.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => {
                errors.push(format!(
                    "inet service '{name}': port {port} is out of range (1-65535)"
                ));
                return None;
            }
        }
    } else {
        ports.port(port)
    };
    match number {
        Some(port) => Some(Endpoint::Inet { host, port }),
        None => {
            errors.push(format!(
                "inet service '{name}': unknown port name '{port}' (not in /etc/services)"
            ));
            None
        }
    }
}

/// Splits the command part into words; `{ ... }` (with nesting) is one word,
/// without the braces and the white space just inside them.
fn split_args(text: &str, errors: &mut Vec<String>) -> Option<Vec<String>> {
    let mut words = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        if rest.starts_with('{') {
            let mut depth = 0usize;
            let mut close = None;
            for (i, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(close) = close else {
                errors.push(format!("missing '}}' after \"{}\"", shorten(rest)));
                return None;
            };
            words.push(rest[1..close].trim().to_string());
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with(char::is_whitespace) {
                errors.push(format!(
                    "text after '}}' must be separated by white space: \"{}\"",
                    shorten(rest)
                ));
                return None;
            }
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            words.push(rest[..end].to_string());
            rest = &rest[end..];
        }
        rest = rest.trim_start();
    }
    Some(words)
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(40).collect();
    if out.len() < s.len() {
        out.push_str("...");
    }
    out
}

/// Takes `-o name=value` (and `-oname=value`) overrides from the options that
/// precede the first non-option argument.
fn split_overrides(args: &[String], errors: &mut Vec<String>) -> (Vec<Override>, Vec<String>) {
    let mut overrides = Vec::new();
    let mut rest = Vec::new();
    let mut i = 0;
    let mut options_done = false;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if options_done || !arg.starts_with('-') || arg == "-" {
            options_done = true;
            rest.push(arg.clone());
            continue;
        }
        if arg == "--" {
            options_done = true;
            rest.push(arg.clone());
            continue;
        }
        let setting = if arg == "-o" {
            match args.get(i) {
                Some(next) => {
                    i += 1;
                    next.as_str()
                }
                None => {
                    errors.push("-o at the end of the line: expected -o name=value".into());
                    continue;
                }
            }
        } else if let Some(inline) = arg.strip_prefix("-o") {
            inline
        } else {
            rest.push(arg.clone());
            continue;
        };
        match setting.split_once('=') {
            Some((name, value)) if valid_name(name.trim()) => overrides.push(Override {
                name: name.trim().to_string(),
                value: value.trim().to_string(),
            }),
            _ => errors.push(format!("-o '{setting}' is not name=value")),
        }
    }
    (overrides, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> ServicesFile {
        ServicesFile::parse("smtp 25/tcp mail\nsmtp 25/udp\nsubmission 587/tcp # c\n")
    }

    fn parse(text: &str) -> (MasterCf, Vec<String>) {
        let mut d = Vec::new();
        let cf = parse_master_cf("master.cf", text.as_bytes(), &ports(), &mut d);
        (cf, d.into_iter().map(|d| d.to_string()).collect())
    }

    #[test]
    fn services_file() {
        let p = ports();
        assert_eq!(p.port("smtp"), Some(25));
        assert_eq!(p.port("mail"), Some(25));
        assert_eq!(p.port("submission"), Some(587));
        assert_eq!(p.port("nope"), None);
    }

    #[test]
    fn one_entry() {
        let (cf, d) = parse("127.0.0.1:2525 inet n - n 60? 4 spawn -o max_use=3 -o { a = b c } user=nobody argv=/bin/cat -o x\n");
        assert!(d.is_empty(), "{d:?}");
        let s = &cf.services[0];
        assert_eq!(s.kind, ServiceType::Inet);
        assert!(!s.private && s.unpriv && !s.chroot);
        assert_eq!(
            s.wakeup,
            Some(Wakeup {
                interval: Duration::from_secs(60),
                only_if_used: true
            })
        );
        assert_eq!(s.maxproc, MaxProc::Limit(4));
        assert_eq!(s.overrides.len(), 2);
        assert_eq!(
            s.overrides[1],
            Override {
                name: "a".into(),
                value: "b c".into()
            }
        );
        assert_eq!(s.args, vec!["user=nobody", "argv=/bin/cat", "-o", "x"]);
    }
}
