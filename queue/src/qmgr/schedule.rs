//! Scheduling: which destination's deliveries start next. Destinations
//! take turns (round robin); each has a concurrency limit and, after failed
//! exchanges, a smaller window ([`DestWindows`]); the transport as a whole
//! has a window ([`Window`]) that grows with completed exchanges.

use std::collections::HashMap;

use super::{Job, Qmgr};

/// The transport window: grows by one per good exchange, halves on a
/// failed one, between 1 and `max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Current size.
    pub size: usize,
    /// Upper bound.
    pub max: usize,
}

impl Window {
    /// After an exchange: `ok` is whether the agent answered.
    pub fn feedback(&mut self, ok: bool) {
        self.size = if ok {
            (self.size + 1).min(self.max)
        } else {
            (self.size / 2).max(1)
        };
    }
}

/// The windows of the destinations whose exchanges failed, until they are
/// back at their limit (a destination not listed may use its whole limit).
#[derive(Debug, Default)]
pub struct DestWindows(HashMap<String, Window>);

impl DestWindows {
    /// How many requests `dest` (concurrency limit `limit`) may have running.
    pub fn allowed(&self, dest: &str, limit: usize) -> usize {
        self.0.get(dest).map_or(limit, |w| w.size.min(limit))
    }

    /// After an exchange for `dest`: `ok` is whether the agent answered.
    pub fn feedback(&mut self, dest: &str, limit: usize, ok: bool) {
        match self.0.get_mut(dest) {
            Some(w) => {
                w.feedback(ok);
                if w.size >= w.max {
                    self.0.remove(dest);
                }
            }
            None if !ok => {
                let mut w = Window {
                    size: limit,
                    max: limit,
                };
                w.feedback(false);
                self.0.insert(dest.to_string(), w);
            }
            None => {}
        }
    }
}

impl Qmgr {
    /// Starts deliveries while the window and the destinations allow.
    pub(super) fn dispatch(&mut self) {
        while self.in_flight < self.window.size && !self.ring.is_empty() {
            let mut started = false;
            for _ in 0..self.ring.len() {
                let Some(dest) = self.ring.pop_front() else {
                    break;
                };
                let busy = self.busy.get(&dest).copied().unwrap_or(0);
                if busy >= self.dest_windows.allowed(&dest, self.dest_limit(&dest)) {
                    self.ring.push_back(dest);
                    continue;
                }
                // Local takes what waits for one user in one exchange (the
                // backlog, not a wait for more): one delivery process, one
                // lock and one fsync for all of it. Only mailbox and
                // Maildir deliveries go together: programs take their own
                // time, each with its own time limit, so they go alone.
                let take = if dest.starts_with("local:") {
                    self.s.batch_limit
                } else {
                    1
                };
                let jobs: Vec<Job> = match self.queues.get_mut(&dest) {
                    Some(q) => {
                        let files = q.iter().take(take).take_while(|j| j.files_only()).count();
                        q.drain(..files.max(1).min(q.len())).collect()
                    }
                    None => Vec::new(),
                };
                if self.queues.get(&dest).is_some_and(|q| !q.is_empty()) {
                    self.ring.push_back(dest.clone());
                } else {
                    self.queues.remove(&dest);
                }
                if !jobs.is_empty() {
                    self.start(jobs);
                    started = true;
                    break;
                }
            }
            if !started {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn window_feedback() {
        let mut w = Window { size: 5, max: 7 };
        w.feedback(true);
        w.feedback(true);
        w.feedback(true);
        assert_eq!(w.size, 7);
        w.feedback(false);
        assert_eq!(w.size, 3);
        for _ in 0..5 {
            w.feedback(false);
        }
        assert_eq!(w.size, 1);
    }

    #[test]
    pub(super) fn a_failed_exchange_slows_its_destination_only() {
        let mut d = DestWindows::default();
        assert_eq!(d.allowed("local:ann", 4), 4);
        d.feedback("local:ann", 4, false);
        assert_eq!(d.allowed("local:ann", 4), 2);
        assert_eq!(d.allowed("local:bob", 4), 4);
        d.feedback("local:ann", 4, false);
        d.feedback("local:ann", 4, false);
        assert_eq!(d.allowed("local:ann", 4), 1);
        // It grows back by one per answered exchange, then is forgotten.
        d.feedback("local:ann", 4, true);
        assert_eq!(d.allowed("local:ann", 4), 2);
        d.feedback("local:ann", 4, true);
        d.feedback("local:ann", 4, true);
        assert_eq!(d.allowed("local:ann", 4), 4);
        assert!(d.0.is_empty());
        // Good exchanges of a destination in good standing change nothing.
        d.feedback("local:bob", 4, true);
        assert!(d.0.is_empty());
    }
}
