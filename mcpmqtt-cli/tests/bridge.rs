//! `mcpmqtt bridge` driven over stdio by rmcp's client, as an MCP host
//! would, in each era of MCP: opening with `initialize` (2025-11-25) and
//! with `server/discover` (2026-07-28). List, call, progress, errors, the
//! broker's refusal, list_changed as a server comes and goes, cancels, and
//! calls as tasks.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, ClientCapabilities,
    ClientConfig, GetTaskParams, GetTaskResult, Implementation, JsonObject, ProgressNotificationParam, ProtocolVersion,
    ServerNotification, SubscriptionFilter, TaskPayload, TaskStatus, Tool,
};
use rmcp::service::{ClientLifecycleMode, ClientServiceExt, NotificationContext, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// How the host opens its session.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Era {
    /// `initialize`, asking for 2025-11-25.
    Handshake,
    /// `server/discover`, pinned to 2026-07-28.
    Discover,
}

impl Era {
    fn version(self) -> ProtocolVersion {
        match self {
            Era::Handshake => ProtocolVersion::V_2025_11_25,
            Era::Discover => ProtocolVersion::V_2026_07_28,
        }
    }
}

/// Runs a test once in each era, as `test_name::handshake` and
/// `test_name::discover`.
macro_rules! in_both_eras {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            #[tokio::test(flavor = "multi_thread")]
            async fn handshake() {
                super::$test(super::Era::Handshake).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn discover() {
                super::$test(super::Era::Discover).await
            }
        }
    )*};
}

in_both_eras!(
    an_mcp_host_lists_and_calls_the_mqtt_tools,
    list_changed_is_sent_as_servers_come_and_go,
    tools_list_comes_in_pages_the_host_follows,
    the_hosts_cancel_stops_the_call_on_the_server,
    calls_become_tasks_for_a_host_that_asks,
);

/// What the host hears from the bridge besides answers.
#[derive(Debug)]
enum Heard {
    Progress(ProgressNotificationParam),
    ListChanged,
}

/// The test's MCP host.
#[derive(Clone)]
struct Host {
    heard: mpsc::UnboundedSender<Heard>,
    /// Declares the tasks extension.
    tasks: bool,
}

impl ClientHandler for Host {
    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        let _ = self.heard.send(Heard::Progress(params));
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        let _ = self.heard.send(Heard::ListChanged);
    }

    fn get_info(&self) -> ClientConfig {
        let capabilities = if self.tasks {
            ClientCapabilities::builder().enable_tasks().build()
        } else {
            ClientCapabilities::default()
        };
        ClientConfig::new(capabilities, Implementation::new("bridge-test-host", "0"))
    }
}

type Session = RunningService<RoleClient, Host>;

/// Starts `mcpmqtt bridge` as `identity` and opens an MCP session with it.
async fn bridge(broker: &mosquitto::Mosquitto, identity: &str, era: Era) -> (Session, mpsc::UnboundedReceiver<Heard>) {
    bridge_with(broker, identity, era, false, &[]).await
}

/// [`bridge`], declaring the tasks extension or not, with more flags. In
/// the 2026-07-28 era the host listens for list changes (as it must there),
/// and what it hears comes with the rest.
async fn bridge_with(
    broker: &mosquitto::Mosquitto,
    identity: &str,
    era: Era,
    tasks: bool,
    flags: &[&str],
) -> (Session, mpsc::UnboundedReceiver<Heard>) {
    let mut cmd = mcpmqtt(broker, identity);
    cmd.args(["bridge", "--watch-interval-ms", "100"]).args(flags);
    let (transport, _) = TokioChildProcess::builder(cmd).spawn().expect("the bridge starts");
    let (tx, rx) = mpsc::unbounded_channel();
    let host = Host {
        heard: tx.clone(),
        tasks,
    };
    let lifecycle = match era {
        Era::Handshake => ClientLifecycleMode::Initialize,
        Era::Discover => ClientLifecycleMode::Discover {
            preferred_versions: vec![ProtocolVersion::V_2026_07_28],
        },
    };
    let session = tokio::time::timeout(PATIENCE, host.serve_with_lifecycle(transport, lifecycle))
        .await
        .expect("the session opens in time")
        .expect("the MCP session starts");
    let info = session.peer_info().expect("the bridge introduced itself");
    assert_eq!(info.protocol_version, era.version(), "the version negotiated");
    if era == Era::Discover {
        let filter = SubscriptionFilter::builder().tools_list_changed().build();
        let mut subscription = session.peer().listen(filter).await.expect("subscriptions/listen");
        assert_eq!(subscription.acknowledged().tools_list_changed, Some(true));
        tokio::spawn(async move {
            while let Ok(Some(notification)) = subscription.next().await {
                if let ServerNotification::ToolListChangedNotification(_) = notification {
                    let _ = tx.send(Heard::ListChanged);
                }
            }
        });
    }
    (session, rx)
}

fn call(tool: &str, arguments: Value) -> CallToolRequestParams {
    let Value::Object(arguments) = arguments else {
        panic!("arguments are an object")
    };
    CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments)
}

fn text(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn tools(session: &Session) -> BTreeMap<String, Tool> {
    let tools = session.list_all_tools().await.expect("tools/list answers");
    tools.into_iter().map(|t| (t.name.to_string(), t)).collect()
}

fn schema(value: &Value) -> Arc<JsonObject> {
    Arc::new(value.as_object().expect("an object schema").clone())
}

/// The next list_changed, skipping anything else heard.
async fn list_changed(heard: &mut mpsc::UnboundedReceiver<Heard>) {
    tokio::time::timeout(PATIENCE, async {
        loop {
            match heard.recv().await.expect("the bridge is still there") {
                Heard::ListChanged => return,
                Heard::Progress(_) => continue,
            }
        }
    })
    .await
    .expect("tools/list_changed in time")
}

async fn an_mcp_host_lists_and_calls_the_mqtt_tools(era: Era) {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;
    let (session, mut heard) = bridge(&broker, BRIDGE, era).await;

    let info = session.peer_info().expect("the bridge introduced itself");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("mcpmqtt-bridge")
    );
    assert_eq!(
        info.capabilities.tools.as_ref().and_then(|t| t.list_changed),
        Some(true)
    );

    // tools/list: every online tool, its inputSchema the card's.
    let listed = tools(&session).await;
    assert_eq!(
        listed.keys().collect::<Vec<_>>(),
        ["count", "echo", "refuse", "secret", "sleepy"]
    );
    for def in [echo(), count(), refuse(), sleepy(), secret()] {
        let tool = &listed[def.name()];
        assert_eq!(tool.input_schema, schema(def.input_schema()), "{}", def.name());
        assert_eq!(tool.description.as_deref(), Some(def.description()));
    }
    assert_eq!(
        listed["echo"].output_schema,
        Some(schema(echo().output_schema().unwrap()))
    );
    // Its title and annotations, from the card's extension fields; none on
    // a tool that sets none.
    let echo_tool = &listed["echo"];
    assert_eq!(echo_tool.title.as_deref(), Some("Echo"));
    let hints = echo_tool.annotations.as_ref().expect("echo's annotations");
    assert_eq!(hints.read_only_hint, Some(true));
    assert_eq!(hints.destructive_hint, None);
    assert_eq!(hints.idempotent_hint, Some(true));
    assert_eq!(hints.open_world_hint, Some(false));
    assert_eq!(listed["count"].title, None);
    assert!(listed["count"].annotations.is_none());

    // tools/call: forwarded over MQTT, the result as text and structured content.
    let result = session.call_tool(call("echo", json!({"text": "hello"}))).await.unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(result.structured_content, Some(json!({"echo": "hello"})));
    assert_eq!(text(&result), r#"{"echo":"hello"}"#);

    // Partials become progress notifications, with the tool's own figures
    // when it gives them (rmcp's client always sends a token).
    while heard.try_recv().is_ok() {}
    let result = session.call_tool(call("count", json!({"n": 3}))).await.unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(text(&result), "3");
    // 2026-07-28 takes any JSON as structured content; before, only objects.
    let structured = match era {
        Era::Discover => Some(json!(3)),
        Era::Handshake => None,
    };
    assert_eq!(result.structured_content, structured);
    // rmcp's client hands each notification to its handler in a task of its
    // own, so they may reach the handler in any order, even after the answer.
    let mut progress = Vec::new();
    while progress.len() < 4 {
        match tokio::time::timeout(PATIENCE, heard.recv())
            .await
            .expect("progress in time")
        {
            Some(Heard::Progress(p)) => progress.push((p.progress, p.total, p.message.unwrap_or_default())),
            other => panic!("expected progress, heard {other:?}"),
        }
    }
    progress.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(
        progress,
        [
            (1.0, Some(3.0), "tick 0".to_owned()),
            (2.0, Some(3.0), "tick 1".to_owned()),
            (3.0, Some(3.0), "tick 2".to_owned()),
            (4.0, None, r#"{"done":3}"#.to_owned()),
        ]
    );

    // A tool's error is an isError result, with the error in structured content.
    let result = session.call_tool(call("refuse", json!({}))).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(text(&result), "tool error: refused on purpose (code nope)");
    assert_eq!(
        result.structured_content,
        Some(
            json!({"error": {"type": "tool_error", "message": "tool error: refused on purpose (code nope)", "code": "nope"}})
        )
    );

    // Bad arguments, checked by the server against the card's schema.
    let result = session.call_tool(call("echo", json!({"text": 5}))).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).starts_with("invalid arguments: argument `text`"),
        "{}",
        text(&result)
    );

    // The broker's ACL still applies: the bridge's identity may not call `secret`.
    let result = session.call_tool(call("secret", json!({}))).await.unwrap();
    assert_eq!(result.is_error, Some(true));
    assert!(
        text(&result).starts_with("unauthorized: the broker refused the call to `secret`"),
        "{}",
        text(&result)
    );
    assert_eq!(result.structured_content.unwrap()["error"]["type"], "unauthorized");

    // A tool with no card is a protocol error, as MCP asks for unknown tools.
    let err = session.call_tool(call("nosuch", json!({}))).await.unwrap_err();
    assert!(err.to_string().contains("unknown tool `nosuch`"), "{err}");

    session.cancel().await.unwrap();
    lab.shutdown().await.unwrap();
}

async fn list_changed_is_sent_as_servers_come_and_go(era: Era) {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;
    let (session, mut heard) = bridge(&broker, BRIDGE, era).await;
    assert!(!tools(&session).await.contains_key("late"));

    let second = online(&broker, "lab2", lab2()).await;
    list_changed(&mut heard).await;
    let listed = tools(&session).await;
    assert!(listed.contains_key("late"), "{:?}", listed.keys());
    let result = session.call_tool(call("late", json!({}))).await.unwrap();
    assert_eq!(text(&result), "late");

    // Gone by a graceful stop (its cards go offline)...
    second.shutdown().await.unwrap();
    list_changed(&mut heard).await;
    assert!(!tools(&session).await.contains_key("late"));

    // ...and by a crash: the broker publishes its Last Will, an offline
    // Server Card, and its tools leave the list though their cards stay.
    let second = online(&broker, "lab2", lab2()).await;
    list_changed(&mut heard).await;
    assert!(tools(&session).await.contains_key("late"));
    second.abort();
    list_changed(&mut heard).await;
    assert!(!tools(&session).await.contains_key("late"));
    assert!(tools(&session).await.contains_key("echo"));

    // Nothing changes: nothing is sent.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(h) = heard.try_recv() {
        assert!(!matches!(h, Heard::ListChanged), "list_changed without a change");
    }
    session.cancel().await.unwrap();
    lab.shutdown().await.unwrap();
}

async fn tools_list_comes_in_pages_the_host_follows(era: Era) {
    let broker = broker();
    let lab = online(&broker, "lab", lab()).await;
    let (session, _heard) = bridge_with(&broker, BRIDGE, era, false, &["--page-size", "2"]).await;

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let params = rmcp::model::PaginatedRequestParams::default().with_cursor(cursor);
        let page = session.list_tools(Some(params)).await.expect("a page");
        assert!(page.tools.len() <= 2, "{} tools in one page", page.tools.len());
        // On 2026-07-28 a page is fresh for one watch interval, for this
        // host only; before, there are no such fields.
        match era {
            Era::Discover => {
                assert_eq!(page.ttl_ms, Some(100));
                assert_eq!(page.cache_scope, Some(CacheScope::Private));
            }
            Era::Handshake => assert_eq!((page.ttl_ms, page.cache_scope), (None, None)),
        }
        pages.push(page.tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>());
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(
        pages,
        [vec!["count", "echo"], vec!["refuse", "secret"], vec!["sleepy"]],
        "every tool once, in name order"
    );
    // rmcp's own follower agrees.
    assert_eq!(tools(&session).await.len(), 5);
    // A cursor that is no tool name is refused, not taken as the start.
    let bad = rmcp::model::PaginatedRequestParams::default().with_cursor(Some("not/a/name".into()));
    let err = session.list_tools(Some(bad)).await.expect_err("an invalid cursor");
    assert!(err.to_string().contains("invalid cursor"), "{err}");
    session.cancel().await.unwrap();
    lab.shutdown().await.unwrap();
}

/// A server whose `wait` tool says `waiting` then runs for 30 s unless
/// cancelled, saying so; `stalls` outlives its 300 ms timeout; `halves`
/// says `halfway` and returns `{"halves": 2}`; `balks` fails.
fn waiting_server(started: Arc<AtomicBool>, stopped: Arc<AtomicBool>) -> mcpmqtt::ServerBuilder {
    let wait = mcpmqtt::ToolDef::builder("wait")
        .description("Waits 30 s, unless cancelled.")
        .allowed_callers([BRIDGE])
        .streaming(true)
        .timeout(Duration::from_secs(60))
        .handler(move |ctx, _args| {
            let (started, stopped) = (started.clone(), stopped.clone());
            async move {
                started.store(true, Ordering::SeqCst);
                ctx.progress(1.0, None, "waiting").await?;
                tokio::select! {
                    _ = ctx.cancelled() => {
                        stopped.store(true, Ordering::SeqCst);
                        Err(mcpmqtt::ToolError::new("cancelled"))
                    }
                    _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(json!("waited")),
                }
            }
        })
        .build()
        .unwrap();
    let stalls = mcpmqtt::ToolDef::builder("stalls")
        .description("Never answers in time.")
        .allowed_callers([BRIDGE])
        .timeout(Duration::from_millis(300))
        .handler(|_ctx, _args| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(json!("too late"))
        })
        .build()
        .unwrap();
    let halves = mcpmqtt::ToolDef::builder("halves")
        .description("Says halfway, then returns.")
        .allowed_callers([BRIDGE])
        .streaming(true)
        .handler(|ctx, _args| async move {
            ctx.progress(1.0, Some(2.0), "halfway").await?;
            Ok(json!({"halves": 2}))
        })
        .build()
        .unwrap();
    let balks = mcpmqtt::ToolDef::builder("balks")
        .description("Fails.")
        .allowed_callers([BRIDGE])
        .handler(|_ctx, _args| async { Err::<Value, _>(mcpmqtt::ToolError::new("balked").with_code("no")) })
        .build()
        .unwrap();
    mcpmqtt::Server::builder("lab3")
        .namespace(NS)
        .adopt_orphaned_sessions(false)
        .tool_def(wait)
        .tool_def(stalls)
        .tool_def(halves)
        .tool_def(balks)
}

/// `lab3` online, on a broker enforcing its ACL; `started` and `stopped`
/// are its `wait` tool's.
struct Lab3 {
    started: Arc<AtomicBool>,
    stopped: Arc<AtomicBool>,
    broker: mosquitto::Mosquitto,
    server: mcpmqtt::ServerHandle,
}

async fn lab3() -> Lab3 {
    let (started, stopped) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let manifest = waiting_server(started.clone(), stopped.clone())
        .build()
        .unwrap()
        .acl_manifest();
    let broker = broker_for(&manifest);
    let server = online(&broker, "lab3", waiting_server(started.clone(), stopped.clone())).await;
    Lab3 {
        started,
        stopped,
        broker,
        server,
    }
}

async fn wait_until(flag: &AtomicBool, what: &str) {
    tokio::time::timeout(PATIENCE, async {
        while !flag.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("waited in vain for {what}"));
}

async fn the_hosts_cancel_stops_the_call_on_the_server(era: Era) {
    let Lab3 {
        started,
        stopped,
        broker,
        server,
    } = lab3().await;
    let (session, _heard) = bridge(&broker, BRIDGE, era).await;

    let request =
        rmcp::model::ClientRequest::CallToolRequest(rmcp::model::CallToolRequest::new(call("wait", json!({}))));
    let handle = session
        .peer()
        .send_cancellable_request(request, rmcp::service::PeerRequestOptions::no_options())
        .await
        .expect("the call is sent");
    wait_until(&started, "the tool to start").await;
    // notifications/cancelled, as a host sends it when the user gives up.
    handle.cancel(Some("the user gave up".into())).await.unwrap();
    wait_until(&stopped, "the tool to hear the cancel").await;
    session.cancel().await.unwrap();
    server.shutdown().await.unwrap();
}

/// The task's state, once `done` says it is what the test waits for.
async fn task_until(session: &Session, task_id: &str, done: impl Fn(&GetTaskResult) -> bool) -> GetTaskResult {
    let mut last = None;
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            let task = session
                .peer()
                .get_task(GetTaskParams::new(task_id))
                .await
                .expect("tasks/get answers");
            if done(&task) {
                return task;
            }
            last = Some(task);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    waited.unwrap_or_else(|_| panic!("the task never got there; last seen: {last:?}"))
}

/// Calls `tool` as a task; its id.
async fn call_as_task(session: &Session, tool: &str) -> String {
    match session
        .peer()
        .call_tool_once(call(tool, json!({})))
        .await
        .expect("tools/call answers")
    {
        CallToolResponse::Task(created) => {
            assert_eq!(created.task.status, TaskStatus::Working);
            created.task.task_id
        }
        other => panic!("expected a task, got {other:?}"),
    }
}

async fn calls_become_tasks_for_a_host_that_asks(era: Era) {
    let Lab3 {
        stopped,
        broker,
        server,
        ..
    } = lab3().await;
    let (session, _heard) = bridge_with(&broker, BRIDGE, era, true, &[]).await;
    let info = session.peer_info().unwrap();
    assert!(
        info.capabilities.supports_tasks(),
        "the bridge declares the tasks extension"
    );

    // Working, with the last progress message, then completed with the
    // result: the task outlives the request that created it.
    let id = call_as_task(&session, "halves").await;
    let task = task_until(&session, &id, |t| t.task.status() == TaskStatus::Completed).await;
    let TaskPayload::Completed { result } = task.task.payload else {
        unreachable!()
    };
    let result: CallToolResult = serde_json::from_value(Value::Object(result)).unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(result.structured_content, Some(json!({"halves": 2})));
    assert_eq!(task.task.task.status_message.as_deref(), Some("halfway"));

    // A tool's failure is a completed task with an isError result.
    let id = call_as_task(&session, "balks").await;
    let task = task_until(&session, &id, |t| t.task.status().is_terminal()).await;
    let TaskPayload::Completed { result } = task.task.payload else {
        panic!("expected completed, got {:?}", task.task.payload)
    };
    let result: CallToolResult = serde_json::from_value(Value::Object(result)).unwrap();
    assert_eq!(result.is_error, Some(true));
    assert_eq!(text(&result), "tool error: balked (code no)");

    // No answer in time: failed, with the error.
    let id = call_as_task(&session, "stalls").await;
    let task = task_until(&session, &id, |t| t.task.status().is_terminal()).await;
    let TaskPayload::Failed { error } = task.task.payload else {
        panic!("expected failed, got {:?}", task.task.payload)
    };
    assert_eq!(error["data"], json!({"type": "timeout"}), "{error:?}");

    // Working with the tool's message until tasks/cancel, which cancels the
    // MQTT call: the tool hears it.
    let id = call_as_task(&session, "wait").await;
    let task = task_until(&session, &id, |t| {
        t.task.task.status_message.as_deref() == Some("waiting")
    })
    .await;
    assert_eq!(task.task.status(), TaskStatus::Working);
    assert!(!stopped.load(Ordering::SeqCst));
    session
        .peer()
        .cancel_task(CancelTaskParams::new(&id))
        .await
        .expect("tasks/cancel answers");
    task_until(&session, &id, |t| t.task.status() == TaskStatus::Cancelled).await;
    wait_until(&stopped, "the tool to hear the cancel").await;

    // An unknown task is an invalid-params error.
    let err = session
        .peer()
        .get_task(GetTaskParams::new("nosuch"))
        .await
        .expect_err("an unknown task");
    assert!(err.to_string().contains("unknown task"), "{err}");

    session.cancel().await.unwrap();
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_does_not_ask_for_tasks_gets_results() {
    let Lab3 { broker, server, .. } = lab3().await;
    let (session, _heard) = bridge(&broker, BRIDGE, Era::Discover).await;
    match session.peer().call_tool_once(call("halves", json!({}))).await.unwrap() {
        CallToolResponse::Complete(result) => assert_eq!(result.structured_content, Some(json!({"halves": 2}))),
        other => panic!("expected a result, got {other:?}"),
    }
    // tasks/* without the extension: the capability is missing.
    let err = session.peer().get_task(GetTaskParams::new("any")).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("capabilit"), "{err}");
    session.cancel().await.unwrap();
    server.shutdown().await.unwrap();
}
