//! Mutual TLS: client certificates are the identities. A real Mosquitto,
//! configured with the settings `mcpmqtt::acl::mosquitto_conf_certificates`
//! writes (`require_certificate true`, `use_identity_as_username true`) and
//! the generated ACL, with certificates made here (rcgen). No password
//! anywhere: the broker has no password file, and nobody gives one.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use gtm_tools::PostLog;
use mcpmqtt::acl::{AclFormat, AclManifest};
use mcpmqtt::{BrokerOptions, CallError, Client, Error, Server};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair, PKCS_RSA_SHA256,
};
use serde_json::json;
use support::login::PATIENCE;
use support::mosquitto::Mosquitto;

/// A throwaway 2048-bit RSA key (PKCS#8), for the RSA client certificate:
/// ring, under rcgen, signs with RSA keys but cannot make them.
const RSA_KEY: &str = include_str!("support/rsa-test-key.pem");

/// A CA, the broker's certificate for 127.0.0.1 signed by it, and client
/// certificates on demand. Its files live in a directory the `mosquitto`
/// user can read.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A client certificate and its private key, as PEM.
#[derive(Clone)]
struct Identity {
    cert: String,
    key: String,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ca = ca("mcpmqtt test CA");
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        let broker = params.signed_by(&key, &ca).unwrap();
        let pki = Pki { dir, ca };
        pki.write("ca.pem", &pki.ca.pem());
        pki.write("broker.pem", &broker.pem());
        pki.write("broker.key", &key.serialize_pem());
        pki
    }

    fn write(&self, name: &str, contents: &str) {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A certificate with subject CN `cn`, valid now, with an EC key (P-256, PKCS#8).
    fn client(&self, cn: &str) -> Identity {
        issue(&self.ca, client_params(cn), KeyPair::generate().unwrap())
    }

    /// The same with an RSA key (PKCS#8).
    fn rsa_client(&self, cn: &str) -> Identity {
        let key = KeyPair::from_pem_and_sign_algo(RSA_KEY, &PKCS_RSA_SHA256).unwrap();
        issue(&self.ca, client_params(cn), key)
    }

    /// A certificate with subject CN `cn` that expired yesterday.
    fn expired_client(&self, cn: &str) -> Identity {
        let mut params = client_params(cn);
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(30);
        params.not_after = now - time::Duration::days(1);
        issue(&self.ca, params, KeyPair::generate().unwrap())
    }

    /// Mosquitto on a TLS listener configured as `mosquitto_conf_certificates`
    /// says, enforcing `manifest`'s ACL.
    fn broker(&self, manifest: &AclManifest) -> Mosquitto {
        let conf = mcpmqtt::acl::mosquitto_conf_certificates(
            "(the harness's own acl_file)",
            &self.path("ca.pem"),
            &self.path("broker.pem"),
            &self.path("broker.key"),
        );
        let mut builder = Mosquitto::builder()
            .acl_file(&manifest.render(AclFormat::Mosquitto))
            .allow_anonymous(false);
        let mut settings = 0;
        for line in conf.lines().filter(|l| !l.is_empty() && !l.starts_with('#')) {
            // The harness has its own listener (a free port), acl_file and
            // per-listener mode; every other setting is taken as written,
            // after the harness's listener line, so it applies to it.
            let key = line.split_whitespace().next().unwrap();
            if !["listener", "acl_file", "per_listener_settings"].contains(&key) {
                builder = builder.extra_config(line);
                settings += 1;
            }
        }
        assert!(settings >= 7, "the certificate settings were found in\n{conf}");
        builder.start()
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn client_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::OrganizationName, "mcpmqtt tests");
    params.distinguished_name.push(DnType::CommonName, cn);
    params
}

fn issue(ca: &CertifiedIssuer<'static, KeyPair>, params: CertificateParams, key: KeyPair) -> Identity {
    let cert = params.signed_by(&key, ca).unwrap();
    Identity {
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// TLS to `broker`, trusting the PKI's CA, presenting `identity` if any.
fn options(pki: &Pki, broker: &Mosquitto, identity: Option<&Identity>) -> BrokerOptions {
    let options = BrokerOptions::parse(&format!("mqtts://127.0.0.1:{}", broker.port()))
        .unwrap()
        .with_ca_pem(pki.ca.pem());
    match identity {
        Some(id) => options.with_client_cert(id.cert.clone(), id.key.clone()),
        None => options,
    }
}

fn manifest() -> AclManifest {
    gtm_tools::gtm_server()
        .require_verified_caller(true)
        .build()
        .unwrap()
        .acl_manifest()
}

async fn client(pki: &Pki, broker: &Mosquitto, identity: &str, cert: &Identity) -> Client {
    Client::builder(identity)
        .broker_options(options(pki, broker, Some(cert)))
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
        .broker_options(options(&pki, &broker, Some(&pki.client(gtm_tools::SERVER_NAME))))
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
    let stranger = issue(&ca("another CA"), client_params("scout"), KeyPair::generate().unwrap());
    let why = refused("scout", options(&pki, &broker, Some(&stranger))).await;
    assert!(why.contains("not signed by a CA the broker trusts"), "{why}");

    // Expired.
    let why = refused("scout", options(&pki, &broker, Some(&pki.expired_client("scout")))).await;
    assert!(why.contains("expired"), "{why}");

    // No certificate at all.
    let why = refused("scout", options(&pki, &broker, None)).await;
    assert!(why.contains("requires a client certificate"), "{why}");

    // A certificate without its key: the key PEM holds none, or another key.
    let scout = pki.client("scout");
    let keyless = Identity {
        key: scout.cert.clone(),
        ..scout.clone()
    };
    let why = refused("scout", options(&pki, &broker, Some(&keyless))).await;
    assert!(why.contains("no private key"), "{why}");
    let wrong_key = Identity {
        key: pki.client("scout").key,
        ..scout.clone()
    };
    let why = refused("scout", options(&pki, &broker, Some(&wrong_key))).await;
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
        .with_ca_pem(pki.ca.pem());
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
