//! Building a server: the name, the tools and the tunables, checked by
//! `build()`. It collects and checks only: nothing connects before
//! [`Server::start`].

use std::sync::Arc;
use std::time::Duration;

use super::dedupe::DedupeWindow;
use super::shared::{HostedTool, Server, ServerConfig};
use crate::connection::{connection_setters, Settings};
use crate::error::Error;
use crate::protocol::names;
use crate::tool::state::States;
use crate::tool::{Tool, ToolDef};

impl Server {
    /// Starts a server named `name` (its identity on the broker, and the
    /// `server` field of its cards).
    pub fn builder(name: impl Into<String>) -> ServerBuilder {
        ServerBuilder {
            name: name.into(),
            settings: Settings::default(),
            tools: Vec::new(),
            config: ServerConfig {
                shared_subscription: true,
                max_concurrent_calls: 64,
                default_timeout: Duration::from_secs(30),
                max_payload_bytes: 1024 * 1024,
                require_verified_caller: false,
                dedupe: DedupeWindow::default(),
                drain_timeout: Duration::from_secs(10),
                cancel_grace: Duration::from_secs(1),
                adopt_orphaned_sessions: true,
                states: States::default(),
            },
        }
    }
}

/// Builds a [`Server`].
#[must_use]
pub struct ServerBuilder {
    name: String,
    settings: Settings,
    tools: Vec<ToolDef>,
    config: ServerConfig,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ServerBuilder {
    connection_setters!(
        finish: "build()",
        protocol_note: " On MQTT 3.1.1 the server subscribes its plain call topics (no shared subscriptions, so \
                        every instance runs every call) and answers at the call payload's `response_topic`: see \
                        [`Protocol`](crate::Protocol)."
    );

    /// Username and password for the broker.
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.settings = self.settings.credentials(username, password);
        self
    }

    /// The largest call payload served; larger ones get `invalid_arguments`
    /// (default 1 MiB).
    pub fn max_payload_bytes(mut self, bytes: usize) -> Self {
        self.config.max_payload_bytes = bytes;
        self
    }

    /// Adds a `#[tool]` function, by name: `.tool::<crawl_site>()`.
    pub fn tool<T: Tool>(self) -> Self {
        self.tool_def(T::definition())
    }

    /// Adds a tool defined at run time.
    pub fn tool_def(mut self, def: ToolDef) -> Self {
        self.tools.push(def);
        self
    }

    /// Registers a value every tool taking a `State<T>` of its type gets
    /// (a database pool, an HTTP client, the configuration): shared by all
    /// calls, without a global. One value per type; a second one of the
    /// same type replaces the first. `build()` fails with
    /// [`Error::MissingState`] if a tool takes a type never registered.
    ///
    /// ```
    /// use mcpmqtt::{tool, Server, State, ToolError};
    ///
    /// pub struct Db { /* a connection pool */ }
    ///
    /// /// Lists the posts.
    /// #[tool]
    /// async fn list_posts(db: State<Db>) -> Result<Vec<String>, ToolError> {
    ///     let _db: &Db = &db;
    ///     Ok(Vec::new())
    /// }
    ///
    /// let server = Server::builder("blog").state(Db {}).tool::<list_posts>().build();
    /// assert!(server.is_ok());
    /// // Without `.state(Db {})`, `build()` says which tool needs what.
    /// let err = Server::builder("blog").tool::<list_posts>().build().unwrap_err();
    /// assert!(err.to_string().contains("list_posts"));
    /// ```
    pub fn state<T: Send + Sync + 'static>(self, value: T) -> Self {
        self.shared_state(Arc::new(value))
    }

    /// Registers a value the application keeps a handle on too (to read it
    /// outside the tools, say), as [`state`](Self::state) does: the tools
    /// get this very `T`.
    pub fn shared_state<T: Send + Sync + 'static>(mut self, value: Arc<T>) -> Self {
        self.config.states.insert(value);
        self
    }

    /// Subscribe through `$share/mcp-tool-{tool}/...` so instances split the
    /// calls (default on). Off, every instance gets every call. MQTT 3.1.1 has
    /// no shared subscriptions: there the server subscribes the plain call
    /// topics whatever this says.
    pub fn shared_subscription(mut self, on: bool) -> Self {
        self.config.shared_subscription = on;
        self
    }

    /// Refuse plain v0.1 calls, whose caller identity is only claimed, with
    /// `unauthorized` (default off). On, the generated ACL grants no v0.1 call
    /// or stream topic, and every caller is attested by the broker.
    pub fn require_verified_caller(mut self, on: bool) -> Self {
        self.config.require_verified_caller = on;
        self
    }

    /// How many calls run at once (default 64); more wait their turn.
    pub fn max_concurrent_calls(mut self, n: usize) -> Self {
        self.config.max_concurrent_calls = n.max(1);
        self
    }

    /// How long a call may run when its tool sets no `timeout_ms` (default 30 s).
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.config.default_timeout = timeout;
        self
    }

    /// How calls already run are recognised when they come again (a QoS 1
    /// redelivery, a replay): such a call is not run twice, and gets the
    /// first run's response again. Default: the last 10,000 calls, for 10
    /// minutes, with up to 8 MiB of cached responses (the newest).
    pub fn dedupe_window(mut self, window: DedupeWindow) -> Self {
        self.config.dedupe = window;
        self
    }

    /// How long a cancelled call's handler (cancelled by its caller, or by
    /// its tool's timeout) may go on to wind down once
    /// [`CallContext::cancelled`](crate::CallContext::cancelled) has fired,
    /// before it is dropped (default 1 s). Its slot is free, and its
    /// caller answered, at once.
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace;
        self
    }

    /// How long [`ServerHandle::shutdown`](crate::ServerHandle::shutdown) waits for running calls to finish
    /// before cancelling them (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.config.drain_timeout = timeout;
        self
    }

    /// When a sibling instance of this server crashes, take over its MQTT
    /// session and serve the calls the broker queued there (default on).
    /// Turn it off when the broker forces the client id (Mosquitto's
    /// `use_username_as_clientid`): taking over is then impossible.
    pub fn adopt_orphaned_sessions(mut self, on: bool) -> Self {
        self.config.adopt_orphaned_sessions = on;
        self
    }

    /// Checks names and schemas, and returns the server.
    pub fn build(self) -> Result<Server, Error> {
        names::validate("server", &self.name)?;
        let (topics, broker) = self.settings.finish()?;
        let mut seen = std::collections::HashSet::new();
        for tool in &self.tools {
            names::validate("tool", &tool.name)?;
            if !seen.insert(tool.name.as_str()) {
                return Err(Error::DuplicateTool(tool.name.clone()));
            }
            for caller in &tool.allowed_callers {
                names::validate("caller", caller)?;
            }
            HostedTool::compile_schema(tool)?;
            if let Some(missing) = tool.states.iter().find(|s| !self.config.states.contains(s.type_id)) {
                return Err(Error::MissingState {
                    tool: tool.name.clone(),
                    type_name: missing.type_name,
                });
            }
        }
        let mut server = Server {
            name: self.name,
            topics,
            broker,
            tools: self.tools,
            config: self.config,
            tools_digest: String::new(),
        };
        server.tools_digest = server.digest_tools()?;
        Ok(server)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ToolError;

    struct Db;
    struct Cache;

    fn needing_db(name: &str) -> ToolDef {
        ToolDef::builder(name)
            .needs_state::<Db>()
            .handler(|ctx, _| async move {
                ctx.state::<Db>().ok_or_else(|| ToolError::new("no Db"))?;
                Ok(serde_json::Value::Null)
            })
            .build()
            .unwrap()
    }

    #[test]
    fn build_names_the_tool_and_the_missing_state() {
        let err = Server::builder("lab")
            .state(Cache)
            .tool_def(ToolDef::builder("plain").build().unwrap())
            .tool_def(needing_db("list_posts"))
            .build()
            .unwrap_err();
        match &err {
            Error::MissingState { tool, type_name } => {
                assert_eq!(tool, "list_posts");
                assert_eq!(*type_name, std::any::type_name::<Db>());
            }
            other => panic!("expected MissingState, got {other:?}"),
        }
        let message = err.to_string();
        assert!(message.contains("`list_posts`"), "{message}");
        assert!(message.contains("Db`"), "{message}");
        assert!(message.contains(".state("), "{message}");
    }

    #[test]
    fn registered_state_reaches_the_handler() {
        let server = Server::builder("lab")
            .state(Db)
            .tool_def(needing_db("list_posts"))
            .build()
            .unwrap();
        let (ctx, _) = crate::CallContext::for_test("list_posts", "scout");
        let ctx = ctx.with_states(server.config.states.clone());
        assert!(ctx.state::<Db>().is_some());
        assert!(ctx.state::<Cache>().is_none());
    }

    #[test]
    fn a_shared_state_is_the_same_value() {
        let db = Arc::new(Db);
        let server = Server::builder("lab").shared_state(db.clone()).build().unwrap();
        let (ctx, _) = crate::CallContext::for_test("t", "scout");
        let ctx = ctx.with_states(server.config.states.clone());
        assert!(Arc::ptr_eq(&ctx.state::<Db>().unwrap().into_arc(), &db));
    }
}
