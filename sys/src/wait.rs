//! Waiting with a deadline, without sleeping: `poll` on a descriptor (a
//! pipe, a socket, or a pidfd that becomes readable when a process exits)
//! until it is ready or the deadline passes. Every wait in postern has one.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Whether `fd` becomes readable before `deadline`.
pub fn readable_by(fd: impl AsFd, deadline: Instant) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let timeout =
            PollTimeout::try_from(left.min(Duration::from_secs(3600))).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => return true,
            Err(_) => return false,
        }
    }
}

/// Waits for child `pid` to end and returns how it ended, going on after
/// an interrupted wait.
pub fn reap(pid: i32) -> nix::Result<nix::sys::wait::WaitStatus> {
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other,
        }
    }
}

/// Whether `fd` becomes readable within `limit`.
pub fn readable_within(fd: impl AsFd, limit: Duration) -> bool {
    readable_by(fd, Instant::now() + limit)
}

/// Reads `fd` to end-of-file within `limit`; more than `max` bytes is an
/// error.
pub fn read_to_end_within(fd: OwnedFd, limit: Duration, max: usize) -> Result<Vec<u8>, String> {
    read_within(fd, limit, max, false)
}

/// Reads `fd` to end-of-file within `limit`, keeping the first `keep` bytes
/// and discarding the rest (the writer is not blocked by a full pipe).
pub fn drain_within(fd: OwnedFd, limit: Duration, keep: usize) -> Result<Vec<u8>, String> {
    read_within(fd, limit, keep, true)
}

fn read_within(fd: OwnedFd, limit: Duration, max: usize, drain: bool) -> Result<Vec<u8>, String> {
    let deadline = Instant::now() + limit;
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if !readable_by(&file, deadline) {
            return Err(format!("nothing within {}s", limit.as_secs()));
        }
        match file.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) if out.len() + n <= max => out.extend_from_slice(&buf[..n]),
            Ok(n) if drain => {
                let room = max - out.len().min(max);
                out.extend_from_slice(&buf[..n.min(room)]);
            }
            Ok(_) => return Err(format!("more than {max} bytes")),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Whether process `pid` exits within `limit` (true also when it is already gone).
pub fn process_exit_within(pid: i32, limit: Duration) -> bool {
    match crate::pidfd_open(pid) {
        Ok(pidfd) => readable_within(&pidfd, limit),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn pipes_and_deadlines() {
        let (r, w) = nix::unistd::pipe().unwrap();
        assert!(!readable_within(&r, Duration::from_millis(30)));
        let mut w = std::fs::File::from(w);
        w.write_all(b"hello").unwrap();
        assert!(readable_within(&r, Duration::from_secs(5)));
        drop(w);
        assert_eq!(
            read_to_end_within(r, Duration::from_secs(5), 100).unwrap(),
            b"hello"
        );
        let (r, w) = nix::unistd::pipe().unwrap();
        std::fs::File::from(w).write_all(&[0u8; 200]).unwrap();
        assert!(read_to_end_within(r, Duration::from_secs(5), 100)
            .unwrap_err()
            .contains("more than 100"));
        // Draining keeps the first bytes and reads the rest to the end.
        let (r, w) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            for i in 0..64u8 {
                w.write_all(&[i; 4096]).unwrap();
            }
        });
        let kept = drain_within(r, Duration::from_secs(10), 5000).unwrap();
        writer.join().unwrap();
        assert_eq!(kept.len(), 5000);
        assert!(kept[..4096].iter().all(|b| *b == 0) && kept[4096..].iter().all(|b| *b == 1));
    }

    #[test]
    fn process_exits() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(process_exit_within(pid, Duration::from_secs(10)));
        child.wait().unwrap();
    }
}
