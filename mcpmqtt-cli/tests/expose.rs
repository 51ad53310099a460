//! `mcpmqtt expose` hosting a stdio MCP server (`mcpmqtt-stdio-demo`) on
//! MQTT, with the ACL it prints itself loaded into Mosquitto: the demo's tools
//! get cards, calls and progress reach them, and the broker enforces who may
//! call which. The demo speaks both eras of MCP, or one only
//! (`--protocol`): expose drives it in each case.

mod common;

use std::process::Stdio;

use common::*;
use mcpmqtt::acl::{AclFormat, AclManifest, Role};
use mcpmqtt::{CallError, CallOptions, Partial};
use serde_json::json;
use tokio::io::AsyncBufReadExt;

/// The flags that expose the demo as `demo` in the test namespace.
fn expose_args(acl_file: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = ["expose", "--server-name", "demo", "--allow", "echo=tester", "--acl"]
        .map(String::from)
        .to_vec();
    args.push(acl_file.display().to_string());
    args
}

fn acl_file(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("acl.json");
    std::fs::write(&path, r#"{"count": ["tester"], "*": ["operator"]}"#).unwrap();
    path
}

/// Which eras of MCP the demo speaks.
#[derive(Debug, Clone, Copy)]
enum Speaks {
    Both,
    Discover,
    Handshake,
}

impl Speaks {
    /// The demo's flags.
    fn flags(self) -> &'static [&'static str] {
        match self {
            Speaks::Both => &[],
            Speaks::Discover => &["--protocol", "2026-07-28"],
            Speaks::Handshake => &["--protocol", "handshake"],
        }
    }

    /// The version expose should end up speaking with it.
    fn negotiated(self) -> &'static str {
        match self {
            Speaks::Both | Speaks::Discover => "2026-07-28",
            Speaks::Handshake => "2025-11-25",
        }
    }
}

/// Runs a test against the demo speaking both eras, 2026-07-28 only and
/// the handshake only, as `test_name::{both, discover_only, handshake_only}`.
macro_rules! with_each_demo {
    ($($test:ident),* $(,)?) => {$(
        mod $test {
            use super::Speaks;
            #[tokio::test(flavor = "multi_thread")]
            async fn both() {
                super::$test(Speaks::Both).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn discover_only() {
                super::$test(Speaks::Discover).await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn handshake_only() {
                super::$test(Speaks::Handshake).await
            }
        }
    )*};
}

with_each_demo!(
    the_demo_server_is_hosted_on_mqtt_behind_the_brokers_acl,
    a_cancel_over_mqtt_reaches_the_child_as_notifications_cancelled,
    the_childs_tasks_and_tool_changes_are_followed,
);

/// A broker enforcing the ACL that `expose --emit-acl` prints for the demo,
/// and `mcpmqtt expose` hosting the demo on it (stderr piped). The
/// directory holds the ACL file, for as long as the test keeps it.
async fn expose_demo(speaks: Speaks) -> (tempfile::TempDir, mosquitto::Mosquitto, tokio::process::Child) {
    let dir = tempfile::tempdir().unwrap();
    let acl = acl_file(&dir);
    let mut emit = bare();
    emit.args(["--namespace", NS])
        .args(expose_args(&acl))
        .args(["--emit-acl", "manifest", "--", DEMO])
        .args(speaks.flags());
    let (code, manifest, err) = parts(&output(&mut emit).await);
    assert_eq!(code, 0, "{err}");
    let broker = broker_for(&AclManifest::from_json(&manifest).unwrap());
    let mut expose = mcpmqtt(&broker, "demo");
    expose
        .args(expose_args(&acl))
        .args(["--", DEMO])
        .args(speaks.flags())
        .env("RUST_LOG", "mcpmqtt=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let exposed = expose.spawn().unwrap();
    (dir, broker, exposed)
}

#[tokio::test(flavor = "multi_thread")]
async fn emit_acl_lists_the_childs_tools_with_their_callers() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = bare();
    cmd.args(["--namespace", NS])
        .args(expose_args(&acl_file(&dir)))
        .args(["--emit-acl", "manifest", "--", DEMO]);
    let (code, out, err) = parts(&output(&mut cmd).await);
    assert_eq!(code, 0, "{err}");
    let manifest = AclManifest::from_json(&out).expect("a manifest");
    assert_eq!(manifest.namespace, NS);
    let names: Vec<(&str, Role)> = manifest
        .identities
        .iter()
        .map(|i| (i.identity.as_str(), i.role))
        .collect();
    assert_eq!(
        names,
        [
            ("demo", Role::Server),
            ("operator", Role::Client),
            ("tester", Role::Client)
        ]
    );
    let tester = manifest.identity("tester").unwrap();
    let calls: Vec<&str> = tester
        .publish
        .iter()
        .filter(|t| t.ends_with("/call/tester"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        calls,
        ["lab/mcp/tools/echo/call/tester", "lab/mcp/tools/count/call/tester"]
    );
    let operator = manifest.identity("operator").unwrap();
    assert_eq!(
        operator
            .publish
            .iter()
            .filter(|t| t.ends_with("/call/operator"))
            .count(),
        6,
        "operator may call every tool: {:?}",
        operator.publish
    );

    // Rendered straight from the child, in a broker's format.
    let mut cmd = bare();
    cmd.args(["--namespace", NS])
        .args(expose_args(&acl_file(&dir)))
        .args(["--emit-acl", "mosquitto", "--", DEMO]);
    let (code, out, _) = parts(&output(&mut cmd).await);
    assert_eq!(code, 0);
    assert_eq!(out, manifest.render(AclFormat::Mosquitto));
}

async fn the_demo_server_is_hosted_on_mqtt_behind_the_brokers_acl(speaks: Speaks) {
    let (_dir, broker, mut exposed) = expose_demo(speaks).await;

    let tester = client(&broker, "tester").await;
    let operator = client(&broker, "operator").await;
    let card = tester.wait_for_tool("echo", PATIENCE).await.expect("echo comes online");
    assert_eq!(card.server, "demo");
    assert_eq!(card.allowed_callers, ["tester", "operator"]);
    assert!(card.supports_streaming);
    assert_eq!(card.description, "Returns its text.");
    assert_eq!(card.title.as_deref(), Some("Echo"), "the child's title");
    assert_eq!(
        card.annotations,
        Some(mcpmqtt::ToolAnnotations::default().read_only(true).open_world(false)),
        "the child's annotations"
    );
    assert_eq!(
        card.input_schema,
        json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "What to send back."}},
            "required": ["text"]
        })
    );
    let count_card = tester.wait_for_tool("count", PATIENCE).await.unwrap();
    assert_eq!(count_card.allowed_callers, ["tester", "operator"]);
    assert_eq!(count_card.output_schema.as_ref().unwrap()["required"], json!(["count"]));
    let fail_card = tester.wait_for_tool("fail", PATIENCE).await.unwrap();
    assert!(fail_card.title.is_none() && fail_card.annotations.is_none());
    assert_eq!(fail_card.allowed_callers, ["operator"]);

    // A single text block comes back as a string.
    assert_eq!(tester.call("echo", json!({"text": "hi"})).await.unwrap(), json!("hi"));

    // Progress becomes progress partials, figures and message; structured
    // content is the result.
    let (result, partials) = call_gathering(&tester, "count", json!({"n": 3, "delay_ms": 30})).await;
    assert_eq!(result.unwrap(), json!({"count": 3}));
    let mut steps: Vec<(String, Option<f64>, String)> = partials
        .iter()
        .map(|p| match p {
            Partial::Progress(p) => (p.progress.to_string(), p.total, p.message.clone()),
            other => panic!("unexpected partial {other:?}"),
        })
        .collect();
    // rmcp hands progress to its handler in separate tasks: order is not kept.
    steps.sort_by(|a, b| a.0.cmp(&b.0));
    let expected: Vec<(String, Option<f64>, String)> = (1..=3)
        .map(|i| (i.to_string(), Some(3.0), format!("step {i} of 3")))
        .collect();
    assert_eq!(steps, expected);

    // The broker refuses what the ACL does not grant...
    match tester.call("fail", json!({"message": "boom"})).await {
        Err(CallError::Unauthorized { message }) => assert!(message.contains("PUBACK 0x87"), "{message}"),
        other => panic!("expected unauthorized, got {other:?}"),
    }
    // ...and serves what it does; the child's isError is a tool error.
    match operator.call("fail", json!({"message": "boom"})).await {
        Err(CallError::ToolError { message, .. }) => assert_eq!(message, "boom"),
        other => panic!("expected a tool error, got {other:?}"),
    }
    // The child's schema is checked before the child is called.
    match operator.call("echo", json!({"text": 5})).await {
        Err(CallError::InvalidArguments { message }) => assert!(message.contains("text"), "{message}"),
        other => panic!("expected invalid arguments, got {other:?}"),
    }

    // SIGTERM: the cards go offline and expose exits cleanly.
    let pid = exposed.id().expect("still running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    tester
        .wait_for_server_offline("demo", PATIENCE)
        .await
        .expect("the server card goes offline");
    let status = tokio::time::timeout(PATIENCE, exposed.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    let card = tester.tool_card("echo").await.unwrap().unwrap();
    assert_eq!(card.status, mcpmqtt::Status::Offline);
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(exposed.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains(&format!(
            "exposing 6 tool(s) as `demo` in namespace `lab` (MCP {})",
            speaks.negotiated()
        )),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_that_is_not_an_mcp_server_is_a_clear_error() {
    let (code, _, err) =
        parts(&output(bare().args(["expose", "--server-name", "x", "--", "/nonexistent/server"])).await);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("could not start `/nonexistent/server`"), "{err}");

    let (code, _, err) = parts(&output(bare().args(["expose", "--server-name", "x", "--", "true"])).await);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("`true` did not start as an MCP server"), "{err}");

    let (code, _, err) = parts(
        &output(bare().args([
            "expose",
            "--server-name",
            "x",
            "--allow",
            "echo",
            "--emit-acl",
            "manifest",
            "--",
            DEMO,
        ]))
        .await,
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--allow \"echo\" is not TOOL=CALLER"), "{err}");

    let (code, _, err) = parts(&output(bare().args(["expose", "--server-name", "x"])).await);
    assert_eq!(code, 2, "{err}");
}

async fn a_cancel_over_mqtt_reaches_the_child_as_notifications_cancelled(speaks: Speaks) {
    let (_dir, broker, mut exposed) = expose_demo(speaks).await;
    let mut stderr = tokio::io::BufReader::new(exposed.stderr.take().unwrap()).lines();
    let exposing = line_with(&mut stderr, "exposing").await;
    assert!(
        exposing.ends_with(&format!("(MCP {})", speaks.negotiated())),
        "{exposing}"
    );

    let tester = client(&broker, "tester").await;
    tester
        .wait_for_tool("count", PATIENCE)
        .await
        .expect("count comes online");
    // 100 steps of 100 ms: 10 s, unless cancelled.
    let mut pending = tester.call_streaming("count", json!({"n": 100, "delay_ms": 100}), CallOptions::new());
    tokio::time::timeout(PATIENCE, pending.next_partial())
        .await
        .expect("a first step in time")
        .expect("a partial");
    pending.cancel();
    assert!(matches!(pending.result().await, Err(CallError::Cancelled { .. })));
    // The child hears notifications/cancelled and stops counting.
    line_with(&mut stderr, "count: stopped early").await;
    let _ = exposed.start_kill();
    let _ = exposed.wait().await;
}

/// Reads `lines` until one contains `what`; that line.
async fn line_with(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    what: &str,
) -> String {
    tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // Shown when the test fails.
            eprintln!("expose: {line}");
            if line.contains(what) {
                return line;
            }
        }
        panic!("expose ended before saying {what:?}");
    })
    .await
    .unwrap_or_else(|_| panic!("expose did not say {what:?} in time"))
}

/// Waits until the listed tools of `demo` are `expected`.
async fn listed_until(client: &mcpmqtt::Client, expected: &[&str]) {
    let mut last = Vec::new();
    let waited = tokio::time::timeout(PATIENCE, async {
        loop {
            last = client.tool_names(&mcpmqtt::ToolFilter::new()).await;
            if last.iter().map(|(tool, _)| tool.as_str()).eq(expected.iter().copied()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "listed {last:?}, waited for {expected:?}");
}

async fn the_childs_tasks_and_tool_changes_are_followed(speaks: Speaks) {
    let (_dir, broker, mut exposed) = expose_demo(speaks).await;
    let mut stderr = tokio::io::BufReader::new(exposed.stderr.take().unwrap()).lines();
    line_with(&mut stderr, "exposing 6 tool(s)").await;
    let operator = client(&broker, "operator").await;
    operator
        .wait_for_tool("tally", PATIENCE)
        .await
        .expect("tally comes online");

    // The child answers `tally` with a task (expose declares the
    // extension): it is polled to its end, its status messages streamed.
    let (result, partials) = call_gathering(&operator, "tally", json!({"n": 5, "delay_ms": 60})).await;
    assert_eq!(result.unwrap(), json!({"tally": 5}));
    let messages: Vec<String> = partials
        .iter()
        .map(|p| match p {
            Partial::Progress(p) => p.message.clone(),
            other => panic!("unexpected partial {other:?}"),
        })
        .collect();
    assert!(!messages.is_empty(), "the task's status came as partials");
    for message in &messages {
        assert!(
            message.starts_with("tally ") && message.ends_with(" of 5"),
            "{messages:?}"
        );
    }

    // A cancel over MQTT becomes tasks/cancel: the child's task stops.
    let mut pending = operator.call_streaming("tally", json!({"n": 100, "delay_ms": 100}), CallOptions::new());
    tokio::time::timeout(PATIENCE, pending.next_partial())
        .await
        .expect("a first status in time")
        .expect("a partial");
    pending.cancel();
    assert!(matches!(pending.result().await, Err(CallError::Cancelled { .. })));
    line_with(&mut stderr, "tally: stopped early").await;

    // The child's tools change: expose lists them again and republishes.
    let all = ["count", "echo", "extra", "fail", "tally", "toggle"];
    listed_until(&operator, &all).await;
    assert_eq!(
        operator.call("toggle", json!({})).await.unwrap(),
        json!("extra is gone")
    );
    line_with(&mut stderr, "the MCP server's tools changed: exposing 5 tool(s)").await;
    listed_until(&operator, &["count", "echo", "fail", "tally", "toggle"]).await;
    match operator.call("extra", json!({})).await {
        Err(CallError::Unavailable { .. }) => {}
        other => panic!("expected extra to be unavailable, got {other:?}"),
    }
    assert_eq!(
        operator.call("toggle", json!({})).await.unwrap(),
        json!("extra is back")
    );
    line_with(&mut stderr, "the MCP server's tools changed: exposing 6 tool(s)").await;
    listed_until(&operator, &all).await;
    assert_eq!(operator.call("extra", json!({})).await.unwrap(), json!("extra"));

    let _ = exposed.start_kill();
    let _ = exposed.wait().await;
}
