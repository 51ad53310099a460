use mcpmqtt::{tool, CallContext};

/// Who calls, and about which call?
#[tool]
async fn whoami(ctx: &CallContext, call: &CallContext) -> String {
    format!("{} {}", ctx.caller().id(), call.caller().id())
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<whoami>();
    let (ctx, _partials) = CallContext::for_test("whoami", "scout");
    let _ = whoami(&ctx, &ctx);
}
