//! Why a command failed, and the exit code each reason gets.
//!
//! Every [`CallError`] variant has its own code, so scripts can tell a refusal
//! by the broker from a tool's own failure without parsing messages.

use mcpmqtt::CallError;

/// The exit codes, as `--help` and the README list them.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  success
   1  any other failure (I/O, the MCP server of `expose` failed or exited)
   2  bad input: flags, --arg/--json, a manifest or ACL file
   3  could not connect to the broker
  10  invalid_arguments: the arguments do not match the tool's input schema
  11  unauthorized: the broker's ACL (or the server) refused this identity
  12  tool_error: the tool ran and failed
  13  timeout: no answer in time
  14  unavailable: no such tool online, or no server subscribed to it
  15  transport: the connection to the broker failed during the call
  16  protocol: the server's answer could not be read";

/// Exit code: any other failure.
pub const OTHER: u8 = 1;
/// Exit code: bad input on the command line or in a file named on it.
pub const USAGE: u8 = 2;
/// Exit code: the broker could not be reached, or refused the connection.
pub const CONNECT: u8 = 3;
/// Exit code: [`CallError::InvalidArguments`].
pub const INVALID_ARGUMENTS: u8 = 10;
/// Exit code: [`CallError::Unauthorized`].
pub const UNAUTHORIZED: u8 = 11;
/// Exit code: [`CallError::ToolError`].
pub const TOOL_ERROR: u8 = 12;
/// Exit code: [`CallError::Timeout`].
pub const TIMEOUT: u8 = 13;
/// Exit code: [`CallError::Unavailable`], or a tool with no online card.
pub const UNAVAILABLE: u8 = 14;
/// Exit code: [`CallError::Transport`].
pub const TRANSPORT: u8 = 15;
/// Exit code: [`CallError::Protocol`].
pub const PROTOCOL: u8 = 16;

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bad input: a flag, an argument, a file given on the command line.
    #[error("{0}")]
    Usage(String),
    /// Setting up the connection failed.
    #[error("{0}")]
    Setup(#[from] mcpmqtt::Error),
    /// A call failed.
    #[error("{0}")]
    Call(#[from] CallError),
    /// The tool has no online card.
    #[error("{0}")]
    NoSuchTool(String),
    /// Anything else.
    #[error("{0:#}")]
    Other(#[from] anyhow::Error),
}

impl Failure {
    /// The process exit code of this failure.
    pub fn code(&self) -> u8 {
        match self {
            Failure::Usage(_) => USAGE,
            Failure::Setup(e) => match e {
                mcpmqtt::Error::InvalidName { .. } | mcpmqtt::Error::InvalidUrl { .. } => USAGE,
                mcpmqtt::Error::InvalidArgument(_) | mcpmqtt::Error::InvalidSchema { .. } => USAGE,
                mcpmqtt::Error::IdentityMismatch { .. } => USAGE,
                mcpmqtt::Error::Connect(_)
                | mcpmqtt::Error::Tls(_)
                | mcpmqtt::Error::Closed
                | mcpmqtt::Error::SubscribeRefused { .. } => CONNECT,
                _ => OTHER,
            },
            Failure::Call(e) => call_error_code(e),
            Failure::NoSuchTool(_) => UNAVAILABLE,
            Failure::Other(_) => OTHER,
        }
    }
}

/// The exit code of a failed call: one per [`CallError`] variant.
pub fn call_error_code(error: &CallError) -> u8 {
    match error {
        CallError::InvalidArguments { .. } => INVALID_ARGUMENTS,
        CallError::Unauthorized { .. } => UNAUTHORIZED,
        CallError::ToolError { .. } => TOOL_ERROR,
        CallError::Timeout { .. } => TIMEOUT,
        CallError::Unavailable { .. } => UNAVAILABLE,
        CallError::Transport(_) => TRANSPORT,
        CallError::Protocol(_) => PROTOCOL,
        _ => OTHER,
    }
}

/// The short name of a call error's kind: the v0.1 error type, or
/// `transport` / `protocol` for the caller-side ones.
pub fn call_error_kind(error: &CallError) -> String {
    match error.error_type() {
        Some(kind) => kind.as_str().to_owned(),
        None => match error {
            CallError::Transport(_) => "transport".into(),
            CallError::Protocol(_) => "protocol".into(),
            _ => "error".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_error_has_its_own_code() {
        let errors = [
            CallError::InvalidArguments { message: "m".into() },
            CallError::Unauthorized { message: "m".into() },
            CallError::ToolError {
                message: "m".into(),
                code: None,
            },
            CallError::Timeout { message: "m".into() },
            CallError::Unavailable { message: "m".into() },
            CallError::Transport("m".into()),
            CallError::Protocol("m".into()),
        ];
        let codes: std::collections::BTreeSet<u8> = errors.iter().map(call_error_code).collect();
        assert_eq!(codes.len(), errors.len(), "{codes:?}");
        for code in &codes {
            assert!(![0, OTHER, USAGE, CONNECT].contains(code));
            assert!(
                EXIT_CODES_HELP.contains(&format!("  {code}  ")),
                "{code} is not documented"
            );
        }
        let readme = include_str!("../../README.md");
        for code in codes.iter().chain(&[0, OTHER, USAGE, CONNECT]) {
            assert!(
                readme.contains(&format!("\n| {code} | ")),
                "exit code {code} is not in the README"
            );
        }
        let kinds: Vec<String> = errors.iter().map(call_error_kind).collect();
        assert_eq!(
            kinds,
            [
                "invalid_arguments",
                "unauthorized",
                "tool_error",
                "timeout",
                "unavailable",
                "transport",
                "protocol"
            ]
        );
    }
}
