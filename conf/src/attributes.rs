//! The command attributes of master.cf's spawn and pipe services, as
//! written: `user=name[:group]` and `argv=command args...` (last), and
//! Postfix pipe(8)'s `flags=` and the attributes accepted without effect.
//!
//! Parsing only: the names in `user=` are resolved, and the identity
//! refused or accepted, by `postern_common::command`, through an account
//! look-up it is given.

/// `user=` and `argv=`, as written (syntax checked, names not resolved).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandAttributes {
    /// `user=` as written, for messages and log lines.
    pub user_text: String,
    /// The user name of `user=`.
    pub user: String,
    /// The group name of `user=name:group`, if given.
    pub group: Option<String>,
    /// The command and its arguments (never empty; the command is named).
    pub argv: Vec<String>,
}

impl CommandAttributes {
    /// Parses `user=name[:group]` and `argv=command args...` (last).
    pub fn parse(args: &[String]) -> Result<Self, String> {
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
        Ok(CommandAttributes {
            user: name.to_string(),
            group: group.map(str::to_string),
            user_text,
            argv,
        })
    }
}

/// The user name of the `user=` before `argv=`, if any, whatever else the
/// attributes hold (for `postern check`'s warning about an account this
/// machine does not have).
pub fn user_name(args: &[String]) -> Option<String> {
    args.iter()
        .take_while(|a| !a.starts_with("argv="))
        .find_map(|a| a.strip_prefix("user="))
        .map(|u| u.split(':').next().unwrap_or(u).to_string())
}

/// What Postfix pipe(8)'s `flags=` asks for that postern's pipe does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipeFlags {
    /// `F`: an mbox `From sender  date` line first.
    pub from_line: bool,
    /// `R`: `Return-Path: <sender>`.
    pub return_path: bool,
    /// `O`: `X-Original-To: recipient`.
    pub original_to: bool,
    /// `D`: `Delivered-To: recipient`.
    pub delivered_to: bool,
    /// `>`: body lines starting with `From ` get a `>`.
    pub quote_from: bool,
}

/// Separates a pipe service's own attributes — `flags=` (the letters of
/// [`PipeFlags`]; others are listed as ignored) and `size=`, `eol=`,
/// `directory=`, `null_sender=`, `quote=`, `umask=` (accepted, listed as
/// ignored) — from the rest (`user=`, `argv=` and what follows it):
/// `(rest, flags, ignored)`.
pub fn split_pipe(args: &[String]) -> (Vec<String>, PipeFlags, Vec<String>) {
    let mut rest = Vec::new();
    let mut flags = PipeFlags::default();
    let mut ignored = Vec::new();
    for (i, a) in args.iter().enumerate() {
        if a.starts_with("argv=") {
            rest.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(letters) = a.strip_prefix("flags=") {
            for c in letters.chars() {
                match c {
                    'F' => flags.from_line = true,
                    'R' => flags.return_path = true,
                    'O' => flags.original_to = true,
                    'D' => flags.delivered_to = true,
                    '>' => flags.quote_from = true,
                    other => ignored.push(format!("flags letter '{other}'")),
                }
            }
        } else if [
            "size=",
            "eol=",
            "directory=",
            "null_sender=",
            "quote=",
            "umask=",
        ]
        .iter()
        .any(|p| a.starts_with(p))
        {
            ignored.push(a.clone());
        } else {
            rest.push(a.clone());
        }
    }
    (rest, flags, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn user_group_and_argv() {
        let a = CommandAttributes::parse(&args("user=ann:staff argv=/bin/echo user=root")).unwrap();
        assert_eq!(
            (a.user_text.as_str(), a.user.as_str(), a.group.as_deref()),
            ("ann:staff", "ann", Some("staff"))
        );
        assert_eq!(a.argv, ["/bin/echo", "user=root"]);
        let a = CommandAttributes::parse(&args("user=ann argv=/bin/cat")).unwrap();
        assert_eq!(a.group, None);
        assert_eq!(
            user_name(&args("bogus user=ann:staff argv=/bin/cat user=root")),
            Some("ann".to_string())
        );
        assert_eq!(user_name(&args("argv=/bin/cat user=root")), None);
    }

    #[test]
    fn pipe_attributes_are_split_off() {
        let (rest, flags, ignored) =
            split_pipe(&args("flags=DRXh size=10 user=ann argv=/bin/cat flags=F"));
        assert_eq!(rest, ["user=ann", "argv=/bin/cat", "flags=F"]);
        assert_eq!(
            flags,
            PipeFlags {
                delivered_to: true,
                return_path: true,
                ..PipeFlags::default()
            }
        );
        assert_eq!(ignored, ["flags letter 'X'", "flags letter 'h'", "size=10"]);
    }
}
