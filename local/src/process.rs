//! The delivery process: forked per user of a request, switched to that
//! user for good, reporting its statuses over a pipe; and how the agent
//! reads that report within the time limit, kills a process that stopped
//! or hung (with everything below it), and reaps the ones that reported.

use std::os::fd::OwnedFd;
use std::time::Duration;

use postern_common::frame::{self, FrameError};
use postern_common::handoff::RecipientStatus;
use postern_sys::privilege::{self, RunAs};
use postern_sys::{self as sys, Forked};

/// Runs `work` in a forked child that has become `run_as` for good, and
/// returns the `n` statuses it reports. A child that dies without reporting
/// (or reports the wrong number) defers all `n`. The child's pid goes to
/// `reap` once it has reported: the reply to the client does not wait for
/// the child's exit.
pub(crate) fn in_child_as(
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
            // One frame, so that the parent need not wait for the exit.
            let mut w = std::fs::File::from(write_end);
            let _ = frame::send(&mut w, &status, "the agent");
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
pub(crate) fn reap_reported(pid: i32) {
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
pub(crate) fn try_reap_reported(pid: i32) -> bool {
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

/// Reads the child's report (one frame) within `limit`. A child that is
/// found stopped (checked at least once a second) gets no more time.
fn read_status(fd: OwnedFd, pid: i32, limit: Duration) -> Result<Vec<RecipientStatus>, String> {
    let stopped = || {
        if is_stopped(pid) {
            Err(std::io::Error::other(
                "it was stopped by a signal before it reported",
            ))
        } else {
            Ok(())
        }
    };
    let mut r = frame::Deadline::new(
        std::fs::File::from(fd),
        std::time::Instant::now() + limit,
        Duration::from_secs(1),
        stopped,
    );
    let peer = format!("delivery process {pid}");
    let payload = frame::read(&mut r, &[], frame::MAX_FRAME, &peer).map_err(|e| match e {
        FrameError::Cut { .. } => "it died without a report".to_string(),
        FrameError::Io { source, .. } if source.kind() == std::io::ErrorKind::TimedOut => {
            "no report within the time limit".to_string()
        }
        FrameError::Io { source, .. } => source.to_string(),
        FrameError::Oversize { .. } => "report too large".to_string(),
        e => e.to_string(),
    })?;
    frame::decode(&payload, &peer).map_err(|_| "its report does not decode".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn report(bytes: &[u8]) -> Result<Vec<RecipientStatus>, String> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let mut w = std::fs::File::from(write_end);
        w.write_all(bytes).unwrap();
        drop(w);
        let pid = i32::try_from(std::process::id()).unwrap();
        read_status(read_end, pid, Duration::from_secs(30))
    }

    #[test]
    fn a_report_is_read_whole_or_refused() {
        let statuses = vec![
            RecipientStatus::delivered("ok"),
            RecipientStatus::deferred("4.2.0", "later"),
        ];
        let framed = frame::encode(&statuses).unwrap();
        assert_eq!(report(&framed).unwrap(), statuses);
        let cut = report(&framed[..framed.len() - 1]).unwrap_err();
        assert!(cut.contains("died without a report"), "{cut}");
        assert!(report(b"").unwrap_err().contains("died without a report"));
        let huge = frame::prefix(frame::MAX_FRAME + 1);
        assert!(report(&huge).unwrap_err().contains("too large"));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(report(&garbage).unwrap_err().contains("does not decode"));
    }
}
