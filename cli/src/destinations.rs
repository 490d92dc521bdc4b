//! `postern destinations`: the policy lines that the existing aliases and
//! `.forward` files need, so that turning the destination policy on keeps
//! the common case working. Prints only what the current policy does not
//! already allow, each line with where it comes from.

use std::path::{Path, PathBuf};

use postern_common::account;
use postern_common::destinations::system_policy;
use postern_common::trusted::{self, Mode};
use postern_conf::aliases::{self, Target};
use postern_conf::forward::parse_forward;
use postern_conf::policy::{self, Kind, Policy, Who};
use postern_conf::{params, Config};

/// One suggested rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suggestion {
    /// The policy line.
    pub line: String,
    /// Where the need comes from (`file:line`), and any advice.
    pub why: String,
}

fn rule_for(
    target: &Target,
    owner: Option<(&str, &Path)>,
    mode: &Mode,
    program_dir: &Path,
    current: Option<&Policy>,
    origin: String,
) -> Option<Suggestion> {
    let (kind, path, advice) = match target {
        Target::File(p) => (Kind::Mailbox, PathBuf::from(p), String::new()),
        Target::Program(cmd) => {
            let argv0 = cmd.split_whitespace().next()?.to_string();
            match mode {
                Mode::Insecure => (Kind::Program, PathBuf::from(argv0), String::new()),
                _ => {
                    let name = Path::new(&argv0)
                        .file_name()?
                        .to_string_lossy()
                        .into_owned();
                    (
                        Kind::Program,
                        program_dir.join(&name),
                        format!(
                            "; secure mode runs only {name} from {}",
                            program_dir.display()
                        ),
                    )
                }
            }
        }
        Target::Include(_) | Target::Address(_) => return None,
    };
    // Secure mode runs only the trusted copy: say so when it is not there yet.
    if let (Kind::Program, false, false) = (kind, matches!(mode, Mode::Insecure), path.exists()) {
        let given = match target {
            Target::Program(cmd) => cmd
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
            _ => String::new(),
        };
        return Some(Suggestion {
            line: format!(
                "# install {given} as {} (root-owned, mode 755)",
                path.display()
            ),
            why: format!("{origin}; only programs in the trusted directory run"),
        });
    }
    let (user, home) = owner.unwrap_or(("", Path::new("/nonexistent")));
    let who = Who { user, home };
    if let Some(p) = current {
        if policy::check(p, None, kind, &path, &who).is_ok() {
            return None;
        }
    }
    let shown = match path.strip_prefix(home) {
        Ok(rest) if !user.is_empty() => format!("~/{}", rest.display()),
        _ => path.display().to_string(),
    };
    let kind_word = match kind {
        Kind::Mailbox => "mailbox",
        Kind::Maildir => "maildir",
        Kind::Program => "program",
        Kind::Any => "any",
    };
    Some(Suggestion {
        line: format!("{kind_word} {shown}"),
        why: format!("{origin}{advice}"),
    })
}

/// Collects the suggestions for the aliases files and every user's `.forward`.
pub fn suggest(config: &Config) -> (Vec<Suggestion>, Vec<String>) {
    let current = system_policy(config).ok();
    let program_dir = PathBuf::from(config.text(params::PROGRAM_DIRECTORY));
    let mode = trusted::mode(&program_dir);
    let mut out: Vec<Suggestion> = Vec::new();
    let mut problems = Vec::new();
    let mut push = |s: Option<Suggestion>| {
        if let Some(s) = s {
            if !out.iter().any(|o| o.line == s.line) {
                out.push(s);
            }
        }
    };
    for map in config.list(params::ALIAS_MAPS) {
        let path = map
            .split_once(':')
            .map_or(map.as_str(), |(_, p)| p)
            .to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => match aliases::parse_aliases(&path, &text) {
                Ok(list) => {
                    for a in list {
                        for t in &a.targets {
                            push(rule_for(
                                t,
                                None,
                                &mode,
                                &program_dir,
                                current.as_ref(),
                                format!("{path}:{} ({})", a.line, a.name),
                            ));
                        }
                    }
                }
                Err(e) => problems.extend(e),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => problems.push(format!("{path}: cannot read: {e}")),
        }
    }
    // Every account NSS knows (LDAP and sssd users too, not only
    // /etc/passwd's).
    let users = match account::all_users() {
        Ok(u) => u,
        Err(e) => {
            problems.push(format!("cannot list the user accounts: {e}"));
            Vec::new()
        }
    };
    for user in &users {
        let (name, home) = (user.name.as_str(), user.home.as_path());
        let forward = Path::new(home).join(".forward");
        let Ok(text) = std::fs::read_to_string(&forward) else {
            continue;
        };
        match parse_forward(&forward.display().to_string(), &text) {
            Ok(targets) => {
                for (n, t) in targets {
                    push(rule_for(
                        &t,
                        Some((name, Path::new(home))),
                        &mode,
                        &program_dir,
                        current.as_ref(),
                        format!("{}:{n}", forward.display()),
                    ));
                }
            }
            Err(e) => problems.extend(e),
        }
    }
    (out, problems)
}
