//! `mcpmqtt-stdio-demo`: a small MCP server on stdio, to try
//! `mcpmqtt expose` with (the integration tests expose it):
//!
//! - `echo {text}`: returns the text (titled `Echo`, read-only, closed world);
//! - `fail {message}`: fails with the message (an `isError` result);
//! - `count {n, delay_ms?}`: reports progress `i/n` with the message
//!   `step i of n`, then returns `{"count": n}` as structured content.
//!
//! It speaks both eras of MCP, unless told to speak one (to try a host
//! against servers that do not):
//!
//! - `--protocol 2026-07-28`: `server/discover` only; `initialize` fails;
//! - `--protocol handshake`: `initialize` only, up to 2025-11-25;
//!   `server/discover` is an unknown method, as to servers older than it.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, DiscoverRequestMethod, DiscoverResult,
    Implementation, JsonObject, ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
    ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

/// Which eras of MCP the demo speaks.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Speaks {
    Both,
    Discover,
    Handshake,
}

struct Demo {
    speaks: Speaks,
}

fn object(value: Value) -> Arc<JsonObject> {
    match value {
        Value::Object(map) => Arc::new(map),
        _ => unreachable!("the schemas below are objects"),
    }
}

fn tools() -> Vec<Tool> {
    vec![
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
            object(json!({
                "type": "object",
                "properties": {
                    "n": {"type": "integer", "minimum": 0, "maximum": 1000, "description": "How far to count."},
                    "delay_ms": {"type": "integer", "minimum": 0, "description": "Pause between steps (default 10)."}
                },
                "required": ["n"]
            })),
        )
        .with_raw_output_schema(object(json!({
            "type": "object",
            "properties": {"count": {"type": "integer"}},
            "required": ["count"]
        }))),
    ]
}

fn argument<'a>(request: &'a CallToolRequestParams, name: &str) -> Option<&'a Value> {
    request.arguments.as_ref().and_then(|a| a.get(name))
}

impl ServerHandler for Demo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
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
        Ok(ListToolsResult::with_all_items(tools()))
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
                // Says so on stderr if the count does not run to its end
                // (the client cancelled it), so that tests can see it.
                let mut early = StoppedEarly(true);
                for i in 1..=n {
                    tokio::select! {
                        _ = context.ct.cancelled() => {
                            return Err(ErrorData::internal_error("cancelled by the client", None));
                        }
                        _ = tokio::time::sleep(Duration::from_millis(delay)) => {}
                    }
                    if let Some(token) = &token {
                        let progress = ProgressNotificationParam::new(token.clone(), i as f64)
                            .with_total(n as f64)
                            .with_message(format!("step {i} of {n}"));
                        let _ = context.peer.notify_progress(progress).await;
                    }
                }
                early.0 = false;
                let mut result = CallToolResult::success(vec![ContentBlock::text(format!("counted to {n}"))]);
                result.structured_content = Some(json!({"count": n}));
                result
            }
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
    let service = Demo { speaks }.serve(rmcp::transport::stdio()).await?;
    service.waiting().await?;
    Ok(())
}

/// Prints `count: stopped early` when dropped still set.
struct StoppedEarly(bool);

impl Drop for StoppedEarly {
    fn drop(&mut self) {
        if self.0 {
            eprintln!("count: stopped early");
        }
    }
}
