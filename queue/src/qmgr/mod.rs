//! The queue manager: moves new messages from `incoming` to `active`,
//! routes their recipients ([`crate::route`]), hands deliveries to the local
//! service (message descriptor attached, [`postern_common::handoff`]),
//! records each outcome in the queue file, defers with growing intervals,
//! and bounces.
//!
//! **Process.** A persistent master-managed daemon (master.cf: `qmgr fifo
//! n - n 300 1 qmgr`) running as the mail owner. Its fifo is poked by
//! submit (`I`: new mail), by `postern queue flush` (`F`: retry everything
//! deferred now), and by the master's wakeup timer (`W`). One thread owns
//! all state; a watcher thread turns fifo bytes and the master's
//! end-of-file into events, and each handoff runs in a thread of its own
//! that reports back.
//!
//! **Scheduling.** Deliveries of one message to one destination (for local:
//! one user) go in one request. Destinations take turns (round robin); at
//! most `local_destination_concurrency_limit` (default 2) requests per
//! destination run at once, and at most the transport's window, which
//! starts at `initial_destination_concurrency` and grows by one per
//! completed exchange up to `default_destination_concurrency_limit`. An
//! exchange with the agent that fails halves the window of its destination
//! only (which then grows back by one per completed exchange), as Postfix
//! applies concurrency feedback per destination: one user whose deliveries
//! time out slows that user's mail, not everyone's. A transport's next hop
//! (smtp's relay or domain) starts at `initial_destination_concurrency`
//! and grows by one per exchange up to `<service>_destination_concurrency_limit`;
//! a site failure the agent reports halves it, and one at a concurrency
//! of one makes the destination dead for `minimal_backoff_time` (its mail
//! deferred without an attempt). A delivery to a transport carries at most
//! `<service>_destination_recipient_limit` recipients.
//!
//! **Retries.** A message with deferred recipients goes to `deferred`, its
//! mtime set to the next attempt: now plus its age, at least
//! `minimal_backoff_time` and at most `maximal_backoff_time` (so intervals
//! grow). `deferred` is scanned every `queue_run_delay` and when the next
//! retry is due. Past `maximal_queue_lifetime`, what is still deferred
//! bounces with its last reason.
//!
//! **Crash safety.** Before a handoff, each delivery is recorded as in
//! flight; after, as delivered, deferred or bounced (see
//! [`crate::queuefile`]). A queue manager that restarts finds messages left
//! in `active` and retries only what is not final; a delivery that was in
//! flight is marked uncertain, and local then looks for the earlier copy
//! before writing (so a kill -9 at any moment neither loses nor, for
//! mailboxes and Maildirs, duplicates a message). A deferral whose outcome
//! is not known (a failed exchange, or a status local marks `uncertain`: a
//! delivery process that died or was given up) leaves the delivery in
//! flight too.
//!
//! **Duplicates.** Deliveries that two recipients of one message expand
//! to (the same key and final address: two aliases for one user, a
//! `.forward` naming another local user) are made once, for the first;
//! `duplicate_filter_limit` bounds what is remembered per message (0: no
//! limit).
//!
//! **Layout.** This module holds the state, the setup and the event loop;
//! [`scan`] takes messages into `active` and routes them into jobs,
//! [`schedule`] picks the next destination and holds the windows,
//! [`exchange`] runs the handoffs and records the statuses, [`retire`]
//! ends an attempt (expiry, notifications, removal or deferral), and
//! [`delays`] formats the delays logged.

mod delays;
mod exchange;
mod retire;
mod scan;
mod schedule;

use std::collections::{HashMap, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use postern_common::handoff::{self, Instruction, RecipientStatus};
use postern_common::server::{Channel, Context, Daemon, Privileges, Program, Request};
use postern_conf::{params, Config, ServiceType};

use crate::queuefile::{self, QueueFile, Updater};
use crate::route::Router;

/// The skeleton's description of qmgr.
pub const PROGRAM: Program = Program {
    name: "qmgr",
    privileges: Privileges::Unprivileged,
    ipc_timeout: false,
};

/// Runs the queue manager (called by `postern-qmgr`'s main).
pub fn run() -> i32 {
    postern_common::server::run_persistent(PROGRAM, Qmgr::setup)
}

/// The queue manager's trigger fifo, relative to `queue_directory`.
pub const TRIGGER: &str = "public/qmgr";

/// Writes `what` to the queue manager's trigger endpoint (`I` new mail,
/// `F` flush) without blocking: a fifo (`qmgr fifo ...` in master.cf), or
/// a unix socket (`qmgr unix ...`, as in Postfix's stock master.cf), where
/// the trigger is one short connection. A full fifo already holds a
/// wake-up and counts as success. An error means no queue manager is
/// listening.
pub fn poke(queue_directory: &Path, what: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = queue_directory.join(TRIGGER);
    let mut fifo = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        // ENXIO: a socket (or a fifo without a reader).
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            use std::os::unix::fs::FileTypeExt;
            if !std::fs::symlink_metadata(&path)?.file_type().is_socket() {
                return Err(e);
            }
            // A full backlog already holds wake-ups.
            return match postern_common::server::trigger_unix(&path, what) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
                r => r,
            };
        }
        Err(e) => return Err(e),
    };
    match fifo.write_all(what) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
        r => r,
    }
}

pub use retire::backoff;
pub use schedule::{DestWindows, Window};

#[derive(Debug)]
struct Settings {
    queue: PathBuf,
    local_socket: PathBuf,
    myhostname: String,
    min_backoff: Duration,
    max_backoff: Duration,
    run_delay: Duration,
    lifetime: Duration,
    dest_limit: usize,
    /// Messages per exchange with local.
    batch_limit: usize,
    active_limit: usize,
    notice_recipient: String,
    owner_uid: u32,
    exchange_timeout: Duration,
    /// Deliveries remembered per message by the duplicate filter.
    duplicate_filter_limit: usize,
    /// `initial_destination_concurrency`: where a remote destination starts.
    initial_concurrency: usize,
}

#[derive(Debug, Clone)]
struct Item {
    rcpt: usize,
    key: String,
    instr: Instruction,
}

#[derive(Debug, Clone)]
struct Job {
    id: String,
    dest: String,
    /// The agent's socket.
    socket: PathBuf,
    items: Vec<Item>,
    /// When it was handed to the agent.
    handed: Option<Instant>,
}

impl Job {
    /// Whether every delivery of the job writes a mailbox or a Maildir.
    fn files_only(&self) -> bool {
        self.items.iter().all(|i| {
            matches!(
                i.instr.destination,
                handoff::Destination::Mailbox(_) | handoff::Destination::Maildir(_)
            )
        })
    }
}

enum Event {
    Trigger(Vec<u8>),
    MasterGone,
    /// An exchange is over: its jobs, and per job the statuses (or why
    /// the exchange failed).
    Done(Vec<Job>, Result<Vec<Vec<RecipientStatus>>, String>),
}

#[derive(Debug)]
struct Msg {
    qf: QueueFile,
    updater: Updater,
    path: PathBuf,
    outstanding: usize,
    keys: Vec<Vec<String>>,
    /// When this attempt took it into the active queue.
    started: Instant,
    /// The same, as seconds since the epoch (for `delays=`).
    started_at: f64,
}

/// The queue manager's state.
pub struct Qmgr {
    s: Settings,
    config: Config,
    router: Router,
    active: HashMap<String, Msg>,
    queues: HashMap<String, VecDeque<Job>>,
    ring: VecDeque<String>,
    busy: HashMap<String, usize>,
    /// Concurrency limit per destination.
    limits: HashMap<String, usize>,
    in_flight: usize,
    window: Window,
    dest_windows: DestWindows,
    /// The remote destinations' slow start, back-off and dead times.
    remotes: schedule::Remotes,
    tx: Sender<Event>,
    rx: Receiver<Event>,
    next_deferred_scan: Instant,
    incoming_waiting: bool,
    incoming: VecDeque<String>,
}

/// New messages taken into `active` per turn of the event loop.
const LOAD_BATCH: usize = 32;

impl std::fmt::Debug for Qmgr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmgr")
            .field("active", &self.active.len())
            .field("in_flight", &self.in_flight)
            .finish()
    }
}

fn int_param(config: &Config, name: &str, default: usize) -> usize {
    config
        .raw(name)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

impl Qmgr {
    /// The concurrency limit of destination `dest`.
    fn dest_limit(&self, dest: &str) -> usize {
        self.limits.get(dest).copied().unwrap_or(self.s.dest_limit)
    }

    fn setup(ctx: &Context) -> Result<Qmgr, String> {
        let c = &ctx.config;
        let queue = PathBuf::from(c.text(params::QUEUE_DIRECTORY));
        let int = |name| usize::try_from(c.int(name)).unwrap_or(1).max(1);
        let s = Settings {
            local_socket: queue.join("private/local"),
            queue,
            myhostname: c.text(params::MYHOSTNAME).to_string(),
            min_backoff: c.time(params::MINIMAL_BACKOFF_TIME),
            max_backoff: c.time(params::MAXIMAL_BACKOFF_TIME),
            run_delay: c.time(params::QUEUE_RUN_DELAY).max(Duration::from_secs(1)),
            lifetime: c.time(params::MAXIMAL_QUEUE_LIFETIME),
            dest_limit: int(params::LOCAL_DESTINATION_CONCURRENCY_LIMIT),
            batch_limit: int(params::LOCAL_DELIVERY_BATCH_LIMIT),
            active_limit: int(params::QMGR_MESSAGE_ACTIVE_LIMIT),
            notice_recipient: c.text(params::BOUNCE_NOTICE_RECIPIENT).to_string(),
            owner_uid: ctx.mail_owner.uid,
            exchange_timeout: c.time(params::IPC_TIMEOUT),
            duplicate_filter_limit: usize::try_from(c.int(params::DUPLICATE_FILTER_LIMIT))
                .unwrap_or(0),
            initial_concurrency: int(params::INITIAL_DESTINATION_CONCURRENCY),
        };
        if s.batch_limit > handoff::MAX_BATCH {
            log::warn!(
                "{} = {} exceeds the handoff protocol's {}; using {}",
                params::LOCAL_DELIVERY_BATCH_LIMIT,
                s.batch_limit,
                handoff::MAX_BATCH,
                handoff::MAX_BATCH
            );
        }
        let s = Settings {
            batch_limit: s.batch_limit.min(handoff::MAX_BATCH),
            ..s
        };
        let router = Router::load(c);
        for p in &router.problems {
            log::warn!("{p}");
        }
        let (tx, rx) = mpsc::channel();
        let initial = int(params::INITIAL_DESTINATION_CONCURRENCY);
        let max = int(params::DEFAULT_DESTINATION_CONCURRENCY_LIMIT);
        Ok(Qmgr {
            s,
            config: c.clone(),
            router,
            active: HashMap::new(),
            queues: HashMap::new(),
            ring: VecDeque::new(),
            busy: HashMap::new(),
            limits: HashMap::new(),
            in_flight: 0,
            window: Window {
                size: initial.min(max),
                max,
            },
            dest_windows: DestWindows::default(),
            remotes: schedule::Remotes::default(),
            tx,
            rx,
            next_deferred_scan: Instant::now(),
            incoming_waiting: false,
            incoming: VecDeque::new(),
        })
    }

    /// Takes `active/.qmgr.lock` (fs2 exclusive lock), waiting for a
    /// previous queue manager to let go of it.
    fn exclusive(&self) -> std::io::Result<std::fs::File> {
        use fs2::FileExt;
        let path = self.dir(queuefile::ACTIVE).join(".qmgr.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)?;
        if file.try_lock_exclusive().is_err() {
            log::info!("waiting for the previous queue manager to finish its deliveries");
            file.lock_exclusive()?;
        }
        Ok(file)
    }

    fn dir(&self, queue: &str) -> PathBuf {
        self.s.queue.join(queue)
    }

    /// Queue ids in `queue`, oldest first (ids sort by arrival).
    fn list(&self, queue: &str) -> Vec<String> {
        let dir = self.dir(queue);
        queuefile::ids_in(&dir).unwrap_or_else(|e| {
            log::warn!("cannot read {}: {e}", dir.display());
            Vec::new()
        })
    }

    fn has_room(&self) -> bool {
        self.active.len() < self.s.active_limit
    }
}

impl Qmgr {
    fn on_trigger(&mut self, bytes: &[u8]) {
        if bytes.contains(&b'F') {
            log::info!("flush: retrying every deferred message now");
            self.scan_deferred(true);
        }
        self.scan_incoming();
        if bytes.contains(&b'W') && Instant::now() >= self.next_deferred_scan {
            self.scan_deferred(false);
        }
    }
}

/// Turns fifo bytes and the master's end-of-file into events.
fn watch(channel: std::sync::Arc<Channel>, kind: ServiceType, tx: Sender<Event>) {
    loop {
        let status = channel.status().as_fd();
        let mut fds = vec![PollFd::new(status, PollFlags::POLLIN)];
        for l in channel.listeners() {
            fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                log::error!("poll: {e}");
                let _ = tx.send(Event::MasterGone);
                return;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] && channel.master_gone() {
            let _ = tx.send(Event::MasterGone);
            return;
        }
        for (i, r) in ready[1..].iter().enumerate() {
            if *r {
                let bytes = match channel.take(kind, i) {
                    Some(Request::Trigger(b)) => b,
                    // A unix trigger endpoint: read what the peer wrote.
                    Some(Request::Stream(fd)) => {
                        // A trigger is written at once: a peer that idles
                        // gets a moment, not the queue manager's attention.
                        postern_sys::wait::read_to_end_within(fd, Duration::from_millis(200), 64)
                            .unwrap_or_default()
                    }
                    None => continue,
                };
                if tx.send(Event::Trigger(bytes)).is_err() {
                    return;
                }
                // Each trigger is one run: the master counts it as a use.
                channel.ran();
            }
        }
    }
}

impl Daemon for Qmgr {
    fn run(mut self, ctx: &Context, channel: Channel) -> i32 {
        if !channel.available() {
            return 0;
        }
        let kind = ctx.args.kind;
        let tx = self.tx.clone();
        let channel = std::sync::Arc::new(channel);
        let watched = std::sync::Arc::clone(&channel);
        if let Err(e) = std::thread::Builder::new()
            .name("trigger".into())
            .spawn(move || watch(watched, kind, tx))
        {
            return postern_common::log::fatal(
                postern_common::sysexits::EX_OSERR,
                format!("cannot start the trigger thread: {e}"),
            );
        }
        // One queue manager at a time: after a reload the previous one may
        // still be finishing its deliveries, and two writers of one queue
        // file would overwrite each other's records.
        let _lock = match self.exclusive() {
            Ok(l) => l,
            Err(e) => {
                return postern_common::log::fatal(
                    postern_common::sysexits::EX_TEMPFAIL,
                    format!("cannot lock the queue: {e}"),
                )
            }
        };
        // Messages a previous queue manager left in active come first.
        for id in self.list(queuefile::ACTIVE) {
            self.load(&id);
        }
        self.scan_incoming();
        self.scan_deferred(false);
        // The first run is done: from here on a death of this process is
        // not a startup failure (the master does not throttle qmgr for it).
        channel.ran();
        let mut gone: Option<Instant> = None;
        loop {
            if gone.is_none() {
                self.dispatch();
            }
            if let Some(since) = gone {
                if self.in_flight == 0 || since.elapsed() > Duration::from_secs(10) {
                    return 0;
                }
            }
            let wait = if gone.is_some() {
                Duration::from_millis(200)
            } else if self.incoming_waiting && self.has_room() {
                Duration::ZERO
            } else {
                self.next_deferred_scan
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
            };
            let mut triggers: Vec<u8> = Vec::new();
            match self.rx.recv_timeout(wait) {
                Ok(ev) => {
                    let mut events = vec![ev];
                    events.extend(self.rx.try_iter());
                    for ev in events {
                        match ev {
                            Event::Trigger(b) => triggers.extend(b),
                            Event::MasterGone => {
                                if gone.is_none() {
                                    log::info!(
                                        "the master let go: finishing {} deliveries in progress",
                                        self.in_flight
                                    );
                                }
                                gone.get_or_insert_with(Instant::now);
                            }
                            Event::Done(job, result) => self.complete(job, result),
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return 0,
            }
            if gone.is_some() {
                continue;
            }
            if !triggers.is_empty() || (self.incoming_waiting && self.has_room()) {
                self.on_trigger(&triggers);
            }
            if Instant::now() >= self.next_deferred_scan {
                self.scan_deferred(false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mailbox_and_maildir_jobs_go_together() {
        let job = |dests: Vec<handoff::Destination>| Job {
            id: "Q".into(),
            dest: "local:ann".into(),
            socket: PathBuf::new(),
            handed: None,
            items: dests
                .into_iter()
                .map(|destination| Item {
                    rcpt: 0,
                    key: String::new(),
                    instr: Instruction {
                        recipient: "ann@localhost".into(),
                        original_recipient: None,
                        user: "ann".into(),
                        extension: None,
                        destination,
                        uncertain: false,
                    },
                })
                .collect(),
        };
        let mbox = handoff::Destination::Mailbox("/var/mail/ann".into());
        let maildir = handoff::Destination::Maildir("/home/ann/Maildir/".into());
        let program = handoff::Destination::Programs(vec!["/usr/bin/true".into()]);
        assert!(job(vec![mbox.clone(), maildir.clone()]).files_only());
        assert!(!job(vec![mbox, program.clone()]).files_only());
        assert!(!job(vec![program]).files_only());
    }
}
