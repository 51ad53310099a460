//! Username/password and TLS (`mqtts://`, rustls) to the broker.

mod support;

use std::time::Duration;

use mcpmqtt::{BrokerOptions, Client, Error};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use support::login::{client_builder, logged_in_client, logged_in_server};
use support::mosquitto::Mosquitto;

#[tokio::test]
async fn credentials_are_sent_and_a_wrong_password_is_a_clear_error() {
    let broker = Mosquitto::builder()
        .user("gtm-mcp-server", "server-pw")
        .user("scout", "scout-pw")
        .start();
    let server = logged_in_server(&broker, gtm_tools::gtm_server(), "gtm-mcp-server", "server-pw").await;
    let scout = logged_in_client(&broker, "gtm", "scout", "scout-pw").await;
    scout.call("query_watch_configs", json!({})).await.unwrap();

    let refused = client_builder(&broker, "gtm", "scout")
        .password("wrong")
        .connect()
        .await;
    match refused {
        Err(Error::Connect(why)) => assert!(why.contains("refused"), "{why}"),
        other => panic!("expected a refused connection, got {other:?}"),
    }
    let anonymous = client_builder(&broker, "gtm", "nobody").connect().await;
    assert!(matches!(anonymous, Err(Error::Connect(_))), "{anonymous:?}");
    server.shutdown().await.unwrap();
}

/// A CA, and a certificate for 127.0.0.1 signed by it, as PEM files in `dir`.
fn make_pki(dir: &std::path::Path) -> String {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

#[tokio::test]
async fn mqtts_urls_connect_over_tls() {
    let pki = tempfile::tempdir().unwrap();
    let ca_pem = make_pki(pki.path());
    // Readable by the `mosquitto` user the broker drops to.
    std::fs::set_permissions(pki.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    for f in ["ca.pem", "server.pem", "server.key"] {
        std::fs::set_permissions(pki.path().join(f), std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let p = |f: &str| pki.path().join(f).display().to_string();
    let broker = Mosquitto::builder()
        .extra_config(&format!("cafile {}", p("ca.pem")))
        .extra_config(&format!("certfile {}", p("server.pem")))
        .extra_config(&format!("keyfile {}", p("server.key")))
        .start();
    let url = format!("mqtts://127.0.0.1:{}", broker.port());
    let options = BrokerOptions::parse(&url).unwrap().with_ca_pem(ca_pem.clone());

    let server = gtm_tools::gtm_server()
        .broker_options(options.clone())
        .build()
        .unwrap()
        .start()
        .await
        .unwrap();
    let scout = Client::builder("scout")
        .broker_options(options)
        .namespace("gtm")
        .connect()
        .await
        .unwrap();
    let configs = scout
        .call("query_watch_configs", json!({"platform": "reddit"}))
        .await
        .unwrap();
    assert_eq!(configs["configs"][0]["platform"], "reddit");

    // Plain MQTT to a TLS listener fails, and so does TLS without the CA.
    let plain = tokio::time::timeout(
        Duration::from_secs(15),
        Client::builder("x")
            .broker(&format!("mqtt://127.0.0.1:{}", broker.port()))
            .connect(),
    )
    .await;
    assert!(
        !matches!(plain, Ok(Ok(_))),
        "plain MQTT must not connect to a TLS listener"
    );
    let untrusted = BrokerOptions::parse(&url)
        .unwrap()
        .with_ca_pem(make_pki(tempfile::tempdir().unwrap().path()));
    let err = Client::builder("y")
        .broker_options(untrusted)
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect(_)), "{err}");
    server.shutdown().await.unwrap();
}
