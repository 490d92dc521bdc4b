//! `postern deliver`: hand one message to the local delivery agent, as the
//! queue manager does, and print each recipient's result.
//!
//! ```text
//! postern [-c DIR] deliver -f SENDER --user NAME
//!         (--mailbox PATH | --maildir DIR/ | --program 'COMMAND ARGS'...)
//!         [--recipient ADDR] < message
//! ```
//!
//! Exit status: 0 when every recipient was delivered, 75 when one was
//! deferred (or the agent could not be reached), 69 when one bounced.

use std::io::{Read, Seek, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_common::handoff::{self, DeliveryRequest, Destination, Instruction, Outcome};
use postern_common::sysexits;
use postern_conf::{params, Config, ServiceType};

use postern_common::instance::endpoint_dir;

/// The options of `postern deliver`.
#[derive(Debug, Clone)]
pub struct Options {
    /// Envelope sender.
    pub sender: String,
    /// The account to deliver as.
    pub user: String,
    /// The recipient address (default: the user's name).
    pub recipient: Option<String>,
    /// Where to deliver.
    pub destination: Destination,
}

/// The local service's endpoint in `config`.
pub fn local_socket(config: &Config) -> Result<PathBuf, String> {
    let entry = config
        .master
        .services
        .iter()
        .find(|s| s.command == "local" && s.kind == ServiceType::Unix)
        .ok_or("master.cf has no local service (local unix - n n - - local)")?;
    Ok(endpoint_dir(config, entry.private).join(&entry.name))
}

/// Runs the command; returns the exit status.
pub fn run(config: &Config, opts: Options) -> i32 {
    let socket = match local_socket(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("postern: fatal: {e}");
            return sysexits::EX_CONFIG;
        }
    };
    let message = match spool_stdin() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("postern: fatal: cannot read the message from standard input: {e}");
            return sysexits::EX_IOERR;
        }
    };
    let recipient = opts.recipient.clone().unwrap_or_else(|| opts.user.clone());
    let request = DeliveryRequest {
        queue_id: format!("deliver-{}", std::process::id()),
        sender: opts.sender.clone(),
        arrival: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        message_offset: 0,
        message_size: None,
        recipients: vec![Instruction {
            // Given here, as to Postfix: it is also the original recipient.
            original_recipient: Some(recipient.clone()),
            recipient,
            user: opts.user.clone(),
            extension: None,
            destination: opts.destination,
            uncertain: false,
        }],
    };
    let timeout = config.time(params::COMMAND_TIME_LIMIT) + Duration::from_secs(120);
    let statuses = match handoff::deliver(&socket, &request, &message, timeout) {
        Ok(reply) => reply.statuses,
        Err(e) => handoff::all_deferred(&request, &e),
    };
    let mut code = 0;
    for (instr, s) in request.recipients.iter().zip(&statuses) {
        let word = match s.outcome {
            Outcome::Delivered => "delivered",
            Outcome::Deferred => "deferred",
            Outcome::Bounced => "bounced",
        };
        println!("{}: {word} ({}): {}", instr.recipient, s.dsn, s.reason);
        code = match (code, s.outcome) {
            (_, Outcome::Deferred) | (sysexits::EX_TEMPFAIL, _) => sysexits::EX_TEMPFAIL,
            (_, Outcome::Bounced) => sysexits::EX_UNAVAILABLE,
            (c, Outcome::Delivered) => c,
        };
    }
    code
}

/// Copies standard input to an unlinked temporary file, for the agent to read.
fn spool_stdin() -> std::io::Result<OwnedFd> {
    let mut file = tempfile::tempfile()?;
    let mut input = Vec::new();
    std::io::stdin().lock().read_to_end(&mut input)?;
    file.write_all(&input)?;
    file.flush()?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}
