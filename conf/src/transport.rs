//! transport(5): the `transport_maps` table and the transport names it (and
//! `default_transport`) hold, parsed purely.
//!
//! A table file has `pattern transport` lines; `#` starts a comment line.
//! Patterns: the full address, `domain` or `@domain`, `.domain` for its
//! subdomains, `*` for anything. A transport is `local`, `error:[d.d.d
//! ]text` (bounce with that text), or `name:nexthop` naming a master.cf
//! service (e.g. `smtp:[relay.example]:587`). Lookups follow Postfix's
//! order: address, domain, `@domain`, parent domains as `.parent`, `*`.

/// One `pattern transport` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportEntry {
    /// The pattern, lower case.
    pub pattern: String,
    /// The transport text, as written (trimmed).
    pub transport: String,
    /// Line number in its file.
    pub line: usize,
}

/// A transport table: the entries of one or more files, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportTable {
    /// The entries; the first one matching a pattern wins.
    pub entries: Vec<TransportEntry>,
}

impl TransportTable {
    /// Parses the text of one table file named `file`, appending its
    /// entries. Returns a `file:line: ...` message per bad line (the good
    /// lines are kept).
    pub fn parse_into(&mut self, file: &str, text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(char::is_whitespace) {
                Some((pattern, transport)) => self.entries.push(TransportEntry {
                    pattern: pattern.to_ascii_lowercase(),
                    transport: transport.trim().to_string(),
                    line: i + 1,
                }),
                None => problems.push(format!("{file}:{}: expected 'pattern transport'", i + 1)),
            }
        }
        problems
    }

    fn find(&self, pattern: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.pattern == pattern)
            .map(|e| e.transport.as_str())
    }

    /// The transport text for `address` (whose domain is `domain`), in
    /// Postfix's lookup order; `None` when no entry matches.
    pub fn lookup(&self, address: &str, domain: Option<&str>) -> Option<&str> {
        let address = address.to_ascii_lowercase();
        if let Some(t) = self.find(&address) {
            return Some(t);
        }
        if let Some(d) = domain {
            let d = d.to_ascii_lowercase();
            if let Some(t) = self.find(&d).or_else(|| self.find(&format!("@{d}"))) {
                return Some(t);
            }
            let mut rest = d.as_str();
            while let Some((_, parent)) = rest.split_once('.') {
                if let Some(t) = self.find(&format!(".{parent}")) {
                    return Some(t);
                }
                rest = parent;
            }
        }
        self.find("*")
    }
}

/// A transport named by transport_maps or default_transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The local delivery agent.
    Local,
    /// Bounce: an enhanced status code when one was given, and the text.
    Error(Option<String>, String),
    /// Another master.cf service, with its next hop (may be empty).
    Other(String, String),
}

impl Transport {
    /// Parses `name[:nexthop]`.
    pub fn parse(text: &str) -> Transport {
        let (name, next) = text.split_once(':').unwrap_or((text, ""));
        match name.trim() {
            "local" => Transport::Local,
            "error" => {
                let next = next.trim();
                match next.split_once(' ') {
                    Some((code, rest)) if is_dsn(code) => {
                        Transport::Error(Some(code.to_string()), rest.trim().to_string())
                    }
                    _ => Transport::Error(None, next.to_string()),
                }
            }
            other => Transport::Other(other.to_string(), next.trim().to_string()),
        }
    }
}

/// Whether `s` is a failure's enhanced status code (`4.x.y` or `5.x.y`).
pub fn is_dsn(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 3
        && matches!(parts[0], "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `name` can name a master.cf service (letters, digits, `-_.`,
/// not starting with a dot).
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines_and_reports_bad_ones() {
        let mut t = TransportTable::default();
        let p = t.parse_into(
            "transport",
            "# c\n\nGone@Localhost error:5.1.1 left\nbad-line\n.example.org  smtp:[relay]:587\n",
        );
        assert_eq!(p, vec!["transport:4: expected 'pattern transport'"]);
        assert_eq!(t.entries.len(), 2);
        assert_eq!(t.entries[0].pattern, "gone@localhost");
        assert_eq!(t.entries[1].transport, "smtp:[relay]:587");
        assert_eq!(t.entries[1].line, 5);
    }

    #[test]
    fn lookup_order() {
        let mut t = TransportTable::default();
        t.parse_into(
            "t",
            "a@x.test addr\nx.test dom\n@y.test atdom\n.z.test parent\n* any\n",
        );
        assert_eq!(t.lookup("A@X.test", Some("x.test")), Some("addr"));
        assert_eq!(t.lookup("b@x.test", Some("x.test")), Some("dom"));
        assert_eq!(t.lookup("b@y.test", Some("y.test")), Some("atdom"));
        assert_eq!(t.lookup("b@a.b.z.test", Some("a.b.z.test")), Some("parent"));
        assert_eq!(t.lookup("b@z.test", Some("z.test")), Some("any"));
        assert_eq!(TransportTable::default().lookup("b", None), None);
    }

    #[test]
    fn transports() {
        assert_eq!(Transport::parse("local"), Transport::Local);
        assert_eq!(
            Transport::parse("error:5.1.1 gone away"),
            Transport::Error(Some("5.1.1".into()), "gone away".into())
        );
        assert_eq!(
            Transport::parse("error:no thanks"),
            Transport::Error(None, "no thanks".into())
        );
        assert_eq!(
            Transport::parse("smtp:[relay.test]:587"),
            Transport::Other("smtp".into(), "[relay.test]:587".into())
        );
        assert_eq!(
            Transport::parse("smtp"),
            Transport::Other("smtp".into(), String::new())
        );
        assert!(is_dsn("4.2.0") && !is_dsn("2.0.0") && !is_dsn("5.x.1"));
        assert!(is_service_name("smtp") && !is_service_name(".x") && !is_service_name("a/b"));
    }
}
