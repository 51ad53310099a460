#![allow(dead_code)]

pub mod mosquitto;
// Also present in this directory when this file was written (by others):
pub mod fixtures;
pub mod tools;

/// The path of an example binary built by `cargo test` (which builds the
/// examples alongside the tests).
pub fn example_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "example `{name}` not built at {}: run the tests with `cargo test` (which builds examples)",
        path.display()
    );
    path
}
