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
//! time out slows that user's mail, not everyone's.
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use postern_common::handoff::{self, DeliveryRequest, Instruction, Outcome, RecipientStatus};
use postern_common::server::{Channel, Context, Daemon, Privileges, Program, Request};
use postern_conf::{params, Config, ServiceType};

use crate::bounce::{self, Audience, FailedRecipient, Report};
use crate::queuefile::{self, Class, Envelope, FormatError, QueueFile, Updater, Writer};
use crate::route::{Route, Router};
use postern_common::log::rfc5322_date;

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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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

/// The retry delay for a message of age `age`: the age, clamped.
pub fn backoff(age: Duration, min: Duration, max: Duration) -> Duration {
    age.clamp(min, max.max(min))
}

/// The transport window: grows by one per good exchange, halves on a
/// failed one, between 1 and `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Current size.
    pub size: usize,
    /// Upper bound.
    pub max: usize,
}

impl Window {
    /// After an exchange: `ok` is whether the agent answered.
    pub fn feedback(&mut self, ok: bool) {
        self.size = if ok {
            (self.size + 1).min(self.max)
        } else {
            (self.size / 2).max(1)
        };
    }
}

/// The windows of the destinations whose exchanges failed, until they are
/// back at their limit (a destination not listed may use its whole limit).
#[derive(Debug, Default)]
pub struct DestWindows(HashMap<String, Window>);

impl DestWindows {
    /// How many requests `dest` (concurrency limit `limit`) may have running.
    pub fn allowed(&self, dest: &str, limit: usize) -> usize {
        self.0.get(dest).map_or(limit, |w| w.size.min(limit))
    }

    /// After an exchange for `dest`: `ok` is whether the agent answered.
    pub fn feedback(&mut self, dest: &str, limit: usize, ok: bool) {
        match self.0.get_mut(dest) {
            Some(w) => {
                w.feedback(ok);
                if w.size >= w.max {
                    self.0.remove(dest);
                }
            }
            None if !ok => {
                let mut w = Window {
                    size: limit,
                    max: limit,
                };
                w.feedback(false);
                self.0.insert(dest.to_string(), w);
            }
            None => {}
        }
    }
}

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

/// Seconds since the epoch, with fractions.
fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A delay as Postfix logs it: whole seconds from 10 s, else at most two
/// decimals, `0` below 0.01 s.
fn fmt_delay(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs >= 10.0 {
        format!("{secs:.0}")
    } else if secs >= 0.01 {
        let t = format!("{secs:.2}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        "0".to_string()
    }
}

/// `delay=T, delays=a/b/c/d` as Postfix logs them: `T` from the message's
/// arrival (across deferrals) to now; `a` before this attempt took the
/// message into the active queue, `b` in the active queue until it was
/// handed to the agent, `c` (connection setup) 0, `d` in the agent.
fn delay_fields(arrival: u64, started_at: f64, in_active: Duration, in_agent: Duration) -> String {
    let now = now_f64();
    #[allow(clippy::cast_precision_loss)]
    let arrival = arrival as f64;
    format!(
        "delay={}, delays={}/{}/0/{}",
        fmt_delay(now - arrival),
        fmt_delay(started_at - arrival),
        fmt_delay(in_active.as_secs_f64()),
        fmt_delay(in_agent.as_secs_f64())
    )
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

    /// Moves a message into `active` and starts on it.
    fn activate(&mut self, from: &str, id: &str) {
        let src = self.dir(from).join(id);
        let dst = self.dir(queuefile::ACTIVE).join(id);
        if let Err(e) = std::fs::rename(&src, &dst) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("{id}: cannot move from {from} to active: {e}");
            }
            return;
        }
        self.load(id);
    }

    /// Takes up to [`LOAD_BATCH`] new messages into `active`; the rest
    /// wait for the next turn of the loop, so deliveries start while a big
    /// incoming queue is still being read.
    fn scan_incoming(&mut self) {
        self.incoming_waiting = false;
        // Once per batch, not per message: a stat of each routing table.
        self.reload_router_if_changed();
        if self.incoming.is_empty() {
            self.incoming = self.list(queuefile::INCOMING).into();
        }
        let mut taken = 0;
        while taken < LOAD_BATCH && self.has_room() {
            let Some(id) = self.incoming.pop_front() else {
                break;
            };
            self.activate(queuefile::INCOMING, &id);
            taken += 1;
        }
        // Taking some means there may be more (new arrivals are listed when
        // this list runs out).
        // (A bounce queued meanwhile has set it already.)
        self.incoming_waiting |= !self.incoming.is_empty() || taken == LOAD_BATCH;
    }

    /// Removes what dead writers left in `incoming` (see
    /// [`queuefile::remove_stale_temporaries`]).
    fn remove_stale_temporaries(&self) {
        let dir = self.dir(queuefile::INCOMING);
        for name in queuefile::remove_stale_temporaries(&dir, queuefile::STALE_TEMPORARY_AGE) {
            log::info!(
                "removed {}: a temporary whose writer is gone (nothing of it was queued)",
                dir.join(name).display()
            );
        }
    }

    fn scan_deferred(&mut self, all: bool) {
        self.remove_stale_temporaries();
        self.reload_router_if_changed();
        let now = SystemTime::now();
        let dir = self.dir(queuefile::DEFERRED);
        let mut earliest: Option<SystemTime> = None;
        for id in self.list(queuefile::DEFERRED) {
            let due = match std::fs::metadata(dir.join(&id)).and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if !all && due > now {
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
                continue;
            }
            if !self.has_room() {
                break;
            }
            self.activate(queuefile::DEFERRED, &id);
        }
        let mut next = Instant::now() + self.s.run_delay;
        if let Some(e) = earliest {
            let wait = e.duration_since(now).unwrap_or_default();
            next = next.min(Instant::now() + wait);
        }
        self.next_deferred_scan = next;
    }

    fn reload_router_if_changed(&mut self) {
        if self.router.stale() {
            self.router = Router::load(&self.config);
            log::info!("routing tables changed: reloaded");
            for p in &self.router.problems {
                log::warn!("{p}");
            }
        }
    }

    fn quarantine(&self, id: &str, why: &str) {
        let src = self.dir(queuefile::ACTIVE).join(id);
        let dst = self.dir(queuefile::CORRUPT).join(id);
        log::error!("{id}: {why}; moved to the corrupt queue");
        if let Err(e) = std::fs::rename(&src, &dst) {
            log::error!("{id}: cannot move to the corrupt queue: {e}");
        }
    }

    /// Reads a message in `active`, routes it, and queues its deliveries.
    fn load(&mut self, id: &str) {
        let path = self.dir(queuefile::ACTIVE).join(id);
        let qf = match QueueFile::read(&path) {
            Ok(q) => q,
            Err(FormatError::Bad(why)) => return self.quarantine(id, &why),
            Err(FormatError::Io(e)) => {
                log::warn!("{id}: cannot read the queue file: {e}");
                return;
            }
        };
        if qf.id != id {
            return self.quarantine(id, &format!("the file says it is {}", qf.id));
        }
        let updater = Updater::open(&path);
        log::info!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            qf.envelope.sender,
            qf.message_size,
            qf.pending().count()
        );
        let mut msg = Msg {
            keys: vec![Vec::new(); qf.recipients.len()],
            qf,
            updater,
            path,
            outstanding: 0,
            started: Instant::now(),
            started_at: now_f64(),
        };
        // (destination, agent socket, concurrency limit, items)
        let mut jobs: Vec<(String, PathBuf, usize, Vec<Item>)> = Vec::new();
        let pending: Vec<(usize, String)> = msg
            .qf
            .pending()
            .map(|(i, r)| (i, r.address.clone()))
            .collect();
        // The duplicate filter: a delivery that an earlier recipient of the
        // message already makes (the same key for the same final address,
        // as when two aliases name one user) is made once. At most
        // duplicate_filter_limit deliveries are remembered.
        let mut made: HashMap<(String, String), usize> = HashMap::new();
        for (idx, address) in pending {
            let mut seen = HashSet::new();
            for d in self.router.resolve(&address) {
                if !seen.insert(d.key.clone()) {
                    continue;
                }
                if let Some(recipient) = d.route.recipient() {
                    let made_for = (d.key.clone(), recipient.to_string());
                    if let Some(&first) = made.get(&made_for) {
                        if first != idx {
                            log::info!(
                                "{id}: <{address}>: the delivery to {} is already made for <{}>: not repeated",
                                recipient,
                                msg.qf.recipients[first].address
                            );
                            continue;
                        }
                    } else if self.s.duplicate_filter_limit == 0
                        || made.len() < self.s.duplicate_filter_limit
                    {
                        made.insert(made_for, idx);
                    }
                }
                msg.keys[idx].push(d.key.clone());
                if msg.qf.is_final(idx, &d.key) {
                    continue;
                }
                let uncertain = msg.qf.in_flight.contains(&(idx, d.key.clone()));
                let key = d.key;
                let (dest, socket, limit, mut instr) = match d.route {
                    Route::Local(instr) => (
                        format!("local:{}", instr.user),
                        self.s.local_socket.clone(),
                        self.s.dest_limit,
                        instr,
                    ),
                    Route::Transport { service, instr } => {
                        let limit = int_param(
                            &self.config,
                            &format!("{service}_destination_concurrency_limit"),
                            self.window.max,
                        )
                        .max(1);
                        let nexthop = match &instr.destination {
                            handoff::Destination::Transport { nexthop } => nexthop.clone(),
                            _ => String::new(),
                        };
                        (
                            format!("{service}:{nexthop}"),
                            self.s.queue.join("private").join(&service),
                            limit,
                            instr,
                        )
                    }
                    Route::Bounce { dsn, reason } => {
                        log::info!(
                            "{id}: to=<{address}>, relay=none, {}, dsn={dsn}, status=bounced ({reason})",
                            delay_fields(msg.qf.envelope.arrival, msg.started_at, msg.started.elapsed(), Duration::ZERO)
                        );
                        if let Err(e) =
                            msg.updater
                                .bounced(&mut msg.qf, idx, &key, &dsn, false, &reason)
                        {
                            log::error!("{id}: cannot record a bounce: {e}");
                        }
                        continue;
                    }
                    Route::Defer { dsn, reason } => {
                        log::info!(
                            "{id}: to=<{address}>, relay=none, {}, dsn={dsn}, status=deferred ({reason})",
                            delay_fields(msg.qf.envelope.arrival, msg.started_at, msg.started.elapsed(), Duration::ZERO)
                        );
                        if let Err(e) = msg.updater.deferred(&mut msg.qf, idx, &key, &dsn, &reason)
                        {
                            log::error!("{id}: cannot record a deferral: {e}");
                        }
                        continue;
                    }
                };
                instr.uncertain = uncertain;
                // The queue file's recipient, before alias and .forward
                // expansion: the agent's X-Original-To: and $ORIGINAL_RECIPIENT.
                instr.original_recipient = Some(address.clone());
                let item = Item {
                    rcpt: idx,
                    key,
                    instr,
                };
                match jobs.iter_mut().find(|(d, ..)| *d == dest) {
                    Some((.., items)) => items.push(item),
                    None => jobs.push((dest, socket, limit, vec![item])),
                }
            }
        }
        msg.outstanding = jobs.len();
        msg.updater.close();
        self.active.insert(id.to_string(), msg);
        if jobs.is_empty() {
            self.finish(id);
            return;
        }
        for (dest, socket, limit, items) in jobs {
            self.limits.insert(dest.clone(), limit);
            let q = self.queues.entry(dest.clone()).or_default();
            if q.is_empty() && !self.ring.contains(&dest) {
                self.ring.push_back(dest.clone());
            }
            q.push_back(Job {
                id: id.to_string(),
                dest,
                socket,
                items,
                handed: None,
            });
        }
    }

    /// Starts deliveries while the window and the destinations allow.
    fn dispatch(&mut self) {
        while self.in_flight < self.window.size && !self.ring.is_empty() {
            let mut started = false;
            for _ in 0..self.ring.len() {
                let Some(dest) = self.ring.pop_front() else {
                    break;
                };
                let busy = self.busy.get(&dest).copied().unwrap_or(0);
                if busy >= self.dest_windows.allowed(&dest, self.dest_limit(&dest)) {
                    self.ring.push_back(dest);
                    continue;
                }
                // Local takes what waits for one user in one exchange (the
                // backlog, not a wait for more): one delivery process, one
                // lock and one fsync for all of it. Only mailbox and
                // Maildir deliveries go together: programs take their own
                // time, each with its own time limit, so they go alone.
                let take = if dest.starts_with("local:") {
                    self.s.batch_limit
                } else {
                    1
                };
                let jobs: Vec<Job> = match self.queues.get_mut(&dest) {
                    Some(q) => {
                        let files = q.iter().take(take).take_while(|j| j.files_only()).count();
                        q.drain(..files.max(1).min(q.len())).collect()
                    }
                    None => Vec::new(),
                };
                if self.queues.get(&dest).is_some_and(|q| !q.is_empty()) {
                    self.ring.push_back(dest.clone());
                } else {
                    self.queues.remove(&dest);
                }
                if !jobs.is_empty() {
                    self.start(jobs);
                    started = true;
                    break;
                }
            }
            if !started {
                break;
            }
        }
    }

    /// Starts one exchange with the agent for `jobs` (one destination).
    fn start(&mut self, jobs: Vec<Job>) {
        let mut batch: Vec<(Job, DeliveryRequest, std::fs::File)> = Vec::new();
        for mut job in jobs {
            let Some(msg) = self.active.get_mut(&job.id) else {
                continue;
            };
            job.handed = Some(Instant::now());
            for item in &job.items {
                if let Err(e) = msg.updater.in_flight(&mut msg.qf, item.rcpt, &item.key) {
                    log::warn!("{}: cannot record a delivery in flight: {e}", job.id);
                }
            }
            // A description of the queue file of this exchange's own: the
            // lock it carries to the agent (handoff::lock_for_exchange)
            // must not be shared with any other exchange or the updater.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&msg.path);
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    // This job fails on its own, as an exchange of its own.
                    let why = format!("cannot open the queue file for the agent: {e}");
                    *self.busy.entry(job.dest.clone()).or_default() += 1;
                    self.in_flight += 1;
                    let _ = self.tx.send(Event::Done(vec![job], Err(why)));
                    continue;
                }
            };
            let request = DeliveryRequest {
                queue_id: job.id.clone(),
                sender: msg.qf.envelope.sender.clone(),
                arrival: msg.qf.envelope.arrival,
                message_offset: msg.qf.message_offset,
                message_size: Some(msg.qf.message_size),
                recipients: job.items.iter().map(|i| i.instr.clone()).collect(),
            };
            batch.push((job, request, file));
        }
        let Some((first, ..)) = batch.first() else {
            return;
        };
        *self.busy.entry(first.dest.clone()).or_default() += 1;
        self.in_flight += 1;
        let socket = first.socket.clone();
        let timeout = self.s.exchange_timeout;
        let tx = self.tx.clone();
        // Kept to account for the jobs if the thread cannot start.
        let spare: Vec<Job> = batch.iter().map(|(job, ..)| job.clone()).collect();
        let spawned = std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || {
                // Deliveries whose outcome is unknown wait for every
                // earlier attempt on their message to be over (a delivery
                // process may outlive the queue manager that started it).
                let locked = batch.iter().try_for_each(|(_, r, f)| {
                    let exclusive = r.recipients.iter().any(|i| i.uncertain);
                    handoff::lock_for_exchange(f, exclusive)
                        .map_err(|e| format!("{}: {e}", r.queue_id))
                });
                let batch: Vec<(Job, DeliveryRequest, OwnedFd)> = batch
                    .into_iter()
                    .map(|(j, r, f)| (j, r, OwnedFd::from(f)))
                    .collect();
                let messages: Vec<(&DeliveryRequest, &OwnedFd)> =
                    batch.iter().map(|(_, r, f)| (r, f)).collect();
                let result = match locked {
                    Ok(()) => handoff::deliver_batch(&socket, &messages, timeout)
                        .map(|replies| replies.into_iter().map(|r| r.statuses).collect())
                        .map_err(|e| format!("delivery agent exchange failed: {e}")),
                    Err(e) => Err(e),
                };
                drop(messages);
                let jobs = batch.into_iter().map(|(job, ..)| job).collect();
                let _ = tx.send(Event::Done(jobs, result));
            });
        if let Err(e) = spawned {
            log::error!("cannot start a handoff thread: {e}");
            // Nothing was handed over: the jobs end as a failed exchange
            // (deferred, retried later) instead of staying in flight.
            self.complete(spare, Err(format!("cannot start a handoff thread: {e}")));
        }
    }

    /// An exchange is over: the window and the destination's count, then
    /// each job's outcome.
    fn complete(&mut self, jobs: Vec<Job>, result: Result<Vec<Vec<RecipientStatus>>, String>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let ok = result.is_ok();
        if let Some(job) = jobs.first() {
            if let Some(b) = self.busy.get_mut(&job.dest) {
                *b = b.saturating_sub(1);
            }
            let limit = self.dest_limit(&job.dest);
            self.dest_windows.feedback(&job.dest, limit, ok);
        }
        if ok {
            self.window.feedback(true);
        }
        match result {
            Ok(per_job) => {
                for (job, statuses) in jobs.into_iter().zip(per_job) {
                    self.record(job, Ok(statuses));
                }
            }
            Err(why) => {
                for job in jobs {
                    self.record(job, Err(why.clone()));
                }
            }
        }
    }

    /// Records one job's outcome in its queue file; the message's attempt
    /// ends with its last job.
    fn record(&mut self, job: Job, result: Result<Vec<RecipientStatus>, String>) {
        // Without a reply the outcome is unknown (the agent may have
        // delivered before it died): the deliveries stay uncertain.
        let unknown = result.is_err();
        let Some(msg) = self.active.get_mut(&job.id) else {
            return;
        };
        let statuses = result.unwrap_or_else(|why| {
            job.items
                .iter()
                .map(|_| RecipientStatus::deferred("4.3.0", why.clone()))
                .collect()
        });
        let handed = job.handed.unwrap_or(msg.started);
        let delays = delay_fields(
            msg.qf.envelope.arrival,
            msg.started_at,
            handed.saturating_duration_since(msg.started),
            handed.elapsed(),
        );
        let relay = job.dest.split(':').next().unwrap_or("local");
        // Postfix's local or pipe delivery agent would log this line.
        let agent = if relay == "local" {
            postern_common::log::AS_LOCAL
        } else {
            postern_common::log::AS_PIPE
        };
        for (item, st) in job.items.iter().zip(statuses) {
            let orig = &msg.qf.recipients[item.rcpt].address;
            let word = match st.outcome {
                Outcome::Delivered => "sent",
                Outcome::Deferred => "deferred",
                Outcome::Bounced => "bounced",
            };
            let orig_note = if orig == &item.instr.recipient {
                String::new()
            } else {
                format!(", orig_to=<{orig}>")
            };
            log::info!(
                target: agent,
                "{}: to=<{}>{orig_note}, relay={relay}, {delays}, dsn={}, status={word} ({})",
                job.id,
                item.instr.recipient,
                st.dsn,
                st.reason
            );
            let (u, qf) = (&mut msg.updater, &mut msg.qf);
            let recorded = match st.outcome {
                Outcome::Delivered => u.delivered(qf, item.rcpt, &item.key),
                Outcome::Deferred => u.deferred(qf, item.rcpt, &item.key, &st.dsn, &st.reason),
                Outcome::Bounced => u.bounced(
                    qf,
                    item.rcpt,
                    &item.key,
                    &st.dsn,
                    st.notify_postmaster,
                    &st.reason,
                ),
            };
            let recorded = recorded.and_then(|()| {
                if unknown || st.uncertain {
                    msg.updater.in_flight(&mut msg.qf, item.rcpt, &item.key)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = recorded {
                log::error!(
                    "{}: cannot record the outcome for <{}>: {e}",
                    job.id,
                    item.instr.recipient
                );
            }
        }
        msg.outstanding = msg.outstanding.saturating_sub(1);
        if msg.outstanding > 0 {
            msg.updater.close();
        }
        if msg.outstanding == 0 {
            let id = job.id.clone();
            self.finish(&id);
        }
    }

    /// The attempt is over: mark done recipients, report failures, then
    /// remove the message or defer it.
    fn finish(&mut self, id: &str) {
        let Some(mut msg) = self.active.remove(id) else {
            return;
        };
        // msg.qf is the file as read at load, with every record since applied.
        let now = now_secs();
        let age = Duration::from_secs(now.saturating_sub(msg.qf.envelope.arrival));
        let expired = age > self.s.lifetime;
        let mut all_done = true;
        for idx in 0..msg.qf.recipients.len() {
            if msg.qf.recipients[idx].state != queuefile::RcptState::Pending {
                continue;
            }
            let address = msg.qf.recipients[idx].address.clone();
            let open: Vec<String> = msg.keys[idx]
                .iter()
                .filter(|k| !msg.qf.is_final(idx, k))
                .cloned()
                .collect();
            if !open.is_empty() && !expired {
                all_done = false;
                continue;
            }
            for k in &open {
                let (dsn, reason) = msg.qf.delays.get(&(idx, k.clone())).map_or(
                    (
                        "4.4.7".to_string(),
                        "no delivery attempt finished".to_string(),
                    ),
                    |d| (d.dsn.clone(), d.reason.clone()),
                );
                let dsn = format!("5{}", dsn.get(1..).unwrap_or(".4.7"));
                let reason = format!("delivery time expired: {reason}");
                log::info!("{id}: to=<{address}>, status=expired ({dsn} {reason})");
                if let Err(e) = msg
                    .updater
                    .bounced(&mut msg.qf, idx, k, &dsn, false, &reason)
                {
                    log::error!("{id}: cannot record an expiry: {e}");
                }
            }
            if let Err(e) = msg.updater.recipient_done(&mut msg.qf, idx) {
                log::error!("{id}: cannot mark <{address}> done: {e}");
            }
        }
        let unreported: Vec<usize> = (0..msg.qf.failures.len())
            .filter(|&i| !msg.qf.failures[i].reported)
            .collect();
        let mut reported_all = true;
        if !unreported.is_empty() {
            let failures: Vec<&queuefile::Failure> =
                unreported.iter().map(|&i| &msg.qf.failures[i]).collect();
            match self.notify(&msg.qf, &failures) {
                Ok(()) => {
                    for i in unreported {
                        if let Err(e) = msg.updater.failure_reported(&mut msg.qf, i) {
                            log::error!("{id}: cannot mark a failure reported: {e}");
                        }
                    }
                }
                Err(e) => {
                    log::error!(
                        "{id}: cannot queue the delivery status notification: {e}; will try again"
                    );
                    reported_all = false;
                }
            }
        }
        if all_done && reported_all {
            match std::fs::remove_file(&msg.path) {
                Ok(()) => log::info!("{id}: removed"),
                Err(e) => log::error!("{id}: cannot remove the queue file: {e}"),
            }
        } else {
            self.defer(id, &msg, age);
        }
    }

    fn defer(&mut self, id: &str, msg: &Msg, age: Duration) {
        let delay = backoff(age, self.s.min_backoff, self.s.max_backoff);
        let due = SystemTime::now() + delay;
        let set = std::fs::File::options()
            .write(true)
            .open(&msg.path)
            .and_then(|f| f.set_modified(due));
        if let Err(e) = set {
            log::warn!("{id}: cannot set the retry time: {e}");
        }
        let dst = self.dir(queuefile::DEFERRED).join(id);
        match std::fs::rename(&msg.path, &dst) {
            Ok(()) => log::info!("{id}: deferred; next attempt in {}s", delay.as_secs()),
            Err(e) => log::error!("{id}: cannot move to the deferred queue: {e}"),
        }
        let at = Instant::now() + delay;
        if at < self.next_deferred_scan {
            self.next_deferred_scan = at;
        }
    }

    /// Queues the notifications the failures call for.
    fn notify(&mut self, qf: &QueueFile, failures: &[&queuefile::Failure]) -> std::io::Result<()> {
        let id = &qf.id;
        let headers = read_headers(&self.dir(queuefile::ACTIVE).join(id), qf)?;
        let list: Vec<FailedRecipient> = failures
            .iter()
            .map(|f| FailedRecipient {
                original: qf.recipients[f.rcpt].address.clone(),
                delivery: f.key.clone(),
                dsn: f.dsn.clone(),
                reason: f.reason.clone(),
            })
            .collect();
        let report = Report {
            host: &self.s.myhostname,
            queue_id: id,
            sender: &qf.envelope.sender,
            arrival: qf.envelope.arrival,
            headers: &headers,
            failures: &list,
            now: now_secs(),
        };
        let postmaster_copy = failures.iter().any(|f| f.notify);
        match (qf.envelope.class, qf.envelope.sender.is_empty()) {
            (Class::Normal, false) => {
                let new = self.queue_notice(
                    &report,
                    &qf.envelope.sender.clone(),
                    Audience::Sender,
                    Class::Bounce,
                )?;
                log::info!(target: postern_common::log::AS_BOUNCE, "{id}: sender non-delivery notification: {new}");
                if postmaster_copy {
                    let to = self.s.notice_recipient.clone();
                    let new =
                        self.queue_notice(&report, &to, Audience::Postmaster, Class::DoubleBounce)?;
                    log::info!(target: postern_common::log::AS_BOUNCE, "{id}: postmaster notification: {new}");
                }
            }
            (Class::DoubleBounce, _) => {
                log::warn!("{id}: a postmaster notification could not be delivered: discarded");
            }
            _ => {
                // A bounce (or null-sender mail) is never bounced: the postmaster hears of it.
                let to = self.s.notice_recipient.clone();
                let new =
                    self.queue_notice(&report, &to, Audience::Postmaster, Class::DoubleBounce)?;
                log::info!(target: postern_common::log::AS_BOUNCE, "{id}: undeliverable notification; postmaster notified: {new}");
            }
        }
        self.incoming_waiting = true;
        Ok(())
    }

    fn queue_notice(
        &self,
        report: &Report<'_>,
        to: &str,
        audience: Audience,
        class: Class,
    ) -> std::io::Result<String> {
        let new_id = queuefile::new_queue_id();
        let now = now_secs();
        let envelope = Envelope {
            arrival: now,
            sender: String::new(),
            uid: self.s.owner_uid,
            class,
        };
        let mut w = Writer::create(&self.dir(queuefile::INCOMING), &new_id, &envelope)?;
        w.write_message(
            format!(
                "Received: by {} (postern, from userid {})\n\tid {new_id}; {}\n",
                self.s.myhostname,
                self.s.owner_uid,
                rfc5322_date(now)
            )
            .as_bytes(),
        )?;
        w.write_message(&bounce::compose(report, to, audience, &new_id))?;
        w.finish(&[to.to_string()])
    }

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

fn read_headers(path: &Path, qf: &QueueFile) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let n = usize::try_from(qf.message_size.min(64 * 1024)).unwrap_or(64 * 1024);
    let mut buf = vec![0u8; n];
    let got = f.read_at(&mut buf, qf.message_offset)?;
    buf.truncate(got);
    Ok(bounce::header_block(&buf).to_vec())
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
    fn delays_as_postfix_writes_them() {
        assert_eq!(fmt_delay(0.004), "0");
        assert_eq!(fmt_delay(-1.0), "0");
        assert_eq!(fmt_delay(0.5), "0.5");
        assert_eq!(fmt_delay(1.234), "1.23");
        assert_eq!(fmt_delay(2.0), "2");
        assert_eq!(fmt_delay(3601.4), "3601");
        let arrival = now_secs() - 100;
        #[allow(clippy::cast_precision_loss)]
        let f = delay_fields(
            arrival,
            arrival as f64 + 90.0,
            Duration::from_millis(20),
            Duration::from_secs(1),
        );
        assert!(f.starts_with("delay=10"), "{f}");
        assert!(f.ends_with(", delays=90/0.02/0/1"), "{f}");
    }

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

    #[test]
    fn backoff_grows_with_age_within_bounds() {
        let (min, max) = (Duration::from_secs(300), Duration::from_secs(4000));
        assert_eq!(backoff(Duration::ZERO, min, max), min);
        assert_eq!(
            backoff(Duration::from_secs(1000), min, max),
            Duration::from_secs(1000)
        );
        assert_eq!(backoff(Duration::from_secs(99_999), min, max), max);
    }

    #[test]
    fn window_feedback() {
        let mut w = Window { size: 5, max: 7 };
        w.feedback(true);
        w.feedback(true);
        w.feedback(true);
        assert_eq!(w.size, 7);
        w.feedback(false);
        assert_eq!(w.size, 3);
        for _ in 0..5 {
            w.feedback(false);
        }
        assert_eq!(w.size, 1);
    }

    #[test]
    fn a_failed_exchange_slows_its_destination_only() {
        let mut d = DestWindows::default();
        assert_eq!(d.allowed("local:ann", 4), 4);
        d.feedback("local:ann", 4, false);
        assert_eq!(d.allowed("local:ann", 4), 2);
        assert_eq!(d.allowed("local:bob", 4), 4);
        d.feedback("local:ann", 4, false);
        d.feedback("local:ann", 4, false);
        assert_eq!(d.allowed("local:ann", 4), 1);
        // It grows back by one per answered exchange, then is forgotten.
        d.feedback("local:ann", 4, true);
        assert_eq!(d.allowed("local:ann", 4), 2);
        d.feedback("local:ann", 4, true);
        d.feedback("local:ann", 4, true);
        assert_eq!(d.allowed("local:ann", 4), 4);
        assert!(d.0.is_empty());
        // Good exchanges of a destination in good standing change nothing.
        d.feedback("local:bob", 4, true);
        assert!(d.0.is_empty());
    }
}
