//! The environment a program delivery gets, as Postfix's local(8) documents
//! it, every value through the expansion filter.

use postern_common::account::Account;
use postern_common::handoff::Instruction;

/// The search path a program gets, as Postfix's local(8) resets it.
pub const PROGRAM_PATH: &str = "/usr/bin:/bin";

/// The characters a delivery variable keeps; every other becomes `_`
/// (Postfix's default `command_expansion_filter`): a program that hands a
/// variable to a shell cannot be made to run anything by an address.
const EXPANSION_FILTER: &str =
    "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn filtered(value: &str) -> String {
    value
        .chars()
        .map(|c| if EXPANSION_FILTER.contains(c) { c } else { '_' })
        .collect()
}

/// The program environment, as Postfix's local(8) documents it: `SHELL`,
/// `HOME`, `USER` and `LOGNAME` (the account), `LOCAL` (the recipient's
/// whole local part, extension included), `EXTENSION`, `DOMAIN`,
/// `RECIPIENT`, `ORIGINAL_RECIPIENT` (when known and
/// `enable_original_recipient`), `SENDER`, a fixed `PATH`, and `TZ` and
/// `AGENT`; nothing else. Values pass through the expansion filter.
pub(crate) fn program_env(
    instr: &Instruction,
    sender: &str,
    account: &Account,
    original: Option<&str>,
) -> Vec<(String, String)> {
    let (local_part, domain) = instr
        .recipient
        .rsplit_once('@')
        .unwrap_or((instr.recipient.as_str(), ""));
    let mut env: Vec<(String, String)> = [
        ("SHELL", account.shell.display().to_string()),
        ("HOME", account.home.display().to_string()),
        ("USER", account.name.clone()),
        ("LOGNAME", account.name.clone()),
        ("LOCAL", local_part.to_string()),
        ("EXTENSION", instr.extension.clone().unwrap_or_default()),
        ("DOMAIN", domain.to_string()),
        ("RECIPIENT", instr.recipient.clone()),
        ("SENDER", sender.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), filtered(&v)))
    .collect();
    if let Some(original) = original {
        env.push(("ORIGINAL_RECIPIENT".to_string(), filtered(original)));
    }
    env.push(("PATH".to_string(), PROGRAM_PATH.to_string()));
    env.push(("AGENT".to_string(), "postern-local".to_string()));
    if let Ok(tz) = std::env::var("TZ") {
        env.push(("TZ".to_string(), tz));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_common::handoff::Destination;
    use std::path::PathBuf;

    #[test]
    fn the_filter_keeps_only_safe_characters() {
        assert_eq!(filtered("ann+x@example.org"), "ann+x@example.org");
        assert_eq!(filtered("a;b`c$(d) e\n"), "a_b_c__d__e_");
        assert_eq!(filtered("caf\u{e9}"), "caf_");
    }

    #[test]
    fn the_environment_is_postfixs_and_nothing_else() {
        let account = Account {
            name: "ann".into(),
            uid: 1000,
            gid: 1000,
            home: PathBuf::from("/home/ann"),
            shell: PathBuf::from("/bin/sh"),
        };
        let instr = Instruction {
            recipient: "ann+lists@example.org".into(),
            original_recipient: Some("all;rm@example.org".into()),
            user: "ann".into(),
            extension: Some("lists".into()),
            destination: Destination::Programs(vec!["/bin/true".into()]),
            uncertain: false,
        };
        let env = program_env(
            &instr,
            "bob$(id)@example.org",
            &account,
            Some("all;rm@example.org"),
        );
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("LOCAL"), Some("ann+lists"));
        assert_eq!(get("DOMAIN"), Some("example.org"));
        assert_eq!(get("EXTENSION"), Some("lists"));
        assert_eq!(get("RECIPIENT"), Some("ann+lists@example.org"));
        assert_eq!(get("SENDER"), Some("bob__id_@example.org"));
        assert_eq!(get("ORIGINAL_RECIPIENT"), Some("all_rm@example.org"));
        assert_eq!(get("HOME"), Some("/home/ann"));
        assert_eq!(get("PATH"), Some(PROGRAM_PATH));
        assert_eq!(get("AGENT"), Some("postern-local"));
        let names: Vec<&str> = env
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| *n != "TZ")
            .collect();
        assert_eq!(
            names,
            [
                "SHELL",
                "HOME",
                "USER",
                "LOGNAME",
                "LOCAL",
                "EXTENSION",
                "DOMAIN",
                "RECIPIENT",
                "SENDER",
                "ORIGINAL_RECIPIENT",
                "PATH",
                "AGENT"
            ]
        );
        let without = program_env(&instr, "", &account, None);
        assert!(without.iter().all(|(n, _)| n != "ORIGINAL_RECIPIENT"));
    }
}
