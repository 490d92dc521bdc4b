//! postern-loadgen — the load generator of `scripts/bench`.
//!
//! Drives an echo service (postern spawn or Postfix spawn running `/bin/cat`,
//! or any fork+exec server that connects the connection to `cat`) with short
//! connections: each connection sends a small payload, half-closes its
//! write side, reads until end of file and checks that what came back is
//! exactly what was sent. `--concurrency` threads each run connections back to
//! back until `--duration` has passed or `--count` connections have been
//! started. Every connect, write and read is bounded by `--timeout`, so a
//! hung or throttled server costs errors, never a hung benchmark.
//!
//! The result is one machine-readable line on standard output:
//!
//! ```text
//! conns=N errors=E secs=S rate=R p50_ms=P p99_ms=Q max_ms=M
//! ```
//!
//! `conns` counts connections whose echo was verified, `rate` is `conns/secs`
//! and the latencies (connect to end of file) are over those connections.
//! A summary of failures goes to standard error. Exit status: 0 when every
//! connection succeeded, 1 when any failed (or the run could not start),
//! 2 on bad usage.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{ArgGroup, Parser};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::time::TimeVal;

/// How many distinct failure reasons are kept for the summary.
const MAX_REASONS: usize = 20;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "postern-loadgen",
    about = "Short-connection echo load generator for scripts/bench"
)]
#[command(group(ArgGroup::new("target").required(true).args(["inet", "unix"])))]
struct Options {
    /// TCP target, `HOST:PORT`.
    #[arg(long, value_name = "HOST:PORT")]
    inet: Option<SocketAddr>,
    /// Unix-domain stream socket target.
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Number of threads, each running connections back to back.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// Stop starting connections after this many seconds (default 5 when
    /// `--count` is not given either).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Stop after this many connections in total.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Limit, in seconds, on the connect and on each connection's whole
    /// exchange.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    timeout: f64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    bytes: u32,
}

/// Where the connections go.
#[derive(Debug, Clone)]
enum Target {
    Inet(SocketAddr),
    Unix(PathBuf),
}

/// The stop condition shared by all threads.
#[derive(Debug)]
struct Plan {
    target: Target,
    deadline: Option<Instant>,
    count: Option<u64>,
    started: AtomicU64,
    timeout: Duration,
    bytes: usize,
}

impl Plan {
    /// Claims the next connection, or says the run is over.
    fn next(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let n = self.started.fetch_add(1, Ordering::Relaxed);
        match self.count {
            Some(limit) if n >= limit => None,
            _ => Some(n),
        }
    }
}

/// What one thread measured.
#[derive(Debug, Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    reasons: BTreeMap<String, u64>,
}

impl Tally {
    fn fail(&mut self, reason: String) {
        self.errors += 1;
        if self.reasons.len() < MAX_REASONS || self.reasons.contains_key(&reason) {
            *self.reasons.entry(reason).or_insert(0) += 1;
        }
    }

    fn merge(&mut self, other: Tally) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        for (reason, n) in other.reasons {
            if self.reasons.len() < MAX_REASONS || self.reasons.contains_key(&reason) {
                *self.reasons.entry(reason).or_insert(0) += n;
            }
        }
    }
}

/// A connected stream of either family.
#[derive(Debug)]
enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    fn set_timeouts(&self, limit: Duration) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(Some(limit))?;
                s.set_write_timeout(Some(limit))
            }
            Conn::Unix(s) => {
                s.set_read_timeout(Some(limit))?;
                s.set_write_timeout(Some(limit))
            }
        }
    }

    fn shutdown_write(&self) -> std::io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }

    fn stream(&mut self) -> &mut dyn ReadWrite {
        match self {
            Conn::Tcp(s) => s,
            Conn::Unix(s) => s,
        }
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// Connects to a unix-domain socket with a time limit. A blocking connect
/// to a socket whose listen queue is full waits for room; on Linux that wait
/// is bounded by the socket's send timeout, which is set first.
fn connect_unix(path: &Path, limit: Duration) -> Result<UnixStream> {
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context("socket")?;
    let tv = TimeVal::new(
        i64::try_from(limit.as_secs()).unwrap_or(i64::MAX),
        i64::from(limit.subsec_micros()),
    );
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv).context("setsockopt SO_SNDTIMEO")?;
    let addr = UnixAddr::new(path).context("socket path")?;
    match socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(nix::errno::Errno::EAGAIN) => bail!("connect: timed out (listen queue full)"),
        Err(e) => Err(anyhow!("connect: {}", e.desc())),
    }
}

fn connect(target: &Target, limit: Duration) -> Result<Conn> {
    match target {
        Target::Inet(addr) => TcpStream::connect_timeout(addr, limit)
            .map(Conn::Tcp)
            .map_err(|e| anyhow!("connect: {}", describe(&e))),
        Target::Unix(path) => connect_unix(path, limit).map(Conn::Unix),
    }
}

/// An I/O error's message without the OS error number, so that equal
/// failures group together in the summary.
fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => "timed out".to_string(),
        _ => {
            let text = e.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_string(),
                None => text,
            }
        }
    }
}

/// The payload of connection `n`: its number, then a repeating pattern.
fn payload(n: u64, len: usize) -> Vec<u8> {
    let mut data = format!("{n:020}:").into_bytes();
    let mut i: u8 = 0;
    while data.len() < len {
        data.push(b'a' + i % 26);
        i = i.wrapping_add(1);
    }
    data.truncate(len);
    data
}

/// One connection: send, half-close, read to end of file, compare.
fn exchange(plan: &Plan, n: u64) -> Result<()> {
    let start = Instant::now();
    let end = start + plan.timeout;
    let sent = payload(n, plan.bytes);
    let mut conn = connect(&plan.target, plan.timeout)?;
    conn.set_timeouts(remaining(end)?)
        .map_err(|e| anyhow!("set timeout: {}", describe(&e)))?;
    conn.stream()
        .write_all(&sent)
        .map_err(|e| anyhow!("write: {}", describe(&e)))?;
    conn.shutdown_write()
        .map_err(|e| anyhow!("shutdown: {}", describe(&e)))?;
    let mut got = Vec::with_capacity(sent.len());
    let mut buf = [0u8; 4096];
    loop {
        conn.set_timeouts(remaining(end)?)
            .map_err(|e| anyhow!("set timeout: {}", describe(&e)))?;
        match conn.stream().read(&mut buf) {
            Ok(0) => break,
            Ok(k) => {
                got.extend_from_slice(&buf[..k]);
                if got.len() > sent.len() {
                    bail!("echo longer than what was sent");
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => bail!("read: {}", describe(&e)),
        }
    }
    if got != sent {
        bail!(
            "echo mismatch ({} bytes back of {} sent)",
            got.len(),
            sent.len()
        );
    }
    Ok(())
}

/// Time left before `end`, or a timeout error when none is.
fn remaining(end: Instant) -> Result<Duration> {
    let left = end.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("timed out");
    }
    Ok(left)
}

fn worker(plan: &Plan) -> Tally {
    let mut tally = Tally::default();
    while let Some(n) = plan.next() {
        let start = Instant::now();
        match exchange(plan, n) {
            Ok(()) => tally.latencies.push(start.elapsed()),
            Err(e) => tally.fail(format!("{e:#}")),
        }
    }
    tally
}

use postern_tests::rate_summary;

fn seconds(name: &str, secs: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| anyhow!("--{name} must be a positive number of seconds"))
}

fn run(options: Options) -> Result<bool> {
    let target = match (options.inet, options.unix) {
        (Some(addr), None) => Target::Inet(addr),
        (None, Some(path)) => Target::Unix(path),
        _ => bail!("give exactly one of --inet and --unix"),
    };
    let timeout = seconds("timeout", options.timeout)?;
    let duration = match (options.duration, options.count) {
        (Some(secs), _) => Some(seconds("duration", secs)?),
        (None, Some(_)) => None,
        (None, None) => Some(Duration::from_secs(5)),
    };
    let bytes = usize::try_from(options.bytes).context("--bytes")?;

    let start = Instant::now();
    let plan = Arc::new(Plan {
        target,
        deadline: duration.map(|d| start + d),
        count: options.count,
        started: AtomicU64::new(0),
        timeout,
        bytes,
    });
    let mut handles = Vec::new();
    for i in 0..options.concurrency {
        let plan = Arc::clone(&plan);
        let handle = thread::Builder::new()
            .name(format!("loadgen-{i}"))
            .spawn(move || worker(&plan))
            .context("starting a thread")?;
        handles.push(handle);
    }
    let mut total = Tally::default();
    for handle in handles {
        let tally = handle
            .join()
            .map_err(|_| anyhow!("a load thread panicked"))?;
        total.merge(tally);
    }
    let secs = start.elapsed().as_secs_f64();

    total.latencies.sort_unstable();
    println!(
        "conns={} errors={} {}",
        total.latencies.len(),
        total.errors,
        rate_summary(&total.latencies, secs)
    );
    for (reason, n) in &total.reasons {
        eprintln!("postern-loadgen: {n} failed: {reason}");
    }
    if total.reasons.values().sum::<u64>() < total.errors {
        eprintln!("postern-loadgen: (further failure reasons not listed)");
    }
    Ok(total.errors == 0)
}

fn main() -> ExitCode {
    let options = Options::parse();
    match run(options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("postern-loadgen: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_tests::percentile_ms;

    #[test]
    fn payload_has_requested_length_and_differs_per_connection() {
        assert_eq!(payload(7, 100).len(), 100);
        assert_eq!(payload(7, 5).len(), 5);
        assert_ne!(payload(1, 100), payload(2, 100));
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&values, 50.0), Some(50.0));
        assert_eq!(percentile_ms(&values, 99.0), Some(99.0));
        assert_eq!(percentile_ms(&values, 100.0), Some(100.0));
        assert_eq!(percentile_ms(&values[..1], 99.0), Some(1.0));
        assert_eq!(percentile_ms(&[], 50.0), None);
    }

    #[test]
    fn count_limits_the_plan() {
        let plan = Plan {
            target: Target::Unix(PathBuf::from("/nonexistent")),
            deadline: None,
            count: Some(2),
            started: AtomicU64::new(0),
            timeout: Duration::from_secs(1),
            bytes: 10,
        };
        assert_eq!(plan.next(), Some(0));
        assert_eq!(plan.next(), Some(1));
        assert_eq!(plan.next(), None);
    }
}
