//! One log format for every postern process.
//!
//! Each event is one line, `<syslog_name>/<program>[pid]: <level>text`, where
//! the level prefix is empty for information and `warning: `, `error: `,
//! `fatal: ` otherwise (as in Postfix). Lines go to one sink, chosen once at
//! startup by the child skeleton or the master: standard error (foreground),
//! `maillog_file` (appended with one `write` per line, so that concurrent
//! processes never interleave within a line), or syslog over `/dev/log`
//! (with no syslog socket [`open_sink`] fails with a message naming
//! `maillog_file` and `--foreground`; the master refuses to start). The
//! `log` crate is the facade: code logs with `log::info!` and friends.
//!
//! A line in `maillog_file` is `<RFC 3339 UTC time> <host> <tag>[pid]: text`
//! (the host is the short system host name, as syslog writes it), so that
//! log readers such as pflogsumm parse the file as they parse a syslog file.
//!
//! A line about the message lifecycle may name the Postfix program that
//! would have logged it, so that Postfix log readers (pflogsumm, Logwatch,
//! mailgraph) count it: logging with one of the targets in
//! [`POSTFIX_NAMES`] (`log::info!(target: log::AS_PICKUP, ...)`) tags the
//! line `<syslog_name>/<target>` instead of `<syslog_name>/<program>`.
//!
//! [`init`] may be called again (the skeleton calls it once with the
//! defaults, then with the configuration; the master after each reload):
//! each call replaces both the tag and the sink.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where log lines go.
#[derive(Debug)]
pub enum Sink {
    /// Standard error.
    Stderr,
    /// An append-only file.
    File(File),
    /// The syslog socket, with the facility number.
    Syslog(UnixDatagram, u8),
}

struct Logger {
    state: Mutex<State>,
}

struct State {
    /// `syslog_name`.
    syslog_name: String,
    /// This program's name.
    program: String,
    /// The short host name, for `maillog_file` lines.
    host: String,
    sink: Sink,
}

/// Target for a line Postfix's pickup would log (`ID: uid=N from=<...>`).
pub const AS_PICKUP: &str = "pickup";
/// Target for a line Postfix's cleanup would log (`ID: message-id=<...>`).
pub const AS_CLEANUP: &str = "cleanup";
/// Target for a line Postfix's queue manager would log.
pub const AS_QMGR: &str = "qmgr";
/// Target for a delivery line of the local delivery agent.
pub const AS_LOCAL: &str = "local";
/// Target for a delivery line of a command transport.
pub const AS_PIPE: &str = "pipe";
/// Target for a delivery line of the smtp delivery agent.
pub const AS_SMTP: &str = "smtp";
/// Target for a line Postfix's bounce daemon would log.
pub const AS_BOUNCE: &str = "bounce";
/// The targets that name the Postfix program of a line.
pub const POSTFIX_NAMES: &[&str] = &[
    AS_PICKUP, AS_CLEANUP, AS_QMGR, AS_LOCAL, AS_PIPE, AS_SMTP, AS_BOUNCE,
];

/// The short host name (up to the first dot), or `localhost`.
fn short_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| h.split('.').next().map(str::to_string))
        .filter(|h| !h.is_empty() && !h.chars().any(|c| c.is_whitespace() || c.is_control()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Syslog facility numbers by name.
fn facility_code(name: &str) -> u8 {
    match name {
        "daemon" => 3,
        "user" => 1,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => 2, // mail
    }
}

/// Chooses the sink: stderr when `foreground`, else `maillog_file` when set,
/// else syslog; an error (naming the options) when there is no syslog socket.
pub fn open_sink(foreground: bool, maillog_file: &str, facility: &str) -> std::io::Result<Sink> {
    if foreground {
        return Ok(Sink::Stderr);
    }
    if !maillog_file.is_empty() {
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .open(maillog_file)?;
        return Ok(Sink::File(f));
    }
    let sock = UnixDatagram::unbound()?;
    match sock.connect(Path::new(SYSLOG_SOCKET)) {
        Ok(()) => Ok(Sink::Syslog(sock, facility_code(facility))),
        // Logs that would go nowhere are an error the caller reports
        // (the master refuses to start); never a silent /dev/null.
        Err(e) => Err(std::io::Error::new(
            e.kind(),
            format!(
                "no syslog at {SYSLOG_SOCKET} ({e}): set maillog_file in main.cf \
                 (e.g. maillog_file = /var/log/postern.log, or /dev/stdout in a container), \
                 or run 'postern start --foreground' to log to standard error"
            ),
        )),
    }
}

/// The syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";

/// Installs the logger for this process: lines tagged `syslog_name/program`.
/// Later calls replace the tag and the sink (the configuration was read, or
/// a reload changed it).
pub fn init(syslog_name: &str, program: &str, sink: Sink) {
    if let Some(existing) = LOGGER.get() {
        if let Ok(mut s) = existing.state.lock() {
            s.syslog_name = syslog_name.to_string();
            s.program = program.to_string();
            s.sink = sink;
        }
        return;
    }
    let logger = LOGGER.get_or_init(|| Logger {
        state: Mutex::new(State {
            syslog_name: syslog_name.to_string(),
            program: program.to_string(),
            host: short_hostname(),
            sink,
        }),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(log::LevelFilter::Info);
        // A panic is a broken invariant and aborts the process; a daemon's
        // standard error is /dev/null, so without this it would leave no
        // trace but a signal in the master's log. One line, then the
        // default report (standard error in the foreground).
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Not from inside the logger itself (its lock is held).
            if LOGGER.get().is_some_and(|l| l.state.try_lock().is_ok()) {
                log::error!("{}", info.to_string().replace('\n', " "));
            }
            default(info);
        }));
    }
}

static LOGGER: std::sync::OnceLock<Logger> = std::sync::OnceLock::new();

// Dates are formatted here by hand rather than with a date crate: three
// fixed UTC formats need only the civil-from-days arithmetic below, not a
// dependency (and its time-zone database) in every daemon.

/// The UTC civil date and time of `secs` since the epoch:
/// (year, month 1-12, day 1-31, hour, minute, second).
///
/// Written here rather than taken from a date crate: postern writes three
/// fixed UTC formats (log stamps, mbox `From ` lines, `Date:` headers), which
/// need only this conversion, unit-tested against known dates; the date
/// crates bring time-zone and parsing machinery none of them uses.
pub fn civil(secs: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (secs / 86400) as i64;
    let rem = (secs % 86400) as u32;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

fn weekday_month(secs: u64, month: u32) -> (&'static str, &'static str) {
    (
        WEEKDAYS[((secs / 86400) % 7) as usize],
        MONTHS[(month as usize).saturating_sub(1).min(11)],
    )
}

/// `asctime`-style UTC date, as in an mbox `From ` line:
/// `Sat Nov 21 07:05:05 2026`.
pub fn asctime(secs: u64) -> String {
    let (year, month, day, h, m, s) = civil(secs);
    let (weekday, month) = weekday_month(secs, month);
    format!("{weekday} {month} {day:2} {h:02}:{m:02}:{s:02} {year}")
}

/// RFC 5322 date in UTC, for `Date:` and `Received:` headers:
/// `Sat, 21 Nov 2026 07:05:05 +0000`.
pub fn rfc5322_date(secs: u64) -> String {
    let (year, month, day, h, m, s) = civil(secs);
    let (weekday, month) = weekday_month(secs, month);
    format!("{weekday}, {day} {month} {year} {h:02}:{m:02}:{s:02} +0000")
}

/// Formats seconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_timestamp(secs: u64) -> String {
    let (year, month, day, h, m, s) = civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

fn level_prefix(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error: ",
        log::Level::Warn => "warning: ",
        _ => "",
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::Level::Info
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let pid = std::process::id();
        let prefix = if record.target() == "fatal" {
            "fatal: "
        } else {
            level_prefix(record.level())
        };
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let state = &mut *state;
        let program = POSTFIX_NAMES
            .iter()
            .find(|n| **n == record.target())
            .copied()
            .unwrap_or(&state.program);
        let text = format!(
            "{}/{program}[{pid}]: {prefix}{}",
            state.syslog_name,
            record.args()
        );
        // One line, no control characters from the message.
        let text: String = text
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        match &mut state.sink {
            Sink::Stderr => {
                let _ = writeln!(std::io::stderr().lock(), "{text}");
            }
            Sink::File(f) => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let line = format!("{} {} {text}\n", utc_timestamp(secs), state.host);
                let _ = f.write_all(line.as_bytes());
            }
            Sink::Syslog(sock, facility) => {
                let severity = match record.level() {
                    log::Level::Error => 3,
                    log::Level::Warn => 4,
                    _ => 6,
                };
                let line = format!("<{}>{text}", u16::from(*facility) * 8 + severity);
                let _ = sock.send(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Logs a fatal error (`fatal: ...`) and returns `code`, for `exit(fatal(..))`.
pub fn fatal(code: i32, message: impl std::fmt::Display) -> i32 {
    log::error!(target: "fatal", "{message}");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The only test in this crate that installs the logger: a panic
    /// (a daemon's standard error is /dev/null) lands in the log.
    #[test]
    fn a_panic_is_logged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let sink = open_sink(false, path.to_str().unwrap(), "mail").unwrap();
        init("postern", "test", sink);
        let _ = std::thread::spawn(|| panic!("broken\ninvariant")).join();
        let log = std::fs::read_to_string(&path).unwrap();
        assert!(log.contains("postern/test["), "{log}");
        assert!(log.contains("error: panicked at"), "{log}");
        assert!(log.trim_end().ends_with("broken invariant"), "{log}");
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_795_245_296), "2026-11-21T07:14:56Z");
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(951_782_400), "Tue Feb 29 00:00:00 2000");
        assert_eq!(rfc5322_date(0), "Thu, 1 Jan 1970 00:00:00 +0000");
        assert_eq!(rfc5322_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
        assert_eq!(
            rfc5322_date(1_795_245_296),
            "Sat, 21 Nov 2026 07:14:56 +0000"
        );
    }
}
