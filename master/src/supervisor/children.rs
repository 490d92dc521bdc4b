//! Children: reaping and judging exits, reading status records from a
//! service's channel, and forking a child when an endpoint is readable.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Instant;

use mio::unix::SourceFd;
use mio::Interest;
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use postern_common::status::{self as child_status, Message, FIRST_FREE_FD};
use postern_sys as sys;

use super::Master;
use crate::lifecycle::{self, ExitVerdict};

impl Master {
    pub(super) fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.on_exit(pid.as_raw(), status);
                    }
                }
            }
        }
    }

    pub(super) fn on_exit(&mut self, pid: i32, status: WaitStatus) {
        let success = matches!(status, WaitStatus::Exited(_, 0));
        let how = match status {
            WaitStatus::Exited(_, code) => format!("exit status {code}"),
            WaitStatus::Signaled(_, sig, _) => format!("killed by signal {}", sig as i32),
            other => format!("{other:?}"),
        };
        let now = Instant::now();
        if let Some(i) = self
            .services
            .iter()
            .position(|s| s.children.contains_key(&pid))
        {
            // A failing child sends its reason before it exits: read what
            // its service's channel holds before judging the exit.
            let generation = self.services[i].generation;
            self.on_status(generation);
            let throttle_for = self.services[i].throttle_time;
            let svc = &mut self.services[i];
            let Some(child) = svc.children.remove(&pid) else {
                return;
            };
            match lifecycle::on_exit(&child.info, success) {
                ExitVerdict::Normal => {}
                ExitVerdict::Failed => {
                    log::warn!(
                        "service {}: process {} pid {pid} {how}",
                        svc.id(),
                        svc.program.display()
                    )
                }
                ExitVerdict::Throttle => {
                    let reason = startup_failure(&how, child.fatal.as_deref());
                    if svc.throttled_until.is_none() {
                        log::warn!(
                            "service {}: process {} pid {pid} {reason}: throttling the service for {}s",
                            svc.id(),
                            svc.program.display(),
                            throttle_for.as_secs()
                        );
                    }
                    svc.throttled_until = Some(now + throttle_for);
                    svc.throttle_reason = Some(format!("pid {pid} {reason}"));
                }
            }
            self.refresh(i, now);
        } else if let Some(id) = self.retired.remove(&pid) {
            if !success {
                log::warn!("service {id}: process pid {pid} {how}");
            }
        }
        // Anything else is a descendant orphaned to us (we are a subreaper): reaped.
        self.notify_status();
    }

    pub(super) fn on_status(&mut self, generation: u32) {
        /// Records handled per wakeup before the master looks at other work.
        const MAX_PER_WAKEUP: usize = 256;
        let Some(i) = self.service_index(generation) else {
            return;
        };
        let mut buf = [0u8; child_status::MAX_MESSAGE + 1];
        for handled in 0.. {
            if handled == MAX_PER_WAKEUP {
                // More may be waiting: ask for another readiness event
                // rather than let one service starve signals and others.
                let svc = &self.services[i];
                let raw = svc.status.as_raw_fd();
                let _ = self.poll.registry().reregister(
                    &mut SourceFd(&raw),
                    svc.status_token,
                    Interest::READABLE,
                );
                break;
            }
            let (n, sender) = match recv_with_sender(&self.services[i].status, &mut buf) {
                Ok(x) => x,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            let now = Instant::now();
            let svc = &mut self.services[i];
            let (pid, generation, update) =
                match child_status::decode_message(&buf[..n.min(buf.len())]) {
                    Ok(Message::State(r)) => (r.pid, r.generation, Ok(r.state)),
                    Ok(Message::Fatal {
                        pid,
                        generation,
                        reason,
                    }) => (pid, generation, Err(reason)),
                    Err(e) => {
                        svc.warn_limited(now, &format!("malformed status record ignored: {e}"));
                        continue;
                    }
                };
            let problem = if generation != svc.generation {
                None
            } else if sender != Some(pid as i32) {
                Some(format!(
                    "status record for pid {pid} sent by pid {}: ignored",
                    sender.map_or("unknown".to_string(), |p| p.to_string())
                ))
            } else {
                match svc.children.get_mut(&(pid as i32)) {
                    Some(c) => {
                        match update {
                            Ok(state) => c.info = c.info.report(state),
                            Err(reason) => c.fatal = Some(reason),
                        }
                        None
                    }
                    None => Some(format!(
                        "status record for pid {pid} which is not its child: ignored"
                    )),
                }
            };
            if let Some(text) = problem {
                svc.warn_limited(now, &text);
            }
        }
        self.refresh(i, Instant::now());
    }

    pub(super) fn on_connection(&mut self, generation: u32) {
        let Some(i) = self.service_index(generation) else {
            return;
        };
        let now = Instant::now();
        if !lifecycle::should_listen(self.services[i].load(self.stop.is_some(), now)) {
            self.refresh(i, now);
            return;
        }
        self.start_child(i, now);
        self.refresh(i, now);
    }
}

/// Why a child that failed before its first request did: how it ended
/// (`how`) and the reason it sent, if any.
pub(super) fn startup_failure(how: &str, fatal: Option<&str>) -> String {
    match fatal {
        Some(r) => format!("{how} before taking its first request: {r}"),
        None => format!(
            "{how} before taking its first request (no reason sent; see the process's own log line)"
        ),
    }
}

/// Receives one status datagram with the sender's pid (SO_PASSCRED).
pub(super) fn recv_with_sender(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, UnixAddr, UnixCredentials};
    let mut cmsg = nix::cmsg_space!(UnixCredentials);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let mut sender = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmCredentials(cred) = c {
                sender = Some(cred.pid());
            }
        }
    }
    if msg.bytes == 0 && sender.is_none() {
        return Err(nix::errno::Errno::EAGAIN);
    }
    Ok((msg.bytes, sender))
}

/// A status channel: the master's end (non-blocking) and the child's end
/// (at a descriptor number at or above FIRST_FREE_FD).
pub(super) fn status_channel() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    let high = |fd: OwnedFd| -> nix::Result<OwnedFd> {
        if fd.as_raw_fd() >= FIRST_FREE_FD {
            return Ok(fd);
        }
        sys::dup_at_least(fd.as_fd(), FIRST_FREE_FD)
    };
    let child = high(b)?;
    // The kernel attaches each sender's pid to what the master reads.
    nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::PassCred, &true)?;
    // The child's end blocks: children write records without MSG_DONTWAIT races.
    nix::fcntl::fcntl(
        child.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_RDWR),
    )?;
    Ok((a, child))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_startup_failure_names_the_child_s_own_reason() {
        assert_eq!(
            startup_failure("exit status 1", Some("fatal: no such user")),
            "exit status 1 before taking its first request: fatal: no such user"
        );
        assert!(startup_failure("killed by signal 9", None)
            .starts_with("killed by signal 9 before taking its first request (no reason sent"));
    }
}
