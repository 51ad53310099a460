//! # mcpmqtt
//!
//! Host [Model Context Protocol](https://modelcontextprotocol.io) tools on an
//! MQTT 5 broker, where the **broker** enforces which caller may call which
//! tool: a caller that was not granted a tool cannot even deliver a call to it.
//!
//! Write tools as plain `async fn`s:
//!
//! ```no_run
//! use mcpmqtt::{tool, CallContext, Server, ToolError};
//!
//! /// Crawl a site, streaming one partial per page.
//! #[tool(allowed_callers = ["scout", "operator"], streaming)]
//! async fn crawl_site(
//!     ctx: &CallContext,
//!     /// The first URL to fetch.
//!     url: String,
//!     /// How many pages to crawl (default 3).
//!     pages: Option<u32>,
//! ) -> Result<Vec<String>, ToolError> {
//!     let mut seen = Vec::new();
//!     for i in 1..=pages.unwrap_or(3) {
//!         let page = format!("{url}/page/{i}");
//!         ctx.emit_text(format!("crawled {page}")).await?;
//!         seen.push(page);
//!     }
//!     Ok(seen)
//! }
//!
//! # async fn run() -> Result<(), mcpmqtt::Error> {
//! Server::builder("gtm-mcp-server")
//!     .broker("mqtt://127.0.0.1:1883")
//!     .namespace("gtm")
//!     .tool::<crawl_site>()
//!     .build()?
//!     .run()
//!     .await
//! # }
//! ```
//!
//! and call them by name from a [`Client`]:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use mcpmqtt::Client;
//! use serde_json::json;
//!
//! let client = Client::builder("scout").broker("mqtt://127.0.0.1:1883").namespace("gtm").connect().await?;
//! let pages = client.call("crawl_site", json!({"url": "https://example.com"})).await?;
//! # Ok(()) }
//! ```
//!
//! The wire protocol is the draft v0.1 of MCP over MQTT, with the extensions
//! described in the repository's `SPEC.md`. It runs on MQTT 5, or on MQTT
//! 3.1.1 as v0.1's compatibility mode ([`Protocol::V311`]), where a call the
//! broker refuses can only time out.

#![warn(missing_docs)]

// The runtime from the bottom up; each module imports only those before it
// (see "How the code is laid out" in the README): protocol (wire data, no
// I/O), error, connection (the one MQTT connection), tool (what a tool author
// writes), acl, then server and client, which never import each other.
pub mod acl;
mod client;
mod connection;
mod error;
mod protocol;
mod server;
mod signal;
mod tool;

#[cfg(feature = "embedded-broker")]
pub mod embedded;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use client::{CallOptions, Client, ClientBuilder, PendingCall, ToolFilter, ToolPage};
pub use connection::{BrokerOptions, Protocol, DEFAULT_MAX_PACKET_SIZE, DEFAULT_SESSION_EXPIRY};
pub use error::{CallError, Error, ToolError};
pub use protocol::card::{
    ServerCard, Status, ToolAnnotations, ToolCard, VersionInfo, CARD_VERSION, EXT_CALLER_TOPIC, EXT_PRIVATE_STREAMS,
    SDK_VERSION,
};
pub use protocol::envelope::{
    CallRequest, CallResponse, ErrorBody, ErrorType, Partial, Progress, ResponseStatus, StreamMessage, StreamType,
};
pub use protocol::names::{name_problem, MAX_NAME_LEN};
pub use protocol::topics::Topics;
pub use server::{DedupeWindow, Server, ServerBuilder, ServerHandle, SHUTDOWN_GRACE};
pub use tool::context::{CallContext, Caller};
pub use tool::schema::{input_schema, make_self_contained, output_schema};
pub use tool::state::State;
pub use tool::{BoxFuture, Handler, Tool, ToolDef, ToolDefBuilder};

pub use mcpmqtt_macros::{json_schema, tool};

/// Arguments and results are JSON values: re-exported so callers can write
/// `mcpmqtt::serde_json::json!({...})` without depending on it.
pub use serde_json;

/// The trait of types with a JSON Schema. To derive it on your own argument
/// and result types without depending on schemars, put
/// `#[mcpmqtt::json_schema]` on them.
pub use schemars::JsonSchema;
