use mcpmqtt::tool;

/// Search posts.
#[tool]
async fn search(
    /// At most this many.
    #[arg(renmae = "maxResults")]
    limit: u32,
) -> u32 {
    limit
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<search>();
    let _ = search(3);
}
