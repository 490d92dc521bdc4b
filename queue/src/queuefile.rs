//! The queue file: one file per message, named by its queue id, in one of
//! the queue directories. Version 1 of the format:
//!
//! ```text
//! postern-queue 1                 magic and version
//! id 6920A1F00A2B3P1F3C0          the queue id (also the file name)
//! arrival 1795245296              seconds since the epoch
//! sender ann@example.org          envelope sender ("sender " alone: <>)
//! uid 1000                        who submitted it (peer credentials)
//! class normal                    normal | bounce | double-bounce
//! size 00000000000000001234       message bytes (fixed width, written last)
//!                                 an empty line ends the envelope
//! <size bytes of message>         headers and body, as submitted, with the
//!                                 Received: header submit added first
//! rP<TAB>bob@example.org          a recipient; the byte after 'r' is its
//!                                 state, rewritten in place: P pending, D done
//! i<TAB>0<TAB>KEY                 delivery KEY of recipient 0 handed to an agent
//! d<TAB>0<TAB>KEY                 ... delivered
//! t<TAB>0<TAB>4.2.0<TAB>KEY<TAB>reason      ... deferred (the latest counts)
//! bN<TAB>0<TAB>5.1.1<TAB>1<TAB>KEY<TAB>reason
//!                                 ... bounced; N/R: not yet / already
//!                                 reported to the sender (rewritten in
//!                                 place); the 1 asks for a postmaster notice
//! ```
//!
//! A recipient expands (aliases, `.forward`) into deliveries, each named by
//! a KEY (`user|destination`); a recipient is done when every one of its
//! deliveries is delivered or bounced. Records after the message are only
//! appended, by the queue manager, the file's single writer; a last line
//! without its newline (a crash mid-write) is ignored.
//!
//! **Durability.** submit writes the file as `tmp.<id>` in `incoming`,
//! fsyncs it, renames it to `<id>` (never over an existing file) and fsyncs
//! the directory before it acknowledges the message. While it writes, the
//! writer holds an exclusive `flock` on the temporary; a writer that fails
//! removes it, and one that died (killed, machine crash) leaves a temporary
//! nobody holds: [`remove_stale_temporaries`] (run by the queue manager at
//! start and at every deferred-queue run) removes those that are unlocked
//! and older than [`STALE_TEMPORARY_AGE`]. The queue manager's
//! records are written without fsync: they survive the death of any process
//! (the kernel has them); after a machine crash a delivery recorded in the
//! lost part may be repeated, never lost.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// First line of every queue file.
pub const MAGIC: &str = "postern-queue";
/// The format version this code writes and reads.
pub const VERSION: u32 = 1;

/// New messages, as submit stored them.
pub const INCOMING: &str = "incoming";
/// Messages the queue manager is working on.
pub const ACTIVE: &str = "active";
/// Messages waiting for a retry (the file's mtime is the retry time).
pub const DEFERRED: &str = "deferred";
/// Messages an administrator put on hold.
pub const HOLD: &str = "hold";
/// Files that could not be read as queue files.
pub const CORRUPT: &str = "corrupt";
/// Every queue directory.
pub const QUEUES: [&str; 5] = [INCOMING, ACTIVE, DEFERRED, HOLD, CORRUPT];

/// Prefix of a queue file being written.
pub const TEMPORARY_PREFIX: &str = "tmp.";
/// How old an unlocked temporary must be before it counts as stale. The
/// age only covers the instant between a writer's create and its lock; a
/// writer delayed longer than this loses its temporary and with it the
/// rename that would queue the message, so it reports "not queued" (never
/// a message half-queued).
pub const STALE_TEMPORARY_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// The width of the size field, so it can be written after the message.
const SIZE_WIDTH: usize = 20;
/// The longest envelope line the reader accepts.
const MAX_LINE: usize = 4096;

/// What kind of message this is, for bounce rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Ordinary mail.
    Normal,
    /// A delivery status notification to a sender (never bounced).
    Bounce,
    /// A notice to the postmaster about a bounce that failed (dropped if
    /// it fails in turn).
    DoubleBounce,
}

impl Class {
    fn as_str(self) -> &'static str {
        match self {
            Class::Normal => "normal",
            Class::Bounce => "bounce",
            Class::DoubleBounce => "double-bounce",
        }
    }
    fn parse(s: &str) -> Option<Class> {
        match s {
            "normal" => Some(Class::Normal),
            "bounce" => Some(Class::Bounce),
            "double-bounce" => Some(Class::DoubleBounce),
            _ => None,
        }
    }
}

/// The envelope of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Arrival, seconds since the epoch.
    pub arrival: u64,
    /// Envelope sender; empty for the null sender.
    pub sender: String,
    /// The submitting uid.
    pub uid: u32,
    /// Normal mail or a notification.
    pub class: Class,
}

/// Checks an envelope address: printable, no white space or angle
/// brackets, at most 998 bytes (the empty sender is checked by the caller).
pub fn check_address(a: &str) -> Result<(), String> {
    if a.is_empty() {
        return Err("empty address".into());
    }
    if a.len() > 998 {
        return Err(format!("address of {} bytes is too long", a.len()));
    }
    if let Some(c) = a
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>'))
    {
        return Err(format!("address {a:?} contains {c:?}"));
    }
    Ok(())
}

/// Makes text safe for one tab-separated record field.
pub fn field(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A new queue id: time (seconds, microseconds), pid and a counter, in hex.
/// Sorts by arrival; unique because no two live processes share a pid.
pub fn new_queue_id() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08X}{:05X}P{:X}C{n:X}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id()
    )
}

/// The queue ids of the queue files in `dir`, sorted (the temporaries and
/// anything else there left out).
pub fn ids_in(dir: &Path) -> io::Result<Vec<String>> {
    let mut ids: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| is_queue_id(n))
        .collect();
    ids.sort();
    Ok(ids)
}

/// Whether `name` looks like a queue id (letters and digits only).
pub fn is_queue_id(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A queue file being written by submit (or by the queue manager for a
/// bounce). Dropped before [`Writer::finish`], it removes itself.
#[derive(Debug)]
pub struct Writer {
    file: File,
    dir: PathBuf,
    id: String,
    tmp: PathBuf,
    size_at: u64,
    size: u64,
    done: bool,
}

impl Writer {
    /// Creates `dir/tmp.<id>` (mode 0600) and writes the envelope.
    pub fn create(dir: &Path, id: &str, envelope: &Envelope) -> io::Result<Writer> {
        let tmp = dir.join(format!("{TEMPORARY_PREFIX}{id}"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        // Held until just before the rename: the mark of a live writer.
        let locked = fs2::FileExt::try_lock_exclusive(&file);
        let head = format!(
            "{MAGIC} {VERSION}\nid {id}\narrival {}\nsender {}\nuid {}\nclass {}\nsize ",
            envelope.arrival,
            envelope.sender,
            envelope.uid,
            envelope.class.as_str()
        );
        let size_at = head.len() as u64;
        let head = format!("{head}{:0SIZE_WIDTH$}\n\n", 0);
        let written = file.write_all(head.as_bytes());
        // Built before the error check so that Drop removes the file.
        let w = Writer {
            file,
            dir: dir.to_path_buf(),
            id: id.to_string(),
            tmp,
            size_at,
            size: 0,
            done: false,
        };
        locked?;
        written?;
        Ok(w)
    }

    /// The queue id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Message bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends message bytes.
    pub fn write_message(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Writes the recipients and the size, makes the file durable, and
    /// moves it to its name: after this returns Ok, the message is queued.
    pub fn finish(mut self, recipients: &[String]) -> io::Result<String> {
        let mut tail = Vec::new();
        if self.size > 0 && !self.ends_with_newline()? {
            tail.push(b'\n');
            self.size += 1;
        }
        for r in recipients {
            tail.extend_from_slice(format!("rP\t{}\n", field(r)).as_bytes());
        }
        self.file.write_all(&tail)?;
        let size = format!("{:0SIZE_WIDTH$}", self.size);
        self.file.write_all_at(size.as_bytes(), self.size_at)?;
        self.file.sync_all()?;
        // Unlocked before the rename so that the queue manager can lock
        // the queue file at once; the fresh mtime keeps it from looking stale.
        fs2::FileExt::unlock(&self.file)?;
        let target = self.dir.join(&self.id);
        rename_no_replace(&self.tmp, &target)?;
        if let Err(e) = sync_dir(&self.dir) {
            // Not durable: take it back unless the queue manager already
            // has (then it is queued, and saying otherwise would have the
            // sender send it twice).
            if std::fs::rename(&target, &self.tmp).is_ok() {
                return Err(e); // Drop removes the temporary
            }
            log::warn!(
                "{}: cannot fsync {}: {e}; the queue manager has the message already",
                self.id,
                self.dir.display()
            );
        }
        self.done = true;
        Ok(self.id.clone())
    }

    fn ends_with_newline(&mut self) -> io::Result<bool> {
        let mut last = [0u8; 1];
        let end = self.file.stream_position()?;
        self.file
            .read_at(&mut last, end - 1)
            .map(|_| last[0] == b'\n')
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes the temporaries in `dir` whose writer is gone: not locked by
/// anyone and older than `min_age`. Returns the names removed; problems are
/// logged with the file's path.
pub fn remove_stale_temporaries(dir: &Path, min_age: std::time::Duration) -> Vec<String> {
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            log::warn!("cannot read {}: {e}", dir.display());
            return removed;
        }
    };
    let now = SystemTime::now();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.strip_prefix(TEMPORARY_PREFIX).is_some_and(is_queue_id) {
            continue;
        }
        let path = entry.path();
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                log::warn!("cannot open the temporary {}: {e}", path.display());
                continue;
            }
        };
        let young = file
            .metadata()
            .and_then(|m| m.modified())
            .map_or(true, |t| {
                now.duration_since(t).unwrap_or_default() < min_age
            });
        if young || fs2::FileExt::try_lock_exclusive(&file).is_err() {
            continue; // a writer at work
        }
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(name),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => log::warn!("cannot remove the stale temporary {}: {e}", path.display()),
        }
    }
    removed
}

/// Renames without replacing an existing file.
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    nix::fcntl::renameat2(
        None,
        from,
        None,
        to,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(io::Error::from)
}

/// fsyncs a directory (makes renames and unlinks in it durable).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// A recipient's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RcptState {
    /// Not finished.
    Pending,
    /// Every delivery delivered or bounced.
    Done,
}

/// One original recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// The address as submitted.
    pub address: String,
    /// Its state.
    pub state: RcptState,
    /// File offset of the state byte.
    pub state_at: u64,
}

/// A bounced delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Index of the original recipient.
    pub rcpt: usize,
    /// Enhanced status code.
    pub dsn: String,
    /// The postmaster should hear of it.
    pub notify: bool,
    /// The delivery key.
    pub key: String,
    /// Why.
    pub reason: String,
    /// Already reported to the sender.
    pub reported: bool,
    /// File offset of the reported byte.
    pub reported_at: u64,
}

/// The latest temporary failure of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delay {
    /// Enhanced status code.
    pub dsn: String,
    /// Why.
    pub reason: String,
}

/// A queue file, read.
#[derive(Debug, Clone)]
pub struct QueueFile {
    /// The queue id.
    pub id: String,
    /// The envelope.
    pub envelope: Envelope,
    /// Where the message starts.
    pub message_offset: u64,
    /// Message length.
    pub message_size: u64,
    /// The original recipients.
    pub recipients: Vec<Recipient>,
    /// Deliveries handed to an agent, by (recipient, key).
    pub in_flight: HashSet<(usize, String)>,
    /// Deliveries done, by (recipient, key).
    pub delivered: HashSet<(usize, String)>,
    /// Bounced deliveries.
    pub failures: Vec<Failure>,
    /// Latest temporary failure, by (recipient, key).
    pub delays: HashMap<(usize, String), Delay>,
    /// File length (where the next record goes).
    pub end: u64,
}

/// Why a file is not a readable queue file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// Reading failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The content is wrong.
    #[error("{0}")]
    Bad(String),
}

fn bad(what: impl Into<String>) -> FormatError {
    FormatError::Bad(what.into())
}

impl QueueFile {
    /// Reads the queue file at `path`.
    pub fn read(path: &Path) -> Result<QueueFile, FormatError> {
        let file = File::open(path)?;
        QueueFile::read_from(file)
    }

    /// Reads a queue file from an open file (from its start).
    pub fn read_from(mut file: File) -> Result<QueueFile, FormatError> {
        file.seek(SeekFrom::Start(0))?;
        let mut r = BufReader::new(file);
        let mut at = 0u64;
        let mut line = Vec::new();
        let mut next = |r: &mut BufReader<File>, at: &mut u64| -> Result<String, FormatError> {
            line.clear();
            let n = r
                .by_ref()
                .take(MAX_LINE as u64)
                .read_until(b'\n', &mut line)?;
            if n == 0 || line.last() != Some(&b'\n') {
                return Err(bad("truncated envelope"));
            }
            *at += n as u64;
            line.pop();
            String::from_utf8(line.clone()).map_err(|_| bad("envelope is not UTF-8"))
        };
        let magic = next(&mut r, &mut at)?;
        match magic.split_once(' ') {
            Some((MAGIC, v)) if v == VERSION.to_string() => {}
            Some((MAGIC, v)) => return Err(bad(format!("unsupported queue file version {v}"))),
            _ => return Err(bad("not a postern queue file")),
        }
        let mut fields: HashMap<String, String> = HashMap::new();
        loop {
            let l = next(&mut r, &mut at)?;
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(' ').unwrap_or((&l, ""));
            fields.insert(k.to_string(), v.to_string());
        }
        let get = |k: &str| fields.get(k).ok_or_else(|| bad(format!("no '{k}' line")));
        let num = |k: &str| -> Result<u64, FormatError> {
            get(k)?.parse().map_err(|_| bad(format!("bad '{k}' line")))
        };
        let id = get("id")?.clone();
        let envelope = Envelope {
            arrival: num("arrival")?,
            sender: get("sender")?.clone(),
            uid: u32::try_from(num("uid")?).map_err(|_| bad("bad 'uid' line"))?,
            class: Class::parse(get("class")?).ok_or_else(|| bad("bad 'class' line"))?,
        };
        let message_size = num("size")?;
        let message_offset = at;
        let mut file = r.into_inner();
        let len = file.metadata()?.len();
        if message_offset
            .checked_add(message_size)
            .is_none_or(|end| end > len)
        {
            return Err(bad("message shorter than its size line"));
        }
        file.seek(SeekFrom::Start(message_offset + message_size))?;
        let mut tail = Vec::new();
        file.read_to_end(&mut tail)?;
        let mut q = QueueFile {
            id,
            envelope,
            message_offset,
            message_size,
            recipients: Vec::new(),
            in_flight: HashSet::new(),
            delivered: HashSet::new(),
            failures: Vec::new(),
            delays: HashMap::new(),
            end: len,
        };
        let mut pos = message_offset + message_size;
        for raw in tail.split_inclusive(|&b| b == b'\n') {
            let start = pos;
            pos += raw.len() as u64;
            let Some(raw) = raw.strip_suffix(b"\n") else {
                break; // torn last record
            };
            let text = String::from_utf8_lossy(raw);
            q.record(&text, start)
                .map_err(|e| bad(format!("record at offset {start}: {e}")))?;
        }
        if q.recipients.is_empty() {
            return Err(bad("no recipients"));
        }
        Ok(q)
    }

    fn record(&mut self, text: &str, start: u64) -> Result<(), String> {
        let f: Vec<&str> = text.split('\t').collect();
        let rcpt = |s: &str, n: usize| -> Result<usize, String> {
            let i: usize = s
                .parse()
                .map_err(|_| format!("bad recipient index {s:?}"))?;
            if i >= n {
                return Err(format!("recipient index {i} out of range"));
            }
            Ok(i)
        };
        let n = self.recipients.len();
        match (f.first().copied(), f.len()) {
            (Some("rP" | "rD"), 2) => self.recipients.push(Recipient {
                address: f[1].to_string(),
                state: if f[0] == "rD" {
                    RcptState::Done
                } else {
                    RcptState::Pending
                },
                state_at: start + 1,
            }),
            (Some("i"), 3) => {
                self.in_flight.insert((rcpt(f[1], n)?, f[2].to_string()));
            }
            (Some("d"), 3) => {
                let k = (rcpt(f[1], n)?, f[2].to_string());
                self.in_flight.remove(&k);
                self.delays.remove(&k);
                self.delivered.insert(k);
            }
            (Some("t"), 5) => {
                let k = (rcpt(f[1], n)?, f[3].to_string());
                self.in_flight.remove(&k);
                self.delays.insert(
                    k,
                    Delay {
                        dsn: f[2].to_string(),
                        reason: f[4].to_string(),
                    },
                );
            }
            (Some(tag @ ("bN" | "bR")), 6) => {
                let i = rcpt(f[1], n)?;
                let k = (i, f[4].to_string());
                self.in_flight.remove(&k);
                self.delays.remove(&k);
                self.failures.push(Failure {
                    rcpt: i,
                    dsn: f[2].to_string(),
                    notify: f[3] == "1",
                    key: f[4].to_string(),
                    reason: f[5].to_string(),
                    reported: tag == "bR",
                    reported_at: start + 1,
                });
            }
            _ => {
                return Err(format!(
                    "unknown record {:?}",
                    text.chars().take(40).collect::<String>()
                ))
            }
        }
        Ok(())
    }

    /// Whether delivery `key` of recipient `rcpt` is finished.
    pub fn is_final(&self, rcpt: usize, key: &str) -> bool {
        let k = (rcpt, key.to_string());
        self.delivered.contains(&k) || self.failures.iter().any(|f| f.rcpt == rcpt && f.key == key)
    }

    /// Recipients not yet done.
    pub fn pending(&self) -> impl Iterator<Item = (usize, &Recipient)> {
        self.recipients
            .iter()
            .enumerate()
            .filter(|(_, r)| r.state == RcptState::Pending)
    }
}

/// Appends records and rewrites state bytes of a queue file (the queue
/// manager's side), and applies each change to the [`QueueFile`] read from
/// it, so that the reader's view stays the file's without reading it again.
/// The file is opened when needed and can be closed between uses
/// ([`Updater::close`]), so that thousands of messages in the active queue
/// do not hold thousands of descriptors.
#[derive(Debug)]
pub struct Updater {
    path: PathBuf,
    file: Option<File>,
}

impl Updater {
    /// An updater for `path` (opened at the first update).
    pub fn open(path: &Path) -> Updater {
        Updater {
            path: path.to_path_buf(),
            file: None,
        }
    }

    fn f(&mut self) -> io::Result<&File> {
        if self.file.is_none() {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&self.path)?;
            self.file = Some(file);
        }
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::other("queue file not open"))
    }

    /// The open file (to hand to an agent).
    pub fn file(&mut self) -> io::Result<&File> {
        self.f()
    }

    /// Closes the descriptor until the next update.
    pub fn close(&mut self) {
        self.file = None;
    }

    /// Appends `line` (with its newline) at the file's end and applies it.
    fn append(&mut self, qf: &mut QueueFile, line: &str) -> io::Result<()> {
        let at = qf.end;
        self.f()?.write_all_at(line.as_bytes(), at)?;
        qf.end += line.len() as u64;
        qf.record(line.trim_end_matches('\n'), at)
            .map_err(io::Error::other)
    }

    /// Delivery `key` of recipient `rcpt` is being handed to an agent.
    pub fn in_flight(&mut self, qf: &mut QueueFile, rcpt: usize, key: &str) -> io::Result<()> {
        self.append(qf, &format!("i\t{rcpt}\t{}\n", field(key)))
    }

    /// ... was delivered.
    pub fn delivered(&mut self, qf: &mut QueueFile, rcpt: usize, key: &str) -> io::Result<()> {
        self.append(qf, &format!("d\t{rcpt}\t{}\n", field(key)))
    }

    /// ... was deferred.
    pub fn deferred(
        &mut self,
        qf: &mut QueueFile,
        rcpt: usize,
        key: &str,
        dsn: &str,
        reason: &str,
    ) -> io::Result<()> {
        self.append(
            qf,
            &format!(
                "t\t{rcpt}\t{}\t{}\t{}\n",
                field(dsn),
                field(key),
                field(reason)
            ),
        )
    }

    /// ... bounced.
    pub fn bounced(
        &mut self,
        qf: &mut QueueFile,
        rcpt: usize,
        key: &str,
        dsn: &str,
        notify: bool,
        reason: &str,
    ) -> io::Result<()> {
        self.append(
            qf,
            &format!(
                "bN\t{rcpt}\t{}\t{}\t{}\t{}\n",
                field(dsn),
                u8::from(notify),
                field(key),
                field(reason)
            ),
        )
    }

    /// Marks recipient `rcpt` done (its state byte).
    pub fn recipient_done(&mut self, qf: &mut QueueFile, rcpt: usize) -> io::Result<()> {
        let r = qf
            .recipients
            .get_mut(rcpt)
            .ok_or_else(|| io::Error::other(format!("no recipient {rcpt}")))?;
        self.f()?.write_all_at(b"D", r.state_at)?;
        r.state = RcptState::Done;
        Ok(())
    }

    /// Marks failure `index` (in [`QueueFile::failures`]) reported to the sender.
    pub fn failure_reported(&mut self, qf: &mut QueueFile, index: usize) -> io::Result<()> {
        let f = qf
            .failures
            .get_mut(index)
            .ok_or_else(|| io::Error::other(format!("no failure {index}")))?;
        self.f()?.write_all_at(b"R", f.reported_at)?;
        f.reported = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope() -> Envelope {
        Envelope {
            arrival: 1_795_245_296,
            sender: "ann@example.org".into(),
            uid: 1000,
            class: Class::Normal,
        }
    }

    #[test]
    fn stale_temporaries_go_and_live_writers_stay() {
        let dir = tempfile::tempdir().unwrap();
        let live = Writer::create(dir.path(), &new_queue_id(), &envelope()).unwrap();
        let dead = dir.path().join("tmp.DEAD1");
        std::fs::write(&dead, "postern-queue 1\n").unwrap();
        let other = dir.path().join("notes");
        std::fs::write(&other, "x").unwrap();
        // Too young: kept.
        assert!(remove_stale_temporaries(dir.path(), STALE_TEMPORARY_AGE).is_empty());
        // Old enough: the unlocked one goes, the locked one stays.
        let removed = remove_stale_temporaries(dir.path(), std::time::Duration::ZERO);
        assert_eq!(removed, vec!["tmp.DEAD1".to_string()]);
        assert!(!dead.exists() && other.exists());
        assert!(dir.path().join(format!("tmp.{}", live.id())).exists());
        drop(live);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_read_update() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_queue_id();
        let mut w = Writer::create(dir.path(), &id, &envelope()).unwrap();
        w.write_message(b"Subject: x\n\nbody").unwrap();
        w.finish(&["bob@example.org".into(), "carol".into()])
            .unwrap();
        assert!(!dir.path().join(format!("tmp.{id}")).exists());
        let path = dir.path().join(&id);
        let q = QueueFile::read(&path).unwrap();
        assert_eq!(q.id, id);
        assert_eq!(q.envelope, envelope());
        assert_eq!(q.message_size, 17);
        let text = std::fs::read(&path).unwrap();
        let m = q.message_offset as usize;
        assert_eq!(&text[m..m + 17], b"Subject: x\n\nbody\n");
        assert_eq!(q.pending().count(), 2);

        let mut q = q;
        let mut u = Updater::open(&path);
        u.in_flight(&mut q, 0, "bob|mailbox /var/mail/bob").unwrap();
        u.delivered(&mut q, 0, "bob|mailbox /var/mail/bob").unwrap();
        u.recipient_done(&mut q, 0).unwrap();
        u.in_flight(&mut q, 1, "carol|x").unwrap();
        u.deferred(&mut q, 1, "carol|x", "4.2.0", "busy\nnow")
            .unwrap();
        u.bounced(&mut q, 1, "carol|y", "5.1.1", true, "no such user")
            .unwrap();
        u.in_flight(&mut q, 1, "carol|z").unwrap();
        let mut kept = q;
        let q = QueueFile::read(&path).unwrap();
        assert_eq!(q.recipients[0].state, RcptState::Done);
        assert_eq!(q.pending().count(), 1);
        assert!(q.is_final(0, "bob|mailbox /var/mail/bob"));
        assert!(!q.is_final(1, "carol|x"));
        assert_eq!(q.delays[&(1, "carol|x".to_string())].reason, "busy now");
        assert_eq!(q.failures.len(), 1);
        assert!(!q.failures[0].reported && q.failures[0].notify);
        assert!(q.in_flight.contains(&(1, "carol|z".to_string())));
        // The updated view is what reading the file gives.
        assert_eq!(kept.recipients, q.recipients);
        assert_eq!(kept.failures, q.failures);
        assert_eq!(
            (&kept.delivered, &kept.in_flight, &kept.delays, kept.end),
            (&q.delivered, &q.in_flight, &q.delays, q.end)
        );
        let mut u = Updater::open(&path);
        u.failure_reported(&mut kept, 0).unwrap();
        assert!(QueueFile::read(&path).unwrap().failures[0].reported);
    }

    #[test]
    fn torn_and_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_queue_id();
        let mut w = Writer::create(dir.path(), &id, &envelope()).unwrap();
        w.write_message(b"x\n").unwrap();
        w.finish(&["bob".into()]).unwrap();
        let path = dir.path().join(&id);
        // A torn last record is ignored.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"d\t0\tbo").unwrap();
        assert!(QueueFile::read(&path).unwrap().delivered.is_empty());
        // Garbage is an error, never a panic.
        for junk in [
            &b""[..],
            b"postern-queue 2\n",
            b"hello\n",
            b"postern-queue 1\nid x\n\n",
            b"postern-queue 1\nid x\narrival 1\nsender \nuid 0\nclass normal\nsize 99\n\nab",
            b"postern-queue 1\nid x\narrival 1\nsender \nuid 0\nclass normal\nsize 18446744073709551615\n\nab",
        ] {
            std::fs::write(&path, junk).unwrap();
            assert!(QueueFile::read(&path).is_err());
        }
        std::fs::write(&path, b"postern-queue 1\nid x\narrival 1\nsender \nuid 0\nclass normal\nsize 3\n\nab\nrP\tbob\nq\t1\n").unwrap();
        let e = QueueFile::read(&path).unwrap_err().to_string();
        assert!(e.contains("unknown record"), "{e}");
        std::fs::write(&path, b"postern-queue 1\nid x\narrival 1\nsender \nuid 0\nclass normal\nsize 3\n\nab\nrP\tbob\nd\t7\tk\n").unwrap();
        let e = QueueFile::read(&path).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), "ABC", &envelope()).unwrap();
        w.write_message(b"partial").unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn addresses() {
        assert!(check_address("ann@example.org").is_ok());
        for bad in ["", "a b", "a\nb", "<a>", &"x".repeat(999)] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
        assert!(is_queue_id(&new_queue_id()));
        assert!(!is_queue_id("../x"));
    }
}
