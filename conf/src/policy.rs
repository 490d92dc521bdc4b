//! The allowed-destinations policy: what local may write to, whatever the
//! queue manager asks: its syntax and its lexical matching, pure. Reading
//! the system file and following root's symbolic links are in
//! `postern_common::destinations`.
//!
//! Following the local-delivery essay, this policy is independent of the
//! routing configuration (aliases, `.forward`): it is its own file,
//! `config_directory/destinations`, and every instruction is checked
//! against it after the switch to the target user. Syntax, one rule a line:
//!
//! ```text
//! # kind     pattern
//! mailbox    /var/mail/$user        # exactly this file ($user: the account)
//! mailbox    ~/Mail/**              # anything below ~/Mail
//! mailbox    /var/spool/mail/*      # files directly in that directory
//! maildir    ~/Maildir/
//! program    /etc/postern/programs/*
//! any        ~                      # anything in the home directory
//! user-policy narrow                # off | narrow (default) | widen
//! ```
//!
//! `~` is the account's home directory (`~` alone means anything in it). A
//! pattern must be absolute after `~` and `$user` are replaced. Destinations
//! are compared lexically after removing `.` components; a destination with a
//! `..` component or a relative path is refused outright.
//!
//! A per-user file, `~/.postern-destinations` (same rule syntax, no
//! `user-policy` line), can only *narrow* what the system file allows; with
//! `user-policy widen` it may also allow destinations inside the home
//! directory that the system file does not. With `user-policy off` it is
//! ignored.

use std::path::{Component, Path, PathBuf};

/// The kinds of destination a rule can allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An mbox file.
    Mailbox,
    /// A Maildir directory.
    Maildir,
    /// A program (the executable that will actually run).
    Program,
    /// Any of them.
    Any,
}

impl Kind {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "mailbox" => Kind::Mailbox,
            "maildir" => Kind::Maildir,
            "program" => Kind::Program,
            "any" => Kind::Any,
            _ => return None,
        })
    }

    fn covers(self, other: Kind) -> bool {
        self == Kind::Any || self == other
    }
}

/// How a pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    Exact,
    Children,
    Subtree,
}

/// One rule, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    kind: Kind,
    pattern: String,
    /// `file:line`, for the refusal message.
    pub place: String,
}

/// What the system file says about per-user files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserPolicy {
    /// Ignored.
    Off,
    /// May only narrow.
    Narrow,
    /// May narrow, and widen inside the home directory.
    Widen,
}

/// A parsed policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The file, for messages.
    pub file: String,
    /// Its rules.
    pub rules: Vec<Rule>,
    /// The `user-policy` setting (system file only).
    pub user_policy: UserPolicy,
}

/// Parses a policy file; every problem is reported as `file:line: message`.
pub fn parse(file: &str, text: &str, system: bool) -> Result<Policy, Vec<String>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut user_policy = UserPolicy::Narrow;
    for (i, raw) in text.lines().enumerate() {
        let place = format!("{file}:{}", i + 1);
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(kind), Some(pattern), None) = (words.next(), words.next(), words.next()) else {
            errors.push(format!("{place}: expected 'KIND PATTERN', got \"{line}\""));
            continue;
        };
        if kind == "user-policy" {
            if !system {
                errors.push(format!(
                    "{place}: user-policy belongs in the system file only"
                ));
                continue;
            }
            user_policy = match pattern {
                "off" => UserPolicy::Off,
                "narrow" => UserPolicy::Narrow,
                "widen" => UserPolicy::Widen,
                other => {
                    errors.push(format!(
                        "{place}: user-policy '{other}' is not off, narrow or widen"
                    ));
                    continue;
                }
            };
            continue;
        }
        let Some(kind) = Kind::parse(kind) else {
            errors.push(format!(
                "{place}: unknown kind '{kind}' (mailbox, maildir, program, any)"
            ));
            continue;
        };
        if !(pattern.starts_with('/') || pattern == "~" || pattern.starts_with("~/")) {
            errors.push(format!(
                "{place}: pattern '{pattern}' must start with / or ~"
            ));
            continue;
        }
        if pattern.split('/').any(|c| c == "..") {
            errors.push(format!(
                "{place}: pattern '{pattern}' must not contain '..'"
            ));
            continue;
        }
        let stars_ok = pattern.split('/').enumerate().all(|(n, c)| {
            !c.contains('*') || ((c == "*" || c == "**") && n == pattern.split('/').count() - 1)
        });
        if !stars_ok {
            errors.push(format!(
                "{place}: '*' and '**' may only be the last component of '{pattern}'"
            ));
            continue;
        }
        rules.push(Rule {
            kind,
            pattern: pattern.to_string(),
            place,
        });
    }
    if errors.is_empty() {
        Ok(Policy {
            file: file.to_string(),
            rules,
            user_policy,
        })
    } else {
        Err(errors)
    }
}

/// The account a check is made for.
#[derive(Debug, Clone)]
pub struct Who<'a> {
    /// Login name (for `$user`).
    pub user: &'a str,
    /// Home directory (for `~`).
    pub home: &'a Path,
}

/// Removes `.` components and trailing slashes; refuses relative paths and `..`.
pub fn normalize(path: &Path) -> Result<PathBuf, String> {
    if !path.is_absolute() {
        return Err(format!(
            "destination {} is not an absolute path",
            path.display()
        ));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                return Err(format!("destination {} contains '..'", path.display()))
            }
            Component::Prefix(_) => {
                return Err(format!(
                    "destination {} is not a local path",
                    path.display()
                ))
            }
        }
    }
    Ok(out)
}

impl Rule {
    fn expand(&self, who: &Who<'_>) -> Option<(PathBuf, Shape)> {
        let home = who.home.display().to_string();
        // A home of "/" (or none) would make "~" mean everything.
        let bad_home = normalize(who.home).map_or(true, |h| h == Path::new("/"));
        if self.pattern.starts_with('~') && bad_home {
            return None;
        }
        let mut text = self.pattern.replace("$user", who.user);
        if text == "~" {
            text = format!("{home}/**");
        } else if let Some(rest) = text.strip_prefix("~/") {
            text = format!("{home}/{rest}");
        }
        let (base, shape) = if let Some(b) = text.strip_suffix("/**") {
            (b.to_string(), Shape::Subtree)
        } else if let Some(b) = text.strip_suffix("/*") {
            (b.to_string(), Shape::Children)
        } else {
            (text, Shape::Exact)
        };
        let base = if base.is_empty() {
            "/".to_string()
        } else {
            base
        };
        normalize(Path::new(&base)).ok().map(|p| (p, shape))
    }

    /// Whether this rule allows `dest` (normalized) of `kind` for `who`.
    pub fn allows(&self, kind: Kind, dest: &Path, who: &Who<'_>) -> bool {
        self.allows_resolved(kind, dest, who, &|p| p.to_path_buf())
    }

    /// The same, with the rule's directory first passed through `resolve`
    /// (for an exact file: the directory it is in).
    fn allows_resolved(
        &self,
        kind: Kind,
        dest: &Path,
        who: &Who<'_>,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> bool {
        if !self.kind.covers(kind) {
            return false;
        }
        let Some((base, shape)) = self.expand(who) else {
            return false;
        };
        let base = match (&shape, base.parent(), base.file_name()) {
            (Shape::Exact, Some(dir), Some(name)) => resolve(dir).join(name),
            _ => resolve(&base),
        };
        match shape {
            Shape::Exact => dest == base,
            Shape::Children => dest.parent() == Some(base.as_path()),
            Shape::Subtree => dest.starts_with(&base) && dest != base,
        }
    }
}

impl Policy {
    /// The first rule allowing `dest`.
    pub fn allowing(&self, kind: Kind, dest: &Path, who: &Who<'_>) -> Option<&Rule> {
        self.allowing_resolved(kind, dest, who, &|p| p.to_path_buf())
    }

    fn allowing_resolved(
        &self,
        kind: Kind,
        dest: &Path,
        who: &Who<'_>,
        resolve: &dyn Fn(&Path) -> PathBuf,
    ) -> Option<&Rule> {
        self.rules
            .iter()
            .find(|r| r.allows_resolved(kind, dest, who, resolve))
    }
}

/// The verdict on one destination: `Ok(rule place)` or `Err(reason)`.
pub fn check(
    system: &Policy,
    user: Option<&Policy>,
    kind: Kind,
    dest: &Path,
    who: &Who<'_>,
) -> Result<String, String> {
    check_resolved(system, user, kind, dest, who, &|p| p.to_path_buf())
}

/// [`check`] with every rule's directory (for an exact file: the directory
/// it is in) and the home directory first passed through `resolve`; `check`
/// passes them unchanged.
pub fn check_resolved(
    system: &Policy,
    user: Option<&Policy>,
    kind: Kind,
    dest: &Path,
    who: &Who<'_>,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<String, String> {
    let dest = normalize(dest)?;
    let by_system = system.allowing_resolved(kind, &dest, who, resolve);
    let user = match system.user_policy {
        UserPolicy::Off => None,
        _ => user,
    };
    let home_ok = normalize(who.home).is_ok_and(|h| h != Path::new("/"));
    let home = resolve(who.home);
    let inside_home = home_ok && dest.starts_with(&home) && dest != home;
    match (by_system, user) {
        (Some(rule), None) => Ok(rule.place.clone()),
        (Some(rule), Some(u)) => match u.allowing_resolved(kind, &dest, who, resolve) {
            Some(_) => Ok(rule.place.clone()),
            None => Err(format!(
                "{} is not allowed by {} (no rule there allows it)",
                dest.display(),
                u.file
            )),
        },
        (None, Some(u)) if system.user_policy == UserPolicy::Widen && inside_home => {
            match u.allowing_resolved(kind, &dest, who, resolve) {
                Some(rule) => Ok(rule.place.clone()),
                None => Err(format!(
                    "{} is not allowed by {} or {}",
                    dest.display(),
                    system.file,
                    u.file
                )),
            }
        }
        (None, _) => Err(format!(
            "{} is not allowed by {} (no rule allows it)",
            dest.display(),
            system.file
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who() -> Who<'static> {
        Who {
            user: "ann",
            home: Path::new("/home/ann"),
        }
    }

    fn system(text: &str) -> Policy {
        parse("/etc/postern/destinations", text, true).unwrap()
    }

    const SYSTEM: &str = "mailbox /var/mail/$user\nmailbox ~/Mail/**\nmaildir ~/Maildir/\nmailbox /var/spool/x/*\nprogram /etc/postern/programs/*\n";

    #[test]
    fn rules_match_as_documented() {
        let p = system(SYSTEM);
        let ok = |k: Kind, d: &str| check(&p, None, k, Path::new(d), &who()).is_ok();
        assert!(ok(Kind::Mailbox, "/var/mail/ann"));
        assert!(!ok(Kind::Mailbox, "/var/mail/bob"));
        assert!(!ok(Kind::Maildir, "/var/mail/ann"), "kind must match");
        assert!(ok(Kind::Mailbox, "/home/ann/Mail/lists/rust"));
        assert!(
            !ok(Kind::Mailbox, "/home/ann/Mail"),
            "** is below the directory"
        );
        assert!(ok(Kind::Maildir, "/home/ann/Maildir/"));
        assert!(ok(Kind::Maildir, "/home/ann/./Maildir"));
        assert!(ok(Kind::Mailbox, "/var/spool/x/ann"));
        assert!(!ok(Kind::Mailbox, "/var/spool/x/sub/ann"), "* is one level");
        assert!(ok(Kind::Program, "/etc/postern/programs/vacation"));
        assert!(!ok(Kind::Program, "/usr/bin/vacation"));
        assert!(!ok(Kind::Mailbox, "/home/ann/Mail/../.ssh/authorized_keys"));
        assert!(!ok(Kind::Mailbox, "relative/path"));
        let home = system("any ~\n");
        assert!(check(
            &home,
            None,
            Kind::Program,
            Path::new("/home/ann/bin/x"),
            &who()
        )
        .is_ok());
        assert!(check(
            &home,
            None,
            Kind::Mailbox,
            Path::new("/home/annex/mbox"),
            &who()
        )
        .is_err());
    }

    #[test]
    fn refusals_name_the_policy() {
        let p = system(SYSTEM);
        let err = check(&p, None, Kind::Mailbox, Path::new("/etc/passwd"), &who()).unwrap_err();
        assert_eq!(
            err,
            "/etc/passwd is not allowed by /etc/postern/destinations (no rule allows it)"
        );
    }

    #[test]
    fn user_files_narrow_and_widen_only_where_allowed() {
        let user = parse(
            "/home/ann/.postern-destinations",
            "mailbox ~/Mail/only/*\nmailbox ~/private/box\nmailbox /tmp/x\n",
            false,
        )
        .unwrap();
        let narrow = system(SYSTEM);
        let at = |p: &Policy, d: &str| check(p, Some(&user), Kind::Mailbox, Path::new(d), &who());
        assert!(at(&narrow, "/home/ann/Mail/only/a").is_ok());
        let err = at(&narrow, "/home/ann/Mail/other").unwrap_err();
        assert!(err.contains(".postern-destinations"), "{err}");
        assert!(
            at(&narrow, "/home/ann/private/box").is_err(),
            "narrow never widens"
        );
        let widen = system(&format!("{SYSTEM}user-policy widen\n"));
        assert!(
            at(&widen, "/home/ann/private/box").is_ok(),
            "widening inside home"
        );
        assert!(at(&widen, "/tmp/x").is_err(), "never outside home");
        let off = system(&format!("{SYSTEM}user-policy off\n"));
        assert!(
            at(&off, "/home/ann/Mail/other").is_ok(),
            "user file ignored"
        );
    }

    #[test]
    fn syntax_errors_name_file_and_line() {
        let errs = parse("d", "mailbox\nbogus /x\nmailbox relative\nmailbox /a/../b\nmailbox /a/*/b\nuser-policy maybe\nmailbox /ok\n", true).unwrap_err();
        assert_eq!(
            errs,
            vec![
                "d:1: expected 'KIND PATTERN', got \"mailbox\"",
                "d:2: unknown kind 'bogus' (mailbox, maildir, program, any)",
                "d:3: pattern 'relative' must start with / or ~",
                "d:4: pattern '/a/../b' must not contain '..'",
                "d:5: '*' and '**' may only be the last component of '/a/*/b'",
                "d:6: user-policy 'maybe' is not off, narrow or widen",
            ]
        );
        assert!(parse("u", "user-policy widen\n", false).is_err());
    }
}
