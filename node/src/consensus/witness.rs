//! The witness: when it stands for election, and how it hands leadership to a data node
//! (DESIGN §3).
//!
//! The witness may win an election: it can hold an entry the surviving data node lacks, and
//! without it the cluster would stall. As leader it replicates to the data nodes; as soon as
//! one of them has everything the witness has, the witness transfers leadership to it. The
//! witness never stays leader and never serves writes (see [`super::Consensus::propose`]).

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::AsyncRuntime;
use openraft::ServerState;
use rand::RngExt;
use tandem_raft_store::MemberRole;
use tandem_raft_store::NodeId;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Consensus;

/// Pick the data node to hand leadership to: the one with the most of the log, and only once
/// it holds all of it (`matched == last_log_index`), so its election cannot fail on an older
/// log. `matched` is the replication progress per node (last matching log index).
pub fn handoff_target(
    last_log_index: Option<u64>,
    matched: &BTreeMap<NodeId, Option<u64>>,
    data_nodes: &[NodeId],
) -> Option<NodeId> {
    let last = last_log_index?;
    data_nodes
        .iter()
        .filter_map(|id| Some((*id, (*matched.get(id)?)?)))
        .filter(|(_, m)| *m >= last)
        .max_by_key(|(id, m)| (*m, std::cmp::Reverse(*id)))
        .map(|(id, _)| id)
}

/// Runs on the witness until `shutdown` flips to true.
///
/// Two duties:
/// - **standing**: openraft's automatic elections are off on the witness; it asks for an
///   election (with pre-vote) only after hearing from no leader for openraft's vote lease
///   (`election_timeout_max`) plus a random time in
///   `[factor × election_timeout_min, factor × election_timeout_max]`. A data node stands after
///   the same vote lease plus 1× (openraft refuses to stand while its vote lease runs), so it
///   wins whenever it can;
/// - **hand-off**: as leader, it transfers leadership to the first data node holding its
///   whole log.
pub async fn run(consensus: Consensus, mut shutdown: watch::Receiver<bool>) {
    let raft = consensus.raft().clone();
    let cfg = consensus.config();
    let contact = consensus.leader_contact().clone();
    let data_nodes: Vec<NodeId> = cfg
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Data)
        .map(|m| m.id)
        .collect();
    let (stand_min, stand_max) = cfg.timers.election_timeouts_for(MemberRole::Witness);
    let vote_lease = cfg.timers.election_timeout_max;
    // openraft's seeded randomness (see [`tandem_raft_store::with_seed`]): reproducible in the
    // simulator.
    let draw = || vote_lease + tandem_raft_store::Runtime::thread_rng().random_range(stand_min..=stand_max);
    // A transfer or an election takes up to one data-node election timeout to settle.
    let retry_after = cfg.timers.election_timeout_max;
    let mut stand_after = draw();
    // Elections and transfers are paced apart: winning an election must not delay the hand-off.
    let mut last_election: Option<Instant> = None;
    let mut last_transfer: Option<Instant> = None;
    let mut metrics = raft.metrics();
    loop {
        let m = metrics.borrow_and_update().clone();
        let recent = |at: Option<Instant>| at.is_some_and(|at| at.elapsed() < retry_after);
        let initialized = m.membership_config.membership().voter_ids().next().is_some();
        match m.state {
            ServerState::Leader => {
                let matched: BTreeMap<NodeId, Option<u64>> = m
                    .replication
                    .iter()
                    .flatten()
                    .map(|(id, l)| (*id, l.as_ref().map(|l| l.index)))
                    .collect();
                match handoff_target(m.last_log_index, &matched, &data_nodes) {
                    Some(target) if !recent(last_transfer) => {
                        tracing::info!(
                            term = m.current_term,
                            target,
                            "witness is leader; handing leadership to the up-to-date data node"
                        );
                        if raft.trigger().transfer_leader(target).await.is_err() {
                            return;
                        }
                        last_transfer = Some(Instant::now());
                    }
                    Some(_) => {}
                    None => tracing::debug!(
                        term = m.current_term,
                        "witness is leader; waiting for a data node to catch up"
                    ),
                }
            }
            ServerState::Follower | ServerState::Candidate if initialized && !recent(last_election) => {
                let silent_for = contact.last().elapsed();
                if silent_for >= stand_after {
                    tracing::info!(
                        term = m.current_term,
                        silent_ms = silent_for.as_millis() as u64,
                        "no leader heard; witness stands for election"
                    );
                    if raft.trigger().elect(true).await.is_err() {
                        return;
                    }
                    last_election = Some(Instant::now());
                    stand_after = draw();
                }
            }
            _ => {}
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_off_only_to_a_caught_up_data_node() {
        let matched = BTreeMap::from([(1, Some(10)), (2, Some(12))]);
        assert_eq!(handoff_target(Some(12), &matched, &[1, 2]), Some(2));
        // Nobody holds index 13 yet: wait.
        assert_eq!(handoff_target(Some(13), &matched, &[1, 2]), None);
        // Node 2 is not a data node (e.g. a witness entry); only node 1 counts.
        assert_eq!(handoff_target(Some(10), &matched, &[1]), Some(1));
        // Unknown progress never qualifies.
        let unknown = BTreeMap::from([(1, None), (2, None)]);
        assert_eq!(handoff_target(Some(0), &unknown, &[1, 2]), None);
    }

    #[test]
    fn ties_go_to_the_lower_id() {
        let matched = BTreeMap::from([(1, Some(7)), (2, Some(7))]);
        assert_eq!(handoff_target(Some(7), &matched, &[1, 2]), Some(1));
    }
}
