//! Cancellation end to end, on Mosquitto: a caller's cancel (explicit, its
//! timeout, or a dropped future) and the server's own tool timeout each stop
//! the handler (cooperating through `ctx.cancelled()`, or dropped after the
//! grace), free its slot at once, and are honoured only from the caller that
//! made the call.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpmqtt::acl::AclFormat;
use mcpmqtt::{CallError, CallOptions, Server, ServerBuilder, ToolDef, ToolError};
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use serde_json::json;
use support::fixtures::{call_props, Raw};
use support::login::{client, logged_in_client, logged_in_server, online, PATIENCE};
use support::mosquitto::Mosquitto;

const NS: &str = "lab";
const GRACE: Duration = Duration::from_millis(300);

/// What a handler did: how far it got, and whether it ended (returned, or
/// was dropped).
#[derive(Default)]
struct Effects {
    ticks: AtomicU64,
    ended: AtomicBool,
}

impl Effects {
    /// Waits until the handler has ticked at least once.
    async fn wait_started(&self) {
        wait_for(|| self.ticks.load(Ordering::SeqCst) > 0, "the handler to start").await;
    }

    /// Waits until the handler has ended; after that it cannot tick again.
    async fn wait_ended(&self) {
        wait_for(|| self.ended.load(Ordering::SeqCst), "the handler to end").await;
    }
}

/// Sets `ended` when the handler's future ends or is dropped.
struct EndGuard(Arc<Effects>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.ended.store(true, Ordering::SeqCst);
    }
}

async fn wait_for(done: impl Fn() -> bool, what: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// `slow`: ticks every 10 ms for 30 s, paying no heed to cancellation, so
/// only being dropped stops it. `polite`: the same, but stops as soon as
/// `ctx.cancelled()` fires. `quick`: answers at once.
fn tools(slow: Arc<Effects>, polite: Arc<Effects>) -> Vec<ToolDef> {
    let ticker = |name: &str, effects: Arc<Effects>, cooperate: bool, timeout_ms: u64| {
        ToolDef::builder(name)
            .description("Ticks for 30 s.")
            .streaming(true)
            .timeout(Duration::from_millis(timeout_ms))
            .handler(move |ctx, _args| {
                let effects = effects.clone();
                async move {
                    let _end = EndGuard(effects.clone());
                    for _ in 0..3000 {
                        effects.ticks.fetch_add(1, Ordering::SeqCst);
                        let tick = tokio::time::sleep(Duration::from_millis(10));
                        if cooperate {
                            tokio::select! {
                                _ = ctx.cancelled() => return Err(ToolError::new("stopped")),
                                _ = tick => {}
                            }
                        } else {
                            tick.await;
                        }
                    }
                    Ok::<_, ToolError>(json!("done"))
                }
            })
            .build()
            .unwrap()
    };
    vec![
        ticker("slow", slow, false, 60_000),
        ticker("polite", polite, true, 60_000),
        ToolDef::builder("quick")
            .description("Answers at once.")
            .handler(|_ctx, _args| async { Ok::<_, ToolError>(json!("quick")) })
            .build()
            .unwrap(),
    ]
}

/// A server that runs one call at a time, so a call whose slot is not freed
/// holds up the next.
fn one_at_a_time(tools: Vec<ToolDef>) -> ServerBuilder {
    tools.into_iter().fold(
        Server::builder("lab")
            .namespace(NS)
            .max_concurrent_calls(1)
            .cancel_grace(GRACE),
        |b, t| b.tool_def(t),
    )
}

/// The next call gets the only slot at once: well within a timeout far
/// shorter than the 30 s the cancelled call would have held it.
async fn next_call_is_served(client: &mcpmqtt::Client) {
    let options = CallOptions::new().timeout(Duration::from_secs(5));
    let answer = client.call_with("quick", json!({}), options).await;
    assert_eq!(answer.unwrap(), json!("quick"));
}

#[tokio::test]
async fn a_cancelled_call_stops_within_the_grace_and_frees_its_slot() {
    let broker = Mosquitto::start();
    let (slow, polite) = (Arc::new(Effects::default()), Arc::new(Effects::default()));
    let server = online(&broker, one_at_a_time(tools(slow.clone(), polite.clone()))).await;
    let scout = client(&broker, NS, "scout").await;

    // A handler that ignores the cancel is dropped after the grace.
    let pending = scout.call_streaming("slow", json!({}), CallOptions::new());
    slow.wait_started().await;
    let cancelled_at = Instant::now();
    pending.cancel();
    assert!(matches!(pending.result().await, Err(CallError::Cancelled { .. })));
    next_call_is_served(&scout).await;
    slow.wait_ended().await;
    let ticks = slow.ticks.load(Ordering::SeqCst);
    assert!(
        cancelled_at.elapsed() < GRACE + PATIENCE,
        "ended {:?} after the cancel",
        cancelled_at.elapsed()
    );
    // Ended means dropped: it can tick no more, and 30 s of ticks it did not do.
    assert!(ticks < 3000, "{ticks} ticks");

    // One that cooperates stops at once.
    let pending = scout.call_streaming("polite", json!({}), CallOptions::new());
    polite.wait_started().await;
    pending.cancel();
    assert!(matches!(pending.result().await, Err(CallError::Cancelled { .. })));
    polite.wait_ended().await;
    next_call_is_served(&scout).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_call_given_up_on_by_its_caller_is_cancelled_on_the_server() {
    let broker = Mosquitto::start();
    let (slow, polite) = (Arc::new(Effects::default()), Arc::new(Effects::default()));
    let server = online(&broker, one_at_a_time(tools(slow.clone(), polite.clone()))).await;
    let scout = client(&broker, NS, "scout").await;

    // The caller's own timeout: still `timeout` to the caller.
    let options = CallOptions::new().timeout(Duration::from_millis(300));
    let answer = scout.call_with("polite", json!({}), options).await;
    assert!(matches!(answer, Err(CallError::Timeout { .. })), "{answer:?}");
    polite.wait_ended().await;
    next_call_is_served(&scout).await;

    // A dropped future.
    let call = scout.call("slow", json!({}));
    let watched = async {
        slow.wait_started().await;
    };
    tokio::select! {
        _ = call => panic!("the call finished"),
        _ = watched => {}
    }
    slow.wait_ended().await;
    next_call_is_served(&scout).await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn dropping_a_pending_call_cancels_it() {
    let broker = Mosquitto::start();
    let (slow, polite) = (Arc::new(Effects::default()), Arc::new(Effects::default()));
    let server = online(&broker, one_at_a_time(tools(slow.clone(), polite.clone()))).await;
    let scout = client(&broker, NS, "scout").await;
    let pending = scout.call_streaming("polite", json!({}), CallOptions::new());
    polite.wait_started().await;
    drop(pending);
    polite.wait_ended().await;
    next_call_is_served(&scout).await;
    // A call whose result was taken is over: nothing to cancel.
    let done = scout.call_streaming("quick", json!({}), CallOptions::new());
    assert_eq!(done.result().await.unwrap(), json!("quick"));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_tools_own_timeout_stops_its_handler() {
    let broker = Mosquitto::start();
    let effects = Arc::new(Effects::default());
    let stubborn = {
        let effects = effects.clone();
        ToolDef::builder("stubborn")
            .timeout(Duration::from_millis(200))
            .handler(move |_ctx, _args| {
                let effects = effects.clone();
                async move {
                    let _end = EndGuard(effects.clone());
                    loop {
                        effects.ticks.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            })
            .build()
            .unwrap()
    };
    let server = online(
        &broker,
        Server::builder("lab")
            .namespace(NS)
            .cancel_grace(GRACE)
            .tool_def(stubborn),
    )
    .await;
    let scout = client(&broker, NS, "scout").await;
    let answer = scout.call("stubborn", json!({})).await;
    assert!(matches!(answer, Err(CallError::Timeout { .. })), "{answer:?}");
    // It no longer runs on in the background.
    effects.wait_ended().await;
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_the_caller_that_made_a_call_can_cancel_it() {
    let broker = Mosquitto::start();
    let (slow, polite) = (Arc::new(Effects::default()), Arc::new(Effects::default()));
    let server = online(&broker, one_at_a_time(tools(slow.clone(), polite.clone()))).await;
    // scout's call, made by hand so that its call_id is known.
    let mut scout = Raw::connect(&broker, "scout").await;
    let responses = "lab/mcp/clients/scout/responses";
    scout.subscribe(responses).await;
    let call = json!({"call_id": "c-1", "arguments": {}, "client": "scout", "response_topic": responses});
    let reason = scout
        .publish(
            "lab/mcp/tools/polite/call/scout",
            call.to_string(),
            call_props(responses, "c-1"),
        )
        .await;
    assert_eq!(reason, PubAckReason::Success);
    polite.wait_started().await;

    // On an open broker anyone may publish anywhere: the server checks the
    // caller the topic names against the call's.
    let cancel = json!({"call_id": "c-1", "response_topic": responses}).to_string();
    let mut mallory = Raw::connect(&broker, "mallory").await;
    let reason = mallory
        .publish(
            "lab/mcp/tools/polite/cancel/mallory",
            cancel.clone(),
            Default::default(),
        )
        .await;
    assert_eq!(
        reason,
        PubAckReason::Success,
        "the server subscribes to every caller's cancels"
    );
    wait_for(|| server_log_says(&broker), "the server to take mallory's cancel").await;
    assert!(
        !polite.ended.load(Ordering::SeqCst),
        "mallory's cancel stopped scout's call"
    );

    let reason = scout
        .publish("lab/mcp/tools/polite/cancel/scout", cancel.clone(), Default::default())
        .await;
    assert_eq!(reason, PubAckReason::Success);
    polite.wait_ended().await;
    let (_, answer) = scout.recv_json().await;
    assert_eq!(answer["error"]["type"], "cancelled", "{answer}");

    // Cancelling a finished call changes nothing.
    let reason = scout
        .publish("lab/mcp/tools/polite/cancel/scout", cancel, Default::default())
        .await;
    assert_eq!(reason, PubAckReason::Success);
    let tester = client(&broker, NS, "tester").await;
    next_call_is_served(&tester).await;
    server.shutdown().await.unwrap();
}

/// Whether the server has taken mallory's cancel: the broker logs the
/// server's PUBACK for it, which the server sends once the cancel is dealt
/// with.
fn server_log_says(broker: &Mosquitto) -> bool {
    let log = broker.log();
    // `Sending PUBLISH to lab-1a2b (d0, q1, r0, m3, 'lab/mcp/tools/polite/cancel/mallory', ...`
    let Some(sent) = log
        .lines()
        .find(|l| l.contains("Sending PUBLISH to ") && l.contains("polite/cancel/mallory"))
    else {
        return false;
    };
    let to = sent
        .split("Sending PUBLISH to ")
        .nth(1)
        .and_then(|r| r.split(' ').next());
    let mid = sent.split(", m").nth(1).and_then(|r| r.split(',').next());
    let (Some(to), Some(mid)) = (to, mid) else {
        return false;
    };
    log.contains(&format!("Received PUBACK from {to} (Mid: {mid},"))
}

#[tokio::test]
async fn the_broker_refuses_a_cancel_under_another_identity() {
    // scout may call (and cancel) every tool; mallory may call nothing.
    let manifest = one_at_a_time(tools_for(&["scout"])).build().unwrap().acl_manifest();
    let mut builder = Mosquitto::builder().acl_file(&manifest.render(AclFormat::Mosquitto));
    for identity in ["lab", "scout", "mallory"] {
        builder = builder.user(identity, &format!("{identity}-pw"));
    }
    let broker = builder.start();
    let server = logged_in_server(&broker, one_at_a_time(tools_for(&["scout"])), "lab", "lab-pw").await;
    let scout = logged_in_client(&broker, NS, "scout", "scout-pw").await;
    assert_eq!(scout.call("quick", json!({})).await.unwrap(), json!("quick"));

    let mut mallory = Raw::connect_with(&broker, "mallory", Some(("mallory", "mallory-pw"))).await;
    let cancel = json!({"call_id": "any", "response_topic": "lab/mcp/clients/scout/responses"}).to_string();
    for topic in ["lab/mcp/tools/slow/cancel/scout", "lab/mcp/tools/slow/cancel/mallory"] {
        let reason = mallory.publish(topic, cancel.clone(), Default::default()).await;
        assert_eq!(reason, PubAckReason::NotAuthorized, "{topic}");
    }
    let mut scout_raw = Raw::connect_with(&broker, "scout-raw", Some(("scout", "scout-pw"))).await;
    let reason = scout_raw
        .publish("lab/mcp/tools/slow/cancel/scout", cancel, Default::default())
        .await;
    assert_eq!(reason, PubAckReason::Success, "scout may cancel its own calls");
    server.shutdown().await.unwrap();
}

/// The test tools, each allowed to `callers`.
fn tools_for(callers: &[&str]) -> Vec<ToolDef> {
    tools(Arc::default(), Arc::default())
        .into_iter()
        .map(|t| {
            ToolDef::builder(t.name())
                .description(t.description())
                .allowed_callers(callers.iter().copied())
                .handler(|_ctx, _args| async { Ok::<_, ToolError>(json!("quick")) })
                .build()
                .unwrap()
        })
        .collect()
}
