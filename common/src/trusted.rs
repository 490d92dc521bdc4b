//! The trusted program directory of program delivery, and its flag files,
//! as DESIGN.md resolves the Post.Office and Netscape documents: the state
//! of the directory decides whether program delivery is disabled,
//! suspended, secure (only programs in the directory run) or non-secure
//! (absolute paths run as given). Read by local at every delivery and by
//! `postern check`.

use std::os::unix::fs::MetadataExt;
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

/// Whether root alone can change `path` — a file or directory the master
/// takes instructions from (main.cf, master.cf, the daemon programs and
/// their directory) — and everything that leads to it. The rule, strict
/// and documented in the README:
///
/// - `path` itself and every directory above it, up to `/`, are owned by
///   root;
/// - `path` itself is not writable by group or others (for a directory:
///   sticky or not, since others could add entries to it);
/// - a directory above it may be group- or other-writable only with the
///   sticky bit (as `/tmp`): there no one but root can remove or rename
///   root's entry, and that entry is checked as owned by root;
/// - a symbolic link on the way must be owned by root (it sits in a
///   directory checked by the same rule), and the path it resolves to is
///   checked by the same rule too.
///
/// The error names the path and the reason.
pub fn root_only_path(path: &Path) -> Result<(), String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("{}: cannot resolve a relative path: {e}", path.display()))?
            .join(path)
    };
    root_only_chain(&absolute)?;
    let real =
        std::fs::canonicalize(&absolute).map_err(|e| format!("{}: {e}", absolute.display()))?;
    if real != absolute {
        root_only_chain(&real)
            .map_err(|why| format!("{} (resolved to {}): {why}", path.display(), real.display()))?;
    }
    Ok(())
}

/// [`root_only_path`]'s rule on the path as written (no resolution).
fn root_only_chain(path: &Path) -> Result<(), String> {
    let mut depth = 0;
    let mut cur = Some(path);
    while let Some(p) = cur {
        let md = std::fs::symlink_metadata(p).map_err(|e| format!("{}: {e}", p.display()))?;
        let mode = md.mode() & 0o7777;
        if md.uid() != 0 {
            return Err(format!(
                "{} is owned by uid {}, not root: that user could change what the master (root) reads",
                p.display(),
                md.uid()
            ));
        }
        let symlink = md.file_type().is_symlink();
        let sticky_dir = md.is_dir() && mode & 0o1000 != 0;
        // The path itself: no write by others at all. Above it: a sticky
        // directory keeps root's entry (checked next) in place.
        if !symlink && mode & 0o022 != 0 && (depth == 0 || !sticky_dir) {
            let who = if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            };
            return Err(format!(
                "{} is writable by {who} (mode {mode:04o}): only root may be able to change it",
                p.display()
            ));
        }
        depth += 1;
        cur = p.parent().filter(|q| !q.as_os_str().is_empty());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{chown, symlink, PermissionsExt};

    fn mode(p: &Path, m: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }

    #[test]
    fn root_only_paths() {
        // As root (the test suite runs as root), in /tmp (root, sticky 1777).
        assert!(nix::unistd::Uid::effective().is_root(), "runs as root");
        let top = tempfile::tempdir().unwrap();
        mode(top.path(), 0o755);
        let etc = top.path().join("etc");
        std::fs::create_dir(&etc).unwrap();
        mode(&etc, 0o755);
        let main = etc.join("main.cf");
        std::fs::write(&main, "x = 1\n").unwrap();
        mode(&main, 0o644);
        root_only_path(&main).unwrap();
        root_only_path(&etc).unwrap();

        mode(&main, 0o666);
        let e = root_only_path(&main).unwrap_err();
        assert!(
            e.contains("main.cf is writable by everyone (mode 0666)"),
            "{e}"
        );
        mode(&main, 0o664);
        assert!(root_only_path(&main)
            .unwrap_err()
            .contains("writable by its group"));
        mode(&main, 0o644);

        // A user's file, or a user's directory anywhere above.
        chown(&main, Some(65534), None).unwrap();
        let e = root_only_path(&main).unwrap_err();
        assert!(e.contains("owned by uid 65534, not root"), "{e}");
        chown(&main, Some(0), None).unwrap();
        chown(top.path(), Some(65534), None).unwrap();
        let e = root_only_path(&main).unwrap_err();
        assert!(
            e.contains(&format!("{} is owned by uid 65534", top.path().display())),
            "{e}"
        );
        chown(top.path(), Some(0), None).unwrap();

        // Sticky and writable: refused for the path itself (others could add
        // entries), accepted above it (as /tmp), where root's entry stays.
        mode(&etc, 0o1777);
        assert!(root_only_path(&etc).unwrap_err().contains("mode 1777"));
        root_only_path(&main).unwrap();
        mode(&etc, 0o777);
        assert!(root_only_path(&main).unwrap_err().contains("mode 0777"));
        mode(&etc, 0o755);

        // A root-owned link is followed, and where it leads is checked too.
        let link = top.path().join("link");
        symlink(&etc, &link).unwrap();
        root_only_path(&link.join("main.cf")).unwrap();
        mode(&etc, 0o777);
        assert!(root_only_path(&link.join("main.cf"))
            .unwrap_err()
            .contains("resolved to"));
        mode(&etc, 0o755);
        // A link a user owns is not.
        let user_link = top.path().join("user-link");
        symlink(&etc, &user_link).unwrap();
        std::os::unix::fs::lchown(&user_link, Some(65534), None).unwrap();
        assert!(root_only_path(&user_link.join("main.cf"))
            .unwrap_err()
            .contains("owned by uid 65534"));
    }
}
