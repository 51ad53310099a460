use mcpmqtt::{tool, CallContext};

/// Who calls?
#[tool]
async fn whoami(ctx: &mut CallContext) -> String {
    ctx.caller().id().to_owned()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<whoami>();
    let (mut ctx, _partials) = CallContext::for_test("whoami", "scout");
    let _ = whoami(&mut ctx);
}
