//! The `sluice` binary's smallest check. Its real purpose: an integration
//! test in this package makes `cargo test --workspace` build the binary,
//! which the integration tests in `tests/` run as a real process.

#[test]
fn prints_its_version() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sluice "));
}
