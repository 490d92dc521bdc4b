//! The submit service and its protocol: how `postern sendmail` hands a
//! message to the queue.
//!
//! **Protocol, version 2** ([`SUBMIT_VERSION`]). A unix stream connection
//! to `queue_directory/public/submit`. Frames are `postern_common::frame`'s
//! (a 4-byte big-endian length and a postcard payload of at most
//! `frame::MAX_FRAME` bytes); both payloads start with the version.
//!
//! 1. The client sends one [`SubmitRequest`] frame (the envelope).
//! 2. The service answers one [`SubmitReply`]: [`Answer::Ready`] (with its
//!    `submit_input_timeout`, so the client knows how often to keep the
//!    connection alive), or
//!    [`Answer::Refused`] and it closes. It may refuse before it reads the
//!    request (too many submissions in progress from that uid: 4.7.0).
//! 3. The client sends the message as chunks: a frame's length prefix
//!    (1 to [`MAX_CHUNK`]), then that many message bytes;
//!    [`KEEPALIVE`] (`0xFFFFFFFF`, no bytes) while it waits for its own
//!    input; and finally [`END_OF_MESSAGE`] (a length of 0). A longer chunk
//!    is a protocol error.
//! 4. The service answers one [`SubmitReply`]: [`Answer::Queued`] with the
//!    queue id once the message is durable in `incoming` (file and
//!    directory fsynced), or [`Answer::Refused`]; then it closes.
//!
//! **Guarantee.** Nothing is queued without its end-of-message chunk: a
//! connection that ends, fails, or sends nothing for `submit_input_timeout`
//! (each read) before it leaves its temporary file removed and the log
//! line `submission from uid U pid P aborted before the end of the
//! message: ...; nothing queued`. After a refusal nothing stays either.
//! So a client that has not sent the end of the message knows the message
//! is not queued; one that sent it and got no answer cannot know (the
//! service may have died after the rename): `postern sendmail` says so.
//!
//! **Limits.** At most `submit_client_connection_count_limit` connections
//! of one uid are served at once (root and the mail owner are exempt): each
//! holds an `flock` on one of the files `queue_directory/slots/<uid>.<n>`,
//! shared by every submit process and released when its process ends; a
//! connection that finds every slot of its uid taken is answered 4.7.0 and
//! closed at once, so a flood costs a submit process milliseconds per
//! connection. Every read of the client waits at most
//! `submit_input_timeout`.
//!
//! **Trust.** The submitting user is the peer's uid (`SO_PEERCRED`), not
//! anything the client says; it is recorded in the queue file and in the
//! `Received:` header submit puts first in the message. The client's
//! envelope is checked (addresses without white space or control
//! characters, at least one recipient, at most [`MAX_RECIPIENTS`]);
//! recipients named more than once are kept once (the first spelling;
//! compared ignoring ASCII case; at most `duplicate_filter_limit` addresses
//! remembered), and the message may not exceed `message_size_limit`.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use postern_common::account;
use postern_common::frame::{self, FrameError};
use postern_common::handoff;
use postern_common::server::{Context, Handler, Privileges, Program, Request};
use postern_conf::params;
use serde::{Deserialize, Serialize};

use crate::queuefile::{self, Class, Envelope, Writer};
use postern_common::log::rfc5322_date;

/// Version carried in both kinds of frame.
pub const SUBMIT_VERSION: u16 = 2;
/// The most recipients one submission may name.
pub const MAX_RECIPIENTS: usize = 10_000;
/// The largest message chunk (bytes).
pub const MAX_CHUNK: u32 = 64 * 1024;
/// The chunk length that ends the message.
pub const END_OF_MESSAGE: u32 = 0;
/// The chunk length that carries nothing: the client is waiting for input.
pub const KEEPALIVE: u32 = u32::MAX;
/// Where the per-uid slots are, under `queue_directory`.
pub const SLOTS: &str = "slots";

/// The envelope a client submits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// [`SUBMIT_VERSION`].
    pub version: u16,
    /// The envelope sender; `None`: the submitting user's own address;
    /// `Some("")`: the null sender.
    pub sender: Option<String>,
    /// The recipients.
    pub recipients: Vec<String>,
}

/// Why a submission was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    /// Enhanced status code: 4.x.y (try again) or 5.x.y (do not).
    pub dsn: String,
    /// What happened.
    pub text: String,
}

/// What the service says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The envelope is accepted: send the message, at least one chunk (a
    /// keepalive at worst) every `input_timeout_ms`.
    Ready {
        /// The service's `submit_input_timeout`, in milliseconds.
        input_timeout_ms: u64,
    },
    /// The message is queued under this id.
    Queued(String),
    /// Not queued, and why.
    Refused(Refusal),
}

/// The service's answer frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// [`SUBMIT_VERSION`].
    pub version: u16,
    /// The answer.
    pub answer: Answer,
}

/// The skeleton's description of submit (it sets its own, shorter, timeouts).
pub const PROGRAM: Program = Program {
    name: "submit",
    privileges: Privileges::Unprivileged,
    ipc_timeout: false,
};

/// Runs the submit service (called by `postern-submit`'s main).
pub fn run() -> i32 {
    postern_common::server::run(PROGRAM, Submit::setup)
}

/// The per-uid limit on submissions in progress, shared by every submit
/// process through `flock`ed slot files.
#[derive(Debug)]
struct UidSlots {
    dir: PathBuf,
    limit: usize,
    exempt: [u32; 2],
    warned: bool,
}

/// A held slot: released when dropped (or when the process ends).
#[derive(Debug)]
struct Slot {
    _file: Option<File>,
}

impl UidSlots {
    /// A slot for `uid`, or `None` when all of its slots are taken.
    fn take(&mut self, uid: u32) -> Option<Slot> {
        if self.limit == 0 || self.exempt.contains(&uid) {
            return Some(Slot { _file: None });
        }
        for n in 0..self.limit {
            let path = self.dir.join(format!("{uid}.{n}"));
            let file = match OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&path)
            {
                Ok(f) => f,
                Err(e) => {
                    // Not limited rather than nobody served.
                    if !self.warned {
                        self.warned = true;
                        log::warn!(
                            "cannot open the submission slot {}: {e}; submissions of uid {uid} not limited",
                            path.display()
                        );
                    }
                    return Some(Slot { _file: None });
                }
            };
            if fs2::FileExt::try_lock_exclusive(&file).is_ok() {
                return Some(Slot { _file: Some(file) });
            }
        }
        None
    }
}

/// The submit service's state.
#[derive(Debug)]
pub struct Submit {
    incoming: PathBuf,
    queue: PathBuf,
    myhostname: String,
    /// `myorigin`: the domain of the submitting user's address, and of an
    /// envelope sender given without one.
    myorigin: String,
    size_limit: u64,
    input_timeout: Duration,
    duplicate_limit: usize,
    slots: UidSlots,
    /// Whether this process has already said it cannot wake qmgr.
    warned_wake: bool,
}

/// `address`, with `@origin` when it has no domain (and `origin` is set),
/// as Postfix qualifies locally posted addresses with `myorigin`.
pub fn qualified(address: &str, origin: &str) -> String {
    if address.contains('@') || origin.is_empty() {
        address.to_string()
    } else {
        format!("{address}@{origin}")
    }
}

fn refuse(dsn: &str, text: impl Into<String>) -> Refusal {
    Refusal {
        dsn: dsn.into(),
        text: text.into(),
    }
}

/// Why a submission did not end in the queue.
#[derive(Debug)]
enum Failure {
    /// The service said no.
    Refused(Refusal),
    /// The client did not finish (its connection ended, failed or idled
    /// before the end of the message).
    Aborted(String),
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Failure::Refused(r)
    }
}

/// The recipients with repeats removed (the first spelling kept, compared
/// ignoring ASCII case); at most `limit` addresses are remembered (0: no
/// limit), as Postfix's duplicate_filter_limit.
pub fn unique_recipients(recipients: &[String], limit: usize) -> Vec<String> {
    let mut seen: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    for r in recipients {
        let key = r.to_ascii_lowercase();
        if seen.contains(&key) {
            continue;
        }
        if limit == 0 || seen.len() < limit {
            seen.insert(key);
        }
        out.push(r.clone());
    }
    out
}

impl Submit {
    fn setup(ctx: &Context) -> Result<Submit, String> {
        let queue = Path::new(ctx.config.text(params::QUEUE_DIRECTORY));
        let count = |name| usize::try_from(ctx.config.int(name)).unwrap_or(0);
        Ok(Submit {
            incoming: queue.join(queuefile::INCOMING),
            queue: queue.to_path_buf(),
            myhostname: ctx.config.text(params::MYHOSTNAME).to_string(),
            myorigin: ctx.config.text(params::MYORIGIN).trim().to_string(),
            size_limit: u64::try_from(ctx.config.int(params::MESSAGE_SIZE_LIMIT)).unwrap_or(0),
            input_timeout: ctx
                .config
                .time(params::SUBMIT_INPUT_TIMEOUT)
                .max(Duration::from_secs(1)),
            duplicate_limit: count(params::DUPLICATE_FILTER_LIMIT),
            slots: UidSlots {
                dir: queue.join(SLOTS),
                limit: count(params::SUBMIT_CLIENT_CONNECTION_COUNT_LIMIT),
                exempt: [0, ctx.mail_owner.uid],
                warned: false,
            },
            warned_wake: false,
        })
    }

    /// Checks the envelope and works out the sender.
    fn envelope(&self, req: &SubmitRequest, uid: u32) -> Result<String, Refusal> {
        if req.version != SUBMIT_VERSION {
            return Err(refuse(
                "5.5.2",
                format!("unsupported submit protocol version {}", req.version),
            ));
        }
        if req.recipients.is_empty() {
            return Err(refuse("5.5.1", "no recipients"));
        }
        if req.recipients.len() > MAX_RECIPIENTS {
            return Err(refuse(
                "5.5.3",
                format!("more than {MAX_RECIPIENTS} recipients"),
            ));
        }
        for r in &req.recipients {
            queuefile::check_address(r)
                .map_err(|e| refuse("5.1.3", format!("bad recipient: {e}")))?;
        }
        match &req.sender {
            Some(s) if s.is_empty() => Ok(String::new()),
            Some(s) => {
                queuefile::check_address(s)
                    .map_err(|e| refuse("5.1.7", format!("bad sender: {e}")))?;
                Ok(qualified(s, &self.myorigin))
            }
            None => {
                let name = match account::user_by_uid(uid) {
                    Ok(Some(a)) => a.name,
                    _ => format!("uid{uid}"),
                };
                Ok(qualified(&name, &self.myorigin))
            }
        }
    }

    /// Checks the envelope, says Ready, receives the message and stores
    /// it; the queue id once it is durable.
    fn store(&self, conn: &UnixStream, req: &SubmitRequest, uid: u32) -> Result<String, Failure> {
        let sender = self.envelope(req, uid)?;
        let recipients = unique_recipients(&req.recipients, self.duplicate_limit);
        let input_timeout_ms = u64::try_from(self.input_timeout.as_millis()).unwrap_or(u64::MAX);
        send_reply(conn, Answer::Ready { input_timeout_ms })
            .map_err(|e| Failure::Aborted(format!("cannot say ready: {e}")))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let envelope = Envelope {
            arrival: now,
            sender: sender.clone(),
            uid,
            class: Class::Normal,
        };
        let id = queuefile::new_queue_id();
        let store_error = |e: std::io::Error| {
            Failure::Refused(refuse("4.3.0", format!("cannot store the message: {e}")))
        };
        let mut writer = Writer::create(&self.incoming, &id, &envelope).map_err(store_error)?;
        let received = format!(
            "Received: by {} (postern, from userid {uid})\n\tid {id}; {}\n",
            self.myhostname,
            rfc5322_date(now)
        );
        writer
            .write_message(received.as_bytes())
            .map_err(store_error)?;
        let mut buf = vec![0u8; MAX_CHUNK as usize];
        let mut head = HeadScan::default();
        let mut reader = conn;
        let incomplete = |e: FrameError| match e {
            FrameError::Io { source, .. } if timed_out(&source) => {
                Failure::Aborted(format!("no input for {}s", self.input_timeout.as_secs()))
            }
            FrameError::Cut { .. } => Failure::Aborted("the connection ended".to_string()),
            FrameError::Io { source, .. } => Failure::Aborted(format!("cannot read: {source}")),
            e => Failure::Aborted(format!("cannot read: {e}")),
        };
        loop {
            let len = frame::read_length(&mut reader, CLIENT).map_err(incomplete)?;
            if len == END_OF_MESSAGE {
                break;
            }
            if len == KEEPALIVE {
                continue;
            }
            if len > MAX_CHUNK {
                return Err(Failure::Refused(refuse(
                    "5.5.2",
                    format!("bad submission: a chunk of {len} bytes (at most {MAX_CHUNK})"),
                )));
            }
            let chunk = &mut buf[..len as usize];
            frame::read_exact(&mut reader, chunk, CLIENT).map_err(incomplete)?;
            if self.size_limit > 0
                && writer.size() + u64::from(len) > self.size_limit + received.len() as u64
            {
                return Err(Failure::Refused(refuse(
                    "5.3.4",
                    format!(
                        "message exceeds message_size_limit ({} bytes)",
                        self.size_limit
                    ),
                )));
            }
            head.feed(chunk);
            writer.write_message(chunk).map_err(store_error)?;
        }
        let size = writer.size();
        let id = writer.finish(&recipients).map_err(store_error)?;
        let repeats = req.recipients.len() - recipients.len();
        // The lines Postfix's pickup and cleanup would log, for log readers.
        log::info!(target: postern_common::log::AS_PICKUP, "{id}: uid={uid} from=<{sender}>");
        if let Some(mid) = head.message_id() {
            log::info!(target: postern_common::log::AS_CLEANUP, "{id}: message-id={mid}");
        }
        log::info!(
            "{id}: size={size}, nrcpt={}{}",
            recipients.len(),
            if repeats > 0 {
                format!(" ({repeats} repeated recipients dropped)")
            } else {
                String::new()
            }
        );
        Ok(id)
    }

    /// Tells the queue manager there is new mail (best effort: it also
    /// scans the incoming queue on its own timer).
    fn wake_qmgr(&mut self) {
        // Once per process: mail waits in incoming either way.
        if let Err(e) = crate::qmgr::poke(&self.queue, b"I") {
            if !self.warned_wake {
                self.warned_wake = true;
                log::warn!(
                    "cannot wake the queue manager at {}: {e} (is the qmgr service in master.cf?); mail waits in incoming",
                    self.queue.join(crate::qmgr::TRIGGER).display()
                );
            }
        }
    }
}

/// The start of a message, kept up to the end of its header block (at most
/// [`HeadScan::LIMIT`] bytes) to find its `Message-ID:`.
#[derive(Debug, Default)]
struct HeadScan {
    bytes: Vec<u8>,
    done: bool,
}

impl HeadScan {
    /// The most header bytes kept.
    const LIMIT: usize = 64 * 1024;

    fn feed(&mut self, chunk: &[u8]) {
        if self.done {
            return;
        }
        let room = Self::LIMIT - self.bytes.len();
        let from = self.bytes.len().saturating_sub(1);
        self.bytes
            .extend_from_slice(&chunk[..chunk.len().min(room)]);
        if self.bytes.first() == Some(&b'\n') {
            // No header block at all.
            self.bytes.clear();
            self.done = true;
        } else if let Some(p) = self.bytes[from..].windows(2).position(|w| w == b"\n\n") {
            self.bytes.truncate(from + p + 1);
            self.done = true;
        } else if self.bytes.len() >= Self::LIMIT {
            self.done = true;
        }
    }

    /// The `Message-ID:` value (at most 200 characters), if the header
    /// block has one.
    fn message_id(&self) -> Option<String> {
        let block = String::from_utf8_lossy(&self.bytes);
        crate::headers::fields(&block)
            .into_iter()
            .find(|f| f.name.eq_ignore_ascii_case("message-id"))
            .map(|f| f.value.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|v| !v.is_empty())
            .map(|v| v.chars().take(200).collect())
    }
}

/// The client, as the service's errors name it (the log line adds its
/// uid and pid).
const CLIENT: &str = "the client";
/// The service, as the client's errors name it.
const SERVICE: &str = "the submit service";

/// Whether a read failed for want of input within its timeout.
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Sends one answer frame.
fn send_reply(mut conn: &UnixStream, answer: Answer) -> Result<(), FrameError> {
    let reply = SubmitReply {
        version: SUBMIT_VERSION,
        answer,
    };
    frame::send(&mut conn, &reply, CLIENT)
}

impl Handler for Submit {
    fn handle(&mut self, _ctx: &Context, request: Request) {
        let Request::Stream(fd) = request else {
            log::warn!("submit serves stream connections only; trigger ignored");
            return;
        };
        let conn = UnixStream::from(fd);
        let Some(peer) = handoff::peer_credentials(&conn) else {
            return;
        };
        let (uid, pid) = (peer.uid(), peer.pid());
        for r in [
            conn.set_read_timeout(Some(self.input_timeout)),
            conn.set_write_timeout(Some(self.input_timeout)),
        ] {
            if let Err(e) = r {
                log::warn!(
                    "cannot set submit_input_timeout on the connection of uid {uid} pid {pid}: {e}"
                );
            }
        }
        let Some(_slot) = self.slots.take(uid) else {
            log::warn!(
                "refused a submission from uid {uid} pid {pid}: 4.7.0 too many submissions in progress (submit_client_connection_count_limit = {})",
                self.slots.limit
            );
            let _ = send_reply(
                &conn,
                Answer::Refused(refuse(
                    "4.7.0",
                    format!(
                        "too many submissions in progress from uid {uid} (at most {}); try again later",
                        self.slots.limit
                    ),
                )),
            );
            return;
        };
        let result = match read_request(&conn) {
            Ok(req) => self.store(&conn, &req, uid),
            Err(FrameError::Io { source, .. }) if timed_out(&source) => Err(Failure::Aborted(
                format!("no request for {}s", self.input_timeout.as_secs()),
            )),
            Err(e) => {
                log::warn!("bad submission from pid {pid} (uid {uid}): {e}; nothing queued");
                Err(Failure::Refused(refuse(
                    "5.5.2",
                    format!("bad submission: {e}"),
                )))
            }
        };
        let answer = match result {
            Ok(id) => Answer::Queued(id),
            Err(Failure::Refused(r)) => {
                log::warn!(
                    "refused a submission from uid {uid} pid {pid}: {} {}",
                    r.dsn,
                    r.text
                );
                Answer::Refused(r)
            }
            Err(Failure::Aborted(why)) => {
                log::warn!(
                    "submission from uid {uid} pid {pid} aborted before the end of the message: {why}; nothing queued"
                );
                Answer::Refused(refuse(
                    "4.3.0",
                    format!("message incomplete ({why}); not queued"),
                ))
            }
        };
        let queued = matches!(answer, Answer::Queued(_));
        if let Err(e) = send_reply(&conn, answer) {
            if queued {
                log::warn!("cannot answer uid {uid} pid {pid}: {e}");
            }
        }
        if queued {
            self.wake_qmgr();
        }
    }
}

fn read_request(mut conn: &UnixStream) -> Result<SubmitRequest, FrameError> {
    let payload = frame::read(&mut conn, &[], frame::MAX_FRAME, CLIENT)?;
    frame::decode(&payload, CLIENT)
}

/// Why a submission did not end with a queue id, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitError {
    /// The service refused it: not queued.
    Refused(Refusal),
    /// It failed before the end of the message was sent: not queued, and
    /// it will not be (the service commits nothing without it).
    NotQueued(String),
    /// Reading the message failed: not queued.
    Input(String),
    /// The end of the message was sent, but no answer came (the service
    /// died or the connection broke): the message may have been queued.
    Unknown(String),
}

/// Client side timing.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// How long to wait for the service to take the submission and each
    /// part of it, up to the end of the message (`submit_timeout`).
    pub submit_timeout: Duration,
    /// How often at most to tell the service that input is still awaited
    /// (also a third of the `submit_input_timeout` its Ready answer names).
    pub keepalive: Duration,
}

/// What the reading thread hands over.
enum Input {
    Data(Vec<u8>),
    End,
    Failed(std::io::Error),
}

/// Connects to `socket`, waiting at most `timeout` (a full backlog blocks).
fn connect(socket: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd: OwnedFd = socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let tv = nix::sys::time::TimeVal::new(
        i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        i64::from(timeout.subsec_micros()),
    );
    socket::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    let addr = UnixAddr::new(socket)?;
    loop {
        match socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => break,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("not accepted within {}s", timeout.as_secs()),
                ))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(UnixStream::from(fd))
}

/// Reads one answer frame.
fn read_reply(mut conn: &UnixStream) -> Result<Answer, String> {
    let payload =
        frame::read(&mut conn, &[], frame::MAX_FRAME, SERVICE).map_err(|e| e.to_string())?;
    let reply: SubmitReply =
        frame::decode(&payload, SERVICE).map_err(|e| format!("bad reply: {e}"))?;
    if reply.version != SUBMIT_VERSION {
        return Err(format!("reply of protocol version {}", reply.version));
    }
    Ok(reply.answer)
}

/// After a failure before the end of the message: the service's refusal
/// if it sent one, else `NotQueued`.
fn not_queued(conn: &UnixStream, what: String) -> SubmitError {
    match read_reply(conn) {
        Ok(Answer::Refused(r)) => SubmitError::Refused(r),
        _ => SubmitError::NotQueued(what),
    }
}

/// Client side: submits `message` (read to its end, on a thread of its
/// own) for `request` over the socket at `socket`; the queue id, or why
/// not. Until the end of the message is sent every wait is bounded by
/// `submit_timeout`; after it, the answer is awaited without a deadline of
/// our own (the service's decision is bounded by its watchdog, and its
/// death closes the connection).
pub fn submit(
    socket: &Path,
    request: &SubmitRequest,
    message: Box<dyn Read + Send>,
    timing: Timing,
) -> Result<String, SubmitError> {
    let timeout = timing.submit_timeout.max(Duration::from_millis(100));
    let conn = connect(socket, timeout).map_err(|e| {
        SubmitError::NotQueued(format!(
            "cannot connect to the submit service at {}: {e}",
            socket.display()
        ))
    })?;
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let envelope = frame::encode(request).map_err(|e| SubmitError::NotQueued(e.to_string()))?;
    let mut w = &conn;
    if let Err(e) = w.write_all(&envelope) {
        return Err(not_queued(&conn, format!("cannot send the envelope: {e}")));
    }
    let mut keepalive = timing.keepalive;
    match read_reply(&conn) {
        Ok(Answer::Ready { input_timeout_ms }) => {
            keepalive = keepalive.min(Duration::from_millis(input_timeout_ms) / 3);
        }
        Ok(Answer::Refused(r)) => return Err(SubmitError::Refused(r)),
        Ok(Answer::Queued(_)) => {
            return Err(SubmitError::NotQueued(
                "the submit service answered out of turn".into(),
            ))
        }
        Err(e) => {
            return Err(SubmitError::NotQueued(format!(
                "the submit service did not take the message: {e}"
            )))
        }
    }
    let (tx, rx) = mpsc::sync_channel::<Input>(64);
    let reader = std::thread::Builder::new()
        .name("message".into())
        .spawn(move || read_message(message, &tx));
    if let Err(e) = reader {
        return Err(SubmitError::NotQueued(format!(
            "cannot start reading the message: {e}"
        )));
    }
    let keepalive = keepalive.max(Duration::from_millis(100));
    let failed = |e: std::io::Error| SubmitError::Input(format!("cannot read the message: {e}"));
    let gone = || SubmitError::Input("cannot read the message: the reading thread ended".into());
    let mut pending: Vec<u8> = Vec::new();
    let mut chunk: Vec<u8> = Vec::with_capacity(MAX_CHUNK as usize + frame::PREFIX);
    let mut ended = false;
    while !ended {
        // Wait for input, telling the service so while it is slow.
        match rx.recv_timeout(keepalive) {
            Ok(Input::Data(d)) => pending.extend_from_slice(&d),
            Ok(Input::End) => ended = true,
            Ok(Input::Failed(e)) => return Err(failed(e)),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(gone()),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Err(e) = w.write_all(&frame::prefix(KEEPALIVE)) {
                    return Err(not_queued(&conn, format!("cannot send the message: {e}")));
                }
                continue;
            }
        }
        // Whatever else is there already goes in the same chunk.
        while !ended && pending.len() < MAX_CHUNK as usize {
            match rx.try_recv() {
                Ok(Input::Data(d)) => pending.extend_from_slice(&d),
                Ok(Input::End) => ended = true,
                Ok(Input::Failed(e)) => return Err(failed(e)),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Err(gone()),
            }
        }
        for piece in pending.chunks(MAX_CHUNK as usize) {
            chunk.clear();
            // A piece is at most MAX_CHUNK bytes: the cast cannot truncate.
            chunk.extend_from_slice(&frame::prefix(piece.len() as u32));
            chunk.extend_from_slice(piece);
            if let Err(e) = w.write_all(&chunk) {
                return Err(not_queued(&conn, format!("cannot send the message: {e}")));
            }
        }
        pending.clear();
    }
    if let Err(e) = w.write_all(&frame::prefix(END_OF_MESSAGE)) {
        return Err(not_queued(
            &conn,
            format!("cannot send the end of the message: {e}"),
        ));
    }
    // From here on the service decides; wait for it.
    let _ = conn.set_read_timeout(None);
    match read_reply(&conn) {
        Ok(Answer::Queued(id)) => Ok(id),
        Ok(Answer::Refused(r)) => Err(SubmitError::Refused(r)),
        Ok(Answer::Ready { .. }) => Err(SubmitError::Unknown(
            "the submit service answered out of turn".into(),
        )),
        Err(e) => Err(SubmitError::Unknown(format!(
            "no answer from the submit service after the end of the message: {e}"
        ))),
    }
}

/// The reading thread: the message in pieces, then its end or the error.
fn read_message(mut message: Box<dyn Read + Send>, tx: &mpsc::SyncSender<Input>) {
    let mut buf = vec![0u8; MAX_CHUNK as usize];
    loop {
        let item = match message.read(&mut buf) {
            Ok(0) => Input::End,
            Ok(n) => Input::Data(buf[..n].to_vec()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => Input::Failed(e),
        };
        let last = !matches!(item, Input::Data(_));
        if tx.send(item).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_id_is_found_in_the_header_block() {
        let mut h = HeadScan::default();
        h.feed(b"Received: x\nSubject: a\nMessage-");
        h.feed(b"ID:\n <abc@example.org>\n\nMessage-ID: <body@x>\n");
        assert_eq!(h.message_id().as_deref(), Some("<abc@example.org>"));
        let mut h = HeadScan::default();
        h.feed(b"Subject: a\n\nMessage-ID: <body@x>\n");
        assert_eq!(h.message_id(), None);
        let mut h = HeadScan::default();
        h.feed(&vec![b'x'; 100_000]);
        assert_eq!(h.message_id(), None);
        assert!(h.bytes.len() <= HeadScan::LIMIT);
    }

    #[test]
    fn repeated_recipients_are_kept_once() {
        let r: Vec<String> = ["bob", "Bob", "carol", "bob", "BOB@x", "bob@X"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(unique_recipients(&r, 1000), vec!["bob", "carol", "BOB@x"]);
        assert_eq!(unique_recipients(&r, 0), vec!["bob", "carol", "BOB@x"]);
        // Only the first address is remembered.
        assert_eq!(
            unique_recipients(&r, 1),
            vec!["bob", "carol", "BOB@x", "bob@X"]
        );
        let many = vec!["dan".to_string(); 10_000];
        assert_eq!(unique_recipients(&many, 1000), vec!["dan"]);
    }

    #[test]
    fn replies_round_trip_and_bad_frames_are_errors() {
        for answer in [
            Answer::Ready {
                input_timeout_ms: 10_000,
            },
            Answer::Queued("ABC".into()),
            Answer::Refused(refuse("4.7.0", "busy")),
        ] {
            let bytes = frame::encode(&SubmitReply {
                version: SUBMIT_VERSION,
                answer: answer.clone(),
            })
            .unwrap();
            let (a, b) = UnixStream::pair().unwrap();
            (&a).write_all(&bytes).unwrap();
            assert_eq!(read_reply(&b).unwrap(), answer);
        }
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[0, 0, 0, 2, 0xff, 0xff]).unwrap();
        drop(a);
        assert!(read_reply(&b).is_err());
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[0xff, 0, 0, 0]).unwrap();
        assert!(read_reply(&b).is_err());
    }
}
