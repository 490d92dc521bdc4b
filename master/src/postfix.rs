//! Postfix's side of the master↔daemon contract, for running Postfix's own
//! daemons (smtpd, cleanup, qmgr, ...) unchanged under postern's master.
//!
//! Read from Postfix 3.7's `src/master/` (`master_proto.h`, `master_ent.c`,
//! `master_spawn.c`, `master_status.c`); written for postern. The contract
//! has not changed from 3.7 to 3.12.
//!
//! **Descriptors** (all must be open, even those a daemon does not use):
//! [`FLOW_READ_FD`] and [`FLOW_WRITE_FD`], the two ends of one global
//! non-blocking pipe (cleanup takes a token per message, qmgr puts them
//! back; the master never touches it); [`STATUS_FD`], this service's
//! status channel, a `SOCK_STREAM` socket pair; [`LISTEN_FD`] and up, the
//! listening endpoints (`-s N` when there are several).
//!
//! **Records** ([`Reassembly`], [`decode`]): 12 bytes in native byte order,
//! `int pid; unsigned generation; int avail` (0 busy, 1 idle). A daemon
//! sends none at startup (it is idle from its fork), one when it takes a
//! connection and one when it is done. The master never writes to the
//! channel: any readability makes the daemons leave. The stream is read
//! with the sender's credentials (`SO_PASSCRED`); the kernel never merges
//! the bytes of two senders into one read, so each child's bytes are
//! reassembled apart, and a child that writes garbage or half records
//! cannot shift another's.
//!
//! **Generation**: unique per fork, in the environment as `GENERATION`, in
//! octal ([`environment`]).
//!
//! **Arguments** ([`argv`]): `argv[0]` is the command as written; `-l` when
//! maxproc is 1, `-z` when it is 0 (the daemons that need one of these exit
//! without it), `-n SERVICE` when the command is not named after the
//! service, `-t TYPE`, `-u` unprivileged, `-c` chroot, `-o stress=` for a
//! public inet or a pass service with more than one process ([`stress_eligible`];
//! `-o stress=yes` under stress, [`with_stress`]), `-s N` for N listeners,
//! then master.cf's own `-o` options and arguments. postern adds `-V`: the
//! daemon then also writes its log lines to standard error, which the
//! master reads to report a daemon's own `fatal:` line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::fd::RawFd;

use postern_common::status::{ChildState, FIRST_FREE_FD};
use postern_conf::{Endpoint, Override, ServiceType};

/// The read end of the flow-control pipe.
pub const FLOW_READ_FD: RawFd = 3;
/// Its write end.
pub const FLOW_WRITE_FD: RawFd = 4;
/// The child's end of its service's status channel.
pub const STATUS_FD: RawFd = 5;
/// The first listening endpoint.
pub const LISTEN_FD: RawFd = 6;
/// The most listeners a Postfix daemon can be given here: up to the
/// master's own descriptors ([`FIRST_FREE_FD`]).
pub const MAX_LISTEN_FDS: usize = (FIRST_FREE_FD - LISTEN_FD) as usize;
/// One status record.
pub const RECORD_LEN: usize = 12;

/// One decoded status record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// The pid the record names.
    pub pid: i32,
    /// The generation it names.
    pub generation: u32,
    /// Busy or idle.
    pub state: ChildState,
}

/// Decodes one record; an unknown state is an error naming it.
pub fn decode(bytes: &[u8; RECORD_LEN]) -> Result<Record, String> {
    let word = |i: usize| [bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]];
    let state = match i32::from_ne_bytes(word(8)) {
        0 => ChildState::Taken,
        1 => ChildState::Available,
        other => return Err(format!("status record with unknown state {other}")),
    };
    Ok(Record {
        pid: i32::from_ne_bytes(word(0)),
        generation: u32::from_ne_bytes(word(4)),
        state,
    })
}

/// Reassembles each sender's records from what a stream status channel
/// delivers. Holds at most `RECORD_LEN - 1` bytes per sender.
#[derive(Debug, Default)]
pub struct Reassembly {
    partial: HashMap<i32, Vec<u8>>,
}

impl Reassembly {
    /// Adds `bytes` sent by `sender`; returns the records they complete.
    pub fn push(&mut self, sender: i32, bytes: &[u8]) -> Vec<Result<Record, String>> {
        let buf = self.partial.entry(sender).or_default();
        buf.extend_from_slice(bytes);
        let whole = buf.len() / RECORD_LEN * RECORD_LEN;
        let out = buf[..whole]
            .chunks_exact(RECORD_LEN)
            .map(|c| {
                let mut r = [0u8; RECORD_LEN];
                r.copy_from_slice(c);
                decode(&r)
            })
            .collect();
        buf.drain(..whole);
        if buf.is_empty() {
            self.partial.remove(&sender);
        }
        out
    }

    /// Forgets a sender that exited; returns how many bytes of a record it
    /// left unfinished (Postfix's master logs such a partial update).
    pub fn forget(&mut self, sender: i32) -> usize {
        self.partial.remove(&sender).map_or(0, |b| b.len())
    }
}

/// What the arguments of a Postfix daemon are made of.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    /// master.cf's command field.
    pub command: &'a str,
    /// The service name.
    pub service: &'a str,
    /// Its type.
    pub kind: ServiceType,
    /// The process limit: `None` unlimited.
    pub limit: Option<u32>,
    /// The unprivileged column.
    pub unpriv: bool,
    /// The chroot column.
    pub chroot: bool,
    /// A public inet service (not only on loopback) or a pass service with
    /// a process limit above 1 ([`stress_eligible`]): Postfix's master
    /// passes `-o stress=` to those.
    pub stress: bool,
    /// How many listening descriptors it gets.
    pub listeners: usize,
    /// master.cf's `-o` options, in order.
    pub overrides: &'a [Override],
    /// master.cf's other arguments, in order.
    pub args: &'a [String],
}

/// The daemon's command line, as Postfix's master builds it (plus `-V`).
pub fn argv(l: &Launch<'_>) -> Vec<String> {
    let mut v = vec![l.command.to_string()];
    match l.limit {
        Some(1) => v.push("-l".into()),
        None => v.push("-z".into()),
        Some(_) => {}
    }
    let base = l.command.rsplit('/').next().unwrap_or(l.command);
    if base != l.service {
        v.extend(["-n".into(), l.service.to_string()]);
    }
    v.extend(["-t".into(), l.kind.as_str().to_string()]);
    if l.unpriv {
        v.push("-u".into());
    }
    if l.chroot {
        v.push("-c".into());
    }
    if l.stress {
        v.extend(["-o".into(), "stress=".into()]);
    }
    if l.listeners > 1 {
        v.extend(["-s".into(), l.listeners.to_string()]);
    }
    v.push("-V".into());
    for o in l.overrides {
        v.extend(["-o".into(), format!("{}={}", o.name, o.value)]);
    }
    v.extend(l.args.iter().cloned());
    v
}

/// Whether a service can be under stress, as Postfix's master decides: a
/// process limit above 1 (unlimited is not), and clients that may be
/// remote: an inet service on `addresses` that are not all loopback ones,
/// or a pass service (behind a connection screener such as postscreen).
/// Those get `-o stress=`.
pub fn stress_eligible(kind: ServiceType, limit: Option<u32>, addresses: &[IpAddr]) -> bool {
    let remote = match kind {
        ServiceType::Inet => !addresses.iter().all(IpAddr::is_loopback),
        ServiceType::Pass => true,
        ServiceType::Unix | ServiceType::UnixDgram | ServiceType::Fifo => false,
    };
    remote && limit.is_some_and(|l| l > 1)
}

/// The name Postfix's master gives a service's endpoint in its log lines:
/// `[host]:port` or `port` for inet, `private/NAME` or `public/NAME`.
pub fn endpoint_name(endpoint: &Endpoint) -> String {
    match endpoint {
        Endpoint::Inet {
            host: Some(h),
            port,
        } => format!(
            "[{}]:{port}",
            h.trim_start_matches('[').trim_end_matches(']')
        ),
        Endpoint::Inet { host: None, port } => port.to_string(),
        Endpoint::Local { .. } => endpoint.to_string(),
    }
}

/// `argv` ([`argv`]'s) for a daemon forked now: the master's own `-o
/// stress=` becomes `-o stress=yes` under stress (master.cf's own `-o`
/// options, after it, are untouched).
pub fn with_stress(argv: &[String], stressed: bool) -> Vec<String> {
    let mut v = argv.to_vec();
    if stressed {
        if let Some(i) = v.windows(2).position(|w| w[0] == "-o" && w[1] == "stress=") {
            v[i + 1] = "stress=yes".into();
        }
    }
    v
}

/// The environment of a Postfix daemon: `import_environment` (a name takes
/// the master's value, `name=value` sets one), then `MAIL_CONFIG`,
/// `MAIL_LOGTAG` and the postlog hints (when `maillog_file` is set), as
/// Postfix's master exports them, and the fork's `GENERATION` in octal.
pub fn environment(
    import: &[String],
    lookup: impl Fn(&str) -> Option<String>,
    config_dir: &str,
    logtag: &str,
    postlog: Option<(&str, &str)>,
    generation: u32,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: String| {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v));
    };
    for item in import {
        match item.split_once('=') {
            Some((k, v)) => set(k, v.to_string()),
            None => {
                if let Some(v) = lookup(item) {
                    set(item, v);
                }
            }
        }
    }
    set("MAIL_CONFIG", config_dir.to_string());
    set("MAIL_LOGTAG", logtag.to_string());
    if let Some((service, hostname)) = postlog {
        set("POSTLOG_SERVICE", service.to_string());
        set("POSTLOG_HOSTNAME", hostname.to_string());
    }
    set("GENERATION", format!("{generation:o}"));
    env
}

/// The line a daemon's own log on standard error gives as its reason for
/// failing: its last `fatal:` or `panic:` line (cut to 400 bytes).
pub fn fatal_line(text: &str) -> Option<String> {
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(": fatal: ") || l.contains(": panic: "))?;
    let mut end = line.len().min(400);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    Some(line[..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: i32, generation: u32, avail: i32) -> Vec<u8> {
        let mut v = pid.to_ne_bytes().to_vec();
        v.extend_from_slice(&generation.to_ne_bytes());
        v.extend_from_slice(&avail.to_ne_bytes());
        v
    }

    #[test]
    fn records_are_reassembled_per_sender() {
        let mut r = Reassembly::default();
        let a = record(10, 7, 0);
        let b = record(20, 8, 1);
        // Half a record from 10, a whole one from 20, the rest of 10's.
        assert!(r.push(10, &a[..5]).is_empty());
        assert_eq!(
            r.push(20, &b),
            vec![Ok(Record {
                pid: 20,
                generation: 8,
                state: ChildState::Available
            })]
        );
        assert_eq!(
            r.push(10, &a[5..]),
            vec![Ok(Record {
                pid: 10,
                generation: 7,
                state: ChildState::Taken
            })]
        );
        // Garbage from one sender neither shifts nor hides the other's.
        let mut junk = vec![0xffu8; 13];
        junk.extend(record(30, 1, 1));
        let out = r.push(30, &junk);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(Result::is_err), "{out:?}");
        assert_eq!(r.forget(30), 1);
        assert_eq!(r.push(20, &record(20, 8, 0)).len(), 1);
        assert_eq!(r.forget(20), 0);
    }

    fn launch<'a>(command: &'a str, service: &'a str, limit: Option<u32>) -> Launch<'a> {
        Launch {
            command,
            service,
            kind: ServiceType::Unix,
            limit,
            unpriv: true,
            chroot: false,
            stress: false,
            listeners: 1,
            overrides: &[],
            args: &[],
        }
    }

    #[test]
    fn arguments_as_postfix_s_master_builds_them() {
        assert_eq!(
            argv(&launch("qmgr", "qmgr", Some(1))),
            ["qmgr", "-l", "-t", "unix", "-u", "-V"]
        );
        assert_eq!(
            argv(&launch("cleanup", "cleanup", None)),
            ["cleanup", "-z", "-t", "unix", "-u", "-V"]
        );
        let overrides = [Override {
            name: "syslog_name".into(),
            value: "postfix/submission".into(),
        }];
        let args = ["flags=R".to_string()];
        let l = Launch {
            kind: ServiceType::Inet,
            chroot: true,
            unpriv: false,
            stress: true,
            listeners: 2,
            overrides: &overrides,
            args: &args,
            ..launch("smtpd", "127.0.0.1:2525", Some(100))
        };
        assert_eq!(
            argv(&l),
            [
                "smtpd",
                "-n",
                "127.0.0.1:2525",
                "-t",
                "inet",
                "-c",
                "-o",
                "stress=",
                "-s",
                "2",
                "-V",
                "-o",
                "syslog_name=postfix/submission",
                "flags=R"
            ]
        );
    }

    #[test]
    fn stress_is_for_public_inet_services_with_several_processes() {
        let public: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "0.0.0.0".parse().unwrap()];
        let loopback: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert!(stress_eligible(ServiceType::Inet, Some(100), &public));
        assert!(stress_eligible(ServiceType::Inet, Some(2), &public[1..]));
        assert!(!stress_eligible(ServiceType::Inet, Some(100), &loopback));
        assert!(!stress_eligible(ServiceType::Inet, Some(1), &public));
        assert!(!stress_eligible(ServiceType::Inet, None, &public));
        assert!(stress_eligible(ServiceType::Pass, Some(100), &[]));
        assert!(!stress_eligible(ServiceType::Pass, Some(1), &[]));
        assert!(!stress_eligible(ServiceType::Unix, Some(100), &[]));
        assert!(!stress_eligible(ServiceType::Fifo, Some(100), &[]));
        let names = [
            (Some("0.0.0.0"), 25, "[0.0.0.0]:25"),
            (Some("[::1]"), 2525, "[::1]:2525"),
            (None, 25, "25"),
        ];
        for (host, port, name) in names {
            let e = Endpoint::Inet {
                host: host.map(String::from),
                port,
            };
            assert_eq!(endpoint_name(&e), name);
        }
        let pass = Endpoint::Local {
            name: "smtpd".into(),
            private: true,
        };
        assert_eq!(endpoint_name(&pass), "private/smtpd");
        let l = Launch {
            kind: ServiceType::Inet,
            stress: true,
            args: &[],
            ..launch("smtpd", "smtp", Some(100))
        };
        let mut base = argv(&l);
        base.extend(["-o".to_string(), "stress=".to_string()]);
        let stressed = with_stress(&base, true);
        let at = |v: &[String]| {
            v.iter()
                .filter(|a| a.starts_with("stress="))
                .cloned()
                .collect::<Vec<_>>()
        };
        // The master's own option changes; master.cf's own, after it, does not.
        assert_eq!(at(&stressed), ["stress=yes", "stress="]);
        assert_eq!(at(&with_stress(&base, false)), ["stress=", "stress="]);
        assert_eq!(stressed.len(), base.len());
    }

    #[test]
    fn environment_as_postfix_s_master_exports_it() {
        let import: Vec<String> = ["MAIL_CONFIG", "TZ", "LANG=C", "ABSENT"]
            .map(String::from)
            .to_vec();
        let env = environment(
            &import,
            |k| (k == "TZ" || k == "MAIL_CONFIG").then(|| format!("from-{k}")),
            "/etc/pf",
            "postfix",
            Some(("postlog", "mx")),
            8,
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("MAIL_CONFIG"), Some("/etc/pf"));
        assert_eq!(get("TZ"), Some("from-TZ"));
        assert_eq!(get("LANG"), Some("C"));
        assert_eq!(get("ABSENT"), None);
        assert_eq!(get("GENERATION"), Some("10"));
        assert_eq!(get("MAIL_LOGTAG"), Some("postfix"));
        assert_eq!(get("POSTLOG_SERVICE"), Some("postlog"));
        assert_eq!(env.iter().filter(|(n, _)| n == "MAIL_CONFIG").count(), 1);
    }

    #[test]
    fn the_daemon_s_own_fatal_line_is_found() {
        let text = "postfix/qmgr: warning: x\npostfix/qmgr: fatal: service qmgr requires a process limit of 1\n";
        assert_eq!(
            fatal_line(text).as_deref(),
            Some("postfix/qmgr: fatal: service qmgr requires a process limit of 1")
        );
        assert_eq!(fatal_line("postfix/smtpd: warning: only this\n"), None);
    }
}
