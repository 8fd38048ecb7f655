//! **At most one node holds the service at any instant** (DESIGN §4, "Taking over"; §9).
//!
//! Two views, both must hold:
//! - the service ledger written by the recording agent: from the start of an acquire to the
//!   end of the release (or the machine going down) a node may be running the service; no
//!   node may start acquiring while another's interval is open;
//! - the client path: at most one node answers `/health/active` (serving) at any sample.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_raft_store::Epoch;
use tandem_raft_store::NodeId;

use crate::world::name;
use crate::world::LedgerEvent;
use crate::world::LedgerKind;

#[derive(Debug, Default)]
pub struct SingleActive {
    /// Open intervals: node → (acquire start, epoch).
    open: BTreeMap<NodeId, (Duration, Epoch)>,
}

impl SingleActive {
    pub fn ledger(&mut self, e: &LedgerEvent) -> Result<(), String> {
        match e.kind {
            LedgerKind::AcquireStart { epoch } => {
                let other = self.open.iter().find(|(n, _)| **n != e.node);
                if let Some((other, (since, held_epoch))) = other {
                    return Err(format!(
                        "{} started acquiring the service (epoch {epoch}) while {} had held it since {:.3}s (epoch {held_epoch}) and had not released it",
                        name(e.node),
                        name(*other),
                        since.as_secs_f64()
                    ));
                }
                self.open.insert(e.node, (e.at, epoch));
            }
            LedgerKind::ReleaseDone => {
                self.open.remove(&e.node);
            }
        }
        Ok(())
    }

    /// The nodes serving at one sample.
    pub fn serving(&self, serving: &[(NodeId, Epoch)]) -> Result<(), String> {
        if serving.len() > 1 {
            let who: Vec<String> = serving
                .iter()
                .map(|(n, e)| format!("{} (epoch {e})", name(*n)))
                .collect();
            return Err(format!("two nodes serve clients at once: {}", who.join(" and ")));
        }
        Ok(())
    }

    /// Nodes whose ledger interval is open now.
    pub fn holders(&self) -> Vec<NodeId> {
        self.open.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ms: u64, node: NodeId, kind: LedgerKind) -> LedgerEvent {
        LedgerEvent {
            at: Duration::from_millis(ms),
            node,
            kind,
        }
    }

    #[test]
    fn an_acquire_while_another_node_holds_is_a_violation() {
        let mut c = SingleActive::default();
        c.ledger(&ev(10, 1, LedgerKind::AcquireStart { epoch: 2 })).unwrap();
        let err = c.ledger(&ev(20, 2, LedgerKind::AcquireStart { epoch: 3 })).unwrap_err();
        assert!(
            err.contains("b started acquiring") && err.contains("a had held it"),
            "{err}"
        );
    }

    #[test]
    fn a_release_before_the_next_acquire_is_fine() {
        let mut c = SingleActive::default();
        c.ledger(&ev(10, 1, LedgerKind::AcquireStart { epoch: 2 })).unwrap();
        c.ledger(&ev(15, 1, LedgerKind::ReleaseDone)).unwrap();
        c.ledger(&ev(20, 2, LedgerKind::AcquireStart { epoch: 3 })).unwrap();
        // The same node acquiring again (a restart of its resources) is not a second holder.
        c.ledger(&ev(30, 2, LedgerKind::AcquireStart { epoch: 3 })).unwrap();
        assert_eq!(c.holders(), vec![2]);
    }

    #[test]
    fn two_serving_nodes_are_a_violation() {
        let c = SingleActive::default();
        c.serving(&[(1, 4)]).unwrap();
        assert!(c.serving(&[(1, 4), (2, 5)]).is_err());
    }
}
