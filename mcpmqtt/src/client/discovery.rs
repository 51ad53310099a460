//! Discovery: which tools a namespace has, from its Server Cards, and their
//! Tool Cards, fetched in batches the broker can deliver whole.
//!
//! A subscription to `{ns}/mcp/tools/+/card` would have the broker push
//! every retained Tool Card at once, and brokers queue only so many messages
//! per client (Mosquitto and EMQX: 1,000) before dropping the rest without a
//! word. So the client reads the Server Cards, whose `tools` list is the
//! index, and fetches the Tool Cards it needs by their exact topics, a batch
//! at a time: subscribe at QoS 0, unsubscribe, and the UNSUBACK comes after
//! the batch's retained cards on brokers that keep one queue per client. A
//! card that the index lists and that did not arrive is waited for a moment,
//! fetched once more, then reported missing: a listing is complete or says
//! what it lacks.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::Semaphore;

use super::router::Router;
use crate::connection::Link;
use crate::error::Error;
use crate::protocol::card::{Status, ToolCard};
use crate::protocol::topics::Topics;

/// The rounds of a fetch: Tool Cards per SUBSCRIBE, and how long a card
/// that did not come with its batch is waited for. The first round's
/// batches ([`FETCH_CONCURRENCY`] at a time) stay well under the 1,000
/// messages Mosquitto and EMQX queue per client by default; what a broker
/// with a smaller queue dropped is fetched again in smaller batches, and the
/// last round waits out a broker that does not deliver in order, or a card
/// published just after its Server Card.
const ROUNDS: [(usize, Duration); 3] = [
    (200, Duration::ZERO),
    (25, Duration::from_millis(250)),
    (5, Duration::from_secs(1)),
];
const FETCH_CONCURRENCY: usize = 2;

/// Which tools to list: all online tools, or those of one server, or those
/// whose name starts with a prefix.
///
/// ```
/// let filter = mcpmqtt::ToolFilter::new().server("gtm-mcp-server").prefix("query_");
/// assert!(filter.keeps("query_tags", "gtm-mcp-server"));
/// assert!(!filter.keeps("crawl_site", "gtm-mcp-server"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct ToolFilter {
    server: Option<String>,
    prefix: Option<String>,
}

impl ToolFilter {
    /// Every online tool.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only the tools of this server.
    pub fn server(mut self, server: impl Into<String>) -> Self {
        self.server = Some(server.into());
        self
    }

    /// Only the tools whose name starts with `prefix`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Whether the filter keeps `tool`, hosted by `server`.
    pub fn keeps(&self, tool: &str, server: &str) -> bool {
        self.server.as_deref().is_none_or(|s| s == server) && self.prefix.as_deref().is_none_or(|p| tool.starts_with(p))
    }
}

/// One page of a listing: see [`Client::tools_page`](crate::Client::tools_page).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ToolPage {
    /// The page's Tool Cards, in name order.
    pub tools: Vec<ToolCard>,
    /// Where the next page starts (pass it as `after`), or `None` on the
    /// last page.
    pub next: Option<String>,
}

/// Fetches Tool Cards for a client, and lists them.
pub(super) struct Discovery {
    link: Link,
    topics: Topics,
    router: Arc<Router>,
    /// Bounds the batches in flight over all of the client's listings.
    batches: Semaphore,
}

impl Discovery {
    pub(super) fn new(link: Link, topics: Topics, router: Arc<Router>) -> Self {
        Discovery {
            link,
            topics,
            router,
            batches: Semaphore::new(FETCH_CONCURRENCY),
        }
    }

    /// The online tools `filter` keeps, in name order, after the tool named
    /// `after`, at most `limit` of them, with their Tool Cards.
    pub(super) async fn list(
        &self,
        filter: &ToolFilter,
        after: Option<&str>,
        limit: Option<usize>,
    ) -> Result<ToolPage, Error> {
        let cards = &self.router.cards;
        cards.settled().await;
        let mut listed =
            cards.online_listed(|tool, server| filter.keeps(tool, server) && after.is_none_or(|after| tool > after));
        let next = match limit {
            Some(limit) if listed.len() > limit => {
                listed.truncate(limit.max(1));
                listed.last().map(|(tool, _)| tool.clone())
            }
            _ => None,
        };
        let names: Vec<String> = listed.into_iter().map(|(tool, _)| tool).collect();
        let mut missing = self.fetch(&names, &ROUNDS).await?;
        let mut tools = Vec::with_capacity(names.len());
        for name in &names {
            match cards.tool(name) {
                // Its server's card went offline while the page was
                // fetched (a card's status is its Server Card's).
                Some(card) if card.status == Status::Offline => {}
                Some(card) => tools.push(card),
                None if missing.contains(name) => {}
                None => missing.push(name.clone()),
            }
        }
        if !missing.is_empty() {
            return Err(Error::Incomplete {
                listed: names.len(),
                missing,
                found: tools,
            });
        }
        Ok(ToolPage { tools, next })
    }

    /// The card of one tool, fetched unless it is cached. A tool the Server
    /// Cards list is waited for; one they do not is looked up once.
    pub(super) async fn tool_card(&self, tool: &str) -> Result<Option<ToolCard>, Error> {
        let cards = &self.router.cards;
        cards.settled().await;
        if let Some(card) = cards.tool(tool) {
            return Ok(Some(card));
        }
        // A tool no Server Card lists likely has no card either: one look.
        let rounds = if cards.listed(tool).is_some() {
            &ROUNDS[..]
        } else {
            &ROUNDS[..1]
        };
        self.fetch(&[tool.to_owned()], rounds).await?;
        Ok(cards.tool(tool))
    }

    /// Fetches the cards of `tools` that are not cached, in `rounds`, and
    /// returns the names of those that did not arrive.
    async fn fetch(&self, tools: &[String], rounds: &[(usize, Duration)]) -> Result<Vec<String>, Error> {
        let cards = &self.router.cards;
        let mut missing: Vec<String> = tools.iter().filter(|t| !cards.has_tool(t)).cloned().collect();
        for (round, &(batch, patience)) in rounds.iter().enumerate() {
            if missing.is_empty() {
                break;
            }
            if round > 0 {
                tracing::debug!(
                    missing = missing.len(),
                    batch,
                    "fetching the Tool Cards that did not arrive again"
                );
            }
            // Each batch waits for one of the client's batch slots.
            let batches = missing.chunks(batch).map(|batch| self.fetch_batch(batch, patience));
            missing = futures_util::future::try_join_all(batches)
                .await?
                .into_iter()
                .flatten()
                .collect();
        }
        Ok(missing)
    }

    async fn fetch_batch(&self, batch: &[String], patience: Duration) -> Result<Vec<String>, Error> {
        let _slot = self.batches.acquire().await.map_err(|_| Error::Closed)?;
        let cards = &self.router.cards;
        let mut arrivals = cards.arrivals();
        let filters: Vec<(String, QoS)> = batch
            .iter()
            .map(|tool| (self.topics.tool_card(tool), QoS::AtMostOnce))
            .collect();
        self.link.subscribe(&filters).await?;
        // The UNSUBACK follows the retained cards the SUBSCRIBE queued.
        let topics: Vec<String> = filters.into_iter().map(|(topic, _)| topic).collect();
        self.link.unsubscribe_many(&topics).await?;
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let missing: Vec<String> = batch.iter().filter(|tool| !cards.has_tool(tool)).cloned().collect();
            if missing.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(missing);
            }
            tokio::select! {
                changed = arrivals.changed() => if changed.is_err() { return Ok(missing) },
                _ = tokio::time::sleep_until(deadline) => return Ok(missing),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_keeps_what_it_names() {
        let all = ToolFilter::new();
        assert!(all.keeps("anything", "anyone"));
        let by_server = ToolFilter::new().server("a");
        assert!(by_server.keeps("t", "a") && !by_server.keeps("t", "b"));
        let by_prefix = ToolFilter::new().prefix("query_");
        assert!(by_prefix.keeps("query_x", "a") && !by_prefix.keeps("crawl", "a"));
    }
}
