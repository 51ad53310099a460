//! The client: discovers tools from their cards and calls them by name. This
//! file holds [`Client`] and its call API; it reads no publish itself: what
//! arrives goes through `router`, and the cards into `cards`.
//!
//! Many calls share one connection; each is matched to its response by
//! `call_id` and Correlation Data (by `call_id` alone on MQTT 3.1.1).
//!
//! The parts, each importing only those listed before it: `cards` (the card
//! cache), `router` (responses and partials to their calls, cards into the
//! cache), `discovery` (listings, and the Tool Cards fetched for them), this
//! file, and `builder` ([`ClientBuilder`], which connects).

mod builder;
mod cards;
mod discovery;
mod partials;
mod router;

use std::borrow::Borrow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::connection::{Link, Message, Protocol};
use crate::error::{CallError, Error};
use crate::protocol::card::{ServerCard, Status, ToolCard, EXT_CALLER_TOPIC};
use crate::protocol::envelope::{now_stamp, CallResponse, CancelRequest, Partial, RequestView, ResponseStatus};
use crate::protocol::names;
use crate::protocol::topics::Topics;
use discovery::Discovery;
use partials::{InOrder, StreamEvent, PARTIALS_GRACE};
use router::{Answer, CallGuard, Router};

pub use builder::ClientBuilder;
pub use discovery::{ToolFilter, ToolPage};

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
    discovery: Discovery,
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

/// One call, encoded, as it is published (and published again).
struct Outgoing<'a> {
    tool: &'a str,
    call_id: Arc<str>,
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

/// Options of one call.
#[derive(Clone, Default)]
#[must_use]
pub struct CallOptions {
    timeout: Option<Duration>,
    on_partial: Option<Arc<dyn Fn(Partial) + Send + Sync>>,
    /// Set by [`Client::call_streaming`], for [`PendingCall::cancel`].
    cancel: Option<CancellationToken>,
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

    /// Called with each streamed partial, once each, in the order the server
    /// sent them (SPEC §5): a partial that arrives early (a cluster does
    /// not keep the order) waits for those before it, and once the result
    /// is in, the call waits up to a second for partials still on their
    /// way. A v0.1 server's partials come in arrival order.
    pub fn on_partial(mut self, f: impl Fn(Partial) + Send + Sync + 'static) -> Self {
        self.on_partial = Some(Arc::new(f));
        self
    }
}

/// A call in progress, with its partials as they arrive: see
/// [`Client::call_streaming`]. Dropping it before its result is in cancels
/// the call, as [`PendingCall::cancel`] does.
#[derive(Debug)]
pub struct PendingCall {
    partials: mpsc::UnboundedReceiver<Partial>,
    result: Option<tokio::task::JoinHandle<Result<Value, CallError>>>,
    cancel: CancellationToken,
    /// Set once the result is in: dropping it then cancels nothing.
    finished: bool,
}

impl Drop for PendingCall {
    fn drop(&mut self) {
        if !self.finished {
            self.cancel.cancel();
        }
    }
}

impl PendingCall {
    /// Cancels the call: the server is told to stop it (its handler sees
    /// [`CallContext::cancelled`](crate::CallContext::cancelled)), and
    /// [`PendingCall::result`] gives [`CallError::Cancelled`]. Harmless once
    /// the call has finished.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The next partial, or `None` once the call has finished.
    pub async fn next_partial(&mut self) -> Option<Partial> {
        self.partials.recv().await
    }

    /// Waits for the call's result (partials not yet read are dropped).
    pub async fn result(mut self) -> Result<Value, CallError> {
        let Some(task) = self.result.take() else {
            return Err(CallError::Transport("the call's result was taken already".into()));
        };
        let result = task
            .await
            .unwrap_or_else(|e| Err(CallError::Transport(format!("the call task failed: {e}"))));
        self.finished = true;
        result
    }
}

impl Client {
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
    /// The arguments are a JSON object, given or lent: a caller that sends
    /// the same arguments again lends them (`&args`) rather than cloning
    /// them for each call.
    ///
    /// ```no_run
    /// # async fn run(client: mcpmqtt::Client) -> Result<(), mcpmqtt::CallError> {
    /// use serde_json::json;
    ///
    /// let _hello = client.call("echo", json!({"text": "hello"})).await?;
    /// let poll = json!({"platform": "reddit"});
    /// for _ in 0..3 {
    ///     let _configs = client.call("query_watch_configs", &poll).await?;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// [`Protocol::V311`]: crate::Protocol::V311
    pub async fn call(&self, tool: &str, arguments: impl Borrow<Value>) -> Result<Value, CallError> {
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

    /// Calls a tool with options (timeout, partials). The arguments are
    /// given or lent, as for [`Client::call`].
    pub async fn call_with(
        &self,
        tool: &str,
        arguments: impl Borrow<Value>,
        options: CallOptions,
    ) -> Result<Value, CallError> {
        // Shared by the call's entries in the router and its PUBACK's
        // handler; written without the formatting machinery.
        let mut buf = uuid::Uuid::encode_buffer();
        let call_id: Arc<str> = Arc::from(&*uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf));
        let span = tracing::debug_span!("call", %call_id, %tool);
        self.call_inner(tool, arguments, options, call_id)
            .instrument(span)
            .await
    }

    async fn call_inner(
        &self,
        tool: &str,
        arguments: impl Borrow<Value>,
        options: CallOptions,
        call_id: Arc<str>,
    ) -> Result<Value, CallError> {
        let inner = &self.inner;
        if let Some(reason) = names::name_problem(tool) {
            return Err(CallError::InvalidArguments {
                message: format!("invalid tool name {tool:?}: {reason}"),
            });
        }
        if !arguments.borrow().is_object() {
            return Err(CallError::InvalidArguments {
                message: "arguments must be a JSON object".into(),
            });
        }
        let timeout = options.timeout.unwrap_or(inner.default_timeout);
        let deadline = tokio::time::Instant::now() + timeout;
        let correlation = Bytes::copy_from_slice(call_id.as_bytes());

        let _guard = CallGuard {
            router: &inner.router,
            call_id: &call_id,
        };
        // Servers whose card lists the extensions get the caller-attested
        // topic and a private stream; known v0.1 servers get plain v0.1. The
        // Server Card listing the tool says which; a tool no Server Card
        // lists has its own card looked up.
        let v01 = match inner.router.cards.speaks_v01(tool) {
            Some(v01) => v01,
            None => inner
                .discovery
                .tool_card(tool)
                .await
                .map_err(transport)?
                .is_some_and(|card| !card.supports(EXT_CALLER_TOPIC)),
        };
        let mut partial_rx = None;
        let mut order = InOrder::new(!v01);
        let mut v01_stream = None;
        if options.on_partial.is_some() {
            partial_rx = Some(inner.router.partials(&call_id));
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

        let timestamp = now_stamp();
        let request = RequestView {
            call_id: &call_id,
            arguments: arguments.borrow(),
            client: &inner.identity,
            timestamp: Some(timestamp.as_str()),
            response_topic: Some(&inner.response_topic),
            private_stream: !v01,
        };
        let guess = inner.last_call_bytes.load(Ordering::Relaxed);
        let payload = request.encode(guess);
        // The arguments are in the payload now: do not hold them twice while
        // the call waits (a queue of large calls would).
        drop(arguments);
        inner.last_call_bytes.store(payload.len(), Ordering::Relaxed);
        let call = Outgoing {
            tool,
            call_id: call_id.clone(),
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
        // A call given up on (cancelled, timed out, or its future dropped)
        // is cancelled on the server too; v0.1 servers know no cancel.
        let mut cancel_on_drop = CancelOnDrop {
            inner,
            tool,
            call_id: &call_id,
            armed: !v01,
        };
        let answer = self
            .deliver(&call, timeout, &options, &mut partial_rx, &mut order)
            .await;
        if !matches!(
            answer,
            Err(CallError::Timeout { .. } | CallError::Cancelled { .. } | CallError::Transport(_))
        ) {
            // Answered, or never delivered: nothing runs to cancel.
            cancel_on_drop.armed = false;
        }
        if let (Some(rx), Some(f)) = (&mut partial_rx, &options.on_partial) {
            // Partials that arrived just before the response; and, when the
            // server answered, those still on their way (a cluster's nodes do
            // not keep the order between a stream and its response).
            let wait = match &answer {
                Ok(response) => {
                    if let Some(partials) = response.partials {
                        order.ends_at(partials);
                    }
                    PARTIALS_GRACE.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
                }
                Err(_) => Duration::ZERO,
            };
            finish_stream(rx, &mut order, wait, f.as_ref()).await;
        }
        if let Some(topic) = v01_stream {
            let link = inner.link.clone();
            tokio::spawn(async move { link.unsubscribe(&topic).await });
        }
        into_result(answer?)
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
        partial_rx: &mut Option<mpsc::UnboundedReceiver<StreamEvent>>,
        order: &mut InOrder,
    ) -> Result<CallResponse, CallError> {
        let inner = &self.inner;
        let mut sessions_lost = inner.link.sessions_lost();
        let mut backoff = RETRY_FIRST;
        let mut attempt = 0;
        let mut refusals = 0u32;
        // One timer for the whole call, however many times it is published.
        let expired = tokio::time::sleep_until(call.deadline);
        tokio::pin!(expired);
        loop {
            attempt += 1;
            let mut response_rx = inner.router.register(call.call_id.clone(), &call.correlation, attempt);
            // The PUBACK is heard on the connection task: a refusal wakes the
            // call through `response_rx`, a success wakes nobody.
            let on_ack = {
                let (router, call_id) = (inner.router.clone(), call.call_id.clone());
                move |ack| router.on_call_ack(&call_id, attempt, ack)
            };
            let published = inner.link.publish_then(call.message(), on_ack);
            // The timer is registered only if the outbox is full.
            tokio::select! {
                biased;
                sent = published => sent.map_err(transport)?,
                () = &mut expired => return Err(CallError::Timeout {
                    message: format!(
                        "the call could not be sent within {} ms: the connection's outbox stayed full",
                        timeout.as_millis()
                    ),
                }),
            }
            // Set when this publish will not be answered: wait for this
            // moment, then publish again.
            let mut again_at = None;
            let mut after_new_session = false;
            while again_at.is_none() && !after_new_session {
                tokio::select! {
                    biased;
                    answer = &mut response_rx => match answer {
                        Ok(Answer::Response(response)) => return Ok(response),
                        Ok(Answer::Failed(e)) => return Err(e),
                        Ok(Answer::Refused(reason)) => return Err(router::refusal(call.tool, reason)),
                        // The broker lost the session: the call, or its
                        // response, may be gone with it.
                        Ok(Answer::SessionLost) => {
                            tracing::debug!("the session was lost while the call waited: publishing again");
                            after_new_session = true;
                        }
                        Ok(Answer::NoSubscribers) => {
                            refusals += 1;
                            let passing = if inner.router.cards.tool_online(call.tool) {
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
                                () = &mut expired => {
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
                    Some(event) = recv_partial(partial_rx) => {
                        if let Some(f) = &options.on_partial {
                            order.take(event, f.as_ref());
                        }
                    }
                    _ = cancelled(&options.cancel) => {
                        return Err(CallError::Cancelled { message: format!("the caller cancelled the call of `{}`", call.tool) });
                    }
                    () = &mut expired => {
                        let message = if inner.router.accepted(&call.call_id) {
                            no_response(call.tool, timeout, inner.protocol, inner.router.cards.tool_online(call.tool))
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
        let cancel = CancellationToken::new();
        let mut options = options.on_partial(move |p| {
            let _ = tx.send(p);
        });
        options.cancel = Some(cancel.clone());
        let result = tokio::spawn(async move { client.call_with(&tool, arguments, options).await });
        PendingCall {
            partials: rx,
            result: Some(result),
            cancel,
            finished: false,
        }
    }

    /// The Tool Cards of every online tool of the namespace, in name order.
    ///
    /// The tools are those the online Server Cards list (a tool whose
    /// server's card is offline, its Last Will, is left out); their cards
    /// are fetched in batches the broker delivers whole, whatever the
    /// namespace's size, and kept while their server's card is unchanged.
    /// A listing that misses a card fails with [`Error::Incomplete`], which
    /// holds the cards that did arrive.
    pub async fn tools(&self) -> Result<Vec<ToolCard>, Error> {
        self.tools_matching(&ToolFilter::new()).await
    }

    /// The Tool Cards of the online tools `filter` keeps (one server's, or a
    /// name prefix), in name order: see [`Client::tools`].
    pub async fn tools_matching(&self, filter: &ToolFilter) -> Result<Vec<ToolCard>, Error> {
        Ok(self.inner.discovery.list(filter, None, None).await?.tools)
    }

    /// One page of [`Client::tools_matching`]: at most `limit` Tool Cards
    /// (at least one), in name order, after the tool named `after`. Only the
    /// page's cards are fetched.
    ///
    /// ```no_run
    /// # async fn run(client: mcpmqtt::Client) -> Result<(), mcpmqtt::Error> {
    /// let filter = mcpmqtt::ToolFilter::new();
    /// let mut after = None;
    /// loop {
    ///     let page = client.tools_page(&filter, after.as_deref(), 100).await?;
    ///     for card in &page.tools {
    ///         println!("{}: {}", card.tool, card.description);
    ///     }
    ///     match page.next {
    ///         Some(next) => after = Some(next),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn tools_page(&self, filter: &ToolFilter, after: Option<&str>, limit: usize) -> Result<ToolPage, Error> {
        self.inner.discovery.list(filter, after, Some(limit)).await
    }

    /// The names of the online tools `filter` keeps, with their server, in
    /// name order: from the Server Cards alone, so as cheap for 10,000 tools
    /// as for ten.
    pub async fn tool_names(&self, filter: &ToolFilter) -> Vec<(String, String)> {
        let cards = &self.inner.router.cards;
        cards.settled().await;
        cards.online_listed(|tool, server| filter.keeps(tool, server))
    }

    /// The card of one tool, online or offline, if the broker holds one.
    pub async fn tool_card(&self, tool: &str) -> Result<Option<ToolCard>, Error> {
        names::validate("tool", tool)?;
        self.inner.discovery.tool_card(tool).await
    }

    /// The online Server Cards of the namespace.
    pub async fn servers(&self) -> Vec<ServerCard> {
        self.inner.router.cards.settled().await;
        self.inner.router.cards.online_servers()
    }

    /// Waits until a tool is online, and returns its card: an online
    /// Server Card lists it (or, for a tool no Server Card lists, its own
    /// card says online).
    pub async fn wait_for_tool(&self, tool: &str, timeout: Duration) -> Result<ToolCard, CallError> {
        let deadline = Instant::now() + timeout;
        let cards = &self.inner.router.cards;
        loop {
            let listed = cards.listed(tool);
            if listed.as_ref().is_none_or(|l| l.online) {
                let card = self.tool_card(tool).await.map_err(transport)?;
                if let Some(card) = card.filter(|c| c.status == Status::Online) {
                    return Ok(card);
                }
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
            if let Some(card) = self
                .inner
                .router
                .cards
                .server(server)
                .filter(|c| c.status == Status::Offline)
            {
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
}

async fn cancelled(token: &Option<CancellationToken>) {
    match token {
        Some(token) => token.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The cancel of one call, published when the call is given up on.
fn cancel_message(topics: &Topics, tool: &str, identity: &str, call_id: &str, response_topic: &str) -> Message {
    let cancel = CancelRequest {
        call_id: call_id.to_owned(),
        response_topic: response_topic.to_owned(),
    };
    Message {
        topic: topics.cancel_as(tool, identity),
        payload: Bytes::from(serde_json::to_vec(&cancel).expect("a cancel is always serialisable")),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: None,
    }
}

/// Publishes a call's cancel when dropped armed: the call's future was
/// dropped, or the call was given up on. The cancel is encoded only then,
/// not for every call.
struct CancelOnDrop<'a> {
    inner: &'a Inner,
    tool: &'a str,
    call_id: &'a str,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.inner;
        let message = cancel_message(
            &inner.topics,
            self.tool,
            &inner.identity,
            self.call_id,
            &inner.response_topic,
        );
        let link = inner.link.clone();
        runtime.spawn(async move {
            if let Err(e) = link.publish(message).await {
                tracing::debug!(error = %e, "could not send a cancel");
            }
        });
    }
}

/// Hands over a call's partials once its response is in: those already
/// here, then, for up to `wait`, those known to be missing; then what is
/// held, in order, whatever is still missing.
async fn finish_stream(
    rx: &mut mpsc::UnboundedReceiver<StreamEvent>,
    order: &mut InOrder,
    wait: Duration,
    hand: &(dyn Fn(Partial) + Send + Sync),
) {
    while let Ok(event) = rx.try_recv() {
        order.take(event, hand);
    }
    let until = tokio::time::Instant::now() + wait;
    while order.missing() {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(event)) => order.take(event, hand),
            Ok(None) | Err(_) => break,
        }
    }
    if let Some(missing) = order.give_up(hand).filter(|&n| n > 0) {
        tracing::warn!(
            missing,
            waited_ms = wait.as_millis() as u64,
            "partials of the call never came"
        );
    }
}

async fn recv_partial(rx: &mut Option<mpsc::UnboundedReceiver<StreamEvent>>) -> Option<StreamEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Why a call got no response. On MQTT 3.1.1 the PUBACK has no reason
/// code, so a call the broker refused cannot be told apart from a slow one.
fn no_response(tool: &str, timeout: Duration, protocol: Protocol, known_online: bool) -> String {
    let mut message = format!("no response from `{tool}` within {} ms", timeout.as_millis());
    if protocol == Protocol::V311 {
        message.push_str(
            "; on MQTT 3.1.1 the broker does not report a refused call (not authorized, or no server \
             subscribed to the tool), so such a call can only time out",
        );
    } else if !known_online {
        message.push_str(
            "; no online card names it, so perhaps no server hosts it: the broker accepted the call \
             (PUBACK 0x00), and some brokers (RMQTT) never answer 0x10 for a publish no one is subscribed to",
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

fn into_result(response: CallResponse) -> Result<Value, CallError> {
    match response.status {
        ResponseStatus::Ok => Ok(response.result.unwrap_or(Value::Null)),
        ResponseStatus::Error => Err(match response.error {
            Some(body) => CallError::from_body(body),
            None => CallError::Protocol("an error response without an `error` object".into()),
        }),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_on_311_says_a_refusal_cannot_be_seen() {
        let on_311 = no_response("echo", Duration::from_millis(500), Protocol::V311, true);
        assert!(on_311.starts_with("no response from `echo` within 500 ms"), "{on_311}");
        assert!(
            on_311.contains("MQTT 3.1.1") && on_311.contains("can only time out"),
            "{on_311}"
        );
        let on_5 = no_response("echo", Duration::from_millis(500), Protocol::V5, true);
        assert_eq!(on_5, "no response from `echo` within 500 ms");
    }

    #[test]
    fn a_timeout_of_a_tool_with_no_online_card_says_the_broker_may_not_report_it() {
        let unknown = no_response("ghost", Duration::from_millis(500), Protocol::V5, false);
        assert!(
            unknown.starts_with("no response from `ghost` within 500 ms"),
            "{unknown}"
        );
        assert!(
            unknown.contains("no online card") && unknown.contains("never answer 0x10"),
            "{unknown}"
        );
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
}
