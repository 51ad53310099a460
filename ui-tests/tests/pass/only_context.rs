//! A tool whose only parameter is the context: it has no JSON arguments, and
//! the context does not appear in its input schema.
#![deny(warnings)]

use mcpmqtt::{tool, CallContext, Tool};

/// Says who is calling.
#[tool]
async fn whoami(ctx: &CallContext) -> String {
    ctx.caller().id().to_owned()
}

/// The same, with an unused context and the full path.
#[tool]
async fn ready(_ctx: &mcpmqtt::CallContext) -> bool {
    true
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    for def in [whoami::definition(), ready::definition()] {
        let schema = def.input_schema();
        assert_eq!(schema["type"], "object");
        assert!(schema["properties"].as_object().unwrap().is_empty(), "{schema}");
        assert!(schema.get("required").is_none_or(|r| r.as_array().unwrap().is_empty()));
        assert_eq!(schema["additionalProperties"], false);
        assert!(!def.is_streaming());
    }
    assert_eq!(whoami::definition().output_schema().unwrap()["type"], "string");

    let server = mcpmqtt::Server::builder("ctx-server")
        .broker("mqtt://127.0.0.1:1883")
        .tool::<whoami>()
        .tool::<ready>()
        .build()
        .unwrap();
    assert_eq!(server.tools().len(), 2);

    let (ctx, _partials) = CallContext::for_test("whoami", "scout");
    assert_eq!(whoami(&ctx).await, "scout");
    assert!(ready(&ctx).await);
}
