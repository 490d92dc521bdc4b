//! Accounts: users and groups from the system databases.
//!
//! A thin, typed layer over getpwnam/getgrnam (through nix) and getpwent
//! (through `postern_sys::accounts`) that turns
//! "no such user" into `Ok(None)` and a failing database into an error that
//! names the account.

use std::path::PathBuf;

use nix::unistd::{Gid, Group, Uid, User};

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Login name.
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

/// The account database could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot look up {what} '{name}': {source}")]
pub struct LookupError {
    what: &'static str,
    name: String,
    #[source]
    source: nix::Error,
}

impl From<User> for Account {
    fn from(u: User) -> Self {
        Account {
            name: u.name,
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            home: u.dir,
            shell: u.shell,
        }
    }
}

/// The user called `name`, or `None` if there is none.
pub fn user_by_name(name: &str) -> Result<Option<Account>, LookupError> {
    if name.is_empty() || name.contains('\0') {
        return Ok(None);
    }
    User::from_name(name)
        .map(|u| u.map(Account::from))
        .map_err(|source| LookupError {
            what: "user",
            name: name.to_string(),
            source,
        })
}

/// Every account the user database lists, through NSS (so LDAP and sssd
/// users too, not only `/etc/passwd`'s).
pub fn all_users() -> std::io::Result<Vec<Account>> {
    Ok(postern_sys::accounts::all_users()?
        .into_iter()
        .map(|u| Account {
            name: u.name,
            uid: u.uid,
            gid: u.gid,
            home: u.home,
            shell: u.shell,
        })
        .collect())
}

/// The user with id `uid`, or `None`.
pub fn user_by_uid(uid: u32) -> Result<Option<Account>, LookupError> {
    User::from_uid(Uid::from_raw(uid))
        .map(|u| u.map(Account::from))
        .map_err(|source| LookupError {
            what: "uid",
            name: uid.to_string(),
            source,
        })
}

/// The id of the group called `name`, or `None`.
pub fn group_by_name(name: &str) -> Result<Option<u32>, LookupError> {
    if name.is_empty() || name.contains('\0') {
        return Ok(None);
    }
    Group::from_name(name)
        .map(|g| g.map(|g| g.gid.as_raw()))
        .map_err(|source| LookupError {
            what: "group",
            name: name.to_string(),
            source,
        })
}

/// The name of group `gid`, or `None`.
pub fn group_name(gid: u32) -> Option<String> {
    Group::from_gid(Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// True when this process runs as root.
pub fn running_as_root() -> bool {
    Uid::effective().is_root()
}

impl From<&Account> for postern_sys::privilege::MailOwner {
    fn from(a: &Account) -> Self {
        postern_sys::privilege::MailOwner {
            uid: a.uid,
            gid: a.gid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_exists_and_nonsense_does_not() {
        let root = user_by_name("root").unwrap().unwrap();
        assert_eq!(root.uid, 0);
        assert_eq!(user_by_uid(0).unwrap().unwrap().name, "root");
        assert!(user_by_name("no-such-user-postern-test").unwrap().is_none());
        assert!(user_by_name("").unwrap().is_none());
        assert!(user_by_name("a\0b").unwrap().is_none());
        assert_eq!(group_by_name("root").unwrap(), Some(0));
        assert!(all_users().unwrap().contains(&root));
    }
}
