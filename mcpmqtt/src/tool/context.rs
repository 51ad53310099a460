//! What a handler knows about the call it serves, and how it streams. It
//! hands the handler its call, never the connection: partials leave through
//! the sink the dispatcher set up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::QoS;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::connection::{Link, Message};
use crate::error::Error;
use crate::protocol::envelope::{Partial, Progress, StreamMessage, StreamType};
use crate::signal::Signal;
use crate::tool::state::{State, States};

/// Who made a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    id: Arc<str>,
    verified: bool,
}

impl Caller {
    pub(crate) fn new(id: impl Into<Arc<str>>, verified: bool) -> Self {
        Caller {
            id: id.into(),
            verified,
        }
    }

    /// The caller's identity.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the broker attests the identity. In plain v0.1 calls it is only
    /// what the caller claims, so a handler must not trust it for decisions.
    pub fn is_verified(&self) -> bool {
        self.verified
    }
}

/// The context of one call: its id, its caller, and for `streaming` tools a
/// way to emit partial output. Take it as `ctx: &CallContext` in a `#[tool]`
/// function; it is not part of the input schema.
#[derive(Clone)]
pub struct CallContext {
    inner: Arc<Inner>,
    /// The server's registered state, for [`CallContext::state`].
    states: States,
}

struct Inner {
    call_id: String,
    tool: Arc<str>,
    caller: Caller,
    stream: Option<StreamSink>,
    /// The caller's cancel, raised through the server's table of running
    /// calls ([`CallerCancel`]).
    by_caller: Signal,
    /// Raised by [`CallContext::cancel`] (the tool's timeout, or the handler
    /// itself): heard by the handler, not taken for the caller's cancel.
    stopped: Signal,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("call_id", &self.inner.call_id)
            .field("tool", &self.inner.tool)
            .field("caller", &self.inner.caller)
            .finish_non_exhaustive()
    }
}

/// A running call, as its caller's cancel reaches it.
pub(crate) struct CallerCancel(Arc<Inner>);

impl CallerCancel {
    /// Who made the call: only they may cancel it.
    pub(crate) fn caller(&self) -> &str {
        self.0.caller.id()
    }

    /// Cancels the call for its caller.
    pub(crate) fn cancel(&self) {
        self.0.by_caller.raise();
    }
}

impl CallContext {
    /// A call's context; `states` the server's registered state. Its
    /// caller's cancel comes through [`CallContext::caller_cancel`].
    pub(crate) fn new(
        call_id: String,
        tool: Arc<str>,
        caller: Caller,
        stream: Option<StreamSink>,
        states: States,
    ) -> Self {
        CallContext {
            inner: Arc::new(Inner {
                call_id,
                tool,
                caller,
                stream,
                by_caller: Signal::default(),
                stopped: Signal::default(),
            }),
            states,
        }
    }

    /// What the server's table of running calls keeps, to cancel the call
    /// when its caller asks: the context itself, so that a call costs no
    /// token of its own.
    pub(crate) fn caller_cancel(&self) -> CallerCancel {
        CallerCancel(self.inner.clone())
    }

    /// Whether the caller cancelled the call (not the tool's timeout).
    pub(crate) fn cancelled_by_caller(&self) -> bool {
        self.inner.by_caller.is_raised()
    }

    /// Resolves once the caller cancels the call.
    pub(crate) async fn caller_cancelled(&self) {
        self.inner.by_caller.raised().await
    }

    /// Resolves once the call is cancelled: by its caller, or by the
    /// server's timeout for the tool. A handler that selects on it can stop
    /// cleanly; one that does not is dropped after the server's cancel grace
    /// ([`ServerBuilder::cancel_grace`](crate::ServerBuilder::cancel_grace)).
    ///
    /// ```
    /// # async fn crawl(ctx: &mcpmqtt::CallContext) -> Result<u32, mcpmqtt::ToolError> {
    /// let mut pages = 0;
    /// loop {
    ///     tokio::select! {
    ///         _ = ctx.cancelled() => return Err(mcpmqtt::ToolError::new("cancelled")),
    ///         _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => pages += 1,
    ///     }
    ///     if pages == 10 {
    ///         return Ok(pages);
    ///     }
    /// }
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        let inner = &*self.inner;
        tokio::select! {
            () = inner.by_caller.raised() => {}
            () = inner.stopped.raised() => {}
        }
    }

    /// Whether the call has been cancelled, for a handler that checks
    /// between steps.
    pub fn is_cancelled(&self) -> bool {
        self.inner.stopped.is_raised() || self.inner.by_caller.is_raised()
    }

    /// Cancels the call for its handler: what the dispatcher does on a
    /// timeout, and a unit test to see how a handler takes it. The caller's
    /// own cancel reaches the handler without it.
    pub fn cancel(&self) {
        self.inner.stopped.raise();
    }

    /// The context with the server's registered state.
    #[cfg(test)]
    pub(crate) fn with_states(mut self, states: States) -> Self {
        self.states = states;
        self
    }

    /// The context with `state` registered as its `T`, as a server's
    /// [`ServerBuilder::state`](crate::ServerBuilder::state) would: for
    /// running a tool's handler directly in a test.
    ///
    /// ```
    /// use mcpmqtt::{CallContext, State};
    ///
    /// let (ctx, _partials) = CallContext::for_test("count", "scout");
    /// let ctx = ctx.with_state(State::new(41_u64));
    /// assert_eq!(ctx.state::<u64>().map(|n| *n + 1), Some(42));
    /// ```
    pub fn with_state<T: Send + Sync + 'static>(mut self, state: State<T>) -> Self {
        self.states.insert(state.into_arc());
        self
    }

    /// The `T` the server registered with
    /// [`ServerBuilder::state`](crate::ServerBuilder::state), if any. A
    /// `#[tool]` function takes it as a `State<T>` argument instead; a
    /// hand-written handler declares it with
    /// [`ToolDefBuilder::needs_state`](crate::ToolDefBuilder::needs_state),
    /// so that `build()` guarantees it is there.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<State<T>> {
        self.states.get::<T>()
    }

    /// A context for calling a tool function directly, with no broker: in unit
    /// tests. Partials it emits arrive on the returned receiver.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use mcpmqtt::{CallContext, Partial};
    ///
    /// let (ctx, mut partials) = CallContext::for_test("crawl_site", "scout");
    /// ctx.emit_text("page 1").await.unwrap();
    /// assert_eq!(partials.recv().await, Some(Partial::Text("page 1".into())));
    /// # }
    /// ```
    pub fn for_test(tool: &str, caller: &str) -> (CallContext, mpsc::UnboundedReceiver<Partial>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ctx = CallContext::new(
            format!("test-{}", uuid::Uuid::new_v4()),
            tool.into(),
            Caller::new(caller, true),
            Some(StreamSink::Test(tx)),
            States::default(),
        );
        (ctx, rx)
    }

    /// The call's unique id.
    pub fn call_id(&self) -> &str {
        &self.inner.call_id
    }

    /// The tool being called.
    pub fn tool(&self) -> &str {
        &self.inner.tool
    }

    /// Who is calling.
    pub fn caller(&self) -> &Caller {
        &self.inner.caller
    }

    /// Streams a piece of text to the caller.
    pub async fn emit_text(&self, text: impl Into<String>) -> Result<(), Error> {
        self.emit(Partial::Text(text.into())).await
    }

    /// Streams a JSON object to the caller; anything else is refused, as the
    /// protocol's `data` is an object.
    pub async fn emit_data(&self, data: impl Serialize) -> Result<(), Error> {
        let value = serde_json::to_value(data)?;
        if !value.is_object() {
            return Err(Error::PartialNotObject);
        }
        self.emit(Partial::Data(value)).await
    }

    /// Streams how far the call has got: `done` out of `total` (when
    /// known), with a message for a person. MCP hosts show it as a progress
    /// bar (`notifications/progress`); v0.1 callers get the message as text.
    ///
    /// ```no_run
    /// # async fn crawl(ctx: &mcpmqtt::CallContext, pages: &[String]) -> Result<(), mcpmqtt::Error> {
    /// for (i, page) in pages.iter().enumerate() {
    ///     ctx.progress((i + 1) as f64, Some(pages.len() as f64), format!("crawled {page}")).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn progress(&self, done: f64, total: Option<f64>, message: impl Into<String>) -> Result<(), Error> {
        self.emit(Partial::Progress(Progress::new(done, total, message))).await
    }

    /// Streams a partial.
    ///
    /// Fails with [`Error::TooLarge`] when the partial would make a packet
    /// over the maximum packet size (the server's, or the broker's if
    /// smaller): it is not sent, the call goes on, and the handler decides
    /// what to do (split it, or fail the call with that error).
    pub async fn emit(&self, partial: Partial) -> Result<(), Error> {
        match &self.inner.stream {
            None => Err(Error::NotStreaming(self.inner.tool.to_string())),
            Some(sink) => sink
                .send(&self.inner.call_id, StreamType::Partial, Some(partial))
                .await
                .map(drop),
        }
    }

    /// Ends the stream with `done`; the dispatcher calls this before it
    /// answers. Returns how many partials the stream sent (the `done`'s
    /// `seq`), for the response to tell the caller; `None` when the call
    /// has no stream on the wire.
    pub(crate) async fn finish_stream(&self) -> Result<Option<u64>, Error> {
        match &self.inner.stream {
            Some(sink @ StreamSink::Mqtt { .. }) => {
                sink.send(&self.inner.call_id, StreamType::Done, None).await.map(Some)
            }
            _ => Ok(None),
        }
    }
}

/// Where a call's partials go.
pub(crate) enum StreamSink {
    /// Published on the call's stream topic, numbered from 0.
    Mqtt { link: Link, topic: String, seq: AtomicU64 },
    /// Collected for a unit test.
    Test(mpsc::UnboundedSender<Partial>),
}

impl StreamSink {
    pub(crate) fn mqtt(link: Link, topic: String) -> Self {
        StreamSink::Mqtt {
            link,
            topic,
            seq: AtomicU64::new(0),
        }
    }

    /// Sends one stream message; returns the `seq` it took.
    async fn send(&self, call_id: &str, kind: StreamType, partial: Option<Partial>) -> Result<u64, Error> {
        match self {
            StreamSink::Test(tx) => {
                if let Some(p) = partial {
                    let _ = tx.send(p);
                }
                Ok(0)
            }
            StreamSink::Mqtt { link, topic, seq } => {
                let mut msg = StreamMessage::new(call_id, seq.load(Ordering::SeqCst), kind, partial);
                loop {
                    // QoS 1, so partials and the response (also QoS 1) keep
                    // their order through one broker; a cluster may not, and
                    // the client puts them back in `seq` order.
                    let message = Message {
                        topic: topic.clone(),
                        payload: Bytes::from(serde_json::to_vec(&msg)?),
                        qos: QoS::AtLeastOnce,
                        retain: false,
                        properties: None,
                    };
                    // A partial too large to send fails before it takes its
                    // number, so the stream the caller sees has no gap.
                    link.fits(&message, || "the partial".to_owned())?;
                    match seq.compare_exchange(msg.seq, msg.seq + 1, Ordering::SeqCst, Ordering::SeqCst) {
                        Ok(_) => return link.publish(message).await.map(|()| msg.seq),
                        // Another emit of the same call took this number.
                        Err(now) => msg.seq = now,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn context() -> CallContext {
        CallContext::for_test("crawl", "scout").0
    }

    /// A handler waiting on `ctx.cancelled()`, in a task of its own.
    fn waiting(ctx: &CallContext) -> tokio::task::JoinHandle<()> {
        let ctx = ctx.clone();
        tokio::spawn(async move { ctx.cancelled().await })
    }

    async fn heard(handler: tokio::task::JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(10), handler)
            .await
            .expect("the waiting handler heard the cancel")
            .unwrap();
    }

    /// The timeout's cancel wakes a handler already waiting, and is not
    /// taken for the caller's.
    #[tokio::test]
    async fn the_contexts_own_cancel_wakes_a_waiting_handler_and_not_the_caller() {
        let ctx = context();
        let handler = waiting(&ctx);
        tokio::task::yield_now().await;
        assert!(!ctx.is_cancelled());
        ctx.cancel();
        heard(handler).await;
        assert!(ctx.is_cancelled());
        assert!(!ctx.cancelled_by_caller(), "the caller did not cancel");
        // Cancelled already: a later wait returns at once.
        heard(waiting(&ctx)).await;
    }

    #[tokio::test]
    async fn the_callers_cancel_reaches_the_handler() {
        let ctx = context();
        let by_caller = ctx.caller_cancel();
        assert_eq!(by_caller.caller(), "scout");
        let handler = waiting(&ctx);
        by_caller.cancel();
        heard(handler).await;
        assert!(ctx.is_cancelled());
        assert!(ctx.cancelled_by_caller());
        tokio::time::timeout(Duration::from_secs(10), ctx.caller_cancelled())
            .await
            .expect("cancelled already: no wait");
    }
}
