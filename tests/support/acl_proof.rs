//! The denial cases of the ACL proof, the same on every broker: given the
//! gtm server's rendered ACL loaded into a broker (Mosquitto in
//! `tests/acl_enforced.rs`, the RMQTT cluster in `tests/cluster.rs`), what a
//! caller speaking raw MQTT cannot do. Each check takes connections already
//! made, so that it runs on whichever broker or node they are on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpmqtt::{CallOptions, Client};
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};
use serde_json::{json, Value};

use super::fixtures::{call_props, Raw};

/// Every identity's password in these proofs.
pub fn password(identity: &str) -> String {
    format!("{identity}-secret")
}

/// How long a check waits for a message that must not come. The positive
/// case (the same traffic reaching its rightful reader) has come by then.
const NOTHING_WITHIN: Duration = Duration::from_millis(300);

/// What scout tries to read of operator's traffic.
pub const SPY_FILTERS: [&str; 5] = [
    "gtm/mcp/clients/operator/responses",
    "gtm/mcp/clients/operator/streams/+",
    "gtm/mcp/clients/+/responses",
    "gtm/mcp/clients/+/streams/+",
    "gtm/mcp/clients/#",
];

/// scout (raw) subscribes to operator's responses and private streams while
/// operator makes a streamed call and a post: nothing of it reaches scout.
/// Returns the broker's answer to each SUBSCRIBE (some brokers refuse it,
/// others filter at delivery).
pub async fn spy_reads_nothing(scout_raw: &mut Raw, operator: &Client) -> Vec<SubscribeReasonCode> {
    let mut codes = Vec::new();
    for filter in SPY_FILTERS {
        codes.push(scout_raw.subscribe_result(filter).await);
    }
    let partials = Arc::new(AtomicUsize::new(0));
    let seen = partials.clone();
    operator
        .call_with(
            "crawl_site",
            json!({"url": "https://example.com", "pages": 2}),
            CallOptions::new().on_partial(move |_| {
                seen.fetch_add(1, Ordering::SeqCst);
            }),
        )
        .await
        .unwrap();
    assert_eq!(partials.load(Ordering::SeqCst), 2, "operator got its partials");
    operator
        .call("create_social_post", json!({"platform": "x", "text": "again"}))
        .await
        .unwrap();
    if let Some(p) = scout_raw.recv_within(NOTHING_WITHIN).await {
        panic!("scout read {} of operator's traffic", String::from_utf8_lossy(&p.topic));
    }
    for filter in SPY_FILTERS {
        // Overlapping subscriptions would deliver scout's own responses twice.
        scout_raw.client.unsubscribe(filter).await.unwrap();
    }
    codes
}

/// scout cannot publish a Tool Card or a Server Card: each publish is
/// refused (0x87), and the retained card is still `server`'s.
pub async fn cards_cannot_be_forged(scout_raw: &mut Raw, server: &str) {
    let fake = json!({"version": "1", "tool": "query_watch_configs", "server": "evil", "status": "online"});
    for topic in [
        "gtm/mcp/tools/query_watch_configs/card",
        "gtm/mcp/servers/gtm-mcp-server/card",
        "gtm/mcp/tools/evil/card",
    ] {
        let reason = scout_raw.publish_retained(topic, fake.to_string()).await;
        assert_eq!(reason, PubAckReason::NotAuthorized, "scout published {topic}");
    }
    let card = retained_card(scout_raw).await;
    assert_eq!(card["server"], server, "the card was not poisoned");
}

/// scout cannot make the server publish anywhere but scout's own response
/// topic, nor pass as another caller (operator, listening raw): not through
/// the Response Topic or the payload's `response_topic`, not through the
/// call topic's caller level (refused, 0x87), not through the `client`
/// field.
pub async fn replies_reach_only_the_caller(scout_raw: &mut Raw, operator_raw: &mut Raw, server: &str) {
    scout_raw.subscribe("gtm/mcp/clients/scout/responses").await;
    operator_raw.subscribe("gtm/mcp/clients/operator/responses").await;
    // On scout's own call topic, the reply goes to scout's own response
    // topic whatever the call names.
    for (call_id, hostile) in [
        ("redirect-card", "gtm/mcp/tools/query_watch_configs/card"),
        ("redirect-operator", "gtm/mcp/clients/operator/responses"),
    ] {
        let call = json!({"call_id": call_id, "arguments": {}, "client": "scout", "response_topic": hostile});
        let reason = scout_raw
            .publish(
                "gtm/mcp/tools/query_watch_configs/call/scout",
                call.to_string(),
                call_props(hostile, call_id),
            )
            .await;
        assert_eq!(reason, PubAckReason::Success);
        let (topic, response) = scout_raw.recv_json().await;
        assert_eq!(topic, "gtm/mcp/clients/scout/responses");
        assert_eq!(response["call_id"], call_id);
    }
    // Through the v0.1 topic, the server refuses such an address outright.
    let call = json!({"call_id": "v01-redirect", "arguments": {}, "client": "scout",
                      "response_topic": "gtm/mcp/tools/query_watch_configs/card"});
    scout_raw
        .publish(
            "gtm/mcp/tools/query_watch_configs/call",
            call.to_string(),
            Default::default(),
        )
        .await;
    assert!(
        scout_raw.recv_within(NOTHING_WITHIN).await.is_none(),
        "nothing came back"
    );
    assert_eq!(
        retained_card(scout_raw).await["server"],
        server,
        "the card was not overwritten"
    );
    // Not another caller's call topic...
    for topic in [
        "gtm/mcp/tools/create_social_post/call/operator",
        "gtm/mcp/tools/query_watch_configs/call/analyst",
    ] {
        let call = json!({"call_id": "pose", "arguments": {"platform": "x", "text": "hi"}, "client": "operator"});
        let props = call_props("gtm/mcp/clients/scout/responses", "pose");
        let reason = scout_raw.publish(topic, call.to_string(), props).await;
        assert_eq!(reason, PubAckReason::NotAuthorized, "scout published on {topic}");
    }
    // ...nor the `client` field: the server answers scout, as scout.
    let call = json!({"call_id": "claim", "arguments": {}, "client": "operator"});
    scout_raw
        .publish(
            "gtm/mcp/tools/query_watch_configs/call/scout",
            call.to_string(),
            Default::default(),
        )
        .await;
    let (topic, response) = scout_raw.recv_json().await;
    assert_eq!(topic, "gtm/mcp/clients/scout/responses");
    assert_eq!(response["call_id"], "claim");
    assert!(
        operator_raw.recv_within(NOTHING_WITHIN).await.is_none(),
        "operator got an answer to a call it never made"
    );
}

/// The retained card of `query_watch_configs`, as `raw` reads it.
pub async fn retained_card(raw: &mut Raw) -> Value {
    raw.subscribe("gtm/mcp/tools/query_watch_configs/card").await;
    let (_, card) = raw.recv_json().await;
    raw.client
        .unsubscribe("gtm/mcp/tools/query_watch_configs/card")
        .await
        .unwrap();
    card
}
