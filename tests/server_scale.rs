//! A server hosting 10,000 tools, against Mosquitto with its default limits
//! (issue 15, point 2): it starts (its Last Will fits MQTT's 65,535 bytes,
//! its 10,001 subscriptions go in packets brokers accept), publishes every
//! Tool Card before its Server Card, serves its last tool, and goes offline
//! within its shutdown bound, Server Card first. After a broker restart
//! that lost everything, it subscribes and publishes it all again.
//!
//! With `--nocapture` it prints how long starting and stopping took; run it
//! with `--release` for figures worth quoting.

mod support;

use std::time::{Duration, Instant};

use mcpmqtt::{Error, Server, ServerBuilder, ToolDef, ToolError};
use serde_json::{json, Value};
use support::fixtures::Raw;
use support::login::{client, online};
use support::mosquitto::Mosquitto;

const NAMESPACE: &str = "scale";
const TOOLS: usize = 10_000;

/// Returns its arguments.
fn echo(name: String) -> ToolDef {
    ToolDef::builder(name)
        .description("Returns its arguments.")
        .handler(|_ctx, args| async move { Ok::<_, ToolError>(args) })
        .build()
        .expect("a valid tool")
}

/// The server `many`, hosting `n` tools named `t0000`, `t0001`, ...
fn many(n: usize) -> ServerBuilder {
    (0..n).fold(Server::builder("many").namespace(NAMESPACE), |server, i| {
        server.tool_def(echo(format!("t{i:04}")))
    })
}

fn server_card_topic() -> String {
    format!("{NAMESPACE}/mcp/servers/many/card")
}

/// The next card `raw` receives: its topic's card name and its JSON.
async fn next_card(raw: &mut Raw) -> (String, Value) {
    let (topic, card) = raw.recv_json().await;
    let name = topic.rsplit('/').nth(1).unwrap_or_default().to_owned();
    (name, card)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_ten_thousand_tools_starts_serves_its_last_tool_and_stops_in_time() {
    let broker = Mosquitto::start();
    let last = format!("t{:04}", TOOLS - 1);
    // Watching the Server Card and the last Tool Card from before the start,
    // to see the order they are published in.
    let mut raw = Raw::connect(&broker, "raw").await;
    raw.subscribe(&server_card_topic()).await;
    raw.subscribe(&format!("{NAMESPACE}/mcp/tools/{last}/card")).await;

    let builder = many(TOOLS);
    let started = Instant::now();
    let server = online(&broker, builder).await;
    let start_took = started.elapsed();

    let (name, tool_card) = next_card(&mut raw).await;
    assert_eq!(name, last, "every Tool Card is published before the Server Card");
    assert_eq!(tool_card["status"], "online");
    let (name, server_card) = next_card(&mut raw).await;
    assert_eq!(name, "many");
    assert_eq!(server_card["status"], "online");
    let tools = server_card["tools"].as_array().expect("a tool list");
    assert_eq!(tools.len(), TOOLS);
    assert_eq!(tools[TOOLS - 1], json!(last));
    let digest = server_card["tools_digest"].as_str().expect("a tools_digest");
    assert!(
        digest.len() == 16 && digest.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{digest}"
    );

    // The last call filter was subscribed: a call to the last tool is
    // served (a client needs no card to call).
    let caller = client(&broker, NAMESPACE, "tester").await;
    let answer = caller
        .call(&last, json!({"text": "hi"}))
        .await
        .expect("the last tool answers");
    assert_eq!(answer, json!({"text": "hi"}));
    caller.disconnect().await;

    // Stopping: the Server Card goes offline first, then the Tool Cards,
    // and within the documented bound (nothing is running: no drain).
    let grace = server.server().shutdown_grace();
    assert_eq!(
        grace,
        Duration::from_millis(9_600),
        "SHUTDOWN_GRACE and 0.4 ms per tool beyond 1,000"
    );
    let stopping = Instant::now();
    let stopped = server.shutdown().await;
    let stop_took = stopping.elapsed();
    // 20,000 UNSUBSCRIBEs, a few in flight at a time: on a machine whose
    // cores are all busy they can take longer than their share of the
    // bound. Then the server says so, and still goes offline below.
    match &stopped {
        Ok(()) => {}
        Err(Error::Goodbye(why)) if why.starts_with("no UNSUBACK within") && why.ends_with("its cards are offline") => {
            eprintln!("a slow unsubscribing: {why}");
        }
        Err(e) => panic!("a graceful shutdown, or one whose only trouble was the UNSUBACKs: {e}"),
    }
    let (name, server_card) = next_card(&mut raw).await;
    assert_eq!(
        (name.as_str(), server_card["status"].as_str()),
        ("many", Some("offline")),
        "the Server Card goes offline first"
    );
    assert_eq!(server_card["tools"].as_array().map(Vec::len), Some(TOOLS));
    let (name, tool_card) = next_card(&mut raw).await;
    assert_eq!((name, tool_card["status"].as_str()), (last, Some("offline")));
    assert!(stop_took < grace, "{stop_took:?}");
    eprintln!("{TOOLS} tools: start() {start_took:?}, shutdown() {stop_took:?}");
}

#[tokio::test]
async fn a_crashed_servers_will_fits_mqtt_when_the_tool_list_would_not() {
    let broker = Mosquitto::start();
    // 600 names of 120 bytes: an offline card of about 74,000 bytes, over the
    // 65,535 a Will may hold. The server would not even connect with it.
    let server = (0..600).fold(Server::builder("many").namespace(NAMESPACE), |server, i| {
        server.tool_def(echo(format!("{i:0>120}")))
    });
    let server = online(&broker, server).await;
    let instance = server.instance().to_owned();
    let mut raw = Raw::connect(&broker, "raw").await;
    raw.subscribe(&server_card_topic()).await;
    let (_, online_card) = next_card(&mut raw).await;
    assert_eq!(online_card["tools"].as_array().map(Vec::len), Some(600));

    server.abort();
    // The broker publishes the Will as soon as it sees the connection gone.
    let (_, will) = next_card(&mut raw).await;
    assert_eq!(will["status"], "offline");
    assert_eq!(
        will["instance"],
        json!(instance),
        "what a sibling needs to adopt the session"
    );
    assert_eq!(will["tools"], json!([]), "left out, to fit");
    assert!(will.get("tools_digest").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_restart_that_lost_everything_every_subscription_and_card_comes_back() {
    // No persistence: the restarted broker has no session, no subscription
    // and no retained card of the server's. 3,000 tools make 31 SUBSCRIBE
    // packets, enough to go round the broker's 20 packet ids while the
    // cards are republished.
    let mut broker = Mosquitto::start();
    let tools = 3_000;
    let last = format!("t{:04}", tools - 1);
    let server = online(&broker, many(tools)).await;
    let caller = client(&broker, NAMESPACE, "tester").await;

    tokio::task::block_in_place(|| broker.restart());
    // The server subscribes again, in packets, while it republishes its
    // cards. (Retained already, or published live, depending on who is
    // first: their order is not seen here.)
    let mut raw = Raw::connect(&broker, "raw").await;
    raw.subscribe(&server_card_topic()).await;
    raw.subscribe(&format!("{NAMESPACE}/mcp/tools/{last}/card")).await;
    let mut back = [next_card(&mut raw).await, next_card(&mut raw).await];
    back.sort_by(|a, b| a.0.cmp(&b.0));
    let back: Vec<_> = back
        .iter()
        .map(|(name, card)| (name.as_str(), card["status"].as_str()))
        .collect();
    assert_eq!(back, [("many", Some("online")), (last.as_str(), Some("online"))]);

    // The last filter is subscribed again. (A call that comes before it
    // is refused with 0x10, and published again by the client, which has
    // just reconnected, until the server is back.)
    let answer = caller
        .call(&last, json!({"text": "back"}))
        .await
        .expect("the last tool answers");
    assert_eq!(answer, json!({"text": "back"}));
    caller.disconnect().await;
    server.shutdown().await.expect("a graceful shutdown");
}
