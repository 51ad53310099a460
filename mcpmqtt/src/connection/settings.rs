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
/// `broker_options`, `namespace` and `protocol`. `finish` names the method
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

        /// All connection options at once (TLS roots, packet size, session expiry...).
        pub fn broker_options(mut self, options: $crate::BrokerOptions) -> Self {
            self.settings = self.settings.broker_options(options);
            self
        }

        /// The topic namespace (default `a2a/v1`).
        pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
            self.settings = self.settings.namespace(namespace.into());
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
