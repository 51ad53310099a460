//! The README's first command: `cargo run --example quickstart`.
//!
//! With no `MQTT_URL` set it starts an embedded MQTT 5 broker on a free
//! loopback port (a development default, not the production path), loaded
//! with the ACL generated from the tools' `allowed_callers`; with
//! `MQTT_URL=mqtt://host:port` it uses that broker instead. It hosts the gtm
//! tools, calls them as `scout`, shows `crawl_site` streaming its progress,
//! shows the broker refusing scout a tool it was not granted, and prints the
//! results.

use std::collections::BTreeMap;
use std::time::Duration;

use gtm_tools::{gtm_server, init_logging, NAMESPACE};
use mcpmqtt::embedded::EmbeddedBroker;
use mcpmqtt::{CallOptions, Client, Partial};
use serde_json::json;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    init_logging();
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, in the error's own words (its Display form).
            eprintln!("quickstart: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    // One password per identity of the ACL manifest (made up for the demo).
    let manifest = gtm_server().build()?.acl_manifest();
    let passwords: BTreeMap<String, String> = manifest
        .identities
        .iter()
        .map(|i| (i.identity.clone(), uuid::Uuid::new_v4().simple().to_string()))
        .collect();

    let (_broker, url, enforced) = match std::env::var("MQTT_URL") {
        Ok(url) => {
            println!("using the broker at {url} (its own ACL applies, if any)");
            (None, url, false)
        }
        Err(_) => {
            let mut builder = EmbeddedBroker::builder().acl(&manifest);
            for (identity, password) in &passwords {
                builder = builder.user(identity.clone(), password.clone());
            }
            let broker = builder.start().await?;
            let url = broker.url();
            println!("started an embedded MQTT 5 broker at {url}, enforcing the generated ACL:");
            for identity in &manifest.identities {
                println!(
                    "  {:<15} may publish {} topics, subscribe {}",
                    identity.identity,
                    identity.publish.len(),
                    identity.subscribe.len()
                );
            }
            (Some(broker), url, true)
        }
    };
    let login = |identity: &str| {
        if enforced {
            passwords.get(identity).cloned()
        } else {
            None
        }
    };
    let connect = |identity: &'static str| {
        let mut builder = Client::builder(identity).broker(&url).namespace(NAMESPACE);
        if let Some(password) = login(identity) {
            builder = builder.password(password);
        }
        builder.connect()
    };

    let mut server = gtm_server().broker(&url);
    if let Some(password) = login(gtm_tools::SERVER_NAME) {
        server = server.credentials(gtm_tools::SERVER_NAME, password);
    }
    let server = server.build()?.start().await?;
    println!(
        "\n{} is online with {} tools",
        server.server().name(),
        server.server().tools().len()
    );

    let scout = connect("scout").await?;
    scout.wait_for_tool("crawl_site", Duration::from_secs(5)).await?;
    for card in scout.tools().await? {
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

    let post = json!({"platform": "x", "text": "MCP over MQTT, with the broker as the bouncer"});
    println!("\nscout -> create_social_post (a tool granted to operator only)");
    match scout.call("create_social_post", post.clone()).await {
        Ok(v) => println!("  accepted: {v} (this broker enforces no ACL)"),
        Err(e) => println!("  refused by the broker: {e}"),
    }
    let operator = connect("operator").await?;
    println!("\noperator -> create_social_post");
    println!("  {}", operator.call("create_social_post", post).await?);

    scout.disconnect().await;
    operator.disconnect().await;
    server.shutdown().await?;
    println!("\ndone: the server published its offline cards and disconnected");
    Ok(())
}
