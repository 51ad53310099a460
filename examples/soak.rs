//! Soak: many calls at a steady number in flight, through a Mosquitto this
//! program starts on loopback; every call must get exactly one response, no
//! call may run twice, and memory must stay flat.
//!
//! ```sh
//! cargo run --release --example soak                      # 100,000 calls, 64 in flight
//! cargo run --release --example soak -- --calls 1000000 --inflight 128
//! ```
//!
//! Exits non-zero when a call is lost or duplicated, or when the process's
//! memory grows by more than 10% between the first fifth of the run and the
//! end.

#[path = "../tests/support/mosquitto.rs"]
mod mosquitto;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::stream::{self, StreamExt};
use mcpmqtt::{tool, Client, Server};
use serde_json::json;

#[derive(Parser)]
#[command(about = "Many calls at a steady concurrency: none lost, none run twice, memory flat")]
struct Args {
    /// How many calls.
    #[arg(long, default_value_t = 100_000)]
    calls: usize,
    /// How many in flight at once.
    #[arg(long, default_value_t = 64)]
    inflight: usize,
}

/// How many times each call ran, by call number.
fn runs() -> &'static Mutex<HashMap<u64, u32>> {
    static RUNS: OnceLock<Mutex<HashMap<u64, u32>>> = OnceLock::new();
    RUNS.get_or_init(Default::default)
}

/// Counts that it ran for `n`, and answers with it.
#[tool]
async fn mark(
    /// The call's number.
    n: u64,
) -> u64 {
    *runs().lock().unwrap().entry(n).or_default() += 1;
    n
}

/// This process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse().ok()
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // No log line per packet: that would cost the broker its CPU.
    let broker = mosquitto::Mosquitto::builder()
        .extra_config("log_type none")
        .extra_config("log_type error")
        .start();
    let server = Server::builder("soak")
        .namespace("soak")
        .broker(&broker.url())
        .tool::<mark>()
        .build()?
        .start()
        .await?;
    let client = Client::builder("soaker")
        .broker(&broker.url())
        .namespace("soak")
        .default_timeout(Duration::from_secs(60))
        .connect()
        .await?;
    client.wait_for_tool("mark", Duration::from_secs(10)).await?;

    println!(
        "soak: {} calls, {} in flight, Mosquitto on {}",
        args.calls,
        args.inflight,
        broker.url()
    );
    println!("| calls done | calls/s (last step) | RSS KiB |\n|---:|---:|---:|");
    let done = Arc::new(AtomicU64::new(0));
    let wrong = Arc::new(AtomicU64::new(0));
    let mut errors: Vec<String> = Vec::new();
    let step = (args.calls / 10).max(1) as u64;
    let started = Instant::now();
    let mut last = (Instant::now(), 0u64);
    let mut samples = Vec::new();
    let mut results = stream::iter(0..args.calls as u64)
        .map(|n| {
            let client = client.clone();
            async move { (n, client.call("mark", json!({ "n": n })).await) }
        })
        .buffer_unordered(args.inflight);
    while let Some((n, result)) = results.next().await {
        match result {
            Ok(v) if v == json!(n) => {}
            Ok(v) => {
                wrong.fetch_add(1, Ordering::Relaxed);
                errors.push(format!("call {n} answered {v}"));
            }
            Err(e) => errors.push(format!("call {n}: {e}")),
        }
        let count = done.fetch_add(1, Ordering::Relaxed) + 1;
        if count.is_multiple_of(step) {
            let rate = (count - last.1) as f64 / last.0.elapsed().as_secs_f64();
            let rss = rss_kib();
            println!("| {count} | {rate:.0} | {rss} |");
            samples.push(rss);
            last = (Instant::now(), count);
        }
    }
    let elapsed = started.elapsed();
    // Give duplicates, if any, a moment to show up.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = runs().lock().unwrap().clone();
    let never_ran = (0..args.calls as u64).filter(|n| !runs.contains_key(n)).count();
    let ran_twice = runs.values().filter(|&&r| r > 1).count();
    let lost = errors.len() - wrong.load(Ordering::Relaxed) as usize;
    let base = samples.get(1).or(samples.first()).copied().unwrap_or(0);
    let end = samples.last().copied().unwrap_or(0);
    let growth = if base > 0 {
        (end as f64 / base as f64 - 1.0) * 100.0
    } else {
        0.0
    };
    println!(
        "\n{} calls in {:.1} s ({:.0} calls/s): {lost} lost (no response), {} wrong responses, \
         {never_ran} never ran, {ran_twice} ran more than once; RSS {base} KiB at 20% -> {end} KiB at the end ({growth:+.1}%)",
        args.calls,
        elapsed.as_secs_f64(),
        args.calls as f64 / elapsed.as_secs_f64(),
        wrong.load(Ordering::Relaxed),
    );
    for e in errors.iter().take(10) {
        println!("  {e}");
    }
    client.disconnect().await;
    server.shutdown().await?;
    if !errors.is_empty() || never_ran > 0 || ran_twice > 0 || growth > 10.0 {
        return Err("the soak failed".into());
    }
    println!("soak passed");
    Ok(())
}
