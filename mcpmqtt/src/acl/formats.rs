//! Renderers of the manifest, one per broker format. Pure translation: a
//! renderer returns text, touches no file or broker, and grants no right the
//! manifest does not hold.
//!
//! Every renderer writes explicit rules per identity (no pattern or
//! placeholder that a broker expands), and everything not granted is denied.
//! Where a broker checks a shared subscription against its full
//! `$share/{group}/{filter}` form, the renderer adds that form from
//! [`AclManifest::shared_subscription_groups`]; where the broker checks the
//! plain filter, it does not:
//!
//! | format | what a shared SUBSCRIBE is checked against | source |
//! |---|---|---|
//! | `mosquitto` | nothing at SUBSCRIBE; `read` of each delivered message's topic | tested on Mosquitto 2.0.11 |
//! | `dynsec` | the full `$share/{group}/{filter}` | tested on Mosquitto 2.0.11 |
//! | `emqx`, `emqx-db` | the plain filter | EMQX 5 `emqx_channel` (`get_shared_real_topic`) |
//! | `hivemq` | the plain filter, plus the group in `<shared-group>` | HiveMQ `DefaultPermissionsEvaluator` |
//! | `rmqtt` | the plain filter | tested on RMQTT 0.24 (`rmqtt` `parse_topic_filter`) |
//! | `policy` | unknown: both forms, as the v0.1 specification lists them | v0.1 `SPEC.md` |
//!
//! The output is deterministic (the manifest's order), ends with a newline,
//! and starts with a generated-by comment where the format has comments.

mod certificates;
mod emqx;
mod hivemq;
mod mosquitto;
mod policy;
mod rmqtt;

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{AclManifest, IdentityRights, Role};

pub use certificates::mosquitto_conf_certificates;
pub use mosquitto::{dynsec_with_passwords, mosquitto_conf};

/// The [`AclFormat::Rmqtt`] file with a connect rule for each identity of
/// `passwords` (name to password), so that they can log in. RMQTT compares
/// passwords in clear: the file then holds them so, and must be readable by
/// the broker only. Names that are not identities of the manifest are left
/// out.
pub fn rmqtt_with_passwords(manifest: &AclManifest, passwords: &BTreeMap<String, String>) -> String {
    rmqtt::render(manifest, passwords)
}

/// The formats the manifest can be rendered in, by the name the `--emit-acl`
/// flag takes ([`AclFormat::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AclFormat {
    /// `mosquitto`: a Mosquitto 2.x `acl_file`, with `user` blocks of
    /// `topic read|write|readwrite FILTER` lines. Load it with the settings
    /// of [`mosquitto_conf`].
    Mosquitto,
    /// `dynsec`: the JSON file of Mosquitto's dynamic-security plugin
    /// (`plugin_opt_config_file`): one client and one role per identity. The
    /// clients carry no password: set them with `mosquitto_ctrl dynsec
    /// setClientPassword NAME PASSWORD` (which needs an admin client with
    /// rights on `$CONTROL/dynamic-security/#`, not part of this file), or
    /// render the file with hashes already in it with
    /// [`dynsec_with_passwords`]. A client without a
    /// password cannot log in. The clients name no client id; keep
    /// `use_username_as_clientid true` in `mosquitto.conf` so that no client
    /// can kick another off by connecting with its client id.
    Dynsec,
    /// `emqx`: an EMQX 5 file-authorization `acl.conf` (Erlang terms),
    /// ending with `{deny, all}.`.
    Emqx,
    /// `emqx-db`: EMQX 5 built-in-database authorization rules, as the body
    /// of `POST /api/v5/authorization/sources/built_in_database/rules/users`.
    /// Each user's rules end with a deny of everything else; still set
    /// `authorization.no_match = deny` (the default before EMQX 6.0 is
    /// `allow`) so that identities not listed get nothing.
    EmqxDb,
    /// `hivemq`: the `credentials.xml` of HiveMQ's File RBAC extension, one
    /// user and one role per identity. Its passwords are empty placeholders
    /// that must be filled in (the extension refuses a file with an empty
    /// password).
    Hivemq,
    /// `rmqtt`: the configuration of RMQTT's ACL plugin
    /// (`plugins/rmqtt-acl.toml`), the same file on every node of a
    /// cluster: per identity, `allow` rules for its publish and subscribe
    /// filters, then a rule denying everything else. It sets
    /// `disconnect_if_pub_rejected = false`, so that a refused publish is
    /// answered PUBACK 0x87. The plugin also authenticates, and this file
    /// lets no one connect until a connect rule with a password is added per
    /// identity: render it with [`rmqtt_with_passwords`] for that.
    Rmqtt,
    /// `policy`: the JSON policy of the v0.1 package (`"version": "2"`,
    /// default deny), with explicit topics per identity.
    Policy,
    /// `manifest`: the neutral manifest, as JSON ([`AclManifest::from_json`]
    /// reads it back).
    Manifest,
}

impl AclFormat {
    /// Every format, in a stable order.
    pub const ALL: &'static [AclFormat] = &[
        AclFormat::Mosquitto,
        AclFormat::Dynsec,
        AclFormat::Emqx,
        AclFormat::EmqxDb,
        AclFormat::Hivemq,
        AclFormat::Rmqtt,
        AclFormat::Policy,
        AclFormat::Manifest,
    ];

    /// The format's name on the command line: `mosquitto`, `dynsec`, `emqx`,
    /// `emqx-db`, `hivemq`, `rmqtt`, `policy` or `manifest`.
    pub fn name(&self) -> &'static str {
        match self {
            AclFormat::Mosquitto => "mosquitto",
            AclFormat::Dynsec => "dynsec",
            AclFormat::Emqx => "emqx",
            AclFormat::EmqxDb => "emqx-db",
            AclFormat::Hivemq => "hivemq",
            AclFormat::Rmqtt => "rmqtt",
            AclFormat::Policy => "policy",
            AclFormat::Manifest => "manifest",
        }
    }

    /// The usual name of a file in this format (distinct per format, so all
    /// of them fit in one directory).
    pub fn file_name(&self) -> &'static str {
        match self {
            AclFormat::Mosquitto => "mosquitto.acl",
            AclFormat::Dynsec => "dynsec.json",
            AclFormat::Emqx => "acl.conf",
            AclFormat::EmqxDb => "emqx-authz.json",
            AclFormat::Hivemq => "credentials.xml",
            AclFormat::Rmqtt => "rmqtt-acl.toml",
            AclFormat::Policy => "policy.json",
            AclFormat::Manifest => "manifest.json",
        }
    }

    /// What loads the format, in a few words.
    pub fn description(&self) -> &'static str {
        match self {
            AclFormat::Mosquitto => "Mosquitto 2.x acl_file",
            AclFormat::Dynsec => "Mosquitto dynamic-security plugin JSON",
            AclFormat::Emqx => "EMQX 5 file authorization (acl.conf)",
            AclFormat::EmqxDb => "EMQX 5 built-in database authorization rules (REST API body)",
            AclFormat::Hivemq => "HiveMQ File RBAC extension credentials.xml",
            AclFormat::Rmqtt => "RMQTT ACL plugin configuration (rmqtt-acl.toml)",
            AclFormat::Policy => "v0.1 JSON ACL policy",
            AclFormat::Manifest => "mcpmqtt ACL manifest (JSON)",
        }
    }
}

impl fmt::Display for AclFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A format name that is not one of [`AclFormat::ALL`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseAclFormatError {
    /// The name that was given.
    pub given: String,
}

impl fmt::Display for ParseAclFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown ACL format {:?}: expected one of ", self.given)?;
        for (i, format) in AclFormat::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(format.name())?;
        }
        Ok(())
    }
}

impl std::error::Error for ParseAclFormatError {}

impl FromStr for AclFormat {
    type Err = ParseAclFormatError;

    /// Reads a name of [`AclFormat::name`] (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AclFormat::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| ParseAclFormatError { given: s.to_owned() })
    }
}

pub(super) fn render(manifest: &AclManifest, format: AclFormat) -> String {
    match format {
        AclFormat::Mosquitto => mosquitto::acl_file(manifest),
        AclFormat::Dynsec => mosquitto::dynsec(manifest, &BTreeMap::new()),
        AclFormat::Emqx => emqx::acl_conf(manifest),
        AclFormat::EmqxDb => emqx::built_in_database(manifest),
        AclFormat::Hivemq => hivemq::credentials_xml(manifest),
        AclFormat::Rmqtt => rmqtt::rmqtt_acl(manifest),
        AclFormat::Policy => policy::policy(manifest),
        AclFormat::Manifest => json(manifest),
    }
}

/// The header lines that say how to take client certificates as the
/// identities instead of passwords, as comments starting with `prefix`.
fn certificate_comment(format: AclFormat, prefix: &str) -> String {
    let Some(settings) = format.certificate_settings() else {
        return String::new();
    };
    let intro = "With client certificates (mutual TLS) instead of passwords, the certificate's subject CN is\n\
                 the identity (the username below) and no password is needed. Set on the broker:\n\n";
    certificates::commented(&format!("{intro}{settings}"), prefix)
}

/// Pretty JSON with a trailing newline.
fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    let mut out = serde_json::to_string_pretty(value).expect("an ACL document serialises");
    out.push('\n');
    out
}

/// `server` or `client`, for comments.
fn role_name(role: Role) -> &'static str {
    match role {
        Role::Server => "server",
        Role::Client => "client",
    }
}

/// The group of a shared-subscription filter `$share/{group}/{filter}`, if
/// `shared` is exactly that for this `filter`.
fn share_group<'s>(shared: &'s str, filter: &str) -> Option<&'s str> {
    let (group, rest) = shared.strip_prefix("$share/")?.split_once('/')?;
    (!group.is_empty() && rest == filter).then_some(group)
}

/// The shared-subscription group the manifest's servers use for `filter`, if any.
fn shared_group_of<'m>(manifest: &'m AclManifest, filter: &str) -> Option<&'m str> {
    share_group(manifest.shared_subscription_groups.get(filter)?, filter)
}

/// The subscribe filters of `identity` followed, for brokers that check the
/// full `$share/{group}/{filter}`, by the shared form right after each plain
/// filter that has one.
fn subscribe_with_shared_forms<'m>(manifest: &'m AclManifest, identity: &'m IdentityRights) -> Vec<&'m str> {
    let mut out = Vec::new();
    for filter in &identity.subscribe {
        out.push(filter.as_str());
        if shared_group_of(manifest, filter).is_some() {
            out.push(manifest.shared_subscription_groups[filter].as_str());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for format in AclFormat::ALL {
            assert_eq!(format.name().parse::<AclFormat>(), Ok(*format));
            assert_eq!(format.to_string(), format.name());
        }
        assert_eq!("EMQX-DB".parse::<AclFormat>(), Ok(AclFormat::EmqxDb));
        let err = "nginx".parse::<AclFormat>().unwrap_err().to_string();
        assert!(err.contains("\"nginx\""), "{err}");
        assert!(
            err.contains("mosquitto, dynsec, emqx, emqx-db, hivemq, rmqtt, policy, manifest"),
            "{err}"
        );
        let files: std::collections::BTreeSet<_> = AclFormat::ALL.iter().map(|f| f.file_name()).collect();
        assert_eq!(files.len(), AclFormat::ALL.len(), "file names are distinct");
    }

    #[test]
    fn parses_share_groups() {
        assert_eq!(share_group("$share/g/a/b/#", "a/b/#"), Some("g"));
        assert_eq!(share_group("$share/g/a/b/#", "a/c/#"), None);
        assert_eq!(share_group("$share//a", "a"), None);
        assert_eq!(share_group("$queue/a", "a"), None);
    }
}
