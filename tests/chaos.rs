//! Chaos, with nothing lost and nothing run twice (issue 13, point 3).
//!
//! While calls run, against a real Mosquitto:
//!
//! - the broker is SIGKILLed and restarted from its persistence, with 300
//!   calls in flight;
//! - the server's, then the client's, connection is cut for 3 s and for
//!   30 s by a TCP proxy on loopback ([`support::proxy`]): silently (the
//!   proxy stops forwarding, then resumes) or with resets (every connection
//!   reset, new ones refused for the length of the cut);
//! - the broker is restarted 5 times within a 20 s run.
//!
//! In every case each call either succeeds exactly once, or fails with
//! `timeout` or `transport` having run at most once, and resolves by its
//! deadline (plus [`MARGIN`]); nothing hangs (every gather is bounded, and
//! so is the server's shutdown at the end); the client recovers (a fresh
//! call succeeds, and a call to a tool no one serves is refused, not timed
//! out unacknowledged, so it still pairs the broker's acknowledgements with
//! the right calls); and
//! the runtime's task count and the process's RSS come back to where they
//! were after a warm-up ([`Footprint`], which documents the tolerances).
//! Each scenario also checks that the chaos did what it says (the broker
//! dropped the silent side, a reconnect was refused, calls were in flight).
//! No scenario here crashes the server, so the one case where a call may
//! run twice (a server that dies after starting a call, whose dedupe window
//! dies with it) does not arise: a second run is always a failure.
//!
//! **One process per scenario.** RSS is a property of the process, and
//! cargo runs the tests of a file as threads of one process: the tests'
//! allocations would blur each other's measurements. So each scenario test
//! runs itself again as a child process (`--exact`, with [`CHILD_ENV`] set)
//! and checks that the child passed; the child's output (its report, the
//! library's logs, and on failure the tail of the broker's log) is printed
//! by the parent; with [`LOG_DIR_ENV`] set, the broker's whole log is kept.
//! The parent also bounds the child's run ([`CHILD_LIMIT`]), so a hang fails
//! the test rather than the CI job.
//!
//! **Keep-alive.** Server and client use a 5 s keep-alive: a 3 s cut is
//! shorter than it (no one notices, the bytes just wait), a 30 s cut is
//! far longer (Mosquitto drops the silent side after 1.5 keep-alives, in
//! practice 8 to 10 s, and the silent side gives up its connection after
//! 10 s without a PINGRESP, then reconnects once the path is back).
//!
//! Scenario logs say `ok / timeout / transport` per run and how many calls
//! ran after their caller had given up on them ("late"): allowed by the rule
//! above (they ran once), but worth knowing.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures::future::join_all;
use mcpmqtt::{tool, BrokerOptions, CallError, CallOptions, Client, Server, ServerHandle};
use serde_json::{json, Value};
use support::fixtures::PATIENCE;
use support::mosquitto::{Autosave, Mosquitto};
use support::proxy::Proxy;
use support::Spawned;
use tokio::sync::watch;

/// A call resolves by its deadline plus this: the client's timer fires at
/// the deadline; the rest is scheduling on a busy 2-core machine.
const MARGIN: Duration = Duration::from_secs(2);
/// The deadline of the steady calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The deadline of the call to a tool no one serves, after the chaos.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(3);
/// Server and client keep-alive (see the module docs).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// How long after a cut heals (or a restart) calls must succeed again: the
/// reconnect backoff is capped at 5 s plus 25% jitter, then the session is
/// resumed and the cards republished.
const RECOVERY: Duration = Duration::from_secs(20);
/// Concurrent callers in the steady load, and how long each call runs.
const WORKERS: usize = 16;
const CALL_MS: u64 = 50;
/// The most a scenario may take, child process and all, before it counts
/// as hung.
const CHILD_LIMIT: Duration = Duration::from_secs(180);
/// Set (to the test's name) in the child process that runs a scenario.
const CHILD_ENV: &str = "MCPMQTT_CHAOS_SCENARIO";
/// When set, each scenario copies the broker's whole log into this
/// directory (the log printed on failure is only its tail).
const LOG_DIR_ENV: &str = "MCPMQTT_CHAOS_LOG_DIR";

const NS: &str = "chaos";
const SERVER: &str = "ledger";
const CALLER: &str = "caller";

// ---------------------------------------------------------------------------
// The scenarios

/// Runs `scenario` in a process of its own (see the module docs).
macro_rules! scenario {
    ($(#[$doc:meta])* $name:ident => $scenario:expr) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            in_own_process(stringify!($name), || run($scenario));
        }
    };
}

scenario! {
    /// SIGKILL, not a clean stop, with 300 calls in flight; the broker comes
    /// back from what it last saved (it saves on every change, the most
    /// Mosquitto offers).
    broker_sigkilled_and_restarted_with_300_calls_in_flight => sigkill_with_calls_in_flight(300)
}

scenario! {
    /// The server's connection stops carrying anything for 3 s: shorter than
    /// the keep-alive, so nobody notices; calls are only delayed.
    server_partitioned_3s => partition(Side::Server, Cut::Silent, Duration::from_secs(3))
}

scenario! {
    /// The server's connection is silent for 30 s: the broker drops it and
    /// publishes its Last Will, the server gives it up and reconnects when
    /// the path is back.
    server_partitioned_30s => partition(Side::Server, Cut::Silent, Duration::from_secs(30))
}

scenario! {
    /// The client's connection is silent for 3 s.
    client_partitioned_3s => partition(Side::Client, Cut::Silent, Duration::from_secs(3))
}

scenario! {
    /// The client's connection is silent for 30 s: the broker drops it and
    /// keeps its session (responses wait there); the client reconnects when
    /// the path is back.
    client_partitioned_30s => partition(Side::Client, Cut::Silent, Duration::from_secs(30))
}

scenario! {
    /// The server's connection is reset, and its reconnects refused for 3 s.
    server_connection_reset_and_refused_3s => partition(Side::Server, Cut::Reset, Duration::from_secs(3))
}

scenario! {
    /// The server's connection is reset, and its reconnects refused for 30 s.
    server_connection_reset_and_refused_30s => partition(Side::Server, Cut::Reset, Duration::from_secs(30))
}

scenario! {
    /// The client's connection is reset, and its reconnects refused for 3 s.
    client_connection_reset_and_refused_3s => partition(Side::Client, Cut::Reset, Duration::from_secs(3))
}

scenario! {
    /// The client's connection is reset, and its reconnects refused for 30 s.
    client_connection_reset_and_refused_30s => partition(Side::Client, Cut::Reset, Duration::from_secs(30))
}

scenario! {
    /// Five broker restarts (clean stops, persistence on) within a 20 s run
    /// of calls.
    broker_restarted_5_times_in_20s => restarts(5, Duration::from_secs(20))
}

async fn sigkill_with_calls_in_flight(n: usize) {
    let broker = Mosquitto::builder()
        .persistence(true)
        .autosave(Autosave::OnEveryChange)
        .start();
    let mut rig = Rig::start(broker).await;
    // The same burst once, so that the baseline has seen its peak.
    let warm = burst(&rig.client, "warm", n, CALL_MS, Duration::from_secs(15));
    let warm = warm.gather().await;
    assert_all_ok(&warm, "the warm-up");
    let base = Footprint::baseline().await;
    // Both sessions and the server's subscriptions are on disk before the
    // kill (saving on every change, the database follows within a pass of
    // the broker's loop).
    let saved = until(PATIENCE, || rig.broker.saves() > 0).await;
    assert!(saved, "the broker never logged saving its database");

    let calls = burst(&rig.client, "kill", n, CALL_MS, Duration::from_secs(15));
    let flowing = calls.wait_done(n / 5, PATIENCE).await;
    assert!(flowing, "calls flow before the kill");
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| {
        rig.broker.kill();
        rig.broker.restart();
    });
    let done_at_kill = calls.done_before(killed_at);
    report(format_args!(
        "SIGKILLed with {} of {n} calls finished; back up in {:?}",
        done_at_kill,
        killed_at.elapsed()
    ));
    let mut failures = Vec::new();
    if done_at_kill >= n {
        failures.push("the kill came after every call had finished: not with calls in flight".to_owned());
    }
    let outcomes = calls.gather().await;
    rig.finish("sigkill", outcomes, base, failures).await;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Server,
    Client,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The proxy stops forwarding, then resumes.
    Silent,
    /// The proxy resets every connection and refuses new ones, then
    /// accepts again.
    Reset,
}

async fn partition(side: Side, cut: Cut, length: Duration) {
    let rig = Rig::start(Mosquitto::start()).await;
    rig.warm_up().await;
    let base = Footprint::baseline().await;
    let mut failures = Vec::new();

    let load = Load::start(&rig.client, "steady", CALL_TIMEOUT);
    assert!(load.wait_succeeded(100, PATIENCE).await, "calls flow before the cut");
    // Calls whose deadline outlasts the cut, started just before it (some
    // are running in the server when it comes).
    let spanning = burst(&rig.client, "spanning", 16, 300, length + Duration::from_secs(20));

    let net = rig.net(side);
    let attempts_before = net.accepted();
    let cut_at = Instant::now();
    match cut {
        Cut::Silent => net.pause(),
        Cut::Reset => {
            net.refuse_new(true);
            net.reset();
        }
    }
    // Evidence that the cut bit, as the scenario says it does.
    let long = length > KEEP_ALIVE * 2;
    let evidence = match (cut, side) {
        (Cut::Silent, _) if !long => None,
        (Cut::Silent, Side::Server) => Some((
            "the broker published the server's Last Will",
            rig.client.wait_for_server_offline(SERVER, length).await.is_ok(),
        )),
        (Cut::Silent, Side::Client) => Some((
            "the broker dropped the silent client (keep-alive)",
            until(length, || {
                rig.broker
                    .log()
                    .contains(&format!("Client {CALLER} has exceeded timeout"))
            })
            .await,
        )),
        (Cut::Reset, _) => Some((
            "a reconnect was refused",
            net.accepted_at_least(attempts_before + 1, length).await,
        )),
    };
    if let Some((what, seen)) = evidence {
        report(format_args!(
            "{what}: {} after {:?}",
            if seen { "yes" } else { "NO" },
            cut_at.elapsed()
        ));
        if !seen {
            failures.push(format!("during the cut, expected: {what}"));
        }
    }
    tokio::time::sleep_until((cut_at + length).into()).await;
    match cut {
        Cut::Silent => net.resume(),
        Cut::Reset => net.refuse_new(false),
    }
    let healed_at = Instant::now();
    let recovered = load.wait_succeeded_since(healed_at, RECOVERY).await;
    report(format_args!(
        "cut {side:?} {cut:?} for {length:?}; a call made after the heal succeeded: {} ({:?} after the heal); {} reconnect attempts through the proxy",
        if recovered { "yes" } else { "NO" },
        healed_at.elapsed(),
        net.accepted() - attempts_before,
    ));
    if !recovered {
        failures.push(format!("calls did not succeed again within {RECOVERY:?} of the heal"));
    }
    let mut outcomes = load.finish().await;
    outcomes.extend(spanning.gather().await);
    rig.finish(&format!("{side:?} {cut:?} {length:?}"), outcomes, base, failures)
        .await;
}

async fn restarts(times: u32, run: Duration) {
    let broker = Mosquitto::builder().persistence(true).start();
    let mut rig = Rig::start(broker).await;
    rig.warm_up().await;
    let base = Footprint::baseline().await;
    let mut failures = Vec::new();

    let load = Load::start(&rig.client, "steady", CALL_TIMEOUT);
    assert!(
        load.wait_succeeded(100, PATIENCE).await,
        "calls flow before the restarts"
    );
    let started = Instant::now();
    // Evenly spread over the first 90% of the run, whatever the calls do;
    // between two restarts, calls must succeed again.
    let spacing = run.mul_f64(0.9) / times;
    for i in 1..=times {
        tokio::time::sleep_until((started + spacing * i).into()).await;
        let at = Instant::now();
        tokio::task::block_in_place(|| rig.broker.restart());
        let down = at.elapsed();
        let until_next = if i < times {
            (started + spacing * (i + 1)).saturating_duration_since(Instant::now())
        } else {
            RECOVERY
        };
        let progressed = load.wait_succeeded_since(at + down, until_next).await;
        report(format_args!(
            "restart {i} at {:?} (took {down:?}); a call made after it succeeded before the next: {}",
            at - started,
            if progressed { "yes" } else { "NO" }
        ));
        if !progressed {
            failures.push(format!(
                "no call made after restart {i} succeeded before {}",
                if i < times { "the next" } else { "the end" }
            ));
        }
    }
    tokio::time::sleep_until((started + run).into()).await;
    let outcomes = load.finish().await;
    rig.finish("restarts", outcomes, base, failures).await;
}

// ---------------------------------------------------------------------------
// The server, the client, and the broker between them

/// How many times each call id ran, and when it last did.
#[derive(Debug, Clone, Copy)]
struct Ran {
    times: u32,
    last: Instant,
}

fn ledger() -> &'static Mutex<HashMap<String, Ran>> {
    static LEDGER: OnceLock<Mutex<HashMap<String, Ran>>> = OnceLock::new();
    LEDGER.get_or_init(Default::default)
}

fn ran(id: &str) -> Option<Ran> {
    ledger().lock().unwrap().get(id).copied()
}

/// Records that it ran for `id`, then takes `ms` milliseconds.
#[tool]
async fn tally(
    /// Who is counting.
    id: String,
    /// How long to take.
    ms: Option<u64>,
) -> String {
    let now = Instant::now();
    ledger()
        .lock()
        .unwrap()
        .entry(id.clone())
        .and_modify(|r| {
            r.times += 1;
            r.last = now;
        })
        .or_insert(Ran { times: 1, last: now });
    tokio::time::sleep(Duration::from_millis(ms.unwrap_or(0))).await;
    id
}

/// A broker, a server and a client, each side through its own proxy so
/// that either can be cut off alone.
struct Rig {
    broker: Mosquitto,
    server_net: Proxy,
    client_net: Proxy,
    server: Option<ServerHandle>,
    client: Client,
}

impl Rig {
    async fn start(broker: Mosquitto) -> Rig {
        let server_net = Proxy::start(broker.port());
        let client_net = Proxy::start(broker.port());
        let options = |proxy: &Proxy| BrokerOptions::parse(&proxy.url()).unwrap().with_keep_alive(KEEP_ALIVE);
        let server = Server::builder(SERVER)
            .namespace(NS)
            .broker_options(options(&server_net))
            .tool::<tally>()
            .build()
            .unwrap()
            .start()
            .await
            .expect("the server starts");
        let client = Client::builder(CALLER)
            .namespace(NS)
            .broker_options(options(&client_net))
            .default_timeout(CALL_TIMEOUT)
            .connect()
            .await
            .expect("the client connects");
        client.wait_for_tool("tally", PATIENCE).await.unwrap();
        Rig {
            broker,
            server_net,
            client_net,
            server: Some(server),
            client,
        }
    }

    fn net(&self, side: Side) -> &Proxy {
        match side {
            Side::Server => &self.server_net,
            Side::Client => &self.client_net,
        }
    }

    /// The steady load once, so that the baseline has seen its shape.
    async fn warm_up(&self) {
        let load = Load::start(&self.client, "warm", CALL_TIMEOUT);
        assert!(load.wait_succeeded(200, PATIENCE).await, "the warm-up calls flow");
        assert_all_ok(&load.finish().await, "the warm-up");
    }

    /// After the chaos: the client recovers, then every call is judged, the
    /// footprint compared with `base`, and the server shut down, each
    /// bounded; every failure found is reported at once.
    async fn finish(mut self, what: &str, outcomes: Vec<Outcome>, base: Footprint, mut failures: Vec<String>) {
        let after = call(&self.client, "after".into(), 0, PATIENCE).await;
        if let Err(e) = &after.result {
            failures.push(format!("a call after the chaos failed: {e}"));
        }
        // The broker refuses a call to a tool no one serves (PUBACK 0x10),
        // and the caller hears it: unless its bookkeeping of which
        // acknowledgement answers which call is out of step since the chaos,
        // when it would time out unacknowledged. (Right after a reconnect
        // the client takes 0x10 for a server still resubscribing and tries
        // again until the deadline: SPEC §4, so `unavailable` may take the
        // whole timeout.)
        let started = Instant::now();
        let refused = self
            .client
            .call_with("unserved", json!({}), CallOptions::new().timeout(REFUSAL_TIMEOUT))
            .await;
        match refused {
            Err(CallError::Unavailable { .. }) => {}
            other => failures.push(format!(
                "after the chaos, a call to a tool no one serves was not refused \
                 (the broker's PUBACK 0x10 did not reach it): {other:?} after {:?}",
                started.elapsed()
            )),
        }
        let footprint = Footprint::settled(base).await;
        let verdict = judge(&outcomes);
        report(format_args!(
            "{what}: {} calls: {} ok, {} timeout, {} transport; {} ran late (after their caller gave up); footprint {base} -> {footprint}",
            outcomes.len(),
            verdict.ok,
            verdict.timeout,
            verdict.transport,
            verdict.late,
        ));
        failures.extend(verdict.failures());
        failures.extend(footprint.compare(base));
        let server = self.server.take().expect("the server");
        match tokio::time::timeout(PATIENCE, server.shutdown()).await {
            Err(_) => failures.push(format!("the server's shutdown did not end within {PATIENCE:?}")),
            Ok(Err(e)) => failures.push(format!("the server's shutdown failed: {e}")),
            Ok(Ok(())) => {}
        }
        self.client.disconnect().await;
        if let Some(dir) = std::env::var_os(LOG_DIR_ENV) {
            let path = std::path::Path::new(&dir).join(format!("{}.mosquitto.log", what.replace(' ', "-")));
            let _ = std::fs::write(&path, self.broker.log());
            report(format_args!("the broker's whole log: {}", path.display()));
        }
        if !failures.is_empty() {
            let shown: Vec<_> = failures.iter().take(40).map(|f| format!("  - {f}")).collect();
            panic!(
                "{what}: {} failures{}:\n{}",
                failures.len(),
                if failures.len() > shown.len() {
                    " (first 40)"
                } else {
                    ""
                },
                shown.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Calls and their outcomes

/// One call, as its caller saw it.
#[derive(Debug)]
struct Outcome {
    id: String,
    started: Instant,
    deadline: Duration,
    took: Duration,
    result: Result<Value, CallError>,
}

async fn call(client: &Client, id: String, ms: u64, deadline: Duration) -> Outcome {
    let started = Instant::now();
    let options = CallOptions::new().timeout(deadline);
    let result = client.call_with("tally", json!({"id": id, "ms": ms}), options).await;
    Outcome {
        id,
        started,
        deadline,
        took: started.elapsed(),
        result,
    }
}

/// Calls made all at once, each in a task of its own.
struct Burst {
    calls: Vec<tokio::task::JoinHandle<Outcome>>,
    done: Arc<watch::Sender<Vec<Instant>>>,
    deadline: Duration,
}

fn burst(client: &Client, name: &str, n: usize, ms: u64, deadline: Duration) -> Burst {
    let done = Arc::new(watch::Sender::new(Vec::with_capacity(n)));
    let calls = (0..n)
        .map(|i| {
            let (client, done) = (client.clone(), done.clone());
            let id = format!("{name}-{i}");
            tokio::spawn(async move {
                let outcome = call(&client, id, ms, deadline).await;
                done.send_modify(|d| d.push(Instant::now()));
                outcome
            })
        })
        .collect();
    Burst { calls, done, deadline }
}

impl Burst {
    /// Waits until `n` calls have resolved; false if not within `within`.
    async fn wait_done(&self, n: usize, within: Duration) -> bool {
        let mut done = self.done.subscribe();
        let reached = tokio::time::timeout(within, done.wait_for(|d| d.len() >= n)).await;
        reached.is_ok()
    }

    /// How many had resolved before `t`.
    fn done_before(&self, t: Instant) -> usize {
        self.done.borrow().iter().filter(|at| **at < t).count()
    }

    /// Every call's outcome; panics if they do not all resolve by their
    /// deadline (and [`MARGIN`]).
    async fn gather(self) -> Vec<Outcome> {
        let bound = self.deadline + MARGIN;
        let all = tokio::time::timeout(bound, join_all(self.calls))
            .await
            .unwrap_or_else(|_| panic!("calls still unresolved {bound:?} after the last was made: something hangs"));
        all.into_iter().map(|o| o.expect("a call task panicked")).collect()
    }
}

/// [`WORKERS`] callers, each making one call after another until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    /// Calls that succeeded, and each one's start.
    succeeded: Arc<watch::Sender<Vec<Instant>>>,
    workers: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
    deadline: Duration,
}

impl Load {
    fn start(client: &Client, name: &str, deadline: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let succeeded = Arc::new(watch::Sender::new(Vec::new()));
        let workers = (0..WORKERS)
            .map(|w| {
                let (client, stop, succeeded) = (client.clone(), stop.clone(), succeeded.clone());
                let name = format!("{name}-w{w}");
                tokio::spawn(async move {
                    let mut outcomes = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        let outcome = call(&client, format!("{name}-{}", outcomes.len()), CALL_MS, deadline).await;
                        if outcome.result.is_ok() {
                            succeeded.send_modify(|s| s.push(outcome.started));
                        } else if outcome.took < Duration::from_millis(100) {
                            // A call refused at once: pace the next one rather
                            // than spin.
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        outcomes.push(outcome);
                    }
                    outcomes
                })
            })
            .collect();
        Load {
            stop,
            succeeded,
            workers,
            deadline,
        }
    }

    /// Waits until `n` calls have succeeded in all; false if not within `within`.
    async fn wait_succeeded(&self, n: usize, within: Duration) -> bool {
        let mut succeeded = self.succeeded.subscribe();
        let reached = tokio::time::timeout(within, succeeded.wait_for(|s| s.len() >= n)).await;
        reached.is_ok()
    }

    /// Waits until a call made after `t` has succeeded (not one that was
    /// queued somewhere before); false if none did within `within`.
    async fn wait_succeeded_since(&self, t: Instant, within: Duration) -> bool {
        let mut succeeded = self.succeeded.subscribe();
        let reached = tokio::time::timeout(within, succeeded.wait_for(|s| s.iter().any(|at| *at > t))).await;
        reached.is_ok()
    }

    /// Stops the callers and returns every outcome; panics if a call in
    /// flight does not resolve by its deadline (and [`MARGIN`]).
    async fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        let bound = self.deadline + MARGIN;
        let all = tokio::time::timeout(bound, join_all(self.workers))
            .await
            .unwrap_or_else(|_| {
                panic!("calls still unresolved {bound:?} after the callers were stopped: something hangs")
            });
        all.into_iter()
            .flat_map(|o| o.expect("a caller task panicked"))
            .collect()
    }
}

/// The calls of one scenario, judged.
#[derive(Debug, Default)]
struct Verdict {
    ok: usize,
    timeout: usize,
    transport: usize,
    /// Calls that ran after their caller had given up (allowed: once).
    late: usize,
    /// What went wrong, by kind: how many calls, and the first few.
    violations: std::collections::BTreeMap<String, (usize, Vec<String>)>,
}

impl Verdict {
    fn violation(&mut self, kind: String, detail: String) {
        let (count, examples) = self.violations.entry(kind).or_default();
        *count += 1;
        if examples.len() < 3 {
            examples.push(detail);
        }
    }

    /// One line per kind of violation.
    fn failures(&self) -> Vec<String> {
        self.violations
            .iter()
            .map(|(kind, (count, examples))| format!("{count} calls {kind}, e.g.\n      {}", examples.join("\n      ")))
            .collect()
    }
}

/// Each call succeeded exactly once, or failed with `timeout` or
/// `transport` having run at most once; and resolved by its deadline.
/// To be called once no call can run any more (after the settle).
fn judge(outcomes: &[Outcome]) -> Verdict {
    let mut v = Verdict::default();
    for o in outcomes {
        let id = &o.id;
        let runs = ran(id);
        let times = runs.map_or(0, |r| r.times);
        if o.took > o.deadline + MARGIN {
            v.violation(
                format!("resolved past their deadline (+{MARGIN:?})"),
                format!("{id}: after {:?}, deadline {:?}", o.took, o.deadline),
            );
        }
        if runs.is_some_and(|r| r.last > o.started + o.deadline) && o.result.is_err() {
            v.late += 1;
        }
        match &o.result {
            Ok(value) => {
                v.ok += 1;
                if value != &json!(id) {
                    v.violation("succeeded with another call's result".into(), format!("{id}: {value}"));
                }
                if times != 1 {
                    v.violation(format!("succeeded but ran {times} times"), id.clone());
                }
            }
            Err(e @ (CallError::Timeout { .. } | CallError::Transport(_))) => {
                if matches!(e, CallError::Timeout { .. }) {
                    v.timeout += 1;
                } else {
                    v.transport += 1;
                }
                if times > 1 {
                    v.violation(
                        format!("failed with `{}` and ran {times} times", kind(e)),
                        format!("{id}: {e}"),
                    );
                }
            }
            Err(e) => v.violation(
                format!("failed with `{}`, not `timeout` or `transport`", kind(e)),
                format!("{id} (ran {times} times): {e}"),
            ),
        }
    }
    v
}

fn kind(e: &CallError) -> &'static str {
    match e {
        CallError::InvalidArguments { .. } => "invalid_arguments",
        CallError::Unauthorized { .. } => "unauthorized",
        CallError::ToolError { .. } => "tool_error",
        CallError::Timeout { .. } => "timeout",
        CallError::Unavailable { .. } => "unavailable",
        CallError::Transport(_) => "transport",
        CallError::Protocol(_) => "protocol",
        _ => "other",
    }
}

fn assert_all_ok(outcomes: &[Outcome], what: &str) {
    for o in outcomes {
        if let Err(e) = &o.result {
            panic!("{what}: {} failed before any chaos: {e}", o.id);
        }
    }
}

// ---------------------------------------------------------------------------
// Tasks and memory

/// The runtime's live tasks and the process's resident memory.
///
/// Tolerances, after a warm-up of the same shape as the chaos (so that
/// buffers, the allocator's arenas and the dedupe window have grown once):
///
/// - **tasks: none.** Every task the library spawns for a call, an ack, a
///   reconnect or a resubscription must end; the long-lived ones (the
///   connection tasks, the server's line, card and sibling watchers, the
///   client's failure watcher) exist at the baseline already. The count may
///   take up to [`SETTLE`] to come back (calls still being answered).
/// - **RSS: [`RSS_SLACK_KIB`].** Freed memory is not all returned to the
///   system (glibc keeps it in per-thread arenas), and the server's dedupe
///   window legitimately keeps every finished call's response (up to 10,000
///   calls): a few hundred bytes per call of the scenario. What the bound
///   catches is memory held by something that never lets go: queues of
///   calls or packets kept after the connection recovered, or a task per
///   call left behind with its buffers. (Observed growth in passing runs:
///   0.3 to 1 MiB on a baseline of about 50 MiB; a scenario whose calls
///   fail fast keeps thousands of outcomes itself, a few MiB.)
#[derive(Debug, Clone, Copy)]
struct Footprint {
    tasks: usize,
    rss_kib: u64,
}

const SETTLE: Duration = Duration::from_secs(20);
const RSS_SLACK_KIB: u64 = 8 * 1024;

impl std::fmt::Display for Footprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} tasks, {} KiB RSS", self.tasks, self.rss_kib)
    }
}

impl Footprint {
    fn now() -> Footprint {
        Footprint {
            tasks: tokio::runtime::Handle::current().metrics().num_alive_tasks(),
            rss_kib: rss_kib(),
        }
    }

    /// Once the task count has held still for a moment (the last answers of
    /// the warm-up sent).
    async fn baseline() -> Footprint {
        let deadline = Instant::now() + PATIENCE;
        let mut last = Footprint::now().tasks;
        let mut still = 0;
        while still < 10 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = Footprint::now().tasks;
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        Footprint::now()
    }

    /// Once the task count is back to `base` (or [`SETTLE`] has passed).
    async fn settled(base: Footprint) -> Footprint {
        let deadline = Instant::now() + SETTLE;
        while Footprint::now().tasks > base.tasks && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Footprint::now()
    }

    fn compare(self, base: Footprint) -> Vec<String> {
        let mut failures = Vec::new();
        if self.tasks > base.tasks {
            failures.push(format!(
                "{} tasks still alive {SETTLE:?} after the chaos, {} at the baseline",
                self.tasks, base.tasks
            ));
        }
        if self.rss_kib > base.rss_kib + RSS_SLACK_KIB {
            failures.push(format!(
                "RSS grew from {} KiB to {} KiB (more than {RSS_SLACK_KIB} KiB)",
                base.rss_kib, self.rss_kib
            ));
        }
        failures
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

// ---------------------------------------------------------------------------
// Running a scenario

/// Waits until `done()` holds, checking every 100 ms (each check may read
/// the broker's whole log); false if not within `within`. For conditions
/// nothing signals: a line in the broker's log.
async fn until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(line: std::fmt::Arguments<'_>) {
    eprintln!("[chaos] {line}");
}

/// Runs a scenario on a runtime of its own (2 workers, as on CI), with the
/// library's logs on stderr, and rumqttc's (it logs packet id collisions at
/// `info`); `RUST_LOG` overrides.
fn run(scenario: impl std::future::Future<Output = ()>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("mcpmqtt=info,rumqttc=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let started = Instant::now();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(scenario);
    report(format_args!("scenario passed in {:?}", started.elapsed()));
}

/// Runs `scenario` here if this is the child process for `name`; otherwise
/// runs this test again in a child process, prints its output, and fails
/// if it failed or took more than [`CHILD_LIMIT`].
fn in_own_process(name: &str, scenario: impl FnOnce()) {
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        return scenario();
    }
    let output = tempfile::NamedTempFile::new().expect("a file for the scenario's output");
    let out = || Stdio::from(output.as_file().try_clone().expect("dup the output file"));
    let exe = std::env::current_exe().expect("the test binary");
    let mut child = Spawned::spawn(
        Command::new(exe)
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, name)
            .stdin(Stdio::null())
            .stdout(out())
            .stderr(out()),
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait for the scenario") {
            break Some(status);
        }
        if started.elapsed() > CHILD_LIMIT {
            child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(output.path()).unwrap_or_default();
    eprintln!("----- {name} (child process) -----\n{text}----- end of {name} -----");
    let panics: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("panicked at"))
        .take(50)
        .collect();
    match status {
        None => panic!("{name} hung: killed after {CHILD_LIMIT:?}\n{}", panics.join("\n")),
        Some(s) if !s.success() => panic!("{name} failed ({s}):\n{}", panics.join("\n")),
        Some(_) => {}
    }
}

// ---------------------------------------------------------------------------
// The proxy itself

mod proxy {
    use std::io::ErrorKind;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::mpsc;

    use super::support::proxy::Proxy;

    /// An upstream that hands over each connection it accepts.
    async fn upstream() -> (u16, mpsc::UnboundedReceiver<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let _ = tx.send(s);
            }
        });
        (port, rx)
    }

    async fn next(conns: &mut mpsc::UnboundedReceiver<TcpStream>) -> TcpStream {
        tokio::time::timeout(Duration::from_secs(5), conns.recv())
            .await
            .expect("an upstream connection in time")
            .unwrap()
    }

    async fn read_exact(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut buf = vec![0; n];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
            .await
            .expect("bytes in time")
            .unwrap();
        buf
    }

    #[tokio::test]
    async fn forwards_both_ways_and_passes_a_close_on() {
        let (port, mut conns) = upstream().await;
        let proxy = Proxy::start(port);
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port())).await.unwrap();
        let mut server = next(&mut conns).await;
        client.write_all(b"ping").await.unwrap();
        assert_eq!(read_exact(&mut server, 4).await, b"ping");
        server.write_all(b"pong").await.unwrap();
        assert_eq!(read_exact(&mut client, 4).await, b"pong");
        assert_eq!((proxy.accepted(), proxy.open()), (1, 1));
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the client's FIN is passed on as a FIN");
    }

    #[tokio::test]
    async fn a_pause_holds_the_bytes_until_the_resume() {
        let (port, mut conns) = upstream().await;
        let proxy = Proxy::start(port);
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port())).await.unwrap();
        let mut server = next(&mut conns).await;
        proxy.pause();
        client.write_all(b"held").await.unwrap();
        server.write_all(b"back").await.unwrap();
        let mut buf = [0u8; 4];
        // Nothing can signal that bytes did not arrive: look for a while.
        let quiet = Duration::from_millis(300);
        assert!(tokio::time::timeout(quiet, server.read(&mut buf)).await.is_err());
        assert!(tokio::time::timeout(quiet, client.read(&mut buf)).await.is_err());
        proxy.resume();
        assert_eq!(read_exact(&mut server, 4).await, b"held");
        assert_eq!(read_exact(&mut client, 4).await, b"back");
    }

    #[tokio::test]
    async fn a_connection_abandoned_during_a_pause_never_reaches_the_upstream() {
        let (port, mut conns) = upstream().await;
        let proxy = Proxy::start(port);
        proxy.pause();
        let mut gave_up = TcpStream::connect(("127.0.0.1", proxy.port())).await.unwrap();
        gave_up.write_all(b"stale").await.unwrap();
        drop(gave_up);
        let mut waiting = TcpStream::connect(("127.0.0.1", proxy.port())).await.unwrap();
        waiting.write_all(b"fresh").await.unwrap();
        assert!(proxy.accepted_at_least(2, Duration::from_secs(5)).await);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), conns.recv())
                .await
                .is_err(),
            "nothing is connected upstream during the pause"
        );
        proxy.resume();
        let mut server = next(&mut conns).await;
        assert_eq!(read_exact(&mut server, 5).await, b"fresh");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), conns.recv())
                .await
                .is_err(),
            "the abandoned connection was dropped, not forwarded"
        );
    }

    #[tokio::test]
    async fn a_reset_resets_both_sides_and_refused_connections_are_reset() {
        let (port, mut conns) = upstream().await;
        let proxy = Proxy::start(port);
        let mut client = TcpStream::connect(("127.0.0.1", proxy.port())).await.unwrap();
        let mut server = next(&mut conns).await;
        client.write_all(b"x").await.unwrap();
        assert_eq!(read_exact(&mut server, 1).await, b"x");
        proxy.refuse_new(true);
        proxy.reset();
        let mut buf = [0u8; 1];
        let seen = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(seen.unwrap_err().kind(), ErrorKind::ConnectionReset);
        let seen = tokio::time::timeout(Duration::from_secs(5), server.read(&mut buf))
            .await
            .unwrap();
        assert_eq!(seen.unwrap_err().kind(), ErrorKind::ConnectionReset);

        // The reset may come before the connect returns, or after.
        let refused = match TcpStream::connect(("127.0.0.1", proxy.port())).await {
            Ok(mut s) => tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .map(drop),
            Err(e) => Err(e),
        };
        assert_eq!(refused.unwrap_err().kind(), ErrorKind::ConnectionReset);
        proxy.refuse_new(false);
        let mut again = TcpStream::connect(("127.0.0.1", proxy.port())).await.unwrap();
        let mut server = next(&mut conns).await;
        again.write_all(b"y").await.unwrap();
        assert_eq!(read_exact(&mut server, 1).await, b"y");
    }
}
