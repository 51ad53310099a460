//! The README's first command works with no broker installed: the quickstart
//! example starts its embedded broker with the generated ACL, calls the
//! tools, streams progress, and shows the broker refusing scout a tool.

mod support;

use std::process::Command;

#[test]
fn the_quickstart_runs_on_its_embedded_broker() {
    let out = Command::new(support::example_path("quickstart"))
        .env_remove("MQTT_URL")
        .output()
        .expect("the quickstart runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "quickstart failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("started an embedded MQTT 5 broker at mqtt://127.0.0.1:"),
        "{stdout}"
    );
    assert_eq!(stdout.matches("progress: crawled").count(), 4, "{stdout}");
    assert!(stdout.contains("\"platform\":\"hackernews\""), "{stdout}");
    assert!(stdout.contains("refused by the server: invalid arguments"), "{stdout}");
}
