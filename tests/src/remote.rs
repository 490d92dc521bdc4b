//! A remote SMTP server for the smtp agent's tests: `tests/smtp_server.py`
//! on a loopback address (several `127.0.0.x` stand for several hosts),
//! which can defer, refuse, drop mid-data, stay silent or turn clients away
//! at the greeting; killed on drop.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{eventually, Instance, WAIT};

/// The Python server, killed on drop.
#[derive(Debug)]
pub struct Remote {
    child: Child,
    /// The port it listens on.
    pub port: u16,
    out: tempfile::TempDir,
}

impl Remote {
    /// Starts the server on `ip` at a free port, with `args`.
    pub fn start(ip: &str, args: &[&str]) -> Remote {
        Remote::start_at(&format!("{ip}:0"), args)
    }

    /// Starts the server listening on `listen` (`ip:port`), with `args`;
    /// returns once it listens.
    pub fn start_at(listen: &str, args: &[&str]) -> Remote {
        let out = tempfile::tempdir().expect("tempdir");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("--listen")
            .arg(listen)
            .arg("--out")
            .arg(out.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 smtp_server.py");
        // Readiness: the server prints its port once it listens.
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let port = line
            .strip_prefix("ready ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("smtp_server.py did not start on {listen}: {line:?}"));
        Remote { child, port, out }
    }

    /// The messages received so far, oldest first: (envelope, data).
    pub fn messages(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for n in 1.. {
            let base = self.out.path().join(n.to_string());
            let Ok(data) = std::fs::read(base.with_extension("eml")) else {
                break;
            };
            let env = std::fs::read_to_string(base.with_extension("env")).unwrap_or_default();
            out.push((env, data));
        }
        out
    }

    /// Waits until `n` messages arrived; panics with `inst`'s log if not.
    pub fn wait_messages(&self, n: usize, inst: &Instance) -> Vec<(String, Vec<u8>)> {
        let ok = eventually(WAIT, || self.messages().len() >= n);
        assert!(ok, "the server never had {n} messages:\n{}", inst.log());
        self.messages()
    }

    /// The most sessions it had open at once (0: never connected to).
    pub fn max_sessions(&self) -> usize {
        self.counter("sessions.max")
    }

    /// A count the server keeps in file `name` (0 before the first):
    /// `sessions.max`, `transactions.max`, `connections`, `quits`.
    pub fn counter(&self, name: &str) -> usize {
        std::fs::read_to_string(self.out.path().join(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // Already gone is fine: the test is over either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
