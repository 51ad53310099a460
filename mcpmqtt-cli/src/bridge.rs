//! `bridge`: an MCP server on stdio whose tools are the MQTT-hosted tools
//! of one namespace.
//!
//! - `tools/list` maps each online Tool Card (of an online server) to an MCP
//!   tool (`inputSchema` from the card; `outputSchema` too when it is an
//!   object schema), a page at a time (`--page-size`, MCP cursors), so a
//!   host is never handed 10,000 tools in one message;
//! - `tools/call` forwards the call over MQTT under the bridge's identity, so
//!   the broker's ACL decides; every call error becomes an `isError` result
//!   whose text is the error and whose `structuredContent` is
//!   `{"error": {"type", "message", "code"?}}`;
//! - partials of a streaming tool become `notifications/progress` when the
//!   host sent a progress token (message: the text, or the data as JSON);
//! - the Server Cards are polled, and `notifications/tools/list_changed` is
//!   sent whenever the tools they list change, or their cards do (a new
//!   `tools_digest`).
//!
//! The bridge speaks the MCP versions that begin with `initialize` (up to
//! 2025-11-25), where list-changed notifications need no subscription.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use mcpmqtt::{CallError, CallOptions, Client, Partial, ToolCard, ToolFilter};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, Peer, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

use crate::call::tool_timeout;
use crate::cli::BridgeArgs;
use crate::exit::{call_error_kind, Failure};

/// The MCP server that forwards to MQTT.
#[derive(Clone)]
pub struct Bridge {
    client: Client,
    page_size: usize,
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

impl Bridge {
    /// A bridge calling through `client`, listing `page_size` tools per
    /// `tools/list` page.
    pub fn new(client: Client, page_size: usize) -> Self {
        Bridge {
            client,
            page_size: page_size.max(1),
        }
    }

    /// One page of the online tools, as MCP tools, after the tool named
    /// `cursor`.
    async fn mcp_tools(&self, cursor: Option<&str>) -> Result<ListToolsResult, mcpmqtt::Error> {
        let page = self
            .client
            .tools_page(&ToolFilter::new(), cursor, self.page_size)
            .await?;
        let mut result = ListToolsResult::with_all_items(page.tools.iter().map(mcp_tool).collect());
        result.next_cursor = page.next;
        Ok(result)
    }

    async fn fingerprint(&self) -> Fingerprint {
        let tools = self.client.tool_names(&ToolFilter::new()).await;
        let servers = self
            .client
            .servers()
            .await
            .into_iter()
            .map(|card| (card.server, card.tools_digest.unwrap_or(card.last_seen)))
            .collect();
        Fingerprint { tools, servers }
    }

    async fn forward(
        &self,
        name: &str,
        arguments: Value,
        context: &RequestContext<RoleServer>,
    ) -> Result<Value, CallError> {
        let options = CallOptions::new().timeout(tool_timeout(&self.client, name).await);
        let Some(token) = context.meta.get_progress_token() else {
            return self.client.call_with(name, arguments, options).await;
        };
        let mut pending = self.client.call_streaming(name, arguments, options);
        // MCP's progress only grows: a tool's own figures when it gives
        // them, else a count of the partials.
        let mut progress = 0f64;
        while let Some(partial) = pending.next_partial().await {
            let (value, total, message) = match partial {
                // Figures that do not grow (after text partials were
                // counted) still move the count on by one.
                Partial::Progress(p) if p.progress > progress => (p.progress, p.total, p.message),
                Partial::Progress(p) => (progress + 1.0, None, p.to_string()),
                Partial::Text(t) => (progress + 1.0, None, t),
                Partial::Data(d) => (progress + 1.0, None, d.to_string()),
                other => (progress + 1.0, None, format!("{other:?}")),
            };
            progress = value;
            let mut notification = ProgressNotificationParam::new(token.clone(), progress).with_message(message);
            if let Some(total) = total {
                notification = notification.with_total(total);
            }
            if let Err(e) = context.peer.notify_progress(notification).await {
                tracing::debug!(error = %e, "could not send a progress notification");
            }
        }
        pending.result().await
    }
}

/// An MCP tool from a Tool Card.
pub fn mcp_tool(card: &ToolCard) -> Tool {
    let input = match &card.input_schema {
        Value::Object(map) => map.clone(),
        _ => object_schema(),
    };
    let description = (!card.description.is_empty()).then(|| Cow::Owned(card.description.clone()));
    let mut tool = Tool::new_with_raw(card.tool.clone(), description, Arc::new(input));
    if let Some(Value::Object(output)) = &card.output_schema {
        if output.get("type").and_then(Value::as_str) == Some("object") {
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
/// as structured content when it is an object.
pub fn success(value: Value) -> CallToolResult {
    let text = match &value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    if value.is_object() {
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
            .build();
        let namespace = self.client.topics().namespace().to_owned();
        ServerConfig::new(capabilities)
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
            .with_server_info(Implementation::new("mcpmqtt-bridge", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "The tools of the MQTT namespace `{namespace}`, called as `{}`; the broker decides who may call what.",
                self.client.identity()
            ))
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        Cow::Borrowed(ProtocolVersion::known_up_to(&ProtocolVersion::V_2025_11_25))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let cursor = request.and_then(|r| r.cursor);
        if let Some(problem) = cursor.as_deref().and_then(mcpmqtt::name_problem) {
            return Err(McpError::invalid_params(
                format!("invalid cursor: {problem}; pass the `nextCursor` of the previous page"),
                None,
            ));
        }
        self.mcp_tools(cursor.as_deref())
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
        let outcome = tokio::select! {
            outcome = self.forward(&name, arguments, &context) => outcome,
            _ = context.ct.cancelled() => Err(CallError::Timeout { message: "cancelled by the MCP host".into() }),
        };
        Ok(match outcome {
            Ok(value) => success(value),
            Err(e) => failure(&e),
        }
        .into())
    }
}

/// Sends `notifications/tools/list_changed` whenever the tools change from
/// `known`.
async fn watch_tools(bridge: Bridge, peer: Peer<RoleServer>, interval: Duration, mut known: Fingerprint) {
    loop {
        tokio::time::sleep(interval).await;
        let now = bridge.fingerprint().await;
        if now != known {
            tracing::info!(tools = now.tools.len(), "the tools changed");
            if let Err(e) = peer.notify_tool_list_changed().await {
                tracing::debug!(error = %e, "could not send tools/list_changed");
                return;
            }
            known = now;
        }
    }
}

/// Runs the bridge on stdin/stdout until the host closes it.
pub async fn run(client: Client, args: &BridgeArgs) -> Result<(), Failure> {
    let bridge = Bridge::new(client.clone(), usize::from(args.page_size));
    // What the host can have seen is compared with from before the session
    // starts: a change while it starts (before a watcher's first look) would
    // otherwise never be announced.
    let known = bridge.fingerprint().await;
    let service = bridge
        .clone()
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| anyhow::anyhow!("the MCP session did not start: {e}"))?;
    let watcher = tokio::spawn(watch_tools(
        bridge,
        service.peer().clone(),
        Duration::from_millis(args.watch_interval_ms.max(50)),
        known,
    ));
    let quit = service.waiting().await;
    watcher.abort();
    client.disconnect().await;
    quit.map_err(|e| anyhow::anyhow!("the MCP session failed: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_and_errors() {
        let ok = success(json!({"pages": 2}));
        assert_eq!(ok.is_error, Some(false));
        assert_eq!(ok.structured_content, Some(json!({"pages": 2})));
        let text = success(json!("hello"));
        assert_eq!(text.content[0].as_text().unwrap().text, "hello");
        assert_eq!(text.structured_content, None);

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
