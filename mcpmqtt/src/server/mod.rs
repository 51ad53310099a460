//! The server: hosts tools, publishes their cards, answers calls. This file
//! starts an instance ([`Server::start`]) and stops it ([`ServerHandle`]);
//! the parts it runs are the submodules, and none of them imports this file.
//!
//! The parts, each importing only those listed before it:
//! - `dedupe`: the window that keeps a call from running twice;
//! - `cancels`: the running calls a caller's cancel can reach;
//! - `shared`: what the others share: the [`Server`] and its cards, its
//!   tunables, the dispatch state, and the state of a running instance;
//! - `dispatcher`: the calls of one connection, each to exactly one response;
//! - `adoption`: serving the calls queued for a crashed sibling;
//! - `builder`: [`ServerBuilder`].

mod adoption;
mod builder;
mod cancels;
mod dedupe;
mod dispatcher;
mod shared;

use std::sync::Arc;
use std::time::Duration;

use foldhash::HashMap;
use rumqttc::v5::mqttbytes::v5::LastWill;
use rumqttc::v5::mqttbytes::QoS;
use tokio::sync::mpsc;

use crate::connection::{Link, Protocol, DISCONNECT_GRACE};
use crate::error::Error;
use crate::protocol::card::Status;
use dispatcher::Dispatcher;
use shared::{check_cards, publish_cards, HostedTool, Running, Shared, CANCEL_GRACE};

pub use builder::ServerBuilder;
pub use dedupe::DedupeWindow;
#[doc(hidden)]
pub use dispatcher::CallPath;
pub use shared::Server;

/// How much longer than its drain timeout a [`ServerHandle::shutdown`] may
/// take, at most, when the broker is slow, stalled or gone (6 s), for a
/// server of up to 1,000 tools ([`Server::shutdown_grace`] says it for any
/// server): the exchanges with the broker (unsubscribing, the answers and
/// offline cards, the goodbye) are each bounded, and the connection is
/// dropped when the bound passes.
pub const SHUTDOWN_GRACE: Duration = UNSUBSCRIBE_WITHIN
    .saturating_add(CANCEL_GRACE)
    .saturating_add(GOODBYE_WITHIN)
    .saturating_add(DISCONNECT_GRACE);

/// For the UNSUBACKs before the drain (and [`PER_TOOL`] more per tool
/// beyond [`TOOLS_WITHIN_GRACE`]).
const UNSUBSCRIBE_WITHIN: Duration = Duration::from_secs(2);
/// After the drain (and its [`CANCEL_GRACE`]), for the answers still owed,
/// the offline cards, and on MQTT 3.1.1 ending the session (and
/// [`PER_TOOL`] more per tool beyond [`TOOLS_WITHIN_GRACE`]).
const GOODBYE_WITHIN: Duration = Duration::from_secs(2);
/// The tools whose call filters and cards fit in [`UNSUBSCRIBE_WITHIN`] and
/// [`GOODBYE_WITHIN`] as they are.
const TOOLS_WITHIN_GRACE: usize = 1_000;
/// What each tool beyond [`TOOLS_WITHIN_GRACE`] adds to each of the two
/// steps that grow with the tools (its UNSUBSCRIBE, its offline card):
/// 0.2 ms, several times what each takes against a Mosquitto on the same
/// host (10,000 tools, release build: 0.4 s to unsubscribe, 0.3 s of
/// offline cards; debug build: 0.5 s and 0.7 s).
const PER_TOOL: Duration = Duration::from_micros(200);

/// What `tools` tools add to each step that grows with them.
fn per_tools(tools: usize) -> Duration {
    let beyond = u32::try_from(tools.saturating_sub(TOOLS_WITHIN_GRACE)).unwrap_or(u32::MAX);
    PER_TOOL.saturating_mul(beyond)
}

impl Server {
    /// How much longer than its drain timeout [`ServerHandle::shutdown`] may
    /// take, at most, whatever the broker's state: [`SHUTDOWN_GRACE`] (6 s)
    /// for up to 1,000 tools; beyond, 0.4 ms more per tool, for the
    /// unsubscribing and the offline cards (10,000 tools: 9.6 s).
    pub fn shutdown_grace(&self) -> Duration {
        SHUTDOWN_GRACE.saturating_add(per_tools(self.tools.len()).saturating_mul(2))
    }

    /// Connects, subscribes to the tools' call topics, publishes the cards,
    /// and serves until [`ServerHandle::shutdown`].
    ///
    /// Fails with [`Error::TooLarge`], naming the tool, when a card would
    /// exceed the maximum packet size (the server's own, or the broker's if
    /// it announced a smaller one): the broker would drop it.
    pub async fn start(self) -> Result<ServerHandle, Error> {
        let server = Arc::new(self);
        // Before connecting: a broker that takes the certificate's CN as
        // the identity would grant this server another identity's rights.
        let identity = server.broker.username.as_deref().unwrap_or(&server.name);
        server.broker.check_identity("server", identity)?;
        if server.broker.protocol == Protocol::V311 && server.config.shared_subscription {
            tracing::warn!(
                server = %server.name,
                "MQTT 3.1.1 has no shared subscriptions: each instance of this server gets, and runs, every call \
                 (run one instance, or set shared_subscription(false) to acknowledge this)"
            );
        }
        let instance = server
            .broker
            .client_id
            .clone()
            // Unique per instance, so that instances can share the load.
            .unwrap_or_else(|| format!("{}-{}", server.name, &uuid::Uuid::new_v4().simple().to_string()[..8]));
        let offline = server.will_payload(&instance)?;
        let own_card = server.topics.server_card(&server.name);
        let will = LastWill::new(own_card.clone(), offline, QoS::AtLeastOnce, true, None);
        let mut broker = server.broker.clone();
        // Calls are acknowledged as they start: beyond those running and as
        // many again waiting, a flood waits in the broker.
        broker.receive_maximum = Some((server.config.max_concurrent_calls * 2).clamp(1, 65_535) as u16);
        let options = broker.mqtt_options(&instance, Some(will), true)?;
        // The dispatcher needs the link to answer on, and the link needs the
        // dispatcher to deliver calls to: make the link, then connect it.
        let (link, opening) = Link::open(options);

        let hosted: HashMap<String, Arc<HostedTool>> = server
            .tools
            .iter()
            .map(|t| Ok((t.name.clone(), Arc::new(HostedTool::new(t.clone(), &server.config)?))))
            .collect::<Result<_, Error>>()?;
        let shared = Shared::new(server.topics.clone(), hosted, server.config.clone());
        let (cards_tx, cards_rx) = mpsc::unbounded_channel();
        let (intake, line_task) = Dispatcher::new(link.clone(), shared.clone())
            .with_own_card(own_card.clone(), cards_tx)
            .start();
        let dispatcher = intake.dispatcher();
        // Calls are taken on the connection task itself: one hop fewer per call.
        let conn_task = opening.connect(&server.broker, intake).await?;
        // Checked once the broker has announced its limit, and before any
        // call is taken: a card the broker would drop is an error now, not
        // a tool that silently never shows up.
        if let Err(e) = check_cards(&server, &link, &instance) {
            link.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), conn_task).await;
            return Err(e);
        }

        let mut filters = server.call_filters();
        // The server's own card, where a sibling's (or a crashed
        // predecessor's) Last Will lands.
        filters.push((own_card, QoS::AtLeastOnce));
        link.subscribe(&filters).await?;
        publish_cards(&server, &link, Status::Online, &instance).await?;

        let running = Arc::new(Running {
            server: server.clone(),
            instance,
            link: link.clone(),
            shared,
        });
        let cards_task = tokio::spawn(republish_on_reconnect(running.clone()));
        let siblings_task = tokio::spawn(adoption::watch_siblings(running.clone(), cards_rx));
        tracing::info!(server = %server.name, instance = %running.instance, tools = server.tools.len(), namespace = server.topics.namespace(), "server online");
        Ok(ServerHandle {
            running,
            conn_task,
            dispatcher,
            line_task,
            cards_task,
            siblings_task,
        })
    }

    /// Starts, serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    ///
    /// With `--emit-acl FORMAT` among the process's arguments it prints the
    /// ACL manifest in that format instead and returns without connecting
    /// (formats: `mosquitto`, `dynsec`, `emqx`, `emqx-db`, `hivemq`,
    /// `rmqtt`, `policy`, `manifest`). Beside the ACL go the broker settings that
    /// make a client certificate the identity
    /// ([`AclFormat::certificate_settings`](crate::acl::AclFormat::certificate_settings)):
    /// as comments in the formats that have them, on stderr for the JSON
    /// ones.
    pub async fn run(self) -> Result<(), Error> {
        if let Some(format) = crate::acl::emit_acl_request(std::env::args().skip(1)) {
            let format = format.map_err(Error::InvalidArgument)?;
            print!("{}", self.acl_manifest().render(format));
            if let Some(aside) = format.certificate_settings_aside() {
                eprint!("{aside}");
            }
            return Ok(());
        }
        let handle = tokio::select! {
            handle = self.start() => handle?,
            _ = shutdown_signal() => {
                tracing::info!("stopped before the server was online");
                return Ok(());
            }
        };
        tokio::select! {
            _ = shutdown_signal() => {}
            why = handle.running.link.closed() => {
                return Err(why.map_or(Error::Closed, Error::Connect));
            }
        }
        handle.shutdown().await
    }
}

/// After a reconnect the cards may be gone (a broker without persistence)
/// or overwritten by the Last Will (the broker saw the connection drop), so
/// they are published again.
async fn republish_on_reconnect(running: Arc<Running>) {
    let mut reconnects = running.link.reconnects();
    while reconnects.changed().await.is_ok() {
        match running.publish_cards(Status::Online).await {
            Ok(()) => tracing::info!(server = %running.server.name, "cards republished after a reconnect"),
            Err(e) => tracing::warn!(error = %e, "could not republish the cards after a reconnect"),
        }
    }
}

/// Ctrl-C, or SIGTERM on Unix (what service managers send).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// A running server. Dropping the handle does not stop it; call
/// [`shutdown`](ServerHandle::shutdown) so that its cards go offline.
pub struct ServerHandle {
    running: Arc<Running>,
    conn_task: tokio::task::JoinHandle<()>,
    dispatcher: Arc<Dispatcher>,
    line_task: tokio::task::JoinHandle<()>,
    cards_task: tokio::task::JoinHandle<()>,
    siblings_task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("server", &self.running.server.name)
            .field("instance", &self.running.instance)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The server being run.
    pub fn server(&self) -> &Server {
        &self.running.server
    }

    /// This instance's MQTT client id (the `instance` of its server card).
    pub fn instance(&self) -> &str {
        &self.running.instance
    }

    /// Whether the connection to the broker is up.
    pub fn is_connected(&self) -> bool {
        self.running.link.is_connected()
    }

    /// Goes offline gracefully: stops taking calls, lets the running ones
    /// finish within the drain deadline ([`ServerBuilder::drain_timeout`];
    /// those still running then get `unavailable`), republishes every card
    /// as offline (also when the UNSUBACKs came too late: the broker is slow,
    /// not gone), and disconnects (so the Last Will is not sent).
    ///
    /// Returns within the drain timeout plus [`Server::shutdown_grace`]
    /// ([`SHUTDOWN_GRACE`] for up to 1,000 tools), whatever the broker's
    /// state: each exchange with it is bounded. When the broker is
    /// unreachable or stalled, the server still stops, and says so with
    /// [`Error::Goodbye`]; the broker then publishes the Last Will (the
    /// offline Server Card) once it notices the connection is gone.
    pub async fn shutdown(self) -> Result<(), Error> {
        let running = &self.running;
        self.cards_task.abort();
        self.siblings_task.abort();
        let link = &running.link;
        let mut unsaid = None;
        let mut cards_offline = false;
        let per_tools = per_tools(running.server.tools.len());
        // After the UNSUBACK the broker sends no more calls here; those it
        // queues go to the other instances.
        if link.is_connected() {
            let filters: Vec<String> = running.server.call_filters().into_iter().map(|(f, _)| f).collect();
            let within = UNSUBSCRIBE_WITHIN + per_tools;
            match tokio::time::timeout(within, link.unsubscribe_many(&filters)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not unsubscribe before shutting down"),
                Err(_) => {
                    let why = format!("no UNSUBACK within {} ms", within.as_millis());
                    tracing::warn!(instance = %running.instance, reason = %why, "going offline without the broker's UNSUBACKs");
                    unsaid = Some(why);
                }
            }
        } else {
            unsaid = Some("the connection was down".to_owned());
        }
        let cancelled = running.shared.drain(running.server.config.drain_timeout).await;
        if cancelled > 0 {
            tracing::warn!(cancelled, "calls still running at the drain deadline were cancelled");
        }
        let goodbye_within = GOODBYE_WITHIN + per_tools;
        let goodbye = tokio::time::Instant::now() + goodbye_within;
        self.dispatcher.settle(GOODBYE_WITHIN / 2).await;
        self.line_task.abort();
        // Even when the UNSUBACKs were late: a slow broker still takes the
        // cards, and after a clean DISCONNECT no Last Will would say offline.
        if link.is_connected() {
            let cards = match tokio::time::timeout_at(goodbye, running.publish_cards(Status::Offline)).await {
                Ok(Ok(())) => {
                    cards_offline = true;
                    None
                }
                Ok(Err(e)) => Some(format!("the offline cards were not taken: {e}")),
                Err(_) => Some(format!(
                    "the broker did not take the offline cards within {} ms",
                    goodbye_within.as_millis()
                )),
            };
            unsaid = match (unsaid, cards) {
                (Some(before), Some(cards)) => Some(format!("{before}; {cards}")),
                (before, cards) => before.or(cards),
            };
        }
        link.disconnect().await;
        if tokio::time::timeout(Duration::from_millis(100), self.conn_task)
            .await
            .is_err()
        {
            tracing::debug!("the connection task outlived its link");
        }
        if unsaid.is_none()
            && running.server.broker.protocol == Protocol::V311
            && running.server.broker.session_expiry > 0
        {
            // A 3.1.1 persistent session never expires: this instance is
            // gone for good, so its session goes too. Within what is left of
            // the goodbye's time, so that the shutdown keeps its bound.
            let ended = crate::connection::end_session(&running.server.broker, &running.instance);
            if tokio::time::timeout_at(goodbye, ended).await.is_err() {
                tracing::warn!(instance = %running.instance, "could not end the MQTT 3.1.1 session in time");
            }
        }
        match unsaid {
            None => {
                tracing::info!(server = %running.server.name, "server offline");
                Ok(())
            }
            Some(why) => {
                // What follows for the callers: the cards say offline, or
                // the broker's Last Will is to say it.
                let why = if cards_offline {
                    format!("{why}; its cards are offline")
                } else {
                    format!("{why}; the broker will publish the Last Will")
                };
                tracing::warn!(server = %running.server.name, reason = %why, "server stopped without a goodbye");
                Err(Error::Goodbye(why))
            }
        }
    }

    /// Drops the connection without a goodbye, as a crash would: the broker
    /// then publishes the Last Will (the offline Server Card).
    pub fn abort(self) {
        self.cards_task.abort();
        self.siblings_task.abort();
        self.line_task.abort();
        self.conn_task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shutdown_grace_is_the_sum_of_its_bounds_as_documented() {
        // README and SPEC §4 say 6 s.
        assert_eq!(SHUTDOWN_GRACE, Duration::from_secs(6));
    }

    #[test]
    fn the_shutdown_grace_grows_with_the_tools_beyond_a_thousand() {
        let server = |tools: usize| {
            (0..tools).fold(Server::builder("s"), |s, i| {
                s.tool_def(crate::ToolDef::builder(format!("t{i}")).build().unwrap())
            })
        };
        let grace = |tools| server(tools).build().unwrap().shutdown_grace();
        assert_eq!(grace(1), SHUTDOWN_GRACE);
        assert_eq!(grace(1_000), SHUTDOWN_GRACE);
        assert_eq!(grace(1_001), SHUTDOWN_GRACE + Duration::from_micros(400));
        // README and SPEC §4 say 9.6 s for 10,000 tools.
        assert_eq!(per_tools(10_000) * 2 + SHUTDOWN_GRACE, Duration::from_millis(9_600));
    }
}
