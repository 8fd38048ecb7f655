//! **Every write the client saw acknowledged is on the final active** (DESIGN §5: the standby
//! holds every committed change when it takes over; §9).

use std::collections::BTreeMap;

use openraft::EntryPayload;
use tandem_raft_store::records::Record;
use tandem_raft_store::Entry;

use crate::world::Ack;

/// Check the final active's `log` (purged up to `purged`) against the acknowledgements.
pub fn check(acks: &[Ack], log: &BTreeMap<u64, Entry>, purged: u64) -> Vec<String> {
    let mut errors = Vec::new();
    for a in acks.iter().filter(|a| a.index > purged) {
        let found = log.get(&a.index).and_then(|e| match &e.payload {
            EntryPayload::Normal(cmd) => match &cmd.record {
                Record::Test(t) => Some(t.id),
                _ => None,
            },
            _ => None,
        });
        if found != Some(a.id) {
            errors.push(format!(
                "write {} acknowledged at index {} ({:.3}s) is not on the final active (found {found:?} there)",
                a.id,
                a.index,
                a.at.as_secs_f64()
            ));
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

    #[test]
    fn an_acknowledged_write_missing_from_the_final_log_is_a_violation() {
        let log: BTreeMap<u64, Entry> = [(
            1,
            Entry {
                log_id: LogId::new(LeaderId { term: 1, node_id: 1 }, 1),
                payload: EntryPayload::Normal(Command {
                    epoch: 1,
                    record: Record::Test(TestRecord { id: 7, payload: vec![] }),
                }),
            },
        )]
        .into_iter()
        .collect();
        let ack = |id, index| Ack {
            id,
            index,
            epoch: 1,
            at: Duration::ZERO,
        };
        assert!(check(&[ack(7, 1)], &log, 0).is_empty());
        assert_eq!(check(&[ack(7, 1), ack(8, 2)], &log, 0).len(), 1);
        assert_eq!(check(&[ack(9, 1)], &log, 0).len(), 1, "another write at the index");
    }
}
