//! Two tools with the same name on one server compile (the names are only
//! known together when the server is built) and make `build` fail with
//! `Error::DuplicateTool`, naming the tool.
#![deny(warnings)]

use mcpmqtt::tool;

/// Crawl a site.
#[tool]
async fn crawl_site(url: String) -> String {
    url
}

/// Another crawler, by mistake under the same tool name.
#[tool(name = "crawl_site")]
async fn crawl_fast(url: String) -> String {
    url
}

fn main() {
    let err = mcpmqtt::Server::builder("dup")
        .broker("mqtt://127.0.0.1:1883")
        .tool::<crawl_site>()
        .tool::<crawl_fast>()
        .build()
        .unwrap_err();
    assert!(
        matches!(err, mcpmqtt::Error::DuplicateTool(ref name) if name == "crawl_site"),
        "{err}"
    );
    assert!(err.to_string().contains("registered twice"), "{err}");

    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert_eq!(rt.block_on(crawl_site("a".into())), rt.block_on(crawl_fast("a".into())));
}
