//! What the simulated hosts and the checker share: the resource ledger, each node's controls
//! (stalled, healthy) and observations, the client's acknowledged writes, and the trace.

use std::sync::atomic::AtomicBool;
use std::sync::Mutex;
use std::time::Duration;

use tandem_raft_store::Epoch;
use tandem_raft_store::NodeId;
use tokio::sync::watch;

/// Node ids: `a` and `b` hold data, `w` is the witness.
pub const NODES: [(NodeId, &str); 3] = [(1, "a"), (2, "b"), (3, "w")];
/// The data nodes.
pub const DATA_NODES: [NodeId; 2] = [1, 2];

pub fn name(id: NodeId) -> &'static str {
    NODES[(id - 1) as usize].1
}

/// One entry of the service ledger, written by the recording agent (or by a host crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerEvent {
    pub at: Duration,
    pub node: NodeId,
    pub kind: LedgerKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// The service's acquire started: from here on the node may be running it.
    AcquireStart { epoch: Epoch },
    /// The service's release finished, or the machine went down: it runs no more.
    ReleaseDone,
}

/// What the in-host observer saw of a node at its last sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// Serving: active under the lease, holding its identity (`/health/active` = 200).
    pub serving: Option<Epoch>,
    /// Active under the lease (DESIGN §4), identity or not.
    pub active: Option<Epoch>,
    /// The resources are all held, in this epoch.
    pub held: Option<Epoch>,
}

pub struct NodeShared {
    pub id: NodeId,
    /// A stalled node's effects wait (see [`crate::agent`]).
    pub stalled: watch::Sender<bool>,
    /// The service's check passes.
    pub healthy: AtomicBool,
    pub observed: Mutex<Observed>,
}

/// A write the client saw acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    pub id: u64,
    pub index: u64,
    pub epoch: Epoch,
    pub at: Duration,
}

pub struct Shared {
    pub ledger: Mutex<Vec<LedgerEvent>>,
    pub nodes: Vec<NodeShared>,
    pub acked: Mutex<Vec<Ack>>,
    pub trace: Mutex<Vec<String>>,
    /// Set before the final checks: the client writes no more, so the cluster can settle.
    pub quiet: AtomicBool,
}

impl Shared {
    pub fn new() -> Self {
        Self {
            ledger: Mutex::new(Vec::new()),
            nodes: NODES
                .iter()
                .map(|(id, _)| NodeShared {
                    id: *id,
                    stalled: watch::Sender::new(false),
                    healthy: AtomicBool::new(true),
                    observed: Mutex::new(Observed::default()),
                })
                .collect(),
            acked: Mutex::new(Vec::new()),
            trace: Mutex::new(Vec::new()),
            quiet: AtomicBool::new(false),
        }
    }

    pub fn node(&self, id: NodeId) -> &NodeShared {
        &self.nodes[(id - 1) as usize]
    }

    pub fn trace(&self, at: Duration, line: impl std::fmt::Display) {
        self.trace
            .lock()
            .expect("trace lock")
            .push(format!("{:>9.3}s {line}", at.as_secs_f64()));
    }

    pub fn ledger(&self, at: Duration, node: NodeId, kind: LedgerKind) {
        self.trace(at, format_args!("{} ledger {kind:?}", name(node)));
        self.ledger
            .lock()
            .expect("ledger lock")
            .push(LedgerEvent { at, node, kind });
    }
}

impl Default for Shared {
    fn default() -> Self {
        Self::new()
    }
}

/// Simulated time inside a host.
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}
