//! # postern-smtp
//!
//! **Name**: postern-smtp — deliver mail to other hosts over SMTP.
//!
//! **Synopsis** (master.cf): `smtp unix - - n - - smtp`
//!
//! **Description**: the queue manager routes a recipient to the smtp
//! transport (`default_transport = smtp`, a `transport_maps` entry
//! `smtp:[host]:port`, `relayhost`) and hands the delivery here over the
//! same handoff as local's (`postern_common::handoff`: the queue file's
//! descriptor attached, one status per recipient back). For each message
//! smtp finds the next hop's servers ([`nexthop`]: `[host]:port` without an
//! MX lookup, `host:port` or a domain with one, MX hosts in preference
//! order with a fall-back to the domain's own addresses), and tries them in
//! turn ([`session`]): greeting, EHLO, STARTTLS as `smtp_tls_security_level`
//! asks ([`tls`]; at `may` a failed handshake is followed by a plaintext
//! session with the same server, as in Postfix), AUTH when `smtp_sasl_auth_enable` and the password table
//! has the next hop ([`sasl`]), MAIL FROM with SIZE and BODY=8BITMIME where
//! offered, RCPT TO per recipient, DATA with the body streamed from the
//! queue file ([`body`]); pipelined where the server offers PIPELINING.
//! Each recipient's status is what the server said: 2xx sent, 4xx
//! deferred, 5xx bounced, with the server's text and enhanced status code;
//! a connection broken before the server acknowledged the data is
//! deferred, never sent. When no server would take a session, the status
//! says so and is marked a site failure, which the queue manager counts
//! against the destination. After a delivery the server accepted, the
//! process keeps the session for its next request to the same next hop
//! ([`cache`]).
//!
//! **Security**: runs as the mail owner (master.cf unpriv `-`), never as
//! root; the skeleton drops privileges after setup, which reads (as root,
//! as Postfix's smtp does) the TLS trust anchors, the client key and the
//! password table — the latter only when it is a regular file owned by
//! root or the mail owner and not writable by group or others nor readable
//! by others. Accepts handoffs only from root and the mail owner
//! (`SO_PEERCRED`). Untrusted input: the servers' replies (bounded lines
//! and replies, every read and write under its time limit), their
//! certificates (rustls with ring; no hand-written cryptography), DNS
//! answers (hickory-resolver). Passwords are sent only over TLS unless
//! `smtp_sasl_security_options` lacks `noplaintext`.
//!
//! **Configuration** (main.cf; defaults in brackets): `relayhost` [],
//! `smtp_helo_name` [$myhostname], `smtp_bind_address` [],
//! `smtp_bind_address6` [], `inet_protocols` [all],
//! `smtp_tls_security_level` [may], `smtp_tls_CAfile` [],
//! `smtp_tls_CApath` [], `smtp_tls_cert_file` [], `smtp_tls_key_file`
//! [$smtp_tls_cert_file], `smtp_tls_mandatory_protocols` [!SSLv2, !SSLv3,
//! !TLSv1, !TLSv1.1], `smtp_sasl_auth_enable` [no],
//! `smtp_sasl_password_maps` [], `smtp_sasl_security_options`
//! [noplaintext, noanonymous], `smtp_sasl_tls_security_options`
//! [noanonymous], `smtp_mx_address_limit` [5],
//! `smtp_defer_if_no_mx_address_found` [no], `smtp_connect_timeout`
//! [30s], `smtp_helo_timeout` [300s], `smtp_mail_timeout` [300s],
//! `smtp_rcpt_timeout` [300s], `smtp_data_init_timeout` [120s],
//! `smtp_data_xfer_timeout` [180s], `smtp_data_done_timeout` [600s],
//! `smtp_quit_timeout` [300s], `smtp_starttls_timeout` [300s],
//! `smtp_rset_timeout` [20s], `smtp_connection_cache_on_demand` [yes],
//! `smtp_connection_cache_time_limit` [2s],
//! `smtp_connection_reuse_count_limit` [0],
//! `smtp_connection_reuse_time_limit` [300s]; in the queue
//! manager: `smtp_destination_concurrency_limit`
//! [$default_destination_concurrency_limit],
//! `smtp_destination_recipient_limit` [50].
//!
//! **Exit status**: as every child: 0 normally, 78 on a configuration
//! error (an unsafe or malformed password table, an unreadable CA file).
//!
//! **See also**: Postfix smtp(8), postconf(5) (`smtp_*`); RFC 5321, 3207,
//! 4954, 2920, 1870, 6152.

pub mod body;
pub mod cache;
pub mod nexthop;
pub mod reply;
pub mod sasl;
pub mod session;
pub mod tls;

use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use postern_common::handoff::{self, DeliveryReply, Destination, RecipientStatus};
use postern_common::server::{self, Context, Handler, Privileges, Program, Request};
use postern_conf::{params, Config};

use crate::cache::Cache;
use crate::nexthop::Families;
use crate::session::{After, Failed, Message};

/// The time limits of a session's stages.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// `smtp_connect_timeout`.
    pub connect: Duration,
    /// `smtp_helo_timeout` (greeting, EHLO, STARTTLS, AUTH).
    pub helo: Duration,
    /// `smtp_mail_timeout`.
    pub mail: Duration,
    /// `smtp_rcpt_timeout`.
    pub rcpt: Duration,
    /// `smtp_data_init_timeout`.
    pub data_init: Duration,
    /// `smtp_data_xfer_timeout`.
    pub data_xfer: Duration,
    /// `smtp_data_done_timeout`.
    pub data_done: Duration,
    /// `smtp_quit_timeout`.
    pub quit: Duration,
    /// `smtp_rset_timeout`.
    pub rset: Duration,
    /// `smtp_starttls_timeout`.
    pub starttls: Duration,
}

/// smtp's settings, from main.cf (and the files it names, read at setup).
#[derive(Debug, Clone)]
pub struct Settings {
    /// `smtp_helo_name`.
    pub helo_name: String,
    /// `smtp_bind_address`.
    pub bind4: Option<IpAddr>,
    /// `smtp_bind_address6`.
    pub bind6: Option<IpAddr>,
    /// `inet_protocols`.
    pub families: Families,
    /// The time limits.
    pub timeouts: Timeouts,
    /// `smtp_tls_security_level`.
    pub tls_level: tls::Level,
    /// Trust anchors and client certificate.
    pub tls: tls::Tls,
    /// `smtp_sasl_auth_enable`.
    pub sasl_enable: bool,
    /// `smtp_sasl_password_maps`, read.
    pub passwords: sasl::Passwords,
    /// `noplaintext` in `smtp_sasl_security_options`.
    pub sasl_noplaintext: bool,
    /// `noplaintext` in `smtp_sasl_tls_security_options`.
    pub sasl_tls_noplaintext: bool,
    /// `smtp_mx_address_limit`.
    pub mx_address_limit: usize,
    /// `smtp_defer_if_no_mx_address_found`.
    pub defer_if_no_mx_address: bool,
}

fn address(c: &Config, name: &str) -> Result<Option<IpAddr>, String> {
    let text = c.text(name).trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse()
        .map(Some)
        .map_err(|_| format!("{name} = {text}: not an IP address"))
}

impl Settings {
    /// Reads the settings and the files they name; `owner_uid` is the mail
    /// owner's (who may own the password table).
    pub fn load(c: &Config, owner_uid: u32) -> Result<Settings, String> {
        let protocols = c.list(params::INET_PROTOCOLS);
        let all = protocols.iter().any(|p| p == "all");
        let families = Families {
            v4: all || protocols.iter().any(|p| p == "ipv4"),
            v6: all || protocols.iter().any(|p| p == "ipv6"),
        };
        let sasl_enable = c.bool(params::SMTP_SASL_AUTH_ENABLE);
        let maps = c.text(params::SMTP_SASL_PASSWORD_MAPS).trim();
        // "hash:/etc/postfix/sasl_passwd" names the text file, as alias_maps.
        let maps = maps
            .split_once(':')
            .filter(|(t, _)| !t.starts_with('/'))
            .map_or(maps, |(_, p)| p);
        let passwords = if sasl_enable && !maps.is_empty() {
            sasl::Passwords::load(Path::new(maps), owner_uid)?
        } else {
            sasl::Passwords::default()
        };
        let level = tls::Level::parse(c.text(params::SMTP_TLS_SECURITY_LEVEL));
        let tls = tls::Tls::load(
            c.text(params::SMTP_TLS_CAFILE),
            c.text(params::SMTP_TLS_CAPATH),
            c.text(params::SMTP_TLS_CERT_FILE),
            c.text(params::SMTP_TLS_KEY_FILE),
            &c.list(params::SMTP_TLS_MANDATORY_PROTOCOLS),
        )?;
        let has = |name, word: &str| c.list(name).iter().any(|w| w == word);
        Ok(Settings {
            helo_name: c.text(params::SMTP_HELO_NAME).to_string(),
            bind4: address(c, params::SMTP_BIND_ADDRESS)?,
            bind6: address(c, params::SMTP_BIND_ADDRESS6)?,
            families,
            timeouts: Timeouts {
                connect: c.time(params::SMTP_CONNECT_TIMEOUT),
                helo: c.time(params::SMTP_HELO_TIMEOUT),
                mail: c.time(params::SMTP_MAIL_TIMEOUT),
                rcpt: c.time(params::SMTP_RCPT_TIMEOUT),
                data_init: c.time(params::SMTP_DATA_INIT_TIMEOUT),
                data_xfer: c.time(params::SMTP_DATA_XFER_TIMEOUT),
                data_done: c.time(params::SMTP_DATA_DONE_TIMEOUT),
                quit: c.time(params::SMTP_QUIT_TIMEOUT),
                rset: c.time(params::SMTP_RSET_TIMEOUT),
                starttls: c.time(params::SMTP_STARTTLS_TIMEOUT),
            },
            tls_level: level,
            tls,
            sasl_enable,
            passwords,
            sasl_noplaintext: has(params::SMTP_SASL_SECURITY_OPTIONS, "noplaintext"),
            sasl_tls_noplaintext: has(params::SMTP_SASL_TLS_SECURITY_OPTIONS, "noplaintext"),
            mx_address_limit: usize::try_from(c.int(params::SMTP_MX_ADDRESS_LIMIT))
                .unwrap_or(usize::MAX),
            defer_if_no_mx_address: c.bool(params::SMTP_DEFER_IF_NO_MX_ADDRESS_FOUND),
        })
    }
}

/// The daemon.
pub fn run() -> i32 {
    server::run(
        Program {
            name: "smtp",
            privileges: Privileges::Unprivileged,
            ipc_timeout: true,
        },
        |ctx| {
            Ok(Smtp {
                settings: Settings::load(&ctx.config, ctx.mail_owner.uid)?,
                owner_uid: ctx.mail_owner.uid,
                cache: Cache::new(cache::Limits::load(&ctx.config)),
            })
        },
    )
}

/// The smtp agent's state between requests.
#[derive(Debug)]
struct Smtp {
    settings: Settings,
    owner_uid: u32,
    /// The session kept from the last delivery, if any.
    cache: Cache,
}

impl Handler for Smtp {
    fn handle(&mut self, _ctx: &Context, request: Request) {
        let Request::Stream(fd) = request else {
            log::warn!("smtp serves stream connections only; trigger ignored");
            return;
        };
        let conn = UnixStream::from(fd);
        let Some((_, messages)) = handoff::accept_descriptors(&conn, self.owner_uid) else {
            return;
        };
        let replies = messages
            .iter()
            .map(|(req, fd)| DeliveryReply {
                statuses: deliver(req, fd, &self.settings, &mut self.cache),
            })
            .collect();
        if let Err(e) = handoff::send_reply(&conn, replies) {
            log::warn!("cannot send the delivery statuses to the queue manager: {e}");
        }
    }

    fn idle_deadline(&self) -> Option<Instant> {
        self.cache.deadline()
    }

    fn idle(&mut self, _ctx: &Context) {
        self.cache.close();
    }

    fn finish(&mut self, _ctx: &Context) {
        self.cache.close();
    }
}

/// Delivers one message to its next hop: one status per recipient. Over
/// the cached session when it serves this next hop (a dead one is dropped
/// and a new session opened, nothing deferred); the session used is left
/// in the cache when it may serve another request.
pub fn deliver(
    req: &handoff::DeliveryRequest,
    fd: &std::os::fd::OwnedFd,
    s: &Settings,
    cache: &mut Cache,
) -> Vec<RecipientStatus> {
    let n = req.recipients.len();
    let all = |st: RecipientStatus| vec![st; n];
    let Some(first) = req.recipients.first() else {
        return Vec::new();
    };
    let nexthop = match &first.destination {
        Destination::Transport { nexthop } => nexthop.clone(),
        other => {
            return all(RecipientStatus::deferred(
                "4.3.5",
                format!("smtp cannot deliver to {other}"),
            ))
        }
    };
    let domain = first
        .recipient
        .rsplit_once('@')
        .map_or("", |(_, d)| d)
        .to_string();
    let hop = match nexthop::parse(&nexthop, &domain) {
        Ok(h) => h,
        Err(e) => return all(RecipientStatus::deferred("4.3.5", e)),
    };
    let size = match req.message_size {
        Some(s) => s,
        None => match nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(fd)) {
            Ok(st) => u64::try_from(st.st_size)
                .unwrap_or(0)
                .saturating_sub(req.message_offset),
            Err(e) => {
                return all(RecipientStatus::deferred(
                    "4.3.0",
                    format!("cannot read the queue file: {e}"),
                ))
            }
        },
    };
    let msg = Message {
        queue_id: &req.queue_id,
        sender: &req.sender,
        recipients: req
            .recipients
            .iter()
            .map(|i| i.recipient.as_str())
            .collect(),
        fd,
        offset: req.message_offset,
        size,
    };
    let key = cache::Key::new(&hop, &nexthop, s);
    if let Some(mut session) = cache.take(&key) {
        if session.alive() {
            let (statuses, after) = session.deliver(&msg, s);
            if after != After::Stale {
                // Kept before, so with a primary server.
                cache.put(key, session, after, true, s);
                return statuses;
            }
            log::info!(
                "{}: the cached session with {} was gone; opening a new one",
                req.queue_id,
                session.relay()
            );
        } else {
            log::debug!(
                "{}: the cached session with {} was closed by the server",
                req.queue_id,
                session.relay()
            );
        }
    }
    let servers = match nexthop::servers(
        &hop,
        s.families,
        s.mx_address_limit,
        s.defer_if_no_mx_address,
    ) {
        Ok(list) => list,
        Err(st) => return all(st),
    };
    let mut last = None;
    for server in &servers {
        let mut opened = session::open(server, &hop, &nexthop, s, true);
        if let Err(Failed::WithoutTls(st)) = &opened {
            log::info!(
                "{}: {}; TLS is not required: trying {} again without it",
                req.queue_id,
                st.reason,
                server.label()
            );
            opened = session::open(server, &hop, &nexthop, s, false);
        }
        match opened {
            Ok(mut session) => {
                let (statuses, after) = session.deliver(&msg, s);
                cache.put(key, session, after, server.primary, s);
                return statuses;
            }
            Err(Failed::Next(st) | Failed::WithoutTls(st)) => {
                log::info!("{}: {}", req.queue_id, st.reason);
                last = Some(st);
            }
        }
    }
    match last {
        Some(st) => all(st),
        None => {
            all(RecipientStatus::deferred("4.4.3", format!("no server for {nexthop}")).of_site())
        }
    }
}
