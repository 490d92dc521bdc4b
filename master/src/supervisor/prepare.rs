//! Preparing a Postfix instance before its daemons run, as Debian's
//! `postfix start` does: Postfix's own `postfix check` (which creates what
//! is missing of the queue with Postfix's owners and modes, and runs its
//! queue sanity pass), and, when a Postfix service is chrooted, Debian's
//! `configure-instance.sh`, which fills the jail in `queue_directory`
//! (`/etc` files, name service libraries, CA certificates).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use postern_common::sysexits;
use postern_conf::programs::Runner;
use postern_conf::{Config, Source};

use super::Fatal;

/// Debian's jail preparation script.
pub(super) use postern_common::check::CONFIGURE_INSTANCE;

/// Postfix's `command_directory`: as main.cf sets it, or Postfix's default.
fn command_directory(config: &Config) -> PathBuf {
    config
        .main
        .get("command_directory")
        .map_or_else(|| PathBuf::from("/usr/sbin"), |e| PathBuf::from(&e.value))
}

/// Runs `cmd` to its end; its output is the error when it fails.
fn run(what: &str, mut cmd: Command) -> Result<(), Fatal> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| (sysexits::EX_UNAVAILABLE, format!("{what}: cannot run: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&out.stderr).trim().to_string()
        + String::from_utf8_lossy(&out.stdout).trim();
    Err((
        sysexits::EX_CONFIG,
        format!(
            "{what} failed ({}){}{}",
            out.status,
            if text.is_empty() { "" } else { ": " },
            if text.is_empty() {
                "see Postfix's log (maillog_file or syslog)".to_string()
            } else {
                text
            }
        ),
    ))
}

/// Prepares a Postfix instance; nothing for a postern one.
pub(super) fn postfix_instance(config: &Config) -> Result<(), Fatal> {
    if !config.postfix_instance() {
        return Ok(());
    }
    let Source::Dir(dir) = &config.source else {
        return Ok(());
    };
    let version =
        postern_common::check::postfix_version(config).map_err(|why| (sysexits::EX_CONFIG, why))?;
    log::info!("a Postfix instance: Postfix {version}'s daemons");
    let postfix = command_directory(config).join("postfix");
    let mut check = Command::new(&postfix);
    check.arg("-c").arg(dir).arg("check");
    run(
        &format!("{} -c {} check", postfix.display(), dir.display()),
        check,
    )?;
    let chrooted = config
        .master
        .services
        .iter()
        .any(|s| s.chroot && config.runner(s) == Runner::Postfix);
    if chrooted {
        if !Path::new(CONFIGURE_INSTANCE).is_file() {
            return Err((
                sysexits::EX_CONFIG,
                format!("a Postfix service is chrooted and {CONFIGURE_INSTANCE} (Debian's jail preparation) is missing: put n in the chroot column"),
            ));
        }
        let mut jail = Command::new(CONFIGURE_INSTANCE);
        jail.arg("-").env("MAIL_CONFIG", dir);
        run(&format!("{CONFIGURE_INSTANCE} (the chroot jail)"), jail)?;
    }
    Ok(())
}
