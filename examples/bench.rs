//! mcpmqtt against the raw MQTT 5 request/response floor, on one Mosquitto
//! that the bench starts on loopback (and, in the `cluster` section, on the
//! test suite's 3-node RMQTT cluster).
//!
//! ```sh
//! cargo run --release --example bench                              # everything but the cluster (a few minutes)
//! cargo run --release --example bench -- --inflight 1,64 --payload 100 --sections matrix
//! cargo run --release --example bench -- --sections cluster       # needs rmqttd
//! ```
//!
//! Every side runs in its own process (the binary re-executes itself with a
//! hidden `--role`), so the CPU seconds and peak RSS printed are per side:
//!
//! - `responder`: the floor's server, rumqttc alone. It echoes each request to
//!   its Response Topic with its Correlation Data, QoS 1.
//! - `server`: an `mcpmqtt::Server` hosting an `echo` tool (or `--tools N`).
//! - `client`: the floor's requester (rumqttc, QoS 1 with Response Topic and
//!   Correlation Data) or an `mcpmqtt::Client` calling `echo`, with a number of
//!   calls in flight; it warms up, waits for `go`, measures, prints a result.
//! - `lister`: an `mcpmqtt::Client` waiting for `tools()` to list N tools.
//!
//! The orchestrator reads the CPU time of each side and of the broker from
//! `/proc/<pid>/stat` over the measured window, and peak RSS from
//! `/proc/<pid>/status` (VmHWM). See BENCHMARKS.md for results.

// The test harness's brokers: one Mosquitto, and the 3-node RMQTT cluster.
#[path = "../tests/support/mod.rs"]
mod support;
use support::{mosquitto, rmqtt};

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use mcpmqtt::{Client, Server, ToolDef, ToolError};
use rumqttc::v5::mqttbytes::v5::{Packet, Publish, PublishProperties};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

type BoxResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

const NS: &str = "bench";
const TOOLS_NS: &str = "bench-tools";
const FLOOR_REQ: &str = "bench-floor/req";
const FLOOR_SHARED: &str = "$share/floor/bench-floor/req";
/// rumqttc refuses packets over 10 KiB by default.
const MAX_PACKET: u32 = 16 * 1024 * 1024;

#[derive(Parser, Debug, Clone)]
#[command(about = "mcpmqtt vs the raw MQTT 5 request/response floor, on a local Mosquitto")]
struct Args {
    /// Calls in flight, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 16, 64, 256])]
    inflight: Vec<usize>,
    /// Sizes of the arguments JSON (`{"text":"..."}`), comma-separated; `k` = KiB, `m` = MiB. The
    /// default's largest is 1,000,000 B, so that the call envelope stays under the server's 1 MiB limit.
    #[arg(long, value_delimiter = ',', default_values = ["100", "10k", "1000000"])]
    payload: Vec<String>,
    /// Which sides to measure: floor, mcpmqtt.
    #[arg(long, value_delimiter = ',', default_values = ["floor", "mcpmqtt"])]
    modes: Vec<String>,
    /// Sections to run: matrix, scale, tools; and cluster (not by default: it needs `rmqttd`).
    #[arg(long, value_delimiter = ',', default_values = ["matrix", "scale", "tools"])]
    sections: Vec<String>,
    /// Runs of each cell, floor and mcpmqtt alternating (floor first, then mcpmqtt first, ...): the
    /// tables show each side's median run by calls/s, which a noisy machine moves less than one run.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Time bound of each cell, in seconds (whichever of count and time comes first).
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Count bound of each cell for payloads under 64 KiB.
    #[arg(long, default_value_t = 50_000)]
    calls: u64,
    /// Count bound of each cell for payloads of 64 KiB and more.
    #[arg(long, default_value_t = 1000)]
    big_calls: u64,
    /// Server instances of the scale-out section (shared subscription).
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 4])]
    scale: Vec<usize>,
    /// Calls in flight in the scale-out section.
    #[arg(long, default_value_t = 64)]
    scale_inflight: usize,
    /// Server instances of the cluster section: instance i on node i+1 of a 3-node RMQTT
    /// cluster (round robin), the client on node 2.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2, 3])]
    cluster_scale: Vec<usize>,
    /// Tools hosted by one server in the many-tools section, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = [1000usize, 10_000])]
    tools: Vec<usize>,
    /// Clients connecting at once in the many-tools section, one run each.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 100])]
    crowd: Vec<usize>,
    /// Sets Mosquitto's `max_inflight_messages` (its default is 20; 0 means no limit).
    #[arg(long)]
    broker_max_inflight: Option<u32>,
    /// Runs every side under `perf record` (files in this directory); CPU numbers then include perf.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Counts syscalls and context switches of each side over the measured window (`perf stat`).
    #[arg(long)]
    syscalls: bool,
    /// Runs the servers (mcpmqtt's and the floor's responder) and the client under
    /// `valgrind --tool=callgrind`, counting from the end of the client's warm-up, and prints
    /// each one's instructions per call: a figure that whatever
    /// else runs on the machine does not move (user space only; files in this directory). Calls
    /// are then some 50 times slower: use small `--calls`.
    #[arg(long)]
    callgrind: Option<PathBuf>,

    // The roles the binary re-executes itself in.
    #[arg(long, hide = true)]
    role: Option<String>,
    #[arg(long, hide = true, default_value = "")]
    url: String,
    #[arg(long, hide = true, default_value = "floor")]
    mode: String,
    #[arg(long, hide = true)]
    shared: bool,
    #[arg(long, hide = true, default_value_t = 1)]
    n: usize,
    #[arg(long, hide = true, default_value_t = 100)]
    size: usize,
    #[arg(long, hide = true, default_value_t = 0)]
    count: u64,
    #[arg(long, hide = true, default_value_t = 0)]
    warmup: u64,
    #[arg(long, hide = true, default_value = NS)]
    ns: String,
}

fn main() -> BoxResult<()> {
    let args = Args::parse();
    match args.role.clone() {
        Some(role) => {
            let mut rt = tokio::runtime::Builder::new_multi_thread();
            // `MCPMQTT_BENCH_WORKERS=N`: N worker threads in each role's runtime (tokio's default is
            // one per core), or only in the roles `MCPMQTT_BENCH_WORKERS_ROLES` lists (`server,client`).
            let roles = std::env::var("MCPMQTT_BENCH_WORKERS_ROLES").unwrap_or_default();
            let mine = roles.is_empty() || roles.split(',').any(|r| r == role);
            if let Some(n) = env_number("MCPMQTT_BENCH_WORKERS").filter(|_| mine) {
                rt.worker_threads(n);
            }
            let rt = rt.enable_all().build()?;
            rt.block_on(async move {
                match role.as_str() {
                    "responder" => responder_role(&args).await,
                    "server" => server_role(&args).await,
                    "client" => client_role(&args).await,
                    "lister" => lister_role(&args).await,
                    "crowd" => crowd_role(&args).await,
                    other => Err(format!("unknown role {other}").into()),
                }
            })
        }
        None => orchestrate(&args),
    }
}

// ---------------------------------------------------------------------------
// Measurements of a process

/// User + system CPU seconds of a process (clock ticks of 1/100 s).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after `) state`.
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    (tick(11) + tick(12)) as f64 / 100.0
}

/// CPU seconds the hypervisor gave to others while this machine's CPUs
/// wanted to run (`steal` of `/proc/stat`, all CPUs): a run during which it
/// climbs measured a slower machine, whichever side it was.
fn host_steal_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    // `cpu  user nice system idle iowait irq softirq steal ...`
    let steal = stat.lines().next().and_then(|l| l.split_whitespace().nth(8));
    steal.and_then(|f| f.parse::<u64>().ok()).unwrap_or(0) as f64 / 100.0
}

/// A `Vm*` line of `/proc/<pid>/status`, in KiB.
fn vm_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The number an environment variable holds (a bench switch), if it is set to one.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

/// The next line of standard input, or `None` at its end.
async fn read_line() -> Option<String> {
    tokio::task::spawn_blocking(|| {
        let mut s = String::new();
        match std::io::stdin().read_line(&mut s) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(s.trim().to_owned()),
        }
    })
    .await
    .ok()
    .flatten()
}

/// Waits until standard input says `stop` or ends.
async fn wait_stop() {
    while let Some(line) = read_line().await {
        if line == "stop" {
            break;
        }
    }
}

/// The arguments JSON of one call, `size` bytes long: `{"text":"xxx..."}`.
fn arguments(size: usize) -> Value {
    json!({ "text": "x".repeat(size.saturating_sub(11)) })
}

// ---------------------------------------------------------------------------
// The floor: rumqttc alone

fn host_port(url: &str) -> BoxResult<(String, u16)> {
    let rest = url.trim_start_matches("mqtt://");
    let (host, port) = rest.rsplit_once(':').ok_or("no port in the broker URL")?;
    Ok((host.to_owned(), port.parse()?))
}

fn floor_options(url: &str, id: &str) -> BoxResult<MqttOptions> {
    let (host, port) = host_port(url)?;
    let mut opts = MqttOptions::new(id, host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_max_packet_size(Some(MAX_PACKET));
    let mut net = rumqttc::NetworkOptions::new();
    net.set_tcp_nodelay(true);
    opts.set_network_options(net);
    Ok(opts)
}

/// What the event loop task of a floor connection tells its owner.
struct FloorLink {
    client: AsyncClient,
    subscribed: oneshot::Receiver<()>,
    /// The Receive Maximum of the broker's CONNACK, if it sent one.
    receive_max: Arc<Mutex<Option<u16>>>,
}

/// Connects, subscribes to `filter`, and hands every incoming publish to `on_publish`.
fn floor_connect(
    url: &str,
    id: &str,
    filter: &str,
    on_publish: impl Fn(Publish) + Send + 'static,
) -> BoxResult<FloorLink> {
    let (client, eventloop) = AsyncClient::new(floor_options(url, id)?, 1024);
    let (sub_tx, subscribed) = oneshot::channel();
    let receive_max = Arc::new(Mutex::new(None));
    tokio::spawn(floor_drive(eventloop, sub_tx, receive_max.clone(), on_publish));
    let c = client.clone();
    let filter = filter.to_owned();
    tokio::spawn(async move { c.subscribe(filter, QoS::AtLeastOnce).await });
    Ok(FloorLink {
        client,
        subscribed,
        receive_max,
    })
}

async fn floor_drive(
    mut eventloop: EventLoop,
    sub_tx: oneshot::Sender<()>,
    receive_max: Arc<Mutex<Option<u16>>>,
    on_publish: impl Fn(Publish),
) {
    let mut sub_tx = Some(sub_tx);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::Publish(p))) => on_publish(p),
            Ok(Event::Incoming(Packet::ConnAck(c))) => {
                *receive_max.lock().expect("lock") = c.properties.and_then(|p| p.receive_max);
            }
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                if let Some(tx) = sub_tx.take() {
                    let _ = tx.send(());
                }
            }
            Ok(_) => {}
            Err(e) => {
                eprintln!("floor connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn responder_role(a: &Args) -> BoxResult<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Publish>();
    let id = format!("floor-responder-{}", std::process::id());
    let filter = if a.shared { FLOOR_SHARED } else { FLOOR_REQ };
    let link = floor_connect(&a.url, &id, filter, move |p| {
        let _ = tx.send(p);
    })?;
    link.subscribed.await?;
    let client = link.client.clone();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let Some(props) = p.properties else { continue };
            let Some(topic) = props.response_topic else { continue };
            let reply = PublishProperties {
                correlation_data: props.correlation_data,
                ..Default::default()
            };
            let _ = client
                .publish_bytes_with_properties(topic, QoS::AtLeastOnce, false, p.payload, reply)
                .await;
        }
    });
    println!("ready {}", json!({ "pid": std::process::id() }));
    wait_stop().await;
    Ok(())
}

/// The floor's requester: many requests on one connection, matched by Correlation Data.
struct FloorRequester {
    client: AsyncClient,
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<usize>>>>,
    next: AtomicU64,
    response_topic: String,
    payload: Bytes,
    /// `MCPMQTT_BENCH_FLOOR_EXPIRY=<secs>`: the requests carry a Message Expiry, as mcpmqtt's calls
    /// do, so that what it costs the broker shows in the floor alone.
    expiry: Option<u32>,
}

impl FloorRequester {
    async fn call(&self) -> Result<(), String> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("lock").insert(id, tx);
        let props = PublishProperties {
            response_topic: Some(self.response_topic.clone()),
            correlation_data: Some(Bytes::copy_from_slice(&id.to_be_bytes())),
            message_expiry_interval: self.expiry,
            ..Default::default()
        };
        self.client
            .publish_bytes_with_properties(FLOOR_REQ, QoS::AtLeastOnce, false, self.payload.clone(), props)
            .await
            .map_err(|e| e.to_string())?;
        match rx.await {
            Ok(n) if n == self.payload.len() => Ok(()),
            Ok(n) => Err(format!("a response of {n} bytes")),
            Err(_) => Err("no response".into()),
        }
    }
}

// ---------------------------------------------------------------------------
// mcpmqtt

fn echo_tool(name: &str) -> ToolDef {
    ToolDef::builder(name)
        .description("Returns its arguments.")
        .input_schema(json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "Anything."}},
            "required": ["text"]
        }))
        .handler(|_ctx, args| async move { Ok::<_, ToolError>(args) })
        .build()
        .expect("a valid tool")
}

async fn server_role(a: &Args) -> BoxResult<()> {
    let started_us = epoch_us();
    let t0 = Instant::now();
    let mut builder = Server::builder("bench-server").broker(&a.url).namespace(&a.ns);
    if a.n <= 1 {
        builder = builder.tool_def(echo_tool("echo"));
    } else {
        for i in 0..a.n {
            builder = builder.tool_def(echo_tool(&format!("t{i:04}")));
        }
    }
    // `MCPMQTT_BENCH_DEDUPE=0` turns the dedupe window off, to measure its cost;
    // `MCPMQTT_BENCH_CACHED_MIB=N` caches at most N MiB of responses in it.
    if std::env::var("MCPMQTT_BENCH_DEDUPE").is_ok_and(|v| v == "0") {
        builder = builder.dedupe_window(mcpmqtt::DedupeWindow {
            capacity: 0,
            ..Default::default()
        });
    } else if let Some(mib) = env_number::<usize>("MCPMQTT_BENCH_CACHED_MIB") {
        builder = builder.dedupe_window(mcpmqtt::DedupeWindow {
            max_cached_bytes: mib << 20,
            ..Default::default()
        });
    }
    let server = builder.build()?;
    let build_ms = t0.elapsed().as_secs_f64() * 1e3;
    let handle = server.start().await?;
    let start_ms = t0.elapsed().as_secs_f64() * 1e3 - build_ms;
    let ready = json!({
        "pid": std::process::id(),
        "started_us": started_us,
        "build_ms": build_ms,
        "start_ms": start_ms,
    });
    println!("ready {ready}");
    wait_stop().await;
    let _ = tokio::time::timeout(Duration::from_secs(10), handle.shutdown()).await;
    Ok(())
}

async fn lister_role(a: &Args) -> BoxResult<()> {
    let t0 = Instant::now();
    let client = Client::builder(format!("bench-lister-{}", std::process::id()))
        .broker(&a.url)
        .namespace(&a.ns)
        .connect()
        .await?;
    let connect_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!(
        "ready {}",
        json!({ "pid": std::process::id(), "connect_ms": connect_ms })
    );
    read_line().await;
    let go = Instant::now();
    let deadline = go + Duration::from_secs(60);
    let mut polls = 0u64;
    let listed = loop {
        polls += 1;
        let n = client.tools().await.map_or(0, |t| t.len());
        if n >= a.n || Instant::now() >= deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let result = json!({
        "done_us": epoch_us(),
        "since_go_ms": go.elapsed().as_secs_f64() * 1e3,
        "since_start_ms": t0.elapsed().as_secs_f64() * 1e3,
        "listed": listed,
        "polls": polls,
        "hwm_kib": vm_kib(std::process::id(), "VmHWM"),
    });
    println!("result {result}");
    client.disconnect().await;
    Ok(())
}

/// `--n` clients connect at once on "go"; each lists the tool names (the
/// Server Cards alone), then every Tool Card. Reports the times from "go".
async fn crowd_role(a: &Args) -> BoxResult<()> {
    println!("ready {}", json!({ "pid": std::process::id() }));
    read_line().await;
    let go = Instant::now();
    let pid = std::process::id();
    let clients: Vec<_> = (0..a.n)
        .map(|i| {
            let builder = Client::builder(format!("bench-crowd-{pid}-{i}"))
                .broker(&a.url)
                .namespace(&a.ns);
            tokio::spawn(async move {
                let client = builder.connect().await.map_err(|e| e.to_string())?;
                let names = client.tool_names(&mcpmqtt::ToolFilter::new()).await.len();
                let names_ms = go.elapsed().as_secs_f64() * 1e3;
                let cards = client.tools().await.map_err(|e| e.to_string())?.len();
                let cards_ms = go.elapsed().as_secs_f64() * 1e3;
                Ok::<_, String>((client, names, names_ms, cards, cards_ms))
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.push(c.await?);
    }
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    let done: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
    let mut names_ms: Vec<f64> = done.iter().map(|d| d.2).collect();
    let mut cards_ms: Vec<f64> = done.iter().map(|d| d.4).collect();
    names_ms.sort_by(f64::total_cmp);
    cards_ms.sort_by(f64::total_cmp);
    let q = |v: &[f64], p: usize| v.get((v.len() * p / 100).min(v.len().saturating_sub(1))).copied();
    let result = json!({
        "clients": a.n,
        "complete": done.iter().filter(|d| d.1 as u64 == a.count && d.3 as u64 == a.count).count(),
        "failures": failures.len(),
        "first_failure": failures.first(),
        "names_p50_ms": q(&names_ms, 50), "names_max_ms": names_ms.last(),
        "cards_p50_ms": q(&cards_ms, 50), "cards_p95_ms": q(&cards_ms, 95), "cards_max_ms": cards_ms.last(),
        "hwm_kib": vm_kib(pid, "VmHWM"),
    });
    println!("result {result}");
    for d in done {
        d.0.disconnect().await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The requesting side, either mode

enum Requester {
    Floor(FloorRequester),
    Mcp { client: Client, args: Value, len: usize },
}

impl Requester {
    async fn call(&self) -> Result<(), String> {
        match self {
            Requester::Floor(f) => f.call().await,
            Requester::Mcp { client, args, len } => {
                // Lent, not cloned: the floor sends its payload without a copy too.
                let result = client.call("echo", args).await.map_err(|e| e.to_string())?;
                match result.get("text").and_then(Value::as_str) {
                    Some(t) if t.len() == *len => Ok(()),
                    _ => Err("an unexpected result".into()),
                }
            }
        }
    }
}

struct Run {
    latencies_us: Vec<u32>,
    errors: u64,
    first_error: Option<String>,
    wall: Duration,
}

/// Runs `count` calls (or until `limit` passes) with `inflight` of them at a time.
async fn run_calls(req: Arc<Requester>, inflight: usize, count: u64, limit: Duration) -> Run {
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + limit;
    let workers: Vec<_> = (0..inflight)
        .map(|_| {
            let req = req.clone();
            let issued = issued.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                while issued.fetch_add(1, Ordering::Relaxed) < count && Instant::now() < deadline {
                    let t = Instant::now();
                    match req.call().await {
                        Ok(()) => lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (lat, errors, first_error)
            })
        })
        .collect();
    let mut run = Run {
        latencies_us: Vec::new(),
        errors: 0,
        first_error: None,
        wall: Duration::ZERO,
    };
    for w in workers {
        if let Ok((lat, errors, first)) = w.await {
            run.latencies_us.extend(lat);
            run.errors += errors;
            run.first_error = run.first_error.or(first);
        }
    }
    run.wall = start.elapsed();
    run.latencies_us.sort_unstable();
    run
}

fn percentile(sorted: &[u32], p: usize) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)] as f64 / 1e3
}

async fn client_role(a: &Args) -> BoxResult<()> {
    let pid = std::process::id();
    let mut receive_max = None;
    let req = if a.mode == "floor" {
        let pending: Arc<Mutex<HashMap<u64, oneshot::Sender<usize>>>> = Arc::default();
        let response_topic = format!("bench-floor/res/{pid}");
        let routes = pending.clone();
        let link = floor_connect(&a.url, &format!("floor-requester-{pid}"), &response_topic, move |p| {
            let id = p
                .properties
                .as_ref()
                .and_then(|props| props.correlation_data.as_ref())
                .and_then(|c| <[u8; 8]>::try_from(&c[..]).ok())
                .map(u64::from_be_bytes);
            if let Some(tx) = id.and_then(|id| routes.lock().expect("lock").remove(&id)) {
                let _ = tx.send(p.payload.len());
            }
        })?;
        link.subscribed.await?;
        receive_max = *link.receive_max.lock().expect("lock");
        let payload = Bytes::from(serde_json::to_vec(&arguments(a.size))?);
        Requester::Floor(FloorRequester {
            client: link.client,
            pending,
            next: AtomicU64::new(0),
            response_topic,
            payload,
            expiry: env_number("MCPMQTT_BENCH_FLOOR_EXPIRY"),
        })
    } else {
        let client = Client::builder(format!("bench-client-{pid}"))
            .broker(&a.url)
            .namespace(&a.ns)
            .connect()
            .await?;
        client.wait_for_tool("echo", Duration::from_secs(10)).await?;
        let args = arguments(a.size);
        let len = args["text"].as_str().map_or(0, str::len);
        Requester::Mcp { client, args, len }
    };
    let req = Arc::new(req);
    let warm = run_calls(req.clone(), a.n, a.warmup, Duration::from_secs(30)).await;
    if warm.errors > 0 {
        eprintln!("warm-up: {} errors, first: {:?}", warm.errors, warm.first_error);
    }
    println!("ready {}", json!({ "pid": pid, "receive_max": receive_max }));
    read_line().await;
    let cpu0 = cpu_secs(pid);
    let run = run_calls(req.clone(), a.n, a.count, Duration::from_secs_f64(a.secs)).await;
    let cpu = cpu_secs(pid) - cpu0;
    let lat = &run.latencies_us;
    let result = json!({
        "calls": lat.len(),
        "errors": run.errors,
        "first_error": run.first_error,
        "wall_s": run.wall.as_secs_f64(),
        "p50_ms": percentile(lat, 50),
        "p99_ms": percentile(lat, 99),
        "cpu_s": cpu,
        "hwm_kib": vm_kib(pid, "VmHWM"),
    });
    println!("result {result}");
    if let Requester::Mcp { client, .. } = &*req {
        client.disconnect().await;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The orchestrator

/// A child process of the bench, speaking lines on stdin and stdout.
struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std_mpsc::Receiver<String>,
    /// The pid of the role process itself (not of `perf`, when wrapped).
    pid: u32,
}

impl Proc {
    fn spawn(label: &str, role_args: &[String], perf: Option<&PathBuf>) -> Proc {
        Proc::spawn_in(label, role_args, perf, None)
    }

    /// [`Proc::spawn`], under callgrind (not counting until [`callgrind_start`]) when
    /// `callgrind` names a directory.
    fn spawn_in(label: &str, role_args: &[String], perf: Option<&PathBuf>, callgrind: Option<&PathBuf>) -> Proc {
        let exe = std::env::current_exe().expect("the bench's own path");
        let mut cmd = match (perf, callgrind) {
            (_, Some(dir)) => {
                let mut c = Command::new("valgrind");
                c.args(["-q", "--tool=callgrind", "--instr-atstart=no"])
                    .arg(format!(
                        "--callgrind-out-file={}",
                        dir.join(format!("{label}.out")).display()
                    ))
                    .arg(&exe);
                c
            }
            (Some(dir), None) => {
                let mut c = Command::new("perf");
                c.arg("record");
                // `MCPMQTT_BENCH_PERF_EVENT=probe_libc:malloc` (after `perf probe -x <libc> malloc`)
                // records every allocation instead of sampling the clock.
                match std::env::var("MCPMQTT_BENCH_PERF_EVENT") {
                    Ok(event) => c.args(["-e", &event]),
                    Err(_) => c.args(["-F", "999"]),
                };
                // `MCPMQTT_BENCH_PERF_GRAPH=none` samples without stacks: copying
                // 16 KiB of stack a sample costs more than a call does.
                match std::env::var("MCPMQTT_BENCH_PERF_GRAPH").as_deref() {
                    Ok("none") => c.arg("-q"),
                    Ok(graph) => c.args(["-q", "--call-graph", graph]),
                    Err(_) => c.args(["-q", "--call-graph", "dwarf,16384"]),
                };
                c.arg("-o").arg(dir.join(format!("{label}.data"))).arg("--").arg(&exe);
                c
            }
            (None, None) => Command::new(&exe),
        };
        let mut child = cmd
            .args(role_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {label}: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            label: label.to_owned(),
            child,
            stdin,
            lines,
            pid: 0,
        }
    }

    /// Waits for a line `{word} {json}` and returns the JSON.
    fn expect(&mut self, word: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(word) {
                        let v: Value = serde_json::from_str(rest.trim()).unwrap_or(Value::Null);
                        if let Some(pid) = v.get("pid").and_then(Value::as_u64) {
                            self.pid = pid as u32;
                        }
                        return v;
                    }
                    eprintln!("[{}] {line}", self.label);
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("{} did not say `{word}` within {timeout:?}", self.label);
                }
            }
        }
    }

    fn send(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Says `stop`, closes stdin, and waits (killing it after 15 s).
    fn stop(mut self) {
        self.send("stop");
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!("{} did not stop; killing it", self.label);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Floor,
    Mcp,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Floor => "floor",
            Mode::Mcp => "mcpmqtt",
        }
    }
}

/// One measured cell.
#[derive(Clone, Debug)]
struct Cell {
    mode: Mode,
    inflight: usize,
    size: usize,
    instances: usize,
    calls: u64,
    errors: u64,
    wall_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    client_cpu: f64,
    client_hwm_kib: u64,
    server_cpu: f64,
    server_hwm_kib: u64,
    broker_cpu: f64,
    receive_max: Option<u64>,
    /// (syscalls, context switches) of client, server(s), broker, when counted.
    counts: Option<[(u64, u64); 3]>,
    /// (calls/s, p50 ms, p99 ms) of every run of this cell, in the order run (this cell is the
    /// median run by calls/s).
    runs: Vec<RunSummary>,
    /// The share of the machine's CPU time the hypervisor stole over this run.
    stolen: f64,
}

/// What the tables keep of each run of a cell.
#[derive(Clone, Copy, Debug)]
struct RunSummary {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU µs per call of the client, the server(s) and the broker.
    cpu_us: [f64; 3],
    stolen: f64,
}

impl Cell {
    fn summary(&self) -> RunSummary {
        RunSummary {
            rate: self.rate(),
            p50_ms: self.p50_ms,
            p99_ms: self.p99_ms,
            cpu_us: [self.client_cpu, self.server_cpu, self.broker_cpu].map(|cpu| self.us_per_call(cpu)),
            stolen: self.stolen,
        }
    }
    fn rate(&self) -> f64 {
        self.calls as f64 / self.wall_s
    }
    fn us_per_call(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.calls.max(1) as f64
    }
}

struct Ctx<'a> {
    args: &'a Args,
    /// The broker the client connects to.
    url: String,
    /// The broker of each server instance, round robin (one URL but on a cluster).
    server_urls: Vec<String>,
    /// The broker's processes (one but on a cluster): their CPU is the broker's.
    broker_pids: Vec<u32>,
    /// Distinguishes the perf files of cells.
    seq: usize,
}

impl Ctx<'_> {
    fn label(&mut self, what: &str) -> String {
        self.seq += 1;
        format!("{:02}-{what}", self.seq)
    }

    /// Measures one cell on every side, `--rounds` times with the sides alternating, and returns
    /// each side's median run.
    fn cells(&mut self, modes: &[Mode], inflight: usize, size: usize, instances: usize, shared: bool) -> Vec<Cell> {
        let mut runs: Vec<Vec<Cell>> = vec![Vec::new(); modes.len()];
        for round in 0..self.args.rounds.max(1) {
            let mut order: Vec<usize> = (0..modes.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                runs[i].push(self.cell(modes[i], inflight, size, instances, shared));
            }
        }
        runs.into_iter()
            .map(|mut side| {
                let runs: Vec<_> = side.iter().map(Cell::summary).collect();
                side.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
                let mut median = side.swap_remove(side.len() / 2);
                median.runs = runs;
                median
            })
            .collect()
    }

    fn cell(&mut self, mode: Mode, inflight: usize, size: usize, instances: usize, shared: bool) -> Cell {
        let a = self.args;
        let count = if size >= 64 * 1024 { a.big_calls } else { a.calls };
        let warmup = (count / 10).clamp(inflight as u64, 2000);
        let mut servers = Vec::new();
        for i in 0..instances {
            let label = self.label(&format!("{}-server{i}-{inflight}x{size}", mode.name()));
            let role_name = match mode {
                Mode::Floor => "responder",
                Mode::Mcp => "server",
            };
            let url = &self.server_urls[i % self.server_urls.len()];
            let mut role: Vec<String> = ["--role", role_name, "--url", url].map(String::from).to_vec();
            if shared {
                role.push("--shared".into());
            }
            let mut p = Proc::spawn_in(&label, &role, a.perf.as_ref(), a.callgrind.as_ref());
            p.expect("ready", Duration::from_secs(600));
            servers.push(p);
        }
        let label = self.label(&format!("{}-client-{inflight}x{size}", mode.name()));
        let role: Vec<String> = [
            "--role",
            "client",
            "--url",
            &self.url,
            "--mode",
            mode.name(),
            "--n",
            &inflight.to_string(),
            "--size",
            &size.to_string(),
            "--count",
            &count.to_string(),
            "--warmup",
            &warmup.to_string(),
            "--secs",
            &a.secs.to_string(),
        ]
        .map(String::from)
        .to_vec();
        let mut client = Proc::spawn_in(&label, &role, a.perf.as_ref(), a.callgrind.as_ref());
        let ready = client.expect("ready", Duration::from_secs(120));
        let server_cpu = |ps: &[Proc]| ps.iter().map(|p| cpu_secs(p.pid)).sum::<f64>();
        let stats = a.syscalls.then(|| {
            let tmp = std::env::temp_dir();
            let server_pids: Vec<u32> = servers.iter().map(|p| p.pid).collect();
            [vec![client.pid], server_pids, self.broker_pids.clone()].map(|pids| PerfStat::start(&pids, &tmp))
        });
        let broker_cpu = |pids: &[u32]| pids.iter().map(|&p| cpu_secs(p)).sum::<f64>();
        let (s0, b0) = (server_cpu(&servers), broker_cpu(&self.broker_pids));
        let (steal0, window) = (host_steal_secs(), Instant::now());
        if a.callgrind.is_some() {
            callgrind_start(&servers);
            callgrind_start(std::slice::from_ref(&client));
        }
        client.send("go");
        let r = client.expect("result", Duration::from_secs_f64(a.secs + 120.0));
        let (s1, b1) = (server_cpu(&servers), broker_cpu(&self.broker_pids));
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let steal = (host_steal_secs() - steal0) / (window.elapsed().as_secs_f64() * cores);
        if let Some(dir) = &a.callgrind {
            // Counted from "go", after the warm-up.
            let calls = r.get("calls").and_then(Value::as_u64).unwrap_or(0);
            for s in &servers {
                callgrind_control(&["--dump", &s.pid.to_string()]);
                let file = dir.join(format!("{}.out", s.label));
                let ir = callgrind_total(&file);
                eprintln!(
                    "  callgrind {}: {ir} instructions, {:.0} per call",
                    s.label,
                    ir as f64 / calls.max(1) as f64
                );
            }
        }
        let counts = stats.map(|s| s.map(PerfStat::stop));
        let server_hwm_kib = servers.iter().map(|p| vm_kib(p.pid, "VmHWM")).max().unwrap_or(0);
        let client_label = client.label.clone();
        client.stop();
        if let Some(dir) = &a.callgrind {
            // The client's counts are written as it exits.
            let calls = r.get("calls").and_then(Value::as_u64).unwrap_or(0);
            let ir = callgrind_total(&dir.join(format!("{client_label}.out")));
            eprintln!(
                "  callgrind {client_label}: {ir} instructions, {:.0} per call",
                ir as f64 / calls.max(1) as f64
            );
        }
        for s in servers {
            s.stop();
        }
        let f = |k: &str| r.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let cell = Cell {
            mode,
            inflight,
            size,
            instances,
            calls: r.get("calls").and_then(Value::as_u64).unwrap_or(0),
            errors: r.get("errors").and_then(Value::as_u64).unwrap_or(0),
            wall_s: f("wall_s"),
            p50_ms: f("p50_ms"),
            p99_ms: f("p99_ms"),
            client_cpu: f("cpu_s"),
            client_hwm_kib: r.get("hwm_kib").and_then(Value::as_u64).unwrap_or(0),
            server_cpu: s1 - s0,
            server_hwm_kib,
            broker_cpu: b1 - b0,
            receive_max: ready.get("receive_max").and_then(Value::as_u64),
            counts,
            runs: Vec::new(),
            stolen: steal,
        };
        if cell.errors > 0 {
            eprintln!("  {} errors, first: {}", cell.errors, r["first_error"]);
        }
        let run = cell.summary();
        eprintln!(
            "  {:<8} x{:<3} {:>9} inst {}: {:>8.0} calls/s  p50 {:>7.2} ms  p99 {:>7.2} ms  ({} calls in {:.2} s; \
             µs/call client {:.0} server {:.0} broker {:.0}; {:.2} cores busy, {:.1}% stolen)",
            mode.name(),
            inflight,
            size_label(size),
            instances,
            cell.rate(),
            cell.p50_ms,
            cell.p99_ms,
            cell.calls,
            cell.wall_s,
            run.cpu_us[0],
            run.cpu_us[1],
            run.cpu_us[2],
            (cell.client_cpu + cell.server_cpu + cell.broker_cpu) / cell.wall_s,
            run.stolen * 100.0,
        );
        cell
    }
}

/// Starts callgrind's counting in each process, from zero.
fn callgrind_start(procs: &[Proc]) {
    for p in procs {
        callgrind_control(&["-i", "on", &p.pid.to_string()]);
        callgrind_control(&["-z", &p.pid.to_string()]);
    }
}

fn callgrind_control(args: &[&str]) {
    let out = Command::new("callgrind_control").args(args).output();
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        eprintln!("callgrind_control {args:?} failed: {out:?}");
    }
}

/// The instructions counted in a callgrind output (the dumps since the last, summed).
fn callgrind_total(file: &std::path::Path) -> u64 {
    // `callgrind_control -d` writes `<file>.1`, `<file>.2`, ...; the process's exit, `<file>`.
    let mut total = 0;
    let dumps = (1..).map(|n| format!("{}.{n}", file.display()));
    for path in std::iter::once(file.display().to_string()).chain(dumps) {
        let Ok(text) = std::fs::read_to_string(&path) else {
            if path == file.display().to_string() {
                continue;
            }
            break;
        };
        total += text
            .lines()
            .find_map(|l| l.strip_prefix("summary: ").or_else(|| l.strip_prefix("totals: ")))
            .and_then(|v| v.trim().split(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

/// `perf stat` counting syscalls and context switches of some processes.
struct PerfStat {
    child: Option<Child>,
    out: PathBuf,
}

impl PerfStat {
    fn start(pids: &[u32], dir: &std::path::Path) -> PerfStat {
        let out = dir.join(format!("bench-stat-{}-{}.csv", std::process::id(), pids[0]));
        let pids = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                "raw_syscalls:sys_enter,context-switches",
                "-p",
                &pids,
                "-o",
            ])
            .arg(&out)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        // Let it attach before the window opens.
        std::thread::sleep(Duration::from_millis(300));
        PerfStat { child, out }
    }

    fn stop(mut self) -> (u64, u64) {
        if let Some(child) = &mut self.child {
            let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let count = |event: &str| {
            text.lines()
                .find(|l| l.contains(event))
                .and_then(|l| l.split(',').next())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        (count("raw_syscalls:sys_enter"), count("context-switches"))
    }
}

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = if let Some(n) = s.strip_suffix('k') {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 1024 * 1024)
    } else {
        (s.as_str(), 1)
    };
    num.parse::<usize>()
        .map(|n| n * mult)
        .map_err(|e| format!("bad payload size {s:?}: {e}"))
}

fn size_label(n: usize) -> String {
    if n >= 1024 * 1024 && n.is_multiple_of(1024 * 1024) {
        format!("{} MiB", n / (1024 * 1024))
    } else if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{} MB", n / 1_000_000)
    } else if n >= 1024 && n.is_multiple_of(1024) {
        format!("{} KiB", n / 1024)
    } else {
        format!("{n} B")
    }
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let out = if o.stdout.is_empty() { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&out)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_else(|_| "?".into())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "- nproc: {nproc}; CPU: {cpu}\n- kernel: {}\n- broker: {}\n- rustc: {}\n- load average at start: {}",
        shell("uname", &["-r"]),
        shell("mosquitto", &["-h"]),
        shell("rustc", &["-V"]),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    )
}

fn fmt_ratio(r: f64) -> String {
    if r.is_finite() {
        format!("{r:.2}")
    } else {
        "–".into()
    }
}

fn orchestrate(a: &Args) -> BoxResult<()> {
    let sizes = a.payload.iter().map(|s| parse_size(s)).collect::<Result<Vec<_>, _>>()?;
    let modes: Vec<Mode> = a
        .modes
        .iter()
        .map(|m| match m.as_str() {
            "floor" => Ok(Mode::Floor),
            "mcpmqtt" | "mcp" => Ok(Mode::Mcp),
            other => Err(format!("unknown mode {other}: floor or mcpmqtt")),
        })
        .collect::<Result<_, _>>()?;
    for dir in [&a.perf, &a.callgrind].into_iter().flatten() {
        std::fs::create_dir_all(dir)?;
    }
    // The harness logs everything (`log_type all`): a line per packet would cost the broker CPU.
    let mut builder = mosquitto::Mosquitto::builder()
        .extra_config("log_type none")
        .extra_config("log_type error")
        .extra_config("log_type warning");
    if let Some(n) = a.broker_max_inflight {
        builder = builder.extra_config(&format!("max_inflight_messages {n}"));
    }
    let broker = builder.start();
    let mut ctx = Ctx {
        args: a,
        url: broker.url(),
        server_urls: vec![broker.url()],
        broker_pids: vec![broker.pid()],
        seq: 0,
    };
    println!("## Machine\n\n{}", machine());
    println!(
        "- broker: Mosquitto on {} (max_inflight_messages {})\n",
        ctx.url,
        a.broker_max_inflight
            .map_or_else(|| "default (20)".to_owned(), |n| n.to_string())
    );
    let has = |s: &str| a.sections.iter().any(|x| x == s);
    let t0 = Instant::now();

    if has("matrix") {
        eprintln!("matrix: {modes:?} x in flight {:?} x payload {sizes:?}", a.inflight);
        let mut cells = Vec::new();
        for &size in &sizes {
            for &inflight in &a.inflight {
                cells.extend(ctx.cells(&modes, inflight, size, 1, false));
            }
        }
        print_matrix(&cells, &sizes, &a.inflight);
    }
    if has("scale") {
        eprintln!(
            "scale-out: {:?} instances, {} in flight, 100 B",
            a.scale, a.scale_inflight
        );
        let mut cells = Vec::new();
        for &n in &a.scale {
            cells.extend(ctx.cells(&modes, a.scale_inflight, 100, n, true));
        }
        print_scale(&cells, a);
    }
    if has("tools") {
        eprintln!("many tools: {:?} tools x {:?} clients at once", a.tools, a.crowd);
        many_tools(&mut ctx);
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let broker_hwm = vm_kib(broker.pid(), "VmHWM") / 1024;
    drop(broker);
    if has("cluster") {
        cluster_scale(a, &modes, ctx.seq)?;
    }
    println!(
        "Total {:.0} s. Mosquitto's peak RSS {broker_hwm} MiB. Load average at the end: {}",
        t0.elapsed().as_secs_f64(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    Ok(())
}

/// The scale-out section on a 3-node RMQTT cluster: the client on node 2, server instance i on
/// node i+1 (so calls cross between nodes), 100 B at `--scale-inflight`. The broker's CPU is
/// the three nodes'.
fn cluster_scale(a: &Args, modes: &[Mode], seq: usize) -> BoxResult<()> {
    eprintln!("cluster: {:?} instances on a 3-node RMQTT cluster", a.cluster_scale);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let cluster = runtime.block_on(rmqtt::RmqttCluster::start());
    let mut ctx = Ctx {
        args: a,
        url: cluster.url(2),
        server_urls: (1..=3).map(|n| cluster.url(n)).collect(),
        broker_pids: (1..=3).map(|n| cluster.pid(n)).collect(),
        seq,
    };
    let mut cells = Vec::new();
    for &n in &a.cluster_scale {
        cells.extend(ctx.cells(modes, a.scale_inflight, 100, n, true));
    }
    println!(
        "## Cluster: server instances across a 3-node RMQTT cluster, {} in flight, 100 B\n",
        a.scale_inflight
    );
    println!(
        "The client on node 2; instance i on node i+1, all on one shared subscription. Three \
         broker processes and every side share the 2 cores: this measures what the cluster \
         costs a call, not how it scales.\n"
    );
    print_instances(&cells, &a.cluster_scale);
    drop(cluster);
    drop(runtime);
    Ok(())
}

/// mcpmqtt / floor for one measure, as the median of the ratios of runs made one after the other
/// (round by round): the machine's drift over a run of the bench cancels out of each pair.
fn paired(m: &Cell, f: &Cell, measure: impl Fn(&RunSummary) -> f64) -> f64 {
    let mut ratios: Vec<f64> = m
        .runs
        .iter()
        .zip(&f.runs)
        .map(|(a, b)| measure(a) / measure(b))
        .collect();
    if ratios.is_empty() {
        return f64::NAN;
    }
    ratios.sort_by(f64::total_cmp);
    ratios[ratios.len() / 2]
}

fn find(cells: &[Cell], mode: Mode, inflight: usize, size: usize) -> Option<&Cell> {
    cells
        .iter()
        .find(|c| c.mode == mode && c.inflight == inflight && c.size == size)
}

fn print_matrix(cells: &[Cell], sizes: &[usize], inflights: &[usize]) {
    if let Some(rm) = cells.iter().find_map(|c| c.receive_max) {
        println!("The broker's CONNACK Receive Maximum (seen by the floor's requester): {rm}\n");
    }
    println!("## mcpmqtt / floor\n");
    println!("Each side's median run; the ratios are the medians of the round-by-round ratios (see `--rounds`).\n");
    println!("| in flight | payload | floor calls/s | floor p50 ms | floor p99 ms | mcpmqtt calls/s | mcpmqtt p50 ms | mcpmqtt p99 ms | calls/s ratio | p50 ratio | p99 ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &size in sizes {
        for &n in inflights {
            let f = find(cells, Mode::Floor, n, size);
            let m = find(cells, Mode::Mcp, n, size);
            let col = |c: Option<&Cell>| match c {
                Some(c) => format!("{:.0} | {:.2} | {:.2}", c.rate(), c.p50_ms, c.p99_ms),
                None => "– | – | –".into(),
            };
            let (rr, r50, r99) = match (f, m) {
                (Some(f), Some(m)) => (
                    fmt_ratio(paired(m, f, |r| r.rate)),
                    fmt_ratio(paired(m, f, |r| r.p50_ms)),
                    fmt_ratio(paired(m, f, |r| r.p99_ms)),
                ),
                _ => ("–".into(), "–".into(), "–".into()),
            };
            println!(
                "| {n} | {} | {} | {} | {rr} | {r50} | {r99} |",
                size_label(size),
                col(f),
                col(m)
            );
        }
    }
    println!();
    print_resources("## Resources per cell", cells);
    print_targets(cells, sizes);
    print_stolen(cells);
    println!();
    if cells.iter().any(|c| c.counts.is_some()) {
        println!("## Syscalls and context switches per call (perf stat over the measured window)\n");
        println!("| side | in flight | payload | client syscalls | server syscalls | broker syscalls | client ctx sw | server ctx sw | broker ctx sw |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for c in cells {
            let Some(k) = c.counts else { continue };
            let per = |v: u64| v as f64 / c.calls.max(1) as f64;
            println!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
                c.mode.name(),
                c.inflight,
                size_label(c.size),
                per(k[0].0),
                per(k[1].0),
                per(k[2].0),
                per(k[0].1),
                per(k[1].1),
                per(k[2].1)
            );
        }
        println!();
    }
}

/// Issue 18's targets, for the cells this run measured, each as the median
/// of the round-by-round ratios ([`paired`]): the host's speed drifts more
/// between rounds than the two sides differ (the broker, the same program on
/// both sides, shows it).
fn print_targets(cells: &[Cell], sizes: &[usize]) {
    println!("## Targets (measured, not asserted)\n");
    let small = sizes.iter().copied().min().unwrap_or(100);
    let pair = |n: usize, size: usize| Some((find(cells, Mode::Mcp, n, size)?, find(cells, Mode::Floor, n, size)?));
    let line = |what: String, r: f64, target: &str, ok: bool| {
        println!("- {what}: {r:.2}x the floor's (target {target}): {}", verdict(ok));
    };
    for n in [1, 64] {
        let Some((m, f)) = pair(n, small) else { continue };
        let label = format!("{}, {n} in flight", size_label(small));
        // Indices into `RunSummary::cpu_us`.
        for (side, i) in [("server", 1), ("client", 0), ("broker", 2)] {
            let r = paired(m, f, |r| r.cpu_us[i]);
            let limit = if side == "broker" { 1.15 } else { 1.3 };
            line(
                format!("{label}: {side} CPU per call"),
                r,
                &format!("<= {limit}x"),
                r <= limit,
            );
        }
    }
    if let Some((m, f)) = pair(1, small) {
        let r = paired(m, f, |r| r.p50_ms);
        line(
            format!("sequential p50 ({})", size_label(small)),
            r,
            "<= 1.2x",
            r <= 1.2,
        );
    }
    if let Some((m, f)) = pair(64, small) {
        let r = paired(m, f, |r| r.rate);
        line(
            format!("64 in flight calls/s ({})", size_label(small)),
            r,
            ">= 0.9x",
            r >= 0.9,
        );
        let r = paired(m, f, |r| r.p99_ms);
        line(
            format!("64 in flight p99 ({})", size_label(small)),
            r,
            "<= 1.5x",
            r <= 1.5,
        );
    }
    for (size, limit) in [(10 * 1024, 0.85), (1_000_000, 0.75)] {
        for n in [1, 64] {
            let Some((m, f)) = pair(n, size) else { continue };
            let r = paired(m, f, |r| r.rate);
            let what = format!("{n} in flight calls/s ({})", size_label(size));
            line(what, r, &format!(">= {limit}x"), r >= limit);
        }
    }
}

/// How many runs had more than 5% of the machine's CPU time stolen by the
/// hypervisor: their figures describe a slower machine.
fn print_stolen(cells: &[Cell]) {
    let all: Vec<f64> = cells.iter().flat_map(|c| c.runs.iter().map(|r| r.stolen)).collect();
    let stolen = all.iter().filter(|&&s| s > 0.05).count();
    let most = all.iter().copied().fold(0.0, f64::max);
    println!(
        "\nRuns with more than 5% of the machine's CPU time stolen by the hypervisor: {stolen} of {} (at most {:.0}%).",
        all.len(),
        most * 100.0
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

fn print_resources(title: &str, cells: &[Cell]) {
    println!("{title}\n");
    println!("The median run of each side; \"runs\" lists the calls/s of all its runs, in the order run. CPU s over the measured window; µs/call = CPU s / calls. Peak RSS = VmHWM of the process (server: the largest instance).\n");
    println!("| side | inst | in flight | payload | runs calls/s | calls | errors | s | calls/s | p50 ms | p99 ms | CPU client s | CPU server s | CPU broker s | client µs/call | server µs/call | broker µs/call | RSS client MiB | RSS server MiB | stolen % |");
    println!("|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for c in cells {
        let runs = c
            .runs
            .iter()
            .map(|r| format!("{:.0}", r.rate))
            .collect::<Vec<_>>()
            .join(" / ");
        println!(
            "| {} | {} | {} | {} | {runs} | {} | {} | {:.2} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
            c.mode.name(),
            c.instances,
            c.inflight,
            size_label(c.size),
            c.calls,
            c.errors,
            c.wall_s,
            c.rate(),
            c.p50_ms,
            c.p99_ms,
            c.client_cpu,
            c.server_cpu,
            c.broker_cpu,
            c.us_per_call(c.client_cpu),
            c.us_per_call(c.server_cpu),
            c.us_per_call(c.broker_cpu),
            c.client_hwm_kib as f64 / 1024.0,
            c.server_hwm_kib as f64 / 1024.0,
            c.stolen * 100.0,
        );
    }
    println!();
}

fn print_scale(cells: &[Cell], a: &Args) {
    println!(
        "## Scale-out: server instances on one shared subscription, {} in flight, 100 B\n",
        a.scale_inflight
    );
    print_instances(cells, &a.scale);
}

/// The table of a scale-out: one row per number of server instances, then resources.
fn print_instances(cells: &[Cell], scale: &[usize]) {
    println!("| instances | floor calls/s | floor p50 ms | floor p99 ms | mcpmqtt calls/s | mcpmqtt p50 ms | mcpmqtt p99 ms | calls/s ratio | p99 ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &n in scale {
        let f = cells.iter().find(|c| c.mode == Mode::Floor && c.instances == n);
        let m = cells.iter().find(|c| c.mode == Mode::Mcp && c.instances == n);
        let col = |c: Option<&Cell>| match c {
            Some(c) => format!("{:.0} | {:.2} | {:.2}", c.rate(), c.p50_ms, c.p99_ms),
            None => "– | – | –".into(),
        };
        let (rr, r99) = match (f, m) {
            (Some(f), Some(m)) => (
                fmt_ratio(paired(m, f, |r| r.rate)),
                fmt_ratio(paired(m, f, |r| r.p99_ms)),
            ),
            _ => ("–".into(), "–".into()),
        };
        println!("| {n} | {} | {} | {rr} | {r99} |", col(f), col(m));
    }
    println!();
    print_resources("### Resources (server CPU summed over instances)", cells);
}

fn many_tools(ctx: &mut Ctx) {
    let a = ctx.args;
    let url = ctx.url.clone();
    println!("## Many tools\n");
    println!(
        "One server hosting N tools; a client connected before it starts, then crowds of clients \
         connecting at once to the full namespace. \"Lists\" is `tools()`: every Tool Card, fetched \
         from the Server Cards' index. \"Names\" is `tool_names()`: the Server Cards alone.\n"
    );
    let mut starts = Vec::new();
    let mut crowds = Vec::new();
    for &tools in &a.tools {
        let ns = format!("{TOOLS_NS}-{tools}");
        let n = tools.to_string();
        let common = |role: &str, n: &str| -> Vec<String> {
            [
                "--role",
                role,
                "--url",
                &url,
                "--ns",
                &ns,
                "--n",
                n,
                "--count",
                &tools.to_string(),
            ]
            .map(String::from)
            .to_vec()
        };
        // A client already connected when the server starts.
        let mut live = Proc::spawn(&ctx.label("lister-live"), &common("lister", &n), a.perf.as_ref());
        live.expect("ready", Duration::from_secs(30));
        live.send("go");
        let label = ctx.label("server-tools");
        let mut server = Proc::spawn(&label, &common("server", &n), a.perf.as_ref());
        let ready = server.expect("ready", Duration::from_secs(120));
        let hwm = vm_kib(server.pid, "VmHWM");
        let server_cpu = cpu_secs(server.pid);
        let live_r = live.expect("result", Duration::from_secs(120));
        let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let live_ms = (f(&live_r, "done_us") - f(&ready, "started_us")) / 1e3;
        starts.push(format!(
            "| {tools} | {:.0} ms | {:.0} ms | {server_cpu:.2} s | {:.1} MiB | {live_ms:.0} ms ({} listed) |",
            f(&ready, "build_ms"),
            f(&ready, "start_ms"),
            hwm as f64 / 1024.0,
            live_r["listed"],
        ));
        live.stop();
        for &clients in &a.crowd {
            let broker_before = vm_kib(ctx.broker_pids[0], "VmRSS");
            let broker_cpu = cpu_secs(ctx.broker_pids[0]);
            let mut crowd = Proc::spawn(
                &ctx.label("crowd"),
                &common("crowd", &clients.to_string()),
                a.perf.as_ref(),
            );
            crowd.expect("ready", Duration::from_secs(30));
            crowd.send("go");
            let r = crowd.expect("result", Duration::from_secs(600));
            let broker_after = vm_kib(ctx.broker_pids[0], "VmRSS");
            let broker_cpu = cpu_secs(ctx.broker_pids[0]) - broker_cpu;
            let crowd_cpu = cpu_secs(crowd.pid);
            crowds.push(format!(
                "| {tools} | {clients} | {} of {clients}{} | {:.0} / {:.0} ms | {:.0} / {:.0} / {:.0} ms | {crowd_cpu:.2} s | {broker_cpu:.2} s | {:.1} MiB ({:.2} MiB a client) | {:.1} → {:.1} MiB |",
                r["complete"],
                if f(&r, "failures") > 0.0 { format!(" ({})", r["first_failure"]) } else { String::new() },
                f(&r, "names_p50_ms"),
                f(&r, "names_max_ms"),
                f(&r, "cards_p50_ms"),
                f(&r, "cards_p95_ms"),
                f(&r, "cards_max_ms"),
                f(&r, "hwm_kib") / 1024.0,
                f(&r, "hwm_kib") / 1024.0 / clients as f64,
                broker_before as f64 / 1024.0,
                broker_after as f64 / 1024.0,
            ));
            crowd.stop();
        }
        server.stop();
    }
    println!("| tools | build | start() (connect, subscribe, every card PUBACKed) | server CPU until ready | server peak RSS | a live client lists all, from server process start |");
    println!("|---:|---:|---:|---:|---:|---|");
    for row in starts {
        println!("{row}");
    }
    println!();
    println!("| tools | clients at once | listed every tool | names p50 / max | lists p50 / p95 / max | clients' CPU | broker CPU | clients' peak RSS | broker RSS before → after |");
    println!("|---:|---:|---|---:|---:|---:|---:|---:|---|");
    for row in crowds {
        println!("{row}");
    }
    println!();
}
