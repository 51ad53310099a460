//! A `#[tool]` function is still a plain `async fn`: unit tests call it
//! directly, with a context from `CallContext::for_test`, and read its
//! definition from the generated registration type.

use std::time::Duration;

use mcpmqtt::{tool, CallContext, Partial, Tool, ToolError};
use serde::{Deserialize, Serialize};

/// What a crawl found.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct CrawlReport {
    /// The site's root.
    pub url: String,
    /// The pages visited, in order.
    pub pages: Vec<String>,
}

/// Crawl a site,
/// one partial per page.
#[tool(
    name = "crawl_site",
    allowed_callers = ["scout", "operator"],
    streaming,
    version = "1.2.0",
    timeout_ms = 5000
)]
pub async fn crawl(
    ctx: &CallContext,
    /// The first URL.
    url: String,
    /// Pages to crawl (default 3).
    #[arg(rename = "maxPages")]
    pages: Option<u32>,
) -> Result<CrawlReport, ToolError> {
    let pages = pages.unwrap_or(3);
    if pages == 0 {
        return Err(ToolError::invalid_arguments("`maxPages` must be positive"));
    }
    let mut visited = Vec::new();
    for i in 1..=pages {
        let page = format!("{url}/page/{i}");
        ctx.emit_text(format!("crawled {page}")).await?;
        visited.push(page);
    }
    Ok(CrawlReport { url, pages: visited })
}

/// Says who is calling.
#[tool]
async fn whoami(ctx: &CallContext) -> String {
    ctx.caller().id().to_owned()
}

#[tokio::test]
async fn the_function_is_called_directly() {
    let (ctx, mut partials) = CallContext::for_test("crawl_site", "scout");
    let report = crawl(&ctx, "https://example.com".into(), Some(2)).await.unwrap();
    assert_eq!(
        report.pages,
        ["https://example.com/page/1", "https://example.com/page/2"]
    );
    assert_eq!(
        partials.recv().await,
        Some(Partial::Text("crawled https://example.com/page/1".into()))
    );
    assert_eq!(
        partials.recv().await,
        Some(Partial::Text("crawled https://example.com/page/2".into()))
    );

    let err = crawl(&ctx, "https://example.com".into(), Some(0)).await.unwrap_err();
    assert_eq!(err.message(), "`maxPages` must be positive");

    assert_eq!(whoami(&ctx).await, "scout");
}

#[test]
fn the_definition_carries_the_options() {
    let def = <crawl as Tool>::definition();
    assert_eq!(def.name(), "crawl_site");
    assert_eq!(def.description(), "Crawl a site,\none partial per page.");
    assert_eq!(def.allowed_callers(), ["scout", "operator"]);
    assert!(def.is_streaming());
    assert_eq!(def.timeout(), Some(Duration::from_millis(5000)));
    assert_eq!(def.version(), Some("1.2.0"));

    let schema = def.input_schema();
    assert_eq!(schema["required"].as_array().unwrap().len(), 1);
    assert_eq!(schema["required"][0], "url");
    assert_eq!(schema["properties"]["url"]["description"], "The first URL.");
    assert_eq!(
        schema["properties"]["maxPages"]["description"],
        "Pages to crawl (default 3)."
    );
    let output = def.output_schema().expect("CrawlReport has a schema");
    assert_eq!(
        output["properties"]["pages"]["description"],
        "The pages visited, in order."
    );
}

#[test]
fn defaults() {
    let def = whoami::definition();
    assert_eq!(def.name(), "whoami");
    assert_eq!(def.description(), "Says who is calling.");
    assert!(def.allowed_callers().is_empty());
    assert!(!def.is_streaming());
    assert_eq!(def.timeout(), None);
    assert_eq!(def.version(), Some(env!("CARGO_PKG_VERSION")));
    assert!(def.input_schema()["properties"].as_object().unwrap().is_empty());
}
