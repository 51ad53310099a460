//! What the CLI's integration tests share: a Mosquitto that enforces the ACL
//! generated from the test servers, the servers themselves, and ways to run
//! the `mcpmqtt` binary.

#![allow(dead_code)]

/// The root package's servers and clients on a test broker.
#[path = "../../../tests/support/gathering.rs"]
pub mod gathering;
#[path = "../../../tests/support/login.rs"]
pub mod login;
#[path = "../../../tests/support/mosquitto.rs"]
pub mod mosquitto;
#[path = "../../../tests/support/pki.rs"]
pub mod pki;

use std::process::{Output, Stdio};
use std::time::Duration;

use mcpmqtt::acl::{AclFormat, AclManifest};
use mcpmqtt::{Client, Server, ServerBuilder, ServerHandle, ToolAnnotations, ToolDef, ToolError};
use mosquitto::Mosquitto;
use serde_json::{json, Value};

// Not every test file gathers partials.
#[allow(unused_imports)]
pub use gathering::call_gathering;
pub use login::PATIENCE;

/// The namespace of the test tools.
pub const NS: &str = "lab";
/// The identity the bridge runs under.
pub const BRIDGE: &str = "bridge";

/// The `mcpmqtt` binary.
pub const BIN: &str = env!("CARGO_BIN_EXE_mcpmqtt");
/// The demo stdio MCP server.
pub const DEMO: &str = env!("CARGO_BIN_EXE_mcpmqtt-stdio-demo");

/// Every identity's password.
pub fn password(identity: &str) -> String {
    format!("{identity}-pw")
}

fn def(builder: mcpmqtt::ToolDefBuilder) -> ToolDef {
    builder.build().expect("a valid test tool")
}

/// `echo {text}` → `{"echo": text}`, for tester and the bridge.
pub fn echo() -> ToolDef {
    def(ToolDef::builder("echo")
        .description("Returns its text.\nA second line the table leaves out.")
        .input_schema(json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "What to send back."}},
            "required": ["text"],
            "additionalProperties": false
        }))
        .output_schema(json!({
            "type": "object",
            "properties": {"echo": {"type": "string"}},
            "required": ["echo"]
        }))
        .allowed_callers(["tester", BRIDGE])
        .title("Echo")
        .annotations(
            ToolAnnotations::default()
                .read_only(true)
                .idempotent(true)
                .open_world(false),
        )
        .handler(|_ctx, args| async move { Ok(json!({"echo": args["text"]})) }))
}

/// `count {n, delay_ms?}`: streams progress `1/n tick 0`.. `n/n tick n-1`,
/// then a data partial `{"done": n}`, pausing `delay_ms` (default 20)
/// before each.
pub fn count() -> ToolDef {
    def(ToolDef::builder("count")
        .description("Streams n ticks.")
        .input_schema(json!({
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0},
                "delay_ms": {"type": "integer", "minimum": 0}
            },
            "required": ["n"],
            "additionalProperties": false
        }))
        .allowed_callers(["tester", BRIDGE])
        .streaming(true)
        .handler(|ctx, args| async move {
            let n = args["n"].as_u64().unwrap_or(0);
            let delay = Duration::from_millis(args["delay_ms"].as_u64().unwrap_or(20));
            for i in 0..n {
                tokio::time::sleep(delay).await;
                ctx.progress((i + 1) as f64, Some(n as f64), format!("tick {i}"))
                    .await?;
            }
            tokio::time::sleep(delay).await;
            ctx.emit_data(json!({"done": n})).await?;
            Ok(json!(n))
        }))
}

/// `refuse {}`: fails with code `nope`.
pub fn refuse() -> ToolDef {
    def(ToolDef::builder("refuse")
        .description("Fails on purpose.")
        .allowed_callers(["tester", BRIDGE])
        .handler(|_ctx, _args| async move { Err(ToolError::new("refused on purpose").with_code("nope")) }))
}

/// `sleepy {}`: sleeps longer than its 300 ms deadline.
pub fn sleepy() -> ToolDef {
    def(ToolDef::builder("sleepy")
        .description("Sleeps past its deadline.")
        .allowed_callers(["tester"])
        .timeout(Duration::from_millis(300))
        .handler(|_ctx, _args| async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(Value::Null)
        }))
}

/// `secret {}`: for operator only.
pub fn secret() -> ToolDef {
    def(ToolDef::builder("secret")
        .description("Only operator may call it.")
        .allowed_callers(["operator"])
        .handler(|_ctx, _args| async move { Ok(json!("the secret")) }))
}

/// `late {}`: on the second server, which comes and goes.
pub fn late() -> ToolDef {
    def(ToolDef::builder("late")
        .description("Arrives late.")
        .allowed_callers(["tester", BRIDGE])
        .handler(|_ctx, _args| async move { Ok(json!("late")) }))
}

/// The `lab` server: echo, count, refuse, sleepy, secret.
pub fn lab() -> ServerBuilder {
    Server::builder("lab")
        .namespace(NS)
        .tool_def(echo())
        .tool_def(count())
        .tool_def(refuse())
        .tool_def(sleepy())
        .tool_def(secret())
}

/// The `lab2` server: late.
pub fn lab2() -> ServerBuilder {
    Server::builder("lab2").namespace(NS).tool_def(late())
}

/// The ACL of both servers, plus `nobody`, an identity with no rights.
pub fn manifest() -> AclManifest {
    let m = |b: ServerBuilder| b.build().expect("the test server builds").acl_manifest();
    m(lab()).merge(m(lab2()))
}

/// Mosquitto enforcing `manifest` as its `acl_file`, every identity in it
/// (and `nobody`) with its [`password`].
pub fn broker_for(manifest: &AclManifest) -> Mosquitto {
    let mut builder = Mosquitto::builder().acl_file(&manifest.render(AclFormat::Mosquitto));
    for identity in &manifest.identities {
        builder = builder.user(&identity.identity, &password(&identity.identity));
    }
    builder
        .user("nobody", &password("nobody"))
        .extra_config("use_username_as_clientid true")
        .start()
}

/// Mosquitto enforcing the test servers' ACL.
pub fn broker() -> Mosquitto {
    broker_for(&manifest())
}

/// A test server online on `broker`, logged in as `name` (the server's name).
pub async fn online(broker: &Mosquitto, name: &str, server: ServerBuilder) -> ServerHandle {
    // The broker forces the client id (`use_username_as_clientid`), so
    // adopting a predecessor's session would take over this instance's
    // own (SPEC §3): off, as the docs say for such brokers.
    let server = server.adopt_orphaned_sessions(false);
    login::logged_in_server(broker, server, name, &password(name)).await
}

/// A client of the test namespace, as `identity`.
pub async fn client(broker: &Mosquitto, identity: &str) -> Client {
    login::logged_in_client(broker, NS, identity, &password(identity)).await
}

/// The `mcpmqtt` command with the connection flags of `identity` on
/// `broker`, and no connection variables from the environment.
pub fn mcpmqtt(broker: &Mosquitto, identity: &str) -> tokio::process::Command {
    let mut cmd = bare();
    cmd.args(["--broker", &broker.url(), "--namespace", NS, "--username", identity])
        .args(["--password", &password(identity)]);
    cmd
}

/// The environment variables the command reads its connection from.
pub const CONNECTION_VARS: [&str; 8] = [
    "MQTT_URL",
    "MCPMQTT_NAMESPACE",
    "MQTT_USERNAME",
    "MQTT_PASSWORD",
    "MQTT_CLIENT_ID",
    "MQTT_CA",
    "MQTT_CERT",
    "MQTT_KEY",
];

/// The `mcpmqtt` command with no flags and no connection variables.
pub fn bare() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    for var in CONNECTION_VARS.into_iter().chain(["RUST_LOG"]) {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

/// Runs a command to completion, with a deadline.
pub async fn output(cmd: &mut tokio::process::Command) -> Output {
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .expect("mcpmqtt finished in time")
        .expect("mcpmqtt runs");
    out
}

/// The exit code, stdout and stderr of a finished command.
pub fn parts(out: &Output) -> (i32, String, String) {
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
