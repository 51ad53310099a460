//! The tools every example and test of mcpmqtt tells its story with: a
//! go-to-market team's server, `gtm-mcp-server`, whose tools agents call by
//! name over MQTT.
//!
//! - `query_watch_configs`: read-only, for `scout` and `analyst`;
//! - `create_social_post`: acts in the world, for `operator` only;
//! - `crawl_site`: streams one partial per page, for `scout` and `operator`.
//!
//! The data is made up and held in memory: the point is the plumbing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpmqtt::{tool, BrokerOptions, CallContext, Server, ServerBuilder, State, ToolError};
use serde::{Deserialize, Serialize};

/// The server's name (its identity on the broker).
pub const SERVER_NAME: &str = "gtm-mcp-server";

/// The namespace the examples use.
pub const NAMESPACE: &str = "gtm";

/// A social platform.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// reddit.com
    Reddit,
    /// x.com
    X,
    /// news.ycombinator.com
    Hackernews,
    /// linkedin.com
    Linkedin,
}

/// What the team watches on one platform.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchConfig {
    /// Where.
    pub platform: Platform,
    /// The words that make a post interesting.
    pub keywords: Vec<String>,
    /// How often the platform is checked, in minutes.
    pub interval_minutes: u32,
}

/// The answer of `query_watch_configs`.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchConfigs {
    /// The matching configurations.
    pub configs: Vec<WatchConfig>,
}

/// The answer of `create_social_post`.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostReceipt {
    /// Where it was posted.
    pub platform: Platform,
    /// The post's id on the platform.
    pub post_id: String,
    /// Who asked for it.
    pub posted_by: String,
}

/// The answer of `crawl_site`.
#[mcpmqtt::json_schema]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrawlReport {
    /// The site's root.
    pub url: String,
    /// The pages visited, in order.
    pub pages: Vec<String>,
}

fn all_configs() -> Vec<WatchConfig> {
    let cfg = |platform, keywords: &[&str], interval_minutes| WatchConfig {
        platform,
        keywords: keywords.iter().map(|k| k.to_string()).collect(),
        interval_minutes,
    };
    vec![
        cfg(Platform::Reddit, &["mqtt", "mcp"], 15),
        cfg(Platform::X, &["#mcp", "agents"], 5),
        cfg(Platform::Hackernews, &["mqtt", "broker"], 30),
        cfg(Platform::Linkedin, &["iot platform"], 60),
    ]
}

/// List the platforms the team watches and what for.
#[tool(
    allowed_callers = ["scout", "analyst"],
    title = "Watch configurations",
    read_only,
    idempotent,
    open_world = false
)]
pub async fn query_watch_configs(
    /// Only this platform's configuration; all of them when absent.
    platform: Option<Platform>,
) -> WatchConfigs {
    let configs = all_configs()
        .into_iter()
        .filter(|c| platform.is_none_or(|p| p == c.platform))
        .collect();
    WatchConfigs { configs }
}

/// Publish a post on a social platform, as the team.
// Not destructive: it only adds a post, never edits or deletes one.
#[tool(
    allowed_callers = ["operator"],
    title = "Post on social media",
    destructive = false,
    open_world
)]
pub async fn create_social_post(
    ctx: &CallContext,
    log: State<PostLog>,
    /// Where to post.
    platform: Platform,
    /// What to say.
    text: String,
) -> Result<PostReceipt, ToolError> {
    if text.trim().is_empty() {
        return Err(ToolError::invalid_arguments("`text` is empty"));
    }
    if platform == Platform::X && text.chars().count() > 280 {
        return Err(ToolError::new("posts on x are limited to 280 characters").with_code("too_long"));
    }
    let receipt = PostReceipt {
        platform,
        post_id: format!("{platform:?}-{}", &ctx.call_id()[..8.min(ctx.call_id().len())]).to_lowercase(),
        posted_by: ctx.caller().id().to_owned(),
    };
    log.record(receipt.clone(), text);
    Ok(receipt)
}

/// The posts a gtm server made, with their text: the side effect a caller
/// without the right must never cause. The server's state (what a real
/// service would keep in its database), registered by [`gtm_server_with`].
#[derive(Debug, Default)]
pub struct PostLog(Mutex<Vec<(PostReceipt, String)>>);

impl PostLog {
    /// The posts made so far, oldest first.
    pub fn posts(&self) -> Vec<(PostReceipt, String)> {
        self.0.lock().expect("posts lock").clone()
    }

    fn record(&self, receipt: PostReceipt, text: String) {
        self.0.lock().expect("posts lock").push((receipt, text));
    }
}

/// Crawl a site, streaming one partial per page as it goes.
#[tool(
    allowed_callers = ["scout", "operator"],
    streaming,
    timeout_ms = 60000,
    title = "Crawl a site",
    read_only,
    open_world
)]
pub async fn crawl_site(
    ctx: &CallContext,
    /// The site's root URL.
    url: String,
    /// How many pages to crawl (default 3, at most 50).
    pages: Option<u32>,
) -> Result<CrawlReport, ToolError> {
    let pages = pages.unwrap_or(3);
    if pages > 50 {
        return Err(ToolError::invalid_arguments("`pages` is at most 50"));
    }
    let root = url.trim_end_matches('/');
    let mut visited = Vec::new();
    for i in 1..=pages {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let page = if i == 1 {
            root.to_owned()
        } else {
            format!("{root}/page/{i}")
        };
        ctx.emit_text(format!("crawled {page} ({i}/{pages})")).await?;
        visited.push(page);
    }
    Ok(CrawlReport {
        url: root.to_owned(),
        pages: visited,
    })
}

/// The gtm server with its three tools and an empty post log, ready for
/// broker options.
pub fn gtm_server() -> ServerBuilder {
    gtm_server_with(Arc::default())
}

/// The gtm server keeping its posts in `posts`, which the caller can read.
pub fn gtm_server_with(posts: Arc<PostLog>) -> ServerBuilder {
    Server::builder(SERVER_NAME)
        .namespace(NAMESPACE)
        .shared_state(posts)
        .tool::<query_watch_configs>()
        .tool::<create_social_post>()
        .tool::<crawl_site>()
}

/// The connection flags every example takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ConnectArgs {
    /// The broker's URL. Repeat it, or separate URLs with commas, to fail
    /// over between brokers (the nodes of a cluster).
    #[arg(long, env = "MQTT_URL", default_value = "mqtt://127.0.0.1:1883")]
    pub broker: Vec<String>,
    /// The topic namespace.
    #[arg(long, default_value = NAMESPACE)]
    pub namespace: String,
    /// MQTT username.
    #[arg(long, env = "MQTT_USERNAME")]
    pub username: Option<String>,
    /// MQTT password.
    #[arg(long, env = "MQTT_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// PEM file of the CA certificates trusted for mqtts:// (default: the
    /// system's roots).
    #[arg(long, env = "MQTT_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// PEM file of the client certificate for mutual TLS (mqtts://): its
    /// subject CN is the identity, and no password is needed. Needs --key.
    #[arg(long, env = "MQTT_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// PEM file of the private key of --cert (PKCS#8, RSA or EC).
    #[arg(long, env = "MQTT_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// Print the ACL in this format (mosquitto, dynsec, emqx, emqx-db,
    /// hivemq, rmqtt, policy, manifest) and exit without connecting. Handled by
    /// `Server::run`, which every server gets; declared here so that clap
    /// lets it through.
    #[arg(long, value_name = "FORMAT")]
    pub emit_acl: Option<String>,
}

impl ConnectArgs {
    /// The broker options these flags describe.
    pub fn broker_options(&self) -> Result<BrokerOptions, mcpmqtt::Error> {
        let mut options = BrokerOptions::parse_all(&self.broker)?;
        if let Some(user) = &self.username {
            options = options.with_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(ca) = &self.ca {
            options = options.with_ca_pem(read("--ca", ca)?);
        }
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            options = options.with_client_cert(read("--cert", cert)?, read("--key", key)?);
        }
        Ok(options)
    }

    /// The identity a client made from these flags calls under: the
    /// username, else the client certificate's subject CN, else `default`.
    pub fn identity(&self, default: &str) -> Result<String, mcpmqtt::Error> {
        if let Some(user) = &self.username {
            return Ok(user.clone());
        }
        Ok(self
            .broker_options()?
            .certificate_identity()?
            .unwrap_or_else(|| default.to_owned()))
    }
}

/// The contents of the file a flag names.
fn read(flag: &str, path: &std::path::Path) -> Result<Vec<u8>, mcpmqtt::Error> {
    std::fs::read(path)
        .map_err(|e| mcpmqtt::Error::InvalidArgument(format!("could not read {flag} {}: {e}", path.display())))
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings only).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,rumqttc=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
