use std::time::Duration;
use mcpmqtt::{CallError, Client, Server, ToolDef, ToolError};
use serde_json::json;

#[tokio::test]
async fn smoke() {
    let url = std::env::var("SMOKE_URL").unwrap_or("mqtt://127.0.0.1:18830".into());
    let echo = ToolDef::builder("echo")
        .input_schema(json!({"type":"object","properties":{"text":{"type":"string"}},"required":["text"],"additionalProperties":false}))
        .handler(|_ctx, args| async move { Ok::<_, ToolError>(args) })
        .build().unwrap();
    let boom = ToolDef::builder("boom").handler(|_ctx, _args| async move { panic!("kaboom") }).build().unwrap();
    let server = Server::builder("smoke-server").broker(&url).namespace("smoke")
        .tool_def(echo).tool_def(boom).build().unwrap().start().await.unwrap();
    let client = Client::builder("tester").broker(&url).namespace("smoke").connect().await.unwrap();
    let t = std::time::Instant::now();
    let r = client.call("echo", json!({"text": "hi"})).await.unwrap();
    println!("echo {r} in {:?}", t.elapsed());
    let t = std::time::Instant::now();
    for _ in 0..100 { client.call("echo", json!({"text": "hi"})).await.unwrap(); }
    println!("100 sequential in {:?}", t.elapsed());
    let e = client.call("echo", json!({"text": 5})).await.unwrap_err();
    println!("{e}");
    let e = client.call("boom", json!({})).await.unwrap_err();
    println!("{e}");
    let e = client.call("nobody", json!({})).await.unwrap_err();
    println!("{e}");
    assert!(matches!(e, CallError::Unavailable{..}));
    println!("{:?}", client.tools().await.iter().map(|c| &c.tool).collect::<Vec<_>>());
    server.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    println!("{:?}", client.tools().await.len());
}
