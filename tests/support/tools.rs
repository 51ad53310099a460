//! Tools that misbehave on purpose, for the integration tests.

use std::time::Duration;

use mcpmqtt::{tool, CallContext, Client, Server, ServerBuilder, ServerHandle, ToolError};

use super::fixtures::Raw;
use super::login::{client, online};
use super::mosquitto::Mosquitto;

/// The namespace of these tools.
pub const NAMESPACE: &str = "lab";

/// Returns its text.
#[tool(allowed_callers = ["tester"])]
pub async fn echo(
    /// What to send back.
    text: String,
) -> String {
    text
}

/// Sleeps, then answers; its deadline is 300 ms.
#[tool(timeout_ms = 300)]
pub async fn sleepy(
    /// How long to sleep, in milliseconds.
    ms: u64,
) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

/// Panics.
#[tool]
pub async fn explode(
    /// The panic message.
    message: String,
) -> String {
    panic!("{message}")
}

/// Fails with a code.
#[tool]
pub async fn refuse(
    /// The code to fail with.
    code: String,
) -> Result<String, ToolError> {
    Err(ToolError::new("refused on purpose").with_code(code))
}

/// Streams `n` partials: text for even ones, data for odd ones.
#[tool(streaming)]
pub async fn count(
    ctx: &CallContext,
    /// How many partials.
    n: u32,
) -> Result<u32, ToolError> {
    for i in 0..n {
        if i % 2 == 0 {
            ctx.emit_text(format!("{i}")).await?;
        } else {
            ctx.emit_data(serde_json::json!({ "i": i })).await?;
        }
    }
    Ok(n)
}

/// Says who called, and whether the identity is attested.
#[tool]
pub async fn whoami(ctx: &CallContext) -> serde_json::Value {
    serde_json::json!({ "caller": ctx.caller().id(), "verified": ctx.caller().is_verified(), "call_id": ctx.call_id() })
}

/// The lab server with every tool above.
pub fn lab_server(name: &str) -> ServerBuilder {
    Server::builder(name)
        .namespace(NAMESPACE)
        .tool::<echo>()
        .tool::<sleepy>()
        .tool::<explode>()
        .tool::<refuse>()
        .tool::<count>()
        .tool::<whoami>()
}

/// The lab server, online on `broker`.
pub async fn lab_online(broker: &Mosquitto) -> ServerHandle {
    online(broker, lab_server("lab")).await
}

/// A client of the lab namespace.
pub async fn lab_client(broker: &Mosquitto, identity: &str) -> Client {
    client(broker, NAMESPACE, identity).await
}

/// The response topic of the raw client `raw` in the lab namespace.
pub const RAW_REPLY: &str = "lab/mcp/clients/raw/responses";

/// A broker, the lab server on it with this payload limit, and a raw client
/// `raw` subscribed to its response topic, to send calls by hand.
pub async fn lab_with_raw(max_payload_bytes: usize) -> (Mosquitto, ServerHandle, Raw) {
    lab_with_raw_on(Mosquitto::start(), max_payload_bytes).await
}

/// [`lab_with_raw`] on a broker of the caller's.
pub async fn lab_with_raw_on(broker: Mosquitto, max_payload_bytes: usize) -> (Mosquitto, ServerHandle, Raw) {
    let server = online(&broker, lab_server("lab").max_payload_bytes(max_payload_bytes)).await;
    let mut raw = Raw::connect(&broker, "raw").await;
    raw.subscribe(RAW_REPLY).await;
    (broker, server, raw)
}
