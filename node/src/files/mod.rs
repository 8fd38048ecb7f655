//! File replication (DESIGN §5, file change records).
//!
//! Each data node runs one [`FileSync`]:
//! - as the **active** it watches its sync folders ([`capture`]), turns each settled change into
//!   a file change record (small contents inline, larger ones as a chunk list whose missing chunks
//!   it first pushes to the standby's staging area) and proposes it through Raft;
//! - as the **standby** it follows the applied records ([`mirror`]) and makes its folders match
//!   them: atomic writes with fsync, verified hashes, never a partial file under the real name.
//!   Contents it cannot assemble are *pending* and fetched from the other data node; it counts
//!   as synced only with nothing pending.
//!
//! On start, after a snapshot, and whenever it stops being the active, a node compares its disk
//! with the replicated index: what differs is fetched, and local changes that never committed
//! are moved to a quarantine folder first (never deleted).

mod capture;
pub mod chunk;
pub mod disk;
mod local;
mod mirror;
pub mod spec;
pub mod transfer;

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use futures_util::future::BoxFuture;
use tandem_client::api::FileCounters;
use tandem_client::api::FilesInfo;
use tandem_client::api::FolderInfo;
use tandem_client::api::QuarantineInfo;
use tandem_client::api::ResyncProgress;
use tandem_raft_store::records::FileAttrs;
use tandem_raft_store::state_machine::FileFeedReceiver;
use tandem_raft_store::MemberRole;
use tandem_raft_store::NodeId;
use tokio::sync::watch;

use crate::config::ValidConfig;
use crate::consensus::Consensus;
use crate::events::EventLog;
use crate::events::Kind;
use crate::failover::driver::Failover;
use chunk::Chunked;
use chunk::Staging;
use local::LocalManifest;
use mirror::Compare;
use spec::FolderSpec;

/// Sends a request to a peer's port: (address, path, body, timeout) → answer body.
pub type Exchange =
    Arc<dyn Fn(String, &'static str, Vec<u8>, Duration) -> BoxFuture<'static, Result<Vec<u8>, String>> + Send + Sync>;

/// How long one file request to the other data node may take.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the log must be quiet before a first copy is compared with the index again.
pub const FIRST_COPY_SETTLE: Duration = Duration::from_secs(1);
/// Longest a planned release waits for the capture to send the service's last changes.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest the service's start waits for the folders to catch up.
pub const CATCH_UP_BEFORE_SERVICE: Duration = Duration::from_secs(30);
/// How many pending paths an event names.
const PENDING_NAMED: usize = 10;
/// How often the mirror looks at the node's role, pending contents and a stalled apply.
pub const MIRROR_TICK: Duration = Duration::from_millis(100);
/// Most feed items the mirror takes at once.
const FEED_BATCH_MAX: usize = 64;
/// How often staged chunks older than [`chunk::STAGING_TTL`] are looked for.
const STAGING_SWEEP_EVERY: Duration = Duration::from_secs(60);
/// How many local copies' chunk lists are kept, keyed by size and mtime.
const CHUNK_CACHE_ENTRIES: usize = 64;

/// Chunk lists of local copies by path, with the size and mtime they were made at.
type ChunkCache = HashMap<PathBuf, (u64, i128, Arc<Chunked>)>;

/// A file the mirror still has to get: its committed version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    pub size: u64,
    pub hash: [u8; 32],
    pub attrs: FileAttrs,
    /// The local copy is an uncommitted change: move it to quarantine before replacing it.
    pub quarantine_first: bool,
}

#[derive(Default)]
struct MirrorState {
    pending: BTreeMap<(String, String), Pending>,
    stalled: Option<String>,
    progress: Option<Progress>,
    quarantined: Vec<QuarantineInfo>,
    /// This node's capture runs: its disk is the source, its own records need no applying.
    capture_running: bool,
    /// ...and has watched and scanned every folder once.
    capturing: bool,
    /// The other data node's capture has scanned its folders (from its heartbeats).
    peer_capturing: bool,
    /// Folders compared as a first copy (left as found); compared again once the index holds
    /// them and the log has been quiet for [`FIRST_COPY_SETTLE`].
    first_copy: std::collections::BTreeSet<String>,
    /// When the last change came through the feed.
    last_change: Option<Instant>,
}

struct Progress {
    started: Instant,
    files_total: u64,
    bytes_total: u64,
    files_done: u64,
    bytes_done: u64,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            files_total: 0,
            bytes_total: 0,
            files_done: 0,
            bytes_done: 0,
        }
    }
}

#[derive(Default)]
struct Counters {
    proposed: AtomicU64,
    applied: AtomicU64,
    pushed_bytes: AtomicU64,
    pushed_wire_bytes: AtomicU64,
    fetched_bytes: AtomicU64,
    fetched_wire_bytes: AtomicU64,
    inline_bytes: AtomicU64,
    rescans: AtomicU64,
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// One turn per (folder, path) being captured.
type PathTurns = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

/// One data node's file replication.
pub struct FileSync {
    me: NodeId,
    folders: BTreeMap<String, FolderSpec>,
    consensus: Consensus,
    failover: Failover,
    events: Arc<EventLog>,
    pub(crate) staging: Staging,
    local: LocalManifest,
    quarantine_dir: PathBuf,
    /// The other data node's peer address.
    peer: Option<String>,
    exchange: Exchange,
    state: Mutex<MirrorState>,
    chunk_cache: Mutex<ChunkCache>,
    counters: Counters,
    /// Raised to ask every folder's capture to send what it holds at once (see [`Self::drain`]).
    drain_asked: watch::Sender<u64>,
    /// The last drain each folder's capture finished.
    drained: watch::Sender<BTreeMap<String, u64>>,
    /// Held while the disk is changed: by the log's changes and by fetched contents in turn.
    disk_turn: tokio::sync::Mutex<()>,
    /// Highest log index whose file change this node's disk reflects.
    materialized: watch::Sender<u64>,
    /// Paths the capture is reading and proposing now, one turn per path (see
    /// [`Self::sync_path`]).
    syncing: Mutex<PathTurns>,
}

impl FileSync {
    /// The file replication of a data node with sync folders (`None` otherwise).
    pub fn new(
        cfg: &ValidConfig,
        consensus: Consensus,
        failover: Failover,
        events: Arc<EventLog>,
        exchange: Exchange,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        if cfg.folders.is_empty() || cfg.role() != MemberRole::Data {
            return Ok(None);
        }
        let dir = cfg.data_dir.join("files");
        for f in &cfg.folders {
            std::fs::create_dir_all(&f.root)
                .map_err(|e| anyhow::anyhow!("cannot create sync folder {} at {}: {e}", f.id, f.root.display()))?;
        }
        let staging = Staging::open(dir.join("staging"))
            .map_err(|e| anyhow::anyhow!("cannot create the staging area in {}: {e}", dir.display()))?;
        let local = LocalManifest::open(&dir.join("manifest")).map_err(anyhow::Error::msg)?;
        let peer = cfg
            .members
            .iter()
            .find(|m| m.role == MemberRole::Data && m.id != cfg.node_id)
            .map(|m| m.peer_addr.clone());
        Ok(Some(Arc::new(Self {
            me: cfg.node_id,
            folders: cfg.folders.iter().map(|f| (f.id.clone(), f.clone())).collect(),
            consensus,
            failover,
            events,
            staging,
            local,
            quarantine_dir: cfg.data_dir.join("quarantine"),
            peer,
            exchange,
            state: Mutex::default(),
            chunk_cache: Mutex::default(),
            counters: Counters::default(),
            materialized: watch::channel(0).0,
            disk_turn: tokio::sync::Mutex::new(()),
            drain_asked: watch::channel(0).0,
            drained: watch::channel(BTreeMap::new()).0,
            syncing: Mutex::default(),
        })))
    }

    pub(crate) fn folder(&self, id: &str) -> Option<&FolderSpec> {
        self.folders.get(id)
    }

    fn syncing(&self) -> std::sync::MutexGuard<'_, PathTurns> {
        self.syncing.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MirrorState> {
        self.state.lock().expect("file mirror lock")
    }

    /// The chunk list of the local file at `path` (cached while its size and mtime stay).
    pub(crate) async fn chunked_copy(&self, path: &Path) -> Option<Arc<Chunked>> {
        let meta = std::fs::symlink_metadata(path).ok().filter(|m| m.is_file())?;
        let mtime = disk::attrs_of(&meta).mtime_ns;
        if let Some((size, t, c)) = self.chunk_cache.lock().expect("chunk cache lock").get(path) {
            if *size == meta.len() && *t == mtime {
                return Some(c.clone());
            }
        }
        let owned = path.to_path_buf();
        let chunked = tokio::task::spawn_blocking(move || chunk::chunk_file(&owned))
            .await
            .ok()?
            .ok()?;
        let chunked = Arc::new(chunked);
        let mut cache = self.chunk_cache.lock().expect("chunk cache lock");
        if cache.len() >= CHUNK_CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(path.to_path_buf(), (chunked.size, mtime, chunked.clone()));
        Some(chunked)
    }

    /// Drop the cached cut of `path` (its content is known to have changed).
    pub(crate) fn forget_chunked(&self, path: &Path) {
        self.chunk_cache.lock().expect("chunk cache lock").remove(path);
    }

    /// Whether the disk reflects every committed file change and nothing is pending.
    pub fn synced(&self) -> bool {
        let s = self.lock();
        if !s.pending.is_empty() || s.stalled.is_some() {
            return false;
        }
        drop(s);
        *self.materialized.borrow() >= self.last_file_index()
    }

    /// Log index of the newest committed file change (0: none).
    fn last_file_index(&self) -> u64 {
        self.consensus.state().read().meta.last_file_index
    }

    /// Wait until the disk reflects every file change up to `index`, or `timeout` passes.
    pub async fn wait_materialized(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.materialized.subscribe();
        let reached = async move { rx.wait_for(|m| *m >= index).await.is_ok() };
        matches!(tokio::time::timeout(timeout, reached).await, Ok(true))
    }

    fn stopped_capturing(&self) {
        let mut s = self.lock();
        s.capture_running = false;
        s.capturing = false;
    }

    /// What the other data node's heartbeat says of its mirror.
    pub fn heard_from_peer(&self, peer: Option<&crate::cluster::FilesBrief>) {
        self.lock().peer_capturing = peer.is_some_and(|p| p.capturing);
    }

    /// A standby's first copy is due for its second comparison: the active has scanned its
    /// folders, this node has applied everything committed, and no change came for a while.
    fn first_copy_settled(&self) -> bool {
        let s = self.lock();
        let quiet = s.last_change.is_none_or(|t| t.elapsed() >= FIRST_COPY_SETTLE);
        if s.first_copy.is_empty() || s.capture_running || !s.peer_capturing || !quiet {
            return false;
        }
        if *self.materialized.borrow() < self.last_file_index() {
            return false;
        }
        let folders: Vec<String> = s.first_copy.iter().cloned().collect();
        drop(s);
        let st = self.consensus.state().read();
        folders.iter().any(|f| st.folder_files(f, "").next().is_some())
    }

    /// What heartbeats carry of the mirror.
    pub fn brief(&self) -> crate::cluster::FilesBrief {
        let synced = self.synced();
        let s = self.lock();
        crate::cluster::FilesBrief {
            synced,
            capturing: s.capturing,
            pending_files: s.pending.len() as u64,
            pending_bytes: s.pending.values().map(|p| p.size).sum(),
            stalled: s.stalled.clone(),
        }
    }

    /// After the service stopped on a node that is still the active (a planned switchover):
    /// send every change its folders hold that is not in a record yet, before `Released` lets
    /// the other node take over. At most [`DRAIN_TIMEOUT`]; what does not make it is found in
    /// this node's quarantine later.
    pub async fn drain(&self) {
        if !self.lock().capture_running || self.failover.active_epoch().is_none() {
            return;
        }
        self.drain_asked.send_modify(|g| *g += 1);
        let asked = *self.drain_asked.borrow();
        let mut done = self.drained.subscribe();
        let folders: Vec<String> = self.folders.keys().cloned().collect();
        let all_done = async move {
            done.wait_for(|d| folders.iter().all(|f| d.get(f).is_some_and(|g| *g >= asked)))
                .await
                .is_ok()
        };
        if !matches!(tokio::time::timeout(DRAIN_TIMEOUT, all_done).await, Ok(true)) {
            self.event(
                Kind::Warning,
                format!("the folders' last changes were not all sent within {DRAIN_TIMEOUT:?} of the service stopping"),
            );
        }
    }

    /// Before the service starts on this node: wait until the disk holds every file change
    /// committed so far (at most [`CATCH_UP_BEFORE_SERVICE`]; then it starts anyway, with a
    /// warning, since a service that never starts is no safer).
    pub async fn catch_up_before_service(&self) {
        let index = self.last_file_index();
        if !self.wait_materialized(index, CATCH_UP_BEFORE_SERVICE).await {
            self.event(
                Kind::Warning,
                format!(
                    "the service starts before this node's folders hold every committed change \
                     (index {index} not reached within {CATCH_UP_BEFORE_SERVICE:?})"
                ),
            );
        }
        let pending: Vec<String> = self.lock().pending.keys().map(|(f, p)| format!("{f}/{p}")).collect();
        if !pending.is_empty() {
            let more = match pending.len().saturating_sub(PENDING_NAMED) {
                0 => String::new(),
                n => format!(" and {n} more"),
            };
            self.event(
                Kind::Warning,
                format!(
                    "the service starts with {} files whose committed content never reached this node: {}{more}. \
                     The folder keeps its earlier copy of each (or lacks the file) until the other data node \
                     is back and the content is fetched from it; if the service writes one of them first, its \
                     write replaces the committed content. `tandemctl files` lists them",
                    pending.len(),
                    pending[..pending.len().min(PENDING_NAMED)].join(", ")
                ),
            );
        }
    }

    pub fn info(&self) -> FilesInfo {
        let folders = {
            let state = self.consensus.state();
            let st = state.read();
            self.folders
                .values()
                .map(|f| {
                    let (mut n, mut bytes) = (0, 0);
                    for (_, m) in st.folder_files(&f.id, "") {
                        n += 1;
                        bytes += m.size;
                    }
                    FolderInfo {
                        id: f.id.clone(),
                        root: f.root.display().to_string(),
                        entries: n,
                        bytes,
                        ignore: f.patterns.clone(),
                    }
                })
                .collect()
        };
        let brief = self.brief();
        let s = self.lock();
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FilesInfo {
            synced: brief.synced,
            capturing: brief.capturing,
            pending_files: brief.pending_files,
            pending_bytes: brief.pending_bytes,
            stalled: brief.stalled,
            progress: s.progress.as_ref().map(|p| {
                let secs = p.started.elapsed().as_secs_f64().max(0.001);
                let rate = (p.bytes_done as f64 / secs) as u64;
                ResyncProgress {
                    files_done: p.files_done,
                    files_total: p.files_total,
                    bytes_done: p.bytes_done,
                    bytes_total: p.bytes_total,
                    rate_bytes_per_sec: rate,
                    eta_secs: (rate > 0).then(|| p.bytes_total.saturating_sub(p.bytes_done) / rate),
                }
            }),
            quarantined: s.quarantined.clone(),
            folders,
            counters: FileCounters {
                proposed: get(&c.proposed),
                applied: get(&c.applied),
                pushed_bytes: get(&c.pushed_bytes),
                pushed_wire_bytes: get(&c.pushed_wire_bytes),
                fetched_bytes: get(&c.fetched_bytes),
                fetched_wire_bytes: get(&c.fetched_wire_bytes),
                inline_bytes: get(&c.inline_bytes),
                rescans: get(&c.rescans),
            },
        }
    }

    fn event(&self, kind: Kind, detail: impl Into<String>) {
        self.events.record(kind, detail);
    }

    /// Run until `stop`: follow the feed, start and stop capturing with the node's role, fetch
    /// pending contents.
    pub async fn run(self: Arc<Self>, mut feed: FileFeedReceiver, mut stop: watch::Receiver<bool>) {
        for f in self.folders.values() {
            match disk::remove_temp_files(&f.root) {
                Ok(0) => {}
                Ok(n) => tracing::info!(folder = %f.id, n, "removed temp files a crash left behind"),
                Err(e) => tracing::warn!(folder = %f.id, error = %e, "cannot look for leftover temp files"),
            }
        }
        self.clone().reconcile(Compare::Rejoin).await;
        let mut capture: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)> = None;
        // Changes to try again (the disk was full), in order.
        let mut retry: Vec<tandem_raft_store::state_machine::FileFeed> = Vec::new();
        let mut tick = tokio::time::interval(MIRROR_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_fetch = Instant::now();
        let mut last_sweep = Instant::now();
        let mut fetching: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if !retry.is_empty() {
                retry = self.clone().handle_all(std::mem::take(&mut retry)).await;
                if !retry.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stopped(&mut stop) => break,
                    }
                    continue;
                }
            }
            tokio::select! {
                item = feed.recv() => match item {
                    Some(item) => {
                        // What else is queued goes with it, so independent writes can overlap.
                        let mut items = vec![item];
                        while items.len() < FEED_BATCH_MAX {
                            match feed.try_recv() {
                                Some(item) => items.push(item),
                                None => break,
                            }
                        }
                        retry = self.clone().handle_all(items).await;
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    // Capture from when this node serves (once its disk holds everything
                    // committed) until it is no longer the active: through a planned release,
                    // so the service's last changes still go out in its epoch.
                    let serving = self.failover.serving_epoch();
                    let active = self.failover.active_epoch();
                    match (serving.or(active.filter(|_| capture.is_some())), &capture) {
                        (Some(epoch), None) => {
                            let since = self.consensus.activation().map_or(0, |a| a.since_index);
                            if *self.materialized.borrow() >= since.min(self.last_file_index()) {
                                let (tx, rx) = watch::channel(false);
                                self.lock().capture_running = true;
                                let task = tokio::spawn(self.clone().capture(epoch, rx));
                                capture = Some((tx, task));
                            }
                        }
                        (None, Some(_)) => {
                            let (tx, task) = capture.take().expect("capture is running");
                            let _ = tx.send(true);
                            let _ = task.await;
                            self.stopped_capturing();
                            // Whatever changed here and never committed goes to quarantine now.
                            self.clone().reconcile(Compare::Rejoin).await;
                        }
                        (Some(_), Some((_, task))) if task.is_finished() => {
                            // The capture ended by itself (its epoch was fenced off): start over.
                            capture = None;
                            self.stopped_capturing();
                        }
                        _ => {}
                    }
                    if self.first_copy_settled() {
                        self.clone().reconcile(Compare::Rejoin).await;
                    }
                    if last_sweep.elapsed() >= STAGING_SWEEP_EVERY {
                        last_sweep = Instant::now();
                        let n = self.staging.sweep(chunk::STAGING_TTL);
                        if n > 0 {
                            tracing::info!(chunks = n, "removed staged chunks no change used");
                        }
                    }
                    // Fetches run beside the log's changes (they take turns on the disk), so a
                    // long resync does not hold up new changes.
                    let idle = fetching.as_ref().is_none_or(|t| t.is_finished());
                    if idle && last_fetch.elapsed() >= Duration::from_millis(500) && !self.lock().pending.is_empty() {
                        fetching = Some(tokio::spawn(self.clone().fetch_pending()));
                        last_fetch = Instant::now();
                    }
                }
                _ = stopped(&mut stop) => break,
            }
        }
        if let Some((tx, task)) = capture {
            let _ = tx.send(true);
            let _ = task.await;
        }
        if let Some(f) = fetching {
            f.abort();
        }
        self.local.flush();
    }
}
