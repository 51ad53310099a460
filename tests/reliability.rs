//! No call lost or run twice: broker restarts, message expiry, duplicates,
//! graceful drains, a connection given up, and crashed instances.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use mcpmqtt::{tool, BrokerOptions, CallError, CallOptions, Client, Server, ServerBuilder, Status};
use serde_json::json;
use support::fixtures::{call_props, gtm_client, Raw, PATIENCE};
use support::mosquitto::Mosquitto;
use support::proxy::Proxy;
use support::Spawned;

/// How many times each call id ran, across every test of this file (each
/// test uses ids of its own).
fn runs() -> &'static Mutex<HashMap<String, u32>> {
    static RUNS: OnceLock<Mutex<HashMap<String, u32>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

fn runs_of(id: &str) -> u32 {
    runs().lock().unwrap().get(id).copied().unwrap_or(0)
}

/// Records that it ran for `id`, then takes `ms` milliseconds.
#[tool]
async fn tally(
    /// Who is counting.
    id: String,
    /// How long to take.
    ms: Option<u64>,
) -> String {
    *runs().lock().unwrap().entry(id.clone()).or_default() += 1;
    tokio::time::sleep(Duration::from_millis(ms.unwrap_or(0))).await;
    id
}

/// Calls `tally` for `id` in the background.
fn spawn_tally(client: &Client, id: &str, ms: u64) -> tokio::task::JoinHandle<Result<serde_json::Value, CallError>> {
    let (client, arguments) = (client.clone(), json!({"id": id, "ms": ms}));
    tokio::spawn(async move { client.call("tally", arguments).await })
}

fn tally_server(broker: &Mosquitto) -> ServerBuilder {
    Server::builder("ledger")
        .namespace("rel")
        .broker(&broker.url())
        .tool::<tally>()
}

async fn client(broker: &Mosquitto, identity: &str) -> Client {
    client_with(broker, identity, |o| o).await
}

async fn client_with(
    broker: &Mosquitto,
    identity: &str,
    configure: impl FnOnce(BrokerOptions) -> BrokerOptions,
) -> Client {
    Client::builder(identity)
        .broker_options(configure(BrokerOptions::parse(&broker.url()).unwrap()))
        .namespace("rel")
        .default_timeout(Duration::from_secs(30))
        .connect()
        .await
        .expect("the client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_gets_exactly_one_response_across_a_broker_restart() {
    let mut broker = Mosquitto::builder().persistence(true).start();
    let server = tally_server(&broker).build().unwrap().start().await.unwrap();
    let client = client(&broker, "restarter").await;
    client.wait_for_tool("tally", PATIENCE).await.unwrap();

    const N: usize = 300;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls: Vec<_> = (0..N)
        .map(|i| {
            let client = client.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let id = format!("restart-{i}");
                let result = client.call("tally", json!({"id": id, "ms": 20})).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                (id, result)
            })
        })
        .collect();
    // Restart in the middle of the run.
    let deadline = Instant::now() + PATIENCE;
    while done.load(std::sync::atomic::Ordering::SeqCst) < N / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = done.load(std::sync::atomic::Ordering::SeqCst);
    assert!(before < N, "the restart must come while calls are in flight");
    tokio::task::block_in_place(|| broker.restart());

    for outcome in join_all(calls).await {
        let (id, result) = outcome.unwrap();
        assert_eq!(result.unwrap_or_else(|e| panic!("{id}: {e}")), json!(id));
        assert_eq!(runs_of(&id), 1, "{id} ran {} times", runs_of(&id));
    }
    eprintln!("{before} of {N} calls had finished when the broker restarted");
    server.shutdown().await.unwrap();
}

/// After a broker restart the client is back before the server has its
/// subscription again: the calls it makes meanwhile are refused with PUBACK
/// 0x10, and must not fail for that (SPEC §4, "A refusal that passes").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_made_before_the_server_is_subscribed_again_succeed_once_it_is() {
    let mut broker = Mosquitto::builder().persistence(true).start();
    // The server reaches the broker through a proxy that can hold it off.
    let proxy = Proxy::start(broker.port());
    let server = tally_server(&broker)
        .broker(&proxy.url())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = client(&broker, "early").await;
    client.wait_for_tool("tally", PATIENCE).await.unwrap();

    proxy.refuse_new(true);
    tokio::task::block_in_place(|| broker.restart());
    let calls: Vec<_> = (0..10)
        .map(|i| spawn_tally(&client, &format!("early-{i}"), 0))
        .collect();
    // The broker refused calls while the server was away.
    let refused = "Sending PUBACK to early (m";
    let deadline = Instant::now() + PATIENCE;
    while !broker
        .log()
        .lines()
        .any(|l| l.contains(refused) && l.ends_with("rc16)"))
    {
        assert!(
            Instant::now() < deadline,
            "no call was refused with 0x10 while the server was away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.refuse_new(false);
    for (i, call) in calls.into_iter().enumerate() {
        let id = format!("early-{i}");
        assert_eq!(call.await.unwrap().unwrap_or_else(|e| panic!("{id}: {e}")), json!(id));
        assert_eq!(runs_of(&id), 1, "{id} ran {} times", runs_of(&id));
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_expires_while_the_server_is_away_is_not_run() {
    let broker = Mosquitto::start();
    let options = BrokerOptions::parse(&broker.url()).unwrap().with_client_id("ledger-1");
    let server = tally_server(&broker).broker_options(options.clone()).build().unwrap();
    let first = server.start().await.unwrap();
    let client = client(&broker, "patient").await;
    client.wait_for_tool("tally", PATIENCE).await.unwrap();

    // The server drops off without a goodbye; its session stays.
    first.abort();
    client.wait_for_server_offline("ledger", PATIENCE).await.unwrap();

    let short = client.call_with(
        "tally",
        json!({"id": "expiry-short"}),
        CallOptions::new().timeout(Duration::from_secs(1)),
    );
    let err = short.await.unwrap_err();
    assert!(matches!(err, CallError::Timeout { .. }), "{err}");
    let long = spawn_tally(&client, "expiry-long", 0);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The same instance comes back and resumes its session.
    let again = tally_server(&broker)
        .broker_options(options)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(
        long.await.unwrap().unwrap(),
        json!("expiry-long"),
        "queued while away, run on return"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runs_of("expiry-long"), 1);
    assert_eq!(
        runs_of("expiry-short"),
        0,
        "its caller had given up: it expired in the broker"
    );
    again.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_duplicate_call_is_answered_from_the_cache_not_run_again() {
    let broker = Mosquitto::start();
    let server = tally_server(&broker).build().unwrap().start().await.unwrap();
    let mut raw = Raw::connect(&broker, "replayer").await;
    let reply = "rel/mcp/clients/replayer/responses";
    raw.subscribe(reply).await;
    let call_topic = "rel/mcp/tools/tally/call";
    let call = json!({"call_id": "dup-1", "arguments": {"id": "dup", "ms": 300}, "client": "replayer"}).to_string();

    // Sent twice while it runs: one run, one response.
    raw.publish(call_topic, call.clone(), call_props(reply, "dup-1")).await;
    raw.publish(call_topic, call.clone(), call_props(reply, "dup-1")).await;
    let (_, first) = raw.recv_json().await;
    assert_eq!(first["result"], "dup");
    assert!(
        raw.recv_within(Duration::from_millis(500)).await.is_none(),
        "a duplicate of a running call gets no second response"
    );

    // Sent again once finished: the cached response, byte for byte.
    raw.publish(call_topic, call.clone(), call_props(reply, "dup-1")).await;
    let (_, replayed) = raw.recv_json().await;
    assert_eq!(replayed, first);
    assert_eq!(runs_of("dup"), 1);

    // The same call id from another caller is another call: it runs, and
    // never gets the first caller's cached result.
    let mut other = Raw::connect(&broker, "other").await;
    let other_reply = "rel/mcp/clients/other/responses";
    other.subscribe(other_reply).await;
    let theirs = json!({"call_id": "dup-1", "arguments": {"id": "dup-other"}, "client": "other"}).to_string();
    other
        .publish(call_topic, theirs, call_props(other_reply, "dup-1"))
        .await;
    let (_, response) = other.recv_json().await;
    assert_eq!(response["result"], "dup-other");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_running_calls_then_goes_offline() {
    let broker = Mosquitto::start();
    let server = tally_server(&broker).build().unwrap().start().await.unwrap();
    let client = client(&broker, "drainee").await;
    client.wait_for_tool("tally", PATIENCE).await.unwrap();
    let calls: Vec<_> = (0..5)
        .map(|i| spawn_tally(&client, &format!("drain-{i}"), 400))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await; // all five running
    let started = Instant::now();
    server.shutdown().await.unwrap();
    let took = started.elapsed();
    for (i, call) in join_all(calls).await.into_iter().enumerate() {
        assert_eq!(
            call.unwrap().unwrap(),
            json!(format!("drain-{i}")),
            "finished, not cut off"
        );
    }
    assert!(
        took >= Duration::from_millis(150),
        "shutdown waited for the calls ({took:?})"
    );
    let card = client.wait_for_server_offline("ledger", PATIENCE).await.unwrap();
    assert_eq!(card.status, Status::Offline);
    let err = client.call("tally", json!({"id": "drain-late"})).await.unwrap_err();
    assert!(
        matches!(err, CallError::Unavailable { .. }),
        "no one serves it now: {err}"
    );
}

#[tokio::test]
async fn calls_waiting_for_a_slot_at_shutdown_are_answered_not_run() {
    let broker = Mosquitto::start();
    // One slot: the broker may hand over two calls more, which wait in line.
    let server = tally_server(&broker)
        .max_concurrent_calls(1)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = client(&broker, "queuer").await;
    client.wait_for_tool("tally", PATIENCE).await.unwrap();
    let running = spawn_tally(&client, "line-0", 600);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting: Vec<_> = (1..3)
        .map(|i| spawn_tally(&client, &format!("line-{i}"), 600))
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await; // both in line
    let started = Instant::now();
    server.shutdown().await.unwrap();
    assert_eq!(
        running.await.unwrap().unwrap(),
        json!("line-0"),
        "the running call finished"
    );
    for (i, call) in join_all(waiting).await.into_iter().enumerate() {
        let err = call.unwrap().unwrap_err();
        assert!(
            matches!(&err, CallError::Unavailable { message } if message.contains("shutting down")),
            "call {}: {err}",
            i + 1
        );
        assert_eq!(runs_of(&format!("line-{}", i + 1)), 0, "never started");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn calls_still_running_at_the_drain_deadline_get_unavailable() {
    let broker = Mosquitto::start();
    let server = tally_server(&broker)
        .drain_timeout(Duration::from_millis(200))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = client(&broker, "cutoff").await;
    client.wait_for_tool("tally", PATIENCE).await.unwrap();
    let slow = spawn_tally(&client, "cut", 20_000);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = Instant::now();
    server.shutdown().await.unwrap();
    let err = slow.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, CallError::Unavailable { message } if message.contains("shut down")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "the drain deadline held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_fails_waiting_calls_when_reconnecting_is_given_up() {
    let mut broker = Mosquitto::start();
    let server = tally_server(&broker).build().unwrap().start().await.unwrap();
    let client = client_with(&broker, "quitter", |o| o.with_give_up_after(Duration::from_millis(500))).await;
    client.wait_for_tool("tally", PATIENCE).await.unwrap();
    let waiting = spawn_tally(&client, "given-up", 20_000);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tokio::task::block_in_place(|| broker.kill());
    let err = waiting.await.unwrap().unwrap_err();
    assert!(
        matches!(&err, CallError::Transport(m) if m.contains("gave up")),
        "a clear error: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "long before the call's 30 s timeout"
    );
    let err = client.call("tally", json!({"id": "after"})).await.unwrap_err();
    assert!(matches!(err, CallError::Transport(_)), "{err}");
    server.abort();
}

const PLATFORMS: [&str; 4] = ["reddit", "x", "hackernews", "linkedin"];

/// The gtm server example as a process of its own, to SIGKILL.
fn gtm_process(broker: &Mosquitto, extra_args: &[&str]) -> Spawned {
    Spawned::spawn(
        Command::new(support::example_path("gtm_server"))
            .args(["--broker", &broker.url()])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )
}

async fn online_tools(client: &Client) -> Vec<String> {
    client.tools().await.unwrap().into_iter().map(|c| c.tool).collect()
}

#[tokio::test]
async fn a_crashed_server_is_announced_offline_and_its_tools_are_no_longer_listed() {
    let broker = Mosquitto::start();
    let mut server = gtm_process(&broker, &[]);
    let client = gtm_client(&broker, "scout").await;
    client.wait_for_tool("crawl_site", PATIENCE).await.unwrap();
    assert_eq!(online_tools(&client).await.len(), 3);
    server.kill();
    client
        .wait_for_server_offline("gtm-mcp-server", PATIENCE)
        .await
        .unwrap();
    assert!(
        online_tools(&client).await.is_empty(),
        "the tool cards still say online, but their server's Last Will says it is gone"
    );
}

#[tokio::test]
async fn with_two_instances_calls_keep_succeeding_on_the_survivor() {
    let broker = Mosquitto::start();
    let mut first = gtm_process(&broker, &[]);
    let client = gtm_client(&broker, "scout").await;
    client.wait_for_tool("crawl_site", PATIENCE).await.unwrap();
    let mut second = gtm_process(&broker, &[]);
    // Both instances serve: each has taken calls.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let call = |i: usize| {
        let client = client.clone();
        async move {
            client
                .call("query_watch_configs", json!({"platform": PLATFORMS[i % 4]}))
                .await
        }
    };
    for result in join_all((0..20).map(call)).await {
        result.unwrap();
    }

    first.kill();
    // Straight away, before anyone has noticed: half of these go to the dead
    // instance's session, which the survivor takes over.
    let started = Instant::now();
    for result in join_all((0..40).map(call)).await {
        result.unwrap_or_else(|e| panic!("a call failed after the crash: {e}"));
    }
    eprintln!("40 calls after the crash took {:?}", started.elapsed());
    // The survivor put the server card back online, so the tools are listed.
    let deadline = Instant::now() + PATIENCE;
    while online_tools(&client).await.len() != 3 {
        assert!(Instant::now() < deadline, "the survivor's tools are listed again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.kill();
}

#[tokio::test]
async fn a_restarted_instance_keeps_serving_when_the_broker_forces_client_ids() {
    // Under `use_username_as_clientid`, taking over the crashed instance's
    // session by its client id would take over the new instance's own (the
    // broker forces both to the username). Whatever adoption tries, the new
    // instance must end up serving.
    let broker = Mosquitto::builder()
        .user("gtm-mcp-server", "server-pw")
        .user("scout", "scout-pw")
        .extra_config("use_username_as_clientid true")
        .start();
    let run = || gtm_process(&broker, &["--username", "gtm-mcp-server", "--password", "server-pw"]);
    let client = Client::builder("scout")
        .broker(&broker.url())
        .password("scout-pw")
        .namespace("gtm")
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap();
    let mut first = run();
    client.wait_for_tool("crawl_site", PATIENCE).await.unwrap();
    first.kill();
    client
        .wait_for_server_offline("gtm-mcp-server", PATIENCE)
        .await
        .unwrap();
    let _second = run();
    let deadline = Instant::now() + PATIENCE;
    while online_tools(&client).await.len() != 3 {
        assert!(Instant::now() < deadline, "the restarted server's tools are listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Past the adoption's quiet second: the server must still hold its
    // subscriptions and answer.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for result in
        join_all((0..20).map(|i| client.call("query_watch_configs", json!({"platform": PLATFORMS[i % 4]})))).await
    {
        result.unwrap_or_else(|e| panic!("a call to the restarted server failed: {e}"));
    }
}

/// The next card on `raw` with this `status`, retained or not.
async fn next_server_card(raw: &mut Raw, status: &str) -> serde_json::Value {
    loop {
        let (_, card) = tokio::time::timeout(PATIENCE, raw.recv_json())
            .await
            .unwrap_or_else(|_| panic!("no {status} Server Card in time"));
        if card["status"] == status {
            return card;
        }
    }
}

#[tokio::test]
async fn only_a_last_will_names_an_instance_to_adopt() {
    // A graceful stop drains its calls and unsubscribes: its offline card
    // names no instance, so no sibling (nor the next instance of the same
    // process, under a client id the broker forces) takes a session over.
    let broker = Mosquitto::start();
    let mut watcher = Raw::connect(&broker, "card-watcher").await;
    watcher.subscribe("gtm/mcp/servers/gtm-mcp-server/card").await;

    let server = support::fixtures::gtm_online(&broker).await;
    let online = next_server_card(&mut watcher, "online").await;
    assert!(online["instance"].is_string(), "{online}");
    server.shutdown().await.unwrap();
    let goodbye = next_server_card(&mut watcher, "offline").await;
    assert!(goodbye.get("instance").is_none(), "{goodbye}");

    let mut crashing = gtm_process(&broker, &[]);
    let online = next_server_card(&mut watcher, "online").await;
    crashing.kill();
    let will = next_server_card(&mut watcher, "offline").await;
    assert_eq!(will["instance"], online["instance"], "the Will names the dead instance");
}
