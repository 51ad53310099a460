//! The connection settings both builders share: broker, namespace,
//! credentials and MQTT version, with their setters written once.
//! Holds and checks settings only: it opens no connection.
//!
//! [`ServerBuilder`](crate::ServerBuilder) and
//! [`ClientBuilder`](crate::ClientBuilder) each keep a [`Settings`] in a
//! field named `settings`, and expand [`connection_setters!`] in their
//! `impl` for the public setters: the two cannot drift apart, and a setter
//! added here reaches both. The credentials differ in name only: a server
//! gives `credentials(username, password)`, a client `password(password)`
//! (its username is its identity); both land in [`Settings::credentials`].

use super::{BrokerOptions, Protocol};
use crate::error::Error;
use crate::protocol::names;
use crate::protocol::topics::{Topics, DEFAULT_NAMESPACE};

/// The broker, namespace, credentials and MQTT version a builder collects.
pub(crate) struct Settings {
    namespace: String,
    broker: BrokerOptions,
    /// A broker URL that could not be read, reported by [`Settings::finish`]
    /// (a builder's setters cannot fail).
    broker_error: Option<Error>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: DEFAULT_NAMESPACE.to_owned(),
            broker: BrokerOptions::default(),
            broker_error: None,
        }
    }
}

impl Settings {
    pub(crate) fn broker(mut self, url: &str) -> Self {
        match self.broker.reparse(url) {
            Ok(b) => self.broker = b,
            Err(e) => self.broker_error = Some(e),
        }
        self
    }

    pub(crate) fn broker_options(mut self, options: BrokerOptions) -> Self {
        self.broker = options;
        self
    }

    pub(crate) fn namespace(mut self, namespace: String) -> Self {
        self.namespace = namespace;
        self
    }

    pub(crate) fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.broker = self.broker.with_credentials(username, password);
        self
    }

    pub(crate) fn ca_pem(mut self, pem: Vec<u8>) -> Self {
        self.broker = self.broker.with_ca_pem(pem);
        self
    }

    pub(crate) fn client_cert(mut self, cert_pem: Vec<u8>, key_pem: Vec<u8>) -> Self {
        self.broker = self.broker.with_client_cert(cert_pem, key_pem);
        self
    }

    pub(crate) fn protocol(mut self, protocol: Protocol) -> Self {
        self.broker = self.broker.with_protocol(protocol);
        self
    }

    /// The username set so far, if any.
    pub(crate) fn username(&self) -> Option<&str> {
        self.broker.username()
    }

    /// The namespace's topics and the broker options, or what is wrong with
    /// them: the namespace first, then the broker URL.
    pub(crate) fn finish(self) -> Result<(Topics, BrokerOptions), Error> {
        let namespace = names::normalize_namespace(&self.namespace)?;
        if let Some(e) = self.broker_error {
            return Err(e);
        }
        Ok((Topics::new(namespace), self.broker))
    }
}

/// The public setters of [`Settings`], for a builder's `impl` block: `broker`,
/// `broker_options`, `namespace`, `ca_pem`, `client_cert` and `protocol`. `finish` names the method
/// that reports a bad URL (`build()`, `connect()`); `protocol_note` says
/// what MQTT 3.1.1 changes for this side.
macro_rules! connection_setters {
    (finish: $finish:literal, protocol_note: $protocol_note:literal) => {
        /// The broker to connect to: `mqtt://host:port` or `mqtts://host:port`
        #[doc = concat!(" (default `mqtt://127.0.0.1:1883`). A bad URL is reported by `", $finish, "`.")]
        ///
        /// Several URLs separated by commas are brokers to fail over
        /// between, the first tried first (see [`BrokerOptions`](crate::BrokerOptions)).
        pub fn broker(mut self, url: &str) -> Self {
            self.settings = self.settings.broker(url);
            self
        }

        /// All connection options at once (TLS roots, client certificate,
        /// packet size, session expiry...), replacing those set before.
        pub fn broker_options(mut self, options: $crate::BrokerOptions) -> Self {
            self.settings = self.settings.broker_options(options);
            self
        }

        /// The topic namespace (default `a2a/v1`).
        pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
            self.settings = self.settings.namespace(namespace.into());
            self
        }

        /// Trusts this PEM CA bundle for `mqtts://` instead of the system
        /// roots: see [`BrokerOptions::with_ca_pem`]($crate::BrokerOptions::with_ca_pem).
        pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
            self.settings = self.settings.ca_pem(pem.into());
            self
        }

        /// Presents this client certificate, with its private key (PEM;
        /// PKCS#8, RSA or EC), over `mqtts://`: mutual TLS, where the broker
        /// takes the certificate's subject CN as the identity and no
        /// password is needed. The identity must be that CN, or starting
        /// (a server's `start()`, a client's `connect()`) fails with
        /// [`Error::IdentityMismatch`]($crate::Error::IdentityMismatch), naming both.
        /// See [`BrokerOptions::with_client_cert`]($crate::BrokerOptions::with_client_cert).
        pub fn client_cert(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
            self.settings = self.settings.client_cert(cert_pem.into(), key_pem.into());
            self
        }

        /// Speaks this MQTT version with the broker (default MQTT 5).
        #[doc = $protocol_note]
        pub fn protocol(mut self, protocol: $crate::Protocol) -> Self {
            self.settings = self.settings.protocol(protocol);
            self
        }
    };
}
pub(crate) use connection_setters;
