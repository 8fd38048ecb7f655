//! **The Raft safety set** (DESIGN §3; Raft's Election Safety, Log Matching and Leader
//! Completeness): one leader per term; every node that has applied index `i` applied the
//! same entry there; the leader of the newest term holds every entry known to be committed.

use std::collections::BTreeMap;

use tandem_raft_store::Entry;
use tandem_raft_store::LogId;
use tandem_raft_store::NodeId;

use crate::world::name;

#[derive(Debug, Default)]
pub struct RaftSafety {
    leaders: BTreeMap<u64, NodeId>,
    /// Entries known to be committed (applied somewhere): index → log id.
    committed: BTreeMap<u64, LogId>,
    /// Per node, the applied index already checked.
    checked: BTreeMap<NodeId, u64>,
    /// Newest term whose leader was checked for completeness.
    complete_for: u64,
}

impl RaftSafety {
    /// `node` is leader in `term`.
    pub fn leader(&mut self, term: u64, node: NodeId) -> Result<(), String> {
        match self.leaders.insert(term, node) {
            Some(other) if other != node => Err(format!(
                "two leaders in term {term}: {} and {}",
                name(other),
                name(node)
            )),
            _ => Ok(()),
        }
    }

    /// `node` has applied up to `applied`; `log` is its log.
    pub fn applied(&mut self, node: NodeId, applied: u64, log: &BTreeMap<u64, Entry>) -> Result<(), String> {
        let from = self.checked.get(&node).map_or(0, |c| c + 1);
        if from > applied {
            return Ok(());
        }
        for (index, entry) in log.range(from..=applied) {
            match self.committed.get(index) {
                Some(id) if *id != entry.log_id => {
                    return Err(format!(
                        "{} applied {} at index {index}, but {} was committed there",
                        name(node),
                        entry.log_id,
                        id
                    ))
                }
                Some(_) => {}
                None => {
                    self.committed.insert(*index, entry.log_id);
                }
            }
        }
        self.checked.insert(node, applied);
        Ok(())
    }

    /// `node` leads `term`, the newest term seen: it must hold every committed entry it has not
    /// purged. Checked once per term.
    pub fn newest_leader_log(
        &mut self,
        node: NodeId,
        term: u64,
        log: &BTreeMap<u64, Entry>,
        purged: u64,
    ) -> Result<(), String> {
        if term <= self.complete_for {
            return Ok(());
        }
        self.complete_for = term;
        self.holds_committed(node, log, purged)
    }

    /// `log` (of `node`, purged up to `purged`) holds every entry known to be committed.
    pub fn holds_committed(&self, node: NodeId, log: &BTreeMap<u64, Entry>, purged: u64) -> Result<(), String> {
        for (index, id) in self.committed.range(purged + 1..) {
            match log.get(index) {
                Some(e) if e.log_id == *id => {}
                Some(e) => {
                    return Err(format!(
                        "{} holds {} at index {index} where {id} was committed",
                        name(node),
                        e.log_id
                    ))
                }
                None => {
                    return Err(format!(
                        "{} lacks the committed entry {id} at index {index}",
                        name(node)
                    ))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::impls::leader_id_adv::LeaderId;
    use openraft::EntryPayload;

    use super::*;

    fn log(ids: &[(u64, u64)]) -> BTreeMap<u64, Entry> {
        ids.iter()
            .map(|(index, term)| {
                (
                    *index,
                    Entry {
                        log_id: LogId::new(
                            LeaderId {
                                term: *term,
                                node_id: 1,
                            },
                            *index,
                        ),
                        payload: EntryPayload::Blank,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn two_leaders_in_one_term_are_a_violation() {
        let mut r = RaftSafety::default();
        r.leader(3, 1).unwrap();
        r.leader(3, 1).unwrap();
        r.leader(4, 2).unwrap();
        assert!(r.leader(3, 2).is_err());
    }

    #[test]
    fn different_entries_applied_at_one_index_are_a_violation() {
        let mut r = RaftSafety::default();
        r.applied(1, 2, &log(&[(1, 1), (2, 1)])).unwrap();
        r.applied(2, 2, &log(&[(1, 1), (2, 1)])).unwrap();
        assert!(r.applied(3, 2, &log(&[(1, 1), (2, 2)])).is_err());
    }

    #[test]
    fn a_newest_leader_without_a_committed_entry_is_a_violation() {
        let mut r = RaftSafety::default();
        r.applied(1, 3, &log(&[(1, 1), (2, 1), (3, 2)])).unwrap();
        r.newest_leader_log(2, 3, &log(&[(1, 1), (2, 1), (3, 2), (4, 3)]), 0)
            .unwrap();
        let lost = r.newest_leader_log(3, 4, &log(&[(1, 1), (2, 1)]), 0).unwrap_err();
        assert!(lost.contains("lacks"), "{lost}");
    }
}
