//! The database journal: every applied database change record, kept on a data node until its
//! database holds it.
//!
//! The state machine only counts database changes (`SmState::db_positions`); the change itself
//! must outlive the log, which may be purged once a snapshot covers it, and the node's crash.
//! So on a data node each applied [`DbChange`] is also written here, in the same sled batch as
//! the state that counts it: after a crash the journal and the state are at the same point, and
//! openraft applies the rest of the log again. The node's database applier reads the journal in
//! order and trims it once its database holds a change.
//!
//! The journal is local: not replicated, not in snapshots, not on the witness. A node that
//! catches up from a snapshot never sees the changes the snapshot covers; the applier finds the
//! gap by sequence number.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;

use serde::Deserialize;
use serde::Serialize;
use tokio::sync::watch;

use crate::records::DbChange;

/// One applied database change, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Log index of the record.
    pub index: u64,
    /// Epoch the record carried (the active that captured it).
    pub epoch: u64,
    pub change: DbChange,
}

/// Where a durable journal keeps its entries (sled in `sled_store`).
pub(crate) trait JournalBackend: Send + Sync + 'static {
    /// Remove `keys` and record `mark` (source, seq), in one batch.
    fn remove(&self, keys: &[(String, u64)], mark: (&str, u64)) -> io::Result<()>;
}

/// Shared handle to a node's journal.
#[derive(Clone, Default)]
pub struct DbJournal(Arc<Inner>);

#[derive(Default)]
struct Inner {
    enabled: AtomicBool,
    entries: Mutex<BTreeMap<(String, u64), JournalEntry>>,
    /// Per source, the highest sequence number trimmed: the database holds everything up to it.
    marks: Mutex<BTreeMap<String, u64>>,
    /// Bumped whenever entries are added.
    added: watch::Sender<u64>,
    backend: Mutex<Option<Arc<dyn JournalBackend>>>,
}

impl std::fmt::Debug for DbJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DbJournal")
            .field("enabled", &self.enabled())
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl DbJournal {
    pub(crate) fn with_backend(
        entries: BTreeMap<(String, u64), JournalEntry>,
        marks: BTreeMap<String, u64>,
        backend: Option<Arc<dyn JournalBackend>>,
    ) -> Self {
        let j = DbJournal::default();
        *j.lock() = entries;
        *j.0.marks.lock().expect("journal lock poisoned") = marks;
        *j.0.backend.lock().expect("journal lock poisoned") = backend;
        j
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, u64), JournalEntry>> {
        self.0.entries.lock().expect("journal lock poisoned")
    }

    /// Keep database changes from now on (data nodes; the witness never replays them). Must be
    /// called before Raft starts applying.
    pub fn enable(&self) {
        self.0.enabled.store(true, Ordering::Release);
    }

    pub fn enabled(&self) -> bool {
        self.0.enabled.load(Ordering::Acquire)
    }

    /// Entries the state machine applied and persisted.
    pub(crate) fn added(&self, new: Vec<JournalEntry>) {
        if new.is_empty() {
            return;
        }
        let mut entries = self.lock();
        for e in new {
            entries.insert((e.change.source.clone(), e.change.seq), e);
        }
        drop(entries);
        self.0.added.send_modify(|n| *n += 1);
    }

    /// Up to `max` entries of `source` from sequence number `from` on, in order.
    pub fn read(&self, source: &str, from: u64, max: usize) -> Vec<JournalEntry> {
        self.lock()
            .range((source.to_string(), from)..=(source.to_string(), u64::MAX))
            .take(max)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The entry of `source` with the sequence number `seq`, if the journal holds it.
    pub fn get(&self, source: &str, seq: u64) -> Option<JournalEntry> {
        self.lock().get(&(source.to_string(), seq)).cloned()
    }

    /// Bytes of the changes of `source` after sequence number `after`.
    pub fn bytes_after(&self, source: &str, after: u64) -> u64 {
        self.lock()
            .range((source.to_string(), after + 1)..=(source.to_string(), u64::MAX))
            .map(|(_, e)| e.change.events.len() as u64)
            .sum()
    }

    /// Whether an entry of `source` after sequence number `after` carries `gtid`.
    pub fn has_gtid_after(&self, source: &str, after: u64, gtid: &str) -> bool {
        self.lock()
            .range((source.to_string(), after + 1)..=(source.to_string(), u64::MAX))
            .any(|(_, e)| e.change.gtid == gtid)
    }

    /// The first sequence number of `source` the journal holds.
    pub fn first_seq(&self, source: &str) -> Option<u64> {
        self.read(source, 0, 1).first().map(|e| e.change.seq)
    }

    /// Wakes when entries were added.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.0.added.subscribe()
    }

    /// The highest sequence number of `source` trimmed so far (0: none): this node's database
    /// holds every change up to it. A journal whose first entry is further on has a gap.
    pub fn mark(&self, source: &str) -> u64 {
        self.0
            .marks
            .lock()
            .expect("journal lock poisoned")
            .get(source)
            .copied()
            .unwrap_or(0)
    }

    /// Drop the entries of `source` up to and including `through` (its database holds them),
    /// and move the mark there.
    pub fn trim(&self, source: &str, through: u64) -> io::Result<()> {
        let keys: Vec<(String, u64)> = self
            .lock()
            .range((source.to_string(), 0)..=(source.to_string(), through))
            .map(|(k, _)| k.clone())
            .collect();
        let backend = self.0.backend.lock().expect("journal lock poisoned").clone();
        if let Some(b) = backend {
            b.remove(&keys, (source, through))?;
        }
        let mut entries = self.lock();
        for k in keys {
            entries.remove(&k);
        }
        drop(entries);
        let mut marks = self.0.marks.lock().expect("journal lock poisoned");
        let m = marks.entry(source.to_string()).or_insert(0);
        *m = (*m).max(through);
        Ok(())
    }
}
