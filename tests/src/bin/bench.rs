//! `tandem-bench`: commit latency, throughput and memory of a real three-process cluster on
//! loopback, with fsync on (the sled store flushes before acknowledging).
//!
//! Build the release binaries first, then run:
//! `cargo build --release --workspace --bins && target/release/tandem-bench`
//! Options: `--sequential N` (default 2000), `--writers W` (64), `--seconds S` (10),
//! `--switchovers K` (20): planned switchovers under a sequential writer, reporting the longest
//! gap between two acknowledged writes around each (the write pause) and the time from the
//! request to the new active.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tandem_client::api::SwitchoverRequest;
use tandem_client::api::WriteTestRecord;
use tandem_tests::bench_arg as arg;
use tandem_tests::percentile;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> anyhow::Result<()> {
    let sequential = arg("--sequential", 2000);
    let writers = arg("--writers", 64);
    let seconds = arg("--seconds", 10);
    let cluster = Cluster::start_initialized(ClusterOptions::default())?;
    let leader = cluster.snapshot().leader_status().expect("leader").name.clone();
    println!(
        "cluster up; leader {leader}; binaries from {}",
        tandem_tests::bin_dir().display()
    );

    // Idle memory, after the cluster settled.
    std::thread::sleep(Duration::from_secs(3));
    for n in ["a", "b", "w"] {
        let pid = cluster.pid(n).expect("running");
        println!(
            "idle RSS {n} ({}): {:.1} MiB",
            cluster.spec(n).role,
            rss_kib(pid) as f64 / 1024.0
        );
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = cluster.client(&leader).with_timeout(Duration::from_secs(5));

    // Sequential: one write at a time, each waits for commit and apply on the leader.
    let mut lat = Vec::with_capacity(sequential as usize);
    rt.block_on(async {
        for id in 0..sequential {
            let req = WriteTestRecord {
                id,
                payload: "0123456789abcdef".into(),
                epoch: None,
            };
            let t = Instant::now();
            client.write_test_record(&req).await.expect("sequential write");
            lat.push(t.elapsed());
        }
    });
    lat.sort();
    println!(
        "sequential {sequential} writes: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        percentile(&lat, 50.0).as_secs_f64() * 1e3,
        percentile(&lat, 99.0).as_secs_f64() * 1e3,
        lat.last().unwrap().as_secs_f64() * 1e3
    );

    // Throughput: `writers` concurrent writers for `seconds`.
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..writers {
            let client = client.clone();
            let done = done.clone();
            let stop = stop.clone();
            tasks.push(tokio::spawn(async move {
                let mut id = 1_000_000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    let req = WriteTestRecord {
                        id,
                        payload: "0123456789abcdef".into(),
                        epoch: None,
                    };
                    client.write_test_record(&req).await.expect("concurrent write");
                    done.fetch_add(1, Ordering::Relaxed);
                    id += 1;
                }
            }));
        }
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.expect("writer");
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let total = done.load(Ordering::Relaxed);
    println!(
        "{writers} writers for {elapsed:.1} s: {total} records, {:.0} records/s",
        total as f64 / elapsed
    );
    for n in ["a", "b", "w"] {
        let pid = cluster.pid(n).expect("running");
        println!("RSS after load {n}: {:.1} MiB", rss_kib(pid) as f64 / 1024.0);
    }
    let mut written = sequential + total;
    written += switchover_pauses(&cluster, &rt, arg("--switchovers", 20));
    let s = cluster.wait_for("all applied", Duration::from_secs(30), |s| {
        s.agree_on_records(&["a", "b", "w"], written)
    })?;
    println!(
        "all three applied {} records with equal digests",
        s.get("a").unwrap().test_records
    );
    Ok(())
}

/// Planned switchovers under a sequential writer that follows the leader. Returns how many
/// records were written.
fn switchover_pauses(cluster: &Cluster, rt: &tokio::runtime::Runtime, rounds: u64) -> u64 {
    let mut pauses = Vec::new();
    let mut to_active = Vec::new();
    let written = Arc::new(AtomicU64::new(0));
    for round in 0..rounds {
        let active = cluster
            .wait_for("an active", Duration::from_secs(10), |s| {
                s.reachable().any(|n| n.active_epoch.is_some())
            })
            .expect("an active")
            .reachable()
            .find(|n| n.active_epoch.is_some())
            .map(|n| n.name.clone())
            .unwrap();
        let other = tandem_tests::other_data_node(&active);
        // A switchover needs a synced standby: wait for it, as an operator would.
        cluster
            .wait_for("the standby synced", Duration::from_secs(10), |_| {
                tandem_tests::http_status(&cluster.spec(other).admin_addr(), "/health/standby") == Some(200)
            })
            .expect("standby synced");
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = {
            let (stop, acks, written) = (stop.clone(), acks.clone(), written.clone());
            let clients =
                [cluster.client(&active), cluster.client(other)].map(|c| c.with_timeout(Duration::from_secs(2)));
            rt.spawn(async move {
                let mut target = 0;
                let mut id = 10_000_000 * (round + 1);
                while !stop.load(Ordering::Relaxed) {
                    let req = WriteTestRecord {
                        id,
                        payload: "0123456789abcdef".into(),
                        epoch: None,
                    };
                    match clients[target].write_test_record(&req).await {
                        Ok(_) => {
                            acks.lock().unwrap().push(Instant::now());
                            written.fetch_add(1, Ordering::Relaxed);
                            id += 1;
                        }
                        Err(_) => {
                            target = 1 - target;
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                    }
                }
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let requested = Instant::now();
        rt.block_on(cluster.client(&active).switchover(&SwitchoverRequest { to: None }))
            .expect("switchover");
        cluster
            .wait_for("the other node active", Duration::from_secs(10), |s| {
                s.get(other).is_some_and(|n| n.active_epoch.is_some())
            })
            .expect("new active");
        to_active.push(requested.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::Relaxed);
        rt.block_on(writer).expect("writer");
        let acks = acks.lock().unwrap();
        let pause = acks
            .windows(2)
            .filter(|w| w[1] >= requested)
            .map(|w| w[1] - w[0])
            .max()
            .expect("writes around the switchover");
        pauses.push(pause);
    }
    if rounds == 0 {
        return 0;
    }
    pauses.sort();
    to_active.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{rounds} planned switchovers: write pause p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; request to new active (as polled) p50 {:.0} ms, max {:.0} ms",
        ms(percentile(&pauses, 50.0)),
        ms(percentile(&pauses, 99.0)),
        ms(*pauses.last().unwrap()),
        ms(percentile(&to_active, 50.0)),
        ms(*to_active.last().unwrap()),
    );
    written.load(Ordering::Relaxed)
}
