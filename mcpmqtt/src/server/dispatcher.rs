//! The dispatcher: turns each incoming call into exactly one response. No
//! call may stop it: whatever arrives (not JSON, no `call_id`, bad arguments,
//! a tool that panics or hangs), the caller gets a typed error if reachable.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;
use serde_json::Value;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::cancels::Cancelled;
use super::dedupe::{CallKey, Seen};
use super::shared::{HostedTool, Phase, Shared};
use crate::connection::{AckHandle, Inbox, Incoming, Link, Message};
use crate::error::{Error, ToolError};
use crate::protocol::envelope::{CallRequest, CallResponse, CancelRequest, ErrorBody, ErrorType, ResponseStatus};
use crate::protocol::inbound::{decode_call, Envelope, Inbound, Reply};
use crate::protocol::topics::Topics;
use crate::tool::context::{CallContext, Caller, StreamSink};
use crate::tool::ToolDef;

/// Turns the calls arriving on one connection into responses.
pub(crate) struct Dispatcher {
    /// The connection calls arrive on, and are acknowledged on.
    link: Link,
    /// The connection responses and partials leave on.
    reply_link: Link,
    shared: Arc<Shared>,
    /// Where publishes on the server's own card topic go (a sibling's Last
    /// Will, say), rather than being taken for calls.
    own_card: Option<(String, mpsc::UnboundedSender<Incoming>)>,
    /// Calls in line for a slot. While any wait, new calls join the line
    /// rather than overtake them.
    waiting: AtomicUsize,
    /// Every call's task, so that [`Dispatcher::finished`] can wait for them.
    tasks: TaskTracker,
    /// Whether a call that arrives while no other runs takes its first
    /// step on the connection task itself (see [`Intake::offer`]).
    inline: InlineBudget,
}

/// Whether calls still take their first step on the connection task: until
/// first steps there keep taking longer than [`INLINE_BUDGET`], since a
/// handler that computes before it awaits would hold up the connection.
#[derive(Debug)]
struct InlineBudget {
    on: AtomicBool,
    /// Up by one for each first step over the budget, down by one for each
    /// within it: a cold start or a preemption now and then is forgiven, a
    /// handler that is always slow is not.
    slow_steps: AtomicU32,
}

impl InlineBudget {
    fn new() -> Self {
        InlineBudget {
            on: AtomicBool::new(true),
            slow_steps: AtomicU32::new(0),
        }
    }

    fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Counts a first step that took `took`; turns inline steps off for
    /// good when slow ones keep coming.
    fn took(&self, took: Duration) {
        if took <= INLINE_BUDGET {
            if self.slow_steps.load(Ordering::Relaxed) > 0 {
                self.slow_steps.fetch_sub(1, Ordering::Relaxed);
            }
            return;
        }
        if self.slow_steps.fetch_add(1, Ordering::Relaxed) + 1 >= SLOW_STEPS_LIMIT
            && self.on.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                budget_us = INLINE_BUDGET.as_micros() as u64,
                "calls keep computing before they await: from now on each starts in a task of its own"
            );
        }
    }
}

/// The longest a call's first step may take on the connection task.
const INLINE_BUDGET: Duration = Duration::from_micros(200);
/// The largest call that takes its first step on the connection task while
/// other calls run: above it, the work of a call is worth the other core.
const INLINE_AMONG_OTHERS_BYTES: usize = 1024;
/// How far [`InlineBudget::slow_steps`] may climb before calls are no longer
/// started on the connection task.
const SLOW_STEPS_LIMIT: u32 = 8;

impl Dispatcher {
    pub(crate) fn new(link: Link, shared: Arc<Shared>) -> Self {
        Dispatcher {
            reply_link: link.clone(),
            link,
            shared,
            own_card: None,
            waiting: AtomicUsize::new(0),
            tasks: TaskTracker::new(),
            inline: InlineBudget::new(),
        }
    }

    /// Answers through `link` (the server's own connection) rather than the
    /// one the calls arrive on (an adopted session, soon to be closed).
    pub(crate) fn replying_through(mut self, link: Link) -> Self {
        self.reply_link = link;
        self
    }

    /// Hands publishes on `topic` to `tx` instead of dispatching them.
    pub(crate) fn with_own_card(mut self, topic: String, tx: mpsc::UnboundedSender<Incoming>) -> Self {
        self.own_card = Some((topic, tx));
        self
    }

    /// Starts serving: calls go in through the returned [`Intake`], and the
    /// returned task runs the line of calls waiting for a slot, until the
    /// intake is dropped.
    pub(crate) fn start(self) -> (Intake, tokio::task::JoinHandle<()>) {
        let this = Arc::new(self);
        let (line_tx, line_rx) = mpsc::unbounded_channel();
        let line = tokio::spawn(this.clone().run_line(line_rx));
        let intake = Intake {
            dispatcher: this,
            line: line_tx,
        };
        (intake, line)
    }

    /// Waits until every call taken has been answered. For after the intake
    /// is dropped and the line's task has ended.
    pub(crate) async fn finished(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// After a drain: waits, up to `limit`, until the calls still in line
    /// have been answered (`unavailable`) and every call's task has ended,
    /// so that no answer is cut off by the disconnect that follows.
    pub(crate) async fn settle(&self, limit: Duration) {
        let settled = async {
            while self.waiting.load(Ordering::Acquire) > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            self.finished().await;
        };
        if tokio::time::timeout(limit, settled).await.is_err() {
            tracing::warn!(
                in_line = self.waiting.load(Ordering::Acquire),
                "calls still unanswered at shutdown"
            );
        }
    }

    /// Acknowledges without waiting, from any task.
    fn ack_soon(&self, handle: AckHandle) {
        if !self.link.try_ack(handle) {
            let link = self.link.clone();
            tokio::spawn(async move { link.ack(handle).await });
        }
    }

    /// Gives each call in line a slot, in the order they came.
    async fn run_line(self: Arc<Self>, mut line: mpsc::UnboundedReceiver<(Instant, Incoming)>) {
        while let Some((arrived, publish)) = line.recv().await {
            let slot = self.shared.slot().await;
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            self.tasks
                .spawn(Box::pin(self.clone().serve(publish, arrived, slot, false)));
        }
    }

    /// Serves one call, in a task of its own. `slot` is `None` when the
    /// server is shutting down: the call is answered `unavailable`.
    /// `acked` says whether the publish was acknowledged already (when taken
    /// on the connection task).
    async fn serve(
        self: Arc<Self>,
        mut publish: Incoming,
        started: Instant,
        slot: Option<OwnedSemaphorePermit>,
        acked: bool,
    ) {
        // Every call taken is acknowledged as it is taken up, whatever becomes
        // of it: a redelivery after this is a duplicate.
        if !acked {
            self.link.ack(publish.ack_handle()).await;
        }
        let shared = &self.shared;
        // Decoded once, then let go: a large call is not held twice while it runs.
        let payload = std::mem::take(&mut publish.payload);
        let call_bytes = payload.len();
        let topic = publish.topic.as_str();
        // The broker counts the expiry down while a call waits there; it goes
        // on counting here while the call waits for a free slot. (MQTT 3.1.1
        // calls carry none.)
        let expires = publish
            .message_expiry
            .map(|secs| started + Duration::from_secs(u64::from(secs)));
        let (tool_name, verified) = shared.topics.parse_call(topic).unwrap_or_default();
        let envelope = Envelope {
            response_topic: publish.response_topic.as_deref(),
            correlation: publish.correlation.as_ref(),
            verified_caller: verified,
        };
        let Inbound { mut request, reply } = match decode_call(
            &shared.topics,
            shared.config.max_payload_bytes,
            &payload,
            envelope,
        ) {
            Ok(inbound) => inbound,
            Err(rejection) => {
                match rejection.reply {
                    Some(reply) => {
                        tracing::warn!(%topic, call_id = %rejection.call_id, error = %rejection.error.message, "rejected a call");
                        let response = CallResponse::error(rejection.call_id, rejection.error, elapsed_ms(started));
                        self.respond(reply, &response).await;
                    }
                    None => {
                        tracing::warn!(%topic, error = %rejection.error.message, "dropped a call with no valid reply address")
                    }
                }
                return;
            }
        };
        drop(payload);
        let refuse = |error_type: ErrorType, message: String| {
            let error = ErrorBody::new(error_type, message);
            CallResponse::error(request.call_id.clone(), error, elapsed_ms(started))
        };
        let caller = match verified {
            Some(id) => Caller::new(id, true),
            None => Caller::new(std::mem::take(&mut request.client), false),
        };
        if !caller.is_verified() && shared.config.require_verified_caller {
            let message = format!(
                "this server serves only calls whose caller the broker attests: publish to `{}`",
                shared.topics.call_as(tool_name, "{caller}")
            );
            self.respond(reply, &refuse(ErrorType::Unauthorized, message)).await;
            return;
        }
        let Some(tool) = shared.tools.get(tool_name) else {
            let message = format!("no tool is hosted at `{topic}` by this server");
            self.respond(reply, &refuse(ErrorType::Unavailable, message)).await;
            return;
        };
        if let Err(message) = tool.check(&mut request.arguments) {
            self.respond(reply, &refuse(ErrorType::InvalidArguments, message)).await;
            return;
        }
        let key = CallKey::new(&tool.def.name, &request.call_id, &reply.topic);
        let seen = shared.window.lock().expect("window lock").check(&key, started);
        match seen {
            Seen::New => {}
            Seen::Running => {
                tracing::info!(call_id = %request.call_id, "a duplicate of a running call: not run again");
                return;
            }
            Seen::Finished(cached) => {
                tracing::info!(call_id = %request.call_id, "a duplicate of a finished call: not run again");
                match cached {
                    Some(payload) => self.send(reply, payload, &request.call_id).await,
                    None => {
                        let message = "this call already ran; its result is no longer cached".to_owned();
                        let mut response = refuse(ErrorType::ToolError, message);
                        if let Some(error) = &mut response.error {
                            error.code = Some(Value::from("duplicate"));
                        }
                        self.respond(reply, &response).await;
                    }
                }
                return;
            }
        }
        let refusal = match (&slot, expires) {
            (None, _) => Some(refuse(
                ErrorType::Unavailable,
                "the server is shutting down: call again to reach another instance".into(),
            )),
            (Some(_), Some(at)) if Instant::now() >= at => Some(refuse(
                ErrorType::Timeout,
                "the call expired (MQTT Message Expiry) before the server could start it".into(),
            )),
            _ => None,
        };
        let ctx = match refusal {
            Some(response) => Err(response),
            None => {
                // Its table entry is the context itself: a cancel reaches
                // the handler through it.
                let ctx = self.context(tool, &request, caller);
                let started = shared
                    .cancels
                    .lock()
                    .expect("cancels lock")
                    .start(&key, ctx.caller_cancel());
                started.then_some(ctx).ok_or_else(|| {
                    refuse(
                        ErrorType::Cancelled,
                        "the caller cancelled the call before it started".into(),
                    )
                })
            }
        };
        let ctx = match ctx {
            Ok(ctx) => ctx,
            Err(response) => {
                shared.window.lock().expect("window lock").forget(&key);
                self.respond(reply, &response).await;
                return;
            }
        };
        let _running = Deregister { shared, key };
        let caller = ctx.caller();
        let span = tracing::info_span!("call", call_id = %request.call_id, tool = %tool.def.name, caller = %caller.id(), verified = caller.is_verified());
        let CallRequest { call_id, arguments, .. } = request;
        async {
            // Biased: a call that finishes at once never registers for the
            // shutdown signal.
            let ran = tokio::select! {
                biased;
                ran = self.run_call(tool, &ctx, arguments) => Some(ran),
                () = shutting_down(&shared.phase) => None,
            };
            let elapsed = elapsed_ms(started);
            let response = match ran {
                Some((result, partials)) => {
                    let mut response = match result {
                        Ok(value) => CallResponse::ok(call_id, value, elapsed),
                        Err(e) => {
                            tracing::info!(error_type = %e.error_type(), message = e.message(), "call failed");
                            CallResponse::error(call_id, e.into_body(), elapsed)
                        }
                    };
                    response.partials = partials;
                    response
                }
                None => {
                    let message = format!("the server shut down before `{}` finished", tool.def.name);
                    CallResponse::error(call_id, ErrorBody::new(ErrorType::Unavailable, message), elapsed)
                }
            };
            // Results are often about as large as the arguments (echoes,
            // transforms): start the buffer at that size. Fitted before the
            // window caches it, so a duplicate gets the same answer.
            let message = self.fit(reply, &response, call_bytes, || match response.status {
                ResponseStatus::Ok => format!("the result of `{}`", tool.def.name),
                ResponseStatus::Error => format!("the error returned by `{}`", tool.def.name),
            });
            self.shared
                .window
                .lock()
                .expect("window lock")
                .finish(&key, &message.payload);
            self.publish(message, &response.call_id).await;
        }
        .instrument(span)
        .await;
        drop(slot);
    }

    /// The context a call's handler gets: for a streaming tool, with the
    /// stream its caller reads (a private one when the caller asked for it
    /// and its id can name a topic).
    fn context(&self, tool: &HostedTool, request: &CallRequest, caller: Caller) -> CallContext {
        let call_id = request.call_id.as_str();
        let stream = tool.def.streaming.then(|| {
            let topic = if request.private_stream && crate::protocol::names::name_problem(caller.id()).is_none() {
                self.shared.topics.private_stream(caller.id(), call_id)
            } else {
                self.shared.topics.stream(&tool.def.name, call_id)
            };
            StreamSink::mqtt(self.reply_link.clone(), topic)
        });
        CallContext::new(
            call_id.to_owned(),
            tool.name.clone(),
            caller,
            stream,
            self.shared.config.states.clone(),
        )
    }

    /// Runs a call's handler: its result, and how many partials its stream
    /// sent. The handler hears the caller's cancel at once, through its
    /// context; a handler that cancels its own context (as the timeout does)
    /// does not make its call look cancelled by the caller.
    async fn run_call(
        &self,
        tool: &HostedTool,
        ctx: &CallContext,
        arguments: Value,
    ) -> (Result<Value, ToolError>, Option<u64>) {
        // A handler may panic while building its future, or while running
        // it. Its future is boxed already, so this one moves freely (into the
        // grace task below) without another allocation.
        let mut run = match std::panic::catch_unwind(AssertUnwindSafe(|| (tool.def.handler)(ctx.clone(), arguments))) {
            Ok(future) => futures_util::future::Either::Left(AssertUnwindSafe(future).catch_unwind()),
            Err(panic) => futures_util::future::Either::Right(std::future::ready(Err(panic))),
        };
        // The cancel first: the handler hears it too, and may answer at once,
        // but the caller asked for a cancel, and is answered `cancelled`.
        let by_caller = if ctx.cancelled_by_caller() {
            None
        } else if let Poll::Ready(outcome) = futures_util::poll!(&mut run) {
            // Answered at its first step: no timer was needed.
            Some(outcome)
        } else {
            tokio::select! {
                biased;
                () = ctx.caller_cancelled() => None,
                outcome = &mut run => Some(outcome),
                _ = tokio::time::sleep(tool.timeout) => None,
            }
        };
        let outcome = match by_caller {
            Some(outcome) => Ok(outcome),
            None => {
                // Cancelled, by the caller or by the tool's timeout: the
                // handler hears it through `ctx.cancelled()`, and has the
                // grace to wind down, in the background; its caller is
                // answered, and its slot freed, now.
                let by_caller = ctx.cancelled_by_caller();
                ctx.cancel();
                let (grace, name) = (self.shared.config.cancel_grace, tool.def.name.clone());
                self.tasks.spawn(async move {
                    if tokio::time::timeout(grace, run).await.is_err() {
                        tracing::warn!(tool = %name, grace_ms = grace.as_millis() as u64, "dropped a cancelled handler that did not stop within the grace");
                    }
                });
                Err(by_caller)
            }
        };
        let result: Result<Value, ToolError> = match outcome {
            Err(true) => Err(ToolError::of_type(
                ErrorType::Cancelled,
                format!("the caller cancelled `{}`", tool.def.name),
            )),
            Err(false) => Err(ToolError::of_type(
                ErrorType::Timeout,
                format!(
                    "`{}` did not finish within {} ms",
                    tool.def.name,
                    tool.timeout.as_millis()
                ),
            )),
            Ok(Err(panic)) => {
                let what = panic_message(&*panic);
                tracing::error!(panic = %what, "the tool panicked");
                Err(ToolError::new(format!("the tool panicked: {what}")).with_code("panic"))
            }
            Ok(Ok(result)) => result,
        };
        let partials = ctx.finish_stream().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not end the stream");
            None
        });
        (result, partials)
    }

    /// Takes a cancel from `caller` (attested by the topic it came on): the
    /// call it names is cancelled if that caller made it, or remembered for a
    /// while if it is not running (yet). Runs on the connection task.
    fn on_cancel(&self, tool: &str, caller: &str, payload: &[u8]) {
        let Ok(cancel) = serde_json::from_slice::<CancelRequest>(payload) else {
            tracing::warn!(%tool, %caller, "ignored an unreadable cancel");
            return;
        };
        let key = CallKey::new(tool, &cancel.call_id, &cancel.response_topic);
        let outcome = self
            .shared
            .cancels
            .lock()
            .expect("cancels lock")
            .cancel(key, caller, Instant::now());
        match outcome {
            Cancelled::Running => {
                tracing::info!(call_id = %cancel.call_id, %tool, %caller, "the caller cancelled the call")
            }
            Cancelled::NotTheCaller => {
                tracing::warn!(call_id = %cancel.call_id, %tool, %caller, "ignored a cancel from another caller than the call's")
            }
            Cancelled::Early => {
                tracing::debug!(call_id = %cancel.call_id, %tool, %caller, "a cancel of no running call: kept for a while")
            }
        }
    }

    async fn respond(&self, reply: Reply, response: &CallResponse) {
        let message = self.fit(reply, response, 0, || {
            format!("the response to call `{}`", response.call_id)
        });
        self.publish(message, &response.call_id).await;
    }

    /// Encodes a response as it can be sent. One whose packet would exceed
    /// the maximum packet size (this server's, or the broker's if smaller)
    /// is replaced by a `tool_error` with code `result_too_large` naming both
    /// sizes: sent as it is, the broker would drop it, and its caller would
    /// wait out its whole timeout for nothing.
    fn fit(&self, reply: Reply, response: &CallResponse, size_hint: usize, what: impl FnOnce() -> String) -> Message {
        let mut message = reply_message(reply, encode(response, size_hint));
        if let Err(too_large) = self.reply_link.fits(&message, what) {
            tracing::warn!(call_id = %response.call_id, error = %too_large, "a response too large to send: answered `result_too_large` instead");
            let mut error = ErrorBody::new(ErrorType::ToolError, too_large.to_string());
            error.code = Some(Value::from(RESULT_TOO_LARGE));
            let instead = CallResponse::error(response.call_id.clone(), error, response.elapsed_ms);
            message.payload = encode(&instead, 0);
        }
        message
    }

    /// Sends an encoded response (a cached one, for a duplicate).
    async fn send(&self, reply: Reply, payload: Bytes, call_id: &str) {
        self.publish(reply_message(reply, payload), call_id).await;
    }

    async fn publish(&self, message: Message, call_id: &str) {
        if let Err(e) = self.reply_link.publish(message).await {
            tracing::error!(error = %e, %call_id, "could not send a response");
        }
    }
}

/// Takes a call out of the running calls however its task ends.
struct Deregister<'a> {
    shared: &'a Shared,
    key: CallKey,
}

impl Drop for Deregister<'_> {
    fn drop(&mut self) {
        self.shared.cancels.lock().expect("cancels lock").end(&self.key);
    }
}

/// The way into a dispatcher, from its connection's task.
pub(crate) struct Intake {
    dispatcher: Arc<Dispatcher>,
    line: mpsc::UnboundedSender<(Instant, Incoming)>,
}

impl Intake {
    /// The dispatcher calls go to.
    pub(crate) fn dispatcher(&self) -> Arc<Dispatcher> {
        self.dispatcher.clone()
    }

    /// Takes one publish without blocking the connection task. While a slot
    /// is free and no call is in line, a call goes straight to a task of its
    /// own; otherwise it joins the line.
    pub(crate) fn offer(&self, publish: Incoming) {
        let d = &self.dispatcher;
        if let Some((topic, tx)) = &d.own_card {
            if publish.topic == *topic {
                // Acknowledged at once: an unacknowledged card would hold
                // one of the broker's in-flight slots for calls for good.
                d.ack_soon(publish.ack_handle());
                let _ = tx.send(publish);
                return;
            }
        }
        if let Some((tool, caller)) = d.shared.topics.parse_cancel(&publish.topic) {
            // Taken before it is acknowledged: once the broker has the
            // PUBACK, the cancel is in effect.
            d.on_cancel(tool, caller, &publish.payload);
            d.ack_soon(publish.ack_handle());
            return;
        }
        let arrived = Instant::now();
        if d.waiting.load(Ordering::Acquire) == 0 {
            let idle = d.shared.is_idle();
            if let Some(slot) = d.shared.free_slot() {
                // A call alone, or a small one, takes its first step here: a
                // quick handler (most are, until they await) is answered
                // without a task, and without waking another thread, which
                // cost a small call more than running it (BENCHMARKS.md,
                // session 16). A larger one among others goes to a task at
                // once, so that decoding and encoding run side by side.
                let small = publish.payload.len() <= INLINE_AMONG_OTHERS_BYTES;
                let inline = (idle || small) && d.inline.is_on();
                // The call starts now, so it is acknowledged now, unless it
                // was as it was read (`acks_on_receipt`; then these acks do
                // nothing): from here, without waking the connection task
                // from another thread. A call that takes its first step here
                // is acknowledged right after that step, its response ahead.
                let ack = publish.ack_handle();
                let acked = inline || d.link.try_ack(ack);
                // Boxed: tokio copies a task's future in and out of its cell, and
                // this one is a few KiB.
                let mut call = Box::pin(
                    d.tasks
                        .track_future(d.clone().serve(publish, arrived, Some(slot), acked)),
                );
                if inline {
                    // No waker is needed: if the call waits, its task polls it
                    // again as soon as it is spawned, and registers its own.
                    let mut cx = Context::from_waker(Waker::noop());
                    let done = call.as_mut().poll(&mut cx).is_ready();
                    d.inline.took(arrived.elapsed());
                    d.ack_soon(ack);
                    if done {
                        return;
                    }
                }
                tokio::spawn(call);
                return;
            }
        }
        d.waiting.fetch_add(1, Ordering::AcqRel);
        if self.line.send((arrived, publish)).is_err() {
            d.waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// The most packets rumqttc takes from one read of the socket
/// (`max_readb_count`, fixed at 10 in rumqttc 0.25).
const READ_BATCH: usize = 10;

impl Inbox for Intake {
    fn deliver(&self, publish: Incoming) {
        self.offer(publish);
    }

    /// While nothing waits in line and a slot is free for every publish a
    /// read can bring: each call of the read then starts as it is taken,
    /// which is when it would be acknowledged anyway, and the read's PUBACKs
    /// leave in the one write that ends it instead of a write each (each of
    /// which woke the broker). Calls that would wait are acknowledged only
    /// when they start: the broker's in-flight window then holds the rest
    /// back.
    fn acks_on_receipt(&self) -> bool {
        let d = &self.dispatcher;
        d.waiting.load(Ordering::Acquire) == 0 && d.shared.would_start(READ_BATCH)
    }
}

/// The `code` of the `tool_error` that answers a call whose response would
/// be too large to send.
const RESULT_TOO_LARGE: &str = "result_too_large";

/// The message carrying a response to its reply address.
fn reply_message(reply: Reply, payload: Bytes) -> Message {
    Message {
        topic: reply.topic,
        payload,
        qos: QoS::AtLeastOnce,
        retain: false,
        // No Content Type: v0.1 asks for none on responses, and each
        // property is bytes for the broker and an allocation here.
        properties: Some(PublishProperties {
            correlation_data: reply.correlation,
            ..Default::default()
        }),
    }
}

/// Resolves once the server cancels the calls still running at the end of
/// a drain.
async fn shutting_down(phase: &watch::Sender<Phase>) {
    let _ = phase.subscribe().wait_for(|p| *p == Phase::Cancelled).await;
}

/// Encodes a response, its buffer sized for `size_hint` bytes of result.
/// Cannot fail: every value in it is already JSON.
fn encode(response: &CallResponse, size_hint: usize) -> Bytes {
    Bytes::from(response.encode(256 + size_hint))
}

fn elapsed_ms(started: Instant) -> u64 {
    started.elapsed().as_millis() as u64
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a non-string panic payload".to_owned()
    }
}

/// The path every incoming call takes before its handler runs, without the
/// connection: the topic and payload decoded, the reply address resolved,
/// the arguments checked against the tool's schema. For the fuzz target
/// (`fuzz/`); not a stable API.
#[doc(hidden)]
pub struct CallPath {
    tool: HostedTool,
    topics: Topics,
    max_payload_bytes: usize,
}

impl CallPath {
    /// Prepares the path for one tool, in the namespace `fuzz`.
    pub fn new(def: ToolDef, max_payload_bytes: usize) -> Result<Self, Error> {
        Ok(CallPath {
            tool: HostedTool::with_timeout(def, Duration::from_secs(1))?,
            topics: Topics::new("fuzz".into()),
            max_payload_bytes,
        })
    }

    /// The tool's handler.
    pub fn handler(&self) -> &crate::tool::Handler {
        self.tool.def.handler()
    }

    /// The topic calls to the tool arrive on, as `caller` when given.
    pub fn call_topic(&self, caller: Option<&str>) -> String {
        match caller {
            Some(c) => self.topics.call_as(&self.tool.def.name, c),
            None => self.topics.call(&self.tool.def.name),
        }
    }

    /// Decodes and checks one call as the dispatcher would: the request
    /// ready for the handler and its reply topic, or the error its caller
    /// would get.
    pub fn decode(
        &self,
        topic: &str,
        payload: &[u8],
        response_topic: Option<&str>,
        correlation: Option<&[u8]>,
    ) -> Result<(CallRequest, String), ErrorBody> {
        let correlation = correlation.map(Bytes::copy_from_slice);
        let verified = self.topics.parse_call(topic).and_then(|(_, caller)| caller);
        let envelope = Envelope {
            response_topic,
            correlation: correlation.as_ref(),
            verified_caller: verified,
        };
        let Inbound { mut request, reply } = decode_call(&self.topics, self.max_payload_bytes, payload, envelope)
            .map_err(|rejection| rejection.error)?;
        self.tool
            .check(&mut request.arguments)
            .map_err(|message| ErrorBody::new(ErrorType::InvalidArguments, message))?;
        Ok((request, reply.topic))
    }

    /// Checks arguments against the tool's input schema as the dispatcher
    /// does (after dropping `null`s of optional fields): what validation
    /// costs, measured on its own.
    pub fn check(&self, arguments: &mut Value) -> Result<(), String> {
        self.tool.check(arguments)
    }

    /// Encodes a response as the dispatcher does, its buffer sized for
    /// `size_hint` bytes of result.
    pub fn encode_response(&self, response: &CallResponse, size_hint: usize) -> Bytes {
        encode(response, size_hint)
    }
}

#[cfg(test)]
mod tests {
    use super::{InlineBudget, INLINE_BUDGET, SLOW_STEPS_LIMIT};
    use std::time::Duration;

    #[test]
    fn slow_first_steps_now_and_then_are_forgiven_but_not_always() {
        let fast = Duration::from_micros(10);
        let slow = INLINE_BUDGET + Duration::from_micros(1);
        let budget = InlineBudget::new();
        // A slow step now and then, among fast ones: still on.
        for _ in 0..100 {
            budget.took(slow);
            budget.took(fast);
            budget.took(fast);
        }
        assert!(budget.is_on());
        // Slow ones in a row: off at the limit, and for good.
        for i in 1..=SLOW_STEPS_LIMIT {
            assert!(budget.is_on(), "still on before slow step {i}");
            budget.took(slow);
        }
        assert!(!budget.is_on());
        for _ in 0..100 {
            budget.took(fast);
        }
        assert!(!budget.is_on());
    }
}
