//! End to end: `postern check`, `postern config` and `postern init` on real
//! configuration directories, including Postfix's own stock files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use postern_tests::postern;

/// A fresh self-contained instance directory made by `postern init`.
fn instance() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = postern(&[
        "init",
        "--self-contained",
        dir.path().join("etc").to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{out:?}");
    dir
}

fn etc(dir: &tempfile::TempDir) -> String {
    dir.path().join("etc").display().to_string()
}

fn append(path: impl AsRef<Path>, text: &str) -> usize {
    let mut body = std::fs::read_to_string(&path).unwrap();
    body.push_str(text);
    std::fs::write(&path, &body).unwrap();
    body.lines().count()
}

#[test]
fn config_d_prints_the_default() {
    let out = postern(&["config", "-d", "max_idle"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, "max_idle = 100s\n");
    let out = postern(&[
        "config",
        "-d",
        "-h",
        "max_use",
        "command_time_limit",
        "export_environment",
    ]);
    assert_eq!(out.stdout, "100\n1000s\nTZ MAIL_CONFIG LANG\n");
}

#[test]
fn init_then_check_is_clean_and_init_never_overwrites() {
    let dir = instance();
    let out = postern(&["-c", &etc(&dir), "check"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("configuration is valid"),
        "{}",
        out.stderr
    );
    let again = postern(&["init", "--self-contained", &etc(&dir)]);
    assert_eq!(again.code, Some(73), "{again:?}");
    assert!(
        again
            .stderr
            .contains("exists; not overwritten (use --force)"),
        "{}",
        again.stderr
    );
    let forced = postern(&["init", "--self-contained", "--force", &etc(&dir)]);
    assert_eq!(forced.code, Some(0), "{forced:?}");
    // The self-contained layout keeps the queue inside the directory.
    let out = postern(&["-c", &etc(&dir), "config", "-h", "queue_directory"]);
    assert_eq!(
        out.stdout.trim(),
        dir.path().join("etc/queue").display().to_string()
    );
}

#[test]
fn check_names_the_bad_master_cf_line_and_exits_non_zero() {
    let dir = instance();
    let master = dir.path().join("etc/master.cf");
    let line = append(&master, "demo unix - n n - ten spawn\n");
    let line2 = append(&master, "2525 inet y - n - - spawn\n");
    let out = postern(&["-c", &etc(&dir), "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let shown = master.display();
    assert!(
        out.stderr
            .contains(&format!("{shown}:{line}: maxproc 'ten' is not a number")),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{shown}:{line2}: an inet service cannot be private"
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("2 error(s)"), "{}", out.stderr);
    // config refuses to print a configuration with errors, and says why.
    let out = postern(&["-c", &etc(&dir), "config", "-n"]);
    assert_eq!(out.code, Some(78), "{out:?}");
    assert!(
        out.stderr.contains("maxproc 'ten' is not a number"),
        "{}",
        out.stderr
    );
}

#[test]
fn check_reports_bad_accounts_at_their_main_cf_line() {
    let dir = instance();
    let main = dir.path().join("etc/main.cf");
    let owner_line = append(&main, "mail_owner = root\n");
    let privs_line = append(&main, "default_privs = no-such-user-postern\n");
    let out = postern(&["-c", &etc(&dir), "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let shown = main.display();
    assert!(
        out.stderr.contains(&format!(
            "{shown}:{owner_line}: mail_owner 'root' has uid 0"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{shown}:{privs_line}: default_privs 'no-such-user-postern': no such user"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn check_refuses_a_world_writable_master_cf() {
    let dir = instance();
    let master = dir.path().join("etc/master.cf");
    std::fs::set_permissions(&master, std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = postern(&["-c", &etc(&dir), "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("writable by everyone"),
        "{}",
        out.stderr
    );
}

#[test]
fn config_prints_like_postconf() {
    let dir = instance();
    append(
        dir.path().join("etc/main.cf"),
        "myhostname = mail.example.org\nbanner = $myhostname ready\nmax_use = 7\n",
    );
    append(
        dir.path().join("etc/master.cf"),
        "demo unix - n n 60? 2 spawn -o max_use=3 -o { syslog_name = a b } user=nobody argv=/bin/echo { two words }\n",
    );
    let c = etc(&dir);
    let out = postern(&["-c", &c, "config", "-n"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let names: Vec<_> = out
        .stdout
        .lines()
        .map(|l| l.split(" =").next().unwrap())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted, "-n output is sorted by name");
    assert!(
        out.stdout.contains("banner = $myhostname ready\n"),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("ipc_timeout"),
        "-n shows only main.cf settings: {}",
        out.stdout
    );
    let out = postern(&["-c", &c, "config", "-x", "banner", "max_use", "max_idle"]);
    assert_eq!(
        out.stdout,
        "banner = mail.example.org ready\nmax_use = 7\nmax_idle = 100s\n"
    );
    let out = postern(&["-c", &c, "config", "-M", "demo/unix"]);
    assert_eq!(
        out.stdout,
        "demo       unix  -       n       n       60?     2       spawn -o max_use=3 -o { syslog_name = a b } user=nobody argv=/bin/echo { two words }\n"
    );
    let out = postern(&["-c", &c, "config", "no_such_parameter"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no_such_parameter: unknown parameter"),
        "{}",
        out.stderr
    );
    // The whole effective table includes defaults and main.cf's own names.
    let out = postern(&["-c", &c, "config"]);
    assert!(
        out.stdout.contains("max_idle = 100s\n")
            && out.stdout.contains("myhostname = mail.example.org\n")
    );
}

/// `myhostname` and `mydomain` default to what the machine calls itself
/// (as Postfix derives them), not `localhost`; `mydestination` names them.
#[test]
fn myhostname_and_mydomain_come_from_the_host_name() {
    let dir = instance();
    let c = etc(&dir);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_ascii_lowercase();
    let fqdn = if host.contains('.') {
        host.clone()
    } else {
        format!("{host}.localdomain")
    };
    let domain = fqdn.split_once('.').unwrap().1.to_string();
    for which in ["-d", "-x"] {
        let out = postern(&["-c", &c, "config", which, "myhostname", "mydomain"]);
        assert_eq!(
            out.stdout,
            format!("myhostname = {fqdn}\nmydomain = {domain}\n"),
            "{which}: {out:?}"
        );
    }
    assert!(fqdn.starts_with(&host) && fqdn != "localhost");
    let out = postern(&["-c", &c, "config", "-x", "mydestination"]);
    assert_eq!(
        out.stdout,
        format!("mydestination = {fqdn}, localhost.{domain}, localhost\n")
    );
    // A bare host name takes main.cf's mydomain; mydomain follows a set myhostname.
    append(
        dir.path().join("etc/main.cf"),
        "myhostname = mx.example.org\n",
    );
    let out = postern(&["-c", &c, "config", "-x", "mydomain"]);
    assert_eq!(out.stdout, "mydomain = example.org\n");
}

/// Postfix's own stock files, where Debian's postfix package puts them
/// (.ci/run installs it).
fn stock_postfix_dirs() -> Vec<tempfile::TempDir> {
    let etc = Path::new("/etc/postfix");
    assert!(
        etc.join("master.cf.proto").is_file(),
        "Postfix is not installed: apt-get install postfix (see .ci/run) to test against its stock files"
    );
    let mut dirs = Vec::new();
    for (main, master) in [
        ("main.cf", "master.cf"),
        ("main.cf.proto", "master.cf.proto"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(etc.join(main), dir.path().join("main.cf")).unwrap();
        std::fs::copy(etc.join(master), dir.path().join("master.cf")).unwrap();
        dirs.push(dir);
    }
    dirs
}

#[test]
fn postfix_stock_configuration_is_a_postfix_instance_of_postfix_s_daemons() {
    for dir in stock_postfix_dirs() {
        let c = dir.path().display().to_string();
        let out = postern(&["-c", &c, "check"]);
        // It parses and is valid: every line names one of Postfix's
        // daemons, which the master runs (issue 17).
        assert_eq!(out.code, Some(0), "{out:?}");
        for line in out.stderr.lines().filter(|l| !l.starts_with("postern: ")) {
            assert!(
                line.contains(": warning: ") || line.contains(": note: "),
                "not a warning: {line}"
            );
        }
        for expected in [
            "a Postfix instance (master.cf runs Postfix's smtpd): Postfix's rules apply: mail_owner postfix",
            "note: service smtp/inet: Postfix daemon /usr/lib/postfix/sbin/smtpd",
            "note: service local/unix: Postfix daemon /usr/lib/postfix/sbin/local",
            "note: service postlog/unix-dgram: Postfix daemon /usr/lib/postfix/sbin/postlogd",
        ] {
            assert!(out.stderr.contains(expected), "{expected}:\n{}", out.stderr);
        }
        let listed = postern(&["-c", &c, "config", "-M"]);
        assert_eq!(listed.code, Some(0), "{listed:?}");
        assert!(
            listed
                .stdout
                .lines()
                .any(|l| l.starts_with("smtp ") && l.contains(" inet ")),
            "{}",
            listed.stdout
        );
    }
}

#[test]
fn check_takes_pass_services_for_postfix_s_daemons_and_says_which_may_be_under_stress() {
    let dir = stock_postfix_dirs().remove(0);
    let master = dir.path().join("master.cf");
    let pass = append(&master, "smtpd pass - - n - - smtpd\n");
    let woken = append(&master, "screened pass - - n 60 - smtpd\n");
    let out = postern(&["-c", &dir.path().display().to_string(), "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let shown = master.display();
    let has = |line: usize, text: &str| out.stderr.contains(&format!("{shown}:{line}: {text}"));
    assert!(
        has(
            pass,
            "note: service smtpd/pass: Postfix daemon /usr/lib/postfix/sbin/smtpd; a pass service: it receives its clients' descriptors (from postscreen) over private/smtpd; under stress (-o stress=yes, for 1000s) when a client takes the last of its 100 processes"
        ),
        "{}",
        out.stderr
    );
    assert!(
        has(
            woken,
            "service screened/pass: a wakeup on a pass service is not supported by postern's master"
        ),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("note: service smtp/inet: Postfix daemon /usr/lib/postfix/sbin/smtpd; unless it listens on loopback only, under stress"),
        "{}",
        out.stderr
    );
    // Not for a service only other daemons talk to.
    assert!(
        out.stderr
            .contains("note: service cleanup/unix: Postfix daemon /usr/lib/postfix/sbin/cleanup\n"),
        "{}",
        out.stderr
    );
}

#[test]
fn without_a_directory_the_embedded_configuration_is_used() {
    let out = postern(&["check"]);
    if Path::new("/etc/postern/main.cf").is_file() {
        assert!(
            out.stderr.contains("configuration directory /etc/postern"),
            "{}",
            out.stderr
        );
    } else {
        assert_eq!(out.code, Some(0), "{out:?}");
        assert!(
            out.stderr.contains("embedded default configuration"),
            "{}",
            out.stderr
        );
        let out = postern(&["config", "-n", "-h", "mail_owner"]);
        assert_eq!(out.stdout, "postern\n");
    }
}

#[test]
fn check_rejects_types_postern_cannot_run_for_its_own_programs() {
    let dir = instance();
    let master = dir.path().join("etc/master.cf");
    let dgram = append(
        &master,
        "logger unix-dgram n n n - 1 spawn user=nobody argv=/bin/cat\n",
    );
    let fifo = append(
        &master,
        "poke fifo n n n - 1 spawn user=nobody argv=/bin/cat\n",
    );
    let unpriv = append(
        &master,
        "echo unix n - n - 1 spawn user=nobody argv=/bin/cat\n",
    );
    let chrooted = append(&master, "local unix - n y - - local\n");
    let pass = append(
        &master,
        "relay pass n n n - 1 spawn user=nobody argv=/bin/cat\n",
    );
    let out = postern(&["-c", &etc(&dir), "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let shown = master.display();
    let has = |line: usize, text: &str| out.stderr.contains(&format!("{shown}:{line}: {text}"));
    assert!(
        has(
            dgram,
            "service logger/unix-dgram: type unix-dgram is not supported by postern"
        ),
        "{}",
        out.stderr
    );
    assert!(
        has(
            pass,
            "service relay/pass: type pass is not supported by postern's own programs"
        ),
        "{}",
        out.stderr
    );
    assert!(
        has(chrooted, "service local/unix: local cannot run chrooted"),
        "{}",
        out.stderr
    );
    assert!(
        has(fifo, "service poke/fifo: spawn serves stream connections"),
        "{}",
        out.stderr
    );
    assert!(
        has(
            unpriv,
            "service echo/unix: spawn switches users and needs 'n' in the unpriv column"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn check_validates_the_destination_policy_with_file_and_line() {
    let dir = instance();
    let policy = dir.path().join("etc/destinations");
    let bad = append(&policy, "mailbox relative/path\n");
    let bad2 = append(&policy, "bogus /x\n");
    append(
        dir.path().join("etc/master.cf"),
        "local unix - n n - - local\n",
    );
    let out = postern(&["-c", &etc(&dir), "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let shown = policy.display();
    assert!(
        out.stderr.contains(&format!(
            "{shown}:{bad}: pattern 'relative/path' must start with / or ~"
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains(&format!("{shown}:{bad2}: unknown kind 'bogus'")),
        "{}",
        out.stderr
    );
    // An empty trusted directory: program delivery is off, and check says so.
    assert!(
        out.stderr
            .contains("program delivery is disabled: no programs in the trusted program directory"),
        "{}",
        out.stderr
    );
}

#[test]
fn destinations_suggests_what_aliases_and_forward_files_need() {
    let dir = instance();
    let aliases = dir.path().join("aliases");
    std::fs::write(
        &aliases,
        "postmaster: root\narchive: /var/archive/all\nvacation: \"|/usr/bin/vacation -a x\"\nboxed: /var/mail/boxed\n",
    )
    .unwrap();
    append(
        dir.path().join("etc/main.cf"),
        &format!("alias_maps = hash:{}\n", aliases.display()),
    );
    let out = postern(&["-c", &etc(&dir), "destinations"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let programs = dir.path().join("etc/programs");
    assert!(
        out.stdout.contains("mailbox /var/archive/all"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("{}:2 (archive)", aliases.display())),
        "{}",
        out.stdout
    );
    // Secure mode runs only the trusted copy, which is not installed yet.
    assert!(
        out.stdout.contains(&format!(
            "# install /usr/bin/vacation as {}/vacation",
            programs.display()
        )),
        "{}",
        out.stdout
    );
    // An alias's file is not the alias's own /var/mail/$user: it needs a rule.
    assert!(
        out.stdout.contains("mailbox /var/mail/boxed"),
        "{}",
        out.stdout
    );
    // Addresses need nothing.
    assert!(!out.stdout.contains("(postmaster)"), "{}", out.stdout);
}

#[test]
fn a_configuration_that_cannot_move_mail_is_an_error_with_the_fix_named() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("etc");
    let out = postern(&["init", "--self-contained", c.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let master = c.join("master.cf");
    let stock = std::fs::read_to_string(&master).unwrap();
    let edit = |from: &str, to: &str| {
        let text: String = stock
            .lines()
            .map(|l| {
                if l.starts_with(from) {
                    to.to_string()
                } else {
                    l.to_string()
                }
            })
            .map(|l| l + "\n")
            .collect();
        std::fs::write(&master, text).unwrap();
    };
    let check = || postern(&["-c", c.to_str().unwrap(), "check"]);
    // As written by init: it moves mail.
    let out = check();
    assert_eq!(out.code, Some(0), "{out:?}");
    // No queue manager.
    edit("qmgr ", "# qmgr removed");
    let out = check();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("no queue manager")
            && out.stderr.contains("'qmgr fifo n - n 300 1 qmgr'"),
        "{}",
        out.stderr
    );
    // No submit service.
    edit("submit ", "# submit removed");
    let out = check();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("no submit service"), "{}", out.stderr);
    // A misspelled daemon where the service is named for one postern has.
    edit("submit ", "submit unix n - n - - submitt");
    let out = check();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("runs 'submitt', which postern does not provide: did you mean 'submit'"),
        "{}",
        out.stderr
    );
    // Postfix's way of writing the queue manager's line is accepted.
    edit("qmgr ", "qmgr unix n - n 300 1 qmgr");
    let out = check();
    assert_eq!(out.code, Some(0), "{out:?}");
}

#[test]
fn the_tools_called_directly_answer_help() {
    for tool in ["postern-sendmail", "postern-queue"] {
        let out =
            postern_tests::run(std::process::Command::new(postern_tests::bin(tool)).arg("--help"));
        assert_eq!(out.code, Some(0), "{tool}: {out:?}");
        assert!(out.stdout.starts_with("usage: "), "{tool}: {}", out.stdout);
    }
}

#[test]
fn a_program_found_neither_among_postern_s_nor_postfix_s_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("/etc/postfix/main.cf", dir.path().join("main.cf")).unwrap();
    std::fs::write(
        dir.path().join("master.cf"),
        "smtp inet n - n - - smtpd\n\
         policy unix - n n - 0 postern-spawn user=nobody argv=/bin/cat\n\
         odd unix - n n - - no-such-daemon\n",
    )
    .unwrap();
    let c = dir.path().display().to_string();
    let out = postern(&["-c", &c, "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("master.cf:3: service odd/unix runs 'no-such-daemon', which is found neither among postern's programs nor in Postfix's daemon_directory /usr/lib/postfix/sbin"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("master.cf:2: note: service policy/unix: postern's spawn"),
        "{}",
        out.stderr
    );
}

#[test]
fn postfix_of_another_major_version_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    // A postconf that reports Postfix 2.
    std::fs::write(bin.join("postconf"), "#!/bin/sh\necho 2.11.3\n").unwrap();
    std::fs::set_permissions(
        bin.join("postconf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!("command_directory = {}\n", bin.display()),
    )
    .unwrap();
    std::fs::write(dir.path().join("master.cf"), "smtp inet n - n - - smtpd\n").unwrap();
    let c = dir.path().display().to_string();
    let out = postern(&["-c", &c, "check"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains(
            "Postfix 2.11.3 is installed; postern's master runs the daemons of Postfix 3"
        ),
        "{}",
        out.stderr
    );
}
