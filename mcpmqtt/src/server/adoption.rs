//! Taking over a crashed sibling's session, to serve the calls queued there.
//! It serves them through a dispatcher like any connection's, and never
//! adopts its own instance, or one instance twice.
//!
//! Servers keep their MQTT session across disconnects, so that calls
//! published while they are briefly away wait for them. The flip side: when
//! an instance behind a shared subscription dies for good, the broker goes
//! on handing that instance's share of the calls to its orphaned session
//! (Mosquitto 2 does, until the session expires). A surviving instance sees
//! the dead one's Last Will on the server card it watches, connects with the
//! dead instance's client id, serves what was queued there, unsubscribes,
//! and leaves with a session expiry of zero, so the broker forgets it.
//!
//! On MQTT 3.1.1 there is no session expiry: the adopting connection resumes
//! the session (`clean_session = false`), serves and unsubscribes the same
//! way, then a second, clean connection under the same client id ends the
//! session. (Without shared subscriptions a live instance also got each call
//! the crashed one queued; one it already ran is recognised by the dedupe
//! window and not run twice, only answered again, which the caller ignores.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::dispatcher::Dispatcher;
use super::shared::Running;
use crate::connection::{end_session, Incoming, Link, Protocol};
use crate::protocol::card::{ServerCard, Status};

/// How long an adopted session must stay quiet before it is let go.
const QUIET: Duration = Duration::from_millis(1000);

/// Watches the server's own card. An offline card while this instance runs
/// comes from another instance's Last Will, or a graceful stop: the card is
/// put back online, and the session of the instance a Will names (a
/// graceful stop names none) adopted.
pub(crate) async fn watch_siblings(running: Arc<Running>, mut cards: mpsc::UnboundedReceiver<Incoming>) {
    let mut adopted = HashSet::new();
    while let Some(publish) = cards.recv().await {
        let Ok(card) = serde_json::from_slice::<ServerCard>(&publish.payload) else {
            continue;
        };
        if card.status != Status::Offline {
            continue;
        }
        if let Err(e) = running.publish_server_card(Status::Online).await {
            tracing::warn!(error = %e, "could not put the server card back online");
        }
        let Some(orphan) = card.instance.filter(|i| *i != running.instance) else {
            continue;
        };
        if running.server.config.adopt_orphaned_sessions && adopted.insert(orphan.clone()) {
            tokio::spawn(adopt(running.clone(), orphan));
        }
    }
}

/// Serves the calls queued in `orphan`'s session, then ends that session.
async fn adopt(running: Arc<Running>, orphan: String) {
    let server = &running.server;
    // No Last Will, no reconnecting (another survivor may take the session
    // over in turn), and a session that ends when this connection does.
    let broker = server.broker.clone().with_give_up_after(Duration::ZERO);
    let mut options = match broker.mqtt_options(&orphan, None, true) {
        Ok(o) => o,
        Err(e) => return tracing::warn!(%orphan, error = %e, "cannot adopt a session"),
    };
    options.resume_once();
    let (incoming_tx, mut incoming_rx) = mpsc::unbounded_channel();
    let (link, conn_task) = match Link::connect(options, &broker, move |p| {
        let _ = incoming_tx.send(p);
    })
    .await
    {
        Ok(ok) => ok,
        Err(e) => return tracing::warn!(%orphan, error = %e, "could not adopt a crashed instance's session"),
    };
    tracing::info!(%orphan, "adopted a crashed instance's session");
    let (intake, line) = Dispatcher::new(link.clone(), running.shared.clone())
        .replying_through(running.link.clone())
        .start();
    let dispatcher = intake.dispatcher();
    let own_card = server.topics.server_card(&server.name);
    let mut served = 0usize;
    let mut unsubscribed = false;
    loop {
        match tokio::time::timeout(QUIET, incoming_rx.recv()).await {
            Ok(Some(publish)) if publish.topic == own_card => {}
            Ok(Some(publish)) => {
                served += 1;
                intake.offer(publish);
            }
            Ok(None) => break, // taken over by another survivor, or the broker went away
            Err(_) if !unsubscribed => {
                // Quiet: stop the broker sending this session new calls, then
                // wait once more for any that were already on their way.
                let filters: Vec<String> = server
                    .call_filters()
                    .into_iter()
                    .map(|(f, _)| f)
                    .chain([own_card.clone()])
                    .collect();
                let _ = link.unsubscribe_many(&filters).await;
                unsubscribed = true;
            }
            Err(_) => break,
        }
    }
    drop(intake);
    // Every call received is acknowledged (and answered) before the session goes.
    let _ = line.await;
    dispatcher.finished().await;
    link.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), conn_task).await;
    if broker.protocol() == Protocol::V311 {
        end_session(&broker, &orphan).await;
    }
    tracing::info!(%orphan, served, "released an adopted session");
}
