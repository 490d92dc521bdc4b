//! `postern check`: what a configuration means for the system it runs on.
//!
//! Syntax and types are checked by `postern_conf` while loading. This module
//! adds the checks that need the system: the accounts named by `mail_owner`
//! and `default_privs`, the directories, the permissions of the configuration
//! files, the listening endpoints (no two services on one), and which master.cf
//! programs postern provides. Each problem is a [`Diagnostic`] naming the file
//! and line where the administrator can fix it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::account::{self, Account};
use crate::command::{CommandSpec, SystemAccounts};
use postern_conf::params::{self, MAIL_OWNER};
use postern_conf::{Config, Diagnostic, Endpoint, ServiceType, Source};
use postern_sys::privilege::MailOwner;

use crate::programs;

/// Runs every system check on a loaded configuration.
pub fn check(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let owner = check_accounts(config, &mut out);
    check_directories(config, &mut out);
    out.extend(trust(config));
    check_inet_interfaces(config, &mut out);
    check_postfix_instance(config, &mut out);
    check_services(config, owner.as_ref(), &mut out);
    check_mail_flow(config, &mut out);
    check_local(config, &mut out);
    out
}

/// The destination policy and the trusted program directory, when master.cf
/// has a local service.
fn check_local(config: &Config, out: &mut Vec<Diagnostic>) {
    use crate::trusted::{self, Mode};
    if !config
        .master
        .services
        .iter()
        .any(|s| matches!(config.runner(s), programs::Runner::Postern(p) if p.name == "local"))
    {
        return;
    }
    if let Source::Dir(_) = &config.source {
        let path = config.text(params::DESTINATION_POLICY);
        if !Path::new(path).exists() {
            out.push(warning(
                config,
                params::DESTINATION_POLICY,
                format!(
                    "destination policy {path} does not exist: local defers every delivery until it does (postern init writes a default one)"
                ),
            ));
            return;
        }
    }
    if let Err(errors) = crate::destinations::system_policy(config) {
        for e in errors {
            // "file:line: message" from the policy parser.
            let (place, msg) = e.split_once(": ").unwrap_or(("", e.as_str()));
            let (file, line) = match place.rsplit_once(':') {
                Some((f, l)) if l.parse::<usize>().is_ok() => (f.to_string(), l.parse().ok()),
                _ => (place.to_string(), None),
            };
            out.push(Diagnostic::error(&file, line, msg.to_string()));
        }
    }
    let dir = config.text(params::PROGRAM_DIRECTORY);
    let note = match trusted::mode(Path::new(dir)) {
        Mode::Disabled(why) => Some(format!("program delivery is disabled: {why}")),
        Mode::Suspended(why) => Some(format!("program delivery is suspended: {why}")),
        Mode::Insecure => Some(format!(
            "program delivery is in non-secure mode (INSECURE-PROGRAM-DELIVERIES in {dir}): any absolute path runs"
        )),
        Mode::Secure(_) => None,
    };
    if let Some(note) = note {
        out.push(warning(config, params::PROGRAM_DIRECTORY, note));
    }
    // What deliveries will do with each program of the trusted directory
    // (the same rule local applies: trusted::program_entry).
    if let Mode::Secure(dir) = trusted::mode(Path::new(dir)) {
        let (file, line) = place(config, params::PROGRAM_DIRECTORY);
        for (name, verdict) in trusted::program_entries(&dir) {
            out.push(match verdict {
                Ok(exe) if exe == dir.join(&name) => Diagnostic::note(
                    &file,
                    line,
                    format!("trusted program {name}: deliveries run {}", exe.display()),
                ),
                Ok(exe) => Diagnostic::note(
                    &file,
                    line,
                    format!(
                        "trusted program {name}: deliveries run {} (a symbolic link in {})",
                        exe.display(),
                        dir.display()
                    ),
                ),
                Err(why) => Diagnostic::warning(
                    &file,
                    line,
                    format!("trusted program {name}: refused, deliveries to it bounce: {why}"),
                ),
            });
        }
    }
}

/// Where main.cf sets `name` (its line), or just the file when it is a default.
fn place(config: &Config, name: &str) -> (String, Option<usize>) {
    (
        config.main.file.clone(),
        config.main.get(name).map(|e| e.line),
    )
}

fn error(config: &Config, name: &str, msg: String) -> Diagnostic {
    let (file, line) = place(config, name);
    Diagnostic::error(&file, line, msg)
}

fn warning(config: &Config, name: &str, msg: String) -> Diagnostic {
    let (file, line) = place(config, name);
    Diagnostic::warning(&file, line, msg)
}

fn check_accounts(config: &Config, out: &mut Vec<Diagnostic>) -> Option<Account> {
    let owner_name = config.text(MAIL_OWNER);
    let owner = match account::user_by_name(owner_name) {
        Ok(Some(a)) => Some(a),
        Ok(None) if owner_name == params::spec(MAIL_OWNER).map_or("", |s| s.default) => {
            out.push(warning(
                config,
                MAIL_OWNER,
                format!("mail_owner '{owner_name}' does not exist yet; postern start creates it when run as root"),
            ));
            None
        }
        Ok(None) => {
            out.push(error(
                config,
                MAIL_OWNER,
                format!("mail_owner '{owner_name}': no such user"),
            ));
            None
        }
        Err(e) => {
            out.push(error(config, MAIL_OWNER, e.to_string()));
            None
        }
    };
    if let Some(o) = &owner {
        if o.uid == 0 {
            out.push(error(
                config,
                MAIL_OWNER,
                format!("mail_owner '{owner_name}' has uid 0: it must not be root"),
            ));
        }
        if o.gid == 0 {
            out.push(error(
                config,
                MAIL_OWNER,
                format!("mail_owner '{owner_name}' has group id 0: its primary group must not be root's"),
            ));
        }
    }
    let privs_name = config.text(params::DEFAULT_PRIVS);
    match account::user_by_name(privs_name) {
        Ok(Some(p)) => {
            if p.uid == 0 || p.gid == 0 {
                out.push(error(
                    config,
                    params::DEFAULT_PRIVS,
                    format!(
                        "default_privs '{privs_name}' has uid {} gid {}: neither may be 0",
                        p.uid, p.gid
                    ),
                ));
            }
            if let Some(o) = &owner {
                if p.uid == o.uid || p.gid == o.gid {
                    out.push(error(
                        config,
                        params::DEFAULT_PRIVS,
                        format!(
                            "default_privs '{privs_name}' shares its uid or gid with mail_owner '{}': deliveries must not run as the mail owner",
                            o.name
                        ),
                    ));
                }
            }
        }
        Ok(None) => out.push(error(
            config,
            params::DEFAULT_PRIVS,
            format!("default_privs '{privs_name}': no such user"),
        )),
        Err(e) => out.push(error(config, params::DEFAULT_PRIVS, e.to_string())),
    }
    owner
}

fn check_directories(config: &Config, out: &mut Vec<Diagnostic>) {
    // data_directory is root's in a postern instance (the master's pid
    // lock and control socket are there) and the mail owner's in a Postfix
    // one (Postfix's daemons write there; postfix check sets it up).
    let data_owner = if config.postfix_instance() {
        None
    } else {
        Some(0)
    };
    for (name, expected_owner) in [
        (params::QUEUE_DIRECTORY, Some(0)),
        (params::DATA_DIRECTORY, data_owner),
    ] {
        let dir = config.text(name);
        if !dir.starts_with('/') {
            out.push(error(
                config,
                name,
                format!("{name} '{dir}' is not an absolute path"),
            ));
            continue;
        }
        match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(warning(
                config,
                name,
                format!("{name} {dir} does not exist yet; postern start creates it"),
            )),
            Err(e) => out.push(error(
                config,
                name,
                format!("cannot examine {name} {dir}: {e}"),
            )),
            Ok(md) if !md.is_dir() => {
                out.push(error(
                    config,
                    name,
                    format!("{name} {dir} is not a directory"),
                ));
            }
            Ok(md) => {
                if md.mode() & 0o022 != 0 {
                    out.push(error(
                        config,
                        name,
                        format!(
                            "{name} {dir} is writable by group or others (mode {:04o})",
                            md.mode() & 0o7777
                        ),
                    ));
                }
                if let Some(uid) = expected_owner {
                    if md.uid() != uid && account::running_as_root() {
                        out.push(warning(
                            config,
                            name,
                            format!("{name} {dir} is owned by uid {}, expected {uid}; postern start fixes it", md.uid()),
                        ));
                    }
                }
            }
        }
    }
}

/// main.cf, master.cf and the daemon programs: the master, as root, takes
/// its instructions from them, so root alone may be able to change them
/// and every directory above them ([`postern_sys::trust::root_only_path`] states the
/// rule). `postern start`, `postern reload` and the master itself (at
/// startup and on SIGHUP) refuse a configuration with any of these errors.
pub fn trust(config: &Config) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    if let Source::Dir(dir) = &config.source {
        for file in ["main.cf", "master.cf"] {
            let path = dir.join(file);
            let shown = path.display().to_string();
            if let Err(why) = postern_sys::trust::root_only_path(&path) {
                out.push(Diagnostic::error(
                    &shown,
                    None,
                    format!("not trusted: {why}; the master runs as root and would take its instructions from it (make it and every directory above it owned by root and not writable by group or others)"),
                ));
            }
        }
    }
    let daemons = config.postern_directory();
    let mut paths = vec![daemons.clone(), daemons.join("postern-master")];
    let postfix = config.daemon_directory();
    for s in &config.master.services {
        let path = match config.runner(s) {
            programs::Runner::Postern(p) => daemons.join(p.executable),
            programs::Runner::Postfix => {
                if !paths.contains(&postfix) {
                    paths.push(postfix.clone());
                }
                postfix.join(&s.command)
            }
        };
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    let paths = paths
        .into_iter()
        // Missing programs are start's to report; only what exists is run.
        .filter(|p| p.symlink_metadata().is_ok());
    for path in paths {
        if let Err(why) = postern_sys::trust::root_only_path(&path) {
            out.push(error(
                config,
                params::DAEMON_DIRECTORY,
                format!(
                    "daemon program or directory {} is not trusted: {why}; the master runs what is there as root",
                    path.display()
                ),
            ));
        }
    }
    out
}

fn check_inet_interfaces(config: &Config, out: &mut Vec<Diagnostic>) {
    let items = config.list(params::INET_INTERFACES);
    if items.is_empty() {
        out.push(error(
            config,
            params::INET_INTERFACES,
            "inet_interfaces is empty".into(),
        ));
    }
    for item in &items {
        let special = matches!(item.as_str(), "all" | "loopback-only");
        let address = item
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok();
        if special && items.len() > 1 {
            out.push(error(
                config,
                params::INET_INTERFACES,
                format!("inet_interfaces: '{item}' cannot be combined with other values"),
            ));
        } else if !special && !address {
            out.push(error(
                config,
                params::INET_INTERFACES,
                format!("inet_interfaces: '{item}' is not an IP address, all or loopback-only"),
            ));
        }
    }
}

fn check_services(config: &Config, owner: Option<&Account>, out: &mut Vec<Diagnostic>) {
    let file = &config.master.file;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for s in &config.master.services {
        // Two services on one endpoint cannot both listen.
        let key = match &s.endpoint {
            Endpoint::Inet { host, port } => {
                format!("inet {}:{port}", host.as_deref().unwrap_or("*"))
            }
            Endpoint::Local { .. } => s.endpoint.to_string(),
        };
        if let Some(first) = seen.insert(key.clone(), s.line) {
            out.push(Diagnostic::error(
                file,
                Some(s.line),
                format!(
                    "service {} listens on {} like the service at line {first}",
                    s.id(),
                    s.endpoint
                ),
            ));
        }
        match config.runner(s) {
            programs::Runner::Postern(program) => {
                out.push(Diagnostic::note(
                    file,
                    Some(s.line),
                    format!(
                        "service {}: postern's {} ({})",
                        s.id(),
                        program.name,
                        config
                            .postern_directory()
                            .join(program.executable)
                            .display()
                    ),
                ));
                check_provided(config, s, program, owner, out);
            }
            programs::Runner::Postfix => check_postfix(config, s, out),
        }
    }
}

/// Checks a service run as a Postfix daemon: the program must be in
/// Postfix's `daemon_directory` (any type: postern's master gives Postfix's
/// daemons all five, `pass` without a wakeup), and a chrooted one needs
/// Debian's jail preparation.
fn check_postfix(config: &Config, s: &postern_conf::ServiceEntry, out: &mut Vec<Diagnostic>) {
    let file = &config.master.file;
    let dir = config.daemon_directory();
    let path = dir.join(&s.command);
    if !path.is_file() {
        let hint = match programs::find(&s.name) {
            Some(meant) if !config.postfix_instance() => format!(
                "which postern does not provide: did you mean '{}' ({})?",
                meant.name, meant.doc
            ),
            _ => format!(
                "which is found neither among postern's programs nor in Postfix's daemon_directory {}",
                dir.display()
            ),
        };
        out.push(Diagnostic::error(
            file,
            Some(s.line),
            format!("service {} runs '{}', {hint}", s.id(), s.command),
        ));
        return;
    }
    let mut how = String::new();
    if s.kind == ServiceType::Pass {
        how += &format!(
            "; a pass service: it receives its clients' descriptors (from postscreen) over {}",
            s.endpoint
        );
    }
    // Postfix's stress mode: services whose clients may be remote.
    let remote = match s.kind {
        ServiceType::Pass => Some(""),
        ServiceType::Inet => Some("unless it listens on loopback only, "),
        ServiceType::Unix | ServiceType::UnixDgram | ServiceType::Fifo => None,
    };
    if let (Some(remote), Some(limit)) = (remote, config.process_limit(s)) {
        if limit > 1 {
            how += &format!(
                "; {remote}under stress (-o stress=yes, for 1000s) when a client takes the last of its {limit} processes"
            );
        }
    }
    out.push(Diagnostic::note(
        file,
        Some(s.line),
        format!("service {}: Postfix daemon {}{how}", s.id(), path.display()),
    ));
    // Postfix's master sends a wakeup to a pass service through a passed
    // descriptor; postern's master does not (no stock service has one).
    if s.kind == ServiceType::Pass && s.wakeup.is_some() {
        out.push(Diagnostic::error(
            file,
            Some(s.line),
            format!(
                "service {}: a wakeup on a pass service is not supported by postern's master: put - in the wakeup column (the 6th field)",
                s.id()
            ),
        ));
    }
    if s.chroot && !Path::new(CONFIGURE_INSTANCE).is_file() {
        out.push(Diagnostic::error(
            file,
            Some(s.line),
            format!(
                "service {}: chrooted, and {CONFIGURE_INSTANCE} (Debian's jail preparation) is missing: put n in the chroot column (the 5th field)",
                s.id()
            ),
        ));
    }
}

/// The installed Postfix's `mail_version` (`postconf -d -h mail_version`
/// from Postfix's `command_directory`), and whether postern's master
/// speaks its daemons' contract: Postfix 3 (read from 3.7, unchanged to
/// 3.12). `Err` says why not.
pub fn postfix_version(config: &Config) -> Result<String, String> {
    let dir = config
        .main
        .get("command_directory")
        .map_or("/usr/sbin", |e| e.value.as_str());
    let postconf = Path::new(dir).join("postconf");
    let out = std::process::Command::new(&postconf)
        .args(["-d", "-h", "mail_version"])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            format!(
                "cannot run {}: {e} (is Postfix installed?)",
                postconf.display()
            )
        })?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || version.is_empty() {
        return Err(format!(
            "{} -d -h mail_version failed: {}",
            postconf.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if version.split('.').next() != Some("3") {
        return Err(format!(
            "Postfix {version} is installed; postern's master runs the daemons of Postfix 3 (their contract was read from 3.7 and is unchanged to 3.12)"
        ));
    }
    Ok(version)
}

/// Debian's script that fills a Postfix chroot jail; `postern start` runs
/// it, as Debian's `postfix start` does, when a Postfix service is chrooted.
pub const CONFIGURE_INSTANCE: &str = "/usr/lib/postfix/configure-instance.sh";

/// In a Postfix instance: what applies (the defaults of Postfix, the names
/// of postern's programs, the files Postfix's tools use).
fn check_postfix_instance(config: &Config, out: &mut Vec<Diagnostic>) {
    if !config.postfix_instance() {
        return;
    }
    let first = config
        .master
        .services
        .iter()
        .find(|s| programs::postfix_instance(std::iter::once(s.command.as_str())));
    match postfix_version(config) {
        Ok(v) => out.push(Diagnostic::note(
            &config.master.file,
            first.map(|s| s.line),
            format!("Postfix {v}'s daemons"),
        )),
        Err(why) => out.push(Diagnostic::error(
            &config.master.file,
            first.map(|s| s.line),
            why,
        )),
    }
    out.push(Diagnostic::note(
        &config.master.file,
        first.map(|s| s.line),
        format!(
            "a Postfix instance (master.cf runs Postfix's {}): Postfix's rules apply: mail_owner {}, queue_directory {}, data_directory {} (the mail owner's, mode 0700), Postfix's daemons from daemon_directory {}; \
             the names local, pipe, qmgr, showq and spawn mean Postfix's daemons here, postern's are postern-local, postern-pipe, postern-spawn (from {}); \
             postern start prepares the instance with postfix check, holds queue_directory/pid/master.pid and data_directory/master.lock as Postfix's master does (so postfix status, reload and stop reach it), and keeps its own control socket in queue_directory/pid/postern",
            first.map_or("daemons", |s| s.command.as_str()),
            config.text(MAIL_OWNER),
            config.text(params::QUEUE_DIRECTORY),
            config.text(params::DATA_DIRECTORY),
            config.daemon_directory().display(),
            postern_conf::installed_daemon_directory().display(),
        ),
    ));
}

/// The queue needs both ends: a configuration with a submit service or a
/// queue manager and not the other cannot move mail (messages would stay
/// in `incoming`, or `postern sendmail` would have nowhere to go). Without
/// either, the instance runs other services only (spawn, local for
/// `postern deliver`), which is fine.
fn check_mail_flow(config: &Config, out: &mut Vec<Diagnostic>) {
    let runs =
        |program: &str| {
            config.master.services.iter().any(
                |s| matches!(config.runner(s), programs::Runner::Postern(p) if p.name == program),
            )
        };
    let (submit, qmgr, local) = (runs("submit"), runs("qmgr"), runs("local"));
    let file = &config.master.file;
    if submit && !qmgr {
        out.push(Diagnostic::error(
            file,
            None,
            "no queue manager: submitted mail would stay in the incoming queue; add the line 'qmgr fifo n - n 300 1 qmgr'".to_string(),
        ));
    }
    if qmgr && !submit {
        out.push(Diagnostic::error(
            file,
            None,
            "no submit service: postern sendmail has nothing to hand messages to; add the line 'submit unix n - n - - submit'".to_string(),
        ));
    }
    if qmgr && !local {
        out.push(Diagnostic::warning(
            file,
            None,
            "no local service: mail for local users is deferred until there is one; add the line 'local unix - n n - - local'".to_string(),
        ));
    }
}

/// Checks a service whose program postern runs.
fn check_provided(
    config: &Config,
    s: &postern_conf::ServiceEntry,
    program: &programs::Program,
    owner: Option<&Account>,
    out: &mut Vec<Diagnostic>,
) {
    let file = &config.master.file;
    let mut errors: Vec<String> = Vec::new();
    let mut err = |msg: String| errors.push(msg);
    if !supported_type(s.kind) {
        err(format!(
            "type {} is not supported by postern's own programs (use inet, unix or fifo; unix-dgram and pass are for Postfix's daemons)",
            s.kind
        ));
    }
    if program.privileged && s.unpriv {
        err(format!(
            "{} switches users and needs 'n' in the unpriv column",
            program.name
        ));
    }
    if s.chroot && program.name == "local" {
        err("local cannot run chrooted (it needs /proc and the users' files): put n in the chroot column".into());
    }
    if s.chroot && program.name == "spawn" {
        out.push(Diagnostic::warning(
            file,
            Some(s.line),
            format!(
                "service {}: chrooted to {}: the command and everything it needs must exist inside it",
                s.id(),
                config.text(params::QUEUE_DIRECTORY)
            ),
        ));
    }
    if program.name == "spawn" && !matches!(s.kind, ServiceType::Inet | ServiceType::Unix) {
        err(format!(
            "spawn serves stream connections: use inet or unix, not {}",
            s.kind
        ));
    }
    if program.name == "pipe" && s.kind != ServiceType::Unix {
        err(format!(
            "pipe takes deliveries from the queue manager: use unix, not {}",
            s.kind
        ));
    }
    let mut unknown_user = false;
    if program.name == "pipe" {
        let (rest, _, ignored) = postern_conf::attributes::split_pipe(&s.args);
        for i in ignored {
            out.push(Diagnostic::warning(
                file,
                Some(s.line),
                format!(
                    "service {}: {i}: not supported by postern's pipe, ignored",
                    s.id()
                ),
            ));
        }
        // A transport for an account this machine does not have (Postfix's
        // stock master.cf names several) fails only when used: a warning.
        let user = postern_conf::attributes::user_name(&rest);
        if let Some(u) = user {
            if matches!(crate::account::user_by_name(&u), Ok(None)) {
                out.push(Diagnostic::warning(
                    file,
                    Some(s.line),
                    format!("service {}: user {u} does not exist: deliveries to this transport will fail until it does", s.id()),
                ));
                unknown_user = true;
            }
        }
    }
    if (program.name == "spawn" || program.name == "pipe") && !unknown_user {
        // Without a mail owner account yet, compare with ids nobody has.
        let owner = owner.map(MailOwner::from).unwrap_or(MailOwner {
            uid: u32::MAX - 1,
            gid: u32::MAX - 1,
        });
        let checked = if program.name == "pipe" {
            crate::command::PipeSpec::parse(&s.args, owner, &SystemAccounts).map(|_| ())
        } else {
            CommandSpec::parse(&s.args, owner, &SystemAccounts).map(|_| ())
        };
        if let Err(e) = checked {
            err(e);
        }
    }
    for msg in errors {
        out.push(Diagnostic::error(
            file,
            Some(s.line),
            format!("service {}: {msg}", s.id()),
        ));
    }
}

/// Whether `path` exists (for the configuration-directory choice).
pub fn has_main_cf(dir: &Path) -> bool {
    dir.join("main.cf").is_file()
}

/// Whether postern's master can run a service of this type.
pub fn supported_type(kind: ServiceType) -> bool {
    matches!(
        kind,
        ServiceType::Inet | ServiceType::Unix | ServiceType::Fifo
    )
}
