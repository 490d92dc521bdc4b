//! The trusted program directory of program delivery, and its flag files,
//! as DESIGN.md resolves the Post.Office and Netscape documents: the state
//! of the directory decides whether program delivery is disabled,
//! suspended, secure (only programs in the directory run) or non-secure
//! (absolute paths run as given). Read by local at every delivery and by
//! `postern check`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The flag files.
pub const NO_PROGRAM: &str = "NO-PROGRAM-DELIVERIES";
/// Deliveries are deferred while this exists.
pub const SUSPEND_PROGRAM: &str = "SUSPEND-PROGRAM-DELIVERIES";
/// Absolute paths run as given while this exists.
pub const INSECURE_PROGRAM: &str = "INSECURE-PROGRAM-DELIVERIES";

/// The state of program delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Off, with the reason.
    Disabled(String),
    /// Deferred, with the reason.
    Suspended(String),
    /// Only programs in this directory run.
    Secure(PathBuf),
    /// Absolute paths run as given.
    Insecure,
}

/// Reads the trusted directory's state.
pub fn mode(dir: &Path) -> Mode {
    let shown = dir.display();
    let md = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return Mode::Disabled(format!("trusted program directory {shown}: {e}")),
    };
    if !md.is_dir() {
        return Mode::Disabled(format!(
            "trusted program directory {shown} is not a directory"
        ));
    }
    if md.uid() != 0 {
        return Mode::Disabled(format!(
            "trusted program directory {shown} is owned by uid {}, not root",
            md.uid()
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Mode::Disabled(format!(
            "trusted program directory {shown} is writable by group or others (mode {:04o})",
            md.mode() & 0o7777
        ));
    }
    if let Some(parent) = dir.parent() {
        if let Err(why) = root_controlled(parent) {
            return Mode::Disabled(format!("trusted program directory {shown}: {why}"));
        }
    }
    if dir.join(NO_PROGRAM).exists() {
        return Mode::Disabled(format!("{NO_PROGRAM} is present in {shown}"));
    }
    if dir.join(SUSPEND_PROGRAM).exists() {
        return Mode::Suspended(format!("{SUSPEND_PROGRAM} is present in {shown}"));
    }
    if dir.join(INSECURE_PROGRAM).exists() {
        return Mode::Insecure;
    }
    let has_program = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        });
    if has_program {
        Mode::Secure(dir.to_path_buf())
    } else {
        Mode::Disabled(format!(
            "no programs in the trusted program directory {shown}"
        ))
    }
}

/// Whether `dir` and every directory above it can be changed by root only:
/// owned by root and not writable by group or others (a root-owned
/// directory with the sticky bit, such as /tmp, is fine: others cannot
/// rename what they do not own there).
pub fn root_controlled(dir: &Path) -> Result<(), String> {
    let mut cur = Some(dir);
    while let Some(d) = cur {
        let md = std::fs::symlink_metadata(d).map_err(|e| format!("{}: {e}", d.display()))?;
        if md.file_type().is_symlink() {
            return Err(format!("{} is a symbolic link", d.display()));
        }
        let sticky = md.mode() & 0o1000 != 0;
        if md.uid() != 0 || (md.mode() & 0o022 != 0 && !sticky) {
            return Err(format!(
                "{} is owned by uid {} with mode {:04o}: only root may be able to change it",
                d.display(),
                md.uid(),
                md.mode() & 0o7777
            ));
        }
        cur = d.parent().filter(|p| !p.as_os_str().is_empty());
    }
    Ok(())
}
