//! The trusted program directory of program delivery, and its flag files,
//! as DESIGN.md resolves the Post.Office and Netscape documents: the state
//! of the directory decides whether program delivery is disabled,
//! suspended, secure (only programs in the directory run) or non-secure
//! (absolute paths run as given). Read by local at every delivery and by
//! `postern check`.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use postern_sys::trust::{root_controlled, root_only_path};

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
    // A program that deliveries would run: a link that would be refused
    // does not make the directory secure mode's.
    let has_program = program_entries(dir).iter().any(|(_, v)| v.is_ok());
    if has_program {
        Mode::Secure(dir.to_path_buf())
    } else {
        Mode::Disabled(format!(
            "no programs in the trusted program directory {shown}"
        ))
    }
}

/// What deliveries do with the entry `name` of the trusted directory `dir`
/// (in secure mode): `Ok(path)`, the executable that runs — the entry
/// itself, or where a symbolic link leads — or `Err(why)`, refused. Runs:
///
/// - a regular file owned by root, not writable by group or others, with
///   an execute bit;
/// - a symbolic link owned by root (it sits in the root-only trusted
///   directory) to such a file, when the whole path of the target (every
///   directory up to `/`, and the file) satisfies [`root_only_path`].
///
/// Everything else — a flag file, a link a user owns, a link to a file or
/// through a directory a user can change, a dangling link, a directory —
/// is refused, and `why` says which.
pub fn program_entry(dir: &Path, name: &str) -> Result<PathBuf, String> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!("{name:?} is not a program name"));
    }
    if [NO_PROGRAM, SUSPEND_PROGRAM, INSECURE_PROGRAM].contains(&name) {
        return Err(format!("{name} is a flag file, not a program"));
    }
    let entry = dir.join(name);
    let shown = entry.display();
    let md = std::fs::symlink_metadata(&entry).map_err(|e| format!("{shown}: {e}"))?;
    let runnable = |md: &std::fs::Metadata, what: &str| -> Result<(), String> {
        if !md.is_file() {
            return Err(format!("{what} is not a regular file"));
        }
        if md.uid() != 0 {
            return Err(format!("{what} is owned by uid {}, not root", md.uid()));
        }
        if md.mode() & 0o022 != 0 {
            return Err(format!(
                "{what} is writable by group or others (mode {:04o})",
                md.mode() & 0o7777
            ));
        }
        if md.mode() & 0o111 == 0 {
            return Err(format!("{what} is not executable"));
        }
        Ok(())
    };
    if !md.file_type().is_symlink() {
        runnable(&md, &shown.to_string())?;
        return Ok(entry);
    }
    if md.uid() != 0 {
        return Err(format!(
            "{shown} is a symbolic link owned by uid {}, not root",
            md.uid()
        ));
    }
    let target = std::fs::canonicalize(&entry)
        .map_err(|e| format!("{shown} is a symbolic link that leads nowhere: {e}"))?;
    let tmd = std::fs::metadata(&target).map_err(|e| format!("{}: {e}", target.display()))?;
    runnable(
        &tmd,
        &format!("{shown} leads to {}, which", target.display()),
    )?;
    root_only_path(&target)
        .map_err(|why| format!("{shown} leads to {}: {why}", target.display()))?;
    Ok(target)
}

/// Every entry of the trusted directory `dir` with what deliveries do with
/// it ([`program_entry`]), sorted by name; flag files are left out.
pub fn program_entries(dir: &Path) -> Vec<(String, Result<PathBuf, String>)> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| ![NO_PROGRAM, SUSPEND_PROGRAM, INSECURE_PROGRAM].contains(&n.as_str()))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let verdict = program_entry(dir, &n);
            (n, verdict)
        })
        .collect()
}
