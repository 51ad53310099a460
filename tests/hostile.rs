//! Hostile input never stops a server: huge call ids, JSON nested 10,000
//! levels deep, a packet over the size limit, and a flood of 10,000 calls,
//! while another caller goes on being served. (Malformed payloads, reply
//! addresses outside the namespace and wrong argument types are in
//! `malformed.rs`; a call to a tool no one hosts in `refusals.rs`.)

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpmqtt::Client;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::json;
use support::fixtures::{call_props, Raw};
use support::mosquitto::Mosquitto;
use support::tools::{lab_client, lab_with_raw, lab_with_raw_on, RAW_REPLY};

const REPLY: &str = RAW_REPLY;
const CALL: &str = "lab/mcp/tools/echo/call";

/// Another caller, calling all along; returns how many of its calls failed
/// and the slowest one, once `stop` is set.
fn bystander(client: Client, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>, Duration)> {
    tokio::spawn(async move {
        let (mut calls, mut failed, mut slowest) = (0, Vec::new(), Duration::ZERO);
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            match client.call("echo", json!({"text": "still here"})).await {
                Ok(v) if v == "still here" => {}
                other => failed.push(format!("{other:?}")),
            }
            calls += 1;
            slowest = slowest.max(started.elapsed());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (calls, failed, slowest)
    })
}

async fn expect_error(raw: &mut Raw, error_type: &str, mentions: &str) -> serde_json::Value {
    let (_, response) = raw.recv_json().await;
    assert_eq!(response["error"]["type"], error_type, "{response}");
    let message = response["error"]["message"].as_str().unwrap();
    assert!(message.contains(mentions), "{message:?} should mention {mentions:?}");
    response
}

#[tokio::test]
async fn huge_and_deep_calls_are_refused_and_serving_goes_on() {
    let (broker, server, mut raw) = lab_with_raw(4 * 1024 * 1024).await;
    let stop = Arc::new(AtomicBool::new(false));
    let others = bystander(lab_client(&broker, "tester").await, stop.clone());

    // A 1 MiB call id: refused, and not echoed back (the Correlation Data is).
    let call = json!({"call_id": "i".repeat(1024 * 1024), "arguments": {"text": "x"}, "client": "raw"});
    raw.publish(CALL, call.to_string(), call_props(REPLY, "huge-id")).await;
    let response = expect_error(&mut raw, "invalid_arguments", "call_id").await;
    assert_eq!(response["call_id"], "huge-id");

    // JSON nested 10,000 levels deep, in the arguments and as the whole call.
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    let call = format!(r#"{{"call_id": "deep", "arguments": {{"text": {deep}}}, "client": "raw"}}"#);
    raw.publish(CALL, call, call_props(REPLY, "deep")).await;
    expect_error(&mut raw, "invalid_arguments", "recursion limit").await;
    // In a field the server does not read, nesting is skipped without
    // recursion, and the call is served.
    let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let call =
        format!(r#"{{"call_id": "deep2", "arguments": {{"text": "x"}}, "client": "raw", "extra": {deep_objects}}}"#);
    raw.publish(CALL, call, call_props(REPLY, "deep2")).await;
    let (_, response) = raw.recv_json().await;
    assert_eq!(response["result"], "x", "{response}");

    // Over the server's payload limit.
    let big = json!({"call_id": "big", "arguments": {"text": "x".repeat(5 * 1024 * 1024)}});
    raw.publish(CALL, big.to_string(), call_props(REPLY, "big")).await;
    expect_error(&mut raw, "invalid_arguments", "limit").await;

    stop.store(true, Ordering::SeqCst);
    let (calls, failed, slowest) = others.await.unwrap();
    assert!(calls > 0);
    assert!(
        failed.is_empty(),
        "the other caller was served throughout ({calls} calls): {failed:?}"
    );
    eprintln!("bystander: {calls} calls, slowest {slowest:?}");
    assert!(server.is_connected());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_packet_over_the_mqtt_size_limit_never_reaches_the_server() {
    let (broker, server, mut raw) = lab_with_raw(1024 * 1024).await;
    // 17 MiB: over the 16 MiB packets the server accepts. The broker must not
    // deliver it (rumqttc would drop the connection on reading it).
    let mut opts = rumqttc::v5::MqttOptions::new("bulky", broker.host(), broker.port());
    opts.set_max_packet_size(Some(64 * 1024 * 1024));
    let (bulky, mut eventloop) = rumqttc::v5::AsyncClient::new(opts, 10);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let call = json!({"call_id": "huge", "arguments": {"text": "x".repeat(17 * 1024 * 1024)}, "client": "raw"});
    bulky
        .publish_with_properties(
            CALL,
            QoS::AtLeastOnce,
            false,
            call.to_string(),
            call_props(REPLY, "huge"),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.is_connected(), "the server kept its connection");
    // Still serving, on the same connection.
    let call = json!({"call_id": "alive", "arguments": {"text": "ok"}, "client": "raw"});
    raw.publish(CALL, call.to_string(), call_props(REPLY, "alive")).await;
    let (_, response) = raw.recv_json().await;
    assert_eq!(response["call_id"], "alive");
    pump.abort();
    server.shutdown().await.unwrap();
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

const FLOOD: usize = 10_000;

/// Publishes `FLOOD` calls as fast as the broker takes them, then counts the
/// answers until they stop coming.
async fn flood(raw: &mut Raw, first_id: usize) -> (usize, Duration) {
    let started = Instant::now();
    for i in first_id..first_id + FLOOD {
        let id = format!("f{i}");
        let call = json!({"call_id": id, "arguments": {"text": "x".repeat(512)}, "client": "raw"});
        raw.client
            .publish_with_properties(
                CALL,
                QoS::AtLeastOnce,
                false,
                Bytes::from(call.to_string()),
                call_props(REPLY, &id),
            )
            .await
            .unwrap();
    }
    let mut answered = 0;
    while raw.recv_within(Duration::from_secs(2)).await.is_some() {
        answered += 1;
    }
    (answered, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_ten_thousand_calls_keeps_memory_bounded_and_others_served() {
    // The broker holds the whole flood: with Mosquitto's default queue of
    // 1,000 messages a session, a server slowed by a busy machine falls
    // behind, and the broker drops calls beyond the queue, the bystander's
    // among them (its caller then sees `timeout`). That limit is the
    // broker's, set where it runs (README, Reliability).
    let queue_all = Mosquitto::builder().extra_config("max_queued_messages 30000").start();
    let (broker, server, mut raw) = lab_with_raw_on(queue_all, 1024 * 1024).await;
    let stop = Arc::new(AtomicBool::new(false));
    let others = bystander(lab_client(&broker, "tester").await, stop.clone());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss_kib();

    // Two floods: the first grows the allocator's pools to their working
    // size; the second must not grow memory further.
    let first = flood(&mut raw, 0).await;
    let settled = rss_kib();
    let second = flood(&mut raw, FLOOD).await;
    let after = rss_kib();
    stop.store(true, Ordering::SeqCst);
    let (calls, failed, slowest) = others.await.unwrap();
    eprintln!(
        "floods of {FLOOD}: {first:?} then {second:?} (answered, time); RSS {before} -> {settled} -> {after} KiB; \
         bystander: {calls} calls, {} failed, slowest {slowest:?}",
        failed.len()
    );
    assert!(first.0 > 0 && second.0 > 0, "the floods were served");
    assert!(
        failed.is_empty(),
        "the other caller was served throughout the floods: {failed:?}"
    );
    assert!(
        after.saturating_sub(settled) < 32 * 1024,
        "memory grew by {} KiB in the second flood",
        after.saturating_sub(settled)
    );
    assert!(server.is_connected());
    server.shutdown().await.unwrap();
}

/// Anyone allowed to publish on a server's card topic (its siblings' Last
/// Wills land there) reaches the server itself. Each such publish must be
/// acknowledged: the broker sends a client no more unacknowledged QoS 1
/// messages than its Receive Maximum (128 here, twice the concurrency), so
/// 200 unacknowledged cards would stop every call.
#[tokio::test]
async fn publishes_on_the_servers_own_card_do_not_stall_its_calls() {
    let (broker, server, mut raw) = lab_with_raw(1024 * 1024).await;
    let client = lab_client(&broker, "tester").await;
    client.wait_for_tool("echo", Duration::from_secs(10)).await.unwrap();
    for i in 0..200 {
        let not_a_card = json!({"noise": i}).to_string();
        let reason = raw
            .publish("lab/mcp/servers/lab/card", not_a_card, Default::default())
            .await;
        assert_eq!(reason, rumqttc::v5::mqttbytes::v5::PubAckReason::Success);
    }
    let options = mcpmqtt::CallOptions::new().timeout(Duration::from_secs(3));
    let result = client.call_with("echo", json!({"text": "still here"}), options).await;
    assert_eq!(result.unwrap(), json!("still here"));
    server.shutdown().await.unwrap();
}
