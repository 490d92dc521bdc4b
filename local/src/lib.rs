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
//! nothing), the message (never interpreted beyond the header scan for
//! `Delivered-To:`), mailbox paths (normalized, policy-checked after the
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

pub mod maildir;
pub mod mbox;
pub mod message;
pub mod program;

use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_common::account::{self, Account};
use postern_common::handoff::{
    self, DeliveryReply, DeliveryRequest, Destination, Instruction, RecipientStatus,
};
use postern_common::server::{self, Context, Handler, Privileges, Program, Request};
use postern_conf::{params, Config, Source};
use postern_sys::privilege::{self, MailOwner, RunAs};
use postern_sys::{self as sys, Forked};

use crate::message::Copy;
use postern_common::destinations::check_real;
use postern_conf::policy::{self, Kind, Policy, Who};

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

/// local's settings, from main.cf.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the system policy is (or `None` with the embedded configuration).
    pub policy_file: Option<PathBuf>,
    /// Locking.
    pub lock: mbox::LockPolicy,
    /// `mailbox_size_limit`.
    pub size_limit: u64,
    /// `strict_mailbox_ownership`.
    pub strict_owner: bool,
    /// `program_directory`.
    pub program_dir: PathBuf,
    /// `program_output_is_failure`.
    pub output_is_failure: bool,
    /// `command_time_limit`.
    pub time_limit: Duration,
    /// `default_privs`.
    pub default_privs: String,
    /// `mail_spool_directory`.
    pub spool: PathBuf,
    /// `enable_original_recipient`.
    pub original_recipient: bool,
}

impl Settings {
    /// Reads the settings.
    pub fn from_config(c: &Config) -> Self {
        let methods = c
            .list(params::MAILBOX_DELIVERY_LOCK)
            .iter()
            .filter_map(|m| match m.as_str() {
                "fcntl" => Some(mbox::Lock::Fcntl),
                "flock" => Some(mbox::Lock::Flock),
                "dotlock" => Some(mbox::Lock::Dotlock),
                _ => None,
            })
            .collect();
        Settings {
            spool: PathBuf::from(c.text(params::MAIL_SPOOL_DIRECTORY)),
            policy_file: match &c.source {
                Source::Dir(_) => Some(PathBuf::from(c.text(params::DESTINATION_POLICY))),
                Source::Embedded(_) => None,
            },
            lock: mbox::LockPolicy {
                methods,
                attempts: u32::try_from(c.int(params::DELIVER_LOCK_ATTEMPTS)).unwrap_or(20),
                delay: c.time(params::DELIVER_LOCK_DELAY),
                stale: c.time(params::STALE_LOCK_TIME),
            },
            size_limit: u64::try_from(c.int(params::MAILBOX_SIZE_LIMIT)).unwrap_or(0),
            strict_owner: c.bool(params::STRICT_MAILBOX_OWNERSHIP),
            program_dir: PathBuf::from(c.text(params::PROGRAM_DIRECTORY)),
            output_is_failure: c.bool(params::PROGRAM_OUTPUT_IS_FAILURE),
            time_limit: c.time(params::COMMAND_TIME_LIMIT),
            default_privs: c.text(params::DEFAULT_PRIVS).to_string(),
            original_recipient: c.bool(params::ENABLE_ORIGINAL_RECIPIENT),
        }
    }

    /// The system policy (the file, or the embedded default).
    pub fn system_policy(&self) -> Result<Policy, String> {
        match &self.policy_file {
            None => {
                let text = postern_conf::embedded::destinations(&self.program_dir);
                policy::parse("(embedded)/destinations", &text, true).map_err(|e| e.join("; "))
            }
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                policy::parse(&path.display().to_string(), &text, true).map_err(|e| e.join("; "))
            }
        }
    }
}

struct Local {
    settings: Settings,
    owner: MailOwner,
    /// Delivery processes that have reported but may not have exited yet
    /// (they wait for what their programs left running, up to the time
    /// limit): reaped without blocking between requests, and waited for
    /// when the agent exits.
    reported: Vec<i32>,
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
fn copy_of<'a>(request: &'a DeliveryRequest, body: &'a [u8], instr: &'a Instruction) -> Copy<'a> {
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
        let seen: Vec<Vec<String>> = messages
            .iter()
            .map(|(_, body)| message::delivered_to(body))
            .collect();
        let mut statuses: Vec<Vec<Option<RecipientStatus>>> = messages
            .iter()
            .map(|(req, _)| vec![None; req.recipients.len()])
            .collect();
        // The deliveries of each user, from every message of the request,
        // go to one process that has become that user.
        let mut groups: Vec<(Prepared, Vec<(usize, usize)>)> = Vec::new();
        for (m, (req, body)) in messages.iter().enumerate() {
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
                match check_copy(instr, &copy_of(req, body, instr), &seen[m]) {
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
                    deliver_as_user(&work, &ctx)
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

/// The checks made before the switch to the user, per copy: the envelope
/// addresses, mail loops.
fn check_copy(
    instr: &Instruction,
    copy: &Copy<'_>,
    delivered_to: &[String],
) -> Result<(), RecipientStatus> {
    for (what, value) in [("sender", copy.sender), ("recipient", copy.recipient)] {
        if value.chars().any(|c| c.is_control()) {
            return Err(RecipientStatus::bounced(
                "5.1.7",
                format!("{what} address contains control characters: refused"),
            ));
        }
    }
    if message::is_loop(delivered_to, copy.recipient) {
        return Err(RecipientStatus::bounced(
            "5.4.6",
            format!("mail forwarding loop for {}", instr.recipient),
        ));
    }
    Ok(())
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

/// Runs `work` in a forked child that has become `run_as` for good, and
/// returns the `n` statuses it reports. A child that dies without reporting
/// (or reports the wrong number) defers all `n`. The child's pid goes to
/// `reap` once it has reported: the reply to the client does not wait for
/// the child's exit.
fn in_child_as(
    run_as: RunAs,
    limit: Duration,
    reap: &mut Vec<i32>,
    n: usize,
    work: impl FnOnce() -> Vec<RecipientStatus>,
) -> Vec<RecipientStatus> {
    let all = |status: RecipientStatus| vec![status; n];
    let (read_end, write_end) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return all(RecipientStatus::deferred("4.3.0", format!("pipe: {e}"))),
    };
    // Root for the fork and the switch; the child drops everything.
    let forked = privilege::as_root(sys::fork_single_threaded);
    match forked {
        Ok(Ok(Forked::Child)) => {
            drop(read_end);
            let status = match privilege::drop_to(run_as.uid(), run_as.gid()) {
                // Not dumpable: the user cannot ptrace it for the
                // descriptors it inherited from the agent.
                Ok(()) if nix::sys::prctl::set_dumpable(false).is_ok() => work(),
                Ok(()) => all(RecipientStatus::deferred(
                    "4.3.0",
                    "cannot make the delivery process non-dumpable",
                )),
                Err(e) => all(RecipientStatus::deferred(
                    "4.3.0",
                    format!("cannot switch to uid {}: {e}", run_as.uid()),
                )),
            };
            // Length-prefixed, so that the parent need not wait for the exit.
            let bytes = postcard::to_stdvec(&status).unwrap_or_default();
            let mut framed = (bytes.len() as u32).to_le_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            let mut w = std::fs::File::from(write_end);
            let _ = std::io::Write::write_all(&mut w, &framed);
            drop(w);
            // Reported: now what the programs left running may finish, up
            // to their time limit (the agent does not wait for this).
            if let Err(e) = postern_common::descendants::finish_background(|| {
                postern_common::descendants::end_all(None)
            }) {
                log::warn!("delivery process: background work of a program: {e}");
            }
            // Nothing is buffered (the log writes whole lines) and the exit
            // handlers belong to the agent: leave without running them.
            sys::exit_now(0)
        }
        Ok(Ok(Forked::Parent(pid))) => {
            drop(write_end);
            let status = read_status(read_end, pid, limit).and_then(|s| {
                if s.len() == n {
                    Ok(s)
                } else {
                    Err(format!(
                        "it reported {} statuses for {n} deliveries",
                        s.len()
                    ))
                }
            });
            if status.is_err() {
                // Stopped or hung (the user can signal its own processes):
                // kill it with root's rights, before reaping, so the pid
                // cannot have been reused; and the program it may be
                // running, whose time limit it can no longer enforce.
                let _ = privilege::as_root(|| kill_delivery_process(pid));
            }
            match status {
                Ok(s) => {
                    reap.push(pid);
                    s
                }
                Err(why) => {
                    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
                    // It may have written some copies before it failed.
                    all(RecipientStatus::unknown(format!(
                        "delivery process {pid} failed: {why}"
                    )))
                }
            }
        }
        Ok(Err(e)) => all(RecipientStatus::deferred("4.3.0", format!("fork: {e}"))),
        Err(e) => all(RecipientStatus::deferred("4.3.0", format!("fork: {e}"))),
    }
}

/// Kills a delivery process that failed to report, and every process below
/// it (the programs it started and all they started). It is stopped first,
/// so that it cannot reap a program meanwhile and let its pid be reused.
fn kill_delivery_process(pid: i32) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    // Every descendant, in the program's group or not: the stopped
    // delivery process (a subreaper while it runs a program) holds them.
    postern_common::descendants::kill_below_stopped(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
}

/// Whether the delivery process `pid` is stopped (its user can stop it: it
/// runs with the user's ids). The stop is left to be seen again.
fn is_stopped(pid: i32) -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    matches!(
        waitid(
            Id::Pid(nix::unistd::Pid::from_raw(pid)),
            WaitPidFlag::WSTOPPED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT,
        ),
        Ok(WaitStatus::Stopped(..))
    )
}

/// Reaps a delivery process that has reported. If its user stopped it
/// before it could exit, it is killed (with root's rights) rather than
/// waited for: a stopped child never exits.
fn reap_reported(pid: i32) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let child = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(child, Some(WaitPidFlag::WUNTRACED)) {
            Ok(WaitStatus::Stopped(..)) => {
                let _ = privilege::as_root(|| kill_delivery_process(pid));
            }
            Err(nix::errno::Errno::EINTR) => {}
            _ => return,
        }
    }
}

/// Reaps a delivery process that has reported, if it has exited (true:
/// gone). One that its user stopped is killed with everything below it
/// (a stopped process would never end what its programs left running).
fn try_reap_reported(pid: i32) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let child = nix::unistd::Pid::from_raw(pid);
    match waitpid(child, Some(WaitPidFlag::WUNTRACED | WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::EINTR) => false,
        Ok(WaitStatus::Stopped(..)) => {
            let _ = privilege::as_root(|| kill_delivery_process(pid));
            let _ = waitpid(child, None);
            true
        }
        _ => true,
    }
}

/// Reads the child's length-prefixed report within `limit`. A child that
/// is found stopped (checked at least once a second) gets no more time.
fn read_status(fd: OwnedFd, pid: i32, limit: Duration) -> Result<Vec<RecipientStatus>, String> {
    use std::io::Read;
    use std::time::Instant;
    let deadline = Instant::now() + limit;
    let mut file = std::fs::File::from(fd);
    let mut read_exact = |buf: &mut [u8]| -> Result<(), String> {
        let mut got = 0;
        while got < buf.len() {
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Err("no report within the time limit".into());
                }
                let slice = deadline.min(now + Duration::from_secs(1));
                if postern_sys::wait::readable_by(&file, slice) {
                    break;
                }
                if is_stopped(pid) {
                    return Err("it was stopped by a signal before it reported".into());
                }
            }
            match file.read(&mut buf[got..]) {
                Ok(0) => return Err("it died without a report".into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    };
    let mut len = [0u8; 4];
    read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > handoff::MAX_FRAME as usize {
        return Err("report too large".into());
    }
    let mut bytes = vec![0u8; len];
    read_exact(&mut bytes)?;
    postcard::from_bytes(&bytes).map_err(|_| "its report does not decode".to_string())
}

/// The largest per-user policy file read (bytes).
const USER_POLICY_LIMIT: u64 = 64 * 1024;

/// Reads `~/.postern-destinations` as the user, if it is safe to use. It is
/// opened without following a symbolic link and without blocking (a FIFO
/// put there cannot hold the delivery), then checked on the open file.
fn user_policy(home: &Path, uid: u32) -> Result<Option<Policy>, RecipientStatus> {
    use std::io::Read;
    let path = home.join(".postern-destinations");
    let cannot = |e: &dyn std::fmt::Display| {
        RecipientStatus::deferred("4.3.5", format!("cannot read {}: {e}", path.display()))
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A home the user cannot search (root's mail runs as default_privs
        // in /root) has no per-user policy for this delivery; a file that
        // is there but unreadable is an error (below).
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && std::fs::symlink_metadata(&path).is_err() =>
        {
            return Ok(None)
        }
        // ELOOP: a symbolic link. Not a policy file: ignored like any other
        // unsafe one.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            log::warn!("ignoring {}: a symbolic link", path.display());
            return Ok(None);
        }
        Err(e) => return Err(cannot(&e)),
    };
    let md = file.metadata().map_err(|e| cannot(&e))?;
    if !md.is_file() || (md.uid() != uid && md.uid() != 0) || md.mode() & 0o022 != 0 {
        log::warn!(
            "ignoring {}: not a regular file owned by the user or root, or writable by others",
            path.display()
        );
        return Ok(None);
    }
    if md.len() > USER_POLICY_LIMIT {
        return Err(cannot(&format!("larger than {USER_POLICY_LIMIT} bytes")));
    }
    let mut text = String::new();
    file.take(USER_POLICY_LIMIT)
        .read_to_string(&mut text)
        .map_err(|e| cannot(&e))?;
    policy::parse(&path.display().to_string(), &text, false)
        .map(Some)
        .map_err(|e| {
            RecipientStatus::deferred(
                "4.3.5",
                format!("per-user destination policy has errors: {}", e.join("; ")),
            )
        })
}

/// The policy verdict for `dest`, also for the real location of its parent
/// directory (so that a symbolic link in the path cannot lead elsewhere).
fn allowed(
    system: &Policy,
    user: Option<&Policy>,
    kind: Kind,
    dest: &Path,
    who: &Who<'_>,
) -> Result<(), RecipientStatus> {
    let refuse =
        |why: String| RecipientStatus::bounced("5.7.1", format!("destination refused: {why}"));
    policy::check(system, user, kind, dest, who).map_err(refuse)?;
    let normal = policy::normalize(dest).map_err(refuse)?;
    if let (Some(parent), Some(name)) = (normal.parent(), normal.file_name()) {
        let real_parent = std::fs::canonicalize(parent).map_err(|e| {
            RecipientStatus::deferred(
                "4.2.0",
                format!("cannot resolve the directory of {}: {e}", dest.display()),
            )
        })?;
        {
            let real = real_parent.join(name);
            if real != normal {
                check_real(system, user, kind, &real, who).map_err(|why| {
                    refuse(format!(
                        "{why} ({} leads there through a symbolic link)",
                        dest.display()
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// What a delivery process knows besides its deliveries.
#[derive(Clone, Copy)]
struct UserContext<'a> {
    system: &'a Policy,
    account: &'a Account,
    /// Who the process runs as (`default_privs` for root).
    runner: &'a Account,
    settings: &'a Settings,
    /// Root's mailboxes, opened by root ([`Local::open_root_mailboxes`]).
    root_mailboxes: &'a [(PathBuf, Result<std::fs::File, RecipientStatus>)],
}

/// Everything after the switch to the user: the per-user policy, then each
/// delivery; the copies for one mailbox or Maildir are delivered together.
fn deliver_as_user(
    work: &[(&Instruction, Copy<'_>)],
    ctx: &UserContext<'_>,
) -> Vec<RecipientStatus> {
    let UserContext {
        system,
        account,
        runner,
        settings,
        root_mailboxes,
    } = *ctx;
    let who = Who {
        user: &account.name,
        home: &account.home,
    };
    let user_policy = match user_policy(&account.home, account.uid) {
        Ok(p) => p,
        Err(status) => return vec![status; work.len()],
    };
    let user = user_policy.as_ref();
    let mut out: Vec<Option<RecipientStatus>> = vec![None; work.len()];
    for i in 0..work.len() {
        if out[i].is_some() {
            continue;
        }
        let (instr, copy) = &work[i];
        let (kind, path) = match &instr.destination {
            Destination::Mailbox(path) => (Kind::Mailbox, path),
            Destination::Maildir(path) => (Kind::Maildir, path),
            Destination::Programs(commands) => {
                out[i] = Some(deliver_programs(
                    instr, copy, commands, system, user, &who, account, settings,
                ));
                continue;
            }
            Destination::Transport { .. } => {
                out[i] = Some(RecipientStatus::bounced(
                    "5.3.5",
                    "local delivers to mailboxes, Maildirs and programs, not through a transport: the request went to the wrong service",
                ));
                continue;
            }
        };
        let same: Vec<usize> = (i..work.len())
            .filter(|&j| out[j].is_none() && work[j].0.destination == instr.destination)
            .collect();
        let statuses = match allowed(system, user, kind, path, &who) {
            Err(refused) => vec![refused; same.len()],
            Ok(()) => {
                let copies: Vec<Copy<'_>> = same.iter().map(|&j| work[j].1).collect();
                match kind {
                    Kind::Mailbox if account.uid == 0 => {
                        let target = mbox::Target {
                            path,
                            uid: 0,
                            strict_owner: true,
                            size_limit: settings.size_limit,
                            lock: &settings.lock,
                        };
                        match root_mailboxes.iter().find(|(p, _)| p == path) {
                            Some((_, Ok(file))) => mbox::deliver_opened(file, &target, &copies),
                            Some((_, Err(status))) => vec![status.clone(); copies.len()],
                            None => vec![
                                RecipientStatus::deferred(
                                    "4.3.0",
                                    format!("root's mailbox {} was not opened", path.display()),
                                );
                                copies.len()
                            ],
                        }
                    }
                    Kind::Mailbox => {
                        let target = mbox::Target {
                            path,
                            uid: runner.uid,
                            strict_owner: settings.strict_owner,
                            size_limit: settings.size_limit,
                            lock: &settings.lock,
                        };
                        mbox::deliver_many(&target, &copies)
                    }
                    _ => maildir::deliver_many(path, runner.uid, &copies),
                }
            }
        };
        for (&j, status) in same.iter().zip(statuses) {
            out[j] = Some(status);
        }
    }
    out.into_iter()
        .map(|s| s.unwrap_or_else(|| RecipientStatus::deferred("4.3.0", "not attempted")))
        .collect()
}

/// Program delivery: each command line in turn, each must succeed.
#[allow(clippy::too_many_arguments)]
fn deliver_programs(
    instr: &Instruction,
    copy: &Copy<'_>,
    commands: &[String],
    system: &Policy,
    user: Option<&Policy>,
    who: &Who<'_>,
    account: &Account,
    settings: &Settings,
) -> RecipientStatus {
    let shells = std::fs::read_to_string("/etc/shells").unwrap_or_default();
    if !program::shell_allowed(&account.shell, &shells) {
        return RecipientStatus::bounced(
            "5.7.1",
            format!(
                "{}'s login shell {} is not in /etc/shells: no program delivery",
                account.name,
                account.shell.display()
            ),
        )
        .for_postmaster();
    }
    let mode = program::mode(&settings.program_dir);
    // The home directory if this process (the user, or default_privs
    // for root) can enter it, else /tmp.
    let enterable = nix::unistd::access(&account.home, nix::unistd::AccessFlags::X_OK).is_ok();
    let cwd = if account.home.is_dir() && enterable {
        account.home.clone()
    } else {
        PathBuf::from("/tmp")
    };
    let original = instr
        .original_recipient
        .as_deref()
        .filter(|_| settings.original_recipient);
    let env = program_env(instr, copy, account, original);
    let input = copy.for_program(original);
    let mut last = RecipientStatus::bounced("5.3.0", "no program given");
    for line in commands {
        let parsed = match program::parse_command(line) {
            Ok(c) => c,
            Err(why) => {
                log::warn!("{}: user {}: {why}", copy.queue_id, account.name);
                return RecipientStatus::bounced("5.3.0", why).for_postmaster();
            }
        };
        let mut argv = parsed.argv;
        let exe = match program::resolve(&mode, &argv[0]) {
            Ok(p) => p,
            Err(status) => return status,
        };
        // The policy allows the trusted directory's entry (a link there
        // runs the file it leads to, already checked by the trusted rules).
        let named = match &mode {
            program::Mode::Secure(dir) => {
                dir.join(Path::new(&argv[0]).file_name().unwrap_or_default())
            }
            _ => exe.clone(),
        };
        if let Err(s) = allowed(system, user, Kind::Program, &named, who) {
            return s.for_postmaster();
        }
        argv[0] = exe.display().to_string();
        let run = program::Run {
            argv,
            env: env.clone(),
            cwd: &cwd,
            input: &input,
            limit: settings.time_limit,
            output_is_failure: settings.output_is_failure,
            failure_is_75: parsed.failure_is_75,
        };
        last = program::run(&run);
        if last.outcome != handoff::Outcome::Delivered {
            return last;
        }
    }
    last
}

/// The search path a program gets, as Postfix's local(8) resets it.
pub const PROGRAM_PATH: &str = "/usr/bin:/bin";

/// The characters a delivery variable keeps; every other becomes `_`
/// (Postfix's default `command_expansion_filter`): a program that hands a
/// variable to a shell cannot be made to run anything by an address.
const EXPANSION_FILTER: &str =
    "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn filtered(value: &str) -> String {
    value
        .chars()
        .map(|c| if EXPANSION_FILTER.contains(c) { c } else { '_' })
        .collect()
}

/// The program environment, as Postfix's local(8) documents it: `SHELL`,
/// `HOME`, `USER` and `LOGNAME` (the account), `LOCAL` (the recipient's
/// whole local part, extension included), `EXTENSION`, `DOMAIN`,
/// `RECIPIENT`, `ORIGINAL_RECIPIENT` (when known and
/// `enable_original_recipient`), `SENDER`, a fixed `PATH`, and `TZ` and
/// `AGENT`; nothing else. Values pass through the expansion filter.
fn program_env(
    instr: &Instruction,
    copy: &Copy<'_>,
    account: &Account,
    original: Option<&str>,
) -> Vec<(String, String)> {
    let (local_part, domain) = instr
        .recipient
        .rsplit_once('@')
        .unwrap_or((instr.recipient.as_str(), ""));
    let mut env: Vec<(String, String)> = [
        ("SHELL", account.shell.display().to_string()),
        ("HOME", account.home.display().to_string()),
        ("USER", account.name.clone()),
        ("LOGNAME", account.name.clone()),
        ("LOCAL", local_part.to_string()),
        ("EXTENSION", instr.extension.clone().unwrap_or_default()),
        ("DOMAIN", domain.to_string()),
        ("RECIPIENT", instr.recipient.clone()),
        ("SENDER", copy.sender.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), filtered(&v)))
    .collect();
    if let Some(original) = original {
        env.push(("ORIGINAL_RECIPIENT".to_string(), filtered(original)));
    }
    env.push(("PATH".to_string(), PROGRAM_PATH.to_string()));
    env.push(("AGENT".to_string(), "postern-local".to_string()));
    if let Ok(tz) = std::env::var("TZ") {
        env.push(("TZ".to_string(), tz));
    }
    env
}
