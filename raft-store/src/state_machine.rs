//! The state machine store: one implementation for both the sled store and the in-memory
//! store. The in-memory variant simply has no durable backend.

use std::io;
use std::io::Cursor;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::RwLock;
use std::sync::RwLockReadGuard;

use futures_util::Stream;
use futures_util::TryStreamExt;
use openraft::storage::EntryResponder;
use openraft::storage::RaftStateMachine;
use openraft::EntryPayload;
use openraft::OptionalSend;
use openraft::RaftSnapshotBuilder;
use serde::Deserialize;
use serde::Serialize;

use crate::codec;
use crate::journal::DbJournal;
use crate::journal::JournalEntry;
use crate::records::FileChange;
use crate::records::Record;
use crate::records::Response;
use crate::state::SmState;
use crate::state::Touched;
use crate::types::LogId;
use crate::types::NodeId;
use crate::types::Snapshot;
use crate::types::SnapshotMeta;
use crate::types::StoredMembership;
use crate::types::TypeConfig;
use tokio::sync::mpsc;

/// A snapshot as kept by the store: its metadata and the encoded [`SmState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredSnapshot {
    pub meta: SnapshotMeta,
    #[serde(with = "crate::codec::bytes")]
    pub data: Vec<u8>,
}

/// Read access to the replicated state, for status and queries.
#[derive(Clone, Debug, Default)]
pub struct StateReader(Arc<RwLock<SmState>>);

impl StateReader {
    pub fn read(&self) -> RwLockReadGuard<'_, SmState> {
        // A poisoned lock means a panic during apply, which already stopped the node loudly.
        self.0.read().expect("state machine lock poisoned")
    }
}

/// Where a durable state machine keeps its data (implemented on sled in `sled_store`).
pub(crate) trait SmBackend: Send + Sync + 'static {
    /// Write what one apply call changed, and the journal entries it added, in one batch.
    fn persist(&self, state: &SmState, touched: &[Touched], journal: &[JournalEntry]) -> io::Result<()>;
    fn replace_all(&self, state: &SmState) -> io::Result<()>;
    fn save_snapshot(&self, snapshot: &StoredSnapshot) -> io::Result<()>;
}

/// Cloning shares the state: the simulator keeps one across a node's restarts, as a disk would.
#[derive(Clone)]
pub struct StateMachineStore {
    state: Arc<RwLock<SmState>>,
    current_snapshot: Arc<RwLock<Option<StoredSnapshot>>>,
    backend: Option<Arc<dyn SmBackend>>,
    file_feed: Arc<FeedSlot>,
    journal: DbJournal,
}

/// What the state machine tells the node's file mirror after each apply.
#[derive(Debug, Clone)]
pub enum FileFeed {
    /// A file change record was applied at `index`. `origin` is the active whose epoch the
    /// record carries (the node that read it from its own disk).
    Applied {
        index: u64,
        origin: Option<NodeId>,
        change: FileChange,
    },
    /// Changes were not delivered one by one (a snapshot replaced the state, or the mirror fell
    /// more than [`FILE_FEED_CAPACITY`] changes behind): compare the whole index with the disk.
    Resync,
}

/// Most applied file changes queued for the mirror before it is told to resync instead.
pub const FILE_FEED_CAPACITY: usize = 4096;

/// The feed's sending end, installed by the mirror; changes are dropped (and a resync is
/// owed) while the queue is full, so apply never waits for the disk.
#[derive(Default)]
struct FeedSlot {
    tx: Mutex<Option<mpsc::Sender<FileFeed>>>,
    overflowed: AtomicBool,
}

impl FeedSlot {
    fn send(&self, item: FileFeed) {
        let tx = self.tx.lock().expect("file feed lock poisoned");
        let Some(tx) = tx.as_ref() else { return };
        if self.overflowed.load(Ordering::Acquire) {
            return;
        }
        if tx.try_send(item).is_err() {
            self.overflowed.store(true, Ordering::Release);
        }
    }
}

/// The mirror's end of the feed.
pub struct FileFeedReceiver {
    rx: mpsc::Receiver<FileFeed>,
    slot: Arc<FeedSlot>,
}

impl FileFeedReceiver {
    /// The next change; [`FileFeed::Resync`] once the queued ones are taken after an overflow.
    pub async fn recv(&mut self) -> Option<FileFeed> {
        match self.rx.try_recv() {
            Ok(item) => return Some(item),
            Err(mpsc::error::TryRecvError::Disconnected) => return None,
            Err(mpsc::error::TryRecvError::Empty) => {}
        }
        if self.slot.overflowed.swap(false, Ordering::AcqRel) {
            return Some(FileFeed::Resync);
        }
        self.rx.recv().await
    }

    /// The next change if one is queued now (an owed resync waits for [`Self::recv`]).
    pub fn try_recv(&mut self) -> Option<FileFeed> {
        self.rx.try_recv().ok()
    }
}

impl StateMachineStore {
    /// A state machine with no durable backend (simulation, tests).
    pub fn in_memory() -> Self {
        Self::from_parts(SmState::default(), None, None, DbJournal::default())
    }

    pub(crate) fn from_parts(
        state: SmState,
        snapshot: Option<StoredSnapshot>,
        backend: Option<Arc<dyn SmBackend>>,
        journal: DbJournal,
    ) -> Self {
        Self {
            state: Arc::new(RwLock::new(state)),
            current_snapshot: Arc::new(RwLock::new(snapshot)),
            backend,
            file_feed: Arc::default(),
            journal,
        }
    }

    /// This node's database journal (see [`crate::journal`]).
    pub fn db_journal(&self) -> DbJournal {
        self.journal.clone()
    }

    /// Receive every file change applied from now on (replacing an earlier receiver).
    pub fn subscribe_files(&self) -> FileFeedReceiver {
        let (tx, rx) = mpsc::channel(FILE_FEED_CAPACITY);
        *self.file_feed.tx.lock().expect("file feed lock poisoned") = Some(tx);
        self.file_feed.overflowed.store(false, Ordering::Release);
        FileFeedReceiver {
            rx,
            slot: self.file_feed.clone(),
        }
    }

    pub fn reader(&self) -> StateReader {
        StateReader(self.state.clone())
    }

    fn clone_handle(&self) -> Self {
        Self {
            state: self.state.clone(),
            current_snapshot: self.current_snapshot.clone(),
            backend: self.backend.clone(),
            file_feed: self.file_feed.clone(),
            journal: self.journal.clone(),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (data, meta) = {
            let state = self.state.read().expect("state machine lock poisoned");
            let meta = SnapshotMeta {
                last_log_id: state.meta.last_applied,
                last_membership: state.meta.membership.clone(),
            };
            (codec::encode(&*state)?, meta)
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        if let Some(backend) = &self.backend {
            backend.save_snapshot(&stored)?;
        }
        let snapshot = Snapshot {
            meta,
            snapshot: Cursor::new(stored.data.clone()),
        };
        *self.current_snapshot.write().expect("snapshot lock poisoned") = Some(stored);
        Ok(snapshot)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let state = self.state.read().expect("state machine lock poisoned");
        Ok((state.meta.last_applied, state.meta.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + OptionalSend,
    {
        let mut touched = Vec::new();
        let mut replies = Vec::new();
        let mut files = Vec::new();
        let mut journal = Vec::new();
        let journaling = self.journal.enabled();
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut state = self.state.write().expect("state machine lock poisoned");
            let response = state.apply(&entry, &mut touched);
            if let (EntryPayload::Normal(cmd), Response::Applied { index }) = (&entry.payload, &response) {
                if let Record::File(change) = &cmd.record {
                    let origin = state
                        .meta
                        .activation
                        .as_ref()
                        .filter(|a| a.epoch == cmd.epoch)
                        .map(|a| a.node);
                    files.push(FileFeed::Applied {
                        index: *index,
                        origin,
                        change: change.clone(),
                    });
                }
                if let (Record::Db(change), true) = (&cmd.record, journaling) {
                    journal.push(JournalEntry {
                        index: *index,
                        epoch: cmd.epoch,
                        change: change.clone(),
                    });
                }
            }
            drop(state);
            replies.push((responder, response));
        }
        if let Some(backend) = &self.backend {
            let state = self.state.read().expect("state machine lock poisoned");
            backend.persist(&state, &touched, &journal)?;
        }
        self.journal.added(journal);
        for item in files {
            self.file_feed.send(item);
        }
        for (responder, response) in replies {
            if let Some(responder) = responder {
                responder.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone_handle()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Self::SnapshotData) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let new_state: SmState = codec::decode(&data)?;
        if new_state.meta.last_applied != meta.last_log_id {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot data is at {:?} but its metadata says {:?}",
                    new_state.meta.last_applied, meta.last_log_id
                ),
            ));
        }
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        if let Some(backend) = &self.backend {
            backend.replace_all(&new_state)?;
            backend.save_snapshot(&stored)?;
        }
        *self.state.write().expect("state machine lock poisoned") = new_state;
        *self.current_snapshot.write().expect("snapshot lock poisoned") = Some(stored);
        self.file_feed.send(FileFeed::Resync);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        let current = self.current_snapshot.read().expect("snapshot lock poisoned");
        Ok(current.as_ref().map(|s| Snapshot {
            meta: s.meta.clone(),
            snapshot: Cursor::new(s.data.clone()),
        }))
    }
}
