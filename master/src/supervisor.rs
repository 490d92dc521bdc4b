//! `postern-master`: the supervisor.
//!
//! **Synopsis**: `postern-master (-c DIR | --queue-directory Q --data-directory D) [--foreground] [--ready-fd N]`
//! (started by `postern start`, not by hand).
//!
//! **Description**: reads main.cf and master.cf, takes the instance lock,
//! opens every endpoint of every service whose program postern provides, and
//! runs one event loop (mio, with signals from signal-hook-mio) over: the
//! signals, the control socket, each service's status channel, and the
//! endpoints of each service that currently needs a new child. A readable
//! endpoint forks one child, which accepts the connection itself; the master
//! watches a service's endpoints only while the service has no idle child, is
//! under its process limit and is not throttled (see [`crate::lifecycle`]).
//!
//! Service manager: with `NOTIFY_SOCKET` set (systemd's `Type=notify`, the
//! master run with `--foreground`), the master sends READY=1 once every
//! endpoint is open (children start on demand, so that is when a client is
//! served), RELOADING=1 (with MONOTONIC_USEC) and READY=1 around a reload,
//! STOPPING=1 on stop, and STATUS= naming any throttled service and the
//! failing child's reason (sd-notify). Children do not inherit the socket.
//!
//! Control requests (root only): `status`, `status json`, `reload` and
//! `reload SERVICE`; a reload's reply is its verdict (`ok: ...` or
//! `error: ...` when the running configuration was kept). A reload keeps
//! the services whose master.cf entry and endpoints are unchanged under an
//! unchanged main.cf; `reload SERVICE` recycles one.
//!
//! Locks: `data_directory/master/master.pid` (one master per instance) and
//! `queue_directory/pid/master.pid` (one master per queue), each holding the
//! pid and the configuration directory, so "already running" names which.
//!
//! Signals: SIGHUP reloads (an invalid configuration, or one that someone
//! other than root could have changed — main.cf, master.cf, the daemon
//! programs or a directory above them, see [`check::trust`] — is logged and
//! the running one kept; endpoints of services that remain stay open, so no connection is
//! refused); SIGTERM stops (endpoints closed, idle children leave at once,
//! busy ones get `shutdown_timeout` to finish, then every descendant's process
//! group is killed); SIGINT and SIGQUIT abort (the same, without the grace
//! period); SIGCHLD reaps. The master is a child subreaper, so commands
//! orphaned by a killed child are its to kill too: nothing of the instance
//! outlives it.
//!
//! **Security**: runs as root. Reads the configuration (trusted, validated),
//! status records from children (decoded strictly; records for a pid that is
//! not a child of that service are logged and ignored), and requests on the
//! control socket (root only: mode 0600 in a root-only directory, and the
//! peer's uid checked; each connection is non-blocking, served from the
//! event loop with its own buffers and closed at a short deadline, so an
//! idle or slow client never delays the loop: see [`crate::control_server`]).
//!
//! **Exit status**: 0 after a stop; 1 when the instance (or its queue) is
//! already in use; 71 on a system error (an endpoint's address in use);
//! 73 when maillog_file cannot be opened; 77 when not root; 78 on a
//! configuration error (including no syslog, no maillog_file and not in
//! the foreground).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use postern_common::account::{self, Account};
use postern_common::server::ChildArgs;
use postern_common::status::{self as child_status, Message, FIRST_FREE_FD, STATUS_FD};
use postern_common::sysexits;
use postern_conf::{params, Config, ServiceEntry, ServicesFile, Source};
use postern_sys as sys;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::control_server::{self, Client};
use crate::endpoint::{self, BindTarget};
use crate::lifecycle::{self, ChildInfo, ExitVerdict, Phase, ServiceLoad};
use postern_common::check;
use postern_common::control::{self as control_client, Request};
use postern_common::instance::{self, LockError, Paths, PidLock};
use postern_common::programs;

const SIGNALS: Token = Token(0);
const CONTROL: Token = Token(1);
const FIRST_SERVICE_TOKEN: usize = 16;

/// How the master was asked to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The configuration.
    pub source: Source,
    /// Stay attached, log to standard error.
    pub foreground: bool,
    /// Where to say "ready" (or why not) to `postern start`.
    pub ready_fd: Option<RawFd>,
}

/// Parses the master's command line.
pub fn parse_args(argv: &[String]) -> Result<Options, String> {
    let mut it = argv.iter();
    let (mut dir, mut queue, mut data, mut foreground, mut ready_fd) =
        (None, None, None, false, None);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("option {a} needs a value"))
        };
        match a.as_str() {
            "-c" => dir = Some(PathBuf::from(value()?)),
            "--queue-directory" => queue = Some(PathBuf::from(value()?)),
            "--data-directory" => data = Some(PathBuf::from(value()?)),
            "--foreground" => foreground = true,
            "--ready-fd" => {
                ready_fd = Some(value()?.parse().map_err(|_| "bad --ready-fd".to_string())?)
            }
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    let source = postern_common::server::source_from(dir, queue, data)?;
    Ok(Options {
        source,
        foreground,
        ready_fd,
    })
}

/// Tells the service manager (systemd, `NOTIFY_SOCKET`) about a state
/// change; nothing without `NOTIFY_SOCKET`. A failure is logged, never fatal.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::warn!("cannot notify the service manager (NOTIFY_SOCKET): {e}");
    }
}

/// Tells `postern start` how startup went (once).
struct Ready(Option<std::fs::File>);

impl Ready {
    fn say(&mut self, text: &str) {
        if let Some(mut f) = self.0.take() {
            let _ = writeln!(f, "{text}");
        }
    }
}

/// `postern-master`'s main.
pub fn main() -> i32 {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&argv) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("postern-master: fatal: {e}");
            return sysexits::EX_USAGE;
        }
    };
    // Whatever descriptor the master inherited (from a shell, a unit, a
    // script) must not reach its children, some of which run as the mail
    // owner: every one above 2 is close-on-exec from here on (the ready
    // descriptor is the master's own business too).
    let inherited = sys::cloexec_from(3);
    let mut ready = Ready(
        opts.ready_fd
            .and_then(|fd| sys::adopt_inherited(fd).ok())
            .map(std::fs::File::from),
    );
    postern_common::log::init("postern", "master", postern_common::log::Sink::Stderr);
    if let Err(e) = inherited {
        log::warn!("cannot mark inherited descriptors close-on-exec: {e}");
    }
    let code = match start(&opts) {
        Ok(mut master) => {
            ready.say("ready");
            // Every endpoint is open. Children start on demand (a
            // connection, a trigger, a wakeup), so "endpoint open" is what
            // ready means for every service: a client that connects now is
            // served.
            let status = master.status_line();
            notify(&[
                sd_notify::NotifyState::Ready,
                sd_notify::NotifyState::Status(&status),
            ]);
            master.notified_status = status;
            if let Err(e) = sys::trim_text_mappings() {
                log::warn!("cannot trim the resident set: {e}");
            }
            master.run()
        }
        Err((code, why)) => {
            ready.say(&format!("error {code}: {why}"));
            postern_common::log::fatal(code, why)
        }
    };
    log::info!("master exits with status {code}");
    code
}

type Fatal = (i32, String);

fn start(opts: &Options) -> Result<Master, Fatal> {
    let loaded = Config::load(&opts.source, &ServicesFile::system());
    for d in &loaded.diagnostics {
        if !d.is_error() {
            log::warn!("{d}");
        }
    }
    let config = loaded
        .into_result()
        .map_err(|e| (sysexits::EX_CONFIG, format!("configuration: {e}")))?;
    // Logs that go nowhere are refused: no syslog and no maillog_file
    // (any container) is a configuration error naming the options.
    match postern_common::log::open_sink(
        opts.foreground,
        config.text(params::MAILLOG_FILE),
        config.text(params::SYSLOG_FACILITY),
    ) {
        Ok(s) => postern_common::log::init(config.text(params::SYSLOG_NAME), "master", s),
        Err(e) if config.text(params::MAILLOG_FILE).is_empty() => {
            return Err((sysexits::EX_CONFIG, e.to_string()))
        }
        Err(e) => {
            return Err((
                sysexits::EX_CANTCREAT,
                format!(
                    "cannot open maillog_file {}: {e}",
                    config.text(params::MAILLOG_FILE)
                ),
            ))
        }
    }
    if !account::running_as_root() {
        return Err((
            sysexits::EX_NOPERM,
            "postern-master must run as root".into(),
        ));
    }
    refuse_untrusted(&config, "not starting").map_err(|why| (sysexits::EX_CONFIG, why))?;
    let owner = mail_owner(&config).map_err(|e| (sysexits::EX_CONFIG, e))?;
    instance::ensure_directories(&config, &owner).map_err(|e| (sysexits::EX_CANTCREAT, e))?;
    let paths = Paths::of(&config);
    let lock = match instance::acquire(&paths, &describe(&opts.source)) {
        Ok(l) => l,
        Err(LockError::Running(holder)) => {
            return Err((1, format!("the instance is already running ({holder})")));
        }
        Err(LockError::Io(e)) => return Err((sysexits::EX_OSERR, e)),
    };
    // The queue is one instance's: a master with another data_directory
    // on the same queue_directory would take over its endpoints.
    let queue_dir = std::path::Path::new(config.text(params::QUEUE_DIRECTORY));
    let queue_lock = match instance::lock_queue(queue_dir, &describe(&opts.source)) {
        Ok(l) => l,
        Err(LockError::Running(holder)) => {
            return Err((
                1,
                format!(
                    "queue_directory {} is in use by another running instance ({holder}); \
                     give each instance its own queue_directory",
                    queue_dir.display()
                ),
            ));
        }
        Err(LockError::Io(e)) => return Err((sysexits::EX_OSERR, e)),
    };
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| (sysexits::EX_OSERR, format!("PR_SET_CHILD_SUBREAPER: {e}")))?;
    Master::new(opts, config, &owner, paths, (lock, queue_lock))
}

/// Logs every reason `config` cannot be trusted (files or daemon programs
/// that someone other than root could change: [`check::trust`]) and
/// returns the first, prefixed with `what`.
fn refuse_untrusted(config: &Config, what: &str) -> Result<(), String> {
    let problems = check::trust(config);
    for d in &problems {
        log::error!("{what}: {d}");
    }
    match problems.first() {
        None => Ok(()),
        Some(d) => Err(format!("{what}: {d}")),
    }
}

fn mail_owner(config: &Config) -> Result<Account, String> {
    let name = config.text(params::MAIL_OWNER);
    let owner = account::user_by_name(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| {
            format!("mail_owner {name}: no such user (postern start creates the default one)")
        })?;
    if owner.uid == 0 || owner.gid == 0 {
        return Err(format!("mail_owner {name} must not have uid or gid 0"));
    }
    Ok(owner)
}

/// A child the master knows.
#[derive(Debug, Clone)]
struct Child {
    info: ChildInfo,
    started: Instant,
    /// The reason it sent before failing at startup (a fatal record).
    fatal: Option<String>,
}

/// One running service.
#[derive(Debug)]
struct Service {
    entry: ServiceEntry,
    /// `service_throttle_time` as this service sees it (its `-o` overrides
    /// applied). Only the values the master needs are kept, not the whole
    /// per-service view of the configuration.
    throttle_time: Duration,
    program: PathBuf,
    generation: u32,
    targets: Vec<BindTarget>,
    listeners: Vec<OwnedFd>,
    status: OwnedFd,
    status_child: OwnedFd,
    status_token: Token,
    listen_token: Token,
    children: BTreeMap<i32, Child>,
    throttled_until: Option<Instant>,
    /// Why the service is throttled: the failing child's own reason.
    throttle_reason: Option<String>,
    listening: bool,
    last_limit_warning: Option<Instant>,
    used: bool,
    next_wakeup: Option<Instant>,
    limit: Option<u32>,
    /// Status-channel warnings: (window start, logged in it, suppressed).
    warnings: (Option<Instant>, u32, u32),
}

impl Service {
    fn id(&self) -> String {
        self.entry.id()
    }

    /// Logs a warning about this service's status channel, at most ten a
    /// second (a misbehaving child must not flood the log).
    fn warn_limited(&mut self, now: Instant, text: &str) {
        let window_over = self
            .warnings
            .0
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1));
        if window_over {
            if self.warnings.2 > 0 {
                log::warn!(
                    "service {}: {} more status channel warning(s) suppressed",
                    self.id(),
                    self.warnings.2
                );
            }
            self.warnings = (Some(now), 0, 0);
        }
        if self.warnings.1 < 10 {
            self.warnings.1 += 1;
            log::warn!("service {}: {text}", self.id());
        } else {
            self.warnings.2 += 1;
        }
    }

    fn load(&self, stopping: bool, now: Instant) -> ServiceLoad {
        ServiceLoad {
            children: self.children.len() as u32,
            available: self
                .children
                .values()
                .filter(|c| c.info.available())
                .count() as u32,
            limit: self.limit,
            throttled: self.throttled_until.is_some_and(|t| t > now),
            stopping,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Status(u32),
    Listen(u32),
}

struct Stop {
    deadline: Instant,
}

struct Master {
    source: Source,
    config: Config,
    owner: (u32, u32),
    foreground: bool,
    poll: Poll,
    signals: Signals,
    control: Option<UnixListener>,
    /// Control connections being served, by token.
    control_clients: HashMap<Token, Client>,
    paths: Paths,
    /// The instance's pid lock and its queue directory's lock.
    _lock: (PidLock, PidLock),
    services: Vec<Service>,
    tokens: HashMap<Token, Target>,
    next_token: usize,
    next_generation: u32,
    retired: HashMap<i32, String>,
    started: Instant,
    stop: Option<Stop>,
    /// The last STATUS= line sent to the service manager.
    notified_status: String,
    /// Whether a service manager listens (`NOTIFY_SOCKET` is set).
    notify_enabled: bool,
}

fn os(e: impl std::fmt::Display, what: &str) -> Fatal {
    (sysexits::EX_OSERR, format!("{what}: {e}"))
}

impl Master {
    fn new(
        opts: &Options,
        config: Config,
        owner: &Account,
        paths: Paths,
        lock: (PidLock, PidLock),
    ) -> Result<Self, Fatal> {
        let poll = Poll::new().map_err(|e| os(e, "epoll"))?;
        let mut signals = Signals::new([SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGCHLD])
            .map_err(|e| os(e, "signals"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| os(e, "register signals"))?;
        let _ = std::fs::remove_file(&paths.control);
        let mut control =
            UnixListener::bind(&paths.control).map_err(|e| os(e, "control socket"))?;
        std::fs::set_permissions(
            &paths.control,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .map_err(|e| os(e, "chmod control socket"))?;
        poll.registry()
            .register(&mut control, CONTROL, Interest::READABLE)
            .map_err(|e| os(e, "register control"))?;
        let mut master = Master {
            source: opts.source.clone(),
            config,
            owner: (owner.uid, owner.gid),
            foreground: opts.foreground,
            poll,
            signals,
            control: Some(control),
            control_clients: HashMap::new(),
            paths,
            _lock: lock,
            services: Vec::new(),
            tokens: HashMap::new(),
            next_token: FIRST_SERVICE_TOKEN,
            next_generation: 1,
            retired: HashMap::new(),
            started: Instant::now(),
            stop: None,
            notified_status: String::new(),
            notify_enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
        };
        let config = master.config.clone();
        let mut kept = HashMap::new();
        for entry in startable(&config) {
            let svc = master.build_service(&config, entry, &mut kept)?;
            master.services.push(svc);
        }
        let now = Instant::now();
        for i in 0..master.services.len() {
            master.refresh(i, now);
        }
        log::info!(
            "daemon started -- version {}, {}, {} service(s)",
            env!("CARGO_PKG_VERSION"),
            describe(&master.source),
            master.services.len()
        );
        Ok(master)
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// Creates a service: its status channel and endpoints (reusing the
    /// already-open endpoints in `kept` when the targets are the same).
    fn build_service(
        &mut self,
        config: &Config,
        entry: &ServiceEntry,
        kept: &mut HashMap<BindTarget, OwnedFd>,
    ) -> Result<Service, Fatal> {
        let config_error = |e: String| (sysexits::EX_CONFIG, e);
        let id = entry.id();
        let view = config
            .for_service(entry)
            .map_err(|e| config_error(format!("service {id}: {e}")))?;
        let program = programs::find(&entry.command)
            .map(|p| config.daemon_directory().join(p.executable))
            .ok_or_else(|| {
                config_error(format!(
                    "service {id}: program {} is not provided by postern",
                    entry.command
                ))
            })?;
        let targets = endpoint::targets(&view, entry)
            .map_err(|e| config_error(format!("service {id}: {e}")))?;
        if targets.is_empty() {
            return Err(config_error(format!(
                "service {id}: no address to listen on (check inet_interfaces and inet_protocols)"
            )));
        }
        let mut listeners = Vec::with_capacity(targets.len());
        for t in &targets {
            let fd = match kept.remove(t) {
                Some(fd) => fd,
                None => endpoint::open(t, 4096, self.owner)
                    .map_err(|e| (sysexits::EX_OSERR, format!("service {id}: {e}")))?,
            };
            listeners.push(fd);
        }
        let (status, status_child) =
            status_channel().map_err(|e| os(e, &format!("service {id}: status channel")))?;
        let status_token = self.token();
        let listen_token = self.token();
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1).max(1);
        self.poll
            .registry()
            .register(
                &mut SourceFd(&status.as_raw_fd()),
                status_token,
                Interest::READABLE,
            )
            .map_err(|e| os(e, &format!("service {id}: register status channel")))?;
        self.tokens.insert(status_token, Target::Status(generation));
        self.tokens.insert(listen_token, Target::Listen(generation));
        let limit = view.process_limit(entry);
        let throttle_time = view.time(params::SERVICE_THROTTLE_TIME);
        // The first wake-up comes at once: a queue manager looks at the
        // queue as soon as the instance starts, as in Postfix.
        let next_wakeup = entry.wakeup.map(|_| Instant::now());
        Ok(Service {
            entry: entry.clone(),
            throttle_time,
            program,
            generation,
            targets,
            listeners,
            status,
            status_child,
            status_token,
            listen_token,
            children: BTreeMap::new(),
            throttled_until: None,
            throttle_reason: None,
            listening: false,
            last_limit_warning: None,
            used: false,
            next_wakeup,
            limit,
            warnings: (None, 0, 0),
        })
    }

    fn service_index(&self, generation: u32) -> Option<usize> {
        self.services
            .iter()
            .position(|s| s.generation == generation)
    }

    /// Registers or deregisters a service's endpoints as its load requires.
    fn refresh(&mut self, i: usize, now: Instant) {
        let stopping = self.stop.is_some();
        let svc = &mut self.services[i];
        if svc.throttled_until.is_some_and(|t| t <= now) {
            svc.throttled_until = None;
            svc.throttle_reason = None;
            log::info!("service {}: throttle period over, serving again", svc.id());
        }
        let want = lifecycle::should_listen(svc.load(stopping, now));
        if want == svc.listening {
            return;
        }
        for fd in &svc.listeners {
            let raw = fd.as_raw_fd();
            let r = if want {
                self.poll.registry().register(
                    &mut SourceFd(&raw),
                    svc.listen_token,
                    Interest::READABLE,
                )
            } else {
                self.poll.registry().deregister(&mut SourceFd(&raw))
            };
            if let Err(e) = r {
                log::error!(
                    "service {}: epoll update for an endpoint: {e}",
                    svc.entry.id()
                );
            }
        }
        svc.listening = want;
    }

    fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return postern_common::log::fatal(sysexits::EX_OSERR, format!("epoll_wait: {e}"));
            }
            for ev in events.iter() {
                match ev.token() {
                    SIGNALS => self.on_signals(),
                    CONTROL => self.on_control(),
                    t => match self.tokens.get(&t).copied() {
                        Some(Target::Status(g)) => self.on_status(g),
                        Some(Target::Listen(g)) => self.on_connection(g),
                        None => self.on_control_client(t),
                    },
                }
            }
            let now = Instant::now();
            self.on_timers(now);
            if let Some(stop) = &self.stop {
                if self.retired.is_empty() || now >= stop.deadline {
                    self.finish();
                    return 0;
                }
            }
        }
    }

    fn next_timeout(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut next: Option<Instant> = self.stop.as_ref().map(|s| s.deadline);
        for c in self.control_clients.values() {
            next = Some(next.map_or(c.deadline, |n| n.min(c.deadline)));
        }
        for s in &self.services {
            for t in [s.throttled_until, s.next_wakeup].into_iter().flatten() {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        }
        next.map(|t| t.saturating_duration_since(now))
    }

    fn on_signals(&mut self) {
        let pending: Vec<i32> = self.signals.pending().collect();
        let mut reap = false;
        for sig in pending {
            match sig {
                SIGCHLD => reap = true,
                SIGHUP => {
                    let _ = self.reload();
                }
                SIGTERM => self.begin_stop(false),
                SIGINT | SIGQUIT => self.begin_stop(true),
                _ => {}
            }
        }
        if reap {
            self.reap();
        }
    }

    fn reap(&mut self) {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    if let Some(pid) = status.pid() {
                        self.on_exit(pid.as_raw(), status);
                    }
                }
            }
        }
    }

    fn on_exit(&mut self, pid: i32, status: WaitStatus) {
        let success = matches!(status, WaitStatus::Exited(_, 0));
        let how = match status {
            WaitStatus::Exited(_, code) => format!("exit status {code}"),
            WaitStatus::Signaled(_, sig, _) => format!("killed by signal {}", sig as i32),
            other => format!("{other:?}"),
        };
        let now = Instant::now();
        if let Some(i) = self
            .services
            .iter()
            .position(|s| s.children.contains_key(&pid))
        {
            // A failing child sends its reason before it exits: read what
            // its service's channel holds before judging the exit.
            let generation = self.services[i].generation;
            self.on_status(generation);
            let throttle_for = self.services[i].throttle_time;
            let svc = &mut self.services[i];
            let Some(child) = svc.children.remove(&pid) else {
                return;
            };
            match lifecycle::on_exit(&child.info, success) {
                ExitVerdict::Normal => {}
                ExitVerdict::Failed => {
                    log::warn!(
                        "service {}: process {} pid {pid} {how}",
                        svc.id(),
                        svc.program.display()
                    )
                }
                ExitVerdict::Throttle => {
                    let reason = match &child.fatal {
                        Some(r) => format!("{how} before taking its first request: {r}"),
                        None => format!(
                            "{how} before taking its first request (no reason sent; see the process's own log line)"
                        ),
                    };
                    if svc.throttled_until.is_none() {
                        log::warn!(
                            "service {}: process {} pid {pid} {reason}: throttling the service for {}s",
                            svc.id(),
                            svc.program.display(),
                            throttle_for.as_secs()
                        );
                    }
                    svc.throttled_until = Some(now + throttle_for);
                    svc.throttle_reason = Some(format!("pid {pid} {reason}"));
                }
            }
            self.refresh(i, now);
        } else if let Some(id) = self.retired.remove(&pid) {
            if !success {
                log::warn!("service {id}: process pid {pid} {how}");
            }
        }
        // Anything else is a descendant orphaned to us (we are a subreaper): reaped.
        self.notify_status();
    }

    fn on_status(&mut self, generation: u32) {
        /// Records handled per wakeup before the master looks at other work.
        const MAX_PER_WAKEUP: usize = 256;
        let Some(i) = self.service_index(generation) else {
            return;
        };
        let mut buf = [0u8; child_status::MAX_MESSAGE + 1];
        for handled in 0.. {
            if handled == MAX_PER_WAKEUP {
                // More may be waiting: ask for another readiness event
                // rather than let one service starve signals and others.
                let svc = &self.services[i];
                let raw = svc.status.as_raw_fd();
                let _ = self.poll.registry().reregister(
                    &mut SourceFd(&raw),
                    svc.status_token,
                    Interest::READABLE,
                );
                break;
            }
            let (n, sender) = match recv_with_sender(&self.services[i].status, &mut buf) {
                Ok(x) => x,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            };
            let now = Instant::now();
            let svc = &mut self.services[i];
            let (pid, generation, update) =
                match child_status::decode_message(&buf[..n.min(buf.len())]) {
                    Ok(Message::State(r)) => (r.pid, r.generation, Ok(r.state)),
                    Ok(Message::Fatal {
                        pid,
                        generation,
                        reason,
                    }) => (pid, generation, Err(reason)),
                    Err(e) => {
                        svc.warn_limited(now, &format!("malformed status record ignored: {e}"));
                        continue;
                    }
                };
            let problem = if generation != svc.generation {
                None
            } else if sender != Some(pid as i32) {
                Some(format!(
                    "status record for pid {pid} sent by pid {}: ignored",
                    sender.map_or("unknown".to_string(), |p| p.to_string())
                ))
            } else {
                match svc.children.get_mut(&(pid as i32)) {
                    Some(c) => {
                        match update {
                            Ok(state) => c.info = c.info.report(state),
                            Err(reason) => c.fatal = Some(reason),
                        }
                        None
                    }
                    None => Some(format!(
                        "status record for pid {pid} which is not its child: ignored"
                    )),
                }
            };
            if let Some(text) = problem {
                svc.warn_limited(now, &text);
            }
        }
        self.refresh(i, Instant::now());
    }

    fn on_connection(&mut self, generation: u32) {
        let Some(i) = self.service_index(generation) else {
            return;
        };
        let now = Instant::now();
        if !lifecycle::should_listen(self.services[i].load(self.stop.is_some(), now)) {
            self.refresh(i, now);
            return;
        }
        self.start_child(i, now);
        self.refresh(i, now);
    }

    fn start_child(&mut self, i: usize, now: Instant) {
        let foreground = self.foreground;
        let source = self.source.clone();
        let svc = &mut self.services[i];
        let args = ChildArgs {
            service: svc.entry.name.clone(),
            kind: svc.entry.kind,
            generation: svc.generation,
            listen_fds: svc.listeners.len(),
            source,
            stderr: foreground,
            chroot: svc.entry.chroot,
            unpriv: svc.entry.unpriv,
            overrides: svc.entry.overrides.clone(),
            args: svc.entry.args.clone(),
        };
        let fds: Vec<RawFd> = std::iter::once(svc.status_child.as_raw_fd())
            .chain(svc.listeners.iter().map(|l| l.as_raw_fd()))
            .collect();
        // The collision check: every source descriptor is above the fixed numbers.
        if let Some(bad) = fds.iter().find(|fd| **fd < FIRST_FREE_FD) {
            log::error!(
                "service {}: descriptor {bad} would collide with the fixed child descriptors",
                svc.id()
            );
            return;
        }
        let mut cmd = Command::new(&svc.program);
        cmd.args(args.to_argv())
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if !foreground {
            cmd.stderr(Stdio::null());
        }
        // dup2 clears close-on-exec on the copies.
        fds.iter()
            .enumerate()
            .fold(sys::BeforeExec::new(), |steps, (n, &fd)| {
                steps.copy_fd(fd, STATUS_FD + n as RawFd)
            })
            .install(&mut cmd);
        match cmd.spawn() {
            Ok(child) => {
                let pid = child.id() as i32;
                svc.children.insert(
                    pid,
                    Child {
                        info: ChildInfo::new(),
                        started: now,
                        fatal: None,
                    },
                );
                svc.used = true;
                // A fifo service (a trigger, like qmgr's) has no client
                // waiting on it: its limit is a design, not a bottleneck.
                if svc.limit.is_some_and(|l| svc.children.len() as u32 >= l)
                    && svc.entry.kind != postern_conf::ServiceType::Fifo
                    && svc
                        .last_limit_warning
                        .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(60))
                {
                    svc.last_limit_warning = Some(now);
                    log::warn!(
                        "service {} has reached its process limit {}: new clients may have to wait; consider raising maxproc",
                        svc.id(),
                        svc.limit.unwrap_or(0)
                    );
                }
            }
            Err(e) => {
                let throttle_for = svc.throttle_time;
                log::error!(
                    "service {}: cannot start {}: {e}: throttling the service for {}s",
                    svc.id(),
                    svc.program.display(),
                    throttle_for.as_secs()
                );
                svc.throttled_until = Some(now + throttle_for);
                svc.throttle_reason = Some(format!("cannot start {}: {e}", svc.program.display()));
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .control_clients
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(mut c) = self.control_clients.remove(&t) {
                let _ = self.poll.registry().deregister(c.stream());
                log::info!(
                    "control socket: closed a connection from pid {} without a complete exchange after {}s",
                    c.peer_pid.unwrap_or(0),
                    control_server::DEADLINE.as_secs()
                );
            }
        }
        for i in 0..self.services.len() {
            let svc = &mut self.services[i];
            if let (Some(due), Some(w)) = (svc.next_wakeup, svc.entry.wakeup) {
                if due <= now {
                    svc.next_wakeup = Some(now + w.interval);
                    if !w.only_if_used || svc.used {
                        for (t, held) in svc.targets.iter().zip(&svc.listeners) {
                            if let Err(e) = endpoint::wake(t, held, self.owner) {
                                log::warn!("service {}: wakeup of {t}: {e}", svc.entry.id());
                            }
                        }
                    }
                }
            }
            self.refresh(i, now);
        }
        self.notify_status();
    }

    /// Accepts control connections (never waiting for one to speak): each
    /// is checked for root, made non-blocking and registered on the loop.
    fn on_control(&mut self) {
        loop {
            let Some(listener) = &self.control else {
                return;
            };
            let (stream, _) = match listener.accept() {
                Ok(s) => s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("control socket accept: {e}");
                    return;
                }
            };
            let peer =
                nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials);
            let pid = match peer {
                Ok(c) if c.uid() == 0 => c.pid(),
                Ok(c) => {
                    log::warn!(
                        "control socket: refused a request from uid {} pid {}: root only",
                        c.uid(),
                        c.pid()
                    );
                    continue;
                }
                Err(e) => {
                    log::warn!("control socket: cannot get peer credentials: {e}");
                    continue;
                }
            };
            if self.control_clients.len() >= control_server::MAX_CLIENTS {
                log::warn!(
                    "control socket: {} connections already open: closed a new one from pid {pid}",
                    control_server::MAX_CLIENTS
                );
                continue;
            }
            let token = self.token();
            let mut client = Client::new(stream, Instant::now());
            client.peer_pid = Some(pid);
            if let Err(e) = self.poll.registry().register(
                client.stream(),
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                log::warn!("control socket: cannot watch a connection: {e}");
                continue;
            }
            self.control_clients.insert(token, client);
        }
    }

    /// Moves one control connection on as far as it goes without waiting.
    fn on_control_client(&mut self, token: Token) {
        let Some(mut client) = self.control_clients.remove(&token) else {
            return;
        };
        let done = client.progress(|request| control_client::reply(request, |r| self.answer(r)));
        if done {
            let _ = self.poll.registry().deregister(client.stream());
        } else {
            self.control_clients.insert(token, client);
        }
    }

    /// Answers one control request.
    fn answer(&mut self, request: &Request) -> String {
        match request {
            Request::Status => self.status_text(),
            Request::StatusJson => {
                let mut text = serde_json::to_string(&self.snapshot())
                    .unwrap_or_else(|e| format!("error: cannot encode the status: {e}"));
                text.push('\n');
                text
            }
            Request::Reload(service) => {
                let verdict = match service {
                    None => self.reload(),
                    Some(name) => self.recycle(name),
                };
                self.notify_status();
                match verdict {
                    Ok(text) => format!("ok: {text}\n"),
                    Err(why) => format!("error: {why}\n"),
                }
            }
        }
    }

    /// What `postern status` shows, as data.
    fn snapshot(&self) -> control_client::Snapshot {
        use control_client::{ChildSnapshot, MasterSnapshot, ServiceSnapshot, Throttle};
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        let services = self
            .services
            .iter()
            .map(|s| {
                let throttled = s.throttled_until.filter(|t| *t > now).map(|t| {
                    let left = t.duration_since(now);
                    let until = wall
                        .checked_add(left)
                        .and_then(|w| w.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    Throttle {
                        seconds_left: left.as_secs() + 1,
                        until: postern_common::log::utc_timestamp(until),
                        reason: s.throttle_reason.clone().unwrap_or_default(),
                    }
                });
                let state = match &throttled {
                    Some(_) => "throttled",
                    None if s.listening => "listening",
                    None if s.limit.is_some_and(|l| s.children.len() as u32 >= l) => {
                        "at process limit"
                    }
                    None => "idle child waiting",
                };
                ServiceSnapshot {
                    name: s.entry.name.clone(),
                    kind: s.entry.kind.as_str().to_string(),
                    endpoints: s.targets.iter().map(|t| t.to_string()).collect(),
                    maxproc: s.limit,
                    state: state.to_string(),
                    throttled,
                    children: s
                        .children
                        .iter()
                        .map(|(pid, c)| ChildSnapshot {
                            pid: *pid,
                            state: match c.info.phase {
                                Phase::Starting => "starting",
                                Phase::Idle => "idle",
                                Phase::Busy => "busy",
                            }
                            .to_string(),
                            uses: c.info.uses,
                            age_seconds: now.duration_since(c.started).as_secs(),
                        })
                        .collect(),
                }
            })
            .collect();
        control_client::Snapshot {
            master: MasterSnapshot {
                pid: std::process::id(),
                uptime_seconds: self.started.elapsed().as_secs(),
                configuration: describe(&self.source),
                stopping: self.stop.is_some(),
                retired_children: self.retired.len(),
            },
            services,
            queue: None,
        }
    }

    /// One line for the service manager's STATUS=: what is wrong, if anything.
    fn status_line(&self) -> String {
        let snap = self.snapshot();
        let throttled: Vec<String> = snap
            .services
            .iter()
            .filter_map(|s| {
                s.throttled.as_ref().map(|t| {
                    format!(
                        "{}/{} throttled for {}s: {}",
                        s.name, s.kind, t.seconds_left, t.reason
                    )
                })
            })
            .collect();
        if throttled.is_empty() {
            format!("{} service(s) running", snap.services.len())
        } else {
            format!("degraded: {}", throttled.join("; "))
        }
    }

    /// Sends STATUS= when the line changed (a throttle began or ended).
    fn notify_status(&mut self) {
        if !self.notify_enabled || self.stop.is_some() {
            return;
        }
        let line = self.status_line();
        // The seconds left change every second; only a change in what is
        // wrong is worth a notification.
        let key = |l: &str| -> String { l.split(" for ").next().unwrap_or(l).to_string() };
        if key(&line) != key(&self.notified_status) {
            notify(&[sd_notify::NotifyState::Status(&line)]);
            self.notified_status = line;
        }
    }

    fn status_text(&self) -> String {
        control_client::human(&self.snapshot())
    }

    /// Moves a service's children to the retired set and closes everything
    /// of it but (when `keep` is true) its endpoints, which are returned.
    /// Retires a service: its children finish and leave. The endpoints for
    /// which `keep` holds are handed back open (for the new configuration),
    /// the others closed and removed.
    fn retire(
        &mut self,
        svc: Service,
        keep: impl Fn(&BindTarget) -> bool,
    ) -> Vec<(BindTarget, OwnedFd)> {
        let id = svc.id();
        for pid in svc.children.keys() {
            self.retired.insert(*pid, id.clone());
        }
        self.tokens.remove(&svc.status_token);
        self.tokens.remove(&svc.listen_token);
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&svc.status.as_raw_fd()));
        if svc.listening {
            for fd in &svc.listeners {
                let _ = self
                    .poll
                    .registry()
                    .deregister(&mut SourceFd(&fd.as_raw_fd()));
            }
        }
        // Dropping `svc.status` and `status_child` closes the channel: idle
        // children see end-of-file and leave; busy ones after their request.
        let (kept, closed): (Vec<_>, Vec<_>) = svc
            .targets
            .into_iter()
            .zip(svc.listeners)
            .partition(|(t, _)| keep(t));
        for (t, fd) in closed {
            drop(fd);
            endpoint::remove(&t);
        }
        kept
    }

    /// Reloads the configuration; returns the verdict (`Err` when the
    /// running configuration stays in force), which `postern reload` prints.
    fn reload(&mut self) -> Result<String, String> {
        if self.stop.is_some() {
            return Err("the master is stopping".into());
        }
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        notify(&reloading);
        let verdict = self.reload_inner();
        let status = match &verdict {
            Ok(_) => self.status_line(),
            Err(why) => format!("reload refused, running configuration kept: {why}"),
        };
        notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&status),
        ]);
        self.notified_status = status;
        verdict
    }

    /// The reload itself; `Err` when the running configuration was kept.
    fn reload_inner(&mut self) -> Result<String, String> {
        log::info!("reload: reading the configuration again");
        let loaded = Config::load(&self.source, &ServicesFile::system());
        for d in &loaded.diagnostics {
            if d.is_error() {
                log::error!("reload: {d}");
            } else {
                log::warn!("reload: {d}");
            }
        }
        let Some(config) = loaded.config else {
            log::error!("reload failed: the configuration has errors; the running configuration stays in force");
            let first = loaded
                .diagnostics
                .iter()
                .find(|d| d.is_error())
                .map_or_else(String::new, |d| format!(": {d}"));
            return Err(format!("the configuration has errors{first}"));
        };
        if let Err(why) = refuse_untrusted(&config, "reload refused") {
            log::error!("{why}; the running configuration stays in force");
            return Err(why);
        }
        // Every service's endpoints under the new configuration; a service
        // whose endpoints cannot be worked out (a host name that does not
        // resolve now) fails the reload as a whole, rather than disappear.
        let mut wanted: Vec<(ServiceEntry, Vec<BindTarget>)> = Vec::new();
        let mut failed = Vec::new();
        for e in startable(&config) {
            let targets = config
                .for_service(e)
                .map_err(|err| err.to_string())
                .and_then(|view| endpoint::targets(&view, e));
            match targets {
                Ok(t) => wanted.push((e.clone(), t)),
                Err(err) => {
                    log::error!("reload: service {}: {err}", e.id());
                    failed.push(format!("service {}: {err}", e.id()));
                }
            }
        }
        if !failed.is_empty() {
            log::error!("reload failed: the running configuration stays in force");
            return Err(failed.join("; "));
        }
        // Keep every open endpoint that the new configuration still wants
        // (each one: a service that loses one of its addresses keeps the
        // others open, so they need no new bind while old children hold them).
        let wanted_targets: Vec<&BindTarget> = wanted.iter().flat_map(|(_, t)| t.iter()).collect();
        // A service whose master.cf entry and endpoints are the same, under
        // the same main.cf settings, is kept as it runs: only what changed
        // is recycled.
        let main_unchanged = same_main(&self.config.main, &config.main);
        let old = std::mem::take(&mut self.services);
        let mut kept: HashMap<BindTarget, OwnedFd> = HashMap::new();
        let mut unchanged: Vec<Service> = Vec::new();
        for svc in old {
            if main_unchanged
                && wanted
                    .iter()
                    .any(|(e, t)| same_entry(e, &svc.entry) && *t == svc.targets)
            {
                unchanged.push(svc);
                continue;
            }
            for (t, fd) in self.retire(svc, |t| wanted_targets.contains(&t)) {
                kept.insert(t, fd);
            }
        }
        let mut not_started = Vec::new();
        let mut recycled = 0;
        for (entry, _) in &wanted {
            if let Some(pos) = unchanged.iter().position(|s| same_entry(&s.entry, entry)) {
                let mut svc = unchanged.swap_remove(pos);
                svc.entry = entry.clone();
                self.services.push(svc);
                continue;
            }
            recycled += 1;
            match self.build_service(&config, entry, &mut kept) {
                Ok(svc) => self.services.push(svc),
                Err((_, e)) => {
                    log::error!("reload: {e}; service not started");
                    not_started.push(e);
                }
            }
        }
        for (t, fd) in kept {
            drop(fd);
            endpoint::remove(&t);
        }
        self.config = config;
        // The master's own log lines follow the new syslog_name,
        // maillog_file and syslog_facility from here on (its children read
        // them when they start).
        match postern_common::log::open_sink(
            self.foreground,
            self.config.text(params::MAILLOG_FILE),
            self.config.text(params::SYSLOG_FACILITY),
        ) {
            Ok(s) => {
                postern_common::log::init(self.config.text(params::SYSLOG_NAME), "master", s);
            }
            Err(e) => log::warn!(
                "reload: cannot open maillog_file {}: {e}; logging where it did",
                self.config.text(params::MAILLOG_FILE)
            ),
        }
        let now = Instant::now();
        for i in 0..self.services.len() {
            self.refresh(i, now);
        }
        log::info!(
            "reload: done, {} service(s), {recycled} new or recycled",
            self.services.len()
        );
        if not_started.is_empty() {
            Ok(format!(
                "reloaded: {} service(s), {recycled} new or recycled",
                self.services.len()
            ))
        } else {
            Err(format!(
                "reloaded, but not started: {}",
                not_started.join("; ")
            ))
        }
    }

    /// `postern reload SERVICE`: new children for one service (by name or
    /// `name/type`) under the running configuration; its endpoints stay open.
    fn recycle(&mut self, name: &str) -> Result<String, String> {
        if self.stop.is_some() {
            return Err("the master is stopping".into());
        }
        let Some(i) = self
            .services
            .iter()
            .position(|s| s.entry.name == name || s.id() == name)
        else {
            return Err(format!("no running service {name}"));
        };
        let svc = self.services.remove(i);
        let entry = svc.entry.clone();
        let mut kept: HashMap<BindTarget, OwnedFd> =
            self.retire(svc, |_| true).into_iter().collect();
        let config = self.config.clone();
        let result = self.build_service(&config, &entry, &mut kept);
        for (t, fd) in kept {
            drop(fd);
            endpoint::remove(&t);
        }
        match result {
            Ok(svc) => {
                self.services.insert(i, svc);
                self.refresh(i, Instant::now());
                log::info!("reload: service {} recycled", entry.id());
                Ok(format!("recycled service {}", entry.id()))
            }
            Err((_, e)) => {
                log::error!("reload: {e}; service not started");
                Err(e)
            }
        }
    }

    fn begin_stop(&mut self, immediate: bool) {
        let grace = if immediate {
            Duration::ZERO
        } else {
            self.config.time(params::SHUTDOWN_TIMEOUT)
        };
        let deadline = Instant::now() + grace;
        match &mut self.stop {
            Some(s) => {
                s.deadline = s.deadline.min(deadline);
                return;
            }
            None => self.stop = Some(Stop { deadline }),
        }
        notify(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("stopping"),
        ]);
        log::info!(
            "{}: no new connections; {} child(ren) get up to {}s to finish",
            if immediate { "abort" } else { "stop" },
            self.services
                .iter()
                .map(|s| s.children.len())
                .sum::<usize>(),
            grace.as_secs()
        );
        for svc in std::mem::take(&mut self.services) {
            self.retire(svc, |_| false);
        }
    }

    fn finish(&mut self) {
        if !self.retired.is_empty() {
            log::warn!("stop: killing {} child(ren) still busy", self.retired.len());
        }
        for pid in self.retired.keys() {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        sweep_descendants();
        self.retired.clear();
        for (_, mut c) in self.control_clients.drain() {
            let _ = self.poll.registry().deregister(c.stream());
        }
        if let Some(c) = self.control.take() {
            drop(c);
            let _ = std::fs::remove_file(&self.paths.control);
        }
        log::info!("stopped");
    }
}

/// Whether two main.cf files set the same values (lines may have moved).
fn same_main(a: &postern_conf::MainCf, b: &postern_conf::MainCf) -> bool {
    let pairs = |m: &postern_conf::MainCf| -> Vec<(String, String)> {
        m.entries
            .iter()
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    };
    pairs(a) == pairs(b)
}

/// Whether two master.cf entries say the same (lines may have moved).
fn same_entry(a: &ServiceEntry, b: &ServiceEntry) -> bool {
    let mut b = b.clone();
    b.line = a.line;
    *a == b
}

/// Receives one status datagram with the sender's pid (SO_PASSCRED).
fn recv_with_sender(fd: &OwnedFd, buf: &mut [u8]) -> nix::Result<(usize, Option<i32>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, UnixAddr, UnixCredentials};
    let mut cmsg = nix::cmsg_space!(UnixCredentials);
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<UnixAddr>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT,
    )?;
    let mut sender = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmCredentials(cred) = c {
                sender = Some(cred.pid());
            }
        }
    }
    if msg.bytes == 0 && sender.is_none() {
        return Err(nix::errno::Errno::EAGAIN);
    }
    Ok((msg.bytes, sender))
}

/// Kills every remaining descendant (children, and commands orphaned to us as
/// the subreaper) with its process group, and reaps them all.
fn sweep_descendants() {
    /// A process that does not die within this (stuck in the kernel) is
    /// left behind with a log line rather than hang the stop for ever.
    const SWEEP_LIMIT: Duration = Duration::from_secs(10);
    let deadline = Instant::now() + SWEEP_LIMIT;
    let me = std::process::id() as i32;
    let my_group = nix::unistd::getpgrp().as_raw();
    for _ in 0..100 {
        // Reap what is already dead, then deal with the living.
        while let Ok(status) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        let children: Vec<(i32, i32)> = proc_children(me)
            .into_iter()
            .filter(|(pid, _)| !is_zombie(*pid))
            .collect();
        if children.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            log::error!(
                "stop: {} process(es) did not die within {}s of SIGKILL: {:?}",
                children.len(),
                SWEEP_LIMIT.as_secs(),
                children.iter().map(|(p, _)| *p).collect::<Vec<_>>()
            );
            break;
        }
        for (pid, pgid) in &children {
            if *pgid > 1 && *pgid != my_group {
                let _ = kill(Pid::from_raw(-*pgid), Signal::SIGKILL);
            }
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        for (pid, _) in &children {
            let left = deadline.saturating_duration_since(Instant::now());
            if postern_sys::wait::process_exit_within(*pid, left) {
                let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
            }
        }
    }
    while let Ok(s) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Whether `pid` is a zombie (dead, waiting to be reaped).
fn is_zombie(pid: i32) -> bool {
    postern_sys::procfs::stat(pid).is_some_and(|s| s.zombie())
}

/// (pid, process group) of every process whose parent is `parent`.
fn proc_children(parent: i32) -> Vec<(i32, i32)> {
    postern_sys::procfs::pids()
        .into_iter()
        .filter_map(|pid| {
            postern_sys::procfs::stat(pid)
                .filter(|s| s.ppid == parent)
                .map(|s| (pid, s.pgrp))
        })
        .collect()
}

/// The services of `config` that the master runs: postern provides the
/// program and supports the type.
fn startable(config: &Config) -> Vec<&ServiceEntry> {
    config
        .master
        .services
        .iter()
        .filter(|s| programs::find(&s.command).is_some() && check::supported_type(s.kind))
        .collect()
}

fn describe(source: &Source) -> String {
    match source {
        Source::Dir(d) => format!("configuration directory {}", d.display()),
        Source::Embedded(_) => "embedded default configuration".to_string(),
    }
}

/// A status channel: the master's end (non-blocking) and the child's end
/// (at a descriptor number at or above FIRST_FREE_FD).
fn status_channel() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    let high = |fd: OwnedFd| -> nix::Result<OwnedFd> {
        if fd.as_raw_fd() >= FIRST_FREE_FD {
            return Ok(fd);
        }
        sys::dup_at_least(fd.as_fd(), FIRST_FREE_FD)
    };
    let child = high(b)?;
    // The kernel attaches each sender's pid to what the master reads.
    nix::sys::socket::setsockopt(&a, nix::sys::socket::sockopt::PassCred, &true)?;
    // The child's end blocks: children write records without MSG_DONTWAIT races.
    nix::fcntl::fcntl(
        child.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_RDWR),
    )?;
    Ok((a, child))
}
