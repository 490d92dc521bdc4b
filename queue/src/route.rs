//! Routing: what the queue manager does with a recipient address. It runs
//! as the mail owner and reads only what that account may read; the
//! privileged agent verifies what it is told (the local-delivery essay's
//! split).
//!
//! For each address, in order:
//!
//! 1. `transport_maps` (files of `pattern transport` lines; patterns: the
//!    full address, `@domain` or `domain`, `.domain` for subdomains, `*`):
//!    `local`, `error:[d.d.d ]text` (bounce), anything else names a
//!    transport that postern does not run here (deferred with the reason).
//!    An address without a domain is first qualified with `myorigin`
//!    when that is not a local domain (a null client: `myorigin =
//!    $mydomain`, `mydestination =`), so that it goes where
//!    user@$myorigin goes; with the default (`$myhostname`) it is local.
//! 2. A domain not in `mydestination` goes to `default_transport` (by
//!    default an `error:`, so remote mail bounces 5.4.4; with
//!    `default_transport = smtp`, `relayhost` is the next hop when set,
//!    else the recipient's domain).
//! 3. Local: the local part, lower-cased, split at the first
//!    `recipient_delimiter` character into user and extension.
//! 4. `alias_maps` (aliases(5) text files): the full local part, then the
//!    user. Targets are addresses (resolved again, at most
//!    [`MAX_DEPTH`] deep; an alias that names itself means the user's
//!    mailbox), files and programs (delivered as the owner of the aliases
//!    file; root's become `default_privs` in local), and `:include:` files
//!    (as their owner).
//! 5. The passwd entry (else bounce 5.1.1).
//! 6. `~/.forward+ext`, then `~/.forward`: used only when it is a regular
//!    file owned by the user or root and not writable by group or others
//!    (else ignored, with the reason logged); a `.forward` that exists but
//!    cannot be read defers the recipient. A home directory the mail owner
//!    cannot search hides the file: ignored, with a warning.
//! 7. The mailbox: `home_mailbox` in the home directory (`Maildir/` with a
//!    trailing slash), else `mail_spool_directory/user`.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use postern_common::account::{self, Account};
use postern_common::handoff::{Destination, Instruction};
use postern_conf::aliases::{self, Target};
use postern_conf::forward;
use postern_conf::transport::{self, Transport, TransportTable};
use postern_conf::{params, Config};

/// Alias and `.forward` expansion stops this deep.
pub const MAX_DEPTH: usize = 10;

/// Where one delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Hand to the local service.
    Local(Instruction),
    /// Hand to another master.cf service (a pipe transport) at
    /// `queue_directory/private/<service>`.
    Transport {
        /// The master.cf service name.
        service: String,
        /// The instruction (destination: `Destination::Transport`).
        instr: Instruction,
    },
    /// Bounce now.
    Bounce {
        /// Enhanced status code.
        dsn: String,
        /// Why.
        reason: String,
    },
    /// Try again later.
    Defer {
        /// Enhanced status code.
        dsn: String,
        /// Why.
        reason: String,
    },
}

impl Route {
    /// The final address a delivery is made to (`None` for a bounce or a
    /// deferral, which deliver nothing).
    pub fn recipient(&self) -> Option<&str> {
        match self {
            Route::Local(instr) | Route::Transport { instr, .. } => Some(&instr.recipient),
            Route::Bounce { .. } | Route::Defer { .. } => None,
        }
    }
}

/// One delivery of a recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Names the delivery in the queue file: stable across attempts.
    pub key: String,
    /// What to do.
    pub route: Route,
}

impl Delivery {
    fn local(instr: Instruction) -> Delivery {
        Delivery {
            key: format!("{}|{}", instr.user, instr.destination),
            route: Route::Local(instr),
        }
    }
    fn bounce(address: &str, dsn: &str, reason: String) -> Delivery {
        Delivery {
            key: format!("{address}|bounce"),
            route: Route::Bounce {
                dsn: dsn.into(),
                reason,
            },
        }
    }
    fn defer(address: &str, dsn: &str, reason: String) -> Delivery {
        Delivery {
            key: format!("{address}|defer"),
            route: Route::Defer {
                dsn: dsn.into(),
                reason,
            },
        }
    }
}

/// An alias with the owner of the file it came from.
#[derive(Debug, Clone)]
struct AliasEntry {
    targets: Vec<Target>,
    owner: String,
    origin: String,
}

/// The routing tables, loaded from the configuration.
#[derive(Debug, Clone)]
pub struct Router {
    /// `myorigin`, lower-cased: the domain of addresses without one.
    myorigin: String,
    mydestination: Vec<String>,
    delimiter: String,
    aliases: HashMap<String, AliasEntry>,
    transports: TransportTable,
    default_transport: String,
    relayhost: String,
    home_mailbox: String,
    spool: PathBuf,
    /// Problems found while loading (each file:line), to log.
    pub problems: Vec<String>,
    /// The files read, with their modification times (to notice changes).
    pub sources: Vec<(PathBuf, Option<std::time::SystemTime>)>,
}

fn owner_name(uid: u32) -> String {
    match account::user_by_uid(uid) {
        Ok(Some(a)) => a.name,
        _ => "root".to_string(),
    }
}

fn map_path(entry: &str) -> &str {
    // "hash:/etc/aliases" and friends name the text file.
    entry
        .split_once(':')
        .filter(|(t, _)| !t.starts_with('/'))
        .map_or(entry, |(_, p)| p)
}

fn mtime(p: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

impl Router {
    /// Loads the routing tables. Unreadable or broken tables are problems
    /// (logged by the caller); a missing aliases file is not.
    pub fn load(config: &Config) -> Router {
        let myorigin = config.text(params::MYORIGIN).trim().to_ascii_lowercase();
        let mut r = Router {
            mydestination: config
                .list(params::MYDESTINATION)
                .into_iter()
                .map(|d| d.to_ascii_lowercase())
                .collect(),
            myorigin,
            delimiter: config.text(params::RECIPIENT_DELIMITER).to_string(),
            aliases: HashMap::new(),
            transports: TransportTable::default(),
            default_transport: config.text(params::DEFAULT_TRANSPORT).to_string(),
            relayhost: config.text(params::RELAYHOST).trim().to_string(),
            home_mailbox: config.text(params::HOME_MAILBOX).to_string(),
            spool: PathBuf::from(config.text(params::MAIL_SPOOL_DIRECTORY)),
            problems: Vec::new(),
            sources: Vec::new(),
        };
        for entry in config.list(params::ALIAS_MAPS) {
            let path = PathBuf::from(map_path(&entry));
            r.sources.push((path.clone(), mtime(&path)));
            let shown = path.display().to_string();
            let (text, owner) = match std::fs::read_to_string(&path) {
                Ok(t) => (t, std::fs::metadata(&path).map_or(0, |m| m.uid())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    r.problems.push(format!("{shown}: cannot read: {e}"));
                    continue;
                }
            };
            let owner = owner_name(owner);
            let parsed = match aliases::parse_aliases(&shown, &text) {
                Ok(a) => a,
                Err(errors) => {
                    r.problems.extend(errors);
                    // Keep the entries that did parse.
                    let good: String = text
                        .lines()
                        .filter(|l| aliases::parse_aliases(&shown, l).is_ok())
                        .map(|l| format!("{l}\n"))
                        .collect();
                    aliases::parse_aliases(&shown, &good).unwrap_or_default()
                }
            };
            for a in parsed {
                // The first file that defines a name wins, as in Postfix.
                r.aliases.entry(a.name.clone()).or_insert(AliasEntry {
                    targets: a.targets,
                    owner: owner.clone(),
                    origin: format!("{shown}:{}", a.line),
                });
            }
        }
        for entry in config.list(params::TRANSPORT_MAPS) {
            let path = PathBuf::from(map_path(&entry));
            r.sources.push((path.clone(), mtime(&path)));
            let shown = path.display().to_string();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    r.problems.push(format!("{shown}: cannot read: {e}"));
                    continue;
                }
            };
            let problems = r.transports.parse_into(&shown, &text);
            r.problems.extend(problems);
        }
        r
    }

    /// Whether a file the tables came from changed since they were loaded.
    pub fn stale(&self) -> bool {
        self.sources.iter().any(|(p, t)| mtime(p) != *t)
    }

    /// Whether `domain` is delivered here: it is in `mydestination` (as in
    /// Postfix: a null client's empty `mydestination` sends everything
    /// on, mail for this host's own name included).
    fn is_local_domain(&self, domain: &str) -> bool {
        self.mydestination.contains(&domain.to_ascii_lowercase())
    }

    /// Every delivery `address` leads to.
    pub fn resolve(&self, address: &str) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut seen = Vec::new();
        self.resolve_into(address, 0, &mut seen, &mut out);
        out
    }

    fn resolve_into(
        &self,
        address: &str,
        depth: usize,
        seen: &mut Vec<String>,
        out: &mut Vec<Delivery>,
    ) {
        if depth > MAX_DEPTH {
            out.push(Delivery::bounce(
                address,
                "5.4.6",
                format!("alias or .forward expansion deeper than {MAX_DEPTH}: a loop?"),
            ));
            return;
        }
        let (local, domain) = match address.rsplit_once('@') {
            Some((l, d)) => (l, Some(d)),
            // Without a domain: user@$myorigin, when that is not local
            // (with the default, $myhostname, it is: delivered here).
            None if !self.myorigin.is_empty() && !self.is_local_domain(&self.myorigin) => {
                let qualified = format!("{address}@{}", self.myorigin);
                return self.resolve_into(&qualified, depth, seen, out);
            }
            None => (address, None),
        };
        let transport = self
            .transports
            .lookup(address, domain)
            .map(Transport::parse);
        let transport = match (transport, domain) {
            (Some(t), _) => t,
            (None, Some(d)) if !self.is_local_domain(d) => {
                match Transport::parse(&self.default_transport) {
                    Transport::Error(None, text) => {
                        Transport::Error(Some("5.4.4".into()), format!("{text} (domain {d})"))
                    }
                    // Remote mail without a next hop of its own goes to
                    // relayhost when there is one, as in Postfix.
                    Transport::Other(name, next)
                        if next.is_empty() && !self.relayhost.is_empty() =>
                    {
                        Transport::Other(name, self.relayhost.clone())
                    }
                    t => t,
                }
            }
            (None, _) => Transport::Local,
        };
        match transport {
            Transport::Local => {}
            Transport::Error(dsn, text) => {
                let dsn = dsn.unwrap_or_else(|| "5.0.0".into());
                let text = if text.is_empty() {
                    "refused by transport_maps".to_string()
                } else {
                    text
                };
                out.push(Delivery::bounce(address, &dsn, text));
                return;
            }
            Transport::Other(name, nexthop) => {
                // No next hop: the recipient's domain (a remote transport
                // then looks up its MX hosts).
                let nexthop = match (nexthop.is_empty(), domain) {
                    (true, Some(d)) if name == "smtp" => d.to_ascii_lowercase(),
                    _ => nexthop,
                };
                if !transport::is_service_name(&name) {
                    out.push(Delivery::defer(
                        address,
                        "4.3.5",
                        format!("transport_maps names a bad transport {name:?}"),
                    ));
                    return;
                }
                let local = local.to_ascii_lowercase();
                let (_, extension) = self.split_extension(&local);
                out.push(Delivery {
                    key: format!("{name}:{address}"),
                    route: Route::Transport {
                        service: name,
                        instr: Instruction {
                            recipient: address.to_string(),
                            original_recipient: None,
                            user: local,
                            extension,
                            destination: Destination::Transport { nexthop },
                            uncertain: false,
                        },
                    },
                });
                return;
            }
        }
        let local = local.to_ascii_lowercase();
        let (user, extension) = self.split_extension(&local);
        let full = self.full_address(address, &local);
        // Aliases: the full local part, then the user.
        for name in [local.as_str(), user.as_str()] {
            if seen.iter().any(|s| s == name) {
                continue;
            }
            if let Some(alias) = self.aliases.get(name) {
                seen.push(name.to_string());
                let owner = alias.owner.clone();
                for t in &alias.targets {
                    match t {
                        Target::Address(a) if a.eq_ignore_ascii_case(name) => {
                            // "ann: ann, ..." keeps a copy in ann's own mailbox.
                            self.user_mailbox(a, &full, extension.clone(), false, depth, seen, out);
                        }
                        _ => self.target(
                            t,
                            &owner,
                            &full,
                            extension.clone(),
                            depth,
                            seen,
                            out,
                            &alias.origin,
                        ),
                    }
                }
                seen.pop();
                return;
            }
        }
        self.user_mailbox(&user, &full, extension, true, depth, seen, out);
    }

    fn split_extension(&self, local: &str) -> (String, Option<String>) {
        if self.delimiter.is_empty() {
            return (local.to_string(), None);
        }
        match local
            .char_indices()
            .find(|(i, c)| *i > 0 && self.delimiter.contains(*c))
        {
            Some((i, c)) => (
                local[..i].to_string(),
                Some(local[i + c.len_utf8()..].to_string()),
            ),
            None => (local.to_string(), None),
        }
    }

    fn full_address(&self, address: &str, local: &str) -> String {
        if address.contains('@') {
            address.to_string()
        } else {
            crate::submit::qualified(local, &self.myorigin)
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn target(
        &self,
        t: &Target,
        as_user: &str,
        recipient: &str,
        extension: Option<String>,
        depth: usize,
        seen: &mut Vec<String>,
        out: &mut Vec<Delivery>,
        origin: &str,
    ) {
        let instr = |destination: Destination| Instruction {
            recipient: recipient.to_string(),
            original_recipient: None,
            user: as_user.to_string(),
            extension: extension.clone(),
            destination,
            uncertain: false,
        };
        match t {
            Target::Address(a) => self.resolve_into(a, depth + 1, seen, out),
            Target::File(p) if p.ends_with('/') => out.push(Delivery::local(instr(
                Destination::Maildir(PathBuf::from(p)),
            ))),
            Target::File(p) => out.push(Delivery::local(instr(Destination::Mailbox(
                PathBuf::from(p),
            )))),
            Target::Program(cmd) => out.push(Delivery::local(instr(Destination::Programs(vec![
                cmd.clone(),
            ])))),
            Target::Include(path) => {
                let read = std::fs::read_to_string(path).and_then(|text| {
                    let owner = std::fs::metadata(path)?.uid();
                    Ok((text, owner))
                });
                match read {
                    Ok((text, owner)) => match forward::parse_forward(path, &text) {
                        Ok(targets) => {
                            let owner = owner_name(owner);
                            for (_, t) in targets {
                                self.target(
                                    &t,
                                    &owner,
                                    recipient,
                                    extension.clone(),
                                    depth + 1,
                                    seen,
                                    out,
                                    path,
                                );
                            }
                        }
                        Err(errors) => out.push(Delivery::defer(
                            recipient,
                            "4.3.0",
                            format!("{origin}: bad :include: file: {}", errors.join("; ")),
                        )),
                    },
                    Err(e) => out.push(Delivery::defer(
                        recipient,
                        "4.3.0",
                        format!("{origin}: cannot read :include: file {path}: {e}"),
                    )),
                }
            }
        }
    }

    /// The user's own delivery: `.forward` (when `forward`), else the mailbox.
    #[allow(clippy::too_many_arguments)]
    fn user_mailbox(
        &self,
        user: &str,
        recipient: &str,
        extension: Option<String>,
        forward: bool,
        depth: usize,
        seen: &mut Vec<String>,
        out: &mut Vec<Delivery>,
    ) {
        let account = match account::user_by_name(user) {
            Ok(Some(a)) => a,
            Ok(None) => {
                out.push(Delivery::bounce(
                    recipient,
                    "5.1.1",
                    format!("unknown user: \"{user}\""),
                ));
                return;
            }
            Err(e) => {
                out.push(Delivery::defer(recipient, "4.3.0", e.to_string()));
                return;
            }
        };
        if forward && !seen.iter().any(|s| s == &format!(".forward:{user}")) {
            match self.forward_file(&account, extension.as_deref()) {
                Forward::None => {}
                Forward::Defer(why) => {
                    out.push(Delivery::defer(recipient, "4.3.0", why));
                    return;
                }
                Forward::Targets(origin, targets) => {
                    seen.push(format!(".forward:{user}"));
                    seen.push(user.to_string());
                    for t in targets {
                        match &t {
                            Target::Address(a) if a.eq_ignore_ascii_case(user) => self
                                .user_mailbox(
                                    user,
                                    recipient,
                                    extension.clone(),
                                    false,
                                    depth,
                                    seen,
                                    out,
                                ),
                            _ => self.target(
                                &t,
                                user,
                                recipient,
                                extension.clone(),
                                depth + 1,
                                seen,
                                out,
                                &origin,
                            ),
                        }
                    }
                    seen.pop();
                    seen.pop();
                    return;
                }
            }
        }
        let destination = if self.home_mailbox.is_empty() {
            Destination::Mailbox(self.spool.join(&account.name))
        } else if self.home_mailbox.ends_with('/') {
            Destination::Maildir(PathBuf::from(format!(
                "{}/{}",
                account.home.display(),
                self.home_mailbox
            )))
        } else {
            Destination::Mailbox(account.home.join(&self.home_mailbox))
        };
        out.push(Delivery::local(Instruction {
            recipient: recipient.to_string(),
            original_recipient: None,
            user: account.name.clone(),
            extension,
            destination,
            uncertain: false,
        }));
    }

    fn forward_file(&self, account: &Account, extension: Option<&str>) -> Forward {
        let mut names = Vec::new();
        if let (Some(ext), Some(delim)) = (extension, self.delimiter.chars().next()) {
            names.push(format!(".forward{delim}{ext}"));
        }
        names.push(".forward".to_string());
        for name in names {
            let path = account.home.join(&name);
            let shown = path.display().to_string();
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(&path);
            let file = match file {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                    log::warn!("{shown} is a symbolic link: not used");
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    // Is it the file, or the home directory we cannot search?
                    if std::fs::read_dir(&account.home).is_err()
                        && std::fs::symlink_metadata(&path).is_err()
                    {
                        log::warn!(
                            "cannot search {} as the mail owner: {name} not looked at (make the home directory searchable to use it)",
                            account.home.display()
                        );
                        return Forward::None;
                    }
                    return Forward::Defer(format!("cannot read {shown}: {e}"));
                }
                Err(e) => return Forward::Defer(format!("cannot open {shown}: {e}")),
            };
            let md = match file.metadata() {
                Ok(m) => m,
                Err(e) => return Forward::Defer(format!("cannot examine {shown}: {e}")),
            };
            let problem = if !md.is_file() {
                Some("not a regular file".to_string())
            } else if md.uid() != account.uid && md.uid() != 0 {
                Some(format!(
                    "owned by uid {}, not by {} or root",
                    md.uid(),
                    account.name
                ))
            } else if md.mode() & 0o022 != 0 {
                Some(format!(
                    "writable by group or others (mode {:o})",
                    md.mode() & 0o7777
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                log::warn!("{shown}: {p}: not used");
                continue;
            }
            let mut text = String::new();
            if let Err(e) = std::io::Read::read_to_string(&mut &file, &mut text) {
                return Forward::Defer(format!("cannot read {shown}: {e}"));
            }
            return match forward::parse_forward(&shown, &text) {
                Ok(t) if t.is_empty() => Forward::None,
                Ok(t) => Forward::Targets(shown, t.into_iter().map(|(_, t)| t).collect()),
                Err(errors) => Forward::Defer(format!("bad {name}: {}", errors.join("; "))),
            };
        }
        Forward::None
    }
}

enum Forward {
    None,
    Defer(String),
    Targets(String, Vec<Target>),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(main: &str) -> Router {
        let c = Config::from_text(
            "main.cf",
            main.as_bytes(),
            "master.cf",
            b"",
            &postern_conf::ServicesFile::parse(""),
        )
        .into_result()
        .unwrap();
        Router::load(&c)
    }

    #[test]
    fn transports_and_domains() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("transport");
        std::fs::write(
            &map,
            "gone@localhost error:5.1.1 this user has left\n.example.org error:no thanks\nlocal.test local\nbad-line\n",
        )
        .unwrap();
        let r = router(&format!(
            "alias_maps =\ntransport_maps = {}\nmyhostname = host.test\n",
            map.display()
        ));
        assert_eq!(r.problems.len(), 1, "{:?}", r.problems);
        let d = r.resolve("gone@localhost");
        assert_eq!(
            d[0].route,
            Route::Bounce {
                dsn: "5.1.1".into(),
                reason: "this user has left".into()
            }
        );
        let d = r.resolve("x@a.example.org");
        assert!(matches!(&d[0].route, Route::Bounce { dsn, .. } if dsn == "5.0.0"));
        let d = r.resolve("x@remote.test");
        assert!(
            matches!(&d[0].route, Route::Bounce { dsn, reason } if dsn == "5.4.4" && reason.contains("remote.test"))
        );
        let d = r.resolve("nosuchuser-xyz@host.test");
        assert!(matches!(&d[0].route, Route::Bounce { dsn, .. } if dsn == "5.1.1"));
        let d = r.resolve("root");
        assert!(
            matches!(&d[0].route, Route::Local(i) if i.user == "root" && i.recipient == "root@host.test")
        );
    }

    #[test]
    fn remote_mail_goes_to_relayhost_or_the_domain() {
        let dir = tempfile::tempdir().unwrap();
        let map = dir.path().join("transport");
        std::fs::write(
            &map,
            "other.test smtp:[mx.other.test]:2525
bare.test smtp
",
        )
        .unwrap();
        let nexthop = |r: &Router, a: &str| match &r.resolve(a)[0].route {
            Route::Transport { service, instr } => match &instr.destination {
                Destination::Transport { nexthop } => format!("{service}:{nexthop}"),
                d => panic!("{d:?}"),
            },
            r => panic!("{r:?}"),
        };
        let main = format!(
            "alias_maps =\ntransport_maps = {}\ndefault_transport = smtp\n",
            map.display()
        );
        let r = router(&format!("{main}relayhost = [relay.test]:587\n"));
        assert_eq!(nexthop(&r, "a@Remote.test"), "smtp:[relay.test]:587");
        assert_eq!(nexthop(&r, "a@other.test"), "smtp:[mx.other.test]:2525");
        assert_eq!(nexthop(&r, "a@bare.test"), "smtp:bare.test");
        let r = router(&main);
        assert_eq!(nexthop(&r, "a@Remote.test"), "smtp:remote.test");
        assert!(matches!(&r.resolve("root")[0].route, Route::Local(_)));
    }

    /// A null client (Postfix's recipe: `myorigin = $mydomain`, an empty
    /// `mydestination`, a relayhost): every address goes to the relay,
    /// those without a domain as user@$myorigin, this host's own name
    /// included; with the defaults a bare name is delivered here.
    #[test]
    fn a_null_client_sends_everything_to_its_relay_qualified_with_myorigin() {
        let r = router(
            "alias_maps =\nmyhostname = host.example.org\nmyorigin = $mydomain\nmydestination =\n\
             default_transport = smtp\nrelayhost = [relay.example.org]\n",
        );
        let to = |a: &str| match &r.resolve(a)[0].route {
            Route::Transport { service, instr } => match &instr.destination {
                Destination::Transport { nexthop } => {
                    format!("{service}:{nexthop} {}", instr.recipient)
                }
                d => panic!("{d:?}"),
            },
            other => panic!("{a}: {other:?}"),
        };
        assert_eq!(to("root"), "smtp:[relay.example.org] root@example.org");
        assert_eq!(
            to("ann@host.example.org"),
            "smtp:[relay.example.org] ann@host.example.org"
        );
        assert_eq!(
            to("bob@elsewhere.test"),
            "smtp:[relay.example.org] bob@elsewhere.test"
        );
        // The defaults: myorigin is $myhostname, which mydestination holds.
        let r = router("alias_maps =\nmyhostname = host.example.org\n");
        let d = r.resolve("root");
        assert!(
            matches!(&d[0].route, Route::Local(i) if i.recipient == "root@host.example.org"),
            "{d:?}"
        );
        // myorigin set to a domain delivered here: local, under that name.
        let r = router(
            "alias_maps =\nmyhostname = host.example.org\nmyorigin = example.org\n\
             mydestination = $myhostname, example.org\n",
        );
        let d = r.resolve("root");
        assert!(
            matches!(&d[0].route, Route::Local(i) if i.recipient == "root@example.org"),
            "{d:?}"
        );
    }

    #[test]
    fn aliases_extensions_and_loops() {
        let dir = tempfile::tempdir().unwrap();
        let aliases = dir.path().join("aliases");
        std::fs::write(
            &aliases,
            "staff: root, /tmp/staff.mbox, \"|/bin/true x\"\nloop1: loop2\nloop2: loop1\nself: self, root\nroot: root\n",
        )
        .unwrap();
        let r = router(&format!(
            "alias_maps = hash:{}\nrecipient_delimiter = +\nhome_mailbox = Maildir/\n",
            aliases.display()
        ));
        let d = r.resolve("Staff+x@localhost");
        assert_eq!(d.len(), 3, "{d:?}");
        let Route::Local(i) = &d[1].route else {
            panic!()
        };
        assert_eq!(
            i.destination,
            Destination::Mailbox("/tmp/staff.mbox".into())
        );
        assert_eq!(i.extension.as_deref(), Some("x"));
        assert!(
            matches!(&d[2].route, Route::Local(i) if matches!(&i.destination, Destination::Programs(p) if p[0] == "/bin/true x"))
        );
        assert!(
            matches!(&d[0].route, Route::Local(i) if matches!(&i.destination, Destination::Maildir(p) if p.ends_with("Maildir")))
        );
        // A loop ends: each alias is expanded once per path.
        let d = r.resolve("loop1");
        assert!(
            d.iter().all(|d| matches!(&d.route, Route::Bounce { .. })),
            "{d:?}"
        );
        assert!(d.len() <= 2);
        assert_eq!(r.resolve("self").len(), 2);
    }
}
