//! One SMTP session with one server (RFC 5321): greeting, EHLO (HELO when
//! EHLO is refused), STARTTLS as the TLS level asks, AUTH when configured,
//! then MAIL FROM, RCPT TO per recipient and DATA — pipelined when the
//! server offers PIPELINING — and QUIT. Every read and write has the time
//! limit of its stage (`smtp_*_timeout`). A [`Session`] outlives its
//! first transaction: after one the server accepted, RSET puts it back
//! between transactions, and the caller may keep it for its next request
//! ([`crate::cache`]).
//!
//! A failure before MAIL FROM (no connection, a refused greeting or EHLO,
//! TLS required but unavailable or unverified, authentication refused) is
//! the server's: the caller tries the next one. From MAIL FROM on, the
//! outcome is per recipient, as the server said: 2xx sent, 4xx deferred,
//! 5xx bounced. A connection that breaks before the server acknowledged
//! the end of the data is deferred, never sent.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use postern_common::handoff::RecipientStatus;
use rustls::{ClientConnection, StreamOwned};

use crate::body;
use crate::nexthop::{NextHop, Server};
use crate::reply::{self, Extensions, Parsed, Reply};
use crate::sasl;
use crate::tls::{self, Level};
use crate::Settings;

/// The message of one delivery request.
#[derive(Debug)]
pub struct Message<'a> {
    /// The queue id (for logs).
    pub queue_id: &'a str,
    /// The envelope sender (empty: the null sender).
    pub sender: &'a str,
    /// The recipients, in the request's order.
    pub recipients: Vec<&'a str>,
    /// The queue file.
    pub fd: &'a OwnedFd,
    /// Where the message starts in it.
    pub offset: u64,
    /// Its length.
    pub size: u64,
}

/// Why no session could be opened with one server.
#[derive(Debug)]
pub enum Failed {
    /// This server would not do: try the next one (the status says why,
    /// for when none will).
    Next(RecipientStatus),
    /// At `may`, STARTTLS failed: try this server again without TLS, as
    /// Postfix's opportunistic TLS does.
    WithoutTls(RecipientStatus),
}

/// What a mail transaction left its session fit for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// The server accepted the message and the session is between
    /// transactions: it may serve another (after RSET).
    Reusable,
    /// Anything else: an error, a refusal, an unknown state. QUIT if the
    /// connection is still there; never reuse.
    Unusable,
    /// The connection was gone before the server answered MAIL FROM:
    /// nothing was sent. On a reused session, the delivery is tried again
    /// over a new one.
    Stale,
}

/// An open session with one server, between mail transactions.
pub struct Session {
    client: Client,
    ext: Extensions,
    /// `name[address]:port`, the log's `relay=`.
    relay: String,
    /// When the connection was made.
    pub opened: Instant,
    /// Mail transactions begun over it.
    pub uses: u32,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("relay", &self.relay)
            .field("uses", &self.uses)
            .finish_non_exhaustive()
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Why a conversation stopped.
#[derive(Debug)]
struct Broken {
    timed_out: bool,
    /// The server broke the protocol (a malformed or unsolicited reply);
    /// the connection is dropped.
    protocol: bool,
    detail: String,
}

impl Broken {
    fn from_io(e: &std::io::Error) -> Broken {
        Broken {
            timed_out: matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            protocol: false,
            detail: e.to_string(),
        }
    }

    fn closed() -> Broken {
        Broken {
            timed_out: false,
            protocol: false,
            detail: "connection closed".into(),
        }
    }

    fn protocol(detail: String) -> Broken {
        Broken {
            timed_out: false,
            protocol: true,
            detail,
        }
    }
}

struct Client {
    stream: Option<Stream>,
    buf: Vec<u8>,
    /// `name[address]` for messages.
    who: String,
}

impl Client {
    fn stream(&mut self) -> std::io::Result<&mut Stream> {
        self.stream
            .as_mut()
            .ok_or_else(|| std::io::Error::other("no connection"))
    }

    /// Reads one reply, all of it within `limit`.
    fn reply(&mut self, limit: Duration) -> Result<Reply, Broken> {
        // The whole reply within `limit`: a server dripping it a line or a
        // byte at a time does not stretch the limit.
        let deadline = Instant::now() + limit;
        loop {
            match reply::parse(&self.buf) {
                Ok(Parsed::Reply(r, used)) => {
                    self.buf.drain(..used);
                    return Ok(r);
                }
                Ok(Parsed::Incomplete) => {}
                Err(e) => {
                    // Where the next reply starts is unknown: no more
                    // commands on this connection, not even QUIT.
                    self.stream = None;
                    self.buf = Vec::new();
                    return Err(Broken::protocol(format!("malformed reply: {e}")));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Broken::from_io(&std::io::ErrorKind::TimedOut.into()));
            }
            let stream = self.stream().map_err(|e| Broken::from_io(&e))?;
            stream
                .tcp()
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| Broken::from_io(&e))?;
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk) {
                Ok(0) => return Err(Broken::closed()),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Broken::from_io(&e)),
            }
        }
    }

    /// An error when the server sent bytes no command of ours asked for
    /// yet (a pipelining desync, or a liar answering ahead): they would be
    /// taken for the reply to what we send next. The connection is dropped.
    fn unsolicited(&mut self, before: &str) -> Result<(), Broken> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf[..self.buf.len().min(80)]).into_owned();
        self.stream = None;
        self.buf = Vec::new();
        Err(Broken::protocol(format!(
            "unexpected reply before {before}: {:?}",
            text.chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect::<String>()
        )))
    }

    /// Reads what the server sent without waiting (nothing is expected):
    /// into the buffer, for [`Client::unsolicited`]. A closed connection or
    /// a read error is an error.
    fn drain_pending(&mut self) -> Result<(), Broken> {
        let stream = self.stream().map_err(|e| Broken::from_io(&e))?;
        stream
            .tcp()
            .set_nonblocking(true)
            .map_err(|e| Broken::from_io(&e))?;
        let mut chunk = [0u8; 512];
        let got = stream.read(&mut chunk);
        stream
            .tcp()
            .set_nonblocking(false)
            .map_err(|e| Broken::from_io(&e))?;
        match got {
            Ok(0) => Err(Broken::closed()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(Broken::from_io(&e)),
        }
    }

    /// Sends `data` (commands: the server owes no reply before them).
    fn send(&mut self, data: &[u8], limit: Duration) -> Result<(), Broken> {
        let verb = data
            .split(|b| b.is_ascii_whitespace())
            .next()
            .unwrap_or(b"");
        self.unsolicited(&String::from_utf8_lossy(verb))?;
        let stream = self.stream().map_err(|e| Broken::from_io(&e))?;
        stream
            .tcp()
            .set_write_timeout(Some(limit.max(Duration::from_millis(1))))
            .map_err(|e| Broken::from_io(&e))?;
        stream
            .write_all(data)
            .and_then(|()| stream.flush())
            .map_err(|e| Broken::from_io(&e))
    }

    /// Sends one command and reads its reply.
    fn command(&mut self, line: &str, limit: Duration) -> Result<Reply, Broken> {
        self.send(format!("{line}\r\n").as_bytes(), limit)?;
        self.reply(limit)
    }

    /// A deferral for a broken conversation, `while` what.
    fn broken(&self, b: &Broken, stage: &str) -> RecipientStatus {
        if b.protocol {
            return RecipientStatus::deferred(
                "4.5.0",
                format!(
                    "protocol error with {} while {stage}: {}",
                    self.who, b.detail
                ),
            );
        }
        let text = if b.timed_out {
            format!("conversation with {} timed out while {stage}", self.who)
        } else {
            format!(
                "lost connection with {} while {stage} ({})",
                self.who, b.detail
            )
        };
        RecipientStatus::deferred("4.4.2", text)
    }

    /// The status a reply gives (2xx delivered, 4xx deferred, 5xx bounced).
    fn said(&self, r: &Reply, command: &str) -> RecipientStatus {
        let text = format!(
            "host {} said: {} (in reply to {command})",
            self.who,
            r.text()
        );
        match r.class() {
            2 => RecipientStatus::delivered(r.text()),
            5 => RecipientStatus::bounced(&r.dsn(), text),
            _ => {
                RecipientStatus::deferred(&format!("4{}", r.dsn().get(1..).unwrap_or(".0.0")), text)
            }
        }
    }

    /// Says goodbye; the outcome is already decided, so a server that does
    /// not answer QUIT changes nothing.
    fn quit(&mut self, limit: Duration) {
        if let Err(b) = self.command("QUIT", limit) {
            log::debug!("{}: no reply to QUIT: {}", self.who, b.detail);
        }
    }
}

fn connect(server: &Server, s: &Settings) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Protocol, SockAddr, Socket, Type};
    let domain = match server.addr {
        SocketAddr::V4(_) => Domain::IPV4,
        SocketAddr::V6(_) => Domain::IPV6,
    };
    let socket = Socket::new(domain, Type::STREAM.cloexec(), Some(Protocol::TCP))?;
    let bind = match server.addr {
        SocketAddr::V4(_) => s.bind4,
        SocketAddr::V6(_) => s.bind6,
    };
    if let Some(ip) = bind {
        socket.bind(&SockAddr::from(SocketAddr::new(ip, 0)))?;
    }
    socket.connect_timeout(&SockAddr::from(server.addr), s.timeouts.connect)?;
    Ok(TcpStream::from(socket))
}

/// Greeting and EHLO (or HELO); the extensions, or why this server will
/// not do.
fn hello(c: &mut Client, s: &Settings) -> Result<Extensions, RecipientStatus> {
    let ehlo = c
        .command(&format!("EHLO {}", s.helo_name), s.timeouts.helo)
        .map_err(|b| c.broken(&b, "performing the EHLO handshake"))?;
    if ehlo.class() == 2 {
        return Ok(Extensions::from_ehlo(&ehlo));
    }
    if ehlo.class() == 5 {
        let helo = c
            .command(&format!("HELO {}", s.helo_name), s.timeouts.helo)
            .map_err(|b| c.broken(&b, "performing the HELO handshake"))?;
        if helo.class() == 2 {
            return Ok(Extensions::default());
        }
        return Err(c.said(&helo, "HELO command"));
    }
    Err(c.said(&ehlo, "EHLO command"))
}

/// STARTTLS and the handshake; then EHLO again.
fn start_tls(
    c: &mut Client,
    server: &Server,
    hop: &NextHop,
    s: &Settings,
) -> Result<Extensions, RecipientStatus> {
    let level = s.tls_level;
    let r = c
        .command("STARTTLS", s.timeouts.helo)
        .map_err(|b| c.broken(&b, "sending STARTTLS"))?;
    if r.class() != 2 {
        return Err(c.said(&r, "STARTTLS command"));
    }
    // Anything the server sent after its 220 would be read as if it came
    // over TLS: a plaintext injection (CVE-2011-0411); refuse.
    if !c.buf.is_empty() {
        return Err(RecipientStatus::deferred(
            "4.7.5",
            format!("{}: plaintext after the STARTTLS reply; TLS refused", c.who),
        ));
    }
    let failed = |why: String| RecipientStatus::deferred("4.7.5", why);
    let (config, trust) = s
        .tls
        .config(level)
        .map_err(|e| failed(format!("cannot start TLS: {e}")))?;
    // secure: the next hop's name (DNS is not trusted to name the server);
    // else the name of the server connected to.
    let name = if level == Level::Secure {
        &hop.host
    } else {
        &server.name
    };
    let server_name = tls::server_name(name).map_err(failed)?;
    let conn = ClientConnection::new(config, server_name)
        .map_err(|e| failed(format!("cannot start TLS: {e}")))?;
    let Some(Stream::Plain(tcp)) = c.stream.take() else {
        return Err(failed("TLS already active".into()));
    };
    let mut tls = StreamOwned::new(conn, tcp);
    let limit = s.timeouts.starttls.max(Duration::from_millis(1));
    let timeouts = tls
        .sock
        .set_read_timeout(Some(limit))
        .and_then(|()| tls.sock.set_write_timeout(Some(limit)));
    let handshake = timeouts.and_then(|()| {
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(())
    });
    if let Err(e) = handshake {
        let why = if level.verifies() {
            format!("Server certificate not verified: {} ({e})", c.who)
        } else {
            format!("Cannot start TLS: handshake failure with {}: {e}", c.who)
        };
        return Err(failed(why));
    }
    let trust = trust
        .lock()
        .ok()
        .and_then(|t| *t)
        .unwrap_or(tls::Trust::Untrusted);
    let summary = tls::session_summary(
        tls.conn.protocol_version(),
        tls.conn.negotiated_cipher_suite().map(|c| c.suite()),
        tls.conn.negotiated_key_exchange_group().map(|g| g.name()),
    );
    log::info!(
        "{} TLS connection established to {}:{}: {summary}",
        trust.word(),
        c.who,
        server.addr.port()
    );
    c.stream = Some(Stream::Tls(Box::new(tls)));
    let ehlo = c
        .command(&format!("EHLO {}", s.helo_name), s.timeouts.helo)
        .map_err(|b| c.broken(&b, "performing the EHLO handshake after STARTTLS"))?;
    if ehlo.class() != 2 {
        return Err(c.said(&ehlo, "EHLO command"));
    }
    Ok(Extensions::from_ehlo(&ehlo))
}

/// AUTH PLAIN or LOGIN with the next hop's credentials.
fn authenticate(
    c: &mut Client,
    ext: &Extensions,
    creds: &sasl::Credentials,
    tls_active: bool,
    s: &Settings,
) -> Result<(), RecipientStatus> {
    let noplaintext = if tls_active {
        s.sasl_tls_noplaintext
    } else {
        s.sasl_noplaintext
    };
    let fail = |why: String| RecipientStatus::deferred("4.7.0", why);
    if noplaintext {
        return Err(fail(format!(
            "SASL authentication failed; cannot authenticate to server {}: no mechanism available (PLAIN and LOGIN need TLS; see smtp_sasl_security_options)",
            c.who
        )));
    }
    let limit = s.timeouts.helo;
    let refused = |c: &Client, r: &Reply| {
        fail(format!(
            "SASL authentication failed; server {} said: {}",
            c.who,
            r.text()
        ))
    };
    let broken = |c: &Client, b: &Broken| c.broken(b, "authenticating");
    if ext.auth.iter().any(|m| m == "PLAIN") {
        let r = c
            .command(&format!("AUTH PLAIN {}", sasl::plain(creds)), limit)
            .map_err(|b| broken(c, &b))?;
        return if r.class() == 2 {
            Ok(())
        } else {
            Err(refused(c, &r))
        };
    }
    if ext.auth.iter().any(|m| m == "LOGIN") {
        for answer in [
            None,
            Some(creds.user.as_str()),
            Some(creds.password.as_str()),
        ] {
            let r = match answer {
                None => c.command("AUTH LOGIN", limit),
                Some(a) => c.command(&sasl::login(a), limit),
            }
            .map_err(|b| broken(c, &b))?;
            match r.class() {
                3 if answer.is_none_or(|a| a != creds.password) => continue,
                2 if answer.is_some_and(|a| a == creds.password) => return Ok(()),
                _ => return Err(refused(c, &r)),
            }
        }
    }
    Err(fail(format!(
        "SASL authentication failed; cannot authenticate to server {}: no mechanism available (offered: {})",
        c.who,
        ext.auth.join(" ")
    )))
}

/// The `MAIL FROM` command with its parameters.
fn mail_from(msg: &Message<'_>, ext: &Extensions, eight_bit: bool) -> String {
    let mut line = format!("MAIL FROM:<{}>", msg.sender);
    if ext.size.is_some() {
        line.push_str(&format!(" SIZE={}", msg.size));
    }
    if eight_bit && ext.eight_bit_mime {
        line.push_str(" BODY=8BITMIME");
    }
    line
}

/// Opens a session with `server`: connection, greeting, EHLO, STARTTLS
/// (unless `allow_tls` is false), AUTH; ready for a mail transaction.
pub fn open(
    server: &Server,
    hop: &NextHop,
    nexthop_text: &str,
    s: &Settings,
    allow_tls: bool,
) -> Result<Session, Failed> {
    let who = format!("{}[{}]", server.name, server.addr.ip());
    let relay = server.label();
    let tcp = match connect(server, s) {
        Ok(t) => t,
        Err(e) => {
            let e = if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                "Connection timed out".to_string()
            } else {
                e.to_string()
            };
            return Err(Failed::Next(
                RecipientStatus::deferred("4.4.1", format!("connect to {relay}: {e}")).of_site(),
            ));
        }
    };
    let opened = Instant::now();
    let mut c = Client {
        stream: Some(Stream::Plain(tcp)),
        buf: Vec::new(),
        who,
    };
    match handshake(&mut c, server, hop, nexthop_text, s, allow_tls) {
        Ok(ext) => Ok(Session {
            client: c,
            ext,
            relay,
            opened,
            uses: 0,
        }),
        Err(failed) => {
            if c.stream.is_some() {
                c.quit(s.timeouts.quit);
            }
            Err(match failed {
                Failed::Next(st) => Failed::Next(st.via(relay).of_site()),
                Failed::WithoutTls(st) => Failed::WithoutTls(st.via(relay).of_site()),
            })
        }
    }
}

impl Session {
    /// `name[address]:port`.
    pub fn relay(&self) -> &str {
        &self.relay
    }

    /// One mail transaction: a status per recipient (naming the relay and,
    /// on a reused connection, the use), and what the session is fit for.
    pub fn deliver(&mut self, msg: &Message<'_>, s: &Settings) -> (Vec<RecipientStatus>, After) {
        self.uses = self.uses.saturating_add(1);
        let (statuses, after) = transaction(&mut self.client, &self.ext, msg, s);
        let statuses = statuses
            .into_iter()
            .map(|st| st.via(self.relay.clone()).on_use(self.uses))
            .collect();
        let after = if self.client.stream.is_none() && after == After::Reusable {
            After::Unusable
        } else {
            after
        };
        (statuses, after)
    }

    /// RSET, to end the transaction state before the session waits for
    /// another: true when the server answered 2xx.
    pub fn reset(&mut self, s: &Settings) -> bool {
        match self.client.command("RSET", s.timeouts.rset) {
            Ok(r) if r.class() == 2 => true,
            Ok(r) => {
                log::debug!("{}: RSET answered {}", self.client.who, r.text());
                false
            }
            Err(b) => {
                // Timed out or lost: the connection is dead, and QUIT
                // would only wait (up to smtp_quit_timeout) before the
                // delivery is reported.
                self.client.stream = None;
                log::debug!("{}: RSET: {}", self.client.who, b.detail);
                false
            }
        }
    }

    /// True when the connection looks usable: not closed by the server,
    /// nothing unread (a server about to leave says 421 first).
    pub fn alive(&self) -> bool {
        let Some(stream) = &self.client.stream else {
            return false;
        };
        if !self.client.buf.is_empty() {
            return false;
        }
        let tcp = stream.tcp();
        let mut byte = [0u8; 1];
        let peeked = tcp.set_nonblocking(true).and_then(|()| tcp.peek(&mut byte));
        let restored = tcp.set_nonblocking(false);
        matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock) && restored.is_ok()
    }

    /// QUIT, waiting for the reply (at most `smtp_quit_timeout`).
    pub fn quit(mut self, s: &Settings) {
        if self.client.stream.is_some() {
            self.client.quit(s.timeouts.quit);
        }
    }

    /// QUIT without waiting for the reply, then close: for a session given
    /// up while the process is idle or about to exit, which must not wait
    /// on the server.
    pub fn close(mut self) {
        let who = self.client.who.clone();
        if self.client.stream.is_some() {
            if let Err(b) = self.client.send(b"QUIT\r\n", Duration::from_secs(1)) {
                log::debug!("{who}: QUIT: {}", b.detail);
            }
        }
    }
}

/// Greeting, EHLO, STARTTLS, AUTH: the extensions the server offers.
fn handshake(
    c: &mut Client,
    server: &Server,
    hop: &NextHop,
    nexthop_text: &str,
    s: &Settings,
    allow_tls: bool,
) -> Result<Extensions, Failed> {
    let greeting = match c.reply(s.timeouts.helo) {
        Ok(r) => r,
        Err(b) => {
            c.stream = None;
            return Err(Failed::Next(
                c.broken(&b, "receiving the initial server greeting"),
            ));
        }
    };
    if greeting.class() != 2 {
        let text = format!("host {} refused to talk to me: {}", c.who, greeting.text());
        let st = if greeting.class() == 5 {
            RecipientStatus::bounced(&greeting.dsn(), text)
        } else {
            RecipientStatus::deferred(&greeting.dsn(), text)
        };
        return Err(Failed::Next(st));
    }
    let mut ext = hello(c, s).map_err(Failed::Next)?;
    let mut tls_active = false;
    let level = s.tls_level;
    if level != Level::None && ext.starttls && allow_tls {
        match start_tls(c, server, hop, s) {
            Ok(e) => {
                ext = e;
                tls_active = true;
            }
            Err(st) => {
                // The connection is in an unknown TLS state: not reused.
                c.stream = None;
                return Err(if level == Level::May {
                    Failed::WithoutTls(st)
                } else {
                    Failed::Next(st)
                });
            }
        }
    } else if level.required() {
        return Err(Failed::Next(RecipientStatus::deferred(
            "4.7.4",
            format!("TLS is required, but was not offered by host {}", c.who),
        )));
    }
    if s.sasl_enable {
        if let Some(creds) = s.passwords.find(nexthop_text, &hop.host, hop.port) {
            if ext.auth.is_empty() {
                log::warn!("{}: offers no AUTH; sending without authentication", c.who);
            } else {
                authenticate(c, &ext, creds, tls_active, s).map_err(Failed::Next)?;
            }
        }
    }
    Ok(ext)
}

/// MAIL, RCPT, DATA and the body: a status per recipient, and what the
/// session is fit for afterwards (reusable only once the server accepted
/// the message).
fn transaction(
    c: &mut Client,
    ext: &Extensions,
    msg: &Message<'_>,
    s: &Settings,
) -> (Vec<RecipientStatus>, After) {
    let n = msg.recipients.len();
    let all = |st: RecipientStatus| (vec![st; n], After::Unusable);
    let stale = |st: RecipientStatus| (vec![st; n], After::Stale);
    if let Some(limit) = ext.size.filter(|&l| l > 0 && msg.size > l) {
        return all(RecipientStatus::bounced(
            "5.3.4",
            format!(
                "message size {} exceeds size limit {limit} of server {}",
                msg.size, c.who
            ),
        ));
    }
    let eight_bit =
        ext.eight_bit_mime && body::is_8bit(msg.fd, msg.offset, msg.size).unwrap_or(false);
    let mail = mail_from(msg, ext, eight_bit);
    let rcpts: Vec<String> = msg
        .recipients
        .iter()
        .map(|r| format!("RCPT TO:<{r}>"))
        .collect();
    let mut statuses: Vec<Option<RecipientStatus>> = vec![None; n];
    let data_reply;
    if ext.pipelining {
        // One write for the whole envelope and DATA (RFC 2920).
        let mut batch = format!("{mail}\r\n");
        for r in &rcpts {
            batch.push_str(r);
            batch.push_str("\r\n");
        }
        batch.push_str("DATA\r\n");
        if let Err(b) = c.send(batch.as_bytes(), s.timeouts.mail) {
            return stale(c.broken(&b, "sending MAIL FROM"));
        }
        let mail_reply = match c.reply(s.timeouts.mail) {
            Ok(r) => r,
            Err(b) => return stale(c.broken(&b, "sending MAIL FROM")),
        };
        for st in statuses.iter_mut() {
            match c.reply(s.timeouts.rcpt) {
                Ok(r) => *st = Some(c.said(&r, "RCPT TO command")),
                Err(b) => return all(c.broken(&b, "sending RCPT TO")),
            }
        }
        data_reply = match c.reply(s.timeouts.data_init) {
            Ok(r) => r,
            Err(b) => return all(c.broken(&b, "sending DATA")),
        };
        if mail_reply.class() != 2 {
            if data_reply.class() == 3 {
                // Nothing may be delivered: an empty message, then RSET.
                if let Err(b) = c.send(b".\r\n", s.timeouts.data_xfer) {
                    log::debug!("{}: after a refused MAIL FROM: {}", c.who, b.detail);
                }
            }
            return all(c.said(&mail_reply, "MAIL FROM command"));
        }
    } else {
        match c.command(&mail, s.timeouts.mail) {
            Ok(r) if r.class() == 2 => {}
            Ok(r) => return all(c.said(&r, "MAIL FROM command")),
            Err(b) => return stale(c.broken(&b, "sending MAIL FROM")),
        }
        for (st, r) in statuses.iter_mut().zip(&rcpts) {
            match c.command(r, s.timeouts.rcpt) {
                Ok(reply) => *st = Some(c.said(&reply, "RCPT TO command")),
                Err(b) => return all(c.broken(&b, "sending RCPT TO")),
            }
        }
        if !statuses
            .iter()
            .flatten()
            .any(|st| st.outcome == postern_common::handoff::Outcome::Delivered)
        {
            return (statuses.into_iter().flatten().collect(), After::Unusable);
        }
        data_reply = match c.command("DATA", s.timeouts.data_init) {
            Ok(r) => r,
            Err(b) => return all(c.broken(&b, "sending DATA")),
        };
    }
    let accepted: Vec<usize> = statuses
        .iter()
        .enumerate()
        .filter(|(_, st)| {
            st.as_ref()
                .is_some_and(|st| st.outcome == postern_common::handoff::Outcome::Delivered)
        })
        .map(|(i, _)| i)
        .collect();
    let finish = |statuses: Vec<Option<RecipientStatus>>, for_accepted: &RecipientStatus| {
        let after = if for_accepted.outcome == postern_common::handoff::Outcome::Delivered {
            After::Reusable
        } else {
            After::Unusable
        };
        (
            statuses
                .into_iter()
                .enumerate()
                .map(|(i, st)| {
                    if accepted.contains(&i) {
                        for_accepted.clone()
                    } else {
                        st.unwrap_or_else(|| RecipientStatus::deferred("4.3.0", "no reply"))
                    }
                })
                .collect::<Vec<_>>(),
            after,
        )
    };
    if data_reply.class() == 2 {
        // DATA calls for 354: a 2xx would pass for delivery of a message
        // never sent.
        c.stream = None;
        let st = c.broken(
            &Broken::protocol(format!(
                "{} in reply to DATA command, not 354",
                data_reply.text()
            )),
            "sending DATA",
        );
        return finish(statuses, &st);
    }
    if data_reply.class() != 3 {
        let st = c.said(&data_reply, "DATA command");
        return finish(statuses, &st);
    }
    if accepted.is_empty() {
        // DATA was pipelined: end it empty; nothing is delivered.
        if let Err(b) = c.send(b".\r\n", s.timeouts.data_xfer) {
            log::debug!("{}: ending an empty DATA: {}", c.who, b.detail);
        }
        return finish(statuses, &RecipientStatus::deferred("4.3.0", "unused"));
    }
    // Nothing may come between 354 and our final dot: a reply already
    // here would be taken for the answer to the dot (a liar answering 250
    // before the data arrived).
    if let Err(b) = c.unsolicited("the message body") {
        return finish(statuses, &c.broken(&b, "sending message body"));
    }
    let sent = {
        let who = c.who.clone();
        match c.stream() {
            Ok(stream) => {
                let limit = s.timeouts.data_xfer.max(Duration::from_millis(1));
                match stream.tcp().set_write_timeout(Some(limit)) {
                    Ok(()) => body::send_body(msg.fd, msg.offset, Some(msg.size), stream),
                    Err(e) => Err(body::SendError::Write(e)),
                }
            }
            Err(e) => {
                log::debug!("{who}: {e}");
                Err(body::SendError::Write(e))
            }
        }
    };
    let end = match sent {
        Ok(end) => end,
        Err(body::SendError::Read(e)) => {
            // Our fault, not the server's: the connection is dropped
            // without the final dot, so nothing is delivered.
            c.stream = None;
            let st = RecipientStatus::deferred(
                "4.3.0",
                format!("cannot read the queue file of {}: {e}", msg.queue_id),
            );
            return finish(statuses, &st);
        }
        Err(body::SendError::Write(e)) => {
            c.stream = None;
            let st = c.broken(&Broken::from_io(&e), "sending message body");
            return finish(statuses, &st);
        }
    };
    // The last look before the dot.
    if let Err(b) = c
        .drain_pending()
        .and_then(|()| c.unsolicited("the end of data"))
    {
        c.stream = None;
        return finish(statuses, &c.broken(&b, "sending message body"));
    }
    let wrote = c
        .stream()
        .and_then(|stream| stream.write_all(&end).and_then(|()| stream.flush()));
    if let Err(e) = wrote {
        c.stream = None;
        return finish(
            statuses,
            &c.broken(&Broken::from_io(&e), "sending end of data"),
        );
    }
    let done = match c.reply(s.timeouts.data_done) {
        Ok(r) => c.said(&r, "end of DATA command"),
        Err(b) => {
            c.stream = None;
            c.broken(
                &b,
                "sending end of data -- message may be sent more than once",
            )
        }
    };
    finish(statuses, &done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client connected to a local server that writes `script`, one
    /// item every `every`, then holds the connection.
    fn scripted(script: Vec<&'static [u8]>, every: Duration) -> Client {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for item in script {
                if s.write_all(item).is_err() {
                    return;
                }
                std::thread::sleep(every);
            }
            let _ = s.read(&mut [0u8; 16]);
        });
        Client {
            stream: Some(Stream::Plain(TcpStream::connect(addr).unwrap())),
            buf: Vec::new(),
            who: "peer[127.0.0.1]".into(),
        }
    }

    #[test]
    fn a_dripped_reply_times_out_within_its_limit() {
        let mut c = scripted(vec![b"250-slowly\r\n"; 1000], Duration::from_millis(20));
        let start = Instant::now();
        let b = c.reply(Duration::from_millis(300)).unwrap_err();
        assert!(b.timed_out, "{b:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_rset_left_unanswered_ends_the_session_without_quit() {
        // The server took the message, then says nothing to RSET: the
        // connection is dead (as after any timeout), and QUIT would only
        // hold the delivery's report for up to smtp_quit_timeout.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let heard = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            let _ = s.read_to_end(&mut all);
            all
        });
        let c = postern_conf::Config::from_text(
            "main.cf",
            b"smtp_rset_timeout = 1s\nsmtp_quit_timeout = 1s\n",
            "master.cf",
            b"",
            &postern_conf::ServicesFile::parse(""),
        )
        .into_result()
        .unwrap();
        let s = Settings::load(&c, 0).unwrap();
        let mut session = Session {
            client: Client {
                stream: Some(Stream::Plain(TcpStream::connect(addr).unwrap())),
                buf: Vec::new(),
                who: "peer[127.0.0.1]".into(),
            },
            ext: Extensions::default(),
            relay: "peer[127.0.0.1]:25".into(),
            opened: Instant::now(),
            uses: 1,
        };
        assert!(!session.reset(&s));
        session.quit(&s);
        assert_eq!(String::from_utf8_lossy(&heard.join().unwrap()), "RSET\r\n");
    }

    #[test]
    fn a_reply_ahead_of_its_command_is_a_protocol_error() {
        let mut c = scripted(
            vec![b"354 go\r\n250 2.0.0 Ok: queued as LIE\r\n"],
            Duration::ZERO,
        );
        let limit = Duration::from_secs(10);
        assert_eq!(c.reply(limit).unwrap().code, 354);
        let b = c.unsolicited("the message body").unwrap_err();
        assert!(b.protocol && b.detail.contains("queued as LIE"), "{b:?}");
        // The connection is dropped: nothing more is sent on it.
        assert!(c.stream.is_none());
        assert!(c.send(b"QUIT\r\n", limit).is_err());
    }

    #[test]
    fn mail_from_parameters() {
        let f = tempfile::tempfile().unwrap();
        let fd = OwnedFd::from(f);
        let msg = Message {
            queue_id: "Q",
            sender: "ann@a.test",
            recipients: vec!["bob@b.test"],
            fd: &fd,
            offset: 0,
            size: 42,
        };
        let mut ext = Extensions::default();
        assert_eq!(mail_from(&msg, &ext, true), "MAIL FROM:<ann@a.test>");
        ext.size = Some(0);
        ext.eight_bit_mime = true;
        assert_eq!(
            mail_from(&msg, &ext, true),
            "MAIL FROM:<ann@a.test> SIZE=42 BODY=8BITMIME"
        );
        assert_eq!(
            mail_from(&msg, &ext, false),
            "MAIL FROM:<ann@a.test> SIZE=42"
        );
    }
}
