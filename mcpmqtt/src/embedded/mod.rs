//! An in-process MQTT 5 broker for demos, tests and local development. It is
//! not a production broker, and the runtime does not depend on it: servers
//! and clients reach it by its URL, as they would any broker.
//!
//! [`EmbeddedBroker::start`] starts the [`mqtt5`] broker on a free port of
//! `127.0.0.1`, so that an example runs with no broker installed. It is a
//! development default, not the production path: nothing is persisted, it
//! listens on the loopback interface only, and it serves plain TCP.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mcpmqtt::embedded::EmbeddedBroker;
//!
//! let broker = EmbeddedBroker::start().await?;
//! println!("broker at {}", broker.url()); // mqtt://127.0.0.1:{port}
//! // ... connect servers and clients to broker.url() ...
//! broker.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! With users and an access list, the broker enforces who may publish and
//! subscribe where, as a production broker would:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use mcpmqtt::embedded::EmbeddedBroker;
//!
//! let broker = EmbeddedBroker::builder()
//!     .user("scout", "scout-secret")
//!     .user("crawler", "crawler-secret")
//!     .allow_subscribe("crawler", "gtm/mcp/tools/crawl_site/call")
//!     .allow_publish("scout", "gtm/mcp/tools/crawl_site/call")
//!     .allow_subscribe("scout", "gtm/mcp/clients/%c/responses")
//!     .allow_publish("crawler", "gtm/mcp/clients/+/responses")
//!     .start()
//!     .await?;
//! # drop(broker); Ok(()) }
//! ```
//!
//! # Behaviour worth knowing
//!
//! * The broker runs on a thread of its own, with its own single-threaded
//!   Tokio runtime, so it neither competes with nor depends on the caller's
//!   runtime. Its `tracing` events are discarded unless
//!   [`EmbeddedBrokerBuilder::broker_logging`] is on.
//! * A QoS 1 (or 2) publish that no subscription matches is acknowledged with
//!   reason code `0x10` (No matching subscribers). The `mqtt5` broker itself
//!   always answers `0x00`, so the embedded broker puts a small MQTT-aware
//!   relay in front of it that rewrites those acknowledgements; see
//!   [`EmbeddedBrokerBuilder::report_no_matching_subscribers`].
//! * Access rules: see [`EmbeddedBrokerBuilder::allow_publish`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mqtt5::broker::{AuthProvider, AuthResult, BrokerConfig, MqttBroker, StorageBackendType};
use mqtt5::packet::connect::ConnectPacket;
use mqtt5::protocol::v5::reason_codes::ReasonCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// How long [`EmbeddedBroker::start`] waits for the broker to be ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping broker may take to close its connections.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);

/// An in-process MQTT 5 broker on a free loopback port: a development
/// default, not the production path.
///
/// Dropping it stops the broker (without waiting); [`EmbeddedBroker::shutdown`]
/// stops it and waits until its port is closed.
pub struct EmbeddedBroker {
    addr: SocketAddr,
    stop: Option<watch::Sender<bool>>,
    stopped: Option<oneshot::Receiver<()>>,
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedBrokerError {
    /// A builder setting is invalid.
    #[error("invalid embedded broker setting: {0}")]
    Config(String),
    /// The broker could not listen on its address (e.g. the port is taken).
    #[error("the embedded MQTT broker could not listen on {addr}: {reason}")]
    Bind {
        /// The address it tried.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The broker failed while starting.
    #[error("the embedded MQTT broker failed to start: {0}")]
    Start(String),
    /// The broker did not report ready in time.
    #[error("the embedded MQTT broker did not start within {0:?}")]
    Timeout(Duration),
}

impl fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("addr", &self.addr)
            .field("running", &self.stop.is_some())
            .finish()
    }
}

impl EmbeddedBroker {
    /// Starts a broker on a free port of `127.0.0.1` that accepts anonymous
    /// clients and lets everyone publish and subscribe everywhere.
    pub async fn start() -> Result<EmbeddedBroker, EmbeddedBrokerError> {
        Self::builder().start().await
    }

    /// A builder for a broker with users, access rules or a fixed port.
    pub fn builder() -> EmbeddedBrokerBuilder {
        EmbeddedBrokerBuilder::default()
    }

    /// The port the broker listens on (on `127.0.0.1`).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The broker's URL: `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.addr.port())
    }

    /// Stops the broker and waits (a few seconds at most) until its
    /// connections and its port are closed.
    pub async fn shutdown(mut self) {
        self.signal_stop();
        if let Some(stopped) = self.stopped.take() {
            // The broker gives its clients up to STOP_TIMEOUT to go; then its
            // runtime is dropped, which closes everything still open.
            let _ = tokio::time::timeout(STOP_TIMEOUT * 2, stopped).await;
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        // Does not block: the broker's thread stops on its own.
        self.signal_stop();
    }
}

/// Settings for an [`EmbeddedBroker`]; from [`EmbeddedBroker::builder`].
#[derive(Clone)]
pub struct EmbeddedBrokerBuilder {
    port: u16,
    users: Vec<(String, String)>,
    rules: Vec<Rule>,
    report_no_matching_subscribers: bool,
    broker_logging: bool,
}

impl Default for EmbeddedBrokerBuilder {
    fn default() -> Self {
        EmbeddedBrokerBuilder {
            port: 0,
            users: Vec::new(),
            rules: Vec::new(),
            report_no_matching_subscribers: true,
            broker_logging: false,
        }
    }
}

impl fmt::Debug for EmbeddedBrokerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let users: Vec<&str> = self.users.iter().map(|(u, _)| u.as_str()).collect();
        f.debug_struct("EmbeddedBrokerBuilder")
            .field("port", &self.port)
            .field("users", &users)
            .field("rules", &self.rules)
            .field("report_no_matching_subscribers", &self.report_no_matching_subscribers)
            .field("broker_logging", &self.broker_logging)
            .finish()
    }
}

impl EmbeddedBrokerBuilder {
    /// Listens on this port of `127.0.0.1` instead of a free one (`0`, the
    /// default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Adds a user. Once any user is added, only users with their right
    /// password may connect: anonymous clients are refused.
    ///
    /// With no user at all, every client may connect, and the username it
    /// sends (unchecked) is the identity the access rules apply to.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.push((name.into(), password.into()));
        self
    }

    /// Lets `user` publish to topics matching `topic_filter`.
    ///
    /// With no rule at all, everyone may publish and subscribe everywhere.
    /// Once any rule is added, everything not allowed by a rule is denied: a
    /// denied QoS 1 publish gets PUBACK `0x87` (Not authorized) and the
    /// connection stays open; a denied subscription gets SUBACK `0x87`.
    ///
    /// * `user` is a username, or `"*"` for every client (anonymous ones too).
    /// * In `topic_filter`, `%u` stands for the client's username and `%c` for
    ///   its client id (a rule using one does not apply to a client that has
    ///   none, or whose one contains `/`, `+` or `#`).
    /// * A subscription is allowed only if every topic it could match is
    ///   allowed (`a/#` is not allowed by a rule for `a/+`), and a shared
    ///   subscription `$share/{group}/{filter}` is checked as `{filter}`.
    pub fn allow_publish(mut self, user: impl Into<String>, topic_filter: impl Into<String>) -> Self {
        self.rules.push(Rule {
            user: user.into(),
            filter: topic_filter.into(),
            access: Access::Publish,
        });
        self
    }

    /// Lets `user` subscribe to topic filters within `topic_filter`; see
    /// [`allow_publish`](Self::allow_publish) for the rules.
    pub fn allow_subscribe(mut self, user: impl Into<String>, topic_filter: impl Into<String>) -> Self {
        self.rules.push(Rule {
            user: user.into(),
            filter: topic_filter.into(),
            access: Access::Subscribe,
        });
        self
    }

    /// Grants every right of an ACL manifest (see
    /// [`Server::acl_manifest`](crate::Server::acl_manifest)), and nothing
    /// else: the broker then enforces the tools' `allowed_callers` as a
    /// production broker loaded with the generated ACL would. Give each
    /// identity a password with [`user`](Self::user).
    pub fn acl(mut self, manifest: &crate::acl::AclManifest) -> Self {
        for identity in &manifest.identities {
            for filter in &identity.publish {
                self = self.allow_publish(identity.identity.clone(), filter.clone());
            }
            for filter in &identity.subscribe {
                self = self.allow_subscribe(identity.identity.clone(), filter.clone());
            }
        }
        self
    }

    /// Whether a QoS 1/2 publish that no subscription matches is acknowledged
    /// with reason code `0x10` (No matching subscribers), as Mosquitto does
    /// (default on).
    ///
    /// The `mqtt5` broker answers `0x00` (Success) to every authorised
    /// publish. When this is on, clients connect to a small relay in the same
    /// thread that forwards every packet unchanged to the broker, except that
    /// it changes a Success PUBACK/PUBREC to `0x10` when, once the broker has
    /// routed the message, no live or stored session holds a matching
    /// subscription (MQTT 5 clients only). Off, clients connect to the broker
    /// directly.
    pub fn report_no_matching_subscribers(mut self, on: bool) -> Self {
        self.report_no_matching_subscribers = on;
        self
    }

    /// Lets the broker's own `tracing` events through to the application's
    /// subscriber (default off: they are discarded).
    pub fn broker_logging(mut self, on: bool) -> Self {
        self.broker_logging = on;
        self
    }

    /// Starts the broker and waits until it accepts connections.
    pub async fn start(self) -> Result<EmbeddedBroker, EmbeddedBrokerError> {
        let auth = self.auth()?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let settings = Settings {
            addr,
            auth,
            relay: self.report_no_matching_subscribers,
            logging: self.broker_logging,
        };
        std::thread::Builder::new()
            .name("embedded-mqtt-broker".into())
            .spawn(move || {
                broker_thread(settings, ready_tx, stop_rx);
                let _ = stopped_tx.send(());
            })
            .map_err(|e| EmbeddedBrokerError::Start(format!("cannot spawn its thread: {e}")))?;

        let addr = match tokio::time::timeout(START_TIMEOUT, ready_rx).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) => return Err(EmbeddedBrokerError::Start("its thread ended unexpectedly".into())),
            Err(_) => {
                let _ = stop_tx.send(true);
                return Err(EmbeddedBrokerError::Timeout(START_TIMEOUT));
            }
        };
        tracing::debug!(%addr, "embedded MQTT broker started");
        Ok(EmbeddedBroker {
            addr,
            stop: Some(stop_tx),
            stopped: Some(stopped_rx),
        })
    }

    fn auth(&self) -> Result<EmbeddedAuth, EmbeddedBrokerError> {
        let mut users = HashMap::new();
        for (name, password) in &self.users {
            if name.is_empty() {
                return Err(EmbeddedBrokerError::Config("a username must not be empty".into()));
            }
            if users.insert(name.clone(), password.clone()).is_some() {
                return Err(EmbeddedBrokerError::Config(format!("user {name:?} is added twice")));
            }
        }
        for rule in &self.rules {
            if rule.user.is_empty() {
                return Err(EmbeddedBrokerError::Config(format!(
                    "the rule for {:?} has an empty username (use \"*\" for everyone)",
                    rule.filter
                )));
            }
            let probe = rule.filter.replace("%u", "u").replace("%c", "c");
            if !mqtt5::is_valid_topic_filter(&probe) || probe.starts_with("$share/") {
                return Err(EmbeddedBrokerError::Config(format!(
                    "{:?} (in a rule for {:?}) is not a valid MQTT topic filter",
                    rule.filter, rule.user
                )));
            }
        }
        let acl = (!self.rules.is_empty()).then(|| self.rules.clone());
        Ok(EmbeddedAuth { users, acl })
    }
}

struct Settings {
    addr: SocketAddr,
    auth: EmbeddedAuth,
    relay: bool,
    logging: bool,
}

/// The broker's thread: its own current-thread runtime, and (unless logging
/// is on) a thread-local `tracing` dispatcher that drops everything, which
/// covers every task of that runtime since they all run on this thread.
fn broker_thread(
    settings: Settings,
    ready: oneshot::Sender<Result<SocketAddr, EmbeddedBrokerError>>,
    stop: watch::Receiver<bool>,
) {
    let _quiet =
        (!settings.logging).then(|| tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default()));
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = ready.send(Err(EmbeddedBrokerError::Start(format!(
                "cannot build its runtime: {e}"
            ))));
            return;
        }
    };
    runtime.block_on(run_broker(settings, ready, stop));
    // Dropping the runtime ends every task left (client handlers, relays),
    // which closes their sockets.
    drop(runtime);
}

async fn run_broker(
    settings: Settings,
    ready: oneshot::Sender<Result<SocketAddr, EmbeddedBrokerError>>,
    mut stop: watch::Receiver<bool>,
) {
    let Settings { addr, auth, relay, .. } = settings;
    // With the relay, the broker itself listens on another free port.
    let broker_addr = if relay {
        SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
    } else {
        addr
    };
    let public = if relay {
        match TcpListener::bind(addr).await {
            Ok(listener) => Some(listener),
            Err(e) => {
                let _ = ready.send(Err(EmbeddedBrokerError::Bind {
                    addr,
                    reason: e.to_string(),
                }));
                return;
            }
        }
    } else {
        None
    };

    let mut config = BrokerConfig::default().with_bind_address(broker_addr);
    // In memory: the default backend writes files under ./mqtt_storage. With
    // no storage at all, the broker keeps no session of a client that left
    // (clean_start=false with a session expiry), so nothing is queued for it.
    config.storage_config.backend = StorageBackendType::Memory;
    config.storage_config.enable_persistence = true;
    config.sys_topics_enabled = false;
    config.auth_config.allow_anonymous = true; // replaced by EmbeddedAuth below
    config.auth_config.rate_limit.enabled = false;
    let broker = match MqttBroker::with_config(config).await {
        Ok(broker) => broker.with_auth_provider(Arc::new(auth)),
        Err(e) => {
            let text = e.to_string();
            let error = if text.to_ascii_lowercase().contains("bind") {
                EmbeddedBrokerError::Bind {
                    addr: broker_addr,
                    reason: text,
                }
            } else {
                EmbeddedBrokerError::Start(text)
            };
            let _ = ready.send(Err(error));
            return;
        }
    };
    let Some(broker_addr) = broker.local_addr() else {
        let _ = ready.send(Err(EmbeddedBrokerError::Start("it has no TCP listener".into())));
        return;
    };
    let shutdown = broker.shutdown_handle();
    let mut broker_ready = broker.ready_receiver();
    let router = broker.router();
    let mut run = tokio::spawn(async move {
        let mut broker = broker;
        broker.run().await
    });

    tokio::select! {
        result = broker_ready.wait_for(|ready| *ready) => {
            if result.is_err() {
                let reason = match (&mut run).await {
                    Ok(Err(e)) => e.to_string(),
                    Ok(Ok(())) => "it stopped at once".to_string(),
                    Err(e) => e.to_string(),
                };
                let _ = ready.send(Err(EmbeddedBrokerError::Start(reason)));
                return;
            }
        }
        _ = stop.wait_for(|stop| *stop) => {
            shutdown.shutdown();
            return;
        }
    }

    let (public_addr, relay_task) = match public {
        Some(listener) => {
            let public_addr = listener.local_addr().unwrap_or(addr);
            let relay = Relay {
                broker_addr,
                router,
                registry: Arc::default(),
            };
            (public_addr, Some(tokio::spawn(relay.accept_loop(listener))))
        }
        None => (broker_addr, None),
    };
    if ready.send(Ok(public_addr)).is_err() {
        // Nobody waits for this broker any more.
        shutdown.shutdown();
        return;
    }

    // Until stopped: an explicit stop, or the EmbeddedBroker being dropped.
    let _ = stop.wait_for(|stop| *stop).await;
    if let Some(task) = relay_task {
        task.abort();
    }
    shutdown.shutdown();
    let _ = tokio::time::timeout(STOP_TIMEOUT, run).await;
}

mod auth;
mod relay;

use auth::*;
use relay::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_must_lie_within_the_allowed_filter() {
        assert!(filter_within("a/b", "a/b"));
        assert!(filter_within("a/b", "a/+"));
        assert!(filter_within("a/+", "a/+"));
        assert!(filter_within("a/+", "a/#"));
        assert!(filter_within("a/#", "a/#"));
        assert!(filter_within("a", "a/#"));
        assert!(filter_within("a/b/c", "#"));
        assert!(!filter_within("a/#", "a/+"));
        assert!(!filter_within("a/+", "a/b"));
        assert!(!filter_within("a/b/c", "a/+"));
        assert!(!filter_within("a", "a/+"));
        assert!(!filter_within("#", "a/#"));
        assert!(!filter_within("$SYS/x", "#"));
        assert!(!filter_within("$SYS/x", "+/x"));
        assert!(filter_within("$SYS/x", "$SYS/#"));
    }

    #[test]
    fn placeholders_expand_only_to_safe_values() {
        assert_eq!(expand("r/%u/%c", Some("bob"), "c1").as_deref(), Some("r/bob/c1"));
        assert_eq!(expand("r/%u", None, "c1"), None);
        assert_eq!(expand("r/%u", Some("a/b"), "c1"), None);
        assert_eq!(expand("r/%c", Some("bob"), "c+"), None);
        assert_eq!(expand("r/#", None, ""), Some("r/#".to_string()));
    }

    #[test]
    fn frames_round_trip_lengths() {
        for len in [0usize, 1, 127, 128, 16_383, 16_384, 2_097_152] {
            let body = vec![7u8; len];
            let framed = frame(0x30, &body);
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            let (header, read) = rt
                .block_on(async { read_packet(&mut framed.as_slice()).await })
                .unwrap()
                .unwrap();
            assert_eq!(header, 0x30);
            assert_eq!(read.len(), len);
        }
    }

    #[test]
    fn finds_properties_past_others() {
        // user property ("k","v"), then topic alias 5.
        let props = [0x26, 0, 1, b'k', 0, 1, b'v', 0x23, 0, 5];
        assert_eq!(find_property(&props, 0x23), Some(&[0u8, 5][..]));
        assert_eq!(find_property(&props, 0x12), None);
    }
}
