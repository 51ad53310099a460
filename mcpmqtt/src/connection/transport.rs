//! The two rumqttc clients behind one interface: MQTT 5 (`rumqttc::v5`) and
//! MQTT 3.1.1 (rumqttc's top level, its "v4" protocol level). Nothing above
//! this module may depend on which of the two is underneath.
//!
//! Everything above this module speaks one version-neutral language: the
//! MQTT 5 QoS, reason codes and properties (a superset), an [`Incoming`] for
//! every publish received, and a [`Polled`] for every event of the
//! connection. On MQTT 3.1.1 the properties of an outgoing message and of the
//! Last Will are dropped, a PUBACK counts as success (3.1.1 has no reason
//! codes), and incoming publishes carry no properties.

use bytes::Bytes;
use futures_util::FutureExt;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::Outgoing;

use super::{AckHandle, Incoming, Kind, Message, Topic};

/// The options of one connection: one set per broker of the list, the
/// first tried first. A lost connection is made again with the next set
/// ([`Driver::fail_over`]).
pub(crate) struct ConnectOptions {
    /// Each broker's `host:port` (for the logs, without credentials) and
    /// the options to connect to it with.
    pub(crate) brokers: Vec<(String, BrokerConnect)>,
}

impl ConnectOptions {
    /// Resumes the session this client id left behind. On MQTT 5 the session
    /// also ends with this connection (session expiry 0). MQTT 3.1.1 has no
    /// session expiry: the session outlives the connection, and ends only
    /// when a connection with [`ConnectOptions::clean`] takes the client id.
    pub(crate) fn resume_once(&mut self) {
        for (_, broker) in &mut self.brokers {
            broker.resume_once();
        }
    }

    /// Starts clean, discarding whatever session this client id left, and
    /// ends the session with the connection.
    pub(crate) fn clean(&mut self) {
        for (_, broker) in &mut self.brokers {
            broker.clean();
        }
    }

    /// The largest packet this end sends or accepts, as configured (the
    /// same for every broker of the list).
    pub(crate) fn max_packet_size(&self) -> u32 {
        self.brokers.first().map_or(u32::MAX, |(_, b)| b.max_packet_size())
    }

    /// Whether the broker is asked to keep the session after a disconnect.
    #[cfg(test)]
    pub(crate) fn keeps_session(&self) -> bool {
        self.brokers.iter().all(|(_, b)| b.keeps_session())
    }

    /// The options for the first broker of the list.
    #[cfg(test)]
    pub(crate) fn first(&self) -> &BrokerConnect {
        &self.brokers[0].1
    }
}

/// The options of a connection to one broker, for the version it speaks.
// One per broker of a connection, made once: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum BrokerConnect {
    V5(rumqttc::v5::MqttOptions),
    /// rumqttc's 3.1.1 client takes its socket options (TCP_NODELAY, connect
    /// timeout) on the event loop rather than in its `MqttOptions`.
    V311(rumqttc::MqttOptions, rumqttc::NetworkOptions),
}

impl BrokerConnect {
    fn resume_once(&mut self) {
        match self {
            BrokerConnect::V5(o) => {
                o.set_clean_start(false);
                o.set_session_expiry_interval(None);
            }
            BrokerConnect::V311(o, _) => {
                o.set_clean_session(false);
            }
        }
    }

    fn clean(&mut self) {
        match self {
            BrokerConnect::V5(o) => {
                o.set_clean_start(true);
                o.set_session_expiry_interval(None);
            }
            BrokerConnect::V311(o, _) => {
                o.set_clean_session(true);
            }
        }
    }

    fn max_packet_size(&self) -> u32 {
        match self {
            BrokerConnect::V5(o) => o.max_packet_size().unwrap_or(u32::MAX),
            BrokerConnect::V311(o, _) => u32::try_from(o.max_packet_size()).unwrap_or(u32::MAX),
        }
    }

    #[cfg(test)]
    fn keeps_session(&self) -> bool {
        match self {
            BrokerConnect::V5(o) => !o.clean_start() && o.session_expiry_interval().unwrap_or(0) > 0,
            BrokerConnect::V311(o, _) => !o.clean_session(),
        }
    }
}

/// The MQTT 3.1.1 form of a Last Will: its MQTT 5 properties are dropped.
pub(crate) fn will_v311(will: p5::LastWill) -> rumqttc::LastWill {
    rumqttc::LastWill {
        topic: String::from_utf8_lossy(&will.topic).into_owned(),
        message: will.message,
        qos: qos_v311(will.qos),
        retain: will.retain,
    }
}

/// What rumqttc acknowledges a received MQTT 5 publish by: only its packet
/// id and QoS matter.
fn ack_handle_v5(handle: AckHandle) -> p5::Publish {
    let mut publish = p5::Publish::new("", handle.qos, Bytes::new(), None);
    publish.pkid = handle.pkid;
    publish
}

/// The same for MQTT 3.1.1.
fn ack_handle_v311(handle: AckHandle) -> rumqttc::Publish {
    let mut publish = rumqttc::Publish::new("", qos_v311(handle.qos), Vec::new());
    publish.pkid = handle.pkid;
    publish
}

pub(crate) fn qos_v311(qos: QoS) -> rumqttc::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn qos_from_v311(qos: rumqttc::QoS) -> QoS {
    match qos {
        rumqttc::QoS::AtMostOnce => QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// A publish received over MQTT 5, with its properties; `acked` when it
/// was acknowledged as it was read.
pub(crate) fn incoming_v5(publish: p5::Publish, acked: bool) -> Incoming {
    let props = publish.properties.unwrap_or_default();
    Incoming {
        topic: Topic::new(publish.topic),
        payload: publish.payload,
        qos: publish.qos,
        response_topic: props.response_topic,
        correlation: props.correlation_data,
        message_expiry: props.message_expiry_interval,
        acked: acked && publish.qos != QoS::AtMostOnce,
        pkid: publish.pkid,
    }
}

/// A publish received over MQTT 3.1.1: no properties; `acked` as for
/// [`incoming_v5`].
pub(crate) fn incoming_v311(publish: rumqttc::Publish, acked: bool) -> Incoming {
    Incoming {
        topic: publish.topic.into(),
        payload: publish.payload,
        qos: qos_from_v311(publish.qos),
        response_topic: None,
        correlation: None,
        message_expiry: None,
        acked: acked && publish.qos != rumqttc::QoS::AtMostOnce,
        pkid: publish.pkid,
    }
}

fn suback_code_from_v311(code: rumqttc::SubscribeReasonCode) -> p5::SubscribeReasonCode {
    match code {
        rumqttc::SubscribeReasonCode::Success(qos) => p5::SubscribeReasonCode::Success(qos_from_v311(qos)),
        rumqttc::SubscribeReasonCode::Failure => p5::SubscribeReasonCode::Failure,
    }
}

/// The request side of a connection: cheap to clone.
#[derive(Clone)]
pub(crate) enum Sender {
    V5(rumqttc::v5::AsyncClient),
    V311(rumqttc::AsyncClient),
}

/// The request channel is closed: the connection task has ended.
#[derive(Debug)]
pub(crate) struct ChannelClosed;

/// The event side of a connection, polled by the connection task, with the
/// brokers it may fail over to.
pub(crate) struct Driver {
    eventloop: EventLoop,
    /// Every broker of the list, in order, with its options.
    brokers: Vec<(String, BrokerConnect)>,
    /// The broker the event loop connects to now: an index into `brokers`.
    current: usize,
    /// Whether the connection was opened with manual acks (which
    /// [`Driver::ack_on_receipt`] may lift for a read).
    manual_acks: bool,
}

// One per connection, owned by its task: the size of the variants does not matter.
#[allow(clippy::large_enum_variant)]
enum EventLoop {
    V5(rumqttc::v5::EventLoop),
    V311(rumqttc::EventLoop),
}

/// Opens a connection's two halves; nothing is sent until the driver is
/// polled. The connection is made to the first broker of the list. (The
/// list is never empty; an empty one would make a connection to nowhere,
/// which fails on its first poll.)
pub(crate) fn open(options: ConnectOptions, capacity: usize) -> (Sender, Driver) {
    let mut brokers = options.brokers;
    if brokers.is_empty() {
        // Port 0 cannot be connected to: the first poll fails, clearly.
        let none = rumqttc::v5::MqttOptions::new("", "127.0.0.1", 0);
        brokers.push(("no broker".to_owned(), BrokerConnect::V5(none)));
    }
    let (sender, eventloop) = match brokers[0].1.clone() {
        BrokerConnect::V5(options) => {
            let (client, eventloop) = rumqttc::v5::AsyncClient::new(options, capacity);
            (Sender::V5(client), EventLoop::V5(eventloop))
        }
        BrokerConnect::V311(options, network) => {
            let (client, mut eventloop) = rumqttc::AsyncClient::new(options, capacity);
            eventloop.set_network_options(network);
            (Sender::V311(client), EventLoop::V311(eventloop))
        }
    };
    let manual_acks = match &eventloop {
        EventLoop::V5(eventloop) => eventloop.state.manual_acks,
        EventLoop::V311(eventloop) => eventloop.state.manual_acks,
    };
    let driver = Driver {
        eventloop,
        brokers,
        current: 0,
        manual_acks,
    };
    (sender, driver)
}

impl Sender {
    /// Whether this connection speaks MQTT 5 (and so sends properties).
    pub(crate) fn is_v5(&self) -> bool {
        matches!(self, Sender::V5(_))
    }

    // The requests below are handed over without waiting: the channel never
    // fills (its capacity is far beyond what a link lets in), and a request
    // that could wait might be cancelled after its expectation was booked.

    pub(crate) fn try_publish(&self, msg: Message) -> Result<(), ChannelClosed> {
        match self {
            Sender::V5(c) => {
                let props = msg.properties.unwrap_or_default();
                c.try_publish_with_properties(msg.topic, msg.qos, msg.retain, msg.payload, props)
                    .map_err(|_| ChannelClosed)
            }
            // Its `try_publish` copies the payload into a `Vec`; this one
            // takes the `Bytes`, and is ready on its first poll.
            Sender::V311(c) => c
                .publish_bytes(msg.topic, qos_v311(msg.qos), msg.retain, msg.payload)
                .now_or_never()
                .and_then(Result::ok)
                .ok_or(ChannelClosed),
        }
    }

    pub(crate) fn try_subscribe(&self, filters: &[(String, QoS)]) -> Result<(), ChannelClosed> {
        let sent = match self {
            Sender::V5(c) => {
                let wanted = filters.iter().map(|(f, q)| p5::Filter::new(f.clone(), *q));
                c.try_subscribe_many(wanted).map_err(drop)
            }
            Sender::V311(c) => {
                let wanted = filters
                    .iter()
                    .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos_v311(*q)));
                c.try_subscribe_many(wanted).map_err(drop)
            }
        };
        sent.map_err(|()| ChannelClosed)
    }

    pub(crate) fn try_unsubscribe(&self, filter: &str) -> Result<(), ChannelClosed> {
        let sent = match self {
            Sender::V5(c) => c.try_unsubscribe(filter).map_err(drop),
            Sender::V311(c) => c.try_unsubscribe(filter).map_err(drop),
        };
        sent.map_err(|()| ChannelClosed)
    }

    /// Acknowledges without waiting: fails when the request channel is full
    /// (or closed), and the caller then acknowledges with [`Sender::ack`].
    pub(crate) fn try_ack(&self, handle: AckHandle) -> bool {
        match self {
            Sender::V5(c) => c.try_ack(&ack_handle_v5(handle)).is_ok(),
            Sender::V311(c) => c.try_ack(&ack_handle_v311(handle)).is_ok(),
        }
    }

    /// Acknowledges a received publish.
    pub(crate) async fn ack(&self, handle: AckHandle) -> Result<(), ChannelClosed> {
        let sent = match self {
            Sender::V5(c) => c.ack(&ack_handle_v5(handle)).await.map_err(drop),
            Sender::V311(c) => c.ack(&ack_handle_v311(handle)).await.map_err(drop),
        };
        sent.map_err(|()| ChannelClosed)
    }

    pub(crate) fn try_disconnect(&self) -> Result<(), ChannelClosed> {
        let sent = match self {
            Sender::V5(c) => c.try_disconnect().map_err(drop),
            Sender::V311(c) => c.try_disconnect().map_err(drop),
        };
        sent.map_err(|()| ChannelClosed)
    }
}

/// What the connection task learns from one poll.
#[derive(Debug)]
pub(crate) enum Polled {
    Publish(Incoming),
    /// A PUBACK; always `Success` on MQTT 3.1.1, which has no reason codes.
    PubAck(u16, p5::PubAckReason),
    SubAck(u16, Vec<p5::SubscribeReasonCode>),
    UnsubAck(u16),
    ConnAck {
        session_present: bool,
        /// The broker's Maximum Packet Size, if it announced one (never on
        /// MQTT 3.1.1, whose CONNACK has no properties).
        max_packet_size: Option<u32>,
        /// How many QoS 1 publishes may await their PUBACK at once: the
        /// broker's Receive Maximum on MQTT 5 (65,535 when it announces
        /// none), rumqttc's own window on MQTT 3.1.1.
        receive_max: u16,
    },
    /// The broker sent DISCONNECT (MQTT 5 only), for this reason.
    Disconnected(String),
    /// A packet of this kind and id left for the broker.
    Sent(Kind, u16),
    Other,
}

/// Why a poll failed.
#[derive(Debug)]
pub(crate) struct PollError {
    /// For the logs and the error a waiting caller gets.
    pub description: String,
    /// The broker refused the credentials or the client id: retrying will
    /// not change that.
    pub permanent: bool,
    /// Every request handle is gone: nothing more will be asked.
    pub requests_done: bool,
}

impl Driver {
    /// How many brokers the connection may be made to.
    pub(crate) fn brokers(&self) -> usize {
        self.brokers.len()
    }

    /// The broker the connection is made to now, as `host:port`.
    pub(crate) fn broker(&self) -> &str {
        &self.brokers[self.current].0
    }

    /// Makes the next connection to the next broker of the list (after the
    /// last, the first again), and returns it as `host:port`. Changes
    /// nothing with a single broker. The requests waiting in the event loop
    /// stay; the new broker's CONNACK says whether the session came along.
    pub(crate) fn fail_over(&mut self) -> &str {
        if self.brokers.len() > 1 {
            self.current = (self.current + 1) % self.brokers.len();
            match (&mut self.eventloop, &self.brokers[self.current].1) {
                (EventLoop::V5(eventloop), BrokerConnect::V5(options)) => {
                    eventloop.options = options.clone();
                }
                (EventLoop::V311(eventloop), BrokerConnect::V311(options, network)) => {
                    eventloop.mqtt_options = options.clone();
                    eventloop.set_network_options(network.clone());
                }
                // Every broker of a list speaks the version of the first.
                _ => tracing::error!("a broker of the list speaks another MQTT version: not failing over"),
            }
        }
        self.broker()
    }

    /// On a connection with manual acks, whether the publishes of the next
    /// read are acknowledged as they are read (by rumqttc, all of a read's
    /// PUBACKs in the one write that ends it), or each by [`Sender::ack`].
    /// `on` is asked only when the next poll can read: not while packets of
    /// the last read are still to be handed out. Changes nothing on a
    /// connection that acknowledges every publish as it reads it.
    pub(crate) fn ack_on_receipt(&mut self, on: impl FnOnce() -> bool) {
        if !self.manual_acks {
            return;
        }
        let (reads, manual_acks) = self.read_state();
        if reads {
            *manual_acks = !on();
        }
    }

    /// Whether the next poll reads from the socket, and rumqttc's manual
    /// acks flag. rumqttc buffers a read's packets and hands them out one a
    /// poll, reading again only once all are out; the flag changes only
    /// before a read ([`Driver::ack_on_receipt`]), so whatever a poll hands
    /// out was read with the flag as it is.
    fn read_state(&mut self) -> (bool, &mut bool) {
        match &mut self.eventloop {
            EventLoop::V5(eventloop) => (eventloop.state.events.is_empty(), &mut eventloop.state.manual_acks),
            EventLoop::V311(eventloop) => (eventloop.state.events.is_empty(), &mut eventloop.state.manual_acks),
        }
    }

    pub(crate) async fn poll(&mut self) -> Result<Polled, PollError> {
        let acked = !*self.read_state().1;
        match &mut self.eventloop {
            EventLoop::V5(eventloop) => match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Incoming(packet)) => Ok(match packet {
                    p5::Packet::Publish(publish) => Polled::Publish(incoming_v5(publish, acked)),
                    p5::Packet::PubAck(ack) => Polled::PubAck(ack.pkid, ack.reason),
                    p5::Packet::SubAck(ack) => Polled::SubAck(ack.pkid, ack.return_codes),
                    p5::Packet::UnsubAck(ack) => Polled::UnsubAck(ack.pkid),
                    p5::Packet::ConnAck(connack) => {
                        let props = connack.properties.as_ref();
                        Polled::ConnAck {
                            session_present: connack.session_present,
                            max_packet_size: props.and_then(|p| p.max_packet_size),
                            receive_max: props.and_then(|p| p.receive_max).unwrap_or(u16::MAX),
                        }
                    }
                    p5::Packet::Disconnect(d) => Polled::Disconnected(format!("{:?}", d.reason_code)),
                    _ => Polled::Other,
                }),
                Ok(rumqttc::v5::Event::Outgoing(out)) => Ok(sent(out)),
                Err(err) => Err(poll_error_v5(&err)),
            },
            EventLoop::V311(eventloop) => match eventloop.poll().await {
                Ok(rumqttc::Event::Incoming(packet)) => Ok(match packet {
                    rumqttc::Packet::Publish(publish) => Polled::Publish(incoming_v311(publish, acked)),
                    rumqttc::Packet::PubAck(ack) => Polled::PubAck(ack.pkid, p5::PubAckReason::Success),
                    rumqttc::Packet::SubAck(ack) => Polled::SubAck(
                        ack.pkid,
                        ack.return_codes.into_iter().map(suback_code_from_v311).collect(),
                    ),
                    rumqttc::Packet::UnsubAck(ack) => Polled::UnsubAck(ack.pkid),
                    rumqttc::Packet::ConnAck(connack) => Polled::ConnAck {
                        session_present: connack.session_present,
                        max_packet_size: None,
                        receive_max: eventloop.mqtt_options.inflight(),
                    },
                    _ => Polled::Other,
                }),
                Ok(rumqttc::Event::Outgoing(out)) => Ok(sent(out)),
                Err(err) => Err(poll_error_v311(&err)),
            },
        }
    }

    /// How many requests the connection task has not seen leave yet, at an
    /// error: those in rumqttc's pending list without ever having been sent
    /// (publishes not yet given a packet id, and subscriptions), and, ahead
    /// of them, those whose packet was written but whose outgoing event is
    /// still buffered, because the write's flush failed. rumqttc reports
    /// those events after the reconnect, before its CONNACK, and each takes
    /// one off this count as it is seen.
    pub(crate) fn unsent(&self) -> usize {
        match &self.eventloop {
            EventLoop::V5(eventloop) => {
                let pending = eventloop
                    .pending
                    .iter()
                    .filter(|r| match r {
                        rumqttc::v5::Request::Publish(p) => p.pkid == 0,
                        rumqttc::v5::Request::Subscribe(_) => true,
                        _ => false,
                    })
                    .count();
                let unreported = eventloop
                    .state
                    .events
                    .iter()
                    .filter(|e| matches!(e, rumqttc::v5::Event::Outgoing(out) if is_request(out)))
                    .count();
                pending + unreported
            }
            EventLoop::V311(eventloop) => {
                let pending = eventloop
                    .pending
                    .iter()
                    .filter(|r| match r {
                        rumqttc::Request::Publish(p) => p.pkid == 0,
                        rumqttc::Request::Subscribe(_) => true,
                        _ => false,
                    })
                    .count();
                let unreported = eventloop
                    .state
                    .events
                    .iter()
                    .filter(|e| matches!(e, rumqttc::Event::Outgoing(out) if is_request(out)))
                    .count();
                pending + unreported
            }
        }
    }
}

/// Whether an outgoing packet is one a request of the book's accounts for
/// (what [`sent`] turns into [`Polled::Sent`]).
fn is_request(out: &Outgoing) -> bool {
    matches!(
        out,
        Outgoing::Publish(_) | Outgoing::Subscribe(_) | Outgoing::Unsubscribe(_)
    )
}

fn sent(out: Outgoing) -> Polled {
    match out {
        Outgoing::Publish(pkid) => Polled::Sent(Kind::Publish, pkid),
        Outgoing::Subscribe(pkid) => Polled::Sent(Kind::Subscribe, pkid),
        Outgoing::Unsubscribe(pkid) => Polled::Sent(Kind::Unsubscribe, pkid),
        _ => Polled::Other,
    }
}

fn poll_error_v5(err: &rumqttc::v5::ConnectionError) -> PollError {
    use rumqttc::v5::mqttbytes::v5::ConnectReturnCode as Code;
    use rumqttc::v5::ConnectionError as E;
    let (description, permanent) = match err {
        E::ConnectionRefused(code) => (
            format!("the broker refused the connection ({code:?})"),
            matches!(
                code,
                Code::BadUserNamePassword | Code::NotAuthorized | Code::Banned | Code::ClientIdentifierNotValid
            ),
        ),
        // rumqttc's MQTT 5 state error holds the I/O error of a read
        // without naming it as its source.
        E::MqttState(rumqttc::v5::StateError::Deserialization(rumqttc::v5::mqttbytes::Error::Io(io))) => {
            match tls_refusal(rustls_error(io)) {
                Some(refusal) => refusal,
                None => (err.to_string(), false),
            }
        }
        other => match tls_refusal(rustls_error(other)) {
            Some(refusal) => refusal,
            None => (other.to_string(), false),
        },
    };
    PollError {
        description,
        permanent,
        requests_done: matches!(err, E::RequestsDone),
    }
}

/// The rustls error somewhere in `err`'s chain of sources (an I/O error
/// wraps it without naming it as its source).
fn rustls_error<'e>(err: &'e (dyn std::error::Error + 'static)) -> Option<&'e rustls::Error> {
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(found) = e.downcast_ref::<rustls::Error>() {
            return Some(found);
        }
        if let Some(found) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(found);
        }
        next = e.source();
    }
    None
}

/// A TLS failure said in words, and whether retrying can change it: the
/// broker refused the client certificate (with mutual TLS it sends an alert
/// saying why), or its own certificate was not trusted.
fn tls_refusal(cause: Option<&rustls::Error>) -> Option<(String, bool)> {
    use rustls::AlertDescription as A;
    let (why, permanent) = match cause? {
        rustls::Error::AlertReceived(alert) => {
            let why = match alert {
                A::CertificateExpired => {
                    "the broker refused the client certificate: it has expired (or is not valid yet)"
                }
                A::UnknownCA => {
                    "the broker refused the client certificate: it is not signed by a CA the broker trusts (its cafile)"
                }
                A::CertificateRequired => {
                    "the broker requires a client certificate (mutual TLS): give one, with its key \
                     (BrokerOptions::with_client_cert; --cert and --key)"
                }
                A::CertificateRevoked => "the broker refused the client certificate: it is revoked",
                A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateUnknown
                | A::AccessDenied
                | A::DecryptError => "the broker refused the client certificate",
                A::HandshakeFailure => "the broker ended the TLS handshake (it may require a client certificate)",
                _ => return None,
            };
            (format!("{why} (TLS alert {alert:?})"), *alert != A::HandshakeFailure)
        }
        rustls::Error::InvalidCertificate(e) => (
            format!(
                "the broker's certificate is not trusted ({e}): trust the CA that signed it \
                 (BrokerOptions::with_ca_pem; --ca)"
            ),
            false,
        ),
        _ => return None,
    };
    Some((why.to_owned(), permanent))
}

fn poll_error_v311(err: &rumqttc::ConnectionError) -> PollError {
    use rumqttc::ConnectReturnCode as Code;
    use rumqttc::ConnectionError as E;
    let (description, permanent) = match err {
        E::ConnectionRefused(code) => (
            format!("the broker refused the connection ({code:?})"),
            matches!(
                code,
                Code::BadUserNamePassword | Code::NotAuthorized | Code::BadClientId | Code::RefusedProtocolVersion
            ),
        ),
        other => match tls_refusal(rustls_error(other)) {
            Some(refusal) => refusal,
            None => (other.to_string(), false),
        },
    };
    PollError {
        description,
        permanent,
        requests_done: matches!(err, E::RequestsDone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mqtt5_publish_keeps_its_properties() {
        let props = p5::PublishProperties {
            response_topic: Some("lab/mcp/clients/scout/responses".into()),
            correlation_data: Some(Bytes::from_static(b"c1")),
            message_expiry_interval: Some(30),
            ..Default::default()
        };
        let mut publish = p5::Publish::new("lab/mcp/tools/echo/call", QoS::AtLeastOnce, "{}", Some(props));
        publish.pkid = 7;
        let incoming = incoming_v5(publish, false);
        assert_eq!(incoming.topic, "lab/mcp/tools/echo/call");
        assert_eq!(incoming.payload, Bytes::from_static(b"{}"));
        assert_eq!(incoming.qos, QoS::AtLeastOnce);
        assert_eq!(
            incoming.response_topic.as_deref(),
            Some("lab/mcp/clients/scout/responses")
        );
        assert_eq!(incoming.correlation, Some(Bytes::from_static(b"c1")));
        assert_eq!(incoming.message_expiry, Some(30));
        assert_eq!(incoming.pkid, 7);
        assert_eq!(incoming.ack_handle().qos, QoS::AtLeastOnce, "still to acknowledge");
    }

    /// A publish acknowledged as it was read is not acknowledged again.
    #[test]
    fn a_publish_acknowledged_as_it_was_read_needs_no_ack() {
        let publish = p5::Publish::new("lab/mcp/tools/echo/call", QoS::AtLeastOnce, "{}", None);
        let incoming = incoming_v5(publish, true);
        assert!(incoming.acked);
        assert_eq!(
            incoming.ack_handle().qos,
            QoS::AtMostOnce,
            "a handle that sends nothing"
        );
        let publish = rumqttc::Publish::new("lab/mcp/tools/echo/call", rumqttc::QoS::AtLeastOnce, "{}");
        assert_eq!(incoming_v311(publish, true).ack_handle().qos, QoS::AtMostOnce);
        let at_most_once = p5::Publish::new("lab/mcp/tools/echo/call", QoS::AtMostOnce, "{}", None);
        assert!(!incoming_v5(at_most_once, true).acked, "QoS 0 is never acknowledged");
    }

    #[test]
    fn an_mqtt311_publish_has_no_properties() {
        let mut publish = rumqttc::Publish::new("lab/mcp/tools/echo/call/scout", rumqttc::QoS::AtLeastOnce, "{}");
        publish.pkid = 9;
        let incoming = incoming_v311(publish, false);
        assert_eq!(incoming.topic, "lab/mcp/tools/echo/call/scout");
        assert_eq!(incoming.payload, Bytes::from_static(b"{}"));
        assert_eq!(incoming.qos, QoS::AtLeastOnce);
        assert_eq!(
            (incoming.response_topic, incoming.correlation, incoming.message_expiry),
            (None, None, None)
        );
        assert_eq!(incoming.pkid, 9);
    }

    #[test]
    fn a_topic_that_is_not_utf8_is_read_leniently() {
        let publish = p5::Publish {
            topic: Bytes::from_static(b"a/\xff"),
            ..Default::default()
        };
        assert_eq!(incoming_v5(publish, false).topic, "a/\u{fffd}");
    }

    #[test]
    fn the_last_will_drops_its_mqtt5_properties_on_311() {
        let props = p5::LastWillProperties {
            delay_interval: Some(5),
            payload_format_indicator: None,
            message_expiry_interval: None,
            content_type: Some("application/json".into()),
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        };
        let will = p5::LastWill::new("gtm/mcp/servers/s/card", "offline", QoS::AtLeastOnce, true, Some(props));
        let v311 = will_v311(will);
        assert_eq!(v311.topic, "gtm/mcp/servers/s/card");
        assert_eq!(v311.message, Bytes::from_static(b"offline"));
        assert_eq!(v311.qos, rumqttc::QoS::AtLeastOnce);
        assert!(v311.retain);
    }

    #[test]
    fn suback_codes_map_to_their_mqtt5_equivalents() {
        assert_eq!(
            suback_code_from_v311(rumqttc::SubscribeReasonCode::Success(rumqttc::QoS::AtLeastOnce)),
            p5::SubscribeReasonCode::Success(QoS::AtLeastOnce)
        );
        assert_eq!(
            suback_code_from_v311(rumqttc::SubscribeReasonCode::Failure),
            p5::SubscribeReasonCode::Failure
        );
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            assert_eq!(qos_from_v311(qos_v311(qos)), qos);
        }
    }

    #[test]
    fn a_refused_client_certificate_says_why() {
        let alert = |a| std::io::Error::new(std::io::ErrorKind::InvalidData, rustls::Error::AlertReceived(a));
        let v5 = poll_error_v5(&rumqttc::v5::ConnectionError::MqttState(rumqttc::v5::StateError::Io(
            alert(rustls::AlertDescription::CertificateExpired),
        )));
        assert!(v5.description.contains("has expired"), "{v5:?}");
        assert!(v5.permanent);
        // As rumqttc reports a read that failed.
        let read = poll_error_v5(&rumqttc::v5::ConnectionError::MqttState(
            rumqttc::v5::StateError::Deserialization(rumqttc::v5::mqttbytes::Error::Io(alert(
                rustls::AlertDescription::CertificateRequired,
            ))),
        ));
        assert!(read.description.contains("requires a client certificate"), "{read:?}");
        let v311 = poll_error_v311(&rumqttc::ConnectionError::Io(alert(
            rustls::AlertDescription::UnknownCA,
        )));
        assert!(
            v311.description.contains("not signed by a CA the broker trusts"),
            "{v311:?}"
        );
        let other = poll_error_v5(&rumqttc::v5::ConnectionError::Io(std::io::Error::other("reset")));
        assert_eq!(other.description, "I/O: reset");
    }

    #[test]
    fn refused_credentials_are_permanent_on_both_versions() {
        let v311 = poll_error_v311(&rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::NotAuthorized,
        ));
        assert!(v311.permanent, "{v311:?}");
        assert!(v311.description.contains("refused"));
        let v311 = poll_error_v311(&rumqttc::ConnectionError::ConnectionRefused(
            rumqttc::ConnectReturnCode::ServiceUnavailable,
        ));
        assert!(!v311.permanent);
        let v5 = poll_error_v5(&rumqttc::v5::ConnectionError::ConnectionRefused(
            p5::ConnectReturnCode::BadUserNamePassword,
        ));
        assert!(v5.permanent);
        assert!(poll_error_v311(&rumqttc::ConnectionError::RequestsDone).requests_done);
    }
}
