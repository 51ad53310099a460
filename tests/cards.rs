//! Discovery: retained Tool and Server Cards, the Last Will, graceful shutdown.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use mcpmqtt::Status;
use serde_json::Value;
use support::fixtures::{gtm_client, gtm_online, Raw, PATIENCE};
use support::mosquitto::Mosquitto;

const TOOL_CARD_FIELDS: [&str; 13] = [
    "version",
    "tool",
    "server",
    "namespace",
    "description",
    "input_schema",
    "output_schema",
    "supports_streaming",
    "requires_auth",
    "allowed_callers",
    "version_info",
    "status",
    "last_seen",
];

fn assert_recent(ts: &str) {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("last_seen {ts:?} is not RFC 3339: {e}"));
    let age = time::OffsetDateTime::now_utc() - t;
    assert!(age.whole_seconds().abs() < 60, "last_seen {ts} is not now");
}

#[tokio::test]
async fn cards_are_retained_with_every_v01_field() {
    let broker = Mosquitto::start();
    let server = gtm_online(&broker).await;

    // A subscriber that arrives later still gets the cards: they are retained.
    let mut raw = Raw::connect(&broker, "observer").await;
    raw.subscribe("gtm/mcp/tools/+/card").await;
    let mut cards = Vec::new();
    for _ in 0..3 {
        let p = raw.recv().await;
        assert!(p.retain, "tool cards are retained");
        cards.push(serde_json::from_slice::<Value>(&p.payload).unwrap());
    }
    cards.sort_by_key(|c| c["tool"].as_str().unwrap().to_owned());
    let names: Vec<&str> = cards.iter().map(|c| c["tool"].as_str().unwrap()).collect();
    assert_eq!(names, ["crawl_site", "create_social_post", "query_watch_configs"]);
    for card in &cards {
        for field in TOOL_CARD_FIELDS {
            assert!(
                card.get(field).is_some(),
                "{} card lacks {field}: {card:#}",
                card["tool"]
            );
        }
        assert_eq!(card["version"], "1");
        assert_eq!(card["server"], "gtm-mcp-server");
        assert_eq!(card["namespace"], "gtm");
        assert_eq!(card["status"], "online");
        assert_eq!(card["input_schema"]["type"], "object");
        assert!(card["version_info"]["sdk"].as_str().unwrap().starts_with("mcpmqtt-rs/"));
        assert_recent(card["last_seen"].as_str().unwrap());
    }
    assert_eq!(cards[0]["supports_streaming"], true);
    assert_eq!(cards[0]["allowed_callers"], serde_json::json!(["scout", "operator"]));
    assert_eq!(cards[1]["allowed_callers"], serde_json::json!(["operator"]));
    assert_eq!(
        cards[2]["description"],
        "List the platforms the team watches and what for."
    );
    // The extension fields MCP hosts read: a title and the hints.
    assert_eq!(cards[2]["title"], "Watch configurations");
    assert_eq!(
        cards[2]["annotations"],
        serde_json::json!({"readOnlyHint": true, "idempotentHint": true, "openWorldHint": false})
    );
    assert_eq!(
        cards[1]["annotations"],
        serde_json::json!({"destructiveHint": false, "openWorldHint": true})
    );
    // Numbers carry their bounds, not schemars' non-standard formats.
    let interval = &cards[2]["output_schema"]["properties"]["configs"]["items"]["properties"]["interval_minutes"];
    assert_eq!(interval["type"], "integer", "{:#}", cards[2]["output_schema"]);
    assert_eq!(interval["minimum"], 0);
    for card in &cards {
        assert!(!card.to_string().contains("\"format\""), "a format in {card:#}");
    }

    raw.subscribe("gtm/mcp/servers/+/card").await;
    let p = raw.recv().await;
    assert!(p.retain);
    let card: Value = serde_json::from_slice(&p.payload).unwrap();
    assert_eq!(card["server"], "gtm-mcp-server");
    assert_eq!(card["status"], "online");
    assert_eq!(card["tools"].as_array().unwrap().len(), 3);
    assert_recent(card["last_seen"].as_str().unwrap());

    // The client's view of the same cards.
    let client = gtm_client(&broker, "scout").await;
    let tools = client.tools().await.unwrap();
    assert_eq!(tools.len(), 3);
    assert!(tools.iter().all(|t| t.status == Status::Online));
    assert_eq!(client.servers().await.len(), 1);
    let crawl = client.tool_card("crawl_site").await.unwrap().unwrap();
    assert!(crawl.supports_streaming);
    assert!(
        crawl.output_schema.is_some(),
        "CrawlReport derives JsonSchema, so the card has an output schema"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_republishes_every_card_offline() {
    let broker = Mosquitto::start();
    let server = gtm_online(&broker).await;
    let client = gtm_client(&broker, "scout").await;
    client.wait_for_tool("crawl_site", PATIENCE).await.unwrap();
    server.shutdown().await.unwrap();

    let offline = client
        .wait_for_server_offline("gtm-mcp-server", PATIENCE)
        .await
        .unwrap();
    assert_recent(&offline.last_seen);
    let mut raw = Raw::connect(&broker, "observer").await;
    raw.subscribe("gtm/mcp/tools/+/card").await;
    for _ in 0..3 {
        let (_, card) = raw.recv_json().await;
        assert_eq!(card["status"], "offline", "{card}");
    }
    assert!(
        client.tools().await.unwrap().is_empty(),
        "no online tools after shutdown"
    );
}

#[tokio::test]
async fn a_killed_server_is_announced_offline_by_its_last_will() {
    let broker = Mosquitto::start();
    let exe = support::example_path("gtm_server");
    let mut child = support::Spawned::spawn(
        Command::new(&exe)
            .args(["--broker", &broker.url(), "--namespace", "gtm"])
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    );
    let client = gtm_client(&broker, "scout").await;
    client.wait_for_tool("query_watch_configs", PATIENCE).await.unwrap();
    assert_eq!(client.servers().await.len(), 1);

    // SIGKILL: no goodbye, so only the Last Will can say it is gone.
    child.kill();
    let card = client
        .wait_for_server_offline("gtm-mcp-server", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(card.status, Status::Offline);
    assert!(client.servers().await.is_empty());
}
