use std::cell::Cell;

use mcpmqtt::{tool, State};

/// Counts calls.
#[tool]
async fn count(hits: State<Cell<u64>>) -> u64 {
    hits.set(hits.get() + 1);
    hits.get()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<count>();
}
