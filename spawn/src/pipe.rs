//! # postern-pipe
//!
//! **Name**: postern-pipe — deliver mail to an external command (a command
//! transport).
//!
//! **Synopsis** (master.cf, with a transport_maps line such as
//! `lists.example.org  mlist:`):
//! ```text
//! mlist  unix  -  n  n  -  -  pipe user=list argv=/usr/lib/mlist/deliver ${recipient} ${sender}
//! ```
//!
//! **Description**: modeled on Postfix pipe(8) and run like spawn. The queue
//! manager hands it a delivery request over the handoff protocol
//! (`postern_common::handoff`, message descriptor attached; only root or the
//! mail owner may connect). For each recipient it runs the `argv=` command
//! directly (no shell) as `user=name[:group]`, with the message on standard
//! input (streamed from the queue file: memory does not grow with the
//! message), the environment `export_environment` plus `PATH=/usr/bin:/bin`,
//! working directory `/`, in its own session, descriptors 0–2 only. In the
//! arguments after the program, `${sender}`, `${recipient}`, `${user}` (the
//! recipient's local part without extension), `${extension}`, `${domain}`,
//! `${nexthop}` and `${queue_id}` are replaced (one argument stays one
//! argument). `<service>_time_limit` (default `command_time_limit`) kills
//! the command's process group, as root. The exit status becomes the
//! recipient's status by sysexits (0 delivered, 71/75 deferred, others
//! bounced with the command's output, sanitised and capped at 4 KB, in the
//! reason).
//!
//! **Security**: as spawn: root with the mail owner as effective uid while
//! idle, root only to start and to kill a command; `user=` may not be root,
//! the mail owner or -1 (refused at startup and by `postern check`);
//! supplementary groups dropped. Untrusted input: the request frame (checked
//! as every handoff frame) and the message, which only the command reads.
//!
//! **Configuration**: `command_time_limit`, `<service>_time_limit`,
//! `export_environment`, `mail_owner`, and the skeleton's parameters.
//!
//! **Exit status**: as spawn.
//!
//! **See also**: Postfix pipe(8); postern-spawn; `postern_queue::route`.

use std::os::unix::net::UnixStream;
use std::time::Duration;

use postern_common::command::{
    delivery_command, run_with_message, CommandSpec, PipeSpec, SystemAccounts,
};
use postern_common::handoff::{
    self, DeliveryReply, DeliveryRequest, Destination, Instruction, RecipientStatus,
};
use postern_common::mail::{from_line, MessageFile, Quoting};
use postern_common::server::{self, Context, Handler, Privileges, Program, Request};
use postern_conf::attributes::PipeFlags;
use postern_conf::params;
use postern_sys::privilege::{self, MailOwner};

use crate::{command_environment, end_command_as_root};

/// Runs the pipe daemon (called by `postern-pipe`'s main).
pub fn run() -> i32 {
    server::run(
        Program {
            name: "pipe",
            privileges: Privileges::Privileged,
            ipc_timeout: true,
        },
        |ctx| {
            let owner = MailOwner::from(&ctx.mail_owner);
            let spec = PipeSpec::parse(&ctx.args.args, owner, &SystemAccounts)?;
            for i in &spec.ignored {
                log::warn!("service {}: {i}: not supported, ignored", ctx.args.service);
            }
            let attrs = spec.command;
            Ok(Pipe {
                flags: spec.flags,
                service: ctx.args.service.clone(),
                time_limit: ctx.config.service_time_limit(&ctx.args.service),
                env: command_environment(&ctx.config.list(params::EXPORT_ENVIRONMENT), |n| {
                    std::env::var(n).ok()
                }),
                owner_uid: ctx.mail_owner.uid,
                attrs,
            })
        },
    )
}

struct Pipe {
    attrs: CommandSpec,
    flags: PipeFlags,
    service: String,
    time_limit: Duration,
    env: Vec<(String, String)>,
    owner_uid: u32,
}

/// The start of the command's standard input: the envelope lines `flags=`
/// asks for (the message follows, quoted as [`quoting`] says).
pub fn envelope(flags: &PipeFlags, req: &DeliveryRequest, instr: &Instruction) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    if flags.from_line {
        out.extend_from_slice(from_line(&req.sender, req.arrival).as_bytes());
    }
    if flags.return_path {
        out.extend_from_slice(format!("Return-Path: <{}>\n", req.sender).as_bytes());
    }
    if flags.original_to {
        out.extend_from_slice(
            format!(
                "X-Original-To: {}\n",
                instr
                    .original_recipient
                    .as_deref()
                    .unwrap_or(&instr.recipient)
            )
            .as_bytes(),
        );
    }
    if flags.delivered_to {
        out.extend_from_slice(format!("Delivered-To: {}\n", instr.recipient).as_bytes());
    }
    out
}

/// How the message follows the envelope lines: `flags=>` quotes `From `
/// lines with `>`.
pub fn quoting(flags: &PipeFlags) -> Quoting {
    if flags.quote_from {
        Quoting::FromLines
    } else {
        Quoting::None
    }
}

/// Replaces the macros in one argument.
pub fn expand(arg: &str, req: &DeliveryRequest, instr: &Instruction) -> String {
    let (local, domain) = instr
        .recipient
        .rsplit_once('@')
        .unwrap_or((instr.recipient.as_str(), ""));
    // "user+ext": drop the extension and the delimiter before it.
    let user = instr
        .extension
        .as_deref()
        .and_then(|ext| local.strip_suffix(ext))
        .map(|s| {
            let mut c = s.chars();
            c.next_back();
            c.as_str()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or(local);
    let nexthop = match &instr.destination {
        Destination::Transport { nexthop } => nexthop.as_str(),
        _ => "",
    };
    arg.replace("${sender}", &req.sender)
        .replace("${recipient}", &instr.recipient)
        .replace("${user}", user)
        .replace("${extension}", instr.extension.as_deref().unwrap_or(""))
        .replace("${domain}", domain)
        .replace("${nexthop}", nexthop)
        .replace("${queue_id}", &req.queue_id)
}

impl Pipe {
    fn deliver(
        &self,
        req: &DeliveryRequest,
        instr: &Instruction,
        message: &MessageFile,
    ) -> RecipientStatus {
        if !matches!(instr.destination, Destination::Transport { .. }) {
            return RecipientStatus::bounced(
                "5.3.5",
                format!(
                    "service {} runs its master.cf command only; the request named {}",
                    self.service, instr.destination
                ),
            );
        }
        let program = self.attrs.argv[0].clone();
        let argv: Vec<String> = std::iter::once(program.clone())
            .chain(self.attrs.argv[1..].iter().map(|a| expand(a, req, instr)))
            .collect();
        // The user= identity, with no supplementary groups.
        let mut cmd = delivery_command(
            &argv,
            &self.env,
            std::path::Path::new("/"),
            Some(self.attrs.run_as),
        );
        // The command leads its own group; what it left running goes with
        // it, in its group or not (this process is its subreaper).
        let service = &self.service;
        let end = |pid: i32| {
            if let Err(e) = end_command_as_root(pid) {
                log::error!("service {service}: {e}");
            }
        };
        let body = match message.owned_reader() {
            Ok(b) => b,
            Err(e) => {
                return RecipientStatus::deferred(
                    "4.3.0",
                    format!("command {program}: cannot read the message: {e}"),
                )
            }
        };
        let envelope = envelope(&self.flags, req, instr);
        // Each recipient's copy is streamed from the queue file afresh.
        match run_with_message(
            &mut cmd,
            envelope,
            body,
            quoting(&self.flags),
            self.time_limit,
            end,
        ) {
            Ok(ended) => {
                ended.delivery_status(&program, &format!("command {program}"), self.time_limit)
            }
            Err(e) => RecipientStatus::deferred(
                "4.3.0",
                format!("cannot run {program} as {}: {e}", self.attrs.user_text),
            ),
        }
    }
}

impl Handler for Pipe {
    fn handle(&mut self, _ctx: &Context, request: Request) {
        let Request::Stream(fd) = request else {
            log::warn!(
                "service {}: pipe serves stream connections only; trigger ignored",
                self.service
            );
            return;
        };
        let conn = UnixStream::from(fd);
        let Some((messages, _held)) = handoff::accept_request(&conn, self.owner_uid) else {
            return;
        };
        // One command per message and recipient, in order.
        let replies = messages
            .iter()
            .map(|(req, message)| DeliveryReply {
                statuses: self.deliver_message(req, message),
            })
            .collect();
        if let Err(e) = handoff::send_reply(&conn, replies) {
            log::warn!("service {}: cannot send the reply: {e}", self.service);
        }
        drop(conn);
        // Reported: what the commands left running may finish, up to their
        // time limit; then it is killed (as root: it runs as user=).
        let ended = postern_common::descendants::finish_background(|| {
            privilege::as_root(|| postern_common::descendants::end_all(None))
                .map_err(|e| format!("cannot kill: {e}"))?
        });
        match ended {
            Ok(0) => {}
            Ok(n) => log::info!(
                "service {}: killed {n} process(es) a command left running at its time limit",
                self.service
            ),
            Err(e) => log::error!("service {}: {e}", self.service),
        }
    }
}

impl Pipe {
    fn deliver_message(
        &self,
        req: &DeliveryRequest,
        message: &MessageFile,
    ) -> Vec<RecipientStatus> {
        req.recipients
            .iter()
            .map(|instr| {
                let st = self.deliver(req, instr, message);
                log::info!(
                    "{}: to=<{}>, service={}, command={}, status={:?} ({}) {}",
                    req.queue_id,
                    instr.recipient,
                    self.service,
                    self.attrs.argv[0],
                    st.outcome,
                    st.dsn,
                    st.reason
                );
                st
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_common::mail::copy_body;

    #[test]
    fn macros() {
        let req = DeliveryRequest {
            queue_id: "Q1".into(),
            sender: "ann@example.org".into(),
            arrival: 0,
            message_offset: 0,
            message_size: None,
            recipients: Vec::new(),
        };
        let instr = Instruction {
            recipient: "list+owner@lists.test".into(),
            original_recipient: None,
            user: "list".into(),
            extension: Some("owner".into()),
            destination: Destination::Transport {
                nexthop: "hub".into(),
            },
            uncertain: false,
        };
        assert_eq!(
            expand(
                "${user}|${extension}|${domain}|${nexthop}|${queue_id}|${sender}|${recipient}",
                &req,
                &instr
            ),
            "list|owner|lists.test|hub|Q1|ann@example.org|list+owner@lists.test"
        );
        assert_eq!(expand("-x", &req, &instr), "-x");
        // An extension that is not the address's own (or not at a character
        // boundary) leaves the local part whole, never panics.
        let odd = Instruction {
            recipient: "é@x".into(),
            original_recipient: None,
            extension: Some("\u{301}xyz".into()),
            ..instr.clone()
        };
        assert_eq!(expand("${user}", &req, &odd), "é");
        let flags = PipeFlags {
            from_line: true,
            return_path: true,
            original_to: false,
            delivered_to: true,
            quote_from: true,
        };
        let mut input = envelope(&flags, &req, &instr);
        copy_body(&mut &b"S: x\n\nFrom me\n"[..], &mut input, quoting(&flags)).unwrap();
        let text = String::from_utf8(input).unwrap();
        assert_eq!(
            text,
            "From ann@example.org  Thu Jan  1 00:00:00 1970\nReturn-Path: <ann@example.org>\n\
             Delivered-To: list+owner@lists.test\nS: x\n\n>From me\n"
        );
    }
}
