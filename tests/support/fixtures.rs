//! Servers, clients and raw MQTT peers for the integration tests.

use std::time::Duration;

use bytes::Bytes;
use mcpmqtt::{Client, ServerHandle};
use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason, Publish, PublishProperties, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use tokio::sync::mpsc;

use super::login::{client, online};
use super::mosquitto::Mosquitto;

/// Re-exported: most tests import it from here.
pub use super::login::PATIENCE;

/// Waits, up to `patience`, until `find` finds what it looks for in the
/// broker's log, and returns it; fails the test with the log, saying `what`
/// was missing, when it never does.
pub async fn wait_for_log<T>(
    broker: &Mosquitto,
    patience: Duration,
    what: &str,
    find: impl Fn(&str) -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + patience;
    loop {
        let log = broker.log();
        if let Some(found) = find(&log) {
            return found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the broker never logged {what}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gtm server, online on `broker`.
pub async fn gtm_online(broker: &Mosquitto) -> ServerHandle {
    online(broker, gtm_tools::gtm_server()).await
}

/// A client of the gtm namespace.
pub async fn gtm_client(broker: &Mosquitto, identity: &str) -> Client {
    client(broker, gtm_tools::NAMESPACE, identity).await
}

/// A bare rumqttc MQTT 5 client, to speak the wire format by hand.
pub struct Raw {
    pub client: AsyncClient,
    messages: mpsc::UnboundedReceiver<Publish>,
    acks: mpsc::UnboundedReceiver<Packet>,
}

impl Raw {
    /// Connects as `client_id`, anonymously.
    pub async fn connect(broker: &Mosquitto, client_id: &str) -> Raw {
        Raw::connect_with(broker, client_id, None).await
    }

    /// Connects as `client_id`, with a username and password if given.
    pub async fn connect_with(broker: &Mosquitto, client_id: &str, login: Option<(&str, &str)>) -> Raw {
        Raw::connect_at(broker.host(), broker.port(), client_id, login).await
    }

    /// Connects as `client_id` to the broker at `host:port` (any broker, a
    /// node of a cluster say), with a username and password if given.
    pub async fn connect_at(host: &str, port: u16, client_id: &str, login: Option<(&str, &str)>) -> Raw {
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_max_packet_size(Some(16 * 1024 * 1024));
        if let Some((u, p)) = login {
            opts.set_credentials(u, p);
        }
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        opts.set_network_options(net);
        let (client, mut eventloop) = AsyncClient::new(opts, 100);
        let (msg_tx, messages) = mpsc::unbounded_channel();
        let (ack_tx, acks) = mpsc::unbounded_channel();
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let mut up = Some(up_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = msg_tx.send(p);
                    }
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        if let Some(tx) = up.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Event::Incoming(p @ (Packet::SubAck(_) | Packet::PubAck(_)))) => {
                        let _ = ack_tx.send(p);
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        });
        tokio::time::timeout(PATIENCE, up_rx)
            .await
            .expect("raw client connects in time")
            .expect("raw client connects");
        Raw { client, messages, acks }
    }

    /// Subscribes and waits for the SUBACK.
    pub async fn subscribe(&mut self, filter: &str) {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        self.suback().await;
    }

    /// Subscribes and returns the broker's SUBACK reason code.
    pub async fn subscribe_result(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        self.suback().await
    }

    /// Publishes a retained QoS 1 message and returns the PUBACK reason.
    pub async fn publish_retained(&mut self, topic: &str, payload: impl Into<Bytes>) -> PubAckReason {
        self.client
            .publish(topic, QoS::AtLeastOnce, true, payload.into())
            .await
            .unwrap();
        self.puback().await
    }

    /// Publishes a QoS 1 message and returns the broker's PUBACK reason.
    pub async fn publish(&mut self, topic: &str, payload: impl Into<Bytes>, props: PublishProperties) -> PubAckReason {
        self.client
            .publish_with_properties(topic, QoS::AtLeastOnce, false, payload.into(), props)
            .await
            .unwrap();
        self.puback().await
    }

    /// The next SUBACK's first reason code.
    async fn suback(&mut self) -> SubscribeReasonCode {
        loop {
            match self.next_ack().await {
                Packet::SubAck(ack) => return ack.return_codes[0],
                _ => continue,
            }
        }
    }

    /// The next PUBACK's reason code.
    async fn puback(&mut self) -> PubAckReason {
        loop {
            match self.next_ack().await {
                Packet::PubAck(ack) => return ack.reason,
                _ => continue,
            }
        }
    }

    async fn next_ack(&mut self) -> Packet {
        let ack = tokio::time::timeout(PATIENCE, self.acks.recv())
            .await
            .expect("an ack in time");
        ack.expect("raw client closed")
    }

    /// The next message, if one arrives within `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Publish> {
        tokio::time::timeout(wait, self.messages.recv()).await.ok().flatten()
    }

    /// The next message; panics if none comes.
    pub async fn recv(&mut self) -> Publish {
        self.recv_within(PATIENCE).await.expect("a message in time")
    }

    /// The next message, as JSON.
    pub async fn recv_json(&mut self) -> (String, serde_json::Value) {
        let p = self.recv().await;
        let topic = String::from_utf8(p.topic.to_vec()).unwrap();
        let value = serde_json::from_slice(&p.payload).unwrap_or_else(|e| panic!("not JSON on {topic}: {e}"));
        (topic, value)
    }
}

/// MQTT 5 properties of a call, as a v0.1 client sets them.
pub fn call_props(response_topic: &str, call_id: &str) -> PublishProperties {
    PublishProperties {
        response_topic: Some(response_topic.to_owned()),
        correlation_data: Some(Bytes::from(call_id.to_owned())),
        content_type: Some("application/json".into()),
        ..Default::default()
    }
}
