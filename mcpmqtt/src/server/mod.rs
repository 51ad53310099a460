//! The server: hosts tools, publishes their cards, answers calls.

mod adoption;
pub(crate) mod dedupe;
pub(crate) mod dispatcher;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{LastWill, PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;

use crate::connection::{BrokerOptions, Link, Message, Protocol};
use crate::error::Error;
use crate::protocol::card::{
    ServerCard, Status, ToolCard, VersionInfo, CARD_VERSION, EXT_CALLER_TOPIC, EXT_PRIVATE_STREAMS, SDK_VERSION,
};
use crate::protocol::envelope::now_rfc3339;
use crate::protocol::names;
use crate::protocol::topics::Topics;
use crate::tool::{Tool, ToolDef};
use dedupe::DedupeWindow;
use dispatcher::{Dispatcher, HostedTool, Shared};

/// The namespace used when none is given: the v0.1 default.
pub const DEFAULT_NAMESPACE: &str = "a2a/v1";

/// How much longer than its drain timeout a [`ServerHandle::shutdown`] may
/// take, at most, when the broker is slow, stalled or gone: the exchanges
/// with the broker (unsubscribing, the offline cards, the goodbye) are each
/// bounded, and the connection is dropped when the bound passes.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(6);

/// For the UNSUBACKs before the drain.
const UNSUBSCRIBE_WITHIN: Duration = Duration::from_secs(2);
/// For the answers of cancelled calls and the offline cards after it (the
/// drain itself gives cancelled calls up to a second more).
const GOODBYE_WITHIN: Duration = Duration::from_secs(2);

/// A server: a named set of tools, ready to go online.
///
/// Build one with [`Server::builder`], then [`run`](Server::run) it (until
/// Ctrl-C) or [`start`](Server::start) it (and keep the handle).
#[derive(Debug)]
pub struct Server {
    pub(crate) name: String,
    pub(crate) topics: Topics,
    pub(crate) broker: BrokerOptions,
    pub(crate) tools: Vec<ToolDef>,
    pub(crate) config: ServerConfig,
}

/// Tunables of the dispatcher.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub shared_subscription: bool,
    pub max_concurrent_calls: usize,
    pub default_timeout: Duration,
    pub max_payload_bytes: usize,
    pub require_verified_caller: bool,
    pub dedupe: DedupeWindow,
    pub drain_timeout: Duration,
    pub adopt_orphaned_sessions: bool,
}

impl Server {
    /// Starts a server named `name` (its identity on the broker, and the
    /// `server` field of its cards).
    pub fn builder(name: impl Into<String>) -> ServerBuilder {
        ServerBuilder {
            name: name.into(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            broker: BrokerOptions::default(),
            broker_error: None,
            tools: Vec::new(),
            config: ServerConfig {
                shared_subscription: true,
                max_concurrent_calls: 64,
                default_timeout: Duration::from_secs(30),
                max_payload_bytes: 1024 * 1024,
                require_verified_caller: false,
                dedupe: DedupeWindow::default(),
                drain_timeout: Duration::from_secs(10),
                adopt_orphaned_sessions: true,
            },
        }
    }

    /// The server's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topics of its namespace.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// The tools it hosts.
    pub fn tools(&self) -> &[ToolDef] {
        &self.tools
    }

    /// The ACL manifest of this server: the rights of the server's identity
    /// and of every caller its tools allow, from the annotations alone.
    pub fn acl_manifest(&self) -> crate::acl::AclManifest {
        crate::acl::AclManifest::for_server(
            &self.name,
            &self.topics,
            &self.tools,
            self.shares_calls(),
            self.config.require_verified_caller,
        )
    }

    /// The card announcing this server, online or offline.
    pub fn server_card(&self, status: Status) -> ServerCard {
        ServerCard {
            version: CARD_VERSION.into(),
            server: self.name.clone(),
            namespace: self.topics.namespace().to_owned(),
            tools: self.tools.iter().map(|t| t.name.clone()).collect(),
            version_info: VersionInfo {
                sdk: SDK_VERSION.into(),
                tool: None,
            },
            status,
            last_seen: now_rfc3339(),
            instance: None,
        }
    }

    /// The server card as one running instance publishes it.
    fn instance_card(&self, status: Status, instance: &str) -> ServerCard {
        ServerCard {
            instance: Some(instance.to_owned()),
            ..self.server_card(status)
        }
    }

    /// Whether instances split the calls through shared subscriptions:
    /// asked for, and possible (MQTT 3.1.1 has no shared subscriptions).
    fn shares_calls(&self) -> bool {
        self.config.shared_subscription && self.broker.protocol != Protocol::V311
    }

    /// The call filters this server subscribes to.
    pub(crate) fn call_filters(&self) -> Vec<(String, QoS)> {
        self.tools
            .iter()
            .map(|t| {
                let topic = if self.shares_calls() {
                    self.topics.shared_calls(&t.name)
                } else {
                    self.topics.calls(&t.name)
                };
                (topic, QoS::AtLeastOnce)
            })
            .collect()
    }

    /// The card announcing one of its tools.
    pub fn tool_card(&self, tool: &ToolDef, status: Status) -> ToolCard {
        ToolCard {
            version: CARD_VERSION.into(),
            tool: tool.name.clone(),
            server: self.name.clone(),
            namespace: self.topics.namespace().to_owned(),
            description: tool.description.clone(),
            input_schema: tool.input_schema.clone(),
            output_schema: tool.output_schema.clone(),
            supports_streaming: tool.streaming,
            requires_auth: !tool.allowed_callers.is_empty(),
            allowed_callers: tool.allowed_callers.clone(),
            version_info: VersionInfo {
                sdk: SDK_VERSION.into(),
                tool: tool.version.clone(),
            },
            status,
            last_seen: now_rfc3339(),
            timeout_ms: Some(tool.timeout.unwrap_or(self.config.default_timeout).as_millis() as u64),
            extensions: vec![EXT_CALLER_TOPIC.into(), EXT_PRIVATE_STREAMS.into()],
        }
    }

    /// Connects, subscribes to the tools' call topics, publishes the cards,
    /// and serves until [`ServerHandle::shutdown`].
    ///
    /// Fails with [`Error::TooLarge`], naming the tool, when a card would
    /// exceed the maximum packet size (the server's own, or the broker's if
    /// it announced a smaller one): the broker would drop it.
    pub async fn start(self) -> Result<ServerHandle, Error> {
        let server = Arc::new(self);
        if server.broker.protocol == Protocol::V311 && server.config.shared_subscription {
            tracing::warn!(
                server = %server.name,
                "MQTT 3.1.1 has no shared subscriptions: each instance of this server gets, and runs, every call \
                 (run one instance, or set shared_subscription(false) to acknowledge this)"
            );
        }
        let instance = server
            .broker
            .client_id
            .clone()
            // Unique per instance, so that instances can share the load.
            .unwrap_or_else(|| format!("{}-{}", server.name, &uuid::Uuid::new_v4().simple().to_string()[..8]));
        let offline = serde_json::to_vec(&server.instance_card(Status::Offline, &instance))?;
        let own_card = server.topics.server_card(&server.name);
        let will = LastWill::new(own_card.clone(), offline, QoS::AtLeastOnce, true, None);
        let mut broker = server.broker.clone();
        // Calls are acknowledged as they start: beyond those running and as
        // many again waiting, a flood waits in the broker.
        broker.receive_maximum = Some((server.config.max_concurrent_calls * 2).clamp(1, 65_535) as u16);
        let options = broker.mqtt_options(&instance, Some(will), true)?;
        // The dispatcher needs the link to answer on, and the link needs the
        // dispatcher to deliver calls to: make the link, then connect it.
        let (link, opening) = Link::open(options);

        let hosted: HashMap<String, Arc<HostedTool>> = server
            .tools
            .iter()
            .map(|t| Ok((t.name.clone(), Arc::new(HostedTool::new(t.clone(), &server.config)?))))
            .collect::<Result<_, Error>>()?;
        let shared = Shared::new(server.topics.clone(), hosted, server.config.clone());
        let (cards_tx, cards_rx) = mpsc::unbounded_channel();
        let (intake, line_task) = Dispatcher::new(link.clone(), shared.clone())
            .with_own_card(own_card.clone(), cards_tx)
            .start();
        let dispatcher = intake.dispatcher();
        // Calls are taken on the connection task itself: one hop fewer per call.
        let conn_task = opening.connect(&server.broker, move |p| intake.offer(p)).await?;
        // Checked once the broker has announced its limit, and before any
        // call is taken: a card the broker would drop is an error now, not
        // a tool that silently never shows up.
        if let Err(e) = check_cards(&server, &link, &instance) {
            link.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), conn_task).await;
            return Err(e);
        }

        let mut filters = server.call_filters();
        // The server's own card, where a sibling's (or a crashed
        // predecessor's) Last Will lands.
        filters.push((own_card, QoS::AtLeastOnce));
        link.subscribe(&filters).await?;
        publish_cards(&server, &link, Status::Online, &instance).await?;

        let running = Arc::new(Running {
            server: server.clone(),
            instance,
            link: link.clone(),
            shared,
        });
        let cards_task = tokio::spawn(republish_on_reconnect(running.clone()));
        let siblings_task = tokio::spawn(adoption::watch_siblings(running.clone(), cards_rx));
        tracing::info!(server = %server.name, instance = %running.instance, tools = server.tools.len(), namespace = server.topics.namespace(), "server online");
        Ok(ServerHandle {
            running,
            conn_task,
            dispatcher,
            line_task,
            cards_task,
            siblings_task,
        })
    }

    /// Starts, serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    ///
    /// With `--emit-acl FORMAT` among the process's arguments it prints the
    /// ACL manifest in that format instead and returns without connecting
    /// (formats: `mosquitto`, `dynsec`, `emqx`, `emqx-db`, `hivemq`,
    /// `policy`, `manifest`).
    pub async fn run(self) -> Result<(), Error> {
        if let Some(format) = crate::acl::emit_acl_request(std::env::args().skip(1)) {
            let format = format.map_err(Error::InvalidArgument)?;
            print!("{}", self.acl_manifest().render(format));
            return Ok(());
        }
        let handle = tokio::select! {
            handle = self.start() => handle?,
            _ = shutdown_signal() => {
                tracing::info!("stopped before the server was online");
                return Ok(());
            }
        };
        tokio::select! {
            _ = shutdown_signal() => {}
            why = handle.running.link.closed() => {
                return Err(why.map_or(Error::Closed, Error::Connect));
            }
        }
        handle.shutdown().await
    }
}

/// After a reconnect the cards may be gone (a broker without persistence)
/// or overwritten by the Last Will (the broker saw the connection drop), so
/// they are published again.
async fn republish_on_reconnect(running: Arc<Running>) {
    let mut reconnects = running.link.reconnects();
    while reconnects.changed().await.is_ok() {
        match running.publish_cards(Status::Online).await {
            Ok(()) => tracing::info!(server = %running.server.name, "cards republished after a reconnect"),
            Err(e) => tracing::warn!(error = %e, "could not republish the cards after a reconnect"),
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix (what service managers send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// What a started server runs with, shared by its tasks.
pub(crate) struct Running {
    pub server: Arc<Server>,
    /// This instance's MQTT client id.
    pub instance: String,
    pub link: Link,
    pub shared: Arc<Shared>,
}

impl Running {
    pub(crate) async fn publish_cards(&self, status: Status) -> Result<(), Error> {
        publish_cards(&self.server, &self.link, status, &self.instance).await
    }

    /// Publishes only the server card (after a sibling's Last Will
    /// overwrote it).
    pub(crate) async fn publish_server_card(&self, status: Status) -> Result<(), Error> {
        let card = serde_json::to_vec(&self.server.instance_card(status, &self.instance))?;
        publish_retained(
            &self.link,
            vec![(self.server.topics.server_card(&self.server.name), card)],
        )
        .await
    }
}

/// Publishes every card retained, and waits for the broker to take them.
async fn publish_cards(server: &Server, link: &Link, status: Status, instance: &str) -> Result<(), Error> {
    let mut cards = Vec::with_capacity(server.tools.len() + 1);
    for tool in &server.tools {
        cards.push((
            server.topics.tool_card(&tool.name),
            serde_json::to_vec(&server.tool_card(tool, status))?,
        ));
    }
    cards.push((
        server.topics.server_card(&server.name),
        serde_json::to_vec(&server.instance_card(status, instance))?,
    ));
    publish_retained(link, cards).await
}

/// Fails with [`Error::TooLarge`] if any card, online or offline, would make
/// a packet over the connection's maximum packet size (the broker's, if it
/// announced a smaller one than the server's own).
fn check_cards(server: &Server, link: &Link, instance: &str) -> Result<(), Error> {
    for status in [Status::Online, Status::Offline] {
        for tool in &server.tools {
            let card = serde_json::to_vec(&server.tool_card(tool, status))?;
            link.fits(&card_message(server.topics.tool_card(&tool.name), card), || {
                format!("the Tool Card of `{}`", tool.name)
            })?;
        }
        let card = serde_json::to_vec(&server.instance_card(status, instance))?;
        link.fits(&card_message(server.topics.server_card(&server.name), card), || {
            format!("the Server Card of `{}`", server.name)
        })?;
    }
    Ok(())
}

/// A card as it is published: retained, QoS 1.
fn card_message(topic: String, payload: Vec<u8>) -> Message {
    Message {
        topic,
        payload: Bytes::from(payload),
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Some(PublishProperties {
            content_type: Some("application/json".into()),
            ..Default::default()
        }),
    }
}

async fn publish_retained(link: &Link, cards: Vec<(String, Vec<u8>)>) -> Result<(), Error> {
    let acks = cards
        .into_iter()
        .map(|(topic, payload)| link.publish_acked(card_message(topic, payload)));
    for reason in futures_util::future::join_all(acks).await {
        match reason? {
            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {}
            other => tracing::warn!(reason = ?other, "the broker did not accept a card"),
        }
    }
    Ok(())
}

/// A running server. Dropping the handle does not stop it; call
/// [`shutdown`](ServerHandle::shutdown) so that its cards go offline.
pub struct ServerHandle {
    running: Arc<Running>,
    conn_task: tokio::task::JoinHandle<()>,
    dispatcher: Arc<Dispatcher>,
    line_task: tokio::task::JoinHandle<()>,
    cards_task: tokio::task::JoinHandle<()>,
    siblings_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("server", &self.running.server.name)
            .field("instance", &self.running.instance)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The server being run.
    pub fn server(&self) -> &Server {
        &self.running.server
    }

    /// This instance's MQTT client id (the `instance` of its server card).
    pub fn instance(&self) -> &str {
        &self.running.instance
    }

    /// Whether the connection to the broker is up.
    pub fn is_connected(&self) -> bool {
        self.running.link.is_connected()
    }

    /// Goes offline gracefully: stops taking calls, lets the running ones
    /// finish within the drain deadline ([`ServerBuilder::drain_timeout`];
    /// those still running then get `unavailable`), republishes every card
    /// as offline, and disconnects (so the Last Will is not sent).
    ///
    /// Returns within the drain timeout plus [`SHUTDOWN_GRACE`], whatever the
    /// broker's state: each exchange with it is bounded. When the broker is
    /// unreachable or stalled, the server still stops, and says so with
    /// [`Error::Goodbye`]; the broker then publishes the Last Will (the
    /// offline Server Card) once it notices the connection is gone.
    pub async fn shutdown(self) -> Result<(), Error> {
        let running = &self.running;
        self.cards_task.abort();
        self.siblings_task.abort();
        let link = &running.link;
        let mut unsaid = None;
        // After the UNSUBACK the broker sends no more calls here; those it
        // queues go to the other instances.
        if link.is_connected() {
            let filters = running.server.call_filters();
            let unsubscribed = futures_util::future::join_all(filters.iter().map(|(f, _)| link.unsubscribe_acked(f)));
            match tokio::time::timeout(UNSUBSCRIBE_WITHIN, unsubscribed).await {
                Ok(results) => {
                    if let Some(e) = results.into_iter().find_map(Result::err) {
                        tracing::warn!(error = %e, "could not unsubscribe before shutting down");
                    }
                }
                Err(_) => unsaid = Some(format!("no UNSUBACK within {} ms", UNSUBSCRIBE_WITHIN.as_millis())),
            }
        } else {
            unsaid = Some("the connection was down".to_owned());
        }
        let cancelled = running.shared.drain(running.server.config.drain_timeout).await;
        if cancelled > 0 {
            tracing::warn!(cancelled, "calls still running at the drain deadline were cancelled");
        }
        let goodbye = tokio::time::Instant::now() + GOODBYE_WITHIN;
        self.dispatcher.settle(GOODBYE_WITHIN / 2).await;
        self.line_task.abort();
        if link.is_connected() && unsaid.is_none() {
            match tokio::time::timeout_at(goodbye, running.publish_cards(Status::Offline)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => unsaid = Some(format!("the offline cards were not taken: {e}")),
                Err(_) => {
                    unsaid = Some(format!(
                        "the broker did not take the offline cards within {} ms",
                        GOODBYE_WITHIN.as_millis()
                    ))
                }
            }
        }
        link.disconnect().await;
        if tokio::time::timeout(Duration::from_millis(100), self.conn_task)
            .await
            .is_err()
        {
            tracing::debug!("the connection task outlived its link");
        }
        if unsaid.is_none()
            && running.server.broker.protocol == Protocol::V311
            && running.server.broker.session_expiry > 0
        {
            // A 3.1.1 persistent session never expires: this instance is
            // gone for good, so its session goes too.
            let ended = crate::connection::end_session(&running.server.broker, &running.instance);
            if tokio::time::timeout(GOODBYE_WITHIN, ended).await.is_err() {
                tracing::warn!(instance = %running.instance, "could not end the MQTT 3.1.1 session in time");
            }
        }
        match unsaid {
            None => {
                tracing::info!(server = %running.server.name, "server offline");
                Ok(())
            }
            Some(why) => {
                tracing::warn!(server = %running.server.name, reason = %why, "server stopped without a goodbye");
                Err(Error::Goodbye(why))
            }
        }
    }

    /// Drops the connection without a goodbye, as a crash would: the broker
    /// then publishes the Last Will (the offline Server Card).
    pub fn abort(self) {
        self.cards_task.abort();
        self.siblings_task.abort();
        self.line_task.abort();
        self.conn_task.abort();
    }
}

/// Builds a [`Server`].
#[must_use]
pub struct ServerBuilder {
    name: String,
    namespace: String,
    broker: BrokerOptions,
    broker_error: Option<Error>,
    tools: Vec<ToolDef>,
    config: ServerConfig,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// The broker to connect to: `mqtt://host:port` or `mqtts://host:port`
    /// (default `mqtt://127.0.0.1:1883`). A bad URL is reported by `build()`.
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

    /// Username and password for the broker.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.broker = self.broker.with_credentials(username, password);
        self
    }

    /// The largest call payload served; larger ones get `invalid_arguments`
    /// (default 1 MiB).
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.config.max_payload_bytes = bytes;
        self
    }

    /// Adds a `#[tool]` function, by name: `.tool::<crawl_site>()`.
    pub fn tool<T: Tool>(self) -> Self {
        self.tool_def(T::definition())
    }

    /// Adds a tool defined at run time.
    pub fn tool_def(mut self, def: ToolDef) -> Self {
        self.tools.push(def);
        self
    }

    /// Subscribe through `$share/mcp-tool-{tool}/...` so instances split the
    /// calls (default on). Off, every instance gets every call. MQTT 3.1.1 has
    /// no shared subscriptions: there the server subscribes the plain call
    /// topics whatever this says.
    pub fn shared_subscription(mut self, on: bool) -> Self {
        self.config.shared_subscription = on;
        self
    }

    /// Speaks this MQTT version with the broker (default MQTT 5). On MQTT
    /// 3.1.1 the server subscribes its plain call topics (no shared
    /// subscriptions, so every instance runs every call) and answers at the
    /// call payload's `response_topic`: see [`Protocol`].
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.broker = self.broker.with_protocol(protocol);
        self
    }

    /// Refuse plain v0.1 calls, whose caller identity is only claimed, with
    /// `unauthorized` (default off). On, the generated ACL grants no v0.1 call
    /// or stream topic, and every caller is attested by the broker.
    pub fn require_verified_caller(mut self, on: bool) -> Self {
        self.config.require_verified_caller = on;
        self
    }

    /// How many calls run at once (default 64); more wait their turn.
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.config.max_concurrent_calls = n.max(1);
        self
    }

    /// How long a call may run when its tool sets no `timeout_ms` (default 30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default_timeout = timeout;
        self
    }

    /// How calls already run are recognised when they come again (a QoS 1
    /// redelivery, a replay): such a call is not run twice, and gets the
    /// first run's response again. Default: the last 10,000 calls, for 10
    /// minutes, with up to 64 MiB of cached responses.
    pub fn dedupe_window(mut self, window: DedupeWindow) -> Self {
        self.config.dedupe = window;
        self
    }

    /// How long [`ServerHandle::shutdown`] waits for running calls to finish
    /// before cancelling them (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// When a sibling instance of this server crashes, take over its MQTT
    /// session and serve the calls the broker queued there (default on).
    /// Turn it off when the broker forces the client id (Mosquitto's
    /// `use_username_as_clientid`): taking over is then impossible.
    pub fn adopt_orphaned_sessions(mut self, on: bool) -> Self {
        self.config.adopt_orphaned_sessions = on;
        self
    }

    /// Checks names and schemas, and returns the server.
    pub fn build(self) -> Result<Server, Error> {
        names::validate("server", &self.name)?;
        let namespace = names::normalize_namespace(&self.namespace)?;
        if let Some(e) = self.broker_error {
            return Err(e);
        }
        let broker = self.broker;
        let mut seen = std::collections::HashSet::new();
        for tool in &self.tools {
            names::validate("tool", &tool.name)?;
            if !seen.insert(tool.name.as_str()) {
                return Err(Error::DuplicateTool(tool.name.clone()));
            }
            for caller in &tool.allowed_callers {
                names::validate("caller", caller)?;
            }
            HostedTool::compile_schema(tool)?;
        }
        Ok(Server {
            name: self.name,
            topics: Topics::new(namespace),
            broker,
            tools: self.tools,
            config: self.config,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(protocol: Protocol) -> Server {
        let echo = ToolDef::builder("echo").allowed_callers(["scout"]).build().unwrap();
        Server::builder("lab")
            .namespace("lab")
            .protocol(protocol)
            .tool_def(echo)
            .build()
            .unwrap()
    }

    #[test]
    fn on_311_the_plain_call_topics_are_subscribed() {
        let filters = |s: &Server| s.call_filters().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(filters(&server(Protocol::V311)), ["lab/mcp/tools/echo/call/#"]);
        assert_eq!(
            filters(&server(Protocol::V5)),
            ["$share/mcp-tool-echo/lab/mcp/tools/echo/call/#"]
        );
        assert!(server(Protocol::V311)
            .acl_manifest()
            .shared_subscription_groups
            .is_empty());
        assert!(!server(Protocol::V5)
            .acl_manifest()
            .shared_subscription_groups
            .is_empty());
    }
}
