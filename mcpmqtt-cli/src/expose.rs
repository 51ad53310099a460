//! `expose`: runs a stdio MCP server as a child and hosts its tools on MQTT,
//! each with the callers the flags and the ACL file allow, so that the
//! broker enforces who may call them.
//!
//! The child may speak either era of MCP: `expose` opens with
//! `server/discover` (2026-07-28, or an older revision the child names in
//! answer), and falls back to `initialize` when the child does not know
//! discover.
//!
//! - A child's progress becomes progress partials; a cancel over MQTT
//!   becomes `notifications/cancelled`.
//! - `expose` declares the tasks extension: a child that answers a call
//!   with a task is polled (`tasks/get`, at the interval it asks for) until
//!   the task ends; each new status message is a progress partial, and a
//!   cancel over MQTT becomes `tasks/cancel`.
//! - When the child says its tools changed (`notifications/tools/list_changed`,
//!   on a `subscriptions/listen` stream on 2026-07-28), they are listed again
//!   and, if they differ, the MQTT side is restarted with them: the cards go
//!   offline, calls in flight finish, and the new cards come online.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpmqtt::{CallContext, Server, ServerHandle, ToolDef, ToolError};
use rmcp::model::{
    CallToolRequest, CallToolRequestParams, CallToolResult, CancelTaskParams, CancelledNotificationParam,
    ClientCapabilities, ClientConfig, ClientRequest, ContentBlock, ErrorCode, GetTaskParams, Implementation,
    ProgressNotificationParam, ProgressToken, ProtocolVersion, ServerNotification, ServerResult, SubscriptionFilter,
    Task, TaskPayload, Tool,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, PeerRequestOptions, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, Peer, RoleClient, ServiceError};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use crate::cli::{ConnectArgs, ExposeArgs};
use crate::exit::Failure;

/// The key of an ACL file or `--allow` flag that applies to every tool.
pub const EVERY_TOOL: &str = "*";
/// How many progress notifications of calls not (yet) registered are kept.
const EARLY_PROGRESS_LIMIT: usize = 256;
/// How long a call that streamed waits after its answer for late progress.
const PROGRESS_GRACE: Duration = Duration::from_millis(20);
/// Bounds on how often a child's task is polled, whatever it asks for.
const TASK_POLL: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(5));
/// How long the child is given to list its tools, or to acknowledge a
/// subscription: `expose` waits for neither while it should be serving, or
/// stopping.
const CHILD_ANSWER_WAIT: Duration = Duration::from_secs(30);
/// How long `tasks/cancel` is waited for.
const TASK_CANCEL_WAIT: Duration = Duration::from_secs(5);

/// Who may call which tool: from `--acl FILE` and `--allow` flags.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Allowed {
    by_tool: BTreeMap<String, Vec<String>>,
}

impl Allowed {
    /// Reads an ACL file: a JSON object of tool name (or `"*"`) to an array
    /// of caller identities.
    pub fn from_json(text: &str) -> Result<Allowed, String> {
        let map: BTreeMap<String, Vec<String>> = serde_json::from_str(text).map_err(|e| {
            format!("expected a JSON object of tool name to callers, e.g. {{\"echo\": [\"scout\"], \"*\": [\"operator\"]}}: {e}")
        })?;
        let mut allowed = Allowed::default();
        for (tool, callers) in map {
            allowed.add(&tool, callers);
        }
        Ok(allowed)
    }

    /// Adds one `--allow TOOL=caller1,caller2`.
    pub fn add_flag(&mut self, flag: &str) -> Result<(), String> {
        let Some((tool, callers)) = flag.split_once('=') else {
            return Err(format!("--allow {flag:?} is not TOOL=CALLER[,CALLER...]"));
        };
        let tool = tool.trim();
        if tool.is_empty() {
            return Err(format!("--allow {flag:?} names no tool"));
        }
        let callers: Vec<String> = callers
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect();
        if callers.is_empty() {
            return Err(format!("--allow {flag:?} names no caller"));
        }
        self.add(tool, callers);
        Ok(())
    }

    fn add(&mut self, tool: &str, callers: Vec<String>) {
        let entry = self.by_tool.entry(tool.to_owned()).or_default();
        for caller in callers {
            if !entry.contains(&caller) {
                entry.push(caller);
            }
        }
    }

    /// The callers of `tool`: its own, then those of `"*"`, without repeats.
    pub fn callers(&self, tool: &str) -> Vec<String> {
        let mut out: Vec<String> = self.by_tool.get(tool).cloned().unwrap_or_default();
        for caller in self.by_tool.get(EVERY_TOOL).into_iter().flatten() {
            if !out.contains(caller) {
                out.push(caller.clone());
            }
        }
        out
    }

    /// Tool names that are allowed callers but not among `tools` (typos).
    pub fn unknown_tools<'a>(&'a self, tools: &[String]) -> Vec<&'a str> {
        self.by_tool
            .keys()
            .filter(|t| t.as_str() != EVERY_TOOL && !tools.contains(t))
            .map(String::as_str)
            .collect()
    }
}

/// Routes the child's progress notifications to the calls waiting for them.
#[derive(Default)]
struct ProgressRoutes {
    routes: HashMap<ProgressToken, mpsc::UnboundedSender<ProgressNotificationParam>>,
    /// Notifications that came before their call was registered.
    early: HashMap<ProgressToken, Vec<ProgressNotificationParam>>,
}

/// The MCP client side of `expose`: receives the child's progress and
/// hears when its tools change.
#[derive(Clone, Default)]
struct ChildClient {
    progress: Arc<Mutex<ProgressRoutes>>,
    tools_changed: Arc<Notify>,
}

impl ChildClient {
    fn register(&self, token: ProgressToken) -> mpsc::UnboundedReceiver<ProgressNotificationParam> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut routes = self.progress.lock().expect("progress lock");
        for early in routes.early.remove(&token).unwrap_or_default() {
            let _ = tx.send(early);
        }
        routes.routes.insert(token, tx);
        rx
    }

    fn unregister(&self, token: &ProgressToken) {
        self.progress.lock().expect("progress lock").routes.remove(token);
    }
}

impl ClientHandler for ChildClient {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        let mut routes = self.progress.lock().expect("progress lock");
        if let Some(tx) = routes.routes.get(&params.progress_token) {
            let _ = tx.send(params);
            return;
        }
        if routes.early.len() >= EARLY_PROGRESS_LIMIT {
            routes.early.clear();
        }
        routes
            .early
            .entry(params.progress_token.clone())
            .or_default()
            .push(params);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }

    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(
            ClientCapabilities::builder().enable_tasks().build(),
            Implementation::new("mcpmqtt-expose", env!("CARGO_PKG_VERSION")),
        )
    }
}

/// A running child MCP server.
type Child = RunningService<RoleClient, ChildClient>;

/// Starts the child and completes the MCP handshake.
async fn start_child(command: &[String]) -> Result<Child, Failure> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| Failure::Usage("no command to run after `--`".into()))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args);
    let (transport, _stderr) = TokioChildProcess::builder(cmd)
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .map_err(|e| anyhow::anyhow!("could not start `{program}`: {e}"))?;
    // Newest first: a child that knows discover but not 2026-07-28 names
    // the versions it has, and the newest shared one is used.
    let mut versions = ProtocolVersion::known_up_to(&ProtocolVersion::V_2026_07_28).to_vec();
    versions.reverse();
    let lifecycle = ClientLifecycleMode::Auto {
        preferred_versions: versions,
        legacy_version: Some(ProtocolVersion::LATEST_WITH_INITIALIZE),
    };
    ChildClient::default()
        .serve_with_lifecycle(transport, lifecycle)
        .await
        .map_err(|e| Failure::Other(anyhow::anyhow!("`{program}` did not start as an MCP server: {e}")))
}

/// One call forwarded to the child: its progress becomes partials.
async fn forward(
    child: Peer<RoleClient>,
    handler: ChildClient,
    tool: String,
    ctx: CallContext,
    arguments: Value,
) -> Result<Value, ToolError> {
    let arguments = match arguments {
        Value::Object(map) => map,
        _ => return Err(ToolError::invalid_arguments("arguments must be a JSON object")),
    };
    let params = CallToolRequestParams::new(tool).with_arguments(arguments);
    let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
    let handle = child
        .send_cancellable_request(request, PeerRequestOptions::no_options())
        .await
        .map_err(child_error)?;
    let token = handle.progress_token.clone();
    let request_id = handle.id.clone();
    let mut progress = handler.register(token.clone());
    let response = handle.await_response();
    tokio::pin!(response);
    let mut streamed = false;
    let outcome = loop {
        tokio::select! {
            outcome = &mut response => break outcome,
            // Cancelled over MQTT (by the caller, or the tool's timeout):
            // the child is told, as MCP says, and not waited for.
            _ = ctx.cancelled() => {
                handler.unregister(&token);
                let cancelled = CancelledNotificationParam::new(Some(request_id), Some("cancelled over MQTT".into()));
                if let Err(e) = child.notify_cancelled(cancelled).await {
                    tracing::debug!(error = %e, "could not tell the MCP server of the cancel");
                }
                return Err(ToolError::new("cancelled"));
            }
            Some(p) = progress.recv() => {
                streamed = true;
                emit(&ctx, p).await;
            }
        }
    };
    // rmcp hands each notification to the handler in a task of its own, so
    // the last ones may still be on their way when the answer is in.
    if streamed {
        tokio::time::sleep(PROGRESS_GRACE).await;
    }
    handler.unregister(&token);
    let mut late = Vec::new();
    while let Ok(p) = progress.try_recv() {
        late.push(p);
    }
    late.sort_by(|a, b| a.progress.total_cmp(&b.progress));
    for p in late {
        emit(&ctx, p).await;
    }
    match outcome.map_err(child_error)? {
        ServerResult::CallToolResult(result) => into_value(result),
        ServerResult::CreateTaskResult(created) => follow_task(&child, &ctx, created.task).await,
        other => Err(ToolError::new(format!(
            "the MCP server answered with something else: {other:?}"
        ))),
    }
}

/// Polls a child's task to its end; its status messages become progress
/// partials, and a cancel over MQTT becomes `tasks/cancel`.
async fn follow_task(child: &Peer<RoleClient>, ctx: &CallContext, task: Task) -> Result<Value, ToolError> {
    let id = task.task_id;
    let poll = Duration::from_millis(task.poll_interval_ms.unwrap_or(1_000)).clamp(TASK_POLL.0, TASK_POLL.1);
    let mut message = task.status_message;
    let mut steps = 0u32;
    loop {
        tokio::select! {
            _ = ctx.cancelled() => {
                let cancel = child.cancel_task(CancelTaskParams::new(&id));
                match tokio::time::timeout(TASK_CANCEL_WAIT, cancel).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(task = %id, error = %e, "tasks/cancel failed"),
                    Err(_) => tracing::debug!(task = %id, "tasks/cancel was not answered in time"),
                }
                return Err(ToolError::new("cancelled"));
            }
            _ = tokio::time::sleep(poll) => {}
        }
        let now = child.get_task(GetTaskParams::new(&id)).await.map_err(child_error)?;
        if now.task.task.status_message.is_some() && now.task.task.status_message != message {
            message = now.task.task.status_message.clone();
            steps += 1;
            let text = message.clone().unwrap_or_default();
            if let Err(e) = ctx.progress(f64::from(steps), None, text).await {
                tracing::debug!(error = %e, "could not stream a partial");
            }
        }
        match now.task.payload {
            TaskPayload::Completed { result } => {
                let result: CallToolResult = serde_json::from_value(Value::Object(result)).map_err(|e| {
                    ToolError::new(format!("the MCP server's task ended with an unreadable result: {e}"))
                })?;
                return into_value(result);
            }
            TaskPayload::Failed { error } => {
                let message = error
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("the task failed");
                return Err(ToolError::new(message));
            }
            TaskPayload::Cancelled => return Err(ToolError::new("the MCP server cancelled the task")),
            TaskPayload::InputRequired { .. } => {
                let _ = tokio::time::timeout(TASK_CANCEL_WAIT, child.cancel_task(CancelTaskParams::new(&id))).await;
                return Err(ToolError::new(
                    "the MCP server asked for input during its task, which an MQTT call cannot give",
                ));
            }
            _ => {}
        }
    }
}

/// Streams one progress notification as a progress partial: its figures,
/// and its message.
async fn emit(ctx: &CallContext, p: ProgressNotificationParam) {
    let emitted = ctx.progress(p.progress, p.total, p.message.unwrap_or_default()).await;
    if let Err(e) = emitted {
        tracing::debug!(error = %e, "could not stream a partial");
    }
}

/// The MQTT result of an MCP tool result; an `isError` result is a
/// `tool_error` with the text of its content.
pub fn into_value(result: CallToolResult) -> Result<Value, ToolError> {
    if result.is_error == Some(true) {
        let text: Vec<&str> = result
            .content
            .iter()
            .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
            .collect();
        let message = if text.is_empty() {
            "the tool failed".to_owned()
        } else {
            text.join("\n")
        };
        return Err(ToolError::new(message));
    }
    if let Some(structured) = result.structured_content {
        return Ok(structured);
    }
    match result.content.as_slice() {
        [] => Ok(Value::Null),
        [ContentBlock::Text(t)] => Ok(Value::String(t.text.clone())),
        blocks => serde_json::to_value(blocks).map_err(|e| ToolError::new(format!("unreadable content: {e}"))),
    }
}

fn child_error(e: ServiceError) -> ToolError {
    match e {
        ServiceError::McpError(e) if e.code == ErrorCode::INVALID_PARAMS => ToolError::invalid_arguments(e.message),
        ServiceError::McpError(e) => ToolError::new(e.message),
        ServiceError::TransportClosed => ToolError::new("the MCP server has exited").with_code("server_exited"),
        other => ToolError::new(other.to_string()),
    }
}

fn read_allowed(args: &ExposeArgs) -> Result<Allowed, Failure> {
    let mut allowed = match &args.acl {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::Usage(format!("could not read the ACL file {}: {e}", path.display())))?;
            Allowed::from_json(&text).map_err(|e| Failure::Usage(format!("{}: {e}", Path::new(path).display())))?
        }
        None => Allowed::default(),
    };
    for flag in &args.allow {
        allowed.add_flag(flag).map_err(Failure::Usage)?;
    }
    Ok(allowed)
}

/// The child's tools.
async fn list_tools(child: &ChildLink) -> Result<Vec<Tool>, Failure> {
    match tokio::time::timeout(CHILD_ANSWER_WAIT, child.peer.list_all_tools()).await {
        Ok(listed) => listed.map_err(|e| anyhow::anyhow!("could not list the MCP server's tools: {e}").into()),
        Err(_) => Err(anyhow::anyhow!(
            "the MCP server did not list its tools within {} s",
            CHILD_ANSWER_WAIT.as_secs()
        )
        .into()),
    }
}

/// The server hosting `tools`, the child's.
fn build_server(
    connect: &ConnectArgs,
    args: &ExposeArgs,
    allowed: &Allowed,
    child: &ChildLink,
    tools: &[Tool],
) -> Result<Server, Failure> {
    let names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    for unknown in allowed.unknown_tools(&names) {
        eprintln!("warning: the ACL names `{unknown}`, which the MCP server does not have");
    }
    let options = connect.broker_options(&args.server_name)?;
    let mut server = Server::builder(&args.server_name)
        .broker_options(options)
        .namespace(&connect.namespace)
        .default_timeout(Duration::from_millis(args.tool_timeout_ms));
    for tool in tools {
        let name = tool.name.to_string();
        if let Some(reason) = mcpmqtt::name_problem(&name) {
            eprintln!("warning: skipped the tool {name:?}: its name cannot be an MQTT topic level ({reason})");
            continue;
        }
        let callers = allowed.callers(&name);
        if callers.is_empty() {
            eprintln!("warning: no caller is allowed `{name}`: give some with --allow {name}=CALLER or --acl");
        }
        let peer = child.peer.clone();
        let handler = child.client.clone();
        let forwarded = name.clone();
        let mut def = ToolDef::builder(name)
            .description(tool.description.as_deref().unwrap_or_default())
            .input_schema(Value::Object((*tool.input_schema).clone()))
            .allowed_callers(callers)
            .streaming(true)
            .handler(move |ctx, arguments| forward(peer.clone(), handler.clone(), forwarded.clone(), ctx, arguments));
        if let Some(output) = &tool.output_schema {
            def = def.output_schema(Value::Object((**output).clone()));
        }
        // The title, or the one in the annotations (MCP 2025-03-26 had it
        // only there), and the hints.
        let title = tool
            .title
            .as_ref()
            .or_else(|| tool.annotations.as_ref().and_then(|a| a.title.as_ref()));
        if let Some(title) = title.filter(|t| !t.trim().is_empty()) {
            def = def.title(title.clone());
        }
        if let Some(hints) = &tool.annotations {
            let hints = mcpmqtt::ToolAnnotations {
                read_only_hint: hints.read_only_hint,
                destructive_hint: hints.destructive_hint,
                idempotent_hint: hints.idempotent_hint,
                open_world_hint: hints.open_world_hint,
            };
            if !hints.is_empty() {
                def = def.annotations(hints);
            }
        }
        server = server.tool_def(def.build()?);
    }
    Ok(server.build()?)
}

/// Asks a child of 2026-07-28 to tell of tool changes, on a
/// `subscriptions/listen` stream; a child of the handshake era sends them
/// unasked.
async fn listen_for_tool_changes(child: &ChildLink) {
    let Some(info) = child.peer.peer_info() else { return };
    let declared = info.capabilities.tools.as_ref().and_then(|t| t.list_changed) == Some(true);
    if info.protocol_version.has_initialize() || !declared {
        return;
    }
    let filter = SubscriptionFilter::builder().tools_list_changed().build();
    let mut subscription = match tokio::time::timeout(CHILD_ANSWER_WAIT, child.peer.listen(filter)).await {
        Ok(Ok(subscription)) => subscription,
        Ok(Err(e)) => {
            eprintln!("warning: the MCP server's tool changes will not be followed: {e}");
            return;
        }
        Err(_) => {
            eprintln!(
                "warning: the MCP server's tool changes will not be followed: it did not acknowledge \
                 subscriptions/listen within {} s",
                CHILD_ANSWER_WAIT.as_secs()
            );
            return;
        }
    };
    let changed = child.client.tools_changed.clone();
    tokio::spawn(async move {
        while let Ok(Some(notification)) = subscription.next().await {
            if let ServerNotification::ToolListChangedNotification(_) = notification {
                changed.notify_one();
            }
        }
    });
}

/// Says what is exposed.
fn exposing(handle: &ServerHandle, version: &str) {
    eprintln!(
        "exposing {} tool(s) as `{}` in namespace `{}` (MCP {version})",
        handle.server().tools().len(),
        handle.server().name(),
        handle.server().topics().namespace()
    );
}

/// Runs `expose` until Ctrl-C, SIGTERM, or the child's exit.
pub async fn run(connect: &ConnectArgs, args: &ExposeArgs) -> Result<(), Failure> {
    let child = start_child(&args.command).await?;
    let link = ChildLink {
        peer: child.peer().clone(),
        client: child.service().clone(),
    };
    let stop = child.cancellation_token();
    let mut exited = tokio::spawn(child.waiting());
    let outcome = serve(connect, args, &link, &mut exited).await;
    if !matches!(outcome, Err(Exit::ChildExited(_))) {
        stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), exited).await;
    }
    match outcome {
        Ok(()) => Ok(()),
        Err(Exit::ChildExited(e)) | Err(Exit::Failed(e)) => Err(e),
    }
}

/// What `serve` needs of the running child.
struct ChildLink {
    peer: Peer<RoleClient>,
    client: ChildClient,
}

/// Why `serve` ended other than by a signal.
enum Exit {
    /// The child is gone.
    ChildExited(Failure),
    Failed(Failure),
}

impl<E: Into<Failure>> From<E> for Exit {
    fn from(e: E) -> Self {
        Exit::Failed(e.into())
    }
}

/// Hosts the child's tools until a signal, following its tool changes.
async fn serve(
    connect: &ConnectArgs,
    args: &ExposeArgs,
    child: &ChildLink,
    exited: &mut tokio::task::JoinHandle<Result<rmcp::service::QuitReason, tokio::task::JoinError>>,
) -> Result<(), Exit> {
    let allowed = read_allowed(args)?;
    let mut tools = list_tools(child).await?;
    let server = build_server(connect, args, &allowed, child, &tools)?;
    if let Some(format) = args.emit_acl {
        print!("{}", server.acl_manifest().render(format));
        if let Some(aside) = format.certificate_settings_aside() {
            eprint!("{aside}");
        }
        return Ok(());
    }
    let version = child
        .peer
        .peer_info()
        .map_or_else(|| "?".to_owned(), |info| info.protocol_version.to_string());
    let mut handle = server.start().await?;
    exposing(&handle, &version);
    listen_for_tool_changes(child).await;
    let changed = child.client.tools_changed.clone();
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = &mut *exited => {
                handle.shutdown().await?;
                return Err(Exit::ChildExited(anyhow::anyhow!("the MCP server exited; its tools are offline").into()));
            }
            _ = changed.notified() => {
                let now = match list_tools(child).await {
                    Ok(now) => now,
                    // The child is going: the branch above says so.
                    Err(_) if exited.is_finished() => continue,
                    Err(e) => {
                        handle.shutdown().await?;
                        return Err(e.into());
                    }
                };
                if now == tools {
                    continue;
                }
                tools = now;
                let server = build_server(connect, args, &allowed, child, &tools)?;
                handle.shutdown().await?;
                handle = server.start().await?;
                eprint!("the MCP server's tools changed: ");
                exposing(&handle, &version);
            }
        }
    }
    handle.shutdown().await?;
    Ok(())
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn callers_from_file_and_flags() {
        let mut allowed = Allowed::from_json(r#"{"echo": ["scout"], "*": ["operator"]}"#).unwrap();
        allowed.add_flag("echo=tester, scout").unwrap();
        allowed.add_flag("count=analyst").unwrap();
        assert_eq!(allowed.callers("echo"), ["scout", "tester", "operator"]);
        assert_eq!(allowed.callers("count"), ["analyst", "operator"]);
        assert_eq!(allowed.callers("other"), ["operator"]);
        assert_eq!(allowed.unknown_tools(&["echo".into()]), ["count"]);
    }

    #[test]
    fn bad_acl_input_is_refused() {
        assert!(Allowed::from_json(r#"{"echo": "scout"}"#).is_err());
        assert!(Allowed::from_json("[]").is_err());
        let mut allowed = Allowed::default();
        for bad in ["echo", "=scout", "echo=", "echo= ,"] {
            assert!(allowed.add_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn results_map_to_values() {
        let text = CallToolResult::success(vec![ContentBlock::text("hi")]);
        assert_eq!(into_value(text), Ok(json!("hi")));
        let mut structured = CallToolResult::success(vec![ContentBlock::text("{}")]);
        structured.structured_content = Some(json!({"n": 1}));
        assert_eq!(into_value(structured), Ok(json!({"n": 1})));
        let two = CallToolResult::success(vec![ContentBlock::text("a"), ContentBlock::text("b")]);
        assert_eq!(
            into_value(two),
            Ok(json!([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]))
        );
        let err = CallToolResult::error(vec![ContentBlock::text("boom")]);
        assert_eq!(into_value(err).unwrap_err().message(), "boom");
    }
}
