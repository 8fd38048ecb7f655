//! **After the faults stop, exactly one active within a bound** (DESIGN §4, §9).
//!
//! The bound, from the last fault healed: a data node's election (vote lease 800 ms + election
//! timeout ≤ 800 ms), the witness's hand-off if it won instead (its stand time ≤ 2.8 s plus a
//! transfer), the takeover wait (release budget + margins ≤ 2 s), an acquire (≤ 200 ms), and
//! reconnects after the partitions (RPC timeouts): [`CONVERGE_BOUND`] covers them with room.

use std::time::Duration;

use tandem_raft_store::Epoch;
use tandem_raft_store::NodeId;

use crate::world::name;
use crate::world::Observed;

pub const CONVERGE_BOUND: Duration = Duration::from_secs(15);

/// Exactly one node serves, holds the service in that epoch, and is the only ledger holder.
pub fn check(observed: &[(NodeId, Observed)], holders: &[NodeId]) -> Result<(NodeId, Epoch), String> {
    let serving: Vec<(NodeId, Epoch)> = observed.iter().filter_map(|(n, o)| Some((*n, o.serving?))).collect();
    let [(node, epoch)] = serving[..] else {
        let who: Vec<&str> = serving.iter().map(|(n, _)| name(*n)).collect();
        return Err(format!(
            "{} nodes serve {CONVERGE_BOUND:?} after the last fault healed ({who:?}); exactly one must",
            serving.len()
        ));
    };
    let held = observed.iter().find(|(n, _)| *n == node).and_then(|(_, o)| o.held);
    if held != Some(epoch) {
        return Err(format!(
            "{} serves in epoch {epoch} but holds the service in {held:?}",
            name(node)
        ));
    }
    if holders != [node] {
        let who: Vec<&str> = holders.iter().map(|n| name(*n)).collect();
        return Err(format!(
            "the service ledger shows {who:?} holding it; only {} may",
            name(node)
        ));
    }
    Ok((node, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(serving: Option<Epoch>, held: Option<Epoch>) -> Observed {
        Observed {
            serving,
            active: serving,
            held,
        }
    }

    #[test]
    fn exactly_one_serving_holder_is_required() {
        let one = [(1, obs(Some(3), Some(3))), (2, obs(None, None))];
        assert_eq!(check(&one, &[1]), Ok((1, 3)));
        assert!(check(&[(1, obs(None, None)), (2, obs(None, None))], &[]).is_err());
        assert!(check(&one, &[1, 2]).is_err(), "another ledger holder");
        assert!(
            check(&[(1, obs(Some(3), None))], &[1]).is_err(),
            "serving without the service"
        );
    }
}
