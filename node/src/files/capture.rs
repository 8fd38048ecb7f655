//! The active's side: watch the sync folders, let each changed path settle, and propose what it
//! now is.
//!
//! inotify (through `notify`) reports *that* a path changed; what to propose is decided by
//! looking at the path itself and comparing it with the replicated index, so lost, doubled or
//! reordered events cannot make the index wrong, only late. A queue overflow or a watch that
//! cannot be set triggers a rescan of the folder.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use notify::event::AccessKind;
use notify::event::AccessMode;
use notify::event::ModifyKind;
use notify::event::RenameMode;
use notify::EventKind;
use notify::RecursiveMode;
use notify::Watcher;
use tandem_raft_store::codec;
use tandem_raft_store::records::check_link_target;
use tandem_raft_store::records::ChunkRef;
use tandem_raft_store::records::FileAttrs;
use tandem_raft_store::records::FileChange;
use tandem_raft_store::records::FileKind;
use tandem_raft_store::records::FileMeta;
use tandem_raft_store::records::FileOp;
use tandem_raft_store::records::Record;
use tandem_raft_store::records::INLINE_FILE_MAX_BYTES;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::add;
use super::chunk;
use super::chunk::Chunked;
use super::chunk::LocalChunks;
use super::disk;
use super::mirror::walk_folder;
use super::spec::FolderSpec;
use super::stopped;
use super::transfer::HaveRequest;
use super::FileSync;
use super::TRANSFER_TIMEOUT;
use crate::consensus::ProposeError;
use crate::events::Kind;

/// How often settled paths are looked for.
const SETTLE_TICK: Duration = Duration::from_millis(5);
/// How long a drain lets the kernel's last events arrive before it sends what settled.
const DRAIN_EVENTS_WAIT: Duration = Duration::from_millis(30);
/// Most file changes of one folder proposed at once.
pub const PROPOSALS_IN_FLIGHT: usize = 32;
/// How often a folder without a working watch is rescanned.
const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// How a path came to be synced: whether its size and mtime may be taken as proof that its
/// content is unchanged, and whether a directory's entries are scanned too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Events said it changed: a file is read again even when its size and mtime look as
    /// before (a rewrite of the same size within one timestamp tick, or one that set the mtime
    /// back), and a directory is scanned, as what is in it may not have been reported.
    Changed,
    /// A rename named it: a directory is scanned too; a file's size and mtime are trusted.
    Into,
    /// Part of a scan that lists the whole subtree anyway.
    Not,
}

/// Why a push of a file's chunks did not complete.
#[derive(Debug)]
enum Push {
    /// The file is no longer the version that was cut: what was read is gone from the disk.
    Changed,
    /// The standby could not be reached or refused; the active still holds the content.
    Failed(String),
}

/// Why the capture stopped by itself.
#[derive(Debug)]
struct Deposed(String);

/// Paths that changed and are waiting to settle.
#[derive(Default)]
struct Settling {
    paths: HashMap<String, Dirty>,
    /// Renames seen with both ends, in order.
    renames: Vec<(String, String)>,
    rescan: bool,
}

struct Dirty {
    first: Instant,
    last: Instant,
    closed: bool,
}

impl Settling {
    fn touch(&mut self, rel: String, closed: bool) {
        let now = Instant::now();
        let d = self.paths.entry(rel).or_insert(Dirty {
            first: now,
            last: now,
            closed: false,
        });
        d.last = now;
        d.closed |= closed;
    }

    /// Paths ready to go: closed after writing, quiet for `quiet`, or waiting `max_delay`.
    fn ready(&mut self, quiet: Duration, max_delay: Duration) -> Vec<String> {
        let now = Instant::now();
        let mut ready: Vec<String> = self
            .paths
            .iter()
            .filter(|(_, d)| d.closed || now - d.last >= quiet || now - d.first >= max_delay)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &ready {
            self.paths.remove(p);
        }
        // Parents before children.
        ready.sort();
        ready
    }
}

impl FileSync {
    /// Watch every folder and propose its changes in `epoch` until `stop` or until the epoch is
    /// fenced off.
    pub(super) async fn capture(self: Arc<Self>, epoch: u64, stop: watch::Receiver<bool>) {
        // `capturing` is reported once every folder is watched (or polled) and scanned.
        let ready = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let tasks: Vec<_> = self
            .folders
            .values()
            .cloned()
            .map(|spec| tokio::spawn(self.clone().capture_folder(spec, epoch, stop.clone(), ready.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn capture_folder(
        self: Arc<Self>,
        spec: FolderSpec,
        epoch: u64,
        mut stop: watch::Receiver<bool>,
        ready: Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let watcher = notify::RecommendedWatcher::new(
            move |res| {
                let _ = tx.send(res);
            },
            notify::Config::default(),
        )
        .and_then(|mut w| w.watch(&spec.root, RecursiveMode::Recursive).map(|()| w));
        let mut watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                add(&self.counters.rescans, 1);
                self.event(
                    Kind::Warning,
                    format!(
                        "sync folder {} cannot be watched ({e}); rescanning it every {POLL_INTERVAL:?} instead. \
                         Raise fs.inotify.max_user_watches if the watch limit was reached",
                        spec.id
                    ),
                );
                None
            }
        };
        let spec = Arc::new(spec);
        let mut settling = Settling::default();
        // Paths being read and proposed; the capture goes on with later events meanwhile.
        let mut inflight: JoinSet<Result<(), Deposed>> = JoinSet::new();
        // The initial scan builds the manifest: everything on disk that the index lacks or has
        // otherwise is proposed.
        if let Err(Deposed(why)) = self.scan(&spec, "", epoch).await {
            tracing::info!(folder = %spec.id, why, "capture stopped");
            return;
        }
        if ready.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1 == self.folders.len() {
            self.lock().capturing = true;
        }
        let mut tick = tokio::time::interval(SETTLE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_poll = Instant::now();
        let mut drain = self.drain_asked.subscribe();
        drain.mark_unchanged();
        loop {
            tokio::select! {
                Ok(()) = drain.changed() => {
                    // The service stopped: what it wrote last goes out now, settled or not.
                    let asked = *drain.borrow_and_update();
                    tokio::time::sleep(DRAIN_EVENTS_WAIT).await;
                    while let Ok(event) = rx.try_recv() {
                        self.take(&spec, event, &mut settling);
                    }
                    let result = self
                        .send(&spec, &mut settling, epoch, watcher.as_mut(), true, &mut inflight)
                        .await;
                    self.drained.send_modify(|d| {
                        d.insert(spec.id.clone(), asked);
                    });
                    if let Err(Deposed(why)) = result {
                        tracing::info!(folder = %spec.id, why, "capture stopped");
                        return;
                    }
                }
                Some(event) = rx.recv() => self.take(&spec, event, &mut settling),
                Some(done) = inflight.join_next(), if !inflight.is_empty() => {
                    if let Err(Deposed(why)) = outcome(done) {
                        tracing::info!(folder = %spec.id, why, "capture stopped");
                        return;
                    }
                }
                _ = tick.tick() => {
                    if watcher.is_none() && last_poll.elapsed() >= POLL_INTERVAL {
                        last_poll = Instant::now();
                        settling = Settling::default();
                        if finish(&mut inflight).await.is_err() || self.scan(&spec, "", epoch).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let sent = self
                        .send(&spec, &mut settling, epoch, watcher.as_mut(), false, &mut inflight)
                        .await;
                    if let Err(Deposed(why)) = sent {
                        tracing::info!(folder = %spec.id, why, "capture stopped");
                        return;
                    }
                }
                _ = stopped(&mut stop) => break,
            }
        }
    }

    /// Take one item from the watch: an event, or an error that calls for a rescan.
    fn take(&self, spec: &FolderSpec, event: notify::Result<notify::Event>, settling: &mut Settling) {
        match event {
            Ok(event) => self.note(spec, event, settling),
            Err(e) => {
                tracing::warn!(folder = %spec.id, error = %e, "watch error; rescanning");
                settling.rescan = true;
            }
        }
    }

    /// Propose what settled (`now`: everything that is waiting, and wait until it is
    /// proposed): renames first, then the changed paths; after lost notifications, a rescan of
    /// the folder instead.
    ///
    /// Changed paths are handed to tasks in `inflight` (at most [`PROPOSALS_IN_FLIGHT`]), so a
    /// large file being chunked and pushed does not hold up the small ones settling behind it.
    /// Renames and rescans wait for those tasks first: they read the index as the earlier
    /// changes left it.
    async fn send(
        self: &Arc<Self>,
        spec: &Arc<FolderSpec>,
        settling: &mut Settling,
        epoch: u64,
        watcher: Option<&mut notify::RecommendedWatcher>,
        now: bool,
        inflight: &mut JoinSet<Result<(), Deposed>>,
    ) -> Result<(), Deposed> {
        if now || settling.rescan || !settling.renames.is_empty() {
            finish(inflight).await?;
        }
        if settling.rescan {
            add(&self.counters.rescans, 1);
            self.event(
                Kind::Warning,
                format!(
                    "sync folder {}: change notifications were lost (queue overflow); rescanned",
                    spec.id
                ),
            );
            *settling = Settling::default();
            return self.scan(spec, "", epoch).await;
        }
        let mut moved_dirs = Vec::new();
        for (from, to) in std::mem::take(&mut settling.renames) {
            if let Some(dir) = self.rename(spec, &from, &to, epoch).await? {
                moved_dirs.push(dir);
            }
        }
        if let Some(w) = watcher {
            for dir in moved_dirs {
                // Watches follow a moved directory, but their paths do not.
                let _ = w.watch(&spec.root.join(dir), RecursiveMode::Recursive);
            }
        }
        let ready = if now {
            settling.ready(Duration::ZERO, Duration::ZERO)
        } else {
            settling.ready(spec.quiet, spec.max_delay)
        };
        for rel in ready {
            while inflight.len() >= PROPOSALS_IN_FLIGHT {
                if let Some(done) = inflight.join_next().await {
                    outcome(done)?;
                }
            }
            let (this, spec) = (self.clone(), spec.clone());
            inflight.spawn(async move { this.sync_path(&spec, &rel, epoch, Walk::Changed).await });
        }
        if now {
            finish(inflight).await?;
        }
        Ok(())
    }

    /// Turn one inotify event into settling paths.
    fn note(&self, spec: &FolderSpec, event: notify::Event, settling: &mut Settling) {
        if event.need_rescan() {
            settling.rescan = true;
            return;
        }
        let rels: Vec<String> = event.paths.iter().filter_map(|p| relative(&spec.root, p)).collect();
        match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => {
                for r in rels {
                    settling.touch(r, true);
                }
            }
            EventKind::Access(_) => {}
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if rels.len() == 2 => {
                settling.renames.push((rels[0].clone(), rels[1].clone()));
            }
            _ => {
                for r in rels {
                    settling.touch(r, false);
                }
            }
        }
    }

    /// Propose a rename if the index and the disk show one; otherwise treat both ends as
    /// changed paths. Returns the new path of a moved directory.
    async fn rename(&self, spec: &FolderSpec, from: &str, to: &str, epoch: u64) -> Result<Option<String>, Deposed> {
        let known = self.indexed(&spec.id, from);
        let from_gone = matches!(disk::stat(&spec.root, from), Ok(None));
        let to_meta = disk::stat(&spec.root, to).ok().flatten();
        let ignored = spec.ignored(from, false) || spec.ignored(to, to_meta.as_ref().is_some_and(|m| m.is_dir()));
        if let (Some(known), true, Some(now), false) = (&known, from_gone, &to_meta, ignored) {
            let same_kind = match known.kind {
                FileKind::Dir => now.is_dir(),
                FileKind::File => now.is_file() && now.len() == known.size,
                FileKind::Symlink => now.file_type().is_symlink(),
            };
            if same_kind {
                self.propose(
                    spec,
                    FileChange {
                        folder: spec.id.clone(),
                        path: from.to_string(),
                        op: FileOp::Rename { to: to.to_string() },
                    },
                    epoch,
                )
                .await?;
                // Contents and attributes are checked as for any change (a directory is
                // scanned too).
                self.sync_path(spec, to, epoch, Walk::Into).await?;
                return Ok((known.kind == FileKind::Dir).then(|| to.to_string()));
            }
        }
        self.sync_path(spec, from, epoch, Walk::Into).await?;
        self.sync_path(spec, to, epoch, Walk::Into).await?;
        Ok(None)
    }

    /// A path whose committed content never reached this node (it became the active first)
    /// is left as it is while the disk holds what Tandem last put there: proposing that older
    /// copy would quietly undo a committed change. The content is fetched from the other data
    /// node once it is back; a change the service makes to the file meanwhile goes out as usual.
    fn left_for_fetch(&self, spec: &FolderSpec, rel: &str, meta: &std::fs::Metadata) -> bool {
        if !self.lock().pending.contains_key(&(spec.id.clone(), rel.to_string())) {
            return false;
        }
        self.local.get(&spec.id, rel).is_some_and(|l| l.same_stat(meta))
    }

    fn indexed(&self, folder: &str, rel: &str) -> Option<FileMeta> {
        self.consensus
            .state()
            .read()
            .files
            .get(&(folder.to_string(), rel.to_string()))
            .cloned()
    }

    /// Compare the subtree at `dir` ("" for the whole folder) with the index and propose every
    /// difference.
    async fn scan(&self, spec: &FolderSpec, dir: &str, epoch: u64) -> Result<(), Deposed> {
        let root = spec.root.clone();
        let s = spec.clone();
        let dir_owned = dir.to_string();
        let on_disk = tokio::task::spawn_blocking(move || {
            if dir_owned.is_empty() {
                walk_folder(&root, &s)
            } else {
                let sub = root.join(&dir_owned);
                walk_folder(&sub, &s).map(|v| v.into_iter().map(|p| format!("{dir_owned}/{p}")).collect())
            }
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        .unwrap_or_else(|e| {
            tracing::warn!(folder = %spec.id, dir, error = %e, "cannot scan");
            Vec::new()
        });
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let in_index: Vec<String> = {
            let st = self.consensus.state().read();
            st.folder_files(&spec.id, &prefix).map(|(p, _)| p.to_string()).collect()
        };
        let mut all: Vec<String> = on_disk.into_iter().chain(in_index).collect();
        all.sort();
        all.dedup();
        // The walk listed everything below: no path needs to walk into its directory again.
        self.sync_paths(spec, all, epoch, Walk::Not).await
    }

    /// Sync distinct paths, up to [`PROPOSALS_IN_FLIGHT`] at once: their records are
    /// independent (a change to one path never depends on another's being applied first), and
    /// Raft commits concurrent proposals together.
    async fn sync_paths(&self, spec: &FolderSpec, paths: Vec<String>, epoch: u64, walk: Walk) -> Result<(), Deposed> {
        use futures_util::StreamExt;
        let mut results = futures_util::stream::iter(paths)
            .map(|rel| async move { self.sync_path(spec, &rel, epoch, walk).await })
            .buffer_unordered(PROPOSALS_IN_FLIGHT);
        while let Some(result) = results.next().await {
            result?;
        }
        Ok(())
    }

    /// Make the index say what `rel` is on disk now. One path is read and proposed by one task
    /// at a time: the same file can be reached twice at once (its own events, and the scan of
    /// a directory just made), and two reads in flight could commit out of order, leaving the
    /// index with the older content and no event left to correct it. The second waits, then
    /// reads the disk again after the first one's change is applied.
    async fn sync_path(&self, spec: &FolderSpec, rel: &str, epoch: u64, walk: Walk) -> Result<(), Deposed> {
        let key = (spec.id.clone(), rel.to_string());
        let turn = self.syncing().entry(key.clone()).or_default().clone();
        let result = {
            let _held = turn.lock().await;
            self.sync_path_now(spec, rel, epoch, walk).await
        };
        let mut syncing = self.syncing();
        // Only the map and this task still hold it: nobody is waiting.
        if Arc::strong_count(&turn) == 2 {
            syncing.remove(&key);
        }
        result
    }

    async fn sync_path_now(&self, spec: &FolderSpec, rel: &str, epoch: u64, walk: Walk) -> Result<(), Deposed> {
        let here = match disk::stat(&spec.root, rel) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(folder = %spec.id, rel, error = %e, "not replicated");
                return Ok(());
            }
        };
        if spec.ignored(rel, here.as_ref().is_some_and(|m| m.is_dir()))
            || rel.rsplit('/').next().is_some_and(|n| n.starts_with(disk::TEMP_PREFIX))
        {
            return Ok(());
        }
        let known = self.indexed(&spec.id, rel);
        let change = |op| FileChange {
            folder: spec.id.clone(),
            path: rel.to_string(),
            op,
        };
        let Some(meta) = here else {
            let pending = self.lock().pending.contains_key(&(spec.id.clone(), rel.to_string()));
            if known.is_some() && !pending {
                self.propose(spec, change(FileOp::Delete), epoch).await?;
            }
            return Ok(());
        };
        if self.left_for_fetch(spec, rel, &meta) {
            return Ok(());
        }
        let mut attrs = disk::attrs_of(&meta);
        if !spec.keep_owner {
            attrs.uid = 0;
            attrs.gid = 0;
        }
        let ft = meta.file_type();
        if ft.is_dir() {
            // A directory's mtime moves with every entry made in it; only mode and owner are
            // compared, or each new file would also re-send its directory.
            let same = known
                .as_ref()
                .is_some_and(|k| k.kind == FileKind::Dir && same_owner_and_mode(&k.attrs, &attrs));
            if !same {
                self.propose(spec, change(FileOp::Mkdir { attrs }), epoch).await?;
            }
            if walk != Walk::Not {
                // What is in a directory an event names may predate its watch: files made
                // right after mkdir, or after a scan of its parent found it (as a directory the
                // index may already hold) but before its own watch was set.
                Box::pin(self.scan(spec, rel, epoch)).await?;
            }
            return Ok(());
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(spec.root.join(rel))
                .ok()
                .and_then(|t| t.to_str().map(str::to_string));
            let ok = target.as_deref().is_some_and(|t| check_link_target(rel, t).is_ok());
            let Some(target) = target.filter(|_| ok) else {
                self.event(
                    Kind::Warning,
                    format!("{}/{rel} is a symlink out of the folder; it is not replicated", spec.id),
                );
                if known.is_some() {
                    self.propose(spec, change(FileOp::Delete), epoch).await?;
                }
                return Ok(());
            };
            if known.as_ref().and_then(|k| k.target.as_deref()) != Some(target.as_str()) {
                self.propose(
                    spec,
                    change(FileOp::Symlink {
                        target,
                        mtime_ns: attrs.mtime_ns,
                    }),
                    epoch,
                )
                .await?;
            }
            return Ok(());
        }
        if !ft.is_file() {
            return Ok(()); // sockets, fifos, devices: not replicated
        }
        if let Some(k) = known
            .as_ref()
            .filter(|k| k.kind == FileKind::File && walk != Walk::Changed)
        {
            if k.size == meta.size() && k.attrs.mtime_ns == attrs.mtime_ns {
                if !same_attrs(&k.attrs, &attrs) {
                    self.propose(spec, change(FileOp::SetAttrs { attrs }), epoch).await?;
                }
                return Ok(());
            }
        }
        let path = spec.root.join(rel);
        let op = if meta.size() <= INLINE_FILE_MAX_BYTES as u64 {
            let Ok(data) = tokio::fs::read(&path).await else {
                return Ok(()); // gone again: its removal is reported too
            };
            if data.len() > INLINE_FILE_MAX_BYTES {
                return Box::pin(self.sync_path_now(spec, rel, epoch, walk)).await;
            }
            if !still_as(&path, &meta) {
                return Ok(()); // being written: its own events bring it back
            }
            let hash = *blake3::hash(&data).as_bytes();
            if known
                .as_ref()
                .is_some_and(|k| k.kind == FileKind::File && k.hash == hash)
            {
                FileOp::SetAttrs { attrs }
            } else {
                add(&self.counters.inline_bytes, data.len() as u64);
                FileOp::Write {
                    size: data.len() as u64,
                    attrs,
                    hash,
                    chunks: Vec::new(),
                    inline: Some(data),
                }
            }
        } else {
            if walk == Walk::Changed {
                // The cached cut is keyed by size and mtime as well.
                self.forget_chunked(&path);
            }
            let Some(chunked) = self.chunked_copy(&path).await else {
                return Ok(());
            };
            if !still_as(&path, &meta) {
                // Being written (a rewrite of a large file is seen as soon as it is truncated):
                // what was cut may be part of it. Its own events bring it back once written.
                self.forget_chunked(&path);
                return Ok(());
            }
            if known
                .as_ref()
                .is_some_and(|k| k.kind == FileKind::File && k.hash == chunked.hash)
            {
                FileOp::SetAttrs { attrs }
            } else {
                let after = known.as_ref().map_or(0, |k| k.index);
                match self.push(spec, rel, &path, &chunked, after).await {
                    Ok(()) => {}
                    // The version that was cut is not on the disk any more: a record of it could
                    // never be materialized anywhere. Either the cut came from the cache and was
                    // stale, which no event may follow: cut it once afresh (`Changed` skips the
                    // cache); or the file changed after it was read: its own events bring it back.
                    Err(Push::Changed) if walk != Walk::Changed => {
                        return Box::pin(self.sync_path_now(spec, rel, epoch, Walk::Changed)).await;
                    }
                    Err(Push::Changed) => {
                        self.forget_chunked(&path);
                        return Ok(());
                    }
                    Err(Push::Failed(e)) => {
                        // The record still goes: the standby fetches what it lacks from here.
                        tracing::debug!(folder = %spec.id, rel, error = %e, "push to the standby failed");
                    }
                }
                FileOp::Write {
                    size: chunked.size,
                    attrs,
                    hash: chunked.hash,
                    chunks: chunked.chunks.clone(),
                    inline: None,
                }
            }
        };
        if let (FileOp::SetAttrs { attrs }, Some(k)) = (&op, &known) {
            if k.attrs == *attrs {
                return Ok(());
            }
        }
        self.propose(spec, change(op), epoch).await
    }

    /// Push the chunks of `path` the standby lacks to its staging area. `after`: the log index
    /// of the path's last committed change, which the standby applies before it says what its
    /// copy holds.
    async fn push(&self, spec: &FolderSpec, rel: &str, path: &Path, chunked: &Chunked, after: u64) -> Result<(), Push> {
        let peer = self.peer.clone().ok_or(Push::Failed("no other data node".into()))?;
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<ChunkRef> = chunked.chunks.iter().filter(|c| seen.insert(c.hash)).copied().collect();
        let req = HaveRequest {
            folder: spec.id.clone(),
            path: rel.to_string(),
            after,
            hashes: unique.iter().map(|c| c.hash).collect(),
        };
        let answer = (self.exchange)(
            peer.clone(),
            "/peer/files/have",
            codec::encode(&req).map_err(|e| Push::Failed(e.to_string()))?,
            TRANSFER_TIMEOUT,
        )
        .await
        .map_err(Push::Failed)?;
        let held: Vec<bool> = codec::decode(&answer).map_err(|e| Push::Failed(e.to_string()))?;
        let missing: Vec<ChunkRef> = unique
            .into_iter()
            .zip(held.into_iter().chain(std::iter::repeat(false)))
            .filter(|(_, h)| !h)
            .map(|(c, _)| c)
            .collect();
        let mut file = LocalChunks::open(path, chunked).map_err(|_| Push::Changed)?;
        for part in chunk::batches(missing, |c| c.len) {
            let bytes: u64 = part.iter().map(|c| u64::from(c.len)).sum();
            // The file travels into the blocking read and back.
            let (back, wire) = tokio::task::spawn_blocking(move || {
                let mut out = Vec::with_capacity(part.len());
                for c in part {
                    let Some(data) = file.get(&c.hash) else {
                        return (file, Err(Push::Changed));
                    };
                    out.push((c.hash, data));
                }
                let wire = chunk::encode_batch(out).map_err(|e| Push::Failed(e.to_string()));
                (file, wire)
            })
            .await
            .map_err(|e| Push::Failed(e.to_string()))?;
            file = back;
            let wire = wire?;
            add(&self.counters.pushed_bytes, bytes);
            add(&self.counters.pushed_wire_bytes, wire.len() as u64);
            (self.exchange)(peer.clone(), "/peer/files/put", wire, TRANSFER_TIMEOUT)
                .await
                .map_err(Push::Failed)?;
        }
        Ok(())
    }

    /// Propose one change in `epoch`. A fenced or lost epoch ends the capture.
    async fn propose(&self, spec: &FolderSpec, change: FileChange, epoch: u64) -> Result<(), Deposed> {
        let what = format!("{}/{}", change.folder, change.path);
        match self.consensus.propose_in(Record::File(change), Some(epoch)).await {
            Ok(_) => {
                add(&self.counters.proposed, 1);
                Ok(())
            }
            Err(ProposeError::Rejected(tandem_raft_store::records::Rejection::Invalid(why))) => {
                // The index moved under us (a race with another change to the path); the next
                // event or scan corrects it.
                tracing::debug!(folder = %spec.id, what, why, "file change refused");
                Ok(())
            }
            Err(e) => Err(Deposed(format!("{what}: {e}"))),
        }
    }
}

/// Wait for every path in flight; the first capture-ending error, if any.
async fn finish(inflight: &mut JoinSet<Result<(), Deposed>>) -> Result<(), Deposed> {
    let mut result = Ok(());
    while let Some(done) = inflight.join_next().await {
        if result.is_ok() {
            result = outcome(done);
        }
    }
    result
}

/// A finished path task's result (a task that panicked ends the capture, which starts over).
fn outcome(done: Result<Result<(), Deposed>, tokio::task::JoinError>) -> Result<(), Deposed> {
    done.unwrap_or_else(|e| Err(Deposed(format!("a capture task failed: {e}"))))
}

/// Whether the file still has the size and mtime it had when the sync looked at it first; if
/// not, a write went on while it was read, and that write's events follow.
fn still_as(path: &Path, first: &std::fs::Metadata) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|now| now.len() == first.len() && disk::attrs_of(&now).mtime_ns == disk::attrs_of(first).mtime_ns)
}

fn same_owner_and_mode(a: &FileAttrs, b: &FileAttrs) -> bool {
    a.mode == b.mode && a.uid == b.uid && a.gid == b.gid
}

fn same_attrs(a: &FileAttrs, b: &FileAttrs) -> bool {
    same_owner_and_mode(a, b) && a.mtime_ns == b.mtime_ns
}

fn relative(root: &Path, path: &Path) -> Option<String> {
    let rel = path.strip_prefix(root).ok()?.to_str()?;
    (!rel.is_empty()).then(|| rel.to_string())
}
