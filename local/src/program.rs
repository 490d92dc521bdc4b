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
//! environment Postfix's local(8) documents (see `program_env`), directly
//! (no shell: `postern_conf::command_line` takes the forms smrsh accepts), leading its
//! own session, with the message on standard input as Postfix's local(8)
//! gives it. `command_time_limit` kills it and all it started; what it
//! leaves running when it exits may finish until then.
//! Exit 0 delivers (unless `program_output_is_failure` and it printed
//! something); 75 and 71 defer; anything else bounces, with the program's
//! output (sanitised, at most 4 KB) in the reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_common::command::{delivery_command, run_with_message, sanitise};
use postern_common::handoff::RecipientStatus;
use postern_common::mail::{MessageFile, Quoting};

pub use postern_common::trusted::{mode, Mode, INSECURE_PROGRAM, NO_PROGRAM, SUSPEND_PROGRAM};

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
            postern_common::trusted::program_entry(dir, &name).map_err(|why| {
                RecipientStatus::bounced(
                    "5.3.0",
                    format!(
                        "program {name} is not in the trusted program directory {}: {why}",
                        dir.display()
                    ),
                )
                .for_postmaster()
            })
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
    /// Standard input: these envelope lines, then the message, streamed
    /// from its file unchanged.
    pub envelope: Vec<u8>,
    /// The message.
    pub message: &'a MessageFile,
    /// Time limit.
    pub limit: Duration,
    /// Any output is a failure.
    pub output_is_failure: bool,
    /// `|| exit 75`: a failure (non-zero exit, signal) is exit status 75.
    pub failure_is_75: bool,
}

/// Runs one program; never returns success unless it exited 0.
pub fn run(r: &Run<'_>) -> RecipientStatus {
    let program = r.argv[0].clone();
    // Its own session, nothing but 0-2 open; as this process's user.
    let mut cmd = delivery_command(&r.argv, &r.env, r.cwd, None);
    // The program runs as this (already switched) process's user: the
    // kill needs no privilege. Whatever it started goes with it, in its
    // group or not (this process is its subreaper).
    let end = |pid: i32| {
        if let Err(e) = postern_common::descendants::end_command(pid) {
            log::warn!("program {program}: {e}");
        }
    };
    let body = match r.message.owned_reader() {
        Ok(b) => b,
        Err(e) => {
            return RecipientStatus::deferred(
                "4.3.0",
                format!("program {program}: cannot read the message: {e}"),
            )
        }
    };
    let ended = match run_with_message(
        &mut cmd,
        r.envelope.clone(),
        body,
        Quoting::None,
        r.limit,
        end,
    ) {
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
    if let Some(e) = &ended.unread {
        return RecipientStatus::deferred(
            "4.3.0",
            format!("program {program}: cannot read the message: {e}"),
        )
        .for_postmaster();
    }
    let text = sanitise(&ended.output);
    let failed = !ended.timed_out && ended.status.as_ref().is_ok_and(|s| s.code() != Some(0));
    if r.failure_is_75 && failed {
        let how = match ended
            .status
            .as_ref()
            .map(|s| (s.code(), std::os::unix::process::ExitStatusExt::signal(s)))
        {
            Ok((Some(code), _)) => format!("exited with status {code}"),
            Ok((None, Some(sig))) => format!("was killed by signal {sig}"),
            _ => "failed".to_string(),
        };
        let said = if text.is_empty() {
            String::new()
        } else {
            format!(": {text}")
        };
        return RecipientStatus::deferred(
            "4.3.0",
            format!("program {program} {how}; \"|| exit 75\" makes that status 75 (try again later){said}"),
        )
        .for_postmaster();
    }
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
