//! External commands as master.cf describes them: `user=name[:group]` and
//! `argv=command args...` (last). Used by spawn, by `postern check`, and by
//! the queue's command transports.
//!
//! Validation resolves the names and refuses, with the exact reason, any
//! identity that [`RunAs`] refuses: uid or gid 0, the mail owner's uid or
//! gid, id -1.

use crate::account::{self, Account};
use crate::privilege::{MailOwner, RunAs};

/// How user and group names are looked up (a seam for tests).
pub trait Accounts {
    /// The user called `name`.
    fn user(&self, name: &str) -> Result<Option<Account>, String>;
    /// The id of the group called `name`.
    fn group(&self, name: &str) -> Result<Option<u32>, String>;
}

/// The system's account database.
#[derive(Debug, Clone, Copy)]
pub struct SystemAccounts;

impl Accounts for SystemAccounts {
    fn user(&self, name: &str) -> Result<Option<Account>, String> {
        account::user_by_name(name).map_err(|e| e.to_string())
    }
    fn group(&self, name: &str) -> Result<Option<u32>, String> {
        account::group_by_name(name).map_err(|e| e.to_string())
    }
}

/// `user=` and `argv=`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    /// Who the command runs as.
    pub run_as: RunAs,
    /// `user=` as written, for log lines.
    pub user_text: String,
    /// The command and its arguments.
    pub argv: Vec<String>,
}

impl CommandSpec {
    /// Parses `user=name[:group]` and `argv=command args...` (last).
    pub fn parse(
        args: &[String],
        owner: MailOwner,
        accounts: &dyn Accounts,
    ) -> Result<Self, String> {
        let mut user = None;
        let mut argv = None;
        for (i, a) in args.iter().enumerate() {
            if let Some(u) = a.strip_prefix("user=") {
                user = Some(u.to_string());
            } else if let Some(cmd) = a.strip_prefix("argv=") {
                let mut v = vec![cmd.to_string()];
                v.extend(args[i + 1..].iter().cloned());
                argv = Some(v);
                break;
            } else {
                return Err(format!("unknown attribute '{a}' (expected user=name[:group] and argv=command..., argv last)"));
            }
        }
        let user_text = user.ok_or("missing user=name[:group] attribute")?;
        let argv = argv.ok_or("missing argv=command attribute")?;
        if argv[0].is_empty() {
            return Err("argv= names no command".into());
        }
        let (name, group) = match user_text.split_once(':') {
            Some((n, g)) => (n, Some(g)),
            None => (user_text.as_str(), None),
        };
        let account = accounts
            .user(name)?
            .ok_or_else(|| format!("user={user_text}: no such user '{name}'"))?;
        let gid = match group {
            Some(g) => accounts
                .group(g)?
                .ok_or_else(|| format!("user={user_text}: no such group '{g}'"))?,
            None => account.gid,
        };
        let run_as = RunAs::new(account.uid, gid, owner, &format!("user={user_text}"))
            .map_err(|e| e.to_string())?;
        Ok(CommandSpec {
            run_as,
            user_text,
            argv,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct Fake;
    impl Accounts for Fake {
        fn user(&self, name: &str) -> Result<Option<Account>, String> {
            let mk = |uid, gid| Account {
                name: name.into(),
                uid,
                gid,
                home: PathBuf::from("/"),
                shell: PathBuf::from("/bin/sh"),
            };
            Ok(match name {
                "root" => Some(mk(0, 0)),
                "ann" => Some(mk(1000, 1000)),
                "postern" => Some(mk(105, 107)),
                "odd" => Some(mk(u32::MAX, 1000)),
                _ => None,
            })
        }
        fn group(&self, name: &str) -> Result<Option<u32>, String> {
            Ok(match name {
                "root" => Some(0),
                "staff" => Some(50),
                "postern" => Some(107),
                _ => None,
            })
        }
    }

    const OWNER: MailOwner = MailOwner { uid: 105, gid: 107 };

    fn parse(args: &str) -> Result<CommandSpec, String> {
        let v: Vec<String> = args.split_whitespace().map(str::to_string).collect();
        CommandSpec::parse(&v, OWNER, &Fake)
    }

    #[test]
    fn good_attributes() {
        let a = parse("user=ann argv=/bin/echo -n hi").unwrap();
        assert_eq!((a.run_as.uid(), a.run_as.gid()), (1000, 1000));
        assert_eq!(a.argv, vec!["/bin/echo", "-n", "hi"]);
        let a = parse("user=ann:staff argv=/bin/cat").unwrap();
        assert_eq!(a.run_as.gid(), 50);
        // Everything after argv= is the command's, even what looks like an attribute.
        let a = parse("user=ann argv=/bin/echo user=root").unwrap();
        assert_eq!(a.argv, vec!["/bin/echo", "user=root"]);
    }

    #[test]
    fn refused_attributes() {
        let err = |s: &str| parse(s).unwrap_err();
        assert_eq!(
            err("user=root argv=/bin/cat"),
            "user=root: uid 0 (root) is not allowed"
        );
        assert_eq!(
            err("user=ann:root argv=/bin/cat"),
            "user=ann:root: gid 0 (root's group) is not allowed"
        );
        assert!(err("user=postern argv=/bin/cat").contains("mail owner's"));
        assert!(err("user=ann:postern argv=/bin/cat").contains("mail owner's group"));
        assert!(err("user=odd argv=/bin/cat").contains("-1"));
        assert_eq!(
            err("user=nobody-here argv=/bin/cat"),
            "user=nobody-here: no such user 'nobody-here'"
        );
        assert_eq!(
            err("user=ann:nogroup-here argv=/bin/cat"),
            "user=ann:nogroup-here: no such group 'nogroup-here'"
        );
        assert_eq!(err("argv=/bin/cat"), "missing user=name[:group] attribute");
        assert_eq!(err("user=ann"), "missing argv=command attribute");
        assert!(err("user=ann flags=R argv=/bin/cat").starts_with("unknown attribute 'flags=R'"));
        assert_eq!(err("user=ann argv="), "argv= names no command");
    }
}
