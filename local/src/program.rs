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

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use postern_common::command::{collect_output, sanitise, status_for_exit};
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
    let (out_read, out_write) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return RecipientStatus::deferred("4.3.0", format!("pipe: {e}")),
    };
    let out_write2 = match out_write.try_clone() {
        Ok(f) => f,
        Err(e) => return RecipientStatus::deferred("4.3.0", format!("dup: {e}")),
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::from(out_write))
        .stderr(Stdio::from(out_write2));
    sys::before_exec(&mut cmd, || {
        // Async-signal-safe only: its own session, nothing but 0-2 open.
        nix::unistd::setsid()?;
        sys::cloexec_from(3)
    });
    let mut child = match cmd.spawn() {
        Ok(c) => c,
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
    drop(cmd);
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take();
    let input = r.input.to_vec();
    // Not joined: a background process of the program may hold its input
    // open without reading; the delivery process exits (ending the thread)
    // once it has reported.
    let _writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A program that does not read its input is not an error here.
            let _ = s.write_all(&input);
        }
    });
    let (output, timed_out) = collect_output(out_read, pid, r.limit);
    if timed_out {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Whatever the program left running in its group goes with it.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(-pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    let status = child.wait();
    let text = sanitise(&output);
    let result = match status {
        _ if timed_out => RecipientStatus::bounced(
            "5.3.0",
            format!("program {program} exceeded the time limit of {}s: killed its process group", r.limit.as_secs()),
        ),
        Ok(s) => match (s.code(), s.signal()) {
            (Some(0), _) if r.output_is_failure && !text.is_empty() => RecipientStatus::bounced(
                "5.3.0",
                format!("program {program} exited 0 but printed output (program_output_is_failure = yes): {text}"),
            ),
            (Some(code), _) => status_for_exit(code, &program, &text),
            (None, Some(sig)) => RecipientStatus::bounced("5.3.0", format!("program {program} was killed by signal {sig}")),
            _ => RecipientStatus::deferred("4.3.0", format!("program {program}: unknown exit status")),
        },
        Err(e) => RecipientStatus::deferred("4.3.0", format!("program {program}: wait: {e}")),
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
