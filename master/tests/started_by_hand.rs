//! postern-master is started by `postern start`: run by hand with an
//! argument it does not know, it says so and exits with the usage status.
//! (This integration test also makes `cargo test --workspace` build the
//! binary for the end-to-end tests.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn an_unknown_argument_is_a_usage_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_postern-master"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("postern-master: fatal: unexpected argument '--bogus'"),
        "{out:?}"
    );
}
