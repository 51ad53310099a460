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
use serde_json::json;
use support::acl_proof::{self, password};
use support::fixtures::{Raw, PATIENCE};
use support::login::{client_builder, logged_in_client, logged_in_server};
use support::mosquitto::{dynsec_password_fields, Mosquitto};

const SERVER: &str = gtm_tools::SERVER_NAME;

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

    // From here on scout and operator speak raw MQTT too. (Mosquitto's
    // acl_file grants every SUBSCRIBE and filters at delivery; dynsec refuses
    // the SUBSCRIBE. Either way nothing may arrive.)
    scout.disconnect().await;
    let mut scout_raw = raw(&broker, "scout").await;
    acl_proof::spy_reads_nothing(&mut scout_raw, &operator).await;
    acl_proof::cards_cannot_be_forged(&mut scout_raw, SERVER).await;
    operator.disconnect().await;
    let mut operator_raw = raw(&broker, "operator").await;
    acl_proof::replies_reach_only_the_caller(&mut scout_raw, &mut operator_raw, SERVER).await;

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
