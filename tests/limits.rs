//! The maximum packet size: what does not fit fails at once, with an error
//! that says so, instead of being dropped by the broker (SPEC.md §4, §6).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use mcpmqtt::{
    BrokerOptions, CallError, Client, Error, Partial, Protocol, Server, ServerBuilder, ServerHandle, ToolDef, ToolError,
};
use serde_json::{json, Value};
use support::fixtures::{call_props, Raw, PATIENCE};
use support::gathering::call_gathering;
use support::login::online;
use support::mosquitto::Mosquitto;

const NAMESPACE: &str = "limits";
const MIB: usize = 1024 * 1024;
/// The limit of the small broker, as EMQX has it by default.
const BROKER_LIMIT: usize = 1_048_576;

/// A broker that accepts no packet over 1 MiB, and says so in its CONNACK.
fn small_broker() -> Mosquitto {
    Mosquitto::builder()
        .extra_config(&format!("max_packet_size {BROKER_LIMIT}"))
        .start()
}

fn bytes_arg(args: &Value) -> usize {
    args["bytes"].as_u64().expect("a `bytes` argument") as usize
}

/// A server with `big` (returns a string of `bytes` bytes), `counted`
/// (returns its `text`), `measure` (returns the length of its `text`) and
/// `spill` (streams a partial of `bytes` bytes). `runs` counts the runs of
/// every tool.
fn limits_server(runs: &Arc<AtomicUsize>) -> ServerBuilder {
    let counter = runs.clone();
    let big = ToolDef::builder("big")
        .handler(move |_ctx, args| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ToolError>(json!("x".repeat(bytes_arg(&args)))) }
        })
        .build()
        .unwrap();
    let counter = runs.clone();
    let counted = ToolDef::builder("counted")
        .handler(move |_ctx, args| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ToolError>(args["text"].clone()) }
        })
        .build()
        .unwrap();
    let counter = runs.clone();
    let measure = ToolDef::builder("measure")
        .handler(move |_ctx, args| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, ToolError>(json!(args["text"].as_str().map_or(0, str::len))) }
        })
        .build()
        .unwrap();
    let counter = runs.clone();
    let spill = ToolDef::builder("spill")
        .streaming(true)
        .handler(move |ctx, args| {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                // A partial too large is refused; the call goes on, and the
                // tool makes the refusal its own result.
                let refused = ctx.emit_text("x".repeat(bytes_arg(&args))).await.err();
                ctx.emit_text("after").await?;
                match refused {
                    Some(e @ Error::TooLarge { .. }) => {
                        Err(ToolError::new(e.to_string()).with_code("partial_too_large"))
                    }
                    Some(other) => Err(other.into()),
                    None => Ok(json!("sent")),
                }
            }
        })
        .build()
        .unwrap();
    Server::builder("limits")
        .namespace(NAMESPACE)
        .tool_def(big)
        .tool_def(counted)
        .tool_def(measure)
        .tool_def(spill)
}

/// The limits server online on `broker`, and its run counter.
async fn limits_online(broker: &Mosquitto) -> (ServerHandle, Arc<AtomicUsize>) {
    let runs = Arc::new(AtomicUsize::new(0));
    (online(broker, limits_server(&runs)).await, runs)
}

async fn client(broker: &Mosquitto, options: BrokerOptions) -> Client {
    Client::builder("tester")
        .broker_options(options)
        .broker(&broker.url())
        .namespace(NAMESPACE)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap()
}

/// The `tool_error` code and message of a failed call.
fn tool_error(result: Result<Value, CallError>) -> (Option<String>, String) {
    match result {
        Err(CallError::ToolError { code, message }) => (code, message),
        other => panic!("expected a tool_error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_result_over_16_mib_gets_result_too_large_instead_of_a_timeout() {
    let broker = Mosquitto::start();
    let (server, _) = limits_online(&broker).await;
    let client = client(&broker, BrokerOptions::default()).await;
    // Mosquitto announces no limit by default: each end's own 16 MiB holds.
    assert_eq!(client.max_packet_size() as usize, 16 * MIB);

    let (code, message) = tool_error(client.call("big", json!({"bytes": 17 * MIB})).await);
    assert_eq!(code.as_deref(), Some("result_too_large"), "{message}");
    assert!(message.starts_with("the result of `big` would be a 178"), "{message}");
    assert!(
        message.contains("over the 16777216-byte maximum packet size") && message.contains("with_max_packet_size"),
        "{message}"
    );
    // The server goes on serving.
    assert_eq!(
        client.call("counted", json!({"text": "hi"})).await.unwrap(),
        json!("hi")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_brokers_limit_holds_for_results_and_a_result_under_it_succeeds() {
    let broker = small_broker();
    let (server, _) = limits_online(&broker).await;
    let client = client(&broker, BrokerOptions::default()).await;
    assert_eq!(
        client.max_packet_size() as usize,
        BROKER_LIMIT,
        "learned from the CONNACK"
    );

    let (code, message) = tool_error(client.call("big", json!({"bytes": 2_000_000})).await);
    assert_eq!(code.as_deref(), Some("result_too_large"), "{message}");
    assert!(
        message.contains("the result of `big` would be a 2000")
            && message.contains("over the 1048576-byte maximum packet size (the broker's limit)"),
        "{message}"
    );

    let result = client.call("big", json!({"bytes": 900_000})).await.unwrap();
    assert_eq!(result.as_str().map(str::len), Some(900_000));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_duplicate_of_a_call_too_large_to_answer_gets_the_same_error_and_is_not_run() {
    let broker = small_broker();
    let (server, runs) = limits_online(&broker).await;
    let reply = format!("{NAMESPACE}/mcp/clients/raw/responses");
    let mut raw = Raw::connect(&broker, "raw").await;
    raw.subscribe(&reply).await;

    let call = json!({"call_id": "dup-1", "arguments": {"bytes": 2_000_000}, "client": "raw"}).to_string();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let topic = format!("{NAMESPACE}/mcp/tools/big/call");
        raw.publish(&topic, call.clone(), call_props(&reply, "dup-1")).await;
        answers.push(raw.recv().await.payload);
    }
    let first: Value = serde_json::from_slice(&answers[0]).unwrap();
    assert_eq!(first["status"], "error", "{first}");
    assert_eq!(first["error"]["code"], "result_too_large", "{first}");
    assert_eq!(
        answers[0], answers[1],
        "the window cached the error, and sends it again"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the duplicate was not run");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_call_over_the_brokers_limit_fails_before_it_is_published() {
    let broker = small_broker();
    let (server, runs) = limits_online(&broker).await;
    let client = client(&broker, BrokerOptions::default()).await;

    match client.call("counted", json!({"text": "y".repeat(2_000_000)})).await {
        Err(CallError::InvalidArguments { message }) => assert!(
            message.starts_with("the call would be a 2000")
                && message.contains("over the 1048576-byte maximum packet size (the broker's limit)"),
            "{message}"
        ),
        other => panic!("expected invalid_arguments, got {other:?}"),
    }
    // The connection was not harmed (Mosquitto disconnects a client that
    // sends too large a packet), and the server never saw the call.
    assert_eq!(
        client.call("counted", json!({"text": "hi"})).await.unwrap(),
        json!("hi")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    server.shutdown().await.unwrap();
}

/// The size a refused call's error names.
fn refused_size(result: Result<Value, CallError>) -> usize {
    let message = match result {
        Err(CallError::InvalidArguments { message }) => message,
        other => panic!("expected invalid_arguments, got {other:?}"),
    };
    let size = message
        .strip_prefix("the call would be a ")
        .and_then(|rest| rest.split_once("-byte"))
        .unwrap_or_else(|| panic!("no size in {message:?}"))
        .0;
    size.parse().unwrap()
}

#[tokio::test]
async fn a_call_of_exactly_the_brokers_limit_is_delivered_and_one_byte_more_is_not_sent() {
    // The size counted is MQTT 5's, the whole packet: one of exactly the
    // broker's limit is taken. (Mosquitto 2.0 leaves the Remaining Length
    // out of its count, so it takes up to 3 bytes more; from 4 bytes over,
    // it disconnects the client with 0x95.)
    let broker = small_broker();
    let (server, runs) = limits_online(&broker).await;
    let client = client(&broker, BrokerOptions::default()).await;
    let call = |len: usize| client.call("measure", json!({"text": "y".repeat(len)}));

    // One byte of text is one byte of packet: find the text that fills it.
    let over = refused_size(call(BROKER_LIMIT).await);
    let exact = BROKER_LIMIT - (over - BROKER_LIMIT);
    assert_eq!(call(exact).await.unwrap(), json!(exact));
    assert_eq!(refused_size(call(exact + 1).await), BROKER_LIMIT + 1);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(
        !broker.log().contains("disconnected"),
        "no client was disconnected:\n{}",
        broker.log()
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_partial_over_the_limit_fails_its_emit_and_the_stream_goes_on() {
    let broker = small_broker();
    let (server, _) = limits_online(&broker).await;
    let mut observer = Raw::connect(&broker, "observer").await;
    observer
        .subscribe(&format!("{NAMESPACE}/mcp/clients/tester/streams/+"))
        .await;
    let client = client(&broker, BrokerOptions::default()).await;

    let (result, partials) = call_gathering(&client, "spill", json!({"bytes": 2_000_000})).await;
    let (code, message) = tool_error(result);
    assert_eq!(code.as_deref(), Some("partial_too_large"), "{message}");
    assert!(
        message.starts_with("the partial would be a 2000")
            && message.contains("over the 1048576-byte maximum packet size (the broker's limit)"),
        "{message}"
    );
    assert_eq!(partials, vec![Partial::Text("after".into())]);
    // The refused partial took no number: the stream has no gap.
    let (_, first) = observer.recv_json().await;
    assert_eq!(
        (first["seq"].clone(), first["content"].clone()),
        (json!(0), json!("after"))
    );
    let (_, done) = observer.recv_json().await;
    assert_eq!((done["seq"].clone(), done["type"].clone()), (json!(1), json!("done")));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tool_card_over_the_limit_stops_the_server_from_starting() {
    let broker = small_broker();
    let huge = ToolDef::builder("huge")
        .description("d".repeat(2 * MIB))
        .build()
        .unwrap();
    let started = Server::builder("limits")
        .namespace(NAMESPACE)
        .broker(&broker.url())
        .tool_def(huge)
        .build()
        .unwrap()
        .start()
        .await;
    match started {
        Err(
            e @ Error::TooLarge {
                by_broker: true,
                limit: 1_048_576,
                ..
            },
        ) => assert!(
            e.to_string().starts_with("the Tool Card of `huge` would be a 2097"),
            "{e}"
        ),
        other => panic!("expected the card to be refused, got {other:?}"),
    }
    // Nothing went online.
    let client = client(&broker, BrokerOptions::default()).await;
    assert!(client.tool_card("huge").await.unwrap().is_none());
    assert!(client.servers().await.is_empty());
}

#[tokio::test]
async fn on_mqtt_311_the_own_limit_holds() {
    // An MQTT 3.1.1 CONNACK announces no limit: each end's own is the one.
    let broker = Mosquitto::start();
    let runs = Arc::new(AtomicUsize::new(0));
    let own = BrokerOptions::default()
        .with_protocol(Protocol::V311)
        .with_max_packet_size(BROKER_LIMIT as u32);
    let server = limits_server(&runs)
        .broker_options(own.clone())
        .broker(&broker.url())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = client(&broker, own).await;
    assert_eq!(client.max_packet_size() as usize, BROKER_LIMIT);

    let (code, message) = tool_error(client.call("big", json!({"bytes": 2_000_000})).await);
    assert_eq!(code.as_deref(), Some("result_too_large"), "{message}");
    assert!(message.contains("with_max_packet_size"), "{message}");
    match client.call("counted", json!({"text": "y".repeat(2_000_000)})).await {
        Err(CallError::InvalidArguments { message }) => assert!(message.starts_with("the call would be"), "{message}"),
        other => panic!("expected invalid_arguments, got {other:?}"),
    }
    let result = client.call("big", json!({"bytes": 900_000})).await.unwrap();
    assert_eq!(result.as_str().map(str::len), Some(900_000));
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    server.shutdown().await.unwrap();
}
