//! How large a publish is on the wire, and how large it may be. It measures
//! and refuses; it never splits, truncates or re-encodes a message.
//!
//! A broker drops a packet over its Maximum Packet Size (or the receiver's)
//! without a word, so the caller of a too-large result would only see its
//! timeout. Worse, rumqttc keeps a QoS 1 publish it could not encode in its
//! session and sends it again after every reconnect, failing each time: the
//! connection would never recover. So every publish is measured here before
//! it is handed to rumqttc, against the smaller of this end's own limit and
//! the one the broker announced in its CONNACK.

use std::sync::atomic::{AtomicU32, Ordering};

use rumqttc::v5::mqttbytes::v5::PublishProperties;
use rumqttc::v5::mqttbytes::QoS;

use super::Message;
use crate::error::Error;

/// The largest packet MQTT can frame: a one-byte header, a four-byte
/// Remaining Length, and at most 268,435,455 bytes after them.
const MQTT_MAX_PACKET: u32 = 1 + 4 + 268_435_455;

/// The size in bytes of the PUBLISH packet `msg` makes: fixed header with
/// its Remaining Length, topic, packet id (QoS 1 and 2) and, on MQTT 5, the
/// properties with their length, then the payload. The MQTT 5 Maximum
/// Packet Size counts all of it. On MQTT 3.1.1 (`v5` false) the properties
/// are not sent, so they do not count.
pub(crate) fn publish_size(msg: &Message, v5: bool) -> usize {
    let packet_id = if msg.qos == QoS::AtMostOnce { 0 } else { 2 };
    let mut remaining = 2 + msg.topic.len() + packet_id + msg.payload.len();
    if v5 {
        let properties = msg.properties.as_ref().map_or(0, properties_size);
        remaining += varint_size(properties) + properties;
    }
    1 + varint_size(remaining) + remaining
}

/// The MQTT 5 publish properties, without their own length: one identifier
/// byte per property, then its value.
fn properties_size(p: &PublishProperties) -> usize {
    let string = |s: usize| 1 + 2 + s;
    let mut size = 0;
    size += p.payload_format_indicator.map_or(0, |_| 1 + 1);
    size += p.message_expiry_interval.map_or(0, |_| 1 + 4);
    size += p.topic_alias.map_or(0, |_| 1 + 2);
    size += p.response_topic.as_ref().map_or(0, |t| string(t.len()));
    size += p.correlation_data.as_ref().map_or(0, |d| string(d.len()));
    size += p.content_type.as_ref().map_or(0, |t| string(t.len()));
    for (key, value) in &p.user_properties {
        size += 1 + 2 + key.len() + 2 + value.len();
    }
    for id in &p.subscription_identifiers {
        size += 1 + varint_size(*id);
    }
    size
}

/// The bytes of MQTT's Variable Byte Integer for `n`: seven bits per byte.
fn varint_size(n: usize) -> usize {
    match n {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

/// The largest packet a connection may send: its own limit
/// ([`BrokerOptions::with_max_packet_size`](super::BrokerOptions::with_max_packet_size)),
/// or the broker's when the broker announced a smaller one. Learned anew on
/// every CONNACK, since a reconnect may reach a broker with another limit.
pub(crate) struct PacketLimit {
    own: u32,
    current: AtomicU32,
}

impl PacketLimit {
    pub(crate) fn new(own: u32) -> Self {
        let own = own.min(MQTT_MAX_PACKET);
        PacketLimit {
            own,
            current: AtomicU32::new(own),
        }
    }

    /// Takes the Maximum Packet Size of a CONNACK (`None`: the broker set
    /// none, or speaks MQTT 3.1.1, which has no such property).
    pub(crate) fn on_connack(&self, broker: Option<u32>) {
        let limit = broker.map_or(self.own, |b| b.min(self.own));
        if limit < self.own {
            tracing::info!(
                broker = limit,
                own = self.own,
                "the broker's maximum packet size is below this end's own: every publish is held to it"
            );
        }
        self.current.store(limit, Ordering::Relaxed);
    }

    /// The largest packet that may be sent now.
    pub(crate) fn get(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    /// Refuses a packet of `size` bytes over the limit, with an error that
    /// says `what` it was, both sizes, and whose limit it is.
    pub(crate) fn check(&self, size: usize, what: impl FnOnce() -> String) -> Result<(), Error> {
        let limit = self.get();
        if size <= limit as usize {
            return Ok(());
        }
        Err(Error::TooLarge {
            what: what(),
            size,
            limit,
            by_broker: limit < self.own,
        })
    }
}

#[cfg(test)]
mod tests {
    use bytes::{Bytes, BytesMut};
    use rumqttc::v5::mqttbytes::v5 as p5;

    use super::*;

    fn message(topic: &str, payload: usize, qos: QoS, properties: Option<PublishProperties>) -> Message {
        Message {
            topic: topic.to_owned(),
            payload: Bytes::from(vec![b'x'; payload]),
            qos,
            retain: false,
            properties,
        }
    }

    /// What rumqttc's MQTT 5 encoder writes for `msg`, as it will: with a
    /// packet id for QoS 1 and 2, and properties (empty if none).
    fn encoded_v5(msg: &Message) -> usize {
        let props = msg.properties.clone().unwrap_or_default();
        let mut publish = p5::Publish::new(msg.topic.clone(), msg.qos, msg.payload.clone(), Some(props));
        if msg.qos != QoS::AtMostOnce {
            publish.pkid = 65_535;
        }
        let mut buf = BytesMut::new();
        let written = publish.write(&mut buf).unwrap();
        assert_eq!(written, buf.len());
        buf.len()
    }

    /// The same with rumqttc's MQTT 3.1.1 encoder.
    fn encoded_v311(msg: &Message) -> usize {
        let qos = crate::connection::transport::qos_v311(msg.qos);
        let mut publish = rumqttc::Publish::from_bytes(msg.topic.clone(), qos, msg.payload.clone());
        if msg.qos != QoS::AtMostOnce {
            publish.pkid = 1;
        }
        let mut buf = BytesMut::new();
        publish.write(&mut buf).unwrap();
        buf.len()
    }

    fn every_property() -> PublishProperties {
        PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: Some(30),
            topic_alias: Some(3),
            response_topic: Some("lab/mcp/clients/scout/responses".into()),
            correlation_data: Some(Bytes::from_static(b"7d2c6a4e-0c1f-4f4e-9d7e-2f0b1f1d9a10")),
            user_properties: vec![("k".into(), "v".into()), ("trace".into(), "abc".into())],
            subscription_identifiers: vec![1, 200, 20_000, 3_000_000],
            content_type: Some("application/json".into()),
        }
    }

    /// Payload lengths around each point where a Remaining Length (or the
    /// property length) takes one more byte.
    const PAYLOADS: &[usize] = &[
        0, 1, 100, 115, 116, 117, 118, 127, 128, 200, 16_250, 16_300, 16_383, 16_384, 16_400, 2_097_000, 2_097_151,
        2_097_152, 2_097_300,
    ];

    #[test]
    fn the_size_is_what_rumqttcs_mqtt5_encoder_writes() {
        let call = PublishProperties {
            response_topic: Some("lab/mcp/clients/scout/responses".into()),
            correlation_data: Some(Bytes::from_static(b"c1")),
            content_type: Some("application/json".into()),
            message_expiry_interval: Some(30),
            ..Default::default()
        };
        let long_props = PublishProperties {
            user_properties: vec![("k".into(), "v".repeat(200))],
            ..Default::default()
        };
        let properties = [
            None,
            Some(PublishProperties::default()),
            Some(call),
            Some(every_property()),
            Some(long_props),
        ];
        for props in &properties {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                for &payload in PAYLOADS {
                    for topic in ["", "lab/mcp/tools/echo/call/scout"] {
                        let msg = message(topic, payload, qos, props.clone());
                        assert_eq!(
                            publish_size(&msg, true),
                            encoded_v5(&msg),
                            "topic {topic:?}, payload {payload}, {qos:?}, {props:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_size_is_what_rumqttcs_mqtt311_encoder_writes() {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            for &payload in PAYLOADS {
                // Properties are dropped on MQTT 3.1.1: they must not count.
                let msg = message("lab/mcp/clients/scout/responses", payload, qos, Some(every_property()));
                assert_eq!(
                    publish_size(&msg, false),
                    encoded_v311(&msg),
                    "payload {payload}, {qos:?}"
                );
            }
        }
    }

    #[test]
    fn a_limit_is_the_smaller_of_ours_and_the_brokers() {
        let limit = PacketLimit::new(16 * 1024 * 1024);
        assert_eq!(limit.get(), 16 * 1024 * 1024);
        limit.on_connack(Some(1_048_576));
        assert_eq!(limit.get(), 1_048_576);
        assert!(limit.check(1_048_576, || unreachable!()).is_ok());
        let err = limit.check(2_000_000, || "the result of `big`".into()).unwrap_err();
        assert!(matches!(
            err,
            Error::TooLarge {
                size: 2_000_000,
                limit: 1_048_576,
                by_broker: true,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "the result of `big` would be a 2000000-byte MQTT packet, over the 1048576-byte \
             maximum packet size (the broker's limit)"
        );
        // A reconnect to a broker with a larger limit, or none: ours again.
        limit.on_connack(Some(u32::MAX));
        assert_eq!(limit.get(), 16 * 1024 * 1024);
        limit.on_connack(Some(1_048_576));
        limit.on_connack(None);
        assert_eq!(limit.get(), 16 * 1024 * 1024);
        let ours = limit.check(17 * 1024 * 1024, || "x".into()).unwrap_err();
        assert!(matches!(ours, Error::TooLarge { by_broker: false, .. }));
        assert!(ours.to_string().contains("with_max_packet_size"), "{ours}");
    }

    #[test]
    fn no_limit_exceeds_what_mqtt_can_frame() {
        let limit = PacketLimit::new(u32::MAX);
        assert_eq!(limit.get(), 268_435_460);
        assert!(limit.check(300_000_000, || "a huge result".into()).is_err());
    }
}
