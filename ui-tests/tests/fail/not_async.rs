use mcpmqtt::tool;

/// Echo the text.
#[tool]
fn echo(text: String) -> String {
    text
}

fn main() {
    // The registration still resolves: no "cannot find type" on top.
    let _ = mcpmqtt::Server::builder("s").tool::<echo>();
    let _ = echo(String::new());
}
