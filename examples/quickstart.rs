//! The README's first command: `cargo run --example quickstart`.
//!
//! With no `MQTT_URL` set it starts an embedded MQTT 5 broker on a free
//! loopback port (a development default, not the production path); with
//! `MQTT_URL=mqtt://host:port` it uses that broker instead. It hosts the gtm
//! tools, calls them as `scout`, shows `crawl_site` streaming its progress,
//! and prints the results.

use std::time::Duration;

use gtm_tools::{gtm_server, init_logging};
use mcpmqtt::embedded::EmbeddedBroker;
use mcpmqtt::{CallOptions, Client, Partial};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    init_logging();
    let (_broker, url) = match std::env::var("MQTT_URL") {
        Ok(url) => {
            println!("using the broker at {url}");
            (None, url)
        }
        Err(_) => {
            let broker = EmbeddedBroker::start().await?;
            let url = broker.url();
            println!("started an embedded MQTT 5 broker at {url}");
            (Some(broker), url)
        }
    };

    let server = gtm_server().broker(&url).build()?.start().await?;
    println!(
        "{} is online with {} tools",
        server.server().name(),
        server.server().tools().len()
    );

    let scout = Client::builder("scout")
        .broker(&url)
        .namespace(gtm_tools::NAMESPACE)
        .connect()
        .await?;
    scout.wait_for_tool("crawl_site", Duration::from_secs(5)).await?;
    for card in scout.tools().await {
        println!(
            "  discovered {:<20} streaming={:<5} callers=[{}]",
            card.tool,
            card.supports_streaming,
            card.allowed_callers.join(", ")
        );
    }

    let configs = scout
        .call("query_watch_configs", json!({"platform": "hackernews"}))
        .await?;
    println!("\nscout -> query_watch_configs {{platform: hackernews}}\n  {configs}");

    println!("\nscout -> crawl_site {{url: https://example.com, pages: 4}}");
    let progress = CallOptions::new().on_partial(|p| {
        if let Partial::Text(t) = p {
            println!("  progress: {t}");
        }
    });
    let report = scout
        .call_with(
            "crawl_site",
            json!({"url": "https://example.com", "pages": 4}),
            progress,
        )
        .await?;
    println!("  result: {report}");

    println!("\nscout -> query_watch_configs {{platform: \"myspace\"}}");
    match scout.call("query_watch_configs", json!({"platform": "myspace"})).await {
        Ok(v) => println!("  unexpected success: {v}"),
        Err(e) => println!("  refused by the server: {e}"),
    }

    scout.disconnect().await;
    server.shutdown().await?;
    println!("\ndone: the server published its offline cards and disconnected");
    Ok(())
}
