//! What `#[tool]`-generated code (and the fuzz target) calls. Not a public
//! API: it may change in any release. Glue only: the runtime itself never
//! goes through it.

pub use schemars;
pub use serde;
pub use serde_json;

pub use crate::tool::schema::input_schema;
pub use crate::tool::{BoxFuture, ToolDef};

#[doc(hidden)]
pub use crate::server::CallPath;

/// The client's side of the wire, as the runtime encodes and decodes it:
/// for the micro-benchmark (`benches/hot_path.rs`). Not a stable API.
#[doc(hidden)]
pub mod codec {
    use crate::protocol::envelope::{CallRequest, CallResponse};

    /// Encodes a call as [`Client::call`](crate::Client::call) does.
    pub fn encode_request(request: &CallRequest, size_hint: usize) -> Vec<u8> {
        request.encode(size_hint)
    }

    /// Copies `src` into `dst` as the runtime copies long strings.
    pub fn copy(dst: &mut [u8], src: &[u8]) {
        crate::protocol::json::copy(dst, src)
    }

    /// Decodes a response as the client does.
    pub fn decode_response(payload: &[u8]) -> Result<CallResponse, String> {
        crate::protocol::envelope::decode_response(payload).map_err(|e| e.to_string())
    }
}

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::ToolError;

/// Reads validated arguments into the generated arguments struct.
pub fn parse_arguments<T: DeserializeOwned>(arguments: Value) -> Result<T, ToolError> {
    serde_json::from_value(arguments).map_err(|e| ToolError::invalid_arguments(e.to_string()))
}

/// Turns what a tool function returns into the call's result.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a tool",
    label = "the result is sent as JSON",
    note = "return a type that implements `serde::Serialize`, or `Result<T, E>` where `T: Serialize` and `E: Into<mcpmqtt::ToolError>`"
)]
pub trait IntoToolResult {
    /// Serialises the success, converts the failure.
    fn into_tool_result(self) -> Result<Value, ToolError>;
}

impl<T: Serialize, E: Into<ToolError>> IntoToolResult for Result<T, E> {
    fn into_tool_result(self) -> Result<Value, ToolError> {
        match self {
            Ok(v) => to_result(&v),
            Err(e) => Err(e.into()),
        }
    }
}

/// Wraps a plain (non-`Result`) return value.
pub struct Plain<T>(pub T);

impl<T: Serialize> IntoToolResult for Plain<T> {
    fn into_tool_result(self) -> Result<Value, ToolError> {
        to_result(&self.0)
    }
}

fn to_result<T: Serialize>(value: &T) -> Result<Value, ToolError> {
    serde_json::to_value(value).map_err(|e| ToolError::new(format!("could not serialise the result: {e}")))
}

/// What a tool argument must be. Generated code bounds each argument type
/// with it, at the span of the user's type, so a type that does not qualify
/// gets this one message.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a tool argument",
    label = "tool arguments are read from JSON: this type must implement `serde::Deserialize` and `schemars::JsonSchema`",
    note = "derive `serde::Deserialize` on it, and add `#[mcpmqtt::json_schema]` to derive `schemars::JsonSchema`"
)]
pub trait ToolArgument: DeserializeOwned + schemars::JsonSchema {}
impl<T: DeserializeOwned + schemars::JsonSchema> ToolArgument for T {}

/// What the `T` of a `State<T>` argument must be: shared by every call, on
/// any thread. Generated code bounds each state type with it, at the span
/// of the user's type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a tool's state",
    label = "`State<{Self}>` is shared by calls running on several threads: this type must be `Send + Sync + 'static`",
    note = "wrap what is not thread-safe: `Mutex<T>` instead of `RefCell<T>`, `Arc` instead of `Rc`; and own it rather than borrow it"
)]
pub trait StateType: Send + Sync + 'static {}
impl<T: Send + Sync + 'static> StateType for T {}

/// The `State<T>` of a `#[tool]` function's argument, from its context.
/// `build()` checked it was registered, so the error is only a safeguard
/// (a handler run by hand, with another context).
pub fn state<T: StateType>(ctx: &crate::CallContext) -> Result<crate::State<T>, ToolError> {
    ctx.state::<T>().ok_or_else(|| {
        ToolError::new(format!(
            "tool `{}` takes `State<{}>`, but no value of that type was registered with the server",
            ctx.tool(),
            std::any::type_name::<T>()
        ))
    })
}

/// What a tool's success value must be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a tool",
    label = "the result of a tool is sent as JSON: this type must implement `serde::Serialize`",
    note = "derive `serde::Serialize` on it (and add `#[mcpmqtt::json_schema]` to publish its output schema)"
)]
pub trait ToolOutput: Serialize {}
impl<T: Serialize> ToolOutput for T {}

/// What a tool's error type must be.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error of a tool",
    label = "this error must convert into `mcpmqtt::ToolError`",
    note = "any type that implements `std::fmt::Display` converts; or return `mcpmqtt::ToolError` itself"
)]
pub trait ToolErrorType: Into<ToolError> {}
impl<T: Into<ToolError>> ToolErrorType for T {}

/// Picks the output schema when the result type has one (autoref
/// specialisation: `(&&OutputSchema::<T>::new()).output_schema()`).
pub struct OutputSchema<T: ?Sized>(std::marker::PhantomData<T>);

impl<T: ?Sized> OutputSchema<T> {
    /// A probe for `T`.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        OutputSchema(std::marker::PhantomData)
    }
}

/// Chosen when `T: JsonSchema`.
pub trait HasOutputSchema {
    /// `Some(schema)`.
    fn output_schema(&self) -> Option<Value>;
}

impl<T: ?Sized + schemars::JsonSchema> HasOutputSchema for &OutputSchema<T> {
    fn output_schema(&self) -> Option<Value> {
        Some(crate::tool::schema::output_schema::<T>())
    }
}

/// Chosen otherwise.
pub trait NoOutputSchema {
    /// `None`.
    fn output_schema(&self) -> Option<Value>;
}

impl<T: ?Sized> NoOutputSchema for OutputSchema<T> {
    fn output_schema(&self) -> Option<Value> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, schemars::JsonSchema)]
    struct WithSchema {
        n: u32,
    }
    #[derive(Serialize)]
    struct WithoutSchema;

    #[test]
    #[allow(clippy::needless_borrow)] // the borrows pick the impl: autoref specialisation
    fn output_schema_only_when_json_schema() {
        assert!((&&OutputSchema::<WithSchema>::new()).output_schema().is_some());
        assert!((&&OutputSchema::<WithoutSchema>::new()).output_schema().is_none());
    }

    #[test]
    fn display_errors_become_tool_errors() {
        let r: Result<u32, std::num::ParseIntError> = "x".parse::<u32>();
        let e = r.into_tool_result().unwrap_err();
        assert_eq!(e.message(), "invalid digit found in string");
        let r: Result<(), ToolError> = Err(ToolError::new("no").with_code("E1"));
        assert_eq!(r.into_tool_result().unwrap_err().code(), Some("E1"));
    }
}
