//! The attributes of [mcpmqtt](https://docs.rs/mcpmqtt): `#[tool]` and
//! `#[json_schema]`.
//!
//! Use them through the `mcpmqtt` crate (`mcpmqtt::tool`,
//! `mcpmqtt::json_schema`): the code they generate names `::mcpmqtt` paths
//! only, so a crate that writes tools depends on `mcpmqtt` (and `serde` for
//! its own types), not on `schemars` or `serde_json`.

#![warn(missing_docs)]

use proc_macro::TokenStream;

mod attr;
mod errors;
mod json_schema;
mod names;
mod tool;

/// Turns an `async fn` into an MCP tool that an `mcpmqtt` server hosts.
///
/// ```ignore
/// use mcpmqtt::{tool, CallContext, ToolError};
///
/// /// Crawl a site, streaming one partial per page.
/// #[tool(allowed_callers = ["scout", "operator"], streaming, timeout_ms = 60000)]
/// pub async fn crawl_site(
///     ctx: &CallContext,
///     /// The site's root URL.
///     url: String,
///     /// How many pages to crawl (default 3).
///     #[arg(rename = "maxPages")]
///     pages: Option<u32>,
/// ) -> Result<CrawlReport, ToolError> {
///     for i in 1..=pages.unwrap_or(3) {
///         ctx.emit_text(format!("crawled page {i}")).await?;
///     }
///     # todo!()
/// }
///
/// // Registered by the function's name:
/// mcpmqtt::Server::builder("gtm-mcp-server").tool::<crawl_site>();
/// ```
///
/// The function stays an ordinary `async fn`: call it directly in unit tests,
/// with a context from `CallContext::for_test`.
///
/// # Options
///
/// | option | value | default |
/// | --- | --- | --- |
/// | `name` | string literal: the tool's name, one MQTT topic level | the function's name |
/// | `description` | string literal | the function's doc comment (lines trimmed, joined with `\n`); empty without one |
/// | `allowed_callers` | array of string literals: the client identities the broker lets call the tool | none |
/// | `streaming` | flag: the tool emits partials with `ctx.emit_text` / `ctx.emit_data` | not streaming |
/// | `version` | string literal: the tool's own version, on its card | the version of the crate that defines the tool (`CARGO_PKG_VERSION`) |
/// | `timeout_ms` | integer literal > 0: how long one call may run | the server's |
/// | `title` | non-empty string literal: a human-readable name for hosts to show (MCP's `title`) | none |
/// | `read_only` | flag (or `= bool`): the tool does not modify its environment (MCP's `readOnlyHint`) | unset (MCP: false) |
/// | `destructive` | flag (or `= bool`): it may destroy or overwrite, not only add (`destructiveHint`); not with `read_only` | unset (MCP: true) |
/// | `idempotent` | flag (or `= bool`): calling it again with the same arguments changes nothing more (`idempotentHint`) | unset (MCP: false) |
/// | `open_world` | flag (or `= bool`): it reaches outside entities, such as the web (`openWorldHint`) | unset (MCP: true) |
///
/// The four hints go on the Tool Card as MCP's `annotations`, which hosts use
/// to decide whether to ask the user before a call; write only those that
/// differ from MCP's defaults or that you want stated, e.g.
/// `#[tool(title = "List posts", read_only, open_world = false)]`.
///
/// Tool and caller names must be non-empty, at most 128 bytes, and free of
/// whitespace, `/`, `+`, `#` and NUL, and must not start with `$`: each is
/// one MQTT topic level. The macro checks them at compile time, as the
/// runtime does.
///
/// # Arguments
///
/// - **The context**, `ctx: &CallContext` (any path ending in `CallContext`),
///   taken by reference, at most once, anywhere in the list. A `streaming`
///   tool must take it.
/// - **Every other argument** is read from the call's JSON `arguments`: its
///   name is the JSON property name, its type must implement
///   `serde::Deserialize` and `schemars::JsonSchema` (derive the latter with
///   [`#[mcpmqtt::json_schema]`](macro@json_schema)), and it must be owned
///   (`String`, not `&str`). `Option<T>` arguments are optional; all others
///   are required. Unknown properties are refused.
/// - **Doc comments on an argument** become its description in the input
///   schema. (rustc does not allow doc comments on parameters; the macro
///   removes them from the function it emits.)
/// - **`#[arg(rename = "jsonName")]`** sets an argument's JSON property name;
///   by default it is the identifier, without `r#`.
///
/// # Result
///
/// - no return type or `()`: the result is `null`;
/// - `Result<T, E>` (any path ending in `Result`, including aliases such as
///   `anyhow::Result<T>`): `T` must implement `serde::Serialize`, `E` must
///   convert into `mcpmqtt::ToolError` (every `Display` type does);
/// - any other type `T`: must implement `serde::Serialize`.
///
/// When `T` also implements `schemars::JsonSchema`, the tool's card carries
/// its output schema.
///
/// # What it generates
///
/// Next to the function, a braced struct of the same name (types and
/// functions live in different namespaces, so the two coexist) implementing
/// `mcpmqtt::Tool`. Its `definition()` builds the tool's `ToolDef`: the
/// input schema of the arguments, the output schema, the options above, and
/// a handler that reads the arguments, calls the function and serialises
/// the result.
///
/// # Errors
///
/// Mistakes are reported at compile time on the offending token, with what
/// to write instead: a function that is not `async`, takes `self`, is
/// generic, takes a borrowed, `impl Trait` or pattern argument, takes the
/// context by value, by `&mut`, inside another type (`Arc<CallContext>`),
/// under another name (an alias of `CallContext`, another `Context`) or
/// twice; two arguments with the same JSON property name; a `streaming`
/// tool without a context; an unknown option (with the closest known one),
/// an option given twice or with a value of the wrong kind, an invalid
/// name, an invalid caller or one listed twice; an argument type that cannot
/// be read from JSON or a result that cannot be sent as JSON (on that type).
///
/// On any such error the function is still emitted as written, with a
/// stand-in registration type, so that calls to it and `.tool::<name>()`
/// add no errors of their own.
///
/// Two tools with the same name on one server are refused when the server
/// is built (`mcpmqtt::Error::DuplicateTool`): the names only meet there.
#[proc_macro_attribute]
pub fn tool(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match tool::expand(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(error) => tool::error_output(error, item).into(),
    }
}

/// Derives `schemars::JsonSchema` for a type used in tool arguments or
/// results, without a dependency on `schemars`.
///
/// ```ignore
/// #[mcpmqtt::json_schema]
/// #[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
/// #[serde(rename_all = "lowercase")]
/// pub enum Platform {
///     Reddit,
///     X,
/// }
/// ```
///
/// It adds `#[derive(JsonSchema)]` and `#[schemars(crate = "...")]` (naming
/// mcpmqtt's re-export of schemars) in front of the item's attributes. The
/// schema follows the `serde` attributes (`rename_all`, `default`, ...), and
/// doc comments on the type, its fields and variants become descriptions.
/// Further `#[schemars(...)]` attributes may be written as usual.
///
/// It applies to structs and enums and takes no arguments.
#[proc_macro_attribute]
pub fn json_schema(attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = proc_macro2::TokenStream::from(item);
    match json_schema::expand(attr.into(), item.clone()) {
        Ok(tokens) => tokens.into(),
        Err(error) => {
            let mut out = error.to_compile_error();
            out.extend(item);
            out.into()
        }
    }
}
