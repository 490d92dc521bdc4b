//! Services: what the master knows of each master.cf line it runs (its
//! endpoints, status channel, children, throttle and wakeup state), how one
//! is built from the configuration and retired, and the state `postern
//! status` shows for it ([`state`], a pure function).

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Token};
use postern_common::check;
use postern_common::sysexits;
use postern_conf::programs::Runner;
use postern_conf::{params, Config, ServiceEntry};

use super::children::status_channel;
use super::{os, Fatal, Master, Target};
use crate::endpoint::{self, BindTarget};
use crate::lifecycle::{ChildInfo, ServiceLoad, Stress};

/// A child the master knows.
#[derive(Debug)]
pub(super) struct Child {
    pub(super) info: ChildInfo,
    pub(super) started: Instant,
    /// The reason it sent before failing at startup (a fatal record), or
    /// a Postfix daemon's own last `fatal:` line.
    pub(super) fatal: Option<String>,
    /// A Postfix daemon's generation (unique per fork); 0 for postern's.
    pub(super) generation: u32,
    /// A Postfix daemon's standard error (its log lines, `-V`), read for
    /// its `fatal:` line, with its event-loop token and what is left of
    /// an unfinished line.
    pub(super) stderr: Option<(OwnedFd, Token, Vec<u8>)>,
}

/// One running service.
#[derive(Debug)]
pub(super) struct Service {
    pub(super) entry: ServiceEntry,
    /// `service_throttle_time` as this service sees it (its `-o` overrides
    /// applied). Only the values the master needs are kept, not the whole
    /// per-service view of the configuration.
    pub(super) throttle_time: Duration,
    pub(super) program: PathBuf,
    /// Run as a Postfix daemon (Postfix's contract: [`crate::postfix`]).
    pub(super) postfix: bool,
    /// A Postfix daemon's command line ([`crate::postfix::argv`]).
    pub(super) postfix_argv: Vec<String>,
    /// A Postfix service's status stream, reassembled per sender.
    pub(super) reassembly: crate::postfix::Reassembly,
    pub(super) generation: u32,
    pub(super) targets: Vec<BindTarget>,
    pub(super) listeners: Vec<OwnedFd>,
    pub(super) status: OwnedFd,
    pub(super) status_child: OwnedFd,
    pub(super) status_token: Token,
    pub(super) listen_token: Token,
    pub(super) children: BTreeMap<i32, Child>,
    pub(super) throttled_until: Option<Instant>,
    /// Why the service is throttled: the failing child's own reason.
    pub(super) throttle_reason: Option<String>,
    pub(super) listening: bool,
    pub(super) last_limit_warning: Option<Instant>,
    pub(super) used: bool,
    pub(super) next_wakeup: Option<Instant>,
    pub(super) limit: Option<u32>,
    /// Postfix's stress mode, for a service that can be under stress
    /// ([`crate::postfix::stress_eligible`]).
    pub(super) stress: Option<Stress>,
    /// Status-channel warnings: (window start, logged in it, suppressed).
    pub(super) warnings: (Option<Instant>, u32, u32),
}

impl Service {
    pub(super) fn id(&self) -> String {
        self.entry.id()
    }

    /// Logs a warning about this service's status channel, at most ten a
    /// second (a misbehaving child must not flood the log).
    pub(super) fn warn_limited(&mut self, now: Instant, text: &str) {
        let window_over = self
            .warnings
            .0
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if window_over {
            if self.warnings.2 > 0 {
                log::warn!(
                    "service {}: {} more status channel warning(s) suppressed",
                    self.id(),
                    self.warnings.2
                );
            }
            self.warnings = (Some(now), 0, 0);
        }
        if self.warnings.1 < 10 {
            self.warnings.1 += 1;
            log::warn!("service {}: {text}", self.id());
        } else {
            self.warnings.2 += 1;
        }
    }

    pub(super) fn load(&self, stopping: bool, now: Instant) -> ServiceLoad {
        ServiceLoad {
            children: self.children.len() as u32,
            available: self
                .children
                .values()
                .filter(|c| c.info.available())
                .count() as u32,
            limit: self.limit,
            throttled: self.throttled_until.is_some_and(|t| t > now),
            stopping,
        }
    }
}

impl Master {
    /// Creates a service: its status channel and endpoints (reusing the
    /// already-open endpoints in `kept` when the targets are the same).
    pub(super) fn build_service(
        &mut self,
        config: &Config,
        entry: &ServiceEntry,
        kept: &mut HashMap<BindTarget, OwnedFd>,
    ) -> Result<Service, Fatal> {
        let config_error = |e: String| (sysexits::EX_CONFIG, e);
        let id = entry.id();
        let view = config
            .for_service(entry)
            .map_err(|e| config_error(format!("service {id}: {e}")))?;
        let (program, postfix) = match config.runner(entry) {
            Runner::Postern(p) => (config.postern_directory().join(p.executable), false),
            Runner::Postfix => {
                let path = config.daemon_directory().join(&entry.command);
                if !path.is_file() {
                    return Err(config_error(format!(
                        "service {id}: program {} is found neither among postern's programs nor in Postfix's daemon_directory {}",
                        entry.command,
                        config.daemon_directory().display()
                    )));
                }
                (path, true)
            }
        };
        let targets = endpoint::targets(&view, entry)
            .map_err(|e| config_error(format!("service {id}: {e}")))?;
        if postfix && targets.len() > crate::postfix::MAX_LISTEN_FDS {
            return Err(config_error(format!(
                "service {id}: {} addresses to listen on; a Postfix daemon takes at most {} here",
                targets.len(),
                crate::postfix::MAX_LISTEN_FDS
            )));
        }
        if targets.is_empty() {
            return Err(config_error(format!(
                "service {id}: no address to listen on (check inet_interfaces and inet_protocols)"
            )));
        }
        let mut listeners = Vec::with_capacity(targets.len());
        for t in &targets {
            let fd = match kept.remove(t) {
                Some(fd) => fd,
                None => endpoint::open(t, 4096, self.owner)
                    .map_err(|e| (sysexits::EX_OSERR, format!("service {id}: {e}")))?,
            };
            listeners.push(fd);
        }
        let (status, status_child) =
            status_channel(postfix).map_err(|e| os(e, &format!("service {id}: status channel")))?;
        let status_token = self.token();
        let listen_token = self.token();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.poll
            .registry()
            .register(
                &mut SourceFd(&status.as_raw_fd()),
                status_token,
                Interest::READABLE,
            )
            .map_err(|e| os(e, &format!("service {id}: register status channel")))?;
        self.tokens.insert(status_token, Target::Status(generation));
        self.tokens.insert(listen_token, Target::Listen(generation));
        let limit = view.process_limit(entry);
        let addresses: Vec<std::net::IpAddr> = targets
            .iter()
            .filter_map(|t| match t {
                BindTarget::Tcp(a) => Some(a.ip()),
                _ => None,
            })
            .collect();
        let stress = (postfix && crate::postfix::stress_eligible(entry.kind, limit, &addresses))
            .then(Stress::default);
        let postfix_argv = if postfix {
            crate::postfix::argv(&crate::postfix::Launch {
                command: &entry.command,
                service: &entry.name,
                kind: entry.kind,
                limit,
                unpriv: entry.unpriv,
                chroot: entry.chroot,
                stress: stress.is_some(),
                listeners: targets.len(),
                overrides: &entry.overrides,
                args: &entry.args,
            })
        } else {
            Vec::new()
        };
        let throttle_time = view.time(params::SERVICE_THROTTLE_TIME);
        // The first wake-up comes at once: a queue manager looks at the
        // queue as soon as the instance starts, as in Postfix.
        let next_wakeup = entry.wakeup.map(|_| Instant::now());
        Ok(Service {
            entry: entry.clone(),
            throttle_time,
            program,
            postfix,
            postfix_argv,
            reassembly: Default::default(),
            generation,
            targets,
            listeners,
            status,
            status_child,
            status_token,
            listen_token,
            children: BTreeMap::new(),
            throttled_until: None,
            throttle_reason: None,
            listening: false,
            last_limit_warning: None,
            used: false,
            next_wakeup,
            limit,
            stress,
            warnings: (None, 0, 0),
        })
    }

    /// Moves a service's children to the retired set and closes everything
    /// of it but (when `keep` is true) its endpoints, which are returned.
    /// Retires a service: its children finish and leave. The endpoints for
    /// which `keep` holds are handed back open (for the new configuration),
    /// the others closed and removed.
    pub(super) fn retire(
        &mut self,
        svc: Service,
        keep: impl Fn(&BindTarget) -> bool,
    ) -> Vec<(BindTarget, OwnedFd)> {
        let id = svc.id();
        for (pid, child) in &svc.children {
            self.retired.insert(*pid, id.clone());
            if let Some((fd, token, _)) = &child.stderr {
                self.tokens.remove(token);
                // Closed with the service just below; deregistering first
                // keeps epoll's set exact, and cannot fail for a watched fd.
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
        self.tokens.remove(&svc.status_token);
        self.tokens.remove(&svc.listen_token);
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&svc.status.as_raw_fd()));
        if svc.listening {
            for fd in &svc.listeners {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
        // Dropping `svc.status` and `status_child` closes the channel: idle
        // children see end-of-file and leave; busy ones after their request.
        let (kept, closed): (Vec<_>, Vec<_>) = svc
            .targets
            .into_iter()
            .zip(svc.listeners)
            .partition(|(t, _)| keep(t));
        for (t, fd) in closed {
            drop(fd);
            endpoint::remove(&t);
        }
        kept
    }
}

/// The state `postern status` shows for a service: `throttled`,
/// `listening` (the master watches its endpoints), `at process limit`, or
/// `idle child waiting` (a child will take the next client).
pub(super) fn state(
    throttled: bool,
    listening: bool,
    children: u32,
    limit: Option<u32>,
) -> &'static str {
    if throttled {
        "throttled"
    } else if listening {
        "listening"
    } else if limit.is_some_and(|l| children >= l) {
        "at process limit"
    } else {
        "idle child waiting"
    }
}

/// The services of `config` that the master runs: postern's programs on
/// the types they support (`postern check` reports the others), Postfix's
/// daemons on every type.
pub(super) fn startable(config: &Config) -> Vec<&ServiceEntry> {
    config
        .master
        .services
        .iter()
        .filter(|s| match config.runner(s) {
            Runner::Postern(_) => check::supported_type(s.kind),
            Runner::Postfix => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_states() {
        assert_eq!(state(true, true, 0, Some(1)), "throttled");
        assert_eq!(state(false, true, 0, Some(1)), "listening");
        assert_eq!(state(false, false, 2, Some(2)), "at process limit");
        assert_eq!(state(false, false, 1, Some(2)), "idle child waiting");
        assert_eq!(state(false, false, 900, None), "idle child waiting");
    }
}
