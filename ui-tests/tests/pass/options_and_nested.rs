//! Optional arguments, nested types through `#[mcpmqtt::json_schema]`, doc
//! comments on arguments, `#[arg(rename)]`, and every option.
#![deny(warnings)]

use mcpmqtt::{tool, CallContext, Tool, ToolError};
use serde::{Deserialize, Serialize};

/// A social platform.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// reddit.com
    Reddit,
    /// x.com
    X,
    /// news.ycombinator.com
    Hackernews,
}

/// A window of days.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Window {
    /// The first day, `YYYY-MM-DD`.
    pub from: String,
    /// How many days.
    #[serde(default)]
    pub days: u32,
}

/// What the search found.
#[mcpmqtt::json_schema]
#[derive(Debug, Serialize)]
pub struct Found {
    /// The matching posts.
    pub posts: Vec<String>,
}

/// Search the posts of a platform.
///
/// Returns at most `limit` posts.
#[tool(
    name = "search_posts",
    allowed_callers = ["scout", "analyst"],
    version = "2.0.1",
    timeout_ms = 1500
)]
pub async fn search(
    _ctx: &CallContext,
    /// Where to search.
    platform: Platform,
    /// The words to look for.
    query: String,
    /// When; all time if absent.
    window: Option<Window>,
    /// At most this many posts (default 10).
    #[arg(rename = "maxResults")]
    limit: Option<u32>,
    /// Only from these platforms too.
    also: Vec<Platform>,
) -> Result<Found, ToolError> {
    let n = limit.unwrap_or(10) as usize;
    let days = window.map_or(0, |w| w.days);
    let posts = std::iter::once(platform)
        .chain(also)
        .map(|p| format!("{p:?}: {query} ({days} days)"))
        .take(n)
        .collect();
    Ok(Found { posts })
}

fn main() {
    let def = search::definition();
    assert_eq!(def.name(), "search_posts");
    assert_eq!(
        def.description(),
        "Search the posts of a platform.\n\nReturns at most `limit` posts."
    );
    assert_eq!(def.allowed_callers(), ["scout", "analyst"]);
    assert_eq!(def.version(), Some("2.0.1"));
    assert_eq!(def.timeout(), Some(std::time::Duration::from_millis(1500)));

    let props = def.input_schema()["properties"].as_object().unwrap();
    let names: Vec<&str> = props.keys().map(String::as_str).collect();
    for name in ["platform", "query", "window", "maxResults", "also"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    assert!(!props.contains_key("limit"));
    assert!(!props.contains_key("_ctx"));
    assert_eq!(
        props["maxResults"]["description"],
        "At most this many posts (default 10)."
    );
    assert_eq!(
        def.output_schema().unwrap()["properties"]["posts"]["description"],
        "The matching posts."
    );

    let (ctx, _partials) = CallContext::for_test("search_posts", "scout");
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let found = rt
        .block_on(search(
            &ctx,
            Platform::X,
            "mqtt".into(),
            None,
            Some(2),
            vec![Platform::Reddit, Platform::Hackernews],
        ))
        .unwrap();
    assert_eq!(found.posts, ["X: mqtt (0 days)", "Reddit: mqtt (0 days)"]);
}
