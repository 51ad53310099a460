//! Wire compatibility with the draft v0.1 protocol of
//! `@cloudsignal/mcp-over-mqtt`, with its exact field names, both ways.

mod support;

use bytes::Bytes;
use mcpmqtt::{CallError, Client, Partial};
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use serde_json::{json, Value};
use support::fixtures::{call_props, gtm_online, Raw, PATIENCE};
use support::gathering::call_gathering;
use support::mosquitto::Mosquitto;

#[tokio::test]
async fn a_v01_shaped_call_is_served() {
    let broker = Mosquitto::start();
    let server = gtm_online(&broker).await;
    let mut v01 = Raw::connect(&broker, "v01-agent").await;
    let responses = "gtm/mcp/clients/v01-agent/responses";
    v01.subscribe(responses).await;

    // Exactly the v0.1 request: call_id, arguments, client, timestamp, and the
    // MQTT 5 Response Topic and Correlation Data.
    let call = json!({
        "call_id": "0b7f3e1c-v01",
        "arguments": {"platform": "linkedin"},
        "client": "v01-agent",
        "timestamp": "2026-11-23T12:00:00.000Z"
    });
    let reason = v01
        .publish(
            "gtm/mcp/tools/query_watch_configs/call",
            call.to_string(),
            call_props(responses, "0b7f3e1c-v01"),
        )
        .await;
    assert_eq!(reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
    let p = v01.recv().await;
    let props = p.properties.clone().unwrap();
    assert_eq!(
        props.correlation_data.as_deref(),
        Some(&b"0b7f3e1c-v01"[..]),
        "Correlation Data is echoed"
    );
    let response: Value = serde_json::from_slice(&p.payload).unwrap();
    let mut keys: Vec<&str> = response.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["call_id", "elapsed_ms", "result", "status"]);
    assert_eq!(response["call_id"], "0b7f3e1c-v01");
    assert_eq!(response["status"], "ok");
    assert_eq!(response["result"]["configs"][0]["platform"], "linkedin");

    // Without MQTT 5 properties: the reply goes to {ns}/mcp/clients/{client}/responses.
    let call =
        json!({"call_id": "c-by-client", "arguments": {}, "client": "v01-agent", "timestamp": "2026-11-23T12:00:00Z"});
    v01.publish(
        "gtm/mcp/tools/query_watch_configs/call",
        call.to_string(),
        PublishProperties::default(),
    )
    .await;
    let (topic, response) = v01.recv_json().await;
    assert_eq!(topic, responses);
    assert_eq!(response["call_id"], "c-by-client");

    // The MQTT 3.1.1 fallback: response_topic in the payload.
    let call = json!({"call_id": "c-by-field", "arguments": {}, "client": "someone", "response_topic": responses});
    v01.publish(
        "gtm/mcp/tools/query_watch_configs/call",
        call.to_string(),
        PublishProperties::default(),
    )
    .await;
    let (_, response) = v01.recv_json().await;
    assert_eq!(response["call_id"], "c-by-field");

    // A v0.1 error shape.
    let call = json!({"call_id": "c-bad", "arguments": {"platform": "myspace"}, "client": "v01-agent"});
    v01.publish(
        "gtm/mcp/tools/query_watch_configs/call",
        call.to_string(),
        call_props(responses, "c-bad"),
    )
    .await;
    let (_, response) = v01.recv_json().await;
    assert_eq!(response["status"], "error");
    assert_eq!(response["error"]["type"], "invalid_arguments");
    assert!(response["error"]["message"].is_string());
    server.shutdown().await.unwrap();
}

/// A stand-in for the v0.1 package's MCPServer: a retained v0.1 Tool Card,
/// partials stamped with wall-clock `seq` and no `done`, then the response.
async fn fake_v01_server(broker: &Mosquitto) -> tokio::task::JoinHandle<()> {
    let mut raw = Raw::connect(broker, "legacy-server").await;
    let card = json!({
        "version": "1", "tool": "legacy", "server": "legacy-server", "namespace": "gtm",
        "description": "A tool hosted by the TypeScript package",
        "input_schema": {"type": "object", "properties": {"fail": {"type": "boolean"}}},
        "supports_streaming": true, "requires_auth": false, "allowed_callers": [],
        "version_info": {"sdk": "@cloudsignal/mcp-over-mqtt@0.1.8", "tool": "1.0.0"},
        "status": "online", "last_seen": "2026-11-23T12:00:00.000Z"
    });
    raw.client
        .publish(
            "gtm/mcp/tools/legacy/card",
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            true,
            card.to_string(),
        )
        .await
        .unwrap();
    raw.subscribe("gtm/mcp/tools/legacy/call").await;
    tokio::spawn(async move {
        loop {
            let call = raw.recv_within(std::time::Duration::from_secs(60)).await;
            let Some(call) = call else { return };
            let props = call.properties.clone().unwrap_or_default();
            let req: Value = serde_json::from_slice(&call.payload).unwrap();
            let id = req["call_id"].as_str().unwrap().to_owned();
            let stream = format!("gtm/mcp/tools/legacy/stream/{id}");
            // Out of order, wall-clock seq values, no `done`.
            for (seq, body) in [
                (1_732_363_200_123u64, json!({"content": "first"})),
                (1_732_363_200_101u64, json!({"data": {"step": 2}})),
            ] {
                let mut msg = json!({"call_id": id, "seq": seq, "type": "partial"});
                msg.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
                raw.publish(&stream, msg.to_string(), PublishProperties::default())
                    .await;
            }
            let response = if req["arguments"]["fail"] == true {
                json!({"call_id": id, "status": "error", "error": {"type": "tool_error", "message": "legacy failure", "code": 503}, "elapsed_ms": 4})
            } else {
                json!({"call_id": id, "status": "ok", "result": {"from": "v0.1"}, "elapsed_ms": 4})
            };
            let reply = PublishProperties {
                correlation_data: props.correlation_data.clone(),
                ..Default::default()
            };
            let topic = props
                .response_topic
                .clone()
                .unwrap_or_else(|| req["response_topic"].as_str().unwrap().to_owned());
            raw.publish(&topic, Bytes::from(response.to_string()), reply).await;
        }
    })
}

#[tokio::test]
async fn our_client_reads_v01_cards_responses_and_partials() {
    let broker = Mosquitto::start();
    let _server = fake_v01_server(&broker).await;
    let client = Client::builder("scout")
        .broker(&broker.url())
        .namespace("gtm")
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap();

    let card = client.wait_for_tool("legacy", PATIENCE).await.unwrap();
    assert_eq!(card.server, "legacy-server");
    assert!(card.supports_streaming);
    assert_eq!(card.output_schema, None);

    let (result, partials) = call_gathering(&client, "legacy", json!({})).await;
    assert_eq!(result.unwrap(), json!({"from": "v0.1"}));
    assert_eq!(
        partials,
        vec![Partial::Text("first".into()), Partial::Data(json!({"step": 2}))]
    );

    match client.call("legacy", json!({"fail": true})).await {
        Err(CallError::ToolError { message, code }) => {
            assert_eq!(message, "legacy failure");
            assert_eq!(code.as_deref(), Some("503"), "a numeric v0.1 code is kept");
        }
        other => panic!("expected tool_error, got {other:?}"),
    }
}
