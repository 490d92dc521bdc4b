//! Message headers the queue reads: the fields of a header block, and the
//! address lists in `To:`/`Cc:`/`Bcc:` (for `sendmail -t`).

/// One header field, unfolded: (name, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name as written.
    pub name: String,
    /// The value, continuation lines joined with a space.
    pub value: String,
}

/// The fields of a header block (text up to the first empty line), by the
/// one header parser, `postern_common::mail::for_each_field`, each value
/// whole. Lines that are neither `name: value` nor continuations are
/// skipped.
pub fn fields(block: &str) -> Vec<Field> {
    let mut out = Vec::new();
    // Reading a string cannot fail.
    let _ =
        postern_common::mail::for_each_field_up_to(block.as_bytes(), usize::MAX, |name, value| {
            out.push(Field {
                name: name.to_string(),
                value: value.to_string(),
            });
            true
        });
    out
}

/// The addresses in an address-list header value: `a@b, "Name" <c@d>,
/// e@f (comment)`; groups' names are dropped.
pub fn addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut depth = 0u32;
    let mut parts = Vec::new();
    for c in value.chars() {
        match c {
            '"' if depth == 0 => {
                quoted = !quoted;
                cur.push(c);
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted && depth > 0 => depth -= 1,
            ',' | ';' if !quoted && depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ if depth > 0 => {}
            c => cur.push(c),
        }
    }
    parts.push(cur);
    for part in parts {
        let part = part.trim();
        // A group: "name: a, b;" leaves "name: a" in the first part.
        let part = match part.split_once(':') {
            Some((_, rest)) if !part.contains('<') || part.find(':') < part.find('<') => {
                rest.trim()
            }
            _ => part,
        };
        let addr = match (part.rfind('<'), part.rfind('>')) {
            (Some(a), Some(b)) if a < b => part[a + 1..b].trim(),
            _ => part,
        };
        if !addr.is_empty() && !addr.contains(char::is_whitespace) {
            out.push(addr.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_fields() {
        let f = fields("To: a@b,\n  c@d\nSubject: hi\nbogus line\nX:\n");
        assert_eq!(f.len(), 3);
        assert_eq!(f[0].value, "a@b, c@d");
        assert_eq!(f[2].value, "");
    }

    #[test]
    fn address_lists() {
        assert_eq!(
            addresses(r#"a@b, "Doe, J" <j@d>, e@f (the, comment), undisclosed:;"#),
            vec!["a@b", "j@d", "e@f"]
        );
        assert_eq!(addresses("friends: x@y, z@w;"), vec!["x@y", "z@w"]);
        assert!(addresses("").is_empty());
    }
}
