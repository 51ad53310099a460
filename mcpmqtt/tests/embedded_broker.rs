//! Verifies the embedded broker with a rumqttc 0.25 v5 client.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mcpmqtt::embedded::{EmbeddedBroker, EmbeddedBrokerError};
use rumqttc::v5::mqttbytes::v5::{
    LastWill, Packet, PubAckReason, PubRecReason, PublishProperties, SubscribeReasonCode,
};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const WAIT: Duration = Duration::from_secs(5);

struct Peer {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Packet>,
    task: JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn options(port: u16, id: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(id, "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(5));
    opts
}

/// Connects; Err with the refusal code (or other error text) if refused.
async fn try_connect(opts: MqttOptions) -> Result<Peer, String> {
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    loop {
        match tokio::time::timeout(WAIT, eventloop.poll()).await {
            Err(_) => return Err("timeout".into()),
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Err(format!("{code:?}")),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(p)) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    Ok(Peer { client, rx, task })
}

async fn connect(port: u16, id: &str) -> Peer {
    try_connect(options(port, id)).await.expect("connect")
}

impl Peer {
    /// The next packet for which `pick` returns Some, skipping others.
    async fn next<T>(&mut self, mut pick: impl FnMut(Packet) -> Option<T>) -> Option<T> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(p)) => {
                    if let Some(t) = pick(p) {
                        return Some(t);
                    }
                }
                _ => return None,
            }
        }
    }

    async fn subscribe(&mut self, filter: &str) -> SubscribeReasonCode {
        self.client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        self.next(|p| match p {
            Packet::SubAck(s) => Some(s.return_codes[0]),
            _ => None,
        })
        .await
        .expect("suback")
    }

    async fn unsubscribe(&mut self, filter: &str) {
        self.client.unsubscribe(filter).await.unwrap();
        self.next(|p| matches!(p, Packet::UnsubAck(_)).then_some(()))
            .await
            .expect("unsuback");
    }

    async fn publish_qos1(&mut self, topic: &str, payload: &[u8], retain: bool) -> PubAckReason {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload.to_vec())
            .await
            .unwrap();
        self.puback().await
    }

    async fn puback(&mut self) -> PubAckReason {
        self.next(|p| match p {
            Packet::PubAck(a) => Some(a.reason),
            _ => None,
        })
        .await
        .expect("puback")
    }

    async fn publish_received(&mut self) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
        self.next(|p| match p {
            Packet::Publish(p) => Some(p),
            _ => None,
        })
        .await
    }

    /// Any publish within `wait`.
    async fn quiet_for(&mut self, wait: Duration) -> Option<rumqttc::v5::mqttbytes::v5::Publish> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(Packet::Publish(p))) => return Some(p),
                Ok(Some(_)) => {}
                _ => return None,
            }
        }
    }
}

// 1 -------------------------------------------------------------------------

async fn properties_pass_through(relay: bool) {
    let broker = EmbeddedBroker::builder()
        .report_no_matching_subscribers(relay)
        .start()
        .await
        .unwrap();
    let port = broker.port();
    let mut sub = connect(port, "props-sub").await;
    let mut publisher = connect(port, "props-pub").await;
    assert_eq!(
        sub.subscribe("t/props").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    let props = PublishProperties {
        response_topic: Some("t/reply/props-pub".into()),
        correlation_data: Some(Bytes::from_static(b"\x00\x01corr\xff")),
        content_type: Some("application/json".into()),
        message_expiry_interval: Some(120),
        user_properties: vec![
            ("k1".into(), "v1".into()),
            ("k2".into(), "v2".into()),
            ("k1".into(), "again".into()),
        ],
        payload_format_indicator: Some(1),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties("t/props", QoS::AtLeastOnce, false, b"{\"a\":1}".to_vec(), props)
        .await
        .unwrap();
    assert_eq!(publisher.puback().await, PubAckReason::Success);

    let got = sub.publish_received().await.expect("publish delivered");
    let p = got.properties.expect("properties");
    assert_eq!(&got.topic[..], b"t/props");
    assert_eq!(&got.payload[..], b"{\"a\":1}");
    assert_eq!(p.response_topic.as_deref(), Some("t/reply/props-pub"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"\x00\x01corr\xff"[..]));
    assert_eq!(p.content_type.as_deref(), Some("application/json"));
    assert_eq!(p.payload_format_indicator, Some(1));
    let expiry = p.message_expiry_interval.expect("message expiry forwarded");
    assert!((118..=120).contains(&expiry), "expiry {expiry}");
    // The broker may add its own user properties; ours must all be there, in order.
    let ours: Vec<(String, String)> = p
        .user_properties
        .iter()
        .filter(|(k, _)| k.starts_with('k'))
        .cloned()
        .collect();
    assert_eq!(
        ours,
        vec![
            ("k1".into(), "v1".into()),
            ("k2".into(), "v2".into()),
            ("k1".into(), "again".into())
        ]
    );
    println!("[1] relay={relay} delivered user properties: {:?}", p.user_properties);
    broker.shutdown().await;
}

#[tokio::test]
async fn t1_properties_pass_through() {
    properties_pass_through(true).await;
}

#[tokio::test]
async fn t1_properties_pass_through_without_relay() {
    properties_pass_through(false).await;
}

// 2 -------------------------------------------------------------------------

#[tokio::test]
async fn t2_retained_delivered_on_subscribe_and_cleared_by_empty_payload() {
    let broker = EmbeddedBroker::start().await.unwrap();
    let port = broker.port();
    let mut publisher = connect(port, "ret-pub").await;
    let reason = publisher.publish_qos1("t/retained", b"card-v1", true).await;
    println!("[2] PUBACK for a retained publish with no subscriber: {reason:?}");

    let mut sub = connect(port, "ret-sub").await;
    sub.subscribe("t/retained").await;
    let got = sub.publish_received().await.expect("retained delivered on subscribe");
    assert!(got.retain, "retain flag set on a retained delivery");
    assert_eq!(&got.payload[..], b"card-v1");

    assert_eq!(
        publisher.publish_qos1("t/retained", b"", true).await,
        PubAckReason::Success
    );
    // The live subscriber gets the empty message too.
    let live = sub.publish_received().await.expect("empty retained delivered live");
    assert!(live.payload.is_empty());

    let mut late = connect(port, "ret-late").await;
    late.subscribe("t/retained").await;
    assert!(
        late.quiet_for(Duration::from_millis(700)).await.is_none(),
        "retained message was cleared"
    );
    broker.shutdown().await;
}

// 3 -------------------------------------------------------------------------

#[tokio::test]
async fn t3_shared_subscription_splits_messages() {
    let broker = EmbeddedBroker::start().await.unwrap();
    let port = broker.port();
    let mut a = connect(port, "share-a").await;
    let mut b = connect(port, "share-b").await;
    let mut publisher = connect(port, "share-pub").await;
    assert_eq!(
        a.subscribe("$share/workers/t/jobs").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        b.subscribe("$share/workers/t/jobs").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );

    const N: usize = 40;
    for i in 0..N {
        let r = publisher
            .publish_qos1("t/jobs", format!("job-{i}").as_bytes(), false)
            .await;
        assert_eq!(
            r,
            PubAckReason::Success,
            "a shared subscription is a matching subscriber"
        );
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let (mut count_a, mut count_b) = (0, 0);
    while let Some(p) = a.quiet_for(Duration::from_millis(500)).await {
        *seen
            .entry(String::from_utf8_lossy(&p.payload).into_owned())
            .or_default() += 1;
        count_a += 1;
    }
    while let Some(p) = b.quiet_for(Duration::from_millis(500)).await {
        *seen
            .entry(String::from_utf8_lossy(&p.payload).into_owned())
            .or_default() += 1;
        count_b += 1;
    }
    println!("[3] {N} messages split {count_a} / {count_b}");
    assert_eq!(seen.len(), N, "every message delivered");
    assert!(seen.values().all(|&n| n == 1), "each message delivered exactly once");
    assert!(count_a > 0 && count_b > 0, "both members got some");
    broker.shutdown().await;
}

// 4 -------------------------------------------------------------------------

#[tokio::test]
async fn t4_no_matching_subscribers_gets_0x10() {
    let broker = EmbeddedBroker::start().await.unwrap();
    let port = broker.port();
    let mut publisher = connect(port, "nms-pub").await;
    assert_eq!(
        publisher.publish_qos1("t/nobody", b"x", false).await,
        PubAckReason::NoMatchingSubscribers
    );

    // With a subscriber: Success; after it unsubscribes: 0x10 again.
    let mut sub = connect(port, "nms-sub").await;
    sub.subscribe("t/+/calls").await;
    assert_eq!(
        publisher.publish_qos1("t/x/calls", b"x", false).await,
        PubAckReason::Success
    );
    sub.unsubscribe("t/+/calls").await;
    assert_eq!(
        publisher.publish_qos1("t/x/calls", b"x", false).await,
        PubAckReason::NoMatchingSubscribers
    );

    // Shared subscription counts; its member leaving (clean session) -> 0x10.
    sub.subscribe("$share/g/t/tool/call").await;
    assert_eq!(
        publisher.publish_qos1("t/tool/call", b"x", false).await,
        PubAckReason::Success
    );
    sub.client.disconnect().await.unwrap();
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        publisher.publish_qos1("t/tool/call", b"x", false).await,
        PubAckReason::NoMatchingSubscribers
    );

    // Topic alias: the relay resolves it.
    let mut sub2 = connect(port, "nms-sub2").await;
    sub2.subscribe("t/alias").await;
    let props = PublishProperties {
        topic_alias: Some(3),
        ..Default::default()
    };
    publisher
        .client
        .publish_with_properties("t/alias", QoS::AtLeastOnce, false, b"1".to_vec(), props.clone())
        .await
        .unwrap();
    assert_eq!(publisher.puback().await, PubAckReason::Success);
    publisher
        .client
        .publish_with_properties("", QoS::AtLeastOnce, false, b"2".to_vec(), props)
        .await
        .unwrap();
    assert_eq!(
        publisher.puback().await,
        PubAckReason::Success,
        "alias resolved to a subscribed topic"
    );
    assert_eq!(&sub2.publish_received().await.unwrap().payload[..], b"1");
    assert_eq!(&sub2.publish_received().await.unwrap().payload[..], b"2");

    // QoS 2: PUBREC carries it.
    publisher
        .client
        .publish("t/nobody", QoS::ExactlyOnce, false, b"x".to_vec())
        .await
        .unwrap();
    let rec = publisher
        .next(|p| match p {
            Packet::PubRec(r) => Some(r.reason),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(rec, PubRecReason::NoMatchingSubscribers);
    println!(
        "[4] relay on: QoS1 no subscriber -> {:?}, QoS2 -> {rec:?}",
        PubAckReason::NoMatchingSubscribers
    );
    broker.shutdown().await;
}

async fn persistent_offline(relay: bool) {
    let broker = EmbeddedBroker::builder()
        .report_no_matching_subscribers(relay)
        .start()
        .await
        .unwrap();
    let port = broker.port();
    let mut publisher = connect(port, "pers-pub").await;
    let mut opts = options(port, "pers-sub");
    opts.set_clean_start(false);
    opts.set_session_expiry_interval(Some(60));
    let mut sub = try_connect(opts.clone()).await.unwrap();
    sub.subscribe("t/queued").await;
    sub.client.disconnect().await.unwrap();
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Mosquitto semantics: the message is queued for the stored session.
    let reason = publisher.publish_qos1("t/queued", b"q", false).await;
    let mut back = try_connect(opts).await.unwrap();
    let queued = back.publish_received().await.map(|p| p.payload);
    println!(
        "[4] relay={relay} offline persistent subscriber: PUBACK {reason:?}, queued message on return: {queued:?}"
    );
    assert_eq!(queued.as_deref(), Some(&b"q"[..]));
    assert_eq!(reason, PubAckReason::Success);
    broker.shutdown().await;
}

#[tokio::test]
async fn t4_persistent_offline_session_counts_as_subscriber() {
    persistent_offline(true).await;
}

#[tokio::test]
async fn t4_persistent_offline_session_without_relay() {
    persistent_offline(false).await;
}

#[tokio::test]
async fn t4_without_relay_the_mqtt5_broker_answers_success() {
    let broker = EmbeddedBroker::builder()
        .report_no_matching_subscribers(false)
        .start()
        .await
        .unwrap();
    let mut publisher = connect(broker.port(), "raw-pub").await;
    let reason = publisher.publish_qos1("t/nobody", b"x", false).await;
    println!("[4] mqtt5 broker alone: QoS1 publish with no subscriber -> {reason:?}");
    assert_eq!(reason, PubAckReason::Success);
    broker.shutdown().await;
}

// 5 -------------------------------------------------------------------------

async fn will_published(relay: bool) {
    let broker = EmbeddedBroker::builder()
        .report_no_matching_subscribers(relay)
        .start()
        .await
        .unwrap();
    let port = broker.port();
    let mut live = connect(port, "will-live").await;
    live.subscribe("t/status/dying").await;

    let mut opts = options(port, "dying");
    opts.set_last_will(LastWill::new(
        "t/status/dying",
        b"offline".to_vec(),
        QoS::AtLeastOnce,
        true,
        None,
    ));
    let dying = try_connect(opts).await.unwrap();
    dying.task.abort(); // drops the event loop: TCP closed, no DISCONNECT
    drop(dying);

    let got = live
        .publish_received()
        .await
        .expect("will delivered to a live subscriber");
    assert_eq!(&got.payload[..], b"offline");
    let mut late = connect(port, "will-late").await;
    late.subscribe("t/status/dying").await;
    let retained = late
        .publish_received()
        .await
        .expect("retained will delivered on subscribe");
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], b"offline");

    // A clean DISCONNECT publishes no will.
    let mut opts = options(port, "polite");
    opts.set_last_will(LastWill::new(
        "t/status/polite",
        b"offline".to_vec(),
        QoS::AtLeastOnce,
        false,
        None,
    ));
    live.subscribe("t/status/polite").await;
    let polite = try_connect(opts).await.unwrap();
    polite.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(polite);
    assert!(
        live.quiet_for(Duration::from_millis(700)).await.is_none(),
        "no will after DISCONNECT"
    );
    println!("[5] relay={relay}: will published on TCP drop (live + retained), not after DISCONNECT");
    broker.shutdown().await;
}

#[tokio::test]
async fn t5_will_published_on_tcp_drop() {
    will_published(true).await;
}

#[tokio::test]
async fn t5_will_published_on_tcp_drop_without_relay() {
    will_published(false).await;
}

// 6 -------------------------------------------------------------------------

async fn acl_broker() -> EmbeddedBroker {
    EmbeddedBroker::builder()
        .user("scout", "scout-pw")
        .user("crawler", "crawler-pw")
        .allow_publish("scout", "gtm/mcp/tools/crawl_site/call")
        .allow_subscribe("scout", "gtm/mcp/clients/%c/responses")
        .allow_subscribe("crawler", "gtm/mcp/tools/crawl_site/call")
        .allow_publish("crawler", "gtm/mcp/clients/+/responses")
        .allow_subscribe("*", "gtm/mcp/tools/+/card")
        .allow_subscribe("scout", "gtm/limited/+")
        .start()
        .await
        .unwrap()
}

async fn login(port: u16, id: &str, user: &str, pw: &str) -> Result<Peer, String> {
    let mut opts = options(port, id);
    opts.set_credentials(user, pw);
    try_connect(opts).await
}

#[tokio::test]
async fn t6_acl_enforced_by_the_broker() {
    let broker = acl_broker().await;
    let port = broker.port();

    assert_eq!(
        try_connect(options(port, "anon")).await.err().as_deref(),
        Some("NotAuthorized")
    );
    assert_eq!(
        login(port, "bad", "scout", "nope").await.err().as_deref(),
        Some("BadUserNamePassword")
    );
    assert_eq!(
        login(port, "bad2", "nobody", "x").await.err().as_deref(),
        Some("BadUserNamePassword")
    );

    let mut crawler = login(port, "crawler-1", "crawler", "crawler-pw").await.unwrap();
    let mut scout = login(port, "scout-1", "scout", "scout-pw").await.unwrap();

    // Subscriptions.
    assert_eq!(
        crawler
            .subscribe("$share/mcp-tool-crawl_site/gtm/mcp/tools/crawl_site/call")
            .await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce),
        "shared subscription checked on its filter"
    );
    assert_eq!(
        scout.subscribe("gtm/mcp/clients/scout-1/responses").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        scout.subscribe("gtm/mcp/clients/other/responses").await,
        SubscribeReasonCode::NotAuthorized,
        "%c"
    );
    assert_eq!(
        scout.subscribe("gtm/mcp/tools/+/card").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce),
        "*"
    );
    assert_eq!(
        scout.subscribe("gtm/limited/x").await,
        SubscribeReasonCode::Success(QoS::AtLeastOnce)
    );
    assert_eq!(
        scout.subscribe("gtm/limited/#").await,
        SubscribeReasonCode::NotAuthorized,
        "a/# is wider than a/+"
    );
    assert_eq!(scout.subscribe("#").await, SubscribeReasonCode::NotAuthorized);
    assert_eq!(
        crawler.subscribe("gtm/mcp/clients/scout-1/responses").await,
        SubscribeReasonCode::NotAuthorized
    );

    // Allowed call is delivered, response is delivered.
    assert_eq!(
        scout
            .publish_qos1("gtm/mcp/tools/crawl_site/call", b"call", false)
            .await,
        PubAckReason::Success
    );
    assert_eq!(&crawler.publish_received().await.unwrap().payload[..], b"call");
    assert_eq!(
        crawler
            .publish_qos1("gtm/mcp/clients/scout-1/responses", b"resp", false)
            .await,
        PubAckReason::Success
    );
    assert_eq!(&scout.publish_received().await.unwrap().payload[..], b"resp");

    // Denied publish: PUBACK 0x87 and nothing delivered.
    let denied = crawler
        .publish_qos1("gtm/mcp/tools/crawl_site/call", b"forged", false)
        .await;
    println!("[6] denied QoS1 publish -> {denied:?}");
    assert_eq!(denied, PubAckReason::NotAuthorized);
    assert!(
        crawler.quiet_for(Duration::from_millis(500)).await.is_none(),
        "denied publish not delivered"
    );

    // The connection stays open: it can still publish and receive.
    assert_eq!(
        scout
            .publish_qos1("gtm/mcp/tools/crawl_site/call", b"call-2", false)
            .await,
        PubAckReason::Success
    );
    assert_eq!(&crawler.publish_received().await.unwrap().payload[..], b"call-2");
    assert_eq!(
        crawler
            .publish_qos1("gtm/mcp/clients/scout-1/responses", b"still-open", false)
            .await,
        PubAckReason::Success
    );
    assert_eq!(&scout.publish_received().await.unwrap().payload[..], b"still-open");
    assert!(
        !crawler.task.is_finished(),
        "crawler's connection still open after a denied publish"
    );
    // Denied 0x87 wins over "no subscribers": a denied topic nobody reads.
    assert_eq!(
        scout.publish_qos1("elsewhere", b"x", false).await,
        PubAckReason::NotAuthorized
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn t6_no_users_means_username_taken_as_is() {
    let broker = EmbeddedBroker::builder()
        .allow_publish("alice", "a/#")
        .allow_subscribe("*", "#")
        .start()
        .await
        .unwrap();
    let port = broker.port();
    let mut anon = connect(port, "anon").await;
    let mut alice = login(port, "alice-1", "alice", "whatever").await.unwrap();
    anon.subscribe("a/b").await;
    assert_eq!(alice.publish_qos1("a/b", b"x", false).await, PubAckReason::Success);
    assert_eq!(anon.publish_qos1("a/b", b"x", false).await, PubAckReason::NotAuthorized);
    broker.shutdown().await;
}

#[tokio::test]
async fn t6_invalid_settings_are_refused() {
    let e = EmbeddedBroker::builder()
        .allow_publish("u", "a/#/b")
        .start()
        .await
        .unwrap_err();
    println!("[6] {e}");
    assert!(matches!(e, EmbeddedBrokerError::Config(_)));
    let e = EmbeddedBroker::builder()
        .user("u", "1")
        .user("u", "2")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(e, EmbeddedBrokerError::Config(_)));
}

// 7 -------------------------------------------------------------------------

#[tokio::test]
async fn t7_startup_time_two_brokers_and_stopping() {
    let t = Instant::now();
    let one = EmbeddedBroker::start().await.unwrap();
    let first = t.elapsed();
    let t = Instant::now();
    let two = EmbeddedBroker::start().await.unwrap();
    let second = t.elapsed();
    println!(
        "[7] start: {first:?}, then {second:?}; ports {} and {}; url {}",
        one.port(),
        two.port(),
        one.url()
    );
    assert_ne!(one.port(), two.port());
    assert_eq!(one.url(), format!("mqtt://127.0.0.1:{}", one.port()));

    let mut p1 = connect(one.port(), "same-id").await;
    let mut p2 = connect(two.port(), "same-id").await;
    p1.subscribe("t/which").await;
    p2.subscribe("t/which").await;
    p1.publish_qos1("t/which", b"one", false).await;
    p2.publish_qos1("t/which", b"two", false).await;
    assert_eq!(&p1.publish_received().await.unwrap().payload[..], b"one");
    assert_eq!(&p2.publish_received().await.unwrap().payload[..], b"two");
    assert!(
        p1.quiet_for(Duration::from_millis(300)).await.is_none(),
        "brokers are independent"
    );

    // A port taken -> Bind error.
    let e = EmbeddedBroker::builder().port(one.port()).start().await.unwrap_err();
    println!("[7] {e}");
    assert!(matches!(e, EmbeddedBrokerError::Bind { .. }));

    // shutdown() waits until the port is closed; connected clients are cut.
    let port = one.port();
    let t = Instant::now();
    one.shutdown().await;
    println!("[7] shutdown with a client connected took {:?}", t.elapsed());
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "port closed after shutdown"
    );
    assert!(p1.next(|_| None::<()>).await.is_none());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(p1.task.is_finished(), "client connection cut");

    // Drop stops the broker too (without blocking).
    let port = two.port();
    let t = Instant::now();
    drop(two);
    assert!(t.elapsed() < Duration::from_millis(50));
    let deadline = Instant::now() + Duration::from_secs(8);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(Instant::now() < deadline, "port still open after drop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("[7] port closed {:?} after drop", t.elapsed());
}

#[tokio::test]
async fn t7_fixed_port() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let broker = EmbeddedBroker::builder().port(port).start().await.unwrap();
    assert_eq!(broker.port(), port);
    let mut p = connect(port, "fixed").await;
    assert_eq!(
        p.publish_qos1("x", b"x", false).await,
        PubAckReason::NoMatchingSubscribers
    );
}

#[test]
fn t7_drop_outside_a_runtime() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = rt.block_on(EmbeddedBroker::start()).unwrap();
    let port = broker.port();
    drop(rt);
    // The broker has its own thread and runtime: still serving.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    drop(broker);
    let deadline = Instant::now() + Duration::from_secs(8);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Relay robustness ------------------------------------------------------------

#[tokio::test]
async fn relay_carries_large_payloads() {
    let broker = EmbeddedBroker::start().await.unwrap();
    let port = broker.port();
    let big = |id: &str| {
        let mut opts = options(port, id);
        opts.set_max_packet_size(Some(16 * 1024 * 1024));
        opts
    };
    let mut sub = try_connect(big("big-sub")).await.unwrap();
    let mut publisher = try_connect(big("big-pub")).await.unwrap();
    sub.subscribe("t/big").await;
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        publisher.publish_qos1("t/big", &payload, false).await,
        PubAckReason::Success
    );
    let got = sub.publish_received().await.expect("big publish");
    assert!(got.payload[..] == payload[..], "4 MiB payload intact");
    broker.shutdown().await;
}

#[tokio::test]
async fn relay_passes_mqtt_311_clients_untouched() {
    use rumqttc::{
        AsyncClient as V4Client, Event as V4Event, MqttOptions as V4Options, Packet as V4Packet, QoS as V4QoS,
    };
    let broker = EmbeddedBroker::start().await.unwrap();
    let port = broker.port();
    let (client, mut eventloop) = V4Client::new(V4Options::new("v4-client", "127.0.0.1", port), 10);
    client.subscribe("t/v4", V4QoS::AtLeastOnce).await.unwrap();
    client
        .publish("t/nobody", V4QoS::AtLeastOnce, false, b"x".to_vec())
        .await
        .unwrap();
    client
        .publish("t/v4", V4QoS::AtLeastOnce, false, b"hello".to_vec())
        .await
        .unwrap();
    let (mut pubacks, mut got) = (0, None);
    let deadline = tokio::time::Instant::now() + WAIT;
    while pubacks < 2 || got.is_none() {
        match tokio::time::timeout_at(deadline, eventloop.poll())
            .await
            .expect("v4 events")
            .unwrap()
        {
            V4Event::Incoming(V4Packet::PubAck(_)) => pubacks += 1,
            V4Event::Incoming(V4Packet::Publish(p)) => got = Some(p.payload),
            _ => {}
        }
    }
    assert_eq!(got.as_deref(), Some(&b"hello"[..]));
    broker.shutdown().await;
}

async fn round_trips(relay: bool) -> Duration {
    let broker = EmbeddedBroker::builder()
        .report_no_matching_subscribers(relay)
        .start()
        .await
        .unwrap();
    let port = broker.port();
    let mut sub = connect(port, "rt-sub").await;
    let mut publisher = connect(port, "rt-pub").await;
    sub.subscribe("t/rt").await;
    let t = Instant::now();
    const N: u32 = 300;
    for i in 0..N {
        assert_eq!(
            publisher.publish_qos1("t/rt", &i.to_be_bytes(), false).await,
            PubAckReason::Success
        );
        sub.publish_received().await.expect("delivered");
    }
    let per = t.elapsed() / N;
    broker.shutdown().await;
    per
}

#[tokio::test]
async fn relay_latency() {
    let with = round_trips(true).await;
    let without = round_trips(false).await;
    println!("[relay] QoS1 publish -> PUBACK + delivery, per message: {with:?} with relay, {without:?} without");
}

#[tokio::test]
async fn t6_will_is_subject_to_the_acl() {
    let broker = EmbeddedBroker::builder()
        .user("srv", "pw")
        .user("watcher", "pw")
        .allow_publish("srv", "gtm/mcp/servers/srv/card")
        .allow_subscribe("watcher", "gtm/#")
        .start()
        .await
        .unwrap();
    let port = broker.port();
    let mut watcher = login(port, "w", "watcher", "pw").await.unwrap();
    watcher.subscribe("gtm/#").await;
    for (id, topic) in [
        ("srv-ok", "gtm/mcp/servers/srv/card"),
        ("srv-bad", "gtm/mcp/servers/other/card"),
    ] {
        let mut opts = options(port, id);
        opts.set_credentials("srv", "pw");
        opts.set_last_will(LastWill::new(
            topic,
            id.as_bytes().to_vec(),
            QoS::AtLeastOnce,
            true,
            None,
        ));
        let peer = try_connect(opts).await.unwrap();
        peer.task.abort();
        drop(peer);
    }
    let got = watcher.publish_received().await.expect("allowed will");
    assert_eq!(&got.payload[..], b"srv-ok");
    assert!(
        watcher.quiet_for(Duration::from_millis(700)).await.is_none(),
        "denied will dropped"
    );
    broker.shutdown().await;
}
