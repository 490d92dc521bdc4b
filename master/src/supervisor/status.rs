//! Status: what `postern status` shows (a snapshot of the master, its
//! services and children) and the service manager's STATUS= line.

use std::time::Instant;

use postern_common::control as control_client;

use super::services;
use super::{describe, notify, Master};
use crate::lifecycle::Phase;

impl Master {
    /// What `postern status` shows, as data.
    pub(super) fn snapshot(&self) -> control_client::Snapshot {
        use control_client::{ChildSnapshot, MasterSnapshot, ServiceSnapshot, Throttle};
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        let services = self
            .services
            .iter()
            .map(|s| {
                let throttled = s.throttled_until.filter(|t| *t > now).map(|t| {
                    let left = t.duration_since(now);
                    let until = wall
                        .checked_add(left)
                        .and_then(|w| w.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs());
                    Throttle {
                        seconds_left: left.as_secs() + 1,
                        until: postern_common::log::utc_timestamp(until),
                        reason: s.throttle_reason.clone().unwrap_or_default(),
                    }
                });
                let state = services::state(
                    throttled.is_some(),
                    s.listening,
                    s.children.len() as u32,
                    s.limit,
                );
                ServiceSnapshot {
                    name: s.entry.name.clone(),
                    kind: s.entry.kind.as_str().to_string(),
                    endpoints: s.targets.iter().map(|t| t.to_string()).collect(),
                    maxproc: s.limit,
                    state: state.to_string(),
                    throttled,
                    stress_seconds_left: s.stress.and_then(|st| st.seconds_left(now)),
                    children: s
                        .children
                        .iter()
                        .map(|(pid, c)| ChildSnapshot {
                            pid: *pid,
                            state: match c.info.phase {
                                Phase::Starting => "starting",
                                Phase::Idle => "idle",
                                Phase::Busy => "busy",
                            }
                            .to_string(),
                            uses: c.info.uses,
                            age_seconds: now.duration_since(c.started).as_secs(),
                        })
                        .collect(),
                }
            })
            .collect();
        control_client::Snapshot {
            master: MasterSnapshot {
                pid: std::process::id(),
                uptime_seconds: self.started.elapsed().as_secs(),
                configuration: describe(&self.source),
                stopping: self.stop.is_some(),
                retired_children: self.retired.len(),
            },
            services,
            queue: None,
        }
    }

    /// One line for the service manager's STATUS=: what is wrong, if anything.
    pub(super) fn status_line(&self) -> String {
        let snap = self.snapshot();
        let throttled: Vec<String> = snap
            .services
            .iter()
            .filter_map(|s| {
                s.throttled.as_ref().map(|t| {
                    format!(
                        "{}/{} throttled for {}s: {}",
                        s.name, s.kind, t.seconds_left, t.reason
                    )
                })
            })
            .collect();
        if throttled.is_empty() {
            format!("{} service(s) running", snap.services.len())
        } else {
            format!("degraded: {}", throttled.join("; "))
        }
    }

    /// Sends STATUS= when the line changed (a throttle began or ended).
    pub(super) fn notify_status(&mut self) {
        if !self.notify_enabled || self.stop.is_some() {
            return;
        }
        let line = self.status_line();
        // The seconds left change every second; only a change in what is
        // wrong is worth a notification.
        let key = |l: &str| -> String { l.split(" for ").next().unwrap_or(l).to_string() };
        if key(&line) != key(&self.notified_status) {
            notify(&[sd_notify::NotifyState::Status(&line)]);
            self.notified_status = line;
        }
    }

    pub(super) fn status_text(&self) -> String {
        control_client::human(&self.snapshot())
    }
}
