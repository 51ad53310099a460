//! Errors: [`Error`] for setting up and running, [`CallError`] for what a
//! call returns, [`ToolError`] for what a handler returns. Plain types and
//! their conversions: nothing here logs, retries or decides what to do.

use crate::protocol::card::ToolCard;
use crate::protocol::envelope::{ErrorBody, ErrorType};
use crate::protocol::names::InvalidName;

/// Setting up or running a server or client failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A tool, server, caller or namespace name cannot be used as a topic level.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// What the name was for.
        kind: &'static str,
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A tool takes a state type (`State<T>`) that was not registered with
    /// [`ServerBuilder::state`](crate::ServerBuilder::state): found by
    /// `build()`, so that no call fails for it later.
    #[error("tool `{tool}` takes `State<{type_name}>`, but no `{type_name}` was registered: add `.state(value)` with a `{type_name}` to the server builder")]
    MissingState {
        /// The tool.
        tool: String,
        /// The missing type, as `std::any::type_name` names it.
        type_name: &'static str,
    },
    /// Two tools of one server have the same name.
    #[error("tool {0:?} is registered twice: a server hosts each tool name once")]
    DuplicateTool(String),
    /// The broker URL could not be used.
    #[error("invalid broker URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A tool's input schema is not a usable JSON Schema.
    #[error("tool {tool:?} has an invalid input schema: {message}")]
    InvalidSchema {
        /// The tool.
        tool: String,
        /// What the validator said.
        message: String,
    },
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The broker could not be reached or refused the connection.
    #[error("could not connect to the broker: {0}")]
    Connect(String),
    /// A server's or client's identity is not the subject CN of its client
    /// certificate, which a broker set to take the certificate as the
    /// identity grants the ACL's rights to instead: found before connecting.
    #[error(
        "the {role}'s identity {configured:?} differs from its client certificate's CN {certificate:?}: the broker \
         takes the CN as the identity, so use the certificate made for {configured:?}, or name the {role} {certificate:?}"
    )]
    IdentityMismatch {
        /// `server` or `client`.
        role: &'static str,
        /// The identity the server or client was given: a server's name
        /// (or its username, when one is set), a client's identity.
        configured: String,
        /// The subject CN of the client certificate.
        certificate: String,
    },
    /// The broker refused a subscription.
    #[error("the broker refused the subscription to {filter:?} ({reason})")]
    SubscribeRefused {
        /// The topic filter.
        filter: String,
        /// The SUBACK reason code.
        reason: String,
    },
    /// The connection to the broker is closed for good.
    #[error("the connection to the broker is closed")]
    Closed,
    /// A server stopped without a whole goodbye to the broker (down, stalled
    /// or cut off); the reason says which part was missing, and what follows
    /// from it. When its cards could not be set offline, the broker publishes
    /// its Last Will once it notices the connection gone, and calls still in
    /// flight get no answer from it. When only the UNSUBACKs were late, the
    /// cards did go offline, but the broker may still hold calls for this
    /// instance's session.
    #[error("stopped without a goodbye to the broker ({0})")]
    Goodbye(String),
    /// Streaming was asked of a tool that is not declared `streaming`.
    #[error("tool {0:?} is not declared `streaming`, so it cannot emit partials")]
    NotStreaming(String),
    /// A command-line argument could not be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// A partial's `data` must be a JSON object.
    #[error("a partial's data must be a JSON object; wrap other values, e.g. `{{\"value\": ...}}`")]
    PartialNotObject,
    /// Encoding a message failed.
    #[error("could not encode a message: {0}")]
    Encode(#[from] serde_json::Error),
    /// A message would make an MQTT packet larger than the connection may
    /// send: this end's own maximum packet size or, when smaller, the one the
    /// broker announced. It was not sent, since the broker would drop it
    /// without a word.
    #[error(
        "{what} would be a {size}-byte MQTT packet, over the {limit}-byte maximum packet size ({})",
        if *by_broker { "the broker's limit" } else { "the limit set by `BrokerOptions::with_max_packet_size`" }
    )]
    TooLarge {
        /// What the message was: a partial, a Tool Card, a result...
        what: String,
        /// The packet's size in bytes, headers and properties included.
        size: usize,
        /// The largest packet the connection may send.
        limit: u32,
        /// Whether the limit is the broker's (announced in its CONNACK)
        /// rather than this end's own.
        by_broker: bool,
    },
    /// A listing could not get every Tool Card the Server Cards list: the
    /// broker did not deliver them (it dropped them, or a server lists a
    /// tool whose card it has not published). The cards that did arrive are
    /// in `found`; the list is not passed off as complete.
    #[error(
        "{} of the {listed} tools listed by the Server Cards had no Tool Card delivered ({}); the listing is incomplete",
        missing.len(),
        preview(missing)
    )]
    Incomplete {
        /// How many tools the listing should have held.
        listed: usize,
        /// The tools whose card did not arrive, by name.
        missing: Vec<String>,
        /// The Tool Cards that did arrive, in name order.
        found: Vec<ToolCard>,
    },
}

/// The first few names of a list, for a message.
fn preview(names: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

impl From<InvalidName> for Error {
    fn from(InvalidName { kind, name, reason }: InvalidName) -> Self {
        Error::InvalidName { kind, name, reason }
    }
}

/// Why a call failed, as the caller sees it.
///
/// The first five variants are the v0.1 error types a server answers with;
/// [`CallError::Transport`] and [`CallError::Protocol`] happen on the caller's side.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The arguments do not match the tool's input schema.
    #[error("invalid arguments: {message}")]
    InvalidArguments {
        /// Names the offending field.
        message: String,
    },
    /// The broker or the server refused the caller.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// Why.
        message: String,
    },
    /// The tool ran and failed, or panicked.
    #[error("tool error: {message}{}", code.as_deref().map(|c| format!(" (code {c})")).unwrap_or_default())]
    ToolError {
        /// The tool's message.
        message: String,
        /// The tool's error code, if it gave one.
        code: Option<String>,
    },
    /// No response came in time (the server's own timeout or the caller's).
    #[error("timeout: {message}")]
    Timeout {
        /// Which side gave up, and after how long.
        message: String,
    },
    /// No server hosts the tool, or it is offline.
    #[error("unavailable: {message}")]
    Unavailable {
        /// Why.
        message: String,
    },
    /// The call was cancelled: by [`PendingCall::cancel`](crate::PendingCall::cancel),
    /// or, seen from the server, by its caller.
    #[error("cancelled: {message}")]
    Cancelled {
        /// Who cancelled it.
        message: String,
    },
    /// The connection to the broker failed.
    #[error("transport: {0}")]
    Transport(String),
    /// The server answered with something this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
}

impl CallError {
    /// The v0.1 error type this maps to, if it is one a server can send.
    pub fn error_type(&self) -> Option<ErrorType> {
        Some(match self {
            CallError::InvalidArguments { .. } => ErrorType::InvalidArguments,
            CallError::Unauthorized { .. } => ErrorType::Unauthorized,
            CallError::ToolError { .. } => ErrorType::ToolError,
            CallError::Timeout { .. } => ErrorType::Timeout,
            CallError::Unavailable { .. } => ErrorType::Unavailable,
            CallError::Cancelled { .. } => ErrorType::Cancelled,
            CallError::Transport(_) | CallError::Protocol(_) => return None,
        })
    }

    pub(crate) fn from_body(body: ErrorBody) -> Self {
        let message = body.message;
        match body.error_type {
            ErrorType::InvalidArguments => CallError::InvalidArguments { message },
            ErrorType::Unauthorized => CallError::Unauthorized { message },
            ErrorType::Timeout => CallError::Timeout { message },
            ErrorType::Unavailable => CallError::Unavailable { message },
            ErrorType::Cancelled => CallError::Cancelled { message },
            ErrorType::ToolError => CallError::ToolError {
                message,
                code: body.code.map(code_to_string),
            },
            ErrorType::Other(kind) => CallError::ToolError {
                message: format!("{kind}: {message}"),
                code: body.code.map(code_to_string),
            },
        }
    }
}

fn code_to_string(code: serde_json::Value) -> String {
    match code {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// What a tool returns when it fails: a message, an optional code, and the
/// error type the caller sees (`tool_error` unless built otherwise).
///
/// Anything that implements [`Display`](std::fmt::Display) converts into it,
/// so `?` works on the errors a handler meets:
///
/// ```
/// use mcpmqtt::ToolError;
///
/// fn parse(pages: &str) -> Result<u32, ToolError> {
///     let n: u32 = pages.parse()?; // ParseIntError: Display
///     if n == 0 {
///         return Err(ToolError::new("pages must be positive").with_code("bad_pages"));
///     }
///     Ok(n)
/// }
/// assert_eq!(parse("0").unwrap_err().code(), Some("bad_pages"));
/// ```
///
/// It deliberately does not implement `Display` itself (that would clash with
/// the blanket conversion); use [`ToolError::message`].
#[derive(Debug, Clone, PartialEq)]
pub struct ToolError {
    kind: ErrorType,
    message: String,
    code: Option<String>,
}

impl ToolError {
    /// A `tool_error` with this message.
    pub fn new(message: impl Into<String>) -> Self {
        ToolError {
            kind: ErrorType::ToolError,
            message: message.into(),
            code: None,
        }
    }

    /// An `invalid_arguments` error: for checks the schema cannot express.
    pub fn invalid_arguments(message: impl Into<String>) -> Self {
        ToolError {
            kind: ErrorType::InvalidArguments,
            ..ToolError::new(message)
        }
    }

    /// An `unauthorized` error: for decisions the broker's ACL cannot make.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ToolError {
            kind: ErrorType::Unauthorized,
            ..ToolError::new(message)
        }
    }

    pub(crate) fn of_type(kind: ErrorType, message: impl Into<String>) -> Self {
        ToolError {
            kind,
            ..ToolError::new(message)
        }
    }

    /// Adds a machine-readable code, sent as the error's `code`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The code, if any.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The error type the caller sees.
    pub fn error_type(&self) -> &ErrorType {
        &self.kind
    }

    pub(crate) fn into_body(self) -> ErrorBody {
        ErrorBody {
            error_type: self.kind,
            message: self.message,
            code: self.code.map(serde_json::Value::String),
        }
    }
}

impl<E: std::fmt::Display> From<E> for ToolError {
    fn from(err: E) -> Self {
        ToolError::new(err.to_string())
    }
}
