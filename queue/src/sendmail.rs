//! `postern-sendmail` (also `postern sendmail`): the sendmail(1) command
//! line, for programs and people that submit mail that way.
//!
//! ```text
//! postern sendmail [-t] [-i|-oi] [-f sender] [-F full name] [-C dir] [recipient ...] < message
//! ```
//!
//! `-f`/`-r` set the envelope sender (`-f ''` or `-f '<>'` the null
//! sender); `-F` the full name of a `From:` header added when the message
//! has none; `-t` takes the recipients from `To:`, `Cc:` and `Bcc:` (added
//! to those on the command line) and removes `Bcc:`; without `-i`, a line
//! with a single `.` ends the message. Line ends are normalised to LF.
//! Missing `From:`, `Date:` and `Message-ID:` headers are added. Other sendmail options
//! (`-o...`, `-v`, `-N`, `-B`, `-bm`, `-L`, `-X`...) are accepted and
//! ignored; `-bp` lists the queue like mailq. The message goes to the submit
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
//! - 78 (EX_CONFIG): the configuration cannot be read.
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
use postern_conf::{params, Config, ServicesFile, Source, DEFAULT_CONFIG_DIR};

use crate::headers;
use crate::submit::{self, SubmitError, SubmitRequest, Timing, SUBMIT_VERSION};
use postern_common::log::rfc5322_date;

/// The parsed command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Options {
    /// `-f`/`-r`.
    pub sender: Option<String>,
    /// `-F`.
    pub full_name: Option<String>,
    /// `-t`.
    pub extract: bool,
    /// `-i`/`-oi`.
    pub ignore_dots: bool,
    /// `-bp`: list the queue instead.
    pub list_queue: bool,
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
    let mut o = Options::default();
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
                // -oXvalue: sendmail options; -o alone takes the next word.
                if rest.is_empty() {
                    value(c, rest)?;
                }
            }
            "b" => match rest {
                "p" => o.list_queue = true,
                "m" | "" => {}
                other => return Err(format!("-b{other} is not supported")),
            },
            "N" | "B" | "R" | "V" | "L" | "X" | "h" | "q" => {
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
    for var in ["POSTERN_CONFIG", "MAIL_CONFIG"] {
        if let Some(d) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            return Source::Dir(PathBuf::from(d));
        }
    }
    let default = Path::new(DEFAULT_CONFIG_DIR);
    if default.join("main.cf").exists() {
        return Source::Dir(default.to_path_buf());
    }
    Source::Embedded(Layout::system())
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

/// Runs `postern-sendmail` with `args`; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let o = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("postern-sendmail: {e}");
            eprintln!(
                "usage: postern sendmail [-t] [-i] [-f sender] [-F name] [-C dir] recipient ..."
            );
            return sysexits::EX_USAGE;
        }
    };
    let source = source(&o);
    if o.list_queue {
        return crate::admin::main(&source, &["list".to_string()]);
    }
    let config = match Config::load_main_only(&source, &ServicesFile::system()).into_result() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern-sendmail: fatal: configuration: {e}");
            return sysexits::EX_CONFIG;
        }
    };
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
                let is_header = l.starts_with(b" ")
                    || l.starts_with(b"\t")
                    || l.iter()
                        .position(|&b| b == b':')
                        .is_some_and(|p| p > 0 && !l[..p].iter().any(|b| b.is_ascii_whitespace()));
                if l == b"\n" || !is_header || (header_lines.is_empty() && l.starts_with(b" ")) {
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
    let block = String::from_utf8_lossy(&header_lines.concat()).into_owned();
    let fields = headers::fields(&block);
    let has = |name: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(name));
    let mut recipients = o.recipients.clone();
    if o.extract {
        for f in &fields {
            if ["to", "cc", "bcc"]
                .iter()
                .any(|n| f.name.eq_ignore_ascii_case(n))
            {
                recipients.extend(headers::addresses(&f.value));
            }
        }
    }
    if recipients.is_empty() {
        eprintln!("postern-sendmail: no recipients (name them, or use -t with To:/Cc:/Bcc:)");
        return sysexits::EX_USAGE;
    }
    let sender = o.sender.as_ref().map(|s| {
        let s = s.trim();
        let s = s
            .strip_prefix('<')
            .and_then(|s| s.strip_suffix('>'))
            .unwrap_or(s);
        s.to_string()
    });
    // The header block as sent: Bcc removed with -t, From/Date added.
    let mut head = Vec::new();
    let mut skipping = false;
    for l in &header_lines {
        let continuation = l.starts_with(b" ") || l.starts_with(b"\t");
        if !continuation {
            skipping = o.extract && l.len() >= 4 && l[..4].eq_ignore_ascii_case(b"bcc:");
        }
        if !skipping {
            head.extend_from_slice(l);
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if !has("from") {
        let uid = nix::unistd::Uid::current().as_raw();
        let login = account::user_by_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| format!("uid{uid}"), |a| a.name);
        let address = match &sender {
            Some(s) if !s.is_empty() => s.clone(),
            _ => format!("{login}@{}", config.text(params::MYHOSTNAME)),
        };
        let line = match &o.full_name {
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
                "Message-ID: <{now}.{nanos:09}.{}@{}>\n",
                std::process::id(),
                config.text(params::MYHOSTNAME)
            )
            .as_bytes(),
        );
    }
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
    let socket = Path::new(config.text(params::QUEUE_DIRECTORY)).join("public/submit");
    let timing = Timing {
        submit_timeout: config.time(params::SUBMIT_TIMEOUT),
        keepalive: config.time(params::SUBMIT_INPUT_TIMEOUT) / 3,
    };
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
        assert!(parse_args(&args(&["-bs"])).is_err());
        assert!(parse_args(&args(&["--queue-directory", "/q"])).is_err());
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
