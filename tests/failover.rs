//! Broker lists and fail-over: a server and a client given two brokers carry
//! on through the second when the first dies. The two Mosquittos are
//! separate brokers (no bridge, no cluster): whatever the second knows, the
//! server and the client told it after failing over.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcpmqtt::{tool, BrokerOptions, CallContext, CallError, CallOptions, Client, Server};
use serde_json::json;
use support::fixtures::{Raw, PATIENCE};
use support::mosquitto::Mosquitto;
use tokio::sync::Notify;

const NAMESPACE: &str = "failover";

/// How many times each call id ran, and a bell rung as each run starts.
#[derive(Default)]
struct Runs {
    by_call: Mutex<HashMap<String, u32>>,
    started: Notify,
}

/// Sleeps `ms` milliseconds, then answers `ms`; counts its runs by call id.
#[tool]
async fn tick(
    ctx: &CallContext,
    /// How long to sleep, in milliseconds.
    ms: u64,
) -> u64 {
    let runs = ctx.state::<Runs>().expect("the runs are shared with the tool");
    *runs
        .by_call
        .lock()
        .unwrap()
        .entry(ctx.call_id().to_owned())
        .or_default() += 1;
    runs.started.notify_waiters();
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// The library's logs on stderr (shown for a failing test); `RUST_LOG` overrides.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mcpmqtt=debug"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

fn list(brokers: &[&Mosquitto]) -> String {
    brokers.iter().map(|b| b.url()).collect::<Vec<_>>().join(",")
}

async fn relay_online(brokers: &str, runs: Arc<Runs>) -> mcpmqtt::ServerHandle {
    Server::builder("relay")
        .namespace(NAMESPACE)
        .shared_state(runs)
        .tool::<tick>()
        .broker(brokers)
        .build()
        .expect("the server builds")
        .start()
        .await
        .expect("the server starts")
}

async fn client_on(brokers: &str) -> Client {
    Client::builder("tester")
        .broker(brokers)
        .namespace(NAMESPACE)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .expect("the client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_and_a_client_carry_on_through_the_second_broker_when_the_first_is_killed() {
    logs();
    // Every step is bounded; this bounds them all, so that a hang is a
    // failure that says so.
    tokio::time::timeout(Duration::from_secs(90), fail_over_while_calls_run())
        .await
        .expect("the fail-over scenario finishes within 90 s");
}

async fn fail_over_while_calls_run() {
    let mut first = Mosquitto::start();
    let second = Mosquitto::start();
    let brokers = list(&[&first, &second]);
    let runs = Arc::new(Runs::default());
    let server = relay_online(&brokers, runs.clone()).await;
    let client = client_on(&brokers).await;
    assert_eq!(client.call("tick", json!({"ms": 0})).await.unwrap(), json!(0));

    // Whatever reaches the second broker's card topic, the server put there
    // after failing over: nothing was ever connected to it before.
    let mut watcher = Raw::connect(&second, "watcher").await;
    watcher.subscribe(&format!("{NAMESPACE}/mcp/servers/relay/card")).await;
    assert!(
        watcher.recv_within(Duration::from_millis(200)).await.is_none(),
        "no card on the second broker before the fail-over"
    );

    // Calls in flight when the first broker dies: each succeeds, or fails
    // with `timeout` or `transport` by its deadline, never hangs.
    let deadline = Duration::from_secs(8);
    let started = runs.started.notified();
    tokio::pin!(started);
    started.as_mut().enable();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let at = Instant::now();
                let outcome = client
                    .call_with("tick", json!({"ms": 300 + i}), CallOptions::new().timeout(deadline))
                    .await;
                (i, outcome, at.elapsed())
            })
        })
        .collect();
    tokio::time::timeout(PATIENCE, started)
        .await
        .expect("a call starts running on the server");
    first.kill();

    let (topic, card) = tokio::time::timeout(PATIENCE, watcher.recv_json())
        .await
        .expect("the server's card reaches the second broker");
    assert_eq!(topic, format!("{NAMESPACE}/mcp/servers/relay/card"));
    assert_eq!(card["status"], "online", "{card}");

    for call in calls {
        let (i, outcome, took) = call.await.unwrap();
        eprintln!("call {i} in flight at the fail-over: {outcome:?} after {took:?}");
        assert!(
            took <= deadline + Duration::from_secs(2),
            "call {i} took {took:?}, past its deadline of {deadline:?}"
        );
        match outcome {
            Ok(v) => assert_eq!(v, json!(300 + i)),
            Err(CallError::Timeout { .. } | CallError::Transport(_)) => {}
            Err(e) => panic!("call {i} failed otherwise than by `timeout` or `transport`: {e}"),
        }
    }
    // A new call goes through the second broker, and sees the tool listed.
    assert_eq!(client.call("tick", json!({"ms": 1})).await.unwrap(), json!(1));
    assert!(server.is_connected());
    client.wait_for_tool("tick", PATIENCE).await.unwrap();
    assert!(
        runs.by_call.lock().unwrap().values().all(|&n| n == 1),
        "a call ran more than once: {:?}",
        runs.by_call.lock().unwrap()
    );
    server.shutdown().await.unwrap();
    // Its goodbye went to the second broker.
    let (_, card) = watcher.recv_json().await;
    assert_eq!(card["status"], "offline", "{card}");
}

#[tokio::test]
async fn the_first_connection_skips_a_broker_that_is_down() {
    let mut down = Mosquitto::start();
    let up = Mosquitto::start();
    down.kill();
    let brokers = list(&[&down, &up]);
    let server = relay_online(&brokers, Arc::default()).await;
    let client = client_on(&brokers).await;
    assert_eq!(client.call("tick", json!({"ms": 2})).await.unwrap(), json!(2));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_list_of_brokers_all_down_fails_naming_each() {
    let mut a = Mosquitto::start();
    let mut b = Mosquitto::start();
    a.kill();
    b.kill();
    let e = Client::builder("tester")
        .broker(&list(&[&a, &b]))
        .namespace(NAMESPACE)
        .connect()
        .await
        .expect_err("no broker of the list is up");
    let text = e.to_string();
    for port in [a.port(), b.port()] {
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    }
}

#[test]
fn a_bad_url_anywhere_in_the_list_is_an_error() {
    let e = Client::builder("tester")
        .broker("mqtt://127.0.0.1:1883,http://127.0.0.1:1884")
        .namespace(NAMESPACE);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let e = runtime.block_on(e.connect()).expect_err("a bad URL");
    assert!(e.to_string().contains("http"), "{e}");
    assert!(BrokerOptions::parse("mqtt://a:1,mqtt://b:2").is_ok());
}
