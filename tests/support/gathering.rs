//! Gathering a call's partials: shared by the root package's tests and the
//! command line's (`mcpmqtt-cli/tests/common`).

use std::sync::{Arc, Mutex};

use mcpmqtt::{CallError, CallOptions, Client, Partial};
use serde_json::Value;

/// Calls `tool` and gathers the partials it streams, in the order the
/// client handed them over.
pub async fn call_gathering(client: &Client, tool: &str, arguments: Value) -> (Result<Value, CallError>, Vec<Partial>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let options = CallOptions::new().on_partial(move |p| sink.lock().unwrap().push(p));
    let result = client.call_with(tool, arguments, options).await;
    let partials = std::mem::take(&mut *seen.lock().unwrap());
    (result, partials)
}
