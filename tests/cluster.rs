//! The product on a 3-node RMQTT cluster (raft), started by the harness on
//! free loopback ports (`tests/support/rmqtt.rs`): a server on node 1, a
//! second instance of it on node 3, clients on node 2. Needs `rmqttd` 0.24
//! (see the README's test prerequisites); fails without it.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpmqtt::{tool, CallContext, CallOptions, Client, ServerHandle, ToolError};
use serde_json::json;
use support::acl_proof::{self, password};
use support::fixtures::PATIENCE;
use support::rmqtt::RmqttCluster;
use support::{example_path, Spawned};

const NAMESPACE: &str = "lab";

/// The library's logs on stderr (shown for a failing test); `RUST_LOG` overrides.
fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mcpmqtt=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// The instance serving a call: a label given to each instance.
struct Label(&'static str);

/// Rung as each call of `which` starts, when the server has one.
#[derive(Default)]
struct Started(tokio::sync::Notify);

/// Says which instance served the call, after `ms` milliseconds.
#[tool]
async fn which(
    ctx: &CallContext,
    /// How long to take, in milliseconds.
    ms: u64,
) -> Result<String, ToolError> {
    if let Some(started) = ctx.state::<Started>() {
        started.0.notify_waiters();
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let label = ctx.state::<Label>().ok_or_else(|| ToolError::new("no label"))?;
    Ok(label.0.to_owned())
}

/// The lab server's tools and `which`, labelled.
async fn instance_on(cluster: &RmqttCluster, node: usize, label: &'static str) -> ServerHandle {
    support::tools::lab_server("lab")
        .tool::<which>()
        .state(Label(label))
        .broker(&cluster.url(node))
        .build()
        .expect("the server builds")
        .start()
        .await
        .expect("the server starts on the cluster")
}

async fn client_on(cluster: &RmqttCluster, node: usize, identity: &str) -> Client {
    Client::builder(identity)
        .broker(&cluster.url(node))
        .namespace(NAMESPACE)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .expect("the client connects to the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_calls_streams_and_the_shared_subscription_span_the_nodes() {
    logs();
    let cluster = RmqttCluster::start().await;
    let first = instance_on(&cluster, 1, "node1").await;
    let second = instance_on(&cluster, 3, "node3").await;
    let client = client_on(&cluster, 2, "tester").await;

    // Discovery through the retained cards, published on nodes 1 and 3.
    let card = client.wait_for_tool("which", PATIENCE).await.unwrap();
    assert_eq!(card.tool, "which");
    let servers = client.servers().await;
    assert!(servers.iter().any(|s| s.server == "lab"), "{servers:?}");

    // A plain call, and the attested caller.
    assert_eq!(client.call("echo", json!({"text": "hi"})).await.unwrap(), json!("hi"));
    let who = client.call("whoami", json!({})).await.unwrap();
    assert_eq!(who["caller"], "tester", "{who}");

    // Streamed calls: every partial, in order, then the result. RMQTT 0.24
    // forwards a call's partials between nodes out of order, even on the
    // one stream topic, and may deliver the response before the last of
    // them; the client puts them back in `seq` order and waits for the
    // missing ones (SPEC 5, 6.1). A few calls, so that one is scrambled.
    let expected: Vec<mcpmqtt::Partial> = (0..6)
        .map(|i| {
            if i % 2 == 0 {
                mcpmqtt::Partial::Text(i.to_string())
            } else {
                mcpmqtt::Partial::Data(json!({ "i": i }))
            }
        })
        .collect();
    for _ in 0..5 {
        let partials = Arc::new(Mutex::new(Vec::new()));
        let seen = partials.clone();
        let n = client
            .call_with(
                "count",
                json!({"n": 6}),
                CallOptions::new().on_partial(move |p| seen.lock().unwrap().push(p)),
            )
            .await
            .unwrap();
        assert_eq!(n, json!(6));
        assert_eq!(*partials.lock().unwrap(), expected);
    }

    // Calls split across the two instances by the shared subscription.
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.call("which", json!({"ms": 50})).await })
        })
        .collect();
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for call in calls {
        let label = call.await.unwrap().unwrap();
        *served.entry(label.as_str().unwrap().to_owned()).or_default() += 1;
    }
    assert_eq!(served.values().sum::<usize>(), 20);
    assert_eq!(served.len(), 2, "both instances served calls: {served:?}");

    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_will_of_a_killed_server_takes_its_tools_off_the_list_on_another_node() {
    let cluster = RmqttCluster::start().await;
    let client = Client::builder("scout")
        .broker(&cluster.url(2))
        .namespace(gtm_tools::NAMESPACE)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap();
    let mut server = Spawned::spawn(
        std::process::Command::new(example_path("gtm_server"))
            .args(["--broker", &cluster.url(1)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    client.wait_for_tool("crawl_site", PATIENCE).await.unwrap();
    server.kill();
    let card = client
        .wait_for_server_offline(gtm_tools::SERVER_NAME, PATIENCE)
        .await
        .expect("the Last Will, published on node 1, reaches node 2");
    assert_eq!(card.server, gtm_tools::SERVER_NAME);
    let listed = client.tools().await.unwrap();
    assert!(listed.is_empty(), "no tool of an offline server is listed: {listed:?}");
}

// ---------------------------------------------------------------------------
// The generated RMQTT ACL, loaded unchanged by every node

/// A cluster enforcing the `rmqtt` rendering of the gtm server's manifest,
/// with a connect rule (password) for every identity of it.
async fn acl_cluster(require_verified_caller: bool) -> RmqttCluster {
    let manifest = gtm_tools::gtm_server()
        .require_verified_caller(require_verified_caller)
        .build()
        .unwrap()
        .acl_manifest();
    let passwords = manifest
        .identities
        .iter()
        .map(|i| (i.identity.clone(), password(&i.identity)))
        .collect();
    let acl = mcpmqtt::acl::rmqtt_with_passwords(&manifest, &passwords);
    RmqttCluster::builder().acl(&acl).start().await
}

async fn gtm_client(cluster: &RmqttCluster, node: usize, identity: &str) -> Client {
    Client::builder(identity)
        .broker(&cluster.url(node))
        .password(password(identity))
        .namespace(gtm_tools::NAMESPACE)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{identity} connects: {e}"))
}

async fn raw(cluster: &RmqttCluster, node: usize, identity: &str) -> support::fixtures::Raw {
    let pw = password(identity);
    support::fixtures::Raw::connect_at("127.0.0.1", cluster.port(node), identity, Some((identity, &pw))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_rmqtt_acl_refuses_at_the_wire_on_every_node() {
    use rumqttc::v5::mqttbytes::v5::SubscribeReasonCode;

    let cluster = acl_cluster(false).await;
    let posts = Arc::new(gtm_tools::PostLog::default());
    let server = gtm_tools::gtm_server_with(posts.clone())
        .broker(&cluster.url(1))
        .credentials(gtm_tools::SERVER_NAME, password(gtm_tools::SERVER_NAME))
        .build()
        .unwrap()
        .start()
        .await
        .expect("the server logs in on node 1");
    let scout = gtm_client(&cluster, 2, "scout").await;
    let operator = gtm_client(&cluster, 3, "operator").await;
    scout.wait_for_tool("create_social_post", PATIENCE).await.unwrap();
    // The grants let a caller fetch each Tool Card by its exact topic.
    let listed = scout.tools().await.expect("every listed card fetched under the ACL");
    assert_eq!(listed.len(), server.server().tools().len());

    // Allowed: scout's tool, and operator's post, as operator.
    let configs = scout
        .call("query_watch_configs", json!({"platform": "x"}))
        .await
        .unwrap();
    assert_eq!(configs["configs"][0]["platform"], "x");
    let receipt = operator
        .call("create_social_post", json!({"platform": "linkedin", "text": "hi"}))
        .await
        .unwrap();
    assert_eq!(receipt["posted_by"], "operator");

    // scout's post: refused at once by the broker (0x87); the handler never ran.
    let result = scout
        .call("create_social_post", json!({"platform": "x", "text": "scout was here"}))
        .await;
    match result {
        Err(mcpmqtt::CallError::Unauthorized { message }) => assert!(message.contains("0x87"), "{message}"),
        other => panic!("scout's post: expected unauthorized, got {other:?}"),
    }
    assert!(!posts.posts().iter().any(|(_, t)| t == "scout was here"));

    // From here on scout speaks raw MQTT, on node 2, and so does operator,
    // on node 3. scout may not read operator's traffic: RMQTT refuses each
    // SUBSCRIBE (0x80).
    scout.disconnect().await;
    let mut scout_raw = raw(&cluster, 2, "scout").await;
    let codes = acl_proof::spy_reads_nothing(&mut scout_raw, &operator).await;
    for (filter, code) in acl_proof::SPY_FILTERS.iter().zip(codes) {
        assert!(
            !matches!(code, SubscribeReasonCode::Success(_)),
            "scout subscribed to {filter}: {code:?}"
        );
    }
    // It may not publish a card; the connection stays
    // (disconnect_if_pub_rejected = false).
    acl_proof::cards_cannot_be_forged(&mut scout_raw, gtm_tools::SERVER_NAME).await;
    // Replies reach only their caller, across the nodes.
    operator.disconnect().await;
    let mut operator_raw = raw(&cluster, 3, "operator").await;
    acl_proof::replies_reach_only_the_caller(&mut scout_raw, &mut operator_raw, gtm_tools::SERVER_NAME).await;

    // An identity that the file names nowhere cannot connect at all.
    let mallory = Client::builder("mallory")
        .broker(&cluster.url(2))
        .password(password("mallory"))
        .namespace(gtm_tools::NAMESPACE)
        .connect()
        .await;
    assert!(mallory.is_err(), "mallory connected");
    // Nor can scout with a wrong password.
    let impostor = Client::builder("scout")
        .broker(&cluster.url(3))
        .password("guess")
        .namespace(gtm_tools::NAMESPACE)
        .connect()
        .await;
    assert!(impostor.is_err(), "a wrong password connected");

    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_verified_caller_closes_the_v01_topics_on_rmqtt() {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;

    let cluster = acl_cluster(true).await;
    let server = gtm_tools::gtm_server()
        .require_verified_caller(true)
        .broker(&cluster.url(1))
        .credentials(gtm_tools::SERVER_NAME, password(gtm_tools::SERVER_NAME))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let scout = gtm_client(&cluster, 2, "scout").await;
    scout.call("query_watch_configs", json!({})).await.unwrap();
    scout.disconnect().await;
    let mut scout_raw = raw(&cluster, 3, "scout").await;
    let call = json!({"call_id": "plain", "arguments": {}, "client": "scout"});
    let reason = scout_raw
        .publish(
            "gtm/mcp/tools/query_watch_configs/call",
            call.to_string(),
            Default::default(),
        )
        .await;
    assert_eq!(
        reason,
        PubAckReason::NotAuthorized,
        "a v0.1 call with no attested caller"
    );
    server.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------
// A node dies

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_fails_over_when_its_node_is_killed_while_calls_run() {
    logs();
    let mut cluster = RmqttCluster::start().await;
    let started = Arc::new(Started::default());
    // The server's list starts with node 1; the client is on node 2.
    let server = support::tools::lab_server("lab")
        .tool::<which>()
        .state(Label("failing-over"))
        .shared_state(started.clone())
        .broker(&cluster.urls(&[1, 3]))
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let client = client_on(&cluster, 2, "tester").await;
    client.wait_for_tool("which", PATIENCE).await.unwrap();
    assert_eq!(
        client.call("which", json!({"ms": 0})).await.unwrap(),
        json!("failing-over")
    );

    let deadline = Duration::from_secs(20);
    let running = started.0.notified();
    tokio::pin!(running);
    running.as_mut().enable();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let at = std::time::Instant::now();
                let outcome = client
                    .call_with("which", json!({"ms": 200 + i}), CallOptions::new().timeout(deadline))
                    .await;
                (outcome, at.elapsed())
            })
        })
        .collect();
    tokio::time::timeout(PATIENCE, running)
        .await
        .expect("a call runs on the server");
    cluster.kill(1);

    let (mut ok, mut failed) = (0, 0);
    for call in calls {
        let (outcome, took) = call.await.unwrap();
        assert!(
            took <= deadline + Duration::from_secs(2),
            "a call took {took:?}, past its deadline"
        );
        match outcome {
            Ok(v) => {
                assert_eq!(v, json!("failing-over"));
                ok += 1;
            }
            Err(mcpmqtt::CallError::Timeout { .. } | mcpmqtt::CallError::Transport(_)) => failed += 1,
            Err(e) => panic!("a call failed otherwise than by `timeout` or `transport`: {e}"),
        }
    }
    eprintln!("calls in flight when node 1 died: {ok} succeeded, {failed} failed by their deadline");
    // The server serves again, through node 3. RMQTT never answers 0x10: a
    // call published before the server's new subscription is routable from
    // node 2 is dropped, and can only time out; so call with a short
    // timeout until one is answered, as a caller would.
    let killed_at = std::time::Instant::now();
    let serving_again = Duration::from_secs(60);
    loop {
        let outcome = client
            .call_with(
                "which",
                json!({"ms": 0}),
                CallOptions::new().timeout(Duration::from_secs(2)),
            )
            .await;
        match outcome {
            Ok(v) => {
                assert_eq!(v, json!("failing-over"));
                break;
            }
            Err(mcpmqtt::CallError::Timeout { .. } | mcpmqtt::CallError::Transport(_)) => {
                assert!(
                    killed_at.elapsed() < serving_again,
                    "the server did not serve again within {serving_again:?} of the node's death"
                );
            }
            Err(e) => panic!("a call failed otherwise than by `timeout` or `transport`: {e}"),
        }
    }
    eprintln!(
        "served again {:?} after the calls in flight settled",
        killed_at.elapsed()
    );
    assert!(server.is_connected());
    client.wait_for_tool("which", PATIENCE).await.unwrap();
    server.shutdown().await.unwrap();
}
