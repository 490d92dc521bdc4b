//! main.cf: `name = value` lines.
//!
//! This stage is purely syntactic: it turns text into [`MainEntry`]s (with
//! their line numbers) and reports malformed lines. Types and `$name`
//! references are checked later, by [`crate::Config`], once master.cf is known
//! too (it decides which `<service>_time_limit` names are valid).

use crate::diag::Diagnostic;
use crate::logical::logical_lines;

/// One `name = value` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainEntry {
    /// Parameter name.
    pub name: String,
    /// Raw value (before `$name` expansion), without surrounding white space.
    pub value: String,
    /// Line where the setting starts.
    pub line: usize,
}

/// The settings of one main.cf, in file order, one per name (the later of
/// two settings of the same name wins, with a warning).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MainCf {
    /// The file name used in diagnostics.
    pub file: String,
    /// Settings in the order of their (last) appearance.
    pub entries: Vec<MainEntry>,
}

impl MainCf {
    /// The setting of `name`, if main.cf has one.
    pub fn get(&self, name: &str) -> Option<&MainEntry> {
        self.entries.iter().find(|e| e.name == name)
    }
}

/// Whether `name` can be a parameter name: non-empty and free of white space
/// and of the characters that have a meaning in values.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '$' | '{' | '}' | '(' | ')' | '=' | '#'))
}

/// Parses main.cf text.
pub fn parse_main_cf(file: &str, bytes: &[u8], diags: &mut Vec<Diagnostic>) -> MainCf {
    let mut cf = MainCf {
        file: file.to_string(),
        entries: Vec::new(),
    };
    for ll in logical_lines(file, bytes, diags) {
        let Some((name, value)) = ll.text.split_once('=') else {
            diags.push(Diagnostic::error(
                file,
                Some(ll.line),
                format!("missing '=' after parameter name in \"{}\"", ll.text),
            ));
            continue;
        };
        let name = name.trim();
        if name.is_empty() {
            diags.push(Diagnostic::error(
                file,
                Some(ll.line),
                "missing parameter name before '='",
            ));
            continue;
        }
        if !valid_name(name) {
            diags.push(Diagnostic::error(
                file,
                Some(ll.line),
                format!("bad parameter name '{name}'"),
            ));
            continue;
        }
        let entry = MainEntry {
            name: name.to_string(),
            value: value.trim().to_string(),
            line: ll.line,
        };
        if let Some(pos) = cf.entries.iter().position(|e| e.name == name) {
            let earlier = cf.entries.remove(pos);
            diags.push(Diagnostic::warning(
                file,
                Some(ll.line),
                format!(
                    "{name} is set again (first at line {}); the later value wins",
                    earlier.line
                ),
            ));
        }
        cf.entries.push(entry);
    }
    cf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_forms() {
        let mut d = Vec::new();
        let cf = parse_main_cf(
            "main.cf",
            b"a=1\nb = two words \n  continued\nc =\n#x = 1\n",
            &mut d,
        );
        assert!(d.is_empty(), "{d:?}");
        let got: Vec<_> = cf
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str(), e.line))
            .collect();
        assert_eq!(
            got,
            vec![("a", "1", 1), ("b", "two words continued", 2), ("c", "", 4)]
        );
    }

    #[test]
    fn errors_and_duplicates() {
        let mut d = Vec::new();
        let cf = parse_main_cf("m", b"novalue\n= 3\nbad name = 1\nx = 1\nx = 2\n", &mut d);
        let msgs: Vec<_> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            msgs,
            vec![
                "m:1: missing '=' after parameter name in \"novalue\"",
                "m:2: missing parameter name before '='",
                "m:3: bad parameter name 'bad name'",
                "m:5: warning: x is set again (first at line 4); the later value wins",
            ]
        );
        assert_eq!(cf.get("x").map(|e| e.value.as_str()), Some("2"));
    }
}
