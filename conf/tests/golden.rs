//! Golden tests: each `tests/golden/NAME.main.cf` (with `NAME.master.cf`) is
//! parsed and the result rendered to text, which must equal
//! `NAME.expected`. Set `POSTERN_BLESS=1` to rewrite the expected files after
//! an intended change (and read the diff).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;
use std::path::Path;

use postern_conf::{Config, Endpoint, Loaded, ServicesFile};

fn ports() -> ServicesFile {
    ServicesFile::parse("smtp 25/tcp mail\nsubmission 587/tcp\n")
}

fn render(loaded: &Loaded, main: &[u8], master: &[u8]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## diagnostics");
    for d in &loaded.diagnostics {
        let _ = writeln!(out, "{d}");
    }
    // The raw parse is shown even when there are errors.
    let mut scratch = Vec::new();
    let main = postern_conf::maincf::parse_main_cf("main.cf", main, &mut scratch);
    let master =
        postern_conf::mastercf::parse_master_cf("master.cf", master, &ports(), &mut scratch);
    let _ = writeln!(out, "## main.cf");
    for e in &main.entries {
        let _ = writeln!(out, "{}: {} = [{}]", e.line, e.name, e.value);
    }
    let _ = writeln!(out, "## master.cf");
    for s in &master.services {
        let endpoint = match &s.endpoint {
            Endpoint::Inet { host, port } => format!("inet host={host:?} port={port}"),
            Endpoint::Local { name, private } => format!("local name={name} private={private}"),
        };
        let _ = writeln!(
            out,
            "{}: {} {endpoint} unpriv={} chroot={} wakeup={:?} maxproc={:?} command={} args={:?} overrides={:?}",
            s.line,
            s.id(),
            s.unpriv,
            s.chroot,
            s.wakeup.map(|w| (w.interval.as_secs(), w.only_if_used)),
            s.maxproc,
            s.command,
            s.args,
            s.overrides.iter().map(|o| format!("{}={}", o.name, o.value)).collect::<Vec<_>>(),
        );
    }
    let _ = writeln!(out, "## values");
    match &loaded.config {
        None => {
            let _ = writeln!(out, "(configuration not usable)");
        }
        Some(c) => {
            for name in [
                "max_use",
                "max_idle",
                "daemon_timeout",
                "ipc_timeout",
                "service_throttle_time",
                "command_time_limit",
                "default_process_limit",
                "export_environment",
                "inet_protocols",
                "strict_mailbox_ownership",
                "syslog_name",
                "queue_directory",
                "data_directory",
                "maillog_file",
                "mail_owner",
                "default_privs",
            ] {
                let _ = writeln!(
                    out,
                    "{name}: {:?}",
                    c.expanded(name).map(|r| r.map_err(|e| e.to_string()))
                );
            }
            let _ = writeln!(out, "max_use (typed): {}", c.int("max_use"));
            let _ = writeln!(out, "max_idle (typed): {:?}", c.time("max_idle"));
            let _ = writeln!(
                out,
                "export_environment (list): {:?}",
                c.list("export_environment")
            );
            let _ = writeln!(
                out,
                "strict_mailbox_ownership (typed): {}",
                c.bool("strict_mailbox_ownership")
            );
            for s in &c.master.services {
                let view = c.for_service(s).expect("service view");
                let _ = writeln!(
                    out,
                    "service {}: time_limit={:?} max_use={} max_idle={:?} syslog_name={} process_limit={:?}",
                    s.id(),
                    view.service_time_limit(&s.name),
                    view.int("max_use"),
                    view.time("max_idle"),
                    view.text("syslog_name"),
                    view.process_limit(s),
                );
            }
        }
    }
    out
}

#[test]
fn golden_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let bless = std::env::var_os("POSTERN_BLESS").is_some();
    let mut cases = 0;
    let mut failures = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let Some(stem) = name.strip_suffix(".main.cf") else {
            continue;
        };
        cases += 1;
        let main = std::fs::read(&path).unwrap();
        let master = std::fs::read(dir.join(format!("{stem}.master.cf"))).unwrap_or_default();
        let loaded = Config::from_text("main.cf", &main, "master.cf", &master, &ports());
        let got = render(&loaded, &main, &master);
        let expected_path = dir.join(format!("{stem}.expected"));
        if bless {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_default();
        if got != expected {
            failures.push(format!("--- {stem}.expected\n{expected}\n+++ got\n{got}"));
        }
    }
    assert!(
        cases >= 3,
        "found only {cases} golden cases in {}",
        dir.display()
    );
    assert!(
        failures.is_empty(),
        "golden mismatch (POSTERN_BLESS=1 to update):\n{}",
        failures.join("\n")
    );
}
