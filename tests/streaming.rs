//! Streaming: partials numbered from 0, `done` before the response.

mod support;

use mcpmqtt::{CallOptions, Partial};
use serde_json::json;
use support::fixtures::{gtm_client, gtm_online, Raw, PATIENCE};
use support::gathering::call_gathering;
use support::mosquitto::Mosquitto;
use support::tools::{lab_client, lab_online};

#[tokio::test]
async fn partials_count_from_zero_and_done_precedes_the_response() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let mut observer = Raw::connect(&broker, "observer").await;
    // The caller's own private stream (an extension), read here by a spy
    // that the anonymous test broker lets in.
    observer.subscribe("lab/mcp/clients/tester/streams/+").await;
    observer.subscribe("lab/mcp/clients/tester/responses").await;

    let client = lab_client(&broker, "tester").await;
    let (result, partials) = call_gathering(&client, "count", json!({"n": 5})).await;
    assert_eq!(result.unwrap(), json!(5));
    assert_eq!(
        partials,
        vec![
            Partial::Text("0".into()),
            Partial::Data(json!({"i": 1})),
            Partial::Text("2".into()),
            Partial::Data(json!({"i": 3})),
            Partial::Text("4".into()),
        ]
    );

    // On the wire: seq 0..4 partial, seq 5 done, then the response.
    let mut call_id = None;
    for seq in 0..=5u64 {
        let (topic, msg) = observer.recv_json().await;
        assert!(topic.starts_with("lab/mcp/clients/tester/streams/"), "{topic}");
        assert_eq!(msg["seq"], seq, "{msg}");
        assert_eq!(msg["type"], if seq < 5 { "partial" } else { "done" }, "{msg}");
        if seq < 5 {
            let has = if seq % 2 == 0 { "content" } else { "data" };
            assert!(msg.get(has).is_some(), "{msg}");
        }
        assert_eq!(
            topic,
            format!("lab/mcp/clients/tester/streams/{}", msg["call_id"].as_str().unwrap())
        );
        call_id.get_or_insert(msg["call_id"].clone());
    }
    let (topic, response) = observer.recv_json().await;
    assert_eq!(topic, "lab/mcp/clients/tester/responses");
    assert_eq!(response["status"], "ok");
    assert_eq!(Some(response["call_id"].clone()), call_id);
    assert_eq!(response["partials"], 5, "the response counts the partials: {response}");

    // A second call numbers its own stream from 0 again.
    client.call("count", json!({"n": 1})).await.unwrap();
    let (_, first) = observer.recv_json().await;
    assert_eq!(first["seq"], 0);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn crawl_site_streams_one_partial_per_page() {
    let broker = Mosquitto::start();
    let server = gtm_online(&broker).await;
    let scout = gtm_client(&broker, "scout").await;
    let mut call = scout.call_streaming(
        "crawl_site",
        json!({"url": "https://example.com", "pages": 3}),
        CallOptions::new(),
    );
    let mut progress = Vec::new();
    while let Some(p) = tokio::time::timeout(PATIENCE, call.next_partial()).await.unwrap() {
        progress.push(p.as_text().unwrap().to_owned());
    }
    assert_eq!(progress.len(), 3, "{progress:?}");
    assert!(progress[0].contains("(1/3)"));
    assert!(progress[2].contains("(3/3)"));
    let report = call.result().await.unwrap();
    assert_eq!(report["pages"].as_array().unwrap().len(), 3);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_v01_caller_gets_its_partials_on_the_tools_stream_topic() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let mut v01 = Raw::connect(&broker, "v01").await;
    v01.subscribe("lab/mcp/tools/count/stream/+").await;
    v01.subscribe("lab/mcp/clients/v01/responses").await;
    let call = json!({"call_id": "legacy-1", "arguments": {"n": 2}, "client": "v01"});
    v01.publish(
        "lab/mcp/tools/count/call",
        call.to_string(),
        support::fixtures::call_props("lab/mcp/clients/v01/responses", "legacy-1"),
    )
    .await;
    for (seq, kind) in [(0, "partial"), (1, "partial"), (2, "done")] {
        let (topic, msg) = v01.recv_json().await;
        assert_eq!(topic, "lab/mcp/tools/count/stream/legacy-1");
        assert_eq!(
            (msg["seq"].as_u64().unwrap(), msg["type"].as_str().unwrap()),
            (seq, kind)
        );
    }
    let (topic, response) = v01.recv_json().await;
    assert_eq!(topic, "lab/mcp/clients/v01/responses");
    assert_eq!(response["result"], 2);
    server.shutdown().await.unwrap();
}

/// A stand-in for a server that speaks the extensions, behind a broker that
/// does not keep the order of a call's stream and its response (a cluster's
/// nodes, `tests/cluster.rs`): each call's partials go out scrambled, some
/// after the response. With `{"lose": true}` one partial never comes.
async fn scrambling_server(broker: &Mosquitto) -> tokio::task::JoinHandle<()> {
    let mut raw = Raw::connect(broker, "scrambler").await;
    let card = json!({
        "version": "1", "tool": "scrambled", "server": "scrambler", "namespace": "gtm",
        "description": "Streams four partials out of order",
        "input_schema": {"type": "object", "properties": {"lose": {"type": "boolean"}}},
        "supports_streaming": true, "requires_auth": false, "allowed_callers": [],
        "extensions": ["caller_topic", "private_streams"],
        "status": "online", "last_seen": "2026-12-07T12:00:00.000Z"
    });
    raw.publish_retained("gtm/mcp/tools/scrambled/card", card.to_string())
        .await;
    raw.subscribe("gtm/mcp/tools/scrambled/call/#").await;
    tokio::spawn(async move {
        while let Some(call) = raw.recv_within(std::time::Duration::from_secs(60)).await {
            let caller = call.topic.rsplit(|&b| b == b'/').next().unwrap().to_vec();
            let caller = String::from_utf8(caller).unwrap();
            let props = call.properties.clone().unwrap_or_default();
            let req: serde_json::Value = serde_json::from_slice(&call.payload).unwrap();
            let id = req["call_id"].as_str().unwrap().to_owned();
            let lose = req["arguments"]["lose"] == true;
            let stream = format!("gtm/mcp/clients/{caller}/streams/{id}");
            let partial = |seq: u64, text: &str| json!({"call_id": id, "seq": seq, "type": "partial", "content": text});
            let response = json!({"call_id": id, "status": "ok", "result": "whole", "elapsed_ms": 1, "partials": 4});
            let reply = rumqttc::v5::mqttbytes::v5::PublishProperties {
                correlation_data: props.correlation_data.clone(),
                ..Default::default()
            };
            let mut sends = vec![
                (stream.clone(), partial(2, "c")),
                (stream.clone(), partial(0, "a")),
                (props.response_topic.clone().unwrap(), response),
                (stream.clone(), partial(3, "d")),
                (stream.clone(), partial(0, "a")), // a repeat
                (stream.clone(), json!({"call_id": id, "seq": 4, "type": "done"})),
            ];
            if !lose {
                sends.push((stream.clone(), partial(1, "b")));
            }
            for (topic, msg) in sends {
                let props = if topic.ends_with("/responses") {
                    reply.clone()
                } else {
                    Default::default()
                };
                raw.publish(&topic, msg.to_string(), props).await;
            }
        }
    })
}

#[tokio::test]
async fn partials_out_of_order_or_after_the_response_are_handed_over_in_order() {
    let broker = Mosquitto::start();
    let _server = scrambling_server(&broker).await;
    let client = gtm_client(&broker, "scout").await;
    client.wait_for_tool("scrambled", PATIENCE).await.unwrap();
    let text = |s: &[&str]| s.iter().map(|t| Partial::Text((*t).into())).collect::<Vec<_>>();

    // Every partial, in `seq` order, once: seq 1 comes after the response.
    let (result, partials) = call_gathering(&client, "scrambled", json!({})).await;
    assert_eq!(result.unwrap(), json!("whole"));
    assert_eq!(partials, text(&["a", "b", "c", "d"]));

    // Seq 1 never comes: after a bounded wait, the rest, in order.
    let (result, partials) = call_gathering(&client, "scrambled", json!({"lose": true})).await;
    assert_eq!(result.unwrap(), json!("whole"));
    assert_eq!(partials, text(&["a", "c", "d"]));

    // The same through `call_streaming`'s receiver.
    let mut pending = client.call_streaming("scrambled", json!({}), CallOptions::new());
    let mut seen = Vec::new();
    while let Some(p) = pending.next_partial().await {
        seen.push(p);
    }
    assert_eq!(seen, text(&["a", "b", "c", "d"]));
    assert_eq!(pending.result().await.unwrap(), json!("whole"));
}
