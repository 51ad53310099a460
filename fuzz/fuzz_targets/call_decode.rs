//! Everything a caller controls on the way to a tool's handler: the topic
//! suffix (an attested caller or none), the MQTT 5 Response Topic and
//! Correlation Data, and the payload. Decoded and checked as the dispatcher
//! does, then, when accepted, handed to a `#[tool]` handler, which must read
//! whatever the schema let through. Nothing may panic.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcpmqtt::__private::CallPath;
use mcpmqtt::{tool, CallContext, Tool};
use serde::Deserialize;

/// How a page is fetched.
#[mcpmqtt::json_schema]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Only the page.
    Shallow,
    /// The page and its links.
    Deep,
}

/// One place to look.
#[mcpmqtt::json_schema]
#[derive(Debug, Deserialize)]
pub struct Target {
    /// Where.
    pub url: String,
    /// How far.
    pub depth: Option<u8>,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// A tool with every kind of argument: nested structs, enums, options,
/// integers with ranges, floats and lists.
#[tool(allowed_callers = ["scout"])]
async fn probe(
    ctx: &CallContext,
    /// Where to look.
    targets: Vec<Target>,
    /// How.
    mode: Mode,
    /// At most this many.
    limit: Option<u32>,
    /// A weight.
    ratio: f64,
    /// Free text.
    note: Option<String>,
) -> String {
    let _ = ctx.call_id();
    format!("{} {mode:?} {limit:?} {ratio} {}", targets.len(), note.unwrap_or_default())
}

/// Callers the topic may attest, well-formed or not.
const CALLERS: [&str; 6] = ["scout", "", "a+b", "x/y", "$SYS", "s\u{0}t"];
/// Response Topics a call may name: its own, someone else's, outside the
/// namespace, a wildcard, one level too many, empty.
const REPLIES: [&str; 6] = [
    "fuzz/mcp/clients/scout/responses",
    "fuzz/mcp/clients/operator/responses",
    "alarms/door/open",
    "fuzz/mcp/clients/+/responses",
    "fuzz/mcp/clients/a/b/responses",
    "",
];

struct World {
    path: CallPath,
    runtime: tokio::runtime::Runtime,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| World {
        path: CallPath::new(probe::definition(), 64 * 1024).expect("the schema compiles"),
        runtime: tokio::runtime::Builder::new_current_thread().build().expect("a runtime"),
    })
}

/// The first byte says which of caller, Response Topic and Correlation Data
/// are present, the second picks them; the rest is the payload.
fuzz_target!(|data: &[u8]| {
    let (head, payload) = data.split_at(data.len().min(2));
    let flags = head.first().copied().unwrap_or(0);
    let pick = usize::from(head.get(1).copied().unwrap_or(0));
    let caller = (flags & 1 != 0).then(|| CALLERS[pick % CALLERS.len()]);
    let response_topic = (flags & 2 != 0).then(|| REPLIES[(pick >> 4) % REPLIES.len()]);
    let correlation = (flags & 4 != 0).then(|| &payload[..payload.len().min(8)]);

    let world = world();
    let topic = world.path.call_topic(caller);
    let decoded = world.path.decode(&topic, payload, response_topic, correlation);
    if let Ok((request, reply)) = decoded {
        assert!(reply.starts_with("fuzz/mcp/clients/"), "reply outside the namespace: {reply}");
        assert!(reply.ends_with("/responses"), "reply to something else: {reply}");
        if let Some(caller) = caller.filter(|c| mcpmqtt::name_problem(c).is_none()) {
            assert_eq!(reply, format!("fuzz/mcp/clients/{caller}/responses"), "an attested caller's own topic");
        }
        let handler = world.path.handler();
        let (ctx, _partials) = CallContext::for_test("probe", "fuzzer");
        // Whatever the schema let through, the handler reads it or refuses
        // it with an error: it never panics.
        let _ = world.runtime.block_on(handler(ctx, request.arguments));
    }
});
