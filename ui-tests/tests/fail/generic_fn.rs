use mcpmqtt::tool;

/// Echo anything.
#[tool]
async fn echo<T: serde::Serialize>(value: T) -> T {
    value
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<echo>();
    let _ = echo(1);
}
