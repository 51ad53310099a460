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
