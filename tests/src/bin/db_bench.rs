//! `db-bench`: how fast committed database transactions reach the standby, against MariaDB's
//! own asynchronous replication in the same run, and what the embedded database's writes cost.
//!
//! `cargo build --release --workspace --bins && target/release/db-bench`
//!
//! 1. **MariaDB** (`--rate R` transactions/s, default 1000, for `--seconds S`, default 20):
//!    three real servers on loopback: the active's, the standby's (replayed by Tandem) and a
//!    third one replicating the active's with MariaDB's own replication (GTID, asynchronous).
//!    One client commits single-row inserts into the active's server at the rate; a poller per
//!    replica asks `MAX(id)` in a loop. Latency of a row = first seen on the replica − its commit
//!    answered on the active.
//! 2. **Embedded SQLite** (`--sequential N`, default 2000; `--writers W`, default 8): N
//!    single-row inserts one after another through `POST /v1/db/execute`, then W clients
//!    writing for `--seconds`/2.

use std::io::BufRead;
use std::io::Write;
use std::process::Child;
use std::process::Stdio;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use tandem_client::api::ExecuteRequest;
use tandem_client::api::SqlStatement;
use tandem_tests::bench_arg as arg;
use tandem_tests::mariadb::MariaDb;
use tandem_tests::other_data_node;
use tandem_tests::percentile;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

/// A `mariadb` client process fed statements through its stdin; each output line arrives
/// with the time it was read.
struct Pipe {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: mpsc::Receiver<(Instant, String)>,
}

impl Pipe {
    fn open(socket: &std::path::Path) -> Pipe {
        let mut child = tandem_tests::mariadb::client(socket)
            .arg("--unbuffered")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the mariadb client");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        Pipe { child, stdin, lines }
    }

    fn send(&mut self, sql: &str) {
        writeln!(self.stdin, "{sql}").expect("write to the mariadb client");
    }

    /// Send `sql` and wait for its one-line answer.
    fn ask(&mut self, sql: &str) -> (Instant, String) {
        self.send(sql);
        self.lines
            .recv_timeout(Duration::from_secs(30))
            .expect("an answer from the mariadb client")
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll the server at `socket` for `MAX(id)` until it reaches `n`; when each id was first seen.
fn watch(socket: &std::path::Path, n: u64, until: Instant) -> Vec<Option<Instant>> {
    let mut pipe = Pipe::open(socket);
    let mut seen = vec![None; n as usize + 1];
    let mut max = 0u64;
    while max < n && Instant::now() < until {
        let (at, line) = pipe.ask("SELECT COALESCE(MAX(id), 0) FROM bench.t;");
        let now_max: u64 = line.trim().parse().unwrap_or(0);
        for id in max + 1..=now_max.min(n) {
            seen[id as usize] = Some(at);
        }
        max = max.max(now_max);
        std::thread::sleep(Duration::from_millis(1));
    }
    seen
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn report(what: &str, commits: &[Option<Instant>], seen: &[Option<Instant>]) {
    let mut lat: Vec<Duration> = commits
        .iter()
        .zip(seen)
        .skip(1)
        .filter_map(|(c, s)| Some(s.as_ref()?.saturating_duration_since(*c.as_ref()?)))
        .collect();
    let missing = seen.iter().skip(1).filter(|s| s.is_none()).count();
    lat.sort();
    if lat.is_empty() {
        println!("{what}: nothing arrived");
        return;
    }
    println!(
        "{what}: {} rows, p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
        lat.len(),
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 90.0)),
        ms(percentile(&lat, 99.0)),
        ms(*lat.last().unwrap()),
        if missing > 0 {
            format!(", {missing} never seen")
        } else {
            String::new()
        }
    );
}

fn mariadb(rate: u64, seconds: u64) -> anyhow::Result<()> {
    let (dbs, data_config) = tandem_tests::mariadb::pair()?;
    let cluster = Cluster::start_initialized(ClusterOptions {
        data_config,
        ..Default::default()
    })?;
    let active = cluster.wait_active(None, Duration::from_secs(30));
    let standby = other_data_node(active);
    let (db_active, db_standby) = if active == "a" {
        (&dbs[0], &dbs[1])
    } else {
        (&dbs[1], &dbs[0])
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster.block_on(cluster.client(active).db())?.capturing {
        anyhow::ensure!(Instant::now() < deadline, "the active never captured");
        std::thread::sleep(Duration::from_millis(50));
    }
    // MariaDB's own replica of the active's server, from its first transaction.
    let replica = MariaDb::start_at(3, "127.0.13.1", db_active.port)?;
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST = '{}', MASTER_PORT = {}, MASTER_USER = '{}', MASTER_USE_GTID = slave_pos; START SLAVE",
        db_active.ip,
        db_active.port,
        tandem_tests::mariadb::TANDEM_USER
    ));
    db_active.sql("CREATE DATABASE bench; CREATE TABLE bench.t (id BIGINT PRIMARY KEY, v DOUBLE)");
    let n = rate * seconds;
    println!("MariaDB: {n} single-row transactions at {rate}/s on {active}'s server; Tandem replays on {standby}'s, MariaDB replicates to a third");

    let until = Instant::now() + Duration::from_secs(seconds + 60);
    let pollers: Vec<_> = [db_standby, &replica]
        .into_iter()
        .map(|db| {
            let socket = db.socket();
            std::thread::spawn(move || watch(&socket, n, until))
        })
        .collect();
    // Where the capture and the replay stand, every 2 s.
    let progress = {
        let (a, b) = (cluster.spec(active).admin_addr(), cluster.spec(standby).admin_addr());
        let stop = until;
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let (ca, cb) = (tandem_client::Client::new(a), tandem_client::Client::new(b));
            let t0 = Instant::now();
            while Instant::now() < stop {
                std::thread::sleep(Duration::from_secs(2));
                let (Ok(ia), Ok(ib)) = (rt.block_on(ca.db()), rt.block_on(cb.db())) else {
                    continue;
                };
                println!(
                    "  {:>4.0} s: committed {}, standby applied {}",
                    t0.elapsed().as_secs_f64(),
                    ia.committed_seq,
                    ib.applied_seq
                );
                if ib.applied_seq >= n + 2 {
                    break;
                }
            }
        })
    };
    let mut writer = Pipe::open(&db_active.socket());
    let mut commits = vec![None; n as usize + 1];
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut answered = 0u64;
    for id in 1..=n {
        let due = started + interval * id as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        writer.send(&format!("INSERT INTO bench.t VALUES ({id}, RAND()); SELECT {id};"));
        while let Ok((at, line)) = writer.lines.try_recv() {
            if let Ok(done) = line.trim().parse::<usize>() {
                commits[done] = Some(at);
                answered += 1;
            }
        }
    }
    while answered < n {
        let (at, line) = writer.lines.recv_timeout(Duration::from_secs(30))?;
        if let Ok(done) = line.trim().parse::<usize>() {
            commits[done] = Some(at);
            answered += 1;
        }
    }
    let took = started.elapsed();
    println!(
        "the active's server committed {n} in {:.1} s ({:.0}/s)",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    let seen: Vec<Vec<Option<Instant>>> = pollers.into_iter().map(|p| p.join().unwrap()).collect();
    let _ = progress.join();
    report(
        "Tandem (commit on the active → row on the standby's server)",
        &commits,
        &seen[0],
    );
    report(
        "MariaDB async replication (commit → row on the replica)",
        &commits,
        &seen[1],
    );
    let count = |db: &MariaDb| db.sql("SELECT COUNT(*), COUNT(DISTINCT id) FROM bench.t");
    println!(
        "rows (count, distinct): standby {}, replica {}",
        count(db_standby),
        count(&replica)
    );
    Ok(())
}

fn embedded(sequential: u64, writers: u64, seconds: u64) -> anyhow::Result<()> {
    let cluster = Cluster::start_initialized(ClusterOptions::default())?;
    let active = cluster.wait_active(None, Duration::from_secs(30));
    let client = cluster.client(active);
    let exec = |sql: &str, params: Vec<serde_json::Value>| ExecuteRequest {
        statements: vec![SqlStatement {
            sql: sql.into(),
            params,
        }],
    };
    cluster.block_on(client.db_execute(&exec(
        "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, r INTEGER)",
        vec![],
    )))?;
    let mut lat = Vec::with_capacity(sequential as usize);
    for i in 0..sequential {
        let t = Instant::now();
        cluster.block_on(client.db_execute(&exec(
            "INSERT INTO t (v, r) VALUES (?, random())",
            vec![json!(format!("row {i}"))],
        )))?;
        lat.push(t.elapsed());
    }
    lat.sort();
    println!(
        "embedded SQLite: {sequential} sequential single-row writes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&lat, 50.0)),
        ms(percentile(&lat, 99.0)),
        ms(*lat.last().unwrap())
    );
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let addr = cluster.spec(active).admin_addr();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let (stop, done, addr) = (stop.clone(), done.clone(), addr.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                let client = tandem_client::Client::new(addr);
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let req = ExecuteRequest {
                        statements: vec![SqlStatement {
                            sql: "INSERT INTO t (v, r) VALUES (?, random())".into(),
                            params: vec![json!(format!("writer {w} row {i}"))],
                        }],
                    };
                    if rt.block_on(client.db_execute(&req)).is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
            })
        })
        .collect();
    let window = Duration::from_secs((seconds / 2).max(1));
    std::thread::sleep(window);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let n = done.load(Ordering::Relaxed);
    println!(
        "embedded SQLite: {writers} concurrent writers for {:.0} s: {n} writes, {:.0} writes/s",
        window.as_secs_f64(),
        n as f64 / window.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let rate = arg("--rate", 1000);
    let seconds = arg("--seconds", 20);
    let sequential = arg("--sequential", 2000);
    let writers = arg("--writers", 8);
    if rate > 0 {
        mariadb(rate, seconds)?;
    }
    if sequential > 0 {
        embedded(sequential, writers, seconds)?;
    }
    Ok(())
}
