use mcpmqtt::tool;

/// Add two numbers.
#[tool]
async fn add((a, b): (i32, i32)) -> i32 {
    a + b
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<add>();
    let _ = add((1, 2));
}
