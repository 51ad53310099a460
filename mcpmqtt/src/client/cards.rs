//! The card cache: the namespace's Server Cards, which are its index (each
//! lists its tools by name), and the Tool Cards fetched so far. It stores
//! and answers; when to fetch a card, and how, is `discovery`'s business.
//!
//! Server Cards arrive through the client's standing subscription, and stay
//! current. Tool Cards are fetched on demand and kept while their server's
//! card keeps the same `tools_digest`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use foldhash::HashMap;
use tokio::sync::watch;

use crate::protocol::card::{ServerCard, Status, ToolCard, EXT_CALLER_TOPIC};

/// How long the card cache must be quiet after subscribing before the
/// retained Server Cards are taken to have all arrived.
const CARDS_QUIET: Duration = Duration::from_millis(60);
const CARDS_MAX_WAIT: Duration = Duration::from_secs(2);

/// What the Server Cards say of one tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    /// A server listing it, preferring one whose card is online.
    pub(super) server: String,
    /// Whether that server's card is online.
    pub(super) online: bool,
    /// Whether that server speaks only plain v0.1 (its card lists none of
    /// this project's extensions).
    pub(super) v01: bool,
}

/// The Server Cards and the Tool Cards fetched so far: filled by the router
/// and by discovery, read by the client.
pub(super) struct CardCache {
    cards: Mutex<Cards>,
    /// Bumped on every card taken: fetches wait on it for their cards.
    arrivals: watch::Sender<u64>,
}

impl Default for CardCache {
    fn default() -> Self {
        CardCache {
            cards: Mutex::default(),
            arrivals: watch::channel(0).0,
        }
    }
}

struct Fetched {
    card: ToolCard,
    /// The `tools_digest` of its server's card when it arrived.
    digest: Option<String>,
}

struct Cards {
    servers: HashMap<String, ServerCard>,
    /// Tool name to the servers whose cards list it (usually one).
    index: BTreeMap<String, Vec<String>>,
    tools: HashMap<String, Fetched>,
    last_change: Instant,
    subscribed_at: Instant,
}

impl Default for Cards {
    fn default() -> Self {
        Cards {
            servers: HashMap::default(),
            index: BTreeMap::new(),
            tools: HashMap::default(),
            last_change: Instant::now(),
            subscribed_at: Instant::now(),
        }
    }
}

impl Cards {
    fn listed(&self, tool: &str) -> Option<Listed> {
        let servers = self.index.get(tool)?;
        let card = servers
            .iter()
            .filter_map(|s| self.servers.get(s))
            .max_by_key(|c| c.status == Status::Online)?;
        Some(Listed {
            server: card.server.clone(),
            online: card.status == Status::Online,
            v01: !card.supports(EXT_CALLER_TOPIC),
        })
    }

    /// A fetched tool is online while its card says so and its server's
    /// card, when there is one, does not say offline (a Last Will).
    fn fetched_online(&self, card: &ToolCard) -> bool {
        card.status == Status::Online
            && !self
                .servers
                .get(&card.server)
                .is_some_and(|c| c.status == Status::Offline)
    }

    fn set_server(&mut self, name: String, mut card: Option<ServerCard>) {
        // A Last Will too large for MQTT lists no tools: every tool the
        // server had is offline with it, not gone from the index.
        if let Some(card) = card
            .as_mut()
            .filter(|c| c.status == Status::Offline && c.tools.is_empty())
        {
            if let Some(old) = self.servers.get(&name) {
                card.tools = old.tools.clone();
            }
        }
        let old = match &card {
            Some(card) => self.servers.insert(name.clone(), card.clone()),
            None => self.servers.remove(&name),
        };
        let new_digest = card.as_ref().and_then(|c| c.tools_digest.clone());
        // Tool Cards fetched under another digest (or from a server that
        // publishes none) may be stale now: fetched again when asked for.
        self.tools
            .retain(|_, f| f.card.server != name || (new_digest.is_some() && f.digest == new_digest));
        if let Some(old) = old {
            for tool in &old.tools {
                if let Some(servers) = self.index.get_mut(tool) {
                    servers.retain(|s| s != &name);
                    if servers.is_empty() {
                        self.index.remove(tool);
                    }
                }
            }
        }
        if let Some(card) = card {
            for tool in card.tools {
                let servers = self.index.entry(tool).or_default();
                if !servers.contains(&name) {
                    servers.push(name.clone());
                }
            }
        }
    }
}

impl CardCache {
    /// Takes a card (or, when empty, its removal) delivered on `topic`.
    pub(super) fn on_card(&self, topic: &str, payload: &[u8]) {
        let is_server = topic.contains("/mcp/servers/");
        let name = topic.rsplit('/').nth(1).unwrap_or_default().to_owned();
        {
            let mut cards = self.cards.lock().expect("cards lock");
            cards.last_change = Instant::now();
            if is_server {
                if payload.is_empty() {
                    cards.set_server(name, None);
                } else {
                    match serde_json::from_slice::<ServerCard>(payload) {
                        Ok(card) => cards.set_server(name, Some(card)),
                        Err(e) => tracing::warn!(%topic, error = %e, "ignored an unreadable server card"),
                    }
                }
            } else if payload.is_empty() {
                cards.tools.remove(&name);
            } else {
                match serde_json::from_slice::<ToolCard>(payload) {
                    Ok(card) => {
                        let digest = cards.servers.get(&card.server).and_then(|s| s.tools_digest.clone());
                        cards.tools.insert(name, Fetched { card, digest });
                    }
                    Err(e) => tracing::warn!(%topic, error = %e, "ignored an unreadable tool card"),
                }
            }
        }
        self.arrivals.send_modify(|n| *n += 1);
    }

    /// Starts the wait for the retained Server Cards: the subscription was
    /// just acknowledged.
    pub(super) fn subscribed(&self) {
        let mut cards = self.cards.lock().expect("cards lock");
        cards.subscribed_at = Instant::now();
        cards.last_change = Instant::now();
    }

    /// Wakes on every card taken.
    pub(super) fn arrivals(&self) -> watch::Receiver<u64> {
        self.arrivals.subscribe()
    }

    /// What the Server Cards say of `tool`, if any lists it.
    pub(super) fn listed(&self, tool: &str) -> Option<Listed> {
        self.cards.lock().expect("cards lock").listed(tool)
    }

    /// Whether `tool` is known to be online: an online Server Card lists
    /// it, or its fetched Tool Card says online and its server's card does
    /// not say offline.
    pub(super) fn tool_online(&self, tool: &str) -> bool {
        let cards = self.cards.lock().expect("cards lock");
        match cards.listed(tool) {
            Some(listed) => listed.online,
            None => cards.tools.get(tool).is_some_and(|f| cards.fetched_online(&f.card)),
        }
    }

    /// Whether `tool` is hosted by a plain v0.1 server, when that is known:
    /// from its fetched card, else from the Server Card listing it.
    pub(super) fn speaks_v01(&self, tool: &str) -> Option<bool> {
        let cards = self.cards.lock().expect("cards lock");
        if let Some(f) = cards.tools.get(tool) {
            return Some(!f.card.supports(EXT_CALLER_TOPIC));
        }
        cards.listed(tool).map(|l| l.v01)
    }

    /// The fetched card of one tool, online or offline. Its `status` is
    /// that of the Server Card listing it, when one does: a fetched card is
    /// not kept current, its server's card is.
    pub(super) fn tool(&self, tool: &str) -> Option<ToolCard> {
        let cards = self.cards.lock().expect("cards lock");
        let mut card = cards.tools.get(tool)?.card.clone();
        if let Some(listed) = cards.listed(tool) {
            card.status = if listed.online { Status::Online } else { Status::Offline };
        }
        Some(card)
    }

    /// Whether a card of `tool` has been fetched (and is still current).
    pub(super) fn has_tool(&self, tool: &str) -> bool {
        self.cards.lock().expect("cards lock").tools.contains_key(tool)
    }

    /// The card of one server, online or offline.
    pub(super) fn server(&self, server: &str) -> Option<ServerCard> {
        self.cards.lock().expect("cards lock").servers.get(server).cloned()
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

    /// The tools online Server Cards list, in name order, with their
    /// server, that `keep` keeps.
    pub(super) fn online_listed(&self, mut keep: impl FnMut(&str, &str) -> bool) -> Vec<(String, String)> {
        let cards = self.cards.lock().expect("cards lock");
        cards
            .index
            .keys()
            .filter_map(|tool| {
                let listed = cards.listed(tool)?;
                (listed.online && keep(tool, &listed.server)).then(|| (tool.clone(), listed.server))
            })
            .collect()
    }

    /// Retained cards arrive right after the SUBACK, with no end marker: the
    /// Server Cards count as complete once the cache has been quiet for a
    /// moment.
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
    use serde_json::json;

    fn tool_card(tool: &str, server: &str, status: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "version": "1", "tool": tool, "server": server, "namespace": "lab", "description": "",
            "input_schema": {"type": "object"}, "supports_streaming": false, "requires_auth": false,
            "allowed_callers": [], "version_info": {"sdk": "x"}, "status": status,
            "last_seen": "2026-12-01T00:00:00Z", "extensions": ["caller_topic"]
        }))
        .unwrap()
    }

    fn server_card(tools: &[&str], status: &str, digest: Option<&str>) -> Vec<u8> {
        let mut card = json!({
            "version": "1", "server": "lab", "namespace": "lab", "tools": tools,
            "version_info": {"sdk": "x"}, "status": status, "last_seen": "2026-12-01T00:00:00Z",
            "extensions": ["caller_topic"]
        });
        if let Some(d) = digest {
            card["tools_digest"] = json!(d);
        }
        serde_json::to_vec(&card).unwrap()
    }

    const SERVER: &str = "lab/mcp/servers/lab/card";

    #[test]
    fn a_tool_is_online_while_an_online_server_card_lists_it() {
        let cards = CardCache::default();
        assert!(!cards.tool_online("echo"), "no card: nobody hosts it");
        cards.on_card(SERVER, &server_card(&["echo"], "online", None));
        assert!(cards.tool_online("echo"));
        assert_eq!(cards.speaks_v01("echo"), Some(false));
        cards.on_card(SERVER, &server_card(&["echo"], "offline", None));
        assert!(!cards.tool_online("echo"), "its server's Last Will");
        cards.on_card(SERVER, &server_card(&["echo"], "online", None));
        cards.on_card(SERVER, &server_card(&[], "offline", None));
        assert_eq!(
            cards.listed("echo").map(|l| l.online),
            Some(false),
            "a Will too large to list the tools still takes them offline"
        );
        cards.on_card(SERVER, &server_card(&[], "online", None));
        assert!(!cards.tool_online("echo"), "no longer listed");
        assert_eq!(cards.listed("echo"), None);
        cards.on_card(SERVER, b"");
        assert!(cards.online_servers().is_empty());
    }

    #[test]
    fn a_fetched_card_of_an_unlisted_tool_counts_on_its_own() {
        let cards = CardCache::default();
        cards.on_card("lab/mcp/tools/legacy/card", &tool_card("legacy", "old", "online"));
        assert!(cards.tool_online("legacy"));
        cards.on_card("lab/mcp/tools/legacy/card", &tool_card("legacy", "old", "offline"));
        assert!(!cards.tool_online("legacy"));
    }

    #[test]
    fn fetched_cards_are_kept_while_the_digest_stays_the_same() {
        let cards = CardCache::default();
        cards.on_card(SERVER, &server_card(&["echo"], "online", Some("d1")));
        cards.on_card("lab/mcp/tools/echo/card", &tool_card("echo", "lab", "online"));
        assert!(cards.has_tool("echo"));
        // A reconnect republishes the same cards: nothing to fetch again.
        cards.on_card(SERVER, &server_card(&["echo"], "online", Some("d1")));
        assert!(cards.has_tool("echo"));
        // A stop: the kept card says what the Server Card says.
        cards.on_card(SERVER, &server_card(&["echo"], "offline", Some("d1")));
        assert_eq!(cards.tool("echo").unwrap().status, Status::Offline);
        cards.on_card(SERVER, &server_card(&["echo"], "online", Some("d1")));
        assert_eq!(cards.tool("echo").unwrap().status, Status::Online);
        // A new release of the server: its cards must be fetched again.
        cards.on_card(SERVER, &server_card(&["echo"], "online", Some("d2")));
        assert!(!cards.has_tool("echo"));
        // Without a digest (a v0.1 server), any new card of the server does.
        cards.on_card("lab/mcp/tools/echo/card", &tool_card("echo", "lab", "online"));
        cards.on_card(SERVER, &server_card(&["echo"], "online", None));
        assert!(!cards.has_tool("echo"));
    }

    #[test]
    fn the_listing_is_in_name_order_and_filtered() {
        let cards = CardCache::default();
        cards.on_card(SERVER, &server_card(&["b", "a", "c"], "online", None));
        let all: Vec<String> = cards.online_listed(|_, _| true).into_iter().map(|(t, _)| t).collect();
        assert_eq!(all, ["a", "b", "c"]);
        let some = cards.online_listed(|t, _| t != "b");
        assert_eq!(
            some,
            [("a".to_owned(), "lab".to_owned()), ("c".to_owned(), "lab".to_owned())]
        );
    }
}
