use mcpmqtt::tool;

/// Post to a social network.
#[tool(open_world = "no")]
async fn post(text: String) -> String {
    text
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<post>();
    let _ = post(String::new());
}
