//! Building a client, and connecting it: the subscriptions to its responses,
//! its private streams and the cards. The setters only collect: nothing
//! connects before [`ClientBuilder::connect`].

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;

use super::discovery::Discovery;
use super::router::{OwnTopics, Router};
use super::{Client, Inner};
use crate::connection::{connection_setters, Link, Settings};
use crate::error::Error;
use crate::protocol::names;

impl Client {
    /// Starts a client with this identity: its MQTT client id and username
    /// unless set otherwise, and the `{id}` of its response topic.
    pub fn builder(identity: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            identity: identity.into(),
            settings: Settings::default(),
            default_timeout: Duration::from_secs(30),
        }
    }
}

/// Builds a [`Client`].
#[must_use]
pub struct ClientBuilder {
    identity: String,
    settings: Settings,
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
    connection_setters!(
        finish: "connect()",
        protocol_note: " On MQTT 3.1.1 a call the broker refuses can only time out: see [`Protocol`](crate::Protocol)."
    );

    /// Authenticates as the identity with this password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        let user = self.settings.username().unwrap_or(&self.identity).to_owned();
        self.settings = self.settings.credentials(user, password);
        self
    }

    /// How long calls wait for their response by default (30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Connects and subscribes to the response topic and the cards.
    pub async fn connect(self) -> Result<Client, Error> {
        names::validate("caller", &self.identity)?;
        let (topics, mut broker) = self.settings.finish()?;
        // Before connecting: a broker that takes the certificate's CN as
        // the identity would grant this client another identity's rights,
        // and its topics (named after its identity) would all be refused.
        broker.check_identity("client", &self.identity)?;
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
        {
            // A lost session reaches the calls waiting through the router,
            // once its subscriptions are back.
            let router = router.clone();
            let mut sessions_lost = link.sessions_lost();
            tokio::spawn(async move {
                while sessions_lost.changed().await.is_ok() {
                    router.session_lost();
                }
            });
        }
        // Server Cards only: they list the tools, whose cards are fetched
        // when needed (see `discovery`).
        link.subscribe(&[
            (response_topic.clone(), QoS::AtLeastOnce),
            (private_streams, QoS::AtLeastOnce),
            (topics.server_cards(), QoS::AtLeastOnce),
        ])
        .await?;
        router.cards.subscribed();
        let discovery = Discovery::new(link.clone(), topics.clone(), router.clone());
        Ok(Client {
            inner: Arc::new(Inner {
                link,
                topics,
                identity: self.identity,
                response_topic,
                default_timeout: self.default_timeout,
                protocol: broker.protocol,
                router,
                discovery,
                conn_task,
                last_call_bytes: AtomicUsize::new(0),
            }),
        })
    }
}
