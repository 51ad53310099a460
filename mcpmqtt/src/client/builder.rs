//! Building a client, and connecting it.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;

use super::router::{OwnTopics, Router};
use super::{Client, Inner};
use crate::connection::{BrokerOptions, Link, Protocol};
use crate::error::Error;
use crate::protocol::names;
use crate::protocol::topics::{Topics, DEFAULT_NAMESPACE};

impl Client {
    /// Starts a client with this identity: its MQTT client id and username
    /// unless set otherwise, and the `{id}` of its response topic.
    pub fn builder(identity: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            identity: identity.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            broker: BrokerOptions::default(),
            broker_error: None,
            default_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    identity: String,
    namespace: String,
    broker: BrokerOptions,
    broker_error: Option<Error>,
    default_timeout: Duration,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder {
    /// The broker to connect to: `mqtt://host:port` or `mqtts://host:port`
    /// (default `mqtt://127.0.0.1:1883`). A bad URL is reported by `connect()`.
    pub fn broker(mut self, url: &str) -> Self {
        match self.broker.reparse(url) {
            Ok(b) => self.broker = b,
            Err(e) => self.broker_error = Some(e),
        }
        self
    }

    /// All connection options at once (TLS roots, packet size, session expiry...).
    pub fn broker_options(mut self, options: BrokerOptions) -> Self {
        self.broker = options;
        self
    }

    /// The topic namespace (default `a2a/v1`).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Authenticates as the identity with this password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        let user = self.broker.username.clone().unwrap_or_else(|| self.identity.clone());
        self.broker = self.broker.with_credentials(user, password);
        self
    }

    /// How long calls wait for their response by default (30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Speaks this MQTT version with the broker (default MQTT 5). On MQTT
    /// 3.1.1 a call the broker refuses can only time out: see [`Protocol`].
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.broker = self.broker.with_protocol(protocol);
        self
    }

    /// Connects and subscribes to the response topic and the cards.
    pub async fn connect(self) -> Result<Client, Error> {
        names::validate("caller", &self.identity)?;
        let namespace = names::normalize_namespace(&self.namespace)?;
        let topics = Topics::new(namespace);
        if let Some(e) = self.broker_error {
            return Err(e);
        }
        let mut broker = self.broker;
        if broker.password.is_some() {
            broker.username.get_or_insert_with(|| self.identity.clone());
        }
        let client_id = broker.client_id.clone().unwrap_or_else(|| self.identity.clone());
        let options = broker.mqtt_options(&client_id, None, false)?;
        let response_topic = topics.responses(&self.identity);
        let private_streams = topics.private_streams(&self.identity);
        let router = Arc::new(Router::default());
        // Routed on the connection task itself: a response reaches its call
        // with one wake-up, not two.
        let deliver = {
            let router = router.clone();
            let topics = topics.clone();
            let own = OwnTopics {
                responses: response_topic.clone(),
                streams_prefix: private_streams.trim_end_matches('+').to_owned(),
            };
            move |publish| router.route(&topics, &own, publish)
        };
        let (link, conn_task) = Link::connect(options, &broker, deliver).await?;
        {
            // Calls waiting for a response fail at once when reconnecting is
            // given up, instead of each waiting out its timeout.
            let router = router.clone();
            let link = link.clone();
            tokio::spawn(async move {
                let why = link.closed().await;
                router.fail_all(&why.unwrap_or_else(|| "the client disconnected".into()));
            });
        }
        link.subscribe(&[
            (response_topic.clone(), QoS::AtLeastOnce),
            (private_streams, QoS::AtLeastOnce),
            (topics.tool_cards(), QoS::AtLeastOnce),
            (topics.server_cards(), QoS::AtLeastOnce),
        ])
        .await?;
        router.cards.subscribed();
        Ok(Client {
            inner: Arc::new(Inner {
                link,
                topics,
                identity: self.identity,
                response_topic,
                default_timeout: self.default_timeout,
                protocol: broker.protocol,
                router,
                conn_task,
                last_call_bytes: AtomicUsize::new(0),
            }),
        })
    }
}
