//! The broker's verdicts reach the caller at once: PUBACK 0x87 (not
//! authorized) as `unauthorized`, whatever the call's timeout. The ACL here is
//! written by hand; the generated ones are proven in their own tests.

mod support;

use std::time::{Duration, Instant};

use mcpmqtt::{CallError, CallOptions};
use serde_json::json;
use support::login::{logged_in_client, logged_in_server};
use support::mosquitto::Mosquitto;

const ACL: &str = "\
user gtm-mcp-server
topic write gtm/mcp/servers/gtm-mcp-server/card
topic write gtm/mcp/tools/+/card
topic write gtm/mcp/clients/+/responses
topic write gtm/mcp/clients/+/streams/+
topic read gtm/mcp/tools/+/call/#

user scout
topic write gtm/mcp/tools/query_watch_configs/call/scout
topic read gtm/mcp/clients/scout/responses
topic read gtm/mcp/clients/scout/streams/+
topic read gtm/mcp/tools/+/card
topic read gtm/mcp/servers/+/card
";

#[tokio::test]
async fn a_call_the_broker_refuses_fails_at_once_as_unauthorized() {
    let broker = Mosquitto::builder()
        .user("gtm-mcp-server", "server-pw")
        .user("scout", "scout-pw")
        .acl_file(ACL)
        .start();
    let server = logged_in_server(
        &broker,
        gtm_tools::gtm_server().shared_subscription(false),
        "gtm-mcp-server",
        "server-pw",
    )
    .await;
    let scout = logged_in_client(&broker, "gtm", "scout", "scout-pw").await;
    scout.call("query_watch_configs", json!({})).await.unwrap();

    let started = Instant::now();
    let refused = scout
        .call_with(
            "create_social_post",
            json!({"platform": "x", "text": "hi"}),
            CallOptions::new().timeout(Duration::from_secs(60)),
        )
        .await;
    match refused {
        Err(CallError::Unauthorized { message }) => assert!(message.contains("0x87"), "{message}"),
        other => panic!("expected unauthorized, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "refused at once, not by the 60 s timeout"
    );
    // The connection survives the refusal.
    scout.call("query_watch_configs", json!({})).await.unwrap();
    server.shutdown().await.unwrap();
}
