//! Every account of the user database as NSS gives it (`/etc/passwd`, LDAP,
//! sssd, whatever nsswitch.conf names), for `postern destinations`, which
//! must see every user's `.forward`. nix wraps the look-ups by name and by
//! id but not the enumeration (`setpwent`/`getpwent`/`endpwent`), so it is
//! wrapped here.

use std::ffi::{CStr, OsStr};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// One account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name (as bytes from the database, decoded leniently).
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: PathBuf,
}

/// The enumeration's state is one per process: one enumeration at a time.
static ENUMERATION: Mutex<()> = Mutex::new(());

/// Copies a C string field (`None` for a null pointer).
///
/// # Safety
///
/// `p` is null or points to a NUL-terminated string that stays valid for
/// the call.
unsafe fn field<'a>(p: *const libc::c_char) -> Option<&'a [u8]> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated, as the caller guarantees; the
    // bytes are copied by the caller before the next getpwent.
    Some(unsafe { CStr::from_ptr(p) }.to_bytes())
}

/// Every account, in the database's order. An error of the database (not
/// the end of the list) is an error.
pub fn all_users() -> io::Result<Vec<PasswdEntry>> {
    let _one = ENUMERATION.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out = Vec::new();
    // SAFETY: setpwent/getpwent/endpwent take no arguments; the static
    // state they share is used by this function alone, under the lock
    // (nothing else in postern enumerates accounts).
    unsafe { libc::setpwent() };
    let result = loop {
        nix::errno::Errno::clear();
        // SAFETY: see above; the entry it returns is valid until the next
        // call, and is copied before that.
        let p = unsafe { libc::getpwent() };
        if p.is_null() {
            // The end of the list leaves errno 0 (or ENOENT); anything
            // else is a database that could not be read.
            break match nix::errno::Errno::last() {
                nix::errno::Errno::UnknownErrno | nix::errno::Errno::ENOENT => Ok(()),
                e => Err(io::Error::from(e)),
            };
        }
        // SAFETY: non-null, points to the struct passwd getpwent returned.
        let pw = unsafe { &*p };
        // SAFETY: the fields of a struct passwd are null or C strings valid
        // until the next getpwent.
        let (name, home, shell) =
            unsafe { (field(pw.pw_name), field(pw.pw_dir), field(pw.pw_shell)) };
        let Some(name) = name else { continue };
        out.push(PasswdEntry {
            name: String::from_utf8_lossy(name).into_owned(),
            uid: pw.pw_uid,
            gid: pw.pw_gid,
            home: PathBuf::from(OsStr::from_bytes(home.unwrap_or_default())),
            shell: PathBuf::from(OsStr::from_bytes(shell.unwrap_or_default())),
        });
    };
    // SAFETY: as setpwent.
    unsafe { libc::endpwent() };
    result.map(|()| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_listed_as_the_database_has_it() {
        let users = all_users().unwrap();
        let root = users.iter().find(|u| u.uid == 0).unwrap();
        let by_name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(0))
            .unwrap()
            .unwrap();
        assert_eq!(
            (root.name.as_str(), &root.home),
            (by_name.name.as_str(), &by_name.dir)
        );
        assert_eq!(
            all_users().unwrap(),
            users,
            "a second enumeration starts again"
        );
    }
}
