//! The child skeleton: the life of every master-managed postern process.
//!
//! A daemon's `main` calls [`run`] with its [`Program`] description and a
//! setup function returning its [`Handler`]; the skeleton does the rest, once
//! for every daemon:
//!
//! 1. parses the arguments the master passes ([`ChildArgs`]);
//! 2. reads main.cf with the service's `-o` overrides, arms the
//!    `daemon_timeout` watchdog for the rest of startup, opens the log;
//! 3. adopts the status channel and listening endpoints at their fixed
//!    descriptor numbers ([`crate::status`]);
//! 4. runs the daemon's setup (a failure here is a startup failure: exit 78,
//!    and the master throttles the service);
//! 5. chroots to `queue_directory` when master.cf says so, then drops
//!    privileges: an unprivileged service becomes the mail owner for good; a
//!    privileged one (spawn, local) keeps real uid 0 and runs with the mail
//!    owner as effective uid while idle;
//! 6. waits for work: an epoll set holding the listening endpoints with
//!    `EPOLLEXCLUSIVE` (one connection wakes one idle child, not all of them)
//!    and the status channel (end-of-file means: exit now, we are idle), with
//!    `max_idle` as the timeout (counted from the last request); a handler
//!    that holds something while idle (smtp's cached session) may ask to be
//!    woken earlier ([`Handler::idle_deadline`], [`Handler::idle`]);
//! 7. per request: reports `Taken`, arms the `daemon_timeout` watchdog
//!    (`alarm`: the default SIGALRM action ends the process), calls the
//!    handler, disarms, reports `Available`; exits after `max_use` requests,
//!    calling [`Handler::finish`] first on every way out of the loop.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{send, MsgFlags, SockFlag};
use postern_conf::embedded::Layout;
use postern_conf::{params, Config, Override, ServiceType, ServicesFile, Source};

use crate::account::{self, Account};
use crate::status::{ChildState, StatusRecord, LISTEN_FD, MAX_LISTEN_FDS, STATUS_FD};
use crate::sysexits;
use postern_sys as sys;
use postern_sys::privilege::{self, MailOwner, MailOwnerEffective};

/// The command-line form of a configuration source, shared by the master's
/// and the children's command lines: `-c DIR`, or `--queue-directory Q
/// --data-directory D` for the embedded configuration.
pub fn source_args(source: &Source) -> Vec<String> {
    match source {
        Source::Dir(d) => vec!["-c".into(), d.display().to_string()],
        Source::Embedded(l) => vec![
            "--queue-directory".into(),
            l.queue_directory.display().to_string(),
            "--data-directory".into(),
            l.data_directory.display().to_string(),
        ],
    }
}

/// Wakes a trigger service listening on the unix socket `path` (a unix
/// `qmgr` line, or a unix service with a wakeup time): one short
/// connection that writes `what`. Never waits: a full backlog is an error
/// of kind `WouldBlock` (the caller decides whether the wake-ups already
/// waiting are enough); a full socket buffer counts as written.
pub fn trigger_unix(path: &std::path::Path, what: &[u8]) -> io::Result<()> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockType, UnixAddr};
    let s = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    match connect(s.as_raw_fd(), &UnixAddr::new(path)?) {
        Ok(()) => match nix::unistd::write(&s, what) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        },
        Err(e) => Err(e.into()),
    }
}

/// The source named by the options [`source_args`] writes.
pub fn source_from(
    dir: Option<PathBuf>,
    queue: Option<PathBuf>,
    data: Option<PathBuf>,
) -> Result<Source, String> {
    match (dir, queue, data) {
        (Some(d), None, None) => Ok(Source::Dir(d)),
        (None, Some(q), Some(d)) => Ok(Source::Embedded(Layout {
            queue_directory: q,
            data_directory: d,
        })),
        _ => Err("need -c DIR, or --queue-directory and --data-directory".into()),
    }
}

/// What the master tells a child on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildArgs {
    /// master.cf service name (`-n`).
    pub service: String,
    /// master.cf service type (`-t`).
    pub kind: ServiceType,
    /// Service generation (`-g`), echoed in status records.
    pub generation: u32,
    /// How many listening endpoints start at [`LISTEN_FD`] (`-l`).
    pub listen_fds: usize,
    /// Where the configuration is (`-c DIR`, or `--queue-directory` and
    /// `--data-directory` for the embedded configuration).
    pub source: Source,
    /// Log to standard error (`--stderr`).
    pub stderr: bool,
    /// master.cf field 5 (`--chroot`).
    pub chroot: bool,
    /// master.cf field 4 is `y` (`--unpriv`).
    pub unpriv: bool,
    /// master.cf makes this a Postfix instance (`--postfix-instance`):
    /// Postfix's defaults apply (mail_owner, queue_directory, syslog_name,
    /// ...), which a child reading main.cf alone cannot tell.
    pub postfix_instance: bool,
    /// `-o name=value` overrides, in order.
    pub overrides: Vec<Override>,
    /// The daemon's own arguments (after `--`).
    pub args: Vec<String>,
}

impl ChildArgs {
    /// The command line for these arguments (without the program name).
    pub fn to_argv(&self) -> Vec<String> {
        let mut v = vec![
            "-n".into(),
            self.service.clone(),
            "-t".into(),
            self.kind.as_str().into(),
            "-g".into(),
            self.generation.to_string(),
            "-l".into(),
            self.listen_fds.to_string(),
        ];
        v.extend(source_args(&self.source));
        if self.stderr {
            v.push("--stderr".into());
        }
        if self.chroot {
            v.push("--chroot".into());
        }
        if self.unpriv {
            v.push("--unpriv".into());
        }
        if self.postfix_instance {
            v.push("--postfix-instance".into());
        }
        for o in &self.overrides {
            v.push("-o".into());
            v.push(format!("{}={}", o.name, o.value));
        }
        v.push("--".into());
        v.extend(self.args.iter().cloned());
        v
    }

    /// Parses a command line made by [`ChildArgs::to_argv`].
    pub fn parse(argv: &[String]) -> Result<Self, String> {
        let mut it = argv.iter();
        let (mut service, mut kind, mut generation, mut listen_fds) = (None, None, 0u32, 0usize);
        let (mut dir, mut queue, mut data) = (None, None, None);
        let (mut stderr, mut chroot, mut unpriv) = (false, false, false);
        let mut postfix_instance = false;
        let mut overrides = Vec::new();
        let mut args = Vec::new();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("option {name} needs a value"))
            };
            match a.as_str() {
                "-n" => service = Some(value("-n")?),
                "-t" => {
                    let t = value("-t")?;
                    kind = Some(parse_type(&t).ok_or_else(|| format!("bad service type '{t}'"))?);
                }
                "-g" => {
                    generation = value("-g")?
                        .parse()
                        .map_err(|_| "bad -g value".to_string())?
                }
                "-l" => {
                    listen_fds = value("-l")?
                        .parse()
                        .map_err(|_| "bad -l value".to_string())?;
                    if listen_fds > MAX_LISTEN_FDS {
                        return Err(format!(
                            "-l {listen_fds}: at most {MAX_LISTEN_FDS} endpoints"
                        ));
                    }
                }
                "-c" => dir = Some(PathBuf::from(value("-c")?)),
                "--queue-directory" => queue = Some(PathBuf::from(value("--queue-directory")?)),
                "--data-directory" => data = Some(PathBuf::from(value("--data-directory")?)),
                "--stderr" => stderr = true,
                "--chroot" => chroot = true,
                "--unpriv" => unpriv = true,
                "--postfix-instance" => postfix_instance = true,
                "-o" => {
                    let setting = value("-o")?;
                    let (name, value) = setting
                        .split_once('=')
                        .ok_or_else(|| format!("-o '{setting}' is not name=value"))?;
                    overrides.push(Override {
                        name: name.to_string(),
                        value: value.to_string(),
                    });
                }
                "--" => {
                    args.extend(it.by_ref().cloned());
                    break;
                }
                other => {
                    return Err(format!(
                        "unexpected argument '{other}' (this program is started by postern-master)"
                    ))
                }
            }
        }
        let source = source_from(dir, queue, data)?;
        Ok(ChildArgs {
            service: service.ok_or("missing -n SERVICE")?,
            kind: kind.ok_or("missing -t TYPE")?,
            generation,
            listen_fds,
            source,
            stderr,
            chroot,
            unpriv,
            postfix_instance,
            overrides,
            args,
        })
    }
}

fn parse_type(s: &str) -> Option<ServiceType> {
    [
        ServiceType::Inet,
        ServiceType::Unix,
        ServiceType::UnixDgram,
        ServiceType::Fifo,
        ServiceType::Pass,
    ]
    .into_iter()
    .find(|t| t.as_str() == s)
}

/// What privileges a daemon needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privileges {
    /// Runs as the mail owner (master.cf unpriv `y` or `-`).
    Unprivileged,
    /// Keeps real uid 0 to switch users per request (master.cf unpriv `n`);
    /// idle with the mail owner as effective uid.
    Privileged,
}

/// A daemon, as the skeleton needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    /// Name in logs (`postern/<name>[pid]`).
    pub name: &'static str,
    /// Privileges it needs.
    pub privileges: Privileges,
    /// Whether the skeleton puts `ipc_timeout` on each accepted connection
    /// (daemons that read and write the connection themselves). spawn does
    /// not: the connection becomes the command's standard input and output,
    /// and a command's pace is bounded by its time limit instead.
    pub ipc_timeout: bool,
}

/// One unit of work.
#[derive(Debug)]
pub enum Request {
    /// An accepted stream connection (inet, unix).
    Stream(OwnedFd),
    /// Bytes read from a fifo.
    Trigger(Vec<u8>),
}

/// What the daemon's setup and handler get to see.
#[derive(Debug)]
pub struct Context {
    /// main.cf with this service's overrides.
    pub config: Config,
    /// The arguments from the master.
    pub args: ChildArgs,
    /// The mail owner account.
    pub mail_owner: Account,
}

/// A daemon's per-request work.
pub trait Handler {
    /// Serves one request. Errors are the handler's to log; the skeleton
    /// goes on with the next request either way.
    fn handle(&mut self, ctx: &Context, request: Request);

    /// When the handler wants [`Handler::idle`] called if no request came
    /// by then (smtp: when its cached session expires); `None`: never.
    fn idle_deadline(&self) -> Option<Instant> {
        None
    }

    /// The idle deadline passed without a request. Must not block (the
    /// process is counted as available meanwhile) and must move or clear
    /// the deadline.
    fn idle(&mut self, _ctx: &Context) {}

    /// The process is about to exit (stop, reload, `max_use`, `max_idle`,
    /// the master gone): let go of what is held, without waiting on peers.
    fn finish(&mut self, _ctx: &Context) {}
}

/// Runs a daemon; returns its exit status.
pub fn run<H: Handler>(program: Program, setup: impl FnOnce(&Context) -> Result<H, String>) -> i32 {
    let (ctx, endpoints, mut handler) = match start(program, setup) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let code = serve(&ctx, &mut handler, &endpoints, program.ipc_timeout);
    handler.finish(&ctx);
    code
}

/// A persistent daemon (the queue manager): it runs its own event loop and
/// ignores `max_use` and `max_idle`, like Postfix's qmgr.
pub trait Daemon {
    /// Runs until the master lets go (the channel's end-of-file); returns
    /// the exit status.
    fn run(self, ctx: &Context, channel: Channel) -> i32;
}

/// A persistent daemon's link to the master: the status channel and the
/// listening endpoints (fifo triggers or sockets).
#[derive(Debug)]
pub struct Channel {
    endpoints: Endpoints,
    generation: u32,
}

impl Channel {
    /// The status descriptor: readable at end-of-file when the master lets go.
    pub fn status(&self) -> &OwnedFd {
        &self.endpoints.status
    }
    /// The listening endpoints, in master.cf order.
    pub fn listeners(&self) -> &[OwnedFd] {
        &self.endpoints.listeners
    }
    /// True when the master closed the channel (stop, reload, exit).
    pub fn master_gone(&self) -> bool {
        channel_closed(&self.endpoints.status)
    }
    /// Tells the master this process is available; false when it is gone.
    pub fn available(&self) -> bool {
        report(
            &self.endpoints.status,
            self.generation,
            ChildState::Available,
        )
    }
    /// Tells the master this process has done one run (a queue scan, a
    /// trigger): `Taken` then `Available`, so that the master counts it as
    /// a use and knows the process got past its startup. False when the
    /// master is gone.
    pub fn ran(&self) -> bool {
        report(&self.endpoints.status, self.generation, ChildState::Taken)
            && report(
                &self.endpoints.status,
                self.generation,
                ChildState::Available,
            )
    }
    /// Takes a request from listener `i`: trigger bytes or a connection.
    pub fn take(&self, kind: ServiceType, i: usize) -> Option<Request> {
        take_request(kind, self.endpoints.listeners.get(i)?)
    }
}

/// Runs a persistent daemon; returns its exit status.
pub fn run_persistent<D: Daemon>(
    program: Program,
    setup: impl FnOnce(&Context) -> Result<D, String>,
) -> i32 {
    let (ctx, endpoints, daemon) = match start(program, setup) {
        Ok(started) => started,
        Err(code) => return code,
    };
    let channel = Channel {
        endpoints,
        generation: ctx.args.generation,
    };
    daemon.run(&ctx, channel)
}

/// Everything before the first request: arguments, configuration, logging,
/// the mail owner, inherited descriptors, the daemon's setup, privileges.
fn start<T>(
    program: Program,
    setup: impl FnOnce(&Context) -> Result<T, String>,
) -> Result<(Context, Endpoints, T), i32> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match ChildArgs::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("postern-{}: fatal: {e}", program.name);
            return Err(sysexits::EX_USAGE);
        }
    };
    let generation = args.generation;
    // A fatal error before the first request: logged, and told to the
    // master on the status channel, whose throttle line and status then
    // carry this reason.
    let fail = |code: i32, message: String| -> i32 {
        report_fatal(generation, &message);
        crate::log::fatal(code, message)
    };
    // Until main.cf says where to log: stderr in the foreground, else syslog.
    // Until main.cf is read: the default syslog_name and syslog_facility.
    let early = crate::log::open_sink(args.stderr, "", params::default::SYSLOG_FACILITY)
        .unwrap_or(crate::log::Sink::Stderr);
    crate::log::init(params::default::SYSLOG_NAME, program.name, early);
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => return Err(fail(sysexits::EX_CONFIG, e)),
    };
    // The watchdog covers startup too (an account lookup that hangs, a
    // setup that blocks): until the first status record the master counts
    // this child as about to serve, so a child stuck here would hold its
    // service for good. SIGALRM's default action ends the process.
    nix::unistd::alarm::set(watchdog_secs(config.time(params::DAEMON_TIMEOUT)));
    let sink = crate::log::open_sink(
        args.stderr,
        config.text(params::MAILLOG_FILE),
        config.text(params::SYSLOG_FACILITY),
    );
    match sink {
        Ok(s) => crate::log::init(config.text(params::SYSLOG_NAME), program.name, s),
        Err(e) => log::warn!(
            "cannot open maillog_file {}: {e}",
            config.text(params::MAILLOG_FILE)
        ),
    }
    let owner_name = config.text(params::MAIL_OWNER).to_string();
    let mail_owner = match account::user_by_name(&owner_name) {
        Ok(Some(a)) => a,
        Ok(None) => {
            return Err(fail(
                sysexits::EX_CONFIG,
                format!("mail_owner {owner_name}: no such user"),
            ))
        }
        Err(e) => return Err(fail(sysexits::EX_TEMPFAIL, e.to_string())),
    };
    match (program.privileges, args.unpriv) {
        (Privileges::Privileged, true) => {
            return Err(fail(
                sysexits::EX_CONFIG,
                format!(
                    "service {}: {} switches users and needs 'n' in master.cf's unpriv column",
                    args.service, program.name
                ),
            ))
        }
        (Privileges::Unprivileged, false) => log::warn!(
            "service {}: {} does not need root; put '-' in master.cf's unpriv column",
            args.service,
            program.name
        ),
        _ => {}
    }
    let endpoints = match adopt_endpoints(&args) {
        Ok(e) => e,
        Err(e) => {
            return Err(fail(
                sysexits::EX_SOFTWARE,
                format!("inherited descriptors: {e}"),
            ))
        }
    };
    let ctx = Context {
        config,
        args,
        mail_owner,
    };
    let handler = match setup(&ctx) {
        Ok(h) => h,
        Err(e) => {
            return Err(fail(
                sysexits::EX_CONFIG,
                format!("service {}: {e}", ctx.args.service),
            ))
        }
    };
    if let Err(e) = enter_privileges(&ctx, program.privileges) {
        return Err(fail(sysexits::EX_OSERR, e.to_string()));
    }
    // Startup code is done: keep only the pages the request loop uses.
    if let Err(e) = sys::trim_text_mappings() {
        log::warn!("cannot trim the resident set: {e}");
    }
    nix::unistd::alarm::cancel();
    Ok((ctx, endpoints, handler))
}

/// Sends the master a fatal record (best effort: the process exits next).
/// The status channel is at [`STATUS_FD`] whether or not it was adopted yet;
/// started by hand, that number is no socket and the send just fails.
fn report_fatal(generation: u32, reason: &str) {
    use nix::sys::socket::{send, MsgFlags};
    let record = crate::status::encode_fatal(std::process::id(), generation, reason);
    let _ = send(
        STATUS_FD,
        &record,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    );
}

/// The epoll timeout that waits until `wake`: the milliseconds rounded
/// up (truncated, the wait would end just before `wake`, and the loop
/// would spin with a zero timeout until it passed).
fn epoll_timeout_until(wake: Instant, now: Instant) -> EpollTimeout {
    let left = wake.saturating_duration_since(now);
    let ms = u64::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
    EpollTimeout::try_from(Duration::from_millis(ms)).unwrap_or(EpollTimeout::NONE)
}

/// `alarm`'s argument for a watchdog of `d` (at least one second).
fn watchdog_secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

/// A child reads main.cf only: master.cf is the master's business (it may be
/// mid-edit on disk), and the child's own part of it came on the command line.
fn load_config(args: &ChildArgs) -> Result<Config, String> {
    // No master.cf text is parsed, so no service name is looked up: an
    // empty table instead of reading /etc/services.
    let loaded = Config::load_main_only(&args.source, &ServicesFile::default());
    let config = loaded
        .into_result()
        .map_err(|e| format!("configuration: {e}"))?;
    config
        .for_child(&args.service, &args.overrides, args.postfix_instance)
        .map_err(|e| format!("configuration: {e}"))
}

#[derive(Debug)]
struct Endpoints {
    status: OwnedFd,
    listeners: Vec<OwnedFd>,
}

fn adopt_endpoints(args: &ChildArgs) -> io::Result<Endpoints> {
    let status = sys::adopt_inherited(STATUS_FD)?;
    let mut listeners = Vec::with_capacity(args.listen_fds);
    for i in 0..args.listen_fds {
        let fd = sys::adopt_inherited(LISTEN_FD + i as RawFd)?;
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFL(
                nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_RDWR,
            ),
        )
        .map_err(io::Error::from)?;
        listeners.push(fd);
    }
    Ok(Endpoints { status, listeners })
}

fn enter_privileges(ctx: &Context, privileges: Privileges) -> Result<(), String> {
    if ctx.args.chroot {
        let dir = ctx.config.text(params::QUEUE_DIRECTORY);
        nix::unistd::chroot(dir).map_err(|e| format!("chroot {dir}: {e}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir / after chroot: {e}"))?;
    }
    if !account::running_as_root() {
        return Err(
            "started without root privileges; postern-master starts its children as root".into(),
        );
    }
    let owner = MailOwner::from(&ctx.mail_owner);
    match privileges {
        Privileges::Unprivileged => {
            privilege::drop_to(owner.uid, owner.gid).map_err(|e| e.to_string())
        }
        Privileges::Privileged => MailOwnerEffective::enter(owner)
            .map(|_| ())
            .map_err(|e| e.to_string()),
    }
}

/// How long a status record may wait for room in the channel (the master
/// is busy, or another child floods it) before the master counts as gone.
const REPORT_WAIT: Duration = Duration::from_secs(30);

/// Reports a state to the master; false when the master is gone. A full
/// channel is waited for (at most [`REPORT_WAIT`]), not taken for a master
/// that went away: a lost `Taken` would make the master count a busy child
/// as idle, a lost `Available` would end an idle child for nothing.
fn report(status: &OwnedFd, generation: u32, state: ChildState) -> bool {
    use nix::errno::Errno;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let record = StatusRecord {
        pid: std::process::id(),
        generation,
        state,
    }
    .encode();
    let deadline = std::time::Instant::now() + REPORT_WAIT;
    loop {
        match send(
            status.as_raw_fd(),
            &record,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(_) => return true,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return false;
                }
                let ms = u16::try_from(left.as_millis().min(1000)).unwrap_or(1000);
                let mut fds = [PollFd::new(status.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::from(ms)) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(_) => return false,
                }
            }
            Err(_) => return false,
        }
    }
}

/// True when the status channel is at end-of-file (the master let go of us).
fn channel_closed(status: &OwnedFd) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        nix::sys::socket::recv(status.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT),
        Ok(0) | Err(nix::errno::Errno::ECONNRESET)
    )
}

const STATUS_TOKEN: u64 = u64::MAX;

/// Puts a read and a write timeout on a connection.
fn set_ipc_timeout(conn: &OwnedFd, limit: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    use nix::sys::time::{TimeVal, TimeValLike};
    let tv = TimeVal::seconds(i64::try_from(limit.as_secs()).unwrap_or(i64::MAX).max(1));
    for r in [
        setsockopt(conn, sockopt::ReceiveTimeout, &tv),
        setsockopt(conn, sockopt::SendTimeout, &tv),
    ] {
        if let Err(e) = r {
            log::warn!("cannot set ipc_timeout on a connection: {e}");
        }
    }
}

fn serve<H: Handler>(
    ctx: &Context,
    handler: &mut H,
    endpoints: &Endpoints,
    ipc_timeout: bool,
) -> i32 {
    let config = &ctx.config;
    let max_use = u64::try_from(config.int(params::MAX_USE))
        .unwrap_or(1)
        .max(1);
    let max_idle = config.time(params::MAX_IDLE);
    let watchdog = config.time(params::DAEMON_TIMEOUT);
    let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
        Ok(e) => e,
        Err(e) => return crate::log::fatal(sysexits::EX_OSERR, format!("epoll_create: {e}")),
    };
    let watch = EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP;
    if let Err(e) = epoll.add(
        endpoints.status.as_fd(),
        EpollEvent::new(watch, STATUS_TOKEN),
    ) {
        return crate::log::fatal(sysexits::EX_OSERR, format!("epoll_ctl status: {e}"));
    }
    for (i, l) in endpoints.listeners.iter().enumerate() {
        if let Err(e) = epoll.add(
            l.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, i as u64),
        ) {
            return crate::log::fatal(sysexits::EX_OSERR, format!("epoll_ctl listener: {e}"));
        }
    }
    let generation = ctx.args.generation;
    if !report(&endpoints.status, generation, ChildState::Available) {
        return 0;
    }
    let max_idle = max_idle.min(Duration::from_secs(86400));
    let mut events = [EpollEvent::empty(); 8];
    let mut uses = 0u64;
    let mut idle_since = Instant::now();
    loop {
        // Wake at max_idle, or earlier when the handler asks to (and then
        // go on waiting for the rest of max_idle).
        let idle_end = idle_since + max_idle;
        let handler_due = handler.idle_deadline().filter(|&d| d < idle_end);
        let wake = handler_due.unwrap_or(idle_end);
        let timeout = epoll_timeout_until(wake, Instant::now());
        let n = match epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return crate::log::fatal(sysexits::EX_OSERR, format!("epoll_wait: {e}")),
        };
        if n == 0 {
            if handler_due.is_some_and(|d| d <= Instant::now()) {
                handler.idle(ctx);
                continue;
            }
            if Instant::now() >= idle_end {
                return 0; // max_idle
            }
            continue;
        }
        for ev in &events[..n] {
            if ev.data() == STATUS_TOKEN {
                if channel_closed(&endpoints.status) {
                    return 0;
                }
                continue;
            }
            let Some(listener) = endpoints.listeners.get(ev.data() as usize) else {
                continue;
            };
            let Some(request) = take_request(ctx.args.kind, listener) else {
                continue;
            };
            if let (Request::Stream(conn), true) = (&request, ipc_timeout) {
                set_ipc_timeout(conn, config.time(params::IPC_TIMEOUT));
            }
            report(&endpoints.status, generation, ChildState::Taken);
            nix::unistd::alarm::set(watchdog_secs(watchdog));
            handler.handle(ctx, request);
            nix::unistd::alarm::cancel();
            idle_since = Instant::now();
            uses += 1;
            if uses >= max_use {
                return 0;
            }
            // A closed channel (reload, master gone) shows up as an epoll
            // event on the status descriptor at the next wait.
            if !report(&endpoints.status, generation, ChildState::Available) {
                return 0;
            }
        }
    }
}

/// Accepts a connection or reads a trigger; `None` when another child was faster.
fn take_request(kind: ServiceType, listener: &OwnedFd) -> Option<Request> {
    match kind {
        ServiceType::Fifo => {
            let mut buf = vec![0u8; 1024];
            match nix::unistd::read(listener.as_raw_fd(), &mut buf) {
                Ok(n) if n > 0 => {
                    buf.truncate(n);
                    Some(Request::Trigger(buf))
                }
                _ => None,
            }
        }
        _ => match sys::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => Some(Request::Stream(fd)),
            Err(
                nix::errno::Errno::EAGAIN
                | nix::errno::Errno::ECONNABORTED
                | nix::errno::Errno::EINTR,
            ) => None,
            Err(e) => {
                log::warn!("accept: {e}");
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockType};

    fn channel() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    /// A child reads main.cf alone: that master.cf makes a Postfix
    /// instance, whose defaults differ, comes on its command line.
    #[test]
    fn a_child_of_a_postfix_instance_takes_postfix_s_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), "").unwrap();
        std::fs::write(dir.path().join("master.cf"), "").unwrap();
        let args = |extra: &[&str]| {
            let dir = dir.path().display().to_string();
            let mut v: Vec<String> = ["-n", "policy", "-t", "unix", "-c", &dir]
                .iter()
                .chain(extra)
                .map(|s| s.to_string())
                .collect();
            v.push("--".into());
            ChildArgs::parse(&v).unwrap()
        };
        let postfix = args(&["--postfix-instance"]);
        assert!(postfix.postfix_instance);
        assert_eq!(ChildArgs::parse(&postfix.to_argv()).unwrap(), postfix);
        let config = load_config(&postfix).unwrap();
        assert_eq!(config.text(params::MAIL_OWNER), "postfix");
        assert_eq!(config.text(params::SYSLOG_NAME), "postfix");
        assert!(config.postfix_instance());
        let own = load_config(&args(&[])).unwrap();
        assert_eq!(own.text(params::MAIL_OWNER), "postern");
    }

    #[test]
    fn the_idle_wait_does_not_end_before_its_deadline() {
        let now = Instant::now();
        let ms = |d: Duration| epoll_timeout_until(now + d, now).as_millis();
        assert_eq!(ms(Duration::from_micros(500)), Some(1));
        assert_eq!(ms(Duration::from_micros(1500)), Some(2));
        assert_eq!(ms(Duration::from_millis(2)), Some(2));
        assert_eq!(ms(Duration::ZERO), Some(0));
        // A deadline already past: no wait.
        assert_eq!(
            epoll_timeout_until(now, now + Duration::from_secs(1)).as_millis(),
            Some(0)
        );
        assert_eq!(ms(Duration::from_secs(86400)), Some(86_400_000));
    }

    /// A full status channel is waited for, not taken for a master gone;
    /// a closed one is.
    #[test]
    fn a_full_channel_delays_a_report_and_a_closed_one_ends_it() {
        let (master, child) = channel();
        // Fill the channel: nobody reads.
        let mut queued = 0;
        while send(
            child.as_raw_fd(),
            &[0u8; 12],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        )
        .is_ok()
        {
            queued += 1;
        }
        assert!(queued > 0);
        let (tx, rx) = std::sync::mpsc::channel();
        let reporter = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let ok = report(&child, 7, ChildState::Taken);
            (ok, child)
        });
        let tid = rx.recv().unwrap();
        // Once the reporter sleeps (waiting for room), make room.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let stat =
                std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
            if stat.rsplit(") ").next().is_some_and(|r| r.starts_with('S')) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the reporter never waited"
            );
            std::thread::yield_now();
        }
        let mut buf = [0u8; 64];
        nix::sys::socket::recv(master.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        let (ok, child) = reporter.join().unwrap();
        assert!(ok, "the report was given up while the master was there");
        drop(master);
        assert!(!report(&child, 7, ChildState::Available));
    }
}
