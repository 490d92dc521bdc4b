//! Scanning and loading: new messages from `incoming`, due ones from
//! `deferred`, into `active`; each loaded message routed into jobs per
//! destination. A queue file that cannot be parsed goes to `corrupt`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use postern_common::handoff;

use super::delays::{delay_fields, now_f64};
use super::{int_param, Item, Job, Msg, Qmgr, LOAD_BATCH};
use crate::queuefile::{self, FormatError, QueueFile, Updater};
use crate::route::{Route, Router};

impl Qmgr {
    /// Moves a message into `active` and starts on it.
    pub(super) fn activate(&mut self, from: &str, id: &str) {
        let src = self.dir(from).join(id);
        let dst = self.dir(queuefile::ACTIVE).join(id);
        if let Err(e) = std::fs::rename(&src, &dst) {
            if e.kind() != std::io::ErrorKind::NotFound {
                log::warn!("{id}: cannot move from {from} to active: {e}");
            }
            return;
        }
        self.load(id);
    }

    /// Takes up to [`LOAD_BATCH`] new messages into `active`; the rest
    /// wait for the next turn of the loop, so deliveries start while a big
    /// incoming queue is still being read.
    pub(super) fn scan_incoming(&mut self) {
        self.incoming_waiting = false;
        // Once per batch, not per message: a stat of each routing table.
        self.reload_router_if_changed();
        if self.incoming.is_empty() {
            self.incoming = self.list(queuefile::INCOMING).into();
        }
        let mut taken = 0;
        while taken < LOAD_BATCH && self.has_room() {
            let Some(id) = self.incoming.pop_front() else {
                break;
            };
            self.activate(queuefile::INCOMING, &id);
            taken += 1;
        }
        // Taking some means there may be more (new arrivals are listed when
        // this list runs out).
        // (A bounce queued meanwhile has set it already.)
        self.incoming_waiting |= !self.incoming.is_empty() || taken == LOAD_BATCH;
    }

    /// Removes what dead writers left in `incoming` (see
    /// [`queuefile::remove_stale_temporaries`]).
    pub(super) fn remove_stale_temporaries(&self) {
        let dir = self.dir(queuefile::INCOMING);
        for name in queuefile::remove_stale_temporaries(&dir, queuefile::STALE_TEMPORARY_AGE) {
            log::info!(
                "removed {}: a temporary whose writer is gone (nothing of it was queued)",
                dir.join(name).display()
            );
        }
    }

    pub(super) fn scan_deferred(&mut self, all: bool) {
        self.remove_stale_temporaries();
        self.reload_router_if_changed();
        let now = SystemTime::now();
        let dir = self.dir(queuefile::DEFERRED);
        let mut earliest: Option<SystemTime> = None;
        for id in self.list(queuefile::DEFERRED) {
            let due = match std::fs::metadata(dir.join(&id)).and_then(|m| m.modified()) {
                Ok(t) => t,
                Err(_) => continue,
            };
            if !all && due > now {
                earliest = Some(earliest.map_or(due, |e| e.min(due)));
                continue;
            }
            if !self.has_room() {
                break;
            }
            self.activate(queuefile::DEFERRED, &id);
        }
        let mut next = Instant::now() + self.s.run_delay;
        if let Some(e) = earliest {
            let wait = e.duration_since(now).unwrap_or_default();
            next = next.min(Instant::now() + wait);
        }
        self.next_deferred_scan = next;
    }

    pub(super) fn reload_router_if_changed(&mut self) {
        if self.router.stale() {
            self.router = Router::load(&self.config);
            log::info!("routing tables changed: reloaded");
            for p in &self.router.problems {
                log::warn!("{p}");
            }
        }
    }

    pub(super) fn quarantine(&self, id: &str, why: &str) {
        let src = self.dir(queuefile::ACTIVE).join(id);
        let dst = self.dir(queuefile::CORRUPT).join(id);
        log::error!("{id}: {why}; moved to the corrupt queue");
        if let Err(e) = std::fs::rename(&src, &dst) {
            log::error!("{id}: cannot move to the corrupt queue: {e}");
        }
    }

    /// Reads a message in `active`, routes it, and queues its deliveries.
    pub(super) fn load(&mut self, id: &str) {
        let path = self.dir(queuefile::ACTIVE).join(id);
        let qf = match QueueFile::read(&path) {
            Ok(q) => q,
            Err(FormatError::Bad(why)) => return self.quarantine(id, &why),
            Err(FormatError::Io(e)) => {
                log::warn!("{id}: cannot read the queue file: {e}");
                return;
            }
        };
        if qf.id != id {
            return self.quarantine(id, &format!("the file says it is {}", qf.id));
        }
        let updater = Updater::open(&path);
        log::info!(
            "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
            qf.envelope.sender,
            qf.message_size,
            qf.pending().count()
        );
        let mut msg = Msg {
            keys: vec![Vec::new(); qf.recipients.len()],
            qf,
            updater,
            path,
            outstanding: 0,
            started: Instant::now(),
            started_at: now_f64(),
        };
        // (destination, agent socket, concurrency limit, items)
        let mut jobs: Vec<(String, PathBuf, usize, Vec<Item>)> = Vec::new();
        let pending: Vec<(usize, String)> = msg
            .qf
            .pending()
            .map(|(i, r)| (i, r.address.clone()))
            .collect();
        // The duplicate filter: a delivery that an earlier recipient of the
        // message already makes (the same key for the same final address,
        // as when two aliases name one user) is made once. At most
        // duplicate_filter_limit deliveries are remembered.
        let mut made: HashMap<(String, String), usize> = HashMap::new();
        for (idx, address) in pending {
            let mut seen = HashSet::new();
            for d in self.router.resolve(&address) {
                if !seen.insert(d.key.clone()) {
                    continue;
                }
                if let Some(recipient) = d.route.recipient() {
                    let made_for = (d.key.clone(), recipient.to_string());
                    if let Some(&first) = made.get(&made_for) {
                        if first != idx {
                            log::info!(
                                "{id}: <{address}>: the delivery to {} is already made for <{}>: not repeated",
                                recipient,
                                msg.qf.recipients[first].address
                            );
                            continue;
                        }
                    } else if self.s.duplicate_filter_limit == 0
                        || made.len() < self.s.duplicate_filter_limit
                    {
                        made.insert(made_for, idx);
                    }
                }
                msg.keys[idx].push(d.key.clone());
                if msg.qf.is_final(idx, &d.key) {
                    continue;
                }
                let uncertain = msg.qf.in_flight.contains(&(idx, d.key.clone()));
                let key = d.key;
                let (dest, socket, limit, mut instr) = match d.route {
                    Route::Local(instr) => (
                        format!("local:{}", instr.user),
                        self.s.local_socket.clone(),
                        self.s.dest_limit,
                        instr,
                    ),
                    Route::Transport { service, instr } => {
                        let limit = int_param(
                            &self.config,
                            &format!("{service}_destination_concurrency_limit"),
                            self.window.max,
                        )
                        .max(1);
                        let nexthop = match &instr.destination {
                            handoff::Destination::Transport { nexthop } => nexthop.clone(),
                            _ => String::new(),
                        };
                        (
                            format!("{service}:{nexthop}"),
                            self.s.queue.join("private").join(&service),
                            limit,
                            instr,
                        )
                    }
                    Route::Bounce { dsn, reason } => {
                        log::info!(
                            "{id}: to=<{address}>, relay=none, {}, dsn={dsn}, status=bounced ({reason})",
                            delay_fields(msg.qf.envelope.arrival, msg.started_at, msg.started.elapsed(), Duration::ZERO)
                        );
                        if let Err(e) =
                            msg.updater
                                .bounced(&mut msg.qf, idx, &key, &dsn, false, &reason)
                        {
                            log::error!("{id}: cannot record a bounce: {e}");
                        }
                        continue;
                    }
                    Route::Defer { dsn, reason } => {
                        log::info!(
                            "{id}: to=<{address}>, relay=none, {}, dsn={dsn}, status=deferred ({reason})",
                            delay_fields(msg.qf.envelope.arrival, msg.started_at, msg.started.elapsed(), Duration::ZERO)
                        );
                        if let Err(e) = msg.updater.deferred(&mut msg.qf, idx, &key, &dsn, &reason)
                        {
                            log::error!("{id}: cannot record a deferral: {e}");
                        }
                        continue;
                    }
                };
                instr.uncertain = uncertain;
                // The queue file's recipient, before alias and .forward
                // expansion: the agent's X-Original-To: and $ORIGINAL_RECIPIENT.
                instr.original_recipient = Some(address.clone());
                let item = Item {
                    rcpt: idx,
                    key,
                    instr,
                };
                match jobs.iter_mut().find(|(d, ..)| *d == dest) {
                    Some((.., items)) => items.push(item),
                    None => jobs.push((dest, socket, limit, vec![item])),
                }
            }
        }
        // A transport takes at most <service>_destination_recipient_limit
        // recipients of a message per delivery (0: no limit); local's
        // deliveries are per user already.
        let jobs: Vec<(String, PathBuf, usize, Vec<Item>)> = jobs
            .into_iter()
            .flat_map(|(dest, socket, limit, items)| {
                let per = match dest.split_once(':') {
                    Some(("local", _)) | None => 0,
                    Some((service, _)) => int_param(
                        &self.config,
                        &format!("{service}_destination_recipient_limit"),
                        50,
                    ),
                };
                split_items(items, per)
                    .into_iter()
                    .map(move |part| (dest.clone(), socket.clone(), limit, part))
            })
            .collect();
        msg.outstanding = jobs.len();
        msg.updater.close();
        self.active.insert(id.to_string(), msg);
        if jobs.is_empty() {
            self.finish(id);
            return;
        }
        for (dest, socket, limit, items) in jobs {
            self.limits.insert(dest.clone(), limit);
            let q = self.queues.entry(dest.clone()).or_default();
            if q.is_empty() && !self.ring.contains(&dest) {
                self.ring.push_back(dest.clone());
            }
            q.push_back(Job {
                id: id.to_string(),
                dest,
                socket,
                items,
                handed: None,
            });
        }
    }
}

/// `items` in parts of at most `per` (0: one part).
fn split_items(mut items: Vec<Item>, per: usize) -> Vec<Vec<Item>> {
    if per == 0 || items.len() <= per {
        return vec![items];
    }
    let mut parts = Vec::new();
    while !items.is_empty() {
        let rest = items.split_off(per.min(items.len()));
        parts.push(std::mem::replace(&mut items, rest));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_common::handoff::{Destination, Instruction};

    #[test]
    fn recipients_per_delivery_are_limited() {
        let item = |n: usize| Item {
            rcpt: n,
            key: format!("smtp:r{n}@x"),
            instr: Instruction {
                recipient: format!("r{n}@x"),
                original_recipient: None,
                user: format!("r{n}"),
                extension: None,
                destination: Destination::Transport {
                    nexthop: "x".into(),
                },
                uncertain: false,
            },
        };
        let items: Vec<Item> = (0..5).map(item).collect();
        let sizes = |parts: Vec<Vec<Item>>| parts.iter().map(Vec::len).collect::<Vec<_>>();
        assert_eq!(sizes(split_items(items.clone(), 2)), vec![2, 2, 1]);
        assert_eq!(sizes(split_items(items.clone(), 0)), vec![5]);
        assert_eq!(sizes(split_items(items.clone(), 5)), vec![5]);
        let parts = split_items(items, 3);
        assert_eq!(parts[1][0].rcpt, 3);
    }
}
