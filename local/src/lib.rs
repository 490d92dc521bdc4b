//! # postern-local
//!
//! **Name**: postern-local — deliver to mailboxes, Maildirs and programs on
//! behalf of local users, after checking the instruction.
//!
//! **Synopsis** (master.cf): `local unix - n n - - local`
//!
//! **Description**: following the local-delivery essay, local does no
//! routing. The queue manager (or `postern deliver`) connects to
//! `queue_directory/private/local` and sends instructions — deliver this
//! message, as this user, to this mbox / Maildir / program — with the
//! message files attached (see `postern_common::handoff`; one request may
//! carry several messages). For each user of the request local forks, the
//! child becomes the user for good (root's mail runs as `default_privs`,
//! with root's mailbox opened by root and handed over; the mail owner is
//! refused), checks each destination against the
//! allowed-destinations policy (`postern_conf::policy`, independent
//! of the routing configuration) and the per-user policy, checks
//! permissions, delivers ([`mbox`], [`maildir`], [`program`]; the copies for
//! one mailbox together, under one lock and one fsync) and reports one
//! status per recipient of each message: delivered, deferred (4.x.y) or
//! bounced (5.x.y), with a reason.
//!
//! **Security**: runs as root (master.cf unpriv `n`), idle with the mail
//! owner as effective uid. Accepts connections only from root and the mail
//! owner (`SO_PEERCRED`). Untrusted input: the request frame (length-checked,
//! strictly decoded; a malformed one closes the connection and delivers
//! nothing), the message (streamed from the queue file's descriptor for
//! every recipient, never held whole, never interpreted beyond the header
//! scan for `Delivered-To:`), mailbox paths (normalized, policy-checked after the
//! switch to the user, opened without following links and checked after
//! opening), per-user policy files (used only when owned by the user or root
//! and not writable by others). Nothing runs as uid 0, gid 0 or the mail
//! owner.
//!
//! **Configuration**: `destination_policy` ($config_directory/destinations),
//! `mailbox_delivery_lock` (fcntl, dotlock), `mailbox_size_limit`
//! (51200000), `deliver_lock_attempts` (20), `deliver_lock_delay` (1s),
//! `stale_lock_time` (500s), `strict_mailbox_ownership` (yes),
//! `program_directory` ($config_directory/programs),
//! `program_output_is_failure` (no), `command_time_limit` (1000s),
//! `enable_original_recipient` (yes),
//! `default_privs` (nobody).
//!
//! **Exit status**: as every child: 0 normally, 78 on a configuration error.
//!
//! **See also**: Postfix local(8), pipe(8); `postern deliver`, `postern
//! destinations`.

mod agent;
mod as_user;
mod checks;
mod environment;
pub mod maildir;
pub mod mbox;
pub mod message;
mod process;
pub mod program;
mod settings;

pub use environment::PROGRAM_PATH;
pub use settings::Settings;

use postern_common::server::{self, Privileges, Program};
use postern_sys::privilege::MailOwner;

use crate::agent::Local;

/// The daemon.
pub fn run() -> i32 {
    server::run(
        Program {
            name: "local",
            privileges: Privileges::Privileged,
            ipc_timeout: true,
        },
        |ctx| {
            Ok(Local {
                settings: Settings::from_config(&ctx.config),
                owner: MailOwner::from(&ctx.mail_owner),
                reported: Vec::new(),
            })
        },
    )
}
