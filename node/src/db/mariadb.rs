//! The MariaDB side: the capture on the active (a binlog dump from the committed GTID, cut into
//! transactions, each proposed as one record), the replay on every data node (exactly once,
//! checked against the server's own `@@gtid_binlog_pos`), and the role changes (`read_only`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use base64::Engine as _;
use futures_util::StreamExt as _;
use mysql_async::binlog::BinlogVersion;
use mysql_async::prelude::Queryable as _;
use mysql_async::BinlogStreamRequest;
use mysql_async::Conn;
use tandem_raft_store::journal::DbJournal;
use tandem_raft_store::records::DbChange;
use tandem_raft_store::records::Record;
use tokio::sync::watch;

use super::binlog::parse_position;
use super::binlog::Cutter;
use super::binlog::Gtid;
use super::binlog::Part;
use super::binlog::RawEvent;
use super::binlog::Transaction;
use super::spec::DatabaseSpec;
use crate::consensus::Consensus;
use crate::events::EventLog;
use crate::events::Kind;
use crate::failover::driver::Failover;

/// How long the service's start waits for the database to hold every committed transaction.
pub const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a release waits for the capture to send what the server took before it turned
/// read-only.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an empty journal may lag the state before it counts as a gap.
const GAP_SETTLE: Duration = Duration::from_secs(1);
/// Captured transactions waiting to be proposed.
const CAPTURE_QUEUE: usize = 4096;
/// Most transactions proposed in one batch, and about how many bytes.
const PROPOSE_BATCH_MAX: usize = 256;
const PROPOSE_BATCH_BYTES: usize = 8 * 1024 * 1024;
/// Most journal entries the applier takes at once.
const APPLY_BATCH: usize = 512;
/// How often the loops look at the role and the server.
const TICK: Duration = Duration::from_millis(100);
/// Silence on the binlog stream after which it is opened again (the server sends heartbeats
/// every second while idle).
const STREAM_SILENCE: Duration = Duration::from_secs(5);

pub use tandem_client::api::DbInfo;

#[derive(Default)]
struct State {
    info: DbInfo,
    last_applied: Option<Instant>,
    /// The epoch in which this node made its server writable.
    writable_in: Option<u64>,
    /// The last GTID the capture proposed.
    proposed: Option<Gtid>,
}

impl MariaDb {
    pub(super) fn spec(&self) -> &DatabaseSpec {
        &self.spec
    }

    pub(super) fn journal(&self) -> &DbJournal {
        &self.journal
    }

    pub(super) fn failover(&self) -> &Failover {
        &self.failover
    }

    pub(super) fn event(&self, kind: Kind, detail: String) {
        self.events.record(kind, detail);
    }

    pub(super) fn with_info<T>(&self, f: impl FnOnce(&mut DbInfo) -> T) -> T {
        f(&mut self.lock().info)
    }

    /// Hold the server: the applier and the role changes wait meanwhile.
    pub(super) async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }
}

pub struct MariaDb {
    spec: DatabaseSpec,
    consensus: Consensus,
    failover: Failover,
    events: Arc<EventLog>,
    journal: DbJournal,
    state: Mutex<State>,
    /// Serializes role changes with the applier (one session changes the server at a time).
    turn: tokio::sync::Mutex<()>,
}

pub(super) fn sql_err(e: mysql_async::Error) -> String {
    e.to_string()
}

impl MariaDb {
    pub fn new(
        spec: DatabaseSpec,
        consensus: Consensus,
        failover: Failover,
        events: Arc<EventLog>,
        journal: DbJournal,
    ) -> Arc<Self> {
        let info = DbInfo {
            source: spec.source.clone(),
            ..DbInfo::default()
        };
        Arc::new(MariaDb {
            spec,
            consensus,
            failover,
            events,
            journal,
            state: Mutex::new(State {
                info,
                ..State::default()
            }),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn connect(&self) -> Result<Conn, String> {
        self.connect_to(&self.spec.host, self.spec.port).await
    }

    /// A session on `host:port` with this node's account.
    pub(super) async fn connect_to(&self, host: &str, port: u16) -> Result<Conn, String> {
        let opts = mysql_async::OptsBuilder::default()
            .ip_or_hostname(host.to_string())
            .tcp_port(port)
            .user(Some(self.spec.user.clone()))
            .pass(self.spec.password.clone())
            .prefer_socket(false);
        let conn = tokio::time::timeout(Duration::from_secs(5), Conn::new(opts))
            .await
            .map_err(|_| format!("{host}:{port} did not answer within 5 s"))?
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        Ok(conn)
    }

    /// The committed (seq, GTID) of this source.
    pub(super) fn committed(&self) -> (u64, Option<Gtid>) {
        let state = self.consensus.state().read();
        match state.db_positions.get(&self.spec.source) {
            Some(p) => (p.seq, p.gtid.parse().ok()),
            None => (0, None),
        }
    }

    /// The status, with the lag worked out now.
    pub fn info(&self) -> DbInfo {
        let (seq, gtid) = self.committed();
        let mark = self.journal.mark(&self.spec.source);
        let lag_bytes = self.journal.bytes_after(&self.spec.source, mark);
        let s = self.lock();
        let mut info = s.info.clone();
        info.committed_seq = seq;
        info.committed_gtid = gtid.map(|g| g.to_string());
        info.applied_seq = mark;
        info.lag_records = seq.saturating_sub(mark);
        info.lag_bytes = lag_bytes;
        info.last_applied_ms_ago = s.last_applied.map(|t| t.elapsed().as_millis() as u64);
        info.synced = info.lag_records == 0 && info.diverged.is_none();
        info
    }

    /// The replication state for heartbeats.
    pub fn brief(&self) -> crate::cluster::DbBrief {
        let lag_records = self.committed().0.saturating_sub(self.journal.mark(&self.spec.source));
        let diverged = self.lock().info.diverged.clone();
        crate::cluster::DbBrief {
            synced: lag_records == 0 && diverged.is_none(),
            lag_records,
            diverged,
        }
    }

    fn set_error(&self, e: Option<String>) {
        self.lock().info.error = e;
    }

    /// Before the service starts on this node: wait until the database holds every committed
    /// transaction, then make it writable. A server that cannot catch up, or that holds
    /// transactions that never committed, stays read-only (the event says why).
    pub async fn before_service(&self) {
        let epoch = self.failover.active_epoch();
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        loop {
            let info = self.brief();
            if let Some(why) = info.diverged {
                self.events.record(
                    Kind::Warning,
                    format!("the service starts on a read-only database: {why}"),
                );
                return;
            }
            if info.lag_records == 0 {
                break;
            }
            if Instant::now() > deadline {
                self.events.record(
                    Kind::Warning,
                    format!(
                        "the service starts on a read-only database: it lacks {} committed transactions after {CATCH_UP_TIMEOUT:?}",
                        info.lag_records
                    ),
                );
                return;
            }
            tokio::time::sleep(TICK).await;
        }
        let _turn = self.turn.lock().await;
        let result = async {
            let mut conn = self.connect().await?;
            let pos = server_position(&mut conn).await?;
            let (_, committed) = self.committed();
            if let Some(c) = committed {
                if pos.get(&c.domain) != Some(&c) {
                    return Err(format!(
                        "the server stands at {} but the last committed transaction is {c}",
                        print_position(&pos)
                    ));
                }
            }
            conn.query_drop("SET GLOBAL read_only = OFF").await.map_err(sql_err)?;
            Ok::<_, String>(pos)
        }
        .await;
        match result {
            Ok(pos) => {
                let mut s = self.lock();
                s.writable_in = epoch;
                s.info.read_only = Some(false);
                s.info.server_gtid = Some(print_position(&pos));
                drop(s);
                tracing::info!(?epoch, position = %print_position(&pos), "database writable");
            }
            Err(e) => {
                self.lock().info.diverged.get_or_insert(e.clone());
                self.events.record(
                    Kind::Warning,
                    format!("the service starts on a read-only database: {e}"),
                );
            }
        }
    }

    /// First step of every release: the server stops taking writes.
    pub async fn read_only(&self) {
        self.lock().writable_in = None;
        for attempt in 0..3 {
            match async {
                let mut conn = self.connect().await?;
                conn.query_drop("SET GLOBAL read_only = ON").await.map_err(sql_err)
            }
            .await
            {
                Ok(()) => {
                    self.lock().info.read_only = Some(true);
                    tracing::info!("database read-only");
                    return;
                }
                Err(e) => {
                    tracing::error!(attempt, error = %e, "cannot make the database read-only");
                    self.set_error(Some(e));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Last step of a release: wait (at most [`DRAIN_TIMEOUT`]) until the capture proposed
    /// everything the server took before it turned read-only.
    pub async fn drain(&self) {
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let Ok(mut conn) = self.connect().await else { return };
        let Ok(pos) = server_position(&mut conn).await else {
            return;
        };
        loop {
            let proposed = self.lock().proposed;
            let done = pos
                .values()
                .all(|g| proposed.is_some_and(|p| p.domain != g.domain || p.seq >= g.seq))
                || self.committed().1.is_some_and(|c| pos.get(&c.domain) == Some(&c));
            if done || Instant::now() > deadline || self.failover.active_epoch().is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The capture and the applier, until `stop`.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let applier = tokio::spawn(self.clone().apply_loop(stop.clone()));
        let mut capture: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            let active = self.failover.active_epoch();
            let writable = self.lock().writable_in;
            match (active, &capture) {
                (Some(epoch), None) if writable == Some(epoch) => {
                    let (tx, rx) = watch::channel(false);
                    self.lock().info.capturing = true;
                    capture = Some((tx, tokio::spawn(self.clone().capture_loop(epoch, rx))));
                }
                (None, Some(_)) => {
                    let (tx, task) = capture.take().expect("capture runs");
                    let _ = tx.send(true);
                    let _ = task.await;
                    self.lock().info.capturing = false;
                }
                _ => {}
            }
        }
        if let Some((tx, task)) = capture {
            let _ = tx.send(true);
            let _ = task.await;
        }
        let _ = applier.await;
    }

    /// Capture from the committed position for as long as this node is active in `epoch`;
    /// a failed stream starts again after what committed.
    async fn capture_loop(self: Arc<Self>, epoch: u64, mut stop: watch::Receiver<bool>) {
        loop {
            let result = tokio::select! {
                r = self.capture(epoch) => r,
                _ = stop.wait_for(|s| *s) => return,
            };
            match result {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "database capture stopped; starting again");
                    self.set_error(Some(format!("capture: {e}")));
                    self.events
                        .record(Kind::Warning, format!("database capture stopped: {e}"));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    if self.failover.active_epoch() != Some(epoch) {
                        return;
                    }
                }
            }
        }
    }

    /// One binlog dump: from the committed GTID (or, before the first capture, from where the
    /// server stands), each transaction proposed in order. `Ok` when the epoch is over.
    async fn capture(&self, epoch: u64) -> Result<(), String> {
        let mut conn = self.connect().await?;
        let (mut seq, committed) = self.committed();
        let start = match committed {
            Some(c) => BTreeMap::from([(c.domain, c)]),
            None => server_position(&mut conn).await?,
        };
        if start.len() > 1 {
            return Err(format!(
                "the server's binlog has several GTID domains ({}); Tandem captures one",
                print_position(&start)
            ));
        }
        conn.query_drop(format!(
            "SET @mariadb_slave_capability = 4, @slave_connect_state = '{}', @slave_gtid_strict_mode = 1, \
             @master_heartbeat_period = 1000000000",
            print_position(&start)
        ))
        .await
        .map_err(sql_err)?;
        let request = BinlogStreamRequest::new(self.spec.capture_server_id)
            .with_filename(b"")
            .with_pos(4u64);
        let mut stream = conn.get_binlog_stream(request).await.map_err(sql_err)?;
        tracing::info!(%epoch, from = %print_position(&start), "database capture started");
        self.set_error(None);
        // A reader cuts transactions ahead while the proposer sends what is waiting in one
        // batch, so a burst does not wait for one commit per transaction.
        let (queue, mut waiting) = tokio::sync::mpsc::channel::<Transaction>(CAPTURE_QUEUE);
        let reader = async {
            let mut cutter = Cutter::starting_at(start.clone());
            loop {
                let Ok(next) = tokio::time::timeout(STREAM_SILENCE, stream.next()).await else {
                    return Err(format!("no event nor heartbeat from the server for {STREAM_SILENCE:?}"));
                };
                let ev = match next {
                    Some(Ok(ev)) => ev,
                    Some(Err(e)) => return Err(format!("binlog stream: {e}")),
                    None => return Err("the binlog stream ended".into()),
                };
                let header = ev.header();
                let kind = header.event_type_raw();
                let mut raw = Vec::new();
                ev.write(BinlogVersion::Version4, &mut raw)
                    .map_err(|e| format!("cannot re-encode a binlog event: {e}"))?;
                let query = if kind == super::binlog::event_type::QUERY {
                    let q: mysql_async::binlog::events::QueryEvent<'_> =
                        ev.read_event().map_err(|e| format!("malformed query event: {e}"))?;
                    Some((q.schema().into_owned(), q.query().into_owned()))
                } else {
                    None
                };
                let raw_event = RawEvent {
                    kind,
                    timestamp: header.timestamp(),
                    server_id: header.server_id(),
                    body: ev.data().to_vec(),
                    raw,
                    query,
                };
                let Some(tx) = cutter.feed(&raw_event).map_err(|e| e.to_string())? else {
                    continue;
                };
                if start.get(&tx.gtid.domain).is_some_and(|s| tx.gtid.seq <= s.seq) {
                    continue; // committed already
                }
                if queue.send(tx).await.is_err() {
                    return Ok(());
                }
            }
        };
        let proposer = async {
            while let Some(first) = waiting.recv().await {
                let mut batch = vec![first];
                let mut bytes = batch[0].body_bytes();
                while batch.len() < PROPOSE_BATCH_MAX && bytes < PROPOSE_BATCH_BYTES {
                    match waiting.try_recv() {
                        Ok(tx) => {
                            bytes += tx.body_bytes();
                            batch.push(tx);
                        }
                        Err(_) => break,
                    }
                }
                let mut records = Vec::with_capacity(batch.len());
                for (i, tx) in batch.iter().enumerate() {
                    records.push(Record::Db(DbChange {
                        source: self.spec.source.clone(),
                        seq: seq + 1 + i as u64,
                        gtid: tx.gtid.to_string(),
                        events: tx.encode()?,
                    }));
                }
                let outcomes = match self.consensus.propose_many_in(records, epoch).await {
                    Ok(o) => o,
                    Err(_) if self.failover.active_epoch() != Some(epoch) => return Ok(()),
                    Err(e) => return Err(format!("proposing from {}: {e}", batch[0].gtid)),
                };
                for (tx, outcome) in batch.iter().zip(outcomes) {
                    if let Err(e) = outcome {
                        if self.failover.active_epoch() != Some(epoch) {
                            return Ok(());
                        }
                        return Err(format!("proposing {}: {e}", tx.gtid));
                    }
                    seq += 1;
                    let mut s = self.lock();
                    s.proposed = Some(tx.gtid);
                    s.info.captured_total += 1;
                }
            }
            Ok(())
        };
        tokio::select! {
            r = reader => r,
            r = proposer => r,
        }
    }

    /// Replay journal entries on this node's server, in order, exactly once.
    async fn apply_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut added = self.journal.subscribe();
        let mut replayer = Replayer::default();
        let mut last_role_check = Instant::now() - Duration::from_secs(60);
        loop {
            tokio::select! {
                _ = added.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let _turn = self.turn.lock().await;
            // A standby's server is kept read-only (it restarts writable by its own config).
            if last_role_check.elapsed() > Duration::from_secs(2) {
                last_role_check = Instant::now();
                if self.lock().writable_in.is_none() {
                    if let Err(e) = replayer.keep_read_only(&self).await {
                        self.set_error(Some(e));
                        replayer.conn = None;
                        continue;
                    }
                    self.lock().info.read_only = Some(true);
                }
            }
            if let Err(e) = self.apply_some(&mut replayer).await {
                tracing::warn!(error = %e, "database apply failed; trying again");
                self.set_error(Some(e));
                replayer.conn = None;
            }
        }
    }

    async fn apply_some(&self, r: &mut Replayer) -> Result<(), String> {
        let source = &self.spec.source;
        loop {
            let mark = self.journal.mark(source);
            let entries = self.journal.read(source, 0, APPLY_BATCH);
            let (committed_seq, _) = self.committed();
            if entries.is_empty() {
                // The state counts a transaction a moment before the journal holds it: a gap
                // only when that lasts.
                let lasting = match r.empty_behind {
                    Some((seq, since)) if seq == committed_seq => since.elapsed() > GAP_SETTLE,
                    _ => {
                        r.empty_behind = (committed_seq > mark).then(|| (committed_seq, Instant::now()));
                        false
                    }
                };
                if committed_seq > mark && lasting {
                    self.diverge(format!(
                        "this node's journal lacks transactions {}..={committed_seq} (it caught up from a snapshot): \
                         its database must be seeded from the active",
                        mark + 1
                    ));
                }
                return Ok(());
            }
            r.empty_behind = None;
            if entries[0].change.seq > mark + 1 {
                self.diverge(format!(
                    "this node's journal lacks transactions {}..{} (it caught up from a snapshot): \
                     its database must be seeded from the active",
                    mark + 1,
                    entries[0].change.seq
                ));
                return Ok(());
            }
            if self.lock().info.diverged.is_some() {
                return Ok(());
            }
            let mut pos = r.position(self).await?;
            let mut done = None;
            for e in &entries {
                let tx = Transaction::decode(&e.change.events)?;
                let here = pos.get(&tx.gtid.domain).copied();
                // This node's own server is the source of what it captures in its epoch.
                let mine = self
                    .consensus
                    .activation()
                    .is_some_and(|a| a.node == self.consensus.config().node_id && a.epoch == e.epoch);
                // Further on in the journal: held already (a crash lost the trim).
                let later = |h: Gtid| self.journal.has_gtid_after(source, e.change.seq, &h.to_string());
                if mine || here == Some(tx.gtid) {
                    // held
                } else if here == tx.prev {
                    r.replay(self, &tx).await?;
                    pos.insert(tx.gtid.domain, tx.gtid);
                    let mut s = self.lock();
                    s.info.applied_total += 1;
                    s.last_applied = Some(Instant::now());
                } else if here.is_some_and(later) {
                    // held
                } else {
                    self.diverge(format!(
                        "the server stands at {} where transaction {} (seq {}) expects {}: \
                         it holds transactions that never committed through Tandem",
                        here.map_or("nothing".into(), |h| h.to_string()),
                        tx.gtid,
                        e.change.seq,
                        tx.prev.map_or("nothing".into(), |p| p.to_string())
                    ));
                    break;
                }
                done = Some(e.change.seq);
            }
            // One trim for the batch: a trim lost in a crash only makes the applier find those
            // transactions held already.
            if let Some(seq) = done {
                self.journal
                    .trim(source, seq)
                    .map_err(|err| format!("cannot trim the journal: {err}"))?;
            }
            self.lock().info.server_gtid = Some(print_position(&pos));
            if self.lock().info.diverged.is_some() {
                return Ok(());
            }
            self.set_error(None);
        }
    }

    fn diverge(&self, why: String) {
        let first = self.lock().info.diverged.replace(why.clone()).is_none();
        if first {
            tracing::error!(why, "database diverged: nothing more is applied");
            self.events.record(Kind::Warning, format!("database not synced: {why}"));
        }
    }
}

/// The applier's session on this node's server.
#[derive(Default)]
struct Replayer {
    conn: Option<Conn>,
    /// The format description event this session was given last.
    fde: Option<Vec<u8>>,
    /// The GTID domain and server id this session's commits get.
    origin: Option<(u32, u32)>,
    /// Since when the journal is empty while the state counts more transactions than this
    /// node's database holds (committed seq, since).
    empty_behind: Option<(u64, Instant)>,
}

impl Replayer {
    async fn conn(&mut self, db: &MariaDb) -> Result<&mut Conn, String> {
        if self.conn.is_none() {
            let mut conn = db.connect().await?;
            // The replay writes the binlog with the source's GTIDs. A transaction of one
            // statement is one BINLOG statement, committed by autocommit; longer ones are put
            // between BEGIN and COMMIT, so a body is one transaction (one GTID) either way.
            conn.query_drop("SET SESSION autocommit = 1, SESSION sql_log_bin = 1")
                .await
                .map_err(sql_err)?;
            self.conn = Some(conn);
            self.fde = None;
            self.origin = None;
        }
        Ok(self.conn.as_mut().expect("connected"))
    }

    async fn position(&mut self, db: &MariaDb) -> Result<BTreeMap<u32, Gtid>, String> {
        server_position(self.conn(db).await?).await
    }

    async fn keep_read_only(&mut self, db: &MariaDb) -> Result<(), String> {
        let conn = self.conn(db).await?;
        let ro: Option<u8> = conn.query_first("SELECT @@GLOBAL.read_only").await.map_err(sql_err)?;
        if ro != Some(1) {
            conn.query_drop("SET GLOBAL read_only = ON").await.map_err(sql_err)?;
            tracing::info!("the standby's database was writable: made read-only");
        }
        Ok(())
    }

    /// Replay one transaction with its own GTID, in one commit.
    async fn replay(&mut self, db: &MariaDb, tx: &Transaction) -> Result<(), String> {
        let b64 = |ev: &[u8]| base64::engine::general_purpose::STANDARD.encode(ev);
        self.conn(db).await?;
        let need_fde = self.fde.as_deref() != Some(tx.fde.as_slice());
        let conn = self.conn.as_mut().expect("connected");
        let fail = |e: mysql_async::Error| format!("replaying {}: {e}", tx.gtid);
        if need_fde {
            conn.query_drop(format!("BINLOG '{}'", b64(&tx.fde)))
                .await
                .map_err(fail)?;
        }
        // The GTID the commit gets: the session's domain and server id, and the next sequence
        // number of the domain unless told otherwise (the server stands at the predecessor).
        let origin = (tx.gtid.domain, tx.gtid.server);
        let mut set = Vec::new();
        if self.origin != Some(origin) {
            set.push(format!(
                "@@session.gtid_domain_id = {}, @@session.server_id = {}",
                origin.0, origin.1
            ));
        }
        if tx.prev.is_none_or(|p| p.seq + 1 != tx.gtid.seq) {
            set.push(format!("@@session.gtid_seq_no = {}", tx.gtid.seq));
        }
        if !set.is_empty() {
            conn.query_drop(format!("SET {}", set.join(", "))).await.map_err(fail)?;
            self.origin = Some(origin);
        }
        // One statement per round trip: a multi-statement text protocol query leaves the
        // session's packets out of step after a BINLOG statement.
        let mut statements = Vec::new();
        for part in &tx.parts {
            match part {
                Part::Rows(events) => {
                    let lines: Vec<String> = events.iter().map(|e| b64(&e.0)).collect();
                    statements.push(format!("BINLOG '\n{}\n'", lines.join("\n")));
                }
                Part::Query { schema, sql, timestamp } => {
                    // The schema a statement ran in; `CREATE DATABASE x` is logged with `x`,
                    // which does not exist yet.
                    let exists: Option<String> = conn
                        .exec_first(
                            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?",
                            (schema.as_str(),),
                        )
                        .await
                        .map_err(fail)?;
                    if exists.is_some() {
                        statements.push(format!("USE `{}`", schema.replace('`', "``")));
                    }
                    statements.push(format!("SET TIMESTAMP = {timestamp}"));
                    statements.push(sql.clone());
                }
            }
        }
        let timed = tx.parts.iter().any(|p| matches!(p, Part::Query { .. }));
        // One statement of rows (or one DDL) commits by itself; anything more is wrapped.
        if tx.statements() > 1 {
            statements.insert(0, "BEGIN".into());
            statements.push("COMMIT".into());
        }
        if timed {
            statements.push("SET TIMESTAMP = DEFAULT".into());
        }
        for statement in statements {
            conn.query_drop(statement).await.map_err(fail)?;
        }
        self.fde = Some(tx.fde.clone());
        Ok(())
    }
}

pub(super) async fn server_position(conn: &mut Conn) -> Result<BTreeMap<u32, Gtid>, String> {
    let pos: Option<String> = conn
        .query_first("SELECT @@GLOBAL.gtid_binlog_pos")
        .await
        .map_err(sql_err)?;
    parse_position(&pos.unwrap_or_default())
}

pub(super) fn print_position(pos: &BTreeMap<u32, Gtid>) -> String {
    pos.values().map(Gtid::to_string).collect::<Vec<_>>().join(",")
}
