//! MQTT 3.1.1 mode, as the v0.1 compatibility section describes it: a 3.1.1
//! client calls a 5.0 server, a 5.0 client calls a 3.1.1 server, through one
//! Mosquitto. Calls are matched by `call_id` alone, the reply address is the
//! payload's `response_topic`, and a refused call can only time out.

mod support;

use std::time::{Duration, Instant};

use mcpmqtt::{BrokerOptions, CallError, CallOptions, Client, Partial, Protocol, ServerHandle};
use serde_json::{json, Value};
use support::fixtures::{Raw, PATIENCE};
use support::gathering::call_gathering;
use support::mosquitto::Mosquitto;
use support::tools::{lab_server, NAMESPACE};
use tokio::sync::{mpsc, oneshot};

async fn server(broker: &Mosquitto, protocol: Protocol) -> ServerHandle {
    lab_server("lab")
        .broker(&broker.url())
        .protocol(protocol)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

async fn client(broker: &Mosquitto, identity: &str, protocol: Protocol) -> Client {
    Client::builder(identity)
        .broker(&broker.url())
        .namespace(NAMESPACE)
        .protocol(protocol)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap()
}

/// Mosquitto logs each connection's protocol: `p2` is MQTT 3.1.1, `p5` MQTT 5.
fn assert_connected_with(broker: &Mosquitto, client_id: &str, protocol: Protocol) {
    let level = match protocol {
        Protocol::V311 => "p2",
        _ => "p5",
    };
    let log = broker.log();
    let connected = log
        .lines()
        .filter(|l| l.contains("New client connected") && l.contains(&format!(" as {client_id} (")))
        .collect::<Vec<_>>();
    assert!(
        !connected.is_empty() && connected.iter().all(|l| l.contains(&format!("({level},"))),
        "{client_id} should have connected with {protocol:?} ({level}): {connected:?}"
    );
}

/// Plain and streaming calls, and each kind of error, from `caller` through
/// whatever protocols the two ends speak.
async fn every_kind_of_call(caller: &Client) {
    assert_eq!(caller.call("echo", json!({"text": "hi"})).await.unwrap(), json!("hi"));

    // The caller-attested topic works on 3.1.1 too: it is only a topic.
    let me = caller.call("whoami", json!({})).await.unwrap();
    assert_eq!(me["caller"], caller.identity());
    assert_eq!(me["verified"], true);

    // Streaming: the partials arrive in order, before the result.
    let (n, partials) = call_gathering(caller, "count", json!({"n": 6})).await;
    assert_eq!(n.unwrap(), json!(6));
    assert_eq!(
        partials,
        vec![
            Partial::Text("0".into()),
            Partial::Data(json!({"i": 1})),
            Partial::Text("2".into()),
            Partial::Data(json!({"i": 3})),
            Partial::Text("4".into()),
            Partial::Data(json!({"i": 5})),
        ]
    );
    let mut pending = caller.call_streaming("count", json!({"n": 3}), CallOptions::new());
    let mut partials = Vec::new();
    while let Some(p) = pending.next_partial().await {
        partials.push(p);
    }
    assert_eq!(partials.len(), 3);
    assert_eq!(pending.result().await.unwrap(), json!(3));

    match caller.call("refuse", json!({"code": "E42"})).await {
        Err(CallError::ToolError { message, code }) => {
            assert_eq!(code.as_deref(), Some("E42"));
            assert!(message.contains("refused on purpose"), "{message}");
        }
        other => panic!("expected a tool error, got {other:?}"),
    }
    match caller.call("explode", json!({"message": "boom"})).await {
        Err(CallError::ToolError { code, .. }) => assert_eq!(code.as_deref(), Some("panic")),
        other => panic!("expected a tool error, got {other:?}"),
    }
    match caller.call("echo", json!({"text": 5})).await {
        Err(CallError::InvalidArguments { message }) => assert!(message.contains("text"), "{message}"),
        other => panic!("expected invalid arguments, got {other:?}"),
    }
    match caller.call("sleepy", json!({"ms": 2000})).await {
        Err(CallError::Timeout { message }) => assert!(message.contains("300 ms"), "{message}"),
        other => panic!("expected the tool's own timeout, got {other:?}"),
    }
    // Many calls at once: each is matched to its response by `call_id`.
    let calls = (0..40).map(|i| caller.call("echo", json!({"text": format!("n{i}")})));
    for (i, result) in futures::future::join_all(calls).await.into_iter().enumerate() {
        assert_eq!(result.unwrap(), json!(format!("n{i}")));
    }
}

#[tokio::test]
async fn a_311_client_calls_a_5_server() {
    let broker = Mosquitto::start();
    let server = server(&broker, Protocol::V5).await;
    let caller = client(&broker, "tester", Protocol::V311).await;
    every_kind_of_call(&caller).await;
    assert_connected_with(&broker, "tester", Protocol::V311);
    assert_connected_with(&broker, server.instance(), Protocol::V5);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_5_client_calls_a_311_server() {
    let broker = Mosquitto::start();
    let server = server(&broker, Protocol::V311).await;
    let caller = client(&broker, "tester", Protocol::V5).await;
    // The 40 calls at once also prove the 3.1.1 server acknowledges what it
    // takes: Mosquitto stops delivering after 20 unacknowledged messages.
    every_kind_of_call(&caller).await;
    assert_connected_with(&broker, "tester", Protocol::V5);
    assert_connected_with(&broker, server.instance(), Protocol::V311);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_311_client_calls_a_311_server() {
    let broker = Mosquitto::start();
    let server = server(&broker, Protocol::V311).await;
    let caller = client(&broker, "tester", Protocol::V311).await;
    every_kind_of_call(&caller).await;
    assert_eq!(
        caller.tools().await.unwrap().len(),
        6,
        "the retained cards reach a 3.1.1 client"
    );
    server.shutdown().await.unwrap();
    let card = caller.wait_for_server_offline("lab", PATIENCE).await.unwrap();
    assert_eq!(card.server, "lab");
}

#[tokio::test]
async fn on_311_a_call_nobody_serves_can_only_time_out_and_the_error_says_so() {
    let broker = Mosquitto::start();
    let _server = server(&broker, Protocol::V5).await;
    let caller = client(&broker, "tester", Protocol::V311).await;
    let started = Instant::now();
    let quick = CallOptions::new().timeout(Duration::from_millis(800));
    match caller.call_with("no_such_tool", json!({}), quick).await {
        Err(CallError::Timeout { message }) => {
            assert!(started.elapsed() >= Duration::from_millis(800));
            assert!(message.contains("MQTT 3.1.1"), "{message}");
            assert!(message.contains("no server"), "{message}");
            assert!(message.contains("can only time out"), "{message}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The same call over MQTT 5 is refused at once (PUBACK 0x10).
    let on_5 = client(&broker, "tester5", Protocol::V5).await;
    let quick = CallOptions::new().timeout(Duration::from_millis(800));
    assert!(matches!(
        on_5.call_with("no_such_tool", json!({}), quick).await,
        Err(CallError::Unavailable { .. })
    ));
}

/// The lab server's ACL: `tester` may call `echo` only.
fn acl_broker() -> Mosquitto {
    let manifest = lab_server("lab")
        .protocol(Protocol::V311)
        .build()
        .unwrap()
        .acl_manifest();
    Mosquitto::builder()
        .user("lab", "lab-pw")
        .user("tester", "tester-pw")
        .acl_file(&manifest.render(mcpmqtt::acl::AclFormat::Mosquitto))
        .extra_config("use_username_as_clientid true")
        .start()
}

#[tokio::test]
async fn on_311_the_broker_acl_still_decides_but_a_refusal_is_only_a_timeout() {
    let broker = acl_broker();
    let server = lab_server("lab")
        .broker(&broker.url())
        .credentials("lab", "lab-pw")
        .protocol(Protocol::V311)
        .adopt_orphaned_sessions(false)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let connect = |protocol| {
        Client::builder("tester")
            .broker(&broker.url())
            .password("tester-pw")
            .namespace(NAMESPACE)
            .protocol(protocol)
            .default_timeout(PATIENCE)
            .connect()
    };
    let tester = connect(Protocol::V311).await.unwrap();
    assert_eq!(
        tester.call("echo", json!({"text": "allowed"})).await.unwrap(),
        "allowed"
    );

    let quick = CallOptions::new().timeout(Duration::from_millis(800));
    match tester.call_with("whoami", json!({}), quick).await {
        Err(CallError::Timeout { message }) => {
            assert!(message.contains("not authorized"), "{message}");
            assert!(message.contains("MQTT 3.1.1"), "{message}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        broker.log().contains("Denied PUBLISH from tester"),
        "the broker refused the call, silently for 3.1.1"
    );
    tester.disconnect().await;

    // The same refusal over MQTT 5 is reported at once (PUBACK 0x87).
    let tester = connect(Protocol::V5).await.unwrap();
    assert!(matches!(
        tester.call("whoami", json!({})).await,
        Err(CallError::Unauthorized { .. })
    ));
    server.shutdown().await.unwrap();
}

const REPLY: &str = "lab/mcp/clients/raw/responses";

#[tokio::test]
async fn a_311_server_answers_malformed_calls_wherever_it_can_reach_the_caller() {
    let broker = Mosquitto::start();
    let server = server(&broker, Protocol::V311).await;
    let mut raw = Raw::connect(&broker, "raw").await;
    raw.subscribe(REPLY).await;

    // Not JSON, on the caller's own call topic: the topic names the caller.
    raw.publish("lab/mcp/tools/echo/call/raw", "not json", Default::default())
        .await;
    let (topic, r) = raw.recv_json().await;
    assert_eq!(topic, REPLY);
    assert_eq!(r["error"]["type"], "invalid_arguments", "{r}");
    assert!(
        r["error"]["message"].as_str().unwrap().contains("not valid JSON"),
        "{r}"
    );

    // No `call_id`: the payload's `response_topic` says where to answer.
    let call = json!({"arguments": {"text": "x"}, "response_topic": REPLY});
    raw.publish("lab/mcp/tools/echo/call", call.to_string(), Default::default())
        .await;
    let (_, r) = raw.recv_json().await;
    assert_eq!(r["error"]["type"], "invalid_arguments", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("call_id"), "{r}");

    // Wrong arguments.
    let call = json!({"call_id": "bad", "arguments": {"text": 1}, "response_topic": REPLY});
    raw.publish("lab/mcp/tools/echo/call", call.to_string(), Default::default())
        .await;
    let (_, r) = raw.recv_json().await;
    assert_eq!(
        (r["call_id"].as_str(), r["error"]["type"].as_str()),
        (Some("bad"), Some("invalid_arguments"))
    );

    // Not JSON on the v0.1 topic with only MQTT 5 properties to answer by:
    // a 3.1.1 server never sees them, so it has no reply address.
    let props = support::fixtures::call_props(REPLY, "lost");
    raw.publish("lab/mcp/tools/echo/call", "not json", props).await;
    assert!(
        raw.recv_within(Duration::from_millis(500)).await.is_none(),
        "a 3.1.1 server cannot read the Response Topic"
    );

    // And it keeps serving.
    let call = json!({"call_id": "alive", "arguments": {"text": "ok"}, "response_topic": REPLY});
    raw.publish("lab/mcp/tools/echo/call", call.to_string(), Default::default())
        .await;
    let (_, r) = raw.recv_json().await;
    assert_eq!(
        (r["call_id"].as_str(), r["result"].as_str()),
        (Some("alive"), Some("ok"))
    );
    server.shutdown().await.unwrap();
}

/// A bare rumqttc MQTT 3.1.1 client.
struct Raw311 {
    client: rumqttc::AsyncClient,
    messages: mpsc::UnboundedReceiver<rumqttc::Publish>,
    acks: mpsc::UnboundedReceiver<rumqttc::Packet>,
    session_present: bool,
}

impl Raw311 {
    async fn connect(broker: &Mosquitto, client_id: &str, clean_session: bool) -> Raw311 {
        let mut opts = rumqttc::MqttOptions::new(client_id, broker.host(), broker.port());
        opts.set_clean_session(clean_session);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 100);
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (up_tx, up_rx) = oneshot::channel();
        tokio::spawn(async move {
            let mut up = Some(up_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                        let _ = msg_tx.send(p);
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(c))) => {
                        if let Some(tx) = up.take() {
                            let _ = tx.send(c.session_present);
                        }
                    }
                    Ok(rumqttc::Event::Incoming(p @ (rumqttc::Packet::SubAck(_) | rumqttc::Packet::PubAck(_)))) => {
                        let _ = ack_tx.send(p);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        let session_present = tokio::time::timeout(PATIENCE, up_rx)
            .await
            .expect("the 3.1.1 client connects in time")
            .expect("the 3.1.1 client connects");
        Raw311 {
            client,
            messages,
            acks,
            session_present,
        }
    }

    async fn next_ack(&mut self) -> rumqttc::Packet {
        tokio::time::timeout(PATIENCE, self.acks.recv())
            .await
            .expect("an ack in time")
            .expect("the 3.1.1 client is connected")
    }

    async fn subscribe(&mut self, filter: &str) {
        self.client.subscribe(filter, rumqttc::QoS::AtLeastOnce).await.unwrap();
        assert!(matches!(self.next_ack().await, rumqttc::Packet::SubAck(_)));
    }

    async fn publish(&mut self, topic: &str, payload: String) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .unwrap();
        assert!(matches!(self.next_ack().await, rumqttc::Packet::PubAck(_)));
    }

    async fn recv_json(&mut self) -> (String, Value) {
        let p = tokio::time::timeout(PATIENCE, self.messages.recv())
            .await
            .expect("a message in time")
            .expect("the 3.1.1 client is connected");
        (p.topic, serde_json::from_slice(&p.payload).unwrap())
    }
}

#[tokio::test]
async fn a_v01_style_311_caller_gets_its_answer_at_the_payloads_response_topic() {
    let broker = Mosquitto::start();
    let server = server(&broker, Protocol::V5).await;
    let mut raw = Raw311::connect(&broker, "raw311", true).await;
    let reply = "lab/mcp/clients/raw311/responses";
    raw.subscribe(reply).await;
    let call = json!({
        "call_id": "r1",
        "arguments": {"text": "over 3.1.1"},
        "client": "raw311",
        "timestamp": "2025-01-01T00:00:00Z",
        "response_topic": reply,
    });
    raw.publish("lab/mcp/tools/echo/call", call.to_string()).await;
    let (topic, response) = raw.recv_json().await;
    assert_eq!(topic, reply);
    assert_eq!(response["call_id"], "r1");
    assert_eq!(response["status"], "ok");
    assert_eq!(response["result"], "over 3.1.1");
    server.shutdown().await.unwrap();
}

fn options(broker: &Mosquitto, client_id: &str) -> BrokerOptions {
    BrokerOptions::parse(&broker.url())
        .unwrap()
        .with_client_id(client_id)
        .with_protocol(Protocol::V311)
}

/// Waits until Mosquitto has logged a line containing `first`, then a later
/// one containing `then`.
async fn logged(broker: &Mosquitto, first: &str, then: &str) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let log = broker.log();
        let mut lines = log.lines().skip_while(|l| !l.contains(first));
        if lines.next().is_some() && lines.any(|l| l.contains(then)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Mosquitto never logged {first:?}, then {then:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_311_survivor_serves_the_calls_queued_for_a_crashed_instance_then_ends_its_session() {
    let broker = Mosquitto::start();
    let crashed = lab_server("lab")
        .broker_options(options(&broker, "lab-a"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let caller = client(&broker, "tester", Protocol::V311).await;
    crashed.abort();
    caller.wait_for_server_offline("lab", PATIENCE).await.unwrap();

    // Published while no instance is up: only the crashed one's persistent
    // session holds it.
    let call = {
        let caller = caller.clone();
        tokio::spawn(async move { caller.call("echo", json!({"text": "queued"})).await })
    };
    logged(&broker, "as tester (p2", "Received PUBLISH from tester").await;

    let survivor = lab_server("lab")
        .broker_options(options(&broker, "lab-b"))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    assert_eq!(call.await.unwrap().unwrap(), json!("queued"));

    // Once served, the adopted session is ended by a clean connection.
    logged(&broker, "as lab-a (p2, c1", "Client lab-a disconnected").await;
    let after = Raw311::connect(&broker, "lab-a", false).await;
    assert!(!after.session_present, "the crashed instance's session is gone");
    survivor.shutdown().await.unwrap();
}
