//! `$name` expansion, as postconf(5) defines it.
//!
//! Supported forms: `$name`, `${name}`, `$(name)`, `$$` (a literal `$`),
//! `${name?value}` (value when `$name` is non-empty), `${name:value}` (value
//! when `$name` is empty or undefined), and the Postfix 3 forms
//! `${name?{value}}`, `${name:{value}}` and `${name?{then}:{else}}`. The value
//! of a referenced parameter is itself expanded; a parameter that refers back
//! to itself, directly or through others, is an error that names the chain.
//! An undefined parameter expands to nothing and is reported so that the
//! caller can warn about it.

use std::collections::BTreeSet;

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// A parameter refers to itself: the chain of names, first to last.
    Loop(Vec<String>),
    /// Malformed `${...}` text.
    Syntax(String),
}

impl std::fmt::Display for ExpandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpandError::Loop(chain) => {
                write!(f, "recursive parameter expansion: ${}", chain.join(" -> $"))
            }
            ExpandError::Syntax(msg) => f.write_str(msg),
        }
    }
}

/// Where names are looked up: the raw (unexpanded) value of a parameter.
pub trait Lookup {
    /// The raw value of `name`, or `None` when it is not defined.
    fn raw(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Lookup for F {
    fn raw(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The result of expanding one value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expanded {
    /// The text with every reference replaced.
    pub value: String,
    /// Names that were referenced but are not defined.
    pub undefined: BTreeSet<String>,
}

/// Maximum nesting of references, a guard beyond loop detection.
const MAX_DEPTH: usize = 100;

/// Expands `text`, the value of parameter `owner` (used for loop detection;
/// pass `None` for text that is not a parameter's value).
pub fn expand(
    text: &str,
    owner: Option<&str>,
    lookup: &dyn Lookup,
) -> Result<Expanded, ExpandError> {
    let mut stack: Vec<String> = owner.map(|o| vec![o.to_string()]).unwrap_or_default();
    let mut undefined = BTreeSet::new();
    let value = expand_in(text, lookup, &mut stack, &mut undefined)?;
    Ok(Expanded { value, undefined })
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn expand_in(
    text: &str,
    lookup: &dyn Lookup,
    stack: &mut Vec<String>,
    undefined: &mut BTreeSet<String>,
) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let mut chars = after.chars();
        match chars.next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                let body_len = matching(after, open, close).ok_or_else(|| {
                    ExpandError::Syntax(format!("missing '{close}' after '${open}' in \"{text}\""))
                })?;
                let body = &after[1..body_len];
                out.push_str(&expand_braced(body, lookup, stack, undefined)?);
                rest = &after[body_len + 1..];
            }
            Some(c) if is_name_char(c) => {
                let end = after
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(after.len());
                out.push_str(&value_of(&after[..end], lookup, stack, undefined)?);
                rest = &after[end..];
            }
            // A lone `$` (end of text or followed by punctuation) stays as it is.
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index in `s` (which starts with `open`) of the matching `close`.
fn matching(s: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth -= 1;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn expand_braced(
    body: &str,
    lookup: &dyn Lookup,
    stack: &mut Vec<String>,
    undefined: &mut BTreeSet<String>,
) -> Result<String, ExpandError> {
    let name_end = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
    let name = &body[..name_end];
    if name.is_empty() {
        return Err(ExpandError::Syntax(format!(
            "missing parameter name in \"${{{body}}}\""
        )));
    }
    let rest = &body[name_end..];
    let Some(op) = rest.chars().next() else {
        return value_of(name, lookup, stack, undefined);
    };
    if op != '?' && op != ':' {
        return Err(ExpandError::Syntax(format!(
            "unexpected '{op}' after parameter name in \"${{{body}}}\" (expected '?', ':' or '}}')"
        )));
    }
    let arg = rest[1..].trim();
    let (then_text, else_text) = split_alternatives(arg, body)?;
    let current = value_of(name, lookup, stack, undefined)?;
    let non_empty = !current.is_empty();
    let chosen = match (op, else_text) {
        ('?', Some(e)) => Some(if non_empty { then_text } else { e }),
        ('?', None) => non_empty.then_some(then_text),
        (_, None) => (!non_empty).then_some(then_text),
        (_, Some(_)) => {
            return Err(ExpandError::Syntax(format!(
                "\"${{{body}}}\": the '{{then}}:{{else}}' form needs '?', not ':'"
            )))
        }
    };
    match chosen {
        Some(t) => expand_in(t, lookup, stack, undefined),
        None => Ok(String::new()),
    }
}

/// Splits `{then}:{else}` or `{then}` or plain text into its parts.
fn split_alternatives<'a>(
    arg: &'a str,
    body: &str,
) -> Result<(&'a str, Option<&'a str>), ExpandError> {
    if !arg.starts_with('{') {
        return Ok((arg, None));
    }
    let bad = || ExpandError::Syntax(format!("malformed '{{value}}' in \"${{{body}}}\""));
    let end = matching(arg, '{', '}').ok_or_else(bad)?;
    let first = arg[1..end].trim();
    let after = arg[end + 1..].trim();
    if after.is_empty() {
        return Ok((first, None));
    }
    let second = after.strip_prefix(':').ok_or_else(bad)?.trim();
    if !second.starts_with('{') {
        return Err(bad());
    }
    let end2 = matching(second, '{', '}').ok_or_else(bad)?;
    if !second[end2 + 1..].trim().is_empty() {
        return Err(bad());
    }
    Ok((first, Some(second[1..end2].trim())))
}

fn value_of(
    name: &str,
    lookup: &dyn Lookup,
    stack: &mut Vec<String>,
    undefined: &mut BTreeSet<String>,
) -> Result<String, ExpandError> {
    if let Some(at) = stack.iter().position(|n| n == name) {
        let mut chain: Vec<String> = stack[at..].to_vec();
        chain.push(name.to_string());
        return Err(ExpandError::Loop(chain));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(ExpandError::Syntax(format!(
            "parameter references nested deeper than {MAX_DEPTH}"
        )));
    }
    let Some(raw) = lookup.raw(name) else {
        undefined.insert(name.to_string());
        return Ok(String::new());
    };
    stack.push(name.to_string());
    let result = expand_in(&raw, lookup, stack, undefined);
    stack.pop();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn table(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |n: &str| map.get(n).cloned()
    }

    fn ex(text: &str, pairs: &[(&str, &str)]) -> Result<String, ExpandError> {
        expand(text, None, &table(pairs)).map(|e| e.value)
    }

    #[test]
    fn forms() {
        let t = [("a", "A"), ("b", "$a-$(a)-${a}"), ("empty", "")];
        assert_eq!(ex("x $b y", &t).unwrap(), "x A-A-A y");
        assert_eq!(ex("$$a", &t).unwrap(), "$a");
        assert_eq!(
            ex("${a?yes}|${empty?yes}|${nope?yes}", &t).unwrap(),
            "yes||"
        );
        assert_eq!(ex("${a:no}|${empty:no}|${nope:no}", &t).unwrap(), "|no|no");
        assert_eq!(ex("${a?{ $a x }}", &t).unwrap(), "A x");
        assert_eq!(ex("${a?{1}:{2}}${empty?{1}:{2}}", &t).unwrap(), "12");
        assert_eq!(ex("cost $ 5 and $", &t).unwrap(), "cost $ 5 and $");
        assert_eq!(ex("$a.b", &t).unwrap(), "A.b");
    }

    #[test]
    fn undefined_is_reported() {
        let e = expand("x${zz}y$q", None, &table(&[])).unwrap();
        assert_eq!(e.value, "xy");
        assert_eq!(e.undefined.into_iter().collect::<Vec<_>>(), vec!["q", "zz"]);
    }

    #[test]
    fn loops_name_the_chain() {
        let t = table(&[("a", "$b"), ("b", "x ${c}"), ("c", "$a")]);
        let err = expand("$b", Some("a"), &t).unwrap_err();
        assert_eq!(
            err,
            ExpandError::Loop(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(
            err.to_string(),
            "recursive parameter expansion: $a -> $b -> $c -> $a"
        );
        let selfref = table(&[("a", "${a?x}")]);
        assert!(matches!(
            expand("${a?x}", Some("a"), &selfref),
            Err(ExpandError::Loop(_))
        ));
    }

    #[test]
    fn syntax_errors() {
        assert!(matches!(ex("${a", &[]), Err(ExpandError::Syntax(_))));
        assert!(matches!(ex("${}", &[]), Err(ExpandError::Syntax(_))));
        assert!(matches!(ex("${a!x}", &[]), Err(ExpandError::Syntax(_))));
        assert!(matches!(ex("${a?{x}y}", &[]), Err(ExpandError::Syntax(_))));
        assert!(matches!(
            ex("${a:{x}:{y}}", &[]),
            Err(ExpandError::Syntax(_))
        ));
    }
}
