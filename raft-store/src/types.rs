//! The openraft type configuration shared by every Tandem node.

use std::fmt;

use serde::Deserialize;
use serde::Serialize;

use crate::records::Command;
use crate::records::Response;

/// A node's id in the Raft group. Replacing a machine means a new id (DESIGN §3).
pub type NodeId = u64;

/// The fencing token: the Raft term in which a node was activated (DESIGN §4).
pub type Epoch = u64;

openraft::declare_raft_types!(
    /// Tandem's Raft types: records are [`Command`]s, nodes are [`Member`]s.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = NodeId,
        Node = Member,
        AsyncRuntime = Runtime,
);

/// Tokio, with openraft's election-timer randomness drawn from a seed: every node runs inside
/// [`with_seed`], so the simulator can make a whole run reproducible and a real node draws its
/// seed from the OS.
pub type Runtime = openraft::rt::deterministic_rng::DeterministicRng<openraft_rt_tokio::TokioRuntime>;

/// Run `fut` with openraft's randomness seeded by `seed` (tasks it spawns through openraft
/// derive their own seeds from it). Raft must be created inside such a scope.
pub fn with_seed<F: std::future::Future>(seed: u64, fut: F) -> impl std::future::Future<Output = F::Output> {
    Runtime::scope(seed, fut)
}

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, std::io::Cursor<Vec<u8>>>;

/// What kind of machine a member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Holds the data and may run the service.
    #[default]
    Data,
    /// A light voter: keeps the metadata log, never the service or file contents.
    Witness,
}

impl fmt::Display for MemberRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemberRole::Data => "data",
            MemberRole::Witness => "witness",
        })
    }
}

/// A voter as recorded in the replicated membership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Member {
    pub name: String,
    pub role: MemberRole,
    /// `host:port` of the peer (Raft) port.
    pub peer_addr: String,
    /// `host:port` of the admin API.
    pub admin_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({}, peer {})", self.name, self.role, self.peer_addr)
    }
}
