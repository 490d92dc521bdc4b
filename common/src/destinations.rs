//! The allowed-destinations policy where it touches the file system: the
//! system file of a configuration (read from `destination_policy`, or the
//! embedded default), and destinations checked at their real place, through
//! the symbolic links root owns. The syntax and the matching are
//! `postern_conf::policy`'s.

use postern_conf::policy::{check_resolved, parse, Kind, Policy, Who};
use postern_conf::{embedded, params, Config, Source};
use postern_sys::trust::resolve_root_links;
use std::path::{Path, PathBuf};

/// The verdict on where a destination really is (`real`: its directory
/// resolved through every symbolic link), against the rules with their
/// directories and the home directory resolved through the symbolic links
/// that root owns in directories root owns, and only those: the
/// administrator's layout (`/var/mail -> spool/mail`, a `/home` moved
/// elsewhere) is followed, a link a user made or placed is not, so it
/// cannot carry a rule somewhere else.
pub fn check_real(
    system: &Policy,
    user: Option<&Policy>,
    kind: Kind,
    real: &Path,
    who: &Who<'_>,
) -> Result<String, String> {
    check_resolved(system, user, kind, real, who, &resolve_root_links)
}

/// The system policy of `config` (file, or embedded default).
pub fn system_policy(config: &Config) -> Result<Policy, Vec<String>> {
    let program_dir = PathBuf::from(config.text(params::PROGRAM_DIRECTORY));
    match &config.source {
        Source::Embedded(_) => parse(
            "(embedded)/destinations",
            &embedded::destinations(&program_dir),
            true,
        ),
        Source::Dir(_) => {
            let path = config.text(params::DESTINATION_POLICY);
            let text = std::fs::read_to_string(path)
                .map_err(|e| vec![format!("{path}: cannot read: {e}")])?;
            parse(path, &text, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_conf::policy::check;

    fn system(text: &str) -> Policy {
        parse("/etc/postern/destinations", text, true).unwrap()
    }

    /// As root (the test suite's rule): a spool directory reached through a
    /// root-owned link in a root-owned directory, as /var/mail is on some
    /// systems, is allowed at its real place; a link owned by a user, or
    /// placed in a directory a user owns, is not followed.
    #[test]
    fn real_locations_follow_the_administrators_links_only() {
        use std::os::unix::fs::symlink;
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let top = t.path().canonicalize().unwrap();
        std::fs::create_dir_all(top.join("spool/mail")).unwrap();
        symlink("spool/mail", top.join("mail")).unwrap();
        std::fs::create_dir_all(top.join("elsewhere")).unwrap();
        symlink(top.join("elsewhere"), top.join("users-link")).unwrap();
        std::os::unix::fs::lchown(top.join("users-link"), Some(65534), None).unwrap();
        std::fs::create_dir_all(top.join("home/ann")).unwrap();
        std::os::unix::fs::chown(top.join("home/ann"), Some(65534), None).unwrap();
        symlink(top.join("elsewhere"), top.join("home/ann/Mail")).unwrap();
        let policy = system(&format!(
            "mailbox {0}/mail/$user\nmailbox {0}/users-link/$user\nmailbox ~/Mail/**\n",
            top.display()
        ));
        let home = top.join("home/ann");
        let who = Who {
            user: "ann",
            home: &home,
        };
        assert_eq!(
            resolve_root_links(&top.join("mail/ann")),
            top.join("spool/mail/ann")
        );
        assert_eq!(
            resolve_root_links(&top.join("mail/../mail/x")),
            top.join("spool/mail/x")
        );
        let real = |p: &str| check_real(&policy, None, Kind::Mailbox, &top.join(p), &who);
        assert!(real("spool/mail/ann").is_ok());
        assert!(real("spool/mail/bob").is_err());
        // A user's link: its real place is not where the rule points.
        assert!(real("elsewhere/ann").is_err());
        // A root-owned link inside a user's directory is not followed either.
        assert!(real("elsewhere/x").is_err());
        // Lexically, nothing changes.
        assert!(check(
            &policy,
            None,
            Kind::Mailbox,
            &top.join("spool/mail/ann"),
            &who
        )
        .is_err());
    }
}
