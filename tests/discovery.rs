//! Discovery past the broker's queue: a namespace of 3,000 tools, three
//! times what Mosquitto queues for one client by default (1,000), is listed
//! whole by every client, and a listing that misses a card says so.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use mcpmqtt::{Error, ServerBuilder, ServerHandle, ToolDef, ToolError, ToolFilter};
use serde_json::json;
use support::fixtures::{wait_for_log, Raw};
use support::login::{client, online};
use support::mosquitto::Mosquitto;

const NS: &str = "scale";
const TOOLS: usize = 3_000;
/// How long a test waits for something the broker logs.
const PATIENCE: Duration = Duration::from_secs(20);

fn tool_name(server: &str, i: usize) -> String {
    format!("{server}_tool_{i:05}")
}

fn echo(name: String) -> ToolDef {
    ToolDef::builder(name)
        .description("Returns its arguments.")
        .input_schema(json!({"type": "object", "properties": {"text": {"type": "string"}}}))
        .handler(|_ctx, args| async move { Ok::<_, ToolError>(args) })
        .build()
        .expect("a valid tool")
}

/// A server hosting `n` echo tools.
fn many(server: &str, n: usize) -> ServerBuilder {
    (0..n).fold(mcpmqtt::Server::builder(server).namespace(NS), |builder, i| {
        builder.tool_def(echo(tool_name(server, i)))
    })
}

/// Two servers of 1,500 tools each.
async fn namespace(broker: &Mosquitto) -> (ServerHandle, ServerHandle) {
    let a = online(broker, many("alpha", TOOLS / 2)).await;
    let b = online(broker, many("beta", TOOLS / 2)).await;
    (a, b)
}

#[tokio::test]
async fn a_client_lists_every_tool_of_a_namespace_larger_than_the_brokers_queue() {
    let broker = Mosquitto::start();
    let (a, b) = namespace(&broker).await;
    // The limit is real on this broker: a v0.1 reader's wildcard
    // subscription to the Tool Cards overflows the client's queue.
    let mut v01_reader = Raw::connect(&broker, "v01-reader").await;
    v01_reader.subscribe("scale/mcp/tools/+/card").await;
    let dropped = "Outgoing messages are being dropped for client v01-reader";
    wait_for_log(&broker, PATIENCE, dropped, |log| log.contains(dropped).then_some(())).await;

    let scout = client(&broker, NS, "scout").await;
    let tools = scout.tools().await.expect("a complete listing");
    assert_eq!(tools.len(), TOOLS);
    let names: Vec<&str> = tools.iter().map(|c| c.tool.as_str()).collect();
    let expected: Vec<String> = ["alpha", "beta"]
        .iter()
        .flat_map(|s| (0..TOOLS / 2).map(move |i| tool_name(s, i)))
        .collect();
    assert_eq!(names, expected, "every tool, once, in name order");
    assert!(tools.iter().all(|c| c.input_schema["properties"]["text"].is_object()));
    assert!(
        !broker
            .log()
            .contains("Outgoing messages are being dropped for client scout"),
        "discovery stays within the broker's queue"
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_connecting_at_once_each_list_every_tool_with_emqx_like_limits() {
    // EMQX's defaults: 32 in flight, 1,000 queued per client.
    let broker = Mosquitto::builder()
        .extra_config("max_inflight_messages 32")
        .extra_config("max_queued_messages 1000")
        .start();
    let (a, b) = namespace(&broker).await;
    let url = broker.url();
    let listings: Vec<_> = (0..8)
        .map(|i| {
            let builder = mcpmqtt::Client::builder(format!("scout-{i}"))
                .broker(&url)
                .namespace(NS);
            tokio::spawn(async move {
                let c = builder.connect().await.expect("connected");
                c.tools().await.expect("a complete listing").len()
            })
        })
        .collect();
    let mut counts = Vec::new();
    for listing in listings {
        counts.push(listing.await.unwrap());
    }
    assert_eq!(counts, vec![TOOLS; 8]);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_broker_with_a_small_queue_still_delivers_every_card() {
    // A tenth of the default queue: the first batches overflow it, and what
    // was dropped is fetched again in smaller batches.
    let broker = Mosquitto::builder().extra_config("max_queued_messages 100").start();
    let a = online(&broker, many("alpha", 1_000)).await;
    let scout = client(&broker, NS, "scout").await;
    assert_eq!(scout.tools().await.expect("a complete listing").len(), 1_000);
    a.shutdown().await.unwrap();
}

#[tokio::test]
async fn one_tool_among_thousands_is_called_without_listing_anything() {
    let broker = Mosquitto::start();
    let (a, b) = namespace(&broker).await;
    let scout = client(&broker, NS, "scout").await;
    let last = tool_name("beta", TOOLS / 2 - 1);
    let result = scout.call(&last, json!({"text": "hi"})).await.unwrap();
    assert_eq!(result, json!({"text": "hi"}));
    // The names come from the two Server Cards alone.
    let names = scout.tool_names(&ToolFilter::new()).await;
    assert_eq!(names.len(), TOOLS);
    assert_eq!(names.last().unwrap(), &(last.clone(), "beta".to_owned()));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn pages_and_filters_cover_the_listing_exactly() {
    let broker = Mosquitto::start();
    let a = online(&broker, many("alpha", 250)).await;
    let b = online(&broker, many("beta", 250)).await;
    let scout = client(&broker, NS, "scout").await;

    let all = ToolFilter::new();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = scout.tools_page(&all, after.as_deref(), 64).await.unwrap();
        assert!(page.tools.len() <= 64);
        seen.extend(page.tools.into_iter().map(|c| c.tool));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen.len(), 500, "every tool once");
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 500);

    let betas = scout.tools_matching(&ToolFilter::new().server("beta")).await.unwrap();
    assert_eq!(betas.len(), 250);
    assert!(betas.iter().all(|c| c.server == "beta"));
    let prefixed = scout
        .tools_matching(&ToolFilter::new().prefix("alpha_tool_0010"))
        .await
        .unwrap();
    assert_eq!(prefixed.len(), 10, "alpha_tool_00100 to alpha_tool_00109");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_listing_that_misses_a_card_says_so() {
    let broker = Mosquitto::start();
    let a = online(&broker, many("alpha", 20)).await;
    // A server whose card lists a tool it never published a card for.
    let mut ghost = Raw::connect(&broker, "ghost").await;
    let card = json!({
        "version": "1", "server": "ghost", "namespace": NS, "tools": ["phantom"],
        "version_info": {"sdk": "x"}, "status": "online", "last_seen": "2026-12-01T00:00:00Z"
    });
    ghost
        .publish_retained("scale/mcp/servers/ghost/card", card.to_string())
        .await;
    let scout = client(&broker, NS, "scout").await;
    match scout.tools().await {
        Err(Error::Incomplete { listed, missing, found }) => {
            assert_eq!(listed, 21);
            assert_eq!(missing, ["phantom"]);
            assert_eq!(found.len(), 20);
        }
        other => panic!("expected an incomplete listing, got {other:?}"),
    }
    // The complete part is still there to be had.
    let alpha = scout.tools_matching(&ToolFilter::new().server("alpha")).await.unwrap();
    assert_eq!(alpha.len(), 20);
    a.shutdown().await.unwrap();
}
