//! Certificates for mutual TLS tests, made here with rcgen: a CA, the
//! broker's certificate for 127.0.0.1, client certificates whose subject CN
//! is the identity, and a Mosquitto configured as
//! `mcpmqtt::acl::mosquitto_conf_certificates` says. Shared with the CLI's
//! tests, which include this file by path (it needs only `mcpmqtt`, rcgen and
//! the Mosquitto harness).
//!
//! ```ignore
//! let pki = Pki::new();
//! let broker = pki.broker(&manifest);            // require_certificate, use_identity_as_username
//! let scout = pki.client("scout");               // PEM certificate and key, CN = scout
//! let options = pki.options(&broker, Some(&scout));
//! ```

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use mcpmqtt::acl::{AclFormat, AclManifest};
use mcpmqtt::BrokerOptions;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair, PKCS_RSA_SHA256,
};

use super::mosquitto::Mosquitto;

/// A throwaway 2048-bit RSA key (PKCS#8), for RSA client certificates:
/// ring, under rcgen, signs with RSA keys but cannot make them.
const RSA_KEY: &str = include_str!("rsa-test-key.pem");

/// A CA, the broker's certificate for 127.0.0.1 signed by it, and client
/// certificates on demand. Its files live in a directory the `mosquitto`
/// user (which the broker drops to when run as root) can read.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A client certificate and its private key, as PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert: String,
    pub key: String,
}

impl Pki {
    pub fn new() -> Pki {
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

    /// Writes `contents` as the file `name` of the PKI's directory, and
    /// returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        path
    }

    /// The path of the file `name` of the PKI's directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The CA's certificate, as PEM.
    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A certificate with subject CN `cn`, valid now, with an EC key (P-256, PKCS#8).
    pub fn client(&self, cn: &str) -> Identity {
        issue(&self.ca, client_params(cn), KeyPair::generate().unwrap())
    }

    /// The same with an RSA key (PKCS#8).
    pub fn rsa_client(&self, cn: &str) -> Identity {
        let key = KeyPair::from_pem_and_sign_algo(RSA_KEY, &PKCS_RSA_SHA256).unwrap();
        issue(&self.ca, client_params(cn), key)
    }

    /// A certificate with subject CN `cn` that expired long ago.
    pub fn expired_client(&self, cn: &str) -> Identity {
        let mut params = client_params(cn);
        params.not_before = rcgen::date_time_ymd(2001, 1, 1);
        params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        issue(&self.ca, params, KeyPair::generate().unwrap())
    }

    /// A certificate with subject CN `cn` signed by another CA.
    pub fn stranger(&self, cn: &str) -> Identity {
        issue(&ca("another CA"), client_params(cn), KeyPair::generate().unwrap())
    }

    /// Writes `identity` as `{name}.pem` and `{name}.key`, and returns their paths.
    pub fn write_identity(&self, name: &str, identity: &Identity) -> (PathBuf, PathBuf) {
        (
            self.write(&format!("{name}.pem"), &identity.cert),
            self.write(&format!("{name}.key"), &identity.key),
        )
    }

    /// Mosquitto on a TLS listener configured as `mosquitto_conf_certificates`
    /// says, enforcing `manifest`'s ACL: a client certificate signed by the
    /// CA is required, and its CN is the username. No password file.
    pub fn broker(&self, manifest: &AclManifest) -> Mosquitto {
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

    /// The URL of `broker`'s TLS listener.
    pub fn url(&self, broker: &Mosquitto) -> String {
        format!("mqtts://127.0.0.1:{}", broker.port())
    }

    /// TLS to `broker`, trusting the CA, presenting `identity` if any.
    pub fn options(&self, broker: &Mosquitto, identity: Option<&Identity>) -> BrokerOptions {
        let options = BrokerOptions::parse(&self.url(broker))
            .unwrap()
            .with_ca_pem(self.ca.pem());
        match identity {
            Some(id) => options.with_client_cert(id.cert.clone(), id.key.clone()),
            None => options,
        }
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
