//! SMTP AUTH for the smtp agent (RFC 4954): `smtp_sasl_password_maps` (a
//! text file of `[host]:port user:password` or `host user:password` lines,
//! read once at start-up as root, and only when it is safe: owned by root or
//! the mail owner, a regular file, not writable by group or others and not
//! readable by others) and the PLAIN and LOGIN mechanisms' messages.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// A user name and password for a next hop.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password, not even in a debug dump.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish()
    }
}

/// The password table.
#[derive(Debug, Clone, Default)]
pub struct Passwords(Vec<(String, Credentials)>);

impl Passwords {
    /// Parses the file's text; problems name `file:line`.
    pub fn parse(file: &str, text: &str) -> Result<Passwords, Vec<String>> {
        let mut entries = Vec::new();
        let mut problems = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .split_once(char::is_whitespace)
                .and_then(|(key, value)| {
                    let (user, password) = value.trim().split_once(':')?;
                    (!user.is_empty()).then(|| {
                        (
                            key.to_ascii_lowercase(),
                            Credentials {
                                user: user.to_string(),
                                password: password.to_string(),
                            },
                        )
                    })
                });
            match parsed {
                Some(e) => entries.push(e),
                None => problems.push(format!("{file}:{}: expected 'host user:password'", i + 1)),
            }
        }
        if problems.is_empty() {
            Ok(Passwords(entries))
        } else {
            Err(problems)
        }
    }

    /// Reads and checks the file at `path`; `owner_uid` is the mail
    /// owner's.
    pub fn load(path: &Path, owner_uid: u32) -> Result<Passwords, String> {
        let shown = path.display().to_string();
        let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{shown}: {e}"))?;
        if !meta.file_type().is_file() {
            return Err(format!("{shown}: not a regular file"));
        }
        if meta.uid() != 0 && meta.uid() != owner_uid {
            return Err(format!(
                "{shown}: owned by uid {}; must be owned by root or the mail owner",
                meta.uid()
            ));
        }
        if meta.mode() & 0o026 != 0 {
            return Err(format!(
                "{shown}: mode {:o}; must not be writable by group or others nor readable by others (chmod 600)",
                meta.mode() & 0o7777
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{shown}: {e}"))?;
        Passwords::parse(&shown, &text).map_err(|p| p.join("; "))
    }

    /// The credentials for a next hop as written (`[relay]:587`), else for
    /// its host in brackets with the port, else for the host alone.
    pub fn find(&self, nexthop: &str, host: &str, port: u16) -> Option<&Credentials> {
        let keys = [
            nexthop.to_ascii_lowercase(),
            format!("[{host}]:{port}"),
            host.to_string(),
        ];
        keys.iter()
            .find_map(|k| self.0.iter().find(|(key, _)| key == k))
            .map(|(_, c)| c)
    }
}

/// The initial response of AUTH PLAIN (RFC 4616): no authorization id.
pub fn plain(c: &Credentials) -> String {
    STANDARD.encode(format!("\0{}\0{}", c.user, c.password))
}

/// A LOGIN answer: the user name or the password, base64-encoded.
pub fn login(text: &str) -> String {
    STANDARD.encode(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_and_lookup_order() {
        let p = Passwords::parse(
            "sasl_passwd",
            "# relays\n[Relay.test]:587 ann:s3cr:et\nrelay.test bob:pw\n",
        )
        .unwrap();
        assert_eq!(
            p.find("[relay.test]:587", "relay.test", 587).unwrap().user,
            "ann"
        );
        assert_eq!(
            p.find("[relay.test]:587", "relay.test", 587)
                .unwrap()
                .password,
            "s3cr:et"
        );
        assert_eq!(
            p.find("relay.test:25", "relay.test", 25).unwrap().user,
            "bob"
        );
        assert!(p.find("other.test", "other.test", 25).is_none());
        let e = Passwords::parse("f", "host\nhost :pw\n").unwrap_err();
        assert_eq!(
            e,
            vec![
                "f:1: expected 'host user:password'",
                "f:2: expected 'host user:password'"
            ]
        );
        assert!(!format!("{p:?}").contains("s3cr"));
    }

    #[test]
    fn mechanisms() {
        let c = Credentials {
            user: "ann".into(),
            password: "pw".into(),
        };
        assert_eq!(plain(&c), "AGFubgBwdw==");
        assert_eq!(login("ann"), "YW5u");
    }

    #[test]
    fn unsafe_files_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sasl_passwd");
        std::fs::write(&f, "[r]:25 a:b\n").unwrap();
        let me = nix::unistd::getuid().as_raw();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Passwords::load(&f, me).unwrap_err();
        assert!(e.contains("mode 644"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Passwords::load(&f, me).is_ok());
        assert!(Passwords::load(&f, me.wrapping_add(1)).is_ok() == (me == 0));
    }
}
