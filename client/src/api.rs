//! Types of the admin HTTP API (`/v1/...`), shared by the node (server) and this client.

use serde::Deserialize;
use serde::Serialize;

/// `GET /v1/status`: one node's own view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
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
    /// What this node is in the cluster: `active`, `standby`, `witness`, `detached` (not
    /// taking part: not initialized, not a voter, or out of touch) or `switching`.
    pub role: String,
    /// The cluster status as this node sees it.
    pub cluster_status: ClusterStatusInfo,
    /// Heartbeats to the other two members.
    pub links: Vec<LinkInfo>,
    /// Data nodes: whether the witness answers heartbeats.
    pub witness_contact: Option<bool>,
    /// This node's health monitors.
    pub monitors: Vec<MonitorInfo>,
    pub test_records: u64,
    /// Digest of every applied test record, in order (hex); equal on nodes that applied the same.
    pub test_digest: String,
    pub members: Vec<MemberInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ActivationInfo {
    pub node: u64,
    pub epoch: u64,
    pub since_index: u64,
    pub released: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MemberInfo {
    pub id: u64,
    pub name: String,
    pub kind: String,
    pub peer_addr: String,
    pub admin_addr: String,
    /// A voter of the effective membership, as this node sees it (all three normally; after a
    /// forced single-node recovery only the recovered node until the others rejoin).
    pub voter: bool,
}

/// `POST /v1/test-records`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WriteTestRecord {
    pub id: u64,
    /// UTF-8 payload, at most 64 KiB (`TEST_RECORD_MAX_BYTES` of the replicated records).
    #[serde(default)]
    pub payload: String,
    /// Fencing token: the active epoch the writer saw (e.g. from `/health/active`). The record
    /// carries it and is rejected when applied if a newer epoch has been activated since; an
    /// epoch above the leader's term is refused. Without it the record carries the leader's term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct WriteTestRecordResult {
    pub id: u64,
    /// Log index at which the record was committed and applied.
    pub index: u64,
    /// The node that committed it.
    pub leader: u64,
}

/// `POST /v1/cluster/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct InitResult {
    pub members: Vec<MemberInfo>,
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `not_leader`.
    pub code: String,
    /// What went wrong and what to do about it.
    pub message: String,
    /// For `not_leader`: the leader to retry against, when known.
    pub leader: Option<LeaderHint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LeaderHint {
    pub id: u64,
    pub admin_addr: String,
}

/// `POST /v1/switchover`, sent to the active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRequest {
    /// Name of the data node to hand the service to; the other data node when omitted.
    #[serde(default)]
    pub to: Option<String>,
}

/// `POST /v1/failover`, sent to the active: a switchover without the check that the target is
/// synced. Without `accept_data_loss` it only reports what the target lacks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FailoverRequest {
    /// Name of the data node to hand the service to; the other data node when omitted.
    #[serde(default)]
    pub to: Option<String>,
    /// Must be true: a forced failover is never the default.
    #[serde(default)]
    pub force: bool,
    /// Go ahead although the target lacks what the report lists.
    #[serde(default)]
    pub accept_data_loss: bool,
}

/// What a forced failover found, and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FailoverReport {
    pub from: String,
    pub to: String,
    /// Last log index committed on the active.
    pub committed_index: Option<u64>,
    /// Last log index the target is known to hold; `None` if it never acknowledged one.
    pub target_matched_index: Option<u64>,
    /// Committed records the target does not hold yet.
    pub missing_records: u64,
    /// Their size in the log, in bytes (records already folded into a snapshot not counted).
    pub missing_bytes: u64,
    /// The target is so far behind that it needs a snapshot (its records were purged here).
    pub needs_snapshot: bool,
    /// Time since the target last acknowledged the active; `None` if never.
    pub target_last_ack_ms: Option<u64>,
    /// What the target lacks in replicated files.
    pub files: String,
    /// Whether the failover was carried out.
    pub executed: bool,
    /// The epoch released, when executed.
    pub released_epoch: Option<u64>,
    /// What happened, in words.
    pub outcome: String,
}

/// `POST /v1/recover`, sent to the data node to recover: make it the only voter, when both
/// other members are gone for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RecoverRequest {
    /// Must be true.
    #[serde(default)]
    pub force_single_node: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct RecoverResult {
    pub node: String,
    /// The node restarts in place and comes back as a one-voter cluster.
    pub restarting: bool,
}

/// `POST /v1/cluster/rejoin`, sent to the leader: bring a member back after a forced recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RejoinRequest {
    pub node: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct RejoinResult {
    pub node: String,
    /// Voter names after the change.
    pub voters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SwitchoverResult {
    pub from: String,
    pub to: String,
    /// The epoch the old active released.
    pub released_epoch: u64,
}

/// The replicated switch policies (`GET /v1/policies`, and in every status).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PoliciesInfo {
    pub auto_switch: bool,
    pub only_switch_when_synced: bool,
    pub maintenance: bool,
    pub auto_failback: bool,
    pub min_active_secs: u64,
    pub max_auto_switches: u32,
    pub switch_window_secs: u64,
    /// Effective windows (`mon-fri 08:00-18:00`); empty = automatic switches at any time.
    #[serde(default)]
    pub windows: Vec<String>,
    /// The windows' times are local to this offset from UTC, in minutes.
    #[serde(default)]
    pub window_utc_offset_min: i16,
}

/// `PUT /v1/policies`: the fields to change; the others keep their value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PolicyUpdate {
    pub auto_switch: Option<bool>,
    pub only_switch_when_synced: Option<bool>,
    pub maintenance: Option<bool>,
    pub auto_failback: Option<bool>,
    pub min_active_secs: Option<u64>,
    pub max_auto_switches: Option<u32>,
    pub switch_window_secs: Option<u64>,
    /// Replaces every effective window; `[]` removes them.
    #[serde(default)]
    pub windows: Option<Vec<String>>,
    #[serde(default)]
    pub window_utc_offset_min: Option<i16>,
}

/// One operator action from the replicated audit trail (`GET /v1/audit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct AuditInfo {
    pub seq: u64,
    /// Milliseconds since the Unix epoch, at the node that recorded it.
    pub at_ms: u64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// `GET /v1/resources`: what this node holds and what its scripts did lately.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ResourcesInfo {
    pub node: String,
    pub vips: Vec<VipInfo>,
    pub scripts: Vec<ScriptInfo>,
    /// The script running right now, if any.
    pub running: Option<RunningScript>,
    /// The latest script runs, oldest first.
    pub recent: Vec<ScriptRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct VipInfo {
    pub name: String,
    /// `ADDRESS/PREFIX`.
    pub address: String,
    pub interface: String,
    /// This node holds it (it is the active and took its identity).
    pub held: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ScriptInfo {
    pub name: String,
    pub check: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct RunningScript {
    pub resource: String,
    /// `acquire`, `release` or `check`.
    pub action: String,
    pub running_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ScriptRun {
    pub resource: String,
    pub action: String,
    pub epoch: u64,
    /// Milliseconds since the Unix epoch at the start.
    pub started_at_ms: u64,
    pub duration_ms: u64,
    /// `ok`, `exit status: N`, `timed out`, `cancelled by operator`, …
    pub outcome: String,
    pub stdout: String,
    pub stderr: String,
}

/// `POST /v1/resources/cancel`: what was cancelled (nothing if no script was running).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct CancelResult {
    pub cancelled: Option<RunningScript>,
}

/// One event of a node's event log (`GET /v1/events`, `GET /v1/events/stream`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct EventInfo {
    /// Per node, increasing; restarts at 1 when the node process starts.
    pub seq: u64,
    /// Milliseconds since the Unix epoch, on the node's clock.
    pub at_ms: u64,
    /// Name of the node that recorded it.
    pub node: String,
    /// The activation epoch the node knew of at that moment.
    pub epoch: u64,
    /// `role`, `monitor`, `policy`, `resource`, `operator`, `failover` or `warning`.
    pub kind: String,
    pub detail: String,
}

/// `GET /v1/events`: the events of every reachable node, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct EventsPage {
    pub events: Vec<EventInfo>,
    /// Members whose events could not be fetched (name and why).
    pub unreachable: Vec<String>,
}

/// One health monitor's live state on one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MonitorInfo {
    pub name: String,
    /// `process`, `systemd`, `tcp`, `http`, `script`, `disk`, `memory` or `cpu`.
    pub kind: String,
    pub target: String,
    /// `active`, `standby` or `both`.
    pub scope: String,
    pub log_only: bool,
    /// `idle` (out of scope here), `unknown` (not run yet), `ok`, `failing` (fewer than
    /// `max_failures` failures in a row) or `failed`.
    pub state: String,
    /// The last result: what passed, or why it failed.
    pub last_result: Option<String>,
    pub last_run_ms: Option<u64>,
    /// How long the last run took, in microseconds.
    #[serde(default)]
    pub last_duration_us: Option<u64>,
    pub consecutive_failures: u32,
    pub max_failures: u32,
}

/// The heartbeat between this node and one other member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct LinkInfo {
    pub to: String,
    /// `up` (answered within the link timeout) or `down`.
    pub state: String,
    /// Milliseconds since the last answer; `None` if it never answered.
    pub last_ok_ms_ago: Option<u64>,
    /// Round trip of the last answer.
    pub rtt_ms: Option<u64>,
}

/// How the whole cluster stands, as one node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ClusterStatusInfo {
    /// `ready`, `warning`, `mirroring`, `not synced`, `stopped` or `unknown`.
    pub state: String,
    pub reason: String,
    /// Every condition an operator should look at, the one in `reason` first.
    pub warnings: Vec<String>,
}

/// `GET /v1/cluster`: every member's own status and the cluster status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ClusterView {
    pub cluster_status: ClusterStatusInfo,
    /// The node serving the service, if any.
    pub active: Option<String>,
    pub nodes: Vec<ClusterNode>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ClusterNode {
    pub name: String,
    pub admin_addr: String,
    pub status: Option<NodeStatus>,
    /// Why `status` is missing.
    pub error: Option<String>,
}

/// `GET /v1/files`: this node's file mirror.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FilesInfo {
    /// Every committed change is on this node's disk and nothing is pending.
    pub synced: bool,
    /// This node is the active and watches its folders.
    pub capturing: bool,
    /// Files whose committed content this node still has to fetch.
    pub pending_files: u64,
    pub pending_bytes: u64,
    /// Why applying stopped (a full disk, a folder missing here), if it did.
    pub stalled: Option<String>,
    /// A resync or initial copy under way.
    pub progress: Option<ResyncProgress>,
    /// Local changes that never committed, moved aside on rejoin.
    pub quarantined: Vec<QuarantineInfo>,
    pub folders: Vec<FolderInfo>,
    pub counters: FileCounters,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ResyncProgress {
    pub files_done: u64,
    pub files_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
    /// Bytes per second fetched since the resync began.
    pub rate_bytes_per_sec: u64,
    /// Seconds to go at that rate, once there is one.
    pub eta_secs: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct QuarantineInfo {
    pub folder: String,
    /// Path inside the folder it had.
    pub path: String,
    /// Where it is now.
    pub moved_to: String,
    pub epoch: u64,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FolderInfo {
    pub id: String,
    pub root: String,
    /// Entries and bytes in the replicated index.
    pub entries: u64,
    pub bytes: u64,
    pub ignore: Vec<String>,
}

/// Totals since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FileCounters {
    /// File change records this node proposed (as active) and applied to disk (as standby).
    pub proposed: u64,
    pub applied: u64,
    /// Chunk content pushed to the standby before proposing, and fetched from the other node:
    /// raw bytes and bytes on the wire (compressed).
    pub pushed_bytes: u64,
    pub pushed_wire_bytes: u64,
    pub fetched_bytes: u64,
    pub fetched_wire_bytes: u64,
    /// Inline content carried in records.
    pub inline_bytes: u64,
    /// Full rescans after the watch queue overflowed or a watch could not be set.
    pub rescans: u64,
}

/// `GET /v1/files/manifest?folder=ID[&after=PATH][&limit=N]`: the replicated file index of one
/// folder, in path order, a page at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct FileManifest {
    pub folder: String,
    pub entries: Vec<ManifestEntry>,
    /// Pass as `after` for the next page; `None` on the last.
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ManifestEntry {
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: String,
    pub size: u64,
    /// blake3 of the content (files) or of the target (links), hex; empty for directories.
    pub hash: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: i128,
    pub target: Option<String>,
    /// Log index of the change that last touched it.
    pub index: u64,
}

/// `GET /v1/db`: a data node's database change records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct DbInfo {
    /// The change stream's name (`[database] source`).
    pub source: String,
    /// Sequence number and GTID of the last committed transaction.
    pub committed_seq: u64,
    pub committed_gtid: Option<String>,
    /// The last sequence number this node's database is known to hold.
    pub applied_seq: u64,
    /// The server's own `@@gtid_binlog_pos`, as last read.
    pub server_gtid: Option<String>,
    /// Committed transactions this node's database lacks, and their size in bytes.
    pub lag_records: u64,
    pub lag_bytes: u64,
    /// Milliseconds since this node last applied a transaction.
    pub last_applied_ms_ago: Option<u64>,
    /// Lag 0 and not diverged.
    pub synced: bool,
    pub read_only: Option<bool>,
    /// This node is the active and its capture runs.
    pub capturing: bool,
    /// Why nothing is applied here (the server holds transactions that never committed, or
    /// this node's journal has a gap); `tandemctl db seed` mends it.
    pub diverged: Option<String>,
    /// The last error talking to the server.
    pub error: Option<String>,
    pub captured_total: u64,
    pub applied_total: u64,
    /// The last seeding of this node's database, while it runs and after.
    pub seed: Option<SeedInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SeedInfo {
    /// `running`, `done` or `failed`.
    pub state: String,
    /// The server the dump comes from.
    pub from: String,
    /// Bytes of the dump loaded, against an estimate of its size (`files_*` unused).
    pub progress: ResyncProgress,
    /// The GTID position the dump was taken at.
    pub position: Option<String>,
    pub error: Option<String>,
}

/// `POST /v1/db/seed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SeedRequest {
    /// Drop this node's databases and load the other data node's. Without it, nothing is
    /// changed and the answer says what would be.
    #[serde(default)]
    pub replace_local_data: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SeedAnswer {
    pub started: bool,
    /// What is (or would be) replaced, and by what.
    pub report: String,
}

/// One SQL statement and its parameters (`?` placeholders, in order). A parameter is JSON
/// null, a number, a string, or `{"blob": "<hex>"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct SqlStatement {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
}

/// `POST /v1/db/execute`: statements run on the active as one transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ExecuteRequest {
    pub statements: Vec<SqlStatement>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct StatementResult {
    /// Rows the statement inserted, updated or deleted.
    pub changes: u64,
    pub last_insert_rowid: i64,
    /// Rows a `RETURNING` clause gave back.
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ExecuteResult {
    /// Sequence number of the committed change (`None`: nothing changed, nothing committed).
    pub seq: Option<u64>,
    pub results: Vec<StatementResult>,
}

/// `POST /v1/db/query`: one read-only statement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct QueryRequest {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<serde_json::Value>,
    /// `lease` (default): on the active, which holds the lease, after it applied every
    /// committed change; `local`: this node's copy as it is.
    #[serde(default = "default_consistency")]
    pub consistency: String,
}

fn default_consistency() -> String {
    "lease".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<serde_json::Value>>,
    /// The last committed change this node's copy holds.
    pub applied_seq: u64,
}
