//! External commands as master.cf describes them: `user=name[:group]` and
//! `argv=command args...` (last), parsed by `postern_conf::attributes`.
//! Used by spawn, by `postern check`, and by the queue's command transports.
//!
//! Validation resolves the names and refuses, with the exact reason, any
//! identity that [`RunAs`] refuses: uid or gid 0, the mail owner's uid or
//! gid, id -1.
//!
//! A command that delivers mail (local's programs, the pipe transport) runs
//! the same way ([`run_with_message`]): its standard input is a few envelope
//! lines and then the message, streamed from the queue file in pieces (so
//! memory does not grow with the message); its output is collected within
//! the time limit
//! ([`collect_output`]), sanitised and capped ([`sanitise`]), and its exit
//! status becomes a delivery status by sysexits ([`status_for_exit`]).

use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::account::{self, Account};
use crate::handoff::RecipientStatus;
#[cfg(doc)]
use crate::mail::MessageFile;
use crate::mail::{copy_body, Quoting, Section};
use postern_conf::attributes::{split_pipe, CommandAttributes, PipeFlags};
use postern_sys as sys;
use postern_sys::privilege::{MailOwner, RunAs};

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
    /// Parses `user=name[:group]` and `argv=command args...` (last)
    /// ([`CommandAttributes`]), then resolves and checks the identity.
    pub fn parse(
        args: &[String],
        owner: MailOwner,
        accounts: &dyn Accounts,
    ) -> Result<Self, String> {
        let CommandAttributes {
            user_text,
            user: name,
            group,
            argv,
        } = CommandAttributes::parse(args)?;
        let account = accounts
            .user(&name)?
            .ok_or_else(|| format!("user={user_text}: no such user '{name}'"))?;
        let gid = match group {
            Some(g) => accounts
                .group(&g)?
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

/// A pipe service's attributes: Postfix pipe(8)'s `flags=` and the
/// attributes accepted without effect ([`split_pipe`]), then `user=` and
/// `argv=` as for spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipeSpec {
    /// `user=` and `argv=`.
    pub command: CommandSpec,
    /// The supported flags.
    pub flags: PipeFlags,
    /// Attributes and flag letters accepted but without effect here.
    pub ignored: Vec<String>,
}

impl PipeSpec {
    /// Parses a pipe service's master.cf arguments.
    pub fn parse(
        args: &[String],
        owner: MailOwner,
        accounts: &dyn Accounts,
    ) -> Result<Self, String> {
        let (rest, flags, ignored) = split_pipe(args);
        Ok(PipeSpec {
            command: CommandSpec::parse(&rest, owner, accounts)?,
            flags,
            ignored,
        })
    }
}

/// The most program output kept for the reason.
pub const OUTPUT_LIMIT: usize = 4096;

/// Keeps printable ASCII and turns the rest into `?`, at most [`OUTPUT_LIMIT`] bytes.
pub fn sanitise(output: &[u8]) -> String {
    output
        .iter()
        .take(OUTPUT_LIMIT)
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else if b == b'\n' {
                ' '
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Maps an exit code to a status, as Postfix's pipe(8) does for sysexits
/// (its `sys_exits` table: the enhanced status code of each `EX_` value;
/// EX_OSERR and EX_TEMPFAIL defer, everything else bounces).
pub fn status_for_exit(code: i32, program: &str, output: &str) -> RecipientStatus {
    let said = if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    };
    let why = format!("program {program} exited with status {code}{said}");
    match code {
        0 => RecipientStatus::delivered(format!("delivered to program {program}")),
        71 | 75 => RecipientStatus::deferred("4.3.0", why),
        65 => RecipientStatus::bounced("5.6.0", why),
        67 => RecipientStatus::bounced("5.1.1", why),
        68 => RecipientStatus::bounced("5.1.2", why),
        73 => RecipientStatus::bounced("5.2.0", why),
        76 => RecipientStatus::bounced("5.5.0", why),
        77 => RecipientStatus::bounced("5.7.0", why),
        78 => RecipientStatus::bounced("5.3.5", why),
        _ => RecipientStatus::bounced("5.3.0", why),
    }
}

/// How a delivery command ended.
#[derive(Debug)]
pub struct Ended {
    /// Its wait status.
    pub status: std::io::Result<std::process::ExitStatus>,
    /// What it wrote to standard output and error (at most [`OUTPUT_LIMIT`]).
    pub output: Vec<u8>,
    /// It ran past the time limit.
    pub timed_out: bool,
    /// Why the message could not be read to its end, if it could not: the
    /// command's input was cut short, so whatever it says, the message was
    /// not delivered.
    pub unread: Option<String>,
}

/// A command that delivers mail (local's programs, pipe's commands), set
/// up one way: `argv` run directly, exactly the environment `env`, working
/// directory `cwd`, its own session and process group, nothing open but
/// descriptors 0-2, and, when `run_as` is given, that identity for good
/// (`sys::BeforeExec::run_as`; local's delivery process has switched
/// already). spawn starts its commands with `sys::Launcher`, which makes
/// the same steps without a fork.
pub fn delivery_command(
    argv: &[String],
    env: &[(String, String)],
    cwd: &std::path::Path,
    run_as: Option<RunAs>,
) -> std::process::Command {
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(cwd);
    let mut steps = sys::BeforeExec::new().new_session().cloexec_from(3);
    if let Some(who) = run_as {
        steps = steps.run_as(who);
    }
    steps.install(&mut cmd);
    cmd
}

/// Runs `cmd` — program, arguments, environment, directory and pre-exec
/// setup (its own session, nothing but 0-2 open, identity) already given —
/// with `envelope` and then the message (`body`, a
/// [`MessageFile::owned_reader`], copied by [`copy_body`] with `quoting`, in
/// pieces) on standard input and standard
/// output and error collected,
/// for at most `limit`. At the limit, `end(pid)` ends the command and
/// everything it started, wherever it went (normally
/// [`crate::descendants::end_command`], with the rights it needs): this
/// process is made a child subreaper first, so nothing the command starts
/// escapes. A command that exits in time may leave work running, as in
/// Postfix: it is not killed then, but its deadline is noted, and the
/// caller, once it has reported, calls
/// [`crate::descendants::finish_background`], which waits for it up to that
/// deadline and kills what is left. `Err` when it could not be started.
pub fn run_with_message(
    cmd: &mut std::process::Command,
    envelope: Vec<u8>,
    mut body: Section<std::fs::File>,
    quoting: Quoting,
    limit: Duration,
    end: impl FnOnce(i32),
) -> std::io::Result<Ended> {
    use std::io::Write;
    // A message that cannot be read to its end must not be delivered cut
    // short: the failure is noted before the command sees the end of its
    // input (so before it can exit), and read after it has exited.
    let unread: Arc<Mutex<Option<String>>> = Arc::default();
    let noted = Arc::clone(&unread);
    let input = move |stdin: &mut std::process::ChildStdin| {
        stdin.write_all(&envelope)?;
        let mut reader = NotingErrors {
            inner: &mut body,
            noted,
        };
        copy_body(&mut reader, stdin, quoting).map(|_| ())
    };
    let mut ended = run_with_writer(cmd, input, limit, end)?;
    ended.unread = unread
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    Ok(ended)
}

/// A reader that notes its first error where [`run_with_message`] finds it.
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

/// As [`run_with_message`], with standard input written by `input` (in a
/// thread of its own, so that it may stream a message of any size while
/// the output is collected).
fn run_with_writer(
    cmd: &mut std::process::Command,
    input: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()> + Send + 'static,
    limit: Duration,
    end: impl FnOnce(i32),
) -> std::io::Result<Ended> {
    use std::process::Stdio;
    crate::descendants::become_subreaper().map_err(std::io::Error::other)?;
    let deadline = Instant::now() + limit;
    let (out_read, out_write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    let out_write2 = out_write.try_clone()?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::from(out_write))
        .stderr(Stdio::from(out_write2));
    let mut child = cmd.spawn()?;
    // The parent's copies of the output pipe's write end go with `cmd`.
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take();
    // Not joined: a background process of the command may hold its input
    // open without reading; the caller's process exits (ending the thread)
    // once it has reported.
    let _writer = std::thread::spawn(move || {
        if let Some(s) = stdin.as_mut() {
            // A command that does not read its input is not an error here.
            let _ = input(s);
        }
    });
    let (output, timed_out) = collect_output(out_read, pid, limit);
    if timed_out {
        end(pid);
    } else {
        crate::descendants::allow_background_until(deadline);
    }
    Ok(Ended {
        status: child.wait(),
        output,
        timed_out,
        unread: None,
    })
}

impl Ended {
    /// The recipient's status: by sysexits for an exit code (with the
    /// sanitised output in the reason); a bounce for the time limit or a
    /// signal; a deferral when the status is unknown. `what` names the
    /// command in reasons ("program /x", "command /x").
    pub fn delivery_status(&self, program: &str, what: &str, limit: Duration) -> RecipientStatus {
        use std::os::unix::process::ExitStatusExt;
        if let Some(e) = &self.unread {
            return RecipientStatus::deferred(
                "4.3.0",
                format!("{what}: cannot read the message: {e}"),
            );
        }
        if self.timed_out {
            return RecipientStatus::bounced(
                "5.3.0",
                format!(
                    "{what} exceeded the time limit of {}s: killed its process group",
                    limit.as_secs()
                ),
            );
        }
        match &self.status {
            Ok(s) => match (s.code(), s.signal()) {
                (Some(code), _) => status_for_exit(code, program, &sanitise(&self.output)),
                // As Postfix's pipe(8): a command that dies of a signal
                // (the OOM killer, a crash) may well succeed next time.
                (None, Some(sig)) => {
                    RecipientStatus::deferred("4.3.0", format!("{what} was killed by signal {sig}"))
                }
                _ => RecipientStatus::deferred("4.3.0", format!("{what}: unknown exit status")),
            },
            Err(e) => RecipientStatus::deferred("4.3.0", format!("{what}: wait: {e}")),
        }
    }
}

/// Reads the program's output (keeping at most OUTPUT_LIMIT bytes) until
/// the program exits (then takes what is already written, without waiting
/// for background processes that may hold the pipe) or the limit passes.
/// Returns (output, timed out).
pub fn collect_output(out: std::os::fd::OwnedFd, pid: i32, limit: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + limit;
    let Ok(pidfd) = sys::pidfd_open(pid) else {
        // Without a pidfd (Linux before 5.3), fall back to reading until
        // end-of-file, keeping OUTPUT_LIMIT bytes of it.
        return match postern_sys::wait::drain_within(out, limit, OUTPUT_LIMIT) {
            Ok(bytes) => (bytes, false),
            Err(_) => (Vec::new(), true),
        };
    };
    let mut file = std::fs::File::from(out);
    let mut kept = Vec::new();
    let keep = |bytes: &[u8], kept: &mut Vec<u8>| {
        let room = OUTPUT_LIMIT.saturating_sub(kept.len());
        kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
    };
    let mut open = true;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (kept, true);
        }
        let timeout =
            PollTimeout::try_from(left.min(Duration::from_secs(3600))).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if open {
            fds.push(PollFd::new(file.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) => {}
            Err(_) => return (kept, false),
        }
        let exited = fds[0].revents().is_some_and(|r| !r.is_empty());
        let readable = open
            && fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty());
        if readable {
            let mut buf = [0u8; 4096];
            match file.read(&mut buf) {
                Ok(0) | Err(_) => open = false,
                Ok(n) => keep(&buf[..n], &mut kept),
            }
        }
        if exited {
            // Take what is already in the pipe, without blocking.
            if open {
                let _ = nix::fcntl::fcntl(
                    file.as_raw_fd(),
                    nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                );
                let mut buf = [0u8; 4096];
                while let Ok(n) = file.read(&mut buf) {
                    if n == 0 || kept.len() >= OUTPUT_LIMIT {
                        break;
                    }
                    keep(&buf[..n], &mut kept);
                }
            }
            return (kept, false);
        }
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

    #[test]
    fn exit_codes() {
        use crate::handoff::Outcome;
        assert_eq!(status_for_exit(0, "p", "").outcome, Outcome::Delivered);
        assert_eq!(status_for_exit(75, "p", "later").outcome, Outcome::Deferred);
        assert_eq!(status_for_exit(71, "p", "").outcome, Outcome::Deferred);
        let b = status_for_exit(1, "p", "oops");
        assert_eq!((b.outcome, b.dsn.as_str()), (Outcome::Bounced, "5.3.0"));
        assert_eq!(b.reason, "program p exited with status 1: oops");
        assert_eq!(status_for_exit(67, "p", "").dsn, "5.1.1");
        for (code, dsn) in [(68, "5.1.2"), (73, "5.2.0"), (76, "5.5.0"), (77, "5.7.0")] {
            let b = status_for_exit(code, "p", "");
            assert_eq!(
                (b.outcome, b.dsn.as_str()),
                (Outcome::Bounced, dsn),
                "{code}"
            );
        }
    }

    #[test]
    fn a_command_killed_by_a_signal_is_deferred() {
        use crate::handoff::Outcome;
        use std::os::unix::process::ExitStatusExt;
        let ended = |status: i32, timed_out| Ended {
            status: Ok(std::process::ExitStatus::from_raw(status)),
            output: Vec::new(),
            timed_out,
            unread: None,
        };
        let limit = Duration::from_secs(5);
        let s = ended(9, false).delivery_status("p", "program p", limit);
        assert_eq!((s.outcome, s.dsn.as_str()), (Outcome::Deferred, "4.3.0"));
        assert_eq!(s.reason, "program p was killed by signal 9");
        // Killed at the time limit: bounced, as Postfix does.
        let s = ended(9, true).delivery_status("p", "program p", limit);
        assert_eq!((s.outcome, s.dsn.as_str()), (Outcome::Bounced, "5.3.0"));
        let s = ended(75 << 8, false).delivery_status("p", "program p", limit);
        assert_eq!(s.outcome, Outcome::Deferred);
    }

    #[test]
    fn output_is_sanitised_and_capped() {
        assert_eq!(sanitise(b"ok\x1b[31m\nnext\x00"), "ok?[31m next?");
        assert_eq!(sanitise(&vec![b'a'; 10_000]).len(), OUTPUT_LIMIT);
    }
}
