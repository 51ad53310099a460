//! A 3-node RMQTT cluster (raft) on free loopback ports, each node with its
//! own files in a temporary directory, stopped when dropped: what the
//! Mosquitto harness is for one broker.
//!
//! Needs `rmqttd` 0.24 (`cargo install rmqttd --version 0.24.0`, after
//! `apt-get install -y cmake protobuf-compiler`), found on the `PATH`, in
//! `~/.cargo/bin`, or at `RMQTTD_BIN`; a test that needs it fails, loudly,
//! without it.
//!
//! Each node runs the plugins the product relies on: `rmqtt-cluster-raft`,
//! `rmqtt-retainer` (retained cards), `rmqtt-shared-subscription`, and
//! `rmqtt-http-api`, whose `/api/v1/nodes` tells when every node sees the
//! others running; with an ACL, `rmqtt-acl` too, loading the same file on
//! every node. The raft timers are shortened (heartbeat 100 ms, proposal
//! batches of 5 ms): a connect then takes about 0.2 s rather than 0.4 s.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::Spawned;

/// How long a cluster may take to come up: every node running, as every
/// node sees it. About 6 s when the machine is idle.
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// One node of the cluster.
struct Node {
    id: usize,
    mqtt: u16,
    grpc: u16,
    raft: u16,
    http: u16,
    dir: PathBuf,
    process: Option<Spawned>,
}

/// A running RMQTT cluster.
pub struct RmqttCluster {
    nodes: Vec<Node>,
    bin: PathBuf,
    _dir: tempfile::TempDir,
}

/// What a cluster is started with.
#[derive(Default)]
pub struct RmqttBuilder {
    acl: Option<String>,
    nodes: Option<usize>,
}

impl RmqttBuilder {
    /// Loads this `rmqtt-acl` plugin configuration on every node (and
    /// refuses anonymous clients).
    pub fn acl(mut self, toml: &str) -> Self {
        self.acl = Some(toml.to_owned());
        self
    }

    /// Starts the cluster and returns once every node sees every node
    /// running and (without an ACL) a message published on any node reaches
    /// a subscriber on any other. Blocks while the nodes start: call it from
    /// a multi-thread runtime (`#[tokio::test(flavor = "multi_thread")]`).
    pub async fn start(self) -> RmqttCluster {
        let with_acl = self.acl.is_some();
        let cluster = tokio::task::block_in_place(|| RmqttCluster::launch(self.nodes.unwrap_or(3), self.acl));
        if !with_acl {
            cluster.wait_until_routed().await;
        }
        cluster
    }
}

/// Where `rmqttd` is.
pub fn rmqttd_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("RMQTTD_BIN") {
        return PathBuf::from(bin);
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("rmqttd")).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    on_path
        .into_iter()
        .chain(cargo_home.map(|c| c.join("bin/rmqttd")))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "rmqttd not found (on the PATH, in ~/.cargo/bin, or at RMQTTD_BIN): the cluster tests need RMQTT 0.24; \
                 install it with `apt-get install -y cmake protobuf-compiler && cargo install rmqttd --version 0.24.0` \
                 (or run `bash .ci/run`, which does)"
            )
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl RmqttCluster {
    /// A 3-node cluster, anonymous clients allowed, no ACL.
    pub async fn start() -> RmqttCluster {
        RmqttCluster::builder().start().await
    }

    /// A builder, for a cluster with an ACL.
    pub fn builder() -> RmqttBuilder {
        RmqttBuilder::default()
    }

    /// Starts the cluster, on fresh ports and files each time a node exits
    /// while starting: the ports are found free, then let go for `rmqttd` to
    /// bind, and another process (a test's outgoing connection) may take one
    /// in between.
    fn launch(count: usize, acl: Option<String>) -> RmqttCluster {
        const ATTEMPTS: usize = 3;
        let mut attempt = 1;
        loop {
            match RmqttCluster::try_launch(count, acl.clone()) {
                Ok(cluster) => return cluster,
                Err(exited) if attempt < ATTEMPTS => {
                    eprintln!(
                        "{exited}
(attempt {attempt} of {ATTEMPTS}: starting the cluster again on other ports)"
                    );
                    attempt += 1;
                }
                Err(exited) => panic!("{exited}"),
            }
        }
    }

    /// One attempt of [`RmqttCluster::launch`]: `Err` (with the logs) when a
    /// node exits while starting; panics when the cluster does not form in
    /// time.
    fn try_launch(count: usize, acl: Option<String>) -> Result<RmqttCluster, String> {
        let bin = rmqttd_bin();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let nodes: Vec<Node> = (1..=count)
            .map(|id| Node {
                id,
                mqtt: free_port(),
                grpc: free_port(),
                raft: free_port(),
                http: free_port(),
                dir: dir.path().join(format!("node{id}")),
                process: None,
            })
            .collect();
        let grpc_addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"{}@127.0.0.1:{}\"", n.id, n.grpc))
            .collect();
        let raft_addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("\"{}@127.0.0.1:{}\"", n.id, n.raft))
            .collect();
        let mut plugins = vec![
            "rmqtt-cluster-raft",
            "rmqtt-retainer",
            "rmqtt-shared-subscription",
            "rmqtt-http-api",
        ];
        if acl.is_some() {
            plugins.push("rmqtt-acl");
        }
        for node in &nodes {
            let plugin_dir = node.dir.join("plugins");
            std::fs::create_dir_all(&plugin_dir).expect("the node's directory");
            let startups: Vec<String> = plugins.iter().map(|p| format!("\"{p}\"")).collect();
            let conf = format!(
                "node.id = {id}\n\
                 node.busy.check_enable = false\n\
                 rpc.server_addr = \"127.0.0.1:{grpc}\"\n\
                 log.to = \"file\"\n\
                 log.level = \"info\"\n\
                 log.dir = \"{dir}\"\n\
                 log.file = \"rmqtt.log\"\n\
                 plugins.dir = \"{plugin_dir}\"\n\
                 plugins.default_startups = [{startups}]\n\
                 listener.tcp.external.addr = \"127.0.0.1:{mqtt}\"\n\
                 listener.tcp.external.allow_anonymous = {anonymous}\n\
                 listener.tcp.external.max_packet_size = \"16m\"\n\
                 listener.tcp.external.max_inflight = 128\n\
                 listener.tcp.external.max_mqueue_len = 10000\n\
                 listener.tcp.external.retain_available = true\n\
                 listener.tcp.external.shared_subscription = true\n\
                 listener.tcp.external.max_handshake_limit = 0\n\
                 listener.tcp.external.nodelay = true\n",
                id = node.id,
                grpc = node.grpc,
                dir = node.dir.display(),
                plugin_dir = plugin_dir.display(),
                startups = startups.join(", "),
                mqtt = node.mqtt,
                anonymous = acl.is_none(),
            );
            std::fs::write(node.dir.join("rmqtt.toml"), conf).expect("rmqtt.toml");
            let raft = format!(
                "node_grpc_addrs = [{grpc}]\n\
                 raft_peer_addrs = [{raft}]\n\
                 laddr = \"127.0.0.1:{port}\"\n\
                 leader_id = 1\n\
                 try_lock_timeout = \"3s\"\n\
                 raft.heartbeat = \"100ms\"\n\
                 raft.proposal_batch_timeout = \"5ms\"\n",
                grpc = grpc_addrs.join(", "),
                raft = raft_addrs.join(", "),
                port = node.raft,
            );
            std::fs::write(plugin_dir.join("rmqtt-cluster-raft.toml"), raft).expect("rmqtt-cluster-raft.toml");
            let http = format!("http_laddr = \"127.0.0.1:{}\"\n", node.http);
            std::fs::write(plugin_dir.join("rmqtt-http-api.toml"), http).expect("rmqtt-http-api.toml");
            std::fs::write(plugin_dir.join("rmqtt-retainer.toml"), "storage.type = \"ram\"\n")
                .expect("rmqtt-retainer.toml");
            std::fs::write(plugin_dir.join("rmqtt-shared-subscription.toml"), "").expect("shared-subscription");
            if let Some(acl) = &acl {
                std::fs::write(plugin_dir.join("rmqtt-acl.toml"), acl).expect("rmqtt-acl.toml");
            }
        }
        let mut cluster = RmqttCluster { nodes, bin, _dir: dir };
        // One node at a time, each joining the leader (node 1) once the
        // nodes before it run: nodes started together may each find no
        // leader and form clusters of their own.
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
            cluster.wait_for_raft(i)?;
        }
        cluster.wait_until_formed(cluster.nodes.len())?;
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let console = std::fs::File::create(node.dir.join("console.log")).expect("console.log");
        let mut command = Command::new(&self.bin);
        command
            .arg("-f")
            .arg(node.dir.join("rmqtt.toml"))
            .arg("--id")
            .arg(node.id.to_string())
            .current_dir(&node.dir)
            .stdin(Stdio::null())
            .stdout(console.try_clone().expect("console.log"))
            .stderr(console);
        node.process = Some(Spawned::spawn(&mut command));
    }

    /// Waits until node `index` (0-based) listens on its raft port: it has
    /// found the leader (node 1 is it), or become it.
    fn wait_for_raft(&mut self, index: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let port = self.nodes[index].raft;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(Ok(Some(status))) = self.nodes[index].process.as_mut().map(|p| p.0.try_wait()) {
                return Err(format!(
                    "rmqttd node {} exited ({status}) while starting:\n{}",
                    index + 1,
                    self.logs()
                ));
            }
            assert!(
                Instant::now() < deadline,
                "rmqttd node {} did not start its raft server within {START_TIMEOUT:?}:\n{}",
                index + 1,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Waits until the HTTP API of every node started lists `want` nodes
    /// running, and each accepts MQTT connections. `Err`, with the logs,
    /// when a node exits; panics past [`START_TIMEOUT`].
    fn wait_until_formed(&mut self, want: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let ready = self
                .nodes
                .iter()
                .filter(|n| n.process.is_some())
                .all(|n| running_nodes(n.http) >= want && TcpStream::connect(("127.0.0.1", n.mqtt)).is_ok());
            if ready {
                return Ok(());
            }
            let exited = self.nodes.iter_mut().find_map(|node| {
                let status = node.process.as_mut()?.0.try_wait().ok()??;
                Some((node.id, status))
            });
            if let Some((id, status)) = exited {
                return Err(format!(
                    "rmqttd node {id} exited ({status}) while starting:\n{}",
                    self.logs()
                ));
            }
            if Instant::now() > deadline {
                panic!(
                    "the RMQTT cluster did not form within {START_TIMEOUT:?}:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a message published on each node reaches a subscriber on
    /// each other node: the routes are in place cluster-wide.
    async fn wait_until_routed(&self) {
        use super::fixtures::Raw;
        let n = self.nodes.len();
        let mut subscribers = Vec::new();
        for j in 1..=n {
            let mut raw = Raw::connect_at("127.0.0.1", self.port(j), &format!("harness-sub-{j}"), None).await;
            raw.subscribe(&format!("harness/routes/{j}/#")).await;
            subscribers.push(raw);
        }
        let mut publishers = Vec::new();
        for i in 1..=n {
            publishers.push(Raw::connect_at("127.0.0.1", self.port(i), &format!("harness-pub-{i}"), None).await);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        for (j, sub) in subscribers.iter_mut().enumerate() {
            for (i, publisher) in publishers.iter_mut().enumerate() {
                if i == j {
                    continue;
                }
                loop {
                    let topic = format!("harness/routes/{}/from/{}", j + 1, i + 1);
                    publisher.publish(&topic, "probe", Default::default()).await;
                    let got = sub.recv_within(Duration::from_millis(200)).await;
                    if got.is_some_and(|m| m.topic == topic.as_bytes()) {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "node {} never routed a message to a subscriber on node {}:\n{}",
                        i + 1,
                        j + 1,
                        self.logs()
                    );
                }
            }
        }
        for raw in subscribers.iter().chain(&publishers) {
            let _ = raw.client.disconnect().await;
        }
    }

    /// The MQTT URL of node `n` (1-based).
    pub fn url(&self, n: usize) -> String {
        format!("mqtt://127.0.0.1:{}", self.nodes[n - 1].mqtt)
    }

    /// The MQTT port of node `n` (1-based).
    pub fn port(&self, n: usize) -> u16 {
        self.nodes[n - 1].mqtt
    }

    /// The URLs of the nodes `ns`, comma-separated: a broker list.
    pub fn urls(&self, ns: &[usize]) -> String {
        ns.iter().map(|&n| self.url(n)).collect::<Vec<_>>().join(",")
    }

    /// The process id of node `n` (1-based), for its CPU time; 0 once killed.
    pub fn pid(&self, n: usize) -> u32 {
        self.nodes[n - 1].process.as_ref().map_or(0, |p| p.0.id())
    }

    /// SIGKILLs node `n` (1-based): no goodbye to its clients, no Last Will.
    pub fn kill(&mut self, n: usize) {
        if let Some(mut p) = self.nodes[n - 1].process.take() {
            p.kill();
        }
    }

    /// How many nodes node `n`'s HTTP API lists as running.
    pub fn running_as_seen_by(&self, n: usize) -> usize {
        running_nodes(self.nodes[n - 1].http)
    }

    /// Every node's log, for a failing test.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for node in &self.nodes {
            for file in ["console.log", "rmqtt.log"] {
                let text = std::fs::read_to_string(node.dir.join(file)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(60)..];
                out.push_str(&format!(
                    "--- rmqttd node {} {file} (last {} lines) ---\n{}\n",
                    node.id,
                    tail.len(),
                    tail.join("\n")
                ));
            }
        }
        out
    }

    /// The directory of node `n`'s files.
    pub fn dir(&self, n: usize) -> &Path {
        &self.nodes[n - 1].dir
    }
}

impl Drop for RmqttCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for node in &mut self.nodes {
            if let Some(mut p) = node.process.take() {
                p.kill();
            }
        }
    }
}

/// How many nodes the HTTP API on `port` lists as running (0 when it does
/// not answer).
fn running_nodes(port: u16) -> usize {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /api/v1/nodes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut body = String::new();
    let _ = stream.read_to_string(&mut body);
    body.replace(' ', "").matches("\"running\":true").count()
}
