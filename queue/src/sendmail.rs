//! `postern-sendmail` (also `postern sendmail`, and `sendmail`, `mailq`,
//! `newaliases` when linked under those names): the sendmail(1) command
//! line, for programs and people that submit mail that way.
//!
//! ```text
//! postern sendmail [-t] [-i|-oi] [-f sender] [-F full name] [-C dir] [recipient ...] < message
//! postern sendmail -bs | -bp | -bi | -q
//! ```
//!
//! The mode follows the name called (`mailq`: `-bp`, `newaliases`: `-bi`,
//! anything else: `-bm`), then the options. `-bm`: `-f`/`-r` set the
//! envelope sender (`-f ''` or `-f '<>'` the null sender); `-F` the full
//! name of a `From:` header added when the message has none; `-t` takes
//! the recipients from `To:`, `Cc:` and `Bcc:` (added to those on the
//! command line) and removes `Bcc:`; without `-i`, a line with a single `.`
//! ends the message. An mbox `From ` line before the headers is dropped.
//! Line ends are normalised to LF. Missing `From:`, `Date:` and
//! `Message-ID:` headers are added. `-bs`: an SMTP session on standard
//! input and output ([`crate::smtp_session`]). `-bp`: the queue in
//! Postfix's mailq layout, from the showq service ([`crate::showq`]).
//! `-bi`/`-I`: says that postern reads the alias files directly (nothing
//! to rebuild). `-q`: the queue manager retries every deferred message now.
//! `-Am`, `-Ac`, `-O opt=val`, `-oX...`, `-N`, `-R`, `-V`, `-B`, `-L`, `-X`,
//! `-h`, `-v`, `-n`, `-U`, `-G`, `-m`, `-e` and `-q<interval>` are
//! accepted and ignored; `-bd`, `-bv`, `-qR...` and other options are
//! refused (64). The message goes to the submit
//! service of the instance named by `-C`/`-c DIR`, `$POSTERN_CONFIG` or
//! `MAIL_CONFIG`, else `/etc/postern` (when it has a main.cf), else the
//! embedded default configuration.
//!
//! Exit status (the reason on standard error):
//!
//! - 0: queued (the queue id is durable in `incoming`);
//! - 75 (EX_TEMPFAIL): `message not queued: 4.x.y ...` — not queued, and it
//!   will not be (it failed before the end of the message was sent, or the
//!   service refused it for now); try again;
//! - 65 (EX_DATAERR): `message not queued: 5.x.y ...` — refused;
//! - 64 (EX_USAGE): a bad command line or no recipients;
//! - 74 (EX_IOERR): the message could not be read from standard input (not
//!   queued);
//! - 70 (EX_SOFTWARE): `message may have been queued: ...` — the end of the
//!   message was sent but the answer never came (the service died or the
//!   connection broke); check `postern queue list` before sending it again;
//! - 78 (EX_CONFIG): the configuration cannot be read;
//! - 69 (EX_UNAVAILABLE): `-bp` without an answering showq service (and
//!   not root or the mail owner), `-q` without a queue manager;
//! - 77 (EX_NOPERM): `-bp` refused by `authorized_mailq_users`.
//!
//! After the end of the message is sent sendmail waits for the answer
//! without a deadline of its own (`submit_timeout` bounds only the waits
//! before it), so it never gives up on a message the service goes on to
//! queue.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use postern_common::{account, sysexits};
use postern_conf::embedded::Layout;
use postern_conf::{params, Config, ServicesFile, Source};

use crate::headers;
use crate::submit::{self, SubmitError, SubmitRequest, Timing, SUBMIT_VERSION};
use postern_common::log::rfc5322_date;

/// What the command does.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `-bm` (the default): read a message and queue it.
    #[default]
    Deliver,
    /// `-bp` (the name `mailq`): list the queue.
    ListQueue,
    /// `-bi`/`-I` (the name `newaliases`): say what postern does with the
    /// alias files (it reads them directly: nothing to rebuild).
    Aliases,
    /// `-q`: ask the queue manager to retry every deferred message now.
    Flush,
    /// `-bs`: an SMTP session on standard input and output.
    Smtp,
}

impl Mode {
    /// The mode the program's name selects (`mailq`, `newaliases`; anything
    /// else is sendmail).
    pub fn by_name(name: &str) -> Mode {
        match name {
            "mailq" => Mode::ListQueue,
            "newaliases" => Mode::Aliases,
            _ => Mode::Deliver,
        }
    }
}

/// The parsed command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// What to do.
    pub mode: Mode,
    /// `-f`/`-r`.
    pub sender: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
    /// `-t`.
    pub extract: bool,
    /// `-i`/`-oi`.
    pub ignore_dots: bool,
    /// `-C`/`-c`.
    pub config_dir: Option<PathBuf>,
    /// `--queue-directory`/`--data-directory` (the embedded configuration,
    /// as `postern sendmail` passes it on).
    pub layout: Option<(PathBuf, PathBuf)>,
    /// Recipients from the command line.
    pub recipients: Vec<String>,
}

/// Parses sendmail(1) arguments (without the program name).
pub fn parse_args(args: &[String]) -> Result<Options, String> {
    parse_args_as(Mode::Deliver, args)
}

/// Parses sendmail(1) arguments for a program whose name selected `mode`.
pub fn parse_args_as(mode: Mode, args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        mode,
        ..Options::default()
    };
    let mut i = 0;
    let mut queue_dir = None;
    let mut data_dir = None;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            o.recipients.extend(args[i..].iter().cloned());
            break;
        }
        if a == "--queue-directory" || a == "--data-directory" {
            let v = args.get(i).ok_or(format!("{a} needs a value"))?;
            i += 1;
            if a == "--queue-directory" {
                queue_dir = Some(PathBuf::from(v));
            } else {
                data_dir = Some(PathBuf::from(v));
            }
            continue;
        }
        let Some(flag) = a.strip_prefix('-').filter(|f| !f.is_empty()) else {
            o.recipients.push(a.clone());
            continue;
        };
        let mut value = |name: &str, rest: &str| -> Result<String, String> {
            if !rest.is_empty() {
                return Ok(rest.to_string());
            }
            let v = args
                .get(i)
                .cloned()
                .ok_or_else(|| format!("option -{name} needs a value"))?;
            i += 1;
            Ok(v)
        };
        let mut chars = flag.chars();
        let c = chars.next().map(String::from).unwrap_or_default();
        let rest = chars.as_str();
        let c = c.as_str();
        match c {
            "f" | "r" => o.sender = Some(value(c, rest)?),
            "F" => o.full_name = Some(value(c, rest)?),
            "C" | "c" => o.config_dir = Some(PathBuf::from(value(c, rest)?)),
            "t" if rest.is_empty() => o.extract = true,
            "i" if rest.is_empty() => o.ignore_dots = true,
            "o" if rest == "i" => o.ignore_dots = true,
            "o" => {
                // -oXvalue: sendmail options, ignored; -o alone takes the
                // next word.
                if rest.is_empty() {
                    value(c, rest)?;
                }
            }
            "b" => {
                o.mode = match rest {
                    "m" => Mode::Deliver,
                    "p" => Mode::ListQueue,
                    "i" => Mode::Aliases,
                    "s" => Mode::Smtp,
                    "d" => return Err(
                        "-bd (daemon mode) is not supported: start postern with `postern start`"
                            .into(),
                    ),
                    other => return Err(format!("-b{other} is not supported")),
                }
            }
            "I" if rest.is_empty() => o.mode = Mode::Aliases,
            "q" => match rest.chars().next() {
                None => o.mode = Mode::Flush,
                // -q30m: a queue run interval; qmgr runs on its own.
                Some(d) if d.is_ascii_digit() => {}
                Some(_) => {
                    return Err(format!(
                        "-q{rest} is not supported (postern flushes the whole queue: use -q)"
                    ))
                }
            },
            "A" => match value(c, rest)?.as_str() {
                "m" | "c" => {}
                other => return Err(format!("-A{other}: use -Am or -Ac")),
            },
            "O" => {
                let v = value(c, rest)?;
                if !v.contains('=') {
                    return Err(format!("-O {v}: expected option=value"));
                }
            }
            "N" | "B" | "R" | "V" | "L" | "X" | "h" => {
                value(c, rest)?;
            }
            "v" | "n" | "U" | "G" | "m" | "e" => {}
            _ => return Err(format!("unknown option -{flag}")),
        }
    }
    match (queue_dir, data_dir) {
        (Some(q), Some(d)) => o.layout = Some((q, d)),
        (None, None) => {}
        _ => return Err("--queue-directory and --data-directory go together".into()),
    }
    Ok(o)
}

/// The instance the options name.
pub fn source(o: &Options) -> Source {
    if let Some(d) = &o.config_dir {
        return Source::Dir(d.clone());
    }
    if let Some((q, d)) = &o.layout {
        return Source::Embedded(Layout {
            queue_directory: q.clone(),
            data_directory: d.clone(),
        });
    }
    postern_common::instance::choose_source(None, &["POSTERN_CONFIG", "MAIL_CONFIG"])
}

/// Reads the message: line ends normalised, a lone `.` ending it unless
/// `ignore_dots`. Returns (header block, body reader).
struct Input<R> {
    inner: R,
    ignore_dots: bool,
    done: bool,
}

impl<R: BufRead> Input<R> {
    /// The next line with its `\n` (normalised), or None at the end.
    fn line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        let mut line = Vec::new();
        if self.inner.read_until(b'\n', &mut line)? == 0 {
            self.done = true;
            return Ok(None);
        }
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        if !self.ignore_dots && line == b"." {
            self.done = true;
            return Ok(None);
        }
        line.push(b'\n');
        Ok(Some(line))
    }
}

/// How much input a reader holds already (what can be read without
/// waiting).
trait Buffered {
    fn buffered(&self) -> usize;
}

impl<T: Read> Buffered for BufReader<T> {
    fn buffered(&self) -> usize {
        self.buffer().len()
    }
}

impl Buffered for &[u8] {
    fn buffered(&self) -> usize {
        self.len()
    }
}

/// The body after the header block, read lazily: each read returns as
/// many lines as fit and are at hand (it waits for input only when it has
/// nothing to return), so that the message goes out in large pieces
/// without holding back what a slow writer already gave.
struct Body<R> {
    input: Input<R>,
    pending: Vec<u8>,
    at: usize,
}

impl<R: BufRead + Buffered> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut n = 0;
        loop {
            let k = (buf.len() - n).min(self.pending.len() - self.at);
            buf[n..n + k].copy_from_slice(&self.pending[self.at..self.at + k]);
            self.at += k;
            n += k;
            if n == buf.len() || (n > 0 && self.input.inner.buffered() == 0) {
                return Ok(n);
            }
            match self.input.line()? {
                Some(l) => {
                    self.pending = l;
                    self.at = 0;
                }
                None => return Ok(n),
            }
        }
    }
}

/// What `--help` prints.
const HELP: &str = "\
usage: sendmail [-t] [-i|-oi] [-f sender] [-F name] [-C dir] recipient ... < message
       sendmail -bs | -bp | -bi | -q      (also called as mailq, newaliases)
  -f, -r SENDER  envelope sender ('<>': the null sender)
  -F NAME        full name for a From: header that is added
  -t             recipients from To:, Cc:, Bcc: (Bcc: removed)
  -i, -oi        a line with a lone '.' does not end the message
  -bs            an SMTP session on standard input and output
  -bp            list the queue (as mailq)
  -bi, -I        what postern does with aliases (as newaliases)
  -q             retry deferred mail now
  -C DIR         the instance's configuration directory
exit: 0 queued, 75 not queued (try again), 65 refused, 64 usage,
      74 cannot read the message, 70 may have been queued, 78 configuration";

/// Runs `postern-sendmail` with `args`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    main_as("sendmail", args)
}

/// The name a program was called by (the last part of `argv[0]`).
pub fn called_as(argv0: &str) -> &str {
    argv0.rsplit('/').next().unwrap_or(argv0)
}

/// Runs the sendmail command called by `name` (`sendmail`, `mailq`,
/// `newaliases`; `postern-sendmail` is sendmail) with `args`; returns the
/// exit status.
pub fn main_as(name: &str, args: &[String]) -> i32 {
    if args.first().is_some_and(|a| a == "--help") {
        println!("{HELP}");
        return sysexits::EX_OK;
    }
    let o = match parse_args_as(Mode::by_name(name), args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("postern-sendmail: {e}");
            eprintln!(
                "usage: postern sendmail [-t] [-i] [-f sender] [-F name] [-C dir] recipient ... | -bs | -bp | -bi | -q"
            );
            return sysexits::EX_USAGE;
        }
    };
    let source = source(&o);
    // main.cf alone: master.cf's services are not parsed, so no service
    // name is looked up and /etc/services need not be read (an empty table).
    let config = match Config::load_main_only(&source, &ServicesFile::default()).into_result() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern-sendmail: fatal: configuration: {e}");
            return sysexits::EX_CONFIG;
        }
    };
    match o.mode {
        Mode::Deliver => enqueue(&o, &config),
        Mode::ListQueue => list_queue(&config),
        Mode::Aliases => aliases(&config),
        Mode::Flush => flush(&config),
        Mode::Smtp => {
            let stdin = std::io::stdin();
            let mut input = BufReader::with_capacity(64 * 1024, stdin.lock());
            let mut output = std::io::stdout().lock();
            crate::smtp_session::run(&config, &mut input, &mut output)
        }
    }
}

/// The mail owner's uid, if the account exists.
fn mail_owner_uid(config: &Config) -> Option<u32> {
    account::user_by_name(config.text(params::MAIL_OWNER))
        .ok()
        .flatten()
        .map(|a| a.uid)
}

/// `-bp`/`mailq`: the queue, in Postfix's layout, from the showq service
/// (root and the mail owner read the queue directly when it does not
/// answer).
fn list_queue(config: &Config) -> i32 {
    let queue = Path::new(config.text(params::QUEUE_DIRECTORY));
    let uid = nix::unistd::Uid::effective().as_raw();
    let items = match crate::showq::request(
        &queue.join(crate::showq::SOCKET),
        crate::showq::TIMEOUT,
    ) {
        Ok(items) => items,
        Err(e) if uid == 0 || Some(uid) == mail_owner_uid(config) => {
            match crate::showq::read_directly(queue) {
                Ok(items) => items,
                Err(e2) => {
                    eprintln!("postern-sendmail: fatal: cannot list the queue: {e}; {e2}");
                    return sysexits::EX_UNAVAILABLE;
                }
            }
        }
        Err(e) => {
            let code = if e.starts_with("permission denied") {
                sysexits::EX_NOPERM
            } else {
                sysexits::EX_UNAVAILABLE
            };
            eprintln!(
                "postern-sendmail: fatal: queue report unavailable: {e} (is the showq service in master.cf and the instance running?)"
            );
            return code;
        }
    };
    print!("{}", crate::showq::format(&items));
    sysexits::EX_OK
}

/// `-bi`/`-I`/`newaliases`: postern reads the alias files as text each
/// time it routes mail; there is no database to rebuild. Says so, and
/// which files are read (warning about those missing).
fn aliases(config: &Config) -> i32 {
    let files: Vec<String> = config
        .list(params::ALIAS_MAPS)
        .iter()
        .map(|m| m.split_once(':').map_or(m.as_str(), |(_, f)| f).to_string())
        .collect();
    println!(
        "postern reads the alias files directly (alias_maps: {}); there is no database to rebuild: edits apply to the next message routed",
        if files.is_empty() { "none".to_string() } else { files.join(", ") }
    );
    for f in &files {
        if !Path::new(f).exists() {
            eprintln!("postern-sendmail: warning: {f} does not exist");
        }
    }
    sysexits::EX_OK
}

/// `-q`: asks the queue manager to retry every deferred message now, as
/// `postern queue flush` (anyone may, as with Postfix's default
/// `authorized_flush_users`; the queue manager's fifo is public).
fn flush(config: &Config) -> i32 {
    let queue = Path::new(config.text(params::QUEUE_DIRECTORY));
    match crate::qmgr::poke(queue, b"F") {
        Ok(()) => sysexits::EX_OK,
        Err(e) => {
            eprintln!(
                "postern-sendmail: fatal: cannot reach the queue manager at {}: {e} (is the instance running?)",
                queue.join(crate::qmgr::TRIGGER).display()
            );
            sysexits::EX_UNAVAILABLE
        }
    }
}

/// Whether `l` (a line with its `\n`) is a header line (or a
/// continuation), the first of the block when `first`.
fn is_header_line(l: &[u8], first: bool) -> bool {
    if l.starts_with(b" ") || l.starts_with(b"\t") {
        return !first;
    }
    l.iter()
        .position(|&b| b == b':')
        .is_some_and(|p| p > 0 && !l[..p].iter().any(|b| b.is_ascii_whitespace()))
}

/// What the header block of a message becomes, and who `-t` finds in it.
#[derive(Debug)]
pub struct Prepared {
    /// The header block as queued (without the empty line after it).
    pub head: Vec<u8>,
    /// Recipients from `To:`, `Cc:`, `Bcc:` (when asked).
    pub extracted: Vec<String>,
}

/// Prepares the header block `header_lines`: `Bcc:` removed when
/// `extract` (whose recipients are returned), `From:`, `Date:` and
/// `Message-ID:` added when missing (`From:` from `sender`, else the
/// submitting user, either at `myorigin` when it has no domain, with
/// `full_name`; the `Message-ID:` at `myhostname`).
pub fn prepare_headers(
    header_lines: &[Vec<u8>],
    extract: bool,
    sender: Option<&str>,
    full_name: Option<&str>,
    myhostname: &str,
    myorigin: &str,
) -> Prepared {
    let block = String::from_utf8_lossy(&header_lines.concat()).into_owned();
    let fields = headers::fields(&block);
    let has = |name: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(name));
    let mut extracted = Vec::new();
    if extract {
        for f in &fields {
            if ["to", "cc", "bcc"]
                .iter()
                .any(|n| f.name.eq_ignore_ascii_case(n))
            {
                extracted.extend(headers::addresses(&f.value));
            }
        }
    }
    let mut head = Vec::new();
    let mut skipping = false;
    for l in header_lines {
        let continuation = l.starts_with(b" ") || l.starts_with(b"\t");
        if !continuation {
            skipping = extract && l.len() >= 4 && l[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            head.extend_from_slice(l);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if !has("from") {
        // The sender given, else the submitting user (looked up only then).
        let who = match sender.filter(|s| !s.is_empty()) {
            Some(s) => s.to_string(),
            None => {
                let uid = nix::unistd::Uid::current().as_raw();
                account::user_by_uid(uid)
                    .ok()
                    .flatten()
                    .map_or_else(|| format!("uid{uid}"), |a| a.name)
            }
        };
        let address = submit::qualified(&who, myorigin);
        let line = match full_name {
            Some(n) => format!(
                "From: \"{}\" <{address}>\n",
                n.replace(['"', '\n', '\r'], "")
            ),
            None => format!("From: {address}\n"),
        };
        head.extend_from_slice(line.as_bytes());
    }
    if !has("date") {
        head.extend_from_slice(format!("Date: {}\n", rfc5322_date(now)).as_bytes());
    }
    if !has("message-id") {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        head.extend_from_slice(
            format!(
                "Message-ID: <{now}.{nanos:09}.{}@{myhostname}>\n",
                std::process::id()
            )
            .as_bytes(),
        );
    }
    Prepared { head, extracted }
}

/// Splits `message` (lines ending in `\n`) into its header lines and the
/// rest (from the first line that is not a header), dropping a leading
/// mbox `From ` line.
pub fn split_message(message: &[u8]) -> (Vec<Vec<u8>>, &[u8]) {
    let mut at = 0;
    let mut lines = Vec::new();
    while at < message.len() {
        let end = message[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(message.len(), |p| at + p + 1);
        let l = &message[at..end];
        if at == 0 && l.starts_with(b"From ") {
            at = end;
            continue;
        }
        if !is_header_line(l, lines.is_empty()) {
            break;
        }
        lines.push(l.to_vec());
        at = end;
    }
    (lines, &message[at..])
}

/// The envelope sender of `-f`: angle brackets and white space removed.
fn envelope_sender(o: &Options) -> Option<String> {
    o.sender.as_ref().map(|s| {
        let s = s.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(s);
        s.to_string()
    })
}

/// The submit socket and timing of `config`.
pub fn submit_target(config: &Config) -> (PathBuf, Timing) {
    let socket = Path::new(config.text(params::QUEUE_DIRECTORY)).join("public/submit");
    let timing = Timing {
        submit_timeout: config.time(params::SUBMIT_TIMEOUT),
        keepalive: config.time(params::SUBMIT_INPUT_TIMEOUT) / 3,
    };
    (socket, timing)
}

/// `-bm`: reads the message from standard input and queues it.
fn enqueue(o: &Options, config: &Config) -> i32 {
    let stdin = std::io::stdin();
    let mut input = Input {
        inner: BufReader::with_capacity(64 * 1024, stdin),
        ignore_dots: o.ignore_dots,
        done: false,
    };
    // The header block: up to the first empty line (or a line that is not
    // a header, which starts the body).
    let mut header_lines: Vec<Vec<u8>> = Vec::new();
    let mut first_body_line: Option<Vec<u8>> = None;
    let mut first = true;
    loop {
        match input.line() {
            // An mbox `From ` line before the headers (`git format-patch`
            // output) is not part of the message: Postfix drops it too.
            Ok(Some(l)) if std::mem::take(&mut first) && l.starts_with(b"From ") => {}
            Ok(Some(l)) => {
                if l == b"\n" || !is_header_line(&l, header_lines.is_empty()) {
                    first_body_line = Some(l);
                    break;
                }
                header_lines.push(l);
            }
            Ok(None) => break,
            Err(e) => {
                eprintln!("postern-sendmail: cannot read the message: {e}");
                return sysexits::EX_IOERR;
            }
        }
    }
    let sender = envelope_sender(o);
    let prepared = prepare_headers(
        &header_lines,
        o.extract,
        sender.as_deref(),
        o.full_name.as_deref(),
        config.text(params::MYHOSTNAME),
        config.text(params::MYORIGIN).trim(),
    );
    let mut recipients = o.recipients.clone();
    recipients.extend(prepared.extracted);
    if recipients.is_empty() {
        eprintln!("postern-sendmail: no recipients (name them, or use -t with To:/Cc:/Bcc:)");
        return sysexits::EX_USAGE;
    }
    let mut head = prepared.head;
    match &first_body_line {
        Some(l) if l == b"\n" => head.extend_from_slice(l),
        Some(l) => {
            head.push(b'\n');
            head.extend_from_slice(l);
        }
        None => head.push(b'\n'),
    }
    let body = Body {
        input,
        pending: Vec::new(),
        at: 0,
    };
    let message = Box::new(std::io::Cursor::new(head).chain(body));
    let request = SubmitRequest {
        version: SUBMIT_VERSION,
        sender,
        recipients,
    };
    let (socket, timing) = submit_target(config);
    match submit::submit(&socket, &request, message, timing) {
        Ok(_id) => sysexits::EX_OK,
        Err(SubmitError::Refused(r)) => {
            eprintln!("postern-sendmail: message not queued: {} {}", r.dsn, r.text);
            if r.dsn.starts_with('4') {
                sysexits::EX_TEMPFAIL
            } else {
                sysexits::EX_DATAERR
            }
        }
        Err(SubmitError::NotQueued(why)) => {
            eprintln!("postern-sendmail: message not queued: 4.3.0 {why}");
            sysexits::EX_TEMPFAIL
        }
        Err(SubmitError::Input(why)) => {
            eprintln!("postern-sendmail: message not queued: {why}");
            sysexits::EX_IOERR
        }
        Err(SubmitError::Unknown(why)) => {
            eprintln!(
                "postern-sendmail: message may have been queued: {why}; check `postern queue list` before sending it again"
            );
            sysexits::EX_SOFTWARE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_lines() {
        let o = parse_args(&args(&["-oi", "-f", "a@b", "-Fx y", "-t", "bob", "carol"])).unwrap();
        assert!(o.ignore_dots && o.extract);
        assert_eq!(o.sender.as_deref(), Some("a@b"));
        assert_eq!(o.full_name.as_deref(), Some("x y"));
        assert_eq!(o.recipients, vec!["bob", "carol"]);
        let o = parse_args(&args(&[
            "-fa@b", "-i", "-odi", "-oem", "-C/x", "--", "-odd",
        ]))
        .unwrap();
        assert_eq!(o.sender.as_deref(), Some("a@b"));
        assert_eq!(o.config_dir, Some(PathBuf::from("/x")));
        assert_eq!(o.recipients, vec!["-odd"]);
        assert!(parse_args(&args(&["-f"])).is_err());
        assert!(parse_args(&args(&["-Z"])).is_err());
        assert!(parse_args(&args(&["-é"])).is_err());
        assert!(parse_args(&args(&["-bd"])).is_err());
        assert!(parse_args(&args(&["-bv"])).is_err());
        assert!(parse_args(&args(&["-qRsite"])).is_err());
        assert!(parse_args(&args(&["-Ax"])).is_err());
        assert!(parse_args(&args(&["-O", "novalue"])).is_err());
        let mode = |a: &[&str]| parse_args(&args(a)).unwrap().mode;
        assert_eq!(mode(&["-bs"]), Mode::Smtp);
        assert_eq!(mode(&["-bi"]), Mode::Aliases);
        assert_eq!(mode(&["-I"]), Mode::Aliases);
        assert_eq!(mode(&["-bp"]), Mode::ListQueue);
        assert_eq!(mode(&["-q"]), Mode::Flush);
        // -q30m: an interval, ignored; -q takes no following word.
        let o = parse_args(&args(&[
            "-q30m", "-Am", "-Ac", "-O", "a=b", "-Ob=c", "-N", "never", "-R", "hdrs", "-V",
            "envid", "-oem", "bob",
        ]))
        .unwrap();
        assert_eq!(
            (o.mode, o.recipients),
            (Mode::Deliver, vec!["bob".to_string()])
        );
        assert_eq!(
            parse_args_as(Mode::by_name("mailq"), &[]).unwrap().mode,
            Mode::ListQueue
        );
        assert_eq!(
            parse_args_as(Mode::by_name("newaliases"), &[])
                .unwrap()
                .mode,
            Mode::Aliases
        );
        assert_eq!(
            Mode::by_name(called_as("/usr/sbin/sendmail")),
            Mode::Deliver
        );
        assert_eq!(Mode::by_name(called_as("/usr/bin/mailq")), Mode::ListQueue);
        assert!(parse_args(&args(&["--queue-directory", "/q"])).is_err());
    }

    #[test]
    fn headers_are_split_and_completed() {
        let (lines, rest) = split_message(
            b"From x Mon Sep 17 00:00:00 2001\nTo: a,\n b\nBcc: c\nSubject: s\n\nbody\n",
        );
        assert_eq!(lines.len(), 4);
        assert_eq!(rest, b"\nbody\n");
        let p = prepare_headers(&lines, true, Some("s@x"), None, "h.example", "h.example");
        let head = String::from_utf8(p.head).unwrap();
        assert!(
            head.starts_with("To: a,\n b\nSubject: s\nFrom: s@x\nDate: "),
            "{head}"
        );
        assert!(head.contains("@h.example>\n"), "{head}");
        assert_eq!(p.extracted, vec!["a", "b", "c"]);
        let (lines, rest) = split_message(b" not a header\n");
        assert!(lines.is_empty());
        assert_eq!(rest, b" not a header\n");
        assert_eq!(split_message(b"").1, b"");
    }

    #[test]
    fn dots_and_line_ends() {
        let data = b"a\r\nb\n.\nafter\n";
        let mut i = Input {
            inner: &data[..],
            ignore_dots: false,
            done: false,
        };
        assert_eq!(i.line().unwrap().unwrap(), b"a\n");
        assert_eq!(i.line().unwrap().unwrap(), b"b\n");
        assert!(i.line().unwrap().is_none());
        let mut body = Body {
            input: Input {
                inner: &data[..],
                ignore_dots: true,
                done: false,
            },
            pending: Vec::new(),
            at: 0,
        };
        // What is at hand comes in one read.
        let mut buf = [0u8; 64];
        assert_eq!(body.read(&mut buf).unwrap(), 12);
        assert_eq!(&buf[..12], b"a\nb\n.\nafter\n");
        assert_eq!(body.read(&mut buf).unwrap(), 0);
        let mut body = Body {
            input: Input {
                inner: &data[..],
                ignore_dots: true,
                done: false,
            },
            pending: Vec::new(),
            at: 0,
        };
        let mut out = String::new();
        body.read_to_string(&mut out).unwrap();
        assert_eq!(out, "a\nb\n.\nafter\n");
    }
}
