//! The recording resource agent: the node's real [`ResourceAgent`] logic with an
//! [`ActionRunner`] that runs no process but writes the service ledger (acquire started,
//! release done) with simulated times. Actions take a seeded time; while the node is
//! stalled they make no progress (its processes are paused, DESIGN §4 "letting go"); the check
//! answers from the scripted health of the node.
//!
//! [`ResourceAgent`]: tandem_node::resources::ResourceAgent

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tandem_node::resources::agent::ActionRunner;
use tandem_raft_store::Epoch;
use tandem_raft_store::NodeId;

use crate::rng::Rng;
use crate::world::now;
use crate::world::LedgerKind;
use crate::world::Shared;

/// How long an acquire takes (ms, inclusive range).
pub const ACQUIRE_MS: (u64, u64) = (5, 200);
/// How long a release takes (ms). Well within the release budget: a release that overruns it
/// is the node's escalation path, not the takeover rule's.
pub const RELEASE_MS: (u64, u64) = (5, 450);

pub struct Recorder {
    pub node: NodeId,
    pub shared: Arc<Shared>,
    pub rng: Mutex<Rng>,
}

impl Recorder {
    fn draw(&self, (lo, hi): (u64, u64)) -> Duration {
        Duration::from_millis(self.rng.lock().expect("rng lock").range(lo, hi))
    }
}

impl ActionRunner for Recorder {
    fn run(
        &self,
        _resource: &str,
        action: &'static str,
        epoch: Epoch,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'static>> {
        let (node, shared) = (self.node, self.shared.clone());
        let mut stalled = shared.node(node).stalled.subscribe();
        let took = match action {
            "acquire" => self.draw(ACQUIRE_MS),
            "release" => self.draw(RELEASE_MS),
            _ => Duration::from_millis(1),
        };
        Box::pin(async move {
            if action == "acquire" {
                shared.ledger(now(), node, LedgerKind::AcquireStart { epoch });
            }
            tokio::time::sleep(took).await;
            // A paused node finishes nothing until it runs again.
            let _ = stalled.wait_for(|s| !*s).await;
            match action {
                "release" => {
                    shared.ledger(now(), node, LedgerKind::ReleaseDone);
                    Ok(())
                }
                "check" if !shared.node(node).healthy.load(Ordering::SeqCst) => {
                    Err("the service's health probe failed".to_string())
                }
                _ => Ok(()),
            }
        })
    }
}
