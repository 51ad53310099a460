//! What a tool author writes against: tool definitions (what `#[tool]`
//! generates, and a server hosts), the [`CallContext`] a handler gets, and
//! JSON Schemas. It runs no call itself and knows neither server nor client.

pub(crate) mod context;
pub(crate) mod schema;
pub(crate) mod state;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::error::{Error, ToolError};
use crate::protocol::card::ToolAnnotations;
use crate::tool::context::CallContext;
use crate::tool::state::StateNeed;

/// A boxed, sendable future: what tool handlers return.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The type-erased handler of a tool: takes the call's context and its
/// (already validated) arguments, returns the result as JSON.
pub type Handler = Arc<dyn Fn(CallContext, Value) -> BoxFuture<Result<Value, ToolError>> + Send + Sync>;

/// A tool written as an `async fn` with `#[tool]`.
///
/// The macro implements it on a type named like the function, so a server
/// registers the tool by that name: `.tool::<crawl_site>()`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a tool",
    label = "not a `#[tool]` function",
    note = "annotate an `async fn` with `#[mcpmqtt::tool]` and register it by the function's name: `.tool::<my_tool>()`"
)]
pub trait Tool {
    /// The tool's definition: its card data and its handler.
    fn definition() -> ToolDef;
}

/// Everything a server needs to host one tool: the data of its card, who may
/// call it, and its handler.
#[derive(Clone)]
pub struct ToolDef {
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) input_schema: Value,
    pub(crate) output_schema: Option<Value>,
    pub(crate) allowed_callers: Vec<String>,
    pub(crate) streaming: bool,
    pub(crate) version: Option<String>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) title: Option<String>,
    pub(crate) annotations: Option<ToolAnnotations>,
    /// The state types its handler takes from the context.
    pub(crate) states: Vec<StateNeed>,
    pub(crate) handler: Handler,
}

impl std::fmt::Debug for ToolDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolDef")
            .field("name", &self.name)
            .field("allowed_callers", &self.allowed_callers)
            .field("streaming", &self.streaming)
            .field("timeout", &self.timeout)
            .field("title", &self.title)
            .field("annotations", &self.annotations)
            .field("states", &self.needed_states().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ToolDef {
    /// Starts a tool definition by hand, for tools whose schema is only known
    /// at run time. Most tools use `#[tool]` instead.
    ///
    /// ```
    /// use mcpmqtt::{ToolDef, ToolError};
    /// use serde_json::json;
    ///
    /// let echo = ToolDef::builder("echo")
    ///     .description("Returns its input")
    ///     .input_schema(json!({"type": "object", "properties": {"text": {"type": "string"}}}))
    ///     .allowed_callers(["scout"])
    ///     .handler(|_ctx, args| async move { Ok::<_, ToolError>(args) })
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(echo.name(), "echo");
    /// ```
    pub fn builder(name: impl Into<String>) -> ToolDefBuilder {
        ToolDefBuilder {
            def: ToolDef {
                name: name.into(),
                description: String::new(),
                input_schema: serde_json::json!({"type": "object", "properties": {}}),
                output_schema: None,
                allowed_callers: Vec::new(),
                streaming: false,
                version: None,
                timeout: None,
                title: None,
                annotations: None,
                states: Vec::new(),
                handler: Arc::new(|_, _| Box::pin(async { Err(ToolError::new("this tool has no handler")) })),
            },
        }
    }

    /// The tool's name: the topic level of its call and card topics.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// What the tool does.
    pub fn description(&self) -> &str {
        &self.description
    }
    /// The JSON Schema its arguments are validated against.
    pub fn input_schema(&self) -> &Value {
        &self.input_schema
    }
    /// The JSON Schema of its result, when known.
    pub fn output_schema(&self) -> Option<&Value> {
        self.output_schema.as_ref()
    }
    /// The identities the broker lets call it.
    pub fn allowed_callers(&self) -> &[String] {
        &self.allowed_callers
    }
    /// Whether it streams partial output.
    pub fn is_streaming(&self) -> bool {
        self.streaming
    }
    /// Its own version, for the card's `version_info.tool`.
    pub fn version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    /// How long one call may run, if the tool sets it.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    /// Its human-readable name, for hosts to show (MCP's `title`), if set.
    pub fn title(&self) -> Option<&str> {
        self.title.as_deref()
    }
    /// The hints about its behaviour (MCP's `annotations`), if any are set.
    pub fn annotations(&self) -> Option<&ToolAnnotations> {
        self.annotations.as_ref()
    }

    /// The names of the state types the tool takes (see
    /// [`ToolDefBuilder::needs_state`]), as `std::any::type_name` gives them.
    pub fn needed_states(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.states.iter().map(|s| s.type_name)
    }

    /// The function that runs a call, for calling a tool without a broker
    /// (its arguments unchecked: the server checks them against the schema
    /// first).
    pub fn handler(&self) -> &Handler {
        &self.handler
    }
}

/// Builds a [`ToolDef`]; see [`ToolDef::builder`].
#[derive(Debug)]
#[must_use]
pub struct ToolDefBuilder {
    def: ToolDef,
}

impl ToolDefBuilder {
    /// What the tool does, for the card and for models choosing tools.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.def.description = description.into();
        self
    }
    /// The JSON Schema of the arguments (an object schema).
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.def.input_schema = schema;
        self
    }
    /// The JSON Schema of the result.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.def.output_schema = Some(schema);
        self
    }
    /// The identities allowed to call the tool.
    pub fn allowed_callers<I, S>(mut self, callers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.def.allowed_callers = callers.into_iter().map(Into::into).collect();
        self
    }
    /// Declares that the tool streams partial output.
    pub fn streaming(mut self, streaming: bool) -> Self {
        self.def.streaming = streaming;
        self
    }
    /// The tool's own version.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.def.version = Some(version.into());
        self
    }
    /// How long one call may run before the caller gets `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.def.timeout = Some(timeout);
        self
    }
    /// A human-readable name for hosts to show (MCP's `title`), carried on
    /// the Tool Card as an extension field. The name stays the identifier.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.def.title = Some(title.into());
        self
    }
    /// Hints about the tool's behaviour (MCP's `annotations`: read-only,
    /// destructive, idempotent, open world), carried on the Tool Card as an
    /// extension field; hosts use them to decide whether to ask the user
    /// first.
    ///
    /// ```
    /// use mcpmqtt::{ToolAnnotations, ToolDef};
    ///
    /// let def = ToolDef::builder("list_posts")
    ///     .title("List posts")
    ///     .annotations(ToolAnnotations::default().read_only(true).open_world(false))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(def.title(), Some("List posts"));
    /// assert_eq!(def.annotations().unwrap().read_only_hint, Some(true));
    /// ```
    pub fn annotations(mut self, annotations: ToolAnnotations) -> Self {
        self.def.annotations = Some(annotations);
        self
    }
    /// Declares that the handler takes a `T` from its context
    /// ([`CallContext::state`]): the server's `build()` then fails with
    /// [`Error::MissingState`] unless a `T` was registered with
    /// [`ServerBuilder::state`](crate::ServerBuilder::state), so a missing
    /// value is found before the server runs rather than at a call. `#[tool]`
    /// declares each `State<T>` argument this way.
    ///
    /// ```
    /// use mcpmqtt::{Server, ToolDef, ToolError};
    ///
    /// struct Db;
    /// let def = ToolDef::builder("list_posts")
    ///     .needs_state::<Db>()
    ///     .handler(|ctx, _args| async move {
    ///         let _db = ctx.state::<Db>().ok_or_else(|| ToolError::new("no database"))?;
    ///         Ok(serde_json::json!([]))
    ///     })
    ///     .build()
    ///     .unwrap();
    /// assert!(Server::builder("blog").tool_def(def.clone()).build().is_err());
    /// assert!(Server::builder("blog").state(Db).tool_def(def).build().is_ok());
    /// ```
    pub fn needs_state<T: Send + Sync + 'static>(mut self) -> Self {
        let need = StateNeed::of::<T>();
        if !self.def.states.contains(&need) {
            self.def.states.push(need);
        }
        self
    }
    /// The function that runs a call.
    pub fn handler<F, Fut>(mut self, handler: F) -> Self
    where
        F: Fn(CallContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, ToolError>> + Send + 'static,
    {
        self.def.handler = Arc::new(move |ctx, args| Box::pin(handler(ctx, args)));
        self
    }
    /// Checks the names and returns the definition.
    pub fn build(self) -> Result<ToolDef, Error> {
        let def = self.def;
        crate::protocol::names::validate("tool", &def.name)?;
        let mut seen = std::collections::HashSet::new();
        for caller in &def.allowed_callers {
            crate::protocol::names::validate("caller", caller)?;
            if !seen.insert(caller) {
                return Err(Error::InvalidName {
                    kind: "caller",
                    name: caller.clone(),
                    reason: "it is listed twice in allowed_callers",
                });
            }
        }
        if def.input_schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(Error::InvalidSchema {
                tool: def.name,
                message: "an input schema must be an object schema (`\"type\": \"object\"`)".into(),
            });
        }
        Ok(def)
    }
}
