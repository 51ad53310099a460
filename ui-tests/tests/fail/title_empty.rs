use mcpmqtt::tool;

/// List the posts.
#[tool(title = "", read_only)]
async fn list_posts() -> Vec<String> {
    Vec::new()
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<list_posts>();
    let _ = list_posts();
}
