//! The command lines of program deliveries (from aliases and `.forward`),
//! parsed as sendmail's smrsh accepts them, without a shell: pure, so that
//! local (which runs them) and any checker parse them the same way. Written
//! here rather than taken from a shell-words crate: those accept the shell
//! syntax this parser exists to refuse (pipelines, `;`, `$`, globs).

/// A command line from an alias or `.forward` file, parsed without a
/// shell ([`parse_command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program (as written; only its name counts in secure mode) and
    /// its arguments.
    pub argv: Vec<String>,
    /// `|| exit 75`: a failure of the program (a non-zero exit or a
    /// signal, not the time limit) is exit status 75 instead (deferred).
    pub failure_is_75: bool,
}

/// One word of a command line, or the `&&` and `||` operators.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// The word's text after quote removal; `plain`: written without quotes
    /// or backslashes.
    Word {
        text: String,
        plain: bool,
    },
    AndIf,
    OrIf,
}

/// Characters a shell would treat specially, refused outside single quotes.
const SHELL_META: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '*', '?', '[', ']', '{', '}', '~', '!',
];

fn tokens(line: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut plain = true;
    let mut chars = line.chars().peekable();
    let finish = |out: &mut Vec<Token>, cur: &mut String, in_word: &mut bool, plain: &mut bool| {
        if *in_word {
            out.push(Token::Word {
                text: std::mem::take(cur),
                plain: *plain,
            });
        }
        *in_word = false;
        *plain = true;
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                plain = false;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(x) => cur.push(x),
                        None => return Err("unterminated '".into()),
                    }
                }
            }
            '"' => {
                in_word = true;
                plain = false;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => cur.push(chars.next().ok_or("trailing \\")?),
                        Some(x @ ('$' | '`')) => {
                            return Err(format!(
                                "shell metacharacter {x} inside double quotes (no shell expands it here)"
                            ))
                        }
                        Some(x) => cur.push(x),
                        None => return Err("unterminated \"".into()),
                    }
                }
            }
            '\\' => {
                in_word = true;
                plain = false;
                cur.push(chars.next().ok_or("trailing \\")?);
            }
            '#' if !in_word => break,
            c if c.is_whitespace() => finish(&mut out, &mut cur, &mut in_word, &mut plain),
            '|' | '&' if !in_word && chars.peek() == Some(&c) => {
                chars.next();
                out.push(if c == '|' { Token::OrIf } else { Token::AndIf });
            }
            '|' if !in_word || chars.peek() != Some(&'|') => {
                return Err("shell metacharacter | (a pipeline)".into())
            }
            c if SHELL_META.contains(&c) || c.is_control() => {
                return Err(format!("shell metacharacter {c:?}"))
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    finish(&mut out, &mut cur, &mut in_word, &mut plain);
    Ok(out)
}

/// Parses a command line the way sendmail's smrsh, as Postfix's
/// `local_command_shell`, accepts it — without a shell: the program and its
/// arguments (words separated by white space, quoted with `'...'` or
/// `"..."`, `\\` escaping one character), optionally
///
/// - preceded by `IFS=' ' &&` and/or `exec` (no effect: nothing runs
///   through a shell),
/// - followed by `|| exit 75` (a failure of the program defers),
/// - followed by a `#comment` (ignored),
///
/// which covers procmail's classic `.forward` lines. Anything else a shell
/// would interpret — pipelines, `;`, redirections, `$`, backquotes, globs,
/// other variable assignments or operators — is refused, and the error says
/// what.
pub fn parse_command(line: &str) -> Result<CommandLine, String> {
    let refuse = |why: String| format!("command \"{line}\" refused: {why}");
    let toks = tokens(line).map_err(refuse)?;
    let mut rest: &[Token] = &toks;
    // IFS=' ' && (the word written exactly so, as in procmail's manual).
    if let [Token::Word { text, .. }, Token::AndIf, tail @ ..] = rest {
        let start = line.trim_start();
        if text == "IFS= " && (start.starts_with("IFS=' '") || start.starts_with("IFS=\" \"")) {
            rest = tail;
        }
    }
    if let [Token::Word { text, plain: true }, tail @ ..] = rest {
        if text == "exec" {
            rest = tail;
        }
    }
    let mut argv = Vec::new();
    let mut failure_is_75 = false;
    while let Some((tok, tail)) = rest.split_first() {
        match tok {
            Token::Word { text, .. } => {
                argv.push(text.clone());
                rest = tail;
            }
            Token::OrIf => {
                let exit_75 = matches!(
                    tail,
                    [Token::Word { text: e, plain: true }, Token::Word { text: n, plain: true }]
                        if e == "exit" && n == "75"
                );
                if !exit_75 {
                    return Err(refuse(
                        "|| is accepted only as a final \"|| exit 75\"".into(),
                    ));
                }
                failure_is_75 = true;
                rest = &[];
            }
            Token::AndIf => {
                return Err(refuse("&& is accepted only after a leading IFS=' '".into()))
            }
        }
    }
    let Some(first) = argv.first() else {
        return Err(refuse("no program named".into()));
    };
    if let Some((name, _)) = first.split_once('=') {
        if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(refuse(format!(
                "variable assignment {name}= (no shell runs here)"
            )));
        }
    }
    Ok(CommandLine {
        argv,
        failure_is_75,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_lines() {
        let p = |l: &str| parse_command(l).map(|c| (c.argv, c.failure_is_75));
        let v = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            p("/bin/x a  'b c' \"d \\\" e\" f\\ g").unwrap(),
            (v(&["/bin/x", "a", "b c", "d \" e", "f g"]), false)
        );
        assert_eq!(
            p("exec /usr/bin/procmail -f- || exit 75").unwrap(),
            (v(&["/usr/bin/procmail", "-f-"]), true)
        );
        assert_eq!(
            p("IFS=' ' && exec /usr/bin/procmail -f- || exit 75 #ann").unwrap(),
            (v(&["/usr/bin/procmail", "-f-"]), true)
        );
        assert_eq!(
            p("  procmail -a 'x;y' #comment").unwrap(),
            (v(&["procmail", "-a", "x;y"]), false)
        );
        // A # inside a word is not a comment.
        assert_eq!(p("vacation a#b").unwrap(), (v(&["vacation", "a#b"]), false));
        for (line, what) in [
            ("procmail | tee x", "| (a pipeline)"),
            ("procmail; rm -rf ~", "';'"),
            ("procmail > /tmp/x", "'>'"),
            ("procmail $HOME", "'$'"),
            ("procmail \"$HOME\"", "inside double quotes"),
            ("procmail `id`", "'`'"),
            ("procmail *", "'*'"),
            (
                "procmail && rm x",
                "&& is accepted only after a leading IFS",
            ),
            ("procmail || exit 0", "|| is accepted only as a final"),
            ("procmail || exit 75 x", "|| is accepted only as a final"),
            ("X=1 procmail", "variable assignment X="),
            (
                "IFS=x && procmail",
                "&& is accepted only after a leading IFS",
            ),
            ("exec", "no program named"),
            ("", "no program named"),
            ("x 'open", "unterminated '"),
            ("procmail & ", "'&'"),
        ] {
            let e = p(line).unwrap_err();
            assert!(e.contains(what) && e.contains(line), "{line}: {e}");
        }
        // '...' keeps anything literally.
        assert_eq!(
            p("x '$HOME|;' y").unwrap(),
            (v(&["x", "$HOME|;", "y"]), false)
        );
    }
}
