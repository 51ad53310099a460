// The editor imported the wrong `Context`.
use std::task::Context;

use mcpmqtt::tool;

/// Who calls?
#[tool]
async fn whoami(ctx: &Context<'_>) -> String {
    format!("{:?}", ctx.waker())
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<whoami>();
    let _ = whoami(&Context::from_waker(std::task::Waker::noop()));
}
