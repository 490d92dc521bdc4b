//! Scheduling: which destination's deliveries start next. Destinations
//! take turns (round robin); each has a concurrency limit and, after failed
//! exchanges, a smaller window ([`DestWindows`]); the transport as a whole
//! has a window ([`Window`]) that grows with completed exchanges. A
//! remote destination (a transport's next hop, [`Remotes`]) starts slowly:
//! at `initial_destination_concurrency`, one more per exchange without a
//! site failure up to its limit, halved by a site failure; a site failure
//! at a window of one makes it dead for `minimal_backoff_time`, and its mail
//! is deferred without a connection attempt until then.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use postern_common::handoff::RecipientStatus;

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

/// A remote destination's standing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Requests it may have running.
    pub window: usize,
    /// Dead until then: its mail is deferred without an attempt.
    pub dead_until: Option<Instant>,
    /// The last site failure (enhanced status code, text).
    pub last_failure: Option<(String, String)>,
}

/// The standing of the remote destinations with mail in the active queue.
#[derive(Debug, Default)]
pub struct Remotes(HashMap<String, Standing>);

impl Remotes {
    /// How many requests `dest` may have running now (0 while it is dead).
    pub fn allowed(&mut self, dest: &str, initial: usize, limit: usize, now: Instant) -> usize {
        let st = self.0.entry(dest.to_string()).or_insert_with(|| Standing {
            window: initial.clamp(1, limit.max(1)),
            dead_until: None,
            last_failure: None,
        });
        match st.dead_until {
            Some(t) if now < t => 0,
            Some(_) => {
                // Back to life: one at a time, then the slow start again.
                st.dead_until = None;
                st.window = 1;
                1
            }
            None => st.window.min(limit),
        }
    }

    /// Why `dest` is dead, while it is.
    pub fn dead(&self, dest: &str, now: Instant) -> Option<(String, String)> {
        let st = self.0.get(dest)?;
        if st.dead_until.is_some_and(|t| now < t) {
            Some(st.last_failure.clone().unwrap_or_else(|| {
                (
                    "4.4.1".to_string(),
                    "the destination is not responding".to_string(),
                )
            }))
        } else {
            None
        }
    }

    /// After an exchange with `dest`: `failure` is its site failure, if
    /// any; `suspend` how long a destination stays dead.
    pub fn feedback(
        &mut self,
        dest: &str,
        limit: usize,
        failure: Option<(String, String)>,
        now: Instant,
        suspend: Duration,
    ) {
        let Some(st) = self.0.get_mut(dest) else {
            return;
        };
        match failure {
            None => st.window = (st.window + 1).min(limit.max(1)),
            Some(f) => {
                if st.window <= 1 {
                    st.dead_until = Some(now + suspend);
                }
                st.window = (st.window / 2).max(1);
                st.last_failure = Some(f);
            }
        }
    }

    /// Forgets `dest` (no mail for it is waiting or running), unless it is
    /// dead.
    pub fn forget(&mut self, dest: &str, now: Instant) {
        if self.dead(dest, now).is_none() {
            self.0.remove(dest);
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
                let now = Instant::now();
                let local = dest.starts_with("local:");
                if !local {
                    if let Some(why) = self.remotes.dead(&dest, now) {
                        self.suspend(&dest, &why);
                        continue;
                    }
                }
                let allowed = if local {
                    self.dest_windows.allowed(&dest, self.dest_limit(&dest))
                } else {
                    let limit = self.dest_limit(&dest);
                    self.remotes
                        .allowed(&dest, self.s.initial_concurrency, limit, now)
                };
                if busy >= allowed {
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

    /// Defers every waiting delivery of a dead destination, without an
    /// attempt.
    fn suspend(&mut self, dest: &str, why: &(String, String)) {
        let jobs: Vec<Job> = self.queues.remove(dest).map(Vec::from).unwrap_or_default();
        for job in jobs {
            let statuses = job
                .items
                .iter()
                .map(|_| {
                    RecipientStatus::deferred(
                        &why.0,
                        format!("delivery temporarily suspended: {}", why.1),
                    )
                })
                .collect();
            self.record(job, Ok(statuses));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_destinations_start_slowly_back_off_and_die() {
        let mut r = Remotes::default();
        let t0 = Instant::now();
        let suspend = Duration::from_secs(300);
        let fail = || Some(("4.4.1".to_string(), "connect: refused".to_string()));
        assert_eq!(r.allowed("smtp:a", 2, 4, t0), 2);
        r.feedback("smtp:a", 4, None, t0, suspend);
        r.feedback("smtp:a", 4, None, t0, suspend);
        r.feedback("smtp:a", 4, None, t0, suspend);
        assert_eq!(r.allowed("smtp:a", 2, 4, t0), 4);
        // Another destination is not affected by a's failures.
        assert_eq!(r.allowed("smtp:b", 2, 4, t0), 2);
        r.feedback("smtp:a", 4, fail(), t0, suspend);
        assert_eq!(r.allowed("smtp:a", 2, 4, t0), 2);
        r.feedback("smtp:a", 4, fail(), t0, suspend);
        assert_eq!(r.allowed("smtp:a", 2, 4, t0), 1);
        assert!(r.dead("smtp:a", t0).is_none());
        r.feedback("smtp:a", 4, fail(), t0, suspend);
        assert_eq!(r.allowed("smtp:a", 2, 4, t0), 0);
        let (dsn, why) = r.dead("smtp:a", t0).unwrap();
        assert_eq!((dsn.as_str(), why.as_str()), ("4.4.1", "connect: refused"));
        assert!(r.dead("smtp:b", t0).is_none());
        // A dead destination is remembered while it is dead.
        r.forget("smtp:a", t0);
        assert_eq!(r.allowed("smtp:a", 2, 4, t0), 0);
        // Then it comes back, one at a time.
        let later = t0 + suspend;
        assert!(r.dead("smtp:a", later).is_none());
        assert_eq!(r.allowed("smtp:a", 2, 4, later), 1);
        r.forget("smtp:a", later);
        assert_eq!(r.allowed("smtp:a", 2, 4, later), 2);
    }

    #[test]
    fn window_feedback() {
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
    fn a_failed_exchange_slows_its_destination_only() {
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
