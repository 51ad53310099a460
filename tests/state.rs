//! Shared state on a real broker: a tool taking `State<Counter>` gets the
//! one value the server registered, on every call, and the application sees
//! what the calls did through its own handle; the gtm server keeps its posts
//! in state too.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use gtm_tools::PostLog;
use mcpmqtt::{tool, Server, State, ToolError};
use serde_json::json;
use support::fixtures::gtm_client;
use support::login::{client, online, PATIENCE};
use support::mosquitto::Mosquitto;

const NAMESPACE: &str = "state";

/// What the calls share: how many there were.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

/// A label the tool prefixes its answers with: a second state type.
pub struct Label(String);

/// Counts its calls, by `step` (default 1), and says the total.
#[tool(allowed_callers = ["scout"])]
async fn count(counter: State<Counter>, label: State<Label>, step: Option<u64>) -> Result<String, ToolError> {
    let step = step.unwrap_or(1);
    let total = counter.0.fetch_add(step, Ordering::SeqCst) + step;
    Ok(format!("{} {total}", label.0))
}

#[tokio::test]
async fn calls_share_the_registered_state() {
    let broker = Mosquitto::start();
    let counter = Arc::new(Counter::default());
    let server = online(
        &broker,
        Server::builder("counting")
            .namespace(NAMESPACE)
            .shared_state(counter.clone())
            .state(Label("total".into()))
            .tool::<count>(),
    )
    .await;
    let scout = client(&broker, NAMESPACE, "scout").await;
    let card = scout.wait_for_tool("count", PATIENCE).await.unwrap();

    // The state is not an argument: the card's schema has only `step`.
    let properties = card.input_schema["properties"].as_object().unwrap();
    assert_eq!(properties.keys().collect::<Vec<_>>(), ["step"]);

    for expected in 1..=3 {
        let answer = scout.call("count", json!({})).await.unwrap();
        assert_eq!(answer, json!(format!("total {expected}")));
    }
    // At once, too: every call adds to the one counter.
    let calls = (0..5).map(|_| scout.call("count", json!({"step": 10})));
    for answer in futures::future::join_all(calls).await {
        answer.unwrap();
    }
    assert_eq!(
        counter.0.load(Ordering::SeqCst),
        53,
        "the application sees the calls' count"
    );
    assert_eq!(scout.call("count", json!({})).await.unwrap(), json!("total 54"));

    scout.disconnect().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn gtm_posts_land_in_the_servers_log() {
    let broker = Mosquitto::start();
    let posts = Arc::new(PostLog::default());
    let server = online(&broker, gtm_tools::gtm_server_with(posts.clone())).await;
    let operator = gtm_client(&broker, "operator").await;
    operator.wait_for_tool("create_social_post", PATIENCE).await.unwrap();

    let receipt = operator
        .call(
            "create_social_post",
            json!({"platform": "reddit", "text": "hello from state"}),
        )
        .await
        .unwrap();
    let log = posts.posts();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].0.post_id, receipt["post_id"].as_str().unwrap());
    assert_eq!(log[0].1, "hello from state");

    operator.disconnect().await;
    server.shutdown().await.unwrap();
}
