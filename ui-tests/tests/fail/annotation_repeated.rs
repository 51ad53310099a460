use mcpmqtt::tool;

/// List the posts.
#[tool(read_only, open_world = false, read_only = true)]
async fn list_posts() -> Vec<String> {
    Vec::new()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<list_posts>();
    let _ = list_posts();
}
