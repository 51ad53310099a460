//! The ACL renderers: the manifest they start from, golden files of every
//! format, real parsers for every format, and the real Mosquitto 2.x loading
//! and enforcing the two Mosquitto formats.
//!
//! Golden files: `tests/golden/acl/{variant}/{file}`, compared byte for byte.
//! After an intended change, regenerate them and review the diff:
//!
//! ```text
//! MCPMQTT_BLESS=1 cargo test -p mcpmqtt --test acl_formats
//! ```
//!
//! Needs `mosquitto` and `mosquitto_passwd` (Debian package `mosquitto`) and
//! `erl` (Debian package `erlang-base`); the tests fail, not skip, without
//! them. `MOSQUITTO_BIN` overrides where `mosquitto` is looked for.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mcpmqtt::acl::{AclFormat, AclManifest, IdentityRights, Role};
use mcpmqtt::{Server, ToolDef};

const BLESS_ENV: &str = "MCPMQTT_BLESS";
const SERVER: &str = "gtm-mcp-server";
const CLIENTS: [&str; 3] = ["analyst", "operator", "scout"];

// ---------------------------------------------------------------------------
// The manifest

/// The GTM server of the examples: three tools, one streaming.
fn gtm_server(require_verified_caller: bool) -> Server {
    let tool = |name: &str, callers: &[&str], streaming: bool| {
        ToolDef::builder(name)
            .allowed_callers(callers.iter().copied())
            .streaming(streaming)
            .build()
            .expect("valid tool")
    };
    Server::builder(SERVER)
        .namespace("gtm")
        .tool_def(tool("query_watch_configs", &["scout", "analyst"], false))
        .tool_def(tool("create_social_post", &["operator"], false))
        .tool_def(tool("crawl_site", &["scout", "operator"], true))
        .require_verified_caller(require_verified_caller)
        .build()
        .expect("valid server")
}

fn manifest(require_verified_caller: bool) -> AclManifest {
    gtm_server(require_verified_caller).acl_manifest()
}

/// The two variants: v0.1 calls accepted, or only calls the broker attests.
const VARIANTS: [(&str, bool); 2] = [("v01", false), ("verified", true)];

fn rights<'m>(m: &'m AclManifest, name: &str) -> &'m IdentityRights {
    m.identity(name)
        .unwrap_or_else(|| panic!("{name} has no rights in {m:#?}"))
}

fn has(list: &[String], topic: &str) -> bool {
    list.iter().any(|t| t == topic)
}

#[test]
fn the_server_publishes_its_cards_responses_and_streams_and_subscribes_its_calls() {
    for (variant, verified) in VARIANTS {
        let m = manifest(verified);
        let s = rights(&m, SERVER);
        assert_eq!(s.role, Role::Server);
        assert_eq!(m.namespace, "gtm");
        assert_eq!(m.require_verified_caller, verified);
        for topic in [
            "gtm/mcp/servers/gtm-mcp-server/card",
            "gtm/mcp/tools/query_watch_configs/card",
            "gtm/mcp/tools/create_social_post/card",
            "gtm/mcp/tools/crawl_site/card",
            "gtm/mcp/clients/+/responses",
            "gtm/mcp/clients/+/streams/+",
        ] {
            assert!(has(&s.publish, topic), "{variant}: server publishes {topic}");
        }
        assert_eq!(
            has(&s.publish, "gtm/mcp/tools/crawl_site/stream/+"),
            !verified,
            "{variant}: v0.1 stream topic only while v0.1 calls are accepted"
        );
        assert!(
            !has(&s.publish, "gtm/mcp/tools/query_watch_configs/stream/+"),
            "not a streaming tool"
        );
        for tool in ["query_watch_configs", "create_social_post", "crawl_site"] {
            let calls = format!("gtm/mcp/tools/{tool}/call/#");
            assert!(has(&s.subscribe, &calls), "{variant}: server subscribes {calls}");
            let cancels = format!("gtm/mcp/tools/{tool}/cancel/+");
            assert!(has(&s.subscribe, &cancels), "{variant}: server subscribes {cancels}");
            assert_eq!(
                m.shared_subscription_groups.get(&calls).map(String::as_str),
                Some(format!("$share/mcp-tool-{tool}/{calls}").as_str())
            );
        }
        assert!(
            has(&s.subscribe, "gtm/mcp/servers/gtm-mcp-server/card"),
            "{variant}: the server reads its own card, where a sibling's Last Will lands"
        );
        assert_eq!(
            s.subscribe.len(),
            7,
            "{variant}: the server reads nothing but its calls, their cancels and its own card"
        );
    }
}

#[test]
fn scout_may_call_only_its_tools_under_its_own_name() {
    for (variant, verified) in VARIANTS {
        let m = manifest(verified);
        let scout = rights(&m, "scout");
        assert_eq!(scout.role, Role::Client);
        for tool in ["query_watch_configs", "crawl_site"] {
            let own = format!("gtm/mcp/tools/{tool}/call/scout");
            assert!(has(&scout.publish, &own), "{variant}: scout publishes {own}");
            let plain = format!("gtm/mcp/tools/{tool}/call");
            assert_eq!(has(&scout.publish, &plain), !verified, "{variant}: {plain}");
            let cancel = format!("gtm/mcp/tools/{tool}/cancel/scout");
            assert!(
                has(&scout.publish, &cancel),
                "{variant}: scout cancels its calls on {cancel}"
            );
        }
        assert!(
            scout.publish.iter().all(|t| !t.contains("create_social_post")),
            "{variant}: scout gets nothing of create_social_post: {:?}",
            scout.publish
        );
        assert!(scout.subscribe.iter().all(|t| !t.contains("create_social_post")));
        // Per tool: its own call topic and cancel topic (and on v0.1 the
        // plain call topic).
        let expected = if verified { 4 } else { 6 };
        assert_eq!(scout.publish.len(), expected, "{variant}: {:?}", scout.publish);
        assert!(has(&scout.subscribe, "gtm/mcp/clients/scout/responses"));
        assert!(has(&scout.subscribe, "gtm/mcp/clients/scout/streams/+"));
        assert!(has(&scout.subscribe, "gtm/mcp/tools/+/card"));
        assert!(has(&scout.subscribe, "gtm/mcp/servers/+/card"));
        assert_eq!(has(&scout.subscribe, "gtm/mcp/tools/crawl_site/stream/+"), !verified);

        let analyst = rights(&m, "analyst");
        assert!(analyst.publish.iter().all(|t| !t.contains("crawl_site")), "{variant}");
        assert!(
            !has(&analyst.subscribe, "gtm/mcp/clients/analyst/streams/+"),
            "no streaming tool"
        );
        let operator = rights(&m, "operator");
        assert!(has(&operator.publish, "gtm/mcp/tools/create_social_post/call/operator"));
        assert!(!has(
            &operator.publish,
            "gtm/mcp/tools/query_watch_configs/call/operator"
        ));
    }
}

#[test]
fn clients_get_no_hash_no_wildcard_publish_and_only_their_own_client_topics() {
    for (variant, verified) in VARIANTS {
        let m = manifest(verified);
        let names: Vec<_> = m.identities.iter().map(|i| i.identity.as_str()).collect();
        assert_eq!(
            names,
            [SERVER, "analyst", "operator", "scout"],
            "{variant}: sorted by role, then name"
        );
        for client in m.identities.iter().filter(|i| i.role == Role::Client) {
            let me = &client.identity;
            for filter in client.publish.iter().chain(&client.subscribe) {
                assert!(!filter.contains('#'), "{variant}: {me} has {filter}");
            }
            for topic in &client.publish {
                assert!(
                    !topic.contains('+'),
                    "{variant}: {me} publishes through a wildcard: {topic}"
                );
                let (tool_part, caller) = topic
                    .strip_prefix("gtm/mcp/tools/")
                    .and_then(|rest| rest.split_once("/call").or_else(|| rest.split_once("/cancel")))
                    .unwrap_or_else(|| panic!("{variant}: {me} publishes {topic}, not a call or a cancel"));
                assert!(!tool_part.contains('/'), "{topic}");
                assert!(
                    caller.is_empty() || caller == format!("/{me}"),
                    "{variant}: {me} calls as {caller}"
                );
            }
            for filter in &client.subscribe {
                if let Some(rest) = filter.strip_prefix("gtm/mcp/clients/") {
                    let owner = rest.split('/').next().unwrap();
                    assert_eq!(owner, me, "{variant}: {me} reads {filter}");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Golden files

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/acl")
}

/// Compares `actual` with the golden file, or rewrites it when blessing.
fn check_golden(path: &Path, actual: &str, stale: &mut Vec<String>) {
    if std::env::var_os(BLESS_ENV).is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, actual).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_default();
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        stale.push(format!(
            "{} differs from line {}:\n  golden: {:?}\n  now:    {:?}",
            path.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            actual.lines().nth(line).unwrap_or("<end>")
        ));
    }
}

#[test]
fn every_format_matches_its_golden_file() {
    let mut stale = Vec::new();
    for (variant, verified) in VARIANTS {
        let m = manifest(verified);
        for format in AclFormat::ALL {
            let out = m.render(*format);
            assert!(
                out.ends_with('\n') && !out.ends_with("\n\n"),
                "{format}: one trailing newline"
            );
            assert_eq!(out, m.render(*format), "{format}: deterministic");
            check_golden(&golden_dir().join(variant).join(format.file_name()), &out, &mut stale);
        }
    }
    let conf = mcpmqtt::acl::mosquitto_conf("/etc/mosquitto/mcpmqtt.acl", "/etc/mosquitto/passwd");
    check_golden(&golden_dir().join("mosquitto.conf"), &conf, &mut stale);
    assert!(
        stale.is_empty(),
        "{}\nIf the change is intended, regenerate with `{BLESS_ENV}=1 cargo test -p mcpmqtt --test acl_formats` \
         and review the diff.",
        stale.join("\n")
    );
}

#[test]
fn format_names_parse_and_display() {
    let names: Vec<_> = AclFormat::ALL.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        [
            "mosquitto",
            "dynsec",
            "emqx",
            "emqx-db",
            "hivemq",
            "rmqtt",
            "policy",
            "manifest"
        ]
    );
    for format in AclFormat::ALL {
        assert_eq!(format.to_string().parse::<AclFormat>().unwrap(), *format);
    }
    let err = "mosquito".parse::<AclFormat>().unwrap_err().to_string();
    assert!(
        err.contains("mosquitto, dynsec, emqx, emqx-db, hivemq, rmqtt, policy, manifest"),
        "{err}"
    );
    let files: Vec<_> = AclFormat::ALL.iter().map(|f| f.file_name()).collect();
    assert_eq!(
        files,
        [
            "mosquitto.acl",
            "dynsec.json",
            "acl.conf",
            "emqx-authz.json",
            "credentials.xml",
            "rmqtt-acl.toml",
            "policy.json",
            "manifest.json"
        ]
    );
}

#[test]
fn the_broker_formats_say_how_a_client_certificate_becomes_the_identity() {
    let m = manifest(false);
    let carried = [
        (AclFormat::Mosquitto, "# use_identity_as_username true"),
        (AclFormat::Emqx, "%% mqtt.peer_cert_as_username = cn"),
        (
            AclFormat::Hivemq,
            "<client-authentication-mode>REQUIRED</client-authentication-mode>",
        ),
    ];
    for (format, line) in carried {
        assert!(format.carries_certificate_settings(), "{format}");
        let text = m.render(format);
        assert!(text.contains(line), "{format} carries `{line}`:\n{text}");
        assert!(format.certificate_settings_aside().is_none(), "{format}");
    }
    assert!(m.render(AclFormat::Mosquitto).contains("# require_certificate true"));
    assert!(m.render(AclFormat::Emqx).contains("%%     verify = verify_peer"));
    // The JSON formats cannot carry comments: `--emit-acl` prints the
    // settings beside them, on stderr.
    let dynsec = AclFormat::Dynsec.certificate_settings_aside().unwrap();
    assert!(dynsec.contains("use_identity_as_username true"), "{dynsec}");
    let emqx_db = AclFormat::EmqxDb.certificate_settings_aside().unwrap();
    assert!(emqx_db.contains("peer_cert_as_username = cn"), "{emqx_db}");
    for format in [AclFormat::Policy, AclFormat::Manifest] {
        assert!(format.certificate_settings().is_none(), "{format} is for no one broker");
    }
}

// ---------------------------------------------------------------------------
// Every format says exactly what the manifest says

/// (identity, "pub" | "sub", filter)
type Grant = (String, &'static str, String);

/// The manifest's rights; with `shared`, each shared-subscription filter's
/// `$share/...` form too, for the identities that subscribe to the filter.
fn grants(m: &AclManifest, shared: bool) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for i in &m.identities {
        for t in &i.publish {
            out.insert((i.identity.clone(), "pub", t.clone()));
        }
        for t in &i.subscribe {
            out.insert((i.identity.clone(), "sub", t.clone()));
            if let (true, Some(s)) = (shared, m.shared_subscription_groups.get(t)) {
                out.insert((i.identity.clone(), "sub", s.clone()));
            }
        }
    }
    out
}

/// A manifest with names every format must escape: quotes, backslashes,
/// markup, placeholder markers of EMQX and HiveMQ, non-ASCII, a control
/// character.
fn awkward_manifest() -> AclManifest {
    let weird = "q\"u'o<t>e&s\\${username}${{clientid}}é\u{1}";
    AclManifest {
        version: mcpmqtt::acl::MANIFEST_VERSION,
        namespace: "n$s--x".into(),
        require_verified_caller: false,
        shared_subscription_groups: BTreeMap::from([(
            format!("n$s--x/mcp/tools/{weird}/call/#"),
            format!("$share/mcp-tool-{weird}/n$s--x/mcp/tools/{weird}/call/#"),
        )]),
        identities: vec![
            IdentityRights {
                identity: format!("srv-{weird}"),
                role: Role::Server,
                publish: vec![
                    format!("n$s--x/mcp/tools/{weird}/card"),
                    "n$s--x/mcp/clients/+/responses".into(),
                ],
                subscribe: vec![format!("n$s--x/mcp/tools/{weird}/call/#")],
            },
            IdentityRights {
                identity: weird.into(),
                role: Role::Client,
                publish: vec![format!("n$s--x/mcp/tools/{weird}/call/{weird}")],
                subscribe: vec![
                    format!("n$s--x/mcp/clients/{weird}/responses"),
                    "n$s--x/mcp/tools/+/card".into(),
                ],
            },
        ],
    }
}

fn all_manifests() -> Vec<(&'static str, AclManifest)> {
    vec![
        ("v01", manifest(false)),
        ("verified", manifest(true)),
        ("awkward", awkward_manifest()),
    ]
}

#[test]
fn mosquitto_acl_file_grants_exactly_the_manifest() {
    for (variant, m) in all_manifests() {
        let acl = m.render(AclFormat::Mosquitto);
        let mut user: Option<String> = None;
        let mut got = BTreeSet::new();
        for line in acl.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(name) = line.strip_prefix("user ") {
                user = Some(name.to_owned());
                continue;
            }
            let mut words = line.splitn(3, ' ');
            assert_eq!(words.next(), Some("topic"), "{variant}: {line}");
            let access = words.next().unwrap();
            let topic = words.next().unwrap().to_owned();
            let who = user
                .clone()
                .unwrap_or_else(|| panic!("{variant}: a rule for anonymous: {line}"));
            match access {
                "read" => assert!(got.insert((who, "sub", topic))),
                "write" => assert!(got.insert((who, "pub", topic))),
                "readwrite" => {
                    got.insert((who.clone(), "pub", topic.clone()));
                    got.insert((who, "sub", topic));
                }
                other => panic!("{variant}: access {other}"),
            }
        }
        assert_eq!(got, grants(&m, false), "{variant}");
        assert!(!acl.contains("pattern "), "{variant}: no patterns");
    }
}

#[test]
fn dynsec_json_parses_and_grants_exactly_the_manifest() {
    for (variant, m) in all_manifests() {
        let v: serde_json::Value = serde_json::from_str(&m.render(AclFormat::Dynsec)).expect("dynsec is JSON");
        assert_eq!(
            v["defaultACLAccess"],
            serde_json::json!({"publishClientSend": false, "publishClientReceive": true, "subscribe": false, "unsubscribe": true})
        );
        assert_eq!(v["groups"], serde_json::json!([]));
        let mut role_of = BTreeMap::new();
        for c in v["clients"].as_array().unwrap() {
            assert!(
                c.get("password").is_none() && c.get("salt").is_none(),
                "{variant}: no password: {c}"
            );
            assert!(c.get("clientid").is_none(), "{variant}: any client id");
            let roles = c["roles"].as_array().unwrap();
            assert_eq!(roles.len(), 1);
            role_of.insert(roles[0]["rolename"].as_str().unwrap(), c["username"].as_str().unwrap());
        }
        assert_eq!(role_of.len(), m.identities.len());
        let mut got = BTreeSet::new();
        for r in v["roles"].as_array().unwrap() {
            let who = role_of[r["rolename"].as_str().unwrap()].to_owned();
            for acl in r["acls"].as_array().unwrap() {
                assert_eq!(acl["allow"], true, "{variant}: only allows");
                let action = match acl["acltype"].as_str().unwrap() {
                    "publishClientSend" => "pub",
                    "subscribePattern" => "sub",
                    other => panic!("{variant}: acltype {other}"),
                };
                assert!(got.insert((who.clone(), action, acl["topic"].as_str().unwrap().to_owned())));
            }
        }
        assert_eq!(got, grants(&m, true), "{variant}");
    }
}

#[test]
fn emqx_db_json_parses_and_grants_exactly_the_manifest() {
    for (variant, m) in all_manifests() {
        let v: serde_json::Value = serde_json::from_str(&m.render(AclFormat::EmqxDb)).expect("emqx-db is JSON");
        let mut got = BTreeSet::new();
        for user in v.as_array().unwrap() {
            let who = user["username"].as_str().unwrap().to_owned();
            let rules = user["rules"].as_array().unwrap();
            let (last, allows) = rules.split_last().unwrap();
            assert_eq!(
                *last,
                serde_json::json!({"action": "all", "permission": "deny", "topic": "#"})
            );
            for rule in allows {
                assert_eq!(rule["permission"], "allow");
                let action = match rule["action"].as_str().unwrap() {
                    "publish" => "pub",
                    "subscribe" => "sub",
                    other => panic!("{variant}: action {other}"),
                };
                let topic = rule["topic"].as_str().unwrap();
                let topic = match topic.strip_prefix("eq ") {
                    Some(exact) => {
                        assert!(
                            exact.contains("${"),
                            "{variant}: eq only to avoid placeholders: {topic}"
                        );
                        exact
                    }
                    None => {
                        assert!(!topic.contains("${"), "{variant}: {topic} would be interpolated");
                        topic
                    }
                };
                assert!(got.insert((who.clone(), action, topic.to_owned())));
            }
        }
        assert_eq!(got, grants(&m, false), "{variant}");
    }
}

#[test]
fn policy_json_parses_and_grants_exactly_the_manifest() {
    for (variant, m) in all_manifests() {
        let v: serde_json::Value = serde_json::from_str(&m.render(AclFormat::Policy)).expect("policy is JSON");
        assert_eq!(v["version"], "2");
        assert_eq!(v["default"], "deny");
        let mut got = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for rule in v["rules"].as_array().unwrap() {
            assert_eq!(rule["binding"], "agent_id");
            let topic = rule["topic"].as_str().unwrap().to_owned();
            assert!(!topic.contains("{$self}"), "{variant}: explicit topics");
            let action = match rule["action"].as_str().unwrap() {
                "pub" => "pub",
                "sub" => "sub",
                other => panic!("{variant}: action {other}"),
            };
            assert!(
                keys.insert((topic.clone(), action)),
                "{variant}: one rule per (topic, action)"
            );
            let agents = rule["agents"].as_array().unwrap();
            assert!(!agents.is_empty());
            for agent in agents {
                assert!(got.insert((agent.as_str().unwrap().to_owned(), action, topic.clone())));
            }
        }
        assert_eq!(got, grants(&m, true), "{variant}");
    }
    // Rights several identities share are one rule.
    let v: serde_json::Value = serde_json::from_str(&manifest(false).render(AclFormat::Policy)).unwrap();
    let rules = v["rules"].as_array().unwrap();
    let cards = rules.iter().find(|r| r["topic"] == "gtm/mcp/tools/+/card").unwrap();
    assert_eq!(cards["agents"], serde_json::json!(CLIENTS));
    let call = rules
        .iter()
        .find(|r| r["topic"] == "gtm/mcp/tools/query_watch_configs/call")
        .unwrap();
    assert_eq!(call["agents"], serde_json::json!(["analyst", "scout"]));
}

/// The rules of an RMQTT ACL plugin file: `(access, who, action, topics)`,
/// `who` being the user name (`None` for "all") and the password if any.
type RmqttRule = (String, Option<(String, Option<String>)>, Option<String>, Vec<String>);

fn rmqtt_rules(file: &str) -> Vec<RmqttRule> {
    let v: toml::Table = file.parse().expect("rmqtt-acl.toml is TOML");
    assert_eq!(v["disconnect_if_pub_rejected"].as_bool(), Some(false));
    let rules = v["rules"].as_array().expect("a list of rules");
    rules
        .iter()
        .map(|rule| {
            let rule = rule.as_array().expect("a rule is a list");
            let access = rule[0].as_str().unwrap().to_owned();
            let who = match &rule[1] {
                toml::Value::String(all) => {
                    assert_eq!(all, "all");
                    None
                }
                toml::Value::Table(t) => {
                    assert!(t.keys().all(|k| k == "user" || k == "password"), "{t:?}");
                    Some((
                        t["user"].as_str().unwrap().to_owned(),
                        t.get("password").map(|p| p.as_str().unwrap().to_owned()),
                    ))
                }
                other => panic!("who: {other:?}"),
            };
            let action = rule.get(2).map(|a| a.as_str().unwrap().to_owned());
            let topics = rule
                .get(3)
                .map(|t| {
                    t.as_array()
                        .unwrap()
                        .iter()
                        .map(|t| t.as_str().expect("filters, not eq tables").to_owned())
                        .collect()
                })
                .unwrap_or_default();
            (access, who, action, topics)
        })
        .collect()
}

#[test]
fn rmqtt_toml_parses_and_grants_exactly_the_manifest() {
    for (variant, m) in all_manifests() {
        let rules = rmqtt_rules(&m.render(AclFormat::Rmqtt));
        let (last, allows) = rules.split_last().unwrap();
        assert_eq!(
            *last,
            ("deny".to_owned(), None, None, vec![]),
            "{variant}: deny the rest"
        );
        let mut got = BTreeSet::new();
        for (access, who, action, topics) in allows {
            assert_eq!(access, "allow", "{variant}");
            let (user, password) = who.clone().expect("a rule per user");
            assert_eq!(password, None, "{variant}: no password, no connect rule");
            let action = match action.as_deref() {
                Some("publish") => "pub",
                Some("subscribe") => "sub",
                other => panic!("{variant}: action {other:?}"),
            };
            for topic in topics {
                assert!(got.insert((user.clone(), action, topic.clone())), "{variant}: {topic}");
            }
        }
        assert_eq!(got, grants(&m, false), "{variant}");

        // With passwords, a connect rule per identity comes first.
        let passwords: BTreeMap<String, String> = m
            .identities
            .iter()
            .map(|i| (i.identity.clone(), format!("pw \"of\" {}", i.identity)))
            .chain([("stranger".to_owned(), "x".to_owned())])
            .collect();
        let with = rmqtt_rules(&mcpmqtt::acl::rmqtt_with_passwords(&m, &passwords));
        let (connects, rest) = with.split_at(m.identities.len());
        assert_eq!(rest, rules, "{variant}: the same rights after the connect rules");
        let mut named = BTreeSet::new();
        for (access, who, action, topics) in connects {
            let (user, password) = who.clone().unwrap();
            assert_eq!((access.as_str(), action.as_deref()), ("allow", Some("connect")));
            assert!(topics.is_empty());
            assert_eq!(password.as_ref(), Some(&passwords[&user]), "{variant}");
            named.insert(user);
        }
        let identities: BTreeSet<_> = m.identities.iter().map(|i| i.identity.clone()).collect();
        assert_eq!(named, identities, "{variant}: strangers get no connect rule");
    }
}

#[test]
fn rmqtt_leaves_out_a_topic_it_would_read_as_a_placeholder() {
    let m = AclManifest {
        version: mcpmqtt::acl::MANIFEST_VERSION,
        namespace: "ns".into(),
        require_verified_caller: false,
        shared_subscription_groups: BTreeMap::new(),
        identities: vec![IdentityRights {
            identity: "a%u".into(),
            role: Role::Client,
            publish: vec!["ns/mcp/tools/t/call/a%u".into()],
            subscribe: vec!["ns/mcp/clients/a%u/responses".into(), "ns/mcp/tools/+/card".into()],
        }],
    };
    let out = m.render(AclFormat::Rmqtt);
    let rules = rmqtt_rules(&out);
    let topics: Vec<_> = rules.iter().flat_map(|r| r.3.clone()).collect();
    assert_eq!(topics, ["ns/mcp/tools/+/card"], "{out}");
    assert!(out.contains("# left out (publish): ns/mcp/tools/t/call/a%u"), "{out}");
}

#[test]
fn manifest_json_reads_back() {
    for (variant, m) in all_manifests() {
        let back = AclManifest::from_json(&m.render(AclFormat::Manifest)).expect("manifest is JSON");
        assert_eq!(back, m, "{variant}");
    }
}

fn child<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
    node.children()
        .find(|c| c.has_tag_name(name))
        .unwrap_or_else(|| panic!("no <{name}> in <{}>", node.tag_name().name()))
}

fn children<'a, 'i>(node: roxmltree::Node<'a, 'i>, name: &str) -> Vec<roxmltree::Node<'a, 'i>> {
    node.children().filter(|c| c.has_tag_name(name)).collect()
}

fn text(node: roxmltree::Node<'_, '_>) -> String {
    node.text().unwrap_or("").to_owned()
}

#[test]
fn hivemq_xml_parses_and_grants_exactly_the_manifest() {
    for (variant, m) in all_manifests() {
        let xml = m.render(AclFormat::Hivemq);
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{variant}: not XML: {e}\n{xml}"));
        let root = doc.root_element();
        assert_eq!(root.tag_name().name(), "file-rbac");
        let mut role_of = BTreeMap::new();
        for user in children(child(root, "users"), "user") {
            assert_eq!(
                text(child(user, "password")),
                "",
                "{variant}: the password is a placeholder"
            );
            let ids = children(child(user, "roles"), "id");
            assert_eq!(ids.len(), 1);
            role_of.insert(text(ids[0]), text(child(user, "name")));
        }
        // XML cannot carry U+0001: the awkward name loses it (and so fails closed).
        let expected_name = |s: &str| s.replace('\u{1}', "\u{FFFD}");
        let names: BTreeSet<_> = role_of.values().cloned().collect();
        let want: BTreeSet<_> = m.identities.iter().map(|i| expected_name(&i.identity)).collect();
        assert_eq!(names, want, "{variant}");
        let mut got = BTreeSet::new();
        for role in children(child(root, "roles"), "role") {
            let who = role_of[&text(child(role, "id"))].clone();
            for p in children(child(role, "permissions"), "permission") {
                let topic = text(child(p, "topic")).replace("§${{", "${{");
                let shared = p.children().find(|c| c.has_tag_name("shared-subscription")).map(text);
                let group = p.children().find(|c| c.has_tag_name("shared-group")).map(text);
                match text(child(p, "activity")).as_str() {
                    "PUBLISH" => {
                        assert_eq!((shared, group), (None, None));
                        assert!(got.insert((who.clone(), "pub", topic)));
                    }
                    "SUBSCRIBE" => match (shared.as_deref(), group) {
                        (Some("NOT_SHARED"), None) => assert!(got.insert((who.clone(), "sub", topic))),
                        (Some("SHARED"), Some(group)) => {
                            assert!(got.insert((who.clone(), "sub", format!("$share/{group}/{topic}"))))
                        }
                        other => panic!("{variant}: shared settings {other:?}"),
                    },
                    other => panic!("{variant}: activity {other}"),
                }
            }
        }
        let want: BTreeSet<Grant> = grants(&m, true)
            .into_iter()
            .map(|(who, action, topic)| (expected_name(&who), action, expected_name(&topic)))
            .collect();
        assert_eq!(got, want, "{variant}");
    }
}

// ---------------------------------------------------------------------------
// EMQX acl.conf, read by Erlang itself

fn erl() -> PathBuf {
    find_program("erl", &[]).unwrap_or_else(|| {
        panic!(
            "`erl` not found: the EMQX acl.conf is checked with Erlang's file:consult/1. \
             Install it with `apt-get install -y erlang-base`."
        )
    })
}

/// Decodes Erlang's `~w` of a string: `[104,105]`.
fn erlang_codes(s: &str) -> String {
    let inner = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')).expect("a list");
    inner
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| char::from_u32(n.parse().expect("a code point")).expect("a char"))
        .collect()
}

#[test]
fn emqx_acl_conf_is_read_by_erlang_and_grants_exactly_the_manifest() {
    let erl = erl();
    let dir = TempDir::new("emqx");
    // One line per granted topic, strings as code points so nothing is lost.
    let program = r#"
        Show = fun(S) -> io_lib:format("~w", [S]) end,
        case file:consult(os:getenv("ACL")) of
            {ok, Terms} ->
                io:format("terms ~w~n", [length(Terms)]),
                lists:foreach(fun
                    ({allow, {username, U}, A, Ts}) ->
                        lists:foreach(fun
                            ({eq, T}) -> io:format("allow ~s ~w eq ~s~n", [Show(U), A, Show(T)]);
                            (T) -> io:format("allow ~s ~w ~s~n", [Show(U), A, Show(T)])
                        end, Ts);
                    ({deny, all}) -> io:format("deny all~n");
                    (Other) -> io:format("unexpected ~p~n", [Other]), halt(1)
                end, Terms),
                halt(0);
            Error ->
                io:format("~p~n", [Error]),
                halt(1)
        end.
    "#;
    for (variant, m) in all_manifests() {
        let conf = m.render(AclFormat::Emqx);
        let path = dir.path().join(format!("{variant}.conf"));
        std::fs::write(&path, &conf).unwrap();
        let out = Command::new(&erl)
            .args(["-noshell", "-eval", program])
            .env("ACL", &path)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", erl.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{variant}: file:consult/1 refused the acl.conf: {stdout}{}\n{conf}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut lines = stdout.lines();
        let count: usize = lines.next().unwrap().strip_prefix("terms ").unwrap().parse().unwrap();
        let rules = m
            .identities
            .iter()
            .map(|i| usize::from(!i.publish.is_empty()) + usize::from(!i.subscribe.is_empty()));
        assert_eq!(count, rules.sum::<usize>() + 1, "{variant}: {stdout}");
        let mut got = BTreeSet::new();
        let mut ended = false;
        for line in lines {
            assert!(!ended, "{variant}: {{deny, all}} is the last rule");
            if line == "deny all" {
                ended = true;
                continue;
            }
            let words: Vec<_> = line.split(' ').collect();
            let (user, action, topic) = match words.as_slice() {
                ["allow", u, a, "eq", t] => {
                    let t = erlang_codes(t);
                    assert!(t.contains("${"), "{variant}: eq only to avoid placeholders: {t}");
                    (u, a, t)
                }
                ["allow", u, a, t] => {
                    let t = erlang_codes(t);
                    assert!(!t.contains("${"), "{variant}: {t} would be interpolated");
                    (u, a, t)
                }
                _ => panic!("{variant}: {line}"),
            };
            let action = match *action {
                "publish" => "pub",
                "subscribe" => "sub",
                other => panic!("{variant}: action {other}"),
            };
            assert!(got.insert((erlang_codes(user), action, topic)));
        }
        assert!(ended, "{variant}: ends with {{deny, all}}");
        assert_eq!(got, grants(&m, false), "{variant}");
    }
}

// ---------------------------------------------------------------------------
// Mosquitto 2.x loads the files and enforces them

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mcpmqtt-acl-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // Mosquitto drops to the `mosquitto` user when started as root.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_program(name: &str, extra_dirs: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

const MOSQUITTO_MISSING: &str = "install it with `apt-get install -y mosquitto`";

fn mosquitto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOSQUITTO_BIN") {
        return PathBuf::from(bin);
    }
    find_program("mosquitto", &["/usr/sbin", "/usr/local/sbin"])
        .unwrap_or_else(|| panic!("`mosquitto` not found (Mosquitto 2.x): {MOSQUITTO_MISSING}"))
}

/// The `mosquitto` user's uid and gid, if it exists.
fn mosquitto_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("mosquitto:"))?;
    let fields: Vec<_> = line.split(':').collect();
    Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?))
}

/// Password hashes as `mosquitto_passwd` makes them: `name → (hash, salt, iterations)`.
fn password_hashes(dir: &Path, names: &[&str]) -> (PathBuf, BTreeMap<String, (String, String, u32)>) {
    let bin = find_program("mosquitto_passwd", &["/usr/bin", "/usr/sbin"])
        .unwrap_or_else(|| panic!("`mosquitto_passwd` not found: {MOSQUITTO_MISSING}"));
    let file = dir.join("passwd");
    for (i, name) in names.iter().enumerate() {
        let mut cmd = Command::new(&bin);
        cmd.arg("-b");
        if i == 0 {
            cmd.arg("-c");
        }
        let out = cmd.arg(&file).arg(name).arg(password(name)).output().unwrap();
        assert!(
            out.status.success(),
            "mosquitto_passwd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut hashes = BTreeMap::new();
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        // name:$7$ITERATIONS$SALT$HASH
        let (name, hash) = line.split_once(':').unwrap();
        let parts: Vec<_> = hash.split('$').collect();
        assert_eq!(parts[..2], ["", "7"], "a PBKDF2-SHA512 hash: {line}");
        let value = (parts[4].to_owned(), parts[3].to_owned(), parts[2].parse().unwrap());
        hashes.insert(name.to_owned(), value);
    }
    (file, hashes)
}

fn password(name: &str) -> String {
    format!("pw-{name}")
}

/// A Mosquitto started on a free 127.0.0.1 port, killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    dir: TempDir,
}

impl Mosquitto {
    /// Starts it with `settings` (which name files in `dir`) after a listener
    /// and logging of its own.
    fn start(dir: TempDir, settings: &str) -> Mosquitto {
        let bin = mosquitto_bin();
        let log = dir.path().join("mosquitto.log");
        let owner = (std::fs::metadata(dir.path()).unwrap().uid() == 0).then(mosquitto_user);
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut conf = format!(
                "per_listener_settings false\nlistener {port} 127.0.0.1\npersistence false\n\
                 log_dest file {}\nlog_type all\n{settings}",
                log.display()
            );
            if owner == Some(None) {
                conf.push_str("user root\n"); // root, and no `mosquitto` user to drop to
            }
            let conf_path = dir.path().join("mosquitto.conf");
            std::fs::write(&conf_path, &conf).unwrap();
            std::fs::write(&log, "").unwrap();
            if let Some(Some((uid, gid))) = owner {
                for entry in std::fs::read_dir(dir.path()).unwrap() {
                    std::os::unix::fs::chown(entry.unwrap().path(), Some(uid), Some(gid)).unwrap();
                }
            }
            let mut child = Command::new(&bin)
                .arg("-c")
                .arg(&conf_path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("run {}: {e}; {MOSQUITTO_MISSING}", bin.display()));
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    if log.contains("Address already in use") {
                        break;
                    }
                    panic!("mosquitto exited ({status}) with\n--- mosquitto.conf ---\n{conf}--- log ---\n{log}");
                }
                let running = std::fs::read_to_string(&log).unwrap_or_default().contains(" running");
                if running && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let log = std::fs::read_to_string(&log).unwrap_or_default();
                    let broker = Mosquitto { child, port, dir };
                    assert!(!log.contains("Error"), "mosquitto complained while loading:\n{log}");
                    return broker;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "mosquitto did not start\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("no free port for mosquitto after 5 attempts");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn connect(&self, name: &str) -> Mqtt {
        Mqtt::connect(self.port, name, &password(name))
            .unwrap_or_else(|rc| panic!("{name} refused: CONNACK {rc:#04x}\n{}", self.log()))
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// A minimal MQTT 5 client: CONNECT, SUBSCRIBE, QoS 1 PUBLISH, receive.

const NOT_AUTHORIZED: u8 = 0x87;

struct Mqtt {
    stream: TcpStream,
    next_id: u16,
    inbox: VecDeque<String>,
}

fn put_str(buf: &mut Vec<u8>, s: &[u8]) {
    buf.extend_from_slice(&u16::try_from(s.len()).unwrap().to_be_bytes());
    buf.extend_from_slice(s);
}

fn put_varint(buf: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n % 128) as u8;
        n /= 128;
        buf.push(if n > 0 { byte | 0x80 } else { byte });
        if n == 0 {
            return;
        }
    }
}

fn get_varint(data: &[u8], at: &mut usize) -> usize {
    let (mut n, mut shift) = (0, 0);
    loop {
        let byte = data[*at];
        *at += 1;
        n |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return n;
        }
        shift += 7;
    }
}

impl Mqtt {
    /// Connects with clean start; `Err` is the CONNACK reason code.
    fn connect(port: u16, user: &str, password: &str) -> Result<Mqtt, u8> {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to mosquitto");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut mqtt = Mqtt {
            stream,
            next_id: 0,
            inbox: VecDeque::new(),
        };
        let mut body = Vec::new();
        put_str(&mut body, b"MQTT");
        body.extend_from_slice(&[5, 0xC2, 0, 60, 0]); // v5; username, password, clean start; keep alive; no properties
        put_str(&mut body, user.as_bytes()); // client id
        put_str(&mut body, user.as_bytes());
        put_str(&mut body, password.as_bytes());
        mqtt.send(0x10, &body);
        let (kind, data) = mqtt.read().expect("CONNACK");
        assert_eq!(kind >> 4, 2, "CONNACK expected");
        match data[1] {
            0 => Ok(mqtt),
            rc => Err(rc),
        }
    }

    fn send(&mut self, header: u8, body: &[u8]) {
        let mut packet = vec![header];
        put_varint(&mut packet, body.len());
        packet.extend_from_slice(body);
        self.stream.write_all(&packet).expect("write to mosquitto");
    }

    /// The next packet, or `None` on timeout or close.
    fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut header = [0u8; 1];
        match self.stream.read_exact(&mut header) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::UnexpectedEof
                ) =>
            {
                return None
            }
            Err(e) => panic!("read from mosquitto: {e}"),
        }
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let mut byte = [0u8; 1];
            self.stream.read_exact(&mut byte).expect("packet length");
            len |= usize::from(byte[0] & 0x7f) << shift;
            if byte[0] & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        let mut data = vec![0; len];
        self.stream.read_exact(&mut data).expect("packet body");
        Some((header[0], data))
    }

    /// Reads until a packet of `kind`, keeping PUBLISHes for [`Mqtt::receive`].
    fn read_until(&mut self, kind: u8) -> Vec<u8> {
        loop {
            let (header, data) = self.read().unwrap_or_else(|| panic!("no packet of type {kind}"));
            if header >> 4 == kind {
                return data;
            }
            self.take_publish(header, &data);
        }
    }

    fn take_publish(&mut self, header: u8, data: &[u8]) {
        assert_eq!(header >> 4, 3, "unexpected packet {header:#x}");
        let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
        let topic = String::from_utf8(data[2..2 + len].to_vec()).unwrap();
        if (header >> 1) & 3 == 1 {
            let id = &data[2 + len..4 + len];
            self.send(0x40, &[id[0], id[1]]);
        }
        self.inbox.push_back(topic);
    }

    fn packet_id(&mut self) -> [u8; 2] {
        self.next_id += 1;
        self.next_id.to_be_bytes()
    }

    /// The SUBACK reason code: the granted QoS (1) or an error.
    fn subscribe(&mut self, filter: &str) -> u8 {
        let id = self.packet_id();
        let mut body = id.to_vec();
        body.push(0); // no properties
        put_str(&mut body, filter.as_bytes());
        body.push(1); // QoS 1
        self.send(0x82, &body);
        let data = self.read_until(9);
        assert_eq!(data[..2], id);
        let mut at = 2;
        let props = get_varint(&data, &mut at);
        data[at + props]
    }

    /// Publishes at QoS 1 and returns the PUBACK reason code.
    fn publish(&mut self, topic: &str) -> u8 {
        let id = self.packet_id();
        let mut body = Vec::new();
        put_str(&mut body, topic.as_bytes());
        body.extend_from_slice(&id);
        body.push(0); // no properties
        body.extend_from_slice(b"{}");
        self.send(0x32, &body);
        let data = self.read_until(4);
        assert_eq!(data[..2], id);
        data.get(2).copied().unwrap_or(0)
    }

    /// The topic of the next message delivered within `wait`.
    fn receive(&mut self, wait: Duration) -> Option<String> {
        if let Some(topic) = self.inbox.pop_front() {
            return Some(topic);
        }
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let got = self.read();
        self.stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (header, data) = got?;
        self.take_publish(header, &data);
        self.inbox.pop_front()
    }
}

/// A topic that a filter matches: each `+` (and a final `#`) filled in.
fn a_topic_of(filter: &str) -> String {
    filter.replace(['+', '#'], "x")
}

/// Whether an MQTT topic filter matches a topic.
fn matches(filter: &str, topic: &str) -> bool {
    let (mut f, mut t) = (filter.split('/'), topic.split('/'));
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) | (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// What every broker must let through and refuse for the GTM manifest,
/// checked on publishes (PUBACK reason codes).
fn check_publish_rights(broker: &Mosquitto, m: &AclManifest) {
    for identity in &m.identities {
        let name = &identity.identity;
        let mut mqtt = broker.connect(name);
        for filter in &identity.publish {
            let topic = a_topic_of(filter);
            let rc = mqtt.publish(&topic);
            assert!(rc == 0x00 || rc == 0x10, "{name} may publish {topic}: PUBACK {rc:#04x}");
        }
        let mut denied = vec![
            "gtm/mcp/tools/create_social_post/call/operator".to_owned(),
            "gtm/mcp/tools/query_watch_configs/call/analyst".to_owned(),
            "gtm/mcp/clients/scout/responses".to_owned(),
            "gtm/mcp/tools/crawl_site/card".to_owned(),
            "elsewhere".to_owned(),
        ];
        if m.require_verified_caller {
            denied.push("gtm/mcp/tools/query_watch_configs/call".into());
            denied.push("gtm/mcp/tools/crawl_site/stream/1".into());
        }
        for topic in denied {
            if identity.publish.iter().any(|f| matches(f, &topic)) {
                continue; // its own right
            }
            assert_eq!(mqtt.publish(&topic), NOT_AUTHORIZED, "{name} must not publish {topic}");
        }
    }
}

#[test]
fn mosquitto_loads_the_acl_file_and_enforces_it() {
    for (variant, verified) in VARIANTS {
        let m = manifest(verified);
        let dir = TempDir::new("mosquitto");
        let names: Vec<_> = m.identities.iter().map(|i| i.identity.as_str()).collect();
        let (passwd, _) = password_hashes(dir.path(), &names);
        let acl = dir.path().join(AclFormat::Mosquitto.file_name());
        std::fs::write(&acl, m.render(AclFormat::Mosquitto)).unwrap();
        let settings = mcpmqtt::acl::mosquitto_conf(acl.to_str().unwrap(), passwd.to_str().unwrap());
        let broker = Mosquitto::start(dir, &settings);

        check_publish_rights(&broker, &m);

        // The server's shared subscription receives calls: `topic read` of the
        // plain filter covers `$share/...` (Mosquitto checks the delivered topic).
        let mut server = broker.connect(SERVER);
        let shared = &m.shared_subscription_groups["gtm/mcp/tools/query_watch_configs/call/#"];
        assert_eq!(server.subscribe(shared), 1);
        let mut scout = broker.connect("scout");
        assert_eq!(scout.publish("gtm/mcp/tools/query_watch_configs/call/scout"), 0);
        assert_eq!(
            server.receive(Duration::from_secs(5)).as_deref(),
            Some("gtm/mcp/tools/query_watch_configs/call/scout"),
            "{variant}: the shared subscription gets the call\n{}",
            broker.log()
        );
        let v01 = scout.publish("gtm/mcp/tools/query_watch_configs/call");
        if verified {
            assert_eq!(v01, NOT_AUTHORIZED, "{variant}: no v0.1 calls");
        } else {
            assert_eq!(v01, 0, "{variant}: v0.1 call");
            assert_eq!(
                server.receive(Duration::from_secs(5)).as_deref(),
                Some("gtm/mcp/tools/query_watch_configs/call")
            );
        }

        // Mosquitto grants any SUBSCRIBE but delivers only what `read` allows.
        assert_eq!(scout.subscribe("gtm/mcp/clients/scout/responses"), 1);
        let mut analyst = broker.connect("analyst");
        assert_eq!(
            analyst.subscribe("gtm/mcp/clients/scout/responses"),
            1,
            "acl_file refuses no SUBSCRIBE"
        );
        assert_eq!(server.publish("gtm/mcp/clients/scout/responses"), 0);
        assert_eq!(
            scout.receive(Duration::from_secs(5)).as_deref(),
            Some("gtm/mcp/clients/scout/responses")
        );
        assert_eq!(
            analyst.receive(Duration::from_millis(500)),
            None,
            "{variant}: analyst reads scout's responses"
        );
    }
}

fn dynsec_plugin() -> PathBuf {
    if let Some(path) = std::env::var_os("MOSQUITTO_DYNSEC_PLUGIN") {
        return PathBuf::from(path);
    }
    [
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/aarch64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
        "/usr/local/lib/mosquitto_dynamic_security.so",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| panic!("mosquitto_dynamic_security.so not found: {MOSQUITTO_MISSING}"))
}

fn start_dynsec(json: &str) -> Mosquitto {
    let dir = TempDir::new("dynsec");
    let file = dir.path().join(AclFormat::Dynsec.file_name());
    std::fs::write(&file, json).unwrap();
    let settings = format!(
        "allow_anonymous false\nplugin {}\nplugin_opt_config_file {}\n",
        dynsec_plugin().display(),
        file.display()
    );
    Mosquitto::start(dir, &settings)
}

#[test]
fn mosquitto_loads_the_dynsec_file_without_passwords_and_lets_nobody_in() {
    let broker = start_dynsec(&manifest(false).render(AclFormat::Dynsec));
    for name in [SERVER, "scout"] {
        match Mqtt::connect(broker.port, name, &password(name)) {
            Ok(_) => panic!("{name} logged in with no password set"),
            Err(rc) => assert!(rc >= 0x80, "CONNACK {rc:#04x}"),
        }
    }
}

#[test]
fn mosquitto_loads_the_dynsec_file_and_enforces_it() {
    for (variant, verified) in VARIANTS {
        let m = manifest(verified);
        let scratch = TempDir::new("hashes");
        let names: Vec<_> = m.identities.iter().map(|i| i.identity.as_str()).collect();
        let (_, hashes) = password_hashes(scratch.path(), &names);
        let broker = start_dynsec(&mcpmqtt::acl::dynsec_with_passwords(&m, &hashes));

        check_publish_rights(&broker, &m);

        // Dynamic security checks the full `$share/...` filter: granted because
        // it is listed, as is the plain filter.
        let mut server = broker.connect(SERVER);
        for (plain, shared) in &m.shared_subscription_groups {
            assert_eq!(server.subscribe(shared), 1, "{variant}: {shared}\n{}", broker.log());
            assert_eq!(server.subscribe(plain), 1, "{variant}: {plain}");
        }
        for filter in [
            "#",
            "gtm/mcp/clients/+/responses",
            "$share/other/gtm/mcp/tools/crawl_site/call/#",
        ] {
            assert_eq!(
                server.subscribe(filter),
                NOT_AUTHORIZED,
                "{variant}: server subscribes {filter}"
            );
        }
        for name in CLIENTS {
            let me = rights(&m, name);
            let mut client = broker.connect(name);
            for filter in &me.subscribe {
                assert_eq!(client.subscribe(filter), 1, "{variant}: {name} subscribes {filter}");
            }
            // subscribePattern: a narrower filter is fine too.
            assert_eq!(client.subscribe("gtm/mcp/tools/crawl_site/card"), 1);
            let other = CLIENTS.iter().find(|c| **c != name).unwrap();
            for filter in [
                "#".to_owned(),
                "gtm/mcp/#".to_owned(),
                format!("gtm/mcp/clients/{other}/responses"),
                "gtm/mcp/clients/+/responses".to_owned(),
                "gtm/mcp/tools/create_social_post/call/#".to_owned(),
                "$share/g/gtm/mcp/clients/+/responses".to_owned(),
            ] {
                assert_eq!(
                    client.subscribe(&filter),
                    NOT_AUTHORIZED,
                    "{variant}: {name} subscribes {filter}"
                );
            }
        }

        let mut scout = broker.connect("scout");
        assert_eq!(scout.publish("gtm/mcp/tools/crawl_site/call/scout"), 0);
        assert_eq!(
            server.receive(Duration::from_secs(5)).as_deref(),
            Some("gtm/mcp/tools/crawl_site/call/scout"),
            "{variant}\n{}",
            broker.log()
        );
    }
}
