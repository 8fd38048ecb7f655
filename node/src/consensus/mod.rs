//! The Raft driver: the only module of the node that touches openraft types.
//!
//! [`Consensus`] wraps the openraft instance and offers what the rest of the node needs:
//! status, proposing records, bootstrapping, and shutdown. The peer transport (HTTP, both
//! directions) is in [`network`] and [`peer_api`]; the witness's election timer and its
//! hand-off of leadership to a data node are in [`witness`].

pub mod network;
pub mod peer_api;
pub mod witness;

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::RangeInclusive;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::ClientWriteError;
use openraft::error::InitializeError;
use openraft::error::RaftError;
use openraft::storage::RaftLogReader;
use openraft::storage::RaftLogStorage;
use openraft::Instant as _;
use openraft::ServerState;
use openraft::SnapshotPolicy;
use tandem_client::api::ActivationInfo;
use tandem_client::api::AuditInfo;
use tandem_client::api::MemberInfo;
use tandem_client::api::NodeStatus;
use tandem_client::api::PoliciesInfo;
use tandem_raft_store::mutant;
use tandem_raft_store::mutant::Mutant;
use tandem_raft_store::records::Command;
use tandem_raft_store::records::Policies;
use tandem_raft_store::records::Record;
use tandem_raft_store::records::Rejection;
use tandem_raft_store::records::Response;
use tandem_raft_store::Member;
use tandem_raft_store::MemberRole;
use tandem_raft_store::NodeId;
use tandem_raft_store::StateMachineStore;
use tandem_raft_store::StateReader;
use tandem_raft_store::TypeConfig;
use tokio::time::Instant;

use crate::config::ValidConfig;
use crate::failover::controller::RaftRole;
use crate::failover::controller::RaftView;

pub type Raft = openraft::Raft<TypeConfig, StateMachineStore>;

/// Why a proposal did not commit.
#[derive(Debug, thiserror::Error)]
pub enum ProposeError {
    #[error("this node is not the leader")]
    NotLeader { leader: Option<(NodeId, Member)> },
    #[error("the witness is leader only while it hands leadership to a data node; retry shortly")]
    WitnessLeader,
    #[error("the record was rejected: {0}")]
    Rejected(Rejection),
    #[error("raft stopped: {0}")]
    Fatal(String),
    #[error("epoch {got} has not begun (the leader's term is {term}); send the epoch /health/active reported")]
    FutureEpoch { got: u64, term: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("the witness never bootstraps the cluster; run `tandem init` on a data node")]
    OnWitness,
    #[error("the cluster is already initialized")]
    AlreadyInitialized,
    #[error("cannot initialize: {0}")]
    Other(String),
}

/// Builds the openraft configuration for this node from the validated config.
///
/// Every node, the witness included, gives openraft the data nodes' election timeouts: openraft
/// also uses `election_timeout_max` as the time a follower refuses votes after hearing from a
/// leader, and a witness that refused for 2–3× longer would delay every failover. The witness
/// instead turns automatic elections off and stands only after its own, longer silence (see
/// [`witness`] and docs/decisions/0001-witness-election-timer.md).
fn raft_config(cfg: &ValidConfig) -> anyhow::Result<openraft::Config> {
    let c = openraft::Config {
        cluster_name: cfg.cluster_name.clone(),
        heartbeat_interval: cfg.timers.heartbeat.as_millis() as u64,
        election_timeout_min: cfg.timers.election_timeout_min.as_millis() as u64,
        election_timeout_max: cfg.timers.election_timeout_max.as_millis() as u64,
        enable_elect: cfg.role() == MemberRole::Data,
        // DESIGN §3: a standby that lost contact for a moment must not depose a healthy leader.
        enable_pre_vote: Some(!mutant::on(Mutant::NoPreVote)),
        // DESIGN §3: a restarted ex-leader must win a real election.
        enable_leader_restore: Some(false),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.log.snapshot_every_entries),
        max_in_snapshot_log_to_keep: cfg.log.kept_after_snapshot,
        install_snapshot_timeout: 10_000,
        ..Default::default()
    };
    Ok(c.validate()?)
}

pub(crate) fn member(m: &crate::config::MemberConfig) -> Member {
    Member {
        name: m.name.clone(),
        role: m.role,
        peer_addr: m.peer_addr.clone(),
        admin_addr: m.admin_addr.clone(),
    }
}

/// Committed entries a standby may still be receiving and count as synced: under a steady
/// stream of writes some are always in flight.
pub const SYNC_LAG_MAX_ENTRIES: u64 = 256;

/// A standby is synced when it acknowledged within `within` and lacks at most
/// [`SYNC_LAG_MAX_ENTRIES`] of the entries committed up to `committed` (indexes; `None`: none).
fn synced(committed: Option<u64>, matched: Option<u64>, last_ack: Option<Duration>, within: Duration) -> bool {
    let count = |i: Option<u64>| i.map_or(0, |i| i + 1);
    count(committed).saturating_sub(count(matched)) <= SYNC_LAG_MAX_ENTRIES && last_ack.is_some_and(|t| t < within)
}

/// On the leader: the last index `node` holds, and how long ago it last acknowledged.
fn progress_of(m: &openraft::RaftMetrics<TypeConfig>, node: NodeId) -> (Option<u64>, Option<Duration>) {
    let matched = m
        .replication
        .as_ref()
        .and_then(|r| r.get(&node))
        .and_then(|l| l.as_ref())
        .map(|l| l.index);
    let last_ack = m
        .heartbeat
        .as_ref()
        .and_then(|h| h.get(&node))
        .and_then(|t| t.as_ref())
        .map(|t| t.elapsed());
    (matched, last_ack)
}

/// Reads the stored size of a range of log entries (those still in the log).
type LogBytes =
    Arc<dyn Fn(RangeInclusive<u64>) -> Pin<Box<dyn Future<Output = std::io::Result<u64>> + Send>> + Send + Sync>;

/// Log entries read at a time when sizing what a member lacks.
pub const LAG_SIZE_BATCH: u64 = 1024;

/// Sizes what a member lacks of the committed log: the stored size of the entries from the
/// first it lacks to the last committed. Committed entries never change, so the answer is kept
/// per member: while a member lags, each ask (every `/metrics` scrape) reads only the entries
/// committed since the last one. Entries are read [`LAG_SIZE_BATCH`] at a time, so a long lag
/// is never held in memory at once.
struct LagSizer {
    log_bytes: LogBytes,
    known: std::sync::Mutex<BTreeMap<NodeId, SizedRange>>,
}

#[derive(Debug, Clone, Copy)]
struct SizedRange {
    first: u64,
    last: u64,
    bytes: u64,
}

impl LagSizer {
    fn new(log_bytes: LogBytes) -> Self {
        Self {
            log_bytes,
            known: Default::default(),
        }
    }

    /// Stored bytes of entries `first..=last` for `node`.
    async fn size(&self, node: NodeId, first: u64, last: u64) -> std::io::Result<u64> {
        let known = self.known.lock().expect("lag sizes lock").get(&node).copied();
        let (mut from, mut bytes) = match known {
            Some(k) if k.first == first && k.last <= last => (k.last + 1, k.bytes),
            _ => (first, 0),
        };
        while from <= last {
            let to = last.min(from.saturating_add(LAG_SIZE_BATCH - 1));
            bytes += (self.log_bytes)(from..=to).await?;
            from = to + 1;
        }
        self.known
            .lock()
            .expect("lag sizes lock")
            .insert(node, SizedRange { first, last, bytes });
        Ok(bytes)
    }
}

/// A running Raft node and what the rest of the node needs from it.
#[derive(Clone)]
pub struct Consensus {
    raft: Raft,
    state: StateReader,
    cfg: Arc<ValidConfig>,
    contact: LeaderContact,
    lag_sizer: Arc<LagSizer>,
    /// From a proposal to its commit and apply here, for the proposals that committed.
    commit_latency: Arc<crate::metrics::Histogram>,
}

/// On the leader: what a node lacks of the committed log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    pub committed_index: Option<u64>,
    pub matched_index: Option<u64>,
    pub missing_records: u64,
    /// Stored size of the missing records still in the log.
    pub missing_bytes: u64,
    /// Part of what it lacks was purged here: it needs a snapshot.
    pub needs_snapshot: bool,
    pub last_ack: Option<Duration>,
}

/// Waits for changes of Raft's metrics without exposing openraft's types.
pub struct MetricsWatch(openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>);

impl MetricsWatch {
    pub async fn changed(&mut self) -> bool {
        self.0.changed().await.is_ok()
    }
}

/// When this node last heard from a leader that it accepted (an append it did not refuse for
/// a higher vote). Updated by the peer API; read by the witness's election timer.
#[derive(Clone, Debug)]
pub struct LeaderContact(Arc<std::sync::Mutex<Instant>>);

impl LeaderContact {
    fn new() -> Self {
        Self(Arc::new(std::sync::Mutex::new(Instant::now())))
    }

    pub fn touch(&self) {
        *self.0.lock().expect("leader contact lock") = Instant::now();
    }

    pub fn last(&self) -> Instant {
        *self.0.lock().expect("leader contact lock")
    }
}

impl Consensus {
    /// Start Raft on the given stores, talking to peers through `network`.
    pub async fn start<LS, C>(
        cfg: Arc<ValidConfig>,
        log: LS,
        sm: StateMachineStore,
        network: network::PeerNetwork<C>,
    ) -> anyhow::Result<Self>
    where
        C: network::PeerConnector,
        LS: RaftLogStorage<TypeConfig>,
        LS::LogReader: Send + Sync + 'static,
    {
        let state = sm.reader();
        let mut log = log;
        let reader = Arc::new(tokio::sync::Mutex::new(log.get_log_reader().await));
        let log_bytes: LogBytes = Arc::new(move |range| {
            let reader = reader.clone();
            Box::pin(async move {
                let entries = reader.lock().await.try_get_log_entries(range).await?;
                let mut bytes = 0u64;
                for e in &entries {
                    bytes += tandem_raft_store::codec::encode(e)
                        .map_err(std::io::Error::other)?
                        .len() as u64;
                }
                Ok(bytes)
            })
        });
        let raft = Raft::new(cfg.node_id, Arc::new(raft_config(&cfg)?), network, log, sm).await?;
        Ok(Self {
            raft,
            state,
            cfg,
            contact: LeaderContact::new(),
            lag_sizer: Arc::new(LagSizer::new(log_bytes)),
            commit_latency: Arc::default(),
        })
    }

    /// On the leader: what `node` lacks of the committed log (`None` when not leader).
    pub async fn lag_of(&self, node: NodeId) -> Option<Lag> {
        let m = self.raft.metrics().borrow_watched().clone();
        if m.state != ServerState::Leader {
            return None;
        }
        let committed = m.local_committed.as_ref().map(|l| l.index);
        let (matched, last_ack) = progress_of(&m, node);
        let first_missing = matched.map_or(0, |i| i + 1);
        let missing_records = committed.map_or(0, |c| (c + 1).saturating_sub(first_missing));
        let purged = m.purged.as_ref().map(|l| l.index);
        let needs_snapshot = missing_records > 0 && purged.is_some_and(|p| first_missing <= p);
        let missing_bytes = match committed {
            Some(c) if missing_records > 0 => self.lag_sizer.size(node, first_missing, c).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot read the log to size what a node lacks");
                0
            }),
            _ => 0,
        };
        Some(Lag {
            committed_index: committed,
            matched_index: matched,
            missing_records,
            missing_bytes,
            needs_snapshot,
            last_ack,
        })
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn leader_contact(&self) -> &LeaderContact {
        &self.contact
    }

    pub fn config(&self) -> &ValidConfig {
        &self.cfg
    }

    /// Bootstrap the cluster with the three voters from the config (DESIGN §3).
    pub async fn initialize(&self) -> Result<Vec<MemberInfo>, InitError> {
        if self.cfg.role() == MemberRole::Witness {
            return Err(InitError::OnWitness);
        }
        let members: BTreeMap<NodeId, Member> = self.cfg.members.iter().map(|m| (m.id, member(m))).collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(self.member_infos()),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Err(InitError::AlreadyInitialized),
            Err(e) => Err(InitError::Other(e.to_string())),
        }
    }

    /// Propose a record through the log; returns the index it was applied at.
    pub async fn propose(&self, record: Record) -> Result<u64, ProposeError> {
        self.propose_in(record, None).await
    }

    /// Propose `record` stamped with `epoch` (a writer's fencing token; `None`: this leader's
    /// term). A token above the term is refused; one older than the activation in force is
    /// rejected when the record is applied, on every node alike.
    pub async fn propose_in(&self, record: Record, epoch: Option<u64>) -> Result<u64, ProposeError> {
        let (state, term) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (m.state, m.current_term)
        };
        if state == ServerState::Leader && self.cfg.role() == MemberRole::Witness {
            return Err(ProposeError::WitnessLeader);
        }
        // Every record carries the proposer's epoch; a leader's term is never below the
        // activation epoch, so a deposed leader's late proposal is fenced off at apply.
        let epoch = match epoch {
            Some(e) if e > term => return Err(ProposeError::FutureEpoch { got: e, term }),
            Some(e) => e,
            None => term,
        };
        let cmd = Command { epoch, record };
        let started = std::time::Instant::now();
        match self.raft.client_write(cmd).await {
            Ok(resp) => match resp.data {
                Response::Applied { index } => {
                    self.commit_latency.observe(started.elapsed());
                    Ok(index)
                }
                Response::Rejected(r) => Err(ProposeError::Rejected(r)),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(ProposeError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            }),
            Err(RaftError::APIError(e)) => Err(ProposeError::Fatal(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(ProposeError::Fatal(e.to_string())),
        }
    }

    /// Propose `records`, in order, stamped with `epoch`, in one message to Raft; each one's
    /// outcome, in order (see [`Self::propose_in`]).
    pub async fn propose_many_in(
        &self,
        records: Vec<Record>,
        epoch: u64,
    ) -> Result<Vec<Result<u64, ProposeError>>, ProposeError> {
        let term = self.raft.metrics().borrow_watched().current_term;
        if epoch > term {
            return Err(ProposeError::FutureEpoch { got: epoch, term });
        }
        let cmds: Vec<Command> = records.into_iter().map(|record| Command { epoch, record }).collect();
        let n = cmds.len();
        let started = std::time::Instant::now();
        let mut stream = self
            .raft
            .client_write_many(cmds)
            .await
            .map_err(|e| ProposeError::Fatal(e.to_string()))?;
        let mut out = Vec::with_capacity(n);
        use futures_util::StreamExt as _;
        while let Some(item) = stream.next().await {
            let result = item.map_err(|e| ProposeError::Fatal(e.to_string()))?;
            out.push(match result {
                Ok(resp) => match resp.response {
                    Response::Applied { index } => {
                        self.commit_latency.observe(started.elapsed());
                        Ok(index)
                    }
                    Response::Rejected(r) => Err(ProposeError::Rejected(r)),
                },
                Err(ClientWriteError::ForwardToLeader(f)) => Err(ProposeError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node),
                }),
                Err(e) => Err(ProposeError::Fatal(e.to_string())),
            });
        }
        Ok(out)
    }

    /// Proposal-to-commit times of this node's committed proposals.
    pub fn commit_latency(&self) -> &crate::metrics::Histogram {
        &self.commit_latency
    }

    /// Raft as the failover controller sees it; times are relative to `origin`.
    pub fn raft_view(&self, origin: Instant) -> RaftView {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        RaftView {
            role: match m.state {
                ServerState::Leader => RaftRole::Leader,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Learner => RaftRole::Learner,
                ServerState::Shutdown => RaftRole::Shutdown,
            },
            term: m.current_term,
            leader: m.current_leader,
            // Reading the ack's age last makes any skew move the ack earlier: never a longer lease.
            last_quorum_ack: {
                let now = origin.elapsed();
                self.quorum_ack_age(&m).map(|age| now.saturating_sub(age))
            },
        }
    }

    /// How long ago the request a quorum last acknowledged was sent (openraft stamps the send
    /// time, which is what DESIGN §4's lease_until counts from). The only voter (after a
    /// forced recovery) is its own quorum, at every instant, while it leads.
    fn quorum_ack_age(&self, m: &openraft::RaftMetrics<TypeConfig>) -> Option<Duration> {
        let mut voters = m.membership_config.membership().voter_ids();
        let sole_voter = voters.next() == Some(self.cfg.node_id) && voters.next().is_none();
        if m.state == ServerState::Leader && sole_voter {
            return Some(Duration::ZERO);
        }
        m.last_quorum_acked.as_ref().map(|at| at.elapsed())
    }

    /// Resolves when Raft's metrics change; `false` once Raft stopped.
    pub fn metrics_watch(&self) -> MetricsWatch {
        MetricsWatch(self.raft.metrics())
    }

    /// The applied replicated state.
    pub fn state(&self) -> &StateReader {
        &self.state
    }

    /// The committed activation, from the applied state.
    pub fn activation(&self) -> Option<tandem_raft_store::state::Activation> {
        self.state.read().meta.activation.clone()
    }

    /// The replicated policies, as applied here.
    pub fn policies(&self) -> Policies {
        self.state.read().meta.policies.clone()
    }

    /// The newest `limit` entries of the replicated audit trail, oldest first.
    pub fn audit(&self, limit: usize) -> Vec<AuditInfo> {
        let state = self.state.read();
        let skip = state.audit.len().saturating_sub(limit);
        state
            .audit
            .iter()
            .skip(skip)
            .map(|(seq, a)| AuditInfo {
                seq: *seq,
                at_ms: a.at_ms,
                actor: a.actor.clone(),
                action: a.action.clone(),
                detail: a.detail.clone(),
            })
            .collect()
    }

    /// Whether this node has applied everything the leader reported as committed.
    pub fn caught_up(&self) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.current_leader.is_some()
            && m.last_applied.as_ref().map(|l| l.index) >= m.cluster_committed.as_ref().map(|l| l.index)
    }

    /// On the leader: whether `node` is reachable (acknowledged a heartbeat or replication
    /// within `within`) and holds every committed entry but at most [`SYNC_LAG_MAX_ENTRIES`]
    /// still in flight. (A hand-off completes only once the target holds the whole log.)
    pub fn in_sync(&self, node: NodeId, within: Duration) -> bool {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let committed = m.local_committed.as_ref().map(|l| l.index);
        let (matched, last_ack) = progress_of(&m, node);
        m.state == ServerState::Leader && synced(committed, matched, last_ack, within)
    }

    /// On the leader: how many committed records `node` lacks, and whether it never matched
    /// any (a first, full copy is under way). `None` when not leader.
    pub fn records_behind(&self, node: NodeId) -> Option<(u64, bool)> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader {
            return None;
        }
        let committed = m.local_committed.as_ref().map(|l| l.index);
        let (matched, _) = progress_of(&m, node);
        let missing = committed.map_or(0, |c| (c + 1).saturating_sub(matched.map_or(0, |i| i + 1)));
        Some((missing, matched.is_none() && missing > 0))
    }

    /// Whether this node is a voter of an initialized cluster.
    pub fn is_voter(&self) -> bool {
        self.voter_ids().contains(&self.cfg.node_id)
    }

    /// How long this node has been without a quorum: as leader, since the last quorum ack;
    /// otherwise since it last heard from a leader (or since start).
    pub fn quorum_silence(&self) -> Duration {
        let m = self.raft.metrics().borrow_watched().clone();
        match (m.state, self.quorum_ack_age(&m)) {
            (ServerState::Leader, Some(age)) => age,
            _ => self.contact.last().elapsed(),
        }
    }

    /// The voters of the effective membership.
    pub fn voter_ids(&self) -> Vec<NodeId> {
        let m = self.raft.metrics().borrow_watched().membership_config.clone();
        m.membership().voter_ids().collect()
    }

    /// On the leader: bring `m` back as a voter: add it as a learner (waiting until it caught
    /// up), then make the voters the current ones plus it.
    pub async fn add_voter(&self, m: &crate::config::MemberConfig) -> Result<Vec<NodeId>, String> {
        self.raft
            .add_learner(m.id, member(m), true)
            .await
            .map_err(|e| format!("adding {} as a learner failed: {e}", m.name))?;
        let mut voters: std::collections::BTreeSet<NodeId> = self.voter_ids().into_iter().collect();
        voters.insert(m.id);
        self.raft
            .change_membership(voters.clone(), false)
            .await
            .map_err(|e| format!("making {} a voter failed: {e}", m.name))?;
        Ok(voters.into_iter().collect())
    }

    /// The leader this node knows of.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// Ask Raft to hand leadership to `to`.
    pub async fn transfer_leadership(&self, to: NodeId) {
        if let Err(e) = self.raft.trigger().transfer_leader(to).await {
            tracing::error!(error = %e, "raft stopped; cannot transfer leadership");
        }
    }

    /// The leader's admin address, if known and not this node.
    pub fn leader_hint(&self) -> Option<(NodeId, String)> {
        let leader = self.raft.metrics().borrow_watched().current_leader?;
        let addr = self.cfg.members.iter().find(|m| m.id == leader)?.admin_addr.clone();
        Some((leader, addr))
    }

    fn member_infos(&self) -> Vec<MemberInfo> {
        let voters = self.voter_ids();
        self.cfg
            .members
            .iter()
            .map(|m| MemberInfo {
                id: m.id,
                name: m.name.clone(),
                kind: m.role.to_string(),
                peer_addr: m.peer_addr.clone(),
                admin_addr: m.admin_addr.clone(),
                voter: voters.contains(&m.id),
            })
            .collect()
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let me = self.cfg.me();
        let leader_only = |v: Option<u64>| if m.state == ServerState::Leader { v } else { None };
        let since_ack = leader_only(self.quorum_ack_age(&m).map(|age| age.as_millis() as u64));
        let lease_ms = self.cfg.timers.lease.as_millis() as u64;
        let initialized = m.membership_config.membership().voter_ids().next().is_some();
        let state = self.state.read();
        NodeStatus {
            node_id: me.id,
            name: me.name.clone(),
            kind: me.role.to_string(),
            raft_state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .to_string(),
            term: m.current_term,
            leader: m.current_leader,
            initialized,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index),
            purged_index: m.purged.as_ref().map(|l| l.index),
            millis_since_quorum_ack: since_ack,
            lease_remaining_ms: since_ack.map(|since| lease_ms.saturating_sub(since)),
            activation: state.meta.activation.as_ref().map(|a| ActivationInfo {
                node: a.node,
                epoch: a.epoch,
                since_index: a.since_index,
                released: a.released,
            }),
            // Filled in by the admin API from the failover controller.
            service: String::new(),
            active_epoch: None,
            policies: policies_info(&state.meta.policies),
            // Filled in by the admin API from the cluster view.
            role: String::new(),
            cluster_status: tandem_client::api::ClusterStatusInfo {
                state: "unknown".into(),
                reason: String::new(),
                warnings: Vec::new(),
            },
            links: Vec::new(),
            witness_contact: None,
            monitors: Vec::new(),
            test_records: state.meta.test_log.count,
            test_digest: format!("{:016x}", state.meta.test_log.digest),
            members: self.member_infos(),
        }
    }

    /// Stop Raft; waits for its tasks to end.
    pub async fn shutdown(&self, timeout: Duration) {
        match tokio::time::timeout(timeout, self.raft.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "raft shutdown reported an error"),
            Err(_) => tracing::warn!(?timeout, "raft did not stop in time"),
        }
    }
}

pub fn policies_info(p: &Policies) -> PoliciesInfo {
    PoliciesInfo {
        auto_switch: p.auto_switch,
        only_switch_when_synced: p.only_switch_when_synced,
        maintenance: p.maintenance,
        auto_failback: p.auto_failback,
        min_active_secs: p.min_active_secs,
        max_auto_switches: p.max_auto_switches,
        switch_window_secs: p.switch_window_secs,
        windows: p.windows.iter().map(|w| w.to_string()).collect(),
        window_utc_offset_min: p.window_utc_offset_min,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log of 10-byte entries that records the ranges read.
    fn counting_log() -> (LogBytes, Arc<std::sync::Mutex<Vec<RangeInclusive<u64>>>>) {
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = asked.clone();
        let log: LogBytes = Arc::new(move |r: RangeInclusive<u64>| {
            seen.lock().unwrap().push(r.clone());
            Box::pin(async move { Ok((r.end() - r.start() + 1) * 10) })
        });
        (log, asked)
    }

    #[tokio::test]
    async fn a_lag_is_sized_in_batches_and_then_only_for_what_was_committed_since() {
        let (log, asked) = counting_log();
        let sizer = LagSizer::new(log);
        let taken = |a: &Arc<std::sync::Mutex<Vec<RangeInclusive<u64>>>>| std::mem::take(&mut *a.lock().unwrap());

        assert_eq!(sizer.size(2, 5, 3000).await.unwrap(), 2996 * 10);
        assert_eq!(
            taken(&asked),
            [5..=1028, 1029..=2052, 2053..=3000],
            "in batches of LAG_SIZE_BATCH"
        );

        assert_eq!(sizer.size(2, 5, 3010).await.unwrap(), 3006 * 10);
        assert_eq!(taken(&asked), [3001..=3010], "only the entries committed since");

        assert_eq!(sizer.size(2, 5, 3010).await.unwrap(), 3006 * 10);
        assert!(taken(&asked).is_empty(), "nothing new: nothing read");

        // The member caught up part of it: sized again from its new first entry.
        assert_eq!(sizer.size(2, 2000, 3010).await.unwrap(), 1011 * 10);
        assert_eq!(taken(&asked), [2000..=3010]);

        // Members are kept apart.
        assert_eq!(sizer.size(3, 3010, 3010).await.unwrap(), 10);
        assert_eq!(taken(&asked), [3010..=3010]);
        assert_eq!(sizer.size(2, 2000, 3010).await.unwrap(), 1011 * 10);
        assert!(taken(&asked).is_empty());
    }

    #[test]
    fn a_standby_is_synced_when_recent_and_at_most_sync_lag_max_entries_behind() {
        let within = Duration::from_millis(400);
        let recent = Some(Duration::from_millis(50));
        assert!(synced(Some(1000), Some(1000), recent, within));
        assert!(synced(Some(1000), Some(1000 - SYNC_LAG_MAX_ENTRIES), recent, within));
        assert!(!synced(
            Some(1000),
            Some(1000 - SYNC_LAG_MAX_ENTRIES - 1),
            recent,
            within
        ));
        assert!(
            !synced(Some(1000), Some(1000), Some(within), within),
            "not heard lately"
        );
        assert!(!synced(Some(1000), Some(1000), None, within), "never heard");
        assert!(
            synced(Some(3), None, recent, within),
            "four entries missing is within the limit"
        );
        assert!(!synced(Some(SYNC_LAG_MAX_ENTRIES), None, recent, within));
    }
}
