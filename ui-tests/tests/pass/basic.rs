//! The smallest tools: no arguments, no options.
#![deny(warnings)]

use mcpmqtt::{tool, Tool};

/// Answers `pong`.
#[tool]
async fn ping() -> String {
    "pong".to_owned()
}

/// Does nothing, and says so with `null`.
#[tool]
pub async fn noop() {}

/// Tools may live in modules, with any visibility: the registration type
/// gets the function's.
mod tools {
    use mcpmqtt::tool;

    /// Adds one.
    #[tool]
    pub(crate) async fn inc(n: i64) -> i64 {
        n + 1
    }
}

fn main() {
    /// Even inside a function body.
    #[tool(name = "local_tool")]
    async fn local() -> u8 {
        7
    }
    assert_eq!(<local as Tool>::definition().name(), "local_tool");
    assert_eq!(<tools::inc as Tool>::definition().name(), "inc");

    let def = <ping as Tool>::definition();
    assert_eq!(def.name(), "ping");
    assert_eq!(def.description(), "Answers `pong`.");
    assert_eq!(def.version(), Some(env!("CARGO_PKG_VERSION")));
    assert!(def.allowed_callers().is_empty());
    assert!(!def.is_streaming());
    assert_eq!(def.timeout(), None);
    let schema = def.input_schema();
    assert_eq!(schema["type"], "object");
    assert!(schema["properties"].as_object().unwrap().is_empty());
    assert_eq!(schema["additionalProperties"], false);
    assert_eq!(def.output_schema().unwrap()["type"], "string");

    let def = noop::definition();
    assert_eq!(def.name(), "noop");
    assert_eq!(def.output_schema(), None);

    // Registered by name, as a server does.
    let server = mcpmqtt::Server::builder("basic-server")
        .broker("mqtt://127.0.0.1:1883")
        .tool::<ping>()
        .tool::<noop>()
        .tool::<tools::inc>()
        .tool::<local>()
        .build()
        .unwrap();
    assert_eq!(server.tools().len(), 4);

    // Still a plain async fn.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(ping()), "pong");
    rt.block_on(noop());
    assert_eq!(rt.block_on(tools::inc(1)), 2);
    assert_eq!(rt.block_on(local()), 7);
}
