//! local's settings, read once from main.cf, and the system destination
//! policy they name.

use std::path::PathBuf;
use std::time::Duration;

use postern_conf::policy::{self, Policy};
use postern_conf::{params, Config, Source};

use crate::mbox;

/// local's settings, from main.cf.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the system policy is (or `None` with the embedded configuration).
    pub policy_file: Option<PathBuf>,
    /// Locking.
    pub lock: mbox::LockPolicy,
    /// `mailbox_size_limit`.
    pub size_limit: u64,
    /// `strict_mailbox_ownership`.
    pub strict_owner: bool,
    /// `program_directory`.
    pub program_dir: PathBuf,
    /// `program_output_is_failure`.
    pub output_is_failure: bool,
    /// `command_time_limit`.
    pub time_limit: Duration,
    /// `default_privs`.
    pub default_privs: String,
    /// `mail_spool_directory`.
    pub spool: PathBuf,
    /// `enable_original_recipient`.
    pub original_recipient: bool,
}

impl Settings {
    /// Reads the settings.
    pub fn from_config(c: &Config) -> Self {
        let methods = c
            .list(params::MAILBOX_DELIVERY_LOCK)
            .iter()
            .filter_map(|m| match m.as_str() {
                "fcntl" => Some(mbox::Lock::Fcntl),
                "flock" => Some(mbox::Lock::Flock),
                "dotlock" => Some(mbox::Lock::Dotlock),
                _ => None,
            })
            .collect();
        Settings {
            spool: PathBuf::from(c.text(params::MAIL_SPOOL_DIRECTORY)),
            policy_file: match &c.source {
                Source::Dir(_) => Some(PathBuf::from(c.text(params::DESTINATION_POLICY))),
                Source::Embedded(_) => None,
            },
            lock: mbox::LockPolicy {
                methods,
                attempts: u32::try_from(c.int(params::DELIVER_LOCK_ATTEMPTS)).unwrap_or(u32::MAX),
                delay: c.time(params::DELIVER_LOCK_DELAY),
                stale: c.time(params::STALE_LOCK_TIME),
            },
            size_limit: u64::try_from(c.int(params::MAILBOX_SIZE_LIMIT)).unwrap_or(0),
            strict_owner: c.bool(params::STRICT_MAILBOX_OWNERSHIP),
            program_dir: PathBuf::from(c.text(params::PROGRAM_DIRECTORY)),
            output_is_failure: c.bool(params::PROGRAM_OUTPUT_IS_FAILURE),
            time_limit: c.time(params::COMMAND_TIME_LIMIT),
            default_privs: c.text(params::DEFAULT_PRIVS).to_string(),
            original_recipient: c.bool(params::ENABLE_ORIGINAL_RECIPIENT),
        }
    }

    /// The system policy (the file, or the embedded default).
    pub fn system_policy(&self) -> Result<Policy, String> {
        match &self.policy_file {
            None => {
                let text = postern_conf::embedded::destinations(&self.program_dir);
                policy::parse("(embedded)/destinations", &text, true).map_err(|e| e.join("; "))
            }
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                policy::parse(&path.display().to_string(), &text, true).map_err(|e| e.join("; "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(main: &str) -> Settings {
        let c = Config::from_text(
            "/etc/postern/main.cf",
            main.as_bytes(),
            "/etc/postern/master.cf",
            b"",
            &postern_conf::ServicesFile::parse(""),
        )
        .into_result()
        .unwrap();
        Settings::from_config(&c)
    }

    #[test]
    fn settings_come_from_main_cf() {
        let s = settings(
            "mailbox_delivery_lock = flock, dotlock\nmailbox_size_limit = 0\n\
             deliver_lock_attempts = 3\ncommand_time_limit = 7s\ndefault_privs = nobody\n",
        );
        assert_eq!(s.lock.methods, [mbox::Lock::Flock, mbox::Lock::Dotlock]);
        assert_eq!(s.lock.attempts, 3);
        assert_eq!(s.size_limit, 0);
        assert_eq!(s.time_limit, Duration::from_secs(7));
        assert_eq!(s.default_privs, "nobody");
        // A configuration directory: the policy is its file, not the
        // embedded one.
        assert_eq!(
            s.policy_file.as_deref(),
            Some(std::path::Path::new("/etc/postern/destinations"))
        );
        let d = settings("");
        assert_eq!(d.lock.methods, [mbox::Lock::Fcntl, mbox::Lock::Dotlock]);
        assert_eq!(d.size_limit, 51_200_000);
    }

    #[test]
    fn an_unreadable_policy_file_says_which() {
        let mut s = settings("");
        s.policy_file = Some(PathBuf::from("/nonexistent/postern/destinations"));
        let e = s.system_policy().unwrap_err();
        assert!(
            e.contains("cannot read /nonexistent/postern/destinations"),
            "{e}"
        );
        s.policy_file = None;
        assert!(s.system_policy().is_ok(), "the embedded policy parses");
    }
}
