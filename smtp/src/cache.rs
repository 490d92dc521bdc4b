//! The connection cache, per process: after a delivery the server
//! accepted, an smtp process keeps its session (once RSET was answered
//! 2xx) while it waits for its next request, for at most
//! `smtp_connection_cache_time_limit`. A next request for the same next
//! hop, reached the same way ([`Key`]: host, port, MX lookup or not, TLS
//! level, SASL user), goes over it with no new greeting, EHLO, STARTTLS or
//! AUTH; any other request closes it with QUIT first. A session is used at
//! most `1 + smtp_connection_reuse_count_limit` times (0: no limit) and not
//! reused once `smtp_connection_reuse_time_limit` has passed since it was
//! opened. Never kept after an error, a refusal, in an unknown state, or
//! with a backup MX (only with the next hop's most preferred servers)
//! ([`crate::session::After`]).
//!
//! Postfix shares its cache between processes through its `scache`
//! service; postern's lives in the process that made the session, so a
//! request reuses a session only when it reaches that process (the
//! count of `conn_use=` lines in the log says how often that is).

use std::time::{Duration, Instant};

use postern_conf::{params, Config};

use crate::nexthop::NextHop;
use crate::session::{After, Session};
use crate::tls::Level;
use crate::Settings;

/// The cache's limits, from main.cf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `smtp_connection_cache_on_demand`.
    pub enabled: bool,
    /// `smtp_connection_cache_time_limit`: how long an unused session is kept.
    pub idle: Duration,
    /// `smtp_connection_reuse_count_limit`: reuses after the first
    /// delivery (0: no limit).
    pub reuse_count: u32,
    /// `smtp_connection_reuse_time_limit`: how long after its opening a
    /// session may be reused.
    pub reuse_age: Duration,
}

impl Limits {
    /// Reads the limits from main.cf.
    pub fn load(c: &Config) -> Limits {
        Limits {
            enabled: c.bool(params::SMTP_CONNECTION_CACHE_ON_DEMAND),
            idle: c.time(params::SMTP_CONNECTION_CACHE_TIME_LIMIT),
            reuse_count: u32::try_from(c.int(params::SMTP_CONNECTION_REUSE_COUNT_LIMIT))
                .unwrap_or(u32::MAX),
            reuse_age: c.time(params::SMTP_CONNECTION_REUSE_TIME_LIMIT),
        }
    }
}

/// What a session must match to serve a request: the same next hop,
/// reached the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The next hop's host or domain.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// Whether MX records were looked up.
    pub mx: bool,
    /// The TLS level the session was opened under.
    pub tls: Level,
    /// The SASL user it authenticated as, if any.
    pub sasl_user: Option<String>,
}

impl Key {
    /// The key of a request for `hop` (written `nexthop_text`).
    pub fn new(hop: &NextHop, nexthop_text: &str, s: &Settings) -> Key {
        let sasl_user = if s.sasl_enable {
            s.passwords
                .find(nexthop_text, &hop.host, hop.port)
                .map(|c| c.user.clone())
        } else {
            None
        };
        Key {
            host: hop.host.to_ascii_lowercase(),
            port: hop.port,
            mx: hop.mx,
            tls: s.tls_level,
            sasl_user,
        }
    }
}

/// Whether a cached session may serve a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Yes.
    Yes,
    /// No: the request is for another next hop (or reaches it another way).
    OtherNextHop,
    /// No: the session waited longer than `smtp_connection_cache_time_limit`.
    IdleTooLong,
    /// No: the session is older than `smtp_connection_reuse_time_limit`.
    TooOld,
}

/// Whether the session kept under `kept` (opened at `opened`, unused since
/// `since`) may serve a request for `wanted` at `now`.
pub fn decide(
    limits: &Limits,
    kept: &Key,
    opened: Instant,
    since: Instant,
    wanted: &Key,
    now: Instant,
) -> Reuse {
    if kept != wanted {
        Reuse::OtherNextHop
    } else if now.saturating_duration_since(since) > limits.idle {
        Reuse::IdleTooLong
    } else if now.saturating_duration_since(opened) >= limits.reuse_age {
        Reuse::TooOld
    } else {
        Reuse::Yes
    }
}

/// Whether a session that ended a transaction in state `after`, having
/// carried `uses` transactions since `opened`, may be kept at `now` for
/// another.
pub fn may_keep(limits: &Limits, after: After, uses: u32, opened: Instant, now: Instant) -> bool {
    limits.enabled
        && after == After::Reusable
        && (limits.reuse_count == 0 || uses <= limits.reuse_count)
        && now.saturating_duration_since(opened) < limits.reuse_age
}

#[derive(Debug)]
struct Kept {
    key: Key,
    session: Session,
    since: Instant,
}

/// The process's cache: at most one session.
#[derive(Debug)]
pub struct Cache {
    limits: Limits,
    kept: Option<Kept>,
}

impl Cache {
    /// An empty cache.
    pub fn new(limits: Limits) -> Cache {
        Cache { limits, kept: None }
    }

    /// The kept session, if it may serve a request for `key`; a session
    /// that may not is closed with QUIT (not waited for: the request is
    /// for someone else).
    pub fn take(&mut self, key: &Key) -> Option<Session> {
        let kept = self.kept.take()?;
        let verdict = decide(
            &self.limits,
            &kept.key,
            kept.session.opened,
            kept.since,
            key,
            Instant::now(),
        );
        if verdict == Reuse::Yes {
            return Some(kept.session);
        }
        log::debug!(
            "closing the session with {} ({verdict:?})",
            kept.session.relay()
        );
        kept.session.close();
        None
    }

    /// After a transaction: keeps the session for the next request if it
    /// may be kept and answers RSET; else says QUIT. `primary`: the server
    /// is one of the next hop's most preferred ([`crate::nexthop::Server`]);
    /// a session with a backup MX is never kept.
    pub fn put(
        &mut self,
        key: Key,
        mut session: Session,
        after: After,
        primary: bool,
        s: &Settings,
    ) {
        if let Some(old) = self.kept.take() {
            old.session.close();
        }
        let keep = primary
            && may_keep(
                &self.limits,
                after,
                session.uses,
                session.opened,
                Instant::now(),
            );
        if keep && session.reset(s) {
            self.kept = Some(Kept {
                key,
                session,
                since: Instant::now(),
            });
        } else if after == After::Stale {
            // The connection is gone: nothing to say goodbye to.
        } else {
            session.quit(s);
        }
    }

    /// When the kept session is to be closed if no request came.
    pub fn deadline(&self) -> Option<Instant> {
        self.kept.as_ref().map(|k| k.since + self.limits.idle)
    }

    /// Closes the kept session without waiting on the server (the process
    /// is idle, or about to exit).
    pub fn close(&mut self) {
        if let Some(kept) = self.kept.take() {
            log::debug!("closing the idle session with {}", kept.session.relay());
            kept.session.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            enabled: true,
            idle: Duration::from_secs(2),
            reuse_count: 0,
            reuse_age: Duration::from_secs(300),
        }
    }

    fn key() -> Key {
        Key {
            host: "relay.test".into(),
            port: 25,
            mx: false,
            tls: Level::May,
            sasl_user: None,
        }
    }

    #[test]
    fn the_same_next_hop_reached_the_same_way_reuses() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(10);
        let since = now - Duration::from_secs(1);
        assert_eq!(
            decide(&limits(), &key(), t0, since, &key(), now),
            Reuse::Yes
        );
        let others = [
            Key {
                host: "other.test".into(),
                ..key()
            },
            Key { port: 587, ..key() },
            Key { mx: true, ..key() },
            Key {
                tls: Level::Encrypt,
                ..key()
            },
            Key {
                sasl_user: Some("ann".into()),
                ..key()
            },
        ];
        for other in others {
            assert_eq!(
                decide(&limits(), &key(), t0, since, &other, now),
                Reuse::OtherNextHop,
                "{other:?}"
            );
        }
    }

    #[test]
    fn idle_and_age_limits_end_reuse() {
        let t0 = Instant::now();
        let l = limits();
        // Unused for longer than the cache time limit.
        let now = t0 + Duration::from_secs(10);
        assert_eq!(
            decide(&l, &key(), t0, now - Duration::from_secs(3), &key(), now),
            Reuse::IdleTooLong
        );
        assert_eq!(
            decide(&l, &key(), t0, now - Duration::from_secs(2), &key(), now),
            Reuse::Yes
        );
        // Opened longer ago than the reuse time limit.
        let late = t0 + Duration::from_secs(300);
        assert_eq!(decide(&l, &key(), t0, late, &key(), late), Reuse::TooOld);
    }

    #[test]
    fn only_a_clean_session_within_its_limits_is_kept() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1);
        let l = limits();
        assert!(may_keep(&l, After::Reusable, 1, t0, now));
        assert!(may_keep(&l, After::Reusable, 1000, t0, now));
        assert!(!may_keep(&l, After::Unusable, 1, t0, now));
        assert!(!may_keep(&l, After::Stale, 1, t0, now));
        let off = Limits {
            enabled: false,
            ..l
        };
        assert!(!may_keep(&off, After::Reusable, 1, t0, now));
        // Reused at most twice: three transactions in all.
        let two = Limits {
            reuse_count: 2,
            ..l
        };
        assert!(may_keep(&two, After::Reusable, 1, t0, now));
        assert!(may_keep(&two, After::Reusable, 2, t0, now));
        assert!(!may_keep(&two, After::Reusable, 3, t0, now));
        // Too old to be used again.
        assert!(!may_keep(
            &l,
            After::Reusable,
            1,
            t0,
            t0 + Duration::from_secs(300)
        ));
    }
}
