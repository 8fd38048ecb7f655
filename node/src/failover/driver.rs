//! Runs the [`Controller`] against the live node: feeds it Raft views, the committed
//! activation and the results of its effects, and carries the effects out.
//!
//! The network identity is the node's VIPs ([`Identity`]) and `/health/active` (answered from
//! [`Failover::serving_epoch`] at request time, so it flips the moment the lease ends). The VIPs
//! are added and removed inline, and their kernel lifetime is renewed at most every
//! [`VIP_RENEW_INTERVAL`], only within [`VIP_RENEW_WINDOW`] of the quorum ack the lease counts
//! from, checked just before each renewal. The other
//! resources are run by the [`ResourceAgent`]. At start a stale VIP is removed and everything
//! is released once, since a restarted ex-active may still hold what its previous process
//! acquired.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tandem_raft_store::Epoch;
use tandem_raft_store::NodeId;
use tokio::sync::mpsc;
use tokio::sync::oneshot;
use tokio::sync::watch;
use tokio::time::Instant;

use super::controller::Controller;
use super::controller::ControllerConfig;
use super::controller::ControllerEvent;
use super::controller::Effect;
use super::controller::Input;
use crate::consensus::Consensus;
use crate::events::EventLog;
use crate::events::Kind;
use crate::resources::vip::Identity;
use crate::resources::vip::VIP_RENEW_INTERVAL;
use crate::resources::vip::VIP_RENEW_WINDOW;
use crate::resources::ResourceAgent;

/// Longest time between two steps: the committed activation is polled.
pub const STEP_INTERVAL_MAX: Duration = Duration::from_millis(10);
/// Capacity of the channel that brings effect results back to the controller.
pub const RESULT_CHANNEL_CAPACITY: usize = 64;

/// Shared handle on the controller, for the admin API and the driver.
#[derive(Clone)]
pub struct Failover {
    controller: Arc<Mutex<Controller>>,
    origin: Instant,
    commands: mpsc::Sender<Command>,
    /// Taken by the driver when it starts.
    command_rx: Arc<Mutex<Option<mpsc::Receiver<Command>>>>,
}

/// Operator requests, carried out by the driver between two steps.
enum Command {
    /// Start a planned switchover to `to`; the answer says whether it started.
    Switchover {
        to: NodeId,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// Capacity of the operator command channel.
pub const COMMAND_CHANNEL_CAPACITY: usize = 8;

impl Failover {
    pub fn new(cfg: ControllerConfig) -> Self {
        let (commands, command_rx) = mpsc::channel(COMMAND_CHANNEL_CAPACITY);
        Self {
            controller: Arc::new(Mutex::new(Controller::new(cfg))),
            origin: Instant::now(),
            commands,
            command_rx: Arc::new(Mutex::new(Some(command_rx))),
        }
    }

    /// Ask the controller to start a planned switchover to `to` (DESIGN §4: release, commit
    /// `Released`, transfer leadership). `Err` carries the controller's reason for refusing.
    pub async fn start_switchover(&self, to: NodeId) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Switchover { to, reply })
            .await
            .map_err(|_| "the failover driver is not running".to_string())?;
        answer.await.map_err(|_| "the failover driver stopped".to_string())?
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.controller.lock().expect("failover controller lock")
    }

    /// The epoch this node serves in with every resource held (the service started): what
    /// `/health/active` reports, so a load balancer sends nothing before the service runs.
    pub fn service_epoch(&self) -> Option<Epoch> {
        let now = self.now();
        let c = self.lock();
        c.active_epoch(now)
            .filter(|e| c.serves(now) && c.resources_held() == Some(*e))
    }

    /// The epoch this node serves in right now: the lease-holding active, holding its identity
    /// (its resources may still be being acquired).
    pub fn serving_epoch(&self) -> Option<Epoch> {
        let now = self.now();
        let c = self.lock();
        c.active_epoch(now).filter(|_| c.serves(now))
    }

    /// Whether the VIP's lifetime may be renewed right now (see
    /// [`Controller::may_renew_identity`]).
    pub fn may_renew_identity(&self) -> bool {
        let now = self.now();
        self.lock().may_renew_identity(now, VIP_RENEW_WINDOW)
    }

    /// Whether this node is between roles (see [`Controller::switching`]).
    pub fn switching(&self) -> bool {
        let now = self.now();
        self.lock().switching(now)
    }

    /// How long this node has served without a break, while it does.
    pub fn serving_for(&self) -> Option<Duration> {
        let now = self.now();
        self.lock().serving_since(now).map(|since| now.saturating_sub(since))
    }

    /// The epoch the resources are held in, if all are acquired.
    pub fn resources_held(&self) -> Option<Epoch> {
        self.lock().resources_held()
    }

    /// The epoch this node is active in right now, if it is.
    pub fn active_epoch(&self) -> Option<Epoch> {
        let now = self.now();
        self.lock().active_epoch(now)
    }

    fn step(&self, input: Input) -> Vec<Effect> {
        let now = self.now();
        self.lock().step(now, input)
    }

    fn until_next_step(&self) -> Duration {
        let now = self.now();
        self.lock()
            .next_deadline(now)
            .map_or(STEP_INTERVAL_MAX, |d| (d - now).min(STEP_INTERVAL_MAX))
    }
}

/// Runs until `shutdown` flips to true; then lets go of everything.
pub async fn run(
    consensus: Consensus,
    failover: Failover,
    identity: Arc<Identity>,
    agent: Arc<ResourceAgent>,
    events: Arc<EventLog>,
    mut shutdown: watch::Receiver<bool>,
) {
    // A node starts as standby: whatever a previous process held is let go first.
    identity.clear_stale();
    if let Err(e) = agent.release().await {
        tracing::error!(error = %e, "releasing resources at start failed");
    }
    let (results_tx, mut results) = mpsc::channel::<Input>(RESULT_CHANNEL_CAPACITY);
    let mut commands = failover
        .command_rx
        .lock()
        .expect("command channel lock")
        .take()
        .expect("one driver per node");
    let mut metrics = consensus.metrics_watch();
    let mut seen_activation = consensus.activation();
    let first = [
        Input::Committed(seen_activation.clone()),
        Input::Raft(consensus.raft_view(failover.origin)),
    ];
    let checks = tokio::spawn(check_loop(
        agent.clone(),
        failover.clone(),
        results_tx.clone(),
        shutdown.clone(),
    ));
    let act = |effects| carry_out(&consensus, &identity, &agent, &events, &results_tx, effects);
    let mut renewed_at = Instant::now();
    for input in first {
        act(failover.step(input));
    }
    loop {
        let input = tokio::select! {
            changed = metrics.changed() => {
                if !changed { break }
                Input::Raft(consensus.raft_view(failover.origin))
            }
            Some(result) = results.recv() => result,
            Some(Command::Switchover { to, reply }) = commands.recv() => {
                let effects = failover.step(Input::Switchover { to });
                let refused = effects.iter().find_map(|e| match e {
                    Effect::Event(ControllerEvent::SwitchoverRefused { reason }) => Some(reason.to_string()),
                    _ => None,
                });
                let _ = reply.send(refused.map_or(Ok(()), Err));
                act(effects);
                continue;
            }
            _ = tokio::time::sleep(failover.until_next_step()) => Input::Raft(consensus.raft_view(failover.origin)),
            _ = shutdown.changed() => break,
        };
        act(failover.step(input));

        let activation = consensus.activation();
        if activation != seen_activation {
            seen_activation = activation.clone();
            act(failover.step(Input::Committed(activation)));
        }
        // Level-triggered: while the lease holds, the VIP's lifetime is renewed just after a
        // quorum ack (and a VIP removed by someone else is added back). A frozen process renews
        // nothing.
        if identity.is_held() && renewed_at.elapsed() >= VIP_RENEW_INTERVAL && failover.may_renew_identity() {
            identity.renew();
            renewed_at = Instant::now();
        }
    }
    // Stopping: nothing is served from here on; let go of every resource.
    checks.abort();
    identity.drop_now();
    if let Err(e) = agent.release().await {
        tracing::error!(error = %e, "releasing resources at shutdown failed");
    }
    tracing::info!("failover driver stopped; holding nothing");
}

/// How often the check schedule is looked at.
pub const CHECK_TICK: Duration = Duration::from_millis(50);

/// While the resources are held, run each configured check every `check.interval`; a failure
/// is reported to the controller, which starts the resources over.
async fn check_loop(
    agent: Arc<ResourceAgent>,
    failover: Failover,
    results: mpsc::Sender<Input>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut held_in = None;
    let mut next = vec![Instant::now(); agent.resources().len()];
    loop {
        tokio::select! {
            _ = tokio::time::sleep(CHECK_TICK) => {}
            _ = shutdown.changed() => return,
        }
        let held = failover.resources_held();
        if held != held_in {
            held_in = held;
            // The first check one interval after the acquire.
            for (i, r) in agent.resources().iter().enumerate() {
                next[i] = Instant::now() + r.check.as_ref().map_or(Duration::ZERO, |c| c.interval);
            }
        }
        let Some(epoch) = held else { continue };
        for (i, due) in next.iter_mut().enumerate() {
            let Some(check) = &agent.resources()[i].check else {
                continue;
            };
            if Instant::now() < *due {
                continue;
            }
            match agent.check(i, epoch).await {
                None => {} // an acquire or release is running: try again next tick
                Some(Ok(())) => *due = Instant::now() + check.interval,
                Some(Err(e)) => {
                    tracing::warn!(%epoch, error = %e, "resource check failed; starting the resources over");
                    *due = Instant::now() + check.interval;
                    let _ = results.send(Input::CheckFailed { epoch }).await;
                    break;
                }
            }
        }
    }
}

fn carry_out(
    consensus: &Consensus,
    identity: &Arc<Identity>,
    agent: &Arc<ResourceAgent>,
    events: &EventLog,
    results: &mpsc::Sender<Input>,
    effects: Vec<Effect>,
) {
    for effect in effects {
        match effect {
            Effect::Propose(record) => {
                let consensus = consensus.clone();
                let results = results.clone();
                tokio::spawn(async move {
                    if let Err(e) = consensus.propose(record.clone()).await {
                        tracing::info!(kind = record.kind(), error = %e, "proposal did not commit");
                        let _ = results.send(Input::ProposalFailed(record)).await;
                    }
                });
            }
            Effect::AcquireIdentity { epoch } => {
                identity.take(epoch);
                tracing::info!(%epoch, "identity taken (VIPs up); /health/active answers 200 once the resources are held");
            }
            Effect::DropIdentity => {
                identity.drop_now();
                tracing::info!("identity dropped: VIP removed, /health/active answers 503");
            }
            Effect::AcquireResources { epoch } => {
                // How the service came here, for `tandem_takeovers_total`.
                let me = consensus.config().node_id;
                let how = match consensus
                    .activation()
                    .filter(|a| a.epoch == epoch)
                    .and_then(|a| a.previous)
                {
                    Some(p) if p.node != me && p.released => 1,
                    Some(p) if p.node != me => 2,
                    _ => 0,
                };
                agent.takeovers[how].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (agent, results) = (agent.clone(), results.clone());
                tokio::spawn(async move {
                    let ok = match agent.acquire(epoch).await {
                        Ok(()) => true,
                        Err(e) => {
                            tracing::error!(%epoch, error = %e, "acquiring resources failed");
                            false
                        }
                    };
                    let _ = results.send(Input::Acquired { epoch, ok }).await;
                });
            }
            Effect::ReleaseResources => {
                let (agent, results) = (agent.clone(), results.clone());
                tokio::spawn(async move {
                    let ok = agent.release().await.is_ok();
                    let _ = results.send(Input::Released { ok }).await;
                });
            }
            Effect::TransferLeadership { to } => {
                let consensus = consensus.clone();
                tokio::spawn(async move { consensus.transfer_leadership(to).await });
            }
            Effect::Event(event) => events.record(Kind::Failover, describe(&event)),
        }
    }
}

/// A controller event in words, for the event log.
fn describe(event: &ControllerEvent) -> String {
    match event {
        ControllerEvent::Activated { epoch } => format!("active in epoch {epoch}: identity taken"),
        ControllerEvent::LostActive { epoch, reason } => format!("stopped being active (epoch {epoch}): {reason}"),
        ControllerEvent::TakeoverWait {
            epoch,
            identity_at,
            takeover_at,
        } => format!(
            "epoch {epoch}: waiting out the previous active's lease (identity at {} ms, resources at {} ms after start)",
            identity_at.as_millis(),
            takeover_at.as_millis()
        ),
        ControllerEvent::AcquireFailed { epoch } => {
            format!("acquiring the resources failed in epoch {epoch}; releasing and trying again")
        }
        ControllerEvent::CheckFailed { epoch } => {
            format!("a resource check failed in epoch {epoch}; starting the resources over")
        }
        ControllerEvent::ReleaseFailed => "releasing a resource failed".to_string(),
        ControllerEvent::SwitchoverStarted { to } => format!("switchover to node {to} started: releasing"),
        ControllerEvent::SwitchoverRefused { reason } => format!("switchover refused: {reason}"),
        ControllerEvent::HandOffFailed { epoch } => {
            format!("the hand-off did not happen; activating again in epoch {epoch}")
        }
    }
}
