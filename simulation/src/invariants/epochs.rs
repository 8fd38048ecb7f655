//! **Epochs never decrease on any node** (DESIGN §4, "The epoch … is a fencing token").
//!
//! - a node's Raft term (its durable vote) never goes back, across crashes and restarts;
//! - the committed activation epoch a node has applied never goes back;
//! - no write is acknowledged with an epoch older than the activation committed before it in
//!   the log: apply fences records from an older epoch off.

use std::collections::BTreeMap;

use openraft::EntryPayload;
use tandem_raft_store::records::Record;
use tandem_raft_store::Entry;
use tandem_raft_store::NodeId;

use crate::world::name;
use crate::world::Ack;

#[derive(Debug, Default)]
pub struct Epochs {
    term: BTreeMap<NodeId, u64>,
    activation: BTreeMap<NodeId, u64>,
}

impl Epochs {
    pub fn term(&mut self, node: NodeId, term: u64) -> Result<(), String> {
        let last = self.term.entry(node).or_insert(term);
        if term < *last {
            return Err(format!("{}'s term went back from {last} to {term}", name(node)));
        }
        *last = term;
        Ok(())
    }

    pub fn activation(&mut self, node: NodeId, epoch: u64) -> Result<(), String> {
        let last = self.activation.entry(node).or_insert(epoch);
        if epoch < *last {
            return Err(format!(
                "{}'s committed activation went back from epoch {last} to {epoch}",
                name(node)
            ));
        }
        *last = epoch;
        Ok(())
    }
}

/// Every acknowledged write's epoch is at least the newest activation before it in `log`
/// (a committed log, in index order).
pub fn acks_are_fenced(acks: &[Ack], log: &BTreeMap<u64, Entry>) -> Vec<String> {
    let mut errors = Vec::new();
    let mut newest = 0;
    let mut acks: Vec<&Ack> = acks.iter().collect();
    acks.sort_by_key(|a| a.index);
    let mut acks = acks.into_iter().peekable();
    for (index, entry) in log {
        while let Some(a) = acks.next_if(|a| a.index <= *index) {
            if a.index == *index && a.epoch < newest {
                errors.push(format!(
                    "write {} was acknowledged at index {} with epoch {}, after epoch {newest} had been activated",
                    a.id, a.index, a.epoch
                ));
            }
        }
        if let EntryPayload::Normal(cmd) = &entry.payload {
            if let Record::Activate { epoch, .. } = cmd.record {
                newest = newest.max(epoch);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use openraft::impls::leader_id_adv::LeaderId;
    use tandem_raft_store::records::Command;
    use tandem_raft_store::records::TestRecord;
    use tandem_raft_store::LogId;

    use super::*;

    fn entry(index: u64, epoch: u64, record: Record) -> (u64, Entry) {
        let log_id = LogId::new(
            LeaderId {
                term: epoch,
                node_id: 1,
            },
            index,
        );
        (
            index,
            Entry {
                log_id,
                payload: EntryPayload::Normal(Command { epoch, record }),
            },
        )
    }

    #[test]
    fn a_term_or_activation_that_goes_back_is_a_violation() {
        let mut e = Epochs::default();
        e.term(1, 3).unwrap();
        e.term(1, 3).unwrap();
        assert!(e.term(1, 2).is_err());
        e.activation(2, 5).unwrap();
        assert!(e.activation(2, 4).is_err());
    }

    #[test]
    fn a_write_acknowledged_after_a_newer_activation_is_a_violation() {
        let test = |id| Record::Test(TestRecord { id, payload: vec![] });
        let log: BTreeMap<u64, Entry> = [
            entry(1, 2, Record::Activate { node: 1, epoch: 2 }),
            entry(2, 2, test(1)),
            entry(3, 5, Record::Activate { node: 2, epoch: 5 }),
            entry(4, 5, test(2)),
        ]
        .into_iter()
        .collect();
        let ack = |id, index, epoch| Ack {
            id,
            index,
            epoch,
            at: Duration::ZERO,
        };
        assert!(acks_are_fenced(&[ack(1, 2, 2), ack(2, 4, 5)], &log).is_empty());
        let errors = acks_are_fenced(&[ack(1, 2, 2), ack(2, 4, 2)], &log);
        assert_eq!(errors.len(), 1, "{errors:?}");
    }
}
