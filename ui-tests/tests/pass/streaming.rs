//! A streaming tool takes the context and emits partials through it.
#![deny(warnings)]

use mcpmqtt::{tool, CallContext, Partial, Tool, ToolError};

/// Count to `n`, one partial per number.
#[tool(streaming, allowed_callers = ["scout"])]
async fn count(
    /// Where to stop.
    n: u32,
    ctx: &CallContext,
) -> Result<u32, ToolError> {
    for i in 1..=n {
        ctx.emit_text(format!("{i}")).await?;
    }
    ctx.emit_data(serde_json_free_object(n)).await?;
    Ok(n)
}

#[derive(serde::Serialize)]
struct Done {
    done: u32,
}

fn serde_json_free_object(n: u32) -> Done {
    Done { done: n }
}

/// The full path of the context type works too.
#[tool(streaming = true)]
async fn tick(ctx: &'_ mcpmqtt::CallContext) -> Result<(), mcpmqtt::Error> {
    ctx.emit_text("tick").await
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let def = count::definition();
    assert!(def.is_streaming());
    assert_eq!(def.allowed_callers(), ["scout"]);
    let props = def.input_schema()["properties"].as_object().unwrap();
    assert_eq!(props.len(), 1, "the context is not an argument: {props:?}");
    assert_eq!(def.input_schema()["required"][0], "n");

    let (ctx, mut partials) = CallContext::for_test("count", "scout");
    assert_eq!(count(2, &ctx).await.unwrap(), 2);
    assert_eq!(partials.recv().await, Some(Partial::Text("1".into())));
    assert_eq!(partials.recv().await, Some(Partial::Text("2".into())));
    let data = partials.recv().await.unwrap();
    assert_eq!(data.as_data().unwrap()["done"], 2);

    assert!(tick::definition().is_streaming());
    tick(&ctx).await.unwrap();
    assert_eq!(partials.recv().await, Some(Partial::Text("tick".into())));
}
