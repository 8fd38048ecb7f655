//! Runs the [`Controller`] against the live node: feeds it Raft views, the committed
//! activation, leader contacts and the results of its effects, and carries the effects out.
//!
//! The network identity is, for now, `/health/active` (answered from [`Failover::serves`] at
//! request time, so it flips the moment the lease ends). No resources are configured yet:
//! acquiring and releasing "every resource" completes at once. The resource agent (scripts,
//! virtual IP, systemd units) plugs in at [`carry_out`].

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tandem_raft_store::Epoch;
use tokio::sync::mpsc;
use tokio::sync::watch;
use tokio::time::Instant;

use super::controller::Controller;
use super::controller::ControllerConfig;
use super::controller::Effect;
use super::controller::Input;
use crate::consensus::Consensus;

/// Longest time between two steps: the committed activation and leader contacts are polled.
pub const STEP_INTERVAL_MAX: Duration = Duration::from_millis(10);
/// Capacity of the channel that brings effect results back to the controller.
pub const RESULT_CHANNEL_CAPACITY: usize = 64;

/// Shared handle on the controller, for the admin API and the driver.
#[derive(Clone)]
pub struct Failover {
    controller: Arc<Mutex<Controller>>,
    origin: Instant,
}

impl Failover {
    pub fn new(cfg: ControllerConfig) -> Self {
        Self {
            controller: Arc::new(Mutex::new(Controller::new(cfg))),
            origin: Instant::now(),
        }
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Controller> {
        self.controller.lock().expect("failover controller lock")
    }

    /// Whether this node is the lease-holding active holding its identity, right now.
    pub fn serves(&self) -> bool {
        let now = self.now();
        self.lock().serves(now)
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
pub async fn run(consensus: Consensus, failover: Failover, mut shutdown: watch::Receiver<bool>) {
    let (results_tx, mut results) = mpsc::channel::<Input>(RESULT_CHANNEL_CAPACITY);
    let mut metrics = consensus.metrics_watch();
    let contact = consensus.leader_contact().clone();
    let mut seen_contact = contact.last();
    let mut seen_activation = consensus.activation();
    let first = [
        Input::Committed(seen_activation.clone()),
        Input::Raft(consensus.raft_view(failover.origin)),
    ];
    for input in first {
        carry_out(&consensus, &results_tx, failover.step(input));
    }
    loop {
        let input = tokio::select! {
            changed = metrics.changed() => {
                if !changed { break }
                Input::Raft(consensus.raft_view(failover.origin))
            }
            Some(result) = results.recv() => result,
            _ = tokio::time::sleep(failover.until_next_step()) => Input::Raft(consensus.raft_view(failover.origin)),
            _ = shutdown.changed() => break,
        };
        carry_out(&consensus, &results_tx, failover.step(input));

        let activation = consensus.activation();
        if activation != seen_activation {
            seen_activation = activation.clone();
            carry_out(&consensus, &results_tx, failover.step(Input::Committed(activation)));
        }
        let last = contact.last();
        if last != seen_contact {
            seen_contact = last;
            carry_out(&consensus, &results_tx, failover.step(Input::LeaderContact));
        }
    }
    tracing::info!("failover driver stopping; holding nothing from here on");
}

fn carry_out(consensus: &Consensus, results: &mpsc::Sender<Input>, effects: Vec<Effect>) {
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
            Effect::AcquireIdentity { epoch } => tracing::info!(%epoch, "identity taken: /health/active answers 200"),
            Effect::DropIdentity => tracing::info!("identity dropped: /health/active answers 503"),
            // No resources are configured yet: acquiring or releasing all of them is immediate.
            Effect::AcquireResources { epoch } => report(results, Input::Acquired { epoch, ok: true }),
            Effect::ReleaseResources => report(results, Input::Released { ok: true }),
            Effect::TransferLeadership { to } => {
                let consensus = consensus.clone();
                tokio::spawn(async move { consensus.transfer_leadership(to).await });
            }
            Effect::Event(event) => tracing::info!(?event, "failover"),
        }
    }
}

/// Hand a result back to the controller without blocking the driver loop.
fn report(results: &mpsc::Sender<Input>, input: Input) {
    let results = results.clone();
    tokio::spawn(async move {
        let _ = results.send(input).await;
    });
}
