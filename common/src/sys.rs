//! The low-level system calls that have no safe wrapper, in one place.
//!
//! This is the only module of the workspace where `unsafe` is allowed. Each
//! block says why it is sound. What lives here: running code between `fork`
//! and `exec` of a [`Command`] (`pre_exec`), `pidfd_open`, and `close_range`.

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

/// Runs `hook` in the child between `fork` and `exec`.
///
/// The hook must only make async-signal-safe system calls (no allocation,
/// no locks): `dup2`, `setsid`, `setgroups`, `setgid`, `setuid`, `close_range`,
/// `prctl` and the like. Every caller in this workspace passes such a hook.
pub fn before_exec<F>(cmd: &mut Command, hook: F)
where
    F: FnMut() -> io::Result<()> + Send + Sync + 'static,
{
    use std::os::unix::process::CommandExt;
    // SAFETY: `pre_exec` is unsafe because the closure runs in a forked child
    // of a possibly multi-threaded process, where only async-signal-safe
    // operations are allowed. The contract of this function (documented
    // above, and kept by every caller) is that `hook` makes only such calls.
    unsafe {
        cmd.pre_exec(hook);
    }
}

/// A descriptor that becomes readable when process `pid` exits (Linux ≥ 5.3).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; no memory is passed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Closes every descriptor from `first` up (async-signal-safe).
pub fn close_from(first: RawFd) -> io::Result<()> {
    // SAFETY: close_range takes plain integers. In a freshly forked child
    // about to exec, closing descriptors above stdio cannot invalidate any
    // Rust object that is used afterwards.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Clears close-on-exec on `fd` (for descriptors handed to a child at a fixed number).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty())).map_err(io::Error::from)?;
    Ok(())
}

/// Takes ownership of a descriptor inherited at a fixed number.
///
/// Used once per inherited descriptor, at startup, by the child skeleton:
/// the master put it there (see [`crate::status`] for the numbers).
pub fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    // Fails with EBADF when nothing is open at `fd`.
    fcntl(fd, FcntlArg::F_GETFD).map_err(io::Error::from)?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    // SAFETY: the descriptor is open (checked above), was inherited from the
    // master for this process, and nothing else in this process owns it:
    // the skeleton adopts each inherited number exactly once.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes ownership of a descriptor just returned by a system call
/// (`accept4`, `open`, `fcntl(F_DUPFD)`).
pub fn own_new_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass a descriptor that a system call has just returned
    // to this process and that nothing else has wrapped or closed.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Marks every descriptor from `first` up close-on-exec (async-signal-safe;
/// unlike closing them, this keeps the standard library's exec-error pipe
/// working until the exec itself).
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on
    // descriptors; it passes no memory and closes nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Shrinks this process's resident set to what it really uses. For every
/// file mapping that is not writable and has no privately modified page
/// (`Anonymous: 0 kB` in `/proc/self/smaps`: text, `.rodata`, never RELRO,
/// whose pages hold applied relocations), turns off fault-around and
/// readahead (`MADV_RANDOM`) and drops the pages mapped so far
/// (`MADV_DONTNEED`). Such pages are identical to the file, so a page needed
/// later is simply mapped again from the page cache. Returns the number of
/// bytes advised.
pub fn trim_text_mappings() -> io::Result<usize> {
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut advised = 0;
    let mut current: Option<(usize, usize, bool)> = None;
    let mut candidates = Vec::new();
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            let eligible = (perms == "r-xp" || perms == "r--p") && path.starts_with('/');
            current = match (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) {
                (Ok(s), Ok(e)) if e > s => Some((s, e, eligible)),
                _ => None,
            };
        } else if first == "Anonymous:" {
            if let Some((s, e, true)) = current {
                if f.next() == Some("0") {
                    candidates.push((s, e));
                }
            }
        }
    }
    for (start, end) in candidates {
        for advice in [libc::MADV_RANDOM, libc::MADV_DONTNEED] {
            // SAFETY: [start, end) is a whole mapping of this process, read
            // from /proc/self/smaps: a private, read-only file mapping with
            // no privately modified page, so its contents equal the file's.
            // Dropping its pages only makes the next access map them again,
            // unchanged, from the page cache. No Rust object owns this memory
            // as a mutable allocation, and nothing is written.
            let r = unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
            if r != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        advised += end - start;
    }
    Ok(advised)
}

/// The result of [`fork_single_threaded`].
#[derive(Debug)]
pub enum Forked {
    /// In the parent: the child's pid.
    Parent(i32),
    /// In the child.
    Child,
}

/// `fork()`, for a process that has exactly one thread (checked first).
///
/// The child may then do anything a normal process does: with one thread
/// there is no lock another thread could have held at the fork.
pub fn fork_single_threaded() -> io::Result<Forked> {
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    if threads != 1 {
        return Err(io::Error::other(format!(
            "refusing to fork a process with {threads} threads"
        )));
    }
    // SAFETY: the process has a single thread (checked just above), so the
    // child is a complete copy in a consistent state: no other thread can
    // have held the allocator's or any other lock at the time of the fork.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child.as_raw())),
        nix::unistd::ForkResult::Child => Ok(Forked::Child),
    }
}

/// Starts writing `file`'s dirty pages to disk without waiting
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Started for several files
/// before the first of them is fsynced, their data goes to the device
/// together, and on a journaled file system their block allocations can
/// share one commit. Only a hint: the fsync that follows is what makes the
/// data durable.
pub fn start_writeback(file: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: plain syscall on a descriptor the caller keeps open; no memory
    // is passed.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
