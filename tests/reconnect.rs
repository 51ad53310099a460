//! The rumqttc pitfalls: packet size, lost sessions, reconnects.

mod support;

use std::time::{Duration, Instant};

use mcpmqtt::{CallError, Client};
use serde_json::json;
use support::fixtures::{gtm_client, gtm_online, PATIENCE};
use support::mosquitto::Mosquitto;
use support::tools::{lab_client, lab_online};

#[tokio::test]
async fn payloads_far_above_rumqttc_default_packet_size_get_through() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let client = lab_client(&broker, "tester").await;
    let text = "x".repeat(900 * 1024);
    let echoed = client.call("echo", json!({"text": text})).await.unwrap();
    assert_eq!(echoed.as_str().map(str::len), Some(900 * 1024));
    server.shutdown().await.unwrap();
}

/// Calls until one succeeds, as a caller would while the broker is away.
async fn call_until_ok(client: &Client, tool: &str, args: serde_json::Value) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client
            .call_with(
                tool,
                args.clone(),
                mcpmqtt::CallOptions::new().timeout(Duration::from_secs(2)),
            )
            .await
        {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                assert!(
                    matches!(
                        e,
                        CallError::Transport(_) | CallError::Timeout { .. } | CallError::Unavailable { .. }
                    ),
                    "unexpected error while reconnecting: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("never recovered: {e}"),
        }
    }
}

#[tokio::test]
async fn subscriptions_and_cards_come_back_after_the_broker_forgets_the_session() {
    // No persistence: the restarted broker knows no session, no subscription
    // and no retained card.
    let mut broker = Mosquitto::start();
    let server = gtm_online(&broker).await;
    let scout = gtm_client(&broker, "scout").await;
    scout.call("query_watch_configs", json!({})).await.unwrap();

    broker.restart();

    let configs = call_until_ok(&scout, "query_watch_configs", json!({"platform": "x"})).await;
    assert_eq!(configs["configs"][0]["platform"], "x");
    // The server republished its cards, and the client resubscribed to them.
    scout.wait_for_tool("crawl_site", PATIENCE).await.unwrap();
    assert_eq!(scout.tools().await.unwrap().len(), 3);
    assert!(server.is_connected());
    server.shutdown().await.unwrap();
}
