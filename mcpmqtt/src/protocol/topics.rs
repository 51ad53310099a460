//! The topic tree of the protocol, in one place: every topic is built here,
//! and other modules ask [`Topics`] for one rather than format it themselves.
//!
//! ```text
//! {ns}/mcp/servers/{server}/card          retained Server Card
//! {ns}/mcp/tools/{tool}/card              retained Tool Card
//! {ns}/mcp/tools/{tool}/call              call requests
//! {ns}/mcp/clients/{client}/responses     call responses
//! {ns}/mcp/tools/{tool}/stream/{call_id}  streamed partials
//! ```

/// The namespace used when none is given: the v0.1 default.
pub const DEFAULT_NAMESPACE: &str = "a2a/v1";

/// Builds and recognises the topics of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    ns: String,
}

impl Topics {
    /// Topics under `namespace`, which must already be normalised.
    pub(crate) fn new(namespace: String) -> Self {
        Topics { ns: namespace }
    }

    /// The namespace every topic starts with.
    pub fn namespace(&self) -> &str {
        &self.ns
    }

    /// Where a server's retained card lives.
    pub fn server_card(&self, server: &str) -> String {
        format!("{}/mcp/servers/{server}/card", self.ns)
    }

    /// Every server card of the namespace.
    pub fn server_cards(&self) -> String {
        format!("{}/mcp/servers/+/card", self.ns)
    }

    /// Where a tool's retained card lives.
    pub fn tool_card(&self, tool: &str) -> String {
        format!("{}/mcp/tools/{tool}/card", self.ns)
    }

    /// Every tool card of the namespace.
    pub fn tool_cards(&self) -> String {
        format!("{}/mcp/tools/+/card", self.ns)
    }

    /// The v0.1 call topic of a tool.
    pub fn call(&self, tool: &str) -> String {
        concat(&[&self.ns, "/mcp/tools/", tool, "/call"])
    }

    /// **Extension:** the call topic of one caller. The broker's ACL lets
    /// each caller publish only under its own name, so the server can trust
    /// the name it reads from the topic.
    pub fn call_as(&self, tool: &str, caller: &str) -> String {
        concat(&[&self.ns, "/mcp/tools/", tool, "/call/", caller])
    }

    /// Every call topic of a tool: the v0.1 one and every caller's
    /// (`call/#` also matches `call`).
    pub fn calls(&self, tool: &str) -> String {
        format!("{}/mcp/tools/{tool}/call/#", self.ns)
    }

    /// [`Topics::calls`] through a shared subscription, so that several
    /// instances of a server split the calls between them.
    pub fn shared_calls(&self, tool: &str) -> String {
        format!("$share/mcp-tool-{tool}/{}", self.calls(tool))
    }

    /// **Extension:** where one caller cancels its calls of a tool. As
    /// with [`Topics::call_as`], the broker's ACL lets each caller publish
    /// only under its own name.
    pub fn cancel_as(&self, tool: &str, caller: &str) -> String {
        concat(&[&self.ns, "/mcp/tools/", tool, "/cancel/", caller])
    }

    /// Every caller's cancels of a tool. Not shared between instances: a
    /// cancel must reach whichever instance runs the call.
    pub fn cancels(&self, tool: &str) -> String {
        format!("{}/mcp/tools/{tool}/cancel/+", self.ns)
    }

    /// The tool and the caller a cancel topic names.
    pub fn parse_cancel<'t>(&self, topic: &'t str) -> Option<(&'t str, &'t str)> {
        let (tool, after) = self.strip(topic, "/mcp/tools/")?.split_once('/')?;
        let caller = after.strip_prefix("cancel/")?;
        (super::names::name_problem(tool).is_none() && super::names::name_problem(caller).is_none())
            .then_some((tool, caller))
    }

    /// A client's response topic.
    pub fn responses(&self, client: &str) -> String {
        concat(&[&self.ns, "/mcp/clients/", client, "/responses"])
    }

    /// Every client's response topic (what a server may publish on).
    pub fn all_responses(&self) -> String {
        format!("{}/mcp/clients/+/responses", self.ns)
    }

    /// **Extension:** a caller's private stream of one call, which only that
    /// caller may read.
    pub fn private_stream(&self, caller: &str, call_id: &str) -> String {
        concat(&[&self.ns, "/mcp/clients/", caller, "/streams/", call_id])
    }

    /// Every private stream of one caller.
    pub fn private_streams(&self, caller: &str) -> String {
        format!("{}/mcp/clients/{caller}/streams/+", self.ns)
    }

    /// Every caller's private streams (what a server may publish on).
    pub fn all_private_streams(&self) -> String {
        format!("{}/mcp/clients/+/streams/+", self.ns)
    }

    /// Where the partials of one call of a streaming tool are published (v0.1).
    pub fn stream(&self, tool: &str, call_id: &str) -> String {
        concat(&[&self.ns, "/mcp/tools/", tool, "/stream/", call_id])
    }

    /// Every stream of a tool.
    pub fn streams(&self, tool: &str) -> String {
        format!("{}/mcp/tools/{tool}/stream/+", self.ns)
    }

    /// The tool a call topic addresses, and the caller if the topic names
    /// one: `{ns}/mcp/tools/{tool}/call` or `{ns}/mcp/tools/{tool}/call/{caller}`.
    pub fn parse_call<'t>(&self, topic: &'t str) -> Option<(&'t str, Option<&'t str>)> {
        // Level by level: every call comes through here.
        let (tool, after) = self.strip(topic, "/mcp/tools/")?.split_once('/')?;
        if tool.is_empty() {
            return None;
        }
        if after == "call" {
            return Some((tool, None));
        }
        let caller = after.strip_prefix("call/")?;
        super::names::name_problem(caller)
            .is_none()
            .then_some((tool, Some(caller)))
    }

    /// The client a response topic belongs to, if `topic` is exactly
    /// `{ns}/mcp/clients/{client}/responses`. Servers publish replies only to
    /// topics this accepts, so a caller cannot aim them elsewhere.
    pub fn client_of_responses<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = self.strip(topic, "/mcp/clients/")?;
        let client = rest.strip_suffix("/responses")?;
        (super::names::name_problem(client).is_none()).then_some(client)
    }

    /// The call id of a stream topic `{ns}/mcp/tools/{tool}/stream/{call_id}`.
    pub fn call_of_stream<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let rest = self.strip(topic, "/mcp/tools/")?;
        let (_, call_id) = rest.split_once("/stream/")?;
        (!call_id.is_empty() && !call_id.contains('/')).then_some(call_id)
    }

    fn strip<'t>(&self, topic: &'t str, middle: &str) -> Option<&'t str> {
        topic.strip_prefix(self.ns.as_str())?.strip_prefix(middle)
    }
}

/// The parts one after another, in one allocation: the topics built for
/// every call skip the formatting machinery.
fn concat(parts: &[&str]) -> String {
    let mut topic = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        topic.push_str(part);
    }
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Topics {
        Topics::new("gtm".into())
    }

    #[test]
    fn builds_the_v01_topics() {
        let t = t();
        assert_eq!(t.server_card("s"), "gtm/mcp/servers/s/card");
        assert_eq!(t.tool_card("x"), "gtm/mcp/tools/x/card");
        assert_eq!(t.call("x"), "gtm/mcp/tools/x/call");
        assert_eq!(t.call_as("x", "scout"), "gtm/mcp/tools/x/call/scout");
        assert_eq!(t.shared_calls("x"), "$share/mcp-tool-x/gtm/mcp/tools/x/call/#");
        assert_eq!(t.private_stream("scout", "1"), "gtm/mcp/clients/scout/streams/1");
        assert_eq!(t.responses("c"), "gtm/mcp/clients/c/responses");
        assert_eq!(t.stream("x", "1"), "gtm/mcp/tools/x/stream/1");
    }

    #[test]
    fn recognises_topics() {
        let t = t();
        assert_eq!(t.parse_call("gtm/mcp/tools/x/call"), Some(("x", None)));
        assert_eq!(t.parse_call("gtm/mcp/tools/x/call/scout"), Some(("x", Some("scout"))));
        assert_eq!(t.parse_call("gtm/mcp/tools/x/call/a/b"), None);
        assert_eq!(t.parse_call("gtm/mcp/tools/x/caller"), None);
        assert_eq!(t.parse_call("other/mcp/tools/x/call"), None);
        for bad in [
            "gtm/mcp/tools//call",
            "gtm/mcp/tools/x/callx",
            "gtm/mcp/tools/x/call/",
            "gtm/mcp/tools/x/y/call",
            "gtm/mcp/tools/x/call/a+",
            "gtm/mcp/tools/x",
        ] {
            assert_eq!(t.parse_call(bad), None, "{bad}");
        }
        assert_eq!(t.parse_cancel("gtm/mcp/tools/x/cancel/scout"), Some(("x", "scout")));
        for bad in [
            "gtm/mcp/tools/x/cancel/",
            "gtm/mcp/tools/x/cancel/a/b",
            "gtm/mcp/tools/x/y/cancel/scout",
            "gtm/mcp/tools//cancel/scout",
            "gtm/mcp/tools/x/call/scout",
        ] {
            assert_eq!(t.parse_cancel(bad), None, "{bad}");
        }
        assert_eq!(t.client_of_responses("gtm/mcp/clients/c/responses"), Some("c"));
        for bad in [
            "gtm/mcp/clients/a/b/responses",
            "gtm/mcp/clients//responses",
            "gtm/mcp/clients/c/responses/x",
            "gtm/mcp/tools/x/card",
            "elsewhere/mcp/clients/c/responses",
            "gtm/mcp/clients/+/responses",
        ] {
            assert_eq!(t.client_of_responses(bad), None, "{bad}");
        }
        assert_eq!(t.call_of_stream("gtm/mcp/tools/x/stream/abc"), Some("abc"));
    }
}
