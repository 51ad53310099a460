//! The ACL manifest: who may publish and subscribe to what, derived from the
//! tools' annotations alone (no broker, no handler run), and rendered in the
//! formats real brokers load.
//!
//! The manifest is least-privilege: the rights of the v0.1 protocol and of
//! this project's extensions, nothing more. No client gets `#`, no client
//! publishes through a wildcard, each client reads only its own responses and
//! private streams.

mod files;
mod formats;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use files::{check_acl_files, emit_acl_request, write_acl_files, StaleAclFiles, OVERWRITE_ENV};
pub use formats::{
    dynsec_with_passwords, mosquitto_conf, mosquitto_conf_certificates, rmqtt_with_passwords, AclFormat,
    ParseAclFormatError,
};

use crate::protocol::topics::Topics;
use crate::tool::ToolDef;

/// The version of the manifest's JSON layout.
pub const MANIFEST_VERSION: u32 = 1;

/// Whether an identity is a server or a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Hosts tools.
    Server,
    /// Calls tools.
    Client,
}

/// The rights of one identity (MQTT username = client id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRights {
    /// The identity.
    pub identity: String,
    /// Server or client.
    pub role: Role,
    /// Topic filters it may publish to.
    pub publish: Vec<String>,
    /// Topic filters it may subscribe to (without any `$share/{group}/`
    /// prefix; see [`AclManifest::shared_subscription_groups`]).
    pub subscribe: Vec<String>,
}

/// The neutral ACL manifest of one namespace: the rights of each identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AclManifest {
    /// Layout version, [`MANIFEST_VERSION`].
    pub version: u32,
    /// The topic namespace.
    pub namespace: String,
    /// Whether the servers refuse plain v0.1 calls (whose caller the broker
    /// does not attest); if so, no identity gets the v0.1 call or stream topics.
    pub require_verified_caller: bool,
    /// Shared-subscription filters the servers use, by the plain filter they
    /// share: `{ns}/mcp/tools/{tool}/call/#` → `$share/mcp-tool-{tool}/...`.
    /// Brokers that check the full `$share/...` filter need these.
    pub shared_subscription_groups: BTreeMap<String, String>,
    /// Every identity with any right, sorted by role, then name.
    pub identities: Vec<IdentityRights>,
}

impl AclManifest {
    /// The manifest of one server and the callers its tools allow.
    pub fn for_server(
        server: &str,
        topics: &Topics,
        tools: &[ToolDef],
        shared_subscription: bool,
        require_verified_caller: bool,
    ) -> AclManifest {
        let v01 = !require_verified_caller;
        let mut server_rights = Rights::default();
        let mut clients: BTreeMap<&str, Rights> = BTreeMap::new();
        let mut groups = BTreeMap::new();

        server_rights.publish(topics.server_card(server));
        server_rights.publish(topics.all_responses());
        // Its own card, where a sibling instance's Last Will lands.
        server_rights.subscribe(topics.server_card(server));
        for tool in tools {
            server_rights.publish(topics.tool_card(&tool.name));
            server_rights.subscribe(topics.calls(&tool.name));
            server_rights.subscribe(topics.cancels(&tool.name));
            if shared_subscription {
                groups.insert(topics.calls(&tool.name), topics.shared_calls(&tool.name));
            }
            if tool.streaming {
                server_rights.publish(topics.all_private_streams());
                if v01 {
                    server_rights.publish(topics.streams(&tool.name));
                }
            }
            for caller in &tool.allowed_callers {
                let c = clients.entry(caller).or_default();
                c.publish(topics.call_as(&tool.name, caller));
                c.publish(topics.cancel_as(&tool.name, caller));
                if v01 {
                    c.publish(topics.call(&tool.name));
                }
                c.subscribe(topics.responses(caller));
                c.subscribe(topics.tool_cards());
                c.subscribe(topics.server_cards());
                if tool.streaming {
                    c.subscribe(topics.private_streams(caller));
                    if v01 {
                        c.subscribe(topics.streams(&tool.name));
                    }
                }
            }
        }

        let mut identities = vec![server_rights.into_identity(server, Role::Server)];
        identities.extend(clients.into_iter().map(|(name, r)| r.into_identity(name, Role::Client)));
        AclManifest {
            version: MANIFEST_VERSION,
            namespace: topics.namespace().to_owned(),
            require_verified_caller,
            shared_subscription_groups: groups,
            identities,
        }
    }

    /// The manifest of several servers of one namespace together: rights of
    /// the same identity are joined.
    pub fn merge(mut self, other: AclManifest) -> AclManifest {
        self.require_verified_caller &= other.require_verified_caller;
        self.shared_subscription_groups.extend(other.shared_subscription_groups);
        for theirs in other.identities {
            match self.identities.iter_mut().find(|i| i.identity == theirs.identity) {
                Some(ours) => {
                    let mut r = Rights {
                        publish: std::mem::take(&mut ours.publish),
                        subscribe: std::mem::take(&mut ours.subscribe),
                    };
                    theirs.publish.into_iter().for_each(|t| r.publish(t));
                    theirs.subscribe.into_iter().for_each(|t| r.subscribe(t));
                    ours.publish = r.publish;
                    ours.subscribe = r.subscribe;
                }
                None => self.identities.push(theirs),
            }
        }
        self.identities
            .sort_by(|a, b| (a.role, &a.identity).cmp(&(b.role, &b.identity)));
        self
    }

    /// The rights of one identity, if it has any.
    pub fn identity(&self, name: &str) -> Option<&IdentityRights> {
        self.identities.iter().find(|i| i.identity == name)
    }

    /// Renders the manifest in a broker's format.
    pub fn render(&self, format: AclFormat) -> String {
        formats::render(self, format)
    }

    /// Reads a manifest written as JSON ([`AclFormat::Manifest`]).
    pub fn from_json(json: &str) -> Result<AclManifest, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// Publish and subscribe filters in first-seen order, without repeats.
#[derive(Default)]
struct Rights {
    publish: Vec<String>,
    subscribe: Vec<String>,
}

impl Rights {
    fn publish(&mut self, topic: String) {
        if !self.publish.contains(&topic) {
            self.publish.push(topic);
        }
    }

    fn subscribe(&mut self, topic: String) {
        if !self.subscribe.contains(&topic) {
            self.subscribe.push(topic);
        }
    }

    fn into_identity(self, name: &str, role: Role) -> IdentityRights {
        IdentityRights {
            identity: name.to_owned(),
            role,
            publish: self.publish,
            subscribe: self.subscribe,
        }
    }
}
