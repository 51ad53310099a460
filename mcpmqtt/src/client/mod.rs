//! The client: discovers tools from their cards and calls them by name.
//!
//! Many calls share one connection; each is matched to its response by
//! `call_id` and Correlation Data (by `call_id` alone on MQTT 3.1.1).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::{PubAckReason, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::connection::{Ack, BrokerOptions, Incoming, Link, Message, Protocol};
use crate::error::{CallError, Error};
use crate::protocol::card::{ServerCard, Status, ToolCard, EXT_CALLER_TOPIC};
use crate::protocol::envelope::{
    now_rfc3339, to_json, CallRequest, CallResponse, ResponseStatus, StreamMessage, StreamType,
};
use crate::protocol::names;
use crate::protocol::topics::{Topics, DEFAULT_NAMESPACE};
use crate::tool::context::Partial;

/// How long the card cache must be quiet after subscribing before the
/// retained cards are taken to have all arrived.
const CARDS_QUIET: Duration = Duration::from_millis(60);
const CARDS_MAX_WAIT: Duration = Duration::from_secs(2);
/// Responses larger than this are parsed on a task of their own.
const PARSE_ELSEWHERE: usize = 64 * 1024;
/// A call refused with PUBACK 0x10 that may pass is published again after
/// this long, doubling up to [`RETRY_MAX`], until its deadline.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// For this long after the connection is made again, a PUBACK 0x10 is taken
/// for a server that has not restored its subscription yet, whatever the
/// cards say.
const RECONNECT_GRACE: Duration = Duration::from_secs(10);

/// A connection to the broker that calls tools by name.
///
/// Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    link: Link,
    topics: Topics,
    identity: String,
    response_topic: String,
    default_timeout: Duration,
    protocol: Protocol,
    router: Arc<Router>,
    conn_task: tokio::task::JoinHandle<()>,
    /// The size of the last call encoded: the next one's buffer starts there
    /// rather than growing from nothing (calls to a tool tend to be alike).
    last_call_bytes: AtomicUsize,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.conn_task.abort();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("identity", &self.inner.identity)
            .finish_non_exhaustive()
    }
}

/// What a call waits for.
struct Waiting {
    /// The response, or what became of the publish.
    response: oneshot::Sender<Answer>,
    correlation: Bytes,
    /// Which publish of the call this is (a call is published again after
    /// a refusal that may pass, or a lost session): only that publish's
    /// acknowledgement counts.
    attempt: u32,
    /// Whether the broker has accepted the call (PUBACK success).
    accepted: bool,
}

/// What a waiting call hears.
#[derive(Debug)]
enum Answer {
    Response(CallResponse),
    /// The call failed for good: refused by the broker, or the connection
    /// is gone.
    Failed(CallError),
    /// PUBACK 0x10: no server was subscribed at that moment.
    NoSubscribers,
    /// The connection was lost, and the session with it, before the broker
    /// acknowledged the call.
    Lost,
}

/// Routes incoming messages: responses and partials to their calls, cards
/// into the cache.
#[derive(Default)]
struct Router {
    calls: Mutex<HashMap<String, Waiting>>,
    streams: Mutex<HashMap<String, mpsc::UnboundedSender<(u64, Partial)>>>,
    cards: Mutex<Cards>,
}

struct Cards {
    tools: HashMap<String, ToolCard>,
    servers: HashMap<String, ServerCard>,
    last_change: Instant,
    subscribed_at: Instant,
}

impl Cards {
    /// A tool is listed while its card says online and its server's card,
    /// when there is one, does not say offline (a crashed server's Last Will).
    fn online(&self, card: &ToolCard) -> bool {
        card.status == Status::Online
            && !self
                .servers
                .get(&card.server)
                .is_some_and(|c| c.status == Status::Offline)
    }
}

impl Default for Cards {
    fn default() -> Self {
        Cards {
            tools: HashMap::new(),
            servers: HashMap::new(),
            last_change: Instant::now(),
            subscribed_at: Instant::now(),
        }
    }
}

impl Router {
    fn route(self: &Arc<Self>, topics: &Topics, own: &OwnTopics, publish: Incoming) {
        let topic = publish.topic.as_str();
        if topic == own.responses && publish.payload.len() > PARSE_ELSEWHERE {
            // Parsing a large response takes milliseconds: not on the
            // connection task, which would hold every other call's packets.
            let router = self.clone();
            tokio::spawn(async move { router.on_response(publish) });
        } else if topic == own.responses {
            self.on_response(publish);
        } else if topic.starts_with(&own.streams_prefix) || topics.call_of_stream(topic).is_some() {
            self.on_stream(&publish.payload);
        } else if topic.ends_with("/card") {
            self.on_card(topic, &publish.payload);
        }
    }

    fn on_response(&self, publish: Incoming) {
        let response: CallResponse = match serde_json::from_slice(&publish.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignored an unreadable response");
                return;
            }
        };
        let mut calls = self.calls.lock().expect("calls lock");
        let Some((call_id, waiting)) = calls.remove_entry(&response.call_id) else {
            tracing::debug!(call_id = %response.call_id, "a response for no waiting call (late, or a duplicate)");
            return;
        };
        // MQTT 3.1.1 carries no Correlation Data: the `call_id` alone matches.
        if publish.correlation.as_ref().is_some_and(|c| c != &waiting.correlation) {
            tracing::warn!(%call_id, "ignored a response whose Correlation Data does not match");
            calls.insert(call_id, waiting);
            return;
        }
        drop(calls);
        let _ = waiting.response.send(Answer::Response(response));
    }

    /// Waits for the answer to one publish of a call.
    fn register(&self, call_id: &str, correlation: &Bytes, attempt: u32) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting {
            response: tx,
            correlation: correlation.clone(),
            attempt,
            accepted: false,
        };
        self.calls
            .lock()
            .expect("calls lock")
            .insert(call_id.to_owned(), waiting);
        rx
    }

    /// Takes the broker's verdict on a call's publish, on the connection
    /// task: an accepted call is only marked (its task sleeps on until the
    /// response), anything else wakes it.
    fn on_call_ack(&self, call_id: &str, attempt: u32, tool: &str, ack: Ack) {
        let mut calls = self.calls.lock().expect("calls lock");
        let Some(waiting) = calls.get_mut(call_id).filter(|w| w.attempt == attempt) else {
            return; // an earlier publish of a call sent again since
        };
        let answer = match ack {
            Ack::Published(PubAckReason::Success) => {
                waiting.accepted = true;
                return;
            }
            Ack::Published(PubAckReason::NoMatchingSubscribers) => Answer::NoSubscribers,
            Ack::Published(reason) => Answer::Failed(check_puback(tool, reason).err().unwrap_or_else(|| {
                CallError::Transport(format!("the broker answered the call to `{tool}` with {reason:?}"))
            })),
            _ => Answer::Lost,
        };
        if let Some(waiting) = calls.remove(call_id) {
            let _ = waiting.response.send(answer);
        }
    }

    /// Whether `tool` is known to be online: its Tool Card says so, and its
    /// server's card (when there is one) does too.
    fn tool_online(&self, tool: &str) -> bool {
        let cards = self.cards.lock().expect("cards lock");
        cards.tools.get(tool).is_some_and(|card| cards.online(card))
    }

    /// Whether the broker has accepted the call's publish.
    fn accepted(&self, call_id: &str) -> bool {
        let calls = self.calls.lock().expect("calls lock");
        calls.get(call_id).is_some_and(|w| w.accepted)
    }

    /// Fails every waiting call: the connection is gone for good.
    fn fail_all(&self, why: &str) {
        for (_, waiting) in self.calls.lock().expect("calls lock").drain() {
            let _ = waiting
                .response
                .send(Answer::Failed(CallError::Transport(why.to_owned())));
        }
    }

    fn on_stream(&self, payload: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<StreamMessage>(payload) else {
            tracing::warn!("ignored an unreadable stream message");
            return;
        };
        if msg.kind == StreamType::Done {
            return;
        }
        let partial = match (msg.content, msg.data) {
            (Some(text), _) => Partial::Text(text),
            (None, Some(data)) => Partial::Data(data),
            (None, None) => return,
        };
        if let Some(tx) = self.streams.lock().expect("streams lock").get(&msg.call_id) {
            let _ = tx.send((msg.seq, partial));
        }
    }

    fn on_card(&self, topic: &str, payload: &[u8]) {
        let mut cards = self.cards.lock().expect("cards lock");
        cards.last_change = Instant::now();
        let is_server = topic.contains("/mcp/servers/");
        let name = topic.rsplit('/').nth(1).unwrap_or_default().to_owned();
        if payload.is_empty() {
            if is_server {
                cards.servers.remove(&name);
            } else {
                cards.tools.remove(&name);
            }
            return;
        }
        if is_server {
            match serde_json::from_slice::<ServerCard>(payload) {
                Ok(card) => {
                    cards.servers.insert(name, card);
                }
                Err(e) => tracing::warn!(%topic, error = %e, "ignored an unreadable server card"),
            }
        } else {
            match serde_json::from_slice::<ToolCard>(payload) {
                Ok(card) => {
                    cards.tools.insert(name, card);
                }
                Err(e) => tracing::warn!(%topic, error = %e, "ignored an unreadable tool card"),
            }
        }
    }
}

/// One call, encoded, as it is published (and published again).
struct Outgoing<'a> {
    tool: &'a str,
    call_id: &'a str,
    topic: String,
    response_topic: &'a str,
    payload: Bytes,
    correlation: Bytes,
    deadline: tokio::time::Instant,
}

impl Outgoing<'_> {
    /// The publish, expiring in the broker when the caller stops waiting.
    fn message(&self) -> Message {
        let left = self.deadline.saturating_duration_since(tokio::time::Instant::now());
        let expiry = left.as_secs_f64().ceil().max(1.0) as u32;
        Message {
            topic: self.topic.clone(),
            payload: self.payload.clone(),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: Some(PublishProperties {
                response_topic: Some(self.response_topic.to_owned()),
                correlation_data: Some(self.correlation.clone()),
                content_type: Some("application/json".into()),
                message_expiry_interval: Some(expiry),
                ..Default::default()
            }),
        }
    }
}

/// A client's own topics.
struct OwnTopics {
    responses: String,
    /// `{ns}/mcp/clients/{me}/streams/`
    streams_prefix: String,
}

/// Options of one call.
#[derive(Clone, Default)]
#[must_use]
pub struct CallOptions {
    timeout: Option<Duration>,
    on_partial: Option<Arc<dyn Fn(Partial) + Send + Sync>>,
}

impl std::fmt::Debug for CallOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallOptions")
            .field("timeout", &self.timeout)
            .field("on_partial", &self.on_partial.is_some())
            .finish()
    }
}

impl CallOptions {
    /// Default options: the client's timeout, partials ignored.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long to wait for the response. On MQTT 5 the call also expires in
    /// the broker after this long, so a server that was away does not run it
    /// late (MQTT 3.1.1 has no message expiry).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Called with each streamed partial, in arrival order.
    pub fn on_partial(mut self, f: impl Fn(Partial) + Send + Sync + 'static) -> Self {
        self.on_partial = Some(Arc::new(f));
        self
    }
}

/// A call in progress, with its partials as they arrive: see
/// [`Client::call_streaming`].
#[derive(Debug)]
pub struct PendingCall {
    partials: mpsc::UnboundedReceiver<Partial>,
    result: tokio::task::JoinHandle<Result<Value, CallError>>,
}

impl PendingCall {
    /// The next partial, or `None` once the call has finished.
    pub async fn next_partial(&mut self) -> Option<Partial> {
        self.partials.recv().await
    }

    /// Waits for the call's result (partials not yet read are dropped).
    pub async fn result(self) -> Result<Value, CallError> {
        self.result
            .await
            .unwrap_or_else(|e| Err(CallError::Transport(format!("the call task failed: {e}"))))
    }
}

/// Removes a call's routing entries however the call ends.
struct CallGuard<'a> {
    router: &'a Router,
    call_id: String,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.router.calls.lock().expect("calls lock").remove(&self.call_id);
        self.router.streams.lock().expect("streams lock").remove(&self.call_id);
    }
}

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

    /// The identity calls are made under.
    pub fn identity(&self) -> &str {
        &self.inner.identity
    }

    /// The topics of the namespace.
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    /// The largest MQTT packet this client may send now, in bytes: its own
    /// maximum packet size, or the broker's when the broker announced a
    /// smaller one (learned again on every reconnect). A call's packet is
    /// its JSON payload plus its topic and properties, a few hundred bytes.
    pub fn max_packet_size(&self) -> u32 {
        self.inner.link.max_packet_size()
    }

    /// Calls a tool and returns its result.
    ///
    /// Fails at once with [`CallError::Unauthorized`] when the broker refuses
    /// the publish, and with [`CallError::Unavailable`] when no server is
    /// subscribed to the tool. On MQTT 3.1.1 ([`Protocol::V311`]) the broker
    /// does not say so: such a call fails with [`CallError::Timeout`].
    ///
    /// A call whose packet would exceed the maximum packet size
    /// ([`Client::max_packet_size`]) is not published, and fails at once with
    /// [`CallError::InvalidArguments`].
    ///
    /// [`Protocol::V311`]: crate::Protocol::V311
    pub async fn call(&self, tool: &str, arguments: Value) -> Result<Value, CallError> {
        self.call_with(tool, arguments, CallOptions::new()).await
    }

    /// Calls a tool with typed arguments and result.
    pub async fn call_as<A: Serialize, R: DeserializeOwned>(&self, tool: &str, arguments: A) -> Result<R, CallError> {
        let args = serde_json::to_value(arguments).map_err(|e| CallError::InvalidArguments {
            message: format!("could not encode the arguments: {e}"),
        })?;
        let value = self.call(tool, args).await?;
        serde_json::from_value(value).map_err(|e| CallError::Protocol(format!("unexpected result shape: {e}")))
    }

    /// Calls a tool with options (timeout, partials).
    pub async fn call_with(&self, tool: &str, arguments: Value, options: CallOptions) -> Result<Value, CallError> {
        let call_id = uuid::Uuid::new_v4().to_string();
        let span = tracing::debug_span!("call", %call_id, %tool);
        self.call_inner(tool, arguments, options, call_id)
            .instrument(span)
            .await
    }

    async fn call_inner(
        &self,
        tool: &str,
        arguments: Value,
        options: CallOptions,
        call_id: String,
    ) -> Result<Value, CallError> {
        let inner = &self.inner;
        if let Some(reason) = names::name_problem(tool) {
            return Err(CallError::InvalidArguments {
                message: format!("invalid tool name {tool:?}: {reason}"),
            });
        }
        if !arguments.is_object() {
            return Err(CallError::InvalidArguments {
                message: "arguments must be a JSON object".into(),
            });
        }
        let timeout = options.timeout.unwrap_or(inner.default_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let correlation = Bytes::from(call_id.clone().into_bytes());

        let _guard = CallGuard {
            router: &inner.router,
            call_id: call_id.clone(),
        };
        // Servers whose card lists the extensions get the caller-attested
        // topic and a private stream; known v0.1 servers get plain v0.1.
        let v01 = {
            let cards = inner.router.cards.lock().expect("cards lock");
            cards.tools.get(tool).is_some_and(|c| !c.supports(EXT_CALLER_TOPIC))
        };
        let mut partial_rx = None;
        let mut v01_stream = None;
        if options.on_partial.is_some() {
            let (ptx, prx) = mpsc::unbounded_channel();
            inner
                .router
                .streams
                .lock()
                .expect("streams lock")
                .insert(call_id.clone(), ptx);
            partial_rx = Some(prx);
            if v01 {
                // v0.1 streams are per call: subscribe before the call is made.
                let topic = inner.topics.stream(tool, &call_id);
                inner
                    .link
                    .subscribe(&[(topic.clone(), QoS::AtLeastOnce)])
                    .await
                    .map_err(transport)?;
                v01_stream = Some(topic);
            }
        }

        let request = CallRequest {
            call_id: call_id.clone(),
            arguments,
            client: inner.identity.clone(),
            timestamp: Some(now_rfc3339()),
            response_topic: Some(inner.response_topic.clone()),
            private_stream: !v01,
        };
        let guess = inner.last_call_bytes.load(Ordering::Relaxed);
        let payload = to_json(&request, guess).map_err(|e| CallError::InvalidArguments {
            message: format!("could not encode the call: {e}"),
        })?;
        // The arguments are in the payload now: do not hold them twice while
        // the call waits (a queue of large calls would).
        drop(request);
        inner.last_call_bytes.store(payload.len(), Ordering::Relaxed);
        let call = Outgoing {
            tool,
            call_id: &call_id,
            topic: if v01 {
                inner.topics.call(tool)
            } else {
                inner.topics.call_as(tool, &inner.identity)
            },
            response_topic: &inner.response_topic,
            payload: Bytes::from(payload),
            correlation,
            deadline,
        };
        let outcome = self.deliver(&call, timeout, &options, &mut partial_rx).await;
        // Deliver partials that arrived just before the response.
        if let (Some(rx), Some(f)) = (&mut partial_rx, &options.on_partial) {
            while let Ok((_, p)) = rx.try_recv() {
                f(p);
            }
        }
        if let Some(topic) = v01_stream {
            let link = inner.link.clone();
            tokio::spawn(async move { link.unsubscribe(&topic).await });
        }
        outcome
    }

    /// Publishes a call and waits for its response until its deadline.
    ///
    /// The call is published again, with the same `call_id` (the server's
    /// dedupe window keeps it from running twice), when the broker may have
    /// lost it: its session was lost with the connection, or it answered
    /// PUBACK 0x10 (no server subscribed) while the tool is known online or
    /// the connection is just back, which is a server still restoring its
    /// subscription rather than a tool nobody hosts.
    async fn deliver(
        &self,
        call: &Outgoing<'_>,
        timeout: Duration,
        options: &CallOptions,
        partial_rx: &mut Option<mpsc::UnboundedReceiver<(u64, Partial)>>,
    ) -> Result<Value, CallError> {
        let inner = &self.inner;
        let mut sessions_lost = inner.link.sessions_lost();
        let mut backoff = RETRY_FIRST;
        let mut attempt = 0;
        let mut refusals = 0u32;
        loop {
            attempt += 1;
            let mut response_rx = inner.router.register(call.call_id, &call.correlation, attempt);
            // The PUBACK is heard on the connection task: a refusal wakes the
            // call through `response_rx`, a success wakes nobody.
            let on_ack = {
                let router = inner.router.clone();
                let (call_id, tool) = (call.call_id.to_owned(), call.tool.to_owned());
                move |ack| router.on_call_ack(&call_id, attempt, &tool, ack)
            };
            let published = inner.link.publish_then(call.message(), on_ack);
            tokio::time::timeout_at(call.deadline, published)
                .await
                .map_err(|_| CallError::Timeout {
                    message: format!("the call could not be sent within {} ms", timeout.as_millis()),
                })?
                .map_err(transport)?;
            // Set when this publish will not be answered: wait for this
            // moment, then publish again.
            let mut again_at = None;
            let mut after_new_session = false;
            while again_at.is_none() && !after_new_session {
                tokio::select! {
                    biased;
                    answer = &mut response_rx => match answer {
                        Ok(Answer::Response(response)) => return into_result(response),
                        Ok(Answer::Failed(e)) => return Err(e),
                        Ok(Answer::NoSubscribers) => {
                            refusals += 1;
                            let passing = if inner.router.tool_online(call.tool) {
                                Some("its card says it is online")
                            } else if inner.link.since_reconnect().is_some_and(|d| d < RECONNECT_GRACE) {
                                Some("the connection had just been made again")
                            } else {
                                None
                            };
                            let at = tokio::time::Instant::now() + backoff;
                            if passing.is_none() || at >= call.deadline {
                                return Err(no_subscribers(call.tool, passing, refusals, timeout));
                            }
                            tracing::debug!(retry_in = ?backoff, "no server subscribed yet: publishing again");
                            again_at = Some(at);
                            backoff = (backoff * 2).min(RETRY_MAX);
                        }
                        Ok(Answer::Lost) => {
                            // Published again once the new session has its
                            // subscriptions back, so the response can reach us.
                            tokio::select! {
                                _ = sessions_lost.changed() => {}
                                why = inner.link.closed() => {
                                    let why = why.unwrap_or_else(|| "the client disconnected".into());
                                    return Err(CallError::Transport(format!(
                                        "the connection was lost before the broker acknowledged the call: {why}"
                                    )));
                                }
                                _ = tokio::time::sleep_until(call.deadline) => {
                                    return Err(CallError::Timeout { message: format!(
                                        "the connection was lost before the broker acknowledged the call, and was \
                                         not back within {} ms",
                                        timeout.as_millis()
                                    )});
                                }
                            }
                            tracing::debug!("the session was lost with the call: publishing again");
                            after_new_session = true;
                        }
                        Err(_) => return Err(CallError::Transport("the client was dropped".into())),
                    },
                    Some((_seq, partial)) = recv_partial(partial_rx) => {
                        if let Some(f) = &options.on_partial {
                            f(partial);
                        }
                    }
                    // The broker lost the session: the call, or its response,
                    // may be gone with it.
                    Ok(()) = sessions_lost.changed() => {
                        tracing::debug!("the session was lost while the call waited: publishing again");
                        after_new_session = true;
                    }
                    _ = tokio::time::sleep_until(call.deadline) => {
                        let message = if inner.router.accepted(call.call_id) {
                            no_response(call.tool, timeout, inner.protocol)
                        } else {
                            format!("the broker did not acknowledge the call within {} ms", timeout.as_millis())
                        };
                        return Err(CallError::Timeout { message });
                    }
                }
            }
            if let Some(at) = again_at {
                tokio::time::sleep_until(at).await;
            }
        }
    }

    /// Calls a tool in the background and hands back its partials as they
    /// stream, then its result.
    pub fn call_streaming(&self, tool: &str, arguments: Value, options: CallOptions) -> PendingCall {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.clone();
        let tool = tool.to_owned();
        let options = options.on_partial(move |p| {
            let _ = tx.send(p);
        });
        let result = tokio::spawn(async move { client.call_with(&tool, arguments, options).await });
        PendingCall { partials: rx, result }
    }

    /// The online Tool Cards of the namespace. A tool whose server's card
    /// says offline (its Last Will: it crashed) is left out, although the
    /// tool's own card still says online.
    pub async fn tools(&self) -> Vec<ToolCard> {
        self.cards_settled().await;
        let cards = self.inner.router.cards.lock().expect("cards lock");
        let mut tools: Vec<ToolCard> = cards.tools.values().filter(|c| cards.online(c)).cloned().collect();
        tools.sort_by(|a, b| a.tool.cmp(&b.tool));
        tools
    }

    /// The card of one tool, online or offline, if the broker holds one.
    pub async fn tool_card(&self, tool: &str) -> Option<ToolCard> {
        self.cards_settled().await;
        self.inner
            .router
            .cards
            .lock()
            .expect("cards lock")
            .tools
            .get(tool)
            .cloned()
    }

    /// The online Server Cards of the namespace.
    pub async fn servers(&self) -> Vec<ServerCard> {
        self.cards_settled().await;
        let cards = self.inner.router.cards.lock().expect("cards lock");
        let mut servers: Vec<ServerCard> = cards
            .servers
            .values()
            .filter(|c| c.status == Status::Online)
            .cloned()
            .collect();
        servers.sort_by(|a, b| a.server.cmp(&b.server));
        servers
    }

    /// Waits until a tool's card says it is online.
    pub async fn wait_for_tool(&self, tool: &str, timeout: Duration) -> Result<ToolCard, CallError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(card) = self.tool_card(tool).await.filter(|c| c.status == Status::Online) {
                return Ok(card);
            }
            if Instant::now() >= deadline {
                return Err(CallError::Unavailable {
                    message: format!("`{tool}` did not come online within {} ms", timeout.as_millis()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until a server's card says it is offline (its Last Will, or a
    /// graceful stop).
    pub async fn wait_for_server_offline(&self, server: &str, timeout: Duration) -> Result<ServerCard, CallError> {
        let deadline = Instant::now() + timeout;
        loop {
            let card = self
                .inner
                .router
                .cards
                .lock()
                .expect("cards lock")
                .servers
                .get(server)
                .cloned();
            if let Some(card) = card.filter(|c| c.status == Status::Offline) {
                return Ok(card);
            }
            if Instant::now() >= deadline {
                return Err(CallError::Timeout {
                    message: format!("`{server}` was not announced offline within {} ms", timeout.as_millis()),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Closes the connection, and fails the calls still waiting with a
    /// transport error. Returns within about two seconds, whatever the
    /// broker's state: a broker that does not take the goodbye in time sees
    /// the connection dropped instead.
    pub async fn disconnect(&self) {
        self.inner.link.disconnect().await;
        self.inner.router.fail_all("the client disconnected");
    }

    /// Retained cards arrive right after the SUBACK, with no end marker: the
    /// cache counts as complete once it has been quiet for a moment.
    async fn cards_settled(&self) {
        loop {
            let (quiet_for, since_sub) = {
                let c = self.inner.router.cards.lock().expect("cards lock");
                (c.last_change.elapsed(), c.subscribed_at.elapsed())
            };
            if quiet_for >= CARDS_QUIET || since_sub >= CARDS_MAX_WAIT {
                return;
            }
            tokio::time::sleep(CARDS_QUIET - quiet_for).await;
        }
    }
}

async fn recv_partial(rx: &mut Option<mpsc::UnboundedReceiver<(u64, Partial)>>) -> Option<(u64, Partial)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Why a call got no response. On MQTT 3.1.1 the PUBACK has no reason
/// code, so a call the broker refused cannot be told apart from a slow one.
fn no_response(tool: &str, timeout: Duration, protocol: Protocol) -> String {
    let mut message = format!("no response from `{tool}` within {} ms", timeout.as_millis());
    if protocol == Protocol::V311 {
        message.push_str(
            "; on MQTT 3.1.1 the broker does not report a refused call (not authorized, or no server \
             subscribed to the tool), so such a call can only time out",
        );
    }
    message
}

/// A call no server took: at once for a tool that is not known online, at
/// the deadline when the refusal looked `passing` (and why).
fn no_subscribers(tool: &str, passing: Option<&str>, refusals: u32, timeout: Duration) -> CallError {
    let message = match passing {
        Some(why) => format!(
            "no server is subscribed to `{tool}` (PUBACK 0x10: no matching subscribers, {refusals} times within {} \
             ms; tried again as {why})",
            timeout.as_millis()
        ),
        None => format!("no server is subscribed to `{tool}` (PUBACK 0x10: no matching subscribers)"),
    };
    CallError::Unavailable { message }
}

fn transport(e: Error) -> CallError {
    match e {
        // Only the call itself can be too large: it was not published, as
        // the broker would have dropped it. Like a call over a server's
        // payload limit, it is the arguments that must change.
        Error::TooLarge {
            size, limit, by_broker, ..
        } => CallError::InvalidArguments {
            message: Error::TooLarge {
                what: "the call".into(),
                size,
                limit,
                by_broker,
            }
            .to_string(),
        },
        e => CallError::Transport(e.to_string()),
    }
}

/// The broker's verdict on the call's publish.
fn check_puback(tool: &str, reason: PubAckReason) -> Result<(), CallError> {
    match reason {
        PubAckReason::Success => Ok(()),
        PubAckReason::NotAuthorized => Err(CallError::Unauthorized {
            message: format!("the broker refused the call to `{tool}` (PUBACK 0x87: not authorized)"),
        }),
        PubAckReason::NoMatchingSubscribers => Err(CallError::Unavailable {
            message: format!("no server is subscribed to `{tool}` (PUBACK 0x10: no matching subscribers)"),
        }),
        other => Err(CallError::Transport(format!(
            "the broker refused the call to `{tool}`: {other:?}"
        ))),
    }
}

fn into_result(response: CallResponse) -> Result<Value, CallError> {
    match response.status {
        ResponseStatus::Ok => Ok(response.result.unwrap_or(Value::Null)),
        ResponseStatus::Error => Err(match response.error {
            Some(body) => CallError::from_body(body),
            None => CallError::Protocol("an error response without an `error` object".into()),
        }),
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
        {
            let mut cards = router.cards.lock().expect("cards lock");
            cards.subscribed_at = Instant::now();
            cards.last_change = Instant::now();
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_on_311_says_a_refusal_cannot_be_seen() {
        let on_311 = no_response("echo", Duration::from_millis(500), Protocol::V311);
        assert!(on_311.starts_with("no response from `echo` within 500 ms"), "{on_311}");
        assert!(
            on_311.contains("MQTT 3.1.1") && on_311.contains("can only time out"),
            "{on_311}"
        );
        let on_5 = no_response("echo", Duration::from_millis(500), Protocol::V5);
        assert!(!on_5.contains("3.1.1"), "{on_5}");
    }

    #[test]
    fn the_brokers_verdict_marks_or_wakes_the_waiting_call() {
        let router = Router::default();
        let correlation = Bytes::from_static(b"x");
        let mut rx: Vec<_> = ["ok", "refused", "lost", "nobody", "stale"]
            .into_iter()
            .map(|id| router.register(id, &correlation, 2))
            .collect();
        router.on_call_ack("ok", 2, "echo", Ack::Published(PubAckReason::Success));
        router.on_call_ack("refused", 2, "echo", Ack::Published(PubAckReason::NotAuthorized));
        router.on_call_ack("lost", 2, "echo", Ack::Lost);
        router.on_call_ack("nobody", 2, "echo", Ack::Published(PubAckReason::NoMatchingSubscribers));
        // The acknowledgement of an earlier publish of the same call.
        router.on_call_ack("stale", 1, "echo", Ack::Published(PubAckReason::NoMatchingSubscribers));
        assert!(router.accepted("ok"));
        assert!(rx[0].try_recv().is_err(), "an accepted call waits on for its response");
        assert!(matches!(
            rx[1].try_recv(),
            Ok(Answer::Failed(CallError::Unauthorized { .. }))
        ));
        assert!(matches!(rx[2].try_recv(), Ok(Answer::Lost)));
        assert!(matches!(rx[3].try_recv(), Ok(Answer::NoSubscribers)));
        assert!(rx[4].try_recv().is_err(), "only the latest publish's ack counts");
        assert!(!router.accepted("refused"));
        assert_eq!(router.calls.lock().unwrap().len(), 2);
    }

    fn card_json(tool: &str, server: &str, status: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "version": "1", "tool": tool, "server": server, "namespace": "lab", "description": "",
            "input_schema": {"type": "object"}, "supports_streaming": false, "requires_auth": false,
            "allowed_callers": [], "version_info": {"sdk": "x"}, "status": status,
            "last_seen": "2026-12-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_tool_is_online_while_its_card_and_its_servers_card_say_so() {
        let router = Router::default();
        assert!(!router.tool_online("echo"), "no card: nobody hosts it");
        router.on_card("lab/mcp/tools/echo/card", &card_json("echo", "lab", "online"));
        assert!(router.tool_online("echo"));
        let server = |status: &str| {
            serde_json::to_vec(&serde_json::json!({
                "version": "1", "server": "lab", "namespace": "lab", "tools": ["echo"],
                "version_info": {"sdk": "x"}, "status": status, "last_seen": "2026-12-01T00:00:00Z"
            }))
            .unwrap()
        };
        router.on_card("lab/mcp/servers/lab/card", &server("offline"));
        assert!(!router.tool_online("echo"), "its server's Last Will");
        router.on_card("lab/mcp/servers/lab/card", &server("online"));
        assert!(router.tool_online("echo"));
        router.on_card("lab/mcp/tools/echo/card", &card_json("echo", "lab", "offline"));
        assert!(!router.tool_online("echo"));
    }

    #[test]
    fn a_refusal_that_may_pass_says_so() {
        let at_once = no_subscribers("echo", None, 1, Duration::from_secs(5));
        assert!(matches!(&at_once, CallError::Unavailable { message } if !message.contains("tried again")));
        let at_deadline = no_subscribers("echo", Some("its card says it is online"), 7, Duration::from_secs(5));
        assert!(
            matches!(&at_deadline, CallError::Unavailable { message }
                if message.contains("7 times within 5000 ms; tried again as its card says it is online")),
            "{at_deadline}"
        );
    }

    #[test]
    fn on_311_a_response_is_matched_by_call_id_alone() {
        let router = Router::default();
        let mut rx = router.register("c1", &Bytes::from_static(b"c1"), 1);
        let response = Incoming {
            topic: "lab/mcp/clients/scout/responses".into(),
            payload: Bytes::from_static(br#"{"call_id":"c1","status":"ok","result":1,"elapsed_ms":0}"#),
            qos: QoS::AtLeastOnce,
            response_topic: None,
            correlation: None,
            message_expiry: None,
            pkid: 1,
        };
        let mut wrong = response.clone();
        wrong.correlation = Some(Bytes::from_static(b"other"));
        router.on_response(wrong);
        assert!(rx.try_recv().is_err(), "a mismatched Correlation Data is dropped");
        router.on_response(response);
        let Ok(Answer::Response(got)) = rx.try_recv() else {
            panic!("the response reaches the call")
        };
        assert_eq!(got.result, Some(serde_json::json!(1)));
    }
}
