//! The JSON payloads of calls, responses and stream messages (v0.1 field
//! names), and the partials a stream carries. Shapes and encoding only:
//! nothing here sends, receives or checks a call.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::json;

/// A call request, published on a tool's call topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    /// Unique per call; echoed in the response and every stream message.
    pub call_id: String,
    /// The tool's arguments (an object).
    #[serde(default = "empty_object")]
    pub arguments: Value,
    /// The caller's identity as the caller states it (self-asserted in v0.1).
    #[serde(default)]
    pub client: String,
    /// When the call was made (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Where to answer, for brokers without MQTT 5 Response Topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_topic: Option<String>,
    /// **Extension:** stream partials to the caller's private stream topic
    /// `{ns}/mcp/clients/{caller}/streams/{call_id}` instead of the tool's
    /// shared v0.1 stream topic.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private_stream: bool,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// `ok` or `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseStatus {
    /// The call succeeded and `result` holds its value.
    Ok,
    /// The call failed and `error` says why.
    Error,
}

/// A call response, published on the caller's response topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallResponse {
    /// The call this answers.
    pub call_id: String,
    /// Whether it succeeded.
    pub status: ResponseStatus,
    /// The tool's result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// How long the server took, in milliseconds.
    #[serde(default)]
    pub elapsed_ms: u64,
    /// How many partials the call's stream sent, an extension: a caller
    /// whose broker does not keep the order between a stream and its
    /// response (a cluster) knows how many are still on their way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partials: Option<u64>,
}

impl CallResponse {
    /// A success.
    pub fn ok(call_id: String, result: Value, elapsed_ms: u64) -> Self {
        CallResponse {
            call_id,
            status: ResponseStatus::Ok,
            result: Some(result),
            error: None,
            elapsed_ms,
            partials: None,
        }
    }

    /// A failure.
    pub fn error(call_id: String, error: ErrorBody, elapsed_ms: u64) -> Self {
        CallResponse {
            call_id,
            status: ResponseStatus::Error,
            result: None,
            error: Some(error),
            elapsed_ms,
            partials: None,
        }
    }
}

/// The `error` object of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The kind of failure.
    #[serde(rename = "type")]
    pub error_type: ErrorType,
    /// A human-readable explanation.
    pub message: String,
    /// A tool-defined code (string or number on the wire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<Value>,
}

impl ErrorBody {
    /// An error of `error_type` with `message` and no code.
    pub fn new(error_type: ErrorType, message: impl Into<String>) -> Self {
        ErrorBody {
            error_type,
            message: message.into(),
            code: None,
        }
    }
}

/// The v0.1 error types; unknown ones from newer peers are kept as `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// `invalid_arguments`
    InvalidArguments,
    /// `unauthorized`
    Unauthorized,
    /// `tool_error`
    ToolError,
    /// `timeout`
    Timeout,
    /// `unavailable`
    Unavailable,
    /// `cancelled` (an extension): the caller cancelled the call.
    Cancelled,
    /// A type this version does not know.
    Other(String),
}

impl ErrorType {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorType::InvalidArguments => "invalid_arguments",
            ErrorType::Unauthorized => "unauthorized",
            ErrorType::ToolError => "tool_error",
            ErrorType::Timeout => "timeout",
            ErrorType::Unavailable => "unavailable",
            ErrorType::Cancelled => "cancelled",
            ErrorType::Other(s) => s,
        }
    }
}

impl std::fmt::Display for ErrorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(match s.as_str() {
            "invalid_arguments" => ErrorType::InvalidArguments,
            "unauthorized" => ErrorType::Unauthorized,
            "tool_error" => ErrorType::ToolError,
            "timeout" => ErrorType::Timeout,
            "unavailable" => ErrorType::Unavailable,
            "cancelled" => ErrorType::Cancelled,
            _ => ErrorType::Other(s),
        })
    }
}

/// Extension: a caller's cancel of one of its calls, published on
/// [`Topics::cancel_as`](crate::Topics::cancel_as): the call is the one with
/// this `call_id` and reply address from the caller the topic names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// The call to cancel.
    pub call_id: String,
    /// The response topic the call gave.
    pub response_topic: String,
}

/// `partial` or `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamType {
    /// A piece of output.
    Partial,
    /// The last stream message of a call; the response follows.
    Done,
}

/// A message on a call's stream topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamMessage {
    /// The call it belongs to.
    pub call_id: String,
    /// Position in the call's stream, from 0 (v0.1 peers may send any number).
    pub seq: u64,
    /// Partial or done.
    #[serde(rename = "type")]
    pub kind: StreamType,
    /// Text output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Structured output (an object).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
    /// Extension: how far the call has got, as MCP's `progress` (its
    /// message is `content`, so v0.1 readers show it as text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// Extension: what `progress` counts up to, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
}

impl StreamMessage {
    /// The stream message carrying `partial` (none for `done`).
    pub fn new(call_id: impl Into<String>, seq: u64, kind: StreamType, partial: Option<Partial>) -> Self {
        let mut msg = StreamMessage {
            call_id: call_id.into(),
            seq,
            kind,
            content: None,
            data: None,
            progress: None,
            total: None,
        };
        match partial {
            Some(Partial::Text(t)) => msg.content = Some(t),
            Some(Partial::Data(d)) => msg.data = Some(d),
            Some(Partial::Progress(p)) => {
                msg.content = Some(p.message);
                msg.progress = Some(p.progress);
                msg.total = p.total;
            }
            None => {}
        }
        msg
    }

    /// The partial this message carries: none for `done`, or for a partial
    /// with neither `content` nor `data`.
    pub fn into_partial(self) -> Option<Partial> {
        if self.kind == StreamType::Done {
            return None;
        }
        match (self.progress, self.content, self.data) {
            (Some(progress), content, _) => Some(Partial::Progress(Progress::new(
                progress,
                self.total,
                content.unwrap_or_default(),
            ))),
            (None, Some(text), _) => Some(Partial::Text(text)),
            (None, None, Some(data)) => Some(Partial::Data(data)),
            (None, None, None) => None,
        }
    }
}

/// A piece of streamed output.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Partial {
    /// Text (`content` on the wire).
    Text(String),
    /// A JSON object (`data` on the wire).
    Data(Value),
    /// How far the call has got, an extension (`progress` and `total` on
    /// the wire, the message as `content`).
    Progress(Progress),
}

/// How far a call has got: MCP's `notifications/progress`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Progress {
    /// How much is done; it only grows.
    pub progress: f64,
    /// How much there is to do, when known.
    pub total: Option<f64>,
    /// What is going on, for a person: never empty (`"3/10"` when the
    /// tool gave no message).
    pub message: String,
}

impl Progress {
    /// Progress of `progress` out of `total`, with a message (when empty,
    /// `"{progress}/{total}"` stands in).
    pub fn new(progress: f64, total: Option<f64>, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.is_empty() {
            message = match total {
                Some(total) => format!("{progress}/{total}"),
                None => format!("{progress}"),
            };
        }
        Progress {
            progress,
            total,
            message,
        }
    }
}

impl std::fmt::Display for Progress {
    /// `3/10 crawled example.com`, or the message alone when it already
    /// says the numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let numbers = match self.total {
            Some(total) => format!("{}/{total}", self.progress),
            None => format!("{}", self.progress),
        };
        if self.message.starts_with(&numbers) {
            f.write_str(&self.message)
        } else {
            write!(f, "{numbers} {}", self.message)
        }
    }
}

impl Partial {
    /// The text, if this is text.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Partial::Text(t) => Some(t),
            _ => None,
        }
    }

    /// The object, if this is data.
    pub fn as_data(&self) -> Option<&Value> {
        match self {
            Partial::Data(d) => Some(d),
            _ => None,
        }
    }

    /// The progress, if this is progress.
    pub fn as_progress(&self) -> Option<&Progress> {
        match self {
            Partial::Progress(p) => Some(p),
            _ => None,
        }
    }
}

/// The most an encoder allocates ahead on a hint.
const MAX_SIZE_HINT: usize = 16 * 1024 * 1024;

/// Encodes with `write` into a buffer that starts at `size_hint` (the
/// expected size) rather than growing from nothing, and is shrunk when left
/// much larger than what it holds (a response may be kept for a while).
fn encode_with(size_hint: usize, write: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut buf = Vec::with_capacity(size_hint.clamp(256, MAX_SIZE_HINT));
    write(&mut buf);
    if buf.capacity() > 2 * buf.len() + 4096 {
        buf.shrink_to_fit();
    }
    buf
}

impl CallRequest {
    /// Its JSON, byte for byte as `serde_json` writes it (with the fast
    /// string escape of [`json`]), in a buffer sized for `size_hint` bytes.
    pub(crate) fn encode(&self, size_hint: usize) -> Vec<u8> {
        RequestView {
            call_id: &self.call_id,
            arguments: &self.arguments,
            client: &self.client,
            timestamp: self.timestamp.as_deref(),
            response_topic: self.response_topic.as_deref(),
            private_stream: self.private_stream,
        }
        .encode(size_hint)
    }
}

/// A call request made of borrowed parts: what the client encodes, without
/// copying its identity, its response topic and the call id into a
/// [`CallRequest`] first.
pub(crate) struct RequestView<'a> {
    pub call_id: &'a str,
    pub arguments: &'a Value,
    pub client: &'a str,
    pub timestamp: Option<&'a str>,
    pub response_topic: Option<&'a str>,
    pub private_stream: bool,
}

impl RequestView<'_> {
    /// Its JSON, as [`CallRequest::encode`] writes it.
    pub(crate) fn encode(&self, size_hint: usize) -> Vec<u8> {
        encode_with(size_hint, |buf| {
            let mut object = json::Object::new(buf);
            object
                .str("call_id", self.call_id)
                .value("arguments", self.arguments)
                .str("client", self.client);
            if let Some(timestamp) = self.timestamp {
                object.str("timestamp", timestamp);
            }
            if let Some(topic) = self.response_topic {
                object.str("response_topic", topic);
            }
            if self.private_stream {
                object.bool("private_stream", true);
            }
            object.end();
        })
    }
}

impl CallResponse {
    /// Its JSON, as [`CallRequest::encode`] writes a request.
    pub(crate) fn encode(&self, size_hint: usize) -> Vec<u8> {
        encode_with(size_hint, |buf| {
            let mut object = json::Object::new(buf);
            object.str("call_id", &self.call_id).str(
                "status",
                match self.status {
                    ResponseStatus::Ok => "ok",
                    ResponseStatus::Error => "error",
                },
            );
            if let Some(result) = &self.result {
                object.value("result", result);
            }
            if let Some(error) = &self.error {
                object.object("error", |body| {
                    body.str("type", error.error_type.as_str())
                        .str("message", &error.message);
                    if let Some(code) = &error.code {
                        body.value("code", code);
                    }
                });
            }
            object.u64("elapsed_ms", self.elapsed_ms);
            if let Some(partials) = self.partials {
                object.u64("partials", partials);
            }
            object.end();
        })
    }
}

/// Decodes a call response, as a client reads it off its response topic.
pub(crate) fn decode_response(payload: &[u8]) -> serde_json::Result<CallResponse> {
    match read_response_fast(payload) {
        Some(response) => Ok(response),
        None => serde_json::from_slice(payload),
    }
}

/// A response read by the runtime's reader, each field as serde reads it
/// from a `Value`. `None` where `serde_json` must decide (then its reading,
/// or its error, stands): any error, and a field named twice.
fn read_response_fast(payload: &[u8]) -> Option<CallResponse> {
    use serde::de::IntoDeserializer;
    let (mut call_id, mut status, mut result, mut error, mut elapsed_ms, mut partials) =
        (None, None, None, None, None, None);
    let mut seen = [false; 6];
    json::read::object(payload, |key, reader| {
        let slot = match &*key {
            "call_id" => 0,
            "status" => 1,
            "result" => 2,
            "error" => 3,
            "elapsed_ms" => 4,
            "partials" => 5,
            _ => return reader.value().map(drop),
        };
        if std::mem::replace(&mut seen[slot], true) {
            return None;
        }
        // The strings straight from the reader; anything else as serde
        // reads it from a `Value` (a wrong type gives up, and serde_json's
        // error stands).
        match slot {
            // `string` reads only a string: anything else gives up.
            0 => call_id = Some(reader.string()?.into_owned()),
            1 => {
                let text = reader.string()?;
                status = Some(match &*text {
                    "ok" => ResponseStatus::Ok,
                    "error" => ResponseStatus::Error,
                    _ => return None,
                });
            }
            2 => result = Some(reader.value()?).filter(|v| !v.is_null()),
            3 => error = Option::<ErrorBody>::deserialize(reader.value()?.into_deserializer()).ok()?,
            4 => elapsed_ms = Some(reader.value()?.as_u64()?),
            _ => {
                partials = match reader.value()? {
                    Value::Null => None,
                    n => Some(n.as_u64()?),
                }
            }
        }
        Some(())
    })?;
    Some(CallResponse {
        call_id: call_id?,
        status: status?,
        result,
        error,
        elapsed_ms: elapsed_ms.unwrap_or_default(),
        partials,
    })
}

/// Now, as RFC 3339 UTC with milliseconds (`2026-11-23T21:08:03.123Z`).
pub(crate) fn now_rfc3339() -> String {
    now_stamp().as_str().to_owned()
}

/// The time now, as [`now_rfc3339`] writes it, without an allocation: each
/// call carries one.
pub(crate) fn now_stamp() -> Stamp {
    rfc3339_millis(time::OffsetDateTime::now_utc())
}

/// An RFC 3339 UTC time with milliseconds, on the stack.
pub(crate) struct Stamp([u8; 24]);

impl Stamp {
    pub(crate) fn as_str(&self) -> &str {
        debug_assert!(self.0.is_ascii());
        // SAFETY: only `rfc3339_millis` makes one, of ASCII digits and
        // separators; checking them again would cost more than writing them.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// `at` as RFC 3339 UTC with milliseconds. Digits written by hand: it
/// stamps every call, and the formatting machinery (`time`'s, or `write!`)
/// costs more than the rest of encoding a call.
fn rfc3339_millis(at: time::OffsetDateTime) -> Stamp {
    let at = at.to_offset(time::UtcOffset::UTC);
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    // Each field at once: `year()`, `month()` and `day()` would each work
    // out the calendar date again.
    let (year, month, day) = at.to_calendar_date();
    let (hour, minute, second, milli) = at.to_hms_milli();
    // Years before 0 or after 9999 do not fit RFC 3339: clamped.
    put(0, 4, year.clamp(0, 9999) as u32);
    put(5, 2, u8::from(month).into());
    put(8, 2, day.into());
    put(11, 2, hour.into());
    put(14, 2, minute.into());
    put(17, 2, second.into());
    put(20, 3, milli.into());
    Stamp(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        use time::macros::datetime;
        for (at, text) in [
            (datetime!(2026-11-23 21:08:03.123 UTC), "2026-11-23T21:08:03.123Z"),
            (datetime!(2026-01-02 03:04:05.006 UTC), "2026-01-02T03:04:05.006Z"),
            (datetime!(1999-12-31 23:59:59.999 UTC), "1999-12-31T23:59:59.999Z"),
            (datetime!(2026-12-07 01:00:00.000 +02:00), "2026-12-06T23:00:00.000Z"),
        ] {
            assert_eq!(rfc3339_millis(at).as_str(), text);
        }
    }

    #[test]
    fn a_response_reads_as_serde_json_reads_it() {
        let docs: &[&str] = &[
            r#"{"call_id":"c1","status":"ok","result":{"content":[{"type":"text","text":"hi \u00e9"}]},"elapsed_ms":3}"#,
            r#"{"call_id":"c1","status":"error","error":{"type":"timeout","message":"slow"},"result":null}"#,
            r#"{"call_id":"c1","status":"ok","call_id":"c2"}"#,
            r#"{"call_id":"c1","status":"maybe"}"#,
            r#"{"call_id":"c1","status":"ok","elapsed_ms":-1}"#,
            r#"{"call_id":"c1","status":"ok"} trailing"#,
            r#"{"call_id":"c1","status":"ok","elapsed_ms":3.0}"#,
            r#"{"call_id":"c1","status":"ok","result":1,"elapsed_ms":3,"partials":6}"#,
            r#"{"call_id":"c1","status":"ok","partials":null}"#,
            r#"{"call_id":"c1","status":"ok","partials":-2}"#,
            r#"{"x":{"y":[1]},"call_id":"c1","status":"error","error":null,"progress":0.5}"#,
            r#"{"status":"ok"}"#,
        ];
        for doc in docs {
            let ours = decode_response(doc.as_bytes()).map_err(|e| e.to_string());
            let serde = serde_json::from_slice::<CallResponse>(doc.as_bytes()).map_err(|e| e.to_string());
            assert_eq!(ours, serde, "{doc}");
        }
    }

    #[test]
    fn progress_travels_as_extension_fields_with_its_message_as_content() {
        let msg = StreamMessage::new(
            "c1",
            4,
            StreamType::Partial,
            Some(Partial::Progress(Progress::new(3.0, Some(10.0), "crawled a"))),
        );
        let wire = serde_json::to_value(&msg).unwrap();
        assert_eq!(
            wire,
            serde_json::json!({"call_id": "c1", "seq": 4, "type": "partial", "content": "crawled a", "progress": 3.0, "total": 10.0})
        );
        let back: StreamMessage = serde_json::from_value(wire).unwrap();
        assert_eq!(
            back.into_partial(),
            Some(Partial::Progress(Progress::new(3.0, Some(10.0), "crawled a")))
        );
        // A v0.1 partial has no figures: it stays text.
        let text = StreamMessage::new("c1", 0, StreamType::Partial, Some(Partial::Text("hi".into())));
        assert_eq!(text.into_partial(), Some(Partial::Text("hi".into())));
        assert_eq!(StreamMessage::new("c1", 5, StreamType::Done, None).into_partial(), None);
    }

    #[test]
    fn progress_without_a_message_says_its_figures() {
        let p = Progress::new(3.0, Some(10.0), "");
        assert_eq!(p.message, "3/10");
        assert_eq!(p.to_string(), "3/10");
        assert_eq!(
            Progress::new(3.0, Some(10.0), "crawled a").to_string(),
            "3/10 crawled a"
        );
        assert_eq!(Progress::new(0.5, None, "").to_string(), "0.5");
    }
    use serde_json::json;

    #[test]
    fn buffers_start_at_the_hint_and_do_not_keep_much_more() {
        let response = CallResponse::ok("c1".into(), json!({"text": "x".repeat(1000)}), 3);
        let small = response.encode(0);
        assert_eq!(small, serde_json::to_vec(&response).unwrap());
        let hinted = response.encode(1100);
        assert!(hinted.capacity() >= 1100, "started at the hint");
        let oversized = response.encode(1 << 20);
        assert_eq!(oversized, small);
        assert!(oversized.capacity() < 2 * oversized.len() + 4096, "shrunk");
    }

    #[test]
    fn requests_and_responses_encode_as_serde_json_does() {
        let full = CallRequest {
            call_id: "c\"1".into(),
            arguments: json!({"text": "a\nb", "n": [1, 2.5, null, true], "o": {"z": 1, "a": "é"}}),
            client: "scout".into(),
            timestamp: Some("2026-12-01T08:00:00.000Z".into()),
            response_topic: Some("ns/mcp/clients/scout/responses".into()),
            private_stream: true,
        };
        let bare = CallRequest {
            call_id: "c2".into(),
            arguments: json!({}),
            client: String::new(),
            timestamp: None,
            response_topic: None,
            private_stream: false,
        };
        for request in [full, bare] {
            assert_eq!(request.encode(0), serde_json::to_vec(&request).unwrap());
        }
        let mut coded = ErrorBody::new(ErrorType::Other("rate_limited".into()), "slow \"down\"");
        coded.code = Some(json!(429));
        let responses = [
            CallResponse::ok("c1".into(), json!("text\u{1}"), 12),
            CallResponse::ok("c1".into(), json!(null), 0),
            CallResponse::error("c1".into(), ErrorBody::new(ErrorType::ToolError, "boom"), 1),
            CallResponse::error("c1".into(), coded, u64::MAX),
        ];
        for response in responses {
            assert_eq!(response.encode(0), serde_json::to_vec(&response).unwrap());
        }
    }

    #[test]
    fn now_is_stamped_now() {
        let stamp = now_rfc3339();
        let fmt =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        let parsed = time::PrimitiveDateTime::parse(&stamp, &fmt).expect("parses back");
        let age = time::OffsetDateTime::now_utc() - parsed.assume_utc();
        assert!(
            age >= time::Duration::ZERO && age < time::Duration::seconds(5),
            "{stamp}"
        );
        assert_eq!(stamp.len(), 24, "{stamp}");
    }

    #[test]
    fn v01_response_shapes_parse() {
        let ok: CallResponse =
            serde_json::from_value(json!({"call_id": "c1", "status": "ok", "result": {"x": 1}, "elapsed_ms": 3}))
                .unwrap();
        assert_eq!(ok.result, Some(json!({"x": 1})));
        let err: CallResponse = serde_json::from_value(json!({
            "call_id": "c1", "status": "error",
            "error": {"type": "tool_error", "message": "boom", "code": 42},
            "elapsed_ms": 3
        }))
        .unwrap();
        let body = err.error.unwrap();
        assert_eq!(body.error_type, ErrorType::ToolError);
        assert_eq!(body.code, Some(json!(42)));
    }

    #[test]
    fn unknown_error_types_survive() {
        let t: ErrorType = serde_json::from_value(json!("rate_limited")).unwrap();
        assert_eq!(t, ErrorType::Other("rate_limited".into()));
        assert_eq!(serde_json::to_value(&t).unwrap(), json!("rate_limited"));
    }

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let ts = now_rfc3339();
        assert!(
            time::OffsetDateTime::parse(&ts, &time::format_description::well_known::Rfc3339).is_ok(),
            "{ts}"
        );
        assert!(ts.ends_with('Z'));
    }
}
