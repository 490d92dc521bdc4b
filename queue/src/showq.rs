//! The showq service and its protocol: how `mailq` (`sendmail -bp`) lists
//! the queue for users who cannot read it.
//!
//! The queue directories belong to the mail owner (mode 0700), so an
//! ordinary user's `mailq` cannot read them; as in Postfix, it asks the
//! showq service, which runs as the mail owner (master.cf: `showq unix n -
//! n - - showq`, a public socket), checks the caller against
//! `authorized_mailq_users` (by the peer's uid, `SO_PEERCRED`; root and the
//! mail owner always may) and sends the listing. No set-uid program.
//!
//! **Protocol, version 1** ([`SHOWQ_VERSION`]). A unix stream connection to
//! `queue_directory/public/showq`; frames are `postern_common::frame`'s (a
//! 4-byte big-endian length and a postcard payload of at most
//! `frame::MAX_FRAME` bytes), each starting with the version.
//!
//! 1. The client sends one [`ShowqRequest`] (at most 64 bytes of payload,
//!    all of it within [`REQUEST_DEADLINE`]: a slow or idle client is cut,
//!    so that one user's connections cannot hold every showq process).
//! 2. The service answers [`ShowqReply`] frames: for each message one
//!    [`Item::Message`] followed by one [`Item::Recipient`] per pending
//!    recipient; then [`Item::End`]. Or a single [`Item::Refused`] (not
//!    authorised, bad request). Then it closes. Every write waits at most
//!    [`TIMEOUT`].
//!
//! The client prints the listing in Postfix's mailq layout ([`format`]).

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_common::account;
use postern_common::frame::{self, FrameError};
use postern_common::handoff;
use postern_common::log::asctime;
use postern_common::server::{Context, Handler, Privileges, Program, Request};
use postern_conf::params;
use serde::{Deserialize, Serialize};

use crate::queuefile::{self, QueueFile};

/// Version carried in every frame.
pub const SHOWQ_VERSION: u16 = 1;
/// The socket, under `queue_directory`.
pub const SOCKET: &str = "public/showq";
/// The queues listed, in order (Postfix's: incoming, active, deferred, hold).
pub const LISTED: [&str; 4] = [
    queuefile::INCOMING,
    queuefile::ACTIVE,
    queuefile::DEFERRED,
    queuefile::HOLD,
];
/// `authorized_mailq_users`/`authorized_flush_users` value that lets everyone.
pub const ANYONE: &str = "static:anyone";

/// What the client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowqRequest {
    /// [`SHOWQ_VERSION`].
    pub version: u16,
}

/// One item of the answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Item {
    /// A message (its pending recipients follow).
    Message {
        /// Queue id.
        id: String,
        /// The queue it is in (one of [`LISTED`]).
        queue: String,
        /// Message size in bytes.
        size: u64,
        /// Arrival, seconds since the epoch.
        arrival: u64,
        /// Envelope sender (empty: the null sender).
        sender: String,
    },
    /// A pending recipient of the last message, with why it waits.
    Recipient {
        /// The address.
        address: String,
        /// The latest deferral reason, if any.
        reason: Option<String>,
    },
    /// The listing is complete.
    End,
    /// No listing, and why.
    Refused(String),
}

/// One answer frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowqReply {
    /// [`SHOWQ_VERSION`].
    pub version: u16,
    /// The item.
    pub item: Item,
}

/// The skeleton's description of showq.
pub const PROGRAM: Program = Program {
    name: "showq",
    privileges: Privileges::Unprivileged,
    ipc_timeout: false,
};

/// Runs the showq service (called by `postern-showq`'s main).
pub fn run() -> i32 {
    postern_common::server::run(PROGRAM, Showq::setup)
}

/// Whether the user `uid` may do what `setting` (a list of user names or
/// [`ANYONE`]) allows; root and the mail owner always may.
pub fn authorized(setting: &[String], uid: u32, mail_owner_uid: Option<u32>) -> bool {
    if uid == 0 || Some(uid) == mail_owner_uid || setting.iter().any(|s| s == ANYONE) {
        return true;
    }
    let Ok(Some(user)) = account::user_by_uid(uid) else {
        return false;
    };
    setting.contains(&user.name)
}

/// The showq service's state.
#[derive(Debug)]
pub struct Showq {
    queue: PathBuf,
    authorized: Vec<String>,
}

/// How long the service waits for each write of the listing.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client has to send its whole request (a few bytes): a
/// client that is slower is cut, so that idle connections cannot hold the
/// service's processes from other users.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(2);

/// The largest request payload accepted (a request is a version number).
const MAX_REQUEST: u32 = 64;

/// The request frame (a length and a postcard payload), read within
/// [`REQUEST_DEADLINE`] and at most [`MAX_REQUEST`] bytes.
fn read_request(conn: &UnixStream, peer: &str) -> Result<ShowqRequest, String> {
    let mut r = frame::Deadline::until(conn, std::time::Instant::now() + REQUEST_DEADLINE);
    match frame::read(&mut r, &[], MAX_REQUEST, peer) {
        Ok(payload) => frame::decode(&payload, peer).map_err(|e| e.to_string()),
        Err(FrameError::Io { source, .. }) if source.kind() == std::io::ErrorKind::TimedOut => Err(
            format!("no complete request within {}s", REQUEST_DEADLINE.as_secs()),
        ),
        Err(e) => Err(e.to_string()),
    }
}

impl Showq {
    fn setup(ctx: &Context) -> Result<Showq, String> {
        Ok(Showq {
            queue: PathBuf::from(ctx.config.text(params::QUEUE_DIRECTORY)),
            authorized: ctx.config.list(params::AUTHORIZED_MAILQ_USERS),
        })
    }
}

fn send(mut conn: &UnixStream, item: Item) -> Result<(), FrameError> {
    let reply = ShowqReply {
        version: SHOWQ_VERSION,
        item,
    };
    frame::send(&mut conn, &reply, "the client")
}

/// Sends every message of the queue at `root` to `conn`, then End.
fn list(root: &Path, conn: &UnixStream) -> Result<(), FrameError> {
    for queue in LISTED {
        for id in queuefile::ids_in(&root.join(queue)).unwrap_or_default() {
            // Gone meanwhile (delivered, moved) or unreadable: not listed.
            let Ok(q) = QueueFile::read(&root.join(queue).join(&id)) else {
                continue;
            };
            send(
                conn,
                Item::Message {
                    id: id.clone(),
                    queue: queue.to_string(),
                    size: q.message_size,
                    arrival: q.envelope.arrival,
                    sender: q.envelope.sender.clone(),
                },
            )?;
            for (i, r) in q.pending() {
                let reason = q
                    .delays
                    .iter()
                    .filter(|((ri, _), _)| *ri == i)
                    .map(|(_, d)| format!("{} {}", d.dsn, d.reason))
                    .next();
                send(
                    conn,
                    Item::Recipient {
                        address: r.address.clone(),
                        reason,
                    },
                )?;
            }
        }
    }
    send(conn, Item::End)
}

impl Handler for Showq {
    fn handle(&mut self, ctx: &Context, request: Request) {
        let Request::Stream(fd) = request else {
            log::warn!("showq serves stream connections only; trigger ignored");
            return;
        };
        let conn = UnixStream::from(fd);
        let Some(peer) = handoff::peer_credentials(&conn) else {
            return;
        };
        let _ = conn.set_write_timeout(Some(TIMEOUT));
        let request = read_request(&conn, "the client");
        let result = match request {
            Ok(req) if req.version != SHOWQ_VERSION => send(
                &conn,
                Item::Refused(format!(
                    "unsupported showq protocol version {}",
                    req.version
                )),
            ),
            Ok(_) if !authorized(&self.authorized, peer.uid(), Some(ctx.mail_owner.uid)) => {
                log::warn!(
                    "refused a queue listing to uid {} pid {} (authorized_mailq_users)",
                    peer.uid(),
                    peer.pid()
                );
                send(
                    &conn,
                    Item::Refused("permission denied (authorized_mailq_users)".into()),
                )
            }
            Ok(_) => list(&self.queue, &conn),
            Err(e) => {
                log::warn!(
                    "bad showq request from uid {} pid {}: {e}",
                    peer.uid(),
                    peer.pid()
                );
                send(&conn, Item::Refused(format!("bad request: {e}")))
            }
        };
        if let Err(e) = result {
            log::warn!(
                "cannot send the queue listing to uid {} pid {}: {e}",
                peer.uid(),
                peer.pid()
            );
        }
    }
}

/// Client side: asks the showq service at `socket` for the listing.
pub fn request(socket: &Path, timeout: Duration) -> Result<Vec<Item>, String> {
    let conn = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to {}: {e}", socket.display()))?;
    let _ = conn.set_read_timeout(Some(timeout));
    let _ = conn.set_write_timeout(Some(timeout));
    let request = ShowqRequest {
        version: SHOWQ_VERSION,
    };
    frame::send(&mut &conn, &request, "the showq service")
        .map_err(|e| format!("cannot send the request: {e}"))?;
    read_listing(&conn, "the showq service")
}

/// Reads the listing's frames from `peer` up to its end or its refusal.
fn read_listing(conn: &UnixStream, peer: &str) -> Result<Vec<Item>, String> {
    let mut items = Vec::new();
    loop {
        let payload =
            frame::read(&mut &*conn, &[], frame::MAX_FRAME, peer).map_err(|e| e.to_string())?;
        let reply: ShowqReply =
            frame::decode(&payload, peer).map_err(|e| format!("bad reply: {e}"))?;
        if reply.version != SHOWQ_VERSION {
            return Err(format!("reply of protocol version {}", reply.version));
        }
        match reply.item {
            Item::End => return Ok(items),
            Item::Refused(why) => return Err(why),
            item => items.push(item),
        }
    }
}

/// Reads the queue at `root` directly (root or the mail owner only), as
/// the service would answer.
pub fn read_directly(root: &Path) -> Result<Vec<Item>, String> {
    let (a, b) = UnixStream::pair().map_err(|e| e.to_string())?;
    let root = root.to_path_buf();
    let writer = std::thread::spawn(move || list(&root, &a).map_err(|e| e.to_string()));
    let items = read_listing(&b, "the listing thread")?;
    writer
        .join()
        .map_err(|_| "the listing thread failed".to_string())??;
    Ok(items)
}

/// Control characters shown as `?`, as Postfix's mailq does.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The listing in Postfix's mailq layout: a heading, per message a line
/// `ID[*!] SIZE ARRIVAL SENDER` (`*` active, `!` on hold; the arrival in
/// UTC; `MAILER-DAEMON` for the null sender), each deferral reason in
/// parentheses, right-aligned, before the recipients it concerns, the
/// recipients indented to the sender column, a blank line between
/// messages, and `-- N Kbytes in M Requests.`; or `Mail queue is empty`.
pub fn format(items: &[Item]) -> String {
    let mut out = String::new();
    let mut count = 0u64;
    let mut total = 0u64;
    let mut last_reason: Option<String> = None;
    for item in items {
        match item {
            Item::Message {
                id,
                queue,
                size,
                arrival,
                sender,
            } => {
                if count == 0 {
                    out.push_str(
                        "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n",
                    );
                } else {
                    out.push('\n');
                }
                count += 1;
                total += size;
                last_reason = None;
                let status = match queue.as_str() {
                    queuefile::ACTIVE => '*',
                    queuefile::HOLD => '!',
                    _ => ' ',
                };
                let sender = if sender.is_empty() {
                    "MAILER-DAEMON".to_string()
                } else {
                    printable(sender)
                };
                let date: String = asctime(*arrival).chars().take(20).collect();
                out.push_str(&format!(
                    "{:<10}{status} {size:>8} {date:>20} {sender}\n",
                    printable(id)
                ));
            }
            Item::Recipient { address, reason } => {
                if let Some(r) = reason {
                    if last_reason.as_deref() != Some(r) {
                        let r = printable(r);
                        let pad = 76usize.saturating_sub(r.chars().count());
                        out.push_str(&format!("{:pad$}({r})\n", ""));
                        last_reason = Some(r);
                    }
                }
                out.push_str(&format!("{:41}{}\n", "", printable(address)));
            }
            Item::End | Item::Refused(_) => {}
        }
    }
    if count == 0 {
        return "Mail queue is empty\n".to_string();
    }
    out.push_str(&format!(
        "\n-- {} Kbytes in {count} Request{}.\n",
        total / 1024,
        if count == 1 { "" } else { "s" }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_layout() {
        assert_eq!(format(&[]), "Mail queue is empty\n");
        let items = vec![
            Item::Message {
                id: "ABCDEF1234".into(),
                queue: "active".into(),
                size: 2048,
                arrival: 951_782_400,
                sender: "ann@example.org".into(),
            },
            Item::Recipient {
                address: "bob@example.org".into(),
                reason: None,
            },
            Item::Message {
                id: "ABCDEF1235".into(),
                queue: "deferred".into(),
                size: 1024,
                arrival: 951_782_400,
                sender: String::new(),
            },
            Item::Recipient {
                address: "x\ny".into(),
                reason: Some("4.2.2 mailbox full".into()),
            },
            Item::Recipient {
                address: "z".into(),
                reason: Some("4.2.2 mailbox full".into()),
            },
        ];
        let text = format(&items);
        let pad = " ".repeat(41);
        let rpad = " ".repeat(76 - "4.2.2 mailbox full".len());
        assert_eq!(
            text,
            format!(
                "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------\n\
                 ABCDEF1234*     2048 Tue Feb 29 00:00:00  ann@example.org\n\
                 {pad}bob@example.org\n\
                 \n\
                 ABCDEF1235      1024 Tue Feb 29 00:00:00  MAILER-DAEMON\n\
                 {rpad}(4.2.2 mailbox full)\n\
                 {pad}x?y\n\
                 {pad}z\n\
                 \n\
                 -- 3 Kbytes in 2 Requests.\n"
            )
        );
    }

    #[test]
    fn authorisation() {
        let anyone = vec![ANYONE.to_string()];
        let nobody: Vec<String> = vec![];
        assert!(authorized(&anyone, 12345, None));
        assert!(authorized(&nobody, 0, None));
        assert!(authorized(&nobody, 77, Some(77)));
        assert!(!authorized(&nobody, 12345, Some(77)));
        assert!(authorized(&["root".to_string()], 0, None));
    }

    #[test]
    fn frames_round_trip() {
        for item in [
            Item::End,
            Item::Refused("no".into()),
            Item::Recipient {
                address: "a".into(),
                reason: None,
            },
        ] {
            let bytes = frame::encode(&ShowqReply {
                version: SHOWQ_VERSION,
                item: item.clone(),
            })
            .unwrap();
            let payload = frame::read(&mut &bytes[..], &[], frame::MAX_FRAME, "p").unwrap();
            let back: ShowqReply = postcard::from_bytes(&payload).unwrap();
            assert_eq!(back.item, item);
        }
        assert!(frame::read(&mut &[0xff, 0, 0, 0][..], &[], frame::MAX_FRAME, "p").is_err());
    }
}
