//! The dispatcher: turns each incoming call into exactly one response.
//!
//! Whatever arrives (not JSON, no `call_id`, wrong arguments, a tool that
//! panics or hangs), the caller gets a typed error when it can be reached,
//! and the server keeps serving.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};
use tracing::Instrument;

use crate::connection::{Link, Message};
use crate::context::{CallContext, Caller, StreamSink};
use crate::envelope::{CallRequest, CallResponse, ErrorBody, ErrorType};
use crate::error::{Error, ToolError};
use crate::server::ServerConfig;
use crate::tool::ToolDef;
use crate::topics::Topics;

/// A tool as the dispatcher holds it: its definition, its compiled schema
/// validator (compiled once, not per call) and its deadline.
pub(crate) struct HostedTool {
    def: ToolDef,
    validator: jsonschema::Validator,
    timeout: Duration,
}

impl HostedTool {
    pub(crate) fn new(def: ToolDef, config: &ServerConfig) -> Result<Self, Error> {
        let validator = Self::compile_schema(&def)?;
        let timeout = def.timeout.unwrap_or(config.default_timeout);
        Ok(HostedTool {
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
    fn check(&self, arguments: &mut Value) -> Result<(), String> {
        crate::schema::drop_optional_nulls(&self.def.input_schema, arguments);
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

/// Where and how to answer one call.
#[derive(Clone)]
struct Reply {
    topic: String,
    correlation: Option<Bytes>,
}

/// A call that could not even be read.
struct Rejection {
    call_id: String,
    error: ErrorBody,
}

pub(crate) struct Dispatcher {
    link: Link,
    topics: Topics,
    tools: HashMap<String, Arc<HostedTool>>,
    config: ServerConfig,
    permits: Arc<Semaphore>,
}

impl Dispatcher {
    pub(crate) fn new(
        link: Link,
        topics: Topics,
        tools: HashMap<String, Arc<HostedTool>>,
        config: ServerConfig,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(config.max_concurrent_calls));
        Dispatcher {
            link,
            topics,
            tools,
            config,
            permits,
        }
    }

    /// Serves until the connection's incoming channel closes.
    pub(crate) async fn run(self, mut incoming: mpsc::UnboundedReceiver<Publish>) {
        let this = Arc::new(self);
        while let Some(publish) = incoming.recv().await {
            this.clone().dispatch(publish).await;
        }
    }

    async fn dispatch(self: Arc<Self>, publish: Publish) {
        let started = Instant::now();
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        let props = publish.properties.clone().unwrap_or_default();
        let (tool_name, verified) = match self.topics.parse_call(&topic) {
            Some((tool, caller)) => (tool.to_owned(), caller.map(str::to_owned)),
            None => (String::new(), None),
        };
        let (mut request, reply) = match self.read_call(&publish.payload, &props, verified.as_deref()) {
            Ok(ok) => ok,
            Err((rejection, reply)) => {
                self.link.ack(&publish).await;
                match reply {
                    Some(reply) => {
                        tracing::warn!(%topic, call_id = %rejection.call_id, error = %rejection.error.message, "rejected a call");
                        let response = CallResponse::error(rejection.call_id, rejection.error, elapsed_ms(started));
                        self.respond(&reply, &response).await;
                    }
                    None => {
                        tracing::warn!(%topic, error = %rejection.error.message, "dropped a call with no valid reply address")
                    }
                }
                return;
            }
        };
        let caller = match &verified {
            Some(id) => Caller::new(id.clone(), true),
            None => Caller::new(request.client.clone(), false),
        };
        if !caller.is_verified() && self.config.require_verified_caller {
            self.link.ack(&publish).await;
            let message = format!(
                "this server serves only calls whose caller the broker attests: publish to `{}`",
                self.topics.call_as(&tool_name, "{caller}")
            );
            let error = ErrorBody::new(ErrorType::Unauthorized, message);
            self.respond(
                &reply,
                &CallResponse::error(request.call_id, error, elapsed_ms(started)),
            )
            .await;
            return;
        }
        let Some(tool) = self.tools.get(&tool_name).cloned() else {
            self.link.ack(&publish).await;
            let error = ErrorBody::new(
                ErrorType::Unavailable,
                format!("no tool is hosted at `{topic}` by this server"),
            );
            self.respond(
                &reply,
                &CallResponse::error(request.call_id, error, elapsed_ms(started)),
            )
            .await;
            return;
        };
        if let Err(message) = tool.check(&mut request.arguments) {
            self.link.ack(&publish).await;
            let error = ErrorBody::new(ErrorType::InvalidArguments, message);
            self.respond(
                &reply,
                &CallResponse::error(request.call_id, error, elapsed_ms(started)),
            )
            .await;
            return;
        }
        // Waiting here holds the next call back: with manual acks, the broker
        // stops sending once its in-flight window is full.
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return;
        };
        self.link.ack(&publish).await;
        let span = tracing::info_span!("call", call_id = %request.call_id, tool = %tool.def.name, caller = %caller.id(), verified = caller.is_verified());
        tokio::spawn(
            async move {
                let response = self.run_call(&tool, request, caller, started).await;
                self.respond(&reply, &response).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Decodes a call and finds where to answer it. A call that fails here is
    /// answered only if its reply address is known and allowed.
    #[allow(clippy::result_large_err)]
    fn read_call(
        &self,
        payload: &[u8],
        props: &PublishProperties,
        verified: Option<&str>,
    ) -> Result<(CallRequest, Reply), (Rejection, Option<Reply>)> {
        let correlation = props.correlation_data.clone();
        let hint = correlation
            .as_ref()
            .and_then(|c| std::str::from_utf8(c).ok())
            .filter(|s| s.len() <= 256)
            .unwrap_or_default()
            .to_owned();
        // A caller the broker attests is answered on its own response topic,
        // whatever reply address the call names.
        let own_reply = verified.map(|caller| Reply {
            topic: self.topics.responses(caller),
            correlation: correlation.clone(),
        });
        let mqtt_reply = own_reply.clone().or_else(|| {
            props
                .response_topic
                .as_deref()
                .and_then(|t| self.allowed_reply(t, &correlation))
        });
        let reject = |message: String, reply: Option<Reply>| {
            Err((
                Rejection {
                    call_id: hint.clone(),
                    error: ErrorBody::new(ErrorType::InvalidArguments, message),
                },
                reply,
            ))
        };
        if payload.len() > self.config.max_payload_bytes {
            return reject(
                format!(
                    "the call is {} bytes, over this server's limit of {} bytes",
                    payload.len(),
                    self.config.max_payload_bytes
                ),
                mqtt_reply,
            );
        }
        let value: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => return reject(format!("the call is not valid JSON: {e}"), mqtt_reply),
        };
        let Value::Object(mut fields) = value else {
            return reject("the call must be a JSON object".into(), mqtt_reply);
        };
        // v0.1 reply rules: the MQTT 5 Response Topic, else the payload's
        // `response_topic`, else the caller's own response topic. Resolved
        // before the call id is read, so a call without one is still answered.
        let wanted = props
            .response_topic
            .clone()
            .or_else(|| fields.get("response_topic").and_then(Value::as_str).map(str::to_owned))
            .or_else(|| {
                let client = fields.get("client").and_then(Value::as_str)?;
                crate::names::name_problem(client)
                    .is_none()
                    .then(|| self.topics.responses(client))
            });
        let reply = if own_reply.is_some() || props.response_topic.is_some() {
            mqtt_reply // already resolved (and any refusal logged) above
        } else {
            wanted.as_deref().and_then(|w| self.allowed_reply(w, &correlation))
        };
        let call_id = match fields.get("call_id") {
            Some(Value::String(id)) if !id.is_empty() => id.clone(),
            Some(Value::String(_)) => return reject("`call_id` is empty".into(), reply),
            Some(_) => return reject("`call_id` must be a string".into(), reply),
            None => return reject("the call has no `call_id`".into(), reply),
        };
        // The call id becomes a topic level of the stream topic.
        if let Some(reason) = crate::names::name_problem(&call_id) {
            return reject(format!("`call_id` cannot be used: {reason}"), reply);
        }
        let arguments = fields.remove("arguments");
        let mut request: CallRequest = match serde_json::from_value(Value::Object(fields)) {
            Ok(r) => r,
            Err(e) => {
                let error = ErrorBody::new(ErrorType::InvalidArguments, format!("malformed call: {e}"));
                return Err((Rejection { call_id, error }, reply));
            }
        };
        if let Some(arguments) = arguments {
            request.arguments = arguments;
        }
        let Some(reply) = reply else {
            let error = match wanted {
                None => ErrorBody::new(ErrorType::InvalidArguments, "the call names no reply address"),
                Some(w) => ErrorBody::new(ErrorType::Unauthorized, format!("reply address `{w}` refused")),
            };
            return Err((Rejection { call_id, error }, None));
        };
        if !request.arguments.is_object() {
            let error = ErrorBody::new(ErrorType::InvalidArguments, "`arguments` must be a JSON object");
            return Err((Rejection { call_id, error }, Some(reply)));
        }
        Ok((request, reply))
    }

    /// Replies go only to `{ns}/mcp/clients/{client}/responses`, so a caller
    /// cannot make this server publish where the caller itself may not.
    fn allowed_reply(&self, topic: &str, correlation: &Option<Bytes>) -> Option<Reply> {
        if self.topics.client_of_responses(topic).is_some() {
            Some(Reply {
                topic: topic.to_owned(),
                correlation: correlation.clone(),
            })
        } else {
            tracing::warn!(reply_topic = %topic, "refused a reply address outside {}/mcp/clients/+/responses", self.topics.namespace());
            None
        }
    }

    async fn run_call(
        &self,
        tool: &HostedTool,
        request: CallRequest,
        caller: Caller,
        started: Instant,
    ) -> CallResponse {
        let CallRequest {
            call_id,
            arguments,
            private_stream,
            ..
        } = request;
        let stream = tool.def.streaming.then(|| {
            let topic = if private_stream && crate::names::name_problem(caller.id()).is_none() {
                self.topics.private_stream(caller.id(), &call_id)
            } else {
                self.topics.stream(&tool.def.name, &call_id)
            };
            StreamSink::mqtt(self.link.clone(), topic)
        });
        let ctx = CallContext::new(call_id.clone(), tool.def.name.clone(), caller, stream);
        let handler = tool.def.handler.clone();
        let call_ctx = ctx.clone();
        let run = async move {
            // A handler may panic while building its future, or while running it.
            let future = std::panic::catch_unwind(AssertUnwindSafe(|| handler(call_ctx, arguments)))?;
            AssertUnwindSafe(future).catch_unwind().await
        };
        let outcome = tokio::time::timeout(tool.timeout, run).await;
        let result: Result<Value, ToolError> = match outcome {
            Err(_) => Err(ToolError::of_type(
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
        if let Err(e) = ctx.finish_stream().await {
            tracing::warn!(error = %e, "could not end the stream");
        }
        let elapsed = elapsed_ms(started);
        match result {
            Ok(value) => CallResponse::ok(call_id, value, elapsed),
            Err(e) => {
                tracing::info!(error_type = %e.error_type(), message = e.message(), "call failed");
                CallResponse::error(call_id, e.into_body(), elapsed)
            }
        }
    }

    async fn respond(&self, reply: &Reply, response: &CallResponse) {
        let payload = match serde_json::to_vec(response) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "could not encode a response");
                return;
            }
        };
        let sent = self
            .link
            .publish(Message {
                topic: reply.topic.clone(),
                payload: Bytes::from(payload),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: Some(PublishProperties {
                    correlation_data: reply.correlation.clone(),
                    content_type: Some("application/json".into()),
                    ..Default::default()
                }),
            })
            .await;
        if let Err(e) = sent {
            tracing::error!(error = %e, call_id = %response.call_id, "could not send a response");
        }
    }
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
