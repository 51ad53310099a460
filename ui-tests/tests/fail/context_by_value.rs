use mcpmqtt::{tool, CallContext};

/// Who calls?
#[tool]
async fn whoami(ctx: CallContext) -> String {
    ctx.caller().id().to_owned()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<whoami>();
}
