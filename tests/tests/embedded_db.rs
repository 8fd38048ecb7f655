//! The embedded SQLite database through the admin API of the three-process cluster: writes on
//! the active, the same rows on the standby, bad input refused with nothing changed, failover.

use std::time::Duration;
use std::time::Instant;

use serde_json::json;
use serde_json::Value;
use tandem_client::api::ExecuteRequest;
use tandem_client::api::ExecuteResult;
use tandem_client::api::QueryRequest;
use tandem_client::api::QueryResult;
use tandem_client::api::SqlStatement;
use tandem_client::ClientError;
use tandem_tests::other_data_node;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

const SETTLE: Duration = Duration::from_secs(30);

fn st(sql: &str, params: Vec<Value>) -> SqlStatement {
    SqlStatement {
        sql: sql.into(),
        params,
    }
}

fn execute(cluster: &Cluster, node: &str, statements: Vec<SqlStatement>) -> Result<ExecuteResult, ClientError> {
    cluster.block_on(cluster.client(node).db_execute(&ExecuteRequest { statements }))
}

fn query(cluster: &Cluster, node: &str, sql: &str, consistency: &str) -> Result<QueryResult, ClientError> {
    cluster.block_on(cluster.client(node).db_query(&QueryRequest {
        sql: sql.into(),
        params: vec![],
        consistency: consistency.into(),
    }))
}

/// Wait until `node`'s copy answers `sql` (local read) with `rows`.
fn wait_rows(cluster: &Cluster, node: &str, sql: &str, rows: &[Vec<Value>]) {
    let started = Instant::now();
    loop {
        let got = query(cluster, node, sql, "local").map(|r| r.rows);
        if got.as_deref().ok() == Some(rows) {
            return;
        }
        assert!(started.elapsed() < SETTLE, "{node} never answered {rows:?}: {got:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn api_error(r: Result<impl std::fmt::Debug, ClientError>) -> (u16, String, String) {
    match r {
        Err(ClientError::Api { status, error, .. }) => (status, error.code, error.message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[test]
fn writes_on_the_active_give_the_same_rows_everywhere_and_bad_input_changes_nothing() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let active = cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);

    // Schema, then rows whose values only the active could compute.
    let r = execute(
        &cluster,
        active,
        vec![st(
            "CREATE TABLE scenes (id INTEGER PRIMARY KEY, name TEXT NOT NULL, r INTEGER, at TEXT, b BLOB)",
            vec![],
        )],
    )
    .unwrap();
    assert_eq!(r.seq, Some(1));
    let r = execute(
        &cluster,
        active,
        vec![
            st(
                "INSERT INTO scenes (name, r, at, b) VALUES (?, random(), strftime('%Y-%m-%d %H:%M:%f', 'now'), randomblob(8))",
                vec![json!("night")],
            ),
            st(
                "INSERT INTO scenes (name, r, at, b) VALUES (?, random(), strftime('%Y-%m-%d %H:%M:%f', 'now'), ?) RETURNING id",
                vec![json!("dawn"), json!({"blob": "00ff10"})],
            ),
            st("UPDATE scenes SET name = name || '!' WHERE id = 1", vec![]),
        ],
    )
    .unwrap();
    assert_eq!(r.seq, Some(2));
    assert_eq!(r.results[1].rows, vec![vec![json!(2)]]);
    assert_eq!(r.results[2].changes, 1);
    let all = "SELECT id, name, r, at, b FROM scenes ORDER BY id";
    let on_active = query(&cluster, active, all, "lease").unwrap();
    assert_eq!(on_active.rows.len(), 2);
    assert_eq!(on_active.rows[0][1], json!("night!"));
    assert_eq!(on_active.rows[1][4], json!({"blob": "00ff10"}));
    wait_rows(&cluster, standby, all, &on_active.rows);

    // Off the active: writes and lease reads are refused by name; local reads answer.
    let (status, code, _) = api_error(execute(&cluster, standby, vec![st("DELETE FROM scenes", vec![])]));
    assert_eq!((status, code.as_str()), (409, "not_available_here"));
    let (status, _, message) = api_error(query(&cluster, standby, all, "lease"));
    assert_eq!(status, 409);
    assert!(message.contains("consistency \"local\""), "{message}");
    let (status, code, _) = api_error(query(&cluster, "w", all, "local"));
    assert_eq!((status, code.as_str()), (404, "no_embedded_database"));

    // Bad input: each refused with its reason, nothing committed, no row changed.
    let before = query(&cluster, active, all, "lease").unwrap().rows;
    for (statements, why) in [
        (vec![st("INSERT INTO nowhere VALUES (1)", vec![])], "no such table"),
        (
            vec![st("CREATE TABLE loose (a TEXT, b TEXT)", vec![])],
            "has no PRIMARY KEY",
        ),
        (
            vec![
                st("INSERT INTO scenes (name) VALUES ('kept?')", vec![]),
                st("INSERT INTO scenes (name) VALUES (NULL)", vec![]),
            ],
            "statement 2",
        ),
        (vec![st("DELETE FROM _tandem_applied", vec![])], "Tandem's own"),
        (vec![st("PRAGMA journal_mode = DELETE", vec![])], "not allowed"),
        (
            vec![
                st("CREATE TABLE t2 (id INTEGER PRIMARY KEY)", vec![]),
                st("INSERT INTO scenes (name) VALUES ('x')", vec![]),
            ],
            "request of their own",
        ),
        (
            vec![st("INSERT INTO scenes (name) VALUES (?)", vec![])],
            "1 parameters expected, 0 given",
        ),
    ] {
        let (status, code, message) = api_error(execute(&cluster, active, statements));
        assert_eq!((status, code.as_str()), (400, "bad_sql"), "{message}");
        assert!(message.contains(why), "{why}: {message}");
    }
    let (status, _, message) = api_error(query(&cluster, active, "DELETE FROM scenes", "lease"));
    assert_eq!(status, 400);
    assert!(message.contains("must not write"), "{message}");
    let (status, _, _) = api_error(cluster.block_on(cluster.client(active).db_query(&QueryRequest {
        sql: "SELECT 1".into(),
        params: vec![],
        consistency: "eventually".into(),
    })));
    assert_eq!(status, 400);
    let (code, body) = tandem_tests::http_request(
        &cluster.spec(active).admin_addr(),
        "POST",
        "/v1/db/execute",
        &[],
        b"{not json",
    )
    .unwrap();
    assert_eq!(code, 400, "{}", String::from_utf8_lossy(&body));
    assert_eq!(query(&cluster, active, all, "lease").unwrap().rows, before);
    let tables =
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name";
    assert_eq!(
        query(&cluster, active, tables, "lease").unwrap().rows,
        vec![vec![json!("scenes")]]
    );
    // A write that changes nothing commits nothing.
    let r = execute(&cluster, active, vec![st("DELETE FROM scenes WHERE id = 99", vec![])]).unwrap();
    assert_eq!(r.seq, None);

    // Failover: the other node holds every committed row, takes writes, and the old active
    // catches up when it returns.
    cluster.kill(active);
    assert_eq!(cluster.wait_active(Some(active), SETTLE), standby);
    assert_eq!(query(&cluster, standby, all, "lease").unwrap().rows, before);
    let r = execute(&cluster, standby, vec![st("DELETE FROM scenes WHERE id = 1", vec![])]).unwrap();
    assert_eq!(r.seq, Some(3));
    cluster.restart(active).unwrap();
    let after = query(&cluster, standby, all, "lease").unwrap().rows;
    assert_eq!(after.len(), 1);
    wait_rows(&cluster, active, all, &after);
}

#[test]
fn a_standby_past_the_log_copies_the_database_from_the_active() {
    // A short log: the returning standby gets a snapshot, which holds no rows.
    let mut cluster = Cluster::start_initialized(ClusterOptions {
        extra_config: "[log]\nsnapshot_every_entries = 20\nkept_after_snapshot = 5\n".into(),
        ..Default::default()
    })
    .unwrap();
    let active = cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    execute(
        &cluster,
        active,
        vec![st("CREATE TABLE kv (k TEXT PRIMARY KEY, v INTEGER)", vec![])],
    )
    .unwrap();
    execute(&cluster, active, vec![st("INSERT INTO kv VALUES ('first', 1)", vec![])]).unwrap();
    let all = "SELECT k, v FROM kv ORDER BY k";
    wait_rows(&cluster, standby, all, &[vec![json!("first"), json!(1)]]);

    let standby_last = cluster.status(standby).unwrap().last_log_index.unwrap();
    cluster.kill(standby);
    for i in 0..60 {
        execute(
            &cluster,
            active,
            vec![st(
                "INSERT INTO kv VALUES (?, ?)",
                vec![json!(format!("k{i:02}")), json!(i)],
            )],
        )
        .unwrap();
    }
    cluster
        .wait_for("the leader purged entries the standby lacks", SETTLE, |s| {
            s.leader_status()
                .is_some_and(|l| l.purged_index.is_some_and(|p| p > standby_last))
        })
        .unwrap();

    // Back, its journal lacks the changes the snapshot covered: it copies the active's
    // database over the peer port and goes on from there.
    cluster.restart(standby).unwrap();
    let expected = query(&cluster, active, all, "lease").unwrap().rows;
    assert_eq!(expected.len(), 61);
    wait_rows(&cluster, standby, all, &expected);
    execute(&cluster, active, vec![st("DELETE FROM kv WHERE k = 'first'", vec![])]).unwrap();
    wait_rows(&cluster, standby, all, &expected[1..]);
    let events = cluster.ctl(&["events", "--kind", "warning"]).1;
    assert!(events.contains("copied the other data node's"), "{events}");
}
