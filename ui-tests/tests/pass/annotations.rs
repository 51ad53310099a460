//! `title` and every annotation flag, bare and with `= bool`, and how they
//! reach the definition (and so the Tool Card).
#![deny(warnings)]

use mcpmqtt::{tool, Tool, ToolAnnotations};

/// List the posts.
#[tool(title = "List posts", read_only, idempotent = true, open_world = false)]
async fn list_posts() -> Vec<String> {
    Vec::new()
}

/// Publish a post.
#[tool(title = "Publish a post", read_only = false, destructive = false, idempotent = false, open_world)]
async fn publish(text: String) -> String {
    text
}

/// Delete a post.
#[tool(destructive)]
async fn delete_post(id: String) -> String {
    id
}

/// No annotations at all.
#[tool]
async fn plain() {}

fn main() {
    let def = list_posts::definition();
    assert_eq!(def.title(), Some("List posts"));
    assert_eq!(
        def.annotations(),
        Some(&ToolAnnotations::default().read_only(true).idempotent(true).open_world(false))
    );

    let def = publish::definition();
    assert_eq!(def.title(), Some("Publish a post"));
    let hints = def.annotations().unwrap();
    assert_eq!(hints.read_only_hint, Some(false));
    assert_eq!(hints.destructive_hint, Some(false));
    assert_eq!(hints.idempotent_hint, Some(false));
    assert_eq!(hints.open_world_hint, Some(true));

    let def = delete_post::definition();
    assert_eq!(def.title(), None);
    assert_eq!(def.annotations(), Some(&ToolAnnotations::default().destructive(true)));

    let def = plain::definition();
    assert_eq!(def.title(), None);
    assert_eq!(def.annotations(), None);

    let _ = mcpmqtt::Server::builder("s")
        .tool::<list_posts>()
        .tool::<publish>()
        .tool::<delete_post>()
        .tool::<plain>();
}
