//! **After healing, the standby's applied state equals the committed state** (DESIGN §5, §9):
//! every node has applied everything the active committed, and the replicated state (the
//! activation, the test records' count and digest, the policies) is the same everywhere.

use tandem_raft_store::state::Meta;
use tandem_raft_store::NodeId;

use crate::world::name;

/// `states`: each node's applied metadata; `active`: the final active.
pub fn check(states: &[(NodeId, Meta)], active: NodeId) -> Vec<String> {
    let Some((_, reference)) = states.iter().find(|(n, _)| *n == active) else {
        return vec![format!("no state for the final active {}", name(active))];
    };
    let mut errors = Vec::new();
    for (node, meta) in states.iter().filter(|(n, _)| *n != active) {
        let fields = [
            ("last applied", meta.last_applied != reference.last_applied),
            ("activation", meta.activation != reference.activation),
            ("test records", meta.test_log != reference.test_log),
            ("policies", meta.policies != reference.policies),
        ];
        for (what, differs) in fields {
            if differs {
                errors.push(format!(
                    "{}'s {what} differs from the active {}'s after healing",
                    name(*node),
                    name(active)
                ));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_behind_the_active_is_a_violation() {
        let active = Meta::default();
        let mut behind = Meta::default();
        behind.test_log.count = 1;
        assert!(check(&[(1, active.clone()), (2, active.clone())], 1).is_empty());
        let errors = check(&[(1, active), (2, behind)], 1);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("test records"), "{errors:?}");
    }
}
