//! The host's own names, which the defaults of `myhostname` and `mydomain`
//! come from (as Postfix's do).
//!
//! `myhostname` defaults to the system host name when it is fully
//! qualified (has a dot); a bare name gets `.$mydomain` appended (when
//! main.cf sets `mydomain`) or `.localdomain`. `mydomain` defaults to
//! `myhostname` minus its first label, or `localdomain` when that leaves
//! nothing. The host name is the kernel's (`/proc/sys/kernel/hostname`,
//! what gethostname(2) returns); the resolver is not asked, as Postfix
//! does not ask it either.

use std::sync::OnceLock;

/// The domain of a host name without one (Postfix's `DEF_MYDOMAIN`).
pub const DEFAULT_DOMAIN: &str = "localdomain";

/// The system host name (trimmed), or `localhost` when it cannot be read
/// or is unusable. Read once per process.
pub fn system_hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| usable(h))
            .unwrap_or_else(|| "localhost".to_string())
    })
}

/// Whether `name` can stand as a host name in addresses and headers.
fn usable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.contains("..")
}

/// The default of `myhostname` for a host called `hostname`, with main.cf's
/// `mydomain` when it sets one.
pub fn myhostname_default(hostname: &str, mydomain: Option<&str>) -> String {
    if hostname.contains('.') {
        return hostname.to_string();
    }
    match mydomain {
        Some(d) if !d.trim().is_empty() => format!("{hostname}.{}", d.trim()),
        _ => format!("{hostname}.{DEFAULT_DOMAIN}"),
    }
}

/// The default of `mydomain` for the host name `myhostname`: all but its
/// first label, or [`DEFAULT_DOMAIN`].
pub fn mydomain_default(myhostname: &str) -> String {
    match myhostname.split_once('.') {
        Some((_, rest)) if !rest.is_empty() && !rest.contains('$') => rest.to_string(),
        _ => DEFAULT_DOMAIN.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_postfix_derives_them() {
        assert_eq!(myhostname_default("mx.example.org", None), "mx.example.org");
        assert_eq!(
            myhostname_default("mx.example.org", Some("other.net")),
            "mx.example.org"
        );
        assert_eq!(myhostname_default("vm", None), "vm.localdomain");
        assert_eq!(
            myhostname_default("vm", Some("example.net")),
            "vm.example.net"
        );
        assert_eq!(mydomain_default("mx.example.org"), "example.org");
        assert_eq!(mydomain_default("vm.localdomain"), "localdomain");
        assert_eq!(mydomain_default("localhost"), "localdomain");
        assert_eq!(mydomain_default("mx.$mydomain"), "localdomain");
        assert!(usable("vm") && usable("a-b.example.org"));
        assert!(!usable("") && !usable("a b") && !usable(".x") && !usable("a..b"));
    }
}
