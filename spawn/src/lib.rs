//! # postern-spawn
//!
//! **Name**: postern-spawn — run an external command per connection.
//!
//! **Synopsis** (master.cf):
//! ```text
//! 127.0.0.1:10026 inet n - n - 10 spawn user=nobody argv=/bin/cat
//! filter          unix -  n n - 10 spawn user=filter:filter argv=/usr/local/bin/filter -x
//! ```
//!
//! **Description**: modeled on Postfix spawn(8). For each connection the
//! master hands it, spawn runs the command given with `argv=` (everything
//! after `argv=` is the command and its arguments, which must come last),
//! directly, without a shell, as the user (and optionally group) given with
//! `user=name[:group]`. The connection is the command's standard input,
//! output and error; no other descriptor is open in it. Its environment is
//! `export_environment` plus `PATH=/usr/bin:/bin`; its working directory is
//! `/`. The command leads its own process group, in spawn's session when
//! that has no controlling terminal (the master is a daemon) and in a
//! session of its own when it has one, so that it never reaches the
//! master's terminal ([`sys::Launcher::start`]). When it runs
//! longer than `<service>_time_limit` (default `command_time_limit`), spawn
//! kills its whole process group with SIGKILL, using root privileges so that
//! the kill actually works (Postfix 3.7's spawn sends it with the mail
//! owner's effective uid, and it fails), and with it every descendant of the
//! command, including those that left its group or session (`setsid`):
//! spawn is a child subreaper, so they stay below it
//! ([`postern_common::descendants`]). When the command exits before the
//! limit, whatever it started is ended the same way, so the client sees its
//! connection closed by the limit at the latest. Exits with a failure
//! status and deaths by signal are logged.
//!
//! The command is started with a vfork-style clone ([`sys::Launcher`]): the
//! new process shares spawn's memory only until its exec, with spawn
//! suspended, so no page tables are copied for it; it is a process of its
//! own with its own credentials from the start, and changes ids with raw
//! system calls before the exec.
//!
//! **Security**: runs as root (master.cf unpriv `n` is required) with the
//! mail owner as effective uid while idle; becomes root only to start and to
//! kill a command. The command never runs with uid or gid 0, the mail
//! owner's uid or gid, or id -1: such a `user=` is refused at startup (the
//! service is throttled) and by `postern check`. Supplementary groups are
//! dropped. Untrusted input: none but the connection, which spawn never
//! reads.
//!
//! **Configuration**: `command_time_limit` (1000s), `<service>_time_limit`,
//! `export_environment` (TZ MAIL_CONFIG LANG), `mail_owner`, plus the
//! skeleton's `max_use`, `max_idle`, `daemon_timeout`.
//!
//! **Exit status**: 0 after `max_use` requests, `max_idle`, or when the
//! master lets go; 78 on a configuration error (bad `user=` or `argv=`).
//!
//! **See also**: Postfix spawn(8), pipe(8); `postern check`.

pub mod pipe;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Duration;

use nix::sys::wait::WaitStatus;
use postern_common::command::{CommandSpec, SystemAccounts};
use postern_common::server::{self, Context, Handler, Privileges, Program, Request};
use postern_conf::params;
use postern_sys as sys;
use postern_sys::privilege::{self, MailOwner};

/// The daemon: runs the child skeleton with spawn's handler.
pub fn run() -> i32 {
    server::run(
        Program {
            name: "spawn",
            privileges: Privileges::Privileged,
            ipc_timeout: false,
        },
        |ctx| {
            let owner = MailOwner::from(&ctx.mail_owner);
            let attrs = CommandSpec::parse(&ctx.args.args, owner, &SystemAccounts)?;
            Spawn::new(ctx, attrs)
        },
    )
}

struct Spawn {
    attrs: CommandSpec,
    service: String,
    time_limit: Duration,
    /// The command with its environment, started once per connection.
    launcher: sys::Launcher,
}

/// The environment from `export_environment` (`NAME` takes this process's
/// value if it has one; `NAME=value` is literal) plus `PATH=/usr/bin:/bin`.
pub fn command_environment(
    export: &[String],
    own: impl Fn(&str) -> Option<String>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for item in export {
        let pair = match item.split_once('=') {
            Some((n, v)) => Some((n.to_string(), v.to_string())),
            None => own(item).map(|v| (item.clone(), v)),
        };
        if let Some((n, v)) = pair {
            if n != "PATH" {
                env.retain(|(k, _)| *k != n);
                env.push((n, v));
            }
        }
    }
    env.push(("PATH".into(), "/usr/bin:/bin".into()));
    env
}

impl Spawn {
    fn new(ctx: &Context, attrs: CommandSpec) -> Result<Self, String> {
        // Whatever a command starts is re-parented to this process, not to
        // init, when its parent exits: no descendant escapes the limit.
        postern_common::descendants::become_subreaper()?;
        let export = ctx.config.list(params::EXPORT_ENVIRONMENT);
        let env = command_environment(&export, |n| std::env::var(n).ok());
        let launcher = sys::Launcher::new(&attrs.argv, &env)
            .map_err(|e| format!("argv={}: {e}", attrs.argv.join(" ")))?;
        Ok(Spawn {
            attrs,
            service: ctx.args.service.clone(),
            time_limit: ctx.config.service_time_limit(&ctx.args.service),
            launcher,
        })
    }

    /// Starts the command with the connection as its descriptors 0-2,
    /// leading its own process group, as the `user=` identity (see
    /// [`sys::Launcher`]).
    fn start(&mut self, conn: &OwnedFd) -> std::io::Result<i32> {
        let fd = conn.as_raw_fd();
        self.launcher.start([fd, fd, fd], &self.attrs.run_as)
    }

    fn supervise(&self, pid: i32) {
        let command = &self.attrs.argv[0];
        let timed_out = match sys::pidfd_open(pid) {
            Ok(pidfd) => !postern_sys::wait::readable_within(&pidfd, self.time_limit),
            Err(e) => {
                log::warn!(
                    "service {}: pidfd_open for pid {pid}: {e}; waiting without a time limit",
                    self.service
                );
                false
            }
        };
        // The command leads its own process group: at the limit all
        // of it is killed, and every descendant, in the group or not (this
        // process is a subreaper); when the command itself has ended,
        // whatever it left running too (a `job &` or a `setsid job &` would
        // otherwise outlive every limit), as pipe does. The command is not
        // reaped yet, so its pid and group number cannot have been reused.
        // It runs as another user, so the kill needs root.
        match end_command_as_root(pid) {
            Ok(others) if timed_out => log::warn!(
                "service {}: command {command} (pid {pid}) exceeded the time limit of {}s: killed its process group and {others} other descendant(s)",
                self.service,
                self.time_limit.as_secs()
            ),
            Ok(_) => {}
            Err(e) => log::error!("service {}: {e}", self.service),
        }
        match postern_sys::wait::reap(pid) {
            Ok(WaitStatus::Exited(_, 0)) => {}
            Ok(WaitStatus::Exited(_, code)) => log::warn!(
                "service {}: command {command} (pid {pid}) exited with status {code}",
                self.service
            ),
            Ok(WaitStatus::Signaled(_, sig, _)) if !timed_out => log::warn!(
                "service {}: command {command} (pid {pid}) was killed by signal {}",
                self.service,
                sig as i32
            ),
            Ok(_) => {}
            Err(e) => log::error!("service {}: waiting for pid {pid}: {e}", self.service),
        }
    }
}

/// Ends a command (not reaped yet) and everything it started, its process
/// group and every other descendant ([`postern_common::descendants::end_command`]),
/// as root (the command runs as another user, so the mail owner's kill
/// would fail). Returns how many processes other than the command died.
fn end_command_as_root(pid: i32) -> Result<usize, String> {
    privilege::as_root(|| postern_common::descendants::end_command(pid))
        .map_err(|e| format!("cannot kill the command {pid}: {e}"))?
}

impl Handler for Spawn {
    fn handle(&mut self, _ctx: &Context, request: Request) {
        let Request::Stream(conn) = request else {
            log::warn!(
                "service {}: spawn serves stream connections only; trigger ignored",
                self.service
            );
            return;
        };
        match self.start(&conn) {
            Ok(pid) => {
                drop(conn);
                self.supervise(pid);
            }
            Err(e) => log::error!(
                "service {}: cannot run {} as {}: {e}",
                self.service,
                self.attrs.argv[0],
                self.attrs.user_text
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment() {
        let export: Vec<String> = ["TZ", "LANG", "MAIL_CONFIG", "X=1", "PATH", "PATH=/evil"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let env = command_environment(&export, |n| {
            (n == "TZ" || n == "PATH").then(|| format!("own-{n}"))
        });
        assert_eq!(
            env,
            vec![
                ("TZ".into(), "own-TZ".into()),
                ("X".into(), "1".into()),
                ("PATH".into(), "/usr/bin:/bin".into())
            ]
        );
    }
}
