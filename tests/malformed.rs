//! Malformed calls get an error response when a reply address is known, a
//! warning otherwise, and the server keeps serving. Replies never leave
//! `{ns}/mcp/clients/+/responses`.

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::fixtures::{call_props, Raw};
use support::mosquitto::Mosquitto;
use support::tools::{lab_with_raw, RAW_REPLY};

const REPLY: &str = RAW_REPLY;
const CALL: &str = "lab/mcp/tools/echo/call";

async fn setup() -> (Mosquitto, mcpmqtt::ServerHandle, Raw) {
    lab_with_raw(64 * 1024).await
}

async fn still_serving(raw: &mut Raw) {
    let call = json!({"call_id": "alive", "arguments": {"text": "ok"}, "client": "raw"});
    raw.publish(CALL, call.to_string(), call_props(REPLY, "alive")).await;
    let (_, response) = raw.recv_json().await;
    assert_eq!(response["call_id"], "alive");
    assert_eq!(response["result"], "ok");
}

async fn expect_error(raw: &mut Raw, error_type: &str, mentions: &str) -> Value {
    let p = raw.recv().await;
    let response: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(response["status"], "error", "{response}");
    assert_eq!(response["error"]["type"], error_type, "{response}");
    let message = response["error"]["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message:?} should mention {mentions:?}");
    assert!(response["elapsed_ms"].is_u64());
    response
}

#[tokio::test]
async fn malformed_payloads_are_answered_when_a_reply_address_is_known() {
    let (_broker, server, mut raw) = setup().await;

    raw.publish(CALL, "this is not json", call_props(REPLY, "c1")).await;
    let r = expect_error(&mut raw, "invalid_arguments", "not valid JSON").await;
    assert_eq!(r["call_id"], "c1", "the call id comes back from the Correlation Data");

    raw.publish(CALL, vec![0xff, 0xfe, 0x00], call_props(REPLY, "c2")).await;
    expect_error(&mut raw, "invalid_arguments", "JSON").await;

    raw.publish(CALL, "[1, 2, 3]", call_props(REPLY, "c3")).await;
    expect_error(&mut raw, "invalid_arguments", "object").await;

    raw.publish(
        CALL,
        json!({"arguments": {"text": "x"}}).to_string(),
        call_props(REPLY, "c4"),
    )
    .await;
    expect_error(&mut raw, "invalid_arguments", "call_id").await;

    // No MQTT 5 properties: the payload's `client` says where to answer.
    raw.publish(
        CALL,
        json!({"arguments": {}, "client": "raw"}).to_string(),
        Default::default(),
    )
    .await;
    expect_error(&mut raw, "invalid_arguments", "call_id").await;

    raw.publish(
        CALL,
        json!({"call_id": "", "arguments": {}}).to_string(),
        call_props(REPLY, "c5"),
    )
    .await;
    expect_error(&mut raw, "invalid_arguments", "call_id").await;

    raw.publish(
        CALL,
        json!({"call_id": "c6", "arguments": "text"}).to_string(),
        call_props(REPLY, "c6"),
    )
    .await;
    expect_error(&mut raw, "invalid_arguments", "arguments").await;

    let big = json!({"call_id": "c7", "arguments": {"text": "x".repeat(100 * 1024)}});
    raw.publish(CALL, big.to_string(), call_props(REPLY, "c7")).await;
    expect_error(&mut raw, "invalid_arguments", "limit").await;

    raw.publish(
        CALL,
        json!({"call_id": "c8", "arguments": {"text": 1, "extra": true}}).to_string(),
        call_props(REPLY, "c8"),
    )
    .await;
    expect_error(&mut raw, "invalid_arguments", "text").await;

    still_serving(&mut raw).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_malformed_call_with_no_reply_address_is_dropped_and_serving_goes_on() {
    let (_broker, server, mut raw) = setup().await;
    raw.publish(CALL, "not json", Default::default()).await;
    raw.publish(CALL, json!({"call_id": "x"}).to_string(), Default::default())
        .await;
    assert!(
        raw.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing to answer to"
    );
    still_serving(&mut raw).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn replies_never_go_outside_the_clients_response_topics() {
    let (broker, server, mut raw) = setup().await;
    let mut spy = Raw::connect(&broker, "spy").await;
    spy.subscribe("#").await;
    let hostile = [
        "lab/mcp/tools/echo/card",
        "lab/mcp/servers/lab/card",
        "elsewhere/mcp/clients/raw/responses",
        "lab/mcp/clients/raw/responses/extra",
        "lab/mcp/clients/a/b/responses",
        "alarms/door/open",
    ];
    for (i, topic) in hostile.iter().enumerate() {
        let id = format!("h{i}");
        let call = json!({"call_id": id, "arguments": {"text": "x"}, "client": "raw"});
        raw.publish(CALL, call.to_string(), call_props(topic, &id)).await;
        // Same through the v0.1 payload field.
        let call = json!({"call_id": format!("{id}p"), "arguments": {"text": "x"}, "response_topic": topic});
        raw.publish(CALL, call.to_string(), Default::default()).await;
    }
    still_serving(&mut raw).await;
    // The spy saw the calls go in and only the one legitimate answer come out.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Some(p) = spy.recv_within(Duration::from_millis(100)).await {
        if p.retain {
            continue; // the cards, delivered on subscribe
        }
        let topic = String::from_utf8(p.topic.to_vec()).unwrap();
        assert!(topic == CALL || topic == REPLY, "the server published on {topic}");
        if topic == REPLY {
            let v: Value = serde_json::from_slice(&p.payload).unwrap();
            assert_eq!(v["call_id"], "alive");
        }
    }
    server.shutdown().await.unwrap();
}
