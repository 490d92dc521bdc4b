//! The queue as `postern status` reports it: messages per queue, the
//! oldest deferred message, the oldest in `incoming`, and the last delivery
//! error, read from the queue directory (the on-disk format is documented
//! in `queue/src/queuefile.rs`; only its file names, `arrival` line and
//! trailing `t`/`b` records are read here, and only as root or the mail
//! owner can). Reading is bounded: at most [`MAX_FILES`] files per queue
//! are looked into, and only the last [`TAIL`] bytes of each for records.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

/// The queues, in the order of the queue manager's work.
pub const QUEUES: [&str; 5] = ["incoming", "active", "deferred", "hold", "corrupt"];
/// Files looked into per queue (counting goes on past it).
pub const MAX_FILES: usize = 1000;
/// Bytes read from the end of a deferred file for its last reason.
const TAIL: u64 = 8192;
/// Mail older than this in `incoming` is stuck: the queue manager does not
/// take it (not running, or throttled).
pub const INCOMING_STUCK_SECS: u64 = 60;

/// A message named by the queue status.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Noted {
    /// Its queue id.
    pub id: String,
    /// Seconds since it arrived (oldest deferred).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    /// The delivery error (last delivery error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The queue's state.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueHealth {
    /// Messages per queue, by queue name.
    pub messages: std::collections::BTreeMap<String, usize>,
    /// The oldest message in `incoming`, in seconds (by modification time).
    pub oldest_incoming_seconds: Option<u64>,
    /// The oldest deferred message: its queue id and age since arrival.
    pub oldest_deferred: Option<Noted>,
    /// The most recent delivery error: queue id and reason.
    pub last_delivery_error: Option<Noted>,
    /// Problems reading the queue (an unreadable directory).
    pub problems: Vec<String>,
}

impl QueueHealth {
    /// Whether mail sits in `incoming` longer than [`INCOMING_STUCK_SECS`].
    pub fn stuck(&self) -> bool {
        self.oldest_incoming_seconds
            .is_some_and(|s| s > INCOMING_STUCK_SECS)
    }
}

fn is_message(name: &str) -> bool {
    !name.starts_with('.') && !name.starts_with("tmp.")
}

/// Reads `queue_directory`.
pub fn read(queue_directory: &Path) -> QueueHealth {
    let now = SystemTime::now();
    let age = |t: SystemTime| now.duration_since(t).map_or(0, |d| d.as_secs());
    let mut health = QueueHealth::default();
    let mut newest_error: Option<(SystemTime, String, String)> = None;
    for q in QUEUES {
        let dir = queue_directory.join(q);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                health
                    .problems
                    .push(format!("cannot read {}: {e}", dir.display()));
                health.messages.insert(q.to_string(), 0);
                continue;
            }
        };
        let mut count = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_message(&name) {
                continue;
            }
            count += 1;
            if count > MAX_FILES {
                continue;
            }
            let Ok(md) = entry.metadata() else { continue };
            let mtime = md.modified().unwrap_or(now);
            match q {
                "incoming" => {
                    let a = age(mtime);
                    if health.oldest_incoming_seconds.is_none_or(|o| a > o) {
                        health.oldest_incoming_seconds = Some(a);
                    }
                }
                "deferred" => {
                    let (arrival, reason) = read_deferred(&entry.path());
                    if let Some(arrival) = arrival {
                        let a = now
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs())
                            .saturating_sub(arrival);
                        if health
                            .oldest_deferred
                            .as_ref()
                            .is_none_or(|o| o.age_seconds.is_some_and(|o| a > o))
                        {
                            health.oldest_deferred = Some(Noted {
                                id: name.clone(),
                                age_seconds: Some(a),
                                reason: None,
                            });
                        }
                    }
                    // A deferred file's ctime moves with every record appended.
                    let changed = std::os::unix::fs::MetadataExt::ctime(&md);
                    let changed = SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_secs(u64::try_from(changed).unwrap_or(0));
                    if let Some(reason) = reason {
                        if newest_error.as_ref().is_none_or(|(t, _, _)| changed > *t) {
                            newest_error = Some((changed, name.clone(), reason));
                        }
                    }
                }
                _ => {}
            }
        }
        health.messages.insert(q.to_string(), count);
    }
    health.last_delivery_error = newest_error.map(|(_, id, reason)| Noted {
        id,
        age_seconds: None,
        reason: Some(reason),
    });
    health
}

/// A deferred file's arrival time and the reason of its last `t` (deferred)
/// or `b` (bounced) record.
fn read_deferred(path: &Path) -> (Option<u64>, Option<String>) {
    let Ok(mut file) = std::fs::File::open(path) else {
        return (None, None);
    };
    let mut head = [0u8; 512];
    let n = file.read(&mut head).unwrap_or(0);
    let arrival = String::from_utf8_lossy(&head[..n]).lines().find_map(|l| {
        l.strip_prefix("arrival ")
            .and_then(|v| v.trim().parse().ok())
    });
    let len = file.metadata().map_or(0, |m| m.len());
    let mut tail = Vec::new();
    if file.seek(SeekFrom::Start(len.saturating_sub(TAIL))).is_ok() {
        let _ = file.take(TAIL).read_to_end(&mut tail);
    }
    (arrival, last_reason(&String::from_utf8_lossy(&tail)))
}

/// The reason of the last complete `t` or `b` record in `text`.
fn last_reason(text: &str) -> Option<String> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..i],
        None => return None,
    };
    complete.lines().rev().find_map(|l| {
        let fields: Vec<&str> = l.split('\t').collect();
        match fields.first() {
            // t <rcpt> <status> <key> <reason>
            Some(&"t") if fields.len() >= 5 => {
                Some(format!("{} {}", fields[2], fields[4..].join(" ")))
            }
            // bN <rcpt> <status> <notice> <key> <reason>
            Some(b) if b.starts_with('b') && b.len() == 2 && fields.len() >= 6 => {
                Some(format!("{} {}", fields[2], fields[5..].join(" ")))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_reasons() {
        let text =
            "rP\tbob\ni\t0\tbob|/var/mail/bob\nt\t0\t4.2.0\tbob|/var/mail/bob\tmailbox is locked\n";
        assert_eq!(
            last_reason(text).as_deref(),
            Some("4.2.0 mailbox is locked")
        );
        let text = "t\t0\t4.2.0\tk\tfirst\nbN\t0\t5.1.1\t1\tk\tunknown user\n";
        assert_eq!(last_reason(text).as_deref(), Some("5.1.1 unknown user"));
        // A last line without its newline (a crash mid-write) is ignored.
        assert_eq!(
            last_reason("t\t0\t4.2.0\tk\tfirst\nt\t0\t4.3.0\tk\thalf").as_deref(),
            Some("4.2.0 first")
        );
        assert_eq!(last_reason("d\t0\tk\n"), None);
    }

    #[test]
    fn counts_and_ages() {
        let dir = tempfile::tempdir().unwrap();
        for q in QUEUES {
            std::fs::create_dir(dir.path().join(q)).unwrap();
        }
        std::fs::write(dir.path().join("incoming/A1"), "x").unwrap();
        std::fs::write(dir.path().join("incoming/tmp.A2"), "x").unwrap();
        std::fs::write(
            dir.path().join("deferred/B1"),
            "postern-queue 1\nid B1\narrival 1000\n\nbody\nt\t0\t4.4.1\tk\tconnection refused\n",
        )
        .unwrap();
        let h = read(dir.path());
        assert_eq!(h.messages["incoming"], 1);
        assert_eq!(h.messages["deferred"], 1);
        assert!(h
            .oldest_deferred
            .as_ref()
            .is_some_and(|o| o.id == "B1" && o.age_seconds.is_some_and(|a| a > 1000)));
        let e = h.last_delivery_error.clone().expect("an error");
        assert_eq!(
            (e.id.as_str(), e.reason.as_deref()),
            ("B1", Some("4.4.1 connection refused"))
        );
        assert!(!h.stuck());
    }
}
