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

fn main() {
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
        .build()
        .unwrap();
    assert_eq!(server.tools().len(), 2);

    // Still a plain async fn.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(ping()), "pong");
    rt.block_on(noop());
}
