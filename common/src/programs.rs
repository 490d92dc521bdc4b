//! The programs postern provides for master.cf's command field.
//!
//! A master.cf entry whose command is not in [`PROVIDED`] is accepted (a
//! Postfix master.cf parses cleanly) but `postern check` lists it, and the
//! master does not start it. Each daemon adds itself here when it arrives.

/// A program a master.cf service may run.
#[derive(Debug, Clone, Copy)]
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

/// The program called `name`, if postern provides it.
pub fn find(name: &str) -> Option<&'static Program> {
    PROVIDED.iter().find(|p| p.name == name)
}
