use mcpmqtt::tool;

/// Shout.
#[tool]
async fn shout(text: &str) -> String {
    text.to_uppercase()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<shout>();
    let _ = shout("a");
}
