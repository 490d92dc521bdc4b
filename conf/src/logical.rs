//! Logical lines, as Postfix's configuration files define them.
//!
//! Both main.cf and master.cf are read the same way: a logical line starts
//! with non-white-space text; a physical line that starts with white space
//! continues the previous logical line; empty lines, white-space-only lines
//! and lines whose first non-white-space character is `#` are skipped and do
//! not end a logical line. Comments are whole lines only: a `#` inside a value
//! is part of the value.

use crate::diag::Diagnostic;

/// One logical line: its text (continuations joined by one space) and the
/// number of the physical line it started on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalLine {
    /// 1-based number of the first physical line.
    pub line: usize,
    /// The joined text, without leading or trailing white space.
    pub text: String,
}

/// Splits `bytes` into logical lines. Lines that are not UTF-8 and
/// continuation lines with nothing to continue are reported and skipped.
pub fn logical_lines(file: &str, bytes: &[u8], diags: &mut Vec<Diagnostic>) -> Vec<LogicalLine> {
    let mut out: Vec<LogicalLine> = Vec::new();
    // Whether the last logical line may still be continued: false after a
    // physical line that could not be used, so that its continuation lines are
    // not glued onto an unrelated entry.
    let mut open = false;
    for (idx, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = idx + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let text = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(_) => {
                diags.push(Diagnostic::error(
                    file,
                    Some(number),
                    "line is not valid UTF-8",
                ));
                open = false;
                continue;
            }
        };
        if text.contains('\0') {
            diags.push(Diagnostic::error(
                file,
                Some(number),
                "line contains a NUL character",
            ));
            open = false;
            continue;
        }
        let trimmed = text.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let continues = text.starts_with(|c: char| c.is_whitespace());
        if continues {
            match out.last_mut() {
                Some(last) if open => {
                    last.text.push(' ');
                    last.text.push_str(trimmed);
                }
                Some(_) => {}
                None => diags.push(Diagnostic::error(
                    file,
                    Some(number),
                    "line starts with white space, but there is no earlier line for it to continue",
                )),
            }
            continue;
        }
        out.push(LogicalLine {
            line: number,
            text: trimmed.to_string(),
        });
        open = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> (Vec<(usize, String)>, Vec<String>) {
        let mut d = Vec::new();
        let l = logical_lines("f", s.as_bytes(), &mut d);
        (
            l.into_iter().map(|l| (l.line, l.text)).collect(),
            d.into_iter().map(|d| d.to_string()).collect(),
        )
    }

    #[test]
    fn continuation_and_comments() {
        let (l, d) =
            lines("a = 1\n  2\n# c\n\n   # indented comment\n  3\nb=x # not a comment\r\n");
        assert!(d.is_empty());
        assert_eq!(
            l,
            vec![(1, "a = 1 2 3".into()), (7, "b=x # not a comment".into())]
        );
    }

    #[test]
    fn leading_continuation_is_an_error() {
        let (l, d) = lines("  orphan\nx = y\n");
        assert_eq!(l, vec![(2, "x = y".into())]);
        assert_eq!(d, vec!["f:1: line starts with white space, but there is no earlier line for it to continue"]);
    }

    #[test]
    fn bad_utf8_is_reported_and_skipped() {
        let mut d = Vec::new();
        let l = logical_lines("f", b"a = 1\n\xff\xfe\n  cont\nb = 2", &mut d);
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].text, "a = 1");
        assert_eq!(d[0].to_string(), "f:2: line is not valid UTF-8");
    }
}
