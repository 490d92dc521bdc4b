//! SMTP replies (RFC 5321 section 4.2): reading one from the wire's bytes,
//! its enhanced status code (RFC 3463), and the EHLO extensions it lists.
//! Pure: the session ([`crate::session`]) does the I/O.

/// The longest reply line accepted (RFC 5321 says 512 with the code; a
/// generous bound still bounds memory): a longer one is a protocol error.
pub const MAX_LINE: usize = 4096;
/// The most lines of one reply kept; further lines are read and dropped
/// (a server may list thousands of EHLO extensions).
pub const MAX_LINES: usize = 100;
/// The most bytes of one reply on the wire, all lines together: a longer
/// one (`250-` forever) is a protocol error.
pub const MAX_REPLY: usize = 256 * 1024;
/// The most bytes of a reply's text as logged and put in a DSN.
pub const MAX_TEXT: usize = 2048;

/// One complete reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit code.
    pub code: u16,
    /// The text of each line, after the code and its separator.
    pub lines: Vec<String>,
}

/// What the bytes read so far hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A complete reply, and how many bytes it took.
    Reply(Reply, usize),
    /// More bytes are needed.
    Incomplete,
}

/// Parses the reply at the start of `buf` (lines end with CRLF, a bare LF
/// is accepted; control characters and invalid UTF-8 in the text become
/// `?`). Errors name what is wrong, for the log.
pub fn parse(buf: &[u8]) -> Result<Parsed, String> {
    let mut pos = 0;
    let mut lines = Vec::new();
    let mut code = None;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() - pos > MAX_LINE {
                return Err(format!("reply line longer than {MAX_LINE} bytes"));
            }
            if buf.len() > MAX_REPLY {
                return Err(format!("reply longer than {MAX_REPLY} bytes"));
            }
            return Ok(Parsed::Incomplete);
        };
        if pos + nl + 1 > MAX_REPLY {
            return Err(format!("reply longer than {MAX_REPLY} bytes"));
        }
        let mut line = &buf[pos..pos + nl];
        pos += nl + 1;
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        if line.len() > MAX_LINE {
            return Err(format!("reply line longer than {MAX_LINE} bytes"));
        }
        let text = String::from_utf8_lossy(line);
        let digits = text
            .get(..3)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
        let Some(this) = digits.and_then(|d| d.parse::<u16>().ok()) else {
            return Err(format!("malformed reply line {:?}", truncate(&text)));
        };
        if !(200..600).contains(&this) && !(100..200).contains(&this) {
            return Err(format!("reply code {this} out of range"));
        }
        if *code.get_or_insert(this) != this {
            return Err("reply lines with different codes".into());
        }
        let (last, rest) = match text.as_bytes().get(3) {
            None => (true, ""),
            Some(b' ') => (true, &text[4..]),
            Some(b'-') => (false, &text[4..]),
            Some(_) => return Err(format!("malformed reply line {:?}", truncate(&text))),
        };
        if lines.len() < MAX_LINES {
            lines.push(printable(rest));
        }
        if last {
            return Ok(Parsed::Reply(Reply { code: this, lines }, pos));
        }
    }
}

fn truncate(s: &str) -> String {
    printable(&s.chars().take(80).collect::<String>())
}

/// `s` with control characters (NUL, bare CR, ...) and the replacement
/// character of invalid UTF-8 as `?`: safe in a log line and a DSN.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == char::REPLACEMENT_CHARACTER {
                '?'
            } else {
                c
            }
        })
        .collect()
}

impl Reply {
    /// The first digit: 2 success, 3 go on, 4 temporary, 5 permanent.
    pub fn class(&self) -> u16 {
        self.code / 100
    }

    /// The enhanced status code the first line starts with, when its class
    /// agrees with the reply code's.
    pub fn enhanced(&self) -> Option<String> {
        let first = self.lines.first()?;
        let word = first.split(' ').next()?;
        let parts: Vec<&str> = word.split('.').collect();
        let ok = parts.len() == 3
            && parts[0] == self.class().to_string()
            && parts[1..]
                .iter()
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then(|| word.to_string())
    }

    /// The enhanced status code for the DSN: the server's, else
    /// `class.0.0`.
    pub fn dsn(&self) -> String {
        self.enhanced()
            .unwrap_or_else(|| format!("{}.0.0", self.class()))
    }

    /// The reply as one line, as Postfix logs it: `550 5.1.1 text more`;
    /// at most [`MAX_TEXT`] bytes of text.
    pub fn text(&self) -> String {
        let mut joined = self
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if joined.len() > MAX_TEXT {
            let mut end = MAX_TEXT;
            while !joined.is_char_boundary(end) {
                end -= 1;
            }
            joined.truncate(end);
        }
        if joined.is_empty() {
            self.code.to_string()
        } else {
            format!("{} {joined}", self.code)
        }
    }
}

/// The service extensions an EHLO reply lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    /// PIPELINING (RFC 2920).
    pub pipelining: bool,
    /// SIZE (RFC 1870): `Some(0)` without a limit.
    pub size: Option<u64>,
    /// 8BITMIME (RFC 6152).
    pub eight_bit_mime: bool,
    /// DSN (RFC 3461).
    pub dsn: bool,
    /// STARTTLS (RFC 3207).
    pub starttls: bool,
    /// AUTH mechanisms (RFC 4954), upper case.
    pub auth: Vec<String>,
}

impl Extensions {
    /// Reads the extensions of an EHLO reply (every line after the first).
    pub fn from_ehlo(reply: &Reply) -> Extensions {
        let mut e = Extensions::default();
        for line in reply.lines.iter().skip(1) {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "PIPELINING" => e.pipelining = true,
                "SIZE" => e.size = Some(words.next().and_then(|w| w.parse().ok()).unwrap_or(0)),
                "8BITMIME" => e.eight_bit_mime = true,
                "DSN" => e.dsn = true,
                "STARTTLS" => e.starttls = true,
                "AUTH" => e.auth.extend(words.map(|w| w.to_ascii_uppercase())),
                _ => {}
            }
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(text: &str) -> Reply {
        match parse(text.as_bytes()) {
            Ok(Parsed::Reply(r, n)) => {
                assert_eq!(n, text.len());
                r
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn single_and_multiline_replies() {
        let r = reply("250 2.0.0 Ok: queued as ABC\r\n");
        assert_eq!(r.code, 250);
        assert_eq!(r.dsn(), "2.0.0");
        assert_eq!(r.text(), "250 2.0.0 Ok: queued as ABC");
        let r = reply("550-5.1.1 no such user\r\n550 5.1.1 here\r\n");
        assert_eq!(r.lines.len(), 2);
        assert_eq!(r.text(), "550 5.1.1 no such user 5.1.1 here");
        assert_eq!(r.dsn(), "5.1.1");
        // No enhanced code, or one of another class: the class's default.
        assert_eq!(reply("451 try later\n").dsn(), "4.0.0");
        assert_eq!(reply("451 5.1.1 mixed\n").dsn(), "4.0.0");
        assert_eq!(reply("220\r\n").text(), "220");
    }

    #[test]
    fn incomplete_and_malformed() {
        assert_eq!(parse(b"250-a\r\n250 b"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
        assert!(parse(b"hello\r\n").is_err());
        assert!(parse(b"250-a\r\n251 b\r\n").is_err());
        assert!(parse(b"999 x\r\n").is_err());
        assert!(parse(b"250x\r\n").is_err());
        assert!(parse(&[b'2'; MAX_LINE + 10]).is_err());
        // Bytes after the reply are left for the next read.
        assert!(matches!(
            parse(b"250 a\r\n354 b\r\n"),
            Ok(Parsed::Reply(_, 7))
        ));
    }

    #[test]
    fn hostile_replies_are_bounded_and_printable() {
        // A line of megabytes without a newline: an error once past the
        // limit, whatever follows.
        let long = vec![b'2'; 3 << 20];
        assert!(parse(&long).unwrap_err().contains("longer than"));
        let mut long = b"250 ".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        long.extend_from_slice(b"\r\n");
        assert!(parse(&long).is_err());
        // `250-` forever: an error once the reply passes MAX_REPLY.
        let endless = b"250-more\r\n".repeat(MAX_REPLY / 10 + 1);
        assert!(parse(&endless).unwrap_err().contains("reply longer than"));
        assert_eq!(parse(&endless[..MAX_REPLY / 2]), Ok(Parsed::Incomplete));
        // Thousands of EHLO lines: read, the first MAX_LINES kept.
        let mut many = b"250-mx.test\r\n".to_vec();
        for i in 0..5000 {
            many.extend_from_slice(format!("250-X-EXT{i}\r\n").as_bytes());
        }
        many.extend_from_slice(b"250 PIPELINING\r\n");
        let r = reply(std::str::from_utf8(&many).unwrap());
        assert_eq!(r.lines.len(), MAX_LINES);
        assert!(r.text().len() <= MAX_TEXT + 4);
        // NUL, invalid UTF-8, bare CR: the text is printable.
        match parse(b"550 5.1.1 a\0b\xff\xfec\rd\r\r\n") {
            Ok(Parsed::Reply(r, _)) => {
                assert_eq!(r.text(), "550 5.1.1 a?b??c?d?");
                assert_eq!(r.dsn(), "5.1.1");
            }
            other => panic!("{other:?}"),
        }
        assert!(!parse(b"\xff\x00\x01 x\r\n").unwrap_err().contains('\0'));
        // Codes out of range or not digits; a code that changes.
        for bad in [
            &b"000 x\r\n"[..],
            b"999 x\r\n",
            b"2x0 x\r\n",
            b"-50 x\r\n",
            b"250-a\r\n550 b\r\n",
            b"25\r\n",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Random bytes never panic.
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let buf: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    b"25 0-\r\n\x00\xff\xc3"[(x % 10) as usize]
                })
                .collect();
            let _ = parse(&buf);
        }
    }

    #[test]
    fn ehlo_extensions() {
        let r = reply(
            "250-mx.test\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250-8BITMIME\r\n250-starttls\r\n250-AUTH PLAIN login\r\n250 DSN\r\n",
        );
        let e = Extensions::from_ehlo(&r);
        assert!(e.pipelining && e.eight_bit_mime && e.starttls && e.dsn);
        assert_eq!(e.size, Some(1000));
        assert_eq!(e.auth, vec!["PLAIN", "LOGIN"]);
        let e = Extensions::from_ehlo(&reply("250-x\r\n250 SIZE\r\n"));
        assert_eq!(e.size, Some(0));
        assert!(!e.pipelining);
    }
}
