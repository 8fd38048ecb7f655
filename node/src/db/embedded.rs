//! The embedded SQLite database: owned by the cluster, reached through the admin API, for
//! services that have no database of their own (DESIGN §5).
//!
//! A write (`POST /v1/db/execute`) runs on the active only, one at a time: its statements run
//! in one transaction with SQLite's session extension recording what they change; the
//! transaction is rolled back and its *changeset* (the rows' old and new values by primary key)
//! is proposed as a database change record of the source [`SOURCE`]. Every data node, the active
//! included, applies committed changesets in order from its journal, with the sequence number in
//! `_tandem_applied` in the same transaction: exactly once, and the same rows everywhere, whatever
//! `random()` or the clock said on the active. Schema changes travel as their SQL text, in a
//! request of their own. A table without a primary key is refused: the session extension
//! cannot record its changes.
//!
//! A read (`POST /v1/db/query`) is one read-only statement, at `lease` consistency (on the
//! active, after it applied every committed change) or `local` (this node's copy as it is).

use std::path::Path;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::session::ConflictAction;
use rusqlite::session::ConflictType;
use rusqlite::types::Value;
use rusqlite::Connection;
use serde::Deserialize;
use serde::Serialize;
use tandem_client::api::ExecuteRequest;
use tandem_client::api::ExecuteResult;
use tandem_client::api::QueryRequest;
use tandem_client::api::QueryResult;
use tandem_client::api::StatementResult;
use tandem_raft_store::codec;
use tandem_raft_store::journal::DbJournal;
use tandem_raft_store::records::DbChange;
use tandem_raft_store::records::Record;
use tandem_raft_store::records::DB_CHANGE_MAX_BYTES;
use tokio::sync::watch;

use crate::consensus::Consensus;
use crate::events::EventLog;
use crate::events::Kind;
use crate::failover::driver::Failover;

/// The change stream's name in the log.
pub const SOURCE: &str = "embedded";
/// Longest SQL text of one statement.
pub const SQL_MAX_BYTES: usize = 64 * 1024;
/// Most statements in one execute request.
pub const STATEMENTS_MAX: usize = 64;
/// Most parameters of one statement.
pub const PARAMS_MAX: usize = 256;
/// Most rows one query (or one `RETURNING`) gives back.
pub const ROWS_MAX: usize = 10_000;
/// How long a write or a lease read waits for this node to apply what committed.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);
/// Largest embedded database a node copies from the other data node to close a gap in its
/// journal (the copy travels in one peer answer).
pub const EMBEDDED_COPY_MAX_BYTES: u64 = 200 * 1024 * 1024;
/// How long the copy may take to arrive.
const COPY_TIMEOUT: Duration = Duration::from_secs(120);

/// What one record of the embedded source holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A session changeset.
    Rows(#[serde(with = "tandem_raft_store::codec::bytes")] Vec<u8>),
    /// Schema statements, run as they are.
    Schema(Vec<String>),
}

/// Why this node's copy cannot go on applying.
#[derive(Debug)]
enum Stuck {
    /// The journal lacks changes (the node caught up from a snapshot): a copy of the other
    /// data node's database closes it. `need`: the copy must hold at least this.
    Gap { why: String, need: u64 },
    /// Anything else: reported, nothing more applied.
    Other(String),
}

/// Why a request is refused; the API maps each to its status.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Bad input: nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// This node cannot do it now (not the active, not caught up).
    #[error("{0}")]
    Unavailable(String),
    /// The write could not be committed.
    #[error("{0}")]
    Failed(String),
}

pub struct Embedded {
    dir: std::path::PathBuf,
    conn: Mutex<Connection>,
    /// Talks to the other data node's peer port (for a copy of its database).
    exchange: crate::files::Exchange,
    consensus: Consensus,
    failover: Failover,
    events: Arc<EventLog>,
    journal: DbJournal,
    /// Writes run one at a time.
    writing: tokio::sync::Mutex<()>,
    /// The last sequence number this node's copy holds.
    applied: watch::Sender<u64>,
    diverged: Mutex<Option<String>>,
}

fn sql_err(e: rusqlite::Error) -> String {
    e.to_string()
}

impl Embedded {
    /// Open (or create) the database in `dir`.
    pub fn open(
        dir: &Path,
        consensus: Consensus,
        failover: Failover,
        events: Arc<EventLog>,
        journal: DbJournal,
        exchange: crate::files::Exchange,
    ) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (conn, applied) = open_file(&dir.join("db.sqlite"))?;
        Ok(Arc::new(Embedded {
            dir: dir.to_path_buf(),
            exchange,
            conn: Mutex::new(conn),
            consensus,
            failover,
            events,
            journal,
            writing: tokio::sync::Mutex::new(()),
            applied: watch::channel(applied).0,
            diverged: Mutex::new(None),
        }))
    }

    fn committed_seq(&self) -> u64 {
        self.consensus
            .state()
            .read()
            .db_positions
            .get(SOURCE)
            .map_or(0, |p| p.seq)
    }

    pub fn applied_seq(&self) -> u64 {
        *self.applied.borrow()
    }

    /// Wait until this node's copy holds `seq`.
    async fn wait_applied(&self, seq: u64, within: Duration) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(within, rx.wait_for(|a| *a >= seq))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Run `req` on the active as one replicated transaction.
    pub async fn execute(self: &Arc<Self>, req: ExecuteRequest) -> Result<ExecuteResult, SqlError> {
        check_request(&req)?;
        let _one = self.writing.lock().await;
        let Some(epoch) = self.failover.serving_epoch() else {
            return Err(SqlError::Unavailable(
                "this node is not the active: send writes to the active (tandemctl status)".into(),
            ));
        };
        let committed = self.committed_seq();
        if !self.wait_applied(committed, CATCH_UP_WAIT).await {
            return Err(SqlError::Unavailable(format!(
                "this node's copy is not caught up (it holds {}, {committed} committed): try again",
                self.applied_seq()
            )));
        }
        let this = self.clone();
        let (change, results) = tokio::task::spawn_blocking(move || this.trial(&req))
            .await
            .map_err(|e| SqlError::Failed(format!("the write task failed: {e}")))??;
        let Some(change) = change else {
            return Ok(ExecuteResult { seq: None, results });
        };
        let seq = committed + 1;
        let events = codec::encode(&change).map_err(|e| SqlError::Failed(e.to_string()))?;
        if events.len() > DB_CHANGE_MAX_BYTES {
            return Err(SqlError::Invalid(format!(
                "the change is {} bytes, more than DB_CHANGE_MAX_BYTES ({DB_CHANGE_MAX_BYTES}): split it into smaller requests",
                events.len()
            )));
        }
        let record = Record::Db(DbChange {
            source: SOURCE.into(),
            seq,
            gtid: format!("{SOURCE}-{seq}"),
            events,
        });
        self.consensus
            .propose_in(record, Some(epoch))
            .await
            .map_err(|e| SqlError::Failed(format!("the change was not committed: {e}")))?;
        // Read your writes: the answer comes once this node's copy holds the change.
        if !self.wait_applied(seq, CATCH_UP_WAIT).await {
            return Err(SqlError::Failed(format!(
                "change {seq} committed but is not applied here yet: {}",
                self.diverged.lock().expect("lock").clone().unwrap_or_default()
            )));
        }
        Ok(ExecuteResult {
            seq: Some(seq),
            results,
        })
    }

    /// Run the statements in a transaction that is rolled back; what they changed.
    fn trial(&self, req: &ExecuteRequest) -> Result<(Option<Change>, Vec<StatementResult>), SqlError> {
        let conn = self.conn.lock().expect("embedded database lock");
        let schema = req.statements.iter().filter(|s| is_schema(&s.sql)).count();
        if schema > 0 && schema < req.statements.len() {
            return Err(SqlError::Invalid(
                "schema statements (CREATE, ALTER, DROP) go in a request of their own".into(),
            ));
        }
        conn.execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| SqlError::Failed(sql_err(e)))?;
        let outcome = (|| {
            let mut session = rusqlite::session::Session::new(&conn).map_err(|e| SqlError::Failed(sql_err(e)))?;
            session.attach(None::<&str>).map_err(|e| SqlError::Failed(sql_err(e)))?;
            let mut results = Vec::with_capacity(req.statements.len());
            for (i, st) in req.statements.iter().enumerate() {
                let r = run_statement(&conn, st, false)
                    .map_err(|e| SqlError::Invalid(format!("statement {} ({}): {e}", i + 1, brief(&st.sql))))?;
                results.push(r);
            }
            if schema > 0 {
                check_primary_keys(&conn)?;
                let sqls = req.statements.iter().map(|s| s.sql.clone()).collect();
                return Ok((Some(Change::Schema(sqls)), results));
            }
            let mut changeset = Vec::new();
            session
                .changeset_strm(&mut changeset)
                .map_err(|e| SqlError::Failed(sql_err(e)))?;
            Ok(((!changeset.is_empty()).then_some(Change::Rows(changeset)), results))
        })();
        conn.execute_batch("ROLLBACK")
            .map_err(|e| SqlError::Failed(sql_err(e)))?;
        outcome
    }

    /// One read-only statement.
    pub async fn query(self: &Arc<Self>, req: QueryRequest) -> Result<QueryResult, SqlError> {
        check_statement(&req.sql, &req.params)?;
        match req.consistency.as_str() {
            "local" => {}
            "lease" => {
                if self.failover.serving_epoch().is_none() {
                    return Err(SqlError::Unavailable(
                        "a lease read is served by the active only: ask the active, or use consistency \"local\""
                            .into(),
                    ));
                }
                let committed = self.committed_seq();
                if !self.wait_applied(committed, CATCH_UP_WAIT).await {
                    return Err(SqlError::Unavailable(
                        "this node's copy is not caught up: try again".into(),
                    ));
                }
            }
            other => {
                return Err(SqlError::Invalid(format!(
                    "unknown consistency {other:?}: use \"lease\" or \"local\""
                )))
            }
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let conn = this.conn.lock().expect("embedded database lock");
            let st = tandem_client::api::SqlStatement {
                sql: req.sql,
                params: req.params,
            };
            let r = run_statement(&conn, &st, true).map_err(SqlError::Invalid)?;
            Ok(QueryResult {
                columns: r.columns,
                rows: r.rows,
                applied_seq: this.applied_seq(),
            })
        })
        .await
        .map_err(|e| SqlError::Failed(format!("the query task failed: {e}")))?
    }

    /// Apply committed changes from the journal, in order, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut added = self.journal.subscribe();
        loop {
            let this = self.clone();
            let result = tokio::task::spawn_blocking(move || this.apply_some()).await;
            match result {
                Ok(Ok(())) => {}
                Ok(Err(Stuck::Gap { why, need })) => match self.copy_from_peer(need).await {
                    Ok(seq) => {
                        *self.diverged.lock().expect("lock") = None;
                        tracing::info!(seq, "embedded database copied from the other data node");
                        self.events.record(
                            Kind::Warning,
                            format!("embedded database: {why}; copied the other data node's (it holds change {seq})"),
                        );
                        continue;
                    }
                    Err(e) => self.not_synced(format!("{why}; a copy from the other data node failed: {e}")),
                },
                Ok(Err(Stuck::Other(why))) => self.not_synced(why),
                Err(e) => tracing::error!(error = %e, "embedded apply task failed"),
            }
            tokio::select! {
                _ = added.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    fn not_synced(&self, why: String) {
        let first = self.diverged.lock().expect("lock").replace(why.clone()).is_none();
        if first {
            tracing::error!(why, "embedded database not synced");
            self.events
                .record(Kind::Warning, format!("embedded database not synced: {why}"));
        }
    }

    fn apply_some(&self) -> Result<(), Stuck> {
        let gap = |applied: u64, upto: u64| Stuck::Gap {
            why: format!(
                "this node's journal lacks changes {}..={upto} (it caught up from a snapshot)",
                applied + 1
            ),
            need: upto,
        };
        loop {
            let applied = self.applied_seq();
            let entries = self.journal.read(SOURCE, 0, 64);
            let Some(first) = entries.first() else {
                // The state counts a change a moment before the journal holds it: a gap only
                // when the journal is still empty after that.
                let committed = self.committed_seq();
                if committed > applied {
                    std::thread::sleep(Duration::from_secs(1));
                    if self.journal.read(SOURCE, 0, 1).is_empty() && self.applied_seq() == applied {
                        return Err(gap(applied, committed));
                    }
                }
                return Ok(());
            };
            if first.change.seq > applied + 1 {
                return Err(gap(applied, first.change.seq - 1));
            }
            if self.diverged.lock().expect("lock").is_some() {
                return Ok(());
            }
            let mut conn = self.conn.lock().expect("embedded database lock");
            for e in &entries {
                if e.change.seq > applied_now(&self.applied) {
                    let change: Change = codec::decode(&e.change.events)
                        .map_err(|err| Stuck::Other(format!("change {} does not decode: {err}", e.change.seq)))?;
                    apply_change(&mut conn, e.change.seq, &change).map_err(Stuck::Other)?;
                    self.applied.send_replace(e.change.seq);
                }
                self.journal
                    .trim(SOURCE, e.change.seq)
                    .map_err(|err| Stuck::Other(format!("cannot trim the journal: {err}")))?;
            }
        }
    }

    /// A consistent copy of this node's database: its applied sequence number (8 bytes, little
    /// endian), then the file (for the other data node's [`Self::copy_from_peer`]).
    pub fn snapshot_copy(&self) -> Result<Vec<u8>, String> {
        let tmp = self.dir.join(format!("copy-{}.sqlite", rand::random::<u32>()));
        let conn = self.conn.lock().expect("embedded database lock");
        let seq = self.applied_seq();
        let made = conn.execute("VACUUM INTO ?1", [tmp.to_string_lossy()]);
        drop(conn);
        let result = made.map_err(sql_err).and_then(|_| {
            let len = std::fs::metadata(&tmp).map_err(|e| e.to_string())?.len();
            if len > EMBEDDED_COPY_MAX_BYTES {
                return Err(format!(
                    "the database is {len} bytes, more than EMBEDDED_COPY_MAX_BYTES ({EMBEDDED_COPY_MAX_BYTES})"
                ));
            }
            let mut out = seq.to_le_bytes().to_vec();
            out.extend(std::fs::read(&tmp).map_err(|e| e.to_string())?);
            Ok(out)
        });
        let _ = std::fs::remove_file(&tmp);
        result
    }

    /// Replace this node's copy with the other data node's, which must hold change `need`;
    /// the sequence number the new copy holds.
    async fn copy_from_peer(self: &Arc<Self>, need: u64) -> Result<u64, String> {
        let cfg = self.consensus.config();
        let peer = cfg
            .members
            .iter()
            .find(|m| m.role == tandem_raft_store::MemberRole::Data && m.id != cfg.node_id)
            .map(|m| m.peer_addr.clone())
            .ok_or("no other data node")?;
        let bytes = (self.exchange)(peer.clone(), "/peer/db/embedded", Vec::new(), COPY_TIMEOUT).await?;
        if bytes.len() < 8 {
            return Err(format!("{peer} sent {} bytes, not a database copy", bytes.len()));
        }
        let seq = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if seq < need {
            return Err(format!(
                "{peer}'s copy holds change {seq}, this node needs {need}: try later"
            ));
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.replace_with(&bytes[8..], seq))
            .await
            .map_err(|e| e.to_string())??;
        Ok(seq)
    }

    /// Put `data` (an SQLite file holding change `seq`) in place of this node's copy.
    fn replace_with(&self, data: &[u8], seq: u64) -> Result<(), String> {
        let incoming = self.dir.join("incoming.sqlite");
        let io = |e: std::io::Error| format!("{}: {e}", incoming.display());
        {
            use std::io::Write as _;
            let mut f = std::fs::File::create(&incoming).map_err(io)?;
            f.write_all(data).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        // It must be a database holding `seq` before it replaces anything.
        let (check, held) = open_file(&incoming)?;
        drop(check);
        if held != seq {
            let _ = std::fs::remove_file(&incoming);
            return Err(format!("the copy says it holds change {held}, not {seq}"));
        }
        let target = self.dir.join("db.sqlite");
        let mut conn = self.conn.lock().expect("embedded database lock");
        // Let go of the old file (and its WAL) before the new one takes its name.
        let old = std::mem::replace(&mut *conn, Connection::open_in_memory().map_err(sql_err)?);
        drop(old);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(self.dir.join(format!("db.sqlite{suffix}")));
        }
        std::fs::rename(&incoming, &target).map_err(io)?;
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        let (fresh, _) = open_file(&target)?;
        *conn = fresh;
        drop(conn);
        self.applied.send_replace(seq);
        self.journal
            .trim(SOURCE, seq)
            .map_err(|e| format!("cannot trim the journal: {e}"))
    }

    /// Lag and state for `GET /v1/db/embedded` and metrics: (applied, committed, diverged).
    pub fn state(&self) -> (u64, u64, Option<String>) {
        (
            self.applied_seq(),
            self.committed_seq(),
            self.diverged.lock().expect("lock").clone(),
        )
    }
}

/// Open the database file at `path` as the node's copy; its applied sequence number.
fn open_file(path: &Path) -> Result<(Connection, u64), String> {
    let conn = Connection::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
         CREATE TABLE IF NOT EXISTS _tandem_applied (id INTEGER PRIMARY KEY CHECK (id = 0), seq INTEGER NOT NULL); \
         INSERT OR IGNORE INTO _tandem_applied VALUES (0, 0);",
    )
    .map_err(|e| format!("cannot set up {}: {e}", path.display()))?;
    let applied: i64 = conn
        .query_row("SELECT seq FROM _tandem_applied", [], |r| r.get(0))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((conn, applied as u64))
}

/// The peer route the other data node copies this node's database from.
pub fn peer_routes(embedded: Arc<Embedded>) -> axum::Router {
    use axum::extract::State;
    use axum::http::StatusCode;
    async fn copy(State(e): State<Arc<Embedded>>) -> Result<Vec<u8>, (StatusCode, String)> {
        tokio::task::spawn_blocking(move || e.snapshot_copy())
            .await
            .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))
    }
    axum::Router::new()
        .route("/peer/db/embedded", axum::routing::post(copy))
        .with_state(embedded)
}

fn applied_now(applied: &watch::Sender<u64>) -> u64 {
    *applied.borrow()
}

/// Apply one committed change with its sequence number, in one transaction.
fn apply_change(conn: &mut Connection, seq: u64, change: &Change) -> Result<(), String> {
    let tx = conn.transaction().map_err(sql_err)?;
    match change {
        Change::Schema(sqls) => {
            for sql in sqls {
                tx.execute_batch(sql)
                    .map_err(|e| format!("change {seq}: schema statement {}: {e}", brief(sql)))?;
            }
        }
        Change::Rows(changeset) => {
            // Any conflict means this copy is not what the active's was: stop, do not guess.
            tx.apply_strm(&mut &changeset[..], None::<fn(&str) -> bool>, |_: ConflictType, _| {
                ConflictAction::SQLITE_CHANGESET_ABORT
            })
            .map_err(|e| format!("change {seq} does not apply to this copy (it differs from the active's): {e}"))?;
        }
    }
    tx.execute("UPDATE _tandem_applied SET seq = ?1", [seq as i64])
        .map_err(sql_err)?;
    tx.commit().map_err(sql_err)
}

fn brief(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 60 {
        format!("{}…", one_line.chars().take(60).collect::<String>())
    } else {
        one_line
    }
}

fn first_word(sql: &str) -> String {
    sql.trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

fn is_schema(sql: &str) -> bool {
    matches!(first_word(sql).as_str(), "CREATE" | "ALTER" | "DROP")
}

fn check_request(req: &ExecuteRequest) -> Result<(), SqlError> {
    if req.statements.is_empty() {
        return Err(SqlError::Invalid("no statements".into()));
    }
    if req.statements.len() > STATEMENTS_MAX {
        return Err(SqlError::Invalid(format!(
            "{} statements, more than STATEMENTS_MAX ({STATEMENTS_MAX})",
            req.statements.len()
        )));
    }
    for st in &req.statements {
        check_statement(&st.sql, &st.params)?;
    }
    Ok(())
}

fn check_statement(sql: &str, params: &[serde_json::Value]) -> Result<(), SqlError> {
    if sql.len() > SQL_MAX_BYTES {
        return Err(SqlError::Invalid(format!(
            "a statement of {} bytes, more than SQL_MAX_BYTES ({SQL_MAX_BYTES})",
            sql.len()
        )));
    }
    if params.len() > PARAMS_MAX {
        return Err(SqlError::Invalid(format!(
            "{} parameters, more than PARAMS_MAX ({PARAMS_MAX})",
            params.len()
        )));
    }
    let word = first_word(sql);
    if matches!(
        word.as_str(),
        "BEGIN" | "COMMIT" | "END" | "ROLLBACK" | "SAVEPOINT" | "RELEASE" | "ATTACH" | "DETACH" | "PRAGMA" | "VACUUM"
    ) {
        return Err(SqlError::Invalid(format!(
            "{word} is not allowed: each request is one transaction of its own, on the cluster's database only"
        )));
    }
    if sql.to_ascii_lowercase().contains("_tandem_") {
        return Err(SqlError::Invalid("tables named _tandem_* are Tandem's own".into()));
    }
    if word == "CREATE" && sql.to_ascii_uppercase().contains("TRIGGER") {
        return Err(SqlError::Invalid(
            "triggers are not allowed: a trigger's changes would be applied twice on the other nodes".into(),
        ));
    }
    Ok(())
}

/// Every table must have a primary key: changes are replicated by it.
fn check_primary_keys(conn: &Connection) -> Result<(), SqlError> {
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE '_tandem_%'")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| SqlError::Failed(sql_err(e)))?;
    for t in tables {
        let pk: i64 = conn
            .query_row("SELECT COUNT(*) FROM pragma_table_info(?1) WHERE pk > 0", [&t], |r| {
                r.get(0)
            })
            .map_err(|e| SqlError::Failed(sql_err(e)))?;
        if pk == 0 {
            return Err(SqlError::Invalid(format!(
                "table {t:?} has no PRIMARY KEY: the embedded database replicates changes by primary key; declare one"
            )));
        }
    }
    Ok(())
}

/// Run one statement; `read_only` refuses one that would write.
fn run_statement(
    conn: &Connection,
    st: &tandem_client::api::SqlStatement,
    read_only: bool,
) -> Result<StatementResult, String> {
    let mut stmt = conn.prepare(&st.sql).map_err(sql_err)?;
    if read_only && !stmt.readonly() {
        return Err("a query must not write: send writes to /v1/db/execute".into());
    }
    let expected = stmt.parameter_count();
    if expected != st.params.len() {
        return Err(format!("{expected} parameters expected, {} given", st.params.len()));
    }
    for (i, p) in st.params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, from_json(p)?).map_err(sql_err)?;
    }
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let mut rows_out = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next().map_err(sql_err)? {
        if rows_out.len() == ROWS_MAX {
            return Err(format!(
                "more than ROWS_MAX ({ROWS_MAX}) rows: narrow the query (LIMIT)"
            ));
        }
        let mut out = Vec::with_capacity(columns.len());
        for i in 0..columns.len() {
            out.push(to_json(row.get::<_, Value>(i).map_err(sql_err)?));
        }
        rows_out.push(out);
    }
    drop(rows);
    Ok(StatementResult {
        changes: conn.changes(),
        last_insert_rowid: conn.last_insert_rowid(),
        columns,
        rows: rows_out,
    })
}

fn from_json(v: &serde_json::Value) -> Result<Value, String> {
    Ok(match v {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Integer(i64::from(*b)),
        serde_json::Value::Number(n) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None => Value::Real(n.as_f64().ok_or("a number out of range")?),
        },
        serde_json::Value::String(s) => Value::Text(s.clone()),
        serde_json::Value::Object(o) if o.len() == 1 && o.get("blob").is_some_and(|b| b.is_string()) => {
            let hex = o["blob"].as_str().expect("checked");
            Value::Blob(from_hex(hex).ok_or("a blob parameter is not hex")?)
        }
        other => {
            return Err(format!(
                "parameter {other} is not null, a number, a string or {{\"blob\": \"<hex>\"}}"
            ))
        }
    })
}

fn to_json(v: Value) -> serde_json::Value {
    match v {
        Value::Null => serde_json::Value::Null,
        Value::Integer(i) => i.into(),
        Value::Real(f) => f.into(),
        Value::Text(s) => s.into(),
        Value::Blob(b) => serde_json::json!({ "blob": b.iter().map(|x| format!("{x:02x}")).collect::<String>() }),
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> tandem_client::api::SqlStatement {
        tandem_client::api::SqlStatement {
            sql: sql.into(),
            params: vec![],
        }
    }

    /// The changeset made on one copy applies to another and gives the same rows, whatever
    /// random() said; a copy that differs refuses it.
    #[test]
    fn a_changeset_carries_the_rows_the_statements_made() {
        let mut a = Connection::open_in_memory().unwrap();
        let mut b = Connection::open_in_memory().unwrap();
        let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, r INTEGER, s TEXT); CREATE TABLE _tandem_applied (id INTEGER PRIMARY KEY, seq INTEGER); INSERT INTO _tandem_applied VALUES (0, 0);";
        a.execute_batch(schema).unwrap();
        b.execute_batch(schema).unwrap();
        a.execute_batch("BEGIN").unwrap();
        let cs = {
            let mut session = rusqlite::session::Session::new(&a).unwrap();
            session.attach(None::<&str>).unwrap();
            for sql in [
                "INSERT INTO t VALUES (1, random(), 'x'), (2, random(), 'y'), (3, 0, 'z')",
                "UPDATE t SET s = 'changed' WHERE id = 2",
                "DELETE FROM t WHERE id = 3",
            ] {
                run_statement(&a, &statement(sql), false).unwrap();
            }
            let mut cs = Vec::new();
            session.changeset_strm(&mut cs).unwrap();
            cs
        };
        a.execute_batch("ROLLBACK").unwrap();
        let change = Change::Rows(cs);
        apply_change(&mut a, 1, &change).unwrap();
        apply_change(&mut b, 1, &change).unwrap();
        let dump = |c: &Connection| -> Vec<(i64, i64, String)> {
            c.prepare("SELECT id, r, s FROM t ORDER BY id")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .map(Result::unwrap)
                .collect()
        };
        assert_eq!(dump(&a), dump(&b));
        assert_eq!(dump(&a).len(), 2);
        assert_eq!(dump(&b)[1].2, "changed");
        let seq: i64 = b
            .query_row("SELECT seq FROM _tandem_applied", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, 1);
        // Applied again, or to a copy that differs: refused, nothing changed.
        assert!(apply_change(&mut b, 2, &change).is_err());
        let seq: i64 = b
            .query_row("SELECT seq FROM _tandem_applied", [], |r| r.get(0))
            .unwrap();
        assert_eq!(seq, 1, "the failed apply changed nothing");
    }

    #[test]
    fn each_limit_and_forbidden_statement_is_refused_by_name() {
        let many = ExecuteRequest {
            statements: vec![statement("SELECT 1"); STATEMENTS_MAX + 1],
        };
        assert!(check_request(&many).unwrap_err().to_string().contains("STATEMENTS_MAX"));
        let long = "x".repeat(SQL_MAX_BYTES + 1);
        assert!(check_statement(&long, &[])
            .unwrap_err()
            .to_string()
            .contains("SQL_MAX_BYTES"));
        let params = vec![serde_json::Value::Null; PARAMS_MAX + 1];
        assert!(check_statement("SELECT 1", &params)
            .unwrap_err()
            .to_string()
            .contains("PARAMS_MAX"));
        for sql in ["BEGIN", "pragma journal_mode = off", "ATTACH 'x' AS y", "  commit"] {
            let e = check_statement(sql, &[]).unwrap_err().to_string();
            assert!(e.contains("not allowed"), "{sql}: {e}");
        }
        assert!(check_statement("DELETE FROM _tandem_applied", &[]).is_err());
        assert!(check_statement("CREATE TRIGGER t AFTER INSERT ON x BEGIN SELECT 1; END", &[]).is_err());
        assert!(check_request(&ExecuteRequest { statements: vec![] }).is_err());
    }

    #[test]
    fn rows_over_the_limit_are_refused_and_values_round_trip() {
        let c = Connection::open_in_memory().unwrap();
        let e = run_statement(
            &c,
            &statement(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) SELECT i FROM n",
                ROWS_MAX + 1
            )),
            true,
        )
        .unwrap_err();
        assert!(e.contains("ROWS_MAX"), "{e}");
        let st = tandem_client::api::SqlStatement {
            sql: "SELECT ?, ?, ?, ?".into(),
            params: vec![
                serde_json::json!(null),
                serde_json::json!(7),
                serde_json::json!("text"),
                serde_json::json!({"blob": "00ff"}),
            ],
        };
        let r = run_statement(&c, &st, true).unwrap();
        assert_eq!(r.rows[0], st.params);
        assert!(run_statement(&c, &statement("CREATE TABLE x (a)"), true)
            .unwrap_err()
            .contains("must not write"));
    }
}
