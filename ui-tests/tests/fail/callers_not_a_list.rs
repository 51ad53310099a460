use mcpmqtt::tool;

/// Crawl a site.
#[tool(allowed_callers = "scout")]
async fn crawl_site(url: String) -> String {
    url
}

fn main() {
    // The function and its registration still resolve: no follow-on errors.
    let _ = mcpmqtt::Server::builder("s").tool::<crawl_site>();
    let _ = crawl_site(String::new());
}
