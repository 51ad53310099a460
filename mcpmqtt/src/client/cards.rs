//! The card cache: the Tool and Server Cards of the namespace, as the broker
//! last delivered them. It stores and answers; what to call, and how, the
//! client decides.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::protocol::card::{ServerCard, Status, ToolCard, EXT_CALLER_TOPIC};

/// How long the card cache must be quiet after subscribing before the
/// retained cards are taken to have all arrived.
const CARDS_QUIET: Duration = Duration::from_millis(60);
const CARDS_MAX_WAIT: Duration = Duration::from_secs(2);

/// Every card of the namespace the broker has delivered, by name: filled by
/// the router, read by the client.
#[derive(Default)]
pub(super) struct CardCache {
    cards: Mutex<Cards>,
}

struct Cards {
    tools: HashMap<String, ToolCard>,
    servers: HashMap<String, ServerCard>,
    last_change: Instant,
    subscribed_at: Instant,
}

impl Cards {
    /// A tool is listed while its card says online and its server's card,
    /// when there is one, does not say offline (a crashed server's Last Will).
    fn online(&self, card: &ToolCard) -> bool {
        card.status == Status::Online
            && !self
                .servers
                .get(&card.server)
                .is_some_and(|c| c.status == Status::Offline)
    }
}

impl Default for Cards {
    fn default() -> Self {
        Cards {
            tools: HashMap::new(),
            servers: HashMap::new(),
            last_change: Instant::now(),
            subscribed_at: Instant::now(),
        }
    }
}

impl CardCache {
    /// Takes a card (or, when empty, its removal) delivered on `topic`.
    pub(super) fn on_card(&self, topic: &str, payload: &[u8]) {
        let mut cards = self.cards.lock().expect("cards lock");
        cards.last_change = Instant::now();
        let is_server = topic.contains("/mcp/servers/");
        let name = topic.rsplit('/').nth(1).unwrap_or_default().to_owned();
        if payload.is_empty() {
            if is_server {
                cards.servers.remove(&name);
            } else {
                cards.tools.remove(&name);
            }
            return;
        }
        if is_server {
            match serde_json::from_slice::<ServerCard>(payload) {
                Ok(card) => {
                    cards.servers.insert(name, card);
                }
                Err(e) => tracing::warn!(%topic, error = %e, "ignored an unreadable server card"),
            }
        } else {
            match serde_json::from_slice::<ToolCard>(payload) {
                Ok(card) => {
                    cards.tools.insert(name, card);
                }
                Err(e) => tracing::warn!(%topic, error = %e, "ignored an unreadable tool card"),
            }
        }
    }

    /// Starts the wait for the retained cards: the subscriptions were just
    /// acknowledged.
    pub(super) fn subscribed(&self) {
        let mut cards = self.cards.lock().expect("cards lock");
        cards.subscribed_at = Instant::now();
        cards.last_change = Instant::now();
    }

    /// Whether `tool` is known to be online: its Tool Card says so, and its
    /// server's card (when there is one) does too.
    pub(super) fn tool_online(&self, tool: &str) -> bool {
        let cards = self.cards.lock().expect("cards lock");
        cards.tools.get(tool).is_some_and(|card| cards.online(card))
    }

    /// Whether `tool` is hosted by a known plain v0.1 server: its card lists
    /// none of this project's extensions.
    pub(super) fn speaks_v01(&self, tool: &str) -> bool {
        let cards = self.cards.lock().expect("cards lock");
        cards.tools.get(tool).is_some_and(|c| !c.supports(EXT_CALLER_TOPIC))
    }

    /// The card of one tool, online or offline.
    pub(super) fn tool(&self, tool: &str) -> Option<ToolCard> {
        self.cards.lock().expect("cards lock").tools.get(tool).cloned()
    }

    /// The card of one server, online or offline.
    pub(super) fn server(&self, server: &str) -> Option<ServerCard> {
        self.cards.lock().expect("cards lock").servers.get(server).cloned()
    }

    /// The online Tool Cards, by name.
    pub(super) fn online_tools(&self) -> Vec<ToolCard> {
        let cards = self.cards.lock().expect("cards lock");
        let mut tools: Vec<ToolCard> = cards.tools.values().filter(|c| cards.online(c)).cloned().collect();
        tools.sort_by(|a, b| a.tool.cmp(&b.tool));
        tools
    }

    /// The online Server Cards, by name.
    pub(super) fn online_servers(&self) -> Vec<ServerCard> {
        let cards = self.cards.lock().expect("cards lock");
        let mut servers: Vec<ServerCard> = cards
            .servers
            .values()
            .filter(|c| c.status == Status::Online)
            .cloned()
            .collect();
        servers.sort_by(|a, b| a.server.cmp(&b.server));
        servers
    }

    /// Retained cards arrive right after the SUBACK, with no end marker: the
    /// cache counts as complete once it has been quiet for a moment.
    pub(super) async fn settled(&self) {
        loop {
            let (quiet_for, since_sub) = {
                let c = self.cards.lock().expect("cards lock");
                (c.last_change.elapsed(), c.subscribed_at.elapsed())
            };
            if quiet_for >= CARDS_QUIET || since_sub >= CARDS_MAX_WAIT {
                return;
            }
            tokio::time::sleep(CARDS_QUIET - quiet_for).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card_json(tool: &str, server: &str, status: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "version": "1", "tool": tool, "server": server, "namespace": "lab", "description": "",
            "input_schema": {"type": "object"}, "supports_streaming": false, "requires_auth": false,
            "allowed_callers": [], "version_info": {"sdk": "x"}, "status": status,
            "last_seen": "2026-12-01T00:00:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_tool_is_online_while_its_card_and_its_servers_card_say_so() {
        let cards = CardCache::default();
        assert!(!cards.tool_online("echo"), "no card: nobody hosts it");
        cards.on_card("lab/mcp/tools/echo/card", &card_json("echo", "lab", "online"));
        assert!(cards.tool_online("echo"));
        let server = |status: &str| {
            serde_json::to_vec(&serde_json::json!({
                "version": "1", "server": "lab", "namespace": "lab", "tools": ["echo"],
                "version_info": {"sdk": "x"}, "status": status, "last_seen": "2026-12-01T00:00:00Z"
            }))
            .unwrap()
        };
        cards.on_card("lab/mcp/servers/lab/card", &server("offline"));
        assert!(!cards.tool_online("echo"), "its server's Last Will");
        cards.on_card("lab/mcp/servers/lab/card", &server("online"));
        assert!(cards.tool_online("echo"));
        cards.on_card("lab/mcp/tools/echo/card", &card_json("echo", "lab", "offline"));
        assert!(!cards.tool_online("echo"));
    }
}
