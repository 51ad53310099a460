//! `mcpmqtt-stdio-demo`: a small MCP server on stdio, to try
//! `mcpmqtt expose` with (the integration tests expose it):
//!
//! - `echo {text}`: returns the text (titled `Echo`, read-only, closed world);
//! - `fail {message}`: fails with the message (an `isError` result);
//! - `count {n, delay_ms?}`: reports progress `i/n` with the message
//!   `step i of n`, then returns `{"count": n}` as structured content;
//! - `tally {n, delay_ms?}`: counts like `count`, as a task (the
//!   `io.modelcontextprotocol/tasks` extension) for a client that declares
//!   it, its status message `tally i of n`; returns `{"tally": n}`;
//! - `toggle`: removes the tool `extra`, or brings it back, and says so
//!   with `notifications/tools/list_changed`;
//! - `extra`: returns `"extra"`, while it is there.
//!
//! It speaks both eras of MCP, unless told to speak one (to try a host
//! against servers that do not):
//!
//! - `--protocol 2026-07-28`: `server/discover` only; `initialize` fails;
//! - `--protocol handshake`: `initialize` only, up to 2025-11-25;
//!   `server/discover` is an unknown method, as to servers older than it.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock, CreateTaskResult,
    DiscoverRequestMethod, DiscoverResult, GetTaskParams, GetTaskResult, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig,
    SubscriptionFilter, Tool, ToolAnnotations,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::task_manager::{TaskExit, TaskManager, TaskOptions};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Which eras of MCP the demo speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Speaks {
    Both,
    Discover,
    Handshake,
}

struct Demo {
    speaks: Speaks,
    /// Whether the tool `extra` is there.
    extra: AtomicBool,
    /// Counts the changes of the tool list, for `subscriptions/listen`.
    changes: watch::Sender<u64>,
    tasks: TaskManager,
}

fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("the schemas below are objects"),
    }
}

/// The input of `count` and `tally`.
fn counting_schema() -> Arc<JsonObject> {
    object(json!({
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0, "maximum": 1000, "description": "How far to count."},
            "delay_ms": {"type": "integer", "minimum": 0, "description": "Pause between steps (default 10)."}
        },
        "required": ["n"]
    }))
}

fn tools(extra: bool) -> Vec<Tool> {
    let mut tools = vec![
        Tool::new(
            "echo",
            "Returns its text.",
            object(json!({
                "type": "object",
                "properties": {"text": {"type": "string", "description": "What to send back."}},
                "required": ["text"]
            })),
        )
        .with_title("Echo")
        .with_annotations(ToolAnnotations::new().read_only(true).open_world(false)),
        Tool::new(
            "fail",
            "Fails with the given message.",
            object(json!({
                "type": "object",
                "properties": {"message": {"type": "string", "description": "The error message."}},
                "required": ["message"]
            })),
        ),
        Tool::new(
            "count",
            "Counts to n, reporting progress at each step.",
            counting_schema(),
        )
        .with_raw_output_schema(object(json!({
            "type": "object",
            "properties": {"count": {"type": "integer"}},
            "required": ["count"]
        }))),
        Tool::new(
            "tally",
            "Counts to n, as a task for a client that takes tasks.",
            counting_schema(),
        ),
        Tool::new(
            "toggle",
            "Removes the tool `extra`, or brings it back.",
            object(json!({"type": "object"})),
        ),
    ];
    if extra {
        tools.push(Tool::new(
            "extra",
            "Returns \"extra\".",
            object(json!({"type": "object"})),
        ));
    }
    tools
}

/// Counts to `n`, `delay` apart, telling `step` of each step, unless
/// `stop` comes first. Says so on stderr if it does not run to its end,
/// so that tests can see it.
async fn counting<F: std::future::Future<Output = ()>>(
    what: &str,
    n: u64,
    delay: Duration,
    stop: impl std::future::Future<Output = ()>,
    mut step: impl FnMut(u64) -> F,
) -> Result<(), ()> {
    tokio::pin!(stop);
    for i in 1..=n {
        tokio::select! {
            _ = &mut stop => {
                eprintln!("{what}: stopped early");
                return Err(());
            }
            _ = tokio::time::sleep(delay) => {}
        }
        step(i).await;
    }
    Ok(())
}

fn tallied(n: u64) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(format!("tallied to {n}"))]);
    result.structured_content = Some(json!({"tally": n}));
    result
}

fn argument<'a>(request: &'a CallToolRequestParams, name: &str) -> Option<&'a Value> {
    request.arguments.as_ref().and_then(|a| a.get(name))
}

impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_tasks()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("mcpmqtt-stdio-demo", env!("CARGO_PKG_VERSION")))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        match self.speaks {
            Speaks::Both => Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2026_07_28)),
            Speaks::Discover => Cow::Owned(vec![ProtocolVersion::V_2026_07_28]),
            Speaks::Handshake => Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25)),
        }
    }

    async fn discover(&self, _context: RequestContext<RoleServer>) -> Result<DiscoverResult, ErrorData> {
        if self.speaks == Speaks::Handshake {
            return Err(ErrorData::method_not_found::<DiscoverRequestMethod>());
        }
        Ok(DiscoverResult::from_server_info(
            self.supported_protocol_versions().into_owned(),
            self.get_info(),
        ))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools(
            self.extra.load(Ordering::SeqCst),
        )))
    }

    fn accepted_subscription_filter(&self, _requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), ErrorData> {
        let mut changes = self.changes.subscribe();
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    if changed.is_err() || context.sink().notify_tool_list_changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, ErrorData> {
        self.tasks.get_task(&request.task_id).map(GetTaskResult::new)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), ErrorData> {
        self.tasks.cancel_task(&request.task_id)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let invalid = |what: &str| ErrorData::invalid_params(Cow::Owned(what.to_owned()), None);
        let result = match request.name.as_ref() {
            "echo" => {
                let text = argument(&request, "text")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("`text` must be a string"))?;
                CallToolResult::success(vec![ContentBlock::text(text)])
            }
            "fail" => {
                let message = argument(&request, "message")
                    .and_then(Value::as_str)
                    .unwrap_or("failed");
                CallToolResult::error(vec![ContentBlock::text(message)])
            }
            "count" => {
                let n = argument(&request, "n")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid("`n` must be a whole number"))?;
                let delay = argument(&request, "delay_ms").and_then(Value::as_u64).unwrap_or(10);
                let token = context.meta.get_progress_token();
                let peer = &context.peer;
                let counted = counting("count", n, Duration::from_millis(delay), context.ct.cancelled(), |i| {
                    let progress = token.clone().map(|token| {
                        ProgressNotificationParam::new(token, i as f64)
                            .with_total(n as f64)
                            .with_message(format!("step {i} of {n}"))
                    });
                    async move {
                        if let Some(progress) = progress {
                            let _ = peer.notify_progress(progress).await;
                        }
                    }
                })
                .await;
                if counted.is_err() {
                    return Err(ErrorData::internal_error("cancelled by the client", None));
                }
                let mut result = CallToolResult::success(vec![ContentBlock::text(format!("counted to {n}"))]);
                result.structured_content = Some(json!({"count": n}));
                result
            }
            "tally" => {
                let n = argument(&request, "n")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| invalid("`n` must be a whole number"))?;
                let delay = Duration::from_millis(argument(&request, "delay_ms").and_then(Value::as_u64).unwrap_or(10));
                if context.client_capabilities().is_some_and(|c| c.supports_tasks()) {
                    let options = TaskOptions::new().with_poll_interval_ms(20);
                    let task = self.tasks.spawn(options, move |task| {
                        Box::pin(async move {
                            let status = task.clone();
                            counting("tally", n, delay, task.cancelled(), |i| {
                                status.set_status_message(format!("tally {i} of {n}"));
                                std::future::ready(())
                            })
                            .await
                            .map_err(|()| TaskExit::Cancelled)?;
                            Ok(tallied(n))
                        })
                    });
                    return Ok(CallToolResponse::Task(CreateTaskResult::new(task)));
                }
                if counting("tally", n, delay, context.ct.cancelled(), |_| std::future::ready(()))
                    .await
                    .is_err()
                {
                    return Err(ErrorData::internal_error("cancelled by the client", None));
                }
                tallied(n)
            }
            "toggle" => {
                let now = !self.extra.fetch_xor(true, Ordering::SeqCst);
                self.changes.send_modify(|n| *n += 1);
                // Before 2026-07-28 the notification needs no subscription.
                if context.protocol_version().is_some_and(|v| v.has_initialize()) {
                    let _ = context.peer.notify_tool_list_changed().await;
                }
                CallToolResult::success(vec![ContentBlock::text(if now {
                    "extra is back"
                } else {
                    "extra is gone"
                })])
            }
            "extra" if self.extra.load(Ordering::SeqCst) => CallToolResult::success(vec![ContentBlock::text("extra")]),
            other => return Err(ErrorData::invalid_params(format!("unknown tool `{other}`"), None)),
        };
        Ok(result.into())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let speaks = match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        [] => Speaks::Both,
        ["--protocol", "2026-07-28"] => Speaks::Discover,
        ["--protocol", "handshake"] => Speaks::Handshake,
        _ => return Err("usage: mcpmqtt-stdio-demo [--protocol 2026-07-28|handshake]".into()),
    };
    let demo = Demo {
        speaks,
        extra: AtomicBool::new(true),
        changes: watch::channel(0).0,
        tasks: TaskManager::new(),
    };
    let service = demo.serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}
