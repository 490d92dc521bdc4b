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
//! **Layout**: this module holds the entry point, startup and the event
//! loop; each concern has its own module: [`services`] (a service's state,
//! building and retiring one), [`children`] (reaping, exits, status
//! records, forking on demand), [`launcher`] (starting one child),
//! [`status`] (`postern status` and STATUS=), [`control`] (the control
//! socket), [`wakeup`] (timers and wakeups), [`reload`] (the reload and its
//! pure [`reload::plan`]) and [`stop`].
//!
//! **Exit status**: 0 after a stop; 1 when the instance (or its queue) is
//! already in use; 71 on a system error (an endpoint's address in use);
//! 73 when maillog_file cannot be opened; 77 when not root; 78 on a
//! configuration error (including no syslog, no maillog_file and not in
//! the foreground).

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::net::UnixListener;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use postern_common::account::{self, Account};
use postern_common::status::FIRST_FREE_FD;
use postern_common::sysexits;
use postern_conf::{params, Config, ServicesFile, Source};
use postern_sys as sys;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use crate::control_server::Client;
use crate::lifecycle;
use postern_common::check;
use postern_common::instance::{self, LockError, Paths, PidLock};

mod children;
mod control;
mod launcher;
mod prepare;
mod reload;
mod services;
mod status;
mod stop;
mod wakeup;

use services::{startable, Service};

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
    // Until main.cf is read: the default syslog_name.
    postern_common::log::init(
        params::default::SYSLOG_NAME,
        "master",
        postern_common::log::Sink::Stderr,
    );
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
    // A Postfix instance: prepared as `postfix start` prepares it, and
    // data_directory/master.lock held as Postfix's master holds it.
    prepare::postfix_instance(&config)?;
    let data_lock = if config.postfix_instance() {
        match instance::lock_postfix_data(&config, &owner) {
            Ok(l) => Some(l),
            Err(LockError::Running(holder)) => {
                return Err((
                    1,
                    format!("the Postfix instance is already running ({holder})"),
                ))
            }
            Err(LockError::Io(e)) => return Err((sysexits::EX_OSERR, e)),
        }
    } else {
        None
    };
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| (sysexits::EX_OSERR, format!("PR_SET_CHILD_SUBREAPER: {e}")))?;
    Master::new(opts, config, &owner, paths, (lock, queue_lock, data_lock))
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

#[derive(Debug, Clone, Copy)]
enum Target {
    Status(u32),
    Listen(u32),
    /// A Postfix daemon's standard error, by pid.
    Stderr(i32),
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
    /// The instance's pid lock, its queue directory's lock and, in a
    /// Postfix instance, `data_directory/master.lock`.
    _lock: (PidLock, PidLock, Option<PidLock>),
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
    /// Postfix's flow-control pipe (read end, write end), one for every
    /// Postfix daemon; the master never reads or writes it.
    flow: (OwnedFd, OwnedFd),
    /// The generation of the next Postfix daemon forked (unique per fork).
    next_fork_generation: u32,
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
        lock: (PidLock, PidLock, Option<PidLock>),
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
            flow: flow_pipe().map_err(|e| os(e, "flow-control pipe"))?,
            next_fork_generation: 1,
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
        let load = svc.load(stopping, now);
        if let Some(stress) = svc.stress {
            if let Some(next) = lifecycle::busy_warning(stress, load, now) {
                svc.stress = Some(next);
                // The first line is Postfix's master's, word for word:
                // log watchers look for it.
                log::warn!(
                    "service \"{}\" ({}) has reached its process limit \"{}\": new clients may experience noticeable delays",
                    svc.entry.name,
                    crate::postfix::endpoint_name(&svc.entry.endpoint),
                    svc.limit.unwrap_or(0)
                );
                log::warn!(
                    "service {}: raise its process limit (maxproc in master.cf) or shorten the time each client takes; see Postfix's STRESS_README for settings that adapt under stress",
                    svc.id()
                );
            }
        }
        let want = lifecycle::should_listen(load);
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
                        Some(Target::Stderr(pid)) => self.on_stderr(pid),
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
}

/// Postfix's flow-control pipe: non-blocking, close-on-exec, both ends
/// above the fixed child descriptors.
fn flow_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)?;
    let high = |fd: OwnedFd| -> nix::Result<OwnedFd> {
        if fd.as_raw_fd() >= FIRST_FREE_FD {
            return Ok(fd);
        }
        sys::dup_at_least(fd.as_fd(), FIRST_FREE_FD)
    };
    Ok((high(r)?, high(w)?))
}

fn describe(source: &Source) -> String {
    match source {
        Source::Dir(d) => format!("configuration directory {}", d.display()),
        Source::Embedded(_) => "embedded default configuration".to_string(),
    }
}
