//! Timers: control connections past their deadline, and the wakeups of
//! services with a `wakeup` column (a `W` to each endpoint).

use std::time::Instant;

use mio::Token;

use super::Master;
use crate::control_server;
use crate::endpoint;

impl Master {
    pub(super) fn on_timers(&mut self, now: Instant) {
        let expired: Vec<Token> = self
            .control_clients
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in expired {
            if let Some(mut c) = self.control_clients.remove(&t) {
                let _ = self.poll.registry().deregister(c.stream());
                log::info!(
                    "control socket: closed a connection from pid {} without a complete exchange after {}s",
                    c.peer_pid.unwrap_or(0),
                    control_server::DEADLINE.as_secs()
                );
            }
        }
        for i in 0..self.services.len() {
            let svc = &mut self.services[i];
            if let (Some(due), Some(w)) = (svc.next_wakeup, svc.entry.wakeup) {
                if due <= now {
                    svc.next_wakeup = Some(now + w.interval);
                    // Postfix's master skips the wakeups of a throttled service.
                    let skip = svc.postfix && svc.throttled_until.is_some_and(|t| t > now);
                    if (!w.only_if_used || svc.used) && !skip {
                        for (t, held) in svc.targets.iter().zip(&svc.listeners) {
                            if let Err(e) = endpoint::wake(t, held, self.owner, svc.postfix) {
                                log::warn!("service {}: wakeup of {t}: {e}", svc.entry.id());
                            }
                        }
                    }
                }
            }
            self.refresh(i, now);
        }
        self.notify_status();
    }
}
