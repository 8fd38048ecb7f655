//! An in-memory log store behind the same traits as the sled store, for the simulator and
//! for tests. Cloning it shares the data, so a simulated "disk" can outlive a node process.
//!
//! It keeps two copies of the log: what the node sees (`live`) and what a flush has made
//! durable (`durable`). Like the sled store, it flushes before `save_vote` returns and before
//! an append is acknowledged (DESIGN §3). [`MemLogStore::crash`] throws away everything not
//! flushed, as a power cut would, so the simulator can prove that nothing acknowledged is lost.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::Mutex;

use openraft::storage::IOFlushed;
use openraft::storage::LogState;
use openraft::storage::RaftLogStorage;
use openraft::OptionalSend;
use openraft::RaftLogReader;

use crate::mutant;
use crate::mutant::Mutant;
use crate::types::Entry;
use crate::types::LogId;
use crate::types::TypeConfig;
use crate::types::Vote;

/// The log and its metadata, as one copy (live or durable).
#[derive(Debug, Default, Clone)]
pub struct LogCopy {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub last_purged: Option<LogId>,
    pub log: BTreeMap<u64, Entry>,
}

/// One change not yet flushed.
#[derive(Debug)]
enum Op {
    Vote(Vote),
    Committed(Option<LogId>),
    Append(Vec<Entry>),
    TruncateFrom(u64),
    Purge(LogId),
}

impl LogCopy {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Vote(v) => self.vote = Some(*v),
            Op::Committed(c) => self.committed = *c,
            Op::Append(entries) => {
                for e in entries {
                    self.log.insert(e.log_id.index, e.clone());
                }
            }
            Op::TruncateFrom(from) => {
                self.log.split_off(from);
            }
            Op::Purge(upto) => {
                self.log = self.log.split_off(&(upto.index + 1));
                self.last_purged = Some(*upto);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    live: LogCopy,
    durable: LogCopy,
    pending: Vec<Op>,
}

impl Inner {
    fn write(&mut self, op: Op) {
        self.live.apply(&op);
        self.pending.push(op);
    }

    fn flush(&mut self) {
        for op in self.pending.drain(..) {
            self.durable.apply(&op);
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct MemLogStore {
    inner: Arc<Mutex<Inner>>,
}

/// With the [`Mutant::AckBeforeFlush`] switch: how long after an acknowledged append its flush
/// happens (sled flushes by itself every 500 ms).
pub const MUTANT_FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(500);

impl MemLogStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("memory log lock poisoned")
    }

    /// Make every write so far durable.
    pub fn flush(&self) {
        self.lock().flush();
    }

    /// A power cut: every write not flushed is gone. Call it only while no node uses the store.
    pub fn crash(&self) {
        let mut inner = self.lock();
        inner.pending.clear();
        inner.live = inner.durable.clone();
    }

    /// A copy of the log as the node sees it.
    pub fn live(&self) -> LogCopy {
        self.lock().live.clone()
    }

    /// Read the live log without copying it.
    pub fn inspect<R>(&self, f: impl FnOnce(&LogCopy) -> R) -> R {
        f(&self.lock().live)
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.lock().live.log.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.lock().live.vote)
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let inner = self.lock();
        let last = inner.live.log.last_key_value().map(|(_, e)| e.log_id);
        Ok(LogState {
            last_purged_log_id: inner.live.last_purged,
            last_log_id: last.or(inner.live.last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut inner = self.lock();
        inner.write(Op::Vote(*vote));
        // DESIGN §3: the vote is durable before save_vote returns.
        if !mutant::on(Mutant::AckBeforeFlush) {
            inner.flush();
        }
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Like the sled store: written, made durable by the next flush.
        self.lock().write(Op::Committed(committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.lock().live.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.lock().write(Op::Append(entries.into_iter().collect()));
        // DESIGN §3: acknowledged only after a flush that covers these entries.
        if mutant::on(Mutant::AckBeforeFlush) {
            let store = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(MUTANT_FLUSH_DELAY).await;
                store.flush();
            });
        } else {
            self.flush();
        }
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map_or(0, |l| l.index + 1);
        let mut inner = self.lock();
        inner.write(Op::TruncateFrom(from));
        inner.flush();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let mut inner = self.lock();
        inner.write(Op::Purge(log_id));
        inner.flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::type_config::TypeConfigExt;
    use openraft::EntryPayload;

    use super::*;

    fn entry(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test]
    async fn a_crash_keeps_what_was_acknowledged_and_drops_what_was_not_flushed() {
        let mut store = MemLogStore::new();
        let (tx, rx) = TypeConfig::oneshot();
        store
            .append(vec![entry(1), entry(2)], IOFlushed::signal(tx))
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        // Written but never flushed: lost in a crash.
        store.save_committed(Some(entry(2).log_id)).await.unwrap();

        store.crash();
        let live = store.live();
        assert_eq!(live.log.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(live.vote, Some(Vote::new(3, 1)));
        assert_eq!(live.committed, None, "an unflushed write does not survive a crash");
    }
}
