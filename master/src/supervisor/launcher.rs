//! The launcher: how a child of a service is started (its command line,
//! its descriptors at their fixed numbers, its environment and stdio).
//! Two kinds of child: postern's own programs (postern's contract,
//! `postern_common::status`) and Postfix's daemons (Postfix's contract,
//! [`crate::postfix`]: the flow pipe at 3 and 4, the status stream at 5,
//! listeners from 6, `MAIL_CONFIG` and an octal `GENERATION` among
//! `import_environment`, umask 077, working directory `queue_directory`,
//! standard error to the master for the daemon's `fatal:` line, and `-o
//! stress=yes` while its service is under stress).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use postern_common::server::ChildArgs;
use postern_common::status::ChildState;
use postern_common::status::{FIRST_FREE_FD, STATUS_FD};
use postern_conf::params;
use postern_sys as sys;

use super::services::Child;
use super::{Master, Target};
use crate::lifecycle::ChildInfo;
use crate::postfix;

impl Master {
    pub(super) fn start_child(&mut self, i: usize, now: Instant) {
        let foreground = self.foreground;
        let source = self.source.clone();
        let svc = &mut self.services[i];
        let args = ChildArgs {
            service: svc.entry.name.clone(),
            kind: svc.entry.kind,
            generation: svc.generation,
            listen_fds: svc.listeners.len(),
            source,
            stderr: foreground,
            chroot: svc.entry.chroot,
            unpriv: svc.entry.unpriv,
            postfix_instance: self.config.postfix_instance(),
            overrides: svc.entry.overrides.clone(),
            args: svc.entry.args.clone(),
        };
        let fds: Vec<RawFd> = std::iter::once(svc.status_child.as_raw_fd())
            .chain(svc.listeners.iter().map(|l| l.as_raw_fd()))
            .collect();
        // The collision check: every source descriptor is above the fixed numbers.
        if let Some(bad) = fds.iter().find(|fd| **fd < FIRST_FREE_FD) {
            log::error!(
                "service {}: descriptor {bad} would collide with the fixed child descriptors",
                svc.id()
            );
            return;
        }
        let mut cmd = Command::new(&svc.program);
        cmd.env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut generation = 0;
        let mut stderr = None;
        let steps = if svc.postfix {
            generation = self.next_fork_generation;
            self.next_fork_generation = self.next_fork_generation.wrapping_add(1).max(1);
            let config = &self.config;
            let dir = match &self.source {
                postern_conf::Source::Dir(d) => d.display().to_string(),
                postern_conf::Source::Embedded(_) => String::new(),
            };
            let maillog = !config.text(params::MAILLOG_FILE).is_empty();
            let postlog = config
                .main
                .get("postlog_service_name")
                .map_or("postlog".to_string(), |e| e.value.clone());
            let env = postfix::environment(
                &config.list(params::IMPORT_ENVIRONMENT),
                |k| std::env::var(k).ok(),
                &dir,
                config.text(params::SYSLOG_NAME),
                maillog.then_some((postlog.as_str(), config.text(params::MYHOSTNAME))),
                generation,
            );
            cmd.env_clear()
                .envs(env)
                .current_dir(config.text(params::QUEUE_DIRECTORY));
            let stressed = svc.stress.is_some_and(|s| s.active(now));
            let argv = postfix::with_stress(&svc.postfix_argv, stressed);
            if let Some((arg0, rest)) = argv.split_first() {
                cmd.arg0(arg0).args(rest);
            }
            // Standard error comes to the master (the daemon's log lines).
            match stderr_pipe() {
                Ok((read, write)) => {
                    cmd.stderr(Stdio::from(write));
                    stderr = Some(read);
                }
                Err(e) => {
                    log::warn!("service {}: no pipe for standard error: {e}", svc.id());
                    cmd.stderr(Stdio::null());
                }
            }
            [
                self.flow.0.as_raw_fd(),
                self.flow.1.as_raw_fd(),
                svc.status_child.as_raw_fd(),
            ]
            .into_iter()
            .chain(svc.listeners.iter().map(|l| l.as_raw_fd()))
            .enumerate()
            .fold(sys::BeforeExec::new(), |steps, (n, fd)| {
                steps.copy_fd(fd, postfix::FLOW_READ_FD + n as RawFd)
            })
        } else {
            cmd.args(args.to_argv());
            if !foreground {
                cmd.stderr(Stdio::null());
            }
            fds.iter()
                .enumerate()
                .fold(sys::BeforeExec::new(), |steps, (n, &fd)| {
                    steps.copy_fd(fd, STATUS_FD + n as RawFd)
                })
        };
        // dup2 clears close-on-exec on the copies.
        steps.install(&mut cmd);
        // Postfix's daemons start with its master's umask (077); the master
        // is single-threaded, so setting it around the fork is exact.
        let umask = svc
            .postfix
            .then(|| nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077)));
        let spawned = cmd.spawn();
        if let Some(old) = umask {
            nix::sys::stat::umask(old);
        }
        // The parent's copy of the child's standard error closes here.
        drop(cmd);
        let svc = &mut self.services[i];
        match spawned {
            Ok(child) => {
                let pid = child.id() as i32;
                // A Postfix daemon sends nothing at startup: it is idle
                // from its fork.
                let info = if svc.postfix {
                    ChildInfo::new().report(ChildState::Available)
                } else {
                    ChildInfo::new()
                };
                let stderr = stderr.and_then(|fd| {
                    let token = Token(self.next_token + 1);
                    match self.poll.registry().register(
                        &mut SourceFd(&fd.as_raw_fd()),
                        token,
                        Interest::READABLE,
                    ) {
                        Ok(()) => Some((fd, token, Vec::new())),
                        Err(e) => {
                            log::warn!(
                                "service {}: cannot watch pid {pid}'s standard error: {e}",
                                svc.entry.id()
                            );
                            None
                        }
                    }
                });
                if let Some((_, token, _)) = &stderr {
                    self.next_token = token.0;
                    self.tokens.insert(*token, Target::Stderr(pid));
                }
                svc.children.insert(
                    pid,
                    Child {
                        info,
                        started: now,
                        fatal: None,
                        generation,
                        stderr,
                    },
                );
                svc.used = true;
                // A fifo service (a trigger, like qmgr's) has no client
                // waiting on it: its limit is a design, not a bottleneck.
                if svc.limit.is_some_and(|l| svc.children.len() as u32 >= l)
                    && svc.entry.kind != postern_conf::ServiceType::Fifo
                    // Nor has a solitary Postfix daemon (qmgr, pickup,
                    // postlogd: maxproc 1 is what they require).
                    && !(svc.postfix && svc.limit == Some(1))
                    // A service that can be under stress has Postfix's
                    // own warning instead (`Master::refresh`).
                    && svc.stress.is_none()
                    && svc
                        .last_limit_warning
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                {
                    svc.last_limit_warning = Some(now);
                    log::warn!(
                        "service {} has reached its process limit {}: new clients may have to wait; consider raising maxproc",
                        svc.id(),
                        svc.limit.unwrap_or(0)
                    );
                }
            }
            Err(e) => {
                let throttle_for = svc.throttle_time;
                log::error!(
                    "service {}: cannot start {}: {e}: throttling the service for {}s",
                    svc.id(),
                    svc.program.display(),
                    throttle_for.as_secs()
                );
                svc.throttled_until = Some(now + throttle_for);
                svc.throttle_reason = Some(format!("cannot start {}: {e}", svc.program.display()));
            }
        }
    }
}

/// A pipe for a Postfix daemon's standard error: the master's end
/// non-blocking and close-on-exec, the daemon's end blocking.
fn stderr_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    nix::fcntl::fcntl(
        read.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok((read, write))
}
