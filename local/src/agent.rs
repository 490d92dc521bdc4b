//! The agent's side of an exchange: the checks made as root before any
//! switch (the account, who the delivery runs as, the envelope, mail loops),
//! the mailboxes root must create or open, one delivery process per user of
//! the request, and the reply.

use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use postern_common::account::{self, Account};
use postern_common::handoff::{
    self, DeliveryReply, DeliveryRequest, Destination, Instruction, RecipientStatus,
};
use postern_common::mail::MessageFile;
use postern_common::server::{Context, Handler, Request};
use postern_conf::policy::{Kind, Policy, Who};
use postern_sys::privilege::{self, MailOwner, RunAs};

use crate::as_user::{deliver_as_user, UserContext};
use crate::checks::{allowed, check_copy};
use crate::mbox;
use crate::message::{self, Copy};
use crate::process::{in_child_as, reap_reported, try_reap_reported};
use crate::settings::Settings;

pub(crate) struct Local {
    pub(crate) settings: Settings,
    pub(crate) owner: MailOwner,
    /// Delivery processes that have reported but may not have exited yet
    /// (they wait for what their programs left running, up to the time
    /// limit): reaped without blocking between requests, and waited for
    /// when the agent exits.
    pub(crate) reported: Vec<i32>,
}

impl Drop for Local {
    fn drop(&mut self) {
        for pid in std::mem::take(&mut self.reported) {
            reap_reported(pid);
        }
    }
}

/// A delivery that passed the checks made before the switch: the account
/// it is for and the account it runs as.
struct Prepared {
    account: Account,
    runner: Account,
    run_as: RunAs,
}

/// One recipient's copy of one message of the request.
fn copy_of<'a>(
    request: &'a DeliveryRequest,
    body: &'a MessageFile,
    instr: &'a Instruction,
) -> Copy<'a> {
    Copy {
        body,
        sender: &request.sender,
        recipient: &instr.recipient,
        arrival: request.arrival,
        queue_id: &request.queue_id,
        uncertain: instr.uncertain,
    }
}

impl Handler for Local {
    fn handle(&mut self, _ctx: &Context, request: Request) {
        let Request::Stream(fd) = request else {
            log::warn!("local serves stream connections only; trigger ignored");
            return;
        };
        self.reported.retain(|&pid| !try_reap_reported(pid));
        let conn = UnixStream::from(fd);
        // `_held`: the message descriptors stay open (and are inherited
        // by the delivery processes) until this request is over.
        let Some((messages, _held)) = handoff::accept_request(&conn, self.owner.uid) else {
            return;
        };
        let policy = self.settings.system_policy();
        // Each message's Delivered-To headers, read once (not once per
        // recipient: a large message with many recipients would cost their
        // product).
        // A message that cannot be read (as for a request that does not
        // decode) closes the connection: nothing is delivered.
        let mut seen: Vec<Vec<String>> = Vec::with_capacity(messages.len());
        for (req, body) in &messages {
            match message::delivered_to(body) {
                Ok(s) => seen.push(s),
                Err(e) => {
                    log::warn!(
                        "queue id {}: cannot read the message: {e}; nothing delivered",
                        req.queue_id
                    );
                    return;
                }
            }
        }
        let mut statuses: Vec<Vec<Option<RecipientStatus>>> = messages
            .iter()
            .map(|(req, _)| vec![None; req.recipients.len()])
            .collect();
        // The deliveries of each user, from every message of the request,
        // go to one process that has become that user.
        let mut groups: Vec<(Prepared, Vec<(usize, usize)>)> = Vec::new();
        for (m, (req, _)) in messages.iter().enumerate() {
            for (r, instr) in req.recipients.iter().enumerate() {
                if let Err(e) = &policy {
                    statuses[m][r] = Some(RecipientStatus::deferred(
                        "4.3.5",
                        format!("destination policy unusable: {e}"),
                    ));
                    continue;
                }
                // The account is looked up once per user of the request.
                let g = match groups
                    .iter()
                    .position(|(g, _)| g.account.name == instr.user)
                {
                    Some(g) => g,
                    None => match self.prepare(instr) {
                        Ok(p) => {
                            groups.push((p, Vec::new()));
                            groups.len() - 1
                        }
                        Err(status) => {
                            statuses[m][r] = Some(status);
                            continue;
                        }
                    },
                };
                let (p, items) = &mut groups[g];
                match check_copy(instr, &req.sender, &seen[m]) {
                    Ok(()) => {
                        self.create_spool_mailbox(instr, &p.account, &p.runner);
                        items.push((m, r));
                    }
                    Err(status) => statuses[m][r] = Some(status),
                }
            }
        }
        let mut reap: Vec<i32> = Vec::new();
        if let Ok(system) = &policy {
            // A user whose every copy failed the checks has nothing to fork for.
            for (p, items) in groups.iter().filter(|(_, items)| !items.is_empty()) {
                let work: Vec<(&Instruction, Copy<'_>)> = items
                    .iter()
                    .map(|&(m, r)| {
                        let (req, body) = &messages[m];
                        let instr = &req.recipients[r];
                        (instr, copy_of(req, body, instr))
                    })
                    .collect();
                // Each program gets the full time limit; the process as a
                // whole gets all of them, plus a margin for the files.
                let programs: u32 = work
                    .iter()
                    .map(|(instr, _)| match &instr.destination {
                        Destination::Programs(p) => p.len().max(1) as u32,
                        _ => 1,
                    })
                    .sum();
                let limit = self.settings.time_limit * programs + Duration::from_secs(60);
                let for_root = self.open_root_mailboxes(&work, system, &p.account);
                let results = in_child_as(p.run_as, limit, &mut reap, work.len(), || {
                    let ctx = UserContext {
                        system,
                        account: &p.account,
                        runner: &p.runner,
                        settings: &self.settings,
                        root_mailboxes: &for_root,
                    };
                    let statuses = deliver_as_user(&work, &ctx);
                    // Its peak memory, which must not grow with the
                    // messages (they are streamed): logged before the
                    // report, for the benchmark and the operator.
                    if let Some(kb) = postern_sys::procfs::own_status_kb("VmHWM") {
                        log::info!(
                            "delivery process for {}: {} copies, peak memory {kb} kB",
                            p.account.name,
                            work.len()
                        );
                    }
                    statuses
                });
                drop(for_root);
                for (&(m, r), status) in items.iter().zip(results) {
                    statuses[m][r] = Some(status);
                }
            }
        }
        let replies = messages
            .iter()
            .zip(statuses)
            .map(|((req, _), statuses)| {
                let statuses = req
                    .recipients
                    .iter()
                    .zip(statuses)
                    .map(|(instr, status)| {
                        let status = status.unwrap_or_else(|| {
                            RecipientStatus::deferred("4.3.0", "no delivery was attempted")
                        });
                        log::info!(
                            "{}: to=<{}>, user={}, {}, status={:?} ({}) {}",
                            req.queue_id,
                            instr.recipient,
                            instr.user,
                            instr.destination,
                            status.outcome,
                            status.dsn,
                            status.reason
                        );
                        status
                    })
                    .collect();
                DeliveryReply { statuses }
            })
            .collect();
        if let Err(e) = handoff::send_reply(&conn, replies) {
            let ids: Vec<&str> = messages.iter().map(|(r, _)| r.queue_id.as_str()).collect();
            log::warn!("queue ids {}: cannot send the reply: {e}", ids.join(" "));
        }
        // The delivery processes have reported; reap those that have
        // exited, without waiting for the others (each ends by its
        // programs' time limit).
        self.reported.extend(reap);
        self.reported.retain(|&pid| !try_reap_reported(pid));
    }
}

impl Local {
    /// The checks made before the switch to the user, once per user: the
    /// account exists, and who the delivery runs as (root's mail as
    /// default_privs; never root or the mail owner).
    fn prepare(&self, instr: &Instruction) -> Result<Prepared, RecipientStatus> {
        let account = match account::user_by_name(&instr.user) {
            Ok(Some(a)) => a,
            Ok(None) => {
                return Err(RecipientStatus::bounced(
                    "5.1.1",
                    format!("no such user: {}", instr.user),
                ))
            }
            Err(e) => return Err(RecipientStatus::deferred("4.3.0", e.to_string())),
        };
        let runner = if account.uid == 0 {
            match account::user_by_name(&self.settings.default_privs) {
                Ok(Some(p)) => p,
                _ => {
                    return Err(RecipientStatus::deferred(
                        "4.3.5",
                        format!(
                            "default_privs {} does not exist",
                            self.settings.default_privs
                        ),
                    ))
                }
            }
        } else {
            account.clone()
        };
        let run_as = RunAs::new(
            runner.uid,
            runner.gid,
            self.owner,
            &format!("user {}", instr.user),
        )
        .map_err(|e| RecipientStatus::bounced("5.7.1", format!("refusing to deliver: {e}")))?;
        Ok(Prepared {
            account,
            runner,
            run_as,
        })
    }
}
impl Local {
    /// Root's mailboxes among `work`, opened by root before the delivery
    /// process (which runs as `default_privs`) starts: after the system
    /// policy allows the path, each is created owned by root (0600) or
    /// checked to be root's, and its descriptor goes to the delivery
    /// process. Root's mail is thus never readable by `default_privs`,
    /// and no delivery process runs as root. Empty for other users.
    fn open_root_mailboxes(
        &self,
        work: &[(&Instruction, Copy<'_>)],
        system: &Policy,
        account: &Account,
    ) -> Vec<(PathBuf, Result<std::fs::File, RecipientStatus>)> {
        let mut opened: Vec<(PathBuf, Result<std::fs::File, RecipientStatus>)> = Vec::new();
        if account.uid != 0 {
            return opened;
        }
        let who = Who {
            user: &account.name,
            home: &account.home,
        };
        for (instr, _) in work {
            let Destination::Mailbox(path) = &instr.destination else {
                continue;
            };
            if opened.iter().any(|(p, _)| p == path) {
                continue;
            }
            // Root's own policy file is not consulted (default_privs,
            // which would read it, cannot search root's home).
            let file = allowed(system, None, Kind::Mailbox, path, &who).and_then(|()| {
                let target = mbox::Target {
                    path,
                    uid: 0,
                    strict_owner: true,
                    size_limit: self.settings.size_limit,
                    lock: &self.settings.lock,
                };
                privilege::as_root(|| mbox::open_for_root(&target)).unwrap_or_else(|e| {
                    Err(RecipientStatus::deferred(
                        "4.3.0",
                        format!("cannot open root's mailbox {}: {e}", path.display()),
                    ))
                })
            });
            opened.push((path.clone(), file));
        }
        opened
    }

    /// The user's mailbox in `mail_spool_directory`, which users usually may
    /// not create themselves, is created by root (empty, 0600, owned by the
    /// user), as Postfix's local does. Only that exact path: everything else
    /// is created, if at all, as the user after the policy check.
    fn create_spool_mailbox(&self, instr: &Instruction, account: &Account, runner: &Account) {
        let Destination::Mailbox(path) = &instr.destination else {
            return;
        };
        // Root's is created by root for root (open_root_mailboxes).
        if *path != self.settings.spool.join(&account.name) || account.uid == 0 {
            return;
        }
        if std::fs::symlink_metadata(path).is_ok() {
            return;
        }
        let created = privilege::as_root(|| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(path)?;
            std::os::unix::fs::fchown(&f, Some(runner.uid), Some(runner.gid))
        });
        match created {
            Ok(Ok(())) => log::info!("created mailbox {} for {}", path.display(), runner.name),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Ok(Err(e)) => log::warn!("cannot create mailbox {}: {e}", path.display()),
            Err(e) => log::warn!("cannot create mailbox {}: {e}", path.display()),
        }
    }
}
