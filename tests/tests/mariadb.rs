//! Database change records on real MariaDB servers: the harness's servers, then a three-process
//! cluster whose data nodes each own one server.

use std::time::Duration;
use std::time::Instant;

use tandem_tests::mariadb::MariaDb;
use tandem_tests::other_data_node;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn the_harness_starts_mariadb_with_a_row_binlog_and_strict_gtids_that_survive_a_crash() {
    let mut db = MariaDb::start(41).unwrap();
    assert_eq!(
        db.sql("SELECT @@binlog_format, @@binlog_row_image, @@gtid_strict_mode, @@server_id, @@log_bin"),
        "ROW\tFULL\t1\t41\t1"
    );
    db.sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT)");
    db.sql("INSERT INTO shop.orders VALUES (1, 'lamp')");
    // Two DDL statements and one transaction, each its own GTID in domain 0 from server 41.
    assert_eq!(db.sql("SELECT @@gtid_binlog_pos"), "0-41-3");

    // A crash loses nothing committed, and the GTID position comes back with the data.
    db.kill();
    db.restart().unwrap();
    assert_eq!(db.sql("SELECT item FROM shop.orders WHERE id = 1"), "lamp");
    assert_eq!(db.sql("SELECT @@gtid_binlog_pos"), "0-41-3");
    // Two servers side by side, each on its own port and data directory.
    let other = MariaDb::start(42).unwrap();
    assert_ne!(other.port, db.port);
    assert_eq!(other.sql("SELECT @@gtid_binlog_pos"), "");
}

/// Two servers on one port, at 127.0.11.1 (node a, id 1) and 127.0.12.1 (node b, id 2), and a
/// cluster whose data nodes each replicate their own.
struct Setup {
    cluster: Cluster,
    dbs: [MariaDb; 2],
}

impl Setup {
    fn start() -> Setup {
        let (dbs, data_config) = tandem_tests::mariadb::pair().unwrap();
        let cluster = Cluster::start_initialized(ClusterOptions {
            data_config,
            ..Default::default()
        })
        .unwrap();
        Setup { cluster, dbs }
    }

    fn db(&self, node: &str) -> &MariaDb {
        &self.dbs[if node == "a" { 0 } else { 1 }]
    }

    fn info(&self, node: &str) -> serde_json::Value {
        let (code, body) =
            tandem_tests::http_request(&self.cluster.spec(node).admin_addr(), "GET", "/v1/db", &[], b"").unwrap();
        let body = String::from_utf8_lossy(&body);
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Wait until `node`'s Tandem reports `what` of its database.
    fn wait_info(&self, node: &str, what: &str, ok: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let started = Instant::now();
        loop {
            let info = self.info(node);
            if ok(&info) {
                return info;
            }
            assert!(started.elapsed() < SETTLE, "{node}: never {what}: {info:#}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until both servers stand at the same GTID position and hold the same rows.
    fn wait_same(&self, tables: &[&str]) {
        let dump = |db: &MariaDb| {
            let mut out = db.sql("SELECT @@gtid_binlog_pos");
            for t in tables {
                out.push('\n');
                out.push_str(&db.try_sql(&format!("SELECT * FROM {t} ORDER BY 1")).unwrap_or_default());
            }
            out
        };
        let started = Instant::now();
        loop {
            let (a, b) = (dump(&self.dbs[0]), dump(&self.dbs[1]));
            if a == b {
                return;
            }
            assert!(started.elapsed() < SETTLE, "the servers differ:\n{a}\n---\n{b}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn transactions_on_the_active_replay_on_the_standby_with_the_same_gtids() {
    let mut setup = Setup::start();
    let active = setup.cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    setup.wait_info(active, "writable and capturing", |i| {
        i["read_only"] == false && i["capturing"] == true
    });
    setup.wait_info(standby, "read-only", |i| i["read_only"] == true);
    let id = if active == "a" { 1 } else { 2 };

    // DDL, inserts, a transaction of several statements with updates and deletes, values the
    // standby could never compute the same, and an ALTER.
    setup
        .db(active)
        .sql("CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, item TEXT, qty INT)");
    setup
        .db(active)
        .sql("INSERT INTO shop.orders VALUES (1, 'lamp', 1), (2, 'desk', 1), (3, 'chair', 4)");
    setup.db(active).sql(
        "START TRANSACTION; UPDATE shop.orders SET qty = qty + 1 WHERE id = 1; DELETE FROM shop.orders WHERE id = 2; \
         INSERT INTO shop.orders VALUES (4, 'shelf', 2); COMMIT",
    );
    setup.db(active).sql(
        "CREATE TABLE shop.noise (id INT PRIMARY KEY, r DOUBLE, t DATETIME(6), u CHAR(36)); \
         INSERT INTO shop.noise VALUES (1, RAND(), NOW(6), UUID()), (2, RAND(), NOW(6), UUID())",
    );
    setup
        .db(active)
        .sql("ALTER TABLE shop.orders ADD COLUMN note TEXT DEFAULT 'none'");
    setup
        .db(active)
        .sql("UPDATE shop.orders SET note = 'fragile' WHERE id = 3");
    setup.wait_same(&["shop.orders", "shop.noise"]);
    assert_eq!(setup.db(standby).sql("SELECT @@gtid_binlog_pos"), format!("0-{id}-8"));
    assert_eq!(
        setup
            .db(standby)
            .sql("SELECT id, item, qty, note FROM shop.orders ORDER BY id"),
        "1\tlamp\t2\tnone\n3\tchair\t4\tfragile\n4\tshelf\t2\tnone"
    );
    let info = setup.wait_info(standby, "synced", |i| i["synced"] == true);
    assert_eq!(info["committed_seq"], 8, "{info:#}");
    assert_eq!(info["lag_records"], 0, "{info:#}");
    assert_eq!(info["applied_total"], 8, "{info:#}");
    // Lag and sync in the metrics and in tandemctl.
    let metrics = |node: &str| {
        let (code, body) =
            tandem_tests::http_request(&setup.cluster.spec(node).admin_addr(), "GET", "/metrics", &[], b"").unwrap();
        assert_eq!(code, 200);
        String::from_utf8(body).unwrap()
    };
    let m = metrics(standby);
    for line in [
        "tandem_db_committed_seq{source=\"mariadb\"} 8",
        "tandem_db_applied_seq{source=\"mariadb\"} 8",
        "tandem_db_lag_records{source=\"mariadb\"} 0",
        "tandem_db_lag_bytes{source=\"mariadb\"} 0",
        "tandem_db_synced{source=\"mariadb\"} 1",
        "tandem_db_read_only{source=\"mariadb\"} 1",
        "tandem_db_applied_total{source=\"mariadb\"} 8",
        "tandem_active 0",
    ] {
        assert!(m.lines().any(|l| l == line), "{line} missing from:\n{m}");
    }
    assert!(m.contains("# TYPE tandem_db_lag_records gauge"), "{m}");
    assert!(
        m.contains(&format!(
            "tandem_db_server_position_info{{source=\"mariadb\",gtid=\"0-{id}-8\"}} 1"
        )),
        "{m}"
    );
    let m = metrics(active);
    assert!(
        m.lines().any(|l| l == "tandem_db_capturing{source=\"mariadb\"} 1"),
        "{m}"
    );
    assert!(m.lines().any(|l| l == "tandem_active 1"), "{m}");
    let (code, out) = setup.cluster.ctl(&["db", "--node", standby]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("{standby}: synced")) && out.contains("read-only"),
        "{out}"
    );

    // The standby's server is read-only; the active's is not.
    assert_eq!(setup.db(standby).sql("SELECT @@read_only"), "1");
    assert_eq!(setup.db(active).sql("SELECT @@read_only"), "0");

    // The standby's Tandem is down while writes go on: back, it replays exactly the missed
    // ones (the journal kept them), none twice.
    setup.cluster.kill(standby);
    for i in 10..30 {
        setup.db(active).sql(&format!(
            "INSERT INTO shop.orders (id, item, qty) VALUES ({i}, 'box', {i})"
        ));
    }
    setup.cluster.restart(standby).unwrap();
    setup.wait_same(&["shop.orders", "shop.noise"]);
    assert_eq!(setup.db(standby).sql("SELECT COUNT(*) FROM shop.orders"), "23");
    let info = setup.wait_info(standby, "synced again", |i| i["synced"] == true);
    assert_eq!(info["committed_seq"], 28, "{info:#}");
    assert_eq!(setup.db(standby).sql("SELECT @@gtid_binlog_pos"), format!("0-{id}-28"));
}

/// Insert rows `id = 1, 2, …` into `shop.load` one transaction each until told to stop (or
/// until the server refuses); returns the ids the server acknowledged.
fn writer(
    db_socket: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        // One client process running many single-row transactions, fed through its stdin.
        let mut child = tandem_tests::mariadb::client(&db_socket)
            .arg("--force")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut id = 0u64;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            id += 1;
            use std::io::Write as _;
            if writeln!(stdin, "INSERT INTO shop.load VALUES ({id}, RAND()); SELECT {id};").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    })
}

#[test]
fn sigkill_of_the_active_loses_no_committed_transaction_and_the_returning_node_is_diverged() {
    let mut setup = Setup::start();
    let old = setup.cluster.wait_active(None, SETTLE);
    let new = other_data_node(old);
    setup.wait_info(old, "capturing", |i| i["capturing"] == true);
    setup
        .db(old)
        .sql("CREATE DATABASE shop; CREATE TABLE shop.load (id INT PRIMARY KEY, r DOUBLE)");

    // A write load on the active's server; its Tandem is killed in the middle of it. The
    // server goes on taking writes that Tandem never sees (nothing fences it here).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = writer(setup.db(old).socket(), stop.clone());
    std::thread::sleep(Duration::from_millis(1500));
    setup.cluster.kill(old);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = load.join().unwrap();
    assert!(acknowledged.len() > 50, "the load ran: {}", acknowledged.len());
    let on_old: u64 = setup.db(old).sql("SELECT COUNT(*) FROM shop.load").parse().unwrap();

    // The other node takes over once its server holds every committed transaction, and not
    // one more: a gap-free prefix of the load, each row once, at the committed GTID.
    assert_eq!(setup.cluster.wait_active(Some(old), SETTLE), new);
    let info = setup.wait_info(new, "writable and capturing", |i| {
        i["read_only"] == false && i["capturing"] == true
    });
    let committed = info["committed_gtid"].as_str().unwrap().to_string();
    assert_eq!(setup.db(new).sql("SELECT @@gtid_binlog_pos"), committed);
    let (count, max): (u64, u64) = {
        let row = setup
            .db(new)
            .sql("SELECT COUNT(*), COALESCE(MAX(id), 0) FROM shop.load");
        let (c, m) = row.split_once('\t').unwrap();
        (c.parse().unwrap(), m.parse().unwrap())
    };
    assert_eq!(count, max, "a gap-free prefix");
    assert!(
        count > 0 && count < on_old,
        "{count} committed of {on_old} the old server took"
    );
    // Exactly the committed transactions: two DDL statements, then one per row.
    assert_eq!(info["committed_seq"].as_u64().unwrap(), count + 2, "{info:#}");

    // The new active's writes go on through its own capture.
    setup.db(new).sql("INSERT INTO shop.load VALUES (1000000, 0)");
    let after = setup.wait_info(new, "the new write committed", |i| {
        i["committed_seq"].as_u64() == Some(count + 3)
    });
    let committed_now = after["committed_gtid"].as_str().unwrap().to_string();
    assert!(
        committed_now.starts_with(&format!("0-{}-", if new == "a" { 1 } else { 2 })),
        "{committed_now}"
    );

    // The old node returns as standby. Its server holds transactions that never committed:
    // it is reported diverged, made read-only, and gets nothing applied on top.
    let old_position = setup.db(old).sql("SELECT @@gtid_binlog_pos");
    setup.cluster.restart(old).unwrap();
    let info = setup.wait_info(old, "diverged", |i| i["diverged"].is_string());
    let why = info["diverged"].as_str().unwrap();
    assert!(why.contains("never committed through Tandem"), "{why}");
    assert_eq!(info["synced"], false);
    setup.wait_info(old, "read-only", |i| i["read_only"] == true);
    assert_eq!(setup.db(old).sql("SELECT @@read_only"), "1");
    setup.db(new).sql("INSERT INTO shop.load VALUES (1000001, 0)");
    setup.wait_info(new, "the second write committed", |i| {
        i["committed_seq"].as_u64() == Some(count + 4)
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        setup.db(old).sql("SELECT @@gtid_binlog_pos"),
        old_position,
        "nothing applied on top"
    );
    assert_eq!(
        setup.db(old).sql("SELECT COUNT(*) FROM shop.load WHERE id >= 1000000"),
        "0"
    );
    let events = setup.cluster.ctl(&["events", "--kind", "warning"]).1;
    assert!(events.contains("database not synced"), "{events}");
    let (code, out) = setup.cluster.ctl(&["db", "--node", old]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("NOT SYNCED, diverged"), "{out}");
    // The active hears of it with the next heartbeat, and the cluster status names it.
    setup
        .cluster
        .wait_cluster_status(new, "not synced", "database diverged", SETTLE);

    // The operator's word: first what a seed would do (nothing changes), then the seed. The
    // old node's server then holds exactly the committed transactions and replays the next.
    let (code, out) = setup.cluster.ctl(&["db", "--node", old, "seed"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(
        out.contains("nothing changed") && out.contains("--replace-local-data"),
        "{out}"
    );
    assert_eq!(setup.db(old).sql("SELECT @@gtid_binlog_pos"), old_position);
    let (code, out) = setup
        .cluster
        .ctl(&["db", "--node", old, "seed", "--replace-local-data"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("seeded at"), "{out}");
    let info = setup.wait_info(old, "synced after the seed", |i| i["synced"] == true);
    assert!(info["diverged"].is_null(), "{info:#}");
    setup.db(new).sql("INSERT INTO shop.load VALUES (1000002, 0)");
    setup.wait_same(&["shop.load"]);
    assert_eq!(setup.db(old).sql("SELECT @@read_only"), "1");
    let (code, _) = setup
        .cluster
        .ctl(&["db", "--node", new, "seed", "--replace-local-data"]);
    assert_eq!(code, Some(1), "the active is never seeded");
}

#[test]
fn a_switchover_and_crashed_servers_keep_one_writable_database_and_every_transaction() {
    let mut setup = Setup::start();
    let first = setup.cluster.wait_active(None, SETTLE);
    let second = other_data_node(first);
    setup.wait_info(first, "capturing", |i| i["capturing"] == true);
    setup
        .db(first)
        .sql("CREATE DATABASE shop; CREATE TABLE shop.t (id INT PRIMARY KEY, v TEXT)");
    setup.db(first).sql("INSERT INTO shop.t VALUES (1, 'before')");
    setup.wait_same(&["shop.t"]);

    // The standby's server crashes and comes back writable (its own config): Tandem makes it
    // read-only again, and it replays what it missed from its own position.
    setup.dbs[if second == "a" { 0 } else { 1 }].kill();
    setup
        .db(first)
        .sql("INSERT INTO shop.t VALUES (2, 'while the standby server was down')");
    setup.dbs[if second == "a" { 0 } else { 1 }].restart().unwrap();
    setup.wait_same(&["shop.t"]);
    setup.wait_info(second, "read-only again", |i| i["read_only"] == true);
    let started = Instant::now();
    while setup.db(second).sql("SELECT @@read_only") != "1" {
        assert!(started.elapsed() < SETTLE, "the standby's server stayed writable");
        std::thread::sleep(Duration::from_millis(50));
    }

    // The active's server crashes: its capture starts again after what committed, and a
    // write made once it is back goes out.
    setup.dbs[if first == "a" { 0 } else { 1 }].kill();
    setup.dbs[if first == "a" { 0 } else { 1 }].restart().unwrap();
    setup
        .db(first)
        .sql("INSERT INTO shop.t VALUES (3, 'after the active server restarted')");
    setup.wait_same(&["shop.t"]);

    // A planned switchover: the old active's server turns read-only, everything it took is
    // on the new one, and the new one is writable and captures.
    let (code, out) = setup.cluster.ctl(&["switchover"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(setup.cluster.wait_active(Some(first), SETTLE), second);
    setup.wait_info(second, "writable and capturing", |i| {
        i["read_only"] == false && i["capturing"] == true
    });
    assert_eq!(setup.db(first).sql("SELECT @@read_only"), "1");
    assert_eq!(setup.db(second).sql("SELECT @@read_only"), "0");
    setup
        .db(second)
        .sql("INSERT INTO shop.t VALUES (4, 'on the new active')");
    setup.wait_same(&["shop.t"]);
    assert_eq!(setup.db(first).sql("SELECT COUNT(*) FROM shop.t"), "4");
    let info = setup.wait_info(first, "synced as the standby", |i| i["synced"] == true);
    assert_eq!(info["committed_seq"], 6, "{info:#}");
    assert!(info["diverged"].is_null(), "{info:#}");
}
