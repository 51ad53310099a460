//! What the server's parts share, in the one place they all import: the
//! [`Server`] and its cards, [`ServerConfig`], [`Shared`] and [`Running`].
//! It starts no task, and of its sibling modules imports only `dedupe`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap;
use futures_util::{StreamExt, TryStreamExt};
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::Value;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::cancels::Cancels;
use super::dedupe::{DedupeWindow, Window};
use crate::connection::{BrokerOptions, Link, Message, Protocol};
use crate::error::Error;
use crate::protocol::card::{
    tools_digest, ServerCard, Status, ToolCard, VersionInfo, CARD_VERSION, EXT_CALLER_TOPIC, EXT_PRIVATE_STREAMS,
    SDK_VERSION,
};
use crate::protocol::envelope::now_rfc3339;
use crate::protocol::topics::Topics;
use crate::tool::state::States;
use crate::tool::ToolDef;

/// How long calls cancelled at the drain deadline have to send their
/// `unavailable` answers.
pub(crate) const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// The largest Last Will payload: MQTT frames it with a two-byte length.
pub(crate) const MAX_WILL_PAYLOAD: usize = 65_535;

/// How many Tool Cards are encoded and on their way to the broker at once.
/// The send window (the broker's Receive Maximum) bounds those awaiting
/// their PUBACK; this bounds those encoded ahead of it, so that publishing
/// 10,000 cards holds a few dozen payloads, not 10,000.
const CARDS_AHEAD: usize = 64;

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
    /// The `tools_digest` of its Server Card, computed once by `build()`.
    pub(crate) tools_digest: String,
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
    pub cancel_grace: Duration,
    /// The values registered with `ServerBuilder::state`, handed to every
    /// call's context.
    pub states: States,
}

impl Server {
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
            extensions: vec![EXT_CALLER_TOPIC.into(), EXT_PRIVATE_STREAMS.into()],
            tools_digest: Some(self.tools_digest.clone()),
        }
    }

    /// The digest of its Tool Cards, for its Server Card.
    pub(super) fn digest_tools(&self) -> Result<String, Error> {
        let cards = self.tools.iter().map(|tool| self.tool_card(tool, Status::Online));
        Ok(tools_digest(cards)?)
    }

    /// The payload of one instance's Last Will: its offline Server Card. A
    /// Will holds at most [`MAX_WILL_PAYLOAD`] bytes; past about 8,000 tool
    /// names the card would not fit, and leaves out its `tools` (an empty
    /// list) and `tools_digest`: an offline card says that every tool of
    /// the server is offline, whatever it lists.
    pub(super) fn will_payload(&self, instance: &str) -> Result<Vec<u8>, Error> {
        let card = self.instance_card(Status::Offline, instance);
        let full = serde_json::to_vec(&card)?;
        if full.len() <= MAX_WILL_PAYLOAD {
            return Ok(full);
        }
        let bare = ServerCard {
            tools: Vec::new(),
            tools_digest: None,
            ..card
        };
        let payload = serde_json::to_vec(&bare)?;
        if payload.len() > MAX_WILL_PAYLOAD {
            return Err(Error::TooLarge {
                what: format!("the Last Will (offline Server Card) of `{}`", self.name),
                size: payload.len(),
                limit: MAX_WILL_PAYLOAD as u32,
                by_broker: false,
            });
        }
        tracing::debug!(
            server = %self.name,
            tools = self.tools.len(),
            "the Last Will leaves out the tool list, which would exceed 65,535 bytes"
        );
        Ok(payload)
    }

    /// The server card as one running instance publishes it.
    pub(super) fn instance_card(&self, status: Status, instance: &str) -> ServerCard {
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

    /// The filters this server subscribes to for calls: each tool's calls
    /// (shared between instances) and its cancels (not shared: a cancel must
    /// reach the instance running the call).
    pub(crate) fn call_filters(&self) -> Vec<(String, QoS)> {
        self.tools
            .iter()
            .flat_map(|t| {
                let calls = if self.shares_calls() {
                    self.topics.shared_calls(&t.name)
                } else {
                    self.topics.calls(&t.name)
                };
                [
                    (calls, QoS::AtLeastOnce),
                    (self.topics.cancels(&t.name), QoS::AtLeastOnce),
                ]
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
            title: tool.title.clone(),
            annotations: tool.annotations.filter(|a| !a.is_empty()),
        }
    }
}

/// A tool as the dispatcher holds it: its definition, its compiled schema
/// validator (compiled once, not per call) and its deadline.
pub(crate) struct HostedTool {
    pub(super) def: ToolDef,
    /// The tool's name, shared with each call's context.
    pub(super) name: Arc<str>,
    validator: jsonschema::Validator,
    pub(super) timeout: Duration,
}

impl HostedTool {
    pub(crate) fn new(def: ToolDef, config: &ServerConfig) -> Result<Self, Error> {
        let timeout = def.timeout.unwrap_or(config.default_timeout);
        Self::with_timeout(def, timeout)
    }

    /// A tool whose calls run for up to `timeout`, whatever its own says.
    pub(super) fn with_timeout(def: ToolDef, timeout: Duration) -> Result<Self, Error> {
        let validator = Self::compile_schema(&def)?;
        Ok(HostedTool {
            name: def.name.as_str().into(),
            def,
            validator,
            timeout,
        })
    }

    pub(crate) fn compile_schema(def: &ToolDef) -> Result<jsonschema::Validator, Error> {
        jsonschema::validator_for(&def.input_schema).map_err(|e| Error::InvalidSchema {
            tool: def.name.clone(),
            message: e.to_string(),
        })
    }

    /// Checks arguments against the schema; the message names the field.
    /// `null` for an optional argument counts as leaving it out.
    pub(super) fn check(&self, arguments: &mut Value) -> Result<(), String> {
        crate::tool::schema::drop_optional_nulls(&self.def.input_schema, arguments);
        // Most calls are valid: asking only whether skips building errors.
        if self.validator.is_valid(arguments) {
            return Ok(());
        }
        let problems: Vec<String> = self
            .validator
            .iter_errors(arguments)
            .take(3)
            .map(|e| {
                let path = e.instance_path().to_string();
                let field = path.trim_start_matches('/').replace('/', ".");
                if field.is_empty() {
                    e.to_string()
                } else {
                    format!("argument `{field}`: {e}")
                }
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }
}

/// Where a server is in its life: serving, draining for a shutdown, or
/// past the drain deadline with the calls still running cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Serving,
    Draining,
    Cancelled,
}

/// What every connection of a server dispatches with: its own connection,
/// and, when it adopts a crashed sibling's session, that session's too.
pub(crate) struct Shared {
    pub(super) topics: Topics,
    pub(super) tools: HashMap<String, Arc<HostedTool>>,
    pub(super) config: ServerConfig,
    permits: Arc<Semaphore>,
    pub(super) window: Mutex<Window>,
    pub(super) phase: watch::Sender<Phase>,
    /// The calls a caller's cancel can reach.
    pub(super) cancels: Mutex<Cancels>,
}

impl Shared {
    pub(crate) fn new(topics: Topics, tools: HashMap<String, Arc<HostedTool>>, config: ServerConfig) -> Arc<Self> {
        Arc::new(Shared {
            permits: Arc::new(Semaphore::new(config.max_concurrent_calls)),
            window: Mutex::new(Window::new(config.dedupe)),
            phase: watch::Sender::new(Phase::Serving),
            cancels: Mutex::default(),
            topics,
            tools,
            config,
        })
    }

    /// Whether no call runs now (every slot free).
    pub(super) fn is_idle(&self) -> bool {
        self.permits.available_permits() == self.config.max_concurrent_calls
    }

    /// Whether calls may start: not once the server is shutting down.
    fn serving(&self) -> bool {
        *self.phase.borrow() == Phase::Serving
    }

    /// Whether `n` calls arriving now would each start at once: the server
    /// is serving, and has `n` slots free.
    pub(super) fn would_start(&self, n: usize) -> bool {
        self.serving() && self.permits.available_permits() >= n
    }

    /// A free slot now, if the server is serving and one is free.
    pub(super) fn free_slot(&self) -> Option<OwnedSemaphorePermit> {
        if !self.serving() {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Waits for a slot; `None` once the server is shutting down. Waiting
    /// here holds the line back: with manual acks, the broker stops sending
    /// once its in-flight window is full.
    pub(super) async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        let mut phase = self.phase.subscribe();
        // Biased: once the server is shutting down, no call starts, even
        // when a slot is free too.
        tokio::select! {
            biased;
            _ = phase.wait_for(|p| *p != Phase::Serving) => None,
            permit = self.permits.clone().acquire_owned() => permit.ok(),
        }
    }

    /// Stops taking calls, waits up to `deadline` for the running ones, then
    /// cancels what is left (each gets an `unavailable` response). Returns
    /// how many calls were cancelled.
    pub(crate) async fn drain(&self, deadline: Duration) -> usize {
        self.phase.send_replace(Phase::Draining);
        let all = self.config.max_concurrent_calls as u32;
        if tokio::time::timeout(deadline, self.permits.acquire_many(all))
            .await
            .is_ok()
        {
            return 0;
        }
        let cancelled = all as usize - self.permits.available_permits();
        self.phase.send_replace(Phase::Cancelled);
        // Give the cancelled calls a moment to send their responses.
        let _ = tokio::time::timeout(CANCEL_GRACE, self.permits.acquire_many(all)).await;
        cancelled
    }
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
        publish_server_card(&self.server, &self.link, status, &self.instance).await
    }
}

/// Publishes every card retained, and waits for the broker to take them.
///
/// Going online, every Tool Card is taken before the Server Card goes out,
/// so that a client that reads the Server Card's `tools` finds each of their
/// cards retained. Going offline, the Server Card goes first: from then on
/// a client lists none of the server's tools, while their cards follow.
pub(super) async fn publish_cards(server: &Server, link: &Link, status: Status, instance: &str) -> Result<(), Error> {
    match status {
        Status::Online => {
            publish_tool_cards(server, link, status).await?;
            publish_server_card(server, link, status, instance).await
        }
        Status::Offline => {
            publish_server_card(server, link, status, instance).await?;
            publish_tool_cards(server, link, status).await
        }
    }
}

/// Online, the card names this instance. The offline card of a graceful
/// stop names none: the instance unsubscribed and drained its calls, so
/// there is nothing queued for a sibling to adopt (only a Last Will names
/// the instance it announces dead).
async fn publish_server_card(server: &Server, link: &Link, status: Status, instance: &str) -> Result<(), Error> {
    let card = match status {
        Status::Online => server.instance_card(status, instance),
        Status::Offline => server.server_card(status),
    };
    let card = serde_json::to_vec(&card)?;
    publish_card(link, card_message(server.topics.server_card(&server.name), card)).await
}

/// Publishes the Tool Cards, each encoded when its turn comes, at most
/// [`CARDS_AHEAD`] at once, and waits until the broker took them all.
async fn publish_tool_cards(server: &Server, link: &Link, status: Status) -> Result<(), Error> {
    // By index: a closure taking a borrowed tool would make the future too
    // general for `tokio::spawn`.
    futures_util::stream::iter(0..server.tools.len())
        .map(|i| async move {
            let tool = &server.tools[i];
            let card = serde_json::to_vec(&server.tool_card(tool, status))?;
            publish_card(link, card_message(server.topics.tool_card(&tool.name), card)).await
        })
        .buffer_unordered(CARDS_AHEAD)
        .try_for_each(|()| std::future::ready(Ok(())))
        .await
}

/// Fails with [`Error::TooLarge`] if any card, online or offline, would make
/// a packet over the connection's maximum packet size (the broker's, if it
/// announced a smaller one than the server's own).
///
/// Only the offline cards are measured: a card's two forms differ only in
/// `status`, `"offline"` being one byte longer than `"online"`, and in
/// `last_seen`, always of the same length.
pub(super) fn check_cards(server: &Server, link: &Link, instance: &str) -> Result<(), Error> {
    let status = Status::Offline;
    for tool in &server.tools {
        let card = serde_json::to_vec(&server.tool_card(tool, status))?;
        link.fits(&card_message(server.topics.tool_card(&tool.name), card), || {
            format!("the Tool Card of `{}`", tool.name)
        })?;
    }
    let card = serde_json::to_vec(&server.instance_card(status, instance))?;
    link.fits(&card_message(server.topics.server_card(&server.name), card), || {
        format!("the Server Card of `{}`", server.name)
    })
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

/// Publishes one card and waits for the broker to take it.
async fn publish_card(link: &Link, card: Message) -> Result<(), Error> {
    match link.publish_acked(card).await? {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => {}
        other => tracing::warn!(reason = ?other, "the broker did not accept a card"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::card::ToolAnnotations;

    fn server(protocol: Protocol) -> Server {
        let echo = ToolDef::builder("echo").allowed_callers(["scout"]).build().unwrap();
        Server::builder("lab")
            .namespace("lab")
            .protocol(protocol)
            .tool_def(echo)
            .build()
            .unwrap()
    }

    fn described(description: &str) -> Server {
        let tool = |name: &str| ToolDef::builder(name).description(description).build().unwrap();
        Server::builder("lab")
            .namespace("lab")
            .tool_def(tool("echo"))
            .tool_def(tool("count"))
            .build()
            .unwrap()
    }

    #[test]
    fn the_server_card_carries_a_digest_of_the_tools_made_once() {
        let a = described("Returns its text.");
        let digest = a.server_card(Status::Online).tools_digest.expect("a digest");
        assert_eq!(digest.len(), 16);
        assert_eq!(
            described("Returns its text.").tools_digest,
            digest,
            "the same tools, built again (at another time), the same digest"
        );
        assert_eq!(a.server_card(Status::Offline).tools_digest.as_deref(), Some(&*digest));
        assert_ne!(
            described("Says it again.").tools_digest,
            digest,
            "a changed description"
        );
        let expected = tools_digest(a.tools.iter().map(|t| a.tool_card(t, Status::Offline))).unwrap();
        assert_eq!(expected, digest, "the digest of the Tool Cards as published");
    }

    #[test]
    fn a_will_too_large_for_mqtt_leaves_out_the_tool_list() {
        let small = described("x").will_payload("lab-1").unwrap();
        let card: ServerCard = serde_json::from_slice(&small).unwrap();
        assert_eq!(card.tools, ["echo", "count"]);
        assert!(card.tools_digest.is_some());

        // 600 names of 120 bytes: about 74,000 bytes of tool names.
        let mut builder = Server::builder("lab").namespace("lab");
        for i in 0..600 {
            builder = builder.tool_def(ToolDef::builder(format!("{i:0>120}")).build().unwrap());
        }
        let server = builder.build().unwrap();
        assert!(
            serde_json::to_vec(&server.instance_card(Status::Offline, "lab-1"))
                .unwrap()
                .len()
                > MAX_WILL_PAYLOAD
        );
        let will = server.will_payload("lab-1").unwrap();
        assert!(will.len() <= MAX_WILL_PAYLOAD, "{} bytes", will.len());
        let card: ServerCard = serde_json::from_slice(&will).unwrap();
        assert_eq!(card.status, Status::Offline);
        assert_eq!(card.instance.as_deref(), Some("lab-1"), "what adoption needs");
        assert!(card.tools.is_empty() && card.tools_digest.is_none());
        assert_eq!(
            server.server_card(Status::Online).tools.len(),
            600,
            "only the Will leaves them out"
        );
    }

    #[test]
    fn an_offline_card_is_never_shorter_than_its_online_form() {
        // What `check_cards` relies on to measure only the offline cards.
        let server = described("Returns its text.");
        let tool = &server.tools[0];
        let len = |status| serde_json::to_vec(&server.tool_card(tool, status)).unwrap().len();
        assert_eq!(len(Status::Offline), len(Status::Online) + 1);
        let len = |status| {
            serde_json::to_vec(&server.instance_card(status, "lab-1"))
                .unwrap()
                .len()
        };
        assert_eq!(len(Status::Offline), len(Status::Online) + 1);
    }

    #[test]
    fn the_tool_card_carries_the_title_and_annotations_when_set() {
        let annotated = ToolDef::builder("list")
            .title("List the posts")
            .annotations(ToolAnnotations::default().read_only(true))
            .build()
            .unwrap();
        let bare = ToolDef::builder("echo")
            .annotations(ToolAnnotations::default())
            .build()
            .unwrap();
        let server = Server::builder("lab")
            .namespace("lab")
            .tool_def(annotated)
            .tool_def(bare)
            .build()
            .unwrap();
        let card = server.tool_card(&server.tools[0], Status::Online);
        assert_eq!(card.title.as_deref(), Some("List the posts"));
        assert_eq!(card.annotations, Some(ToolAnnotations::default().read_only(true)));
        let card = server.tool_card(&server.tools[1], Status::Online);
        assert_eq!(card.title, None);
        assert_eq!(card.annotations, None, "no hint set: no annotations");
    }

    #[test]
    fn on_311_the_plain_call_topics_are_subscribed() {
        let filters = |s: &Server| s.call_filters().into_iter().map(|(f, _)| f).collect::<Vec<_>>();
        assert_eq!(
            filters(&server(Protocol::V311)),
            ["lab/mcp/tools/echo/call/#", "lab/mcp/tools/echo/cancel/+"]
        );
        assert_eq!(
            filters(&server(Protocol::V5)),
            [
                "$share/mcp-tool-echo/lab/mcp/tools/echo/call/#",
                "lab/mcp/tools/echo/cancel/+"
            ]
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
