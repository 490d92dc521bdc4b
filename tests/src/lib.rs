//! # postern-tests
//!
//! **Name**: postern-tests — the end-to-end test harness.
//!
//! **Description**: runs the real `postern` binaries, built by the same
//! `cargo test --workspace` run (each binary crate has integration tests of
//! its own, so cargo builds its binaries before any test runs), from
//! `target/<profile>/`. Every command runs under a deadline and is killed if
//! it passes it; nothing waits on a fixed sleep.
//!
//! **Security**: tests run as root on the test machine and create temporary
//! directories only; what they start they kill.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long any one command may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The directory the workspace's binaries are built into.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(Path::parent)
        .expect("target directory")
        .to_path_buf()
}

/// The path of the workspace binary `name`, which must have been built.
pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test --workspace` so that cargo builds every binary",
        path.display()
    );
    path
}

/// What a finished command left.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cmd` to completion with standard input closed, within [`DEADLINE`].
pub fn run(cmd: &mut Command) -> Outcome {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let pid = child.id();
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut stdout = String::new();
        let mut stderr = String::new();
        let _ = out.read_to_string(&mut stdout);
        let _ = err.read_to_string(&mut stderr);
        let status = child.wait();
        let _ = tx.send((status, stdout, stderr));
    });
    match rx.recv_timeout(DEADLINE) {
        Ok((status, stdout, stderr)) => {
            let status = status.expect("wait");
            Outcome {
                code: status.code(),
                stdout,
                stderr,
            }
        }
        Err(_) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            panic!("{cmd:?} did not finish within {DEADLINE:?}; killed");
        }
    }
}

/// Runs `postern` with `args`, with `$POSTERN_CONFIG` removed from its environment.
pub fn postern(args: &[&str]) -> Outcome {
    run(Command::new(bin("postern"))
        .args(args)
        .env_remove("POSTERN_CONFIG"))
}
