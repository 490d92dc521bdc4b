//! Stop: closing the endpoints, letting busy children finish within
//! `shutdown_timeout`, then killing every descendant with its process group.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use postern_conf::params;

use super::{notify, Master, Stop};

impl Master {
    pub(super) fn begin_stop(&mut self, immediate: bool) {
        let grace = if immediate {
            Duration::ZERO
        } else {
            self.config.time(params::SHUTDOWN_TIMEOUT)
        };
        let deadline = Instant::now() + grace;
        match &mut self.stop {
            Some(s) => {
                s.deadline = s.deadline.min(deadline);
                return;
            }
            None => self.stop = Some(Stop { deadline }),
        }
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping"),
        ]);
        log::info!(
            "{}: no new connections; {} child(ren) get up to {}s to finish",
            if immediate { "abort" } else { "stop" },
            self.services
                .iter()
                .map(|s| s.children.len())
                .sum::<usize>(),
            grace.as_secs()
        );
        for svc in std::mem::take(&mut self.services) {
            self.retire(svc, |_| false);
        }
    }

    pub(super) fn finish(&mut self) {
        if !self.retired.is_empty() {
            log::warn!("stop: killing {} child(ren) still busy", self.retired.len());
        }
        for pid in self.retired.keys() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        sweep_descendants();
        self.retired.clear();
        for (_, mut c) in self.control_clients.drain() {
            let _ = self.poll.registry().deregister(c.stream());
        }
        if let Some(c) = self.control.take() {
            drop(c);
            let _ = std::fs::remove_file(&self.paths.control);
        }
        log::info!("stopped");
    }
}

/// Kills every remaining descendant (children, and commands orphaned to us as
/// the subreaper) with its process group, and reaps them all.
pub(super) fn sweep_descendants() {
    /// A process that does not die within this (stuck in the kernel) is
    /// left behind with a log line rather than hang the stop for ever.
    const SWEEP_LIMIT: Duration = Duration::from_secs(10);
    let deadline = Instant::now() + SWEEP_LIMIT;
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    for _ in 0..100 {
        // Reap what is already dead, then deal with the living.
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        let children: Vec<(i32, i32)> = proc_children(me)
            .into_iter()
            .filter(|(pid, _)| !is_zombie(*pid))
            .collect();
        if children.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            log::error!(
                "stop: {} process(es) did not die within {}s of SIGKILL: {:?}",
                children.len(),
                SWEEP_LIMIT.as_secs(),
                children.iter().map(|(p, _)| *p).collect::<Vec<_>>()
            );
            break;
        }
        for (pid, pgid) in &children {
            if *pgid > 1 && *pgid != my_group {
                let _ = kill(Pid::from_raw(-*pgid), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for (pid, _) in &children {
            let left = deadline.saturating_duration_since(Instant::now());
            if postern_sys::wait::process_exit_within(*pid, left) {
                let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Whether `pid` is a zombie (dead, waiting to be reaped).
pub(super) fn is_zombie(pid: i32) -> bool {
    postern_sys::procfs::stat(pid).is_some_and(|s| s.zombie())
}

/// (pid, process group) of every process whose parent is `parent`.
pub(super) fn proc_children(parent: i32) -> Vec<(i32, i32)> {
    postern_sys::procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            postern_sys::procfs::stat(pid)
                .filter(|s| s.ppid == parent)
                .map(|s| (pid, s.pgrp))
        })
        .collect()
}
