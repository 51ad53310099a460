#![allow(dead_code)]

pub mod acl_proof;
pub mod fixtures;
pub mod gathering;
pub mod login;
pub mod logs;
pub mod mosquitto;
pub mod pki;
pub mod proxy;
pub mod rmqtt;
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

/// A child process (and everything it started, e.g. under strace) that is
/// killed when dropped, so a failing test leaves nothing running.
pub struct Spawned(pub std::process::Child);

impl Spawned {
    /// Spawns `command` in a process group of its own.
    pub fn spawn(command: &mut std::process::Command) -> Spawned {
        use std::os::unix::process::CommandExt;
        let child = command
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not run {command:?}: {e}"));
        Spawned(child)
    }

    /// SIGKILLs the whole process group and reaps the child. Idempotent.
    pub fn kill(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = std::process::Command::new("kill")
                // `--`: without it, `-PGID` may be read as an option.
                .args(["-s", "KILL", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.kill();
    }
}
