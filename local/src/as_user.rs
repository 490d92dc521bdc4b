//! Everything a delivery process does once it has become the user: the
//! per-user policy, then each delivery — mbox, Maildir, programs — with
//! the copies for one mailbox or Maildir delivered together.

use std::path::{Path, PathBuf};

use postern_common::account::Account;
use postern_common::handoff::{self, Destination, Instruction, RecipientStatus};
use postern_conf::policy::{Kind, Policy, Who};

use crate::checks::{allowed, user_policy};
use crate::environment::program_env;
use crate::message::Copy;
use crate::settings::Settings;
use crate::{maildir, mbox, program};

/// What a delivery process knows besides its deliveries.
#[derive(Clone, Copy)]
pub(crate) struct UserContext<'a> {
    pub(crate) system: &'a Policy,
    pub(crate) account: &'a Account,
    /// Who the process runs as (`default_privs` for root).
    pub(crate) runner: &'a Account,
    pub(crate) settings: &'a Settings,
    /// Root's mailboxes, opened by root ([`Local::open_root_mailboxes`]).
    pub(crate) root_mailboxes: &'a [(PathBuf, Result<std::fs::File, RecipientStatus>)],
}

/// Everything after the switch to the user: the per-user policy, then each
/// delivery; the copies for one mailbox or Maildir are delivered together.
pub(crate) fn deliver_as_user(
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
    let env = program_env(instr, copy.sender, account, original);
    let envelope = copy.program_envelope(original);
    let mut last = RecipientStatus::bounced("5.3.0", "no program given");
    for line in commands {
        let parsed = match postern_conf::command_line::parse_command(line) {
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
            envelope: envelope.clone(),
            message: copy.body,
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
