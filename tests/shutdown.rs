//! Shutdowns are bounded in every state of the broker: reachable, killed,
//! frozen (SIGSTOP), or killed in the middle of the shutdown. A server or
//! client that was told to stop stops, and the calls still waiting get
//! their errors.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcpmqtt::{CallError, CallOptions, Error, ServerHandle, SHUTDOWN_GRACE};
use serde_json::json;
use support::fixtures::{Raw, PATIENCE};
use support::login::online;
use support::mosquitto::Mosquitto;
use support::tools::{lab_client, lab_server};
use support::Spawned;

const DRAIN: Duration = Duration::from_secs(1);

/// The bound a shutdown must keep: its drain, the documented grace, and
/// room for a busy machine's scheduling. A shutdown that hangs blows it by
/// far; one that keeps it has stopped waiting on the broker.
fn bound() -> Duration {
    DRAIN + SHUTDOWN_GRACE + Duration::from_secs(4)
}

async fn lab_server_on(broker: &Mosquitto) -> ServerHandle {
    online(broker, lab_server("lab").drain_timeout(DRAIN)).await
}

/// Shuts down, failing the test (rather than hanging it) past twice the bound.
async fn timed_shutdown(server: ServerHandle) -> (Result<(), Error>, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(bound() * 2, server.shutdown())
        .await
        .expect("the shutdown hung");
    (result, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stops_within_its_bound_when_the_broker_was_killed() {
    let mut broker = Mosquitto::start();
    let server = lab_server_on(&broker).await;
    tokio::task::block_in_place(|| broker.kill());
    let (result, took) = timed_shutdown(server).await;
    assert!(took < bound(), "took {took:?}");
    let err = result.unwrap_err();
    assert!(matches!(err, Error::Goodbye(_)), "{err}");
    assert!(err.to_string().contains("Last Will"), "says what follows: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stops_within_its_bound_when_the_broker_is_frozen() {
    let mut broker = Mosquitto::start();
    let server = lab_server_on(&broker).await;
    broker.freeze();
    let (result, took) = timed_shutdown(server).await;
    broker.unfreeze();
    assert!(took < bound(), "took {took:?}");
    assert!(matches!(result, Err(Error::Goodbye(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_unsubacks_came_late_still_leaves_its_cards_offline() {
    let mut broker = Mosquitto::start();
    let server = lab_server_on(&broker).await;
    // The broker stalls through the unsubscribing and is back for the
    // goodbye: slow, not gone. It thaws as soon as the server says it gave
    // up on the UNSUBACKs (its own warning), with the goodbye's 2 s ahead.
    let gave_up = support::logs::watch(&["going offline without the broker's UNSUBACKs", server.instance()]);
    broker.freeze();
    let shutdown = tokio::spawn(timed_shutdown(server));
    let gave_up = tokio::time::timeout(bound(), gave_up).await;
    broker.unfreeze();
    gave_up
        .expect("the server gave up on the UNSUBACKs in time")
        .expect("the watcher");
    let (result, took) = shutdown.await.unwrap();
    assert!(took < bound(), "took {took:?}");
    assert!(
        matches!(&result, Err(Error::Goodbye(why)) if why.contains("UNSUBACK") && why.ends_with("its cards are offline")),
        "{result:?}"
    );
    // Retained: a fresh subscriber reads what the cards say now.
    let mut raw = Raw::connect(&broker, "watcher").await;
    for card in [
        "lab/mcp/servers/lab/card",
        "lab/mcp/tools/echo/card",
        "lab/mcp/tools/whoami/card",
    ] {
        raw.subscribe(card).await;
        let (topic, card) = raw.recv_json().await;
        assert_eq!(card["status"], "offline", "{topic}: {card}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_stops_within_its_bound_when_the_broker_dies_during_the_drain() {
    let mut broker = Mosquitto::start();
    let server = lab_server_on(&broker).await;
    let client = lab_client(&broker, "tester").await;
    client.wait_for_tool("sleepy", PATIENCE).await.unwrap();
    // A call that runs through the drain: `sleepy`'s own deadline is 300 ms.
    let call = {
        let client = client.clone();
        tokio::spawn(async move {
            let options = CallOptions::new().timeout(Duration::from_secs(5));
            client.call_with("sleepy", json!({"ms": 250}), options).await
        })
    };
    let started = Instant::now();
    let shutdown = tokio::spawn(async move { tokio::time::timeout(bound() * 2, server.shutdown()).await });
    // The call is on its way or running; the broker goes away mid-shutdown.
    tokio::task::block_in_place(|| broker.kill());
    let result = shutdown.await.unwrap().expect("the shutdown hung");
    assert!(started.elapsed() < bound(), "took {:?}", started.elapsed());
    // Whether the offline cards made it before the broker died is a race;
    // either way the shutdown returned, and says which.
    if let Err(e) = result {
        assert!(matches!(e, Error::Goodbye(_)), "{e}");
    }
    let outcome = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the call resolves by its deadline")
        .unwrap();
    match outcome {
        Ok(v) => assert_eq!(v, json!(250)),
        Err(CallError::Timeout { .. } | CallError::Transport(_) | CallError::Unavailable { .. }) => {}
        Err(other) => panic!("unexpected: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_shutdown_still_says_goodbye() {
    let broker = Mosquitto::start();
    let server = lab_server_on(&broker).await;
    let client = lab_client(&broker, "tester").await;
    client.wait_for_tool("echo", PATIENCE).await.unwrap();
    let (result, _) = timed_shutdown(server).await;
    result.expect("a reachable broker takes the goodbye");
    client.wait_for_server_offline("lab", PATIENCE).await.unwrap();
}

/// A client whose broker is frozen, with a call waiting.
async fn client_disconnect_with_a_waiting_call(freeze: bool) {
    let mut broker = Mosquitto::start();
    let server = lab_server_on(&broker).await;
    let client = lab_client(&broker, "tester").await;
    client.wait_for_tool("sleepy", PATIENCE).await.unwrap();
    if freeze {
        broker.freeze();
    } else {
        tokio::task::block_in_place(|| broker.kill());
    }
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { client.call("echo", json!({"text": "hello"})).await })
    };
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), client.disconnect())
        .await
        .expect("disconnect hung");
    let took = started.elapsed();
    let err = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting call got its error")
        .unwrap()
        .unwrap_err();
    assert!(matches!(err, CallError::Transport(_)), "{err}");
    // Documented: about two seconds (the grace for the goodbye, then the
    // connection is dropped); room for a busy machine.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    broker.unfreeze();
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnects_within_its_bound_when_the_broker_is_frozen() {
    client_disconnect_with_a_waiting_call(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_disconnects_within_its_bound_when_the_broker_was_killed() {
    client_disconnect_with_a_waiting_call(false).await;
}

/// The example server, SIGTERMed a second after its broker was killed,
/// exits within its bound with one clear line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_server_exits_on_sigterm_with_its_broker_down() {
    let mut broker = Mosquitto::start();
    let mut child = Spawned::spawn(
        Command::new(support::example_path("gtm_server"))
            .args(["--broker", &broker.url()])
            .env("RUST_LOG", "off")
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    );
    let mut stderr = BufReader::new(child.0.stderr.take().unwrap()).lines();
    let client = support::fixtures::gtm_client(&broker, "scout").await;
    client.wait_for_tool("crawl_site", PATIENCE).await.unwrap();
    tokio::task::block_in_place(|| broker.kill());
    // It notices the broker is gone (it is reconnecting) before the signal.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let pid = child.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let started = Instant::now();
    // The example's drain timeout is the default 10 s; nothing is running.
    let limit = Duration::from_secs(10) + SHUTDOWN_GRACE + Duration::from_secs(4);
    let status = tokio::task::block_in_place(|| loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < limit * 2,
            "still running {:?} after SIGTERM",
            started.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    });
    assert!(started.elapsed() < limit, "took {:?}", started.elapsed());
    assert!(!status.success(), "it could not say goodbye: {status}");
    let lines: Vec<String> = stderr.by_ref().map_while(Result::ok).collect();
    let last = lines.last().expect("a message");
    assert!(last.starts_with("gtm_server: stopped without a goodbye"), "{lines:?}");
    assert!(last.contains("Last Will"), "{last}");
}
