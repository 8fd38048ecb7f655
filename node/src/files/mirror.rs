//! The standby's side: applied file changes made real on disk, contents fetched when they could
//! not be assembled, and the disk compared with the index (quarantining local changes that never
//! committed).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tandem_client::api::QuarantineInfo;
use tandem_raft_store::codec;
use tandem_raft_store::records::link_hash;
use tandem_raft_store::records::FileChange;
use tandem_raft_store::records::FileKind;
use tandem_raft_store::records::FileMeta;
use tandem_raft_store::records::FileOp;
use tandem_raft_store::state_machine::FileFeed;

use super::add;
use super::chunk;
use super::chunk::Chunked;
use super::chunk::LocalChunks;
use super::disk;
use super::disk::DiskError;
use super::local::LocalEntry;
use super::transfer::GetRequest;
use super::transfer::ManifestRequest;
use super::FileSync;
use super::Pending;
use super::Progress;
use super::TRANSFER_TIMEOUT;
use crate::events::Kind;

/// Why the folders are compared with the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compare {
    /// The node starts, stops being the active, or finishes a first copy: local entries the
    /// index does not hold are changes that never committed and go to quarantine.
    Rejoin,
    /// A standby fell behind the log (a snapshot, or more changes than the feed holds): it has
    /// written nothing but what Tandem gave it since its last comparison, so entries the index
    /// lacks are either its own (a delete it missed removes them) or left as found.
    CatchUp,
}

/// Most independent file writes made at once by the mirror.
pub const APPLY_PARALLEL: usize = 8;

/// What became of one change on this disk.
enum Outcome {
    Done,
    /// The content is not here yet: fetch it.
    Pending(Pending),
}

impl FileSync {
    /// Deal with the feed's items in order; returns what must be tried again later (the disk is
    /// full), in order. Runs of independent file writes are made side by side, up to
    /// [`APPLY_PARALLEL`] at once: each still gets its own fsync, rename and directory fsync,
    /// but the waits for the disk overlap. Any other change goes alone.
    pub(super) async fn handle_all(self: Arc<Self>, items: Vec<FileFeed>) -> Vec<FileFeed> {
        let mut items = std::collections::VecDeque::from(items);
        while let Some(item) = items.pop_front() {
            let FileFeed::Applied { index, origin, change } = item else {
                if self.lock().capture_running {
                    // The capture owns this disk: it is the source of what the index says.
                    self.materialized_through(self.last_file_index());
                } else {
                    self.clone().reconcile(Compare::CatchUp).await;
                }
                continue;
            };
            self.lock().last_change = Some(Instant::now());
            if index <= *self.materialized.borrow() {
                continue;
            }
            if origin == Some(self.me) && self.lock().capture_running {
                // This node read the change from its own disk: the disk already holds it.
                self.local.follow(&change);
                self.lock()
                    .pending
                    .remove(&(change.folder.clone(), change.path.clone()));
                self.materialized.send_replace(index);
                continue;
            }
            let mut run = vec![(index, origin, change)];
            while run.len() < APPLY_PARALLEL && items.front().is_some_and(|next| self.joins(&run, next)) {
                if let Some(FileFeed::Applied { index, origin, change }) = items.pop_front() {
                    run.push((index, origin, change));
                }
            }
            let turn = self.disk_turn.lock().await;
            let tasks: Vec<_> = run
                .iter()
                .map(|(_, _, change)| {
                    let (this, c) = (self.clone(), change.clone());
                    tokio::task::spawn_blocking(move || this.materialize(&c))
                })
                .collect();
            let mut results = Vec::with_capacity(tasks.len());
            for t in tasks {
                results.push(
                    t.await
                        .unwrap_or_else(|e| Err(Unmade::Failed(format!("apply task failed: {e}")))),
                );
            }
            drop(turn);
            let mut done = run.into_iter().zip(results);
            while let Some(((index, origin, change), result)) = done.next() {
                if let Some(back) = self.settle(index, origin, change, result) {
                    // Tried again from here, in order (what was written after it is written
                    // again: the same content).
                    let rest: Vec<FileFeed> = done
                        .map(|((index, origin, change), _)| FileFeed::Applied { index, origin, change })
                        .collect();
                    for item in rest.into_iter().rev() {
                        items.push_front(item);
                    }
                    items.push_front(back);
                    return items.into();
                }
            }
        }
        Vec::new()
    }

    /// Whether `next` can be written beside the run: the run and `next` are file writes that
    /// this disk does not hold yet, to paths that are neither equal nor one below the other,
    /// sharing no chunk (a staged chunk is used once).
    fn joins(&self, run: &[(u64, Option<u64>, FileChange)], next: &FileFeed) -> bool {
        let FileFeed::Applied { index, origin, change } = next else {
            return false;
        };
        let FileOp::Write { chunks, .. } = &change.op else {
            return false;
        };
        if *index <= *self.materialized.borrow() || (*origin == Some(self.me) && self.lock().capture_running) {
            return false;
        }
        let related = |a: &str, b: &str| {
            a == b
                || (a.starts_with(b) && a.as_bytes()[b.len()] == b'/')
                || (b.starts_with(a) && b.as_bytes()[a.len()] == b'/')
        };
        run.iter().all(|(_, _, theirs)| match &theirs.op {
            FileOp::Write {
                chunks: their_chunks, ..
            } => {
                let same_path = theirs.folder == change.folder && related(&theirs.path, &change.path);
                let shared_chunk = chunks.iter().any(|c| their_chunks.iter().any(|t| t.hash == c.hash));
                !same_path && !shared_chunk
            }
            _ => false,
        })
    }

    /// Record what became of one change: pending, stalled or done.
    fn settle(
        &self,
        index: u64,
        origin: Option<u64>,
        change: FileChange,
        result: Result<Outcome, Unmade>,
    ) -> Option<FileFeed> {
        let key = (change.folder.clone(), change.path.clone());
        match result {
            Ok(Outcome::Done) => {
                add(&self.counters.applied, 1);
                self.local.follow(&change);
                let mut s = self.lock();
                follow_pending(&mut s.pending, &change);
                if s.pending.is_empty() {
                    s.progress = None;
                }
                if let Some(reason) = s.stalled.take() {
                    drop(s);
                    self.event(Kind::Warning, format!("file mirror resumed (was stopped: {reason})"));
                }
            }
            Ok(Outcome::Pending(p)) => {
                let mut s = self.lock();
                follow_pending(&mut s.pending, &change);
                let size = p.size;
                s.pending.insert(key, p);
                let progress = s.progress.get_or_insert_with(Progress::new);
                progress.files_total += 1;
                progress.bytes_total += size;
            }
            Err(e @ Unmade::NoSpace(_)) => {
                let first = self.lock().stalled.replace(e.to_string()).is_none();
                if first {
                    self.event(
                        Kind::Warning,
                        format!("file mirror stopped: {e}; this node is not synced until it can write again"),
                    );
                }
                return Some(FileFeed::Applied { index, origin, change });
            }
            Err(e) => {
                // The change could not be made here as recorded: fetch the committed state of the
                // path instead of leaving it wrong.
                self.event(Kind::Warning, format!("file change not applied: {e}"));
                let meta = self.consensus.state().read().files.get(&key).cloned();
                let mut s = self.lock();
                follow_pending(&mut s.pending, &change);
                if let Some(m) = meta.filter(|m| m.kind == FileKind::File) {
                    s.pending.insert(key, pending_of(&m, false));
                }
            }
        }
        self.materialized.send_replace(index);
        None
    }

    /// Make one change on disk (blocking).
    fn materialize(&self, change: &FileChange) -> Result<Outcome, Unmade> {
        let spec = self.folder(&change.folder).ok_or_else(|| {
            Unmade::Failed(format!(
                "sync folder {:?} is not configured on this node",
                change.folder
            ))
        })?;
        let (root, rel, keep) = (&spec.root, change.path.as_str(), spec.keep_owner);
        let path = format!("{}/{}", change.folder, rel);
        let disk_err = |e: DiskError| match e {
            DiskError::NoSpace { .. } => Unmade::NoSpace(e.to_string()),
            other => Unmade::Failed(format!("{path}: {other}")),
        };
        // What Tandem did not put here is moved aside before a committed change replaces it.
        let incoming = match &change.op {
            FileOp::Write { hash, .. } => Some(*hash),
            _ => None,
        };
        if !matches!(change.op, FileOp::SetAttrs { .. } | FileOp::Mkdir { .. }) {
            self.guard(&change.folder, rel, incoming).map_err(disk_err)?;
        }
        match &change.op {
            FileOp::Write {
                size,
                attrs,
                hash,
                chunks,
                inline,
            } => {
                if let Some(data) = inline {
                    disk::ensure_parents(root, rel).map_err(disk_err)?;
                    disk::write_atomic(root, rel, *size, hash, attrs, keep, &mut |w| w.write_all(data))
                        .map_err(disk_err)?;
                    return Ok(Outcome::Done);
                }
                let pending = Pending {
                    size: *size,
                    hash: *hash,
                    attrs: *attrs,
                    quarantine_first: false,
                };
                let chunked = Chunked {
                    size: *size,
                    hash: *hash,
                    chunks: chunks.clone(),
                };
                self.assemble(&change.folder, rel, &chunked, &pending, None)
                    .map_err(disk_err)
            }
            FileOp::Mkdir { attrs } => {
                disk::ensure_parents(root, rel).map_err(disk_err)?;
                disk::make_dir(root, rel, attrs, keep).map_err(disk_err)?;
                Ok(Outcome::Done)
            }
            FileOp::Symlink { target, mtime_ns } => {
                disk::ensure_parents(root, rel).map_err(disk_err)?;
                disk::make_symlink(root, rel, target, *mtime_ns).map_err(disk_err)?;
                Ok(Outcome::Done)
            }
            FileOp::SetAttrs { attrs } => {
                if let Some(p) = self.lock().pending.get_mut(&(change.folder.clone(), rel.to_string())) {
                    // Not here yet: it is written with these attributes when it arrives.
                    p.attrs = *attrs;
                    return Ok(Outcome::Done);
                }
                disk::set_attrs(root, rel, attrs, keep).map_err(disk_err)?;
                Ok(Outcome::Done)
            }
            FileOp::Delete => {
                disk::remove(root, rel).map_err(disk_err)?;
                Ok(Outcome::Done)
            }
            FileOp::Rename { to } => {
                if disk::stat(root, rel).map_err(disk_err)?.is_none() {
                    // Nothing here to move (its content was pending): the pending entry moves.
                    return Ok(Outcome::Done);
                }
                // The destination it replaces is guarded like any file a change replaces.
                self.guard(&change.folder, to, None).map_err(disk_err)?;
                disk::rename(root, rel, to).map_err(disk_err)?;
                Ok(Outcome::Done)
            }
        }
    }

    /// Build the new version of `rel` from staged chunks and chunks of the current copy
    /// (`local`: the copy already cut, `None`: cut it here if a chunk is not staged);
    /// `Pending` if some chunk is in neither.
    fn assemble(
        &self,
        folder: &str,
        rel: &str,
        chunked: &Chunked,
        pending: &Pending,
        mut local: Option<LocalChunks>,
    ) -> Result<Outcome, DiskError> {
        let spec = self.folder(folder).expect("folder checked by the caller");
        let root = &spec.root;
        let target = disk::resolve(root, rel)?;
        let mut local_tried = local.is_some();
        for c in &chunked.chunks {
            if self.staging.has(&c.hash) {
                continue;
            }
            if !local_tried {
                local = LocalChunks::of(&target);
                local_tried = true;
            }
            if !local.as_ref().is_some_and(|l| l.has(&c.hash)) {
                return Ok(Outcome::Pending(pending.clone()));
            }
        }
        disk::ensure_parents(root, rel)?;
        let staging = &self.staging;
        let mut fill = |w: &mut dyn std::io::Write| -> std::io::Result<()> {
            for c in &chunked.chunks {
                let data = staging
                    .get(&c.hash)
                    .or_else(|| local.as_mut().and_then(|l| l.get(&c.hash)))
                    .ok_or_else(|| std::io::Error::other(format!("chunk {} vanished", chunk::hex(&c.hash))))?;
                w.write_all(&data)?;
            }
            Ok(())
        };
        // The new version is assembled from the old copy first, so a copy that goes to
        // quarantine is moved aside only then: written beside it, quarantined, renamed in.
        let swap = pending.quarantine_first && disk::stat(root, rel)?.is_some();
        let written = if swap {
            format!("{rel}{QUARANTINE_SWAP_SUFFIX}")
        } else {
            rel.to_string()
        };
        disk::write_atomic(
            root,
            &written,
            chunked.size,
            &chunked.hash,
            &pending.attrs,
            spec.keep_owner,
            &mut fill,
        )?;
        if swap {
            self.quarantine(folder, rel)?;
            disk::rename(root, &written, rel)?;
        }
        for c in &chunked.chunks {
            self.staging.remove(&c.hash);
        }
        Ok(Outcome::Done)
    }

    /// Quarantine the file at `rel` if it holds a change Tandem never saw committed (neither
    /// what it last wrote or saw there, nor `incoming`).
    fn guard(&self, folder: &str, rel: &str, incoming: Option<[u8; 32]>) -> Result<(), DiskError> {
        let spec = self.folder(folder).expect("folder checked by the caller");
        let Some(meta) = disk::stat(&spec.root, rel)? else {
            return Ok(());
        };
        if !meta.is_file() {
            return Ok(());
        }
        let known = self.local.get(folder, rel);
        if known.is_some_and(|k| k.same_stat(&meta)) {
            return Ok(());
        }
        let path = disk::resolve(&spec.root, rel)?;
        let hash = chunk::hash_file(&path).ok();
        if hash.is_some() && (hash == known.map(|k| k.hash) || hash == incoming) {
            return Ok(());
        }
        self.quarantine(folder, rel)
    }

    /// Move a local entry that never committed aside (blocking).
    fn quarantine(&self, folder: &str, rel: &str) -> Result<(), DiskError> {
        let spec = self.folder(folder).expect("folder checked by the caller");
        let epoch = self.consensus.activation().map_or(0, |a| a.epoch);
        let at_ms = crate::unix_ms();
        let set = self.quarantine_dir.join(folder).join(format!(
            "epoch-{epoch}-{}",
            tandem_client::utc_time(at_ms).replace([' ', ':'], "-")
        ));
        let moved = disk::quarantine(&spec.root, rel, &set)?;
        let info = QuarantineInfo {
            folder: folder.to_string(),
            path: rel.to_string(),
            moved_to: moved.display().to_string(),
            epoch,
            at_ms,
        };
        self.event(
            Kind::Warning,
            format!(
                "{folder}/{rel} held a change that never committed; moved to {}",
                info.moved_to
            ),
        );
        self.lock().quarantined.push(info);
        Ok(())
    }

    /// Compare every folder with the index: fix attributes and links, fetch differing files,
    /// quarantine local changes that never committed.
    pub(super) async fn reconcile(self: Arc<Self>, how: Compare) {
        let this = self.clone();
        let turn = self.disk_turn.lock().await;
        let result = tokio::task::spawn_blocking(move || this.reconcile_blocking(how)).await;
        drop(turn);
        match result {
            Ok(Ok(through)) => self.materialized_through(through),
            Ok(Err(e)) => self.event(Kind::Warning, format!("file mirror cannot compare its folders: {e}")),
            Err(e) => self.event(Kind::Warning, format!("file mirror compare failed: {e}")),
        }
        let (files, bytes) = {
            let s = self.lock();
            (s.pending.len() as u64, s.pending.values().map(|p| p.size).sum::<u64>())
        };
        if files > 0 {
            self.lock().progress = Some(Progress {
                files_total: files,
                bytes_total: bytes,
                ..Progress::new()
            });
            self.event(
                Kind::Warning,
                format!("file mirror: {files} files ({bytes} bytes) to fetch from the other data node"),
            );
        }
    }

    /// Returns the log index the comparison reflects.
    fn reconcile_blocking(&self, how: Compare) -> Result<u64, String> {
        // One copy of the folders' index at one log position, so the disk work holds no lock.
        let (index, through) = {
            let st = self.consensus.state().read();
            let index: BTreeMap<&str, BTreeMap<String, FileMeta>> = self
                .folders
                .keys()
                .map(|id| {
                    let files = st
                        .folder_files(id, "")
                        .map(|(p, m)| (p.to_string(), m.clone()))
                        .collect();
                    (id.as_str(), files)
                })
                .collect();
            (index, st.meta.last_file_index)
        };
        let mut pending = BTreeMap::new();
        for spec in self.folders.values() {
            let root = &spec.root;
            let committed: BTreeMap<&str, &FileMeta> =
                index[spec.id.as_str()].iter().map(|(p, m)| (p.as_str(), m)).collect();
            // A folder that was never mirrored, on a cluster that holds nothing of it yet, is
            // the initial copy: its files stay where they are (the first active proposes
            // them; a standby's copy serves as chunk source and differing files are moved aside
            // when the committed versions replace them).
            let first_copy = committed.is_empty() && self.local.knows_nothing_of(&spec.id);
            {
                let mut s = self.lock();
                if first_copy {
                    s.first_copy.insert(spec.id.clone());
                } else {
                    s.first_copy.remove(&spec.id);
                }
            }
            // Local entries the index does not know: moved aside, unless Tandem itself put them
            // there (then a committed delete this node missed removes them).
            let extras = if first_copy {
                Vec::new()
            } else {
                walk_folder(root, spec).map_err(|e| format!("{}: {e}", root.display()))?
            };
            for rel in extras {
                if committed.contains_key(rel.as_str()) {
                    continue;
                }
                let prefix = format!("{rel}/");
                let is_parent = committed
                    .range(prefix.as_str()..)
                    .next()
                    .is_some_and(|(p, _)| p.starts_with(&prefix));
                if is_parent {
                    continue;
                }
                if disk::stat(root, &rel).map_err(|e| e.to_string())?.is_none() {
                    continue; // went with a directory moved or removed before
                }
                let ours = self.local.get(&spec.id, &rel).is_some() && !self.changed_locally(spec, &rel);
                if ours {
                    disk::remove(root, &rel).map_err(|e| e.to_string())?;
                    self.local.remove_tree(&spec.id, &rel);
                } else if how == Compare::Rejoin {
                    self.quarantine(&spec.id, &rel).map_err(|e| e.to_string())?;
                    self.local.remove_tree(&spec.id, &rel);
                }
            }
            for (rel, meta) in &committed {
                let rel = *rel;
                let here = disk::stat(root, rel).map_err(|e| e.to_string())?;
                match meta.kind {
                    FileKind::Dir => {
                        if here.as_ref().is_some_and(|m| !m.is_dir()) && self.changed_locally(spec, rel) {
                            self.quarantine(&spec.id, rel).map_err(|e| e.to_string())?;
                        }
                        disk::ensure_parents(root, rel).map_err(|e| e.to_string())?;
                        disk::make_dir(root, rel, &meta.attrs, spec.keep_owner).map_err(|e| e.to_string())?;
                    }
                    FileKind::Symlink => {
                        let target = meta.target.clone().unwrap_or_default();
                        let same = disk::resolve(root, rel)
                            .ok()
                            .and_then(|p| std::fs::read_link(p).ok())
                            .is_some_and(|t| t.to_str() == Some(target.as_str()));
                        if !same {
                            if here.is_some() && self.changed_locally(spec, rel) {
                                self.quarantine(&spec.id, rel).map_err(|e| e.to_string())?;
                            }
                            disk::ensure_parents(root, rel).map_err(|e| e.to_string())?;
                            disk::make_symlink(root, rel, &target, meta.attrs.mtime_ns).map_err(|e| e.to_string())?;
                        }
                    }
                    FileKind::File => {
                        let quick_same = here.as_ref().is_some_and(|m| {
                            m.is_file() && m.len() == meta.size && disk::attrs_of(m).mtime_ns == meta.attrs.mtime_ns
                        });
                        if quick_same {
                            self.adopt(spec, rel, meta);
                            continue;
                        }
                        let disk_hash = here
                            .as_ref()
                            .filter(|m| m.is_file())
                            .and_then(|_| disk::resolve(root, rel).ok())
                            .and_then(|p| chunk::hash_file(&p).ok());
                        if disk_hash == Some(meta.hash) {
                            disk::set_attrs(root, rel, &meta.attrs, spec.keep_owner).map_err(|e| e.to_string())?;
                            self.adopt(spec, rel, meta);
                            continue;
                        }
                        let local_change =
                            here.is_some() && self.local.get(&spec.id, rel).is_none_or(|l| Some(l.hash) != disk_hash);
                        if here.as_ref().is_some_and(|m| m.is_dir()) {
                            self.quarantine(&spec.id, rel).map_err(|e| e.to_string())?;
                        }
                        pending.insert((spec.id.clone(), rel.to_string()), pending_of(meta, local_change));
                    }
                }
            }
        }
        self.local.flush();
        self.lock().pending = pending;
        Ok(through)
    }

    /// The disk entry at `rel` is not what Tandem last knew to be there.
    fn changed_locally(&self, spec: &super::spec::FolderSpec, rel: &str) -> bool {
        let Some(known) = self.local.get(&spec.id, rel) else {
            return true;
        };
        let Ok(Some(meta)) = disk::stat(&spec.root, rel) else {
            return false;
        };
        let Ok(path) = disk::resolve(&spec.root, rel) else {
            return true;
        };
        match known.kind {
            FileKind::File => !meta.is_file() || chunk::hash_file(&path).ok() != Some(known.hash),
            FileKind::Dir => !meta.is_dir(),
            FileKind::Symlink => {
                std::fs::read_link(&path).ok().and_then(|t| t.to_str().map(link_hash)) != Some(known.hash)
            }
        }
    }

    fn adopt(&self, spec: &super::spec::FolderSpec, rel: &str, meta: &FileMeta) {
        self.local.put(
            &spec.id,
            rel,
            LocalEntry {
                kind: meta.kind,
                size: meta.size,
                hash: meta.hash,
                mtime_ns: meta.attrs.mtime_ns,
            },
        );
    }

    /// Fetch pending contents from the other data node, one file at a time, within the rate
    /// limit.
    pub(super) async fn fetch_pending(self: Arc<Self>) {
        let Some(peer) = self.peer.clone() else { return };
        let mut pace = Pace::new();
        let todo: Vec<((String, String), Pending)> = self
            .lock()
            .pending
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((folder, path), want) in todo {
            match self.fetch_one(&peer, &folder, &path, &want, &mut pace).await {
                Ok(true) => {
                    let mut s = self.lock();
                    if let Some(p) = s.progress.as_mut() {
                        p.files_done += 1;
                        p.bytes_done += want.size;
                    }
                    if s.pending.is_empty() {
                        s.progress = None;
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(folder, path, error = %e, "fetch failed");
                    if let Unmade::NoSpace(_) = e {
                        let first = self.lock().stalled.replace(e.to_string()).is_none();
                        if first {
                            self.event(Kind::Warning, format!("file mirror stopped: {e}"));
                        }
                    }
                    return;
                }
            }
        }
    }

    /// Fetch what `path` lacks from `peer` and write it; `Ok(false)` when the peer's copy is not
    /// the wanted version (yet).
    async fn fetch_one(
        self: &Arc<Self>,
        peer: &str,
        folder: &str,
        path: &str,
        want: &Pending,
        pace: &mut Pace,
    ) -> Result<bool, Unmade> {
        let req = codec::encode(&ManifestRequest {
            folder: folder.to_string(),
            path: path.to_string(),
        })
        .map_err(|e| e.to_string())?;
        let answer = (self.exchange)(peer.to_string(), "/peer/files/manifest", req, TRANSFER_TIMEOUT).await?;
        let copy: Option<Chunked> = codec::decode(&answer).map_err(|e| e.to_string())?;
        let Some(copy) = copy.filter(|c| c.hash == want.hash && c.size == want.size) else {
            return Ok(false);
        };
        let spec = self.folder(folder).ok_or_else(|| "folder gone".to_string())?.clone();
        let target = disk::resolve(&spec.root, path).map_err(|e| e.to_string())?;
        // The current copy is cut once: for what it lacks, then to assemble from.
        let local = tokio::task::spawn_blocking(move || LocalChunks::of(&target))
            .await
            .map_err(|e| e.to_string())?;
        let mut seen = std::collections::HashSet::new();
        let missing: Vec<(u32, [u8; 32])> = copy
            .chunks
            .iter()
            .filter(|c| seen.insert(c.hash))
            .filter(|c| !self.staging.has(&c.hash) && !local.as_ref().is_some_and(|l| l.has(&c.hash)))
            .map(|c| (c.len, c.hash))
            .collect();
        let mut fetched = 0u64;
        for batch in chunk::batches(missing, |(len, _)| *len) {
            let req = GetRequest {
                folder: folder.to_string(),
                path: path.to_string(),
                hash: want.hash,
                chunks: batch.into_iter().map(|(_, h)| h).collect(),
            };
            let got = self.fetch_batch(peer, req).await?;
            fetched += got;
            pace.account(spec.rate_limit, got).await;
        }
        tracing::debug!(folder, path, fetched, "fetched missing chunks");
        let (this, folder_id, this_path, wanted) = (self.clone(), folder.to_string(), path.to_string(), want.clone());
        // The fetched chunks are written only if no committed change moved the path meanwhile;
        // changes from the log and fetches take turns on the disk.
        let _turn = self.disk_turn.lock().await;
        if self.lock().pending.get(&(folder.to_string(), path.to_string())) != Some(want) {
            return Ok(false);
        }
        let result = tokio::task::spawn_blocking(move || this.assemble(&folder_id, &this_path, &copy, &wanted, local))
            .await
            .map_err(|e| e.to_string())?;
        match result {
            Ok(Outcome::Done) => {
                self.lock().pending.remove(&(folder.to_string(), path.to_string()));
                self.local.put(
                    folder,
                    path,
                    LocalEntry {
                        kind: FileKind::File,
                        size: want.size,
                        hash: want.hash,
                        mtime_ns: want.attrs.mtime_ns,
                    },
                );
                Ok(true)
            }
            Ok(Outcome::Pending(_)) => Ok(false),
            Err(e @ DiskError::NoSpace { .. }) => Err(Unmade::NoSpace(e.to_string())),
            Err(e) => Err(Unmade::Failed(e.to_string())),
        }
    }
}

impl FileSync {
    /// Ask `peer` for one batch of chunks and stage them; the raw bytes received.
    async fn fetch_batch(&self, peer: &str, req: GetRequest) -> Result<u64, Unmade> {
        let body = codec::encode(&req).map_err(|e| e.to_string())?;
        let wire = (self.exchange)(peer.to_string(), "/peer/files/get", body, TRANSFER_TIMEOUT).await?;
        let staging = self.staging.clone();
        let wire_len = wire.len() as u64;
        let raw = tokio::task::spawn_blocking(move || {
            let chunks = chunk::decode_batch(&wire)?;
            staging.put_all(&chunks).map_err(|e| {
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    Unmade::NoSpace(format!(
                        "the staging area is full (no space left: {e}); free space in data_dir and the mirror resumes"
                    ))
                } else {
                    Unmade::Failed(e.to_string())
                }
            })?;
            Ok::<u64, Unmade>(chunks.chunks().iter().map(|(_, d)| d.len() as u64).sum())
        })
        .await
        .map_err(|e| e.to_string())??;
        add(&self.counters.fetched_bytes, raw);
        add(&self.counters.fetched_wire_bytes, wire_len);
        Ok(raw)
    }

    /// The disk reflects every file change up to `index` (never moves back).
    fn materialized_through(&self, index: u64) {
        self.materialized.send_if_modified(|m| {
            let newer = index > *m;
            *m = (*m).max(index);
            newer
        });
    }
}

/// Keeps one round of fetches under the folder's rate limit.
pub(super) struct Pace {
    started: Instant,
    bytes: u64,
}

impl Pace {
    pub(super) fn new() -> Self {
        Self {
            started: Instant::now(),
            bytes: 0,
        }
    }

    /// Count `bytes` more and sleep as long as it takes to stay under `limit` bytes/s.
    async fn account(&mut self, limit: Option<u64>, bytes: u64) {
        self.bytes += bytes;
        if let Some(limit) = limit {
            let due = std::time::Duration::from_secs_f64(self.bytes as f64 / limit as f64);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Why a change or a fetch could not be made on this node's disk.
#[derive(Debug)]
pub(super) enum Unmade {
    /// The disk or the staging area is full (the message says so): the mirror stops and tries
    /// again, in order, instead of skipping the change.
    NoSpace(String),
    /// Anything else, naming what it concerns.
    Failed(String),
}

impl std::fmt::Display for Unmade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unmade::NoSpace(why) | Unmade::Failed(why) => f.write_str(why),
        }
    }
}

impl From<String> for Unmade {
    fn from(why: String) -> Self {
        Unmade::Failed(why)
    }
}
/// Suffix of a new version written beside a copy that goes to quarantine.
const QUARANTINE_SWAP_SUFFIX: &str = ".tandem-swap";

fn pending_of(meta: &FileMeta, quarantine_first: bool) -> Pending {
    Pending {
        size: meta.size,
        hash: meta.hash,
        attrs: meta.attrs,
        quarantine_first,
    }
}

/// Keep pending entries in step with a committed change to their paths.
fn follow_pending(pending: &mut BTreeMap<(String, String), Pending>, change: &FileChange) {
    let under = |p: &str, root: &str| p == root || p.starts_with(&format!("{root}/"));
    let folder = &change.folder;
    match &change.op {
        // A directory keeps what is under it; a file, link or delete replaces the whole subtree.
        FileOp::Mkdir { .. } => {
            pending.remove(&(folder.clone(), change.path.clone()));
        }
        FileOp::Write { .. } | FileOp::Symlink { .. } | FileOp::Delete => {
            pending.retain(|(f, p), _| !(f == folder && under(p, &change.path)));
        }
        FileOp::SetAttrs { .. } => {}
        FileOp::Rename { to } => {
            pending.retain(|(f, p), _| !(f == folder && under(p, to)));
            let moved: Vec<_> = pending
                .keys()
                .filter(|(f, p)| f == folder && under(p, &change.path))
                .cloned()
                .collect();
            for k in moved {
                let v = pending.remove(&k).expect("listed");
                pending.insert((k.0, format!("{to}{}", &k.1[change.path.len()..])), v);
            }
        }
    }
}

/// Every entry under `root` (relative paths, parents before children), skipping ignored ones,
/// temp files and anything below a symlink.
pub(super) fn walk_folder(root: &std::path::Path, spec: &super::spec::FolderSpec) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(dir) = stack.pop() {
        let abs = if dir.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&dir)
        };
        let mut names: Vec<_> = std::fs::read_dir(&abs)?.flatten().collect();
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let Some(name) = e.file_name().to_str().map(str::to_string) else {
                tracing::warn!(dir = %abs.display(), "skipping a name that is not UTF-8");
                continue;
            };
            if name.starts_with(disk::TEMP_PREFIX) {
                continue;
            }
            let rel = if dir.is_empty() { name } else { format!("{dir}/{name}") };
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if spec.ignored(&rel, is_dir) {
                continue;
            }
            out.push(rel.clone());
            if is_dir {
                stack.push(rel);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use tandem_raft_store::records::FileAttrs;

    use super::*;

    fn pending() -> BTreeMap<(String, String), Pending> {
        let p = Pending {
            size: 1,
            hash: [1; 32],
            attrs: FileAttrs {
                mode: 0o644,
                uid: 0,
                gid: 0,
                mtime_ns: 0,
            },
            quarantine_first: false,
        };
        ["d", "d/a", "d/e/b", "d0"]
            .into_iter()
            .map(|path| (("f".to_string(), path.to_string()), p.clone()))
            .collect()
    }

    fn change(path: &str, op: FileOp) -> FileChange {
        FileChange {
            folder: "f".into(),
            path: path.into(),
            op,
        }
    }

    fn paths(p: &BTreeMap<(String, String), Pending>) -> Vec<&str> {
        p.keys().map(|(_, p)| p.as_str()).collect()
    }

    #[test]
    fn pending_entries_follow_committed_changes_to_their_paths() {
        let attrs = FileAttrs {
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime_ns: 0,
        };
        let mut p = pending();
        follow_pending(&mut p, &change("d", FileOp::Mkdir { attrs }));
        assert_eq!(
            paths(&p),
            ["d/a", "d/e/b", "d0"],
            "a directory keeps what is pending under it"
        );
        let mut p = pending();
        follow_pending(&mut p, &change("d", FileOp::Delete));
        assert_eq!(paths(&p), ["d0"], "a delete takes the subtree, not its neighbour");
        let mut p = pending();
        follow_pending(&mut p, &change("d", FileOp::Rename { to: "n".into() }));
        assert_eq!(paths(&p), ["d0", "n", "n/a", "n/e/b"]);
    }
}
