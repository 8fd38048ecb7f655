//! The simulated cluster: the real node on turmoil hosts `a`, `b` (data) and `w` (witness),
//! a client host `c`, the faults of the schedule, and the invariants checked after every step.
//!
//! Each node's "disk" (its in-memory log store and state machine) is created before its host,
//! so a crash and restart keeps it; a crash also throws away the log writes not yet flushed.

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::ServerState;
use tandem_node::config::ValidConfig;
use tandem_node::resources::ResourceAgent;
use tandem_node::NodeHandles;
use tandem_node::NodeParts;
use tandem_raft_store::MemLogStore;
use tandem_raft_store::NodeId;
use tandem_raft_store::StateMachineStore;
use tandem_raft_store::StateReader;

use crate::agent::Recorder;
use crate::faults::Fault;
use crate::invariants;
use crate::invariants::Violation;
use crate::net::SimConnector;
use crate::net::SimListener;
use crate::rng::Rng;
use crate::workload;
use crate::workload::Operator;
use crate::world::name;
use crate::world::Observed;
use crate::world::Shared;
use crate::world::DATA_NODES;
use crate::world::NODES;

pub const PEER_PORT: u16 = 7001;
pub const ADMIN_PORT: u16 = 8001;
/// Latency of a healthy link (turmoil's default of up to 100 ms would be a slow WAN).
pub const BASE_LATENCY: Duration = Duration::from_millis(2);
/// After an operator action, nodes do not count as undisturbed for this long.
pub const OPERATOR_SETTLE: Duration = Duration::from_secs(25);

/// One simulated run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub seed: u64,
    pub faults: Vec<(Duration, Fault)>,
    /// Every fault still in force is healed here.
    pub heal_at: Duration,
}

impl Plan {
    /// The random plan of `seed`: [`FAULT_START`] of calm, [`FAULT_PHASE`] of faults, then
    /// healing.
    pub fn random(seed: u64) -> Self {
        let mut rng = Rng::new(seed).fork(0xfa);
        Self {
            seed,
            faults: crate::faults::random(&mut rng, FAULT_START, FAULT_PHASE),
            heal_at: FAULT_START + FAULT_PHASE,
        }
    }

    pub fn end(&self) -> Duration {
        self.heal_at + invariants::converges::CONVERGE_BOUND
    }
}

/// The client stops writing this long before the final checks, so the standby can catch up.
pub const QUIET_BEFORE_END: Duration = Duration::from_secs(3);

/// The cluster is up and serving well before this.
pub const FAULT_START: Duration = Duration::from_secs(4);
/// How long faults are injected.
pub const FAULT_PHASE: Duration = Duration::from_secs(20);

/// What a run found.
#[derive(Debug)]
pub struct Report {
    pub seed: u64,
    pub violations: Vec<Violation>,
    pub trace: Vec<String>,
    pub acked: usize,
    /// The service ledger, in order.
    pub ledger: Vec<crate::world::LedgerEvent>,
    /// Every change of a node's serving epoch: (time, node, epoch).
    pub serving: Vec<(Duration, NodeId, Option<tandem_raft_store::Epoch>)>,
}

fn config(id: NodeId) -> Arc<ValidConfig> {
    let members: String = NODES
        .iter()
        .map(|(i, n)| {
            let role = if DATA_NODES.contains(i) { "data" } else { "witness" };
            format!(
                "\n[[members]]\nid = {i}\nname = \"{n}\"\nrole = \"{role}\"\npeer_addr = \"{n}:{PEER_PORT}\"\nadmin_addr = \"{n}:{ADMIN_PORT}\"\n"
            )
        })
        .collect();
    let mut text = format!(
        "node_id = {id}\ndata_dir = \"/nonexistent/tandem-sim/{}\"\npeer_listen = \"0.0.0.0:{PEER_PORT}\"\nadmin_listen = \"0.0.0.0:{ADMIN_PORT}\"\ncluster_secret = \"simulated-cluster-secret\"\n{members}",
        name(id)
    );
    if DATA_NODES.contains(&id) {
        text.push_str(
            "\n[[resources]]\ntype = \"script\"\nname = \"service\"\nacquire = \"recorded\"\nrelease = \"recorded\"\ncheck = \"recorded\"\ncheck_interval_ms = 200\nrelease_timeout_ms = 500\n",
        );
    }
    Arc::new(ValidConfig::parse(&text, std::path::Path::new("/")).expect("the simulated config is valid"))
}

type Slot = Arc<Mutex<Option<NodeHandles>>>;

struct Node {
    id: NodeId,
    log: MemLogStore,
    state: StateReader,
    handles: Slot,
}

/// Faults in force, to tell whether a node is undisturbed (see `stable_active`).
#[derive(Default)]
struct Disturbance {
    crashed: [bool; 3],
    stalled: [bool; 3],
    unhealthy: [bool; 3],
    /// Faults in force per unordered pair of nodes.
    links: BTreeMap<(NodeId, NodeId), u32>,
    operator_until: Duration,
}

fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Disturbance {
    fn link(&mut self, a: NodeId, b: NodeId, delta: i32) {
        let n = self.links.entry(pair(a, b)).or_default();
        *n = n.saturating_add_signed(delta);
    }

    fn runs(&self, n: NodeId) -> bool {
        let i = (n - 1) as usize;
        !self.crashed[i] && !self.stalled[i]
    }

    fn undisturbed(&self, n: NodeId, now: Duration) -> bool {
        self.runs(n)
            && !self.unhealthy[(n - 1) as usize]
            && now >= self.operator_until
            && NODES
                .iter()
                .any(|(p, _)| *p != n && self.runs(*p) && self.links.get(&pair(n, *p)).copied().unwrap_or(0) == 0)
    }
}

pub fn run(plan: &Plan) -> Report {
    let seed = plan.seed;
    let root = Rng::new(seed);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(plan.end() + Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::ZERO)
        .max_message_latency(BASE_LATENCY)
        .tcp_capacity(4096)
        .epoch(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .rng_seed(seed)
        .build();
    let shared = Arc::new(Shared::new());
    let operator: workload::OperatorQueue = Arc::new(Mutex::new(VecDeque::new()));

    let mut nodes = Vec::new();
    for (id, host) in NODES {
        let log = MemLogStore::new();
        let sm = StateMachineStore::in_memory();
        let state = sm.reader();
        let handles: Slot = Arc::new(Mutex::new(None));
        let incarnation = Arc::new(AtomicU64::new(0));
        let (log2, slot, shared2, node_rng) = (log.clone(), handles.clone(), shared.clone(), root.fork(id));
        sim.host(host, move || {
            let (log, sm, slot, shared) = (log2.clone(), sm.clone(), slot.clone(), shared2.clone());
            let n = incarnation.fetch_add(1, Ordering::SeqCst);
            let rng = node_rng.fork(n);
            async move {
                let cfg = config(id);
                let recorder = Recorder {
                    node: id,
                    shared: shared.clone(),
                    rng: Mutex::new(rng.fork(1)),
                };
                let parts = NodeParts {
                    peer_listener: SimListener::bind(PEER_PORT).await?,
                    admin_listener: SimListener::bind(ADMIN_PORT).await?,
                    health_listener: None,
                    connector: SimConnector,
                    log,
                    sm,
                    agent: ResourceAgent::with_runner(name(id).into(), cfg.resources.clone(), Arc::new(recorder)),
                    seed: rng.fork(2).next_u64(),
                };
                tandem_node::run_with(cfg, parts, std::future::pending(), |h| {
                    *slot.lock().expect("slot lock") = Some(h.clone());
                    tokio::spawn(observe(id, h.clone(), shared.clone()));
                })
                .await
                .map_err(|e| format!("node {} stopped: {e:#}", name(id)))?;
                Ok(())
            }
        });
        nodes.push(Node {
            id,
            log,
            state,
            handles,
        });
    }
    let (client_shared, client_ops, client_rng) = (shared.clone(), operator.clone(), root.fork(0xc1));
    sim.host("c", move || {
        let (s, o, r) = (client_shared.clone(), client_ops.clone(), client_rng.clone());
        async move {
            workload::run(s, o, r).await;
            Ok(())
        }
    });

    let mut checks = Checks::default();
    let mut faults: VecDeque<(Duration, Fault)> = plan.faults.iter().copied().collect();
    let mut later: Vec<(Duration, Fault)> = Vec::new();
    let mut dist = Disturbance::default();
    let mut healed = false;
    let mut healthy_since: [Option<Duration>; 3] = [None; 3];
    let mut ledger_seen = 0;
    let mut last_observed = [Observed::default(); 3];
    let mut last_leader: [Option<(u64, bool)>; 3] = [None; 3];
    let mut failed = None;
    let mut serving_changes = Vec::new();

    while sim.elapsed() < plan.end() {
        let now = sim.elapsed();
        // Faults due now, from the schedule and follow-ups (resume, healthy again).
        let mut due = Vec::new();
        while faults.front().is_some_and(|(at, _)| *at <= now) {
            due.push(faults.pop_front().expect("checked").1);
        }
        while later.first().is_some_and(|(at, _)| *at <= now) {
            due.push(later.remove(0).1);
        }
        if !healed && now >= plan.heal_at {
            healed = true;
            due.clear();
            faults.clear();
            later.clear();
            heal(&mut sim, &shared, &nodes, &mut dist, now);
        }
        for fault in due {
            apply(&mut sim, &shared, &operator, &nodes, &mut dist, &mut later, now, fault);
            later.sort_by_key(|(at, _)| *at);
        }

        if now + QUIET_BEFORE_END >= plan.end() && !shared.quiet.swap(true, Ordering::SeqCst) {
            shared.trace(now, "client: writes stop before the final checks");
        }
        // A node that panics (openraft's own state checks, in debug builds) fails the run
        // like a broken invariant does.
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                failed = Some(e.to_string());
                break;
            }
            Err(panic) => {
                failed = Some(format!("a node panicked: {}", panic_message(panic.as_ref())));
                break;
            }
        }
        let now = sim.elapsed();

        // The ledger, in order.
        let new: Vec<_> = shared.ledger.lock().expect("ledger lock")[ledger_seen..].to_vec();
        ledger_seen += new.len();
        for e in &new {
            let r = checks.single.ledger(e);
            checks.record(now, "single_active", r);
        }
        // The in-host observations.
        let mut serving = Vec::new();
        for n in &nodes {
            let i = (n.id - 1) as usize;
            let o = if dist.crashed[i] {
                Observed::default()
            } else {
                *shared.node(n.id).observed.lock().expect("observed lock")
            };
            if o != last_observed[i] {
                shared.trace(now, format_args!("{} {o:?}", name(n.id)));
                if o.serving != last_observed[i].serving {
                    serving_changes.push((now, n.id, o.serving));
                }
                last_observed[i] = o;
            }
            if let Some(e) = o.serving {
                serving.push((n.id, e));
            }
            healthy_since[i] = if dist.undisturbed(n.id, now) {
                healthy_since[i].or(Some(now))
            } else {
                None
            };
            if DATA_NODES.contains(&n.id) {
                let r = checks.stable.sample(now, n.id, o.active.is_some(), healthy_since[i]);
                checks.record(now, "stable_active", r);
            }
        }
        let r = checks.single.serving(&serving);
        checks.record(now, "single_active", r);

        // Terms, activations, leaders and applied entries.
        let mut newest_leader: Option<(u64, NodeId)> = None;
        for n in &nodes {
            let i = (n.id - 1) as usize;
            let term = n.log.inspect(|l| l.vote.map_or(0, |v| v.leader_id().term));
            let r = checks.epochs.term(n.id, term);
            checks.record(now, "epochs", r);
            let (applied, activation) = {
                let s = n.state.read();
                (
                    s.meta.last_applied.map(|l| l.index),
                    s.meta.activation.as_ref().map_or(0, |a| a.epoch),
                )
            };
            let r = checks.epochs.activation(n.id, activation);
            checks.record(now, "epochs", r);
            if let Some(applied) = applied {
                let r = n.log.inspect(|l| checks.raft.applied(n.id, applied, &l.log));
                checks.record(now, "raft_safety", r);
            }
            if dist.crashed[i] {
                continue;
            }
            let leader = n.handles.lock().expect("slot lock").as_ref().map(|h| {
                let m = h.consensus.raft().metrics();
                let m = m.borrow_watched();
                (m.current_term, m.state == ServerState::Leader)
            });
            if leader != last_leader[i] {
                if let Some((term, true)) = leader {
                    shared.trace(now, format_args!("{} leads term {term}", name(n.id)));
                }
                last_leader[i] = leader;
            }
            if let Some((term, true)) = leader {
                let r = checks.raft.leader(term, n.id);
                checks.record(now, "raft_safety", r);
                if newest_leader.is_none_or(|(t, _)| term > t) {
                    newest_leader = Some((term, n.id));
                }
            }
        }
        if let Some((term, id)) = newest_leader {
            let n = &nodes[(id - 1) as usize];
            let r = n.log.inspect(|l| {
                let purged = l.last_purged.map_or(0, |p| p.index);
                checks.raft.newest_leader_log(id, term, &l.log, purged)
            });
            checks.record(now, "raft_safety", r);
        }
        if !checks.violations.is_empty() {
            break;
        }
    }

    let now = sim.elapsed();
    if let Some(e) = failed {
        checks.record(now, "host", Err(format!("a simulated host failed: {e}")));
    }
    if checks.violations.is_empty() {
        final_checks(&mut checks, &shared, &nodes, now);
    }
    let trace = std::mem::take(&mut *shared.trace.lock().expect("trace lock"));
    let acked = shared.acked.lock().expect("acked lock").len();
    let ledger = shared.ledger.lock().expect("ledger lock").clone();
    Report {
        seed,
        violations: checks.violations,
        trace,
        acked,
        ledger,
        serving: serving_changes,
    }
}

/// After healing and the convergence bound: one active, every acknowledged write on it, the
/// standby's state equal to the committed state, acknowledged writes fenced by their epoch.
fn final_checks(checks: &mut Checks, shared: &Shared, nodes: &[Node], now: Duration) {
    let observed: Vec<(NodeId, Observed)> = nodes
        .iter()
        .filter(|n| DATA_NODES.contains(&n.id))
        .map(|n| (n.id, *shared.node(n.id).observed.lock().expect("observed lock")))
        .collect();
    let active = match invariants::converges::check(&observed, &checks.single.holders()) {
        Ok((node, _)) => node,
        Err(e) => {
            checks.record(now, "converges", Err(e));
            return;
        }
    };
    let acks = shared.acked.lock().expect("acked lock").clone();
    let log = nodes[(active - 1) as usize].log.live();
    let purged = log.last_purged.map_or(0, |p| p.index);
    for e in invariants::acked_records::check(&acks, &log.log, purged) {
        checks.record(now, "acked_records", Err(e));
    }
    for e in invariants::epochs::acks_are_fenced(&acks, &log.log) {
        checks.record(now, "epochs", Err(e));
    }
    let r = checks.raft.holds_committed(active, &log.log, purged);
    checks.record(now, "raft_safety", r);
    let states: Vec<_> = nodes.iter().map(|n| (n.id, n.state.read().meta.clone())).collect();
    for e in invariants::standby_applied::check(&states, active) {
        checks.record(now, "standby_applied", Err(e));
    }
}

#[derive(Default)]
struct Checks {
    single: invariants::single_active::SingleActive,
    epochs: invariants::epochs::Epochs,
    raft: invariants::raft_safety::RaftSafety,
    stable: invariants::stable_active::StableActive,
    violations: Vec<Violation>,
}

impl Checks {
    fn record(&mut self, at: Duration, invariant: &'static str, r: Result<(), String>) {
        if let Err(detail) = r {
            self.violations.push(Violation { invariant, at, detail });
        }
    }
}

/// Inside a node's host: sample what the node would answer right now, every millisecond.
async fn observe(id: NodeId, h: NodeHandles, shared: Arc<Shared>) {
    loop {
        let o = Observed {
            serving: h.failover.serving_epoch(),
            active: h.failover.active_epoch(),
            held: h.failover.resources_held(),
        };
        *shared.node(id).observed.lock().expect("observed lock") = o;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn serving_now(shared: &Shared, dist: &Disturbance) -> Option<NodeId> {
    DATA_NODES.into_iter().find(|n| {
        !dist.crashed[(n - 1) as usize]
            && shared
                .node(*n)
                .observed
                .lock()
                .expect("observed lock")
                .serving
                .is_some()
    })
}

#[allow(clippy::too_many_arguments)]
fn apply(
    sim: &mut turmoil::Sim<'_>,
    shared: &Shared,
    operator: &workload::OperatorQueue,
    nodes: &[Node],
    dist: &mut Disturbance,
    later: &mut Vec<(Duration, Fault)>,
    now: Duration,
    fault: Fault,
) {
    let i = |n: NodeId| (n - 1) as usize;
    match fault {
        Fault::Crash(n) if !dist.crashed[i(n)] => {
            sim.crash(name(n));
            // The machine is down: its service with it; its unflushed writes are gone.
            *nodes[i(n)].handles.lock().expect("slot lock") = None;
            nodes[i(n)].log.crash();
            dist.crashed[i(n)] = true;
            if dist.stalled[i(n)] {
                resume(sim, shared, dist, n);
            }
            *shared.node(n).observed.lock().expect("observed lock") = Observed::default();
            shared.ledger(now, n, crate::world::LedgerKind::ReleaseDone);
        }
        Fault::Restart(n) if dist.crashed[i(n)] => {
            sim.bounce(name(n));
            dist.crashed[i(n)] = false;
        }
        Fault::Crash(_) | Fault::Restart(_) => return,
        Fault::Partition(a, b) => {
            sim.partition(name(a), name(b));
            dist.link(a, b, 1);
        }
        Fault::Repair(a, b) => {
            sim.repair(name(a), name(b));
            dist.link(a, b, -1);
        }
        Fault::OneWay(a, b) => {
            sim.partition_oneway(name(a), name(b));
            dist.link(a, b, 1);
        }
        Fault::RepairOneWay(a, b) => {
            sim.repair_oneway(name(a), name(b));
            dist.link(a, b, -1);
        }
        Fault::Loss(a, b, pct) => {
            sim.set_link_fail_rate(name(a), name(b), pct as f64 / 100.0);
            dist.link(a, b, 1);
        }
        Fault::NoLoss(a, b) => {
            sim.set_link_fail_rate(name(a), name(b), 0.0);
            sim.repair(name(a), name(b));
            dist.link(a, b, -1);
        }
        Fault::Latency(a, b, ms) => {
            sim.set_link_max_message_latency(name(a), name(b), Duration::from_millis(ms));
            dist.link(a, b, 1);
        }
        Fault::NoLatency(a, b) => {
            sim.set_link_max_message_latency(name(a), name(b), BASE_LATENCY);
            dist.link(a, b, -1);
        }
        Fault::StallActive(ms) => {
            let Some(n) = serving_now(shared, dist).filter(|n| !dist.stalled[i(*n)]) else {
                shared.trace(now, "fault: stall skipped, no node serves");
                return;
            };
            for h in others(n) {
                sim.hold(name(n), h);
            }
            shared.node(n).stalled.send_replace(true);
            dist.stalled[i(n)] = true;
            later.push((now + Duration::from_millis(ms), Fault::Resume(n)));
            shared.trace(now, format_args!("fault: {} stalls for {ms} ms", name(n)));
            return;
        }
        Fault::Resume(n) => {
            if dist.stalled[i(n)] {
                resume(sim, shared, dist, n);
            }
        }
        Fault::UnhealthyActive(ms) => {
            let Some(n) = serving_now(shared, dist) else {
                shared.trace(now, "fault: health failure skipped, no node serves");
                return;
            };
            shared.node(n).healthy.store(false, Ordering::SeqCst);
            dist.unhealthy[i(n)] = true;
            later.push((now + Duration::from_millis(ms), Fault::Healthy(n)));
            shared.trace(
                now,
                format_args!("fault: {}'s service fails its health check for {ms} ms", name(n)),
            );
            return;
        }
        Fault::Healthy(n) => {
            shared.node(n).healthy.store(true, Ordering::SeqCst);
            dist.unhealthy[i(n)] = false;
        }
        Fault::Switchover | Fault::ForcedFailover => {
            let op = if fault == Fault::Switchover {
                Operator::Switchover
            } else {
                Operator::ForcedFailover
            };
            operator.lock().expect("operator lock").push_back(op);
            dist.operator_until = now + OPERATOR_SETTLE;
        }
    }
    shared.trace(now, format_args!("fault: {fault:?}"));
}

/// Every other host, the client included: what a stalled node's messages are held against.
fn others(n: NodeId) -> Vec<&'static str> {
    NODES
        .iter()
        .filter(|(p, _)| *p != n)
        .map(|(_, h)| *h)
        .chain(["c"])
        .collect()
}

fn resume(sim: &mut turmoil::Sim<'_>, shared: &Shared, dist: &mut Disturbance, n: NodeId) {
    for h in others(n) {
        sim.release(name(n), h);
    }
    shared.node(n).stalled.send_replace(false);
    dist.stalled[(n - 1) as usize] = false;
    shared.trace(sim.elapsed(), format_args!("fault: {} resumes", name(n)));
}

fn heal(sim: &mut turmoil::Sim<'_>, shared: &Shared, nodes: &[Node], dist: &mut Disturbance, now: Duration) {
    for (a, _) in NODES {
        for (b, _) in NODES.iter().filter(|(b, _)| *b > a) {
            sim.repair(name(a), name(*b));
            sim.set_link_fail_rate(name(a), name(*b), 0.0);
            sim.set_link_max_message_latency(name(a), name(*b), BASE_LATENCY);
        }
    }
    for n in nodes {
        let i = (n.id - 1) as usize;
        if dist.stalled[i] {
            resume(sim, shared, dist, n.id);
        }
        if dist.crashed[i] {
            sim.bounce(name(n.id));
            dist.crashed[i] = false;
        }
        shared.node(n.id).healthy.store(true, Ordering::SeqCst);
        dist.unhealthy[i] = false;
    }
    dist.links.clear();
    shared.trace(now, "fault: all healed");
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".into())
}
