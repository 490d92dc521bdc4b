//! Table tests of malformed input: each wrong field, each wrong way, with the
//! exact `file:line` message an administrator sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use postern_conf::{Config, ServicesFile};

fn diagnostics(main: &str, master: &str) -> Vec<String> {
    let ports = ServicesFile::parse("smtp 25/tcp\n");
    let loaded = Config::from_text(
        "/etc/postern/main.cf",
        main.as_bytes(),
        "/etc/postern/master.cf",
        master.as_bytes(),
        &ports,
    );
    assert_eq!(
        loaded.config.is_some(),
        !loaded.diagnostics.iter().any(|d| d.is_error()),
        "a configuration is usable exactly when there are no errors"
    );
    loaded.diagnostics.iter().map(|d| d.to_string()).collect()
}

const OK_MASTER: &str = "demo unix - n n - 1 spawn\n";

#[test]
fn master_cf_fields() {
    let cases: &[(&str, &str)] = &[
        ("x unix - - n - ten spawn", "master.cf:3: maxproc 'ten' is not a number"),
        ("x unix - - n - -1 spawn", "master.cf:3: maxproc '-1' is not a number"),
        ("x unix - - n - 99999999999 spawn", "master.cf:3: maxproc '99999999999' is too large"),
        ("x unix - - n 1x - spawn", "master.cf:3: wakeup time '1x' is not a number of seconds (optionally with '?')"),
        ("x unix - - n ?? - spawn", "master.cf:3: wakeup time '??' is not a number of seconds (optionally with '?')"),
        ("x unix - - yes - - spawn", "master.cf:3: chroot field 'yes' must be y, n or -"),
        ("x unix - Y n - - spawn", "master.cf:3: unpriv field 'Y' must be y, n or -"),
        ("x unix 1 - n - - spawn", "master.cf:3: private field '1' must be y, n or -"),
        ("x stream - - n - - spawn", "master.cf:3: service type 'stream' is not one of inet, unix, unix-dgram, fifo, pass"),
        ("2525 inet y - n - - spawn", "master.cf:3: an inet service cannot be private (use n or - in the private field)"),
        ("0 inet n - n - - spawn", "master.cf:3: inet service '0': port 0 is out of range (1-65535)"),
        ("65536 inet n - n - - spawn", "master.cf:3: inet service '65536': port 65536 is out of range (1-65535)"),
        ("gopherz inet n - n - - spawn", "master.cf:3: inet service 'gopherz': unknown port name 'gopherz' (not in /etc/services)"),
        ("[::1:25 inet n - n - - spawn", "master.cf:3: inet service '[::1:25': expected [IPv6-address]:port"),
        ("[nothex]:25 inet n - n - - spawn", "master.cf:3: inet service '[nothex]:25': 'nothex' is not an IPv6 address"),
        (":25 inet n - n - - spawn", "master.cf:3: inet service ':25': '' is not a host name or address"),
        (".. unix - - n - - spawn", "master.cf:3: service name '..' must be a plain file name (no '/', not '.' or '..')"),
        ("x unix - - n - -", "master.cf:3: expected 8 fields (service type private unpriv chroot wakeup maxproc command), found 7"),
        ("x", "master.cf:3: expected 8 fields (service type private unpriv chroot wakeup maxproc command), found 1"),
        ("x unix - - n - - spawn { open", "master.cf:3: missing '}' after \"{ open\""),
        ("x unix - - n - - spawn { a { b }", "master.cf:3: missing '}' after \"{ a { b }\""),
        ("x unix - - n - - spawn {a}b", "master.cf:3: text after '}' must be separated by white space: \"b\""),
        ("x unix - - n - - spawn -o", "master.cf:3: -o at the end of the line: expected -o name=value"),
        ("x unix - - n - - spawn -o junk", "master.cf:3: -o 'junk' is not name=value"),
        ("x unix - - n - - spawn -o =v", "master.cf:3: -o '=v' is not name=value"),
        ("x unix - - n - - spawn -o max_use=ten", "master.cf:3: -o max_use: 'ten' is not a number"),
        ("x unix - - n - - spawn -o { max_idle = 3 fortnights }", "master.cf:3: -o max_idle: '3 fortnights' has a bad time unit ' fortnights' (use s, m, h, d or w)"),
        ("x unix - - n - - spawn -o max_idle=$x_loop -o x_loop=$max_idle", "master.cf:3: -o max_idle: recursive parameter expansion: $max_idle -> $x_loop -> $max_idle"),
        ("x unix - - n - - spawn -o ipc_timeout=${oops", "master.cf:3: -o ipc_timeout: missing '}' after '${' in \"${oops\""),
    ];
    for (line, expected) in cases {
        let master = format!("# header\n{OK_MASTER}{line}\n");
        let got = diagnostics("", &master);
        let errors: Vec<_> = got.iter().filter(|d| !d.contains("warning:")).collect();
        assert_eq!(errors.len(), 1, "{line:?}: {got:#?}");
        assert_eq!(errors[0], &format!("/etc/postern/{expected}"), "{line:?}");
    }
}

#[test]
fn main_cf_values() {
    let cases: &[(&str, &str)] = &[
        ("max_use = ten", "main.cf:2: max_use: 'ten' is not a number"),
        ("max_use = 0", "main.cf:2: max_use: '0' is too small (the minimum is 1)"),
        ("max_use =", "main.cf:2: max_use: empty value where a number is expected"),
        ("max_use = 99999999999999999999", "main.cf:2: max_use: '99999999999999999999' is too large"),
        ("max_idle = 10 s", "main.cf:2: max_idle: '10 s' has a bad time unit ' s' (use s, m, h, d or w)"),
        ("max_idle = 10y", "main.cf:2: max_idle: '10y' has a bad time unit 'y' (use s, m, h, d or w)"),
        ("max_idle = 1.5h", "main.cf:2: max_idle: '1.5h' has a bad time unit '.5h' (use s, m, h, d or w)"),
        ("max_idle = h", "main.cf:2: max_idle: 'h' is not a time value (a number with an optional unit s, m, h, d or w)"),
        ("max_idle = 9999999999w", "main.cf:2: max_idle: time value '9999999999w' is too large"),
        ("strict_mailbox_ownership = true", "main.cf:2: strict_mailbox_ownership: 'true' is not yes or no"),
        ("inet_protocols = ipv4 ipx", "main.cf:2: inet_protocols: 'ipx' is not one of: all, ipv4, ipv6"),
        ("inet_protocols =", "main.cf:2: inet_protocols: empty value (expected one or more of: all, ipv4, ipv6)"),
        ("max_idle = $max_idle", "main.cf:2: max_idle: recursive parameter expansion: $max_idle -> $max_idle"),
        ("max_idle = ${max_use?${max_idle}}", "main.cf:2: max_idle: recursive parameter expansion: $max_idle -> $max_idle"),
        ("max_idle = ${x", "main.cf:2: max_idle: missing '}' after '${' in \"${x\""),
        ("max_idle = $(x", "main.cf:2: max_idle: missing ')' after '$(' in \"$(x\""),
        ("max_idle = ${!}", "main.cf:2: max_idle: missing parameter name in \"${!}\""),
        ("max_idle = ${x?{a}:b}", "main.cf:2: max_idle: malformed '{value}' in \"${x?{a}:b}\""),
        ("no equals here", "main.cf:2: missing '=' after parameter name in \"no equals here\""),
        ("=5", "main.cf:2: missing parameter name before '='"),
        ("a$b = 5", "main.cf:2: bad parameter name 'a$b'"),
        ("demo_time_limit = forever", "main.cf:2: demo_time_limit: 'forever' is not a time value (a number with an optional unit s, m, h, d or w)"),
    ];
    for (line, expected) in cases {
        let main = format!("# header\n{line}\n");
        let got = diagnostics(&main, OK_MASTER);
        let errors: Vec<_> = got.iter().filter(|d| !d.contains("warning:")).collect();
        assert_eq!(errors.len(), 1, "{line:?}: {got:#?}");
        assert_eq!(errors[0], &format!("/etc/postern/{expected}"), "{line:?}");
    }
}

#[test]
fn a_loop_through_three_parameters_names_each() {
    let got = diagnostics(
        "max_idle = $ipc_timeout\nipc_timeout = $daemon_timeout\ndaemon_timeout = ${max_idle}\n",
        OK_MASTER,
    );
    assert!(got.contains(&"/etc/postern/main.cf:1: max_idle: recursive parameter expansion: $max_idle -> $ipc_timeout -> $daemon_timeout -> $max_idle".to_string()), "{got:#?}");
    assert_eq!(
        got.iter().filter(|d| d.contains("recursive")).count(),
        3,
        "{got:#?}"
    );
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    let master = "a unix - - n - ten spawn\nb unix - - n x - spawn\nc tcp - - n - - spawn\nok unix - - n - - spawn\n";
    let got = diagnostics("max_use = x\nmax_idle = y\n", master);
    let lines: Vec<_> = got
        .iter()
        .map(|d| d.split(": ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        lines,
        vec![
            "/etc/postern/main.cf:1",
            "/etc/postern/main.cf:2",
            "/etc/postern/master.cf:1",
            "/etc/postern/master.cf:2",
            "/etc/postern/master.cf:3"
        ]
    );
}

#[test]
fn warnings_do_not_make_a_configuration_unusable() {
    let got = diagnostics(
        "foo = 1\nfoo = 2\n",
        "x unix - - n - - spawn\nx unix - - n - 3 spawn\nx fifo - - n - - spawn\n",
    );
    assert_eq!(
        got,
        vec![
            "/etc/postern/main.cf:2: warning: foo is set again (first at line 1); the later value wins",
            "/etc/postern/main.cf:2: warning: unknown parameter foo (kept, but postern does not use it)",
            "/etc/postern/master.cf:2: warning: service x/unix is defined again (first at line 1); this entry replaces it",
        ]
    );
}

#[test]
fn continuation_of_a_bad_line_is_not_glued_to_the_previous_entry() {
    let got = diagnostics("", "a unix - - n - - spawn\n\u{1}\n  -o max_use=3\n");
    assert!(got.iter().all(|d| !d.contains("line 3")), "{got:#?}");
}

#[test]
fn a_service_view_knows_its_own_time_limit_without_master_cf() {
    let ports = ServicesFile::parse("");
    let loaded = Config::from_text(
        "main.cf",
        b"slow_time_limit = 7\ncommand_time_limit = 9\n",
        "master.cf",
        b"",
        &ports,
    );
    let config = loaded.config.expect("valid");
    let view = config.with_overrides("slow", &[]).expect("view");
    assert_eq!(
        view.service_time_limit("slow"),
        std::time::Duration::from_secs(7)
    );
    assert_eq!(
        view.service_time_limit("other"),
        std::time::Duration::from_secs(9)
    );
}

/// A service view shares the parsed files with the configuration it is
/// taken from (a copy per view made starting N services quadratic in N),
/// and still checks its own overrides, naming them.
#[test]
fn service_views_share_the_files_and_check_their_own_overrides() {
    let ports = ServicesFile::parse("");
    let mut master = String::new();
    for i in 0..50 {
        master.push_str(&format!(
            "svc{i} unix n n n - 2 spawn user=nobody argv=/bin/cat\n"
        ));
    }
    master.push_str("odd unix n n n - 2 spawn -o max_idle=7s user=nobody argv=/bin/cat\n");
    let config = Config::from_text("main.cf", b"", "master.cf", master.as_bytes(), &ports)
        .config
        .expect("valid");
    assert!(!config.postfix_instance());
    for entry in &config.master.services {
        let view = config.for_service(entry).expect("view");
        assert!(std::sync::Arc::ptr_eq(&view.master, &config.master));
        assert!(std::sync::Arc::ptr_eq(&view.main, &config.main));
        assert_eq!(view.postfix_instance(), config.postfix_instance());
    }
    let odd = config.master.services.last().expect("odd");
    let view = config.for_service(odd).expect("view");
    assert_eq!(view.time("max_idle"), std::time::Duration::from_secs(7));
    let bad = [postern_conf::Override {
        name: "max_idle".into(),
        value: "soon".into(),
    }];
    let err = config
        .with_overrides("odd", &bad)
        .expect_err("a bad override is an error");
    assert!(format!("{err}").contains("max_idle"), "{err}");
}
