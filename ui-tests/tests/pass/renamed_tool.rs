//! `#[tool(name = "...")]` sets the tool's name; the function and its
//! registration type keep the function's name.
#![deny(warnings)]

use mcpmqtt::{tool, Tool};

/// Crawl a site.
#[tool(name = "crawl_site", description = "Crawl a site, politely.")]
async fn crawl(url: String) -> String {
    url
}

/// A name that is not a Rust identifier, and a raw identifier.
#[tool(name = "gtm.query-watch-configs")]
async fn r#type() -> u8 {
    1
}

/// The name defaults to the function's, without `r#`.
#[tool]
async fn r#match() -> u8 {
    2
}

fn main() {
    let def = crawl::definition();
    assert_eq!(def.name(), "crawl_site");
    assert_eq!(def.description(), "Crawl a site, politely.");
    assert_eq!(r#type::definition().name(), "gtm.query-watch-configs");
    assert_eq!(r#match::definition().name(), "match");

    let server = mcpmqtt::Server::builder("renamed")
        .broker("mqtt://127.0.0.1:1883")
        .tool::<crawl>()
        .tool::<r#type>()
        .tool::<r#match>()
        .build()
        .unwrap();
    let mut names: Vec<&str> = server.tools().iter().map(|t| t.name()).collect();
    names.sort_unstable();
    assert_eq!(names, ["crawl_site", "gtm.query-watch-configs", "match"]);

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(crawl("https://example.com".into())), "https://example.com");
    assert_eq!(rt.block_on(r#type()) + rt.block_on(r#match()), 3);
}
