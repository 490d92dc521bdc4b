//! postern-spawn is started by postern-master only: run by hand, it says so
//! and exits with the usage status, touching nothing. (This integration test
//! also makes `cargo test --workspace` build the binary for the end-to-end
//! tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn refuses_to_run_without_the_master() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern-spawn"))
        .arg("user=nobody")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("postern-spawn: fatal: unexpected argument 'user=nobody'"),
        "{err}"
    );
    assert!(err.contains("started by postern-master"), "{err}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern-spawn"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}
