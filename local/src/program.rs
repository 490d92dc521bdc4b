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
//! (no shell: [`parse_command`] takes the forms smrsh accepts), leading its
//! own session, with the message on standard input as Postfix's local(8)
//! gives it. `command_time_limit` kills it and all it started; what it
//! leaves running when it exits may finish until then.
//! Exit 0 delivers (unless `program_output_is_failure` and it printed
//! something); 75 and 71 defer; anything else bounces, with the program's
//! output (sanitised, at most 4 KB) in the reason.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_common::command::{run_with_writer, sanitise};
use postern_common::handoff::RecipientStatus;
use postern_common::mail::{copy_body, MessageFile, Quoting};
use postern_sys as sys;

pub use postern_common::trusted::{mode, Mode, INSECURE_PROGRAM, NO_PROGRAM, SUSPEND_PROGRAM};

/// A command line from an alias or `.forward` file, parsed without a
/// shell ([`parse_command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program (as written; only its name counts in secure mode) and
    /// its arguments.
    pub argv: Vec<String>,
    /// `|| exit 75`: a failure of the program (a non-zero exit or a
    /// signal, not the time limit) is exit status 75 instead (deferred).
    pub failure_is_75: bool,
}

/// One word of a command line, or the `&&` and `||` operators.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// The word's text after quote removal; `plain`: written without quotes
    /// or backslashes.
    Word {
        text: String,
        plain: bool,
    },
    AndIf,
    OrIf,
}

/// Characters a shell would treat specially, refused outside single quotes.
const SHELL_META: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', ']', '{', '}', '~', '!',
];

fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut plain = true;
    let mut chars = line.chars().peekable();
    let finish = |out: &mut Vec<Token>, cur: &mut String, in_word: &mut bool, plain: &mut bool| {
        if *in_word {
            out.push(Token::Word {
                text: std::mem::take(cur),
                plain: *plain,
            });
        }
        *in_word = false;
        *plain = true;
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                plain = false;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                plain = false;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().ok_or("trailing \\")?),
                        Some(x @ ('$' | '`')) => {
                            return Err(format!(
                                "shell metacharacter {x} inside double quotes (no shell expands it here)"
                            ))
                        }
                        Some(x) => cur.push(x),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                plain = false;
                cur.push(chars.next().ok_or("trailing \\")?);
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => finish(&mut out, &mut cur, &mut in_word, &mut plain),
            '|' | '&' if !in_word && chars.peek() == Some(&c) => {
                chars.next();
                out.push(if c == '|' { Token::OrIf } else { Token::AndIf });
            }
            '|' if !in_word || chars.peek() != Some(&'|') => {
                return Err("shell metacharacter | (a pipeline)".into())
            }
            c if SHELL_META.contains(&c) || c.is_control() => {
                return Err(format!("shell metacharacter {c:?}"))
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    finish(&mut out, &mut cur, &mut in_word, &mut plain);
    Ok(out)
}

/// Parses a command line the way sendmail's smrsh, as Postfix's
/// `local_command_shell`, accepts it — without a shell: the program and its
/// arguments (words separated by white space, quoted with `'...'` or
/// `"..."`, `\\` escaping one character), optionally
///
/// - preceded by `IFS=' ' &&` and/or `exec` (no effect: nothing runs
///   through a shell),
/// - followed by `|| exit 75` (a failure of the program defers),
/// - followed by a `#comment` (ignored),
///
/// which covers procmail's classic `.forward` lines. Anything else a shell
/// would interpret — pipelines, `;`, redirections, `$`, backquotes, globs,
/// other variable assignments or operators — is refused, and the error says
/// what.
pub fn parse_command(line: &str) -> Result<CommandLine, String> {
    let refuse = |why: String| format!("command \"{line}\" refused: {why}");
    let toks = tokens(line).map_err(refuse)?;
    let mut rest: &[Token] = &toks;
    // IFS=' ' && (the word written exactly so, as in procmail's manual).
    if let [Token::Word { text, .. }, Token::AndIf, tail @ ..] = rest {
        let start = line.trim_start();
        if text == "IFS= " && (start.starts_with("IFS=' '") || start.starts_with("IFS=\" \"")) {
            rest = tail;
        }
    }
    if let [Token::Word { text, plain: true }, tail @ ..] = rest {
        if text == "exec" {
            rest = tail;
        }
    }
    let mut argv = Vec::new();
    let mut failure_is_75 = false;
    while let Some((tok, tail)) = rest.split_first() {
        match tok {
            Token::Word { text, .. } => {
                argv.push(text.clone());
                rest = tail;
            }
            Token::OrIf => {
                let exit_75 = matches!(
                    tail,
                    [Token::Word { text: e, plain: true }, Token::Word { text: n, plain: true }]
                        if e == "exit" && n == "75"
                );
                if !exit_75 {
                    return Err(refuse(
                        "|| is accepted only as a final \"|| exit 75\"".into(),
                    ));
                }
                failure_is_75 = true;
                rest = &[];
            }
            Token::AndIf => {
                return Err(refuse("&& is accepted only after a leading IFS=' '".into()))
            }
        }
    }
    let Some(first) = argv.first() else {
        return Err(refuse("no program named".into()));
    };
    if let Some((name, _)) = first.split_once('=') {
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(refuse(format!(
                "variable assignment {name}= (no shell runs here)"
            )));
        }
    }
    Ok(CommandLine {
        argv,
        failure_is_75,
    })
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

/// A reader that notes its first error where [`run`] finds it.
struct NotingErrors<'a, R> {
    inner: &'a mut R,
    noted: Arc<Mutex<Option<String>>>,
}

impl<R: Read> Read for NotingErrors<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if e.kind() == std::io::ErrorKind::Interrupted {
                return;
            }
            let mut noted = self
                .noted
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            noted.get_or_insert_with(|| e.to_string());
        })
    }
}

/// Runs one program; never returns success unless it exited 0.
pub fn run(r: &Run<'_>) -> RecipientStatus {
    let program = r.argv[0].clone();
    let mut cmd = Command::new(&r.argv[0]);
    cmd.args(&r.argv[1..])
        .env_clear()
        .envs(r.env.iter().map(|(k, v)| (k, v)))
        .current_dir(r.cwd);
    // Its own session, nothing but 0-2 open.
    sys::BeforeExec::new()
        .new_session()
        .cloexec_from(3)
        .install(&mut cmd);
    // The program runs as this (already switched) process's user: the
    // kill needs no privilege. Whatever it started goes with it, in its
    // group or not (this process is its subreaper).
    let end = |pid: i32| {
        if let Err(e) = postern_common::descendants::end_command(pid) {
            log::warn!("program {program}: {e}");
        }
    };
    let envelope = r.envelope.clone();
    let mut body = match r.message.owned_reader() {
        Ok(b) => b,
        Err(e) => {
            return RecipientStatus::deferred(
                "4.3.0",
                format!("program {program}: cannot read the message: {e}"),
            )
        }
    };
    // A message that cannot be read to its end must not be delivered cut
    // short: the failure is noted before the program sees the end of its
    // input (so before it can exit), and read after it has exited.
    let unread: Arc<Mutex<Option<String>>> = Arc::default();
    let noted = Arc::clone(&unread);
    let input = move |stdin: &mut std::process::ChildStdin| {
        stdin.write_all(&envelope)?;
        let mut reader = NotingErrors {
            inner: &mut body,
            noted,
        };
        copy_body(&mut reader, stdin, Quoting::None).map(|_| ())
    };
    let ended = match run_with_writer(&mut cmd, input, r.limit, end) {
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
    let unread = unread
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(e) = unread {
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
    fn command_lines() {
        let p = |l: &str| parse_command(l).map(|c| (c.argv, c.failure_is_75));
        let v = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p("/bin/x a  'b c' \"d \\\" e\" f\\ g").unwrap(),
            (v(&["/bin/x", "a", "b c", "d \" e", "f g"]), false)
        );
        assert_eq!(
            p("exec /usr/bin/procmail -f- || exit 75").unwrap(),
            (v(&["/usr/bin/procmail", "-f-"]), true)
        );
        assert_eq!(
            p("IFS=' ' && exec /usr/bin/procmail -f- || exit 75 #ann").unwrap(),
            (v(&["/usr/bin/procmail", "-f-"]), true)
        );
        assert_eq!(
            p("  procmail -a 'x;y' #comment").unwrap(),
            (v(&["procmail", "-a", "x;y"]), false)
        );
        // A # inside a word is not a comment.
        assert_eq!(p("vacation a#b").unwrap(), (v(&["vacation", "a#b"]), false));
        for (line, what) in [
            ("procmail | tee x", "| (a pipeline)"),
            ("procmail; rm -rf ~", "';'"),
            ("procmail > /tmp/x", "'>'"),
            ("procmail $HOME", "'$'"),
            ("procmail \"$HOME\"", "inside double quotes"),
            ("procmail `id`", "'`'"),
            ("procmail *", "'*'"),
            (
                "procmail && rm x",
                "&& is accepted only after a leading IFS",
            ),
            ("procmail || exit 0", "|| is accepted only as a final"),
            ("procmail || exit 75 x", "|| is accepted only as a final"),
            ("X=1 procmail", "variable assignment X="),
            (
                "IFS=x && procmail",
                "&& is accepted only after a leading IFS",
            ),
            ("exec", "no program named"),
            ("", "no program named"),
            ("x 'open", "unterminated '"),
            ("procmail & ", "'&'"),
        ] {
            let e = p(line).unwrap_err();
            assert!(e.contains(what) && e.contains(line), "{line}: {e}");
        }
        // '...' keeps anything literally.
        assert_eq!(
            p("x '$HOME|;' y").unwrap(),
            (v(&["x", "$HOME|;", "y"]), false)
        );
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
