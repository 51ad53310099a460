//! `bridge`: an MCP server on stdio whose tools are the MQTT-hosted tools
//! of one namespace.
//!
//! - `tools/list` maps each online Tool Card (of an online server) to an MCP
//!   tool (`inputSchema` from the card; `outputSchema` too when it is an
//!   object schema);
//! - `tools/call` forwards the call over MQTT under the bridge's identity, so
//!   the broker's ACL decides; every call error becomes an `isError` result
//!   whose text is the error and whose `structuredContent` is
//!   `{"error": {"type", "message", "code"?}}`;
//! - partials of a streaming tool become `notifications/progress` when the
//!   host sent a progress token (message: the text, or the data as JSON);
//! - the cards are polled, and `notifications/tools/list_changed` is sent
//!   whenever the list of tools changes.
//!
//! The bridge speaks the MCP versions that begin with `initialize` (up to
//! 2025-11-25), where list-changed notifications need no subscription.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use mcpmqtt::{CallError, CallOptions, Client, Partial, ToolCard};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, JsonObject, ListToolsResult,
    PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerConfig, Tool,
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
}

impl Bridge {
    /// A bridge calling through `client`.
    pub fn new(client: Client) -> Self {
        Bridge { client }
    }

    /// The online tools, as MCP tools.
    async fn mcp_tools(&self) -> Vec<Tool> {
        self.client.tools().await.iter().map(mcp_tool).collect()
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
        let mut progress = 0u32;
        while let Some(partial) = pending.next_partial().await {
            progress += 1;
            let message = match partial {
                Partial::Text(t) => t,
                Partial::Data(d) => d.to_string(),
            };
            let notification = ProgressNotificationParam::new(token.clone(), f64::from(progress)).with_message(message);
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
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(self.mcp_tools().await))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let name = request.name.to_string();
        let online = self
            .client
            .tool_card(&name)
            .await
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
async fn watch_tools(bridge: Bridge, peer: Peer<RoleServer>, interval: Duration, mut known: Vec<Tool>) {
    loop {
        tokio::time::sleep(interval).await;
        let now = bridge.mcp_tools().await;
        if now != known {
            tracing::info!(tools = now.len(), "the tools changed");
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
    let bridge = Bridge::new(client.clone());
    // What the host can have seen is compared with from before the session
    // starts: a change while it starts (before a watcher's first look) would
    // otherwise never be announced.
    let known = bridge.mcp_tools().await;
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
