//! Bridged calls as MCP tasks (the `io.modelcontextprotocol/tasks`
//! extension), for hosts that declare it.
//!
//! The call runs over MQTT whatever becomes of the request that created it;
//! `tasks/get` reports it:
//!
//! - `working`, with the last partial as the status message;
//! - `completed`, with the call's result, an `isError` one when the tool,
//!   its arguments or the broker refused it (as without a task);
//! - `failed` when no answer came: `timeout`, `transport` or `protocol`,
//!   with the error as `{code, message, data: {type}}`;
//! - `cancelled` after `tasks/cancel`, which cancels the MQTT call.
//!
//! A task is kept for its TTL, the call's timeout and [`RETENTION`] more, and
//! as long again once it ends, so a host can read its outcome.

use std::time::Duration;

use mcpmqtt::{CallError, CallOptions, Client};
use rmcp::model::{CallToolResult, CreateTaskResult};
use rmcp::task_manager::{TaskContext, TaskExit, TaskOptions};
use rmcp::ErrorData as McpError;
use serde_json::{json, Value};

use super::{failure, success, Bridge, Steps};
use crate::exit::call_error_kind;

/// How long a task is kept beyond its call's timeout.
pub const RETENTION: Duration = Duration::from_secs(600);
/// How often a host should poll `tasks/get`.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Starts `tool` as a task and returns its handle.
pub(super) fn start(
    bridge: &Bridge,
    tool: String,
    arguments: Value,
    timeout: Duration,
    modern: bool,
) -> CreateTaskResult {
    let options = CallOptions::new().timeout(timeout);
    let ttl = timeout.saturating_add(RETENTION);
    let task_options = TaskOptions::new()
        .with_ttl_ms(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
        .with_poll_interval_ms(POLL_INTERVAL.as_millis() as u64)
        .with_status_message(format!("calling `{tool}`"));
    let client = bridge.client.clone();
    let task = bridge.tasks.spawn(task_options, move |context| {
        Box::pin(run(client, tool, arguments, options, context, modern))
    });
    tracing::info!(task = %task.task_id, "task started");
    CreateTaskResult::new(task)
}

/// The task's call, to its end or its cancel.
async fn run(
    client: Client,
    tool: String,
    arguments: Value,
    options: CallOptions,
    context: TaskContext,
    modern: bool,
) -> Result<CallToolResult, TaskExit> {
    let mut pending = client.call_streaming(&tool, arguments, options);
    let mut steps = Steps::default();
    loop {
        tokio::select! {
            partial = pending.next_partial() => match partial {
                Some(partial) => context.set_status_message(steps.next(partial).message),
                None => break,
            },
            _ = context.cancelled() => {
                pending.cancel();
                break;
            }
        }
    }
    outcome(pending.result().await, modern)
}

/// How a call's outcome ends its task.
fn outcome(result: Result<Value, CallError>, modern: bool) -> Result<CallToolResult, TaskExit> {
    match result {
        Ok(value) => Ok(success(value, modern)),
        Err(CallError::Cancelled { .. }) => Err(TaskExit::Cancelled),
        Err(e @ (CallError::Timeout { .. } | CallError::Transport(_) | CallError::Protocol(_))) => {
            Err(TaskExit::Error(McpError::internal_error(
                e.to_string(),
                Some(json!({"type": call_error_kind(&e)})),
            )))
        }
        Err(e) => Ok(failure(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_end_tasks_as_the_extension_says() {
        let done = outcome(Ok(json!({"n": 1})), false).unwrap();
        assert_eq!(done.structured_content, Some(json!({"n": 1})));
        let refused = outcome(
            Err(CallError::ToolError {
                message: "nope".into(),
                code: None,
            }),
            false,
        )
        .unwrap();
        assert_eq!(refused.is_error, Some(true));
        assert!(matches!(
            outcome(Err(CallError::Cancelled { message: "x".into() }), true),
            Err(TaskExit::Cancelled)
        ));
        match outcome(Err(CallError::Timeout { message: "late".into() }), true) {
            Err(TaskExit::Error(e)) => {
                assert_eq!(e.message, "timeout: late");
                assert_eq!(e.data, Some(json!({"type": "timeout"})));
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}
