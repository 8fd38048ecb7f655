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
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let dbs = [
            MariaDb::start_at(1, "127.0.11.1", port).unwrap(),
            MariaDb::start_at(2, "127.0.12.1", port).unwrap(),
        ];
        let cluster = Cluster::start_initialized(ClusterOptions {
            data_config: format!(
                "[database]\nkind = \"mariadb\"\nurl = \"mysql://{}@127.0.1@NODE_ID@.1:{port}\"\n",
                tandem_tests::mariadb::TANDEM_USER
            ),
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
