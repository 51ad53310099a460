//! Nagle's algorithm is off on both ends: rumqttc leaves it on, and with it
//! every call waits tens of milliseconds on delayed ACKs. Observed with
//! strace on the example binaries, since rumqttc does not expose the socket.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fixtures::{gtm_online, PATIENCE};
use support::mosquitto::Mosquitto;

fn strace() -> &'static str {
    let found = Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "strace not found: install it with `apt-get install -y strace` (or run .ci/run)"
    );
    "strace"
}

fn traced(example: &str, args: &[&str], trace: &std::path::Path) -> support::Spawned {
    support::Spawned::spawn(
        Command::new(strace())
            .args(["-f", "-qq", "-e", "trace=setsockopt", "-o"])
            .arg(trace)
            .arg(support::example_path(example))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

fn nodelay_set(trace: &std::path::Path) -> bool {
    std::fs::read_to_string(trace)
        .unwrap_or_default()
        .contains("TCP_NODELAY, [1]")
}

#[tokio::test]
async fn server_and_client_sockets_set_tcp_nodelay() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();

    // The server end.
    let server_trace = dir.path().join("server.trace");
    let mut server = traced(
        "gtm_server",
        &["--broker", &broker.url(), "--namespace", "other"],
        &server_trace,
    );
    let deadline = Instant::now() + PATIENCE;
    while !nodelay_set(&server_trace) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();
    assert!(
        nodelay_set(&server_trace),
        "the server never set TCP_NODELAY:\n{}",
        std::fs::read_to_string(&server_trace).unwrap_or_default()
    );

    // The client end, calling a live server to completion.
    let gtm = gtm_online(&broker).await;
    let client_trace = dir.path().join("client.trace");
    let status = tokio::task::spawn_blocking({
        let url = broker.url();
        let trace = client_trace.clone();
        move || traced("scout", &["--broker", &url], &trace).0.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(status.success(), "the scout example failed");
    assert!(nodelay_set(&client_trace), "the client never set TCP_NODELAY");
    gtm.shutdown().await.unwrap();
}
