//! Calls: results, typed errors, panics, timeouts, concurrency, load sharing.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use mcpmqtt::{CallError, CallOptions, Server, ToolDef, ToolError};
use serde_json::json;
use support::fixtures::{gtm_client, gtm_online, wait_for_log, PATIENCE};
use support::login::online;
use support::mosquitto::Mosquitto;
use support::tools::{lab_client, lab_online, lab_server, NAMESPACE};

#[tokio::test]
async fn the_gtm_tools_answer_scout() {
    let broker = Mosquitto::start();
    let server = gtm_online(&broker).await;
    let scout = gtm_client(&broker, "scout").await;

    let all = scout.call("query_watch_configs", json!({})).await.unwrap();
    assert_eq!(all["configs"].as_array().unwrap().len(), 4);
    // `null` for an optional argument reads as leaving it out.
    let also_all = scout
        .call("query_watch_configs", json!({"platform": null}))
        .await
        .unwrap();
    assert_eq!(also_all, all);
    let reddit = scout
        .call("query_watch_configs", json!({"platform": "reddit"}))
        .await
        .unwrap();
    let configs = reddit["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 1);
    assert_eq!(configs[0]["platform"], "reddit");

    // The typed variant.
    let typed: gtm_tools::WatchConfigs = scout
        .call_as("query_watch_configs", json!({"platform": "x"}))
        .await
        .unwrap();
    assert_eq!(typed.configs[0].platform, gtm_tools::Platform::X);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_arguments_name_the_field_and_never_reach_the_handler() {
    let broker = Mosquitto::start();
    let server = gtm_online(&broker).await;
    let scout = gtm_client(&broker, "scout").await;

    let cases = [
        (json!({"platform": "myspace"}), "platform"),
        (json!({"platform": 3}), "platform"),
        (json!({"platfrom": "x"}), "platfrom"),
        (json!({"platform": "myspace"}), "not one of"),
    ];
    for (args, field) in cases {
        match scout.call("query_watch_configs", args.clone()).await {
            Err(CallError::InvalidArguments { message }) => {
                assert!(
                    message.contains(field),
                    "{args}: message {message:?} does not name `{field}`"
                )
            }
            other => panic!("{args}: expected invalid_arguments, got {other:?}"),
        }
    }
    match scout.call("crawl_site", json!({"pages": 2})).await {
        Err(CallError::InvalidArguments { message }) => assert!(message.contains("url"), "{message}"),
        other => panic!("expected invalid_arguments, got {other:?}"),
    }
    match scout
        .call("crawl_site", json!({"url": "https://a.example", "pages": "two"}))
        .await
    {
        Err(CallError::InvalidArguments { message }) => assert!(message.contains("pages"), "{message}"),
        other => panic!("expected invalid_arguments, got {other:?}"),
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn tool_errors_panics_and_timeouts_are_typed_and_the_server_keeps_serving() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let client = lab_client(&broker, "tester").await;

    match client.call("refuse", json!({"code": "E42"})).await {
        Err(CallError::ToolError { message, code }) => {
            assert_eq!(message, "refused on purpose");
            assert_eq!(code.as_deref(), Some("E42"));
        }
        other => panic!("expected tool_error, got {other:?}"),
    }
    for _ in 0..3 {
        match client.call("explode", json!({"message": "kaboom"})).await {
            Err(CallError::ToolError { message, .. }) => assert!(message.contains("kaboom"), "{message}"),
            other => panic!("expected tool_error from a panic, got {other:?}"),
        }
    }
    match client.call("sleepy", json!({"ms": 5000})).await {
        Err(CallError::Timeout { message }) => assert!(message.contains("300"), "{message}"),
        other => panic!("expected the server's timeout, got {other:?}"),
    }
    assert_eq!(client.call("sleepy", json!({"ms": 1})).await.unwrap(), json!(1));
    assert_eq!(
        client.call("echo", json!({"text": "still here"})).await.unwrap(),
        json!("still here")
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_callers_own_timeout_does_not_wait_for_the_server() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let client = lab_client(&broker, "tester").await;
    let started = std::time::Instant::now();
    let result = client
        .call_with(
            "sleepy",
            json!({"ms": 250}),
            CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await;
    assert!(matches!(result, Err(CallError::Timeout { .. })), "{result:?}");
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "gave up before the server answered"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_tool_nobody_hosts_is_unavailable_at_once() {
    let broker = Mosquitto::start();
    let client = lab_client(&broker, "tester").await;
    let result = client
        .call_with(
            "nobody_hosts_this",
            json!({}),
            CallOptions::new().timeout(Duration::from_secs(30)),
        )
        .await;
    match result {
        Err(CallError::Unavailable { message }) => assert!(message.contains("0x10"), "{message}"),
        other => panic!("expected unavailable, got {other:?}"),
    }
    // Bad names never reach the wire.
    assert!(matches!(
        client.call("a/b", json!({})).await,
        Err(CallError::InvalidArguments { .. })
    ));
    assert!(matches!(
        client.call("echo", json!(["not", "an", "object"])).await,
        Err(CallError::InvalidArguments { .. })
    ));
}

#[tokio::test]
async fn pubacks_are_matched_to_their_own_calls_under_concurrency() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let client = lab_client(&broker, "tester").await;
    let calls = (0..200).map(|i| {
        let client = client.clone();
        async move {
            if i % 3 == 0 {
                (i, client.call(&format!("missing_{i}"), json!({})).await)
            } else {
                (i, client.call("echo", json!({"text": format!("m{i}")})).await)
            }
        }
    });
    for (i, result) in futures::future::join_all(calls).await {
        if i % 3 == 0 {
            assert!(
                matches!(result, Err(CallError::Unavailable { .. })),
                "call {i}: {result:?}"
            );
        } else {
            assert_eq!(result.unwrap(), json!(format!("m{i}")), "call {i}");
        }
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn many_concurrent_calls_share_one_connection() {
    let broker = Mosquitto::start();
    let server = lab_server("lab")
        .broker(&broker.url())
        .max_concurrent_calls(16)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = lab_client(&broker, "tester").await;
    let calls = (0..1000).map(|i| {
        let client = client.clone();
        async move { client.call("echo", json!({"text": i.to_string()})).await }
    });
    let results = futures::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.unwrap(), json!(i.to_string()));
    }
    server.shutdown().await.unwrap();
}

fn labelled(label: &'static str) -> ToolDef {
    ToolDef::builder("which")
        .handler(move |_ctx, _args| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            Ok::<_, ToolError>(json!(label))
        })
        .build()
        .unwrap()
}

/// One instance of server `pool`, whose tool `which` answers `label`.
async fn pool_instance(broker: &Mosquitto, label: &'static str, shared: bool) -> mcpmqtt::ServerHandle {
    Server::builder("pool")
        .namespace(NAMESPACE)
        .broker(&broker.url())
        .shared_subscription(shared)
        .tool_def(labelled(label))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_shared_subscription_spreads_calls_over_instances() {
    let broker = Mosquitto::start();
    let a = pool_instance(&broker, "a", true).await;
    let b = pool_instance(&broker, "b", true).await;
    let client = lab_client(&broker, "tester").await;
    let mut served: HashMap<String, usize> = HashMap::new();
    let calls = (0..200).map(|_| client.call("which", json!({})));
    for r in futures::future::join_all(calls).await {
        *served.entry(r.unwrap().as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(
        served.values().sum::<usize>(),
        200,
        "every call answered exactly once: {served:?}"
    );
    assert!(
        served.get("a").copied().unwrap_or(0) >= 20,
        "a served too few: {served:?}"
    );
    assert!(
        served.get("b").copied().unwrap_or(0) >= 20,
        "b served too few: {served:?}"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_a_shared_subscription_every_instance_gets_the_call() {
    let broker = Mosquitto::start();
    let mut raw = support::fixtures::Raw::connect(&broker, "observer").await;
    raw.subscribe("lab/mcp/clients/tester/responses").await;
    let a = pool_instance(&broker, "a", false).await;
    let b = pool_instance(&broker, "b", false).await;
    let client = lab_client(&broker, "tester").await;
    client.call("which", json!({})).await.unwrap();
    // Both instances answered; the observer sees two responses to one call.
    let (_, first) = raw.recv_json().await;
    let (_, second) = raw.recv_json().await;
    assert_eq!(first["call_id"], second["call_id"]);
    assert_ne!(first["result"], second["result"]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn registering_a_tool_twice_is_a_builder_error() {
    let err = lab_server("lab").tool::<support::tools::echo>().build().unwrap_err();
    assert!(
        matches!(err, mcpmqtt::Error::DuplicateTool(ref t) if t == "echo"),
        "{err}"
    );
    assert!(err.to_string().contains("registered twice"));
}

#[tokio::test]
async fn calls_run_concurrently_up_to_the_configured_bound() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let busy = ToolDef::builder("busy")
        .handler(move |_ctx, _args| {
            let (r, p) = (r.clone(), p.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(40)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ToolError>(json!(null))
            }
        })
        .build()
        .unwrap();
    let broker = Mosquitto::start();
    let server = Server::builder("bounded")
        .namespace(NAMESPACE)
        .broker(&broker.url())
        .max_concurrent_calls(3)
        .tool_def(busy)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = lab_client(&broker, "tester").await;
    let calls = (0..24).map(|_| client.call("busy", json!({})));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert_eq!(peak, 3, "24 slow calls should run 3 at a time, never more");
    server.shutdown().await.unwrap();
}

/// A call that starts as it is taken is acknowledged as it is read: the
/// PUBACK leaves in the write that ends the read, not in a write of its own
/// after the response (which woke the broker once more a call).
#[tokio::test]
async fn a_call_taken_at_once_is_acknowledged_as_it_is_read() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let tester = lab_client(&broker, "tester").await;
    assert_eq!(tester.call("echo", json!({"text": "hi"})).await.unwrap(), json!("hi"));
    let (response, ack) = wait_for_log(&broker, PATIENCE, "the response and the PUBACK", response_and_ack).await;
    assert!(ack < response, "the PUBACK came after the response:\n{}", broker.log());
    server.shutdown().await.unwrap();
}

/// A call that has to wait for a slot is acknowledged only when it starts,
/// however the calls before it were: the broker's in-flight window is what
/// holds a flood back.
#[tokio::test]
async fn a_call_waiting_for_a_slot_is_acknowledged_only_when_it_starts() {
    let broker = Mosquitto::start();
    let server = online(&broker, lab_server("lab").max_concurrent_calls(10)).await;
    let tester = lab_client(&broker, "tester").await;
    let calls = (0..11).map(|_| tester.call("sleepy", json!({"ms": 200})));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap(), json!(200));
    }
    let (first_response, late_acks) = wait_for_log(&broker, PATIENCE, "11 PUBACKs and the responses", |log| {
        acks_after_first_response(log, "/sleepy/call", 11)
    })
    .await;
    assert_eq!(
        late_acks, 1,
        "10 calls start at once; the 11th is acknowledged after a slot frees (first response at line {first_response}):\n{}",
        broker.log()
    );
    server.shutdown().await.unwrap();
}

/// The line of the server's first response to a call to a tool whose call
/// topic holds `tool`, and how many of the PUBACKs of the `calls` such
/// calls came in after it; `None` until all of them are in the log.
fn acks_after_first_response(log: &str, tool: &str, calls: usize) -> Option<(usize, usize)> {
    let lines: Vec<&str> = log.lines().collect();
    let delivered: Vec<(usize, &str, &str)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains(tool))
        .filter_map(|(at, l)| delivery(l).map(|(server, mid)| (at, server, mid)))
        .collect();
    if delivered.len() < calls {
        return None;
    }
    let server = delivered[0].1;
    let from = format!("Received PUBLISH from {server} ");
    let first_response = lines
        .iter()
        .position(|l| l.contains(&from) && l.contains("/clients/tester/responses"))?;
    let mut late = 0;
    for (sent, _, mid) in &delivered {
        // The PUBACK after the call's delivery (a packet id is used again once free).
        let ack = format!("Received PUBACK from {server} (Mid: {mid},");
        let at = sent + lines[*sent..].iter().position(|l| l.contains(&ack))?;
        late += usize::from(at > first_response);
    }
    Some((first_response, late))
}

/// The client id and packet id of a broker's log line that delivers a
/// publish: `Sending PUBLISH to lab-1a2b (d0, q1, r0, m3, 'topic', ...`.
fn delivery(line: &str) -> Option<(&str, &str)> {
    let rest = line.split("Sending PUBLISH to ").nth(1)?;
    let client = rest.split(' ').next()?;
    let mid = rest.split(", m").nth(1)?.split(',').next()?;
    Some((client, mid))
}

/// The lines (numbers) of the broker's log where the server's response to
/// the call to `echo`, and its PUBACK of that call, came in.
fn response_and_ack(log: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = log.lines().collect();
    // `Sending PUBLISH to lab-1a2b (d0, q1, r0, m3, 'lab/mcp/tools/echo/call/tester', ...`
    // The call topic, not the tool's name alone: the caller may fetch the
    // tool's card (`.../echo/card`) first.
    let (at, (server, mid)) = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.contains("/echo/call/"))
        .find_map(|(at, l)| Some((at, delivery(l)?)))?;
    let from = format!("Received PUBLISH from {server} ");
    // Both come after the call's delivery (a packet id is used again once free).
    let after = |wanted: &dyn Fn(&str) -> bool| lines[at..].iter().position(|l| wanted(l)).map(|i| at + i);
    let response = after(&|l| l.contains(&from) && l.contains("/clients/tester/responses"))?;
    let ack = format!("Received PUBACK from {server} (Mid: {mid},");
    let ack = after(&|l| l.contains(&ack))?;
    Some((response, ack))
}

/// Arguments sent again and again are lent, not cloned for each call.
#[tokio::test]
async fn arguments_can_be_lent() {
    let broker = Mosquitto::start();
    let server = lab_online(&broker).await;
    let tester = lab_client(&broker, "tester").await;
    let args = json!({"text": "again"});
    for _ in 0..3 {
        assert_eq!(tester.call("echo", &args).await.unwrap(), json!("again"));
    }
    let options = CallOptions::new().timeout(Duration::from_secs(10));
    assert_eq!(tester.call_with("echo", &args, options).await.unwrap(), json!("again"));
    assert_eq!(args, json!({"text": "again"}), "still the caller's");
    server.shutdown().await.unwrap();
}
