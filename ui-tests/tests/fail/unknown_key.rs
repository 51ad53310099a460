use mcpmqtt::tool;

/// Crawl a site.
#[tool(allowed_caller = ["scout"])]
async fn crawl_site(url: String) -> String {
    url
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<crawl_site>();
    let _ = crawl_site(String::new());
}
