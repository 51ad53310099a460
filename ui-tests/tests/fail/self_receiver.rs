use mcpmqtt::tool;

pub struct Crawler;

impl Crawler {
    /// Crawl a site.
    #[tool]
    pub async fn crawl(&self, url: String) -> String {
        url
    }
}

fn main() {
    let _ = Crawler.crawl(String::new());
}
