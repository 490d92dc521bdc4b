//! Privilege changes, behind a small and loud API.
//!
//! - [`RunAs`] is an identity an external command or a delivery may run
//!   with. It can only be built for a uid and gid that are not 0, not the
//!   mail owner's, and not -1 (security invariant 1).
//! - [`drop_to`] drops supplementary groups, then the gid, then the uid
//!   (real, effective and saved), and verifies that root cannot be regained.
//!   It is async-signal-safe, so it can run between fork and exec. Its
//!   steps (`drop_ids`) are the only privilege drop: `BeforeExec::run_as`
//!   and the `Launcher`'s vfork-style child make the same steps, the latter
//!   with raw system calls that change its own thread alone.
//! - [`MailOwnerEffective`] and [`as_root`] are the temporary switches of a
//!   privileged child (spawn, local): idle with the mail owner as effective
//!   uid, root only for the operations that need it.

use nix::unistd::{getresuid, setegid, seteuid, setgroups, setresgid, setresuid, Gid, Uid};

/// Why an identity was refused or a change failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrivilegeError {
    /// The identity may not run commands or deliveries.
    #[error("{0}")]
    Refused(String),
    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Failed {
        /// Which call.
        call: &'static str,
        /// The error.
        errno: nix::Error,
    },
}

/// A uid/gid pair that is safe to run untrusted work as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    uid: u32,
    gid: u32,
}

/// The ids of the mail owner, which nothing external may run as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MailOwner {
    /// uid of mail_owner.
    pub uid: u32,
    /// Primary gid of mail_owner.
    pub gid: u32,
}

impl RunAs {
    /// Validates `uid`/`gid` for running work on someone's behalf; `what`
    /// names the identity in the refusal ("user=root").
    pub fn new(uid: u32, gid: u32, owner: MailOwner, what: &str) -> Result<Self, PrivilegeError> {
        let refuse = |why: String| Err(PrivilegeError::Refused(format!("{what}: {why}")));
        if uid == 0 {
            return refuse("uid 0 (root) is not allowed".into());
        }
        if gid == 0 {
            return refuse("gid 0 (root's group) is not allowed".into());
        }
        if uid == u32::MAX || gid == u32::MAX {
            return refuse("id -1 is not allowed".into());
        }
        if uid == owner.uid {
            return refuse(format!(
                "uid {uid} is the mail owner's, which is not allowed"
            ));
        }
        if gid == owner.gid {
            return refuse(format!(
                "gid {gid} is the mail owner's group, which is not allowed"
            ));
        }
        Ok(RunAs { uid, gid })
    }

    /// The uid.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The gid.
    pub fn gid(&self) -> u32 {
        self.gid
    }
}

fn failed(call: &'static str) -> impl Fn(nix::Error) -> PrivilegeError {
    move |errno| PrivilegeError::Failed { call, errno }
}

/// Becomes `uid`/`gid` for good: no supplementary groups, real, effective and
/// saved ids all changed, and a check that root cannot be regained.
///
/// Must be called with effective uid 0. For a `Command`'s child, use
/// [`crate::BeforeExec::run_as`], which makes the same calls without
/// allocating.
pub fn drop_to(uid: u32, gid: u32) -> Result<(), PrivilegeError> {
    drop_ids(&ProcessWide, uid, gid).map_err(|f| match f {
        DropFailure::Call(call, errno) => failed(call)(errno),
        DropFailure::Regainable => {
            PrivilegeError::Refused("root privileges could be regained after dropping them".into())
        }
    })
}

/// Why [`drop_ids`] failed, without allocating.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DropFailure {
    /// A system call failed.
    Call(&'static str, nix::Error),
    /// Root could be regained afterwards.
    Regainable,
}

/// The system calls of an identity change, by who they act for.
pub(crate) trait IdCalls {
    /// Whether the effective uid is 0.
    fn effective_root(&self) -> bool;
    /// Effective uid 0 (`setresuid(-1, 0, -1)`).
    fn become_root(&self) -> nix::Result<()>;
    /// No supplementary groups.
    fn clear_groups(&self) -> nix::Result<()>;
    /// Real, effective and saved gid.
    fn set_gid(&self, gid: u32) -> nix::Result<()>;
    /// Real, effective and saved uid.
    fn set_uid(&self, uid: u32) -> nix::Result<()>;
}

/// glibc's calls (through nix), which change every thread of the process:
/// for [`drop_to`] and for a forked child before its exec.
pub(crate) struct ProcessWide;

impl IdCalls for ProcessWide {
    fn effective_root(&self) -> bool {
        Uid::effective().is_root()
    }
    fn become_root(&self) -> nix::Result<()> {
        seteuid(Uid::from_raw(0))
    }
    fn clear_groups(&self) -> nix::Result<()> {
        setgroups(&[])
    }
    fn set_gid(&self, gid: u32) -> nix::Result<()> {
        let g = Gid::from_raw(gid);
        setresgid(g, g, g)
    }
    fn set_uid(&self, uid: u32) -> nix::Result<()> {
        let u = Uid::from_raw(uid);
        setresuid(u, u, u)
    }
}

/// Raw system calls, which change the calling thread alone: for the
/// vfork-style child of [`crate::Launcher`], which shares its parent's
/// memory, where glibc's wrappers would signal the parent's threads to
/// change them too.
pub(crate) struct ThisThread;

/// A raw system call's result: `Err` with errno when it returned < 0.
fn raw(ret: libc::c_long) -> nix::Result<()> {
    if ret < 0 {
        Err(nix::Error::last())
    } else {
        Ok(())
    }
}

impl IdCalls for ThisThread {
    fn effective_root(&self) -> bool {
        // SAFETY: geteuid takes no arguments and cannot fail.
        unsafe { libc::syscall(libc::SYS_geteuid) == 0 }
    }
    fn become_root(&self) -> nix::Result<()> {
        // SAFETY: integer arguments only.
        raw(unsafe { libc::syscall(libc::SYS_setresuid, -1i64, 0i64, -1i64) })
    }
    fn clear_groups(&self) -> nix::Result<()> {
        // SAFETY: a count of 0 with a null list: the kernel reads nothing.
        raw(unsafe { libc::syscall(libc::SYS_setgroups, 0i64, std::ptr::null::<libc::gid_t>()) })
    }
    fn set_gid(&self, gid: u32) -> nix::Result<()> {
        let g = i64::from(gid);
        // SAFETY: integer arguments only.
        raw(unsafe { libc::syscall(libc::SYS_setresgid, g, g, g) })
    }
    fn set_uid(&self, uid: u32) -> nix::Result<()> {
        let u = i64::from(uid);
        // SAFETY: integer arguments only.
        raw(unsafe { libc::syscall(libc::SYS_setresuid, u, u, u) })
    }
}

/// The one privilege drop, behind [`drop_to`], [`crate::BeforeExec::run_as`]
/// and [`crate::Launcher`]: effective root if need be (allowed when the real
/// or saved uid is 0: an effective uid that is not root cannot change
/// groups), no supplementary groups, then the gid, then the uid, and a check
/// that root cannot be regained. Async-signal-safe (no allocation, on
/// success or failure), so it may run between fork (or clone) and exec.
pub(crate) fn drop_ids(calls: &impl IdCalls, uid: u32, gid: u32) -> Result<(), DropFailure> {
    let call = |name: &'static str| move |errno| DropFailure::Call(name, errno);
    if !calls.effective_root() {
        calls.become_root().map_err(call("seteuid(0)"))?;
    }
    calls.clear_groups().map_err(call("setgroups"))?;
    calls.set_gid(gid).map_err(call("setresgid"))?;
    calls.set_uid(uid).map_err(call("setresuid"))?;
    if uid != 0 && (calls.become_root().is_ok() || calls.set_uid(0).is_ok()) {
        return Err(DropFailure::Regainable);
    }
    Ok(())
}

/// A privileged child's idle state: effective uid and gid of the mail owner,
/// real and saved uid 0, so that [`as_root`] can return to root briefly.
#[derive(Debug)]
pub struct MailOwnerEffective;

impl MailOwnerEffective {
    /// Switches the effective ids to the mail owner's.
    pub fn enter(owner: MailOwner) -> Result<Self, PrivilegeError> {
        setgroups(&[Gid::from_raw(owner.gid)]).map_err(failed("setgroups"))?;
        setegid(Gid::from_raw(owner.gid)).map_err(failed("setegid"))?;
        seteuid(Uid::from_raw(owner.uid)).map_err(failed("seteuid"))?;
        Ok(MailOwnerEffective)
    }
}

/// Runs `f` with effective uid 0 and restores the previous effective uid.
/// Only possible in a process whose real or saved uid is 0.
pub fn as_root<T>(f: impl FnOnce() -> T) -> Result<T, PrivilegeError> {
    let before = Uid::effective();
    if before.is_root() {
        return Ok(f());
    }
    let ids = getresuid().map_err(failed("getresuid"))?;
    if !ids.real.is_root() && !ids.saved.is_root() {
        return Err(PrivilegeError::Refused(
            "this process cannot become root".into(),
        ));
    }
    seteuid(Uid::from_raw(0)).map_err(failed("seteuid(0)"))?;
    let result = f();
    if let Err(e) = seteuid(before) {
        // Staying root by accident is a broken invariant: stop here.
        log::error!("cannot return from root to uid {before}: {e}; aborting");
        std::process::abort();
    }
    Ok(result)
}

/// Runs `f` with the filesystem uid and gid of `owner` and the given umask,
/// so that files `f` creates belong to `owner` with the intended mode from
/// the start (no `chown` or `chmod` by path as root afterwards), and so that
/// `f`'s path operations inside `owner`'s directories get only `owner`'s
/// rights. Restores the previous filesystem ids and umask. Linux only; the
/// filesystem ids are per thread, and the master is single-threaded.
pub fn as_filesystem_user<T>(
    owner: MailOwner,
    umask: u32,
    f: impl FnOnce() -> T,
) -> Result<T, PrivilegeError> {
    use nix::sys::stat::{umask as set_umask, Mode};
    use nix::unistd::{setfsgid, setfsuid};
    let old_gid = setfsgid(Gid::from_raw(owner.gid));
    let old_uid = setfsuid(Uid::from_raw(owner.uid));
    // setfsuid reports the previous value, not success: read back to verify.
    let now_uid = setfsuid(Uid::from_raw(u32::MAX));
    let now_gid = setfsgid(Gid::from_raw(u32::MAX));
    if now_uid.as_raw() != owner.uid || now_gid.as_raw() != owner.gid {
        setfsuid(old_uid);
        setfsgid(old_gid);
        return Err(PrivilegeError::Refused(format!(
            "cannot switch the filesystem ids to {}:{}",
            owner.uid, owner.gid
        )));
    }
    let old_mask = set_umask(Mode::from_bits_truncate(umask));
    let result = f();
    set_umask(old_mask);
    setfsuid(old_uid);
    setfsgid(old_gid);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWNER: MailOwner = MailOwner { uid: 105, gid: 107 };

    #[test]
    fn run_as_refuses_root_owner_and_minus_one() {
        assert!(RunAs::new(1000, 1000, OWNER, "user=ann").is_ok());
        let msg = |r: Result<RunAs, PrivilegeError>| r.unwrap_err().to_string();
        assert_eq!(
            msg(RunAs::new(0, 1000, OWNER, "user=root")),
            "user=root: uid 0 (root) is not allowed"
        );
        assert_eq!(
            msg(RunAs::new(1000, 0, OWNER, "group=root")),
            "group=root: gid 0 (root's group) is not allowed"
        );
        assert!(msg(RunAs::new(105, 1000, OWNER, "u")).contains("mail owner's"));
        assert!(msg(RunAs::new(1000, 107, OWNER, "u")).contains("mail owner's group"));
        assert!(msg(RunAs::new(u32::MAX, 1000, OWNER, "u")).contains("-1"));
        assert!(msg(RunAs::new(1000, u32::MAX, OWNER, "u")).contains("-1"));
    }
}
