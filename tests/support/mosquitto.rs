//! A real Mosquitto 2.x broker for integration tests (synchronous, std only).
//!
//! ```ignore
//! mod support;
//! use support::mosquitto::Mosquitto;
//!
//! let broker = Mosquitto::start();                      // anonymous access
//! let url = broker.url();                               // "mqtt://127.0.0.1:PORT"
//!
//! let secured = Mosquitto::builder()
//!     .user("scout", "pw")
//!     .acl_file("user scout\ntopic write a/b\n")
//!     .start();
//! ```
//!
//! Every broker gets its own temporary directory ([`Mosquitto::dir`]), removed
//! when the [`Mosquitto`] is dropped. It holds:
//!
//! | file             | what                                                    |
//! |------------------|---------------------------------------------------------|
//! | `mosquitto.conf` | the generated configuration                             |
//! | `mosquitto.log`  | the broker's log (`log_type all`)                       |
//! | `console.log`    | the broker's stdout + stderr (errors before the log opens) |
//! | `passwd`         | password file, when [`MosquittoBuilder::user`] was used  |
//! | `acl`            | ACL file, when [`MosquittoBuilder::acl_file`] was used   |
//! | `dynsec.json`    | dynamic-security config, when [`MosquittoBuilder::dynsec`] was used (the plugin rewrites it on changes) |
//! | `data/`          | persistence location, when [`MosquittoBuilder::persistence`] is on |
//!
//! When the tests run as root, Mosquitto drops its privileges to the
//! `mosquitto` user, so the directory (mode 0755) and every file in it are
//! chowned to that user. If running as root and no `mosquitto` user exists,
//! the config says `user root` instead.
//!
//! Environment overrides: `MOSQUITTO_BIN` (path of the broker binary) and
//! `MOSQUITTO_DYNSEC_PLUGIN` (path of `mosquitto_dynamic_security.so`).
//!
//! If the test that owns a broker panics, the broker's log is printed to
//! stderr when the [`Mosquitto`] is dropped (cargo shows it for failed tests).
//!
//! ## Crashes: SIGKILL, then restart
//!
//! [`Mosquitto::kill`] SIGKILLs the broker (no goodbye to clients, nothing
//! saved) and [`Mosquitto::restart`] then starts it again on the same port
//! with the same files. With [`MosquittoBuilder::persistence`] on, what the
//! restarted broker knows is its last saved database (`data/mosquitto.db`):
//! Mosquitto saves it on a clean exit and otherwise only on autosave
//! (by default every 1800 s). [`MosquittoBuilder::autosave`] saves more
//! often, as far as Mosquitto allows: [`Autosave::OnEveryChange`] saves once
//! per pass of the broker's main loop in which anything persistent changed
//! (`autosave_on_changes true`, `autosave_interval 1`), which is the most
//! Mosquitto 2.0 offers. [`Mosquitto::saves`] counts the saves logged, so a
//! test can wait for the state it needs to be on disk before killing.
//!
//! Even so, a SIGKILL loses whatever changed after the last save:
//!
//! - QoS 1 messages the broker acknowledged (PUBACK) but had not saved: it
//!   forgets them, although their publisher was told they were taken;
//! - deliveries completed after the save (the receiver's PUBACK): the
//!   restarted broker still holds those messages as queued or in flight and
//!   delivers them again, so a receiver gets duplicates;
//! - sessions, subscriptions and retained messages created or changed after
//!   the save (a client that connected for the first time since gets
//!   `session present = 0`);
//! - anything Mosquitto never persists: in-flight packets on the wire, and
//!   the Last Will of a client connected at the time of the kill (the
//!   restarted broker has no connection to lose, so it publishes no Will for
//!   it; the client's reconnect finds its session instead).
//!
//! And any restart, clean or not, loses what Mosquitto 2.0.11 does not
//! restore from its database: **shared subscriptions** (`$share/...`). A
//! client's session comes back (`session present = 1`) with its queued
//! messages and its plain subscriptions, but without its shared ones, so a
//! publish that only they matched gets PUBACK 0x10 (no matching
//! subscribers) until the client subscribes again.
//!
//! The database is written to `mosquitto.db.new` and renamed over the old
//! one, so a kill during a save leaves the previous save intact. (A power
//! loss could lose more; a SIGKILL leaves the page cache alone.)

#![allow(dead_code)]

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

const HOST: &str = "127.0.0.1";
const NOT_FOUND: &str = "mosquitto not found: install it with `apt-get install -y mosquitto` (or run .ci/run)";
const START_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
const STOP_GRACE: Duration = Duration::from_secs(5);
const PORT_ATTEMPTS: usize = 3;
/// After the port accepts connections, how long the child must stay alive
/// before it counts as ready when its log does not (yet) say "running".
const ALIVE_GRACE: Duration = Duration::from_millis(500);
/// Iterations Mosquitto 2.0 uses for PBKDF2-SHA512 password hashes.
const PBKDF2_ITERATIONS: u32 = 101;
/// Salt length Mosquitto 2.0 uses (`mosquitto_passwd`, `mosquitto_ctrl`).
const SALT_LEN: usize = 12;

const CONF: &str = "mosquitto.conf";
const LOG: &str = "mosquitto.log";
const CONSOLE: &str = "console.log";
const PASSWD: &str = "passwd";
const ACL: &str = "acl";
const DYNSEC: &str = "dynsec.json";
const DATA: &str = "data";

/// A running (or stopped) Mosquitto broker listening on 127.0.0.1.
///
/// Stopped and its temporary directory removed on drop.
pub struct Mosquitto {
    child: Option<Child>,
    pid: u32,
    port: u16,
    bin: PathBuf,
    conf: String,
    // Declared last so it is dropped after the fields above.
    dir: tempfile::TempDir,
}

/// Configures a [`Mosquitto`] before starting it; see [`Mosquitto::builder`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MosquittoBuilder {
    users: Vec<(String, String)>,
    acl: Option<String>,
    dynsec: Option<String>,
    persistence: bool,
    autosave: Option<Autosave>,
    allow_anonymous: Option<bool>,
    extra: Vec<String>,
}

/// When a persistent broker saves its database between clean exits: what a
/// SIGKILL leaves behind. See [`MosquittoBuilder::autosave`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autosave {
    /// `autosave_interval {n}`: about every `n` seconds.
    EverySeconds(u32),
    /// `autosave_on_changes true` with `autosave_interval 1`: after every
    /// pass of the main loop in which a subscription changed, a retained
    /// message arrived or a message was queued for a client: under load,
    /// after nearly every packet. The most often Mosquitto saves; each save
    /// rewrites the whole database.
    OnEveryChange,
}

impl Mosquitto {
    /// Starts a broker that allows anonymous access, without ACL or persistence.
    ///
    /// Panics (with the broker's log) if it cannot be started.
    pub fn start() -> Mosquitto {
        Self::builder().start()
    }

    /// A builder for a broker with users, ACLs, dynamic security, persistence
    /// or extra configuration.
    pub fn builder() -> MosquittoBuilder {
        MosquittoBuilder::default()
    }

    /// The TCP port the broker listens on (127.0.0.1 only). Stays the same
    /// across [`Mosquitto::restart`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker URL, `mqtt://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("mqtt://{HOST}:{}", self.port)
    }

    /// The host the broker listens on: always `"127.0.0.1"`.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// Process id of the broker (of the last one started, if it is stopped).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the broker process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Everything the broker has logged so far (across restarts): the
    /// `mosquitto.log` file, followed by its stdout/stderr if it wrote any.
    pub fn log(&self) -> String {
        let mut log = read_lossy(&self.dir.path().join(LOG));
        let console = read_lossy(&self.dir.path().join(CONSOLE));
        if !console.trim().is_empty() {
            log.push_str("--- mosquitto stdout/stderr ---\n");
            log.push_str(&console);
        }
        log
    }

    /// Stops the broker: SIGTERM, then waits for it to exit (SIGKILL after
    /// 5 s). A graceful stop saves the persistence database. Idempotent.
    pub fn stop(&mut self) {
        // A frozen broker cannot act on SIGTERM.
        self.unfreeze();
        let Some(mut child) = self.child.take() else { return };
        if !matches!(child.try_wait(), Ok(None)) {
            return; // already exited (and now reaped)
        }
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .or_else(|_| {
                Command::new("sh")
                    .arg("-c")
                    .arg(format!("kill -TERM {}", child.id()))
                    .status()
            });
        if matches!(term, Ok(s) if s.success()) {
            let deadline = Instant::now() + STOP_GRACE;
            while Instant::now() < deadline {
                if !matches!(child.try_wait(), Ok(None)) {
                    return;
                }
                sleep(Duration::from_millis(10));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the broker with SIGKILL (no persistence save, no goodbyes to
    /// clients) and reaps it. Idempotent. [`Mosquitto::restart`] starts it
    /// again from its last saved database (see the module docs for what a
    /// SIGKILL loses).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the broker with SIGSTOP: its port still accepts TCP
    /// connections, but nothing is answered until [`Mosquitto::unfreeze`].
    pub fn freeze(&mut self) {
        assert!(self.signal("-STOP"), "could not SIGSTOP the broker");
    }

    /// Thaws a broker frozen with [`Mosquitto::freeze`] (SIGCONT).
    pub fn unfreeze(&mut self) {
        self.signal("-CONT");
    }

    /// Sends `signal` to the running broker; whether it was delivered.
    fn signal(&mut self, signal: &str) -> bool {
        let Some(child) = &self.child else { return false };
        Command::new("kill")
            .args([signal, &child.id().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// How many times the broker has logged saving its database (autosaves
    /// and saves on exit), across restarts.
    pub fn saves(&self) -> usize {
        read_lossy(&self.dir.path().join(LOG))
            .matches("Saving in-memory database")
            .count()
    }

    /// Stops the broker (if running; after [`Mosquitto::kill`] it is not,
    /// and nothing is saved) and starts it again on the same port with the
    /// same files, so persisted state and dynamic-security changes survive.
    /// Returns once the port accepts connections again.
    ///
    /// Panics (with the broker's log) if it cannot be started again.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            fix_ownership(self.dir.path());
            let (child, outcome) = launch(&self.bin, self.dir.path(), self.port);
            match outcome {
                Outcome::Ready => {
                    self.pid = child.id();
                    self.child = Some(child);
                    return;
                }
                Outcome::AddrInUse if Instant::now() < deadline => {
                    sleep(Duration::from_millis(100));
                }
                outcome => fail(outcome, self.port, &self.conf, self.dir.path()),
            }
        }
    }

    /// The temporary directory holding the broker's files (see the module docs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mosquitto {
    /// Stops the broker; the temporary directory is then removed. If the
    /// current thread is panicking, prints the tail of the broker log first.
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(300)..];
            eprintln!(
                "--- mosquitto on port {} (last {} log lines) ---\n{}\n--- end of mosquitto log ---",
                self.port,
                tail.len(),
                tail.join("\n")
            );
        }
    }
}

impl MosquittoBuilder {
    /// Adds a user to the broker's password file (hashed like
    /// `mosquitto_passwd`: PBKDF2-SHA512, 101 iterations). Implies
    /// `allow_anonymous false`.
    pub fn user(mut self, name: &str, password: &str) -> Self {
        assert!(
            !name.contains(':') && !name.contains('\n'),
            "bad mosquitto user name {name:?}"
        );
        self.users.push((name.to_owned(), password.to_owned()));
        self
    }

    /// Writes `contents` as the broker's `acl_file` (Mosquitto ACL syntax,
    /// e.g. `"user scout\ntopic write a/b\n"`) and references it.
    pub fn acl_file(mut self, contents: &str) -> Self {
        self.acl = Some(contents.to_owned());
        self
    }

    /// Loads the dynamic-security plugin with `json` as its config file
    /// (`plugin_opt_config_file`). Implies `allow_anonymous false`; clients
    /// and their password hashes live in the JSON (see
    /// [`dynsec_password_fields`]).
    pub fn dynsec(mut self, json: &str) -> Self {
        self.dynsec = Some(json.to_owned());
        self
    }

    /// Turns persistence on (`persistence_location` in the temp dir), so
    /// retained messages and sessions survive [`Mosquitto::restart`].
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// How often a persistent broker saves its database besides on a clean
    /// exit (default: Mosquitto's, every 1800 s). Only meaningful with
    /// [`Self::persistence`] on: it bounds what a SIGKILL loses.
    pub fn autosave(mut self, autosave: Autosave) -> Self {
        self.autosave = Some(autosave);
        self
    }

    /// Sets `allow_anonymous` explicitly, overriding what [`Self::user`] and
    /// [`Self::dynsec`] imply.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = Some(allow);
        self
    }

    /// Appends `line` verbatim to `mosquitto.conf` (after everything else).
    pub fn extra_config(mut self, line: &str) -> Self {
        self.extra.push(line.to_owned());
        self
    }

    /// Writes the files and starts the broker on a free 127.0.0.1 port,
    /// returning once the port accepts TCP connections.
    ///
    /// Panics if `mosquitto` is not installed, or (with the broker's log) if
    /// it cannot be started.
    pub fn start(self) -> Mosquitto {
        let bin = mosquitto_bin();
        let plugin = self.dynsec.as_ref().map(|_| dynsec_plugin());
        let dir = tempfile::Builder::new()
            .prefix("mosquitto-test-")
            .tempdir()
            .expect("create temp dir for mosquitto");
        let path = dir.path();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let run_as_root = running_as_root(path) && mosquitto_user().is_none();

        if !self.users.is_empty() {
            let passwd: String = self
                .users
                .iter()
                .map(|(user, pw)| format!("{user}:{}\n", passwd_hash(pw)))
                .collect();
            write_file(&path.join(PASSWD), &passwd, 0o600);
        }
        if let Some(acl) = &self.acl {
            write_file(&path.join(ACL), acl, 0o644);
        }
        if let Some(json) = &self.dynsec {
            write_file(&path.join(DYNSEC), json, 0o600);
        }
        if self.persistence {
            fs::create_dir(path.join(DATA)).expect("create persistence dir");
            fs::set_permissions(path.join(DATA), fs::Permissions::from_mode(0o755)).expect("chmod persistence dir");
        }
        File::create(path.join(CONSOLE)).expect("create console.log");

        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port();
            let conf = self.config(path, port, plugin.as_deref(), run_as_root);
            write_file(&path.join(CONF), &conf, 0o644);
            fix_ownership(path);
            let (child, outcome) = launch(&bin, path, port);
            match outcome {
                Outcome::Ready => {
                    return Mosquitto {
                        pid: child.id(),
                        child: Some(child),
                        port,
                        bin,
                        conf,
                        dir,
                    };
                }
                Outcome::AddrInUse => last = Some((port, conf)),
                outcome => fail(outcome, port, &conf, path),
            }
        }
        let (port, conf) = last.expect("at least one attempt");
        fail(Outcome::AddrInUse, port, &conf, path)
    }

    fn config(&self, dir: &Path, port: u16, plugin: Option<&Path>, run_as_root: bool) -> String {
        let d = dir.display();
        let anonymous = self
            .allow_anonymous
            .unwrap_or(self.users.is_empty() && self.dynsec.is_none());
        let mut c = String::from("# generated by tests/support/mosquitto.rs\n");
        c += "per_listener_settings false\n";
        c += &format!("listener {port} {HOST}\n");
        c += "set_tcp_nodelay true\n";
        c += &format!("allow_anonymous {anonymous}\n");
        c += &format!("log_dest file {d}/{LOG}\n");
        c += "log_type all\n";
        c += "log_timestamp true\n";
        c += "log_timestamp_format %Y-%m-%dT%H:%M:%S\n";
        c += "connection_messages true\n";
        if self.persistence {
            c += "persistence true\n";
            c += &format!("persistence_location {d}/{DATA}/\n");
            match self.autosave {
                None => {}
                Some(Autosave::EverySeconds(n)) => {
                    c += "autosave_on_changes false\n";
                    c += &format!("autosave_interval {n}\n");
                }
                Some(Autosave::OnEveryChange) => {
                    c += "autosave_on_changes true\n";
                    c += "autosave_interval 1\n";
                }
            }
        } else {
            c += "persistence false\n";
        }
        if !self.users.is_empty() {
            c += &format!("password_file {d}/{PASSWD}\n");
        }
        if self.acl.is_some() {
            c += &format!("acl_file {d}/{ACL}\n");
        }
        if let Some(plugin) = plugin {
            c += &format!("plugin {}\n", plugin.display());
            c += &format!("plugin_opt_config_file {d}/{DYNSEC}\n");
        }
        if run_as_root {
            c += "user root\n";
        }
        for line in &self.extra {
            c += line;
            c += "\n";
        }
        c
    }
}

/// Password fields for a client in a dynamic-security JSON file:
/// `(password, salt, iterations)`, the first two base64, as
/// `mosquitto_ctrl dynsec createClient` would write them
/// (`"password"`, `"salt"`, `"iterations"`).
///
/// Computed in-process (PBKDF2-HMAC-SHA512 over a random 12-byte
/// salt, 101 iterations, 64-byte output; checked against Python's
/// `hashlib.pbkdf2_hmac` and Mosquitto 2.0.11) — no external tool needed.
pub fn dynsec_password_fields(password: &str) -> (String, String, u32) {
    let salt = random_salt();
    let hash = pbkdf2_sha512(password.as_bytes(), &salt, PBKDF2_ITERATIONS);
    (base64(&hash), base64(&salt), PBKDF2_ITERATIONS)
}

/// A password-file hash as `mosquitto_passwd` writes it: `$7$101$salt$hash`.
fn passwd_hash(password: &str) -> String {
    let (hash, salt, iterations) = dynsec_password_fields(password);
    format!("$7${iterations}${salt}${hash}")
}

// ---------------------------------------------------------------------------
// Process handling

enum Outcome {
    Ready,
    AddrInUse,
    Exited(String),
    Timeout,
}

/// Spawns the broker and waits until it is ready, or has failed.
/// On failure the child has been killed and reaped.
fn launch(bin: &Path, dir: &Path, port: u16) -> (Child, Outcome) {
    let marks = (file_len(&dir.join(LOG)), file_len(&dir.join(CONSOLE)));
    let console = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(CONSOLE))
        .expect("open console.log");
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(dir.join(CONF))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(console.try_clone().expect("dup console.log"))
        .stderr(console)
        .spawn()
        .unwrap_or_else(|e| panic!("failed to run {}: {e}\n{NOT_FOUND}", bin.display()));
    let outcome = wait_ready(&mut child, dir, port, marks);
    if !matches!(outcome, Outcome::Ready) {
        let _ = child.kill();
        let _ = child.wait();
    }
    (child, outcome)
}

fn wait_ready(child: &mut Child, dir: &Path, port: u16, marks: (u64, u64)) -> Outcome {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + START_TIMEOUT;
    let mut accepted_at: Option<Instant> = None;
    loop {
        let new_output = || read_from(&dir.join(LOG), marks.0) + &read_from(&dir.join(CONSOLE), marks.1);
        match child.try_wait() {
            Ok(None) => {}
            Ok(Some(status)) => {
                return if new_output().contains("Address already in use") {
                    Outcome::AddrInUse
                } else {
                    Outcome::Exited(status.to_string())
                };
            }
            Err(e) => return Outcome::Exited(format!("wait failed: {e}")),
        }
        match accepted_at {
            None => {
                if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                    accepted_at = Some(Instant::now());
                    continue; // re-check liveness and the log right away
                }
            }
            // Something accepts on the port; make sure it is our broker (the
            // port may have been grabbed by another process in the meantime,
            // in which case ours exits with "Address already in use").
            Some(at) => {
                if new_output().contains(" running") || at.elapsed() >= ALIVE_GRACE {
                    return Outcome::Ready;
                }
            }
        }
        if Instant::now() >= deadline {
            return Outcome::Timeout;
        }
        sleep(POLL);
    }
}

fn fail(outcome: Outcome, port: u16, conf: &str, dir: &Path) -> ! {
    let why = match outcome {
        Outcome::Ready => unreachable!(),
        Outcome::AddrInUse => format!("port {port} already in use ({PORT_ATTEMPTS} attempts)"),
        Outcome::Exited(status) => format!("it exited ({status})"),
        Outcome::Timeout => format!(
            "127.0.0.1:{port} did not accept connections within {}s",
            START_TIMEOUT.as_secs()
        ),
    };
    panic!(
        "mosquitto failed to start: {why}\n--- {} ---\n{conf}--- mosquitto.log ---\n{}--- stdout/stderr ---\n{}--- end ---",
        dir.join(CONF).display(),
        read_lossy(&dir.join(LOG)),
        read_lossy(&dir.join(CONSOLE)),
    )
}

fn free_port() -> u16 {
    TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

fn mosquitto_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("MOSQUITTO_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "MOSQUITTO_BIN={} does not exist. {NOT_FOUND}",
            bin.display()
        );
        return bin;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/opt/homebrew/sbin"].map(PathBuf::from))
        .map(|d| d.join("mosquitto"))
        .find(|p| is_executable(p))
        .unwrap_or_else(|| panic!("{NOT_FOUND}"))
}

fn dynsec_plugin() -> PathBuf {
    const NAME: &str = "mosquitto_dynamic_security.so";
    if let Some(p) = std::env::var_os("MOSQUITTO_DYNSEC_PLUGIN") {
        return PathBuf::from(p);
    }
    let mut candidates: Vec<PathBuf> = Vec::new();
    for lib in ["/usr/lib", "/usr/local/lib", "/usr/lib64", "/lib"] {
        candidates.push(Path::new(lib).join(NAME));
        candidates.push(Path::new(lib).join("mosquitto").join(NAME));
        if let Ok(entries) = fs::read_dir(lib) {
            // multiarch dirs such as /usr/lib/x86_64-linux-gnu
            candidates.extend(entries.flatten().map(|e| e.path().join(NAME)));
        }
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!(
            "{NAME} (Mosquitto dynamic-security plugin) not found: install it with \
             `apt-get install -y mosquitto` (or run .ci/run), or set MOSQUITTO_DYNSEC_PLUGIN"
        )
    })
}

// ---------------------------------------------------------------------------
// Files and ownership

fn is_executable(p: &Path) -> bool {
    fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn write_file(path: &Path, contents: &str, mode: u32) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn read_lossy(path: &Path) -> String {
    read_from(path, 0)
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = File::open(path) {
        if f.seek(SeekFrom::Start(offset)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// True if we created `dir` as root (then Mosquitto will drop privileges).
fn running_as_root(dir: &Path) -> bool {
    fs::metadata(dir).is_ok_and(|m| m.uid() == 0)
}

/// uid and gid of the `mosquitto` user, if it exists.
fn mosquitto_user() -> Option<(u32, u32)> {
    if let Ok(passwd) = fs::read_to_string("/etc/passwd") {
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[0] == "mosquitto" {
                if let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) {
                    return Some((uid, gid));
                }
            }
        }
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id")
            .args([flag, "mosquitto"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// When running as root, hand the directory and everything in it to the
/// `mosquitto` user, which the broker switches to before reading its files.
fn fix_ownership(dir: &Path) {
    if !running_as_root(dir) {
        return;
    }
    let Some((uid, gid)) = mosquitto_user() else { return };
    fn walk(p: &Path, uid: u32, gid: u32) {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("chown {} to mosquitto: {e}", p.display()));
        if p.is_dir() {
            for entry in fs::read_dir(p).expect("read temp dir").flatten() {
                walk(&entry.path(), uid, gid);
            }
        }
    }
    walk(dir, uid, gid);
}

// ---------------------------------------------------------------------------
// PBKDF2-HMAC-SHA512 and base64, as Mosquitto 2.0 uses for password hashes.

fn random_salt() -> [u8; SALT_LEN] {
    let mut salt = [0u8; SALT_LEN];
    getrandom::fill(&mut salt).expect("the OS random source");
    salt
}

fn base64(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn pbkdf2_sha512(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 64] {
    pbkdf2::pbkdf2_hmac_array::<sha2::Sha512, 64>(password, salt, iterations)
}
