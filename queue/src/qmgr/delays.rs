//! The delays qmgr logs, as Postfix writes them (`delay=`, `delays=`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the epoch.
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch, with fractions.
pub(super) fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A delay as Postfix logs it: whole seconds from 10 s, else at most two
/// decimals, `0` below 0.01 s.
pub(super) fn fmt_delay(secs: f64) -> String {
    let secs = secs.max(0.0);
    if secs >= 10.0 {
        format!("{secs:.0}")
    } else if secs >= 0.01 {
        let t = format!("{secs:.2}");
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        "0".to_string()
    }
}

/// `delay=T, delays=a/b/c/d` as Postfix logs them: `T` from the message's
/// arrival (across deferrals) to now; `a` before this attempt took the
/// message into the active queue, `b` in the active queue until it was
/// handed to the agent, `c` (connection setup) 0, `d` in the agent.
pub(super) fn delay_fields(
    arrival: u64,
    started_at: f64,
    in_active: Duration,
    in_agent: Duration,
) -> String {
    let now = now_f64();
    #[allow(clippy::cast_precision_loss)]
    let arrival = arrival as f64;
    format!(
        "delay={}, delays={}/{}/0/{}",
        fmt_delay(now - arrival),
        fmt_delay(started_at - arrival),
        fmt_delay(in_active.as_secs_f64()),
        fmt_delay(in_agent.as_secs_f64())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_as_postfix_writes_them() {
        assert_eq!(fmt_delay(0.004), "0");
        assert_eq!(fmt_delay(-1.0), "0");
        assert_eq!(fmt_delay(0.5), "0.5");
        assert_eq!(fmt_delay(1.234), "1.23");
        assert_eq!(fmt_delay(2.0), "2");
        assert_eq!(fmt_delay(3601.4), "3601");
        let arrival = now_secs() - 100;
        #[allow(clippy::cast_precision_loss)]
        let f = delay_fields(
            arrival,
            arrival as f64 + 90.0,
            Duration::from_millis(20),
            Duration::from_secs(1),
        );
        assert!(f.starts_with("delay=10"), "{f}");
        assert!(f.ends_with(", delays=90/0.02/0/1"), "{f}");
    }
}
