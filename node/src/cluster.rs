//! What each node knows of the others, and the status model shown to operators (DESIGN §6).
//!
//! Every [`HEARTBEAT_INTERVAL`] each node sends a [`Summary`] of itself to both other members
//! over the peer port and gets theirs back. That gives every node the state of each link
//! (answered within [`LINK_TIMEOUT`] or not), the others' roles and monitor states (the active
//! needs the standby's for scope `both`), and the others' view of their links, from which the
//! cluster status is worked out ([`cluster_status`]). Heartbeats carry no authority: who is
//! active is decided by Raft and the lease alone (DESIGN §4).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;
use serde::Serialize;
use tandem_client::api::ClusterStatusInfo;
use tandem_client::api::LinkInfo;
use tandem_client::api::MonitorInfo;
use tandem_raft_store::codec;
use tandem_raft_store::MemberRole;
use tandem_raft_store::NodeId;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::ValidConfig;
use crate::consensus::network::PeerConnector;
use crate::consensus::network::PeerNetwork;
use crate::consensus::Consensus;
use crate::events::EventLog;
use crate::events::Kind;
use crate::failover::driver::Failover;
use crate::monitor::Monitors;
use crate::monitor::Standing;

/// How often a node sends its summary to each other member.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);
/// A link is down when the other side has not answered for this long.
pub const LINK_TIMEOUT: Duration = Duration::from_millis(2000);
/// How often this node's own role is looked at.
pub const ROLE_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// A node's role as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Active,
    Standby,
    Witness,
    /// Not taking part: not initialized, not a voter, or out of touch with a quorum.
    Detached,
    /// Between roles: a switchover, a takeover wait, resources being acquired or released.
    Switching,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Witness => "witness",
            Role::Detached => "detached",
            Role::Switching => "switching",
        }
    }
}

/// What a node tells the others in every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub node: NodeId,
    pub role: Role,
    pub monitors: Vec<MonitorInfo>,
    /// The sender's links: (member, up).
    pub links: Vec<(NodeId, bool)>,
    /// The active only: what keeps a failing active from switching, if anything.
    pub warning: Option<String>,
    /// The active only: the standby's replication (records behind, never matched any).
    pub standby_behind: Option<(u64, bool)>,
    /// The active only: whether the standby counts as synced for a switchover.
    pub standby_synced: Option<bool>,
    /// The sender's file mirror, if it has sync folders.
    pub files: Option<FilesBrief>,
    /// The sender's database replication, if it has a `[database]`.
    pub db: Option<DbBrief>,
}

/// A data node's database replication in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbBrief {
    /// Lag 0 and not diverged.
    pub synced: bool,
    pub lag_records: u64,
    pub diverged: Option<String>,
}

/// What reports this node's database replication for heartbeats.
pub type DbBriefSource = Arc<dyn Fn() -> DbBrief + Send + Sync>;

/// A data node's file mirror in a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesBrief {
    pub synced: bool,
    /// The sender is the active and has watched and scanned its folders.
    pub capturing: bool,
    pub pending_files: u64,
    pub pending_bytes: u64,
    pub stalled: Option<String>,
}

struct Peer {
    summary: Option<Summary>,
    /// When it last answered a heartbeat or sent one.
    last_ok: Option<Instant>,
    rtt: Option<Duration>,
}

/// This node's view of the cluster, shared by the heartbeat, the switch decider and the API.
pub struct ClusterState {
    cfg: Arc<ValidConfig>,
    consensus: Consensus,
    failover: Failover,
    pub monitors: Arc<Monitors>,
    pub events: Arc<EventLog>,
    peers: Mutex<BTreeMap<NodeId, Peer>>,
    /// Set by the switch decider while a failure is kept from being acted on.
    warning: Mutex<Option<String>>,
    role: Mutex<Role>,
    files: std::sync::OnceLock<Arc<crate::files::FileSync>>,
    /// Members whose latest heartbeat says their file mirror is not synced.
    files_unsynced: Mutex<std::collections::BTreeSet<NodeId>>,
    db: std::sync::OnceLock<DbBriefSource>,
    /// Members whose latest heartbeat says their database is not synced.
    db_unsynced: Mutex<std::collections::BTreeSet<NodeId>>,
}

impl ClusterState {
    pub fn new(
        cfg: Arc<ValidConfig>,
        consensus: Consensus,
        failover: Failover,
        monitors: Arc<Monitors>,
        events: Arc<EventLog>,
    ) -> Arc<Self> {
        let peers = cfg
            .members
            .iter()
            .filter(|m| m.id != cfg.node_id)
            .map(|m| {
                (
                    m.id,
                    Peer {
                        summary: None,
                        last_ok: None,
                        rtt: None,
                    },
                )
            })
            .collect();
        let role = if cfg.role() == MemberRole::Witness {
            Role::Witness
        } else {
            Role::Detached
        };
        Arc::new(Self {
            cfg,
            consensus,
            failover,
            monitors,
            events,
            peers: Mutex::new(peers),
            warning: Mutex::new(None),
            role: Mutex::new(role),
            files: std::sync::OnceLock::new(),
            files_unsynced: Mutex::default(),
            db: std::sync::OnceLock::new(),
            db_unsynced: Mutex::default(),
        })
    }

    /// Report this node's database replication in heartbeats, and count the standby's in its
    /// sync state.
    pub fn set_db(&self, db: DbBriefSource) {
        let _ = self.db.set(db);
    }

    /// Report this node's file mirror in heartbeats and count the standby's in its sync state.
    pub fn set_files(&self, files: Arc<crate::files::FileSync>) {
        let _ = self.files.set(files);
    }

    /// Whether `node`'s file mirror is synced, by its latest heartbeat (true without folders).
    /// Kept apart from the peers' table: the summary is built while that is locked.
    fn files_synced(&self, node: NodeId) -> bool {
        self.files_unsynced.lock().expect("files lock").get(&node).is_none()
            && self.db_unsynced.lock().expect("db lock").get(&node).is_none()
    }

    pub fn config(&self) -> &ValidConfig {
        &self.cfg
    }

    pub fn consensus(&self) -> &Consensus {
        &self.consensus
    }

    pub fn failover(&self) -> &Failover {
        &self.failover
    }

    /// This node's role right now.
    pub fn role(&self) -> Role {
        if self.cfg.role() == MemberRole::Witness {
            return Role::Witness;
        }
        if self.failover.switching() {
            return Role::Switching;
        }
        if self.failover.serving_epoch().is_some() {
            return Role::Active;
        }
        let out_of_touch = self.consensus.current_leader().is_none()
            && self.consensus.quorum_silence() >= self.cfg.timers.election_timeout_max * 2;
        if !self.consensus.is_voter() || out_of_touch {
            return Role::Detached;
        }
        Role::Standby
    }

    pub fn set_warning(&self, warning: Option<String>) {
        *self.warning.lock().expect("warning lock") = warning;
    }

    pub fn warning(&self) -> Option<String> {
        self.warning.lock().expect("warning lock").clone()
    }

    fn peers(&self) -> std::sync::MutexGuard<'_, BTreeMap<NodeId, Peer>> {
        self.peers.lock().expect("peers lock")
    }

    fn link_up(p: &Peer) -> bool {
        p.last_ok.is_some_and(|t| t.elapsed() < LINK_TIMEOUT)
    }

    /// The summary of this node sent in heartbeats.
    pub fn summary(&self) -> Summary {
        let role = self.role();
        let other_data = self
            .cfg
            .members
            .iter()
            .find(|m| m.role == MemberRole::Data && m.id != self.cfg.node_id)
            .map(|m| m.id);
        let active = role == Role::Active;
        Summary {
            node: self.cfg.node_id,
            role,
            monitors: self.monitors.infos(),
            links: self.peers().iter().map(|(id, p)| (*id, Self::link_up(p))).collect(),
            warning: if active { self.warning() } else { None },
            standby_behind: other_data
                .filter(|_| active)
                .and_then(|id| self.consensus.records_behind(id)),
            standby_synced: other_data
                .filter(|_| active)
                .map(|id| self.consensus.in_sync(id, self.cfg.timers.election_timeout_min) && self.files_synced(id)),
            files: self.files.get().map(|f| f.brief()),
            db: self.db.get().map(|d| d()),
        }
    }

    /// The latest summary `node` sent, if its link is up.
    pub fn peer_summary(&self, node: NodeId) -> Option<Summary> {
        self.peers()
            .get(&node)
            .filter(|p| Self::link_up(p))
            .and_then(|p| p.summary.clone())
    }

    /// A member's summary arrived: in a heartbeat it sent (the other direction of the link
    /// works too), or as the answer to ours after `rtt`.
    pub fn heard(&self, summary: Summary, rtt: Option<Duration>) {
        let other_data = self
            .cfg
            .members
            .iter()
            .any(|m| m.id == summary.node && m.role == MemberRole::Data);
        if let (Some(files), true) = (self.files.get(), other_data) {
            files.heard_from_peer(summary.files.as_ref());
        }
        {
            let mut unsynced = self.files_unsynced.lock().expect("files lock");
            match &summary.files {
                Some(f) if !f.synced => unsynced.insert(summary.node),
                _ => unsynced.remove(&summary.node),
            };
        }
        {
            let mut unsynced = self.db_unsynced.lock().expect("db lock");
            match &summary.db {
                Some(d) if !d.synced => unsynced.insert(summary.node),
                _ => unsynced.remove(&summary.node),
            };
        }
        if let Some(p) = self.peers().get_mut(&summary.node) {
            p.last_ok = Some(Instant::now());
            p.rtt = rtt.or(p.rtt);
            p.summary = Some(summary);
        }
    }

    /// This node's links, for the status API.
    pub fn links(&self) -> Vec<LinkInfo> {
        let peers = self.peers();
        self.cfg
            .members
            .iter()
            .filter_map(|m| {
                let p = peers.get(&m.id)?;
                Some(LinkInfo {
                    to: m.name.clone(),
                    state: if Self::link_up(p) { "up" } else { "down" }.into(),
                    last_ok_ms_ago: p.last_ok.map(|t| t.elapsed().as_millis() as u64),
                    rtt_ms: p.rtt.map(|d| d.as_millis() as u64),
                })
            })
            .collect()
    }

    /// Data nodes: whether the witness answers heartbeats.
    pub fn witness_contact(&self) -> Option<bool> {
        if self.cfg.role() == MemberRole::Witness {
            return None;
        }
        let witness = self.cfg.members.iter().find(|m| m.role == MemberRole::Witness)?;
        Some(self.peers().get(&witness.id).is_some_and(Self::link_up))
    }

    /// The cluster status as this node sees it.
    pub fn cluster_status(&self) -> ClusterStatusInfo {
        let mut views = vec![(self.cfg.me().name.clone(), self.cfg.role(), Some(self.summary()))];
        for m in self.cfg.members.iter().filter(|m| m.id != self.cfg.node_id) {
            views.push((m.name.clone(), m.role, self.peer_summary(m.id)));
        }
        let names: BTreeMap<NodeId, String> = self.cfg.members.iter().map(|m| (m.id, m.name.clone())).collect();
        cluster_status(&views, &names, self.consensus.policies().maintenance)
    }
}

/// Work out the cluster status from each member's summary (`None`: out of touch).
pub fn cluster_status(
    views: &[(String, MemberRole, Option<Summary>)],
    names: &BTreeMap<NodeId, String>,
    maintenance: bool,
) -> ClusterStatusInfo {
    let name = |id: &NodeId| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let mut warnings = Vec::new();
    if maintenance {
        warnings.push("maintenance mode is on: automatic actions are paused".to_string());
    }
    for (node, _, s) in views {
        let Some(s) = s else { continue };
        // A `log_only` monitor's failure is an event and nothing more.
        for m in s.monitors.iter().filter(|m| m.state == "failed" && !m.log_only) {
            warnings.push(format!(
                "monitor {} failed on {node} (scope {}): {}",
                m.name,
                m.scope,
                m.last_result.as_deref().unwrap_or("no result")
            ));
        }
        for (to, up) in &s.links {
            if !up {
                warnings.push(format!("link {node} -> {} is down", name(to)));
            }
        }
    }
    let me_alone = views.iter().skip(1).all(|(_, _, s)| s.is_none());
    let active = views
        .iter()
        .find(|(_, role, s)| *role == MemberRole::Data && s.as_ref().is_some_and(|s| s.role == Role::Active));
    let status = |state: &str, reason: String, mut warnings: Vec<String>| {
        warnings.retain(|w| *w != reason);
        warnings.insert(0, reason.clone());
        ClusterStatusInfo {
            state: state.into(),
            reason,
            warnings,
        }
    };
    let Some((active_name, _, Some(active))) = active else {
        if me_alone {
            return status(
                "unknown",
                format!("{} is in touch with no other member", views[0].0),
                warnings,
            );
        }
        let switching: Vec<&str> = views
            .iter()
            .filter(|(_, _, s)| s.as_ref().is_some_and(|s| s.role == Role::Switching))
            .map(|(n, _, _)| n.as_str())
            .collect();
        let reason = if switching.is_empty() {
            "no data node is active".to_string()
        } else {
            format!("no data node is active; {} switching", switching.join(" and "))
        };
        return status("stopped", reason, warnings);
    };
    if let Some(w) = &active.warning {
        warnings.insert(0, format!("{active_name}: {w}"));
    }
    let standby = views
        .iter()
        .find(|(n, role, _)| *role == MemberRole::Data && n != active_name);
    if let Some((standby_name, _, standby)) = standby {
        if standby.is_none() {
            return status(
                "not synced",
                format!("standby {standby_name} does not answer heartbeats"),
                warnings,
            );
        }
        let standby_files = standby.as_ref().and_then(|s| s.files.as_ref()).filter(|f| !f.synced);
        if let (Some(f), Some(false)) = (standby_files, active.standby_synced) {
            if active.standby_behind.is_none_or(|(behind, _)| behind == 0) {
                return match &f.stalled {
                    Some(why) => status(
                        "not synced",
                        format!("standby {standby_name} stopped applying file changes: {why}"),
                        warnings,
                    ),
                    None => status(
                        "not synced",
                        format!(
                            "standby {standby_name} has {} files ({} bytes) still to fetch",
                            f.pending_files, f.pending_bytes
                        ),
                        warnings,
                    ),
                };
            }
        }
        let standby_db = standby.as_ref().and_then(|s| s.db.as_ref()).filter(|d| !d.synced);
        if let (Some(d), Some(false)) = (standby_db, active.standby_synced) {
            if active.standby_behind.is_none_or(|(behind, _)| behind == 0) {
                return match &d.diverged {
                    Some(why) => status(
                        "not synced",
                        format!("standby {standby_name}'s database diverged: {why}"),
                        warnings,
                    ),
                    None => status(
                        "not synced",
                        format!(
                            "standby {standby_name}'s database is {} transactions behind",
                            d.lag_records
                        ),
                        warnings,
                    ),
                };
            }
        }
        if active.standby_synced == Some(false) {
            return match active.standby_behind {
                Some((behind, true)) => status(
                    "mirroring",
                    format!("standby {standby_name} is taking its first copy ({behind} records to go)"),
                    warnings,
                ),
                Some((behind, false)) => status(
                    "not synced",
                    format!("standby {standby_name} is {behind} records behind or not acknowledging"),
                    warnings,
                ),
                None => status("not synced", format!("standby {standby_name} is not synced"), warnings),
            };
        }
    }
    match warnings.first().cloned() {
        Some(first) => status("warning", first, warnings),
        None => ClusterStatusInfo {
            state: "ready".into(),
            reason: format!("{active_name} is active and the standby is synced"),
            warnings,
        },
    }
}

/// Send this node's summary to both other members every [`HEARTBEAT_INTERVAL`], and keep
/// this node's role (and the monitors' standing) up to date; until `shutdown`.
pub async fn run<C: PeerConnector>(
    state: Arc<ClusterState>,
    network: PeerNetwork<C>,
    standing: watch::Sender<Standing>,
    mut shutdown: watch::Receiver<bool>,
) {
    let targets: Vec<(NodeId, String)> = state
        .cfg
        .members
        .iter()
        .filter(|m| m.id != state.cfg.node_id)
        .map(|m| (m.id, m.peer_addr.clone()))
        .collect();
    let mut next_beat = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ROLE_SAMPLE_INTERVAL) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        sample_role(&state, &standing);
        if Instant::now() < next_beat {
            continue;
        }
        next_beat = Instant::now() + HEARTBEAT_INTERVAL;
        let Ok(body) = codec::encode(&state.summary()) else {
            continue;
        };
        for (id, addr) in &targets {
            let (state, network, addr, body, id) = (state.clone(), network.clone(), addr.clone(), body.clone(), *id);
            tokio::spawn(async move {
                let sent = Instant::now();
                let answer = network.exchange(&addr, "/peer/heartbeat", body, LINK_TIMEOUT).await;
                match answer.and_then(|bytes| codec::decode::<Summary>(&bytes).map_err(|e| e.to_string())) {
                    Ok(summary) if summary.node == id => state.heard(summary, Some(sent.elapsed())),
                    Ok(summary) => {
                        tracing::warn!(expected = id, got = summary.node, "heartbeat answered by another node")
                    }
                    Err(e) => tracing::debug!(to = id, error = %e, "heartbeat failed"),
                }
            });
        }
    }
}

/// Look at this node's role; on a change record an event and move the monitors' standing.
fn sample_role(state: &ClusterState, standing: &watch::Sender<Standing>) {
    let role = state.role();
    if let Some(a) = state.consensus.activation() {
        state.events.set_epoch(a.epoch);
    }
    let before = std::mem::replace(&mut *state.role.lock().expect("role lock"), role);
    if before != role {
        state
            .events
            .record(Kind::Role, format!("{} -> {}", before.as_str(), role.as_str()));
    }
    let now = match (state.cfg.role(), state.failover.resources_held()) {
        (MemberRole::Witness, _) => Standing::Neither,
        (_, Some(_)) => Standing::Active,
        _ if state.failover.active_epoch().is_some() => Standing::Neither,
        _ => Standing::Standby,
    };
    standing.send_if_modified(|s| std::mem::replace(s, now) != now);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(node: NodeId, role: Role) -> Summary {
        Summary {
            node,
            role,
            monitors: Vec::new(),
            links: Vec::new(),
            warning: None,
            standby_behind: None,
            standby_synced: None,
            files: None,
            db: None,
        }
    }

    fn names() -> BTreeMap<NodeId, String> {
        [(1, "alpha"), (2, "beta"), (3, "witness")]
            .into_iter()
            .map(|(id, n)| (id, n.to_string()))
            .collect()
    }

    fn views(a: Option<Summary>, b: Option<Summary>, w: Option<Summary>) -> Vec<(String, MemberRole, Option<Summary>)> {
        vec![
            ("alpha".into(), MemberRole::Data, a),
            ("beta".into(), MemberRole::Data, b),
            ("witness".into(), MemberRole::Witness, w),
        ]
    }

    fn healthy_active() -> Summary {
        Summary {
            standby_synced: Some(true),
            standby_behind: Some((0, false)),
            ..summary(1, Role::Active)
        }
    }

    #[test]
    fn a_synced_pair_without_warnings_is_ready() {
        let s = cluster_status(
            &views(
                Some(healthy_active()),
                Some(summary(2, Role::Standby)),
                Some(summary(3, Role::Witness)),
            ),
            &names(),
            false,
        );
        assert_eq!(s.state, "ready", "{s:?}");
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn a_standby_database_behind_or_diverged_is_not_synced_by_name() {
        let w = Some(summary(3, Role::Witness));
        let active = Summary {
            standby_synced: Some(false),
            ..healthy_active()
        };
        let standby = |diverged: Option<&str>| Summary {
            db: Some(DbBrief {
                synced: false,
                lag_records: 12,
                diverged: diverged.map(Into::into),
            }),
            ..summary(2, Role::Standby)
        };
        let s = cluster_status(
            &views(Some(active.clone()), Some(standby(None)), w.clone()),
            &names(),
            false,
        );
        assert_eq!(
            (s.state.as_str(), s.reason.as_str()),
            ("not synced", "standby beta's database is 12 transactions behind")
        );
        let s = cluster_status(
            &views(Some(active), Some(standby(Some("it holds 0-2-9"))), w),
            &names(),
            false,
        );
        assert_eq!(s.state, "not synced");
        assert!(s.reason.contains("database diverged: it holds 0-2-9"), "{s:?}");
    }

    #[test]
    fn each_state_names_its_reason() {
        let w = Some(summary(3, Role::Witness));
        let standby = Some(summary(2, Role::Standby));
        let s = cluster_status(&views(Some(summary(1, Role::Standby)), None, None), &names(), false);
        assert_eq!(
            (s.state.as_str(), s.reason.as_str()),
            ("unknown", "alpha is in touch with no other member")
        );

        let s = cluster_status(
            &views(Some(summary(1, Role::Switching)), standby.clone(), w.clone()),
            &names(),
            false,
        );
        assert_eq!(s.state, "stopped");
        assert!(s.reason.contains("alpha switching"), "{s:?}");

        let s = cluster_status(&views(Some(healthy_active()), None, w.clone()), &names(), false);
        assert_eq!(s.state, "not synced");
        assert!(s.reason.contains("beta does not answer"), "{s:?}");

        let lagging = Summary {
            standby_synced: Some(false),
            standby_behind: Some((40, false)),
            ..healthy_active()
        };
        let s = cluster_status(&views(Some(lagging), standby.clone(), w.clone()), &names(), false);
        assert_eq!(s.state, "not synced");
        assert!(s.reason.contains("40 records behind"), "{s:?}");

        // The log is matched but the standby still fetches file contents, or cannot write them.
        let files_behind = Summary {
            standby_synced: Some(false),
            standby_behind: Some((0, false)),
            ..healthy_active()
        };
        let mut fetching = standby.clone().unwrap();
        fetching.files = Some(FilesBrief {
            synced: false,
            capturing: false,
            pending_files: 3,
            pending_bytes: 300,
            stalled: None,
        });
        let s = cluster_status(
            &views(Some(files_behind.clone()), Some(fetching.clone()), w.clone()),
            &names(),
            false,
        );
        assert_eq!(s.state, "not synced");
        assert!(s.reason.contains("3 files (300 bytes) still to fetch"), "{s:?}");
        fetching.files.as_mut().unwrap().stalled = Some("no space left".into());
        let s = cluster_status(&views(Some(files_behind), Some(fetching), w.clone()), &names(), false);
        assert!(
            s.reason.contains("stopped applying file changes: no space left"),
            "{s:?}"
        );

        let first_copy = Summary {
            standby_synced: Some(false),
            standby_behind: Some((900, true)),
            ..healthy_active()
        };
        let s = cluster_status(&views(Some(first_copy), standby.clone(), w.clone()), &names(), false);
        assert_eq!(s.state, "mirroring", "{s:?}");

        let blocked = Summary {
            warning: Some("monitor web failed; auto-switch is off".into()),
            ..healthy_active()
        };
        let s = cluster_status(&views(Some(blocked), standby.clone(), w.clone()), &names(), false);
        assert_eq!(s.state, "warning");
        assert_eq!(s.reason, "alpha: monitor web failed; auto-switch is off");

        let s = cluster_status(
            &views(Some(healthy_active()), standby.clone(), w.clone()),
            &names(),
            true,
        );
        assert_eq!(s.state, "warning");
        assert!(s.reason.contains("maintenance"), "{s:?}");

        let cut = Summary {
            links: vec![(3, false)],
            ..summary(2, Role::Standby)
        };
        let s = cluster_status(&views(Some(healthy_active()), Some(cut), w), &names(), false);
        assert_eq!(
            (s.state.as_str(), s.reason.as_str()),
            ("warning", "link beta -> witness is down")
        );
    }

    #[test]
    fn a_failed_monitor_anywhere_is_a_warning() {
        let sick = Summary {
            monitors: vec![MonitorInfo {
                name: "disk".into(),
                kind: "disk".into(),
                target: "disk /var".into(),
                scope: "standby".into(),
                log_only: false,
                state: "failed".into(),
                last_result: Some("failed: 97% used".into()),
                last_run_ms: None,
                last_duration_us: None,
                consecutive_failures: 3,
                max_failures: 3,
            }],
            ..summary(2, Role::Standby)
        };
        let s = cluster_status(
            &views(Some(healthy_active()), Some(sick), Some(summary(3, Role::Witness))),
            &names(),
            false,
        );
        assert_eq!(s.state, "warning");
        assert_eq!(
            s.reason,
            "monitor disk failed on beta (scope standby): failed: 97% used"
        );
    }
}
