//! `monitor-bench`: what health monitors cost, and how fast a failing active hands over.
//!
//! `cargo build --release --workspace --bins && target/release/monitor-bench`
//!
//! 1. **Overhead**: 20 monitors at 1 s intervals (4 tcp, 4 http, 3 process, 3 disk,
//!    2 memory, 2 cpu, 2 script) run in this process for `--seconds S` (default 60) against
//!    real local targets; CPU time of the process and its children (the scripts) is read from
//!    `/proc/self/stat` before and after.
//! 2. **Detection to switchover** (`--failovers K`, default 5; 0 skips): a real three-process
//!    cluster whose active runs `lab-service` under an `http` monitor with the default
//!    interval (1 s) and `max_failures` (3); the service is killed K times and the time from
//!    the kill to the "automatic switchover" event is compared with the bound
//!    `interval × max_failures + 1 s`.

use std::io::Read;
use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use tandem_client::EventsQuery;
use tandem_node::events::EventLog;
use tandem_node::monitor::spec::MonitorSpec;
use tandem_node::monitor::spec::Probe;
use tandem_node::monitor::spec::Scope;
use tandem_node::monitor::Monitors;
use tandem_node::monitor::Standing;
use tandem_tests::bench_arg as arg;
use tandem_tests::lab_service_resource;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

/// CPU time of this process and its waited-for children, in clock ticks.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start at the state, field 3.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
    // utime, stime, cutime, cstime are fields 14..=17, i.e. 11..=14 after the state.
    f[11] + f[12] + f[13] + f[14]
}

fn ticks_per_second() -> u64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK")
}

/// A local HTTP server answering every request with 200 "ok".
fn http_target() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
            });
        }
    });
    addr
}

fn overhead(seconds: u64) {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_addr = tcp.local_addr().unwrap().to_string();
    std::thread::spawn(move || for _ in tcp.incoming() {});
    let http = http_target();
    let me = std::fs::read_link("/proc/self/exe").unwrap().display().to_string();
    let mut probes = Vec::new();
    for _ in 0..4 {
        probes.push(Probe::Tcp {
            address: tcp_addr.clone(),
        });
        probes.push(Probe::Http {
            url: format!("http://{http}/health"),
            expect_status: 200,
            body_contains: Some("ok".into()),
            ca_file: None,
        });
    }
    for _ in 0..3 {
        probes.push(Probe::Process {
            executable: Some(me.clone()),
            command_line: None,
        });
        probes.push(Probe::Disk {
            path: std::env::temp_dir(),
            max_used_percent: Some(99.0),
            min_free_bytes: None,
        });
    }
    for _ in 0..2 {
        probes.push(Probe::Memory { max_used_percent: 99.0 });
        probes.push(Probe::Cpu {
            max_percent: Some(100.0),
            max_load1: None,
        });
        probes.push(Probe::Script {
            command: Some("true".into()),
            result_file: None,
        });
    }
    let specs: Vec<MonitorSpec> = probes
        .into_iter()
        .enumerate()
        .map(|(i, probe)| MonitorSpec {
            name: format!("m{i}"),
            probe,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_failures: 3,
            rise: 1,
            log_only: false,
            scope: Scope::Both,
        })
        .collect();
    let count = specs.len();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let events = Arc::new(EventLog::new("bench"));
    let monitors = Monitors::new(specs, events.clone());
    let (_standing_tx, standing) = tokio::sync::watch::channel(Standing::Active);
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    let runner = rt.spawn(monitors.clone().run(standing, stop));
    // Let every monitor run once (the first run comes one interval after the start).
    std::thread::sleep(Duration::from_millis(2500));
    let (t0, c0) = (Instant::now(), cpu_ticks());
    std::thread::sleep(Duration::from_secs(seconds));
    let (elapsed, used) = (t0.elapsed(), cpu_ticks() - c0);
    let _ = stop_tx.send(true);
    let _ = rt.block_on(runner);
    let not_ok: Vec<_> = monitors.infos().into_iter().filter(|m| m.state != "ok").collect();
    assert!(
        not_ok.is_empty(),
        "every monitor must pass against its target: {not_ok:#?}"
    );
    let cpu = used as f64 / ticks_per_second() as f64;
    println!(
        "overhead: {count} monitors at 1 s for {:.1} s: {:.2} s CPU (process and scripts) = {:.2} % of one core (target < 2 %)",
        elapsed.as_secs_f64(),
        cpu,
        100.0 * cpu / elapsed.as_secs_f64()
    );
}

fn failovers(rounds: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let port = |id: u64| 29_640 + id as u16;
    let data_config = format!(
        "{}[[monitors]]\nname = \"web\"\ntype = \"http\"\nurl = \"http://127.0.0.1:2964@NODE_ID@/\"\n",
        lab_service_resource(dir.path(), "2964")
    );
    let cluster = Cluster::start_initialized(ClusterOptions {
        data_config,
        ..Default::default()
    })?;
    let policy = ["policy", "--min-active-secs", "0", "--max-auto-switches", "1000"];
    let deadline = Instant::now() + Duration::from_secs(10);
    while cluster.ctl(&policy).0 != Some(0) {
        anyhow::ensure!(Instant::now() < deadline, "could not set the policy");
        std::thread::sleep(Duration::from_millis(200));
    }
    let bound = Duration::from_millis(1000 * 3 + 1000);
    let mut worst = Duration::ZERO;
    for round in 0..rounds {
        let active = cluster.wait_active(None, Duration::from_secs(20));
        // Ready: the service answers, the standby is synced and every monitor passes.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = cluster.status(active)?;
            let up = std::net::TcpStream::connect(("127.0.0.1", port(cluster.spec(active).id))).is_ok();
            if up && s.cluster_status.state == "ready" && s.monitors.iter().all(|m| m.state == "ok") {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "not ready: {:?}", s.cluster_status);
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid_file = dir.path().join(format!("svc-{active}.pid"));
        let pid = std::fs::read_to_string(&pid_file)?;
        let killed_at = tandem_node::unix_ms();
        std::process::Command::new("kill").args(["-9", pid.trim()]).status()?;
        cluster.wait_active(Some(active), Duration::from_secs(20));
        let query = EventsQuery {
            kind: Some("failover".into()),
            node: Some(active.into()),
            since_ms: Some(killed_at),
            ..Default::default()
        };
        let events = cluster.block_on(cluster.client(active).events(&query))?.events;
        let started = events
            .iter()
            .find(|e| e.detail.starts_with("automatic switchover"))
            .ok_or_else(|| anyhow::anyhow!("no automatic switchover event: {events:#?}"))?;
        let took = Duration::from_millis(started.at_ms.saturating_sub(killed_at));
        worst = worst.max(took);
        println!(
            "round {}: service on {active} killed -> automatic switchover started after {} ms (bound {} ms)",
            round + 1,
            took.as_millis(),
            bound.as_millis()
        );
    }
    println!(
        "detection to switchover: worst {} ms over {rounds} rounds; bound interval x max_failures + 1 s = {} ms: {}",
        worst.as_millis(),
        bound.as_millis(),
        if worst <= bound { "within" } else { "MISSED" }
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    overhead(arg("--seconds", 60));
    let rounds = arg("--failovers", 5);
    if rounds > 0 {
        failovers(rounds)?;
    }
    Ok(())
}
