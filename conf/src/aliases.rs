//! aliases(5): parsed into delivery targets.
//!
//! An aliases file has `name: target, target, ...` entries; a line starting
//! with white space continues the previous entry; `#` starts a comment line.
//! A target is a file (`/path`), a program (`|command`, quoted as
//! `"|command with spaces"` when it has commas or spaces), an `:include:`
//! file, or an address; a `.forward` file ([`crate::forward`]) lists the
//! same targets. Problems are reported as `file:line: message`.

/// One delivery target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Append to this file.
    File(String),
    /// Pipe to this command line.
    Program(String),
    /// Read more targets from this file.
    Include(String),
    /// Another address (a local user or a remote address).
    Address(String),
}

/// An aliases entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    /// The alias name (lower case).
    pub name: String,
    /// Its targets.
    pub targets: Vec<Target>,
    /// Line where the entry starts.
    pub line: usize,
}

/// Splits on commas outside double quotes; strips the quotes.
pub(crate) fn split_targets(text: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated '\"'".into());
    }
    out.push(cur);
    Ok(out
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Classifies one target.
pub fn target(word: &str) -> Target {
    if let Some(cmd) = word.strip_prefix('|') {
        Target::Program(cmd.trim().to_string())
    } else if let Some(file) = word.strip_prefix(":include:") {
        Target::Include(file.trim().to_string())
    } else if word.starts_with('/') {
        Target::File(word.to_string())
    } else {
        Target::Address(word.trim_start_matches('\\').to_string())
    }
}

/// Parses an aliases file; `Err` lists every problem.
pub fn parse_aliases(file: &str, text: &str) -> Result<Vec<Alias>, Vec<String>> {
    let mut entries: Vec<(usize, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            if let Some((_, last)) = entries.last_mut() {
                last.push(' ');
                last.push_str(trimmed);
                continue;
            }
        }
        entries.push((i + 1, trimmed.to_string()));
    }
    let mut aliases = Vec::new();
    let mut errors = Vec::new();
    for (line, text) in entries {
        let Some((name, rest)) = text.split_once(':') else {
            errors.push(format!("{file}:{line}: missing ':' after the alias name"));
            continue;
        };
        let name = name.trim().trim_matches('"').to_ascii_lowercase();
        if name.is_empty() || name.contains(char::is_whitespace) {
            errors.push(format!("{file}:{line}: bad alias name '{name}'"));
            continue;
        }
        match split_targets(rest) {
            Ok(words) if !words.is_empty() => aliases.push(Alias {
                name,
                targets: words.iter().map(|w| target(w)).collect(),
                line,
            }),
            Ok(_) => errors.push(format!("{file}:{line}: alias {name} has no targets")),
            Err(e) => errors.push(format!("{file}:{line}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(aliases)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases() {
        let text = "# c\npostmaster: root\nann: ann, /var/archive/ann,\n  \"|/usr/bin/vacation ann\", :include:/etc/lists/x\nBob: \\bob, bob@example.org\n";
        let a = parse_aliases("aliases", text).unwrap();
        assert_eq!(
            a[0],
            Alias {
                name: "postmaster".into(),
                targets: vec![Target::Address("root".into())],
                line: 2
            }
        );
        assert_eq!(
            a[1].targets,
            vec![
                Target::Address("ann".into()),
                Target::File("/var/archive/ann".into()),
                Target::Program("/usr/bin/vacation ann".into()),
                Target::Include("/etc/lists/x".into())
            ]
        );
        assert_eq!(a[2].name, "bob");
        assert_eq!(a[2].targets[0], Target::Address("bob".into()));
        let errs = parse_aliases("aliases", "nocolon\nx:\ny: \"open\n").unwrap_err();
        assert_eq!(
            errs,
            vec![
                "aliases:1: missing ':' after the alias name",
                "aliases:2: alias x has no targets",
                "aliases:3: unterminated '\"'"
            ]
        );
    }
}
