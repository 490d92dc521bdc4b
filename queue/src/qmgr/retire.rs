//! The end of an attempt: recipients done, expired deliveries bounced,
//! failures reported in delivery status notifications, and the message
//! removed or deferred with a growing retry interval.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use postern_common::log::rfc5322_date;

use super::delays::now_secs;
use super::{Msg, Qmgr};
use crate::bounce::{self, Audience, FailedRecipient, Report};
use crate::queuefile::{self, Class, Envelope, QueueFile, Writer};

/// The retry delay for a message of age `age`: the age, clamped.
pub fn backoff(age: Duration, min: Duration, max: Duration) -> Duration {
    age.clamp(min, max.max(min))
}

/// The bounce of a delivery still open when its message expires: the last
/// deferral's status code made permanent (`4.x.y` → `5.x.y`) and reason, or
/// 5.4.7 when no attempt finished.
pub(super) fn expiry(last: Option<(&str, &str)>) -> (String, String) {
    let (dsn, reason) = last.unwrap_or(("4.4.7", "no delivery attempt finished"));
    (
        format!("5{}", dsn.get(1..).unwrap_or(".4.7")),
        format!("delivery time expired: {reason}"),
    )
}

impl Qmgr {
    /// The attempt is over: mark done recipients, report failures, then
    /// remove the message or defer it.
    pub(super) fn finish(&mut self, id: &str) {
        let Some(mut msg) = self.active.remove(id) else {
            return;
        };
        // msg.qf is the file as read at load, with every record since applied.
        let now = now_secs();
        let age = Duration::from_secs(now.saturating_sub(msg.qf.envelope.arrival));
        let expired = age > self.s.lifetime;
        let mut all_done = true;
        for idx in 0..msg.qf.recipients.len() {
            if msg.qf.recipients[idx].state != queuefile::RcptState::Pending {
                continue;
            }
            let address = msg.qf.recipients[idx].address.clone();
            let open: Vec<String> = msg.keys[idx]
                .iter()
                .filter(|k| !msg.qf.is_final(idx, k))
                .cloned()
                .collect();
            if !open.is_empty() && !expired {
                all_done = false;
                continue;
            }
            for k in &open {
                let last = msg
                    .qf
                    .delays
                    .get(&(idx, k.clone()))
                    .map(|d| (d.dsn.as_str(), d.reason.as_str()));
                let (dsn, reason) = expiry(last);
                log::info!("{id}: to=<{address}>, status=expired ({dsn} {reason})");
                if let Err(e) = msg
                    .updater
                    .bounced(&mut msg.qf, idx, k, &dsn, false, &reason)
                {
                    log::error!("{id}: cannot record an expiry: {e}");
                }
            }
            if let Err(e) = msg.updater.recipient_done(&mut msg.qf, idx) {
                log::error!("{id}: cannot mark <{address}> done: {e}");
            }
        }
        let unreported: Vec<usize> = (0..msg.qf.failures.len())
            .filter(|&i| !msg.qf.failures[i].reported)
            .collect();
        let mut reported_all = true;
        if !unreported.is_empty() {
            let failures: Vec<&queuefile::Failure> =
                unreported.iter().map(|&i| &msg.qf.failures[i]).collect();
            match self.notify(&msg.qf, &failures) {
                Ok(()) => {
                    for i in unreported {
                        if let Err(e) = msg.updater.failure_reported(&mut msg.qf, i) {
                            log::error!("{id}: cannot mark a failure reported: {e}");
                        }
                    }
                }
                Err(e) => {
                    log::error!(
                        "{id}: cannot queue the delivery status notification: {e}; will try again"
                    );
                    reported_all = false;
                }
            }
        }
        if all_done && reported_all {
            match std::fs::remove_file(&msg.path) {
                Ok(()) => log::info!("{id}: removed"),
                Err(e) => log::error!("{id}: cannot remove the queue file: {e}"),
            }
        } else {
            self.defer(id, &msg, age);
        }
    }

    pub(super) fn defer(&mut self, id: &str, msg: &Msg, age: Duration) {
        let delay = backoff(age, self.s.min_backoff, self.s.max_backoff);
        let due = SystemTime::now() + delay;
        let set = std::fs::File::options()
            .write(true)
            .open(&msg.path)
            .and_then(|f| f.set_modified(due));
        if let Err(e) = set {
            log::warn!("{id}: cannot set the retry time: {e}");
        }
        let dst = self.dir(queuefile::DEFERRED).join(id);
        match std::fs::rename(&msg.path, &dst) {
            Ok(()) => log::info!("{id}: deferred; next attempt in {}s", delay.as_secs()),
            Err(e) => log::error!("{id}: cannot move to the deferred queue: {e}"),
        }
        let at = Instant::now() + delay;
        if at < self.next_deferred_scan {
            self.next_deferred_scan = at;
        }
    }

    /// Queues the notifications the failures call for.
    pub(super) fn notify(
        &mut self,
        qf: &QueueFile,
        failures: &[&queuefile::Failure],
    ) -> std::io::Result<()> {
        let id = &qf.id;
        let headers = read_headers(&self.dir(queuefile::ACTIVE).join(id), qf)?;
        let list: Vec<FailedRecipient> = failures
            .iter()
            .map(|f| FailedRecipient {
                original: qf.recipients[f.rcpt].address.clone(),
                delivery: f.key.clone(),
                dsn: f.dsn.clone(),
                reason: f.reason.clone(),
            })
            .collect();
        let report = Report {
            host: &self.s.myhostname,
            queue_id: id,
            sender: &qf.envelope.sender,
            arrival: qf.envelope.arrival,
            headers: &headers,
            failures: &list,
            now: now_secs(),
        };
        let postmaster_copy = failures.iter().any(|f| f.notify);
        match (qf.envelope.class, qf.envelope.sender.is_empty()) {
            (Class::Normal, false) => {
                let new = self.queue_notice(
                    &report,
                    &qf.envelope.sender.clone(),
                    Audience::Sender,
                    Class::Bounce,
                )?;
                log::info!(target: postern_common::log::AS_BOUNCE, "{id}: sender non-delivery notification: {new}");
                if postmaster_copy {
                    let to = self.s.notice_recipient.clone();
                    let new =
                        self.queue_notice(&report, &to, Audience::Postmaster, Class::DoubleBounce)?;
                    log::info!(target: postern_common::log::AS_BOUNCE, "{id}: postmaster notification: {new}");
                }
            }
            (Class::DoubleBounce, _) => {
                log::warn!("{id}: a postmaster notification could not be delivered: discarded");
            }
            _ => {
                // A bounce (or null-sender mail) is never bounced: the postmaster hears of it.
                let to = self.s.notice_recipient.clone();
                let new =
                    self.queue_notice(&report, &to, Audience::Postmaster, Class::DoubleBounce)?;
                log::info!(target: postern_common::log::AS_BOUNCE, "{id}: undeliverable notification; postmaster notified: {new}");
            }
        }
        self.incoming_waiting = true;
        Ok(())
    }

    pub(super) fn queue_notice(
        &self,
        report: &Report<'_>,
        to: &str,
        audience: Audience,
        class: Class,
    ) -> std::io::Result<String> {
        let new_id = queuefile::new_queue_id();
        let now = now_secs();
        let envelope = Envelope {
            arrival: now,
            sender: String::new(),
            uid: self.s.owner_uid,
            class,
        };
        let mut w = Writer::create(&self.dir(queuefile::INCOMING), &new_id, &envelope)?;
        w.write_message(
            format!(
                "Received: by {} (postern, from userid {})\n\tid {new_id}; {}\n",
                self.s.myhostname,
                self.s.owner_uid,
                rfc5322_date(now)
            )
            .as_bytes(),
        )?;
        w.write_message(&bounce::compose(report, to, audience, &new_id))?;
        w.finish(&[to.to_string()])
    }
}

fn read_headers(path: &Path, qf: &QueueFile) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path)?;
    let n = usize::try_from(qf.message_size.min(64 * 1024)).unwrap_or(64 * 1024);
    let mut buf = vec![0u8; n];
    let got = f.read_at(&mut buf, qf.message_offset)?;
    buf.truncate(got);
    Ok(bounce::header_block(&buf).to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_age_within_bounds() {
        let (min, max) = (Duration::from_secs(300), Duration::from_secs(4000));
        assert_eq!(backoff(Duration::ZERO, min, max), min);
        assert_eq!(
            backoff(Duration::from_secs(1000), min, max),
            Duration::from_secs(1000)
        );
        assert_eq!(backoff(Duration::from_secs(99_999), min, max), max);
    }
}
