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
    // A method has no registration type (it would have to live in the
    // `impl` block), so `.tool::<...>()` is not written here.
    let _ = Crawler.crawl(String::new());
}
