//! Calls the gtm tools as `scout`: discovers them, reads the watch
//! configurations, crawls a site with live progress, and tries to post
//! (which the broker refuses when it enforces the generated ACL).
//!
//! ```text
//! cargo run --example scout -- --broker mqtt://127.0.0.1:1883 --namespace gtm
//! ```

use std::time::Duration;

use clap::Parser;
use gtm_tools::{init_logging, ConnectArgs};
use mcpmqtt::{CallOptions, Client, Partial};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Calls the gtm tools as scout")]
struct Args {
    #[command(flatten)]
    connect: ConnectArgs,
    /// The site to crawl.
    #[arg(long, default_value = "https://example.com")]
    url: String,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    let args = Args::parse();
    match run(&args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, in the error's own words (its Display form).
            eprintln!("scout: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::builder(args.connect.identity("scout")?)
        .broker_options(args.connect.broker_options()?)
        .namespace(&args.connect.namespace)
        .connect()
        .await?;
    client.wait_for_tool("crawl_site", Duration::from_secs(10)).await?;

    for card in client.tools().await? {
        println!(
            "tool {:<22} by {} (callers: {})",
            card.tool,
            card.server,
            card.allowed_callers.join(", ")
        );
    }

    let configs = client
        .call("query_watch_configs", json!({"platform": "reddit"}))
        .await?;
    println!("query_watch_configs -> {configs}");

    let options = CallOptions::new().on_partial(|p| {
        if let Partial::Text(t) = p {
            println!("  ... {t}");
        }
    });
    let report = client
        .call_with("crawl_site", json!({"url": args.url, "pages": 3}), options)
        .await?;
    println!("crawl_site -> {report}");

    match client
        .call(
            "create_social_post",
            json!({"platform": "x", "text": "hello from scout"}),
        )
        .await
    {
        Ok(v) => println!("create_social_post -> {v} (no ACL enforced on this broker)"),
        Err(e) => println!("create_social_post refused: {e}"),
    }
    client.disconnect().await;
    Ok(())
}
