//! The command line: flags, subcommands and their help.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use mcpmqtt::BrokerOptions;

use crate::exit::EXIT_CODES_HELP;

/// The namespace used when none is given: the v0.1 protocol's default.
pub const DEFAULT_NAMESPACE: &str = "a2a/v1";

/// List, describe and call MCP tools hosted on an MQTT 5 broker; emit ACLs;
/// bridge the tools to any MCP host; expose stdio MCP servers on MQTT.
#[derive(Debug, Parser)]
#[command(name = "mcpmqtt", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// How to reach the broker.
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The connection flags. Every one can also come from the environment.
///
/// The identity calls are made under is the username, else the client
/// certificate's subject CN (`--cert`), else the client id, else a generated
/// `mcpmqtt-XXXXXXXX`; with an ACL-enforcing broker it must be the username
/// the ACL names (with certificates, the CN the broker takes as the username).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The broker's URL: mqtt://HOST:PORT or mqtts://HOST:PORT (TLS).
    /// Repeat it, or separate URLs with commas, to fail over between
    /// brokers (the nodes of a cluster): the first is tried first, and a
    /// lost connection is made again to the next.
    #[arg(long, env = "MQTT_URL", default_value = "mqtt://127.0.0.1:1883", global = true)]
    pub broker: Vec<String>,
    /// The topic namespace.
    #[arg(long, env = "MCPMQTT_NAMESPACE", default_value = DEFAULT_NAMESPACE, global = true)]
    pub namespace: String,
    /// MQTT username: the identity the broker's ACL grants rights to.
    #[arg(long, env = "MQTT_USERNAME", global = true)]
    pub username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "MQTT_PASSWORD", hide_env_values = true, global = true)]
    pub password: Option<String>,
    /// MQTT client id (default: the identity; for `expose`, the server name
    /// with a random suffix).
    #[arg(long, env = "MQTT_CLIENT_ID", global = true)]
    pub client_id: Option<String>,
    /// PEM file of the CA certificates trusted for mqtts:// (default: the
    /// system's roots).
    #[arg(long, env = "MQTT_CA", value_name = "FILE", global = true)]
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate for mutual TLS (mqtts://): its
    /// subject CN is the identity, and no password is needed. Needs --key.
    #[arg(long, env = "MQTT_CERT", value_name = "FILE", global = true)]
    pub cert: Option<PathBuf>,
    /// PEM file of the private key of --cert (PKCS#8, RSA or EC).
    #[arg(long, env = "MQTT_KEY", value_name = "FILE", global = true)]
    pub key: Option<PathBuf>,
}

/// The contents of the file a flag names.
fn read_flag_file(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, mcpmqtt::Error> {
    std::fs::read(path)
        .map_err(|e| mcpmqtt::Error::InvalidArgument(format!("could not read {flag} {}: {e}", path.display())))
}

impl ConnectArgs {
    /// The broker options these flags describe, logging in as `default_user`
    /// when a password is given without a username.
    pub fn broker_options(&self, default_user: &str) -> Result<BrokerOptions, mcpmqtt::Error> {
        let mut options = BrokerOptions::parse_all(&self.broker)?;
        match (&self.username, &self.password) {
            (Some(user), password) => {
                options = options.with_credentials(user.clone(), password.clone().unwrap_or_default());
            }
            (None, Some(password)) => {
                let user = options.username().unwrap_or(default_user).to_owned();
                options = options.with_credentials(user, password.clone());
            }
            (None, None) => {}
        }
        if let Some(id) = &self.client_id {
            options = options.with_client_id(id.clone());
        }
        self.with_tls_files(options)
    }

    /// `options` with the CA and the client certificate of `--ca`, `--cert`
    /// and `--key`.
    fn with_tls_files(&self, mut options: BrokerOptions) -> Result<BrokerOptions, mcpmqtt::Error> {
        if let Some(ca) = &self.ca {
            options = options.with_ca_pem(read_flag_file("--ca", ca)?);
        }
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                options = options.with_client_cert(read_flag_file("--cert", cert)?, read_flag_file("--key", key)?);
            }
            (Some(_), None) => {
                return Err(mcpmqtt::Error::InvalidArgument(
                    "--cert needs --key, the certificate's private key (or MQTT_KEY)".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(mcpmqtt::Error::InvalidArgument(
                    "--key needs --cert, the client certificate (or MQTT_CERT)".into(),
                ))
            }
            (None, None) => {}
        }
        Ok(options)
    }

    /// Connects a client with these flags, under [`ConnectArgs::identity`].
    pub async fn client(&self, default_timeout: std::time::Duration) -> Result<mcpmqtt::Client, mcpmqtt::Error> {
        let identity = self.identity();
        mcpmqtt::Client::builder(identity.clone())
            .broker_options(self.broker_options(&identity)?)
            .namespace(&self.namespace)
            .default_timeout(default_timeout)
            .connect()
            .await
    }

    /// The identity a client made from these flags calls under: the username
    /// (flag or URL), else the client certificate's subject CN, else the
    /// client id, else a generated name.
    pub fn identity(&self) -> String {
        if let Some(user) = &self.username {
            return user.clone();
        }
        if let Some(user) = BrokerOptions::parse_all(&self.broker)
            .ok()
            .and_then(|o| o.username().map(str::to_owned))
        {
            return user;
        }
        // A certificate that cannot be read is reported when connecting.
        if let Some(cn) = self
            .with_tls_files(BrokerOptions::default())
            .ok()
            .and_then(|o| o.certificate_identity().ok().flatten())
        {
            return cn;
        }
        if let Some(id) = &self.client_id {
            return id.clone();
        }
        format!("mcpmqtt-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// A table of the online tools: name, server, streaming, allowed callers, description.
    Tools(ToolsArgs),
    /// A table of the online servers and their tools.
    Servers(ListArgs),
    /// A tool's card and schemas, pretty-printed.
    Describe(DescribeArgs),
    /// Calls a tool and prints its result as JSON on stdout.
    #[command(after_help = CALL_HELP)]
    Call(CallArgs),
    /// Renders ACL manifests (JSON, as `--emit-acl manifest` prints them) in a broker's format.
    Acl(AclArgs),
    /// Serves the online tools to an MCP host over stdio (an MCP server).
    #[command(after_help = BRIDGE_HELP)]
    Bridge(BridgeArgs),
    /// Runs a stdio MCP server as a child and hosts its tools on MQTT.
    #[command(after_help = EXPOSE_HELP)]
    Expose(ExposeArgs),
}

/// Flags of `tools` and `servers`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print the cards as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Flags of `tools`.
#[derive(Debug, Args)]
pub struct ToolsArgs {
    /// Print the cards as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Only the tools of this server.
    #[arg(long, value_name = "SERVER")]
    pub server: Option<String>,
    /// Only the tools whose name starts with this.
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
}

impl ToolsArgs {
    /// The listing these flags ask for.
    pub fn filter(&self) -> mcpmqtt::ToolFilter {
        let mut filter = mcpmqtt::ToolFilter::new();
        if let Some(server) = &self.server {
            filter = filter.server(server);
        }
        if let Some(prefix) = &self.prefix {
            filter = filter.prefix(prefix);
        }
        filter
    }
}

/// Flags of `describe`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The tool.
    pub tool: String,
    /// Print the card as JSON.
    #[arg(long)]
    pub json: bool,
}

const CALL_HELP: &str = "\
Arguments: each --arg key=value sets one argument; the value is read as JSON if it parses \
(42, true, null, [1,2], {\"a\":1}, \"quoted\"), otherwise it is taken as a string. So \
--arg pages=3 is the number 3 and --arg 'text=\"3\"' the string \"3\". --json takes the whole \
object ('-' reads it from stdin); --arg values are applied on top of it.

Streamed partials: when stdout is a terminal, a progress line on stderr shows the latest one. \
Otherwise each partial is printed on stderr as one JSON line, {\"partial\": N, \"content\": \"...\"} \
for text or {\"partial\": N, \"data\": {...}} for data, so stdout holds only the result.

Errors are printed on stderr as `error: <type>: <message>` with the exit code of their type \
(see `mcpmqtt --help`).";

/// Flags of `call`.
#[derive(Debug, Args)]
pub struct CallArgs {
    /// The tool.
    pub tool: String,
    /// An argument, as key=value (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// All arguments as one JSON object ('-' reads it from stdin).
    #[arg(long, value_name = "JSON")]
    pub json: Option<String>,
    /// How long to wait for the result, in seconds (default: the tool's own
    /// timeout from its card plus 5 s, else 30 s).
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,
}

/// Flags of `acl`.
#[derive(Debug, Args)]
pub struct AclArgs {
    /// The broker format: mosquitto, dynsec, emqx, emqx-db, hivemq, rmqtt, policy or manifest.
    #[arg(long)]
    pub format: mcpmqtt::acl::AclFormat,
    /// Manifest files (JSON); several are merged into one ACL. '-' reads stdin.
    #[arg(required = true, value_name = "MANIFEST")]
    pub manifests: Vec<PathBuf>,
}

const BRIDGE_HELP: &str = "\
Configure it in an MCP host as a stdio server, e.g.
  {\"mcpServers\": {\"mqtt-tools\": {\"command\": \"mcpmqtt\",
     \"args\": [\"bridge\", \"--broker\", \"mqtt://127.0.0.1:1883\", \"--namespace\", \"gtm\"],
     \"env\": {\"MQTT_USERNAME\": \"scout\", \"MQTT_PASSWORD\": \"...\"}}}}

It speaks MCP 2026-07-28 (server/discover) and the revisions that open with initialize \
(2024-11-05 to 2025-11-25), whichever the host asks for.

tools/list returns the online tools in name order (inputSchema from their cards), --page-size a \
page; tools/call forwards the call over MQTT under the bridge's identity, so the broker's ACL \
still applies. Streamed partials become notifications/progress when the host sent a progress \
token; the host's notifications/cancelled cancels the call; call errors become isError results. \
A host that declares the tasks extension (io.modelcontextprotocol/tasks) gets a task for every \
call (tasks/get, tasks/cancel). notifications/tools/list_changed is sent when cards come and go \
(on 2026-07-28, on the host's subscriptions/listen stream). Logs go to stderr (RUST_LOG).";

/// Flags of `bridge`.
#[derive(Debug, Args)]
pub struct BridgeArgs {
    /// How often the cards are checked for changes, in milliseconds.
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub watch_interval_ms: u64,
    /// At most this many tools per tools/list page (the host follows
    /// `nextCursor` for the rest).
    #[arg(long, default_value_t = 100, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub page_size: u16,
}

const EXPOSE_HELP: &str = "\
Example: mcpmqtt expose --server-name files --allow read_file=scout,operator --allow '*=operator' \
-- npx -y @modelcontextprotocol/server-filesystem /srv

Who may call each tool comes from --allow TOOL=caller1,caller2 (repeatable) and --acl FILE, a \
JSON object of tool name to callers: {\"read_file\": [\"scout\"], \"*\": [\"operator\"]}, where \
\"*\" applies to every tool. A tool nobody is allowed can be called by no one on an ACL-enforcing \
broker. The broker enforces it: load the ACL printed by --emit-acl.

Every exposed tool is declared streaming: the child's progress notifications become partials \
(their message as text, else {\"progress\": p, \"total\": t}). A result is the child's \
structuredContent if any, else its one text block as a string, else its content blocks as JSON. \
The child's stderr is passed through. The child may speak MCP 2026-07-28 (server/discover) or \
an earlier revision (initialize). A child's task is polled to its end (its status messages as \
partials); when the child's tools change, they are listed again and republished.

The server logs in as --username, or as its server name when only --password is given; with an \
ACL-enforcing broker, that login is the identity the ACL grants the server's rights to. With a \
client certificate (--cert, --key) the broker takes its subject CN as that identity: it must be \
the server name (or --username).";

/// Flags of `expose`.
#[derive(Debug, Args)]
pub struct ExposeArgs {
    /// The server's name on the broker (its identity, and the `server` of its cards).
    #[arg(long)]
    pub server_name: String,
    /// A JSON file of tool name (or "*") to the callers allowed to call it.
    #[arg(long, value_name = "FILE")]
    pub acl: Option<PathBuf>,
    /// Allow callers to call a tool: TOOL=caller1,caller2, or *=caller for every tool (repeatable).
    #[arg(long, value_name = "TOOL=CALLERS")]
    pub allow: Vec<String>,
    /// How long one call may run, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub tool_timeout_ms: u64,
    /// Print the ACL of the exposed server in this format (mosquitto, dynsec,
    /// emqx, emqx-db, hivemq, rmqtt, policy, manifest) and exit, without connecting
    /// to the broker.
    #[arg(long, value_name = "FORMAT")]
    pub emit_acl: Option<mcpmqtt::acl::AclFormat>,
    /// The stdio MCP server to run, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    #[test]
    fn the_broker_flag_is_repeatable_and_takes_comma_separated_lists() {
        let cli = Cli::try_parse_from([
            "mcpmqtt",
            "--broker",
            "mqtt://u:pw@127.0.0.1:1,mqtt://127.0.0.1:2",
            "--broker",
            "mqtt://127.0.0.1:3",
            "tools",
        ])
        .unwrap();
        let options = cli.connect.broker_options("nobody").unwrap();
        assert_eq!(
            options.urls(),
            ["mqtt://u:pw@127.0.0.1:1", "mqtt://127.0.0.1:2", "mqtt://127.0.0.1:3"]
        );
        assert_eq!(cli.connect.identity(), "u", "the first URL's username is the identity");
        let one = Cli::try_parse_from(["mcpmqtt", "tools"]).unwrap();
        assert_eq!(
            one.connect.broker_options("nobody").unwrap().urls(),
            ["mqtt://127.0.0.1:1883"]
        );
    }
}
