//! Routing what arrives on a client's connection: responses and partials to
//! the calls waiting for them, cards to the cache. It runs on the connection
//! task, so it must not block or wait: a large response is parsed elsewhere.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use foldhash::HashMap;
use rumqttc::v5::mqttbytes::v5::PubAckReason;
use tokio::sync::{mpsc, oneshot};

use super::cards::CardCache;
use super::partials::StreamEvent;
use crate::connection::{Ack, Incoming};
use crate::error::CallError;
use crate::protocol::envelope::{decode_response, CallResponse, StreamMessage, StreamType};
use crate::protocol::topics::Topics;

/// Responses larger than this are parsed on a task of their own.
const PARSE_ELSEWHERE: usize = 64 * 1024;

/// What a call waits for.
struct Waiting {
    /// The response, or what became of the publish.
    response: oneshot::Sender<Answer>,
    correlation: Bytes,
    /// Which publish of the call this is (a call is published again after
    /// a refusal that may pass, or a lost session): only that publish's
    /// acknowledgement counts.
    attempt: u32,
    /// Whether the broker has accepted the call (PUBACK success).
    accepted: bool,
}

/// What a waiting call hears.
#[derive(Debug)]
pub(super) enum Answer {
    Response(CallResponse),
    /// The call failed for good: refused by the broker, or the connection
    /// is gone.
    Failed(CallError),
    /// PUBACK 0x10: no server was subscribed at that moment.
    NoSubscribers,
    /// The connection was lost, and the session with it, before the broker
    /// acknowledged the call.
    Lost,
    /// The broker refused the call's publish with this reason (the call's
    /// task, which knows the tool, says so in its error).
    Refused(PubAckReason),
    /// The broker lost the session while the call waited: the call, or
    /// its response, may be gone with it. Told once the new session has its
    /// subscriptions back.
    SessionLost,
}

/// Routes incoming messages: responses and partials to their calls, cards
/// into the cache.
#[derive(Default)]
pub(super) struct Router {
    calls: Mutex<HashMap<Arc<str>, Waiting>>,
    streams: Mutex<HashMap<String, mpsc::UnboundedSender<StreamEvent>>>,
    pub(super) cards: CardCache,
}

impl Router {
    pub(super) fn route(self: &Arc<Self>, topics: &Topics, own: &OwnTopics, publish: Incoming) {
        let topic = publish.topic.as_str();
        if topic == own.responses && publish.payload.len() > PARSE_ELSEWHERE {
            // Parsing a large response takes milliseconds: not on the
            // connection task, which would hold every other call's packets.
            let router = self.clone();
            tokio::spawn(async move { router.on_response(publish) });
        } else if topic == own.responses {
            self.on_response(publish);
        } else if topic.starts_with(&own.streams_prefix) || topics.call_of_stream(topic).is_some() {
            self.on_stream(&publish.payload);
        } else if topic.ends_with("/card") {
            self.cards.on_card(topic, &publish.payload);
        }
    }

    fn on_response(&self, publish: Incoming) {
        let response = match decode_response(&publish.payload) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "ignored an unreadable response");
                return;
            }
        };
        let mut calls = self.calls.lock().expect("calls lock");
        let Some((call_id, waiting)) = calls.remove_entry(response.call_id.as_str()) else {
            tracing::debug!(call_id = %response.call_id, "a response for no waiting call (late, or a duplicate)");
            return;
        };
        // MQTT 3.1.1 carries no Correlation Data: the `call_id` alone matches.
        if publish.correlation.as_ref().is_some_and(|c| c != &waiting.correlation) {
            tracing::warn!(%call_id, "ignored a response whose Correlation Data does not match");
            calls.insert(call_id, waiting);
            return;
        }
        drop(calls);
        let _ = waiting.response.send(Answer::Response(response));
    }

    /// Waits for the answer to one publish of a call.
    pub(super) fn register(&self, call_id: Arc<str>, correlation: &Bytes, attempt: u32) -> oneshot::Receiver<Answer> {
        let (tx, rx) = oneshot::channel();
        let waiting = Waiting {
            response: tx,
            correlation: correlation.clone(),
            attempt,
            accepted: false,
        };
        self.calls.lock().expect("calls lock").insert(call_id, waiting);
        rx
    }

    /// Takes the broker's verdict on a call's publish, on the connection
    /// task: an accepted call is only marked (its task sleeps on until the
    /// response), anything else wakes it.
    pub(super) fn on_call_ack(&self, call_id: &str, attempt: u32, ack: Ack) {
        let mut calls = self.calls.lock().expect("calls lock");
        let Some(waiting) = calls.get_mut(call_id).filter(|w| w.attempt == attempt) else {
            return; // an earlier publish of a call sent again since
        };
        let answer = match ack {
            Ack::Published(PubAckReason::Success) => {
                waiting.accepted = true;
                return;
            }
            Ack::Published(PubAckReason::NoMatchingSubscribers) => Answer::NoSubscribers,
            Ack::Published(reason) => Answer::Refused(reason),
            _ => Answer::Lost,
        };
        if let Some(waiting) = calls.remove(call_id) {
            let _ = waiting.response.send(answer);
        }
    }

    /// Whether the broker has accepted the call's publish.
    pub(super) fn accepted(&self, call_id: &str) -> bool {
        let calls = self.calls.lock().expect("calls lock");
        calls.get(call_id).is_some_and(|w| w.accepted)
    }

    /// The broker lost the session, whose subscriptions are back now: every
    /// call waiting is told to publish again. One signal through the
    /// router, so that no call has to watch for it while it waits.
    pub(super) fn session_lost(&self) {
        for (_, waiting) in self.calls.lock().expect("calls lock").drain() {
            let _ = waiting.response.send(Answer::SessionLost);
        }
    }

    /// Fails every waiting call: the connection is gone for good.
    pub(super) fn fail_all(&self, why: &str) {
        for (_, waiting) in self.calls.lock().expect("calls lock").drain() {
            let _ = waiting
                .response
                .send(Answer::Failed(CallError::Transport(why.to_owned())));
        }
    }

    /// Hands the partials of `call_id` to the returned receiver, until the
    /// call's [`CallGuard`] drops.
    pub(super) fn partials(&self, call_id: &str) -> mpsc::UnboundedReceiver<StreamEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.streams
            .lock()
            .expect("streams lock")
            .insert(call_id.to_owned(), tx);
        rx
    }

    fn on_stream(&self, payload: &[u8]) {
        let Ok(msg) = serde_json::from_slice::<StreamMessage>(payload) else {
            tracing::warn!("ignored an unreadable stream message");
            return;
        };
        let Some(tx) = self.streams.lock().expect("streams lock").get(&msg.call_id).cloned() else {
            return;
        };
        let event = match msg.kind {
            StreamType::Done => StreamEvent::Done(msg.seq),
            StreamType::Partial => StreamEvent::Partial(msg.seq, msg.into_partial()),
        };
        let _ = tx.send(event);
    }
}

/// A client's own topics.
pub(super) struct OwnTopics {
    pub(super) responses: String,
    /// `{ns}/mcp/clients/{me}/streams/`
    pub(super) streams_prefix: String,
}

/// Removes a call's routing entries however the call ends.
pub(super) struct CallGuard<'a> {
    pub(super) router: &'a Router,
    pub(super) call_id: &'a str,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.router.calls.lock().expect("calls lock").remove(self.call_id);
        self.router.streams.lock().expect("streams lock").remove(self.call_id);
    }
}

/// The error of a call to `tool` whose publish the broker refused.
pub(super) fn refusal(tool: &str, reason: PubAckReason) -> CallError {
    match reason {
        PubAckReason::NotAuthorized => CallError::Unauthorized {
            message: format!("the broker refused the call to `{tool}` (PUBACK 0x87: not authorized)"),
        },
        PubAckReason::NoMatchingSubscribers => CallError::Unavailable {
            message: format!("no server is subscribed to `{tool}` (PUBACK 0x10: no matching subscribers)"),
        },
        other => CallError::Transport(format!("the broker refused the call to `{tool}`: {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::QoS;

    use super::*;

    #[test]
    fn a_lost_session_wakes_every_waiting_call_once() {
        let router = Router::default();
        let correlation = Bytes::from_static(b"x");
        let mut rx: Vec<_> = ["accepted", "sent"]
            .into_iter()
            .map(|id| router.register((*id).into(), &correlation, 1))
            .collect();
        router.on_call_ack("accepted", 1, Ack::Published(PubAckReason::Success));
        router.session_lost();
        assert!(matches!(rx[0].try_recv(), Ok(Answer::SessionLost)));
        assert!(matches!(rx[1].try_recv(), Ok(Answer::SessionLost)));
        assert!(
            router.calls.lock().unwrap().is_empty(),
            "each publishes again, and waits anew"
        );
    }

    #[test]
    fn the_brokers_verdict_marks_or_wakes_the_waiting_call() {
        let router = Router::default();
        let correlation = Bytes::from_static(b"x");
        let mut rx: Vec<_> = ["ok", "refused", "lost", "nobody", "stale"]
            .into_iter()
            .map(|id| router.register((*id).into(), &correlation, 2))
            .collect();
        router.on_call_ack("ok", 2, Ack::Published(PubAckReason::Success));
        router.on_call_ack("refused", 2, Ack::Published(PubAckReason::NotAuthorized));
        router.on_call_ack("lost", 2, Ack::Lost);
        router.on_call_ack("nobody", 2, Ack::Published(PubAckReason::NoMatchingSubscribers));
        // The acknowledgement of an earlier publish of the same call.
        router.on_call_ack("stale", 1, Ack::Published(PubAckReason::NoMatchingSubscribers));
        assert!(router.accepted("ok"));
        assert!(rx[0].try_recv().is_err(), "an accepted call waits on for its response");
        assert!(matches!(
            rx[1].try_recv(),
            Ok(Answer::Refused(PubAckReason::NotAuthorized))
        ));
        assert!(matches!(rx[2].try_recv(), Ok(Answer::Lost)));
        assert!(matches!(rx[3].try_recv(), Ok(Answer::NoSubscribers)));
        assert!(rx[4].try_recv().is_err(), "only the latest publish's ack counts");
        assert!(!router.accepted("refused"));
        assert_eq!(router.calls.lock().unwrap().len(), 2);
    }

    #[test]
    fn on_311_a_response_is_matched_by_call_id_alone() {
        let router = Router::default();
        let mut rx = router.register("c1".into(), &Bytes::from_static(b"c1"), 1);
        let response = Incoming {
            topic: "lab/mcp/clients/scout/responses".into(),
            payload: Bytes::from_static(br#"{"call_id":"c1","status":"ok","result":1,"elapsed_ms":0}"#),
            qos: QoS::AtLeastOnce,
            response_topic: None,
            correlation: None,
            message_expiry: None,
            pkid: 1,
            acked: true,
        };
        let mut wrong = response.clone();
        wrong.correlation = Some(Bytes::from_static(b"other"));
        router.on_response(wrong);
        assert!(rx.try_recv().is_err(), "a mismatched Correlation Data is dropped");
        router.on_response(response);
        let Ok(Answer::Response(got)) = rx.try_recv() else {
            panic!("the response reaches the call")
        };
        assert_eq!(got.result, Some(serde_json::json!(1)));
    }
}
