//! The v0.1 package's JSON ACL policy. Topics are explicit per identity: no
//! rule uses `{$self}` (see below why).
//!
//! `{"version": "2", "default": "deny", "rules": [{"topic", "action": "pub" | "sub",
//! "binding": "agent_id", "agents": [...]}]}`.
//!
//! Identities with the same right (same topic, same action) share one rule.
//! The v0.1 examples write
//! `{ns}/mcp/clients/{$self}/responses` in a rule without `agents`, which
//! grants it to every identity that has an `agent_id`, not only to the
//! manifest's; and what `{$self}` means in a rule that also lists `agents`
//! is not specified. Explicit topics are equivalent to the manifest whatever
//! the answer.
//!
//! How that broker treats shared subscriptions is not documented; the v0.1
//! specification lists a server's right as the `$share/mcp-tool-{tool}/...`
//! filter, so both the plain and the shared form are granted (the same
//! messages either way).

use serde::Serialize;

use super::{json, subscribe_with_shared_forms, AclManifest};

#[derive(Serialize)]
struct Policy<'m> {
    version: &'static str,
    default: &'static str,
    rules: Vec<Rule<'m>>,
}

#[derive(Serialize)]
struct Rule<'m> {
    topic: &'m str,
    action: &'static str,
    binding: &'static str,
    agents: Vec<&'m str>,
}

pub(super) fn policy(manifest: &AclManifest) -> String {
    let mut rules: Vec<Rule> = Vec::new();
    for identity in &manifest.identities {
        let publish = identity.publish.iter().map(|t| (t.as_str(), "pub"));
        let subscribe = subscribe_with_shared_forms(manifest, identity)
            .into_iter()
            .map(|t| (t, "sub"));
        for (topic, action) in publish.chain(subscribe) {
            match rules.iter_mut().find(|r| r.topic == topic && r.action == action) {
                Some(rule) => rule.agents.push(&identity.identity),
                None => rules.push(Rule {
                    topic,
                    action,
                    binding: "agent_id",
                    agents: vec![&identity.identity],
                }),
            }
        }
    }
    for rule in &mut rules {
        rule.agents.sort_unstable();
        rule.agents.dedup();
    }
    json(&Policy {
        version: "2",
        default: "deny",
        rules,
    })
}
