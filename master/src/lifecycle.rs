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

#[cfg(test)]
mod tests {
    use super::*;
    use ChildState::{Available, Taken};

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
