//! The next hop: parsing `[host]:port`, `host:port`, `host` and `[host]`
//! (as Postfix's relayhost and transport_maps write them), and finding the
//! servers to try: MX records in preference order with a fall-back to the
//! host's own addresses (hickory-resolver, the system's resolver settings
//! and their time limits), or, in brackets, the host's addresses without
//! an MX lookup (getaddrinfo: /etc/hosts and NSS). Only an authoritative
//! answer that a name or record does not exist is final (a bounce); a
//! server that fails or does not answer defers the mail, and a failed MX
//! lookup is never taken for an absence of MX records.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use postern_common::handoff::RecipientStatus;

/// Where a delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextHop {
    /// The host or domain name, or an address literal.
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// Whether MX records are looked up (not in brackets).
    pub mx: bool,
}

fn port_of(text: &str) -> Option<u16> {
    match text {
        "smtp" => Some(25),
        "submission" => Some(587),
        _ => text.parse().ok().filter(|&p| p != 0),
    }
}

/// Parses a next hop; `domain` stands in for an empty one (the recipient's
/// domain).
pub fn parse(text: &str, domain: &str) -> Result<NextHop, String> {
    let text = text.trim();
    let text = if text.is_empty() { domain } else { text };
    let (host, port, mx) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("next hop {text:?}: no closing ']'"))?;
        let inside = inside
            .strip_prefix("ipv6:")
            .or_else(|| inside.strip_prefix("IPv6:"))
            .unwrap_or(inside);
        let port = match after {
            "" => 25,
            p => p
                .strip_prefix(':')
                .and_then(port_of)
                .ok_or_else(|| format!("next hop {text:?}: bad port"))?,
        };
        (inside.to_string(), port, false)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (
                h.to_string(),
                port_of(p).ok_or_else(|| format!("next hop {text:?}: bad port"))?,
                true,
            ),
            None => (text.to_string(), 25, true),
        }
    };
    let ok = !host.is_empty()
        && (host.parse::<IpAddr>().is_ok()
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_')));
    if !ok {
        return Err(format!("next hop {text:?}: bad host name"));
    }
    // An address literal has no MX records.
    let mx = mx && host.parse::<IpAddr>().is_err();
    Ok(NextHop {
        host: host.to_ascii_lowercase(),
        port,
        mx,
    })
}

/// One server address to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Its name (the MX host, or the next hop's host).
    pub name: String,
    /// Its address and port.
    pub addr: SocketAddr,
    /// Whether it is one of the next hop's most preferred servers (the MX
    /// hosts of the lowest preference, or the host itself without MX): only
    /// a session with such a server is kept for the next request to the
    /// same next hop, as Postfix keeps only those under the destination's
    /// name, so that mail does not stick to a backup MX once the primary
    /// is back.
    pub primary: bool,
}

impl Server {
    /// `name[address]:port`, as Postfix logs a relay.
    pub fn label(&self) -> String {
        format!("{}[{}]:{}", self.name, self.addr.ip(), self.addr.port())
    }
}

/// Which address families may be used (`inet_protocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Families {
    /// IPv4.
    pub v4: bool,
    /// IPv6.
    pub v6: bool,
}

impl Families {
    fn allows(self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(_) => self.v4,
            IpAddr::V6(_) => self.v6,
        }
    }
}

/// The MX hosts in the order to try them: lowest preference first (equal
/// ones in the order given), each name once, with whether it has the
/// lowest preference ([`Server::primary`]).
pub fn mx_ranked(mut records: Vec<(u16, String)>) -> Vec<(String, bool)> {
    records.sort_by_key(|(pref, _)| *pref);
    let best = records.first().map(|(pref, _)| *pref);
    let mut out: Vec<(String, bool)> = Vec::new();
    for (pref, name) in records {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !out.iter().any(|(n, _)| *n == name) {
            out.push((name, Some(pref) == best));
        }
    }
    out
}

/// What a name server's failure to answer means for the mail: only an
/// authoritative "no such name" or "no such record" is final; a server
/// that fails (SERVFAIL, REFUSED, any other code) or does not answer
/// says nothing about the name, and the lookup is tried again later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// NXDOMAIN: the name does not exist.
    NoSuchName,
    /// NOERROR without an answer: the name exists, without that record.
    NoData,
    /// Anything else: a time-out, no server, a failure code.
    Temporary,
}

impl Failure {
    fn of(kind: &hickory_resolver::error::ResolveErrorKind) -> Failure {
        use hickory_resolver::error::ResolveErrorKind;
        use hickory_resolver::proto::op::ResponseCode;
        match kind {
            ResolveErrorKind::NoRecordsFound { response_code, .. } => match *response_code {
                ResponseCode::NXDomain => Failure::NoSuchName,
                ResponseCode::NoError => Failure::NoData,
                _ => Failure::Temporary,
            },
            _ => Failure::Temporary,
        }
    }

    /// Why the lookup of `what` failed so, in the words of the C
    /// resolver's messages (as Postfix logs them).
    fn reason(self, what: &str, detail: impl std::fmt::Display) -> String {
        let detail = match self {
            Failure::NoSuchName => "Host not found".to_string(),
            Failure::NoData => "Host found but no data record of requested type".to_string(),
            Failure::Temporary => detail.to_string(),
        };
        format!("Host or domain name not found. Name service error for {what}: {detail}")
    }

    /// The status of every recipient when the lookup of `what` failed so.
    fn status(self, what: &str, detail: impl std::fmt::Display) -> RecipientStatus {
        let text = self.reason(what, detail);
        match self {
            Failure::Temporary => RecipientStatus::deferred("4.4.3", text).of_site(),
            _ => RecipientStatus::bounced("5.4.4", text),
        }
    }
}

fn lookup_failed(what: &str, detail: impl std::fmt::Display) -> RecipientStatus {
    Failure::Temporary.status(what, detail)
}

/// The servers of `hop`, at most `limit` (0: no limit), in the order to
/// try them; or the status every recipient gets when there are none.
pub fn servers(
    hop: &NextHop,
    families: Families,
    limit: usize,
    defer_if_no_mx_address: bool,
) -> Result<Vec<Server>, RecipientStatus> {
    let mut out = Vec::new();
    if hop.mx {
        let resolver = resolver()?;
        let (hosts, exchangers) = match mx_hosts(&resolver, &hop.host)? {
            Some(hosts) => (hosts, true),
            None => (vec![(hop.host.clone(), true)], false),
        };
        let mut failed = Vec::new();
        for (name, primary) in hosts {
            match addresses(&resolver, &name, families) {
                Ok(ips) => out.extend(ips.into_iter().map(|ip| Server {
                    name: name.clone(),
                    addr: SocketAddr::new(ip, hop.port),
                    primary,
                })),
                Err(why) => {
                    log::info!("{name}: no address: {}", why.detail);
                    failed.push(why);
                }
            }
        }
        if out.is_empty() {
            if exchangers {
                log::warn!("no MX host for {} has a valid address record", hop.host);
            }
            return Err(no_address(
                failed,
                &hop.host,
                exchangers && defer_if_no_mx_address,
            ));
        }
    } else {
        let addrs = (hop.host.as_str(), hop.port)
            .to_socket_addrs()
            .map_err(|e| lookup_failed(&format!("name={} type=A", hop.host), e))?;
        out.extend(
            addrs
                .filter(|a| families.allows(&a.ip()))
                .map(|addr| Server {
                    name: hop.host.clone(),
                    addr,
                    primary: true,
                }),
        );
        if out.is_empty() {
            return Err(lookup_failed(
                &format!("name={} type=A", hop.host),
                "no address of an enabled family (inet_protocols)",
            ));
        }
    }
    if limit > 0 {
        out.truncate(limit);
    }
    Ok(out)
}

fn resolver() -> Result<hickory_resolver::Resolver, RecipientStatus> {
    hickory_resolver::Resolver::from_system_conf()
        .map_err(|e| lookup_failed("the resolver configuration", e))
}

/// The status of every recipient when no server of the next hop `host`
/// has an address, from the failed lookups: deferred when any of them
/// failed for now (the name server, not the name); bounced when each
/// answer was final (the names, or their addresses, do not exist: a
/// domain without mail exchangers and without an address takes no mail,
/// RFC 5321 5.1, and so does one whose mail exchangers all lack one, as
/// Postfix decides by default) -- unless `defer` (Postfix's
/// `smtp_defer_if_no_mx_address_found`), which defers that too.
fn no_address(failures: Vec<Unresolved>, host: &str, defer: bool) -> RecipientStatus {
    let why = most_telling(failures, host);
    if defer && why.failure != Failure::Temporary {
        let text = why.failure.reason(&why.what, &why.detail);
        return RecipientStatus::deferred("4.4.4", text).of_site();
    }
    why.failure.status(&why.what, &why.detail)
}

/// Why a host has no address: the lookup that failed and how.
struct Unresolved {
    failure: Failure,
    /// `name=HOST type=A`.
    what: String,
    detail: String,
}

/// The addresses of `name` in the enabled families, from DNS (A records,
/// then AAAA; each family asked for on its own, so that one family's
/// records do not hide the other's), or why it has none: a temporary
/// failure of either lookup before a final one, so that a name is never
/// taken for addressless while one of its lookups merely failed. A name
/// that is an address of an enabled family (a mail exchanger written as
/// an address, which Postfix accepts) is that address, without a lookup:
/// as a name it would not exist, and the mail would bounce.
fn addresses(
    resolver: &hickory_resolver::Resolver,
    name: &str,
    families: Families,
) -> Result<Vec<IpAddr>, Unresolved> {
    if let Some(ip) = name.parse::<IpAddr>().ok().filter(|ip| families.allows(ip)) {
        return Ok(vec![ip]);
    }
    let fqdn = format!("{name}.");
    let mut ips = Vec::new();
    let mut failures = Vec::new();
    let mut failed = |e: hickory_resolver::error::ResolveError, rtype: &str| {
        failures.push(Unresolved {
            failure: Failure::of(e.kind()),
            what: format!("name={name} type={rtype}"),
            detail: e.to_string(),
        })
    };
    if families.v4 {
        match resolver.ipv4_lookup(fqdn.as_str()) {
            Ok(found) => ips.extend(found.iter().map(|a| IpAddr::V4(a.0))),
            Err(e) => failed(e, "A"),
        }
    }
    if families.v6 {
        match resolver.ipv6_lookup(fqdn.as_str()) {
            Ok(found) => ips.extend(found.iter().map(|a| IpAddr::V6(a.0))),
            Err(e) => failed(e, "AAAA"),
        }
    }
    if !ips.is_empty() {
        return Ok(ips);
    }
    Err(most_telling(failures, name))
}

/// Of the failed address lookups of `name`, the one to report: the first
/// temporary failure (the name may well have addresses), else the first.
fn most_telling(mut failures: Vec<Unresolved>, name: &str) -> Unresolved {
    if failures.is_empty() {
        return Unresolved {
            failure: Failure::Temporary,
            what: format!("name={name} type=A"),
            detail: "no address family enabled (inet_protocols)".to_string(),
        };
    }
    let at = failures
        .iter()
        .position(|u| u.failure == Failure::Temporary)
        .unwrap_or(0);
    failures.swap_remove(at)
}

/// The MX hosts of `domain` in the order to try them, or `None` when it
/// has no MX records (its own addresses stand in, RFC 5321 5.1). A failed
/// lookup is a failure, not an absence: the address is not tried instead.
fn mx_hosts(
    resolver: &hickory_resolver::Resolver,
    domain: &str,
) -> Result<Option<Vec<(String, bool)>>, RecipientStatus> {
    let what = format!("name={domain} type=MX");
    // A fully qualified name: the search list does not apply.
    match resolver.mx_lookup(format!("{domain}.").as_str()) {
        Ok(mx) => {
            let hosts = mx_ranked(
                mx.iter()
                    .map(|r| (r.preference(), r.exchange().to_utf8()))
                    .collect(),
            );
            // A null MX (RFC 7505): the domain takes no mail.
            if hosts.iter().all(|(h, _)| h.is_empty()) {
                return Err(RecipientStatus::bounced(
                    "5.1.10",
                    format!("Domain {domain} does not accept mail (nullMX)"),
                ));
            }
            Ok(Some(hosts))
        }
        Err(e) => match Failure::of(e.kind()) {
            Failure::NoData => Ok(None),
            failure => Err(failure.status(&what, e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_hop_forms() {
        let p = |t| parse(t, "example.test").unwrap();
        assert_eq!(
            p("[relay.test]:587"),
            NextHop {
                host: "relay.test".into(),
                port: 587,
                mx: false
            }
        );
        assert_eq!(p("[relay.test]").port, 25);
        assert_eq!(
            p("relay.test:submission"),
            NextHop {
                host: "relay.test".into(),
                port: 587,
                mx: true
            }
        );
        assert_eq!(
            p(""),
            NextHop {
                host: "example.test".into(),
                port: 25,
                mx: true
            }
        );
        assert_eq!(p("[ipv6:::1]:26").host, "::1");
        // An address literal is not looked up as MX even without brackets.
        assert!(!p("127.0.0.2:2525").mx);
        assert!(parse("[relay", "d").is_err());
        assert!(parse("[relay]:x", "d").is_err());
        assert!(parse("relay:0", "d").is_err());
        assert!(parse("bad host", "d").is_err());
        assert!(parse("", "").is_err());
    }

    #[test]
    fn mx_preference_order() {
        let order = mx_ranked(vec![
            (20, "b.test.".into()),
            (10, "A.test.".into()),
            (20, "c.test.".into()),
            (30, "a.test.".into()),
            (10, "d.test.".into()),
        ]);
        let want = [
            ("a.test", true),
            ("d.test", true),
            ("b.test", false),
            ("c.test", false),
        ];
        assert_eq!(
            order,
            want.map(|(n, p)| (n.to_string(), p)).to_vec(),
            "lowest preference first and primary, each name once"
        );
    }

    fn no_records(code: hickory_resolver::proto::op::ResponseCode) -> Failure {
        Failure::of(&hickory_resolver::error::ResolveErrorKind::NoRecordsFound {
            query: Box::default(),
            soa: None,
            negative_ttl: None,
            response_code: code,
            trusted: true,
        })
    }

    #[test]
    fn only_authoritative_answers_are_final() {
        use hickory_resolver::error::ResolveErrorKind;
        use hickory_resolver::proto::op::ResponseCode;
        assert_eq!(no_records(ResponseCode::NXDomain), Failure::NoSuchName);
        assert_eq!(no_records(ResponseCode::NoError), Failure::NoData);
        // hickory reports SERVFAIL and REFUSED as "no records" too: they
        // are failures of the server, never an absence of MX records (that
        // would send the mail to the domain's address instead).
        for code in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::FormErr,
            ResponseCode::NotImp,
        ] {
            assert_eq!(no_records(code), Failure::Temporary, "{code}");
        }
        assert_eq!(Failure::of(&ResolveErrorKind::Timeout), Failure::Temporary);
        assert_eq!(
            Failure::of(&ResolveErrorKind::NoConnections),
            Failure::Temporary
        );
    }

    #[test]
    fn lookup_failures_bounce_or_defer() {
        let what = "name=nowhere.test type=MX";
        let st = Failure::NoSuchName.status(what, "ignored");
        assert!(!st.site_failure && st.dsn == "5.4.4", "{st:?}");
        assert_eq!(
            st.reason,
            "Host or domain name not found. Name service error for name=nowhere.test type=MX: Host not found"
        );
        let st = Failure::NoData.status("name=a.test type=AAAA", "ignored");
        assert!(
            st.dsn == "5.4.4"
                && st
                    .reason
                    .ends_with("type=AAAA: Host found but no data record of requested type"),
            "{st:?}"
        );
        let st = Failure::Temporary.status(what, "request timed out");
        assert!(st.site_failure && st.dsn == "4.4.3", "{st:?}");
        assert!(st.reason.ends_with("type=MX: request timed out"), "{st:?}");
    }

    #[test]
    fn mail_exchangers_without_addresses_bounce_unless_a_lookup_failed_for_now() {
        let u = |failure, name: &str| Unresolved {
            failure,
            what: format!("name={name} type=A"),
            detail: "server failure".into(),
        };
        let check = |failures, defer, dsn: &str, site: bool, reason: &str| {
            let st = no_address(failures, "d.test", defer);
            assert!(st.dsn == dsn && st.site_failure == site, "{st:?}");
            assert!(st.reason.contains(reason), "{st:?}");
        };
        // Every answer final: bounced, with the first host's lookup.
        let finals = vec![
            u(Failure::NoSuchName, "mx1.test"),
            u(Failure::NoData, "mx2.test"),
        ];
        check(
            finals,
            false,
            "5.4.4",
            false,
            "name=mx1.test type=A: Host not found",
        );
        // One lookup failed for now: deferred, naming that one.
        let mixed = vec![
            u(Failure::NoSuchName, "mx1.test"),
            u(Failure::Temporary, "mx2.test"),
        ];
        check(
            mixed,
            false,
            "4.4.3",
            true,
            "name=mx2.test type=A: server failure",
        );
        // smtp_defer_if_no_mx_address_found = yes: final answers defer too.
        let one = vec![u(Failure::NoSuchName, "mx1.test")];
        check(
            one,
            true,
            "4.4.4",
            true,
            "name=mx1.test type=A: Host not found",
        );
    }

    #[test]
    fn a_mail_exchanger_written_as_an_address_is_not_looked_up() {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
        // No name server: any lookup fails.
        let resolver = hickory_resolver::Resolver::new(
            ResolverConfig::from_parts(None, Vec::new(), NameServerConfigGroup::new()),
            ResolverOpts::default(),
        )
        .unwrap();
        let v4 = Families {
            v4: true,
            v6: false,
        };
        let got = addresses(&resolver, "192.0.2.7", v4).map_err(|u| u.detail);
        assert_eq!(got, Ok(vec![IpAddr::from([192, 0, 2, 7])]));
        // An address of a family not enabled is a name like any other.
        assert!(addresses(&resolver, "2001:db8::7", v4).is_err());
    }

    #[test]
    fn a_temporary_address_failure_outweighs_a_final_one() {
        let u = |failure, rtype: &str| Unresolved {
            failure,
            what: format!("name=a.test type={rtype}"),
            detail: String::new(),
        };
        let pick = most_telling(
            vec![u(Failure::NoData, "A"), u(Failure::Temporary, "AAAA")],
            "a.test",
        );
        assert_eq!(
            (pick.failure, pick.what.as_str()),
            (Failure::Temporary, "name=a.test type=AAAA")
        );
        let pick = most_telling(
            vec![u(Failure::NoData, "A"), u(Failure::NoData, "AAAA")],
            "a.test",
        );
        assert_eq!(
            (pick.failure, pick.what.as_str()),
            (Failure::NoData, "name=a.test type=A")
        );
        assert_eq!(
            most_telling(Vec::new(), "a.test").failure,
            Failure::Temporary
        );
    }

    #[test]
    fn literal_addresses_by_family() {
        let hop = parse("[127.0.0.1]:2525", "d").unwrap();
        let both = Families { v4: true, v6: true };
        let s = servers(&hop, both, 0, false).unwrap();
        assert_eq!(s[0].label(), "127.0.0.1[127.0.0.1]:2525");
        let v6 = Families {
            v4: false,
            v6: true,
        };
        let e = servers(&hop, v6, 0, false).unwrap_err();
        assert!(e.reason.contains("inet_protocols"), "{e:?}");
        assert!(e.site_failure);
    }
}
