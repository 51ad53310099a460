//! `bridge`: an MCP server on stdio whose tools are the MQTT-hosted tools
//! of one namespace.
//!
//! - It speaks MCP 2026-07-28 (`server/discover`, the version in each
//!   request's `_meta`) and the revisions that begin with `initialize`
//!   (2024-11-05 to 2025-11-25), whichever the host opens with.
//! - `tools/list` maps each online Tool Card (of an online server) to an MCP
//!   tool, in name order, a page at a time (`--page-size`, MCP cursors), so a
//!   host is never handed 10,000 tools in one message. On 2026-07-28 a page is
//!   fresh (`ttlMs`) for one watch interval, the time the bridge may take to
//!   notice a change, and private to this host (`cacheScope`): the bridge
//!   sees what its own identity may read.
//! - `tools/call` forwards the call over MQTT under the bridge's identity, so
//!   the broker's ACL decides; every call error becomes an `isError` result
//!   whose text is the error and whose `structuredContent` is
//!   `{"error": {"type", "message", "code"?}}`. Partials become
//!   `notifications/progress` when the host sent a progress token, and a
//!   host's `notifications/cancelled` cancels the MQTT call.
//! - A host that declares the tasks extension (`io.modelcontextprotocol/tasks`)
//!   gets a task for every call instead (see [`tasks`]).
//! - The Server Cards are polled, and a change of the tools they list, or of
//!   their cards (a new `tools_digest`), is announced with
//!   `notifications/tools/list_changed`: to a handshake host directly, to a
//!   2026-07-28 host on its `subscriptions/listen` stream.

mod tasks;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use mcpmqtt::{CallError, CallOptions, Client, Partial, ToolCard, ToolFilter};
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ContentBlock, GetTaskParams,
    GetTaskResult, Implementation, JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam,
    ProtocolVersion, ServerCapabilities, ServerConfig, SubscriptionFilter, Tool, ToolAnnotations, UpdateTaskParams,
};
use rmcp::service::{RequestContext, SubscriptionContext};
use rmcp::task_manager::TaskManager;
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::call::tool_timeout;
use crate::cli::BridgeArgs;
use crate::exit::{call_error_kind, Failure};

/// The MCP server that forwards to MQTT.
#[derive(Clone)]
pub struct Bridge {
    client: Client,
    page_size: usize,
    /// How often the cards are compared for changes.
    watch_interval: Duration,
    /// Counts the changes of the tools; a host's subscription waits on it.
    changes: watch::Receiver<u64>,
    /// The tasks of this process, whichever request created them.
    tasks: TaskManager,
}

/// What the host has been told of the tools: which are online, and the
/// version of their servers' cards. A change in it is a list change.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    tools: Vec<(String, String)>,
    /// Each online server's `tools_digest`, or, from a server that
    /// publishes none, its card's `last_seen`.
    servers: Vec<(String, String)>,
}

async fn fingerprint(client: &Client) -> Fingerprint {
    let tools = client.tool_names(&ToolFilter::new()).await;
    let servers = client
        .servers()
        .await
        .into_iter()
        .map(|card| (card.server, card.tools_digest.unwrap_or(card.last_seen)))
        .collect();
    Fingerprint { tools, servers }
}

/// Whether a request is of MCP 2026-07-28 or later (no `initialize`).
fn is_modern(context: &RequestContext<RoleServer>) -> bool {
    context.protocol_version().is_some_and(|v| !v.has_initialize())
}

impl Bridge {
    /// A bridge calling through `client`, listing `page_size` tools per
    /// `tools/list` page and looking for changes every `watch_interval`.
    /// The watcher it starts stops once every clone of the bridge is gone.
    pub async fn start(client: Client, page_size: usize, watch_interval: Duration) -> Self {
        let (tx, changes) = watch::channel(0);
        let bridge = Bridge {
            client,
            page_size: page_size.max(1),
            watch_interval,
            changes,
            tasks: TaskManager::new(),
        };
        // What a host can have seen is compared with from before any
        // session starts: a change while it starts would otherwise never be
        // announced.
        let known = fingerprint(&bridge.client).await;
        tokio::spawn(watch_tools(bridge.client.clone(), watch_interval, tx, known));
        bridge
    }

    /// One page of the online tools, as MCP tools, after the tool named
    /// `cursor`.
    async fn mcp_tools(&self, cursor: Option<&str>, modern: bool) -> Result<ListToolsResult, mcpmqtt::Error> {
        let page = self
            .client
            .tools_page(&ToolFilter::new(), cursor, self.page_size)
            .await?;
        let mut result = ListToolsResult::with_all_items(page.tools.iter().map(|c| mcp_tool(c, modern)).collect());
        result.next_cursor = page.next;
        if modern {
            result.ttl_ms = Some(u64::try_from(self.watch_interval.as_millis()).unwrap_or(u64::MAX));
            result.cache_scope = Some(CacheScope::Private);
        }
        Ok(result)
    }

    async fn forward(
        &self,
        name: &str,
        arguments: Value,
        options: CallOptions,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, CallError> {
        let Some(token) = context.meta.get_progress_token() else {
            return self.client.call_with(name, arguments, options).await;
        };
        let mut pending = self.client.call_streaming(name, arguments, options);
        let mut steps = Steps::default();
        while let Some(partial) = pending.next_partial().await {
            let step = steps.next(partial);
            let mut notification =
                ProgressNotificationParam::new(token.clone(), step.progress).with_message(step.message);
            if let Some(total) = step.total {
                notification = notification.with_total(total);
            }
            if let Err(e) = context.peer.notify_progress(notification).await {
                tracing::debug!(error = %e, "could not send a progress notification");
            }
        }
        pending.result().await
    }
}

/// One partial as an MCP progress step.
#[derive(Debug, PartialEq)]
struct Step {
    progress: f64,
    total: Option<f64>,
    message: String,
}

/// Turns partials into MCP progress, which only grows: a tool's own figures
/// when it gives them, else a count of the partials.
#[derive(Debug, Default)]
struct Steps {
    progress: f64,
}

impl Steps {
    fn next(&mut self, partial: Partial) -> Step {
        let (progress, total, message) = match partial {
            // Figures that do not grow (after text partials were counted)
            // still move the count on by one.
            Partial::Progress(p) if p.progress > self.progress => (p.progress, p.total, p.message),
            Partial::Progress(p) => (self.progress + 1.0, None, p.to_string()),
            Partial::Text(t) => (self.progress + 1.0, None, t),
            Partial::Data(d) => (self.progress + 1.0, None, d.to_string()),
            other => (self.progress + 1.0, None, format!("{other:?}")),
        };
        self.progress = progress;
        Step {
            progress,
            total,
            message,
        }
    }
}

/// An MCP tool from a Tool Card. Before 2026-07-28 an output schema must
/// describe an object; other schemas are left out there.
pub fn mcp_tool(card: &ToolCard, modern: bool) -> Tool {
    let input = match &card.input_schema {
        Value::Object(map) => map.clone(),
        _ => object_schema(),
    };
    let description = (!card.description.is_empty()).then(|| Cow::Owned(card.description.clone()));
    let mut tool = Tool::new_with_raw(card.tool.clone(), description, Arc::new(input));
    if let Some(Value::Object(output)) = &card.output_schema {
        if modern || output.get("type").and_then(Value::as_str) == Some("object") {
            tool = tool.with_raw_output_schema(Arc::new(output.clone()));
        }
    }
    if let Some(title) = &card.title {
        tool = tool.with_title(title.clone());
    }
    if let Some(hints) = card.annotations.filter(|a| !a.is_empty()) {
        tool = tool.with_annotations(ToolAnnotations::from_raw(
            None,
            hints.read_only_hint,
            hints.destructive_hint,
            hints.idempotent_hint,
            hints.open_world_hint,
        ));
    }
    tool
}

fn object_schema() -> JsonObject {
    let mut map = JsonObject::new();
    map.insert("type".into(), json!("object"));
    map
}

/// A successful call's result: the JSON as text (a string as itself), and
/// as structured content when it is an object, or on 2026-07-28 (which
/// allows any JSON there) whatever it is.
pub fn success(value: Value, modern: bool) -> CallToolResult {
    let text = match &value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if modern || value.is_object() {
        result.structured_content = Some(value);
    }
    result
}

/// A failed call as an `isError` result.
pub fn failure(error: &CallError) -> CallToolResult {
    let mut body = json!({"type": call_error_kind(error), "message": error.to_string()});
    if let CallError::ToolError { code: Some(code), .. } = error {
        body["code"] = json!(code);
    }
    let mut result = CallToolResult::error(vec![ContentBlock::text(error.to_string())]);
    result.structured_content = Some(json!({ "error": body }));
    result
}

impl ServerHandler for Bridge {
    fn get_info(&self) -> ServerConfig {
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_tasks()
            .build();
        let namespace = self.client.topics().namespace().to_owned();
        // The version answered to an `initialize` naming one the bridge does
        // not know; hosts of 2026-07-28 learn the list from discover.
        ServerConfig::new(capabilities)
            .with_protocol_version(ProtocolVersion::LATEST_WITH_INITIALIZE)
            .with_server_info(Implementation::new("mcpmqtt-bridge", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "The tools of the MQTT namespace `{namespace}`, called as `{}`; the broker decides who may call what.",
                self.client.identity()
            ))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        // Named, not "whatever rmcp knows": a newer rmcp must not make the
        // bridge claim a revision nobody tested it with.
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2026_07_28))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let cursor = request.and_then(|r| r.cursor);
        if let Some(problem) = cursor.as_deref().and_then(mcpmqtt::name_problem) {
            return Err(McpError::invalid_params(
                format!("invalid cursor: {problem}; pass the `nextCursor` of the previous page"),
                None,
            ));
        }
        self.mcp_tools(cursor.as_deref(), is_modern(&context))
            .await
            .map_err(|e| McpError::internal_error(e.to_string(), None))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let online = mcpmqtt::name_problem(&name).is_none()
            && self
                .client
                .tool_card(&name)
                .await
                .ok()
                .flatten()
                .is_some_and(|c| c.status == mcpmqtt::Status::Online);
        if !online {
            return Err(McpError::invalid_params(
                format!(
                    "unknown tool `{name}`: no online tool of that name in namespace `{}`",
                    self.client.topics().namespace()
                ),
                None,
            ));
        }
        let arguments = Value::Object(request.arguments.unwrap_or_default());
        let modern = is_modern(&context);
        let timeout = tool_timeout(&self.client, &name).await;
        if context.client_capabilities().is_some_and(|c| c.supports_tasks()) {
            return Ok(CallToolResponse::Task(tasks::start(
                self, name, arguments, timeout, modern,
            )));
        }
        let options = CallOptions::new().timeout(timeout);
        let outcome = tokio::select! {
            outcome = self.forward(&name, arguments, options, &context) => outcome,
            // Dropping the call cancels it over MQTT.
            _ = context.ct.cancelled() => Err(CallError::Cancelled { message: "cancelled by the MCP host".into() }),
        };
        Ok(match outcome {
            Ok(value) => success(value, modern),
            Err(e) => failure(&e),
        }
        .into())
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        self.tasks.get_task(&request.task_id).map(GetTaskResult::new)
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // A bridged call never asks the host for input: every response is
        // to a request that was not made, and is ignored (as the extension
        // says), once the task is known.
        self.tasks.update_task(&request.task_id, request.input_responses)
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.tasks.cancel_task(&request.task_id)
    }

    fn accepted_subscription_filter(&self, _requested: &SubscriptionFilter) -> Option<SubscriptionFilter> {
        Some(SubscriptionFilter::builder().tools_list_changed().build())
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let mut changes = self.changes.clone();
        // Only the changes from now on: the host lists after it listens.
        changes.mark_unchanged();
        let wants_tools = context.accepted().tools_list_changed == Some(true);
        loop {
            tokio::select! {
                _ = context.cancelled() => return Ok(()),
                changed = changes.changed() => {
                    // The watcher is gone: the bridge is stopping.
                    if changed.is_err() {
                        return Ok(());
                    }
                    if !wants_tools {
                        continue;
                    }
                    if let Err(e) = context.sink().notify_tool_list_changed().await {
                        tracing::debug!(error = %e, "could not send tools/list_changed");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Counts the changes of the tools from `known` on, until no bridge is
/// left to hear of them.
async fn watch_tools(client: Client, interval: Duration, changes: watch::Sender<u64>, mut known: Fingerprint) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = changes.closed() => return,
        }
        let now = fingerprint(&client).await;
        if now != known {
            tracing::info!(tools = now.tools.len(), "the tools changed");
            changes.send_modify(|n| *n += 1);
            known = now;
        }
    }
}

/// Tells a host that opened with `initialize` of each change; hosts of
/// 2026-07-28 hear of them on their `subscriptions/listen` stream only.
async fn announce_changes(peer: Peer<RoleServer>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let handshake = peer
            .peer_info()
            .is_some_and(|info| info.protocol_version.has_initialize());
        if !handshake {
            continue;
        }
        if let Err(e) = peer.notify_tool_list_changed().await {
            tracing::debug!(error = %e, "could not send tools/list_changed");
            return;
        }
    }
}

/// Runs the bridge on stdin/stdout until the host closes it.
pub async fn run(client: Client, args: &BridgeArgs) -> Result<(), Failure> {
    let interval = Duration::from_millis(args.watch_interval_ms.max(50));
    let bridge = Bridge::start(client.clone(), usize::from(args.page_size), interval).await;
    // Taken before the session starts, so a change while it starts counts.
    let changes = bridge.changes.clone();
    let tasks = bridge.tasks.clone();
    let service = bridge
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session did not start: {e}"))?;
    let announcer = tokio::spawn(announce_changes(service.peer().clone(), changes));
    let quit = service.waiting().await;
    announcer.abort();
    // The calls of unfinished tasks are dropped, which cancels them.
    tasks.shutdown();
    client.disconnect().await;
    quit.map_err(|e| anyhow::anyhow!("the MCP session failed: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_schemas_other_than_objects_only_on_2026_07_28() {
        let card: ToolCard = serde_json::from_value(json!({
            "version": "0.1", "tool": "n", "server": "s", "namespace": "lab", "status": "online",
            "input_schema": {"type": "object"}, "output_schema": {"type": "integer"},
            "allowed_callers": []
        }))
        .unwrap();
        assert!(mcp_tool(&card, false).output_schema.is_none());
        assert_eq!(
            mcp_tool(&card, true).output_schema.as_deref(),
            Some(json!({"type": "integer"}).as_object().unwrap())
        );
    }

    #[test]
    fn results_and_errors() {
        let ok = success(json!({"pages": 2}), false);
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(ok.structured_content, Some(json!({"pages": 2})));
        let text = success(json!("hello"), false);
        assert_eq!(text.content[0].as_text().unwrap().text, "hello");
        assert_eq!(text.structured_content, None);
        // 2026-07-28 takes any JSON as structured content.
        let text = success(json!("hello"), true);
        assert_eq!(text.structured_content, Some(json!("hello")));

        let err = failure(&CallError::ToolError {
            message: "nope".into(),
            code: Some("E1".into()),
        });
        assert_eq!(err.is_error, Some(true));
        assert_eq!(
            err.structured_content,
            Some(json!({"error": {"type": "tool_error", "message": "tool error: nope (code E1)", "code": "E1"}}))
        );
    }
}
