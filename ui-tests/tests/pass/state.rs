//! A tool taking two states and the context: the states are not part of its
//! input schema, the server's `build()` checks both are registered, and the
//! handler gets the registered values.
#![deny(warnings)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mcpmqtt::{tool, CallContext, State, Tool};

/// A stand-in for a database.
#[derive(Default)]
pub struct Db {
    posts: Mutex<Vec<String>>,
}

/// A stand-in for the configuration.
pub struct Config {
    prefix: String,
}

/// Stores a post, and counts the calls.
#[tool]
async fn post(ctx: &CallContext, db: State<Db>, config: mcpmqtt::State<Config>, text: String) -> usize {
    let mut posts = db.posts.lock().unwrap();
    posts.push(format!("{}{} (by {})", config.prefix, text, ctx.caller().id()));
    posts.len()
}

/// Reads the count, with no context.
#[tool]
async fn count(hits: State<AtomicU64>) -> u64 {
    hits.fetch_add(1, Ordering::SeqCst) + 1
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let def = post::definition();
    let schema = def.input_schema();
    let properties = schema["properties"].as_object().unwrap();
    assert_eq!(properties.keys().collect::<Vec<_>>(), ["text"], "{schema}");
    let needed: Vec<&str> = def.needed_states().collect();
    assert_eq!(needed.len(), 2);
    assert!(needed[0].ends_with("Db") && needed[1].ends_with("Config"), "{needed:?}");

    // Both missing, then one: `build()` names what is missing.
    let err = mcpmqtt::Server::builder("s").tool::<post>().build().unwrap_err();
    assert!(matches!(err, mcpmqtt::Error::MissingState { ref tool, .. } if tool == "post"), "{err}");
    let err = mcpmqtt::Server::builder("s")
        .state(Db::default())
        .tool::<post>()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("Config"), "{err}");

    let db = Arc::new(Db::default());
    let server = mcpmqtt::Server::builder("s")
        .shared_state(db.clone())
        .state(Config { prefix: "> ".into() })
        .state(AtomicU64::new(0))
        .tool::<post>()
        .tool::<count>()
        .build()
        .unwrap();
    assert_eq!(server.tools().len(), 2);

    // Through the handler, the context carries the states.
    let (ctx, _partials) = CallContext::for_test("post", "scout");
    let ctx = ctx
        .with_state(State::from(db.clone()))
        .with_state(State::new(Config { prefix: "> ".into() }));
    let n = (def.handler())(ctx.clone(), mcpmqtt::serde_json::json!({"text": "hello"})).await.unwrap();
    assert_eq!(n, 1);
    // Directly, the function takes the states as it declares them.
    let n = post(&ctx, State::from(db.clone()), State::new(Config { prefix: "".into() }), "again".into()).await;
    assert_eq!(n, 2);
    assert_eq!(db.posts.lock().unwrap()[0], "> hello (by scout)");

    // A handler run without its state fails the call rather than panics.
    let (bare, _partials) = CallContext::for_test("count", "scout");
    let err = (count::definition().handler())(bare, mcpmqtt::serde_json::json!({})).await.unwrap_err();
    assert!(err.message().contains("AtomicU64"), "{}", err.message());
}
