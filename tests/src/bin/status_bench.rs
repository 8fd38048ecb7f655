//! `status-bench`: latency of `GET /v1/status` at a steady request rate, on a real three-process
//! cluster on loopback, idle and while a writer commits test records.
//!
//! `cargo build --release --workspace --bins && target/release/status-bench`
//! Options: `--rate R` requests per second (default 100), `--seconds S` per phase (30),
//! `--write-rate W` test records per second during the second phase (200).

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tandem_tests::bench_arg as arg;
use tandem_tests::percentile;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

/// Requests at `rate` per second for `seconds` (each sent on its own schedule, so a slow
/// answer does not hide the ones behind it): every latency, sorted, and the failures.
async fn phase(client: &tandem_client::Client, rate: u64, seconds: u64) -> (Vec<Duration>, usize) {
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..rate * seconds {
        tokio::time::sleep_until(start + interval * i as u32).await;
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            client.status().await.map(|_| sent.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for t in tasks {
        match t.await.expect("request task") {
            Ok(d) => latencies.push(d),
            Err(_) => failed += 1,
        }
    }
    latencies.sort();
    (latencies, failed)
}

fn report(what: &str, latencies: &[Duration], failed: usize) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: {} answered, {failed} failed; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(percentile(latencies, 50.0)),
        ms(percentile(latencies, 99.0)),
        ms(*latencies.last().unwrap_or(&Duration::ZERO)),
    );
}

fn main() -> anyhow::Result<()> {
    let rate = arg("--rate", 100);
    let seconds = arg("--seconds", 30);
    let write_rate = arg("--write-rate", 200);
    let cluster = Cluster::start_initialized(ClusterOptions::default())?;
    let active = cluster.wait_active(None, Duration::from_secs(20));
    println!(
        "cluster up; active {active}; binaries from {}",
        tandem_tests::bin_dir().display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = cluster.client(active);
    let (idle, failed) = rt.block_on(phase(&client, rate, seconds));
    report(
        &format!("GET /v1/status on the active, {rate}/s, idle cluster"),
        &idle,
        failed,
    );

    // The same while a writer commits test records through the active.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let client = cluster.client(active);
        rt.spawn(async move {
            let interval = Duration::from_secs_f64(1.0 / write_rate as f64);
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let record = tandem_client::api::WriteTestRecord {
                    id,
                    payload: "status-bench".into(),
                    epoch: None,
                };
                let _ = client.write_test_record(&record).await;
                tokio::time::sleep(interval).await;
            }
            id
        })
    };
    let (busy, failed) = rt.block_on(phase(&client, rate, seconds));
    stop.store(true, Ordering::Relaxed);
    let written = rt.block_on(writer)?;
    report(
        &format!("GET /v1/status on the active, {rate}/s, while {written} test records were written"),
        &busy,
        failed,
    );
    Ok(())
}
