//! Building a server: the name, the tools and the tunables, checked by
//! `build()`. It collects and checks only: nothing connects before
//! [`Server::start`].

use std::time::Duration;

use super::dedupe::DedupeWindow;
use super::shared::{HostedTool, Server, ServerConfig};
use crate::connection::{connection_setters, Settings};
use crate::error::Error;
use crate::protocol::names;
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
    /// minutes, with up to 64 MiB of cached responses.
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
