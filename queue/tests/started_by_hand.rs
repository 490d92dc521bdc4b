//! The queue daemons are started by postern-master only: run by hand they
//! say so and exit with the usage status. The tools answer usage errors.
//! (This integration test also makes `cargo test --workspace` build the
//! binaries for the end-to-end tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn daemons_refuse_to_run_without_the_master() {
    for (bin, name) in [
        (env!("CARGO_BIN_EXE_postern-submit"), "submit"),
        (env!("CARGO_BIN_EXE_postern-qmgr"), "qmgr"),
    ] {
        let out = Command::new(bin).args(["-n", name]).output().unwrap();
        assert_eq!(out.status.code(), Some(64), "{bin}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("need -c DIR"));
    }
}

#[test]
fn tools_explain_bad_usage() {
    let out = Command::new(env!("CARGO_BIN_EXE_postern-sendmail"))
        .arg("-Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option -Z"));
    let out = Command::new(env!("CARGO_BIN_EXE_postern-queue"))
        .args(["-c", "/nonexistent-postern", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
