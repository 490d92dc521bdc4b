//! The policy checks of a delivery: the envelope and mail loops (before the
//! switch to the user), the per-user policy file (read as the user), and
//! the verdict for a destination, also through symbolic links.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use postern_common::destinations::check_real;
use postern_common::handoff::{Instruction, RecipientStatus};
use postern_conf::policy::{self, Kind, Policy, Who};

use crate::message;

/// The checks made before the switch to the user, per copy: the envelope
/// addresses, mail loops.
pub(crate) fn check_copy(
    instr: &Instruction,
    sender: &str,
    delivered_to: &[String],
) -> Result<(), RecipientStatus> {
    for (what, value) in [("sender", sender), ("recipient", instr.recipient.as_str())] {
        if value.chars().any(|c| c.is_control()) {
            return Err(RecipientStatus::bounced(
                "5.1.7",
                format!("{what} address contains control characters: refused"),
            ));
        }
    }
    if message::is_loop(delivered_to, &instr.recipient) {
        return Err(RecipientStatus::bounced(
            "5.4.6",
            format!("mail forwarding loop for {}", instr.recipient),
        ));
    }
    Ok(())
}

/// The largest per-user policy file read (bytes).
const USER_POLICY_LIMIT: u64 = 64 * 1024;

/// Reads `~/.postern-destinations` as the user, if it is safe to use. It is
/// opened without following a symbolic link and without blocking (a FIFO
/// put there cannot hold the delivery), then checked on the open file.
pub(crate) fn user_policy(home: &Path, uid: u32) -> Result<Option<Policy>, RecipientStatus> {
    use std::io::Read;
    let path = home.join(".postern-destinations");
    let cannot = |e: &dyn std::fmt::Display| {
        RecipientStatus::deferred("4.3.5", format!("cannot read {}: {e}", path.display()))
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A home the user cannot search (root's mail runs as default_privs
        // in /root) has no per-user policy for this delivery; a file that
        // is there but unreadable is an error (below).
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                && std::fs::symlink_metadata(&path).is_err() =>
        {
            return Ok(None)
        }
        // ELOOP: a symbolic link. Not a policy file: ignored like any other
        // unsafe one.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            log::warn!("ignoring {}: a symbolic link", path.display());
            return Ok(None);
        }
        Err(e) => return Err(cannot(&e)),
    };
    let md = file.metadata().map_err(|e| cannot(&e))?;
    if !md.is_file() || (md.uid() != uid && md.uid() != 0) || md.mode() & 0o022 != 0 {
        log::warn!(
            "ignoring {}: not a regular file owned by the user or root, or writable by others",
            path.display()
        );
        return Ok(None);
    }
    if md.len() > USER_POLICY_LIMIT {
        return Err(cannot(&format!("larger than {USER_POLICY_LIMIT} bytes")));
    }
    let mut text = String::new();
    file.take(USER_POLICY_LIMIT)
        .read_to_string(&mut text)
        .map_err(|e| cannot(&e))?;
    policy::parse(&path.display().to_string(), &text, false)
        .map(Some)
        .map_err(|e| {
            RecipientStatus::deferred(
                "4.3.5",
                format!("per-user destination policy has errors: {}", e.join("; ")),
            )
        })
}

/// The policy verdict for `dest`, also for the real location of its parent
/// directory (so that a symbolic link in the path cannot lead elsewhere).
pub(crate) fn allowed(
    system: &Policy,
    user: Option<&Policy>,
    kind: Kind,
    dest: &Path,
    who: &Who<'_>,
) -> Result<(), RecipientStatus> {
    let refuse =
        |why: String| RecipientStatus::bounced("5.7.1", format!("destination refused: {why}"));
    policy::check(system, user, kind, dest, who).map_err(refuse)?;
    let normal = policy::normalize(dest).map_err(refuse)?;
    if let (Some(parent), Some(name)) = (normal.parent(), normal.file_name()) {
        let real_parent = std::fs::canonicalize(parent).map_err(|e| {
            RecipientStatus::deferred(
                "4.2.0",
                format!("cannot resolve the directory of {}: {e}", dest.display()),
            )
        })?;
        {
            let real = real_parent.join(name);
            if real != normal {
                check_real(system, user, kind, &real, who).map_err(|why| {
                    refuse(format!(
                        "{why} ({} leads there through a symbolic link)",
                        dest.display()
                    ))
                })?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_common::handoff::{Destination, Outcome};
    use std::os::unix::fs::PermissionsExt;

    fn instr(recipient: &str) -> Instruction {
        Instruction {
            recipient: recipient.into(),
            original_recipient: None,
            user: "ann".into(),
            extension: None,
            destination: Destination::Mailbox("/var/mail/ann".into()),
            uncertain: false,
        }
    }

    #[test]
    fn envelopes_with_control_characters_and_loops_are_refused() {
        let seen = vec!["ann@example.org".to_string()];
        assert!(check_copy(&instr("bob@example.org"), "s@example.org", &seen).is_ok());
        let looped = check_copy(&instr("ANN@example.org"), "s@example.org", &seen).unwrap_err();
        assert_eq!(
            (looped.outcome, looped.dsn.as_str()),
            (Outcome::Bounced, "5.4.6")
        );
        let sender = check_copy(&instr("bob@example.org"), "s\r\n@x", &seen).unwrap_err();
        assert_eq!(sender.dsn, "5.1.7");
        assert!(sender.reason.contains("sender"), "{}", sender.reason);
        let rcpt = check_copy(&instr("bob\0@example.org"), "s@x", &[]).unwrap_err();
        assert!(rcpt.reason.contains("recipient"), "{}", rcpt.reason);
    }

    #[test]
    fn a_per_user_policy_is_used_only_when_safe() {
        let home = tempfile::tempdir().unwrap();
        let uid = nix::unistd::Uid::effective().as_raw();
        let file = home.path().join(".postern-destinations");
        assert!(user_policy(home.path(), uid).unwrap().is_none(), "missing");
        std::fs::write(&file, "mailbox ~/box\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(user_policy(home.path(), uid).unwrap().is_some(), "safe");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            user_policy(home.path(), uid).unwrap().is_none(),
            "writable by others"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&file, "nonsense here\n").unwrap();
        let bad = user_policy(home.path(), uid).unwrap_err();
        assert_eq!(
            (bad.outcome, bad.dsn.as_str()),
            (Outcome::Deferred, "4.3.5")
        );
        assert!(
            bad.reason.contains(".postern-destinations:1"),
            "{}",
            bad.reason
        );
        std::fs::write(&file, vec![b'#'; USER_POLICY_LIMIT as usize + 1]).unwrap();
        let big = user_policy(home.path(), uid).unwrap_err();
        assert!(big.reason.contains("larger than"), "{}", big.reason);
        std::fs::remove_file(&file).unwrap();
        let elsewhere = home.path().join("elsewhere");
        std::fs::write(&elsewhere, "mailbox ~/box\n").unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        assert!(user_policy(home.path(), uid).unwrap().is_none(), "a link");
    }

    #[test]
    fn a_link_in_the_path_is_checked_where_it_leads() {
        let home = tempfile::tempdir().unwrap();
        let home = std::fs::canonicalize(home.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.join("Mail")).unwrap();
        std::os::unix::fs::symlink(outside.path(), home.join("Link")).unwrap();
        let system = policy::parse("destinations", "mailbox ~/**\n", true).unwrap();
        let who = Who {
            user: "ann",
            home: &home,
        };
        assert!(allowed(&system, None, Kind::Mailbox, &home.join("Mail/box"), &who).is_ok());
        let refused =
            allowed(&system, None, Kind::Mailbox, &home.join("Link/box"), &who).unwrap_err();
        assert_eq!(
            (refused.outcome, refused.dsn.as_str()),
            (Outcome::Bounced, "5.7.1")
        );
        assert!(
            refused.reason.contains("symbolic link"),
            "{}",
            refused.reason
        );
        let elsewhere = allowed(&system, None, Kind::Mailbox, Path::new("/etc/box"), &who);
        assert_eq!(elsewhere.unwrap_err().dsn, "5.7.1");
        let missing = allowed(&system, None, Kind::Mailbox, &home.join("No/box"), &who);
        assert_eq!(missing.unwrap_err().dsn, "4.2.0");
    }
}
