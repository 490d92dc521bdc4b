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

use super::services::Service;
use super::Master;
use crate::lifecycle::{self, ExitVerdict};

/// How soon a service with a wakeup is woken after its process ended
/// abnormally (see [`Master::on_exit`]).
const RESTART_WAKEUP: std::time::Duration = std::time::Duration::from_secs(1);

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
            self.on_stderr(pid);
            self.close_stderr(i, pid);
            let left = self.services[i].reassembly.forget(pid);
            if left > 0 {
                log::warn!(
                    "service {}: pid {pid} left a partial status record of {left} byte(s)",
                    self.services[i].id()
                );
            }
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
                    );
                    // postern's qmgr (or any of its services with a wakeup)
                    // ended abnormally: what it held — active messages,
                    // deferred retries — waits for a process, and none is
                    // started before a trigger or the next wakeup (300s
                    // for qmgr). Wake it soon; a second apart at most, so
                    // a process that keeps crashing does not loop hot.
                    // Postfix's daemons keep Postfix's master's rhythm.
                    if let (Some(w), false) = (svc.entry.wakeup, svc.postfix) {
                        let soon = now + RESTART_WAKEUP.min(w.interval);
                        if svc.next_wakeup.is_none_or(|t| t > soon) {
                            svc.next_wakeup = Some(soon);
                        }
                    }
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
            if svc.postfix {
                svc.postfix_records(sender, &buf[..n.min(buf.len())], now);
                continue;
            }
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

    /// Reads what a Postfix daemon wrote on its standard error (its log
    /// lines, `-V`) and keeps its last `fatal:` line; at most 64 KiB per
    /// wakeup, the rest on the next one.
    pub(super) fn on_stderr(&mut self, pid: i32) {
        let Some(child) = self
            .services
            .iter_mut()
            .find_map(|s| s.children.get_mut(&pid))
        else {
            return;
        };
        let Some((fd, token, rest)) = &mut child.stderr else {
            return;
        };
        let mut buf = [0u8; 4096];
        for _ in 0..16 {
            match nix::unistd::read(fd.as_raw_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    rest.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(rest).into_owned();
                    if let Some(line) = crate::postfix::fatal_line(&text) {
                        child.fatal = Some(line);
                    }
                    // Keep only an unfinished last line (bounded).
                    let keep = rest.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
                    rest.drain(..keep);
                    if rest.len() > 4096 {
                        rest.clear();
                    }
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
        let raw = fd.as_raw_fd();
        let token = *token;
        // Asks for another event if more is waiting; should it fail, the
        // pipe is still read at the daemon's exit.
        let _ = self
            .poll
            .registry()
            .reregister(&mut SourceFd(&raw), token, Interest::READABLE);
    }

    /// Stops watching the standard error of a Postfix daemon of service `i`.
    pub(super) fn close_stderr(&mut self, i: usize, pid: i32) {
        let Some((fd, token, _)) = self.services[i]
            .children
            .get_mut(&pid)
            .and_then(|c| c.stderr.take())
        else {
            return;
        };
        self.tokens.remove(&token);
        // Not registered any more only if the registration failed at start.
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&fd.as_raw_fd()));
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
        self.stress_before_fork(i, now);
        self.start_child(i, now);
        self.refresh(i, now);
    }

    /// Postfix's stress rule before a fork on demand ([`lifecycle::Stress`]):
    /// a fork that takes the last process slot puts the service under
    /// stress; entering it renews the status channel, so that the children
    /// forked before leave at their convenience (idle ones at once, busy
    /// ones after their client) and are replaced by children under stress.
    fn stress_before_fork(&mut self, i: usize, now: Instant) {
        let svc = &mut self.services[i];
        let Some(stress) = svc.stress else {
            return;
        };
        let (next, entering) = stress.on_fork(svc.children.len() as u32, svc.limit, now);
        svc.stress = Some(next);
        if !entering {
            return;
        }
        log::info!(
            "service {}: all {} processes in use: under stress for {}s, new processes get -o stress=yes",
            svc.id(),
            svc.limit.unwrap_or(0),
            lifecycle::STRESS_STRETCH.as_secs()
        );
        // What the old channel holds still counts.
        self.on_status(self.services[i].generation);
        let svc = &mut self.services[i];
        let (status, status_child) = match status_channel(svc.postfix) {
            Ok(pair) => pair,
            Err(e) => {
                log::warn!(
                    "service {}: cannot renew the status channel: {e}; its children stay",
                    svc.id()
                );
                return;
            }
        };
        let registry = self.poll.registry();
        if let Err(e) = registry.register(
            &mut SourceFd(&status.as_raw_fd()),
            svc.status_token,
            Interest::READABLE,
        ) {
            log::warn!(
                "service {}: cannot watch a new status channel: {e}; its children stay",
                svc.id()
            );
            return;
        }
        // Registered under the same token: the old one goes, and with it
        // (both ends closed) the old children's link to the master.
        let _ = registry.deregister(&mut SourceFd(&svc.status.as_raw_fd()));
        svc.status = status;
        svc.status_child = status_child;
    }
}

impl Service {
    /// Applies what a Postfix daemon wrote on its status stream: whole
    /// records of its own pid and generation count; anything else (from a
    /// process that is not a child, for another pid or generation, with an
    /// unknown state) is logged, rate-limited, and changes nothing.
    fn postfix_records(&mut self, sender: Option<i32>, bytes: &[u8], now: Instant) {
        let Some(sender) = sender.filter(|p| self.children.contains_key(p)) else {
            self.warn_limited(
                now,
                &format!(
                    "{} byte(s) on the status channel from pid {}, which is not its child: ignored",
                    bytes.len(),
                    sender.map_or("unknown".to_string(), |p| p.to_string())
                ),
            );
            return;
        };
        for record in self.reassembly.push(sender, bytes) {
            let problem = match record {
                Err(e) => Some(format!("malformed status record from pid {sender} ignored: {e}")),
                Ok(r) if r.pid != sender => Some(format!(
                    "status record for pid {} sent by pid {sender}: ignored",
                    r.pid
                )),
                Ok(r) => match self.children.get_mut(&sender) {
                    Some(c) if c.generation == r.generation => {
                        c.info = c.info.report(r.state);
                        None
                    }
                    Some(c) => Some(format!(
                        "status record from pid {sender} for generation {} (its generation is {}): ignored",
                        r.generation, c.generation
                    )),
                    None => None,
                },
            };
            if let Some(text) = problem {
                self.warn_limited(now, &text);
            }
        }
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
/// Postfix's daemons (`postfix`) get a stream socket, postern's children
/// a sequenced-packet one.
pub(super) fn status_channel(postfix: bool) -> nix::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        if postfix {
            SockType::Stream
        } else {
            SockType::SeqPacket
        },
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
