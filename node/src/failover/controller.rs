//! The failover controller: DESIGN §4 as a pure state machine.
//!
//! Time is a [`Duration`] since this node process started; the caller passes `now` with every
//! step and carries out the returned [`Effect`]s in order. A node is **active** only while
//! all of these hold (DESIGN §4):
//! 1. it is Raft leader at term `T` and has had a quorum acknowledgement since it started;
//! 2. `now < lease_until`, where `lease_until = last_quorum_ack + lease`;
//! 3. the committed activation is `Activate { node: me, epoch: T }`.
//!
//! **Letting go.** The moment a condition fails, the identity is dropped (VIP removed,
//! `/health/active` → 503), then the resources are released (in reverse order, by the agent).
//!
//! **Taking over.** Once its own activation is committed, a new active decides how long to wait
//! from the activation it replaced (recorded by the state machine, so a lagging apply at the
//! moment of election cannot mislead it). No wait if there was none or it committed `Released`.
//! Otherwise it bounds when the previous active's lease ended by the moment this node became
//! leader, less the [`ControllerConfig::vote_lease_margin`]: the quorum that elected this node
//! shares a voter with the quorum that last acknowledged the previous active, that voter (or
//! the previous active itself, as leader) refused every vote for openraft's vote lease
//! (`election_timeout_max`) after that acknowledgement, and the previous active's lease ran
//! for only `lease` from it. Both intervals are measured on other clocks, hence the drift terms.
//!
//! The last time this node itself heard from the previous active is **not** a bound: while this
//! node was cut off, the previous active may have kept its lease through the witness.
//!
//! The identity is taken at `lease_end + identity_wait + drift_margin` (`identity_wait` covers
//! the VIP's kernel lifetime), exclusive resources at
//! `lease_end + release_budget + drift_margin`.

use std::time::Duration;

use tandem_raft_store::mutant;
use tandem_raft_store::mutant::Mutant;
use tandem_raft_store::records::Record;
use tandem_raft_store::state::Activation;
use tandem_raft_store::state::PreviousActivation;
use tandem_raft_store::Epoch;
use tandem_raft_store::MemberRole;
use tandem_raft_store::NodeId;

/// Timers the controller works with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerConfig {
    pub node: NodeId,
    pub role: MemberRole,
    pub lease: Duration,
    /// Worst case from lease expiry to every resource released (DESIGN §4).
    pub release_budget: Duration,
    /// Allowance for clock-rate drift between the nodes.
    pub drift_margin: Duration,
    /// After the previous active's lease ended, how long until its identity is surely gone:
    /// the VIP's kernel lifetime plus a margin (zero without a VIP).
    pub identity_wait: Duration,
    /// How long before this node became leader the previous active's lease surely ended:
    /// `vote_lease × (1 − ρ) − lease × (1 + ρ)` (zero if negative), see the module docs.
    pub vote_lease_margin: Duration,
    /// How long a leader whose own activation was released (a hand-off) waits for the target to
    /// take the lead before it activates again, so the service is never left without an active.
    pub handoff_grace: Duration,
}

/// Raft's state as the controller needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRole {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

/// One observation of Raft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftView {
    pub role: RaftRole,
    pub term: u64,
    pub leader: Option<NodeId>,
    /// When a quorum last acknowledged this leader; `None` until the first acknowledgement
    /// of this process.
    pub last_quorum_ack: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Time passed; nothing else changed.
    Tick,
    /// A new view of Raft (after every metrics change).
    Raft(RaftView),
    /// The committed activation changed (or was read at start).
    Committed(Option<Activation>),
    /// The resource agent finished acquiring for `epoch`: all resources (`ok`) or not.
    Acquired { epoch: Epoch, ok: bool },
    /// A held resource's check failed in `epoch`.
    CheckFailed { epoch: Epoch },
    /// The resource agent finished releasing every resource.
    Released { ok: bool },
    /// Operator: hand the service to `to` (planned switchover; the caller checked `to` is synced).
    Switchover { to: NodeId },
    /// A proposal of ours did not commit (lost leadership, timeout); it may be proposed again.
    ProposalFailed(Record),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Propose a record through the log.
    Propose(Record),
    /// Take the network identity (VIP, `/health/active` → 200).
    AcquireIdentity { epoch: Epoch },
    /// Acquire the exclusive resources, in order.
    AcquireResources { epoch: Epoch },
    /// Drop the network identity at once (VIP removed, `/health/active` → 503).
    DropIdentity,
    /// Release every resource, in reverse order, each within its timeout.
    ReleaseResources,
    /// Ask Raft to hand leadership to `to`.
    TransferLeadership { to: NodeId },
    /// Something an operator should see.
    Event(ControllerEvent),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControllerEvent {
    Activated {
        epoch: Epoch,
    },
    LostActive {
        epoch: Epoch,
        reason: &'static str,
    },
    TakeoverWait {
        epoch: Epoch,
        identity_at: Duration,
        takeover_at: Duration,
    },
    AcquireFailed {
        epoch: Epoch,
    },
    /// A held resource's check failed: everything is released and acquired again.
    CheckFailed {
        epoch: Epoch,
    },
    ReleaseFailed,
    SwitchoverStarted {
        to: NodeId,
    },
    SwitchoverRefused {
        reason: &'static str,
    },
    /// Still leader `handoff_grace` after releasing: the hand-off did not happen.
    HandOffFailed {
        epoch: Epoch,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resources {
    None,
    Acquiring(Epoch),
    Held(Epoch),
    /// Release was asked; waiting for the agent.
    Releasing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Waits {
    epoch: Epoch,
    identity_at: Duration,
    takeover_at: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Switchover {
    to: NodeId,
    epoch: Epoch,
    released_proposed: bool,
}

#[derive(Debug)]
pub struct Controller {
    cfg: ControllerConfig,
    raft: Option<RaftView>,
    /// (role, term, leader) of the last view: a change of any part is a new leadership, so a
    /// coalesced leader→follower→leader still shows up, as a new term.
    leadership_key: Option<(RaftRole, u64, Option<NodeId>)>,
    /// When this node became leader of the current term.
    leader_since: Option<(u64, Duration)>,
    activation: Option<Activation>,
    proposed_for: Option<u64>,
    waits: Option<Waits>,
    identity_held: Option<Epoch>,
    /// When the identity was taken.
    identity_since: Option<Duration>,
    resources: Resources,
    switchover: Option<Switchover>,
    /// When this node, still leader, first saw its own activation of the current term released.
    released_seen: Option<(Epoch, Duration)>,
}

impl Controller {
    /// A controller for a node that just started: standby and holding nothing, whatever the
    /// committed activation says (a restarted ex-active must win an election again).
    pub fn new(cfg: ControllerConfig) -> Self {
        Self {
            cfg,
            raft: None,
            leadership_key: None,
            leader_since: None,
            activation: None,
            proposed_for: None,
            waits: None,
            identity_held: None,
            identity_since: None,
            resources: Resources::None,
            switchover: None,
            released_seen: None,
        }
    }

    /// The epoch this node is active in at `now`, if all three conditions of DESIGN §4 hold.
    pub fn active_epoch(&self, now: Duration) -> Option<Epoch> {
        let raft = self.raft?;
        if raft.role != RaftRole::Leader || self.cfg.role != MemberRole::Data {
            return None;
        }
        let ack = raft.last_quorum_ack?;
        if now >= ack + self.cfg.lease && !mutant::on(Mutant::NoLeaseCheck) {
            return None;
        }
        match &self.activation {
            Some(a) if a.node == self.cfg.node && a.epoch == raft.term && !a.released => Some(a.epoch),
            _ => None,
        }
    }

    /// Whether `/health/active` may answer 200: active and holding the identity.
    pub fn serves(&self, now: Duration) -> bool {
        self.active_epoch(now).is_some_and(|e| self.identity_held == Some(e))
    }

    /// Whether this node is between roles: a switchover under way, resources being acquired or
    /// released, or active but still waiting out the previous active's lease.
    pub fn switching(&self, now: Duration) -> bool {
        self.switchover.is_some()
            || matches!(self.resources, Resources::Acquiring(_) | Resources::Releasing)
            || (self.active_epoch(now).is_some() && self.resources_held().is_none())
    }

    /// Since when this node serves (took its identity), while it does.
    pub fn serving_since(&self, now: Duration) -> Option<Duration> {
        self.identity_since.filter(|_| self.serves(now))
    }

    /// The epoch the resources are held in (all acquired), if they are.
    pub fn resources_held(&self) -> Option<Epoch> {
        match self.resources {
            Resources::Held(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the identity's lifetime may be renewed now: this node serves, and the quorum
    /// acknowledgement its lease counts from was sent at most `window` ago. Renewing only then
    /// bounds the last renewal by `lease_end − (lease − window)`, which the standby's
    /// `identity_wait` counts on.
    pub fn may_renew_identity(&self, now: Duration, window: Duration) -> bool {
        self.serves(now)
            && self
                .raft
                .and_then(|r| r.last_quorum_ack)
                .is_some_and(|ack| now <= ack + window)
    }

    /// The next time the controller must be stepped even if no input arrives.
    pub fn next_deadline(&self, now: Duration) -> Option<Duration> {
        let mut times = Vec::with_capacity(3);
        if let Some(ack) = self.raft.and_then(|r| r.last_quorum_ack) {
            times.push(ack + self.cfg.lease);
        }
        if let Some(w) = self.waits.filter(|w| self.active_epoch(now) == Some(w.epoch)) {
            times.extend([w.identity_at, w.takeover_at]);
        }
        if let Some((_, seen)) = self.released_seen {
            times.push(seen + self.cfg.handoff_grace);
        }
        times.into_iter().filter(|t| *t > now).min()
    }

    pub fn step(&mut self, now: Duration, input: Input) -> Vec<Effect> {
        let mut effects = Vec::new();
        match input {
            Input::Tick => {}
            Input::Raft(view) => self.on_raft(now, view),
            Input::Committed(a) => self.activation = a,
            Input::Acquired { epoch, ok } => {
                if self.resources == Resources::Acquiring(epoch) {
                    if ok {
                        self.resources = Resources::Held(epoch);
                    } else {
                        // Level-triggered: release what the failed acquire left, retry later.
                        effects.push(Effect::Event(ControllerEvent::AcquireFailed { epoch }));
                        effects.push(Effect::ReleaseResources);
                        self.resources = Resources::Releasing;
                    }
                }
            }
            Input::CheckFailed { epoch } => {
                if self.resources == Resources::Held(epoch) {
                    // Level-triggered: start the resources over, as after a failed acquire.
                    effects.push(Effect::Event(ControllerEvent::CheckFailed { epoch }));
                    effects.push(Effect::ReleaseResources);
                    self.resources = Resources::Releasing;
                }
            }
            Input::Released { ok } => {
                if !ok {
                    effects.push(Effect::Event(ControllerEvent::ReleaseFailed));
                }
                if self.resources == Resources::Releasing {
                    self.resources = Resources::None;
                }
            }
            Input::Switchover { to } => self.on_switchover(now, to, &mut effects),
            Input::ProposalFailed(record) => match record {
                Record::Activate { epoch, .. } if self.proposed_for == Some(epoch) => self.proposed_for = None,
                // A failed re-activation is tried again after another grace period.
                Record::Activate { epoch, .. } if self.released_seen.is_none() => {
                    self.released_seen = Some((epoch, now));
                }
                Record::Released { epoch, .. } => {
                    if let Some(s) = self.switchover.as_mut().filter(|s| s.epoch == epoch) {
                        s.released_proposed = false;
                    }
                }
                _ => {}
            },
        }
        self.reconcile(now, &mut effects);
        effects
    }

    fn on_raft(&mut self, now: Duration, view: RaftView) {
        let key = (view.role, view.term, view.leader);
        if self.leadership_key != Some(key) {
            self.leadership_key = Some(key);
            self.leader_since = (view.role == RaftRole::Leader).then_some((view.term, now));
        }
        self.raft = Some(view);
    }

    fn on_switchover(&mut self, now: Duration, to: NodeId, effects: &mut Vec<Effect>) {
        let refuse = |reason| Effect::Event(ControllerEvent::SwitchoverRefused { reason });
        let Some(epoch) = self.active_epoch(now) else {
            effects.push(refuse("this node is not the active"));
            return;
        };
        if to == self.cfg.node {
            effects.push(refuse("the target is already the active"));
        } else if self.switchover.is_some() {
            effects.push(refuse("a switchover is already in progress"));
        } else {
            effects.push(Effect::Event(ControllerEvent::SwitchoverStarted { to }));
            self.switchover = Some(Switchover {
                to,
                epoch,
                released_proposed: false,
            });
        }
    }

    /// How long a new active at `epoch` waits, from the activation it replaced.
    fn waits_for(&self, epoch: Epoch, previous: Option<PreviousActivation>, now: Duration) -> Waits {
        let immediate = Waits {
            epoch,
            identity_at: now,
            takeover_at: now,
        };
        if previous.is_none_or(|p| p.released) || mutant::on(Mutant::NoTakeoverWait) {
            return immediate;
        }
        let Some((_, since)) = self.leader_since.filter(|(term, _)| *term == epoch) else {
            return immediate; // not leader of this epoch: never acquires anyway
        };
        let lease_end = since.saturating_sub(self.cfg.vote_lease_margin);
        Waits {
            epoch,
            identity_at: lease_end + self.cfg.identity_wait + self.cfg.drift_margin,
            takeover_at: lease_end + self.cfg.release_budget + self.cfg.drift_margin,
        }
    }

    /// Level-triggered: compare what is held with what may be held, emit what closes the gap.
    fn reconcile(&mut self, now: Duration, effects: &mut Vec<Effect>) {
        // A planned switchover whose `Released` committed hands leadership over.
        if let (Some(s), Some(a)) = (self.switchover, &self.activation) {
            if a.released && a.epoch == s.epoch && a.node == self.cfg.node {
                effects.push(Effect::TransferLeadership { to: s.to });
                self.switchover = None;
            }
        }
        let active = self.active_epoch(now);
        if self.switchover.is_some_and(|s| Some(s.epoch) != active) {
            // Leadership or lease moved on: the switchover ended one way or another.
            self.switchover = None;
        }
        let keep = active.filter(|_| self.switchover.is_none());

        // Letting go comes first: the identity at once, then the resources.
        if let Some(held) = self.identity_held.filter(|h| keep != Some(*h)) {
            effects.push(Effect::DropIdentity);
            self.identity_held = None;
            if self.switchover.is_none() {
                let reason = if active.is_some() {
                    "activation superseded"
                } else if self.raft.is_some_and(|r| r.role == RaftRole::Leader) {
                    "lease expired or activation not committed"
                } else {
                    "no longer leader"
                };
                effects.push(Effect::Event(ControllerEvent::LostActive { epoch: held, reason }));
            }
        }
        if let Resources::Held(e) | Resources::Acquiring(e) = self.resources {
            if keep != Some(e) {
                effects.push(Effect::ReleaseResources);
                self.resources = Resources::Releasing;
            }
        }

        // Planned switchover: once everything is released, commit `Released`.
        if let Some(s) = self.switchover.as_mut() {
            if !s.released_proposed && self.identity_held.is_none() && self.resources == Resources::None {
                effects.push(Effect::Propose(Record::Released {
                    node: self.cfg.node,
                    epoch: s.epoch,
                }));
                s.released_proposed = true;
            }
        }

        let Some(raft) = self.raft else { return };
        // A hand-off that did not happen: still leader of the released epoch after the grace.
        let released_here = raft.role == RaftRole::Leader
            && self
                .activation
                .as_ref()
                .is_some_and(|a| a.node == self.cfg.node && a.epoch == raft.term && a.released);
        if !released_here || self.switchover.is_some() {
            self.released_seen = None;
        } else if let Some((epoch, seen)) = self.released_seen {
            if now >= seen + self.cfg.handoff_grace {
                effects.push(Effect::Event(ControllerEvent::HandOffFailed { epoch }));
                effects.push(Effect::Propose(Record::Activate {
                    node: self.cfg.node,
                    epoch,
                }));
                self.released_seen = None;
            }
        } else {
            self.released_seen = Some((raft.term, now));
        }

        // A data-node leader with a quorum acknowledgement proposes its activation, once a term.
        if raft.role == RaftRole::Leader
            && self.cfg.role == MemberRole::Data
            && raft.last_quorum_ack.is_some()
            && self.proposed_for != Some(raft.term)
            && !self
                .activation
                .as_ref()
                .is_some_and(|a| a.node == self.cfg.node && a.epoch == raft.term)
        {
            effects.push(Effect::Propose(Record::Activate {
                node: self.cfg.node,
                epoch: raft.term,
            }));
            self.proposed_for = Some(raft.term);
        }

        // Taking over, after the waits of the activation just committed.
        let Some(epoch) = keep else { return };
        if self.waits.is_none_or(|w| w.epoch != epoch) {
            let previous = self.activation.as_ref().and_then(|a| a.previous);
            let w = self.waits_for(epoch, previous, now);
            if w.takeover_at > now || w.identity_at > now {
                effects.push(Effect::Event(ControllerEvent::TakeoverWait {
                    epoch,
                    identity_at: w.identity_at,
                    takeover_at: w.takeover_at,
                }));
            }
            self.waits = Some(w);
        }
        let w = self.waits.expect("set above");
        if self.identity_held.is_none() && now >= w.identity_at {
            effects.push(Effect::AcquireIdentity { epoch });
            effects.push(Effect::Event(ControllerEvent::Activated { epoch }));
            self.identity_held = Some(epoch);
            self.identity_since = Some(now);
        }
        if self.resources == Resources::None && now >= w.takeover_at {
            effects.push(Effect::AcquireResources { epoch });
            self.resources = Resources::Acquiring(epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: NodeId = 1;
    const OTHER: NodeId = 2;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn cfg(role: MemberRole) -> ControllerConfig {
        ControllerConfig {
            node: ME,
            role,
            lease: ms(340),
            release_budget: ms(1000),
            drift_margin: ms(20),
            identity_wait: ms(1100),
            vote_lease_margin: ms(440),
            handoff_grace: ms(1600),
        }
    }

    fn leader(term: u64, ack: Option<u64>) -> Input {
        Input::Raft(RaftView {
            role: RaftRole::Leader,
            term,
            leader: Some(ME),
            last_quorum_ack: ack.map(ms),
        })
    }

    fn follower(term: u64, leader: Option<NodeId>) -> Input {
        Input::Raft(RaftView {
            role: RaftRole::Follower,
            term,
            leader,
            last_quorum_ack: None,
        })
    }

    fn activation(node: NodeId, epoch: Epoch, previous: Option<(NodeId, Epoch, bool)>) -> Input {
        Input::Committed(Some(Activation {
            node,
            epoch,
            since_index: 1,
            released: false,
            previous: previous.map(|(node, epoch, released)| PreviousActivation { node, epoch, released }),
        }))
    }

    /// This node's activation at `epoch`, committed as released.
    fn released_activation(epoch: Epoch) -> Input {
        Input::Committed(Some(Activation {
            node: ME,
            epoch,
            since_index: 1,
            released: true,
            previous: None,
        }))
    }

    /// What an active that may take everything at once does.
    fn takes_everything(epoch: Epoch) -> Vec<Effect> {
        vec![Effect::AcquireIdentity { epoch }, Effect::AcquireResources { epoch }]
    }

    fn activate(epoch: Epoch) -> Effect {
        Effect::Propose(Record::Activate { node: ME, epoch })
    }

    fn without_events(effects: Vec<Effect>) -> Vec<Effect> {
        effects.into_iter().filter(|e| !matches!(e, Effect::Event(_))).collect()
    }

    /// A controller that is the active of epoch 5 (first activation ever), holding everything.
    fn active_at_epoch_5() -> Controller {
        let mut c = Controller::new(cfg(MemberRole::Data));
        c.step(ms(0), leader(5, Some(0)));
        c.step(ms(1), activation(ME, 5, None));
        c.step(ms(2), Input::Acquired { epoch: 5, ok: true });
        assert_eq!(c.active_epoch(ms(2)), Some(5));
        assert!(c.serves(ms(2)));
        c
    }

    #[test]
    fn the_identity_is_renewed_only_just_after_a_quorum_ack() {
        let mut c = active_at_epoch_5();
        let window = ms(60);
        assert!(c.may_renew_identity(ms(60), window), "ack at 0, within the window");
        assert!(
            !c.may_renew_identity(ms(61), window),
            "still active, but the ack is too old"
        );
        c.step(ms(300), leader(5, Some(290)));
        assert!(c.may_renew_identity(ms(300), window));
        // Lease over (290 + 340): no renewal, whatever the window.
        assert!(!c.may_renew_identity(ms(630), ms(1000)));
        // A standby never renews.
        let standby = Controller::new(cfg(MemberRole::Data));
        assert!(!standby.may_renew_identity(ms(0), window));
    }

    #[test]
    fn a_data_leader_proposes_its_activation_once_per_term() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        assert_eq!(c.step(ms(0), leader(3, Some(0))), vec![activate(3)]);
        assert_eq!(c.step(ms(10), Input::Tick), vec![], "not proposed twice");
        assert_eq!(
            c.step(ms(20), leader(3, Some(20))),
            vec![],
            "a fresher ack is the same leadership"
        );
    }

    #[test]
    fn a_failed_activation_proposal_is_made_again() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        assert_eq!(c.step(ms(0), leader(3, Some(0))), vec![activate(3)]);
        let retry = c.step(ms(10), Input::ProposalFailed(Record::Activate { node: ME, epoch: 3 }));
        assert_eq!(retry, vec![activate(3)]);
        // A failure for an older term does not cause a proposal for it.
        assert_eq!(
            c.step(ms(20), Input::ProposalFailed(Record::Activate { node: ME, epoch: 2 })),
            vec![]
        );
    }

    #[test]
    fn no_quorum_acknowledgement_since_start_means_no_activation() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        assert_eq!(c.step(ms(0), leader(3, None)), vec![]);
        c.step(ms(1), activation(ME, 3, None));
        assert_eq!(c.active_epoch(ms(1)), None, "condition 1: a quorum ack since start");
        assert_eq!(without_events(c.step(ms(5), leader(3, Some(5)))), takes_everything(3));
    }

    #[test]
    fn nothing_is_acquired_before_the_activation_commits() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        c.step(ms(0), leader(3, Some(0)));
        assert_eq!(c.step(ms(50), Input::Tick), vec![]);
        assert_eq!(c.active_epoch(ms(50)), None, "condition 3: Activate committed");
        // Someone else's activation at another epoch does not count either.
        assert_eq!(c.step(ms(60), activation(OTHER, 2, None)), vec![]);
        let effects = c.step(ms(70), activation(ME, 3, Some((OTHER, 2, true))));
        assert_eq!(without_events(effects), takes_everything(3));
    }

    #[test]
    fn lease_expiry_drops_the_identity_before_releasing_resources() {
        let mut c = active_at_epoch_5();
        // Last ack at 0 ms, lease 340 ms: still active at 339, not at 340 (condition 2).
        assert_eq!(c.step(ms(339), Input::Tick), vec![]);
        assert_eq!(c.next_deadline(ms(339)), Some(ms(340)));
        assert_eq!(
            c.step(ms(340), Input::Tick),
            vec![
                Effect::DropIdentity,
                Effect::Event(ControllerEvent::LostActive {
                    epoch: 5,
                    reason: "lease expired or activation not committed"
                }),
                Effect::ReleaseResources,
            ]
        );
        assert!(!c.serves(ms(340)));
        // A fresh acknowledgement re-establishes the lease: identity and resources come back
        // once the release finished (level-triggered).
        assert_eq!(
            without_events(c.step(ms(400), leader(5, Some(400)))),
            vec![Effect::AcquireIdentity { epoch: 5 }]
        );
        assert_eq!(
            c.step(ms(410), Input::Released { ok: true }),
            vec![Effect::AcquireResources { epoch: 5 }]
        );
    }

    #[test]
    fn losing_leadership_lets_go_at_once() {
        let mut c = active_at_epoch_5();
        let effects = c.step(ms(100), follower(6, Some(OTHER)));
        assert_eq!(
            without_events(effects),
            vec![Effect::DropIdentity, Effect::ReleaseResources]
        );
        assert_eq!(c.active_epoch(ms(100)), None);
    }

    #[test]
    fn takeover_waits_for_the_previous_actives_lease_and_release_budget() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        // Standby under active OTHER (epoch 4); elected at 1700 ms; the activation replaced
        // OTHER's unreleased epoch 4.
        c.step(ms(900), follower(4, Some(OTHER)));
        c.step(ms(1700), leader(5, Some(1700)));
        let effects = c.step(ms(1710), activation(ME, 5, Some((OTHER, 4, false))));
        // lease_end = 1700 − 440 = 1260; identity at 1260+1100+20, resources at 1260+1000+20.
        assert_eq!(
            effects,
            vec![Effect::Event(ControllerEvent::TakeoverWait {
                epoch: 5,
                identity_at: ms(2380),
                takeover_at: ms(2280),
            })]
        );
        assert_eq!(c.next_deadline(ms(1710)), Some(ms(2040)), "the lease comes first");
        c.step(ms(2000), leader(5, Some(2000)));
        assert_eq!(c.step(ms(2279), Input::Tick), vec![]);
        assert_eq!(
            c.step(ms(2280), Input::Tick),
            vec![Effect::AcquireResources { epoch: 5 }]
        );
        c.step(ms(2300), leader(5, Some(2300)));
        assert_eq!(c.step(ms(2379), Input::Tick), vec![]);
        assert_eq!(
            without_events(c.step(ms(2380), Input::Tick)),
            vec![Effect::AcquireIdentity { epoch: 5 }]
        );
    }

    #[test]
    fn a_released_previous_activation_skips_the_wait() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        c.step(ms(900), follower(4, Some(OTHER)));
        c.step(ms(1100), leader(5, Some(1100)));
        let effects = c.step(ms(1110), activation(ME, 5, Some((OTHER, 4, true))));
        assert_eq!(without_events(effects), takes_everything(5));
    }

    #[test]
    fn a_term_change_while_leader_is_a_new_leadership() {
        let mut c = active_at_epoch_5();
        // Leader at 5, then (coalesced, unseen) follower, then leader again at 7.
        let effects = c.step(ms(100), leader(7, Some(100)));
        assert_eq!(
            without_events(effects),
            vec![Effect::DropIdentity, Effect::ReleaseResources, activate(7),]
        );
        // Its own epoch-5 activation is replaced by epoch 7: it waits as for any unreleased one.
        let effects = c.step(ms(110), activation(ME, 7, Some((ME, 5, false))));
        assert!(matches!(
            effects.as_slice(),
            [Effect::Event(ControllerEvent::TakeoverWait { epoch: 7, .. })]
        ));
    }

    #[test]
    fn a_restarted_ex_active_starts_as_standby() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        // The committed state says this node is active at epoch 5, but it just started.
        assert_eq!(c.step(ms(0), activation(ME, 5, None)), vec![]);
        assert_eq!(c.step(ms(10), follower(5, None)), vec![]);
        assert_eq!(c.step(ms(500), follower(6, Some(OTHER))), vec![]);
        assert_eq!(c.active_epoch(ms(500)), None);
    }

    #[test]
    fn the_witness_never_activates() {
        let mut c = Controller::new(cfg(MemberRole::Witness));
        assert_eq!(c.step(ms(0), leader(3, Some(0))), vec![]);
        assert_eq!(c.step(ms(1), activation(ME, 3, None)), vec![]);
        assert_eq!(c.active_epoch(ms(1)), None);
    }

    #[test]
    fn a_failed_acquire_is_released_then_retried() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        c.step(ms(0), leader(5, Some(0)));
        c.step(ms(1), activation(ME, 5, None));
        let effects = c.step(ms(2), Input::Acquired { epoch: 5, ok: false });
        assert_eq!(
            effects,
            vec![
                Effect::Event(ControllerEvent::AcquireFailed { epoch: 5 }),
                Effect::ReleaseResources,
            ]
        );
        assert_eq!(c.step(ms(3), Input::Tick), vec![], "no acquire while the release runs");
        assert_eq!(
            c.step(ms(4), Input::Released { ok: true }),
            vec![Effect::AcquireResources { epoch: 5 }]
        );
    }

    #[test]
    fn a_failed_check_starts_the_resources_over() {
        let mut c = active_at_epoch_5();
        // A check result from an older epoch is ignored.
        assert_eq!(c.step(ms(5), Input::CheckFailed { epoch: 4 }), vec![]);
        assert_eq!(
            c.step(ms(10), Input::CheckFailed { epoch: 5 }),
            vec![
                Effect::Event(ControllerEvent::CheckFailed { epoch: 5 }),
                Effect::ReleaseResources,
            ]
        );
        assert!(c.serves(ms(10)), "the identity stays: only the resources start over");
        assert_eq!(
            c.step(ms(20), Input::Released { ok: true }),
            vec![Effect::AcquireResources { epoch: 5 }]
        );
    }

    #[test]
    fn a_planned_switchover_releases_commits_released_then_transfers() {
        let mut c = active_at_epoch_5();
        let effects = c.step(ms(10), Input::Switchover { to: OTHER });
        assert_eq!(
            effects,
            vec![
                Effect::Event(ControllerEvent::SwitchoverStarted { to: OTHER }),
                Effect::DropIdentity,
                Effect::ReleaseResources,
            ]
        );
        assert_eq!(
            c.step(ms(20), Input::Released { ok: true }),
            vec![Effect::Propose(Record::Released { node: ME, epoch: 5 })]
        );
        let released = released_activation(5);
        assert_eq!(c.step(ms(30), released), vec![Effect::TransferLeadership { to: OTHER }]);
        assert_eq!(
            c.step(ms(40), Input::Tick),
            vec![],
            "a released active takes nothing back"
        );
    }

    #[test]
    fn a_leader_still_leading_after_a_hand_off_activates_again() {
        let mut c = active_at_epoch_5();
        c.step(ms(10), Input::Switchover { to: OTHER });
        c.step(ms(20), Input::Released { ok: true });
        let released = released_activation(5);
        assert_eq!(c.step(ms(30), released), vec![Effect::TransferLeadership { to: OTHER }]);
        // The target never took over; this node still leads term 5 with fresh acks.
        c.step(ms(1000), leader(5, Some(1000)));
        assert_eq!(c.step(ms(1629), leader(5, Some(1600))), vec![], "within the grace");
        assert_eq!(c.next_deadline(ms(1629)), Some(ms(1630)));
        assert_eq!(
            c.step(ms(1630), Input::Tick),
            vec![
                Effect::Event(ControllerEvent::HandOffFailed { epoch: 5 }),
                Effect::Propose(Record::Activate { node: ME, epoch: 5 }),
            ]
        );
        // The re-activation replaced a released one: the service comes back at once.
        let effects = c.step(ms(1640), activation(ME, 5, Some((ME, 5, true))));
        assert_eq!(without_events(effects), takes_everything(5));
    }

    #[test]
    fn a_switchover_is_refused_unless_this_node_is_the_active() {
        let mut c = Controller::new(cfg(MemberRole::Data));
        c.step(ms(0), follower(4, Some(OTHER)));
        assert_eq!(
            c.step(ms(1), Input::Switchover { to: OTHER }),
            vec![Effect::Event(ControllerEvent::SwitchoverRefused {
                reason: "this node is not the active"
            })]
        );
        let mut c = active_at_epoch_5();
        assert_eq!(
            c.step(ms(5), Input::Switchover { to: ME }),
            vec![Effect::Event(ControllerEvent::SwitchoverRefused {
                reason: "the target is already the active"
            })]
        );
    }
}
