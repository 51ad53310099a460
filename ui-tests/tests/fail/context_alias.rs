use mcpmqtt::tool;
// The macro finds the context by its name, `CallContext`: an alias hides it.
use mcpmqtt::CallContext as Ctx;

/// Who calls?
#[tool]
async fn whoami(ctx: &Ctx) -> String {
    ctx.caller().id().to_owned()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<whoami>();
    let (ctx, _partials) = Ctx::for_test("whoami", "scout");
    let _ = whoami(&ctx);
}
