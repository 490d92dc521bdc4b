//! `postern queue` (also `postern-queue`): the administrator's view of the
//! queue, run as root or the mail owner.
//!
//! ```text
//! postern queue list                 every message (like mailq)
//! postern queue show ID              envelope, recipients and their state, message
//! postern queue delete ID... | ALL   remove messages (not while being delivered)
//! postern queue hold ID... | ALL     put messages on hold (kept, not delivered)
//! postern queue release ID... | ALL  back from hold, delivered at once
//! postern queue flush                retry every deferred message now
//! ```
//!
//! Exit status: 0 on success, 1 when a named message was not found or
//! could not be changed, 64 for a usage error, 77 when not allowed.

use std::io::Write;
use std::path::PathBuf;

use postern_common::log::utc_timestamp;
use postern_common::sysexits;
use postern_conf::{params, Config, ServicesFile, Source};

use crate::queuefile::{self, QueueFile, RcptState};

fn usage() -> i32 {
    eprintln!("usage: postern queue list | show ID | delete ID...|ALL | hold ID...|ALL | release ID...|ALL | flush");
    sysexits::EX_USAGE
}

/// Runs `postern queue` with `args` for the instance `source`.
pub fn main(source: &Source, args: &[String]) -> i32 {
    let Some((cmd, ids)) = args.split_first() else {
        return usage();
    };
    if cmd == "--help" {
        println!("usage: postern queue list | show ID | delete ID...|ALL | hold ID...|ALL | release ID...|ALL | flush");
        println!("  list     every message: queue, size, arrival, sender, pending recipients, last delay reason");
        println!("  show     one message: envelope, each recipient's deliveries, the message");
        println!(
            "  delete   remove messages (not while active); hold/release: set aside, put back"
        );
        println!("  flush    retry every deferred message now");
        println!(
            "root or the mail owner only; exit 0 done, 1 not found, 64 usage, 77 not permitted"
        );
        return sysexits::EX_OK;
    }
    if !["list", "show", "delete", "hold", "release", "flush"].contains(&cmd.as_str()) {
        return usage();
    }
    let config = match Config::load_main_only(source, &ServicesFile::system()).into_result() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postern queue: fatal: configuration: {e}");
            return sysexits::EX_CONFIG;
        }
    };
    let queue = PathBuf::from(config.text(params::QUEUE_DIRECTORY));
    let owner = config.text(params::MAIL_OWNER);
    let uid = nix::unistd::Uid::effective();
    let owner_uid = postern_common::account::user_by_name(owner)
        .ok()
        .flatten()
        .map(|a| a.uid);
    if !uid.is_root() && Some(uid.as_raw()) != owner_uid {
        eprintln!("postern queue: only root or the mail owner ({owner}) may read the queue");
        return sysexits::EX_NOPERM;
    }
    let q = Queue { root: queue };
    match (cmd.as_str(), ids.is_empty()) {
        ("list", true) => q.list(),
        ("show", false) if ids.len() == 1 => q.show(&ids[0]),
        ("delete", false) => q.each(
            ids,
            &[
                queuefile::INCOMING,
                queuefile::DEFERRED,
                queuefile::HOLD,
                queuefile::CORRUPT,
            ],
            |q, from, id| {
                std::fs::remove_file(q.root.join(from).join(id)).map(|()| format!("{id}: deleted"))
            },
        ),
        ("hold", false) => q.each(
            ids,
            &[queuefile::INCOMING, queuefile::DEFERRED],
            |q, from, id| {
                std::fs::rename(
                    q.root.join(from).join(id),
                    q.root.join(queuefile::HOLD).join(id),
                )
                .map(|()| format!("{id}: held"))
            },
        ),
        ("release", false) => {
            let code = q.each(ids, &[queuefile::HOLD], |q, from, id| {
                std::fs::rename(
                    q.root.join(from).join(id),
                    q.root.join(queuefile::INCOMING).join(id),
                )
                .map(|()| format!("{id}: released"))
            });
            q.poke(b"I");
            code
        }
        ("flush", true) => {
            if q.poke(b"F") {
                println!("asked the queue manager to retry every deferred message now");
                0
            } else {
                1
            }
        }
        _ => usage(),
    }
}

struct Queue {
    root: PathBuf,
}

impl Queue {
    /// Writes to the queue manager's fifo; false (with a message) if it is not there.
    fn poke(&self, what: &[u8]) -> bool {
        match crate::qmgr::poke(&self.root, what) {
            Ok(()) => true,
            Err(e) => {
                eprintln!(
                    "postern queue: cannot reach the queue manager at {}: {e} (is the instance running?)",
                    self.root.join(crate::qmgr::TRIGGER).display()
                );
                false
            }
        }
    }

    fn ids(&self, queue: &str) -> Vec<String> {
        queuefile::ids_in(&self.root.join(queue)).unwrap_or_default()
    }

    fn find(&self, id: &str) -> Option<(&'static str, PathBuf)> {
        if !queuefile::is_queue_id(id) {
            return None;
        }
        queuefile::QUEUES
            .iter()
            .map(|q| (*q, self.root.join(q).join(id)))
            .find(|(_, p)| p.exists())
    }

    fn list(&self) -> i32 {
        let mut total = 0usize;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "{:<24} {:>8} {:<20} {:<9} Sender/Recipient",
            "Queue ID", "Size", "Arrival (UTC)", "Queue"
        );
        for queue in queuefile::QUEUES {
            for id in self.ids(queue) {
                total += 1;
                let path = self.root.join(queue).join(&id);
                match QueueFile::read(&path) {
                    Ok(q) => {
                        let sender = if q.envelope.sender.is_empty() {
                            "<>"
                        } else {
                            &q.envelope.sender
                        };
                        let _ = writeln!(
                            out,
                            "{id:<24} {:>8} {:<20} {queue:<9} {sender}",
                            q.message_size,
                            utc_timestamp(q.envelope.arrival)
                        );
                        for (i, r) in q.pending() {
                            let why = q
                                .delays
                                .iter()
                                .filter(|((ri, _), _)| *ri == i)
                                .map(|(_, d)| format!("{} {}", d.dsn, d.reason))
                                .next();
                            if let Some(why) = why {
                                let _ = writeln!(out, "{:>56}({why})", "");
                            }
                            let _ = writeln!(out, "{:>56}{}", "", r.address);
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(
                            out,
                            "{id:<24} {:>8} {:<20} {queue:<9} (unreadable: {e})",
                            "?", "?"
                        );
                    }
                }
            }
        }
        let _ = writeln!(
            out,
            "-- {total} message{}",
            if total == 1 { "" } else { "s" }
        );
        0
    }

    fn show(&self, id: &str) -> i32 {
        let Some((queue, path)) = self.find(id) else {
            eprintln!("postern queue: {id}: no such message");
            return 1;
        };
        let q = match QueueFile::read(&path) {
            Ok(q) => q,
            Err(e) => {
                eprintln!("postern queue: {}: {e}", path.display());
                return 1;
            }
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "queue id: {id}\nqueue: {queue}\narrival: {}\nsender: <{}>\nsubmitted by uid: {}\nclass: {:?}\nsize: {}",
            utc_timestamp(q.envelope.arrival), q.envelope.sender, q.envelope.uid, q.envelope.class, q.message_size);
        for (i, r) in q.recipients.iter().enumerate() {
            let state = match r.state {
                RcptState::Pending => "pending",
                RcptState::Done => "done",
            };
            let _ = writeln!(out, "recipient: <{}> {state}", r.address);
            for (ri, key) in &q.delivered {
                if *ri == i {
                    let _ = writeln!(out, "  delivered: {key}");
                }
            }
            for ((ri, key), d) in &q.delays {
                if *ri == i {
                    let _ = writeln!(out, "  deferred: {key}: {} {}", d.dsn, d.reason);
                }
            }
            for f in q.failures.iter().filter(|f| f.rcpt == i) {
                let _ = writeln!(out, "  bounced: {}: {} {}", f.key, f.dsn, f.reason);
            }
        }
        let _ = writeln!(out, "--- message ---");
        let mut buf = vec![0u8; usize::try_from(q.message_size).unwrap_or(0)];
        let read = std::fs::File::open(&path).and_then(|f| {
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut buf, q.message_offset)
        });
        match read {
            Ok(()) => {
                let _ = out.write_all(&buf);
                0
            }
            Err(e) => {
                eprintln!("postern queue: cannot read the message: {e}");
                1
            }
        }
    }

    fn each(
        &self,
        ids: &[String],
        from: &[&'static str],
        op: impl Fn(&Queue, &str, &str) -> std::io::Result<String>,
    ) -> i32 {
        let targets: Vec<String> = if ids.len() == 1 && ids[0] == "ALL" {
            from.iter().flat_map(|q| self.ids(q)).collect()
        } else {
            ids.to_vec()
        };
        let mut code = 0;
        for id in targets {
            match self.find(&id) {
                Some((queue, _)) if from.contains(&queue) => match op(self, queue, &id) {
                    Ok(msg) => println!("{msg}"),
                    Err(e) => {
                        eprintln!("postern queue: {id}: {e}");
                        code = 1;
                    }
                },
                Some((queue, _)) => {
                    eprintln!("postern queue: {id}: in the {queue} queue: not possible there (try again when delivery is over)");
                    code = 1;
                }
                None => {
                    eprintln!("postern queue: {id}: no such message");
                    code = 1;
                }
            }
        }
        code
    }
}
