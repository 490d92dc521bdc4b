//! Program delivery, as DESIGN.md resolves the Post.Office and Netscape
//! documents.
//!
//! The trusted directory (`program_directory`) must be owned by root and not
//! writable by group or others; otherwise program delivery is disabled and
//! says why. Its state decides the mode, checked at every delivery:
//!
//! | trusted directory                        | mode                               |
//! |------------------------------------------|------------------------------------|
//! | `NO-PROGRAM-DELIVERIES` present          | disabled: bounce, postmaster told  |
//! | `SUSPEND-PROGRAM-DELIVERIES` present     | suspended: defer                   |
//! | `INSECURE-PROGRAM-DELIVERIES` present    | non-secure: absolute path, as given|
//! | executables present                      | secure: only `DIR/<name>` runs     |
//! | none of the above                        | disabled                           |
//!
//! The program runs as the account (the caller has switched already), only
//! if its login shell is in `/etc/shells` (or the file lists
//! `MAIL/ANY/SHELL`), in the home directory (else `/tmp`), with the
//! environment `TZ`, `AGENT`, `SENDER`, `RECIPIENT`, `USER`, `HOME`, `LOCAL`,
//! `EXTENSION` only, directly (no shell), leading its own session, with the
//! message on standard input. `command_time_limit` kills its process group.
//! Exit 0 delivers (unless `program_output_is_failure` and it printed
//! something); 75 and 71 defer; anything else bounces, with the program's
//! output (sanitised, at most 4 KB) in the reason.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use postern_common::command::{run_with_input, sanitise};
use postern_common::handoff::RecipientStatus;
use postern_common::sys;

pub use postern_common::trusted::{mode, Mode, INSECURE_PROGRAM, NO_PROGRAM, SUSPEND_PROGRAM};

/// Splits a command line into words: white space separates, `'...'` and
/// `"..."` quote, `\` escapes the next character outside single quotes.
pub fn split_command(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated ' in command \"{line}\"")),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(
                            chars
                                .next()
                                .ok_or_else(|| format!("trailing \\ in \"{line}\""))?,
                        ),
                        Some(x) => cur.push(x),
                        None => return Err(format!("unterminated \" in command \"{line}\"")),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.push(
                    chars
                        .next()
                        .ok_or_else(|| format!("trailing \\ in \"{line}\""))?,
                );
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    if words.is_empty() {
        return Err("empty command".into());
    }
    Ok(words)
}

/// The executable that will actually run for `argv0` in `mode`.
pub fn resolve(mode: &Mode, argv0: &str) -> Result<PathBuf, RecipientStatus> {
    match mode {
        Mode::Disabled(why) => Err(RecipientStatus::bounced(
            "5.3.0",
            format!("program delivery is disabled: {why}"),
        )
        .for_postmaster()),
        Mode::Suspended(why) => Err(RecipientStatus::deferred(
            "4.3.0",
            format!("program delivery is suspended: {why}"),
        )
        .for_postmaster()),
        Mode::Insecure => {
            if argv0.starts_with('/') {
                Ok(PathBuf::from(argv0))
            } else {
                Err(RecipientStatus::bounced(
                    "5.3.0",
                    format!(
                        "program {argv0}: non-secure program delivery requires an absolute path"
                    ),
                )
                .for_postmaster())
            }
        }
        Mode::Secure(dir) => {
            // Only the name counts; whatever path the user gave is ignored.
            let name = Path::new(argv0)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let trusted = dir.join(&name);
            let ok = !name.is_empty()
                && ![NO_PROGRAM, SUSPEND_PROGRAM, INSECURE_PROGRAM].contains(&name.as_str())
                && std::fs::symlink_metadata(&trusted).is_ok_and(|m| {
                    m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0 && m.mode() & 0o111 != 0
                });
            if ok {
                Ok(trusted)
            } else {
                Err(RecipientStatus::bounced(
                    "5.3.0",
                    format!(
                        "program {name} is not in the trusted program directory {}",
                        dir.display()
                    ),
                )
                .for_postmaster())
            }
        }
    }
}

/// Whether `shell` may run programs: listed in `shells_text` (/etc/shells),
/// or the file lists `MAIL/ANY/SHELL`.
pub fn shell_allowed(shell: &Path, shells_text: &str) -> bool {
    let listed: Vec<&str> = shells_text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect();
    listed.contains(&"MAIL/ANY/SHELL") || listed.iter().any(|l| Path::new(l) == shell)
}

/// What a program run needs to know.
#[derive(Debug)]
pub struct Run<'a> {
    /// The executable (resolved) and its arguments.
    pub argv: Vec<String>,
    /// The environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: &'a Path,
    /// Standard input.
    pub input: &'a [u8],
    /// Time limit.
    pub limit: Duration,
    /// Any output is a failure.
    pub output_is_failure: bool,
}

/// Runs one program; never returns success unless it exited 0.
pub fn run(r: &Run<'_>) -> RecipientStatus {
    let program = r.argv[0].clone();
    let mut cmd = Command::new(&r.argv[0]);
    cmd.args(&r.argv[1..])
        .env_clear()
        .envs(r.env.iter().map(|(k, v)| (k, v)))
        .current_dir(r.cwd);
    sys::before_exec(&mut cmd, || {
        // Async-signal-safe only: its own session, nothing but 0-2 open.
        nix::unistd::setsid()?;
        sys::cloexec_from(3)
    });
    // The program runs as this (already switched) process's user: the
    // kill needs no privilege. Whatever it started goes with it, in its
    // group or not (this process is its subreaper).
    let end = |pid: i32| {
        if let Err(e) = postern_common::descendants::end_command(pid) {
            log::warn!("program {program}: {e}");
        }
    };
    let ended = match run_with_input(&mut cmd, r.input.to_vec(), r.limit, end) {
        Ok(e) => e,
        Err(e) => {
            let permanent = matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::EACCES | libc::ENOEXEC | libc::ENOTDIR)
            );
            let why = format!("cannot run program {program}: {e}");
            return if permanent {
                RecipientStatus::bounced("5.3.0", why).for_postmaster()
            } else {
                RecipientStatus::deferred("4.3.0", why).for_postmaster()
            };
        }
    };
    let text = sanitise(&ended.output);
    let printed_on_success = matches!(&ended.status, Ok(s) if s.code() == Some(0))
        && !ended.timed_out
        && r.output_is_failure
        && !text.is_empty();
    let result = if printed_on_success {
        RecipientStatus::bounced(
            "5.3.0",
            format!("program {program} exited 0 but printed output (program_output_is_failure = yes): {text}"),
        )
    } else {
        ended.delivery_status(&program, &format!("program {program}"), r.limit)
    };
    if matches!(result.outcome, postern_common::handoff::Outcome::Delivered) {
        result
    } else {
        result.for_postmaster()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        assert_eq!(
            split_command("/bin/x a  'b c' \"d \\\" e\" f\\ g").unwrap(),
            vec!["/bin/x", "a", "b c", "d \" e", "f g"]
        );
        assert!(split_command("x 'open").is_err());
        assert!(split_command("   ").is_err());
    }

    #[test]
    fn shells() {
        let shells = "# comment\n/bin/sh\n/bin/bash\n";
        assert!(shell_allowed(Path::new("/bin/bash"), shells));
        assert!(!shell_allowed(Path::new("/usr/sbin/nologin"), shells));
        assert!(shell_allowed(
            Path::new("/usr/sbin/nologin"),
            "/bin/sh\nMAIL/ANY/SHELL\n"
        ));
    }
}
