//! Reading an incoming call, from the bytes and MQTT properties a broker
//! delivered, into a [`CallRequest`] and the address to answer it at. No I/O:
//! all a caller controls passes through one fuzzable function, [`decode_call`].

use bytes::Bytes;
use serde::Deserialize;
use serde_json::Value;

use super::envelope::{CallRequest, ErrorBody, ErrorType};
use super::json;
use super::names::name_problem;
use super::topics::Topics;

/// The longest Correlation Data echoed back as the `call_id` of a call whose
/// own `call_id` cannot be read.
const MAX_HINT_LEN: usize = 256;

/// Where and how to answer one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub topic: String,
    pub correlation: Option<Bytes>,
}

/// What arrived with a call besides its payload.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Envelope<'a> {
    /// The MQTT 5 Response Topic.
    pub response_topic: Option<&'a str>,
    /// The MQTT 5 Correlation Data.
    pub correlation: Option<&'a Bytes>,
    /// The caller the broker attests through the topic it let the call in on.
    pub verified_caller: Option<&'a str>,
}

/// A call ready to run.
#[derive(Debug)]
pub(crate) struct Inbound {
    /// The call, with what the server uses of it: `client` only when the
    /// broker does not attest the caller, no `timestamp` or
    /// `response_topic` (both checked to be strings, if present).
    pub request: CallRequest,
    pub reply: Reply,
}

/// A call that cannot run, and what to tell its caller when it can be reached.
#[derive(Debug)]
pub(crate) struct Rejection {
    pub call_id: String,
    pub error: ErrorBody,
    pub reply: Option<Reply>,
}

/// The payload as `serde_json` reads it: every field loosely, so that a
/// wrong type is reported by name instead of failing the whole call.
#[derive(Deserialize)]
#[serde(expecting = "a JSON object with a `call_id`")]
struct SerdeWire {
    #[serde(default)]
    call_id: Option<Value>,
    #[serde(default)]
    arguments: Option<Value>,
    #[serde(default)]
    client: Option<Value>,
    #[serde(default)]
    timestamp: Option<Value>,
    #[serde(default)]
    response_topic: Option<Value>,
    #[serde(default)]
    private_stream: Option<Value>,
}

/// A field that should be a string, as read: borrowed from the payload when
/// it is one without escapes, so that the fields a server does not keep
/// cost no copy.
#[derive(Debug, PartialEq)]
enum Text<'a> {
    Str(std::borrow::Cow<'a, str>),
    /// Anything else: a wrong type, reported by name.
    Other(Value),
}

impl Text<'_> {
    fn from_value(value: Value) -> Text<'static> {
        match value {
            Value::String(s) => Text::Str(s.into()),
            other => Text::Other(other),
        }
    }
}

/// The payload as sent, `null`s read as absent fields.
#[derive(Debug, PartialEq)]
struct Wire<'a> {
    call_id: Option<Text<'a>>,
    arguments: Option<Value>,
    client: Option<Text<'a>>,
    timestamp: Option<Text<'a>>,
    response_topic: Option<Text<'a>>,
    private_stream: Option<Value>,
}

impl<'a> Wire<'a> {
    /// Reads the payload with the runtime's reader, and with `serde_json`
    /// when that one gives up: then `serde_json`'s error is the one reported.
    fn read(payload: &'a [u8]) -> serde_json::Result<Wire<'a>> {
        match Wire::read_fast(payload) {
            Some(wire) => Ok(wire),
            None => serde_json::from_slice(payload).map(Wire::from_serde),
        }
    }

    fn from_serde(w: SerdeWire) -> Wire<'static> {
        let text = |v: Option<Value>| v.map(Text::from_value);
        Wire {
            call_id: text(w.call_id),
            arguments: w.arguments,
            client: text(w.client),
            timestamp: text(w.timestamp),
            response_topic: text(w.response_topic),
            private_stream: w.private_stream,
        }
    }

    /// `None` where `serde_json` must decide: any error, and a field named
    /// twice (an error to `serde_json` too).
    fn read_fast(payload: &'a [u8]) -> Option<Wire<'a>> {
        let mut wire = Wire {
            call_id: None,
            arguments: None,
            client: None,
            timestamp: None,
            response_topic: None,
            private_stream: None,
        };
        let mut seen = [false; 6];
        json::read::object(payload, |key, reader| {
            // A field named twice gives up; else it is read as what it should be.
            fn once<T>(seen: &mut bool, field: &mut Option<T>, read: impl FnOnce() -> Option<Option<T>>) -> Option<()> {
                if std::mem::replace(seen, true) {
                    return None;
                }
                *field = read()?;
                Some(())
            }
            // As with serde's `Option`: `null` is no value.
            let value = |reader: &mut json::read::Reader<'a>| Some(Some(reader.value()?).filter(|v| !v.is_null()));
            let text = |reader: &mut json::read::Reader<'a>| {
                if reader.at_string() {
                    Some(Some(Text::Str(reader.string()?)))
                } else {
                    Some(value(reader)?.map(Text::Other))
                }
            };
            match &*key {
                "call_id" => once(&mut seen[0], &mut wire.call_id, || text(reader)),
                "arguments" => once(&mut seen[1], &mut wire.arguments, || value(reader)),
                "client" => once(&mut seen[2], &mut wire.client, || text(reader)),
                "timestamp" => once(&mut seen[3], &mut wire.timestamp, || text(reader)),
                "response_topic" => once(&mut seen[4], &mut wire.response_topic, || text(reader)),
                "private_stream" => once(&mut seen[5], &mut wire.private_stream, || value(reader)),
                // Read, to be sure it is JSON, and dropped.
                _ => reader.value().map(drop),
            }
        })?;
        Some(wire)
    }
}

/// Decodes a call. Never panics, whatever the bytes: a call that cannot run
/// comes back as a [`Rejection`], answered only if its reply address is known
/// and allowed (see [`allowed_reply`]).
pub(crate) fn decode_call(
    topics: &Topics,
    max_payload: usize,
    payload: &[u8],
    envelope: Envelope<'_>,
) -> Result<Inbound, Box<Rejection>> {
    let correlation = envelope.correlation.cloned();
    let hint = correlation
        .as_ref()
        .and_then(|c| std::str::from_utf8(c).ok())
        .filter(|s| s.len() <= MAX_HINT_LEN)
        .unwrap_or_default();
    // A caller the broker attests is answered on its own response topic,
    // whatever reply address the call names; else the MQTT 5 Response Topic
    // decides, when there is one. Known before the payload is read, so that
    // a payload that cannot be read is still answered.
    let mqtt_reply = match envelope.verified_caller {
        Some(caller) => Some(Reply {
            topic: topics.responses(caller),
            correlation: correlation.clone(),
        }),
        None => envelope
            .response_topic
            .and_then(|t| allowed_reply(topics, t, &correlation)),
    };
    let resolved = envelope.verified_caller.is_some() || envelope.response_topic.is_some();
    let reject = |call_id: &str, error_type, message: String, reply: Option<Reply>| {
        Box::new(Rejection {
            call_id: call_id.to_owned(),
            error: ErrorBody::new(error_type, message),
            reply,
        })
    };
    let invalid = |call_id: &str, message: String, reply: Option<Reply>| {
        reject(call_id, ErrorType::InvalidArguments, message, reply)
    };

    if payload.len() > max_payload {
        let message = format!(
            "the call is {} bytes, over this server's limit of {max_payload} bytes",
            payload.len()
        );
        return Err(invalid(hint, message, mqtt_reply));
    }
    // Serde would also read a struct from an array, by position.
    if payload.trim_ascii_start().first() != Some(&b'{') {
        let message = match serde_json::from_slice::<serde::de::IgnoredAny>(payload) {
            Ok(_) => "the call must be a JSON object".to_owned(),
            Err(e) => format!("the call is not valid JSON: {e}"),
        };
        return Err(invalid(hint, message, mqtt_reply));
    }
    let wire = match Wire::read(payload) {
        Ok(w) => w,
        Err(e) if e.is_data() => return Err(invalid(hint, format!("malformed call: {e}"), mqtt_reply)),
        Err(e) => return Err(invalid(hint, format!("the call is not valid JSON: {e}"), mqtt_reply)),
    };

    // v0.1 reply rules: the MQTT 5 Response Topic, else the payload's
    // `response_topic`, else the caller's own response topic. Resolved
    // before the call id is read, so a call without one is still answered.
    let client = match wire.client {
        None => Default::default(),
        Some(Text::Str(c)) => c,
        Some(Text::Other(_)) => return Err(invalid(hint, "`client` must be a string".into(), mqtt_reply)),
    };
    let payload_topic = match wire.response_topic {
        None => None,
        Some(Text::Str(t)) => Some(t),
        Some(Text::Other(_)) => return Err(invalid(hint, "`response_topic` must be a string".into(), mqtt_reply)),
    };
    // The address asked for: named only when it is refused.
    let (reply, wanted) = if resolved {
        // Already resolved (and any refusal logged) above.
        let wanted = envelope
            .response_topic
            .filter(|_| mqtt_reply.is_none())
            .map(str::to_owned);
        (mqtt_reply, wanted)
    } else {
        let wanted = payload_topic
            .as_deref()
            .map(str::to_owned)
            .or_else(|| name_problem(&client).is_none().then(|| topics.responses(&client)));
        let reply = wanted.as_deref().and_then(|w| allowed_reply(topics, w, &correlation));
        (reply, wanted)
    };

    let call_id = match wire.call_id {
        // The call id becomes a topic level of the stream topic.
        Some(Text::Str(id)) => match name_problem(&id) {
            None => id.into_owned(),
            Some(_) if id.is_empty() => return Err(invalid(hint, "`call_id` is empty".into(), reply)),
            Some(reason) => {
                let message = format!("`call_id` cannot be used: {reason}");
                return Err(invalid(hint, message, reply));
            }
        },
        Some(Text::Other(_)) => return Err(invalid(hint, "`call_id` must be a string".into(), reply)),
        None => return Err(invalid(hint, "the call has no `call_id`".into(), reply)),
    };
    if let Some(Text::Other(_)) = wire.timestamp {
        return Err(invalid(&call_id, "`timestamp` must be a string".into(), reply));
    }
    let private_stream = match wire.private_stream {
        None => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(invalid(
                &call_id,
                "`private_stream` must be true or false".into(),
                reply,
            ))
        }
    };
    let arguments = match wire.arguments {
        None => Value::Object(Default::default()),
        Some(a @ Value::Object(_)) => a,
        Some(_) => return Err(invalid(&call_id, "`arguments` must be a JSON object".into(), reply)),
    };
    let Some(reply) = reply else {
        return Err(match wanted {
            None => invalid(&call_id, "the call names no reply address".into(), None),
            Some(w) => reject(
                &call_id,
                ErrorType::Unauthorized,
                format!("reply address `{w}` refused"),
                None,
            ),
        });
    };
    // Kept only where the server uses them: the claimed `client` of a
    // caller the broker does not attest; `timestamp` and `response_topic`
    // not at all (the reply address is resolved).
    let request = CallRequest {
        call_id,
        arguments,
        client: match envelope.verified_caller {
            Some(_) => String::new(),
            None => client.into_owned(),
        },
        timestamp: None,
        response_topic: None,
        private_stream,
    };
    Ok(Inbound { request, reply })
}

/// Replies go only to `{ns}/mcp/clients/{client}/responses`, so a caller
/// cannot make a server publish where the caller itself may not.
pub(crate) fn allowed_reply(topics: &Topics, topic: &str, correlation: &Option<Bytes>) -> Option<Reply> {
    if topics.client_of_responses(topic).is_some() {
        Some(Reply {
            topic: topic.to_owned(),
            correlation: correlation.clone(),
        })
    } else {
        tracing::warn!(reply_topic = %topic, "refused a reply address outside {}/mcp/clients/+/responses", topics.namespace());
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn topics() -> Topics {
        Topics::new("lab".into())
    }

    fn decode(payload: &[u8], envelope: Envelope<'_>) -> Result<Inbound, Box<Rejection>> {
        decode_call(&topics(), 64 * 1024, payload, envelope)
    }

    /// The runtime's reader reads the fields `serde_json` reads, and leaves
    /// to it every payload it would refuse.
    #[test]
    fn the_fast_read_agrees_with_serde() {
        // Borrowed or owned, a string is the same string.
        fn fields(w: Wire) -> [Option<Value>; 6] {
            let text = |t: Option<Text>| {
                t.map(|t| match t {
                    Text::Str(s) => Value::String(s.into_owned()),
                    Text::Other(v) => v,
                })
            };
            [
                text(w.call_id),
                w.arguments,
                text(w.client),
                text(w.timestamp),
                text(w.response_topic),
                w.private_stream,
            ]
        }
        let taken: &[&str] = &[
            r#"{"call_id":"c1","arguments":{"a":[1,2.5,"x"]},"client":"scout","timestamp":"t","private_stream":true}"#,
            r#"{"call_id":null,"client":null,"other":{"x":[null]},"response_topic":"lab/mcp/clients/x/responses"}"#,
            r#" {"call_id":7,"arguments":"no","ca\u006c\u006c_id2":1} "#,
            r#"{}"#,
        ];
        for doc in taken {
            let fast = Wire::read_fast(doc.as_bytes()).unwrap_or_else(|| panic!("gave up on {doc}"));
            let serde = Wire::from_serde(serde_json::from_slice(doc.as_bytes()).unwrap());
            assert_eq!(fields(fast), fields(serde), "{doc}");
        }
        let left: &[&str] = &[
            r#"{"call_id":"a","call_id":"b"}"#,
            r#"{"call_id":"a","c\u0061ll_id":"b"}"#,
            r#"{"call_id":"a",}"#,
            r#"{"call_id":"a"} x"#,
        ];
        for doc in left {
            assert!(Wire::read_fast(doc.as_bytes()).is_none(), "read {doc}");
            assert!(serde_json::from_slice::<SerdeWire>(doc.as_bytes()).is_err(), "{doc}");
        }
        // Serde would read an array by position; `decode_call` refuses one first.
        assert!(Wire::read_fast(b"[\"c1\"]").is_none());
    }

    #[test]
    fn a_v01_call_is_answered_at_its_clients_response_topic() {
        let call = json!({"call_id": "c1", "arguments": {"a": 1}, "client": "scout"});
        let inbound = decode(call.to_string().as_bytes(), Envelope::default()).unwrap();
        assert_eq!(inbound.request.call_id, "c1");
        assert_eq!(inbound.request.arguments, json!({"a": 1}));
        assert_eq!(inbound.reply.topic, "lab/mcp/clients/scout/responses");
    }

    #[test]
    fn an_attested_caller_is_answered_on_its_own_topic_whatever_it_names() {
        let call =
            json!({"call_id": "c1", "client": "operator", "response_topic": "lab/mcp/clients/operator/responses"});
        let envelope = Envelope {
            response_topic: Some("lab/mcp/clients/operator/responses"),
            verified_caller: Some("scout"),
            ..Default::default()
        };
        let inbound = decode(call.to_string().as_bytes(), envelope).unwrap();
        assert_eq!(inbound.reply.topic, "lab/mcp/clients/scout/responses");
    }

    #[test]
    fn an_unusable_call_id_is_not_echoed_back() {
        let id = "x/".repeat(600_000);
        let call = json!({"call_id": id, "client": "scout"});
        let correlation = Bytes::from_static(b"hint");
        let envelope = Envelope {
            correlation: Some(&correlation),
            ..Default::default()
        };
        let rejection = decode_call(&topics(), 4 << 20, call.to_string().as_bytes(), envelope).unwrap_err();
        assert_eq!(rejection.call_id, "hint");
        assert!(rejection.error.message.contains("call_id"));
        assert!(rejection.reply.is_some());
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let deep = format!(
            "{{\"call_id\":\"d\",\"arguments\":{{\"a\":{}1{}}}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        let rejection = decode(deep.as_bytes(), Envelope::default()).unwrap_err();
        assert_eq!(rejection.error.error_type, ErrorType::InvalidArguments);
        assert!(
            rejection.error.message.contains("recursion"),
            "{}",
            rejection.error.message
        );
    }

    #[test]
    fn only_objects_are_calls() {
        for (payload, says) in [
            ("[\"c\", {}, \"s\"]", "object"),
            ("5", "object"),
            ("{", "JSON"),
            ("", "JSON"),
        ] {
            let rejection = decode(payload.as_bytes(), Envelope::default()).unwrap_err();
            assert!(
                rejection.error.message.contains(says),
                "{payload}: {}",
                rejection.error.message
            );
        }
    }

    #[test]
    fn wrong_field_types_are_named() {
        for (call, field) in [
            (json!({"call_id": 5, "client": "s"}), "call_id"),
            (json!({"call_id": "c", "client": "s", "arguments": [1]}), "arguments"),
            (json!({"call_id": "c", "client": 7}), "client"),
            (
                json!({"call_id": "c", "client": "s", "private_stream": "yes"}),
                "private_stream",
            ),
            (json!({"call_id": "c", "client": "s", "timestamp": 1}), "timestamp"),
        ] {
            let rejection = decode(call.to_string().as_bytes(), Envelope::default()).unwrap_err();
            assert!(
                rejection.error.message.contains(field),
                "{call}: {}",
                rejection.error.message
            );
        }
    }

    #[test]
    fn an_mqtt311_call_is_answered_at_its_payloads_response_topic() {
        // No Response Topic, no Correlation Data: what arrives over MQTT 3.1.1.
        let call = json!({"call_id": "c1", "client": "scout", "response_topic": "lab/mcp/clients/scout-2/responses"});
        let inbound = decode(call.to_string().as_bytes(), Envelope::default()).unwrap();
        assert_eq!(inbound.reply.topic, "lab/mcp/clients/scout-2/responses");
        assert_eq!(inbound.reply.correlation, None);
        // Unreadable, with the caller attested by its topic: still answered.
        let envelope = Envelope {
            verified_caller: Some("scout"),
            ..Default::default()
        };
        let rejection = decode(b"not json", envelope).unwrap_err();
        assert_eq!(
            rejection.reply.map(|r| r.topic).as_deref(),
            Some("lab/mcp/clients/scout/responses")
        );
    }

    #[test]
    fn reply_addresses_outside_the_namespace_are_refused() {
        let call = json!({"call_id": "c", "response_topic": "alarms/door/open"});
        let rejection = decode(call.to_string().as_bytes(), Envelope::default()).unwrap_err();
        assert_eq!(rejection.error.error_type, ErrorType::Unauthorized);
        assert!(rejection.reply.is_none());
    }
}
