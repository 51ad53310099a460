//! The one MQTT connection of a server or client: options, the task that
//! drives rumqttc's event loop, and [`Link`], the handle that publishes and
//! subscribes through it. It carries messages without reading them.
//!
//! The connection speaks MQTT 5 or MQTT 3.1.1 ([`Protocol`]); which rumqttc
//! client is underneath is hidden in [`transport`], so that [`Link`] and
//! every publish received ([`Incoming`]) look the same for both.
//!
//! rumqttc's `publish()` does not return the packet id, yet a caller must
//! know its own PUBACK reason code (0x87 not authorized, 0x10 no subscribers).
//! rumqttc reports an `Outgoing::Publish(pkid)` event for each publish in the
//! order the requests entered its channel, so [`Link`] sends requests under
//! its book's lock, queues one expectation per request in the same order, and
//! the connection task pairs each outgoing event with the front of that queue.
//! Retransmissions reuse a packet id that is still in flight and are told
//! apart that way.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap;
use futures_util::{StreamExt, TryStreamExt};
use rumqttc::v5::mqttbytes::v5::{LastWill, PubAckReason, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::Transport;
use tokio::sync::{oneshot, watch, OwnedSemaphorePermit, Semaphore};

use crate::error::Error;
use crate::signal::Signal;

mod batch;
mod cert;
mod settings;
mod size;
mod transport;

use cert::ClientCertPem;
pub(crate) use settings::{connection_setters, Settings};
use size::PacketLimit;
pub(crate) use transport::ConnectOptions;
use transport::{BrokerConnect, ChannelClosed, Driver, Polled, Sender};

/// The default largest MQTT packet, in either direction: 16 MiB. rumqttc's own
/// default (10 KiB) would refuse ordinary tool results.
pub const DEFAULT_MAX_PACKET_SIZE: u32 = 16 * 1024 * 1024;

/// How long the broker keeps a session after a disconnect, by default: two
/// minutes. Calls published to a server that is briefly away, and responses
/// to a client that is briefly away, wait in the broker meanwhile.
pub const DEFAULT_SESSION_EXPIRY: u32 = 120;

/// The MQTT protocol version spoken with the broker.
///
/// MQTT 5 is the default and the full protocol. MQTT 3.1.1 is the
/// compatibility mode of the v0.1 protocol, for brokers or peers that do not
/// speak MQTT 5; servers and clients of either version interoperate through
/// the broker. On MQTT 3.1.1:
///
/// - calls and responses are matched by `call_id` alone (no Correlation
///   Data), and a server answers at the call payload's `response_topic` (or
///   the attested caller's response topic), as there is no Response Topic;
/// - a server subscribes its plain call topics, not a shared subscription:
///   every instance of a server gets, and runs, every call;
/// - the PUBACK carries no reason code, so a call the broker refuses (not
///   authorized, no server subscribed) is not reported: it can only time out;
/// - calls carry no Message Expiry: a server that was away may run a call
///   its caller has given up on;
/// - the session kept after a disconnect ([`BrokerOptions::with_session_expiry`]
///   above 0) is a 3.1.1 persistent session (`clean_session = false`), which
///   the broker keeps until the client id connects clean again (Mosquitto:
///   `persistent_client_expiration`), not for a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Protocol {
    /// MQTT 5 (the default).
    #[default]
    V5,
    /// MQTT 3.1.1, the v0.1 compatibility mode.
    V311,
}

/// Where and how to reach the broker. Shared by servers and clients.
///
/// Several brokers may be given, for fail-over (the nodes of a cluster, say):
/// the connection is made to the first that answers, and when it is lost
/// it is made again to the next of the list, with the same backoff as a
/// reconnect to a single broker. The subscriptions are made again and a
/// server's cards published again on the new broker; a call in flight is
/// published again or fails by its deadline. See [`BrokerOptions::parse`].
#[derive(Clone)]
pub struct BrokerOptions {
    pub(crate) url: String,
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) tls: bool,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) client_id: Option<String>,
    pub(crate) keep_alive: Duration,
    pub(crate) max_packet_size: u32,
    pub(crate) session_expiry: u32,
    pub(crate) give_up_after: Option<Duration>,
    /// How many unacknowledged QoS 1 messages the broker may send at once
    /// (MQTT 5 Receive Maximum); a server sets it from its concurrency so
    /// that a flood waits in the broker, not in the server's memory.
    pub(crate) receive_maximum: Option<u16>,
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// The client certificate and key presented over TLS (mutual TLS).
    pub(crate) client_cert: Option<ClientCertPem>,
    pub(crate) connect_timeout: Duration,
    pub(crate) protocol: Protocol,
    /// The brokers after the first, tried in order when the connection to
    /// the one before is lost.
    pub(crate) others: Vec<Endpoint>,
}

/// A broker of the list after the first: where it is, and the credentials
/// its own URL gives, if any (else those of the first apply).
#[derive(Clone)]
pub(crate) struct Endpoint {
    url: String,
    host: String,
    port: u16,
    tls: bool,
    username: Option<String>,
    password: Option<String>,
}

/// The separator of a list of broker URLs (`mqtt://a:1883,mqtt://b:1883`).
const BROKER_LIST_SEPARATOR: char = ',';

impl std::fmt::Debug for BrokerOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerOptions")
            .field("url", &self.url)
            .field("others", &self.others.iter().map(|o| o.address()).collect::<Vec<_>>())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("client_id", &self.client_id)
            .field(
                "client_cert",
                &self.client_cert.as_ref().map(|_| "(certificate and key)"),
            )
            .field("protocol", &self.protocol)
            .finish_non_exhaustive()
    }
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions::parse("mqtt://127.0.0.1:1883").expect("the default URL is valid")
    }
}

impl BrokerOptions {
    /// Reads `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]`
    /// (TLS, default port 8883). User and password in the URL become the
    /// credentials.
    ///
    /// Several URLs separated by commas (`mqtt://n1:1883,mqtt://n2:1883`)
    /// make a list of brokers to fail over between (see [`BrokerOptions`]),
    /// the first tried first. The credentials of the first URL apply to
    /// every broker whose own URL gives none.
    pub fn parse(url: &str) -> Result<Self, Error> {
        BrokerOptions::parse_all([url])
    }

    /// Reads a list of broker URLs, each as [`BrokerOptions::parse`] reads
    /// them (so each may itself be a comma-separated list): what a
    /// repeatable `--broker` flag gives. Fails on an empty list.
    pub fn parse_all<I, S>(urls: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut parsed = Vec::new();
        for list in urls {
            let list = list.as_ref();
            for url in list.split(BROKER_LIST_SEPARATOR) {
                let url = url.trim();
                if url.is_empty() {
                    return Err(Error::InvalidUrl {
                        url: list.to_owned(),
                        reason: "an empty URL in the list of brokers".to_owned(),
                    });
                }
                parsed.push(BrokerOptions::parse_one(url)?);
            }
        }
        let mut brokers = parsed.into_iter();
        let mut first = brokers.next().ok_or_else(|| Error::InvalidUrl {
            url: String::new(),
            reason: "no broker URL was given".to_owned(),
        })?;
        first.others = brokers
            .map(|b| Endpoint {
                url: b.url,
                host: b.host,
                port: b.port,
                tls: b.tls,
                username: b.username,
                password: b.password,
            })
            .collect();
        Ok(first)
    }

    /// Reads one URL.
    fn parse_one(url: &str) -> Result<Self, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
        let (tls, default_port) = match parsed.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => {
                return Err(invalid(&format!(
                    "unsupported scheme `{other}`: use mqtt:// or mqtts://"
                )))
            }
        };
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("it has no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let username = (!parsed.username().is_empty()).then(|| parsed.username().to_owned());
        Ok(BrokerOptions {
            url: url.to_owned(),
            host,
            port: parsed.port().unwrap_or(default_port),
            tls,
            username,
            password: parsed.password().map(str::to_owned),
            client_id: None,
            keep_alive: Duration::from_secs(30),
            max_packet_size: DEFAULT_MAX_PACKET_SIZE,
            session_expiry: DEFAULT_SESSION_EXPIRY,
            give_up_after: None,
            receive_maximum: None,
            ca_pem: None,
            client_cert: None,
            connect_timeout: Duration::from_secs(10),
            protocol: Protocol::V5,
            others: Vec::new(),
        })
    }

    /// Authenticates with this username and password. With Mosquitto's
    /// `use_username_as_clientid`, the username is the identity the ACL grants.
    pub fn with_credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self.password = Some(password.into());
        self
    }

    /// Sets the MQTT client id.
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    /// Trusts this PEM CA bundle for `mqtts://` instead of the system roots.
    pub fn with_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Presents this client certificate over TLS (mutual TLS), with its
    /// private key: the key PEM may hold a PKCS#8 (`BEGIN PRIVATE KEY`),
    /// RSA (`BEGIN RSA PRIVATE KEY`) or EC (`BEGIN EC PRIVATE KEY`) key,
    /// and the certificate PEM the client's certificate first, then any
    /// intermediate CA certificates. Needs an `mqtts://` URL.
    ///
    /// A broker set to take the certificate as the identity (Mosquitto:
    /// `require_certificate true` and `use_identity_as_username true`; EMQX:
    /// `peer_cert_as_username = cn`) grants the ACL's rights to the
    /// certificate's subject CN, and needs no password. A server or client
    /// whose identity differs from that CN fails to start with
    /// [`Error::IdentityMismatch`], naming both; see
    /// [`certificate_identity`](Self::certificate_identity).
    ///
    /// The PEMs are read when the connection is set up: a certificate or key
    /// that cannot be used then fails it with [`Error::Connect`], saying why,
    /// as does a broker that refuses the certificate (another CA, expired).
    pub fn with_client_cert(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.client_cert = Some(ClientCertPem {
            cert: cert_pem.into(),
            key: key_pem.into(),
        });
        self
    }

    /// The identity the broker maps the client certificate to: its subject
    /// CN (the first, as Mosquitto and EMQX read it). `Ok(None)` without a
    /// client certificate; [`Error::Connect`] when the certificate or its
    /// key cannot be read, or it has no CN.
    pub fn certificate_identity(&self) -> Result<Option<String>, Error> {
        self.client_cert.as_ref().map(ClientCertPem::common_name).transpose()
    }

    /// Fails with [`Error::IdentityMismatch`] when a client certificate is
    /// set and its CN is not `identity`, the identity this `role` (a server
    /// or a client) has everywhere else: its topics, its ACL rights.
    pub(crate) fn check_identity(&self, role: &'static str, identity: &str) -> Result<(), Error> {
        match self.certificate_identity()? {
            Some(cn) if cn != identity => Err(Error::IdentityMismatch {
                role,
                configured: identity.to_owned(),
                certificate: cn,
            }),
            _ => Ok(()),
        }
    }

    /// The largest MQTT packet sent or accepted (default 16 MiB). A broker
    /// that announces a smaller Maximum Packet Size lowers it for what is
    /// sent: nothing larger is published, since the broker would drop it.
    pub fn with_max_packet_size(mut self, bytes: u32) -> Self {
        self.max_packet_size = bytes;
        self
    }

    /// Asks the broker to keep the session (subscriptions and queued QoS 1
    /// messages) for this many seconds after a disconnect (default
    /// [`DEFAULT_SESSION_EXPIRY`]). `0` starts clean every time: whatever
    /// was published while the connection was down is lost.
    pub fn with_session_expiry(mut self, seconds: u32) -> Self {
        self.session_expiry = seconds;
        self
    }

    /// Stops reconnecting after the connection has been down this long, and
    /// fails what is in flight with a clear error (default: never give up).
    /// A broker that refuses the credentials on a reconnect is given up on
    /// at once.
    pub fn with_give_up_after(mut self, after: Duration) -> Self {
        self.give_up_after = Some(after);
        self
    }

    /// The MQTT keep-alive interval (default 30 s).
    pub fn with_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Speaks this MQTT version with the broker (default [`Protocol::V5`]).
    /// See [`Protocol`] for what MQTT 3.1.1 cannot do.
    pub fn with_protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }

    /// The MQTT version spoken with the broker.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// The URL of the (first) broker.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URLs of every broker of the list, in the order they are tried.
    pub fn urls(&self) -> Vec<&str> {
        std::iter::once(self.url.as_str())
            .chain(self.others.iter().map(|o| o.url.as_str()))
            .collect()
    }

    /// The (first) broker as `host:port`, for the logs: no credentials.
    fn address(&self) -> String {
        Endpoint::address_of(&self.host, self.port)
    }

    /// These options, for the broker `other` of the list.
    fn at(&self, other: &Endpoint) -> BrokerOptions {
        let mut at = self.clone();
        at.url = other.url.clone();
        at.host = other.host.clone();
        at.port = other.port;
        at.tls = other.tls;
        if other.username.is_some() {
            at.username = other.username.clone();
            at.password = other.password.clone();
        }
        at.others = Vec::new();
        at
    }

    /// The MQTT username, if any.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Parses `url` but keeps the credentials and client id already set.
    pub(crate) fn reparse(&self, url: &str) -> Result<Self, Error> {
        let mut parsed = BrokerOptions::parse(url)?;
        parsed.username = parsed.username.or_else(|| self.username.clone());
        parsed.password = parsed.password.or_else(|| self.password.clone());
        parsed.client_id = self.client_id.clone();
        parsed.ca_pem = self.ca_pem.clone();
        parsed.client_cert = self.client_cert.clone();
        parsed.max_packet_size = self.max_packet_size;
        parsed.session_expiry = self.session_expiry;
        parsed.give_up_after = self.give_up_after;
        parsed.keep_alive = self.keep_alive;
        parsed.protocol = self.protocol;
        Ok(parsed)
    }

    fn tls_config(&self) -> Result<rumqttc::TlsConfiguration, Error> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let mut roots = rustls::RootCertStore::empty();
        if let Some(pem) = &self.ca_pem {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| Error::Tls(format!("bad CA certificate: {e}")))?;
                roots.add(cert).map_err(|e| Error::Tls(e.to_string()))?;
            }
        } else {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
        if roots.is_empty() {
            return Err(Error::Tls(
                "no CA certificates: give one with `BrokerOptions::with_ca_pem` (or a builder's `ca_pem`)".into(),
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.client_cert {
            None => builder.with_no_client_auth(),
            Some(pem) => {
                let cert = pem.load()?;
                builder.with_client_auth_cert(cert.chain, cert.key).map_err(|e| {
                    Error::Connect(match e {
                        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                            "the client certificate cannot be used: the private key is not the certificate's \
                             (the key PEM holds another key)"
                                .to_owned()
                        }
                        other => format!("the client certificate cannot be used: its private key is refused ({other})"),
                    })
                })?
            }
        };
        Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
    }

    /// The options of a connection as `client_id`, for the protocol
    /// version chosen, to each broker of the list. On MQTT 3.1.1 the Last
    /// Will loses its MQTT 5 properties, and a session expiry above 0
    /// becomes a persistent session.
    pub(crate) fn mqtt_options(
        &self,
        client_id: &str,
        will: Option<LastWill>,
        manual_acks: bool,
    ) -> Result<ConnectOptions, Error> {
        let mut brokers = vec![(
            self.address(),
            self.broker_connect(client_id, will.clone(), manual_acks)?,
        )];
        for other in &self.others {
            let at = self.at(other);
            brokers.push((at.address(), at.broker_connect(client_id, will.clone(), manual_acks)?));
        }
        Ok(ConnectOptions { brokers })
    }

    /// The options of a connection to the (first) broker.
    fn broker_connect(
        &self,
        client_id: &str,
        will: Option<LastWill>,
        manual_acks: bool,
    ) -> Result<BrokerConnect, Error> {
        // Nagle's algorithm would hold every small packet until the broker's
        // delayed ACK: tens of milliseconds per call.
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        let transport = if self.tls {
            Some(Transport::tls_with_config(self.tls_config()?))
        } else if self.client_cert.is_some() {
            return Err(Error::Tls(format!(
                "a client certificate is only presented over TLS, and {} is plain MQTT: use an mqtts:// URL",
                self.url
            )));
        } else {
            None
        };
        let credentials = self
            .username
            .as_ref()
            .map(|user| (user.clone(), self.password.clone().unwrap_or_default()));
        if self.protocol == Protocol::V311 {
            net.set_connection_timeout(self.connect_timeout.as_secs().max(1));
            let mut opts = rumqttc::MqttOptions::new(client_id, self.host.clone(), self.port);
            // rumqttc's 3.1.1 client takes whole seconds, and panics below one.
            let keep_alive = if self.keep_alive.is_zero() {
                Duration::ZERO
            } else {
                self.keep_alive.max(Duration::from_secs(1))
            };
            opts.set_keep_alive(keep_alive);
            let max = self.max_packet_size as usize;
            opts.set_max_packet_size(max, max);
            opts.set_manual_acks(manual_acks);
            // An empty client id cannot keep a session (rumqttc would panic).
            opts.set_clean_session(self.session_expiry == 0 || client_id.is_empty());
            if let Some((user, pass)) = credentials {
                opts.set_credentials(user, pass);
            }
            if let Some(will) = will {
                opts.set_last_will(transport::will_v311(will));
            }
            if let Some(transport) = transport {
                opts.set_transport(transport);
            }
            return Ok(BrokerConnect::V311(opts, net));
        }
        let mut opts = rumqttc::v5::MqttOptions::new(client_id, self.host.clone(), self.port);
        opts.set_keep_alive(self.keep_alive);
        opts.set_max_packet_size(Some(self.max_packet_size));
        opts.set_connection_timeout(self.connect_timeout.as_secs().max(1));
        opts.set_manual_acks(manual_acks);
        opts.set_receive_maximum(self.receive_maximum);
        opts.set_outgoing_inflight_upper_limit(MAX_IN_FLIGHT);
        if self.session_expiry > 0 {
            opts.set_session_expiry_interval(Some(self.session_expiry));
            opts.set_clean_start(false);
        }
        if let Some((user, pass)) = credentials {
            opts.set_credentials(user, pass);
        }
        if let Some(will) = will {
            opts.set_last_will(will);
        }
        opts.set_network_options(net);
        if let Some(transport) = transport {
            opts.set_transport(transport);
        }
        Ok(BrokerConnect::V5(opts))
    }
}

impl Endpoint {
    fn address(&self) -> String {
        Endpoint::address_of(&self.host, self.port)
    }

    /// `host:port`, with an IPv6 host in brackets.
    fn address_of(host: &str, port: u16) -> String {
        if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        }
    }
}

/// How a broker acknowledged one packet.
#[derive(Debug)]
pub(crate) enum Ack {
    Published(PubAckReason),
    Subscribed(Vec<SubscribeReasonCode>),
    Unsubscribed,
    /// The connection was lost and the session with it, so the packet may not
    /// have reached the broker.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Publish,
    Subscribe,
    Unsubscribe,
}

struct Expectation {
    kind: Kind,
    waiter: Option<Waiter>,
    /// A QoS 1 publish's place in the send window, held until its PUBACK.
    slot: Option<OwnedSemaphorePermit>,
}

/// A packet sent and waiting for its acknowledgement.
struct Unacked {
    waiter: Option<Waiter>,
    _slot: Option<OwnedSemaphorePermit>,
}

/// The packets awaiting the ack of one kind and packet id, in the order
/// sent. Almost always one (every publish), kept without an allocation;
/// only SUBSCRIBEs sharing an id queue behind it.
#[derive(Default)]
struct Unackeds {
    first: Option<Unacked>,
    rest: VecDeque<Unacked>,
}

impl Unackeds {
    fn push_back(&mut self, unacked: Unacked) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(unacked);
        } else {
            self.rest.push_back(unacked);
        }
    }

    fn pop_front(&mut self) -> Option<Unacked> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }

    fn drain(&mut self) -> impl Iterator<Item = Unacked> + '_ {
        self.first.take().into_iter().chain(self.rest.drain(..))
    }
}

impl IntoIterator for Unackeds {
    type Item = Unacked;
    type IntoIter = std::iter::Chain<std::option::IntoIter<Unacked>, std::collections::vec_deque::IntoIter<Unacked>>;

    fn into_iter(self) -> Self::IntoIter {
        self.first.into_iter().chain(self.rest)
    }
}

/// How many QoS 1 publishes may be between their request and their PUBACK
/// at once: the broker's Receive Maximum (rumqttc's window).
///
/// rumqttc parks requests beyond its window in its request channel, and on
/// a lost connection moves them into its resend list, which it sends ahead
/// of its window and collision checks: packet ids then collide, and a
/// publish parked on a collision is overwritten by the next, never sent.
/// Holding the requests back here keeps rumqttc's lists within its window.
///
/// What is held back waits in the link's outbox ([`Book::outbox`]), not in
/// its sender's task: the connection task hands it over as PUBACKs free the
/// window, and no task is woken to send it. The outbox holds a few windows'
/// worth; a publisher that finds it full waits for room, which is the
/// backpressure a streaming handler relies on.
struct SendWindow {
    /// A slot per publish handed to rumqttc and not yet acknowledged.
    slots: Permits,
    /// A place per publish waiting in the outbox.
    room: Permits,
}

/// How many publishes may wait in the outbox, per slot of the window.
const ROOM_PER_SLOT: usize = 4;

impl SendWindow {
    fn new() -> Self {
        // Nothing is published before the first CONNACK sets the size.
        SendWindow {
            slots: Permits::new(),
            room: Permits::new(),
        }
    }

    /// Sets the window to `n` (each CONNACK says it again).
    fn resize(&self, n: usize) {
        self.slots.resize(n);
        self.room.resize(n.saturating_mul(ROOM_PER_SLOT));
    }

    /// Fails whoever waits for room: the link is closed for good.
    fn close(&self) {
        self.slots.semaphore.close();
        self.room.semaphore.close();
    }
}

/// A semaphore whose size can be set again.
struct Permits {
    semaphore: Arc<Semaphore>,
    size: std::sync::atomic::AtomicUsize,
}

impl Permits {
    fn new() -> Self {
        Permits {
            semaphore: Arc::new(Semaphore::new(0)),
            size: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn size(&self) -> usize {
        self.size.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn try_take(&self) -> Option<OwnedSemaphorePermit> {
        self.semaphore.clone().try_acquire_owned().ok()
    }

    fn resize(&self, n: usize) {
        use std::sync::atomic::Ordering::SeqCst;
        let size = self.size.load(SeqCst);
        if n > size {
            self.semaphore.add_permits(n - size);
            self.size.store(n, SeqCst);
        } else if n < size {
            // Only free permits can be taken away: the size shrinks by what
            // is free now, and the next resize takes away more.
            let forgotten = self.semaphore.forget_permits(size - n);
            self.size.store(size - forgotten, SeqCst);
        }
    }
}

/// A request for rumqttc: what enters its channel.
enum Request {
    Publish(Message),
    Subscribe(Vec<(String, QoS)>),
    Unsubscribe(String),
    Disconnect,
}

impl Request {
    /// The kind of packet rumqttc reports sending for it, if it reports one.
    fn kind(&self) -> Option<Kind> {
        match self {
            Request::Publish(_) => Some(Kind::Publish),
            Request::Subscribe(_) => Some(Kind::Subscribe),
            Request::Unsubscribe(_) => Some(Kind::Unsubscribe),
            Request::Disconnect => None,
        }
    }

    /// Whether it needs a slot of the send window.
    fn needs_slot(&self) -> bool {
        matches!(self, Request::Publish(msg) if msg.qos != QoS::AtMostOnce)
    }
}

/// A request waiting in the outbox for the send window.
struct Held {
    request: Request,
    waiter: Option<Waiter>,
    /// Its place in the outbox, given back as it leaves.
    _room: Option<OwnedSemaphorePermit>,
    /// When it was queued: a Message Expiry counts the time spent here.
    since: std::time::Instant,
}

impl Held {
    /// The request as it leaves: a publish's Message Expiry shortened by
    /// the whole seconds it waited (to no less than one, as 0 is not a
    /// valid interval), so that it still expires when its sender meant.
    fn leave(self) -> (Request, Option<Waiter>) {
        let mut request = self.request;
        if let Request::Publish(Message {
            properties: Some(props),
            ..
        }) = &mut request
        {
            if let Some(expiry) = props.message_expiry_interval.as_mut() {
                let waited = u32::try_from(self.since.elapsed().as_secs()).unwrap_or(u32::MAX);
                *expiry = expiry.saturating_sub(waited).max(1);
            }
        }
        (request, self.waiter)
    }
}

/// Who hears of a packet's acknowledgement.
pub(crate) enum Waiter {
    /// A task awaiting it.
    Task(oneshot::Sender<Ack>),
    /// A callback, run on the connection task: for a caller that wants to
    /// hear only of a refusal, without being woken for every success.
    Callback(Box<dyn FnOnce(Ack) + Send>),
}

impl Waiter {
    fn deliver(self, ack: Ack) {
        match self {
            Waiter::Task(tx) => {
                let _ = tx.send(ack);
            }
            Waiter::Callback(f) => f(ack),
        }
    }
}

/// Bookkeeping shared by [`Link`] and the connection task.
#[derive(Default)]
struct Book {
    /// One entry per request sent and not yet seen as an outgoing packet.
    queue: VecDeque<Expectation>,
    /// Packets sent and waiting for their ack, by kind and packet id: rumqttc
    /// may give a SUBSCRIBE the id of a PUBLISH it is resending after a
    /// reconnect, and each is acknowledged by its own kind of packet. A
    /// publish has one id to itself; SUBSCRIBEs (and UNSUBSCRIBEs) may share
    /// one, since rumqttc cycles through the ids without checking which of
    /// them still await their ack, and are answered in the order sent.
    inflight: HashMap<(Kind, u16), Unackeds>,
    /// Requests that sat unsent in rumqttc's pending list at the last error:
    /// the front of `queue`. A new session drops them.
    unsent_at_error: usize,
    /// Subscriptions to restore after a reconnect, by filter.
    subscriptions: BTreeMap<String, QoS>,
    /// Requests not handed to rumqttc yet, in order: the first is a publish
    /// that waits for a slot of the send window, or for the end of
    /// `restoring`, and every request made after it waits behind it, so that
    /// requests leave in the order made (but see [`Link::submit`]).
    outbox: VecDeque<Held>,
    /// Set from a reconnect until its subscriptions are made again (the
    /// number says which reconnect): the outbox holds every publish until
    /// then, so that the answers to what is sent can reach us.
    restoring: Option<u64>,
    /// Counts the reconnects that restored subscriptions.
    restores: u64,
    /// The connection is closed for good: nothing more is booked.
    closed: bool,
}

/// The state of the connection, as watched by its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkState {
    Connecting,
    Connected,
    Reconnecting(String),
    /// The first connection attempt failed, or reconnecting was given up:
    /// nothing will retry.
    Failed(String),
    Closed,
}

/// The most QoS 1 publishes awaiting their PUBACK at once, whatever the
/// broker's Receive Maximum allows (most brokers allow 10 to 100). rumqttc
/// keeps a slot for each possible one per connection: at MQTT's 65,535 that
/// is 13 MiB a client.
const MAX_IN_FLIGHT: u16 = 1024;

/// The capacity of rumqttc's request channel: never reached in practice.
const REQUEST_QUEUE: usize = 1 << 24;

/// How long [`Link::disconnect`] lets the broker take the DISCONNECT before
/// dropping the connection without it: a broker that is down or stalled
/// (SIGSTOP, a partition) would otherwise hold a shutdown for as long as
/// it stays so.
pub(crate) const DISCONNECT_GRACE: Duration = Duration::from_secs(1);

/// A handle on the connection: cheap to clone, shared by every task of a
/// server or client.
#[derive(Clone)]
pub(crate) struct Link {
    client: Sender,
    /// Locked while a request enters rumqttc's channel, so that the order of
    /// `book.queue` is the order of the channel.
    book: Arc<Mutex<Book>>,
    state: watch::Receiver<LinkState>,
    /// Counts CONNACKs: a change means the connection was made again.
    connects: watch::Receiver<u64>,
    /// Counts reconnects on which the broker had not kept the session: what
    /// was in flight, and what was queued for this client, is gone.
    sessions_lost: watch::Receiver<u64>,
    /// When the connection was last made again after a loss.
    reconnected_at: Arc<Mutex<Option<std::time::Instant>>>,
    closing: Arc<std::sync::atomic::AtomicBool>,
    /// Ends the connection task at once, wherever it is (connecting to a
    /// broker that does not answer, writing to a stalled socket).
    abandon: Arc<Signal>,
    /// The largest packet that may be sent, learned from each CONNACK.
    limit: Arc<PacketLimit>,
    /// The QoS 1 publishes that may await their PUBACK at once.
    window: Arc<SendWindow>,
}

/// The other half of [`Link::open`]: the connection task, not started yet.
pub(crate) struct Opening {
    eventloop: Driver,
    link: Link,
    state: watch::Sender<LinkState>,
    connects: watch::Sender<u64>,
    sessions_lost: watch::Sender<u64>,
}

impl Opening {
    /// Starts the connection task, and returns once the broker accepted the
    /// connection. See [`Link::connect`] for `inbox`.
    pub(crate) async fn connect(
        self,
        broker: &BrokerOptions,
        inbox: impl Inbox,
    ) -> Result<tokio::task::JoinHandle<()>, Error> {
        let mut state = self.link.state.clone();
        let watchers = Watchers {
            state: self.state,
            connects: self.connects,
            sessions_lost: self.sessions_lost,
        };
        let task = tokio::spawn(drive(self.eventloop, self.link, inbox, watchers, broker.give_up_after));
        // Each broker of the list is tried once, in turn.
        let tries = u32::try_from(1 + broker.others.len()).unwrap_or(u32::MAX);
        let first = tokio::time::timeout(
            broker.connect_timeout.saturating_mul(tries) + Duration::from_secs(1),
            state.wait_for(|s| !matches!(s, LinkState::Connecting)),
        )
        .await;
        match first {
            Err(_) => {
                task.abort();
                Err(Error::Connect("timed out waiting for the broker's CONNACK".into()))
            }
            Ok(Err(_)) => Err(Error::Connect("the connection task ended".into())),
            Ok(Ok(s)) => match s.clone() {
                LinkState::Failed(why) => Err(Error::Connect(why)),
                _ => Ok(task),
            },
        }
    }
}

/// A received publish's topic: the bytes rumqttc read it into, checked as
/// UTF-8 once. Not copied into a `String`: every call and response has one.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Topic(Bytes);

impl Topic {
    /// Topics are UTF-8 by the MQTT spec; a broker that sent anything else
    /// gets its bytes read leniently rather than the publish dropped.
    pub(crate) fn new(bytes: Bytes) -> Self {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Topic(bytes),
            Err(_) => Topic(Bytes::from(String::from_utf8_lossy(&bytes).into_owned())),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        // SAFETY: `new` and the `From` impls take only UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

impl std::ops::Deref for Topic {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for Topic {
    fn from(topic: String) -> Self {
        Topic(Bytes::from(topic))
    }
}

impl From<&str> for Topic {
    fn from(topic: &str) -> Self {
        Topic(Bytes::copy_from_slice(topic.as_bytes()))
    }
}

impl PartialEq<str> for Topic {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Topic {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Topic {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl std::fmt::Debug for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Topic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A publish received, whichever MQTT version brought it. The MQTT 5
/// properties are `None` on MQTT 3.1.1.
#[derive(Debug, Clone)]
pub(crate) struct Incoming {
    pub topic: Topic,
    pub payload: Bytes,
    pub qos: QoS,
    /// The MQTT 5 Response Topic.
    pub response_topic: Option<String>,
    /// The MQTT 5 Correlation Data.
    pub correlation: Option<Bytes>,
    /// The MQTT 5 Message Expiry Interval left, in seconds.
    pub message_expiry: Option<u32>,
    /// What [`Link::ack`] acknowledges it by.
    pub(crate) pkid: u16,
    /// Acknowledged already, as it was read ([`Inbox::acks_on_receipt`]).
    pub(crate) acked: bool,
}

impl Incoming {
    /// What acknowledges this publish ([`Link::ack`]): nothing, when it was
    /// acknowledged as it was read.
    pub(crate) fn ack_handle(&self) -> AckHandle {
        AckHandle {
            qos: if self.acked { QoS::AtMostOnce } else { self.qos },
            pkid: self.pkid,
        }
    }
}

/// Where a connection's incoming publishes go, on its task.
pub(crate) trait Inbox: Send + 'static {
    /// Takes one publish. Must not block: send it on, or route it in a few
    /// microseconds.
    fn deliver(&self, publish: Incoming);

    /// Whether the publishes read next may be acknowledged as they are read,
    /// on a connection with manual acks: asked before each read (not before
    /// a poll that hands out packets already read). Their
    /// PUBACKs then leave together, in the one write that ends the read,
    /// instead of a write each; an inbox says yes only when it will take
    /// every publish of a read at once.
    fn acks_on_receipt(&self) -> bool {
        false
    }
}

impl<F: Fn(Incoming) + Send + 'static> Inbox for F {
    fn deliver(&self, publish: Incoming) {
        self(publish)
    }
}

/// What a received publish is acknowledged by: its QoS and packet id, kept
/// without its topic, payload and properties.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AckHandle {
    pub(crate) qos: QoS,
    pub(crate) pkid: u16,
}

/// What to publish. The MQTT 5 `properties` are dropped on MQTT 3.1.1.
pub(crate) struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: Option<PublishProperties>,
}

impl Link {
    /// Connects, and returns once the broker accepted the connection.
    /// Each incoming publish is handed to `inbox`, on the connection task
    /// ([`Inbox::deliver`]).
    pub(crate) async fn connect(
        options: ConnectOptions,
        broker: &BrokerOptions,
        inbox: impl Inbox,
    ) -> Result<(Link, tokio::task::JoinHandle<()>), Error> {
        let (link, opening) = Link::open(options);
        let task = opening.connect(broker, inbox).await?;
        Ok((link, task))
    }

    /// A link not connected yet, for an owner that needs the link before it
    /// can say where incoming publishes go: [`Opening::connect`] connects it.
    pub(crate) fn open(options: ConnectOptions) -> (Link, Opening) {
        // Bounded in name only (rumqttc takes no unbounded channel): a send
        // that had to wait could be cancelled after its expectation was
        // booked, and the book would pair every later ack with the wrong
        // request. Requests are bounded by their senders instead: calls in
        // flight, calls running, cards.
        let limit = Arc::new(PacketLimit::new(options.max_packet_size()));
        let (client, eventloop) = transport::open(options, REQUEST_QUEUE);
        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let (connects_tx, connects_rx) = watch::channel(0u64);
        let (sessions_lost_tx, sessions_lost_rx) = watch::channel(0u64);
        let link = Link {
            client,
            book: Arc::new(Mutex::new(Book::default())),
            state: state_rx,
            connects: connects_rx,
            sessions_lost: sessions_lost_rx,
            reconnected_at: Arc::new(Mutex::new(None)),
            closing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            abandon: Arc::default(),
            limit,
            window: Arc::new(SendWindow::new()),
        };
        let opening = Opening {
            eventloop,
            link: link.clone(),
            state: state_tx,
            connects: connects_tx,
            sessions_lost: sessions_lost_tx,
        };
        (link, opening)
    }

    /// Publishes and waits for the broker's acknowledgement (QoS 1), which
    /// carries the reason code (always `Success` on MQTT 3.1.1, whose PUBACK
    /// has none).
    pub(crate) async fn publish_acked(&self, msg: Message) -> Result<PubAckReason, Error> {
        let (tx, rx) = oneshot::channel();
        self.send_publish(msg, Some(Waiter::Task(tx))).await?;
        match self.settled(rx).await {
            Some(Ack::Published(reason)) => Ok(reason),
            _ => Err(Error::Closed),
        }
    }

    /// Waits for an acknowledgement, or for the connection to close for good
    /// (whichever comes first: a request that slipped in as it closed is
    /// never acknowledged).
    async fn settled(&self, rx: oneshot::Receiver<Ack>) -> Option<Ack> {
        tokio::select! {
            ack = rx => ack.ok(),
            _ = self.closed() => None,
        }
    }

    /// Fails at once once the connection is closed for good.
    fn ensure_open(&self) -> Result<(), Error> {
        match &*self.state.borrow() {
            LinkState::Closed => Err(Error::Closed),
            LinkState::Failed(why) => Err(Error::Connect(why.clone())),
            _ => Ok(()),
        }
    }

    /// The largest packet that may be sent now: this end's own maximum
    /// packet size, or the broker's if it announced a smaller one.
    pub(crate) fn max_packet_size(&self) -> u32 {
        self.limit.get()
    }

    /// Whether `msg` can be sent: [`Error::TooLarge`], saying `what` it
    /// is, when its packet would exceed [`Link::max_packet_size`]. Every
    /// publish is checked so; a caller checks first to word the error, or
    /// to send something else instead.
    pub(crate) fn fits(&self, msg: &Message, what: impl FnOnce() -> String) -> Result<(), Error> {
        self.limit.check(size::publish_size(msg, self.client.is_v5()), what)
    }

    /// Publishes without waiting for the acknowledgement.
    pub(crate) async fn publish(&self, msg: Message) -> Result<(), Error> {
        self.send_publish(msg, None).await
    }

    /// Publishes, and runs `on_ack` on the connection task when the broker
    /// acknowledges the packet (or with [`Ack::Lost`] when it never will).
    /// Returns once the packet is on its way: handed to rumqttc, or queued in
    /// the outbox, which it waits for only when the outbox is full.
    pub(crate) async fn publish_then(
        &self,
        msg: Message,
        on_ack: impl FnOnce(Ack) + Send + 'static,
    ) -> Result<(), Error> {
        self.send_publish(msg, Some(Waiter::Callback(Box::new(on_ack)))).await
    }

    async fn send_publish(&self, msg: Message, waiter: Option<Waiter>) -> Result<(), Error> {
        self.ensure_open()?;
        // Never handed to rumqttc: it would fail the connection, and resend
        // the packet (failing again) on every reconnect.
        self.fits(&msg, || format!("the message to `{}`", msg.topic))?;
        let (mut request, mut waiter, mut room) = (Request::Publish(msg), waiter, None);
        loop {
            match self.submit(request, waiter, room) {
                Ok(()) => return Ok(()),
                Err(NotSent::Closed) => return Err(Error::Closed),
                Err(NotSent::Full(given_back)) => (request, waiter) = *given_back,
            }
            // The outbox is full: this publisher outruns the broker, and
            // waits. Nothing is booked yet, so this wait may be cancelled.
            let room_freed = self.window.room.semaphore.clone().acquire_owned().await;
            room = Some(room_freed.map_err(|_| Error::Closed)?);
        }
    }

    /// Hands `request` to rumqttc, or queues it in the outbox: a QoS 1 or 2
    /// publish that finds the send window full, and any request made while
    /// others wait there or subscriptions are being made again. A publish
    /// needs a place in the outbox (`room`, or one free now); the few others
    /// always get one.
    fn submit(
        &self,
        request: Request,
        waiter: Option<Waiter>,
        room: Option<OwnedSemaphorePermit>,
    ) -> Result<(), NotSent> {
        let mut book = self.book.lock().expect("book lock");
        if book.closed {
            return Err(NotSent::Closed);
        }
        // While subscriptions are made again, SUBSCRIBEs (and UNSUBSCRIBEs)
        // pass what the outbox holds: the publishes wait for them. Otherwise
        // they keep their turn: jumping the queue, they would draw packet ids
        // from the cycle of those in flight, and stall rumqttc on collisions
        // (a server's 10,000 UNSUBSCRIBEs at shutdown took seconds more).
        let jumps = book.restoring.is_some() && matches!(request, Request::Subscribe(_) | Request::Unsubscribe(_));
        if jumps || (book.outbox.is_empty() && book.restoring.is_none()) {
            if let Some(slot) = self.slot_for(&request) {
                return self
                    .hand_over(&mut book, request, waiter, slot)
                    .map_err(|_| NotSent::Closed);
            }
        }
        let room = match request {
            Request::Publish(_) => match room.or_else(|| self.window.room.try_take()) {
                Some(room) => Some(room),
                None => return Err(NotSent::Full(Box::new((request, waiter)))),
            },
            _ => None,
        };
        book.outbox.push_back(Held {
            request,
            waiter,
            _room: room,
            since: std::time::Instant::now(),
        });
        Ok(())
    }

    /// Whether `request` may leave now: `Some` with its slot of the send
    /// window (`None` inside for a request that needs none), or `None` while
    /// the window is full.
    fn slot_for(&self, request: &Request) -> Option<Option<OwnedSemaphorePermit>> {
        if request.needs_slot() {
            self.window.slots.try_take().map(Some)
        } else {
            Some(None)
        }
    }

    /// Books `request`'s expectation and puts it in rumqttc's channel, with
    /// the book locked: the expectations' order is the channel's. Gives the
    /// waiter back when the channel is closed.
    fn hand_over(
        &self,
        book: &mut Book,
        request: Request,
        waiter: Option<Waiter>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(), Option<Waiter>> {
        // Disconnect, the one request without an ack, has no waiter.
        let booked = match request.kind() {
            Some(kind) => {
                book.queue.push_back(Expectation { kind, waiter, slot });
                true
            }
            None => false,
        };
        let sent = match request {
            Request::Publish(msg) => self.client.try_publish(msg),
            Request::Subscribe(filters) => self.client.try_subscribe(&filters),
            Request::Unsubscribe(filter) => self.client.try_unsubscribe(&filter),
            Request::Disconnect => self.client.try_disconnect(),
        };
        match sent {
            Ok(()) => Ok(()),
            Err(ChannelClosed) if booked => Err(book.queue.pop_back().and_then(|e| e.waiter)),
            Err(ChannelClosed) => Err(None),
        }
    }

    /// Hands the outbox's requests to rumqttc, in order, while the send
    /// window has slots for them. The connection task calls it whenever
    /// slots may have been freed (a PUBACK, a CONNACK, a lost session), and
    /// [`Link::restored`] once subscriptions are back after a reconnect.
    fn pump(&self) {
        let mut failed = Vec::new();
        {
            let mut book = self.book.lock().expect("book lock");
            if book.restoring.is_some() {
                return;
            }
            while let Some(first) = book.outbox.front() {
                let Some(slot) = self.slot_for(&first.request) else {
                    break;
                };
                let Some(held) = book.outbox.pop_front() else { break };
                let (request, waiter) = held.leave();
                if let Err(waiter) = self.hand_over(&mut book, request, waiter, slot) {
                    failed.push(waiter);
                }
            }
        }
        lost(failed);
    }

    /// Holds every publish in the outbox until [`Link::restored`] is called
    /// with the number returned: the subscriptions of a reconnect are being
    /// made again.
    fn restoring(&self) -> u64 {
        let mut book = self.book.lock().expect("book lock");
        book.restores += 1;
        book.restoring = Some(book.restores);
        book.restores
    }

    /// The subscriptions of reconnect `which` are back (or could not all be
    /// made): what the outbox holds may leave. A later reconnect's hold
    /// stands.
    fn restored(&self, which: u64) {
        {
            let mut book = self.book.lock().expect("book lock");
            if book.restoring != Some(which) {
                return;
            }
            book.restoring = None;
        }
        self.pump();
    }

    /// Subscribes, waits for the SUBACKs, and remembers the subscriptions so
    /// they are restored after a reconnect.
    ///
    /// A long list goes in several SUBSCRIBE packets, of a size brokers
    /// accept (at most 100 filters, and well under the maximum packet size),
    /// a few of them awaiting their SUBACK at once. Fails with
    /// [`Error::SubscribeRefused`], naming a filter, when the broker refuses
    /// one; the broker may have taken the filters of other packets, and
    /// those acknowledged by then are remembered.
    pub(crate) async fn subscribe(&self, filters: &[(String, QoS)]) -> Result<(), Error> {
        let packets = batch::plan(
            filters.iter().map(|(filter, _)| batch::subscribe_entry(filter)),
            batch::MAX_FILTERS,
            batch::bytes_per_packet(self.max_packet_size()),
        );
        futures_util::stream::iter(packets)
            .map(|packet| self.subscribe_packet(&filters[packet]))
            .buffer_unordered(batch::in_flight(self.window_size()))
            .try_for_each(|()| std::future::ready(Ok(())))
            .await
    }

    /// Sends one SUBSCRIBE and waits for its SUBACK.
    async fn subscribe_packet(&self, filters: &[(String, QoS)]) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.submit(Request::Subscribe(filters.to_vec()), Some(Waiter::Task(tx)), None)
            .map_err(|_| Error::Closed)?;
        let codes = match self.settled(rx).await {
            Some(Ack::Subscribed(codes)) => codes,
            _ => return Err(Error::Closed),
        };
        for ((filter, _), code) in filters.iter().zip(&codes) {
            if !matches!(code, SubscribeReasonCode::Success(_)) {
                return Err(Error::SubscribeRefused {
                    filter: filter.clone(),
                    reason: format!("{code:?}"),
                });
            }
        }
        let mut book = self.book.lock().expect("book lock");
        for (filter, qos) in filters {
            book.subscriptions.insert(filter.clone(), *qos);
        }
        Ok(())
    }

    /// Unsubscribes, without waiting for the UNSUBACK.
    pub(crate) async fn unsubscribe(&self, filter: &str) {
        let (tx, _rx) = oneshot::channel();
        self.send_unsubscribe(filter, tx);
    }

    /// Unsubscribes and waits for the UNSUBACK: once this returns, the broker
    /// sends nothing more for `filter`.
    pub(crate) async fn unsubscribe_acked(&self, filter: &str) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.send_unsubscribe(filter, tx);
        match self.settled(rx).await {
            Some(Ack::Unsubscribed) => Ok(()),
            _ => Err(Error::Closed),
        }
    }

    /// Unsubscribes from every filter of `filters`, forgets them (they are
    /// not restored after a reconnect), and waits for every UNSUBACK: once
    /// this returns, the broker sends nothing more for any of them.
    ///
    /// rumqttc's clients send one filter per UNSUBSCRIBE (its packet could
    /// hold several, but only its event loop's own sender can send such a
    /// one), so each filter is a packet of its own, a few of them awaiting
    /// their UNSUBACK at once.
    pub(crate) async fn unsubscribe_many(&self, filters: &[String]) -> Result<(), Error> {
        {
            let mut book = self.book.lock().expect("book lock");
            for filter in filters {
                book.subscriptions.remove(filter);
            }
        }
        // By index: a closure taking a borrowed filter would make the future
        // too general for `tokio::spawn`.
        futures_util::stream::iter(0..filters.len())
            .map(|i| self.unsubscribe_acked(&filters[i]))
            .buffer_unordered(batch::in_flight(self.window_size()))
            .try_for_each(|()| std::future::ready(Ok(())))
            .await
    }

    fn send_unsubscribe(&self, filter: &str, waiter: oneshot::Sender<Ack>) {
        self.book.lock().expect("book lock").subscriptions.remove(filter);
        let request = Request::Unsubscribe(filter.to_owned());
        if self.submit(request, Some(Waiter::Task(waiter)), None).is_err() {
            tracing::debug!(filter, "could not unsubscribe: the connection is closed");
        }
    }

    /// The send window now: how many QoS 1 publishes may await their PUBACK.
    fn window_size(&self) -> usize {
        self.window.slots.size()
    }

    /// Acknowledges an incoming QoS 1 publish (for connections with manual acks).
    pub(crate) async fn ack(&self, handle: AckHandle) {
        if handle.qos != QoS::AtMostOnce && self.client.ack(handle).await.is_err() {
            tracing::debug!("could not acknowledge a publish: the connection is closed");
        }
    }

    /// Acknowledges an incoming publish without waiting, for the connection
    /// task itself (which must not wait on its own request channel). Returns
    /// whether it was queued; when not (the channel is full), acknowledge
    /// with [`Link::ack`] from another task.
    pub(crate) fn try_ack(&self, handle: AckHandle) -> bool {
        handle.qos == QoS::AtMostOnce || self.client.try_ack(handle)
    }

    /// Says goodbye to the broker (no Last Will is published), and returns
    /// once the connection is closed: within [`DISCONNECT_GRACE`] and a
    /// moment, whatever the broker's state. A broker that does not take the
    /// goodbye in time (down, stalled, cut off) sees the connection drop
    /// instead, and publishes the Last Will.
    pub(crate) async fn disconnect(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        if self.is_connected() {
            // Behind whatever waits in the outbox, which leaves first.
            let _ = self.submit(Request::Disconnect, None, None);
            if tokio::time::timeout(DISCONNECT_GRACE, self.closed()).await.is_ok() {
                return;
            }
            tracing::warn!("the broker did not take the DISCONNECT in time: dropping the connection");
        }
        self.abandon.raise();
        // The connection task ends at its next poll; if it is gone already
        // (aborted), the state's sender is dropped and this returns too.
        let _ = tokio::time::timeout(DISCONNECT_GRACE, self.closed()).await;
    }

    /// Resolves each time the broker is found to have dropped the session on
    /// a reconnect: what was in flight, and what it had queued for this
    /// connection, is lost, and may need sending again.
    pub(crate) fn sessions_lost(&self) -> watch::Receiver<u64> {
        let mut rx = self.sessions_lost.clone();
        rx.mark_unchanged();
        rx
    }

    /// How long ago the connection was made again after a loss, if it was.
    pub(crate) fn since_reconnect(&self) -> Option<Duration> {
        self.reconnected_at
            .lock()
            .expect("reconnect lock")
            .map(|at| at.elapsed())
    }

    /// Whether the connection is up now.
    pub(crate) fn is_connected(&self) -> bool {
        matches!(*self.state.borrow(), LinkState::Connected)
    }

    /// Resolves each time the connection is made again after a loss.
    pub(crate) fn reconnects(&self) -> watch::Receiver<u64> {
        let mut rx = self.connects.clone();
        rx.mark_unchanged();
        rx
    }

    /// Waits until the connection is closed for good, and says why: `None`
    /// after [`disconnect`](Link::disconnect), the reason after giving up.
    pub(crate) async fn closed(&self) -> Option<String> {
        let mut state = self.state.clone();
        let end = state
            .wait_for(|s| matches!(s, LinkState::Closed | LinkState::Failed(_)))
            .await;
        match end.as_deref() {
            Ok(LinkState::Failed(why)) => Some(why.clone()),
            _ => None,
        }
    }
}

/// Why [`Link::submit`] did not take a request.
enum NotSent {
    /// The connection is closed for good.
    Closed,
    /// The outbox has no room for this publish, given back (boxed: rare,
    /// and large).
    Full(Box<(Request, Option<Waiter>)>),
}

/// Ends the session `client_id` left on the broker. Needed on MQTT 3.1.1
/// only, where a persistent session has no expiry and lasts until its client
/// id connects with `clean_session = true`: this does that, and leaves at
/// once. (On MQTT 5 the session expires by itself.)
pub(crate) async fn end_session(broker: &BrokerOptions, client_id: &str) {
    let broker = broker.clone().with_give_up_after(Duration::ZERO);
    let mut options = match broker.mqtt_options(client_id, None, false) {
        Ok(o) => o,
        Err(e) => return tracing::warn!(%client_id, error = %e, "cannot end a session"),
    };
    options.clean();
    match Link::connect(options, &broker, |_| {}).await {
        Ok((link, conn_task)) => {
            link.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_secs(5), conn_task).await;
        }
        Err(e) => tracing::warn!(%client_id, error = %e, "could not end a session"),
    }
}

/// What the connection task tells the link's owners.
struct Watchers {
    state: watch::Sender<LinkState>,
    connects: watch::Sender<u64>,
    sessions_lost: watch::Sender<u64>,
}

/// The connection task: polls rumqttc, reconnects with backoff, and settles
/// acknowledgements.
async fn drive(
    mut eventloop: Driver,
    link: Link,
    inbox: impl Inbox,
    watchers: Watchers,
    give_up_after: Option<Duration>,
) {
    let Watchers {
        state,
        connects,
        sessions_lost,
    } = watchers;
    let sessions_lost = Arc::new(sessions_lost);
    let book = &link.book;
    // Fails what is pending when the task ends, however it ends: an aborted
    // task, too, must not leave a publisher waiting for room.
    let closing = CloseOnDrop(&link);
    let mut connected_once = false;
    let mut backoff = Duration::from_millis(50);
    // When the connection was last lost, while it stays lost.
    let mut down_since: Option<std::time::Instant> = None;
    // Why each broker of the list refused the first connection.
    let mut first_failures = Vec::new();
    // Made once, and polled only when rumqttc has nothing: each poll of it
    // takes the lock of its waiters, which would cost every packet. The
    // flag, read first, stops a busy loop as soon.
    let abandoned = link.abandon.raised();
    tokio::pin!(abandoned);
    let failure = loop {
        if link.abandon.is_raised() {
            break None;
        }
        eventloop.ack_on_receipt(|| inbox.acks_on_receipt());
        let polled = tokio::select! {
            biased;
            polled = eventloop.poll() => polled,
            () = &mut abandoned => break None,
        };
        match polled {
            Ok(event) => match event {
                Polled::Publish(publish) => {
                    inbox.deliver(publish);
                }
                Polled::PubAck(pkid, reason) => {
                    settle(book, Kind::Publish, pkid, Ack::Published(reason));
                    link.pump();
                }
                Polled::SubAck(pkid, codes) => settle(book, Kind::Subscribe, pkid, Ack::Subscribed(codes)),
                Polled::UnsubAck(pkid) => settle(book, Kind::Unsubscribe, pkid, Ack::Unsubscribed),
                Polled::ConnAck {
                    session_present,
                    max_packet_size,
                    receive_max,
                } => {
                    link.limit.on_connack(max_packet_size);
                    backoff = Duration::from_millis(50);
                    down_since = None;
                    // After a reconnect, `on_reconnect` first frees the slots
                    // of what the session lost, so that a smaller window can
                    // take them away at once.
                    let again = if connected_once {
                        *link.reconnected_at.lock().expect("reconnect lock") = Some(std::time::Instant::now());
                        Some(on_reconnect(book, session_present))
                    } else {
                        None
                    };
                    link.window.resize(usize::from(receive_max.min(MAX_IN_FLIGHT)));
                    if let Some(again) = again {
                        // Nothing new is published until the subscriptions
                        // are back: the answers to it need them.
                        let hold = (!again.is_empty()).then(|| link.restoring());
                        let (link, sessions_lost) = (link.clone(), sessions_lost.clone());
                        // Not awaited here: the event loop must keep running.
                        // `subscribe` sends them in packets brokers accept.
                        tokio::spawn(async move {
                            if let Some(hold) = hold {
                                match link.subscribe(&again).await {
                                    Ok(()) => tracing::debug!(count = again.len(), session_present, "subscribed again"),
                                    Err(e) => tracing::error!(error = %e, "could not restore subscriptions"),
                                }
                                link.restored(hold);
                            }
                            if !session_present {
                                // Told once the subscriptions are back, so
                                // that whatever is sent again gets its answers.
                                sessions_lost.send_modify(|n| *n += 1);
                            }
                        });
                    }
                    link.pump();
                    connected_once = true;
                    let _ = state.send(LinkState::Connected);
                    connects.send_modify(|n| *n += 1);
                }
                Polled::Disconnected(reason) => {
                    tracing::warn!(%reason, "the broker disconnected us");
                }
                Polled::Sent(kind, pkid) => sent(book, kind, pkid),
                Polled::Other => {}
            },
            Err(err) => {
                if link.closing.load(std::sync::atomic::Ordering::SeqCst) || err.requests_done {
                    break None;
                }
                let why = err.description;
                if !connected_once {
                    if eventloop.brokers() == 1 {
                        break Some(why);
                    }
                    // The first connection tries each broker of the list once.
                    first_failures.push(format!("{}: {why}", eventloop.broker()));
                    if err.permanent || first_failures.len() >= eventloop.brokers() {
                        break Some(first_failures.join("; "));
                    }
                    let next = eventloop.fail_over();
                    tracing::warn!(error = %why, next, "could not connect to the broker; trying the next of the list");
                    continue;
                }
                let down_for = down_since.get_or_insert_with(std::time::Instant::now).elapsed();
                if err.permanent {
                    break Some(format!("gave up reconnecting: {why}"));
                }
                if let Some(limit) = give_up_after.filter(|limit| down_for >= *limit) {
                    break Some(format!("gave up reconnecting after {} ms: {why}", limit.as_millis()));
                }
                book.lock().expect("book lock").unsent_at_error = eventloop.unsent();
                if eventloop.brokers() == 1 {
                    tracing::warn!(error = %why, retry_in = ?backoff, "MQTT connection lost; reconnecting");
                } else {
                    let from = eventloop.broker().to_owned();
                    let to = eventloop.fail_over();
                    tracing::warn!(error = %why, from, to, retry_in = ?backoff, "MQTT connection lost; failing over to the next broker");
                }
                let _ = state.send(LinkState::Reconnecting(why));
                tokio::select! {
                    biased;
                    () = &mut abandoned => break None,
                    _ = tokio::time::sleep(jittered(backoff)) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    };
    drop(closing);
    let _ = state.send(match failure {
        Some(why) => {
            if connected_once {
                tracing::error!(reason = %why, "MQTT connection lost for good");
            }
            LinkState::Failed(why)
        }
        None => LinkState::Closed,
    });
}

/// Closes a link for good when dropped: see [`fail_all`].
struct CloseOnDrop<'a>(&'a Link);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        fail_all(&self.0.book);
        self.0.window.close();
    }
}

/// Up to a quarter more, so that many clients cut off together do not all
/// reconnect in the same instant.
fn jittered(backoff: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    backoff + backoff.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// An outgoing packet left: pair it with the oldest expectation, unless it is
/// a retransmission of a publish still in flight. (rumqttc never sends a
/// SUBSCRIBE or UNSUBSCRIBE again: one with the id of another still in
/// flight is a new one, the ids having gone round.)
fn sent(book: &Mutex<Book>, kind: Kind, pkid: u16) {
    let mut book = book.lock().expect("book lock");
    if pkid != 0 && kind == Kind::Publish && book.inflight.contains_key(&(kind, pkid)) {
        return;
    }
    let Some(exp) = book.queue.pop_front() else {
        tracing::error!(pkid, "an outgoing packet no request accounts for");
        return;
    };
    book.unsent_at_error = book.unsent_at_error.saturating_sub(1);
    if exp.kind != kind {
        tracing::error!(pkid, ?kind, expected = ?exp.kind, "outgoing packets out of step with requests");
    }
    if pkid != 0 {
        let unacked = Unacked {
            waiter: exp.waiter,
            _slot: exp.slot,
        };
        book.inflight.entry((kind, pkid)).or_default().push_back(unacked);
    }
}

fn settle(book: &Mutex<Book>, kind: Kind, pkid: u16, ack: Ack) {
    let unacked = {
        let mut book = book.lock().expect("book lock");
        match book.inflight.entry((kind, pkid)) {
            Entry::Occupied(mut waiting) => {
                let unacked = waiting.get_mut().pop_front();
                if waiting.get().is_empty() {
                    waiting.remove();
                }
                unacked
            }
            Entry::Vacant(_) => None,
        }
    };
    if let Some(Unacked {
        waiter: Some(waiter), ..
    }) = unacked
    {
        waiter.deliver(ack);
    }
}

/// After a reconnect: if the broker kept the session, rumqttc resends the
/// publishes that were in flight and nothing is lost. If not, rumqttc
/// dropped the in-flight and the unsent requests, so their waiters fail.
/// Either way a SUBSCRIBE or UNSUBSCRIBE still awaiting its ack fails: it is
/// never sent again, and its ack, if the broker sent one, went with the
/// connection. Returns the subscriptions to make again.
///
/// The subscriptions are made again even when the broker says it kept the
/// session: a broker restored from its persistence file may say so and yet
/// have lost some of them (Mosquitto 2.0 loses shared subscriptions that
/// way), and subscribing again to what is there changes nothing.
fn on_reconnect(book: &Mutex<Book>, session_present: bool) -> Vec<(String, QoS)> {
    let (dropped, subscriptions) = {
        let mut book = book.lock().expect("book lock");
        let mut dropped = Vec::new();
        book.inflight.retain(|(kind, _), unacked| {
            let lost = !session_present || *kind != Kind::Publish;
            if lost {
                dropped.extend(unacked.drain().map(|u| u.waiter));
            }
            !lost
        });
        if session_present {
            book.unsent_at_error = 0;
        } else {
            for _ in 0..std::mem::take(&mut book.unsent_at_error) {
                dropped.push(book.queue.pop_front().and_then(|e| e.waiter));
            }
        }
        let subscriptions = book.subscriptions.iter().map(|(f, q)| (f.clone(), *q)).collect();
        (dropped, subscriptions)
    };
    lost(dropped);
    subscriptions
}

/// The connection is closed for good: every request not acknowledged fails,
/// and none is taken from now on.
fn fail_all(book: &Mutex<Book>) {
    let dropped: Vec<_> = {
        let mut book = book.lock().expect("book lock");
        book.closed = true;
        let inflight = book
            .inflight
            .drain()
            .flat_map(|(_, unacked)| unacked.into_iter().map(|u| u.waiter))
            .collect::<Vec<_>>();
        let queued = book.queue.drain(..).map(|e| e.waiter).collect::<Vec<_>>();
        let held = book.outbox.drain(..).map(|h| h.waiter);
        inflight.into_iter().chain(queued).chain(held).collect()
    };
    lost(dropped);
}

/// Tells waiters their packets may never have reached the broker. Called
/// with the book unlocked: a callback may use the link.
fn lost(waiters: Vec<Option<Waiter>>) {
    for waiter in waiters.into_iter().flatten() {
        waiter.deliver(Ack::Lost);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;

    #[test]
    fn parses_broker_urls() {
        let o = BrokerOptions::parse("mqtt://127.0.0.1:1884").unwrap();
        assert_eq!((o.host.as_str(), o.port, o.tls), ("127.0.0.1", 1884, false));
        let o = BrokerOptions::parse("mqtts://user:pw@localhost").unwrap();
        assert_eq!((o.port, o.tls), (8883, true));
        assert_eq!(o.username.as_deref(), Some("user"));
        assert_eq!(o.password.as_deref(), Some("pw"));
        assert!(BrokerOptions::parse("http://x").is_err());
        assert!(BrokerOptions::parse("not a url").is_err());
    }

    #[test]
    fn parses_a_list_of_brokers() {
        let o = BrokerOptions::parse("mqtt://u:pw@127.0.0.1:1884, mqtts://[::1]:8884,mqtt://v:pv@h3").unwrap();
        assert_eq!(o.url(), "mqtt://u:pw@127.0.0.1:1884");
        assert_eq!(
            o.urls(),
            vec!["mqtt://u:pw@127.0.0.1:1884", "mqtts://[::1]:8884", "mqtt://v:pv@h3"]
        );
        assert_eq!(
            (o.host.as_str(), o.port, o.username.as_deref()),
            ("127.0.0.1", 1884, Some("u"))
        );
        let second = o.at(&o.others[0]);
        assert_eq!((second.address(), second.tls), ("[::1]:8884".to_string(), true));
        assert_eq!(
            (second.username.as_deref(), second.password.as_deref()),
            (Some("u"), Some("pw")),
            "the first URL's credentials apply to a broker whose URL gives none"
        );
        let third = o.at(&o.others[1]);
        assert_eq!(
            (third.address(), third.username.as_deref()),
            ("h3:1883".to_string(), Some("v"))
        );
        assert!(third.others.is_empty());

        let repeated = BrokerOptions::parse_all(["mqtt://a:1", "mqtt://b:2,mqtt://c:3"]).unwrap();
        assert_eq!(repeated.urls(), vec!["mqtt://a:1", "mqtt://b:2", "mqtt://c:3"]);

        for bad in ["mqtt://a:1,,mqtt://b:2", "mqtt://a:1,", "mqtt://a:1,http://b"] {
            let e = BrokerOptions::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidUrl { .. }), "{bad}: {e}");
        }
        let none: [&str; 0] = [];
        assert!(BrokerOptions::parse_all(none)
            .unwrap_err()
            .to_string()
            .contains("no broker URL"));
    }

    #[test]
    fn a_list_keeps_its_settings_through_a_new_url_and_gives_one_connection_per_broker() {
        let o = BrokerOptions::default()
            .with_credentials("scout", "pw")
            .with_session_expiry(7)
            .reparse("mqtt://127.0.0.1:1,mqtt://127.0.0.1:2")
            .unwrap();
        let options = o.mqtt_options("scout", None, false).unwrap();
        let addresses: Vec<_> = options.brokers.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(addresses, ["127.0.0.1:1", "127.0.0.1:2"]);
        for (_, broker) in &options.brokers {
            let BrokerConnect::V5(opts) = broker else {
                panic!("MQTT 5 was asked for")
            };
            assert_eq!(opts.credentials().map(|l| l.username), Some("scout".to_string()));
            assert_eq!(opts.session_expiry_interval(), Some(7));
        }
        assert!(format!("{o:?}").contains("127.0.0.1:2"));
    }

    #[test]
    fn the_protocol_survives_a_new_url() {
        let o = BrokerOptions::default().with_protocol(Protocol::V311);
        assert_eq!(o.reparse("mqtt://10.0.0.1:1999").unwrap().protocol(), Protocol::V311);
        assert_eq!(BrokerOptions::default().protocol(), Protocol::V5);
    }

    #[test]
    fn a_session_expiry_maps_to_a_persistent_session_on_311() {
        let v311 = BrokerOptions::default().with_protocol(Protocol::V311);
        let will = LastWill::new("ns/mcp/servers/s/card", "offline", QoS::AtLeastOnce, true, None);
        let mut kept = v311.mqtt_options("s-1", Some(will), true).unwrap();
        let BrokerConnect::V311(opts, _) = kept.first() else {
            panic!("an MQTT 3.1.1 connection was asked for")
        };
        assert!(opts
            .last_will()
            .is_some_and(|w| w.retain && w.topic == "ns/mcp/servers/s/card"));
        assert_eq!(opts.max_packet_size(), DEFAULT_MAX_PACKET_SIZE as usize);
        assert!(opts.manual_acks());
        assert!(kept.keeps_session());
        kept.clean();
        assert!(!kept.keeps_session());
        let mut clean = v311
            .clone()
            .with_session_expiry(0)
            .mqtt_options("c", None, false)
            .unwrap();
        assert!(!clean.keeps_session());
        clean.resume_once();
        assert!(clean.keeps_session(), "3.1.1 resumes with clean_session = false");

        let mut v5 = BrokerOptions::default().mqtt_options("s-1", None, true).unwrap();
        assert!(matches!(v5.first(), BrokerConnect::V5(_)));
        assert!(v5.keeps_session());
        v5.resume_once();
        assert!(
            !v5.keeps_session(),
            "MQTT 5 ends an adopted session with its connection"
        );
    }

    #[test]
    fn a_keep_alive_under_a_second_does_not_panic_on_311() {
        let o = BrokerOptions::default()
            .with_protocol(Protocol::V311)
            .with_keep_alive(Duration::from_millis(300));
        let options = o.mqtt_options("c", None, false).unwrap();
        let BrokerConnect::V311(opts, _) = options.first() else {
            panic!("an MQTT 3.1.1 connection was asked for")
        };
        assert_eq!(opts.keep_alive(), Duration::from_secs(1));
    }

    /// A book expecting `n` publishes, and their waiters' receivers.
    fn expecting(n: usize) -> (Mutex<Book>, Vec<oneshot::Receiver<Ack>>) {
        let mut book = Book::default();
        let mut receivers = Vec::new();
        for _ in 0..n {
            let (tx, rx) = oneshot::channel();
            book.queue.push_back(Expectation {
                kind: Kind::Publish,
                waiter: Some(Waiter::Task(tx)),
                slot: None,
            });
            receivers.push(rx);
        }
        (Mutex::new(book), receivers)
    }

    #[test]
    fn retransmissions_do_not_consume_expectations() {
        let (book, mut rx) = expecting(2);
        let (rx1, rx2) = rx.split_at_mut(1);
        let (rx1, rx2) = (&mut rx1[0], &mut rx2[0]);
        sent(&book, Kind::Publish, 7);
        sent(&book, Kind::Publish, 7); // retransmission
        sent(&book, Kind::Publish, 8);
        settle(&book, Kind::Publish, 8, Ack::Published(PubAckReason::NotAuthorized));
        settle(&book, Kind::Publish, 7, Ack::Published(PubAckReason::Success));
        assert!(matches!(rx1.try_recv(), Ok(Ack::Published(PubAckReason::Success))));
        assert!(matches!(
            rx2.try_recv(),
            Ok(Ack::Published(PubAckReason::NotAuthorized))
        ));
    }

    #[test]
    fn a_subscribe_may_share_its_packet_id_with_a_publish_in_flight() {
        let mut book = Book::default();
        let (ptx, mut prx) = oneshot::channel();
        let (stx, mut srx) = oneshot::channel();
        book.queue.push_back(Expectation {
            kind: Kind::Publish,
            waiter: Some(Waiter::Task(ptx)),
            slot: None,
        });
        book.queue.push_back(Expectation {
            kind: Kind::Subscribe,
            waiter: Some(Waiter::Task(stx)),
            slot: None,
        });
        let book = Mutex::new(book);
        sent(&book, Kind::Publish, 1);
        // After a reconnect rumqttc resends the publish, and gives the new
        // SUBSCRIBE the same packet id.
        sent(&book, Kind::Publish, 1);
        sent(&book, Kind::Subscribe, 1);
        assert!(
            book.lock().unwrap().queue.is_empty(),
            "each request paired with its packet"
        );
        settle(&book, Kind::Subscribe, 1, Ack::Subscribed(vec![]));
        settle(&book, Kind::Publish, 1, Ack::Published(PubAckReason::Success));
        assert!(matches!(srx.try_recv(), Ok(Ack::Subscribed(_))));
        assert!(matches!(prx.try_recv(), Ok(Ack::Published(PubAckReason::Success))));
    }

    /// A book expecting `kinds`, in order, and their waiters' receivers.
    fn expecting_kinds(kinds: &[Kind]) -> (Mutex<Book>, Vec<oneshot::Receiver<Ack>>) {
        let mut book = Book::default();
        let mut receivers = Vec::new();
        for &kind in kinds {
            let (tx, rx) = oneshot::channel();
            book.queue.push_back(Expectation {
                kind,
                waiter: Some(Waiter::Task(tx)),
                slot: None,
            });
            receivers.push(rx);
        }
        (Mutex::new(book), receivers)
    }

    #[test]
    fn subscribes_sharing_a_packet_id_are_answered_in_order() {
        // rumqttc's ids went round while the first SUBSCRIBE awaited its
        // SUBACK: the second gets the same id, and is not a retransmission.
        let (book, mut rx) = expecting_kinds(&[Kind::Subscribe, Kind::Subscribe, Kind::Unsubscribe]);
        let [first, second, unsub] = &mut rx[..] else {
            unreachable!()
        };
        sent(&book, Kind::Subscribe, 4);
        sent(&book, Kind::Subscribe, 4);
        sent(&book, Kind::Unsubscribe, 4);
        assert!(book.lock().unwrap().queue.is_empty(), "each paired with its request");
        settle(&book, Kind::Subscribe, 4, Ack::Subscribed(vec![]));
        assert!(matches!(first.try_recv(), Ok(Ack::Subscribed(_))));
        assert!(second.try_recv().is_err(), "the second SUBACK is still to come");
        settle(&book, Kind::Unsubscribe, 4, Ack::Unsubscribed);
        settle(&book, Kind::Subscribe, 4, Ack::Subscribed(vec![]));
        assert!(matches!(second.try_recv(), Ok(Ack::Subscribed(_))));
        assert!(matches!(unsub.try_recv(), Ok(Ack::Unsubscribed)));
        assert!(book.lock().unwrap().inflight.is_empty());
    }

    #[test]
    fn a_subscribe_in_flight_at_a_reconnect_fails_even_when_the_session_was_kept() {
        let (book, mut rx) = expecting_kinds(&[Kind::Publish, Kind::Subscribe]);
        let [publish, subscribe] = &mut rx[..] else {
            unreachable!()
        };
        sent(&book, Kind::Publish, 1);
        sent(&book, Kind::Subscribe, 2);
        on_reconnect(&book, true);
        assert!(
            matches!(subscribe.try_recv(), Ok(Ack::Lost)),
            "rumqttc never sends it again"
        );
        assert!(
            publish.try_recv().is_err(),
            "the publish is resent, and awaits its PUBACK"
        );
        sent(&book, Kind::Publish, 1); // the retransmission
        settle(&book, Kind::Publish, 1, Ack::Published(PubAckReason::Success));
        assert!(matches!(publish.try_recv(), Ok(Ack::Published(PubAckReason::Success))));
    }

    #[test]
    fn the_send_window_follows_the_broker_and_a_slot_returns_with_its_ack() {
        let window = SendWindow::new();
        assert_eq!(
            window.slots.semaphore.available_permits(),
            0,
            "nothing before the CONNACK"
        );
        window.resize(2);
        let slot = window.slots.try_take().unwrap();
        let mut book = Book::default();
        book.queue.push_back(Expectation {
            kind: Kind::Publish,
            waiter: None,
            slot: Some(slot),
        });
        let book = Mutex::new(book);
        sent(&book, Kind::Publish, 3);
        assert_eq!(window.slots.semaphore.available_permits(), 1, "held until the PUBACK");
        settle(&book, Kind::Publish, 3, Ack::Published(PubAckReason::Success));
        assert_eq!(window.slots.semaphore.available_permits(), 2);
        window.resize(1);
        assert_eq!(
            window.slots.semaphore.available_permits(),
            1,
            "a smaller window on a reconnect"
        );
        window.resize(20);
        assert_eq!(window.slots.semaphore.available_permits(), 20);
    }

    /// A link whose connection task is never started: what it hands to
    /// rumqttc shows in its book, and acks are played by hand.
    /// rumqttc's channel stays open while the `Opening` lives.
    fn unconnected_link(window: usize) -> (Link, Opening) {
        let broker = BrokerOptions::parse("mqtt://127.0.0.1:1").unwrap();
        let (link, opening) = Link::open(broker.mqtt_options("outbox-test", None, false).unwrap());
        link.window.resize(window);
        (link, opening)
    }

    fn qos1(topic: &str) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::from_static(b"{}"),
            qos: QoS::AtLeastOnce,
            retain: false,
            properties: None,
        }
    }

    fn outbox_topics(link: &Link) -> Vec<String> {
        let book = link.book.lock().unwrap();
        book.outbox
            .iter()
            .map(|held| match &held.request {
                Request::Publish(msg) => msg.topic.clone(),
                _ => "(not a publish)".into(),
            })
            .collect()
    }

    /// A publish whose ack is recorded in `acks`, in the order they come.
    async fn publish_recorded(link: &Link, topic: &str, acks: &Arc<Mutex<Vec<String>>>) {
        let (acks, name) = (acks.clone(), topic.to_owned());
        link.publish_then(qos1(topic), move |_| acks.lock().unwrap().push(name))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn publishes_beyond_the_window_wait_in_the_outbox_and_leave_in_order() {
        let (link, _opening) = unconnected_link(2);
        let acks = Arc::new(Mutex::new(Vec::new()));
        for topic in ["a", "b", "c", "d"] {
            publish_recorded(&link, topic, &acks).await;
        }
        assert_eq!(link.book.lock().unwrap().queue.len(), 2, "a and b fill the window");
        assert_eq!(outbox_topics(&link), ["c", "d"]);
        let mut at_most_once = qos1("e");
        at_most_once.qos = QoS::AtMostOnce;
        link.publish(at_most_once).await.unwrap();
        assert_eq!(
            outbox_topics(&link),
            ["c", "d", "e"],
            "a QoS 0 publish needs no slot, but leaves after those made before it"
        );

        sent(&link.book, Kind::Publish, 1);
        sent(&link.book, Kind::Publish, 2);
        settle(&link.book, Kind::Publish, 1, Ack::Published(PubAckReason::Success));
        link.pump();
        assert_eq!(outbox_topics(&link), ["d", "e"], "one PUBACK lets one more leave");
        settle(&link.book, Kind::Publish, 2, Ack::Published(PubAckReason::Success));
        link.pump();
        assert!(outbox_topics(&link).is_empty());
        assert_eq!(
            link.book.lock().unwrap().queue.len(),
            3,
            "c, d and e are in rumqttc's channel"
        );
        sent(&link.book, Kind::Publish, 3);
        sent(&link.book, Kind::Publish, 4);
        sent(&link.book, Kind::Publish, 0);
        settle(&link.book, Kind::Publish, 4, Ack::Published(PubAckReason::Success));
        settle(&link.book, Kind::Publish, 3, Ack::Published(PubAckReason::Success));
        assert_eq!(
            *acks.lock().unwrap(),
            ["a", "b", "d", "c"],
            "each ack reaches its own publish"
        );
        assert_eq!(link.window.slots.semaphore.available_permits(), 2);
    }

    #[tokio::test]
    async fn a_publisher_waits_when_the_outbox_is_full_and_is_let_in_as_it_drains() {
        let (link, _opening) = unconnected_link(1);
        let acks = Arc::new(Mutex::new(Vec::new()));
        let topics: Vec<String> = (0..=ROOM_PER_SLOT).map(|i| i.to_string()).collect();
        for topic in &topics {
            publish_recorded(&link, topic, &acks).await;
        }
        assert_eq!(
            outbox_topics(&link),
            topics[1..],
            "one in the window, the rest in the outbox"
        );

        let mut next = std::pin::pin!(link.publish(qos1("next")));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            next.as_mut().poll(&mut cx).is_pending(),
            "the outbox is full: this one waits"
        );
        assert_eq!(outbox_topics(&link).len(), ROOM_PER_SLOT, "and takes no place yet");

        sent(&link.book, Kind::Publish, 1);
        settle(&link.book, Kind::Publish, 1, Ack::Published(PubAckReason::Success));
        link.pump();
        assert!(matches!(next.as_mut().poll(&mut cx), std::task::Poll::Ready(Ok(()))));
        assert_eq!(outbox_topics(&link).last().map(String::as_str), Some("next"));
        assert_eq!(outbox_topics(&link).len(), ROOM_PER_SLOT);
    }

    #[tokio::test]
    async fn a_closed_link_fails_what_waits_in_its_outbox_and_whoever_waits_for_room() {
        let (link, _opening) = unconnected_link(1);
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = oneshot::channel();
        link.send_publish(qos1("in the window"), Some(Waiter::Task(tx)))
            .await
            .unwrap();
        for i in 0..ROOM_PER_SLOT {
            publish_recorded(&link, &i.to_string(), &acks).await;
        }
        let mut waiting = std::pin::pin!(link.publish(qos1("waiting for room")));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiting.as_mut().poll(&mut cx).is_pending());

        fail_all(&link.book);
        link.window.close();
        assert!(matches!(rx.await, Ok(Ack::Lost)));
        assert_eq!(
            acks.lock().unwrap().len(),
            ROOM_PER_SLOT,
            "every held publish hears it was lost"
        );
        assert!(matches!(
            waiting.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Err(Error::Closed))
        ));
        assert!(
            matches!(link.submit(Request::Disconnect, None, None), Err(NotSent::Closed)),
            "nothing is taken once closed"
        );
    }

    fn kinds_booked(link: &Link) -> Vec<Kind> {
        link.book.lock().unwrap().queue.iter().map(|e| e.kind).collect()
    }

    /// A window of one: publish `a` handed to rumqttc, `b` in the outbox.
    async fn a_sent_and_b_held() -> (Link, Opening, Arc<Mutex<Vec<String>>>) {
        let (link, opening) = unconnected_link(1);
        let acks = Arc::new(Mutex::new(Vec::new()));
        publish_recorded(&link, "a", &acks).await;
        publish_recorded(&link, "b", &acks).await;
        (link, opening, acks)
    }

    fn subscribe_request() -> Request {
        Request::Subscribe(vec![("x/#".to_owned(), QoS::AtLeastOnce)])
    }

    #[tokio::test]
    async fn every_request_keeps_its_turn_behind_held_publishes() {
        let (link, _opening, _acks) = a_sent_and_b_held().await;
        let (tx, _rx) = oneshot::channel();
        assert!(link.submit(subscribe_request(), Some(Waiter::Task(tx)), None).is_ok());
        assert!(link.submit(Request::Disconnect, None, None).is_ok());
        assert_eq!(outbox_topics(&link), ["b", "(not a publish)", "(not a publish)"]);

        sent(&link.book, Kind::Publish, 1);
        settle(&link.book, Kind::Publish, 1, Ack::Published(PubAckReason::Success));
        link.pump();
        assert!(
            outbox_topics(&link).is_empty(),
            "the SUBSCRIBE and the goodbye need no slot"
        );
        assert_eq!(
            kinds_booked(&link),
            [Kind::Publish, Kind::Subscribe],
            "b, then the SUBSCRIBE"
        );
    }

    #[tokio::test]
    async fn subscriptions_made_again_pass_what_the_outbox_holds() {
        let (link, _opening, _acks) = a_sent_and_b_held().await;
        let hold = link.restoring();
        let (tx, _rx) = oneshot::channel();
        assert!(link.submit(subscribe_request(), Some(Waiter::Task(tx)), None).is_ok());
        assert_eq!(kinds_booked(&link), [Kind::Publish, Kind::Subscribe]);
        assert!(link.submit(Request::Disconnect, None, None).is_ok());
        assert_eq!(
            outbox_topics(&link),
            ["b", "(not a publish)"],
            "the goodbye still waits its turn"
        );
        link.restored(hold);
        assert_eq!(
            outbox_topics(&link),
            ["b", "(not a publish)"],
            "b still waits for a slot"
        );
    }

    #[tokio::test]
    async fn publishes_wait_while_the_subscriptions_of_a_reconnect_are_made_again() {
        let (link, _opening) = unconnected_link(4);
        let acks = Arc::new(Mutex::new(Vec::new()));
        let first = link.restoring();
        let second = link.restoring();
        publish_recorded(&link, "a", &acks).await;
        link.pump();
        assert_eq!(outbox_topics(&link), ["a"], "held, though the window has room");
        link.restored(first);
        assert_eq!(outbox_topics(&link), ["a"], "a later reconnect's hold stands");
        link.restored(second);
        assert!(outbox_topics(&link).is_empty());
        assert_eq!(kinds_booked(&link), [Kind::Publish]);
    }

    #[tokio::test]
    async fn a_lost_session_frees_its_slots_for_what_the_outbox_holds() {
        let (link, _opening, acks) = a_sent_and_b_held().await;
        sent(&link.book, Kind::Publish, 1);
        on_reconnect(&link.book, false);
        assert_eq!(*acks.lock().unwrap(), ["a"], "a was lost with the session");
        link.pump();
        assert!(outbox_topics(&link).is_empty(), "b takes a's slot");
        assert_eq!(kinds_booked(&link), [Kind::Publish]);
    }

    #[test]
    fn time_in_the_outbox_counts_against_a_message_expiry() {
        let held = |expiry: u32, waited: u64| {
            let mut msg = qos1("t");
            msg.properties = Some(PublishProperties {
                message_expiry_interval: Some(expiry),
                ..Default::default()
            });
            let since = std::time::Instant::now() - Duration::from_secs(waited);
            let (request, _) = Held {
                request: Request::Publish(msg),
                waiter: None,
                _room: None,
                since,
            }
            .leave();
            match request {
                Request::Publish(msg) => msg.properties.unwrap().message_expiry_interval,
                _ => unreachable!(),
            }
        };
        assert_eq!(held(10, 3), Some(7));
        assert_eq!(held(2, 3), Some(1), "never 0, which is not an interval");
        assert_eq!(held(10, 0), Some(10));
    }

    #[test]
    fn a_lost_session_fails_what_it_dropped() {
        let (book, mut rx) = expecting(3);
        let [rx1, rx2, rx3] = &mut rx[..] else { unreachable!() };
        sent(&book, Kind::Publish, 1); // in flight when the connection dropped
        book.lock().unwrap().unsent_at_error = 1; // the second was still unsent
        book.lock()
            .unwrap()
            .subscriptions
            .insert("a/b".into(), QoS::AtLeastOnce);
        let again = on_reconnect(&book, false);
        assert_eq!(again, vec![("a/b".to_string(), QoS::AtLeastOnce)]);
        assert_eq!(
            on_reconnect(&book, true),
            again,
            "subscribed again even when the broker says it kept the session"
        );
        assert!(matches!(rx1.try_recv(), Ok(Ack::Lost)));
        assert!(matches!(rx2.try_recv(), Ok(Ack::Lost)));
        assert!(
            rx3.try_recv().is_err(),
            "the third was sent after the error and survives"
        );
        sent(&book, Kind::Publish, 1);
        settle(&book, Kind::Publish, 1, Ack::Published(PubAckReason::Success));
        assert!(matches!(rx3.try_recv(), Ok(Ack::Published(PubAckReason::Success))));
    }
}
