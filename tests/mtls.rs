//! Mutual TLS: client certificates are the identities. A real Mosquitto,
//! configured with the settings `mcpmqtt::acl::mosquitto_conf_certificates`
//! writes (`require_certificate true`, `use_identity_as_username true`) and
//! the generated ACL, with certificates made here (rcgen). No password
//! anywhere: the broker has no password file, and nobody gives one.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use gtm_tools::PostLog;
use mcpmqtt::acl::AclManifest;
use mcpmqtt::{BrokerOptions, CallError, Client, Error, Server};
use serde_json::json;
use support::login::PATIENCE;
use support::mosquitto::Mosquitto;
use support::pki::{Identity, Pki};

fn manifest() -> AclManifest {
    gtm_tools::gtm_server()
        .require_verified_caller(true)
        .build()
        .unwrap()
        .acl_manifest()
}

async fn client(pki: &Pki, broker: &Mosquitto, identity: &str, cert: &Identity) -> Client {
    Client::builder(identity)
        .broker_options(pki.options(broker, Some(cert)))
        .namespace(gtm_tools::NAMESPACE)
        .default_timeout(PATIENCE)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{identity} connects with its certificate: {e}"))
}

#[tokio::test]
async fn a_certificate_is_the_identity_the_acl_grants_rights_to() {
    let pki = Pki::new();
    let broker = pki.broker(&manifest());
    let posts = Arc::new(PostLog::default());
    let server = gtm_tools::gtm_server_with(posts.clone())
        .require_verified_caller(true)
        // The broker forces the client id to the identity: no sibling's
        // session can be taken over.
        .adopt_orphaned_sessions(false)
        .broker_options(pki.options(&broker, Some(&pki.client(gtm_tools::SERVER_NAME))))
        .build()
        .unwrap()
        .start()
        .await
        .expect("the server starts with its certificate");
    let scout = client(&pki, &broker, "scout", &pki.client("scout")).await;
    // An RSA key works as well as an EC one.
    let operator = client(&pki, &broker, "operator", &pki.rsa_client("operator")).await;
    scout.wait_for_tool("create_social_post", PATIENCE).await.unwrap();

    // scout's certificate calls scout's tools...
    let configs = scout
        .call("query_watch_configs", json!({"platform": "x"}))
        .await
        .unwrap();
    assert_eq!(configs["configs"][0]["platform"], "x");
    let report = scout
        .call("crawl_site", json!({"url": "https://example.com", "pages": 1}))
        .await
        .unwrap();
    assert_eq!(report["pages"].as_array().map(Vec::len), Some(1));

    // ...and is refused operator's at once, by the broker (PUBACK 0x87).
    let text = format!("scout was here {}", broker.port());
    let refused = scout
        .call_with(
            "create_social_post",
            json!({"platform": "x", "text": text}),
            mcpmqtt::CallOptions::new().timeout(Duration::from_secs(60)),
        )
        .await;
    match refused {
        Err(CallError::Unauthorized { message }) => assert!(message.contains("0x87"), "{message}"),
        other => panic!("scout's post: expected the broker's refusal, got {other:?}"),
    }
    assert!(
        !posts.posts().iter().any(|(_, t)| *t == text),
        "the handler ran for scout"
    );

    // operator's certificate calls it on its attested caller topic (the
    // server refuses any other: require_verified_caller), and the handler
    // sees operator, attested by the broker.
    let receipt = operator
        .call("create_social_post", json!({"platform": "linkedin", "text": "hello"}))
        .await
        .unwrap();
    assert_eq!(receipt["posted_by"], "operator");
    assert!(posts
        .posts()
        .iter()
        .any(|(r, t)| t == "hello" && r.posted_by == "operator"));

    let log = broker.log();
    assert!(
        log.contains("u'operator'") || log.contains("u'scout'"),
        "the broker took the CN as the username:\n{log}"
    );
    scout.disconnect().await;
    operator.disconnect().await;
    server.shutdown().await.unwrap();
}

/// Connects `identity` with these options: the error it must fail with.
async fn refused(identity: &str, options: BrokerOptions) -> String {
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        Client::builder(identity)
            .broker_options(options)
            .namespace(gtm_tools::NAMESPACE)
            .connect(),
    )
    .await
    .unwrap_or_else(|_| panic!("{identity}: refused at connect, not left hanging"));
    match result {
        Err(Error::Connect(why)) => {
            eprintln!("{identity} refused: {why}");
            why
        }
        Err(other) => panic!("{identity}: expected Error::Connect, got {other:?}"),
        Ok(_) => panic!("{identity}: the broker must refuse this certificate"),
    }
}

#[tokio::test]
async fn certificates_the_broker_must_not_take_are_refused_at_connect_saying_why() {
    let pki = Pki::new();
    let broker = pki.broker(&manifest());

    // Signed by another CA.
    let why = refused("scout", pki.options(&broker, Some(&pki.stranger("scout")))).await;
    assert!(why.contains("not signed by a CA the broker trusts"), "{why}");

    // Expired.
    let why = refused("scout", pki.options(&broker, Some(&pki.expired_client("scout")))).await;
    assert!(why.contains("expired"), "{why}");

    // No certificate at all.
    let why = refused("scout", pki.options(&broker, None)).await;
    assert!(why.contains("requires a client certificate"), "{why}");

    // A certificate without its key: the key PEM holds none, or another key.
    let scout = pki.client("scout");
    let keyless = Identity {
        key: scout.cert.clone(),
        ..scout.clone()
    };
    let why = refused("scout", pki.options(&broker, Some(&keyless))).await;
    assert!(why.contains("no private key"), "{why}");
    let wrong_key = Identity {
        key: pki.client("scout").key,
        ..scout.clone()
    };
    let why = refused("scout", pki.options(&broker, Some(&wrong_key))).await;
    assert!(why.contains("not the certificate's"), "{why}");

    // And the right one is taken.
    let ok = client(&pki, &broker, "scout", &scout).await;
    ok.disconnect().await;
}

#[tokio::test]
async fn an_identity_that_is_not_the_certificates_cn_fails_at_start_naming_both() {
    let pki = Pki::new();
    // Nothing listens here: the mismatch is found before connecting.
    let nowhere = BrokerOptions::parse("mqtts://127.0.0.1:9")
        .unwrap()
        .with_ca_pem(pki.ca_pem());
    let scout = pki.client("scout");

    let err = Client::builder("operator")
        .broker_options(nowhere.clone())
        .client_cert(scout.cert.clone(), scout.key.clone())
        .connect()
        .await
        .unwrap_err();
    match &err {
        Error::IdentityMismatch {
            configured,
            certificate,
            ..
        } => assert_eq!((configured.as_str(), certificate.as_str()), ("operator", "scout")),
        other => panic!("expected IdentityMismatch, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("\"operator\"") && text.contains("\"scout\""), "{text}");

    let err = gtm_tools::gtm_server()
        .broker_options(nowhere.clone())
        .client_cert(scout.cert.clone(), scout.key.clone())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::IdentityMismatch { .. }), "{err:?}");
    assert!(
        text.contains(gtm_tools::SERVER_NAME) && text.contains("\"scout\""),
        "{text}"
    );

    // The CN is what the broker maps the certificate to.
    let options = nowhere.with_client_cert(scout.cert.clone(), scout.key.clone());
    assert_eq!(options.certificate_identity().unwrap().as_deref(), Some("scout"));

    // A certificate is sent over TLS only: plain MQTT with one is an error,
    // not a connection without it.
    let err = Server::builder("scout")
        .broker("mqtt://127.0.0.1:9")
        .client_cert(scout.cert, scout.key)
        .build()
        .unwrap()
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mqtts://"), "{err}");
}

/// The examples, as the README runs them: the server and scout with
/// `--ca`, `--cert` and `--key` (scout's from `MQTT_CA`, `MQTT_CERT` and
/// `MQTT_KEY`), and no password.
#[tokio::test]
async fn the_examples_run_with_certificates() {
    let pki = Pki::new();
    let broker = pki.broker(&gtm_tools::gtm_server().build().unwrap().acl_manifest());
    let (server_cert, server_key) = pki.write_identity("server", &pki.client(gtm_tools::SERVER_NAME));
    let _server = support::Spawned::spawn(
        Command::new(support::example_path("gtm_server"))
            .args(["--broker", &pki.url(&broker), "--namespace", gtm_tools::NAMESPACE])
            .args(["--ca", &pki.path("ca.pem")])
            .arg("--cert")
            .arg(&server_cert)
            .arg("--key")
            .arg(&server_key)
            .env_remove("MQTT_USERNAME")
            .env_remove("MQTT_PASSWORD")
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let operator = client(&pki, &broker, "operator", &pki.client("operator")).await;
    operator
        .wait_for_tool("crawl_site", PATIENCE)
        .await
        .expect("the example server is online with its certificate");

    let (scout_cert, scout_key) = pki.write_identity("scout", &pki.client("scout"));
    let mut scout = Command::new(support::example_path("scout"));
    scout
        .args(["--broker", &pki.url(&broker), "--namespace", gtm_tools::NAMESPACE])
        .env("MQTT_CA", pki.path("ca.pem"))
        .env("MQTT_CERT", &scout_cert)
        .env("MQTT_KEY", &scout_key)
        .env_remove("MQTT_USERNAME")
        .env_remove("MQTT_PASSWORD");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || scout.output()),
    )
    .await
    .expect("scout finished in time")
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scout: {stderr}\n{stdout}");
    assert!(stdout.contains("query_watch_configs -> "), "{stdout}");
    assert!(stdout.contains("crawl_site -> "), "{stdout}");
    assert!(
        stdout.contains("create_social_post refused: unauthorized"),
        "scout, identified by its certificate, is refused operator's tool:\n{stdout}"
    );
    operator.disconnect().await;
}
