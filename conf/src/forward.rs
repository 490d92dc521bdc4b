//! `.forward` files: parsed into delivery targets.
//!
//! A `.forward` file is a list of targets separated by commas or new lines;
//! `#` starts a comment line. A target has the syntax of an aliases entry's
//! ([`crate::aliases::Target`]). Problems are reported as
//! `file:line: message`.

use crate::aliases::{split_targets, target, Target};

/// Parses a `.forward` file into targets with their line numbers.
pub fn parse_forward(file: &str, text: &str) -> Result<Vec<(usize, Target)>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match split_targets(trimmed) {
            Ok(words) => out.extend(words.iter().map(|w| (i + 1, target(w)))),
            Err(e) => errors.push(format!("{file}:{}: {e}", i + 1)),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward() {
        let f = parse_forward(
            ".forward",
            "# keep a copy\n\\ann, /home/ann/Mail/inbox\n\"|/usr/bin/procmail -f-\"\n",
        )
        .unwrap();
        assert_eq!(
            f,
            vec![
                (2, Target::Address("ann".into())),
                (2, Target::File("/home/ann/Mail/inbox".into())),
                (3, Target::Program("/usr/bin/procmail -f-".into()))
            ]
        );
    }
}
