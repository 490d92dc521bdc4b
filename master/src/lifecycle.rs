//! Child and service lifecycles as pure functions, tested without I/O.
//!
//! A child is `Starting` from fork until its first status record, then
//! alternates `Idle` ⇄ `Busy`; each `Taken` is one use (for a trigger
//! service such as qmgr, one run). A child that exits with a failure before
//! it has taken its first request is a startup failure, and throttles its
//! service; one that fails after (a crash, a SIGKILL, during a request or
//! between two) is logged and replaced at once, as Postfix's master does
//! (it throttles only when a failed child's use count is 0). A service listens on its endpoints
//! only while it has no idle or starting child, is under its process limit,
//! is not throttled and the master is not stopping.
//!
//! **Stress** ([`Stress`]), Postfix's master's rule for a service of
//! Postfix's whose clients may be remote (a public inet or a pass one,
//! with a process limit above 1: `postfix::stress_eligible`): a fork that
//! takes the service's last process slot puts it under stress for
//! [`STRESS_STRETCH`] from that moment (each such fork starts the stretch
//! again); children forked meanwhile get `-o stress=yes`, then `-o
//! stress=` again. Entering stress renews the
//! service's status channel, so that the children forked before leave at
//! their convenience and their successors adapt. While such a service is
//! at its limit with every child busy, the master warns once per stretch
//! ([`busy_warning`]).

use std::time::{Duration, Instant};

use postern_common::status::ChildState;

/// Where a child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Forked, not yet reported.
    Starting,
    /// Waiting for a request.
    Idle,
    /// Serving a request.
    Busy,
}

/// What the master knows of one child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildInfo {
    /// Phase.
    pub phase: Phase,
    /// Requests taken so far.
    pub uses: u32,
    /// Whether it has completed a request.
    pub served: bool,
}

impl ChildInfo {
    /// A child just forked.
    pub const fn new() -> Self {
        ChildInfo {
            phase: Phase::Starting,
            uses: 0,
            served: false,
        }
    }

    /// Applies a status record.
    pub fn report(self, state: ChildState) -> Self {
        match (self.phase, state) {
            (Phase::Busy, ChildState::Available) => ChildInfo {
                phase: Phase::Idle,
                served: true,
                ..self
            },
            (_, ChildState::Available) => ChildInfo {
                phase: Phase::Idle,
                ..self
            },
            (_, ChildState::Taken) => ChildInfo {
                phase: Phase::Busy,
                uses: self.uses.saturating_add(1),
                ..self
            },
        }
    }

    /// Whether the child is available for a connection (idle or about to be).
    pub fn available(&self) -> bool {
        matches!(self.phase, Phase::Starting | Phase::Idle)
    }
}

impl Default for ChildInfo {
    fn default() -> Self {
        Self::new()
    }
}

/// What the exit of a child means for its service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitVerdict {
    /// Normal end of life.
    Normal,
    /// Failed after taking a request: logged, nothing more.
    Failed,
    /// Failed before taking its first request: throttle the service.
    Throttle,
}

/// Judges an exit: `success` is exit status 0. Only a child that never
/// took a request (`uses == 0`) is a startup failure.
pub fn on_exit(child: &ChildInfo, success: bool) -> ExitVerdict {
    match (success, child.uses > 0) {
        (true, _) => ExitVerdict::Normal,
        (false, true) => ExitVerdict::Failed,
        (false, false) => ExitVerdict::Throttle,
    }
}

/// The inputs of the listening decision.
#[derive(Debug, Clone, Copy)]
pub struct ServiceLoad {
    /// Children alive.
    pub children: u32,
    /// Children idle or starting.
    pub available: u32,
    /// Process limit; `None` = unlimited.
    pub limit: Option<u32>,
    /// Throttled now.
    pub throttled: bool,
    /// The master is stopping.
    pub stopping: bool,
}

/// Whether the master should watch the service's endpoints.
pub fn should_listen(load: ServiceLoad) -> bool {
    !load.stopping
        && !load.throttled
        && load.available == 0
        && load.limit.is_none_or(|limit| load.children < limit)
}

/// How long a service stays under stress after a fork took its last
/// process slot (Postfix's master: 1000 s, not configurable).
pub const STRESS_STRETCH: Duration = Duration::from_secs(1000);

/// The stress state of a service that can be under stress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stress {
    /// Under stress until then.
    pub until: Option<Instant>,
    /// When the busy warning was last logged.
    pub warned: Option<Instant>,
}

impl Stress {
    /// Before a fork on demand, with `children` alive under `limit`:
    /// whether this fork takes the last slot. Returns the new state and
    /// whether the service enters stress now (it was not under stress: its
    /// status channel is to be renewed).
    pub fn on_fork(self, children: u32, limit: Option<u32>, now: Instant) -> (Stress, bool) {
        let last_slot = limit.is_some_and(|l| children.saturating_add(1) >= l);
        if !last_slot {
            return (self, false);
        }
        let entering = !self.active(now);
        (
            Stress {
                until: Some(now + STRESS_STRETCH),
                ..self
            },
            entering,
        )
    }

    /// Whether a child forked now runs under stress (`-o stress=yes`).
    pub fn active(&self, now: Instant) -> bool {
        self.until.is_some_and(|t| t > now)
    }

    /// Whole seconds left under stress (rounded up), none when not under
    /// stress: what `postern status` shows.
    pub fn seconds_left(&self, now: Instant) -> Option<u64> {
        let left = self.until?.checked_duration_since(now)?;
        (!left.is_zero()).then(|| left.as_secs() + u64::from(left.subsec_nanos() > 0))
    }
}

/// Whether to log the busy warning now: the service is at its process
/// limit with no child available, not throttled (the master does not
/// listen for that reason alone), and the last warning is older than
/// [`STRESS_STRETCH`]. Returns the new state when it warns.
pub fn busy_warning(stress: Stress, load: ServiceLoad, now: Instant) -> Option<Stress> {
    let at_limit = load.limit.is_some_and(|l| load.children >= l);
    let due = stress
        .warned
        .is_none_or(|t| now.saturating_duration_since(t) > STRESS_STRETCH);
    (at_limit && load.available == 0 && !load.throttled && !load.stopping && due).then_some(
        Stress {
            warned: Some(now),
            ..stress
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ChildState::{Available, Taken};

    #[test]
    fn the_seconds_left_under_stress_round_up_and_end() {
        let t0 = Instant::now();
        assert_eq!(Stress::default().seconds_left(t0), None);
        let (s, _) = Stress::default().on_fork(1, Some(2), t0);
        assert_eq!(s.seconds_left(t0), Some(STRESS_STRETCH.as_secs()));
        let later = t0 + Duration::from_millis(1500);
        assert_eq!(s.seconds_left(later), Some(STRESS_STRETCH.as_secs() - 1));
        assert_eq!(s.seconds_left(t0 + STRESS_STRETCH), None);
        assert_eq!(s.seconds_left(t0 + STRESS_STRETCH * 2), None);
    }

    #[test]
    fn stress_begins_at_the_last_slot_and_lasts_its_stretch() {
        let t0 = Instant::now();
        let calm = Stress::default();
        // Forks below the last slot change nothing.
        assert_eq!(calm.on_fork(0, Some(3), t0), (calm, false));
        assert_eq!(calm.on_fork(1, Some(3), t0), (calm, false));
        assert!(!calm.active(t0));
        // Unlimited: never.
        assert_eq!(calm.on_fork(5000, None, t0), (calm, false));
        // The fork that takes the last slot: under stress, entered now.
        let (s, entered) = calm.on_fork(2, Some(3), t0);
        assert!(entered);
        assert!(s.active(t0));
        assert_eq!(s.until, Some(t0 + STRESS_STRETCH));
        // Again later while under stress: the stretch starts again, and
        // the channel is not renewed a second time.
        let t1 = t0 + Duration::from_secs(600);
        let (s, entered) = s.on_fork(2, Some(3), t1);
        assert!(!entered);
        assert_eq!(s.until, Some(t1 + STRESS_STRETCH));
        // Forks below the limit keep the state: still under stress until
        // the stretch ends, calm after (the pressure went away).
        let (s, _) = s.on_fork(0, Some(3), t1 + Duration::from_secs(1));
        assert!(s.active(t1 + STRESS_STRETCH - Duration::from_secs(1)));
        assert!(!s.active(t1 + STRESS_STRETCH));
        // Reaching the limit after the stretch: entered anew.
        let t2 = t1 + STRESS_STRETCH + Duration::from_secs(1);
        let (s, entered) = s.on_fork(2, Some(3), t2);
        assert!(entered && s.active(t2));
        // A fork past the limit (old children still counted) is a last slot too.
        assert!(calm.on_fork(7, Some(3), t0).1);
    }

    #[test]
    fn the_busy_warning_comes_once_per_stretch_at_the_limit() {
        let t0 = Instant::now();
        let busy = ServiceLoad {
            children: 2,
            available: 0,
            limit: Some(2),
            throttled: false,
            stopping: false,
        };
        let s = busy_warning(Stress::default(), busy, t0).expect("warns at the limit");
        assert_eq!(s.warned, Some(t0));
        assert_eq!(busy_warning(s, busy, t0 + STRESS_STRETCH), None);
        assert!(busy_warning(s, busy, t0 + STRESS_STRETCH + Duration::from_secs(1)).is_some());
        // Not at the limit, a child available, throttled, stopping: no warning.
        for load in [
            ServiceLoad {
                children: 1,
                ..busy
            },
            ServiceLoad {
                available: 1,
                ..busy
            },
            ServiceLoad {
                throttled: true,
                ..busy
            },
            ServiceLoad {
                stopping: true,
                ..busy
            },
            ServiceLoad {
                limit: None,
                ..busy
            },
        ] {
            assert_eq!(busy_warning(Stress::default(), load, t0), None, "{load:?}");
        }
    }

    #[test]
    fn child_transitions() {
        let c = ChildInfo::new();
        assert!(c.available());
        let c = c.report(Available);
        assert_eq!(
            c,
            ChildInfo {
                phase: Phase::Idle,
                uses: 0,
                served: false
            }
        );
        let c = c.report(Taken);
        assert_eq!(
            c,
            ChildInfo {
                phase: Phase::Busy,
                uses: 1,
                served: false
            }
        );
        assert!(!c.available());
        let c = c.report(Available);
        assert_eq!(
            c,
            ChildInfo {
                phase: Phase::Idle,
                uses: 1,
                served: true
            }
        );
        let c = c.report(Taken).report(Available);
        assert_eq!(c.uses, 2);
    }

    #[test]
    fn exit_verdicts() {
        let starting = ChildInfo::new();
        let idle = starting.report(Available);
        let busy_first = idle.report(Taken);
        let served = busy_first.report(Available);
        // Failing before the first request throttles: at startup, or
        // once ready but before anything was taken.
        assert_eq!(on_exit(&starting, false), ExitVerdict::Throttle);
        assert_eq!(on_exit(&idle, false), ExitVerdict::Throttle);
        // Dying (SIGKILL, a crash) during or after a request does not: the
        // child got past its startup.
        assert_eq!(on_exit(&busy_first, false), ExitVerdict::Failed);
        assert_eq!(on_exit(&served, false), ExitVerdict::Failed);
        assert_eq!(on_exit(&served.report(Taken), false), ExitVerdict::Failed);
        // A trigger service's run (qmgr reports Taken then Available for
        // each) counts the same: killed while idle after one run, no throttle.
        let ran = idle.report(Taken).report(Available);
        assert_eq!(ran.uses, 1);
        assert_eq!(on_exit(&ran, false), ExitVerdict::Failed);
        // Success is normal, whatever the phase (max_idle, max_use).
        assert_eq!(on_exit(&starting, true), ExitVerdict::Normal);
        assert_eq!(on_exit(&busy_first, true), ExitVerdict::Normal);
    }

    #[test]
    fn listening_decision() {
        let base = ServiceLoad {
            children: 0,
            available: 0,
            limit: Some(2),
            throttled: false,
            stopping: false,
        };
        assert!(should_listen(base));
        assert!(!should_listen(ServiceLoad {
            available: 1,
            children: 1,
            ..base
        }));
        assert!(should_listen(ServiceLoad {
            children: 1,
            ..base
        }));
        assert!(!should_listen(ServiceLoad {
            children: 2,
            ..base
        }));
        assert!(should_listen(ServiceLoad {
            children: 500,
            limit: None,
            ..base
        }));
        assert!(!should_listen(ServiceLoad {
            throttled: true,
            ..base
        }));
        assert!(!should_listen(ServiceLoad {
            stopping: true,
            ..base
        }));
    }
}
