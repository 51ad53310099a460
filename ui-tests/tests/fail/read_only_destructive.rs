use mcpmqtt::tool;

/// Delete a post.
#[tool(read_only, idempotent, destructive)]
async fn delete_post(id: String) -> String {
    id
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<delete_post>();
    let _ = delete_post(String::new());
}
