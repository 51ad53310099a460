//! Which tools are online.

use mcpmqtt::{Client, ToolCard};

/// The online Tool Cards whose server is online too.
///
/// A server that crashes leaves its Tool Cards as they were: only its Server
/// Card is replaced, by its Last Will, with an offline one. So a tool counts
/// as online when its own card and its server's card both say so.
pub async fn online_tools(client: &Client) -> Vec<ToolCard> {
    let servers = client.servers().await;
    client
        .tools()
        .await
        .into_iter()
        .filter(|t| servers.iter().any(|s| s.server == t.server))
        .collect()
}
