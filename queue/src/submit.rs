//! The submit service and its protocol: how `postern sendmail` hands a
//! message to the queue.
//!
//! **Protocol.** A unix stream connection to `queue_directory/public/submit`.
//! The client sends one [`SubmitRequest`] frame (a 4-byte big-endian length
//! and a postcard payload, at most `handoff::MAX_FRAME` bytes, as in the
//! handoff protocol), then the message bytes, then shuts down its writing
//! side. The service answers one [`SubmitReply`] frame and closes. The reply
//! carries the queue id only after the message is durable in `incoming`
//! (file and directory fsynced); anything else is an error with an enhanced
//! status code, and nothing is left in the queue.
//!
//! **Trust.** The submitting user is the peer's uid (`SO_PEERCRED`), not
//! anything the client says; it is recorded in the queue file and in the
//! `Received:` header submit puts first in the message. The client's
//! envelope is checked (addresses without white space or control
//! characters, at least one recipient, at most [`MAX_RECIPIENTS`]), and the
//! message may not exceed `message_size_limit`.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use postern_common::account;
use postern_common::handoff::{self, HandoffError};
use postern_common::server::{Context, Handler, Privileges, Program, Request};
use postern_conf::params;
use serde::{Deserialize, Serialize};

use crate::queuefile::{self, Class, Envelope, Writer};
use postern_common::log::rfc5322_date;

/// Version carried in both frames.
pub const SUBMIT_VERSION: u16 = 1;
/// The most recipients one submission may name.
pub const MAX_RECIPIENTS: usize = 10_000;

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

/// The service's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReply {
    /// [`SUBMIT_VERSION`].
    pub version: u16,
    /// The queue id, or why not.
    pub result: Result<String, Refusal>,
}

/// The skeleton's description of submit.
pub const PROGRAM: Program = Program {
    name: "submit",
    privileges: Privileges::Unprivileged,
    ipc_timeout: true,
};

/// Runs the submit service (called by `postern-submit`'s main).
pub fn run() -> i32 {
    postern_common::server::run(PROGRAM, Submit::setup)
}

/// The submit service's state.
#[derive(Debug)]
pub struct Submit {
    incoming: PathBuf,
    queue: PathBuf,
    myhostname: String,
    size_limit: u64,
    /// Whether this process has already said it cannot wake qmgr.
    warned_wake: bool,
}

fn refuse(dsn: &str, text: impl Into<String>) -> Refusal {
    Refusal {
        dsn: dsn.into(),
        text: text.into(),
    }
}

impl Submit {
    fn setup(ctx: &Context) -> Result<Submit, String> {
        let queue = Path::new(ctx.config.text(params::QUEUE_DIRECTORY));
        Ok(Submit {
            incoming: queue.join(queuefile::INCOMING),
            queue: queue.to_path_buf(),
            myhostname: ctx.config.text(params::MYHOSTNAME).to_string(),
            size_limit: u64::try_from(ctx.config.int(params::MESSAGE_SIZE_LIMIT)).unwrap_or(0),
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
                Ok(s.clone())
            }
            None => {
                let name = match account::user_by_uid(uid) {
                    Ok(Some(a)) => a.name,
                    _ => format!("uid{uid}"),
                };
                Ok(format!("{name}@{}", self.myhostname))
            }
        }
    }

    /// Stores the message; the queue id once it is durable.
    fn store(&self, conn: &UnixStream, req: &SubmitRequest, uid: u32) -> Result<String, Refusal> {
        let sender = self.envelope(req, uid)?;
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
        let store_error =
            |e: std::io::Error| refuse("4.3.0", format!("cannot store the message: {e}"));
        let mut writer = Writer::create(&self.incoming, &id, &envelope).map_err(store_error)?;
        let received = format!(
            "Received: by {} (postern, from userid {uid})\n\tid {id}; {}\n",
            self.myhostname,
            rfc5322_date(now)
        );
        writer
            .write_message(received.as_bytes())
            .map_err(store_error)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut reader = conn;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(refuse(
                        "4.3.0",
                        format!("message not received completely: {e}"),
                    ))
                }
            };
            if self.size_limit > 0
                && writer.size() + n as u64 > self.size_limit + received.len() as u64
            {
                return Err(refuse(
                    "5.3.4",
                    format!(
                        "message exceeds message_size_limit ({} bytes)",
                        self.size_limit
                    ),
                ));
            }
            writer.write_message(&buf[..n]).map_err(store_error)?;
        }
        let size = writer.size();
        let id = writer.finish(&req.recipients).map_err(store_error)?;
        log::info!(
            "{id}: uid={uid}, from=<{sender}>, size={size}, nrcpt={}",
            req.recipients.len()
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
        let uid = peer.uid();
        let result = match read_request(&conn) {
            Ok(req) => self.store(&conn, &req, uid),
            Err(e) => {
                log::warn!(
                    "bad submission from pid {} (uid {uid}): {e}; nothing queued",
                    peer.pid()
                );
                Err(refuse("5.5.2", format!("bad submission: {e}")))
            }
        };
        if let Err(r) = &result {
            log::warn!(
                "refused a submission from uid {uid} pid {}: {} {}",
                peer.pid(),
                r.dsn,
                r.text
            );
        }
        let queued = result.is_ok();
        let reply = SubmitReply {
            version: SUBMIT_VERSION,
            result,
        };
        match handoff::encode(&reply) {
            Ok(frame) => {
                if let Err(e) = (&conn).write_all(&frame) {
                    log::warn!("cannot answer uid {uid} pid {}: {e}", peer.pid());
                }
            }
            Err(e) => log::warn!("cannot encode the reply: {e}"),
        }
        if queued {
            self.wake_qmgr();
        }
    }
}

fn read_request(conn: &UnixStream) -> Result<SubmitRequest, HandoffError> {
    let mut r = conn;
    let payload = handoff::read_frame(&mut r, &[])?;
    postcard::from_bytes(&payload).map_err(|e| HandoffError::Malformed(e.to_string()))
}

/// Client side: submits `message` (read to its end) for `request` over the
/// socket at `socket`; the queue id, or why not.
pub fn submit(
    socket: &Path,
    request: &SubmitRequest,
    message: &mut dyn Read,
    timeout: std::time::Duration,
) -> Result<String, Refusal> {
    let conn = UnixStream::connect(socket).map_err(|e| {
        refuse(
            "4.3.0",
            format!(
                "cannot connect to the submit service at {}: {e}",
                socket.display()
            ),
        )
    })?;
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let frame = handoff::encode(request).map_err(|e| refuse("5.5.2", e.to_string()))?;
    let mut w = &conn;
    // The frame and the message go out in as few writes as fit 64 KiB:
    // each write wakes the service.
    let sent = (|| -> std::io::Result<()> {
        let mut buf = frame;
        let cap = 64 * 1024;
        loop {
            let at = buf.len();
            buf.resize(cap.max(at + 1), 0);
            let n = match message.read(&mut buf[at..]) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                    buf.truncate(at);
                    continue;
                }
                Err(e) => return Err(e),
            };
            buf.truncate(at + n);
            if n == 0 || buf.len() >= cap {
                w.write_all(&buf)?;
                buf.clear();
            }
            if n == 0 {
                return Ok(());
            }
        }
    })();
    // Even when sending failed (the service refused early and closed), its
    // reply says why.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let mut r = &conn;
    match handoff::read_frame(&mut r, &[]) {
        Ok(payload) => {
            let reply: SubmitReply = postcard::from_bytes(&payload)
                .map_err(|e| refuse("4.3.0", format!("bad reply from the submit service: {e}")))?;
            reply.result
        }
        Err(e) => Err(refuse(
            "4.3.0",
            match sent {
                Err(s) => format!("submission failed: {s}; no reply: {e}"),
                Ok(()) => format!("no reply from the submit service: {e}"),
            },
        )),
    }
}
