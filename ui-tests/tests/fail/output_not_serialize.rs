use mcpmqtt::{tool, ToolError};

pub struct Report {
    pub pages: u32,
}

/// Crawl a site.
#[tool]
async fn crawl_site(url: String) -> Result<Report, ToolError> {
    Ok(Report {
        pages: url.len() as u32,
    })
}

fn main() {
    let _ = mcpmqtt::Server::builder("s").tool::<crawl_site>();
    let _ = crawl_site(String::new());
}
