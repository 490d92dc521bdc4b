//! The next hop: parsing `[host]:port`, `host:port`, `host` and `[host]`
//! (as Postfix's relayhost and transport_maps write them), and finding the
//! servers to try: MX records in preference order with a fall-back to the
//! host's own addresses (hickory-resolver, the system's resolver settings
//! and their time limits), or, in brackets, the host's addresses without
//! an MX lookup (getaddrinfo: /etc/hosts and NSS).

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
/// ones in the order given), each name once.
pub fn mx_order(mut records: Vec<(u16, String)>) -> Vec<String> {
    records.sort_by_key(|(pref, _)| *pref);
    let mut out: Vec<String> = Vec::new();
    for (_, name) in records {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn not_found(what: &str, detail: impl std::fmt::Display) -> RecipientStatus {
    RecipientStatus::bounced(
        "5.4.4",
        format!("Host or domain name not found. Name service error for {what}: {detail}"),
    )
}

fn lookup_failed(what: &str, detail: impl std::fmt::Display) -> RecipientStatus {
    RecipientStatus::deferred(
        "4.4.3",
        format!("Host or domain name not found. Name service error for {what}: {detail}"),
    )
    .of_site()
}

/// The servers of `hop`, at most `limit` (0: no limit), in the order to
/// try them; or the status every recipient gets when there are none.
pub fn servers(
    hop: &NextHop,
    families: Families,
    limit: usize,
) -> Result<Vec<Server>, RecipientStatus> {
    let mut out = Vec::new();
    if hop.mx {
        let resolver = resolver()?;
        let hosts = mx_hosts(&resolver, &hop.host)?;
        for name in hosts {
            match resolver.lookup_ip(format!("{name}.").as_str()) {
                Ok(ips) => {
                    out.extend(
                        ips.iter()
                            .filter(|ip| families.allows(ip))
                            .map(|ip| Server {
                                name: name.clone(),
                                addr: SocketAddr::new(ip, hop.port),
                            }),
                    )
                }
                Err(e) => log::info!("{name}: no address: {e}"),
            }
        }
        if out.is_empty() {
            return Err(lookup_failed(
                &format!("name={} type=A", hop.host),
                "no address of any mail exchanger",
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

/// The MX hosts of `domain`, or the domain itself when it has none.
fn mx_hosts(
    resolver: &hickory_resolver::Resolver,
    domain: &str,
) -> Result<Vec<String>, RecipientStatus> {
    use hickory_resolver::error::ResolveErrorKind;
    use hickory_resolver::proto::op::ResponseCode;
    let what = format!("name={domain} type=MX");
    // A fully qualified name: the search list does not apply.
    match resolver.mx_lookup(format!("{domain}.").as_str()) {
        Ok(mx) => {
            let hosts = mx_order(
                mx.iter()
                    .map(|r| (r.preference(), r.exchange().to_utf8()))
                    .collect(),
            );
            // A null MX (RFC 7505): the domain takes no mail.
            if hosts.iter().all(|h| h.is_empty()) {
                return Err(RecipientStatus::bounced(
                    "5.1.10",
                    format!("Domain {domain} does not accept mail (nullMX)"),
                ));
            }
            Ok(hosts)
        }
        Err(e) => match e.kind() {
            ResolveErrorKind::NoRecordsFound { response_code, .. }
                if *response_code == ResponseCode::NXDomain =>
            {
                Err(not_found(&what, "host not found"))
            }
            // No MX records: the domain's own addresses (RFC 5321 5.1).
            ResolveErrorKind::NoRecordsFound { .. } => Ok(vec![domain.to_string()]),
            _ => Err(lookup_failed(&what, e)),
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
        let order = mx_order(vec![
            (20, "b.test.".into()),
            (10, "A.test.".into()),
            (20, "c.test.".into()),
            (30, "a.test.".into()),
        ]);
        assert_eq!(order, vec!["a.test", "b.test", "c.test"]);
    }

    #[test]
    fn literal_addresses_by_family() {
        let hop = parse("[127.0.0.1]:2525", "d").unwrap();
        let both = Families { v4: true, v6: true };
        let s = servers(&hop, both, 0).unwrap();
        assert_eq!(s[0].label(), "127.0.0.1[127.0.0.1]:2525");
        let v6 = Families {
            v4: false,
            v6: true,
        };
        let e = servers(&hop, v6, 0).unwrap_err();
        assert!(e.reason.contains("inet_protocols"), "{e:?}");
        assert!(e.site_failure);
    }
}
