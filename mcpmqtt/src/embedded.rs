//! An in-process MQTT 5 broker for demos, tests and local development.
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

// ---------------------------------------------------------------------------
// Authentication and access rules
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Publish,
    Subscribe,
}

#[derive(Debug, Clone)]
struct Rule {
    user: String,
    filter: String,
    access: Access,
}

/// Username/password check and topic rules, in place of `mqtt5`'s providers:
/// its `PasswordAuthProvider` hashes with Argon2 on every connect (slow in
/// debug builds), and its `AclManager` lets an `a/+` rule grant an `a/#`
/// subscription and checks shared subscriptions with their `$share/` prefix.
struct EmbeddedAuth {
    /// Empty: everyone may connect, and the username sent is taken as is.
    users: HashMap<String, String>,
    /// `None`: everything is allowed; `Some`: only what a rule allows.
    acl: Option<Vec<Rule>>,
}

impl EmbeddedAuth {
    fn allowed(&self, access: Access, client_id: &str, user: Option<&str>, topic: &str) -> bool {
        let Some(rules) = &self.acl else {
            return true;
        };
        let topic = match access {
            Access::Publish => topic,
            Access::Subscribe => mqtt5::strip_shared_subscription_prefix(topic),
        };
        rules.iter().filter(|rule| rule.access == access).any(|rule| {
            let user_matches = rule.user == "*" || Some(rule.user.as_str()) == user;
            user_matches
                && expand(&rule.filter, user, client_id).is_some_and(|filter| match access {
                    Access::Publish => mqtt5::topic_matches_filter(topic, &filter),
                    Access::Subscribe => filter_within(topic, &filter),
                })
        })
    }
}

/// `filter` with `%u` and `%c` replaced; `None` if one is needed but missing
/// or unsafe in a topic.
fn expand(filter: &str, user: Option<&str>, client_id: &str) -> Option<String> {
    fn safe(value: &str) -> bool {
        !value.is_empty() && !value.contains(['/', '+', '#'])
    }
    let mut out = filter.to_string();
    if out.contains("%u") {
        out = out.replace("%u", user.filter(|u| safe(u))?);
    }
    if out.contains("%c") {
        if !safe(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    Some(out)
}

/// Whether every topic that `requested` matches is matched by `allowed`.
fn filter_within(requested: &str, allowed: &str) -> bool {
    if requested.starts_with('$') && (allowed.starts_with('+') || allowed.starts_with('#')) {
        return false;
    }
    let mut req = requested.split('/');
    let mut all = allowed.split('/');
    loop {
        match (req.next(), all.next()) {
            (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
            (Some("#"), Some(_)) => return false,
            (Some("+"), Some(a)) => {
                if a != "+" {
                    return false;
                }
            }
            (Some(r), Some(a)) => {
                if a != "+" && a != r {
                    return false;
                }
            }
        }
    }
}

fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl AuthProvider for EmbeddedAuth {
    fn authenticate<'a>(
        &'a self,
        connect: &'a ConnectPacket,
        _client_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = mqtt5::Result<AuthResult>> + Send + 'a>> {
        let result = if self.users.is_empty() {
            match &connect.username {
                Some(user) => AuthResult::success_with_user(user.clone()),
                None => AuthResult::success(),
            }
        } else {
            match (&connect.username, &connect.password) {
                (Some(user), Some(password))
                    if self
                        .users
                        .get(user)
                        .is_some_and(|expected| same_secret(expected.as_bytes(), password)) =>
                {
                    AuthResult::success_with_user(user.clone())
                }
                (None, _) => AuthResult::fail_with_reason(
                    ReasonCode::NotAuthorized,
                    "this broker does not accept anonymous clients",
                ),
                _ => AuthResult::fail(ReasonCode::BadUsernameOrPassword),
            }
        };
        Box::pin(async move { Ok(result) })
    }

    fn authorize_publish<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let allowed = self.allowed(Access::Publish, client_id, user_id, topic);
        Box::pin(async move { allowed })
    }

    fn authorize_subscribe<'a>(
        &'a self,
        client_id: &str,
        user_id: Option<&'a str>,
        topic_filter: &'a str,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        let allowed = self.allowed(Access::Subscribe, client_id, user_id, topic_filter);
        Box::pin(async move { allowed })
    }
}

// ---------------------------------------------------------------------------
// The relay that reports "no matching subscribers"
// ---------------------------------------------------------------------------

/// Subscriptions the relay has seen granted: topic filter (as sent, with any
/// `$share/` prefix) -> client id -> when it was last granted.
///
/// It only names candidates: the broker's router has the final word, so an
/// entry left behind by a client that is gone does no harm.
#[derive(Default)]
struct Registry {
    entries: Mutex<HashMap<String, HashMap<String, u64>>>,
    clock: AtomicU64,
}

impl Registry {
    fn add(&self, client_id: &str, filter: &str) {
        let stamp = self.clock.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .entry(filter.to_string())
            .or_default()
            .insert(client_id.to_string(), stamp);
    }

    fn remove(&self, client_id: &str, filter: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(clients) = entries.get_mut(filter) {
            clients.remove(client_id);
            if clients.is_empty() {
                entries.remove(filter);
            }
        }
    }

    /// Removes an entry found stale, unless it was granted again since `stamp`.
    fn forget(&self, client_id: &str, filter: &str, stamp: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(clients) = entries.get_mut(filter) {
            if clients.get(client_id) == Some(&stamp) {
                clients.remove(client_id);
            }
            if clients.is_empty() {
                entries.remove(filter);
            }
        }
    }

    /// (client id, filter, stamp) of every entry whose filter matches `topic`.
    fn candidates(&self, topic: &str) -> Vec<(String, String, u64)> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .iter()
            .filter(|(filter, _)| mqtt5::topic_matches_filter(topic, mqtt5::strip_shared_subscription_prefix(filter)))
            .flat_map(|(filter, clients)| {
                clients
                    .iter()
                    .map(move |(client, stamp)| (client.clone(), filter.clone(), *stamp))
            })
            .collect()
    }
}

#[derive(Clone)]
struct Relay {
    broker_addr: SocketAddr,
    router: Arc<mqtt5::broker::router::MessageRouter>,
    registry: Arc<Registry>,
}

/// What one relayed connection remembers between packets.
#[derive(Default)]
struct Conn {
    client_id: Option<String>,
    v5: bool,
    /// Topic aliases the client set.
    aliases: HashMap<u16, String>,
    /// Topics of the client's QoS 1/2 publishes awaiting PUBACK/PUBREC.
    publishes: HashMap<u16, String>,
    subscribes: HashMap<u16, Vec<String>>,
    unsubscribes: HashMap<u16, Vec<String>>,
}

const CONNECT: u8 = 1;
const CONNACK: u8 = 2;
const PUBLISH: u8 = 3;
const PUBACK: u8 = 4;
const PUBREC: u8 = 5;
const SUBSCRIBE: u8 = 8;
const SUBACK: u8 = 9;
const UNSUBSCRIBE: u8 = 10;
const UNSUBACK: u8 = 11;
const NO_MATCHING_SUBSCRIBERS: u8 = 0x10;

impl Relay {
    async fn accept_loop(self, listener: TcpListener) {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let relay = self.clone();
            tokio::spawn(async move {
                if let Ok(broker) = TcpStream::connect(relay.broker_addr).await {
                    relay.serve(client, broker).await;
                }
            });
        }
    }

    /// Forwards both ways until either side closes; dropping both streams
    /// then closes the other side too (so a client that vanishes without
    /// DISCONNECT still gets its will published).
    async fn serve(&self, client: TcpStream, broker: TcpStream) {
        let _ = client.set_nodelay(true);
        let _ = broker.set_nodelay(true);
        let conn = Mutex::new(Conn::default());
        let (client_rx, mut client_tx) = client.into_split();
        let (broker_rx, mut broker_tx) = broker.into_split();
        let (mut client_rx, mut broker_rx) = (BufReader::new(client_rx), BufReader::new(broker_rx));
        let upstream = async {
            while let Ok(Some((header, body))) = read_packet(&mut client_rx).await {
                self.on_client_packet(&conn, header, &body);
                if broker_tx.write_all(&frame(header, &body)).await.is_err() {
                    break;
                }
            }
        };
        let downstream = async {
            while let Ok(Some((header, mut body))) = read_packet(&mut broker_rx).await {
                self.on_broker_packet(&conn, header, &mut body).await;
                if client_tx.write_all(&frame(header, &body)).await.is_err() {
                    break;
                }
            }
        };
        tokio::select! {
            () = upstream => {}
            () = downstream => {}
        }
    }

    /// Notes what the client asks for; never changes its packets.
    fn on_client_packet(&self, conn: &Mutex<Conn>, header: u8, body: &[u8]) {
        let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
        let _ = (|| -> Option<()> {
            let mut r = Reader::new(body);
            match header >> 4 {
                CONNECT => {
                    r.binary()?; // protocol name
                    let level = r.u8()?;
                    r.u8()?; // flags
                    r.u16()?; // keep alive
                    conn.v5 = level == 5;
                    if conn.v5 {
                        r.properties()?;
                    }
                    let id = r.string()?;
                    conn.client_id = (!id.is_empty()).then(|| id.to_string());
                }
                PUBLISH => {
                    let qos = (header >> 1) & 3;
                    let mut topic = r.string()?.to_string();
                    if qos == 0 {
                        return Some(());
                    }
                    let packet_id = r.u16()?;
                    if conn.v5 {
                        if let Some(alias) = find_property(r.properties()?, 0x23) {
                            let alias = u16::from_be_bytes(alias.try_into().ok()?);
                            if topic.is_empty() {
                                topic = conn.aliases.get(&alias)?.clone();
                            } else {
                                conn.aliases.insert(alias, topic.clone());
                            }
                        }
                    }
                    conn.publishes.insert(packet_id, topic);
                }
                SUBSCRIBE | UNSUBSCRIBE => {
                    let packet_id = r.u16()?;
                    if conn.v5 {
                        r.properties()?;
                    }
                    let mut filters = Vec::new();
                    while !r.is_empty() {
                        filters.push(r.string()?.to_string());
                        if header >> 4 == SUBSCRIBE {
                            r.u8()?; // options
                        }
                    }
                    if header >> 4 == SUBSCRIBE {
                        conn.subscribes.insert(packet_id, filters);
                    } else {
                        conn.unsubscribes.insert(packet_id, filters);
                    }
                }
                _ => {}
            }
            Some(())
        })();
    }

    /// Notes what the broker grants, and turns a Success PUBACK/PUBREC for a
    /// publish no subscription matched into `0x10`.
    async fn on_broker_packet(&self, conn: &Mutex<Conn>, header: u8, body: &mut Vec<u8>) {
        let kind = header >> 4;
        let pending = {
            let mut conn = conn.lock().unwrap_or_else(|e| e.into_inner());
            self.note_broker_packet(&mut conn, kind, body)
        };
        if let Some(topic) = pending {
            if !self.has_subscriber(&topic).await {
                if body.len() == 2 {
                    body.push(NO_MATCHING_SUBSCRIBERS);
                } else {
                    body[2] = NO_MATCHING_SUBSCRIBERS;
                }
            }
        }
    }

    /// For a Success PUBACK/PUBREC of an MQTT 5 client, the publish's topic.
    fn note_broker_packet(&self, conn: &mut Conn, kind: u8, body: &[u8]) -> Option<String> {
        let mut r = Reader::new(body);
        match kind {
            CONNACK if conn.v5 => {
                r.u8()?; // acknowledge flags
                r.u8()?; // reason code
                if let Some(id) = find_property(r.properties()?, 0x12) {
                    conn.client_id = std::str::from_utf8(id.get(2..)?).ok().map(str::to_string);
                }
            }
            PUBACK | PUBREC => {
                let packet_id = r.u16()?;
                let topic = conn.publishes.remove(&packet_id)?;
                let success = body.len() == 2 || body[2] == 0;
                return (conn.v5 && success).then_some(topic);
            }
            SUBACK | UNSUBACK => {
                let packet_id = r.u16()?;
                let filters = if kind == SUBACK {
                    conn.subscribes.remove(&packet_id)?
                } else {
                    conn.unsubscribes.remove(&packet_id)?
                };
                if conn.v5 {
                    r.properties()?;
                }
                let client_id = conn.client_id.as_deref()?;
                for (i, filter) in filters.iter().enumerate() {
                    // MQTT 3.1.1's UNSUBACK has no reason codes.
                    let code = body.get(r.pos + i).copied().unwrap_or(0);
                    if code < 0x80 {
                        if kind == SUBACK {
                            self.registry.add(client_id, filter);
                        } else {
                            self.registry.remove(client_id, filter);
                        }
                    }
                }
            }
            _ => {}
        }
        None
    }

    async fn has_subscriber(&self, topic: &str) -> bool {
        for (client_id, filter, stamp) in self.registry.candidates(topic) {
            if self.router.has_subscription(&client_id, &filter).await {
                return true;
            }
            self.registry.forget(&client_id, &filter, stamp);
        }
        false
    }
}

/// Reads one MQTT packet: its first byte and its body. `None` at a clean end.
async fn read_packet<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<(u8, Vec<u8>)>> {
    let mut first = [0u8; 1];
    if r.read(&mut first).await? == 0 {
        return Ok(None);
    }
    let mut len: usize = 0;
    for i in 0..4 {
        let byte = r.read_u8().await?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            // Grows as bytes come, rather than trusting the announced length.
            let mut body = Vec::with_capacity(len.min(64 * 1024));
            (&mut *r).take(len as u64).read_to_end(&mut body).await?;
            if body.len() < len {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            return Ok(Some((first[0], body)));
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "malformed MQTT remaining length",
    ))
}

fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(header);
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let bytes = self.buf.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(bytes)
    }

    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }

    fn varint(&mut self) -> Option<usize> {
        let mut value = 0usize;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(value);
            }
        }
        None
    }

    fn binary(&mut self) -> Option<&'a [u8]> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    fn string(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.binary()?).ok()
    }

    /// An MQTT 5 property block, as raw bytes.
    fn properties(&mut self) -> Option<&'a [u8]> {
        let len = self.varint()?;
        self.take(len)
    }
}

/// The raw value of property `id` in a property block (a string or binary
/// value keeps its 2-byte length).
fn find_property(props: &[u8], id: u8) -> Option<&[u8]> {
    let mut r = Reader::new(props);
    while !r.is_empty() {
        let this = r.varint()?;
        let start = r.pos;
        match this {
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => {
                r.take(1)?;
            }
            0x13 | 0x21 | 0x22 | 0x23 => {
                r.take(2)?;
            }
            0x02 | 0x11 | 0x18 | 0x27 => {
                r.take(4)?;
            }
            0x0B => {
                r.varint()?;
            }
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => {
                r.binary()?;
            }
            0x26 => {
                r.binary()?;
                r.binary()?;
            }
            _ => return None,
        }
        if this == usize::from(id) {
            return props.get(start..r.pos);
        }
    }
    None
}

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
