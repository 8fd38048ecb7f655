//! The durable store on sled 0.34.
//!
//! One sled database per node, with three trees:
//! - `log`: log index (big-endian u64) → encoded entry;
//! - `raft`: `vote`, `committed`, `last_purged`;
//! - `sm`: the state machine, key by key (`m` meta, `f<folder>\0<path>`, `d<source>`,
//!   `a<seq>`), plus `s` for the current snapshot and, on data nodes, the database journal
//!   (`j<source>\0<seq>`, and `J<source>` for how far it was trimmed; see [`crate::journal`]),
//!   which a snapshot install keeps.
//!
//! Durability: `save_vote` returns only after a flush, and an append's completion callback is
//! called only after a flush that covers it. Appends are flushed by one flusher thread that
//! takes every append waiting at that moment, so concurrent appends share one fsync (group
//! commit) and completions are reported in order. The state machine is not flushed on apply:
//! its keys are written in one atomic batch per apply call, so after a crash it is at some
//! earlier consistent point and openraft re-applies the log from there.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::Bound;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;

use openraft::entry::RaftEntry as _;
use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::vote::RaftLeaderId;
use openraft::OptionalSend;
use openraft::RaftLogReader;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec;
use crate::journal::DbJournal;
use crate::journal::JournalBackend;
use crate::journal::JournalEntry;
use crate::mutant;
use crate::mutant::Mutant;
use crate::state::Meta;
use crate::state::SmState;
use crate::state::Touched;
use crate::state_machine::SmBackend;
use crate::state_machine::StateMachineStore;
use crate::state_machine::StoredSnapshot;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::Member;
use crate::types::NodeId;
use crate::types::TypeConfig;
use crate::types::Vote;

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_SM_META: &[u8] = b"m";
const KEY_SNAPSHOT: &[u8] = b"s";

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open the store at {path}: {source}")]
    Sled { path: String, source: sled::Error },
    #[error("the store at {path} holds data this build cannot read ({what}): {source}")]
    Corrupt {
        path: String,
        what: String,
        source: io::Error,
    },
    #[error("cannot start the log flusher thread: {0}")]
    Thread(io::Error),
}

fn sled_err(e: sled::Error) -> io::Error {
    io::Error::other(e)
}

fn get<T: DeserializeOwned>(tree: &sled::Tree, key: &[u8]) -> io::Result<Option<T>> {
    match tree.get(key).map_err(sled_err)? {
        None => Ok(None),
        Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
    }
}

fn put<T: Serialize>(tree: &sled::Tree, key: &[u8], value: &T) -> io::Result<()> {
    tree.insert(key, codec::encode(value)?).map_err(sled_err)?;
    Ok(())
}

/// Open (or create) the store in `dir`, returning the log store and the state machine.
pub fn open(dir: &Path) -> Result<(SledLogStore, StateMachineStore), OpenError> {
    let path = dir.display().to_string();
    let db = sled::Config::new().path(dir).open().map_err(|source| OpenError::Sled {
        path: path.clone(),
        source,
    })?;
    let open_tree = |name: &str| {
        db.open_tree(name).map_err(|source| OpenError::Sled {
            path: path.clone(),
            source,
        })
    };
    let log = open_tree("log")?;
    let raft = open_tree("raft")?;
    let sm = open_tree("sm")?;

    let corrupt = |what: &str| {
        let path = path.clone();
        let what = what.to_string();
        move |source| OpenError::Corrupt { path, what, source }
    };
    let state = load_state(&sm).map_err(corrupt("state machine"))?;
    let snapshot: Option<StoredSnapshot> = get(&sm, KEY_SNAPSHOT).map_err(corrupt("snapshot"))?;
    let (journal, marks) = load_journal(&sm).map_err(corrupt("database journal"))?;
    let backend = Arc::new(SledSm { db: db.clone(), sm });
    let journal = DbJournal::with_backend(journal, marks, Some(backend.clone()));
    let sm_store = StateMachineStore::from_parts(state, snapshot, Some(backend), journal);

    let (flush_tx, flush_rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
    let flusher_db = db.clone();
    std::thread::Builder::new()
        .name("tandem-log-flush".into())
        .spawn(move || flusher(flusher_db, flush_rx))
        .map_err(OpenError::Thread)?;
    let log_store = SledLogStore {
        db,
        log,
        raft,
        flush_tx,
    };
    Ok((log_store, sm_store))
}

/// Group commit: wait for one append, take every other append already waiting, flush once,
/// then report completion in order. Exits when every store handle is dropped.
fn flusher(db: sled::Db, rx: mpsc::Receiver<IOFlushed<TypeConfig>>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = db.flush().map(|_| ());
        for callback in batch {
            callback.io_completed(result.as_ref().map(|_| ()).map_err(|e| io::Error::other(e.to_string())));
        }
    }
}

fn load_state(sm: &sled::Tree) -> io::Result<SmState> {
    let mut state = SmState::default();
    if let Some(meta) = get::<Meta>(sm, KEY_SM_META)? {
        state.meta = meta;
    }
    for item in sm.iter() {
        let (key, value) = item.map_err(sled_err)?;
        match key.first() {
            Some(b'f') => {
                let (folder, path) = split_file_key(&key[1..])?;
                state.files.insert((folder, path), codec::decode(&value)?);
            }
            Some(b'd') => {
                let source =
                    String::from_utf8(key[1..].to_vec()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                state.db_positions.insert(source, codec::decode(&value)?);
            }
            Some(b'a') => {
                let seq = u64::from_be_bytes(
                    key[1..]
                        .try_into()
                        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad audit key"))?,
                );
                state.audit.insert(seq, codec::decode(&value)?);
            }
            _ => {}
        }
    }
    Ok(state)
}

type Journal = (BTreeMap<(String, u64), JournalEntry>, BTreeMap<String, u64>);

fn load_journal(sm: &sled::Tree) -> io::Result<Journal> {
    let mut entries = BTreeMap::new();
    for item in sm.scan_prefix(b"j") {
        let (_, value) = item.map_err(sled_err)?;
        let e: JournalEntry = codec::decode(&value)?;
        entries.insert((e.change.source.clone(), e.change.seq), e);
    }
    let mut marks = BTreeMap::new();
    for item in sm.scan_prefix(b"J") {
        let (key, value) = item.map_err(sled_err)?;
        let source = String::from_utf8(key[1..].to_vec()).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        marks.insert(source, codec::decode(&value)?);
    }
    Ok((entries, marks))
}

fn journal_mark_key(source: &str) -> Vec<u8> {
    let mut k = vec![b'J'];
    k.extend_from_slice(source.as_bytes());
    k
}

fn journal_key(source: &str, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(10 + source.len());
    k.push(b'j');
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

fn file_key(folder: &str, path: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + folder.len() + path.len());
    k.push(b'f');
    k.extend_from_slice(folder.as_bytes());
    k.push(0);
    k.extend_from_slice(path.as_bytes());
    k
}

fn split_file_key(k: &[u8]) -> io::Result<(String, String)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad file index key");
    let nul = k.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let folder = String::from_utf8(k[..nul].to_vec()).map_err(|_| bad())?;
    let path = String::from_utf8(k[nul + 1..].to_vec()).map_err(|_| bad())?;
    Ok((folder, path))
}

fn db_key(source: &str) -> Vec<u8> {
    let mut k = vec![b'd'];
    k.extend_from_slice(source.as_bytes());
    k
}

fn audit_key(seq: u64) -> Vec<u8> {
    let mut k = vec![b'a'];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

struct SledSm {
    db: sled::Db,
    sm: sled::Tree,
}

impl SledSm {
    fn put_touched(&self, batch: &mut sled::Batch, state: &SmState, touched: &Touched) -> io::Result<()> {
        match touched {
            Touched::File((folder, path)) => {
                let key = file_key(folder, path);
                match state.files.get(&(folder.clone(), path.clone())) {
                    Some(meta) => batch.insert(key, codec::encode(meta)?),
                    None => batch.remove(key),
                }
            }
            Touched::Db(source) => match state.db_positions.get(source) {
                Some(pos) => batch.insert(db_key(source), codec::encode(pos)?),
                None => batch.remove(db_key(source)),
            },
            Touched::Audit(seq) => match state.audit.get(seq) {
                Some(a) => batch.insert(audit_key(*seq), codec::encode(a)?),
                None => batch.remove(audit_key(*seq)),
            },
        }
        Ok(())
    }
}

impl SmBackend for SledSm {
    fn persist(&self, state: &SmState, touched: &[Touched], journal: &[JournalEntry]) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for t in touched {
            self.put_touched(&mut batch, state, t)?;
        }
        for e in journal {
            batch.insert(journal_key(&e.change.source, e.change.seq), codec::encode(e)?);
        }
        batch.insert(KEY_SM_META, codec::encode(&state.meta)?);
        self.sm.apply_batch(batch).map_err(sled_err)
    }

    fn replace_all(&self, state: &SmState) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for key in self.sm.iter().keys() {
            let key = key.map_err(sled_err)?;
            // The snapshot and the journal are this node's own, not part of the state.
            if key.as_ref() != KEY_SNAPSHOT && !matches!(key.first(), Some(b'j' | b'J')) {
                batch.remove(key);
            }
        }
        for (folder, path) in state.files.keys() {
            self.put_touched(&mut batch, state, &Touched::File((folder.clone(), path.clone())))?;
        }
        for source in state.db_positions.keys() {
            self.put_touched(&mut batch, state, &Touched::Db(source.clone()))?;
        }
        for seq in state.audit.keys() {
            self.put_touched(&mut batch, state, &Touched::Audit(*seq))?;
        }
        batch.insert(KEY_SM_META, codec::encode(&state.meta)?);
        self.sm.apply_batch(batch).map_err(sled_err)?;
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }

    fn save_snapshot(&self, snapshot: &StoredSnapshot) -> io::Result<()> {
        put(&self.sm, KEY_SNAPSHOT, snapshot)?;
        // The log may be purged up to this snapshot, so it must be on disk first.
        self.db.flush().map_err(sled_err)?;
        Ok(())
    }
}

impl JournalBackend for SledSm {
    fn remove(&self, keys: &[(String, u64)], (source, through): (&str, u64)) -> io::Result<()> {
        let mut batch = sled::Batch::default();
        for (source, seq) in keys {
            batch.remove(journal_key(source, *seq));
        }
        let mark: u64 = get(&self.sm, &journal_mark_key(source))?.unwrap_or(0);
        batch.insert(journal_mark_key(source), codec::encode(&mark.max(through))?);
        // Not flushed: an entry that comes back after a crash is one the database holds
        // already, which the applier recognizes.
        self.sm.apply_batch(batch).map_err(sled_err)
    }
}

/// The Raft log and vote on sled.
#[derive(Clone)]
pub struct SledLogStore {
    db: sled::Db,
    log: sled::Tree,
    raft: sled::Tree,
    flush_tx: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl Debug for SledLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledLogStore").finish_non_exhaustive()
    }
}

/// What a forced single-voter recovery wrote (see [`SledLogStore::force_single_voter`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedMembership {
    /// The term of the new membership entry and of the vote.
    pub term: u64,
    /// The log index of the new membership entry.
    pub index: u64,
    /// The voters before the recovery, by id.
    pub previous_voters: Vec<NodeId>,
}

impl SledLogStore {
    /// Offline recovery when quorum is gone for good: append a membership entry that makes
    /// `me` the only voter, in a term above every term this store has seen, and vote for `me`
    /// in it. Started on this store, Raft then elects `me` alone and commits the log it holds.
    /// Must run while no Raft instance uses the store. Flushed before it returns.
    pub fn force_single_voter(&self, me: NodeId, member: Member) -> io::Result<ForcedMembership> {
        let vote: Option<Vote> = get(&self.raft, KEY_VOTE)?;
        let last_purged: Option<LogId> = get(&self.raft, KEY_LAST_PURGED)?;
        let last = self.last_entry()?;
        let last_log = last.as_ref().map(|e| e.log_id).or(last_purged);
        let previous_voters = self.last_voters()?;
        let seen_term = vote
            .as_ref()
            .map(|v| v.leader_id().term())
            .max(last_log.as_ref().map(|l| l.committed_leader_id().term()))
            .unwrap_or(0);
        let term = seen_term + 1;
        let index = last_log.map_or(0, |l| l.index() + 1);
        let leader = openraft::vote::leader_id_adv::LeaderId::new(term, me);
        let membership = openraft::Membership::new(
            vec![std::collections::BTreeSet::from([me])],
            std::collections::BTreeMap::from([(me, member)]),
        )
        .map_err(io::Error::other)?;
        let entry = Entry::new(
            LogId::new(leader, index),
            openraft::EntryPayload::Membership(membership),
        );
        put(&self.log, &index.to_be_bytes(), &entry)?;
        put(&self.raft, KEY_VOTE, &Vote::new_committed(term, me))?;
        self.db.flush().map_err(sled_err)?;
        Ok(ForcedMembership {
            term,
            index,
            previous_voters,
        })
    }

    /// Voters of the newest membership entry in the log (empty if none is left in it).
    fn last_voters(&self) -> io::Result<Vec<NodeId>> {
        for item in self.log.iter().rev() {
            let (_, v) = item.map_err(sled_err)?;
            let entry: Entry = codec::decode(&v)?;
            if let openraft::EntryPayload::Membership(m) = &entry.payload {
                return Ok(m.voter_ids().collect());
            }
        }
        Ok(Vec::new())
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        match self.log.last().map_err(sled_err)? {
            None => Ok(None),
            Some((_, v)) => Ok(Some(codec::decode(&v)?)),
        }
    }
}

impl RaftLogReader<TypeConfig> for SledLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let mut out = Vec::new();
        for item in self.log.range(start.to_be_bytes()..) {
            let (k, v) = item.map_err(sled_err)?;
            let index = u64::from_be_bytes(
                k.as_ref()
                    .try_into()
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad log key"))?,
            );
            if !range.contains(&index) {
                break;
            }
            let entry: Entry = codec::decode(&v)?;
            if entry.log_id.index != index {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry under key {index} says it is {}", entry.log_id.index),
                ));
            }
            out.push(entry);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        get(&self.raft, KEY_VOTE)
    }
}

impl RaftLogStorage<TypeConfig> for SledLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = get(&self.raft, KEY_LAST_PURGED)?;
        let last = self.last_entry()?.map(|e| e.log_id);
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        put(&self.raft, KEY_VOTE, vote)?;
        // DESIGN §3: the vote is on disk before save_vote returns.
        if mutant::on(Mutant::AckBeforeFlush) {
            return Ok(());
        }
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush().map_err(sled_err))
            .await
            .map_err(io::Error::other)??;
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        match committed {
            Some(c) => put(&self.raft, KEY_COMMITTED, &c),
            None => self.raft.remove(KEY_COMMITTED).map(|_| ()).map_err(sled_err),
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        get(&self.raft, KEY_COMMITTED)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            batch.insert(&entry.log_id.index.to_be_bytes(), codec::encode(&entry)?);
        }
        self.log.apply_batch(batch).map_err(sled_err)?;
        // DESIGN §3: acknowledged only after a flush that covers these entries.
        if mutant::on(Mutant::AckBeforeFlush) {
            callback.io_completed(Ok(()));
            return Ok(());
        }
        self.flush_tx
            .send(callback)
            .map_err(|_| io::Error::other("log flusher thread has stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index + 1);
        let mut batch = sled::Batch::default();
        for key in self.log.range(from.to_be_bytes()..).keys() {
            batch.remove(key.map_err(sled_err)?);
        }
        self.log.apply_batch(batch).map_err(sled_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Record the purge point first: entries at or before it are ignored on restart anyway.
        put(&self.raft, KEY_LAST_PURGED, &log_id)?;
        let mut batch = sled::Batch::default();
        for key in self.log.range(..=log_id.index.to_be_bytes()).keys() {
            batch.remove(key.map_err(sled_err)?);
        }
        self.log.apply_batch(batch).map_err(sled_err)
    }
}
