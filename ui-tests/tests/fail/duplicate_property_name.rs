use mcpmqtt::tool;

/// Search posts.
#[tool]
async fn search(
    /// The words to look for.
    query: String,
    /// Extra words, in the same JSON property by mistake.
    #[arg(rename = "query")]
    extra: Option<String>,
) -> String {
    format!("{query} {}", extra.unwrap_or_default())
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<search>();
    let _ = search(String::new(), None);
}
