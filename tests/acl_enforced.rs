//! The generated ACL, loaded into a real Mosquitto 2.0 (once as an
//! `acl_file`, once as dynamic-security JSON, with real passwords), enforces
//! the tools' `allowed_callers` at the wire.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gtm_tools::PostLog;
use mcpmqtt::acl::{AclFormat, AclManifest};
use mcpmqtt::{CallError, CallOptions, Client, ServerHandle};
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use serde_json::{json, Value};
use support::fixtures::{call_props, Raw, PATIENCE};
use support::login::{client_builder, logged_in_client, logged_in_server};
use support::mosquitto::{dynsec_password_fields, Mosquitto};

const SERVER: &str = gtm_tools::SERVER_NAME;

fn password(identity: &str) -> String {
    format!("{identity}-secret")
}

fn manifest(require_verified_caller: bool) -> AclManifest {
    gtm_tools::gtm_server()
        .require_verified_caller(require_verified_caller)
        .build()
        .unwrap()
        .acl_manifest()
}

/// Every identity of the manifest, plus `mallory`, who has a password but no
/// rights.
fn identities(manifest: &AclManifest) -> Vec<String> {
    let mut all: Vec<String> = manifest.identities.iter().map(|i| i.identity.clone()).collect();
    all.push("mallory".into());
    all
}

/// Mosquitto with the generated `acl_file` and a password file.
fn with_acl_file(manifest: &AclManifest) -> Mosquitto {
    let mut builder = Mosquitto::builder().acl_file(&manifest.render(AclFormat::Mosquitto));
    for identity in identities(manifest) {
        builder = builder.user(&identity, &password(&identity));
    }
    builder.extra_config("use_username_as_clientid true").start()
}

/// Mosquitto with the generated dynamic-security JSON, passwords filled in.
fn with_dynsec(manifest: &AclManifest) -> Mosquitto {
    let mut passwords = BTreeMap::new();
    for identity in identities(manifest) {
        passwords.insert(identity.clone(), dynsec_password_fields(&password(&identity)));
    }
    let json = mcpmqtt::acl::dynsec_with_passwords(manifest, &passwords);
    Mosquitto::builder().dynsec(&json).start()
}

async fn online(broker: &Mosquitto, require_verified_caller: bool, posts: Arc<PostLog>) -> ServerHandle {
    let server = gtm_tools::gtm_server_with(posts).require_verified_caller(require_verified_caller);
    logged_in_server(broker, server, SERVER, &password(SERVER)).await
}

async fn client(broker: &Mosquitto, identity: &'static str) -> Client {
    logged_in_client(broker, gtm_tools::NAMESPACE, identity, &password(identity)).await
}

async fn raw(broker: &Mosquitto, identity: &str) -> Raw {
    Raw::connect_with(broker, identity, Some((identity, &password(identity)))).await
}

/// What scout tries to read of operator's traffic.
const SPY_FILTERS: [&str; 5] = [
    "gtm/mcp/clients/operator/responses",
    "gtm/mcp/clients/operator/streams/+",
    "gtm/mcp/clients/+/responses",
    "gtm/mcp/clients/+/streams/+",
    "gtm/mcp/clients/#",
];

/// Every point of the proof, against one broker. Identity = username =
/// client id, so each identity holds one connection at a time.
async fn prove(broker: Mosquitto) {
    let posts = Arc::new(PostLog::default());
    let server = online(&broker, false, posts.clone()).await;
    let scout = client(&broker, "scout").await;
    let operator = client(&broker, "operator").await;
    scout.wait_for_tool("create_social_post", PATIENCE).await.unwrap();
    // The grants let a caller fetch each Tool Card by its exact topic.
    let listed = scout.tools().await.expect("every listed card fetched under the ACL");
    assert_eq!(listed.len(), server.server().tools().len());

    // scout calls query_watch_configs: ok.
    let configs = scout
        .call("query_watch_configs", json!({"platform": "x"}))
        .await
        .unwrap();
    assert_eq!(configs["configs"][0]["platform"], "x");

    // scout calls create_social_post: refused at once by the broker; the
    // handler never ran.
    let text = format!("scout was here {}", broker.port());
    let started = Instant::now();
    let result = scout
        .call_with(
            "create_social_post",
            json!({"platform": "x", "text": text}),
            CallOptions::new().timeout(Duration::from_secs(60)),
        )
        .await;
    match result {
        Err(CallError::Unauthorized { message }) => assert!(message.contains("0x87"), "{message}"),
        other => panic!("scout's post: expected unauthorized, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "refused at once, not by a timeout"
    );
    assert!(
        !posts.posts().iter().any(|(_, t)| *t == text),
        "the handler ran for scout"
    );

    // operator calls create_social_post: ok, as operator.
    let text = format!("operator was here {}", broker.port());
    let receipt = operator
        .call("create_social_post", json!({"platform": "linkedin", "text": text}))
        .await
        .unwrap();
    assert_eq!(receipt["posted_by"], "operator");
    assert!(posts
        .posts()
        .iter()
        .any(|(r, t)| *t == text && r.posted_by == "operator"));

    // From here on scout speaks raw MQTT.
    scout.disconnect().await;
    let mut scout_raw = raw(&broker, "scout").await;

    // scout cannot read operator's responses or partials. (Mosquitto's
    // acl_file grants every SUBSCRIBE and filters at delivery; dynsec refuses
    // the SUBSCRIBE. Either way nothing may arrive.)
    for filter in SPY_FILTERS {
        scout_raw.subscribe_result(filter).await;
    }
    let partials = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = partials.clone();
    operator
        .call_with(
            "crawl_site",
            json!({"url": "https://example.com", "pages": 2}),
            CallOptions::new().on_partial(move |_| {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        )
        .await
        .unwrap();
    assert_eq!(
        partials.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "operator got its partials"
    );
    operator
        .call("create_social_post", json!({"platform": "x", "text": "again"}))
        .await
        .unwrap();
    if let Some(p) = scout_raw.recv_within(Duration::from_millis(300)).await {
        panic!("scout read {} of operator's traffic", String::from_utf8_lossy(&p.topic));
    }
    for filter in SPY_FILTERS {
        // Overlapping subscriptions would deliver scout's own responses twice.
        scout_raw.client.unsubscribe(filter).await.unwrap();
    }

    // A client cannot publish a Tool Card or a Server Card.
    let fake = json!({"version": "1", "tool": "query_watch_configs", "server": "evil", "status": "online"});
    for topic in [
        "gtm/mcp/tools/query_watch_configs/card",
        "gtm/mcp/servers/gtm-mcp-server/card",
        "gtm/mcp/tools/evil/card",
    ] {
        let reason = scout_raw.publish_retained(topic, fake.to_string()).await;
        assert_eq!(reason, PubAckReason::NotAuthorized, "scout published {topic}");
    }
    let card = retained_card(&mut scout_raw).await;
    assert_eq!(card["server"], SERVER, "the card was not poisoned");

    // A caller cannot make the server publish outside {ns}/mcp/clients/+/responses:
    // on its own topic, the reply goes to scout's own response topic whatever
    // the call names...
    scout_raw.subscribe("gtm/mcp/clients/scout/responses").await;
    for hostile in [
        "gtm/mcp/tools/query_watch_configs/card",
        "gtm/mcp/clients/operator/responses",
    ] {
        let call = json!({"call_id": "redirect", "arguments": {}, "client": "scout", "response_topic": hostile});
        let reason = scout_raw
            .publish(
                "gtm/mcp/tools/query_watch_configs/call/scout",
                call.to_string(),
                call_props(hostile, "redirect"),
            )
            .await;
        assert_eq!(reason, PubAckReason::Success);
        let (topic, response) = scout_raw.recv_json().await;
        assert_eq!(topic, "gtm/mcp/clients/scout/responses");
        assert_eq!(response["call_id"], "redirect");
    }
    // ...and through the v0.1 topic, the server refuses the address outright.
    let call = json!({"call_id": "v01-redirect", "arguments": {}, "client": "scout",
                      "response_topic": "gtm/mcp/tools/query_watch_configs/card"});
    scout_raw
        .publish(
            "gtm/mcp/tools/query_watch_configs/call",
            call.to_string(),
            Default::default(),
        )
        .await;
    assert!(
        scout_raw.recv_within(Duration::from_millis(300)).await.is_none(),
        "nothing came back"
    );
    assert_eq!(
        retained_card(&mut scout_raw).await["server"],
        SERVER,
        "the card was not overwritten"
    );

    // A caller cannot pass as another caller: not through the topic suffix...
    for topic in [
        "gtm/mcp/tools/create_social_post/call/operator",
        "gtm/mcp/tools/query_watch_configs/call/analyst",
    ] {
        let call = json!({"call_id": "pose", "arguments": {"platform": "x", "text": "hi"}, "client": "operator"});
        let props = call_props("gtm/mcp/clients/scout/responses", "pose");
        let reason = scout_raw.publish(topic, call.to_string(), props).await;
        assert_eq!(reason, PubAckReason::NotAuthorized, "scout published on {topic}");
    }
    // ...nor through the `client` field: the server answers scout, as scout.
    operator.disconnect().await;
    let mut operator_raw = raw(&broker, "operator").await;
    operator_raw.subscribe("gtm/mcp/clients/operator/responses").await;
    let call = json!({"call_id": "claim", "arguments": {}, "client": "operator"});
    scout_raw
        .publish(
            "gtm/mcp/tools/query_watch_configs/call/scout",
            call.to_string(),
            Default::default(),
        )
        .await;
    let (topic, response) = scout_raw.recv_json().await;
    assert_eq!(topic, "gtm/mcp/clients/scout/responses");
    assert_eq!(response["call_id"], "claim");
    assert!(operator_raw.recv_within(Duration::from_millis(300)).await.is_none());

    // An identity absent from the manifest can do nothing: dynsec does not
    // let it in at all; with the acl_file it connects (its password is
    // valid) but may neither call nor read.
    let mallory = client_builder(&broker, gtm_tools::NAMESPACE, "mallory")
        .password(password("mallory"))
        .connect()
        .await;
    if let Ok(mallory) = mallory {
        for tool in ["query_watch_configs", "crawl_site", "create_social_post"] {
            let result = mallory.call(tool, json!({})).await;
            assert!(
                matches!(result, Err(CallError::Unauthorized { .. })),
                "mallory called {tool}: {result:?}"
            );
        }
        assert!(mallory.tools().await.unwrap().is_empty(), "mallory read the cards");
        mallory.disconnect().await;
        let mut m = raw(&broker, "mallory").await;
        m.subscribe_result("#").await;
        assert!(
            m.recv_within(Duration::from_millis(300)).await.is_none(),
            "mallory read something"
        );
    }

    server.shutdown().await.unwrap();
}

/// The retained card of `query_watch_configs`, as scout reads it.
async fn retained_card(scout_raw: &mut Raw) -> Value {
    scout_raw.subscribe("gtm/mcp/tools/query_watch_configs/card").await;
    let (_, card) = scout_raw.recv_json().await;
    scout_raw
        .client
        .unsubscribe("gtm/mcp/tools/query_watch_configs/card")
        .await
        .unwrap();
    card
}

#[tokio::test]
async fn the_generated_mosquitto_acl_file_enforces_the_callers() {
    prove(with_acl_file(&manifest(false))).await;
}

#[tokio::test]
async fn the_generated_dynsec_json_enforces_the_callers() {
    prove(with_dynsec(&manifest(false))).await;
}

/// With `require_verified_caller`, the ACL grants no v0.1 call topic, so an
/// unattested call cannot even be delivered.
async fn prove_verified_only(broker: Mosquitto) {
    let server = online(&broker, true, Arc::default()).await;
    let scout = client(&broker, "scout").await;
    scout.call("query_watch_configs", json!({})).await.unwrap();
    let mut scout_raw = raw(&broker, "scout").await;
    let call = json!({"call_id": "plain", "arguments": {}, "client": "scout"});
    let reason = scout_raw
        .publish(
            "gtm/mcp/tools/query_watch_configs/call",
            call.to_string(),
            Default::default(),
        )
        .await;
    assert_eq!(reason, PubAckReason::NotAuthorized);
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn require_verified_caller_closes_the_v01_topics_acl_file() {
    prove_verified_only(with_acl_file(&manifest(true))).await;
}

#[tokio::test]
async fn require_verified_caller_closes_the_v01_topics_dynsec() {
    prove_verified_only(with_dynsec(&manifest(true))).await;
}
