//! The launcher: how a child of a service is started (its command line,
//! its descriptors at their fixed numbers, its environment and stdio).

use std::os::fd::{AsRawFd, RawFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use postern_common::server::ChildArgs;
use postern_common::status::{FIRST_FREE_FD, STATUS_FD};
use postern_sys as sys;

use super::services::Child;
use super::Master;
use crate::lifecycle::ChildInfo;

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
        cmd.args(args.to_argv())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if !foreground {
            cmd.stderr(Stdio::null());
        }
        // dup2 clears close-on-exec on the copies.
        fds.iter()
            .enumerate()
            .fold(sys::BeforeExec::new(), |steps, (n, &fd)| {
                steps.copy_fd(fd, STATUS_FD + n as RawFd)
            })
            .install(&mut cmd);
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id() as i32;
                svc.children.insert(
                    pid,
                    Child {
                        info: ChildInfo::new(),
                        started: now,
                        fatal: None,
                    },
                );
                svc.used = true;
                // A fifo service (a trigger, like qmgr's) has no client
                // waiting on it: its limit is a design, not a bottleneck.
                if svc.limit.is_some_and(|l| svc.children.len() as u32 >= l)
                    && svc.entry.kind != postern_conf::ServiceType::Fifo
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
