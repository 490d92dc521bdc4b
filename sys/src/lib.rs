//! # postern-sys
//!
//! **Name**: postern-sys — postern's edge with the operating system.
//!
//! **Description**: the system calls that have no safe wrapper, behind APIs
//! that are sound for any caller: what a [`Command`]'s child does between
//! `fork` and `exec` ([`BeforeExec`]: a fixed list of async-signal-safe
//! steps, not a closure), starting a command with a vfork-style clone
//! ([`Launcher`]), descriptors the kernel has just created, wrapped as
//! [`OwnedFd`] by the function that made the call ([`accept4`],
//! [`openat`], [`dup_at_least`], [`recv_with_fds`]), `pidfd_open` and
//! `pidfd_send_signal`, `close_range`, `madvise`, `fork` and `_exit`.
//! Also the privilege changes ([`privilege`]) and waits with a deadline
//! ([`wait`]), which the launcher and the pre-exec steps use.
//!
//! **Security**: the only crate of the workspace where `unsafe` is allowed
//! (every other crate forbids it, through `[workspace.lints]`); each
//! `unsafe` block carries a `// SAFETY:` argument. [`privilege`] is the one
//! place that changes user and group ids.
//!
//! The enumeration of the user database through NSS ([`accounts`]), and
//! the ownership walks that decide who can change a path ([`trust`]).
//!
//! **See also**: getpwent(3), clone(2), close_range(2), pidfd_open(2), madvise(2),
//! setresuid(2), proc(5) ([`procfs`]: the one reader of /proc/PID/stat).

#![allow(unsafe_code)]

pub mod accounts;
pub mod privilege;
pub mod procfs;
pub mod trust;
pub mod wait;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

/// What the child of a [`Command`] does between `fork` and `exec`, always
/// in this order: a new session (`setsid`), descriptors copied to fixed
/// numbers (`dup2`, which clears close-on-exec on the copy), the identity
/// dropped for good ([`privilege::drop_to`]'s steps), every descriptor from
/// a number up marked close-on-exec.
///
/// A fixed list of steps instead of a closure: each one is an
/// async-signal-safe system call on data prepared before the fork, and no
/// step allocates, on success or on failure (a failure is a bare errno), so
/// this is sound in a child forked from a multi-threaded process whatever
/// the caller asks for.
#[derive(Debug, Default, Clone)]
pub struct BeforeExec {
    new_session: bool,
    copies: Vec<(RawFd, RawFd)>,
    run_as: Option<privilege::RunAs>,
    cloexec_from: Option<RawFd>,
}

impl BeforeExec {
    /// Nothing to do yet.
    pub fn new() -> BeforeExec {
        BeforeExec::default()
    }

    /// The command leads a new session (and process group).
    pub fn new_session(mut self) -> BeforeExec {
        self.new_session = true;
        self
    }

    /// Copies descriptor `from` to number `to` (`dup2`).
    pub fn copy_fd(mut self, from: RawFd, to: RawFd) -> BeforeExec {
        self.copies.push((from, to));
        self
    }

    /// Drops to `who` for good (no supplementary groups; real, effective
    /// and saved ids; root must not be regainable). Any failure is `EPERM`.
    pub fn run_as(mut self, who: privilege::RunAs) -> BeforeExec {
        self.run_as = Some(who);
        self
    }

    /// Marks every descriptor from `first` up close-on-exec (see
    /// [`cloexec_from`]).
    pub fn cloexec_from(mut self, first: RawFd) -> BeforeExec {
        self.cloexec_from = Some(first);
        self
    }

    /// Installs the steps on `cmd`.
    pub fn install(self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let hook = move || -> io::Result<()> {
            if self.new_session {
                nix::unistd::setsid()?;
            }
            for &(from, to) in &self.copies {
                nix::unistd::dup2(from, to)?;
            }
            if let Some(who) = self.run_as {
                privilege::drop_ids(&privilege::ProcessWide, who.uid(), who.gid())
                    .map_err(|_| io::Error::from_raw_os_error(libc::EPERM))?;
            }
            if let Some(first) = self.cloexec_from {
                cloexec_from(first)?;
            }
            Ok(())
        };
        // SAFETY: `pre_exec` is unsafe because the closure runs in a forked
        // child of a possibly multi-threaded process, where only
        // async-signal-safe operations are allowed. The closure only reads
        // data moved into it before the fork and makes the system calls
        // listed on `BeforeExec` (setsid, dup2, setgroups, setresgid,
        // setresuid, seteuid, close_range), none of which allocates or takes
        // a lock; its errors are `io::Error`s built from an errno, which do
        // not allocate either.
        unsafe {
            cmd.pre_exec(hook);
        }
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

/// Sends SIGKILL to the process `pidfd` refers to (`pidfd_send_signal`,
/// Linux ≥ 5.1): unlike `kill`, it cannot reach another process that was
/// given the same pid after this one ended.
pub fn pidfd_kill(pidfd: &OwnedFd) -> io::Result<()> {
    // SAFETY: pidfd_send_signal takes a descriptor the caller keeps open, a
    // signal number, a null siginfo pointer (allowed: the kernel fills in
    // one as for kill) and flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
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
/// Sound for any caller: the standard streams (0–2, which `std` uses
/// without owning) are refused, a number not open fails with `EBADF`, and
/// each number is adopted at most once per process (a second call for the
/// same number fails with `EBUSY`), so no two [`OwnedFd`]s can ever hold
/// it. An inherited descriptor was open before the process started, so no
/// descriptor this process created can share its number while it is open.
pub fn adopt_inherited(fd: RawFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg, FdFlag};
    use std::sync::Mutex;
    static ADOPTED: Mutex<Vec<RawFd>> = Mutex::new(Vec::new());
    if fd <= 2 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // A poisoned lock only means another adoption panicked; the list is
    // still a valid list of adopted numbers.
    let mut adopted = ADOPTED.lock().unwrap_or_else(|p| p.into_inner());
    if adopted.contains(&fd) {
        return Err(io::Error::from_raw_os_error(libc::EBUSY));
    }
    // Fails with EBADF when nothing is open at `fd`.
    fcntl(fd, FcntlArg::F_GETFD).map_err(io::Error::from)?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(io::Error::from)?;
    adopted.push(fd);
    // SAFETY: the descriptor is open (checked above), is not a standard
    // stream, was inherited (not created by this process while open, see
    // above), and this is the first and only adoption of its number.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `accept4(2)` on `listener`: the new connection, owned.
pub fn accept4(listener: RawFd, flags: nix::sys::socket::SockFlag) -> nix::Result<OwnedFd> {
    let fd = nix::sys::socket::accept4(listener, flags)?;
    // SAFETY: accept4 just returned this new descriptor to this process;
    // nothing else has wrapped or closed it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `openat(2)` (`dir` None: relative to the working directory): the new
/// descriptor, owned.
pub fn openat<P: ?Sized + nix::NixPath>(
    dir: Option<RawFd>,
    path: &P,
    flags: nix::fcntl::OFlag,
    mode: nix::sys::stat::Mode,
) -> nix::Result<OwnedFd> {
    let fd = nix::fcntl::openat(dir, path, flags, mode)?;
    // SAFETY: openat just returned this new descriptor to this process;
    // nothing else has wrapped or closed it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A close-on-exec copy of `fd` at the lowest free number at or above
/// `min` (`fcntl(F_DUPFD_CLOEXEC)`), owned.
pub fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> nix::Result<OwnedFd> {
    use nix::fcntl::{fcntl, FcntlArg};
    let new = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) just returned this new descriptor to
    // this process; nothing else has wrapped or closed it.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// What [`recv_with_fds`] received.
#[derive(Debug)]
pub struct Received {
    /// Bytes read into the buffer.
    pub bytes: usize,
    /// The descriptors attached (`SCM_RIGHTS`), owned.
    pub fds: Vec<OwnedFd>,
    /// The message's flags (`MSG_CTRUNC`: more descriptors were attached
    /// than there was room for; the kernel closed the rest).
    pub flags: nix::sys::socket::MsgFlags,
}

/// `recvmsg(2)` on `sock` into `buf`, with room for up to `MAX_FDS`
/// attached descriptors, which come back owned.
pub fn recv_with_fds<const MAX_FDS: usize>(
    sock: RawFd,
    buf: &mut [u8],
    flags: nix::sys::socket::MsgFlags,
) -> nix::Result<Received> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, UnixAddr};
    let mut cmsg = nix::cmsg_space!([RawFd; MAX_FDS]);
    let mut iov = [io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(sock, &mut iov, Some(&mut cmsg), flags)?;
    let mut fds = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = c {
            // SAFETY: the kernel installed each descriptor of an
            // SCM_RIGHTS message in this process during this recvmsg; they
            // are new, and nothing else has wrapped or closed them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(Received {
        bytes: msg.bytes,
        fds,
        flags: msg.flags,
    })
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
/// whose pages hold applied relocations), turns off readahead
/// (`MADV_RANDOM`) and drops the pages mapped so far (`MADV_DONTNEED`).
/// Such pages are identical to the file, so a page needed later is simply
/// mapped again from the page cache. What comes back is coarser than the
/// pages touched: `MADV_RANDOM` does not turn off the kernel's fault-around
/// (checked on Linux 6.18: one touch maps the 16 pages around it), so code
/// that is used at all brings its 64 KB neighbourhood with it. Returns the
/// number of bytes advised.
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

/// Ends the process at once with `code` (`_exit`): no exit handlers, no
/// flushing of stdio buffers. For a forked child that has reported its
/// result: the exit handlers belong to the process it was forked from.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes no pointer and does not return; it is
    // async-signal-safe and valid in any process state.
    unsafe { libc::_exit(code) }
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

/// A command that is started many times, each time in a new process made
/// with a vfork-style `clone(CLONE_VM | CLONE_VFORK)`, as `posix_spawn` does.
///
/// Unlike `fork`, such a clone copies no page tables and leaves no
/// copy-on-write pages behind in the parent, and the exec has no copied
/// address space to tear down: for a per-connection command (spawn) this is
/// a large part of what starting it costs. The new process is a process of
/// its own from the start (its own credentials, descriptors and signal
/// state); only its memory is the parent's until `execve`, and the parent is
/// suspended until then. So the child only makes raw system calls on data
/// prepared by the parent: no allocation, no lock, no glibc wrapper that
/// touches process-wide state (the id changes are raw syscalls, not glibc's
/// `setresuid`, which would act on the parent's threads).
///
/// Shared memory with a process of the target user is only safe while that
/// process cannot be ptraced or read through `/proc` by the user: the kernel
/// resets a process's dumpable flag to `fs.suid_dumpable` when it changes
/// ids, and only the values 0 and 2 keep the user out. With any other value
/// (or when it cannot be read) the child gets a copy of the memory instead
/// (`clone(CLONE_VFORK)` alone, a fork), at fork's cost.
///
/// In the child, in this order: the three given descriptors at 0, 1 and 2
/// and every other descriptor closed; its own process group, and its own
/// session (`setsid`) only if this process's session has a controlling
/// terminal (see [`Launcher::start`]);
/// working directory `/`; the one privilege drop (`privilege::drop_ids`,
/// made with this thread's raw system calls): effective uid 0 (the real or
/// saved uid of the caller must be 0), no supplementary groups, then gid
/// and uid (real, effective and saved) changed to the requested identity,
/// and a check that root cannot be regained; every signal at its default action and none
/// blocked; then `execve` of the command with exactly the prepared
/// environment. A command name without a `/` is looked for in the `PATH` of
/// that environment (else `/usr/bin:/bin`), and a file that is not an
/// executable format is run by `/bin/sh`, as `execvp` does.
pub struct Launcher {
    /// Where the command may be: one path, or one per `PATH` directory.
    paths: Vec<std::ffi::CString>,
    argv: Vec<std::ffi::CString>,
    env: Vec<std::ffi::CString>,
    /// The child's stack below a guard page, and one page shared with the
    /// child even across a fork, where it reports a failure.
    memory: LaunchMemory,
}

impl std::fmt::Debug for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launcher")
            .field("paths", &self.paths)
            .field("argv", &self.argv)
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// Stack of the cloned child until its exec: it runs one small function
/// that makes system calls, far below this.
const LAUNCH_STACK: usize = 64 * 1024;
const PAGE: usize = 4096;

/// `mmap`ed memory of a [`Launcher`]: a guard page, the child's stack, and
/// a `MAP_SHARED` page for the failure report.
struct LaunchMemory {
    stack_base: *mut libc::c_void,
    shared: *mut LaunchFailure,
}

// SAFETY: the mappings are owned by the LaunchMemory alone (created in
// `new`, unmapped in `drop`) and only used through `&mut Launcher`.
unsafe impl Send for LaunchMemory {}

impl LaunchMemory {
    fn new() -> io::Result<LaunchMemory> {
        // SAFETY: fresh anonymous mappings; no existing memory is touched.
        unsafe {
            let stack_base = libc::mmap(
                std::ptr::null_mut(),
                PAGE + LAUNCH_STACK,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if stack_base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let mut memory = LaunchMemory {
                stack_base,
                shared: std::ptr::null_mut(),
            };
            // The lowest page is the guard: an overflow faults.
            if libc::mprotect(stack_base, PAGE, libc::PROT_NONE) != 0 {
                return Err(io::Error::last_os_error());
            }
            let shared = libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            if shared == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            memory.shared = shared.cast();
            Ok(memory)
        }
    }

    /// The top of the stack, 16-byte aligned.
    fn stack_top(&self) -> *mut libc::c_void {
        ((self.stack_base as usize + PAGE + LAUNCH_STACK) & !15) as *mut libc::c_void
    }
}

impl Drop for LaunchMemory {
    fn drop(&mut self) {
        // SAFETY: both mappings were made by LaunchMemory::new with these
        // sizes and nothing refers to them any more.
        unsafe {
            libc::munmap(self.stack_base, PAGE + LAUNCH_STACK);
            if !self.shared.is_null() {
                libc::munmap(self.shared.cast(), PAGE);
            }
        }
    }
}

/// Where the cloned child reports a failure: the step and its errno.
#[derive(Debug, Default, Clone, Copy)]
#[repr(C)]
struct LaunchFailure {
    step: libc::c_int,
    errno: libc::c_int,
}

/// Everything the cloned child reads, prepared by the parent, which keeps
/// it alive until the clone returns.
#[repr(C)]
struct LaunchArgs {
    paths: *const *const libc::c_char,
    argv: *const *const libc::c_char,
    /// `/bin/sh`, a free slot for the script, then `argv[1..]`.
    sh_argv: *mut *const libc::c_char,
    envp: *const *const libc::c_char,
    stdio: [RawFd; 3],
    uid: libc::uid_t,
    gid: libc::gid_t,
    failure: *mut LaunchFailure,
}

const LAUNCH_STEPS: [&str; 13] = [
    "",
    "setsid",
    "seteuid(0)",
    "setgroups",
    "setresgid",
    "setresuid",
    "dropping root (it could be regained)",
    "dup2 of the standard descriptors",
    "chdir /",
    "execve",
    "closing descriptors",
    "execve /bin/sh",
    "setpgid",
];

/// Whether `fs.suid_dumpable` keeps a process that changed ids out of its
/// user's reach (0 or 2), so that it may share memory with its parent.
fn suid_dumpable_safe() -> bool {
    matches!(
        std::fs::read("/proc/sys/fs/suid_dumpable").as_deref(),
        Ok(b"0\n" | b"2\n" | b"0" | b"2")
    )
}

/// Sets this thread's signal mask with the raw system call (glibc's
/// wrappers leave its two internal signals unblocked); returns the old one.
fn raw_sigmask(mask: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: rt_sigprocmask reads and writes one 8-byte kernel sigset
    // each, both valid for this call.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            i64::from(libc::SIG_SETMASK),
            &mask as *const u64,
            &mut old as *mut u64,
            8i64,
        );
    }
    old
}

impl Launcher {
    /// Prepares `argv` (the program, then its arguments) and the
    /// environment `env`. Refuses an empty program and a NUL byte anywhere.
    pub fn new(argv: &[String], env: &[(String, String)]) -> io::Result<Launcher> {
        use std::ffi::CString;
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
        let cstr = |s: String| {
            CString::new(s)
                .map_err(|_| invalid("a NUL byte in the command or its environment".into()))
        };
        let program = match argv.first() {
            Some(p) if !p.is_empty() => p,
            _ => return Err(invalid("empty command".into())),
        };
        let paths = if program.contains('/') {
            vec![cstr(program.clone())?]
        } else {
            let search = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map_or("/usr/bin:/bin", |(_, v)| v.as_str());
            search
                .split(':')
                .map(|dir| match dir {
                    "" => cstr(program.clone()),
                    d => cstr(format!("{}/{program}", d.trim_end_matches('/'))),
                })
                .collect::<io::Result<_>>()?
        };
        Ok(Launcher {
            paths,
            argv: argv
                .iter()
                .map(|a| cstr(a.clone()))
                .collect::<io::Result<_>>()?,
            env: env
                .iter()
                .map(|(k, v)| cstr(format!("{k}={v}")))
                .collect::<io::Result<_>>()?,
            memory: LaunchMemory::new()?,
        })
    }

    /// Starts the command with `stdio` as its descriptors 0, 1 and 2 (each
    /// must be 3 or above), as `run_as`; returns its pid once it has
    /// exec'd. The command leads its own process group (its pid); it also
    /// leads its own session when this process's session has a controlling
    /// terminal, so that it can never reach that terminal, and otherwise
    /// stays in this session (one scheduling autogroup for the caller and
    /// its commands: a session per command made each one a group of its
    /// own under the kernel's session autogroups, and eight commands
    /// outweighed everything else). The check is made in the child, just
    /// before it chooses. A failure in the child (before or at the exec) is returned
    /// as an error naming the step, and the child is reaped.
    pub fn start(
        &mut self,
        stdio: [RawFd; 3],
        run_as: &crate::privilege::RunAs,
    ) -> io::Result<i32> {
        self.start_as(stdio, run_as, suid_dumpable_safe())
    }

    /// [`Launcher::start`], with the child sharing this process's memory
    /// until its exec (`shared_memory`) or getting a copy of it.
    fn start_as(
        &mut self,
        stdio: [RawFd; 3],
        run_as: &crate::privilege::RunAs,
        shared_memory: bool,
    ) -> io::Result<i32> {
        if stdio.iter().any(|&fd| fd < 3) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the command's standard descriptors must be 3 or above before they are moved",
            ));
        }
        let ptrs = |v: &[std::ffi::CString]| -> Vec<*const libc::c_char> {
            v.iter()
                .map(|c| c.as_ptr())
                .chain(std::iter::once(std::ptr::null()))
                .collect()
        };
        let paths = ptrs(&self.paths);
        let argv = ptrs(&self.argv);
        let envp = ptrs(&self.env);
        let mut sh_argv: Vec<*const libc::c_char> = vec![c"/bin/sh".as_ptr(), std::ptr::null()];
        sh_argv.extend_from_slice(&argv[1..]);
        let args = LaunchArgs {
            paths: paths.as_ptr(),
            argv: argv.as_ptr(),
            sh_argv: sh_argv.as_mut_ptr(),
            envp: envp.as_ptr(),
            stdio,
            uid: run_as.uid(),
            gid: run_as.gid(),
            failure: self.memory.shared,
        };
        // SAFETY: `shared` is the page mapped by LaunchMemory::new; no child
        // runs now.
        unsafe { std::ptr::write_volatile(self.memory.shared, LaunchFailure::default()) };
        // Every signal blocked across the clone, so that no handler of this
        // process runs in the child before it has reset them all; except
        // SIGALRM when it has its default action (the skeleton's watchdog:
        // it must still end this process if the child never execs, for
        // instance stopped by its user), which runs no handler anywhere.
        let mut mask = u64::MAX;
        // SAFETY: queries SIGALRM's action into a zeroed sigaction.
        let alarm_default = unsafe {
            let mut current: libc::sigaction = std::mem::zeroed();
            libc::sigaction(libc::SIGALRM, std::ptr::null(), &mut current) == 0
                && current.sa_sigaction == libc::SIG_DFL
        };
        if alarm_default {
            mask &= !(1u64 << (libc::SIGALRM - 1));
        }
        let old_mask = raw_sigmask(mask);
        let flags = if shared_memory {
            libc::CLONE_VM | libc::CLONE_VFORK
        } else {
            libc::CLONE_VFORK
        };
        // SAFETY: with CLONE_VFORK this thread is suspended until the child
        // has exec'd or exited, and with CLONE_VM the child shares this
        // memory: nothing else touches `args`, the pointer vectors, the
        // CStrings or the stack while the child reads them, and they outlive
        // it (dropped after clone returns). Without CLONE_VM the child reads
        // its own copy. It runs `launch_child` on the mapped stack (borrowed
        // through `&mut self`), makes only raw system calls and writes only
        // the shared failure page and `sh_argv[1]`.
        let pid = unsafe {
            libc::clone(
                launch_child,
                self.memory.stack_top(),
                flags | libc::SIGCHLD,
                (&args as *const LaunchArgs).cast_mut().cast(),
            )
        };
        let clone_error = io::Error::last_os_error();
        raw_sigmask(old_mask);
        if pid < 0 {
            return Err(clone_error);
        }
        // SAFETY: the child has exec'd or exited (CLONE_VFORK); nothing
        // writes the shared page any more.
        let failure = unsafe { std::ptr::read_volatile(self.memory.shared) };
        if failure.step != 0 {
            // The child exited right after reporting: reap it.
            let _ = crate::wait::reap(pid);
            let step = LAUNCH_STEPS
                .get(failure.step as usize)
                .copied()
                .unwrap_or("?");
            let e = io::Error::from_raw_os_error(failure.errno);
            return Err(io::Error::new(e.kind(), format!("{step}: {e}")));
        }
        Ok(pid)
    }
}

/// The cloned child of [`Launcher::start`]: raw system calls only, on data
/// the parent prepared; returns only on failure (the return value becomes
/// the exit status), after writing the step and errno to the shared page.
extern "C" fn launch_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the LaunchArgs of Launcher::start (or this process's
    // copy of it), alive and not touched by the suspended parent until this
    // process execs or exits.
    let args = unsafe { &*arg.cast::<LaunchArgs>() };
    let fail = |step: libc::c_int| -> libc::c_int {
        // SAFETY: reads this thread's errno location, which is valid memory.
        let errno = unsafe { *libc::__errno_location() };
        // SAFETY: `failure` points to the MAP_SHARED page of the Launcher,
        // mapped in this process too; the volatile write keeps it from
        // being optimised away before the exit.
        unsafe {
            std::ptr::write_volatile(
                args.failure,
                LaunchFailure {
                    step,
                    errno: if errno == 0 { libc::EPERM } else { errno },
                },
            )
        };
        127
    };
    // SAFETY (every block below): raw system calls with integer arguments
    // or pointers to memory prepared by the parent that stays valid until
    // the exec; none allocates or takes a lock.
    unsafe {
        // Descriptors first: nothing but the connection is open from here
        // on, whatever the user could later reach.
        for (target, &fd) in args.stdio.iter().enumerate() {
            if libc::syscall(libc::SYS_dup3, fd as i64, target as i64, 0i64) < 0 {
                return fail(7);
            }
        }
        if libc::syscall(libc::SYS_close_range, 3i64, i64::from(u32::MAX), 0i64) < 0 {
            return fail(10);
        }
        // Its own process group always (the time limit kills the group).
        // Its own session too when this session has a controlling terminal
        // (the master runs in the foreground on one): a process of the
        // session could open `/dev/tty` and, ignoring SIGTTOU, make itself
        // the terminal's foreground group; a new session has no terminal
        // and its leader is the command, which cannot get this one (it is
        // held). Without a terminal (a daemon), the command stays in this
        // session, which it cannot give one (only the session's leader
        // can), so the whole instance is one scheduling autogroup instead
        // of one per command. ENXIO is the kernel's "no controlling
        // terminal"; any other answer is taken as having one.
        let tty = libc::syscall(
            libc::SYS_openat,
            i64::from(libc::AT_FDCWD),
            c"/dev/tty".as_ptr(),
            i64::from(libc::O_RDONLY | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC),
        );
        let no_terminal = tty < 0 && *libc::__errno_location() == libc::ENXIO;
        if tty >= 0 {
            libc::syscall(libc::SYS_close, tty);
        }
        if no_terminal {
            if libc::syscall(libc::SYS_setpgid, 0i64, 0i64) < 0 {
                return fail(12);
            }
        } else if libc::syscall(libc::SYS_setsid) < 0 {
            return fail(1);
        }
        if libc::syscall(libc::SYS_chdir, c"/".as_ptr()) < 0 {
            return fail(8);
        }
        // The one privilege drop, with this thread's raw system calls.
        if let Err(failure) = privilege::drop_ids(&privilege::ThisThread, args.uid, args.gid) {
            let (step, errno) = match failure {
                privilege::DropFailure::Call(call, errno) => {
                    let step = match call {
                        "seteuid(0)" => 2,
                        "setgroups" => 3,
                        "setresgid" => 4,
                        _ => 5,
                    };
                    (step, errno as libc::c_int)
                }
                privilege::DropFailure::Regainable => (6, libc::EPERM),
            };
            *libc::__errno_location() = errno;
            return fail(step);
        }
        // Every signal to its default action (a handler of the parent must
        // never run here; an ignored signal would stay ignored in the
        // command), then none blocked. The kernel refuses SIGKILL and
        // SIGSTOP, which are always at their default.
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64i64 {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &default as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8i64,
            );
        }
        let none: u64 = 0;
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            i64::from(libc::SIG_SETMASK),
            &none as *const u64,
            std::ptr::null_mut::<u64>(),
            8i64,
        );
        // As execvp: the next directory when the command is not in this
        // one (or that file system is unreachable); EACCES if it was
        // somewhere but could not be run; /bin/sh for a file that is not
        // an executable format (a script without `#!`).
        let mut denied = false;
        let mut candidate = args.paths;
        while !(*candidate).is_null() {
            libc::syscall(libc::SYS_execve, *candidate, args.argv, args.envp);
            match *libc::__errno_location() {
                libc::EACCES => denied = true,
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
                libc::ENOEXEC => {
                    *args.sh_argv.add(1) = *candidate;
                    libc::syscall(
                        libc::SYS_execve,
                        c"/bin/sh".as_ptr(),
                        args.sh_argv,
                        args.envp,
                    );
                    return fail(11);
                }
                _ => return fail(9),
            }
            candidate = candidate.add(1);
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(9)
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction` (handler, flags,
/// restorer, 64-bit mask), which is neither glibc's nor the libc crate's
/// `sigaction`. Written for the architectures whose layout this is; any
/// other fails to build here rather than pass the kernel a wrong layout.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const _: () = assert!(std::mem::size_of::<KernelSigaction>() == 32);

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!(
    "postern-sys: the launcher's kernel sigaction layout is only known for x86_64 and aarch64"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_inherited_number_is_adopted_once_and_never_a_standard_stream() {
        use std::os::fd::IntoRawFd;
        let raw = std::fs::File::open("/dev/null").unwrap().into_raw_fd();
        let owned = adopt_inherited(raw).unwrap();
        assert_eq!(owned.as_raw_fd(), raw);
        let again = adopt_inherited(raw).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::EBUSY));
        for stream in 0..=2 {
            let err = adopt_inherited(stream).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
        }
    }

    #[test]
    fn launcher_refuses_what_cannot_be_executed() {
        assert!(Launcher::new(&[], &[]).is_err());
        assert!(Launcher::new(&strings(&[""]), &[]).is_err());
        assert!(Launcher::new(&strings(&["/bin/c\0at"]), &[]).is_err());
        let env = vec![("X".to_string(), "a\0b".to_string())];
        assert!(Launcher::new(&strings(&["/bin/cat"]), &env).is_err());
    }

    #[test]
    fn launcher_looks_for_a_bare_name_in_the_commands_path() {
        let paths = |argv: &[&str], env: &[(String, String)]| -> Vec<String> {
            Launcher::new(&strings(argv), env)
                .unwrap()
                .paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect()
        };
        assert_eq!(paths(&["/bin/cat", "-u"], &[]), ["/bin/cat"]);
        assert_eq!(paths(&["bin/cat"], &[]), ["bin/cat"]);
        assert_eq!(paths(&["cat"], &[]), ["/usr/bin/cat", "/bin/cat"]);
        let env = vec![("PATH".to_string(), "/opt/x/::/usr/bin".to_string())];
        assert_eq!(paths(&["cat"], &env), ["/opt/x/cat", "cat", "/usr/bin/cat"]);
    }

    fn nobody() -> crate::privilege::RunAs {
        let owner = crate::privilege::MailOwner {
            uid: 999_999,
            gid: 999_999,
        };
        crate::privilege::RunAs::new(65534, 65534, owner, "nobody").unwrap()
    }

    #[test]
    fn launcher_runs_the_command_as_the_user_alone_with_its_descriptors() {
        use std::io::Read;
        use std::os::unix::net::UnixStream;
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test runs as root (the launcher switches users)"
        );
        let script = "id -u; id -g; id -G; ls /proc/self/fd | wc -l; pwd; echo \"$X\"; \
                      grep -E '^Sig(Blk|Ign)' /proc/self/status; \
                      echo $$ $(cut -d' ' -f5,6 /proc/$$/stat)";
        let env = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("X".to_string(), "y z".to_string()),
        ];
        for shared in [true, false] {
            let mut l = Launcher::new(&strings(&["sh", "-c", script]), &env).unwrap();
            let (mut ours, theirs) = UnixStream::pair().unwrap();
            ours.set_read_timeout(Some(std::time::Duration::from_secs(30)))
                .unwrap();
            let fd = theirs.as_raw_fd();
            let pid = l.start_as([fd, fd, fd], &nobody(), shared).unwrap();
            drop(theirs);
            let mut out = String::new();
            ours.read_to_string(&mut out).unwrap();
            let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            assert_eq!(
                status,
                Ok(nix::sys::wait::WaitStatus::Exited(
                    nix::unistd::Pid::from_raw(pid),
                    0
                ))
            );
            // Its own process group; its own session only if this one has
            // a controlling terminal.
            let (rest, ids) = out.trim_end().rsplit_once('\n').unwrap();
            let ids: Vec<i32> = ids.split(' ').map(|n| n.parse().unwrap()).collect();
            let sid = if has_controlling_terminal() {
                pid
            } else {
                nix::unistd::getsid(None).unwrap().as_raw()
            };
            assert_eq!(ids, [pid, pid, sid], "pid, group, session");
            // ls sees 0, 1, 2 and its own directory descriptor.
            assert_eq!(
                format!("{rest}\n"),
                "65534\n65534\n65534\n4\n/\ny z\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
                "shared memory: {shared}"
            );
        }
    }

    /// Whether this process has a controlling terminal, asked as the
    /// launched child asks it.
    fn has_controlling_terminal() -> bool {
        use std::os::unix::fs::OpenOptionsExt;
        match std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open("/dev/tty")
        {
            Ok(_) => true,
            Err(e) => e.raw_os_error() != Some(libc::ENXIO),
        }
    }

    #[test]
    fn launcher_reports_the_failing_step_and_reaps_the_child() {
        let mut l = Launcher::new(&strings(&["/nonexistent/x"]), &[]).unwrap();
        let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let fd = theirs.as_raw_fd();
        for shared in [true, false] {
            let e = l.start_as([fd, fd, fd], &nobody(), shared).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound);
            assert!(e.to_string().starts_with("execve: "), "{e}");
        }
        // Reaped: this thread has no child left, not even a zombie (the
        // kernel lists a thread's unreaped children there). Asked per thread:
        // waiting for any child would reap those of tests running beside.
        let tid = nix::unistd::gettid();
        let children = std::fs::read_to_string(format!("/proc/self/task/{tid}/children")).unwrap();
        assert_eq!(children.trim(), "");
    }

    #[test]
    fn launcher_refuses_standard_descriptors_below_three() {
        let mut l = Launcher::new(&strings(&["/bin/true"]), &[]).unwrap();
        let e = l.start([1, 5, 5], &nobody()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}
