//! Tool and Server Cards: the retained messages through which clients
//! discover what is online. Their shape only: when to publish one is the
//! server's business, how to read them the client's.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The protocol version cards carry in their `version` field.
pub const CARD_VERSION: &str = "1";
/// This crate's version, sent as `version_info.sdk`.
pub const SDK_VERSION: &str = concat!("mcpmqtt-rs/", env!("CARGO_PKG_VERSION"));

/// Whether a card's owner is reachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Serving calls.
    Online,
    /// Stopped, or gone (its Last Will said so).
    Offline,
}

/// Versions of the software behind a card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct VersionInfo {
    /// The SDK that published the card.
    #[serde(default)]
    pub sdk: String,
    /// The tool's own version (Tool Cards only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
}

/// The retained description of one tool, at `{ns}/mcp/tools/{tool}/card`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCard {
    /// Card format version, `"1"`.
    pub version: String,
    /// The tool's name.
    pub tool: String,
    /// The server hosting it.
    pub server: String,
    /// The namespace it lives in.
    pub namespace: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// JSON Schema of its arguments (MCP's `inputSchema`).
    pub input_schema: Value,
    /// JSON Schema of its result, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<Value>,
    /// Whether it streams partial output.
    #[serde(default)]
    pub supports_streaming: bool,
    /// Informational: whether callers need a broker identity.
    #[serde(default)]
    pub requires_auth: bool,
    /// Informational: who may call it. The broker's ACL enforces it.
    #[serde(default)]
    pub allowed_callers: Vec<String>,
    /// Software versions.
    #[serde(default)]
    pub version_info: VersionInfo,
    /// Online or offline.
    pub status: Status,
    /// When the card was last published (RFC 3339 UTC).
    #[serde(default)]
    pub last_seen: String,
    /// Extension: the server's deadline for one call, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Extension: the protocol extensions the server supports
    /// ([`EXT_CALLER_TOPIC`], [`EXT_PRIVATE_STREAMS`]). v0.1 servers list none,
    /// and clients then speak plain v0.1 to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Extension: a human-readable name for the tool, for hosts to show
    /// (MCP's `title`). v0.1 readers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Extension: hints about the tool's behaviour (MCP's `annotations`),
    /// which hosts use to decide whether to ask the user first. v0.1 readers
    /// ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<ToolAnnotations>,
}

/// Hints about what a tool does, as MCP's `ToolAnnotations`: hosts use them
/// to decide whether to ask the user before a call. They are hints, not
/// guarantees: a client must not trust them from a server it does not trust.
///
/// Each hint is `None` when the tool does not say, and MCP's default then
/// applies: not read-only, destructive, not idempotent, open world.
///
/// ```
/// use mcpmqtt::ToolAnnotations;
///
/// let hints = ToolAnnotations::default().read_only(true).open_world(false);
/// assert_eq!(
///     serde_json::to_string(&hints).unwrap(),
///     r#"{"readOnlyHint":true,"openWorldHint":false}"#
/// );
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolAnnotations {
    /// `readOnlyHint`: the tool does not modify its environment (MCP's
    /// default: false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_hint: Option<bool>,
    /// `destructiveHint`: the tool may perform destructive updates, rather
    /// than only additive ones; meaningful only when it is not read-only
    /// (MCP's default: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive_hint: Option<bool>,
    /// `idempotentHint`: calling it again with the same arguments has no
    /// further effect; meaningful only when it is not read-only (MCP's
    /// default: false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_hint: Option<bool>,
    /// `openWorldHint`: the tool interacts with an open world of external
    /// entities (the web, say) rather than a closed domain (MCP's default:
    /// true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world_hint: Option<bool>,
}

impl ToolAnnotations {
    /// Sets `readOnlyHint`.
    pub fn read_only(mut self, hint: bool) -> Self {
        self.read_only_hint = Some(hint);
        self
    }
    /// Sets `destructiveHint`.
    pub fn destructive(mut self, hint: bool) -> Self {
        self.destructive_hint = Some(hint);
        self
    }
    /// Sets `idempotentHint`.
    pub fn idempotent(mut self, hint: bool) -> Self {
        self.idempotent_hint = Some(hint);
        self
    }
    /// Sets `openWorldHint`.
    pub fn open_world(mut self, hint: bool) -> Self {
        self.open_world_hint = Some(hint);
        self
    }
    /// Whether no hint is set.
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Calls may be published on `{ns}/mcp/tools/{tool}/call/{caller}`, and the
/// server takes the caller from the topic, as attested by the broker's ACL.
pub const EXT_CALLER_TOPIC: &str = "caller_topic";
/// Partials may be streamed to `{ns}/mcp/clients/{caller}/streams/{call_id}`.
pub const EXT_PRIVATE_STREAMS: &str = "private_streams";

impl ToolCard {
    /// Whether the card's server supports an extension.
    pub fn supports(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }
}

/// The retained description of one server, at `{ns}/mcp/servers/{server}/card`.
/// Its offline form is the server's MQTT Last Will.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerCard {
    /// Card format version, `"1"`.
    pub version: String,
    /// The server's name.
    pub server: String,
    /// The namespace it serves.
    pub namespace: String,
    /// The names of its tools.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Software versions.
    #[serde(default)]
    pub version_info: VersionInfo,
    /// Online or offline.
    pub status: Status,
    /// When the card was last published (RFC 3339 UTC).
    #[serde(default)]
    pub last_seen: String,
    /// Extension: the MQTT client id of the instance that published the
    /// card. When a Last Will names a crashed instance, a surviving one
    /// takes over that instance's session and serves the calls queued in it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Extension: the protocol extensions the server supports, as on its
    /// Tool Cards. A client that finds a tool through this card calls it
    /// without fetching the tool's own card first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extensions: Vec<String>,
    /// Extension: a digest of the server's Tool Cards (all but their
    /// `status` and `last_seen`). Clients keep the Tool Cards they fetched
    /// while it stays the same, and fetch them again when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools_digest: Option<String>,
}

impl ServerCard {
    /// Whether the server supports an extension.
    pub fn supports(&self, extension: &str) -> bool {
        self.extensions.iter().any(|e| e == extension)
    }
}

/// The `tools_digest` of a server's Tool Cards, in the order given: 64-bit
/// FNV-1a over each card's compact JSON followed by a newline, the card
/// taken with `status` set to online and `last_seen` empty (so that neither
/// going offline nor republishing changes it), as 16 lowercase hex digits.
pub(crate) fn tools_digest(cards: impl IntoIterator<Item = ToolCard>) -> Result<String, serde_json::Error> {
    let mut hash = Fnv1a::default();
    for mut card in cards {
        card.status = Status::Online;
        card.last_seen.clear();
        serde_json::to_writer(&mut hash, &card)?;
        hash.add(b"\n");
    }
    Ok(format!("{:016x}", hash.0))
}

/// 64-bit FNV-1a (<http://www.isthe.com/chongo/tech/comp/fnv/>): stable
/// across builds and platforms, unlike the standard library's hashers.
struct Fnv1a(u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv1a {
    fn add(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.add(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn card() -> ToolCard {
        ToolCard {
            version: CARD_VERSION.into(),
            tool: "t".into(),
            server: "s".into(),
            namespace: "ns".into(),
            description: "d".into(),
            input_schema: json!({"type": "object"}),
            output_schema: None,
            supports_streaming: false,
            requires_auth: false,
            allowed_callers: vec![],
            version_info: VersionInfo::default(),
            status: Status::Online,
            last_seen: "2026-11-23T00:00:00.000Z".into(),
            timeout_ms: Some(30_000),
            extensions: vec![EXT_CALLER_TOPIC.into()],
            title: None,
            annotations: None,
        }
    }

    #[test]
    fn fnv1a_is_the_reference_hash() {
        // The reference values of 64-bit FNV-1a.
        let hash = |bytes: &[u8]| {
            let mut h = Fnv1a::default();
            h.add(bytes);
            h.0
        };
        assert_eq!(hash(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(hash(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn the_tools_digest_follows_the_cards_but_not_their_status_or_time() {
        let a = card();
        let b = ToolCard {
            tool: "u".into(),
            ..card()
        };
        let digest = tools_digest([a.clone(), b.clone()]).unwrap();
        assert_eq!(digest.len(), 16);
        assert!(digest.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(tools_digest([a.clone(), b.clone()]).unwrap(), digest, "stable");

        let later_and_offline = ToolCard {
            status: Status::Offline,
            last_seen: "2027-01-01T00:00:00.000Z".into(),
            ..a.clone()
        };
        assert_eq!(tools_digest([later_and_offline, b.clone()]).unwrap(), digest);

        let described = ToolCard {
            description: "something else".into(),
            ..a.clone()
        };
        assert_ne!(tools_digest([described, b.clone()]).unwrap(), digest);
        assert_ne!(tools_digest([b.clone(), a.clone()]).unwrap(), digest, "in tool order");
        assert_ne!(tools_digest([a.clone()]).unwrap(), digest);
        assert_ne!(tools_digest([]).unwrap(), tools_digest([a.clone()]).unwrap());
    }

    #[test]
    fn tool_card_has_every_v01_field() {
        let card = ToolCard {
            supports_streaming: true,
            requires_auth: true,
            allowed_callers: vec!["scout".into()],
            version_info: VersionInfo {
                sdk: SDK_VERSION.into(),
                tool: Some("1.0.0".into()),
            },
            timeout_ms: None,
            extensions: vec![],
            ..card()
        };
        let v = serde_json::to_value(&card).unwrap();
        for key in [
            "version",
            "tool",
            "server",
            "namespace",
            "description",
            "input_schema",
            "supports_streaming",
            "requires_auth",
            "allowed_callers",
            "version_info",
            "status",
            "last_seen",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["status"], "online");
        assert_eq!(v["version_info"]["tool"], "1.0.0");
    }

    #[test]
    fn title_and_annotations_are_extensions_left_out_when_absent() {
        let plain = serde_json::to_value(card()).unwrap();
        assert!(plain.get("title").is_none());
        assert!(plain.get("annotations").is_none());

        let annotated = ToolCard {
            title: Some("Query watch configs".into()),
            annotations: Some(ToolAnnotations::default().read_only(true).open_world(false)),
            ..card()
        };
        let v = serde_json::to_value(&annotated).unwrap();
        assert_eq!(v["title"], "Query watch configs");
        assert_eq!(v["annotations"], json!({"readOnlyHint": true, "openWorldHint": false}));
        let back: ToolCard = serde_json::from_value(v).unwrap();
        assert_eq!(back, annotated);

        // A v0.1 card (without them) still reads.
        let back: ToolCard = serde_json::from_value(plain).unwrap();
        assert_eq!(back, card());
        // All four hints, in MCP's spelling.
        let all: ToolAnnotations = serde_json::from_value(json!({
            "readOnlyHint": false, "destructiveHint": false, "idempotentHint": true, "openWorldHint": true
        }))
        .unwrap();
        assert_eq!(
            all,
            ToolAnnotations::default()
                .read_only(false)
                .destructive(false)
                .idempotent(true)
                .open_world(true)
        );
        assert!(ToolAnnotations::default().is_empty());
        assert!(!all.is_empty());
    }
}
