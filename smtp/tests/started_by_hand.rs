//! postern-smtp is started by postern-master only: run by hand, it says so
//! and exits with the usage status. (This integration test also makes
//! `cargo test --workspace` build the binary for the end-to-end tests: a
//! crate without an integration test gets no `target/<profile>/` binary.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn refuses_to_run_without_the_master() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern-smtp"))
        .arg("deliver")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("postern-smtp: fatal: unexpected argument 'deliver'"),
        "{err}"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern-smtp"))
        .args(["-n", "smtp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("need -c DIR"));
}
