//! Types of the admin HTTP API (`/v1/...`), shared by the node (server) and this client.

use serde::Deserialize;
use serde::Serialize;

/// `GET /v1/status`: one node's own view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub name: String,
    /// `data` or `witness`.
    pub kind: String,
    /// Raft state: `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub raft_state: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub initialized: bool,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    /// Last index covered by this node's current snapshot.
    pub snapshot_index: Option<u64>,
    /// Entries up to this index are gone from this node's log (covered by the snapshot).
    pub purged_index: Option<u64>,
    /// Leader only: time since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// Leader only: `lease − millis_since_quorum_ack` (DESIGN §4), 0 once expired.
    pub lease_remaining_ms: Option<u64>,
    pub activation: Option<ActivationInfo>,
    /// What this node does for the service: `active`, `standby` or `witness`.
    pub service: String,
    /// The epoch this node is active in, while it holds the lease (DESIGN §4).
    pub active_epoch: Option<u64>,
    pub policies: PoliciesInfo,
    pub test_records: u64,
    /// Digest of every applied test record, in order (hex); equal on nodes that applied the same.
    pub test_digest: String,
    pub members: Vec<MemberInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivationInfo {
    pub node: u64,
    pub epoch: u64,
    pub since_index: u64,
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub kind: String,
    pub peer_addr: String,
    pub admin_addr: String,
}

/// `POST /v1/test-records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriteTestRecord {
    pub id: u64,
    /// UTF-8 payload, at most 64 KiB (`TEST_RECORD_MAX_BYTES` of the replicated records).
    #[serde(default)]
    pub payload: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteTestRecordResult {
    pub id: u64,
    /// Log index at which the record was committed and applied.
    pub index: u64,
    /// The node that committed it.
    pub leader: u64,
}

/// `POST /v1/cluster/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InitResult {
    pub members: Vec<MemberInfo>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `not_leader`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// For `not_leader`: the leader to retry against, when known.
    pub leader: Option<LeaderHint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderHint {
    pub id: u64,
    pub admin_addr: String,
}

/// `POST /v1/switchover`, sent to the active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// Name of the data node to hand the service to; the other data node when omitted.
    #[serde(default)]
    pub to: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverResult {
    pub from: String,
    pub to: String,
    /// The epoch the old active released.
    pub released_epoch: u64,
}

/// The replicated switch policies (`GET /v1/policies`, and in every status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliciesInfo {
    pub auto_switch: bool,
    pub only_switch_when_synced: bool,
    pub maintenance: bool,
    pub auto_failback: bool,
    pub min_active_secs: u64,
    pub max_auto_switches: u32,
    pub switch_window_secs: u64,
}

/// `PUT /v1/policies`: the fields to change; the others keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    pub auto_switch: Option<bool>,
    pub only_switch_when_synced: Option<bool>,
    pub maintenance: Option<bool>,
    pub auto_failback: Option<bool>,
    pub min_active_secs: Option<u64>,
    pub max_auto_switches: Option<u32>,
    pub switch_window_secs: Option<u64>,
}

/// One operator action from the replicated audit trail (`GET /v1/audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditInfo {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, at the node that recorded it.
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}
