//! postern-deliverbench — the delivery client of `scripts/bench-local`.
//!
//! Hands messages to postern's local delivery agent (`postern-local`, at
//! `queue_directory/private/local`) the way the queue manager does, with
//! [`postern_common::handoff::deliver`]: one request per message, one
//! recipient, the destination an mbox file (`--mailbox PATH`) or a Maildir
//! (`--maildir DIR/`), delivered as `--user`. `--concurrency` threads run
//! deliveries back to back until `--count` deliveries have been started in
//! all; each thread hands over its own message file (an unlinked temporary
//! file holding a realistic message of `--size` bytes: headers, an empty
//! line, a plain-text body). Every exchange is bounded by `--timeout`.
//! `--batch N` hands N messages per exchange (with
//! [`postern_common::handoff::deliver_batch`]), as the queue manager does
//! with a backlog for one user; a message's latency is then its exchange's.
//!
//! The result is one machine-readable line on standard output:
//!
//! ```text
//! deliveries=N errors=E secs=S rate=R p50_ms=P p99_ms=Q max_ms=M
//! ```
//!
//! `deliveries` counts recipients the agent reported delivered, `rate` is
//! `deliveries/secs`, and the latencies (connect to reply) are over those
//! deliveries. Anything else — deferred, bounced, a failed exchange — is an
//! error; the first few reasons go to standard error.
//!
//! Two more modes:
//!
//! * `--fsync-probe FILE --count N` appends `--size` bytes (the same
//!   message) to FILE and `fdatasync`s it, N times, in one thread: the
//!   disk's rate for what an mbox delivery must do at least. Its line is
//!   `appends=N errors=0 secs=S rate=R p50_ms=P p99_ms=Q max_ms=M`.
//! * `--print-message` writes one message of `--size` bytes to standard
//!   output, so that other mail systems can be given the same message.
//!
//! Exit status: 0 when every delivery succeeded, 1 when any failed (or the
//! run could not start), 2 on bad usage.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Parser};
use postern_common::handoff::{self, DeliveryRequest, Destination, Instruction, Outcome};

/// How many distinct failure reasons are kept.
const MAX_REASONS: usize = 20;
/// How many of them are printed.
const SHOWN_REASONS: usize = 5;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "postern-deliverbench",
    about = "Local delivery benchmark client for scripts/bench-local"
)]
#[command(group(ArgGroup::new("mode").required(true).args(["mailbox", "maildir", "fsync_probe", "print_message"])))]
struct Options {
    /// postern-local's socket (`queue_directory/private/local`).
    #[arg(long, value_name = "PATH", required_unless_present_any = ["fsync_probe", "print_message"])]
    socket: Option<PathBuf>,
    /// The account the deliveries run as.
    #[arg(long, value_name = "NAME", required_unless_present_any = ["fsync_probe", "print_message"])]
    user: Option<String>,
    /// The recipient address (default: USER@localhost).
    #[arg(long, value_name = "ADDR")]
    recipient: Option<String>,
    /// The envelope sender.
    #[arg(long, value_name = "ADDR", default_value = "bench@example.org")]
    sender: String,
    /// Deliver to this mbox file.
    #[arg(long, value_name = "PATH")]
    mailbox: Option<PathBuf>,
    /// Deliver to this Maildir (a `/` is appended when missing).
    #[arg(long, value_name = "DIR/")]
    maildir: Option<PathBuf>,
    /// Instead of delivering: append `--size` bytes to FILE and fdatasync
    /// it, `--count` times, and print the rate.
    #[arg(long, value_name = "FILE")]
    fsync_probe: Option<PathBuf>,
    /// Instead of delivering: print one message of `--size` bytes.
    #[arg(long)]
    print_message: bool,
    /// Deliveries (or appends) in total.
    #[arg(long, value_name = "N", default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Threads, each delivering back to back (deliveries only).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    concurrency: u32,
    /// Messages per exchange (as the queue manager batches a backlog for
    /// one user); 1: one request per message.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    batch: u64,
    /// Message size in bytes (never less than its headers).
    #[arg(long, value_name = "BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    size: u32,
    /// Limit, in seconds, on each read and write of an exchange with the agent.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    timeout: f64,
}

// --------------------------------------------------------------------------
// The message.

/// Filler text for the body: plain words, no line starting with `From `.
const FILLER: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do \
eiusmod tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, \
quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. ";

/// Longest body line, without its newline.
const LINE: usize = 72;

/// A message of exactly `size` bytes when `size` leaves room for its
/// headers and the empty line after them (else just those): RFC 5322
/// headers as a mail client and one relay would write them, an empty line,
/// then lines of plain text of at most [`LINE`] characters. `id` makes the
/// Message-ID unique; `date` is seconds since the epoch.
fn build_message(size: usize, id: &str, sender: &str, recipient: &str, date: u64) -> Vec<u8> {
    let date = postern_common::log::rfc5322_date(date);
    let headers = format!(
        "Received: by bench.example.org (postern-deliverbench, from userid 1000)\n\
         \tid {id}; {date}\n\
         From: Bench Sender <{sender}>\n\
         To: {recipient}\n\
         Subject: local delivery benchmark, message {id}\n\
         Date: {date}\n\
         Message-ID: <{id}@bench.example.org>\n\
         MIME-Version: 1.0\n\
         Content-Type: text/plain; charset=us-ascii\n\
         Content-Transfer-Encoding: 7bit\n\
         \n"
    );
    let mut message = headers.into_bytes();
    let mut words = FILLER.split_whitespace().cycle();
    let mut next = words.next().unwrap_or("x");
    while message.len() < size {
        let room = size - message.len();
        // Words up to LINE characters, then a newline.
        let mut line = String::new();
        while line.len() + 1 + next.len() <= LINE {
            if !line.is_empty() {
                line.push(' ');
            }
            line.push_str(next);
            next = words.next().unwrap_or("x");
        }
        if line.len() + 1 >= room {
            // The last line: cut to what is left (its newline included).
            line.truncate(room - 1);
        }
        message.extend_from_slice(line.as_bytes());
        message.push(b'\n');
    }
    message
}

// --------------------------------------------------------------------------
// Measurements.

use postern_tests::rate_summary;

/// The result line's numbers: "secs=.. rate=.. p50_ms=.. p99_ms=.. max_ms=..".
/// What one thread measured.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    /// Reason -> how often; the first reasons seen, in order of first sight.
    reasons: BTreeMap<String, (u64, u64)>,
}

impl Tally {
    fn fail(&mut self, reason: String, seq: u64) {
        self.errors += 1;
        self.note(reason, 1, seq);
    }

    fn note(&mut self, reason: String, n: u64, seq: u64) {
        if let Some(entry) = self.reasons.get_mut(&reason) {
            entry.0 += n;
            entry.1 = entry.1.min(seq);
        } else if self.reasons.len() < MAX_REASONS {
            self.reasons.insert(reason, (n, seq));
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        for (reason, (n, seq)) in other.reasons {
            self.note(reason, n, seq);
        }
    }

    /// The reasons, earliest first: (reason, count).
    fn first_reasons(&self, limit: usize) -> Vec<(&str, u64)> {
        let mut all: Vec<_> = self
            .reasons
            .iter()
            .map(|(r, (n, seq))| (*seq, r.as_str(), *n))
            .collect();
        all.sort_unstable();
        all.into_iter()
            .take(limit)
            .map(|(_, r, n)| (r, n))
            .collect()
    }
}

// --------------------------------------------------------------------------
// Deliveries.

/// What every thread shares.
#[derive(Debug)]
struct Plan {
    socket: PathBuf,
    user: String,
    recipient: String,
    sender: String,
    destination: Destination,
    count: u64,
    batch: u64,
    started: AtomicU64,
    timeout: Duration,
}

impl Plan {
    /// Claims the next deliveries (up to `batch`), or says the run is over.
    fn next(&self) -> Option<std::ops::Range<u64>> {
        let n = self.started.fetch_add(self.batch, Ordering::Relaxed);
        (n < self.count).then(|| n..(n + self.batch).min(self.count))
    }

    fn request(&self, thread: u32, n: u64) -> DeliveryRequest {
        DeliveryRequest {
            queue_id: format!("B{:X}T{thread}N{n}", std::process::id()),
            sender: self.sender.clone(),
            arrival: now_secs(),
            message_offset: 0,
            message_size: None,
            recipients: vec![Instruction {
                recipient: self.recipient.clone(),
                original_recipient: None,
                user: self.user.clone(),
                extension: None,
                destination: self.destination.clone(),
                uncertain: false,
            }],
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An unlinked temporary file holding `message`, for the agent to read.
fn message_file(message: &[u8]) -> Result<OwnedFd> {
    let mut file = tempfile::tempfile().context("creating a message file")?;
    file.write_all(message)
        .context("writing the message file")?;
    file.flush()?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

fn worker(plan: &Plan, thread: u32, message: &OwnedFd) -> Tally {
    let mut tally = Tally::default();
    while let Some(range) = plan.next() {
        let requests: Vec<(u64, DeliveryRequest)> =
            range.map(|n| (n, plan.request(thread, n))).collect();
        let batch: Vec<(&DeliveryRequest, &OwnedFd)> =
            requests.iter().map(|(_, r)| (r, message)).collect();
        let start = Instant::now();
        match handoff::deliver_batch(&plan.socket, &batch, plan.timeout) {
            Ok(replies) => {
                for ((n, _), reply) in requests.iter().zip(replies) {
                    match reply.statuses.first() {
                        Some(s) if s.outcome == Outcome::Delivered => {
                            tally.latencies.push(start.elapsed());
                        }
                        Some(s) => {
                            tally.fail(format!("{:?} ({}): {}", s.outcome, s.dsn, s.reason), *n)
                        }
                        None => tally.fail("reply without a status".to_string(), *n),
                    }
                }
            }
            Err(e) => {
                for (n, _) in &requests {
                    tally.fail(format!("exchange failed: {e}"), *n);
                }
            }
        }
    }
    tally
}

fn seconds(name: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow!("--{name} must be a positive number of seconds"))
}

fn run_deliveries(options: Options) -> Result<bool> {
    let (Some(socket), Some(user)) = (options.socket, options.user) else {
        bail!("--socket and --user are required to deliver");
    };
    let destination = match (options.mailbox, options.maildir) {
        (Some(path), None) => Destination::Mailbox(path),
        (None, Some(path)) => {
            let mut text = path.into_os_string();
            if !text.to_string_lossy().ends_with('/') {
                text.push("/");
            }
            Destination::Maildir(PathBuf::from(text))
        }
        _ => bail!("give exactly one of --mailbox and --maildir"),
    };
    let recipient = options
        .recipient
        .unwrap_or_else(|| format!("{user}@localhost"));
    let size = usize::try_from(options.size).context("--size")?;
    let plan = Arc::new(Plan {
        socket,
        user,
        recipient,
        sender: options.sender,
        destination,
        count: options.count,
        batch: options.batch,
        started: AtomicU64::new(0),
        timeout: seconds("timeout", options.timeout)?,
    });
    // One message file per thread, written before the clock starts.
    let mut files = Vec::new();
    for i in 0..options.concurrency {
        let id = format!("{}.{i}.{}", now_secs(), std::process::id());
        let message = build_message(size, &id, &plan.sender, &plan.recipient, now_secs());
        files.push(message_file(&message)?);
    }

    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, file) in (0..options.concurrency).zip(files) {
        let plan = Arc::clone(&plan);
        let handle = thread::Builder::new()
            .name(format!("deliver-{i}"))
            .spawn(move || worker(&plan, i, &file))
            .context("starting a thread")?;
        handles.push(handle);
    }
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| anyhow!("a delivery thread panicked"))?;
        total.merge(tally);
    }
    let secs = start.elapsed().as_secs_f64();

    total.latencies.sort_unstable();
    println!(
        "deliveries={} errors={} {}",
        total.latencies.len(),
        total.errors,
        rate_summary(&total.latencies, secs)
    );
    for (reason, n) in total.first_reasons(SHOWN_REASONS) {
        eprintln!("postern-deliverbench: {n} failed: {reason}");
    }
    let listed: u64 = total.first_reasons(SHOWN_REASONS).iter().map(|r| r.1).sum();
    if listed < total.errors {
        eprintln!("postern-deliverbench: (further failure reasons not listed)");
    }
    Ok(total.errors == 0)
}

// --------------------------------------------------------------------------
// The other modes.

fn run_fsync_probe(path: PathBuf, count: u64, size: usize) -> Result<bool> {
    let message = build_message(
        size,
        "fsync-probe",
        "bench@example.org",
        "probe@localhost",
        now_secs(),
    );
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    let mut latencies = Vec::new();
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        (&file)
            .write_all(&message)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("appending to {}", path.display()))?;
        latencies.push(t.elapsed());
    }
    let secs = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "appends={} errors=0 {}",
        latencies.len(),
        rate_summary(&latencies, secs)
    );
    Ok(true)
}

fn run(options: Options) -> Result<bool> {
    let size = usize::try_from(options.size).context("--size")?;
    if options.print_message {
        let recipient = match (&options.recipient, &options.user) {
            (Some(r), _) => r.clone(),
            (None, Some(u)) => format!("{u}@localhost"),
            (None, None) => "user@localhost".to_string(),
        };
        let id = format!("{}.{}", now_secs(), std::process::id());
        let message = build_message(size, &id, &options.sender, &recipient, now_secs());
        std::io::stdout()
            .lock()
            .write_all(&message)
            .context("writing the message")?;
        return Ok(true);
    }
    if let Some(path) = options.fsync_probe {
        if options.concurrency != 1 {
            bail!("--fsync-probe runs in one thread: leave out --concurrency");
        }
        return run_fsync_probe(path, options.count, size);
    }
    run_deliveries(options)
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("postern-deliverbench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_tests::percentile_ms;

    fn message(size: usize) -> Vec<u8> {
        build_message(
            size,
            "1795245296.0.42",
            "bench@example.org",
            "pb-user@localhost",
            1_795_245_296,
        )
    }

    #[test]
    fn messages_have_the_requested_size() {
        for size in [512, 1024, 1025, 1100, 4096, 65_536] {
            let m = message(size);
            assert_eq!(m.len(), size, "size {size}");
            assert_eq!(m.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn small_sizes_keep_the_headers_whole() {
        let headers = message(1);
        let text = String::from_utf8(headers.clone()).unwrap();
        assert!(text.ends_with("\n\n"));
        assert!(text.contains("Message-ID: <1795245296.0.42@bench.example.org>\n"));
        // Just past the headers: one empty body line at most.
        assert_eq!(message(headers.len() + 1).len(), headers.len() + 1);
    }

    #[test]
    fn messages_look_like_mail() {
        let text = String::from_utf8(message(1024)).unwrap();
        let (headers, body) = text.split_once("\n\n").unwrap();
        for name in ["From:", "To:", "Subject:", "Date:", "Message-ID:"] {
            assert!(
                headers.lines().any(|l| l.starts_with(name)),
                "missing {name}"
            );
        }
        assert!(headers.contains("To: pb-user@localhost\n"));
        assert!(headers.contains("Date: Sat, 21 Nov 2026 07:14:56 +0000\n"));
        assert!(!headers.contains("Delivered-To:"), "would be a mail loop");
        for line in text.lines() {
            assert!(line.len() <= 78, "line too long: {line:?}");
            assert!(!line.starts_with("From "), "mbox separator in {line:?}");
        }
        assert!(body.len() > 500);
        assert!(body.is_ascii());
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&values, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&values, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&values, 100.0), Some(100.0));
        assert_eq!(percentile_ms(&values[..1], 99.0), Some(1.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
        let summary = rate_summary(&values[..4], 2.0);
        assert_eq!(
            summary,
            "secs=2.000 rate=2.0 p50_ms=2.000 p99_ms=4.000 max_ms=4.000"
        );
    }

    #[test]
    fn count_limits_the_plan() {
        let plan = Plan {
            socket: PathBuf::from("/nonexistent"),
            user: "pb-user".into(),
            recipient: "pb-user@localhost".into(),
            sender: String::new(),
            destination: Destination::Mailbox("/nonexistent".into()),
            count: 5,
            batch: 2,
            started: AtomicU64::new(0),
            timeout: Duration::from_secs(1),
        };
        assert_eq!(plan.next(), Some(0..2));
        assert_eq!(plan.next(), Some(2..4));
        assert_eq!(plan.next(), Some(4..5));
        assert_eq!(plan.next(), None);
        let request = plan.request(3, 1);
        assert_eq!(request.recipients.len(), 1);
        assert_eq!(request.recipients[0].user, "pb-user");
    }

    #[test]
    fn failure_reasons_are_kept_in_order_of_first_sight() {
        let mut a = Tally::default();
        a.fail("late".into(), 9);
        a.fail("early".into(), 2);
        let mut b = Tally::default();
        b.fail("late".into(), 5);
        b.fail("first".into(), 0);
        a.merge(b);
        assert_eq!(a.errors, 4);
        assert_eq!(a.first_reasons(2), vec![("first", 1), ("early", 1)]);
        assert_eq!(a.first_reasons(10)[2], ("late", 2));
    }
}
