//! The generated ACL, loaded into a real Mosquitto 2.0 (once as an
//! `acl_file`, once as dynamic-security JSON, with real passwords), enforces
//! the tools' `allowed_callers` at the wire.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use mcpmqtt::acl::{AclFormat, AclManifest};
use mcpmqtt::{CallError, CallOptions, Client, ServerHandle};
use rumqttc::v5::mqttbytes::v5::{PubAckReason, SubscribeReasonCode};
use serde_json::{json, Value};
use support::fixtures::{call_props, Raw, PATIENCE};
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

async fn online(broker: &Mosquitto, require_verified_caller: bool) -> ServerHandle {
    gtm_tools::gtm_server()
        .broker(&broker.url())
        .credentials(SERVER, password(SERVER))
        .require_verified_caller(require_verified_caller)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap()
}

async fn client(broker: &Mosquitto, identity: &'static str) -> Client {
    Client::builder(identity)
        .broker(&broker.url())
        .password(password(identity))
        .namespace(gtm_tools::NAMESPACE)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap()
}

async fn raw(broker: &Mosquitto, identity: &str) -> Raw {
    Raw::connect_with(broker, identity, Some((identity, &password(identity)))).await
}

fn refused(code: SubscribeReasonCode) -> bool {
    !matches!(code, SubscribeReasonCode::Success(_))
}

/// Every point of the proof, against one broker.
async fn prove(broker: Mosquitto) {
    let server = online(&broker, false).await;
    let scout = client(&broker, "scout").await;
    let operator = client(&broker, "operator").await;
    scout.wait_for_tool("create_social_post", PATIENCE).await.unwrap();

    // scout calls query_watch_configs: ok.
    let configs = scout.call("query_watch_configs", json!({"platform": "x"})).await.unwrap();
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
    assert!(started.elapsed() < Duration::from_secs(10), "refused at once, not by a timeout");
    assert!(!gtm_tools::posted().iter().any(|(_, t)| *t == text), "the handler ran for scout");

    // operator calls create_social_post: ok, as operator.
    let text = format!("operator was here {}", broker.port());
    let receipt = operator
        .call("create_social_post", json!({"platform": "linkedin", "text": text}))
        .await
        .unwrap();
    assert_eq!(receipt["posted_by"], "operator");
    assert!(gtm_tools::posted().iter().any(|(r, t)| *t == text && r.posted_by == "operator"));

    // scout cannot read operator's responses or partials.
    let mut spy = raw(&broker, "scout").await;
    for filter in [
        "gtm/mcp/clients/operator/responses",
        "gtm/mcp/clients/operator/streams/+",
        "gtm/mcp/clients/+/responses",
        "gtm/mcp/clients/#",
        "#",
    ] {
        assert!(refused(spy.subscribe_result(filter).await), "scout may subscribe {filter}");
    }

    // A client cannot publish a Tool Card or a Server Card.
    let fake = json!({"version": "1", "tool": "query_watch_configs", "server": "evil", "status": "online"});
    for topic in ["gtm/mcp/tools/query_watch_configs/card", "gtm/mcp/servers/gtm-mcp-server/card", "gtm/mcp/tools/evil/card"] {
        let reason = spy.publish_retained(topic, fake.to_string()).await;
        assert_eq!(reason, PubAckReason::NotAuthorized, "scout published {topic}");
    }
    let card = scout.tool_card("query_watch_configs").await.unwrap();
    assert_eq!(card.server, SERVER, "the card was not poisoned");

    // A caller cannot make the server publish outside {ns}/mcp/clients/+/responses:
    // the reply goes to scout's own response topic whatever the call names.
    let mut scout_raw = raw(&broker, "scout").await;
    scout_raw.subscribe("gtm/mcp/clients/scout/responses").await;
    scout_raw.subscribe("gtm/mcp/tools/+/card").await;
    while scout_raw.recv_within(Duration::from_millis(200)).await.is_some() {} // the retained cards
    for hostile in ["gtm/mcp/tools/query_watch_configs/card", "gtm/mcp/clients/operator/responses"] {
        let call = json!({"call_id": "redirect", "arguments": {}, "client": "scout", "response_topic": hostile});
        let reason = scout_raw
            .publish("gtm/mcp/tools/query_watch_configs/call/scout", call.to_string(), call_props(hostile, "redirect"))
            .await;
        assert_eq!(reason, PubAckReason::Success);
        let p = scout_raw.recv().await;
        assert_eq!(String::from_utf8_lossy(&p.topic), "gtm/mcp/clients/scout/responses");
        let response: Value = serde_json::from_slice(&p.payload).unwrap();
        assert_eq!(response["call_id"], "redirect");
    }
    // Through the v0.1 topic, the server refuses the address outright.
    let call = json!({"call_id": "v01-redirect", "arguments": {}, "client": "scout",
                      "response_topic": "gtm/mcp/tools/query_watch_configs/card"});
    scout_raw
        .publish("gtm/mcp/tools/query_watch_configs/call", call.to_string(), Default::default())
        .await;
    assert!(scout_raw.recv_within(Duration::from_millis(300)).await.is_none(), "nothing was published");
    assert_eq!(scout.tool_card("query_watch_configs").await.unwrap().server, SERVER);

    // A caller cannot pass as another caller: not through the topic suffix...
    for topic in ["gtm/mcp/tools/create_social_post/call/operator", "gtm/mcp/tools/query_watch_configs/call/analyst"] {
        let call = json!({"call_id": "pose", "arguments": {"platform": "x", "text": "hi"}, "client": "operator"});
        let reason = scout_raw.publish(topic, call.to_string(), call_props("gtm/mcp/clients/scout/responses", "pose")).await;
        assert_eq!(reason, PubAckReason::NotAuthorized, "scout published on {topic}");
    }
    // ...nor through the `client` field: the server answers scout, as scout.
    let mut operator_raw = raw(&broker, "operator").await;
    operator_raw.subscribe("gtm/mcp/clients/operator/responses").await;
    let call = json!({"call_id": "claim", "arguments": {}, "client": "operator"});
    scout_raw
        .publish("gtm/mcp/tools/query_watch_configs/call/scout", call.to_string(), Default::default())
        .await;
    let (topic, response) = scout_raw.recv_json().await;
    assert_eq!((topic.as_str(), response["call_id"].as_str()), ("gtm/mcp/clients/scout/responses", Some("claim")));
    assert!(operator_raw.recv_within(Duration::from_millis(300)).await.is_none());

    // An identity absent from the manifest can do nothing.
    let mut mallory = raw(&broker, "mallory").await;
    for topic in ["gtm/mcp/tools/query_watch_configs/call", "gtm/mcp/tools/query_watch_configs/call/mallory"] {
        let call = json!({"call_id": "m", "arguments": {}, "client": "mallory"});
        assert_eq!(
            mallory.publish(topic, call.to_string(), Default::default()).await,
            PubAckReason::NotAuthorized
        );
    }
    for filter in ["gtm/mcp/tools/+/card", "gtm/mcp/clients/mallory/responses", "#"] {
        assert!(refused(mallory.subscribe_result(filter).await), "mallory may subscribe {filter}");
    }

    server.shutdown().await.unwrap();
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
    let server = online(&broker, true).await;
    let scout = client(&broker, "scout").await;
    scout.call("query_watch_configs", json!({})).await.unwrap();
    let mut scout_raw = raw(&broker, "scout").await;
    let call = json!({"call_id": "plain", "arguments": {}, "client": "scout"});
    let reason = scout_raw
        .publish("gtm/mcp/tools/query_watch_configs/call", call.to_string(), Default::default())
        .await;
    assert_eq!(reason, PubAckReason::NotAuthorized);
    assert!(refused(scout_raw.subscribe_result("gtm/mcp/tools/crawl_site/stream/+").await));
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
