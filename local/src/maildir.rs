//! Delivery to a Maildir, as the recipient.
//!
//! The Maildir and its `tmp/` and `new/` are opened as directories without
//! following symbolic links (created 0700 when missing, with `cur/`), and
//! checked through their descriptors: real directories owned by the
//! recipient. The copy is then written relative to those descriptors: created
//! in `tmp/` under a unique name (`<seconds>.M<microseconds>P<pid>Q<counter>.
//! <host>`), fsynced, renamed into `new/`, and `new/` is fsynced so that the
//! rename is durable before the delivery is reported. Several copies for the
//! same Maildir (one request carrying several messages) are written first,
//! then fsynced (their writeback started together, so that the file system
//! can write them out together), renamed, and `new/` is fsynced once.
//! Working through
//! descriptors means no path can be swapped for a link between the checks
//! and the writes.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{renameat, OFlag};
use nix::sys::stat::{fstat, mkdirat, Mode};
use postern_common::handoff::RecipientStatus;
use postern_common::mail::CHUNK;
use postern_sys::{openat, start_writeback};

use crate::message::Copy;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Opens directory `name` (relative to `parent`, or absolute), creating it
/// 0700 when missing; returns it and whether it was created.
fn open_dir(
    parent: Option<&OwnedFd>,
    name: &Path,
    shown: &Path,
    uid: u32,
) -> Result<(OwnedFd, bool), RecipientStatus> {
    // None: relative to the working directory (the path is absolute).
    let at = parent.map(|p| p.as_raw_fd());
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let bounce = |why: String| RecipientStatus::bounced("5.2.0", why);
    let defer = |why: String| RecipientStatus::deferred("4.2.0", why);
    let mut created = false;
    let fd = loop {
        match openat(at, name, flags, Mode::empty()) {
            Ok(fd) => break fd,
            Err(Errno::ENOENT) if !created => {
                match mkdirat(at, name, Mode::from_bits_truncate(0o700)) {
                    Ok(()) | Err(Errno::EEXIST) => created = true,
                    Err(Errno::EACCES | Errno::EPERM) => {
                        return Err(bounce(format!(
                            "cannot create maildir directory {}: permission denied",
                            shown.display()
                        )))
                    }
                    Err(e) => {
                        return Err(defer(format!(
                            "cannot create maildir directory {}: {e}",
                            shown.display()
                        )))
                    }
                }
            }
            Err(Errno::ELOOP | Errno::ENOTDIR) => {
                return Err(bounce(format!(
                    "maildir directory {} is a symbolic link or not a directory: refused",
                    shown.display()
                )))
            }
            Err(Errno::EACCES) => {
                return Err(bounce(format!(
                    "cannot open maildir directory {}: permission denied",
                    shown.display()
                )))
            }
            Err(e) => {
                return Err(defer(format!(
                    "cannot open maildir directory {}: {e}",
                    shown.display()
                )))
            }
        }
    };
    let md = fstat(fd.as_raw_fd())
        .map_err(|e| defer(format!("cannot examine {}: {e}", shown.display())))?;
    if md.st_uid != uid {
        return Err(bounce(format!(
            "maildir directory {} is owned by uid {}, not the recipient: refused",
            shown.display(),
            md.st_uid
        )));
    }
    Ok((fd, created))
}

/// A copy written to `tmp/`, not yet in `new/`.
struct Staged {
    index: usize,
    name: String,
    file: std::fs::File,
}

/// Delivers `copies` into the Maildir at `dir`; one status per copy.
pub fn deliver_many(dir: &Path, uid: u32, copies: &[Copy<'_>]) -> Vec<RecipientStatus> {
    // "Maildir/" names the directory: rebuild the path without the slash.
    let dir: PathBuf = dir.components().collect();
    let opened = (|| -> Result<_, RecipientStatus> {
        let (root, created) = open_dir(None, &dir, &dir, uid)?;
        let (tmp, tmp_new) = open_dir(Some(&root), Path::new("tmp"), &dir.join("tmp"), uid)?;
        let (new, new_new) = open_dir(Some(&root), Path::new("new"), &dir.join("new"), uid)?;
        if created || tmp_new || new_new {
            open_dir(Some(&root), Path::new("cur"), &dir.join("cur"), uid)?;
        }
        Ok((root, tmp, new))
    })();
    let (root, tmp, new) = match opened {
        Ok(dirs) => dirs,
        Err(status) => return vec![status; copies.len()],
    };
    let host = nix::unistd::gethostname().map_or_else(
        |_| "localhost".into(),
        |h| h.to_string_lossy().replace(['/', ':'], "_"),
    );
    let defer = |e: String| {
        RecipientStatus::deferred(
            "4.2.0",
            format!("cannot write to maildir {}: {e}", dir.display()),
        )
    };
    let unlink = |at: &OwnedFd, name: &str| {
        let _ = nix::unistd::unlinkat(
            Some(at.as_raw_fd()),
            name,
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
    };
    let mut statuses: Vec<Option<RecipientStatus>> = vec![None; copies.len()];
    let mut staged: Vec<Staged> = Vec::new();
    for (index, copy) in copies.iter().enumerate() {
        // The queue id in the unique part lets an uncertain retry find an
        // earlier copy without reading every file.
        let tag = queue_tag(copy.queue_id);
        if copy.uncertain && !tag.is_empty() {
            let found = ["new", "cur"]
                .into_iter()
                .find_map(|sub| earlier_copy(&root, sub, &tag, copy).map(|f| (sub, f)));
            if let Some((sub, found)) = found {
                statuses[index] = Some(RecipientStatus::delivered(format!(
                    "already delivered to maildir {} ({sub}/{found}) by an earlier attempt",
                    dir.display()
                )));
                continue;
            }
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "{}.M{}P{}Q{}{tag}.{host}",
            now.as_secs(),
            now.subsec_micros(),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let file = match openat(
            Some(tmp.as_raw_fd()),
            name.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        ) {
            Ok(fd) => std::fs::File::from(fd),
            Err(e) => {
                statuses[index] = Some(defer(e.to_string()));
                continue;
            }
        };
        // Streamed from the queue file, in pieces of CHUNK bytes.
        let written = {
            let mut w = std::io::BufWriter::with_capacity(CHUNK, &file);
            copy.write_plain(&mut w).and_then(|()| w.flush())
        };
        match written {
            Ok(()) => staged.push(Staged { index, name, file }),
            Err(e) => {
                unlink(&tmp, &name);
                statuses[index] = Some(defer(e.to_string()));
            }
        }
    }
    // Durable in tmp/, then moved into new/.
    for s in &staged {
        let _ = start_writeback(&s.file);
    }
    let mut renamed: Vec<Staged> = Vec::new();
    for s in staged {
        let moved = s.file.sync_all().map_err(|e| e.to_string()).and_then(|()| {
            renameat(
                Some(tmp.as_raw_fd()),
                s.name.as_str(),
                Some(new.as_raw_fd()),
                s.name.as_str(),
            )
            .map_err(|e| e.to_string())
        });
        match moved {
            Ok(()) => renamed.push(s),
            Err(e) => {
                unlink(&tmp, &s.name);
                statuses[s.index] = Some(defer(e));
            }
        }
    }
    // One fsync of new/ makes every rename durable; if it fails, the copies
    // are taken back out (a later attempt delivers them again).
    if !renamed.is_empty() {
        if let Err(e) = nix::unistd::fsync(new.as_raw_fd()) {
            for s in &renamed {
                unlink(&new, &s.name);
                statuses[s.index] = Some(defer(format!("fsync of new/: {e}")));
            }
        }
    }
    statuses
        .into_iter()
        .map(|s| {
            s.unwrap_or_else(|| {
                RecipientStatus::delivered(format!("delivered to maildir {}", dir.display()))
            })
        })
        .collect()
}

/// `I<queue id>` for a queue id of letters and digits, else nothing.
fn queue_tag(queue_id: &str) -> String {
    if !queue_id.is_empty() && queue_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        format!("I{queue_id}")
    } else {
        String::new()
    }
}

/// The name of a file in `root/sub` whose unique part carries `tag` and
/// whose headers show it is `copy`.
fn earlier_copy(root: &OwnedFd, sub: &str, tag: &str, copy: &Copy<'_>) -> Option<String> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(Some(root.as_raw_fd()), sub, flags, Mode::empty()).ok()?;
    let want = format!("{tag}.");
    let names: Vec<String> = dir
        .iter()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&want))
        .collect();
    // `dir` stays open (and with it this descriptor) while the files are read.
    let dirfd = dir.as_raw_fd();
    names.into_iter().find(|name| {
        let Ok(fd) = openat(
            Some(dirfd),
            name.as_str(),
            OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
            Mode::empty(),
        ) else {
            return false;
        };
        let mut head = vec![0u8; crate::message::HEAD];
        let file = std::fs::File::from(fd);
        let n = nix::sys::uio::pread(&file, &mut head, 0).unwrap_or(0);
        copy.is_same_delivery(&head[..n])
    })
}
