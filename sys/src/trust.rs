//! Who can change a path: the ownership walks behind postern's trust in
//! files and directories — the master's configuration and programs
//! ([`root_only_path`]), the trusted program directory
//! ([`root_controlled`]), and the symbolic links root placed that the
//! destination policy follows ([`resolve_root_links`]). Plain `lstat`
//! walks, no policy: the rules that use them live with their callers.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

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

/// `path` with every symbolic link along it that root owns, in a directory
/// root owns, followed (at most 40), lexically otherwise; what cannot be
/// looked at is kept as written.
pub fn resolve_root_links(path: &Path) -> PathBuf {
    let mut pending: std::collections::VecDeque<std::ffi::OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut out = PathBuf::from("/");
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            out.pop();
            continue;
        }
        let next = out.join(&c);
        let followed = match std::fs::symlink_metadata(&next) {
            Ok(md)
                if md.file_type().is_symlink()
                    && md.uid() == 0
                    && links < 40
                    && std::fs::metadata(&out).is_ok_and(|d| d.uid() == 0) =>
            {
                std::fs::read_link(&next).ok()
            }
            _ => None,
        };
        match followed {
            Some(target) => {
                links += 1;
                if target.is_absolute() {
                    out = PathBuf::from("/");
                }
                for t in target.components().rev() {
                    match t {
                        Component::Normal(n) => pending.push_front(n.to_os_string()),
                        Component::ParentDir => pending.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            None => out = next,
        }
    }
    out
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
