//! The exchange with the delivery agents: a handoff thread per exchange
//! (message descriptors attached, [`postern_common::handoff`]), then each
//! recipient's status logged and recorded in the queue file.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Instant;

use postern_common::handoff::{self, DeliveryRequest, Outcome, RecipientStatus};

use super::delays::delay_fields;
use super::{Event, Job, Qmgr};

impl Qmgr {
    /// Starts one exchange with the agent for `jobs` (one destination).
    pub(super) fn start(&mut self, jobs: Vec<Job>) {
        let mut batch: Vec<(Job, DeliveryRequest, std::fs::File)> = Vec::new();
        for mut job in jobs {
            let Some(msg) = self.active.get_mut(&job.id) else {
                continue;
            };
            job.handed = Some(Instant::now());
            for item in &job.items {
                if let Err(e) = msg.updater.in_flight(&mut msg.qf, item.rcpt, &item.key) {
                    log::warn!("{}: cannot record a delivery in flight: {e}", job.id);
                }
            }
            // A description of the queue file of this exchange's own: the
            // lock it carries to the agent (handoff::lock_for_exchange)
            // must not be shared with any other exchange or the updater.
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&msg.path);
            let file = match file {
                Ok(f) => f,
                Err(e) => {
                    // This job fails on its own, as an exchange of its own.
                    let why = format!("cannot open the queue file for the agent: {e}");
                    *self.busy.entry(job.dest.clone()).or_default() += 1;
                    self.in_flight += 1;
                    let _ = self.tx.send(Event::Done(vec![job], Err(why)));
                    continue;
                }
            };
            let request = DeliveryRequest {
                queue_id: job.id.clone(),
                sender: msg.qf.envelope.sender.clone(),
                arrival: msg.qf.envelope.arrival,
                message_offset: msg.qf.message_offset,
                message_size: Some(msg.qf.message_size),
                recipients: job.items.iter().map(|i| i.instr.clone()).collect(),
            };
            batch.push((job, request, file));
        }
        let Some((first, ..)) = batch.first() else {
            return;
        };
        *self.busy.entry(first.dest.clone()).or_default() += 1;
        self.in_flight += 1;
        let socket = first.socket.clone();
        let timeout = self.s.exchange_timeout;
        let tx = self.tx.clone();
        // Kept to account for the jobs if the thread cannot start.
        let spare: Vec<Job> = batch.iter().map(|(job, ..)| job.clone()).collect();
        let spawned = std::thread::Builder::new()
            .name("handoff".into())
            .spawn(move || {
                // Deliveries whose outcome is unknown wait for every
                // earlier attempt on their message to be over (a delivery
                // process may outlive the queue manager that started it).
                let locked = batch.iter().try_for_each(|(_, r, f)| {
                    let exclusive = r.recipients.iter().any(|i| i.uncertain);
                    handoff::lock_for_exchange(f, exclusive)
                        .map_err(|e| format!("{}: {e}", r.queue_id))
                });
                let batch: Vec<(Job, DeliveryRequest, OwnedFd)> = batch
                    .into_iter()
                    .map(|(j, r, f)| (j, r, OwnedFd::from(f)))
                    .collect();
                let messages: Vec<(&DeliveryRequest, &OwnedFd)> =
                    batch.iter().map(|(_, r, f)| (r, f)).collect();
                let result = match locked {
                    Ok(()) => handoff::deliver_batch(&socket, &messages, timeout)
                        .map(|replies| replies.into_iter().map(|r| r.statuses).collect())
                        .map_err(|e| format!("delivery agent exchange failed: {e}")),
                    Err(e) => Err(e),
                };
                drop(messages);
                let jobs = batch.into_iter().map(|(job, ..)| job).collect();
                let _ = tx.send(Event::Done(jobs, result));
            });
        if let Err(e) = spawned {
            log::error!("cannot start a handoff thread: {e}");
            // Nothing was handed over: the jobs end as a failed exchange
            // (deferred, retried later) instead of staying in flight.
            self.complete(spare, Err(format!("cannot start a handoff thread: {e}")));
        }
    }

    /// An exchange is over: the window and the destination's count, then
    /// each job's outcome.
    pub(super) fn complete(
        &mut self,
        jobs: Vec<Job>,
        result: Result<Vec<Vec<RecipientStatus>>, String>,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let ok = result.is_ok();
        if let Some(job) = jobs.first() {
            let dest = job.dest.clone();
            let mut busy = 0;
            if let Some(b) = self.busy.get_mut(&dest) {
                *b = b.saturating_sub(1);
                busy = *b;
            }
            let limit = self.dest_limit(&dest);
            if dest.starts_with("local:") {
                self.dest_windows.feedback(&dest, limit, ok);
            } else {
                // A failed exchange, or a status the agent marks as the
                // whole next hop's failure, counts against the destination.
                let failure = match &result {
                    Err(why) => Some(("4.3.0".to_string(), why.clone())),
                    Ok(per_job) => per_job
                        .iter()
                        .flatten()
                        .find(|st| st.site_failure)
                        .map(|st| (st.dsn.clone(), st.reason.clone())),
                };
                let now = Instant::now();
                self.remotes
                    .feedback(&dest, limit, failure, now, self.s.min_backoff);
                if busy == 0 && !self.queues.contains_key(&dest) {
                    self.remotes.forget(&dest, now);
                }
            }
        }
        if ok {
            self.window.feedback(true);
        }
        match result {
            Ok(per_job) => {
                for (job, statuses) in jobs.into_iter().zip(per_job) {
                    self.record(job, Ok(statuses));
                }
            }
            Err(why) => {
                for job in jobs {
                    self.record(job, Err(why.clone()));
                }
            }
        }
    }

    /// Records one job's outcome in its queue file; the message's attempt
    /// ends with its last job.
    pub(super) fn record(&mut self, job: Job, result: Result<Vec<RecipientStatus>, String>) {
        // Without a reply the outcome is unknown (the agent may have
        // delivered before it died): the deliveries stay uncertain.
        let unknown = result.is_err();
        let Some(msg) = self.active.get_mut(&job.id) else {
            return;
        };
        let statuses = result.unwrap_or_else(|why| {
            job.items
                .iter()
                .map(|_| RecipientStatus::deferred("4.3.0", why.clone()))
                .collect()
        });
        let handed = job.handed.unwrap_or(msg.started);
        let delays = delay_fields(
            msg.qf.envelope.arrival,
            msg.started_at,
            handed.saturating_duration_since(msg.started),
            handed.elapsed(),
        );
        let relay = job.dest.split(':').next().unwrap_or("local");
        // Postfix's local, smtp or pipe delivery agent would log this line.
        let agent = match relay {
            "local" => postern_common::log::AS_LOCAL,
            "smtp" => postern_common::log::AS_SMTP,
            _ => postern_common::log::AS_PIPE,
        };
        for (item, st) in job.items.iter().zip(statuses) {
            let orig = &msg.qf.recipients[item.rcpt].address;
            let word = match st.outcome {
                Outcome::Delivered => "sent",
                Outcome::Deferred => "deferred",
                Outcome::Bounced => "bounced",
            };
            let orig_note = if orig == &item.instr.recipient {
                String::new()
            } else {
                format!(", orig_to=<{orig}>")
            };
            // Postfix's smtp names a reused connection after the relay.
            let conn_use = st
                .conn_use
                .map_or(String::new(), |n| format!(", conn_use={n}"));
            log::info!(
                target: agent,
                "{}: to=<{}>{orig_note}, relay={}{conn_use}, {delays}, dsn={}, status={word} ({})",
                job.id,
                item.instr.recipient,
                st.relay.as_deref().unwrap_or(relay),
                st.dsn,
                st.reason
            );
            let (u, qf) = (&mut msg.updater, &mut msg.qf);
            let recorded = match st.outcome {
                Outcome::Delivered => u.delivered(qf, item.rcpt, &item.key),
                Outcome::Deferred => u.deferred(qf, item.rcpt, &item.key, &st.dsn, &st.reason),
                Outcome::Bounced => u.bounced(
                    qf,
                    item.rcpt,
                    &item.key,
                    &st.dsn,
                    st.notify_postmaster,
                    &st.reason,
                ),
            };
            let recorded = recorded.and_then(|()| {
                if unknown || st.uncertain {
                    msg.updater.in_flight(&mut msg.qf, item.rcpt, &item.key)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = recorded {
                log::error!(
                    "{}: cannot record the outcome for <{}>: {e}",
                    job.id,
                    item.instr.recipient
                );
            }
        }
        msg.outstanding = msg.outstanding.saturating_sub(1);
        if msg.outstanding > 0 {
            msg.updater.close();
        }
        if msg.outstanding == 0 {
            let id = job.id.clone();
            self.finish(&id);
        }
    }
}
