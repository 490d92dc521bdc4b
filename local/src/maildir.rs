//! Delivery to a Maildir, as the recipient.
//!
//! The copy is written to `tmp/` under a unique name
//! (`<seconds>.M<microseconds>P<pid>Q<counter>.<host>`), fsynced, then
//! renamed into `new/`, and `new/` is fsynced. The Maildir and its `tmp/`,
//! `new/` and `cur/` are created (0700) when missing; an existing one must
//! be a real directory (no symbolic link) owned by the recipient.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use postern_common::handoff::RecipientStatus;

use crate::message::Copy;

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn ensure_dir(path: &Path, uid: u32) -> Result<(), RecipientStatus> {
    let shown = path.display();
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(RecipientStatus::bounced(
                "5.2.0",
                format!("cannot create maildir directory {shown}: {e}"),
            ))
        }
        Err(e) => {
            return Err(RecipientStatus::deferred(
                "4.2.0",
                format!("cannot create maildir directory {shown}: {e}"),
            ))
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(md) if md.file_type().is_symlink() => Err(RecipientStatus::bounced(
            "5.2.0",
            format!("maildir directory {shown} is a symbolic link: refused"),
        )),
        Ok(md) if !md.is_dir() => Err(RecipientStatus::bounced(
            "5.2.0",
            format!("maildir {shown} is not a directory: refused"),
        )),
        Ok(md) if md.uid() != uid => Err(RecipientStatus::bounced(
            "5.2.0",
            format!(
                "maildir directory {shown} is owned by uid {}, not the recipient: refused",
                md.uid()
            ),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(RecipientStatus::deferred(
            "4.2.0",
            format!("cannot examine {shown}: {e}"),
        )),
    }
}

/// Delivers `copy` into the Maildir at `dir`.
pub fn deliver(dir: &Path, uid: u32, copy: &Copy<'_>) -> RecipientStatus {
    // "Maildir/" names the directory; with the slash, lstat would follow a
    // symbolic link. Rebuild the path from its components (no trailing slash).
    let dir: std::path::PathBuf = dir.components().collect();
    let dir = dir.as_path();
    for d in [
        dir.to_path_buf(),
        dir.join("tmp"),
        dir.join("new"),
        dir.join("cur"),
    ] {
        if let Err(status) = ensure_dir(&d, uid) {
            return status;
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let host = nix::unistd::gethostname().map_or_else(
        |_| "localhost".into(),
        |h| h.to_string_lossy().replace(['/', ':'], "_"),
    );
    let name = format!(
        "{}.M{}P{}Q{}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(&copy.plain())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &new)?;
        std::fs::File::open(dir.join("new"))?.sync_all()
    };
    match write() {
        Ok(()) => RecipientStatus::delivered(format!("delivered to maildir {}", dir.display())),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            RecipientStatus::deferred(
                "4.2.0",
                format!("cannot write to maildir {}: {e}", dir.display()),
            )
        }
    }
}
