use mcpmqtt::tool;

/// Not `Display`, so it cannot become a `ToolError`.
#[derive(Debug)]
pub struct CrawlFailed;

/// Crawl a site.
#[tool]
async fn crawl_site(url: String) -> Result<u32, CrawlFailed> {
    Ok(url.len() as u32)
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<crawl_site>();
    let _ = crawl_site(String::new());
}
