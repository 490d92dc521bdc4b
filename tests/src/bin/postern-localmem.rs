//! postern-localmem — the memory check of local delivery, for the benchmark
//! drivers (`scripts/bench-local` calls it; any driver can).
//!
//! Hands one message of `--size` bytes (default 100 MiB; text lines, every
//! 16th a `From ` line that mbox copies quote) to postern's local delivery
//! agent at `--socket`, the way the queue manager does
//! ([`postern_common::handoff::deliver`]), with `--recipients` recipients
//! (default 10), each to its own mbox `DIR/localmem.N` (`--dir`, which the
//! destination policy must allow and `mailbox_size_limit` must not stop),
//! delivered as `--user`. Every copy must be reported delivered and have
//! the expected length. Then it reads the delivery process's peak memory
//! from the line that process logs before it reports (`delivery process
//! for USER: N copies, peak memory K kB`, VmHWM) in `--log` (the instance's
//! `maillog_file`), removes the mailboxes, and prints one line:
//!
//! ```text
//! size=S recipients=N secs=T peak_rss_kb=K
//! ```
//!
//! Exit status: 0 when every copy was delivered and the peak was found, 1
//! otherwise (the reason on standard error), 2 on bad usage.

use std::io::{Seek, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use postern_common::handoff::{self, DeliveryRequest, Destination, Instruction, Outcome};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "postern-localmem",
    about = "Peak memory of postern-local's delivery process for one large message"
)]
struct Options {
    /// postern-local's socket (`queue_directory/private/local`).
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The account the deliveries run as.
    #[arg(long, value_name = "NAME")]
    user: String,
    /// The directory the mboxes go to (writable by the user).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The instance's maillog_file.
    #[arg(long, value_name = "FILE")]
    log: PathBuf,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100 << 20)]
    size: usize,
    /// Recipients (one mbox each).
    #[arg(long, default_value_t = 10)]
    recipients: usize,
    /// Deadline of the exchange, seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

/// The message: a few headers, then 64-byte lines, every 16th a `From `
/// line. Returns it in an unlinked file, and how many lines are quoted.
fn message(size: usize) -> Result<(OwnedFd, u64, u64)> {
    let mut file = tempfile::tempfile().context("cannot create the message file")?;
    let mut w = std::io::BufWriter::new(&mut file);
    let head = b"Subject: postern-localmem\nFrom: bench@example.org\n\n";
    w.write_all(head)?;
    let (mut written, mut quoted, mut n) = (head.len(), 0u64, 0u64);
    while written < size {
        let line = if n % 16 == 0 {
            quoted += 1;
            format!("From line {n:053}\n")
        } else {
            format!("body line {n:053}\n")
        };
        w.write_all(line.as_bytes())?;
        written += line.len();
        n += 1;
    }
    w.flush()?;
    drop(w);
    file.rewind()?;
    Ok((OwnedFd::from(file), written as u64, quoted))
}

/// The last peak memory `user`'s delivery process of `copies` copies logged.
fn peak_kb(log: &std::path::Path, user: &str, copies: usize) -> Result<u64> {
    let text = std::fs::read_to_string(log)
        .with_context(|| format!("cannot read the log {}", log.display()))?;
    let needle = format!("delivery process for {user}: {copies} copies, peak memory ");
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains(&needle))
        .with_context(|| format!("{} has no line \"{needle}...\"", log.display()))?;
    line.rsplit_once("peak memory ")
        .and_then(|(_, v)| v.strip_suffix(" kB"))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("cannot read the peak in: {line}"))
}

fn run(o: &Options) -> Result<String> {
    if o.recipients == 0 || o.recipients > 1000 {
        bail!("--recipients must be 1 to 1000");
    }
    let (fd, len, quoted) = message(o.size)?;
    let boxes: Vec<PathBuf> = (1..=o.recipients)
        .map(|n| o.dir.join(format!("localmem.{n}")))
        .collect();
    for b in &boxes {
        match std::fs::remove_file(b) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => bail!("cannot remove the old {}: {e}", b.display()),
        }
    }
    let recipient = format!("{}@localhost", o.user);
    let request = DeliveryRequest {
        queue_id: "LOCALMEM".into(),
        sender: "bench@example.org".into(),
        arrival: 1_795_245_296,
        message_offset: 0,
        message_size: None,
        recipients: boxes
            .iter()
            .map(|b| Instruction {
                recipient: recipient.clone(),
                original_recipient: None,
                user: o.user.clone(),
                extension: None,
                destination: Destination::Mailbox(b.clone()),
                uncertain: false,
            })
            .collect(),
    };
    let started = Instant::now();
    let reply = handoff::deliver(&o.socket, &request, &fd, Duration::from_secs(o.timeout))
        .context("the exchange with postern-local failed")?;
    let secs = started.elapsed().as_secs_f64();
    let result = (|| {
        for (s, b) in reply.statuses.iter().zip(&boxes) {
            if s.outcome != Outcome::Delivered {
                bail!("{}: {:?} {} {}", b.display(), s.outcome, s.dsn, s.reason);
            }
            // From line, Return-Path, Delivered-To, the quoted message, the
            // blank line.
            let envelope = format!("Return-Path: <bench@example.org>\nDelivered-To: {recipient}\n");
            let from_line = format!(
                "From bench@example.org  {}\n",
                postern_common::log::asctime(request.arrival)
            );
            let want = (from_line.len() + envelope.len()) as u64 + len + quoted + 1;
            let got = std::fs::metadata(b)?.len();
            if got != want {
                bail!("{} holds {got} bytes, not {want}", b.display());
            }
        }
        peak_kb(&o.log, &o.user, o.recipients)
    })();
    for b in &boxes {
        if let Err(e) = std::fs::remove_file(b) {
            eprintln!("postern-localmem: cannot remove {}: {e}", b.display());
        }
    }
    let kb = result?;
    Ok(format!(
        "size={len} recipients={} secs={secs:.2} peak_rss_kb={kb}",
        o.recipients
    ))
}

fn main() -> ExitCode {
    let o = match Options::try_parse() {
        Ok(o) => o,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print(); // nothing more can be done if stderr is gone
            return ExitCode::from(if usage { 2 } else { 0 });
        }
    };
    match run(&o) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("postern-localmem: {e:#}");
            ExitCode::FAILURE
        }
    }
}
