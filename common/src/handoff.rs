//! The queue↔agent handoff: how the queue manager (or `postern deliver`)
//! tells a delivery agent what to deliver, and hears back what happened.
//!
//! **Transport.** A unix stream connection to the agent's endpoint (e.g.
//! `queue_directory/private/local`). The agent accepts only peers whose uid
//! (`SO_PEERCRED`) is root's or the mail owner's.
//!
//! **Frames.** Each message is one frame of [`crate::frame`]: a 4-byte
//! big-endian length, then that many bytes of postcard-encoded payload. The
//! length is checked against [`MAX_FRAME`] before anything is allocated, on
//! every read. Payloads carry [`PROTOCOL_VERSION`]; a frame of another
//! version is refused.
//!
//! **Exchange.** The client sends one [`RequestFrame`]: one to [`MAX_BATCH`]
//! [`DeliveryRequest`]s (messages), with the open message files attached to
//! its first byte as `SCM_RIGHTS`, one per message in order (agents never
//! open the queue). The agent answers one [`ReplyFrame`]: a [`DeliveryReply`]
//! per message with exactly one [`RecipientStatus`] per recipient, in order,
//! then closes. Several messages in one exchange let an agent deliver them
//! in one go (local: one delivery process, one lock and one fsync per
//! mailbox); each status still means what it says: a copy reported delivered
//! was durable before the reply. A disconnect, a timeout, a malformed or
//! oversize frame, a wrong number of descriptors, or a reply with the wrong
//! number of messages or statuses is never success: [`deliver_batch`] turns
//! it into an error, which the caller counts as a deferral (4.3.0) of every
//! recipient whose outcome is unknown.
//!
//! **Uncertain outcomes.** Whatever is not known for certain is never
//! reported as a plain deferral: a failed exchange, and a status marked
//! `uncertain` (an agent's delivery process that died, was stopped or was
//! given up once it had begun). The queue manager keeps such deliveries in
//! flight, and the retry carries [`Instruction::uncertain`]: the agent looks
//! for the earlier copy (mbox, Maildir) before it writes another. Programs
//! cannot be asked, so program deliveries are at least once.

use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags, UnixAddr};
use serde::{Deserialize, Serialize};

use postern_sys as sys;

pub use crate::frame::MAX_FRAME;
use crate::frame::{self, FrameError};
use crate::mail::MessageFile;

/// The protocol version carried in every payload.
/// Version 5 added [`Instruction::original_recipient`]; version 6
/// [`RecipientStatus::relay`] and [`RecipientStatus::site_failure`];
/// version 7 [`RecipientStatus::conn_use`].
pub const PROTOCOL_VERSION: u16 = 7;
/// The most messages one request frame may carry.
pub const MAX_BATCH: usize = 64;

/// Where a recipient's copy goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// Append to an mbox file.
    Mailbox(PathBuf),
    /// Deliver into a Maildir (the path ends with `/`).
    Maildir(PathBuf),
    /// Pipe to these command lines, in order; each must succeed.
    Programs(Vec<String>),
    /// Whatever the transport the request went to does with it (a pipe
    /// service runs its master.cf command); `nexthop` is transport_maps'
    /// part after the colon.
    Transport {
        /// The next hop, possibly empty.
        nexthop: String,
    },
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Mailbox(p) => write!(f, "mailbox {}", p.display()),
            Destination::Maildir(p) => write!(f, "maildir {}", p.display()),
            Destination::Programs(c) => write!(f, "program {}", c.join(" ; ")),
            Destination::Transport { nexthop } if nexthop.is_empty() => write!(f, "transport"),
            Destination::Transport { nexthop } => write!(f, "transport nexthop {nexthop}"),
        }
    }
}

/// One instruction: deliver to this destination, as this user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// The recipient address (for `Delivered-To:` and `$RECIPIENT`).
    pub recipient: String,
    /// The recipient address as it was given to postern, before alias and
    /// `.forward` expansion (the queue file's recipient; for `X-Original-To:`
    /// and `$ORIGINAL_RECIPIENT`, as Postfix's local(8)). `None`: unknown.
    pub original_recipient: Option<String>,
    /// The account the delivery runs as.
    pub user: String,
    /// The address extension (after `recipient_delimiter`), if any.
    pub extension: Option<String>,
    /// Where to deliver.
    pub destination: Destination,
    /// An earlier attempt may have delivered this copy (the queue manager
    /// stopped before it heard the outcome): the agent first looks for a
    /// copy of this queue id for this recipient at the destination and
    /// reports it delivered instead of writing a second one. Programs cannot
    /// be asked, so they may see such a message twice.
    pub uncertain: bool,
}

/// What the agent is asked to do with one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryRequest {
    /// The queue id (for logs).
    pub queue_id: String,
    /// The envelope sender (empty for the null sender).
    pub sender: String,
    /// Arrival time, seconds since the epoch (for the `From ` line).
    pub arrival: u64,
    /// Where the message starts in the attached file (a queue file holds
    /// its envelope before the message).
    pub message_offset: u64,
    /// The message's length in bytes from `message_offset`; `None`: to the
    /// end of the file.
    pub message_size: Option<u64>,
    /// The recipients.
    pub recipients: Vec<Instruction>,
}

/// A recipient's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Delivered (2.x.y).
    Delivered,
    /// Try again later (4.x.y).
    Deferred,
    /// Failed for good (5.x.y).
    Bounced,
}

/// The result for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecipientStatus {
    /// Delivered, deferred or bounced.
    pub outcome: Outcome,
    /// Enhanced status code (RFC 3463), e.g. `5.7.1`.
    pub dsn: String,
    /// What happened, in words.
    pub reason: String,
    /// The postmaster should hear of this (program delivery failures).
    pub notify_postmaster: bool,
    /// The outcome is not known for certain: a copy may have been written
    /// (a delivery process died, was stopped or given up after it began).
    /// Always deferred; the queue manager records the delivery as in
    /// flight, so that the retry is marked [`Instruction::uncertain`] and
    /// looks for the earlier copy before it writes again.
    pub uncertain: bool,
    /// Where the delivery went, for the log's `relay=` (the smtp agent:
    /// `host[address]:port`); `None`: the transport's name.
    pub relay: Option<String>,
    /// The next hop as a whole failed (no host could be reached, or none
    /// would take a session): the queue manager counts it against the
    /// destination's concurrency and may suspend it for a while.
    pub site_failure: bool,
    /// Which use of a reused connection this delivery was (the log's
    /// `conn_use=`, 2 and up); `None`: the connection's first.
    pub conn_use: Option<u32>,
}

impl RecipientStatus {
    /// Delivered, with a note.
    pub fn delivered(reason: impl Into<String>) -> Self {
        RecipientStatus {
            outcome: Outcome::Delivered,
            dsn: "2.0.0".into(),
            reason: reason.into(),
            notify_postmaster: false,
            uncertain: false,
            relay: None,
            site_failure: false,
            conn_use: None,
        }
    }
    /// Deferred with `dsn` (4.x.y).
    pub fn deferred(dsn: &str, reason: impl Into<String>) -> Self {
        RecipientStatus {
            outcome: Outcome::Deferred,
            dsn: dsn.into(),
            reason: reason.into(),
            notify_postmaster: false,
            uncertain: false,
            relay: None,
            site_failure: false,
            conn_use: None,
        }
    }
    /// Bounced with `dsn` (5.x.y).
    pub fn bounced(dsn: &str, reason: impl Into<String>) -> Self {
        RecipientStatus {
            outcome: Outcome::Bounced,
            dsn: dsn.into(),
            reason: reason.into(),
            notify_postmaster: false,
            uncertain: false,
            relay: None,
            site_failure: false,
            conn_use: None,
        }
    }
    /// Deferred (4.3.0) without knowing whether a copy was written (the
    /// `uncertain` field).
    pub fn unknown(reason: impl Into<String>) -> Self {
        RecipientStatus {
            uncertain: true,
            ..RecipientStatus::deferred("4.3.0", reason)
        }
    }
    /// The same, marked for the postmaster's attention.
    pub fn for_postmaster(mut self) -> Self {
        self.notify_postmaster = true;
        self
    }
    /// The same, saying where the delivery went (`relay=` in the log).
    pub fn via(mut self, relay: impl Into<String>) -> Self {
        self.relay = Some(relay.into());
        self
    }
    /// The same, delivered over a connection used for the `n`th time
    /// (`conn_use=` in the log when `n` is 2 or more).
    pub fn on_use(mut self, n: u32) -> Self {
        self.conn_use = (n > 1).then_some(n);
        self
    }
    /// The same, marked as a failure of the whole next hop.
    pub fn of_site(mut self) -> Self {
        self.site_failure = true;
        self
    }
}

/// The agent's answer for one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryReply {
    /// One per recipient, in request order.
    pub statuses: Vec<RecipientStatus>,
}

/// What goes over the wire from the client: the messages of one exchange.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFrame {
    /// [`PROTOCOL_VERSION`] (first, so that every version can read it).
    pub version: u16,
    /// One to [`MAX_BATCH`] messages; descriptor `i` belongs to message `i`.
    pub messages: Vec<DeliveryRequest>,
}

/// What goes over the wire from the agent: one reply per message, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyFrame {
    /// [`PROTOCOL_VERSION`].
    pub version: u16,
    /// One per message of the request, in order.
    pub replies: Vec<DeliveryReply>,
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoffError {
    /// Reading or writing the connection failed (including timeouts and EOF).
    #[error("{0}")]
    Io(#[from] io::Error),
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    Oversize(u32),
    /// A payload that does not decode.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// Another protocol version.
    #[error("protocol version {0}, expected {PROTOCOL_VERSION}")]
    Version(u16),
    /// The request's descriptors do not match its messages.
    #[error("{got} message file descriptors attached for {want} messages")]
    Descriptors {
        /// Descriptors received.
        got: usize,
        /// Messages in the request.
        want: usize,
    },
    /// A request with no messages, or more than [`MAX_BATCH`].
    #[error("request carries {0} messages; 1 to {MAX_BATCH} are allowed")]
    BatchSize(usize),
    /// The reply does not match the request.
    #[error("reply has {got} statuses for {want} recipients")]
    Mismatch {
        /// Statuses received.
        got: usize,
        /// Recipients sent.
        want: usize,
    },
}

impl From<FrameError> for HandoffError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Cut { .. } => {
                HandoffError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string()))
            }
            FrameError::Io { source, .. } => HandoffError::Io(source),
            FrameError::Oversize { len, .. } => HandoffError::Oversize(len),
            FrameError::TooLarge(len) => {
                HandoffError::Oversize(u32::try_from(len).unwrap_or(u32::MAX))
            }
            FrameError::Malformed { reason, .. } => HandoffError::Malformed(reason),
            FrameError::Unencodable(reason) => HandoffError::Malformed(reason),
        }
    }
}

/// The peer as the handoff's errors name it: the caller knows which
/// agent or client it is and says so in its log line.
const PEER: &str = "the connection";

/// Reads one frame's payload (length checked before allocating).
fn read_frame(r: &mut impl Read, first: &[u8]) -> Result<Vec<u8>, HandoffError> {
    Ok(frame::read(r, first, MAX_FRAME, PEER)?)
}

/// The version a payload starts with.
fn version_of(payload: &[u8]) -> Result<u16, HandoffError> {
    Ok(frame::version_of(payload, PEER)?)
}

/// Decodes a request payload, checking the version and the batch size.
pub fn decode_request(payload: &[u8]) -> Result<RequestFrame, HandoffError> {
    let version = version_of(payload)?;
    if version != PROTOCOL_VERSION {
        return Err(HandoffError::Version(version));
    }
    let req: RequestFrame = frame::decode(payload, PEER)?;
    if req.messages.is_empty() || req.messages.len() > MAX_BATCH {
        return Err(HandoffError::BatchSize(req.messages.len()));
    }
    Ok(req)
}

/// Decodes a reply payload, checking the version.
pub fn decode_reply(payload: &[u8]) -> Result<ReplyFrame, HandoffError> {
    let version = version_of(payload)?;
    if version != PROTOCOL_VERSION {
        return Err(HandoffError::Version(version));
    }
    Ok(frame::decode(payload, PEER)?)
}

/// Agent side: receives a request and the descriptors attached to it, one
/// per message.
pub fn receive_request(conn: &UnixStream) -> Result<Vec<(DeliveryRequest, OwnedFd)>, HandoffError> {
    // A request for one message fits in a few hundred bytes; the rest of a
    // larger frame is read by `read_frame`. On the stack: a large zeroed
    // heap buffer per request costs page faults when the heap shrinks again.
    let mut first = [0u8; 4096];
    let (n, fds) = {
        let received = sys::recv_with_fds::<MAX_BATCH>(
            conn.as_raw_fd(),
            &mut first,
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        if received.flags.contains(MsgFlags::MSG_CTRUNC) {
            return Err(HandoffError::Malformed(format!(
                "more than {MAX_BATCH} descriptors attached"
            )));
        }
        (received.bytes, received.fds)
    };
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "peer closed the connection before a request",
        )
        .into());
    }
    let mut reader = conn;
    let payload = read_frame(&mut reader, &first[..n])?;
    let request = decode_request(&payload)?;
    // Exactly one descriptor per message (they are closed when `fds` drops).
    if fds.len() != request.messages.len() {
        return Err(HandoffError::Descriptors {
            got: fds.len(),
            want: request.messages.len(),
        });
    }
    Ok(request.messages.into_iter().zip(fds).collect())
}

/// Agent side: sends the replies, one per message.
pub fn send_reply(mut conn: &UnixStream, replies: Vec<DeliveryReply>) -> Result<(), HandoffError> {
    let reply = ReplyFrame {
        version: PROTOCOL_VERSION,
        replies,
    };
    conn.write_all(&frame::encode(&reply)?)?;
    Ok(())
}

/// The largest message an agent reads (bytes).
pub const MAX_MESSAGE: u64 = 256 << 20;

/// The peer's credentials of a unix connection, or a log line and `None`.
pub fn peer_credentials(conn: &UnixStream) -> Option<nix::sys::socket::UnixCredentials> {
    match nix::sys::socket::getsockopt(conn, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => Some(c),
        Err(e) => {
            log::warn!("cannot get the peer's credentials: {e}; connection closed");
            None
        }
    }
}

/// The attached message file: `size` bytes (or to the end of the file)
/// from `offset`, at most [`MAX_MESSAGE`], read in place.
pub fn message_file(fd: &OwnedFd, offset: u64, size: Option<u64>) -> io::Result<MessageFile> {
    let message = MessageFile::new(std::fs::File::from(fd.try_clone()?), offset, size)?;
    if message.len() > MAX_MESSAGE {
        return Err(io::Error::other(format!(
            "message of {} bytes exceeds {MAX_MESSAGE}",
            message.len()
        )));
    }
    Ok(message)
}

/// What an agent received: each message left in its file
/// ([`MessageFile`]), to be streamed from there, and the attached
/// descriptors, which the agent keeps open (and its delivery processes
/// inherit) until the deliveries are over: the queue manager's lock on the
/// message lives with them (see [`lock_for_exchange`]).
pub type Accepted = (Vec<(DeliveryRequest, MessageFile)>, Vec<OwnedFd>);

/// Agent side of one exchange, up to the deliveries: the peer must be root
/// or `owner_uid`; then the request frame and the attached message files
/// (at most [`MAX_MESSAGE`] bytes in all), left in place. Every failure is
/// logged (naming the peer) and gives `None`: the connection closes and
/// nothing is delivered.
pub fn accept_request(conn: &UnixStream, owner_uid: u32) -> Option<Accepted> {
    let (peer, messages) = accept_descriptors(conn, owner_uid)?;
    let mut total = 0u64;
    let mut out = Vec::with_capacity(messages.len());
    let mut held = Vec::with_capacity(messages.len());
    for (request, fd) in messages {
        let message =
            message_file(&fd, request.message_offset, request.message_size).and_then(|message| {
                total += message.len();
                if total > MAX_MESSAGE {
                    return Err(io::Error::other(format!(
                        "the request's messages exceed {MAX_MESSAGE} bytes in all"
                    )));
                }
                Ok(message)
            });
        held.push(fd);
        match message {
            Ok(message) => out.push((request, message)),
            Err(e) => {
                log::warn!(
                    "queue id {} (from pid {}): cannot read the message: {e}; nothing delivered",
                    request.queue_id,
                    peer.pid()
                );
                return None;
            }
        }
    }
    Some((out, held))
}

/// Agent side of one exchange, up to the request: the peer must be root
/// or `owner_uid`; then the request frame with its descriptors, for an
/// agent that reads each message from its descriptor as it goes (smtp).
/// Every failure is logged (naming the peer) and gives `None`.
pub fn accept_descriptors(
    conn: &UnixStream,
    owner_uid: u32,
) -> Option<(
    nix::sys::socket::UnixCredentials,
    Vec<(DeliveryRequest, OwnedFd)>,
)> {
    let peer = peer_credentials(conn)?;
    if peer.uid() != 0 && peer.uid() != owner_uid {
        log::warn!(
            "refused a connection from uid {} pid {}: only root and the mail owner may hand over deliveries",
            peer.uid(),
            peer.pid()
        );
        return None;
    }
    match receive_request(conn) {
        Ok(r) => Some((peer, r)),
        Err(e) => {
            log::warn!(
                "bad request from pid {} (uid {}): {e}; connection closed, nothing delivered",
                peer.pid(),
                peer.uid()
            );
            None
        }
    }
}

/// Takes the lock a delivery attempt holds on its message for as long as
/// any process holds the descriptor handed over (the agent, its delivery
/// processes): `flock` on a description of the queue file opened for this
/// exchange alone. An ordinary attempt takes it shared; one that repeats
/// deliveries whose outcome is unknown takes it exclusive, so that it
/// waits until every earlier attempt — a delivery process that outlived a
/// killed queue manager or agent — is over, and only then looks for the
/// copy that attempt may have written. It blocks: an earlier attempt ends
/// within its own time limit (local kills a delivery process at its limit,
/// and what a program left behind at the program's), and the caller is the
/// exchange's own thread.
///
/// Through `fs2` (one of the crates the project's design names) rather than
/// std's `File::lock`, which needs Rust 1.89, above this workspace's
/// `rust-version`; fs2 is unmaintained, but it is a thin `flock(2)` wrapper
/// with nothing left to fix, and it goes once the minimum Rust allows.
pub fn lock_for_exchange(file: &std::fs::File, exclusive: bool) -> io::Result<()> {
    if exclusive {
        fs2::FileExt::lock_exclusive(file)
    } else {
        fs2::FileExt::lock_shared(file)
    }
}

/// Client side: hands one message to the agent at `socket`; see
/// [`deliver_batch`].
pub fn deliver(
    socket: &Path,
    request: &DeliveryRequest,
    message: &OwnedFd,
    timeout: Duration,
) -> Result<DeliveryReply, HandoffError> {
    let mut replies = deliver_batch(socket, &[(request, message)], timeout)?;
    replies
        .pop()
        .ok_or(HandoffError::Mismatch { got: 0, want: 1 })
}

/// Client side: hands `messages` (each request with its open message file)
/// to the agent at `socket` in one exchange, waits at most `timeout` for
/// each read or write, and returns one reply per message, each checked to
/// hold one status per recipient.
pub fn deliver_batch(
    socket: &Path,
    messages: &[(&DeliveryRequest, &OwnedFd)],
    timeout: Duration,
) -> Result<Vec<DeliveryReply>, HandoffError> {
    if messages.is_empty() || messages.len() > MAX_BATCH {
        return Err(HandoffError::BatchSize(messages.len()));
    }
    let conn = UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))?;
    let frame = frame::encode(&RequestFrame {
        version: PROTOCOL_VERSION,
        messages: messages.iter().map(|(r, _)| (*r).clone()).collect(),
    })?;
    let fds: Vec<std::os::fd::RawFd> = messages.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    let sent = sendmsg::<UnixAddr>(
        conn.as_raw_fd(),
        &[IoSlice::new(&frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map_err(io::Error::from)?;
    (&conn).write_all(&frame[sent..])?;
    let mut reader = &conn;
    let payload = read_frame(&mut reader, &[])?;
    let reply = decode_reply(&payload)?;
    if reply.replies.len() != messages.len() {
        return Err(HandoffError::Mismatch {
            got: reply.replies.len(),
            want: messages.len(),
        });
    }
    for (r, (req, _)) in reply.replies.iter().zip(messages) {
        if r.statuses.len() != req.recipients.len() {
            return Err(HandoffError::Mismatch {
                got: r.statuses.len(),
                want: req.recipients.len(),
            });
        }
    }
    Ok(reply.replies)
}

/// The statuses to record when the exchange itself failed: every recipient
/// deferred with 4.3.0 and the reason.
pub fn all_deferred(request: &DeliveryRequest, why: &HandoffError) -> Vec<RecipientStatus> {
    request
        .recipients
        .iter()
        .map(|_| {
            RecipientStatus::deferred("4.3.0", format!("delivery agent exchange failed: {why}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_frame_cut_short_says_so() {
        for cut in [&[0u8, 0][..], &[0, 0, 0, 9, 1, 2][..]] {
            let e = read_frame(&mut &cut[..], &[]).unwrap_err();
            assert_eq!(e.to_string(), "the connection ended mid-frame");
        }
    }

    /// Attempts on one message share its lock; a repeat of uncertain
    /// deliveries waits for every earlier holder, whichever process holds
    /// the descriptor, and gives up at its limit.
    #[test]
    fn an_uncertain_attempt_waits_for_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("Q1");
        std::fs::write(&path, b"message").unwrap();
        let open = || std::fs::File::open(&path).unwrap();
        let (first, second) = (open(), open());
        lock_for_exchange(&first, false).unwrap();
        lock_for_exchange(&second, false).unwrap();
        // What an uncertain attempt would wait for: the earlier ones.
        let retry = open();
        assert!(fs2::FileExt::try_lock_exclusive(&retry).is_err());
        // The descriptor handed on (a delivery process's copy) keeps the
        // lock after the queue manager's own is closed.
        let handed_on = first.try_clone().unwrap();
        drop(first);
        drop(second);
        assert!(fs2::FileExt::try_lock_exclusive(&retry).is_err());
        drop(handed_on);
        lock_for_exchange(&retry, true).unwrap();
        // And while it holds it, no other attempt starts.
        assert!(fs2::FileExt::try_lock_shared(&open()).is_err());
    }
    use super::*;

    fn request() -> DeliveryRequest {
        DeliveryRequest {
            queue_id: "ABC123".into(),
            sender: "ann@example.org".into(),
            arrival: 1_795_245_296,
            message_offset: 0,
            message_size: None,
            recipients: vec![
                Instruction {
                    recipient: "bob@example.org".into(),
                    original_recipient: None,
                    user: "bob".into(),
                    extension: Some("lists".into()),
                    destination: Destination::Mailbox("/var/mail/bob".into()),
                    uncertain: false,
                },
                Instruction {
                    recipient: "bob@example.org".into(),
                    original_recipient: None,
                    user: "bob".into(),
                    extension: None,
                    destination: Destination::Programs(vec!["/usr/bin/procmail -a x".into()]),
                    uncertain: false,
                },
            ],
        }
    }

    #[test]
    fn frames_round_trip() {
        let r = RequestFrame {
            version: PROTOCOL_VERSION,
            messages: vec![request(), request()],
        };
        let frame = frame::encode(&r).unwrap();
        let payload = read_frame(&mut &frame[..], &[]).unwrap();
        assert_eq!(decode_request(&payload).unwrap(), r);
        // The first bytes may already have been read (by recvmsg).
        let payload = read_frame(&mut &frame[7..], &frame[..7]).unwrap();
        assert_eq!(decode_request(&payload).unwrap(), r);
        let reply = ReplyFrame {
            version: PROTOCOL_VERSION,
            replies: vec![DeliveryReply {
                statuses: vec![
                    RecipientStatus::delivered("ok"),
                    RecipientStatus::bounced("5.7.1", "no").for_postmaster(),
                ],
            }],
        };
        let frame = frame::encode(&reply).unwrap();
        assert_eq!(
            decode_reply(&read_frame(&mut &frame[..], &[]).unwrap()).unwrap(),
            reply
        );
    }

    #[test]
    fn malformed_and_oversize_frames_are_errors() {
        let huge = (MAX_FRAME + 1).to_be_bytes();
        assert!(matches!(
            read_frame(&mut &huge[..], &[]),
            Err(HandoffError::Oversize(_))
        ));
        let truncated = [0u8, 0, 0, 10, 1, 2];
        assert!(matches!(
            read_frame(&mut &truncated[..], &[]),
            Err(HandoffError::Io(_))
        ));
        assert!(matches!(
            decode_request(&[0xff, 0xff, 0xff]),
            Err(HandoffError::Malformed(_))
        ));
        let mut r = RequestFrame {
            version: 99,
            messages: vec![request()],
        };
        let frame = frame::encode(&r).unwrap();
        let payload = read_frame(&mut &frame[..], &[]).unwrap();
        assert!(matches!(
            decode_request(&payload),
            Err(HandoffError::Version(99))
        ));
        // A version 2 request (a single message, its version first) is
        // refused for its version, not misread.
        assert!(matches!(
            decode_request(&[2, 3, b'A', b'B', b'C']),
            Err(HandoffError::Version(2))
        ));
        r.version = PROTOCOL_VERSION;
        r.messages.clear();
        let payload = postcard::to_stdvec(&r).unwrap();
        assert!(matches!(
            decode_request(&payload),
            Err(HandoffError::BatchSize(0))
        ));
        r.messages = vec![request(); MAX_BATCH + 1];
        let payload = postcard::to_stdvec(&r).unwrap();
        assert!(matches!(
            decode_request(&payload),
            Err(HandoffError::BatchSize(n)) if n == MAX_BATCH + 1
        ));
    }

    /// A batch whose frame is much larger than the agent's first read: the
    /// rest of the frame is read after it, the descriptors come with the
    /// first read, and the client gets one reply per message.
    #[test]
    fn a_large_batch_crosses_the_socket_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let mut big = request();
        big.recipients = (0..40)
            .map(|i| Instruction {
                recipient: format!("recipient-{i}-with-a-long-name@example.org"),
                original_recipient: None,
                user: format!("user{i}"),
                extension: None,
                destination: Destination::Maildir(format!("/home/user{i}/Maildir/").into()),
                uncertain: false,
            })
            .collect();
        let requests = vec![big; 8];
        let frame = frame::encode(&RequestFrame {
            version: PROTOCOL_VERSION,
            messages: requests.clone(),
        })
        .unwrap();
        assert!(frame.len() > 16 * 1024, "frame of {} bytes", frame.len());
        let files: Vec<OwnedFd> = (0..requests.len())
            .map(|i| {
                let mut f = tempfile::tempfile().unwrap();
                writeln!(f, "message {i}").unwrap();
                OwnedFd::from(f)
            })
            .collect();
        let agent = std::thread::spawn(move || {
            let (conn, _) = listener.accept().unwrap();
            let received = receive_request(&conn).unwrap();
            let replies = received
                .iter()
                .map(|(r, _)| DeliveryReply {
                    statuses: r
                        .recipients
                        .iter()
                        .map(|_| RecipientStatus::delivered("ok"))
                        .collect(),
                })
                .collect();
            send_reply(&conn, replies).unwrap();
            received
        });
        let batch: Vec<(&DeliveryRequest, &OwnedFd)> = requests.iter().zip(&files).collect();
        let replies = deliver_batch(&path, &batch, Duration::from_secs(10)).unwrap();
        assert_eq!(replies.len(), requests.len());
        let received = agent.join().unwrap();
        assert_eq!(received.len(), requests.len());
        for (i, ((r, fd), sent)) in received.iter().zip(&requests).enumerate() {
            assert_eq!(r, sent);
            let mut text = Vec::new();
            message_file(fd, 0, None)
                .unwrap()
                .reader()
                .read_to_end(&mut text)
                .unwrap();
            assert_eq!(text, format!("message {i}\n").into_bytes());
        }
    }

    #[test]
    fn random_payloads_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000usize {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
        }
    }
}
