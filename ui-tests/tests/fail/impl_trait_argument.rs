use mcpmqtt::tool;

/// Shout.
#[tool]
async fn shout(text: impl Into<String>) -> String {
    text.into().to_uppercase()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<shout>();
    let _ = shout("a");
}
