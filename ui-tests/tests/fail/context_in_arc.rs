use std::sync::Arc;

use mcpmqtt::{tool, CallContext};

/// Who calls?
#[tool]
async fn whoami(ctx: Arc<CallContext>) -> String {
    ctx.caller().id().to_owned()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<whoami>();
    let (ctx, _partials) = CallContext::for_test("whoami", "scout");
    let _ = whoami(Arc::new(ctx));
}
