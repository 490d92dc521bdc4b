//! An SMTP session on standard input and output: `sendmail -bs`.
//!
//! Programs that speak SMTP rather than sendmail's command line (`swaks
//! --pipe 'sendmail -bs'`, some MUAs and cron replacements) run
//! `sendmail -bs` and talk to it. Each message is queued through the submit
//! service exactly as `sendmail` queues one (same protocol, same headers
//! added: `From:`, `Date:`, `Message-ID:` when missing), and `250` after
//! `DATA` comes only once submit answered that the message is queued.
//!
//! Commands: `HELO`, `EHLO` (PIPELINING, SIZE, 8BITMIME,
//! ENHANCEDSTATUSCODES), `MAIL FROM:<address>` (parameters `SIZE=` and
//! `BODY=`), `RCPT TO:<address>`, `DATA` (dot-unstuffed, line ends
//! normalised to LF), `RSET`, `NOOP`, `QUIT`; `VRFY`, `EXPN`, `ETRN`,
//! `HELP`, `STARTTLS`, `AUTH` are answered 502. The input is untrusted: a
//! command line longer than [`LINE_LIMIT`] bytes is refused (500) without
//! being kept, a message larger than `message_size_limit` is read to its
//! end without being kept and refused (552), at most
//! `submit::MAX_RECIPIENTS` recipients per message (452), and after
//! [`ERROR_LIMIT`] errors the session ends (421), as Postfix's smtpd does
//! after `smtpd_hard_error_limit`.
//!
//! The sender is whoever runs the command (submit records the uid); the
//! envelope sender is what `MAIL FROM` says. The session ends at `QUIT` or
//! at the end of the input; the exit status is then 0 (74 when the output
//! cannot be written).

use std::io::{BufRead, Write};

use postern_common::sysexits;
use postern_conf::{params, Config};

use crate::queuefile;
use crate::sendmail::{prepare_headers, split_message, submit_target};
use crate::submit::{self, SubmitError, SubmitRequest, MAX_RECIPIENTS, SUBMIT_VERSION};

/// The longest command line accepted, in bytes (Postfix's
/// `line_length_limit` default).
pub const LINE_LIMIT: usize = 2048;
/// Errors after which the session ends (Postfix's `smtpd_hard_error_limit`).
pub const ERROR_LIMIT: u32 = 20;

/// One line of input.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// A line without its CR LF (or LF).
    Text(Vec<u8>),
    /// A line longer than the limit (read to its end, not kept).
    TooLong,
    /// The end of the input.
    End,
}

/// Reads one line of at most `limit` bytes (without its line end).
fn read_line(r: &mut impl BufRead, limit: usize) -> std::io::Result<Line> {
    let mut buf = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let avail = match r.fill_buf() {
            Ok(a) => a,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            if !any {
                return Ok(Line::End);
            }
            break;
        }
        any = true;
        let (piece, used, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(p) => (&avail[..p], p + 1, true),
            None => (avail, avail.len(), false),
        };
        if !too_long && buf.len() + piece.len() <= limit {
            buf.extend_from_slice(piece);
        } else {
            too_long = true;
            buf = Vec::new();
        }
        r.consume(used);
        if done {
            break;
        }
    }
    if too_long {
        return Ok(Line::TooLong);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Line::Text(buf))
}

/// What submitting one message gives: its queue id, or why not.
pub type Submitter<'a> = dyn FnMut(&SubmitRequest, Vec<u8>) -> Result<String, SubmitError> + 'a;

/// The session's state.
struct Session<'a> {
    myhostname: String,
    /// `myorigin`: the domain a sender without one is given in a `From:`
    /// header added to the message.
    myorigin: String,
    /// `message_size_limit` (0: none).
    size_limit: usize,
    /// The envelope sender once `MAIL` was accepted.
    sender: Option<String>,
    recipients: Vec<String>,
    errors: u32,
    submit: &'a mut Submitter<'a>,
}

/// Whether the session goes on.
enum Next {
    Go,
    Stop,
}

/// Splits `MAIL FROM:<a> params` (after the verb) into the address and
/// its parameters; `keyword` is `FROM:` or `TO:`.
fn path_and_params<'l>(rest: &'l str, keyword: &str) -> Option<(&'l str, Vec<&'l str>)> {
    let rest = rest.trim_start();
    // `get`: the input is untrusted text, and the keyword's length need not
    // fall on a character boundary of it.
    if !rest
        .get(..keyword.len())
        .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    {
        return None;
    }
    let rest = rest.get(keyword.len()..)?.trim_start();
    let (address, params) = if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        (&inner[..end], &inner[end + 1..])
    } else {
        match rest.split_once(' ') {
            Some((a, p)) => (a, p),
            None => (rest, ""),
        }
    };
    Some((address.trim(), params.split_whitespace().collect()))
}

impl Session<'_> {
    fn reset(&mut self) {
        self.sender = None;
        self.recipients.clear();
    }

    fn reply(out: &mut impl Write, text: &str) -> std::io::Result<()> {
        out.write_all(text.as_bytes())?;
        out.write_all(b"\r\n")?;
        out.flush()
    }

    /// An error reply; ends the session past [`ERROR_LIMIT`].
    fn error(&mut self, out: &mut impl Write, text: &str) -> std::io::Result<Next> {
        self.errors += 1;
        Self::reply(out, text)?;
        if self.errors >= ERROR_LIMIT {
            Self::reply(out, "421 4.7.0 Error: too many errors")?;
            return Ok(Next::Stop);
        }
        Ok(Next::Go)
    }

    fn serve(&mut self, input: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<()> {
        Self::reply(out, &format!("220 {} ESMTP postern", self.myhostname))?;
        loop {
            let line = match read_line(input, LINE_LIMIT)? {
                Line::End => return Ok(()),
                Line::TooLong => {
                    if let Next::Stop = self.error(out, "500 5.5.2 Error: line too long")? {
                        return Ok(());
                    }
                    continue;
                }
                Line::Text(l) => String::from_utf8_lossy(&l).into_owned(),
            };
            if let Next::Stop = self.command(&line, input, out)? {
                return Ok(());
            }
        }
    }

    fn command(
        &mut self,
        line: &str,
        input: &mut impl BufRead,
        out: &mut impl Write,
    ) -> std::io::Result<Next> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "HELO" if rest.trim().is_empty() => self.error(out, "501 Syntax: HELO hostname"),
            "EHLO" if rest.trim().is_empty() => self.error(out, "501 Syntax: EHLO hostname"),
            "HELO" => {
                self.reset();
                Self::reply(out, &format!("250 {}", self.myhostname))?;
                Ok(Next::Go)
            }
            "EHLO" => {
                self.reset();
                let mut text = format!("250-{}\r\n250-PIPELINING\r\n", self.myhostname);
                if self.size_limit > 0 {
                    text.push_str(&format!("250-SIZE {}\r\n", self.size_limit));
                } else {
                    text.push_str("250-SIZE\r\n");
                }
                text.push_str("250-8BITMIME\r\n250 ENHANCEDSTATUSCODES");
                Self::reply(out, &text)?;
                Ok(Next::Go)
            }
            "MAIL" => self.mail(rest, out),
            "RCPT" => self.rcpt(rest, out),
            "DATA" if !rest.trim().is_empty() => self.error(out, "501 5.5.4 Syntax: DATA"),
            "DATA" => self.data(input, out),
            "RSET" => {
                self.reset();
                Self::reply(out, "250 2.0.0 Ok")?;
                Ok(Next::Go)
            }
            "NOOP" => {
                Self::reply(out, "250 2.0.0 Ok")?;
                Ok(Next::Go)
            }
            "QUIT" => {
                Self::reply(out, "221 2.0.0 Bye")?;
                Ok(Next::Stop)
            }
            "VRFY" | "EXPN" | "ETRN" | "HELP" | "STARTTLS" | "AUTH" | "TURN" | "BDAT" => self
                .error(
                    out,
                    &format!(
                        "502 5.5.1 Error: {} is not implemented",
                        verb.to_ascii_uppercase()
                    ),
                ),
            _ => self.error(out, "502 5.5.2 Error: command not recognized"),
        }
    }

    fn mail(&mut self, rest: &str, out: &mut impl Write) -> std::io::Result<Next> {
        if self.sender.is_some() {
            return self.error(out, "503 5.5.1 Error: nested MAIL command");
        }
        let Some((address, params)) = path_and_params(rest, "FROM:") else {
            return self.error(out, "501 5.5.4 Syntax: MAIL FROM:<address>");
        };
        for p in params {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            match name.to_ascii_uppercase().as_str() {
                "SIZE" => {
                    let size: u64 = value.parse().unwrap_or(u64::MAX);
                    if self.size_limit > 0 && size > self.size_limit as u64 {
                        return self.error(out, "552 5.3.4 Message size exceeds fixed limit");
                    }
                }
                "BODY" if ["7BIT", "8BITMIME"].contains(&value.to_ascii_uppercase().as_str()) => {}
                _ => return self.error(out, &format!("555 5.5.4 Unsupported option: {p}")),
            }
        }
        if !address.is_empty() {
            if let Err(e) = queuefile::check_address(address) {
                return self.error(out, &format!("501 5.1.7 Bad sender address syntax: {e}"));
            }
        }
        self.sender = Some(address.to_string());
        Self::reply(out, "250 2.1.0 Ok")?;
        Ok(Next::Go)
    }

    fn rcpt(&mut self, rest: &str, out: &mut impl Write) -> std::io::Result<Next> {
        if self.sender.is_none() {
            return self.error(out, "503 5.5.1 Error: need MAIL command");
        }
        let Some((address, params)) = path_and_params(rest, "TO:") else {
            return self.error(out, "501 5.5.4 Syntax: RCPT TO:<address>");
        };
        if let Some(p) = params.first() {
            return self.error(out, &format!("555 5.5.4 Unsupported option: {p}"));
        }
        if let Err(e) = queuefile::check_address(address) {
            return self.error(out, &format!("501 5.1.3 Bad recipient address syntax: {e}"));
        }
        if self.recipients.len() >= MAX_RECIPIENTS {
            Self::reply(out, "452 4.5.3 Error: too many recipients")?;
            return Ok(Next::Go);
        }
        self.recipients.push(address.to_string());
        Self::reply(out, "250 2.1.5 Ok")?;
        Ok(Next::Go)
    }

    fn data(&mut self, input: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<Next> {
        let Some(sender) = self.sender.clone() else {
            return self.error(out, "503 5.5.1 Error: need RCPT command");
        };
        if self.recipients.is_empty() {
            return self.error(out, "503 5.5.1 Error: need RCPT command");
        }
        Self::reply(out, "354 End data with <CR><LF>.<CR><LF>")?;
        let limit = if self.size_limit > 0 {
            self.size_limit
        } else {
            usize::MAX
        };
        let mut message = Vec::new();
        let mut too_big = false;
        loop {
            match read_line(input, limit)? {
                // The client went away in mid-message: nothing is queued.
                Line::End => return Ok(Next::Stop),
                Line::TooLong => {
                    too_big = true;
                    message = Vec::new();
                }
                Line::Text(l) if l == b"." => break,
                Line::Text(l) => {
                    let l = l.strip_prefix(b".").unwrap_or(&l);
                    if too_big {
                        continue;
                    }
                    if message.len() + l.len() + 1 > limit {
                        too_big = true;
                        message = Vec::new();
                        continue;
                    }
                    message.extend_from_slice(l);
                    message.push(b'\n');
                }
            }
        }
        let recipients = std::mem::take(&mut self.recipients);
        self.reset();
        if too_big {
            return self.error(out, "552 5.3.4 Error: message file too big");
        }
        let (lines, rest) = split_message(&message);
        let prepared = prepare_headers(
            &lines,
            false,
            Some(&sender),
            None,
            &self.myhostname,
            &self.myorigin,
        );
        let mut full = prepared.head;
        if !rest.starts_with(b"\n") {
            full.push(b'\n');
        }
        full.extend_from_slice(rest);
        drop(message);
        let request = SubmitRequest {
            version: SUBMIT_VERSION,
            sender: Some(sender),
            recipients,
        };
        let reply = match (self.submit)(&request, full) {
            Ok(id) => format!("250 2.0.0 Ok: queued as {id}"),
            Err(SubmitError::Refused(r)) => {
                let code = match r.dsn.as_bytes().first() {
                    Some(b'4') => "451",
                    _ if r.dsn == "5.3.4" => "552",
                    _ => "554",
                };
                format!("{code} {} Error: {}", r.dsn, r.text)
            }
            Err(SubmitError::NotQueued(why) | SubmitError::Input(why)) => {
                format!("451 4.3.0 Error: not queued: {why}")
            }
            Err(SubmitError::Unknown(why)) => {
                format!("451 4.3.0 Error: the message may have been queued: {why}")
            }
        };
        Self::reply(out, &reply)?;
        Ok(Next::Go)
    }
}

/// Runs a session on `input`/`output` for `config`; the exit status.
pub fn run(config: &Config, input: &mut impl BufRead, output: &mut impl Write) -> i32 {
    let (socket, timing) = submit_target(config);
    let mut submitter = |req: &SubmitRequest, message: Vec<u8>| {
        submit::submit(
            &socket,
            req,
            Box::new(std::io::Cursor::new(message)),
            timing,
        )
    };
    let size_limit = usize::try_from(config.int(params::MESSAGE_SIZE_LIMIT)).unwrap_or(0);
    serve(
        config.text(params::MYHOSTNAME),
        config.text(params::MYORIGIN).trim(),
        size_limit,
        &mut submitter,
        input,
        output,
    )
}

/// Runs a session with `submit` handing over each message; the exit status.
pub fn serve<'a>(
    myhostname: &str,
    myorigin: &str,
    size_limit: usize,
    submit: &'a mut Submitter<'a>,
    input: &mut impl BufRead,
    output: &mut impl Write,
) -> i32 {
    let mut session = Session {
        myhostname: myhostname.to_string(),
        myorigin: myorigin.to_string(),
        size_limit,
        sender: None,
        recipients: Vec::new(),
        errors: 0,
        submit,
    };
    match session.serve(input, output) {
        Ok(()) => sysexits::EX_OK,
        Err(e) => {
            eprintln!("postern-sendmail: -bs: {e}");
            sysexits::EX_IOERR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a session on `script`; (the replies, the messages submitted).
    fn session(script: &[u8], limit: usize) -> (String, Vec<(SubmitRequest, String)>) {
        let mut got = Vec::new();
        let mut out = Vec::new();
        {
            let mut submitter = |req: &SubmitRequest, m: Vec<u8>| {
                got.push((req.clone(), String::from_utf8(m).unwrap()));
                Ok(format!("ID{}", got.len()))
            };
            let code = serve(
                "h.example",
                "h.example",
                limit,
                &mut submitter,
                &mut &script[..],
                &mut out,
            );
            assert_eq!(code, 0);
        }
        (String::from_utf8(out).unwrap(), got)
    }

    fn codes(replies: &str) -> Vec<&str> {
        replies
            .split("\r\n")
            .filter(|l| l.len() >= 4 && &l[3..4] == " ")
            .map(|l| &l[..3])
            .collect()
    }

    #[test]
    fn a_session_queues_each_message_after_its_data() {
        let (replies, got) = session(
            b"EHLO x\r\nMAIL FROM:<a@b> SIZE=10\r\nRCPT TO:<c>\r\nRCPT TO:<d@e>\r\nDATA\r\nSubject: s\r\n\r\n..dot\r\nline\r\n.\r\n\
              MAIL FROM:<>\r\nRCPT TO:<f>\r\nRSET\r\nRCPT TO:<g>\r\nNOOP\r\nMAIL FROM:<h>\r\nRCPT TO:<i>\r\nDATA\r\nbody only\r\n.\r\nQUIT\r\nMAIL\r\n",
            0,
        );
        assert_eq!(
            codes(&replies),
            [
                "220", "250", "250", "250", "250", "354", "250", "250", "250", "250", "503", "250",
                "250", "250", "354", "250", "221"
            ],
            "{replies}"
        );
        assert!(replies.contains("250-PIPELINING\r\n"));
        assert!(replies.contains("250 2.0.0 Ok: queued as ID1\r\n"));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0.sender.as_deref(), Some("a@b"));
        assert_eq!(got[0].0.recipients, vec!["c", "d@e"]);
        assert!(
            got[0].1.starts_with("Subject: s\nFrom: a@b\nDate: "),
            "{}",
            got[0].1
        );
        assert!(got[0].1.ends_with("\n\n.dot\nline\n"), "{}", got[0].1);
        assert_eq!(got[1].0.recipients, vec!["i"]);
        assert!(got[1].1.ends_with("\n\nbody only\n"), "{}", got[1].1);
    }

    #[test]
    fn bad_input_is_refused_and_bounded() {
        let mut script =
            b"RCPT TO:<a>\r\nDATA\r\nMAIL FROM:<a b>\r\nMAIL FROM:x@y FOO=1\r\n".to_vec();
        script.extend(vec![b'x'; 10_000]);
        script.extend(b"\r\nMAIL FROM:<a> SIZE=999\r\nMAIL FROM:<a>\r\nMAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\n");
        script.extend(vec![b'y'; 200]);
        script.extend(b"\r\n.\r\nRCPT TO:<>\r\nVRFY a\r\n");
        let (replies, got) = session(&script, 100);
        assert_eq!(
            codes(&replies),
            [
                "220", "503", "503", "501", "555", "500", "552", "250", "503", "250", "354", "552",
                "503", "502"
            ],
            "{replies}"
        );
        assert!(got.is_empty());
        // Too many errors end the session.
        let (replies, _) = session(&b"FOO\r\n".repeat(30), 0);
        assert!(
            replies.ends_with("421 4.7.0 Error: too many errors\r\n"),
            "{replies}"
        );
        // The end of the input in mid-message queues nothing.
        let (_, got) = session(b"MAIL FROM:<a>\r\nRCPT TO:<b>\r\nDATA\r\nhalf", 0);
        assert!(got.is_empty());
    }

    #[test]
    fn multibyte_text_where_a_keyword_is_expected() {
        let (replies, got) = session(
            "MAIL FROMé:<a>\r\nMAIL FRéM:<a>\r\nMAIL é\r\nRCPT TOé\r\n".as_bytes(),
            0,
        );
        assert_eq!(
            codes(&replies),
            ["220", "501", "501", "501", "503"],
            "{replies}"
        );
        assert!(got.is_empty());
    }

    use proptest::prelude::*;

    proptest::proptest! {
        /// No input makes a session panic.
        #[test]
        fn never_panics(script in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::sample::select(vec![
                    "MAIL FROM:<a@b>\r\n", "RCPT TO:<c>\r\n", "DATA\r\n", ".\r\n", "RSET\r\n",
                    "EHLO x\r\n", "MAIL FROM:<>\r\n", "RCPT TO:é<\r\n", "..\r\n", "MAIL FROM:<a> SIZE=x\r\n",
                ]).prop_map(|s| s.as_bytes().to_vec()),
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
            ],
            0..30,
        )) {
            let script: Vec<u8> = script.concat();
            let mut out = Vec::new();
            let mut submitter = |_: &SubmitRequest, _: Vec<u8>| Ok("ID".to_string());
            let code = serve("h", "h", 64, &mut submitter, &mut &script[..], &mut out);
            proptest::prop_assert_eq!(code, 0);
        }
    }

    #[test]
    fn lines_are_bounded() {
        let mut r = &b"abc\r\ndefgh\nij"[..];
        assert_eq!(read_line(&mut r, 4).unwrap(), Line::Text(b"abc".to_vec()));
        assert_eq!(read_line(&mut r, 4).unwrap(), Line::TooLong);
        assert_eq!(read_line(&mut r, 4).unwrap(), Line::Text(b"ij".to_vec()));
        assert_eq!(read_line(&mut r, 4).unwrap(), Line::End);
    }
}
