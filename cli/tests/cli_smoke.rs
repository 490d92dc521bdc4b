//! The `postern` binary starts, parses its options, and reports usage errors
//! with the documented exit code. (Also makes cargo build the binary for the
//! end-to-end tests in the `tests` crate.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn postern(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_postern"))
        .args(args)
        .env_remove("POSTERN_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn help_and_usage() {
    let out = postern(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("check"));
    let out = postern(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(64));
}
