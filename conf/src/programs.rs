//! The programs master.cf's command field may name: postern's own
//! ([`PROVIDED`]) and Postfix's daemons ([`POSTFIX_DAEMONS`]).
//!
//! How a line is run is decided by the program it names. A master.cf that
//! names one of Postfix's own daemons that postern does not provide
//! (smtpd, cleanup, trivial-rewrite, ...) is a *Postfix instance*
//! ([`postfix_instance`]): its queue is Postfix's, so the names Postfix and
//! postern share (`local`, `pipe`, `qmgr`, `showq`, `smtp`, `spawn`) mean Postfix's
//! daemons there, postern's are named by their executable (`postern-spawn`,
//! `postern-local`, ...), and Postfix's defaults apply to the parameters the
//! two read differently ([`POSTFIX_DEFAULTS`]). Anywhere else a bare name is
//! postern's program, as it always was. Whether a Postfix daemon is really
//! in `daemon_directory` is for the callers to find out (this crate looks
//! nothing up): `postern check` and the master report a program found in
//! neither place as an error.

/// A program a master.cf service may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The name in master.cf's command field.
    pub name: &'static str,
    /// The executable in `daemon_directory`.
    pub executable: &'static str,
    /// What it does, for `postern check`.
    pub doc: &'static str,
    /// Whether it switches users (needs unpriv `n`).
    pub privileged: bool,
}

/// Every program postern provides.
pub const PROVIDED: &[Program] = &[Program {
    name: "spawn",
    executable: "postern-spawn",
    doc: "runs a command per connection as an unprivileged user, with a time limit",
    privileged: true,
}, Program {
    name: "local",
    executable: "postern-local",
    doc: "delivers to mailboxes, Maildirs and programs as the recipient, after checking the destination policy",
    privileged: true,
}, Program {
    name: "pipe",
    executable: "postern-pipe",
    doc: "delivers mail to a command as an unprivileged user, with a time limit (a command transport)",
    privileged: true,
}, Program {
    name: "submit",
    executable: "postern-submit",
    doc: "takes messages from postern sendmail and stores them durably in the incoming queue",
    privileged: false,
}, Program {
    name: "showq",
    executable: "postern-showq",
    doc: "lists the queue for mailq (sendmail -bp) to the users authorized_mailq_users allows",
    privileged: false,
}, Program {
    name: "qmgr",
    executable: "postern-qmgr",
    doc: "routes queued messages, hands them to local, retries deferred mail and sends bounces",
    privileged: false,
}, Program {
    name: "smtp",
    executable: "postern-smtp",
    doc: "delivers mail to other hosts over SMTP (relayhost, MX, STARTTLS, AUTH)",
    privileged: false,
}];

/// The program called `name` (its master.cf name or its executable's), if
/// postern provides it.
pub fn find(name: &str) -> Option<&'static Program> {
    PROVIDED
        .iter()
        .find(|p| p.name == name || p.executable == name)
}

/// The daemon programs of Postfix 3.7 (`/usr/lib/postfix/sbin` on Debian)
/// that its master runs from master.cf.
pub const POSTFIX_DAEMONS: &[&str] = &[
    "anvil",
    "bounce",
    "cleanup",
    "discard",
    "dnsblog",
    "error",
    "flush",
    "lmtp",
    "local",
    "nqmgr",
    "oqmgr",
    "pickup",
    "pipe",
    "postlogd",
    "postscreen",
    "proxymap",
    "qmgr",
    "qmqpd",
    "scache",
    "showq",
    "smtp",
    "smtpd",
    "spawn",
    "tlsmgr",
    "tlsproxy",
    "trivial-rewrite",
    "verify",
    "virtual",
];

/// Whether master.cf's `commands` make a Postfix instance: one of them is a
/// daemon only Postfix has.
pub fn postfix_instance<'a>(mut commands: impl Iterator<Item = &'a str>) -> bool {
    commands.any(|c| POSTFIX_DAEMONS.contains(&c) && find(c).is_none())
}

/// Who runs a master.cf line, by the name in its command field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runner {
    /// One of postern's programs.
    Postern(&'static Program),
    /// A Postfix daemon of that name in Postfix's `daemon_directory`.
    Postfix,
}

/// Who runs `command` in a configuration that is (`postfix`) or is not a
/// Postfix instance: `postern-NAME` is always postern's; a bare name is
/// postern's outside a Postfix instance and Postfix's inside one.
pub fn runner(command: &str, postfix: bool) -> Runner {
    match find(command) {
        Some(p) if !postfix || command == p.executable => Runner::Postern(p),
        _ => Runner::Postfix,
    }
}

/// Postfix's own defaults of the parameters that postern and Postfix read
/// with different defaults; they apply in a Postfix instance, where
/// Postfix's daemons read the same main.cf (Postfix 3.7, `postconf -d`).
pub const POSTFIX_DEFAULTS: &[(&str, &str)] = &[
    ("mail_owner", "postfix"),
    ("queue_directory", "/var/spool/postfix"),
    ("data_directory", "/var/lib/postfix"),
    ("daemon_directory", "/usr/lib/postfix/sbin"),
    ("syslog_name", "postfix"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_decided_by_the_instance() {
        let stock = ["smtpd", "cleanup", "qmgr", "local", "spawn"];
        assert!(postfix_instance(stock.into_iter()));
        assert!(!postfix_instance(["submit", "qmgr", "local"].into_iter()));
        // A typo is not a Postfix daemon.
        assert!(!postfix_instance(["submitt", "qmgr"].into_iter()));
        assert!(matches!(runner("local", false), Runner::Postern(p) if p.name == "local"));
        assert_eq!(runner("local", true), Runner::Postfix);
        assert!(matches!(runner("postern-spawn", true), Runner::Postern(p) if p.name == "spawn"));
        assert!(matches!(runner("postern-spawn", false), Runner::Postern(p) if p.name == "spawn"));
        assert_eq!(runner("smtpd", true), Runner::Postfix);
        assert_eq!(runner("smtpd", false), Runner::Postfix);
    }
}
