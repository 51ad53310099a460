//! The caller a handler sees: attested by the topic (extension), or claimed
//! in a plain v0.1 call; and `require_verified_caller`.

mod support;

use serde_json::json;
use support::fixtures::{call_props, Raw};
use support::mosquitto::Mosquitto;
use support::tools::{lab_client, lab_online, lab_server};

const REPLY: &str = "lab/mcp/clients/someone/responses";

#[tokio::test]
async fn handlers_see_the_attested_caller_or_a_claimed_one() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let client = lab_client(&broker, "tester").await;
    let me = client.call("whoami", json!({})).await.unwrap();
    assert_eq!(
        (me["caller"].as_str(), me["verified"].as_bool()),
        (Some("tester"), Some(true))
    );

    let mut v01 = Raw::connect(&broker, "someone").await;
    v01.subscribe(REPLY).await;
    let call = json!({"call_id": "w1", "arguments": {}, "client": "someone"});
    v01.publish("lab/mcp/tools/whoami/call", call.to_string(), call_props(REPLY, "w1"))
        .await;
    let (_, response) = v01.recv_json().await;
    assert_eq!(response["result"]["caller"], "someone");
    assert_eq!(response["result"]["verified"], false, "a v0.1 caller is only claimed");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn require_verified_caller_refuses_plain_v01_calls() {
    let broker = Mosquitto::start();
    let server = lab_server("lab")
        .broker(&broker.url())
        .require_verified_caller(true)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let mut v01 = Raw::connect(&broker, "someone").await;
    v01.subscribe(REPLY).await;
    let call = json!({"call_id": "w2", "arguments": {}, "client": "someone"});
    v01.publish("lab/mcp/tools/whoami/call", call.to_string(), call_props(REPLY, "w2"))
        .await;
    let (_, response) = v01.recv_json().await;
    assert_eq!(response["status"], "error");
    assert_eq!(response["error"]["type"], "unauthorized");

    // The same caller on its own topic is served.
    let call = json!({"call_id": "w3", "arguments": {}});
    v01.publish(
        "lab/mcp/tools/whoami/call/someone",
        call.to_string(),
        call_props(REPLY, "w3"),
    )
    .await;
    let (topic, response) = v01.recv_json().await;
    assert_eq!(topic, REPLY);
    assert_eq!(response["result"]["verified"], true);
    server.shutdown().await.unwrap();
}
