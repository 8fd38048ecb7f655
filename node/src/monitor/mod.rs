//! Health monitors (DESIGN §6): checks of the protected service configured per node, each run
//! on its own schedule while this node's standing puts it in scope.
//!
//! - [`spec`]: the `[[monitors]]` config and its validation;
//! - [`probe`]: running one check against the real target;
//! - this module: the schedule, the counting (`max_failures` in a row make a monitor `failed`,
//!   `rise` passes in a row make it healthy again) and the live state shown to operators;
//! - [`switch`]: what a failed monitor on the active leads to, under the switch policy.

pub mod probe;
pub mod spec;
pub mod switch;

use std::sync::Arc;
use std::sync::Mutex;

use tandem_client::api::MonitorInfo;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::events::EventLog;
use crate::events::Kind;
use crate::unix_ms;
use probe::ProbeState;
use spec::MonitorSpec;
use spec::Scope;

/// What this node is for the service, which decides the monitors in scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// The lease-holding active.
    Active,
    /// A data node that is not active.
    Standby,
    /// The witness, or a node that takes no part: no monitor runs.
    Neither,
}

impl Standing {
    fn runs(self, scope: Scope) -> bool {
        matches!(
            (self, scope),
            (Standing::Active, Scope::Active | Scope::Both) | (Standing::Standby, Scope::Standby | Scope::Both)
        )
    }
}

/// A monitor's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Out of scope on this node right now.
    Idle,
    /// In scope, not run yet.
    Unknown,
    Ok,
    /// Failed fewer than `max_failures` times in a row.
    Failing,
    /// Failed `max_failures` times in a row, and not yet passed `rise` times in a row since.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "idle",
            State::Unknown => "unknown",
            State::Ok => "ok",
            State::Failing => "failing",
            State::Failed => "failed",
        }
    }
}

/// The counting of one monitor, separate from running it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Live {
    pub state: State,
    pub last_result: Option<Result<String, String>>,
    pub last_run_ms: Option<u64>,
    /// How long the last run took.
    pub last_duration: Option<std::time::Duration>,
    pub consecutive_failures: u32,
    pub consecutive_passes: u32,
}

impl Live {
    fn idle() -> Self {
        Self {
            state: State::Idle,
            last_result: None,
            last_run_ms: None,
            last_duration: None,
            consecutive_failures: 0,
            consecutive_passes: 0,
        }
    }

    /// Count one result; returns the state before when it changed.
    pub fn count(&mut self, result: Result<String, String>, max_failures: u32, rise: u32) -> Option<State> {
        let before = self.state;
        match &result {
            Ok(_) => {
                self.consecutive_failures = 0;
                self.consecutive_passes = self.consecutive_passes.saturating_add(1);
                if before != State::Failed || self.consecutive_passes >= rise {
                    self.state = State::Ok;
                }
            }
            Err(_) => {
                self.consecutive_passes = 0;
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.state = if self.consecutive_failures >= max_failures || before == State::Failed {
                    State::Failed
                } else {
                    State::Failing
                };
            }
        }
        self.last_result = Some(result);
        self.last_run_ms = Some(unix_ms());
        (self.state != before).then_some(before)
    }
}

struct Entry {
    spec: MonitorSpec,
    live: Mutex<Live>,
}

/// This node's monitors and their live state.
pub struct Monitors {
    entries: Vec<Entry>,
    events: Arc<EventLog>,
    /// Bumped on every state change, for whoever acts on them.
    changed: watch::Sender<u64>,
}

impl Monitors {
    pub fn new(specs: Vec<MonitorSpec>, events: Arc<EventLog>) -> Arc<Self> {
        Arc::new(Self {
            entries: specs
                .into_iter()
                .map(|spec| Entry {
                    spec,
                    live: Mutex::new(Live::idle()),
                })
                .collect(),
            events,
            changed: watch::channel(0).0,
        })
    }

    pub fn specs(&self) -> impl Iterator<Item = &MonitorSpec> {
        self.entries.iter().map(|e| &e.spec)
    }

    /// Notified after every state change.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn live(&self, i: usize) -> std::sync::MutexGuard<'_, Live> {
        self.entries[i].live.lock().expect("monitor state lock")
    }

    /// Every monitor's state, for the status API.
    pub fn infos(&self) -> Vec<MonitorInfo> {
        self.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let live = self.live(i).clone();
                MonitorInfo {
                    name: e.spec.name.clone(),
                    kind: e.spec.probe.kind().into(),
                    target: e.spec.probe.target(),
                    scope: e.spec.scope.as_str().into(),
                    log_only: e.spec.log_only,
                    state: live.state.as_str().into(),
                    last_result: live.last_result.map(|r| match r {
                        Ok(detail) => detail,
                        Err(reason) => format!("failed: {reason}"),
                    }),
                    last_run_ms: live.last_run_ms,
                    last_duration_us: live
                        .last_duration
                        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
                    consecutive_failures: live.consecutive_failures,
                    max_failures: e.spec.max_failures,
                }
            })
            .collect()
    }

    /// Failed monitors that ask for action (not `log_only`) among `scopes`: (name, scope, why).
    pub fn failed(&self, scopes: &[Scope]) -> Vec<(String, Scope, String)> {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| !e.spec.log_only && scopes.contains(&e.spec.scope))
            .filter_map(|(i, e)| {
                let live = self.live(i);
                (live.state == State::Failed).then(|| {
                    let why = match &live.last_result {
                        Some(Err(reason)) => reason.clone(),
                        _ => "not yet passed `rise` times in a row".into(),
                    };
                    (e.spec.name.clone(), e.spec.scope, why)
                })
            })
            .collect()
    }

    fn set_idle(&self, i: usize) {
        let mut live = self.live(i);
        if live.state != State::Idle {
            *live = Live::idle();
            drop(live);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn enter_scope(&self, i: usize) {
        let mut live = self.live(i);
        *live = Live::idle();
        live.state = State::Unknown;
    }

    fn count(&self, i: usize, result: Result<String, String>, took: std::time::Duration) {
        let spec = &self.entries[i].spec;
        let mut live = self.live(i);
        live.last_duration = Some(took);
        let Some(before) = live.count(result, spec.max_failures, spec.rise) else {
            return;
        };
        let (now, failures) = (live.state, live.consecutive_failures);
        let result = live.last_result.clone();
        drop(live);
        let note = if spec.log_only { " (log only: no action)" } else { "" };
        let detail = match (now, result) {
            (State::Failed, Some(Err(reason))) => format!(
                "{} ({}) failed {failures} times in a row: {reason}{note}",
                spec.name,
                spec.probe.target()
            ),
            (State::Failing, Some(Err(reason))) => format!(
                "{} ({}) failing ({failures}/{}): {reason}{note}",
                spec.name,
                spec.probe.target(),
                spec.max_failures
            ),
            (State::Ok, Some(Ok(detail))) => format!("{} {} -> ok: {detail}", spec.name, before.as_str()),
            (state, _) => format!("{} {} -> {}", spec.name, before.as_str(), state.as_str()),
        };
        // A first pass is no news; everything else is.
        if !(before == State::Unknown && now == State::Ok) {
            self.events.record(Kind::Monitor, detail);
        }
        self.changed.send_modify(|n| *n += 1);
    }

    /// Run every monitor while `standing` puts it in scope, until `shutdown` flips to true.
    pub async fn run(self: Arc<Self>, standing: watch::Receiver<Standing>, shutdown: watch::Receiver<bool>) {
        let tasks: Vec<_> = (0..self.entries.len())
            .map(|i| tokio::spawn(self.clone().run_one(i, standing.clone(), shutdown.clone())))
            .collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    async fn run_one(
        self: Arc<Self>,
        i: usize,
        mut standing: watch::Receiver<Standing>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let spec = self.entries[i].spec.clone();
        let mut probe_state = ProbeState::default();
        loop {
            // Out of scope: idle until the standing changes.
            if !standing.borrow_and_update().runs(spec.scope) {
                self.set_idle(i);
                tokio::select! {
                    r = standing.changed() => if r.is_err() { return },
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                continue;
            }
            // In scope: the first run one interval later (a service just started gets that
            // long to come up), then one every interval.
            self.enter_scope(i);
            let mut next = Instant::now() + spec.interval;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {}
                    r = standing.changed() => {
                        if r.is_err() { return }
                        if !standing.borrow().runs(spec.scope) { break }
                        continue;
                    }
                    _ = shutdown.wait_for(|s| *s) => return,
                }
                let started = Instant::now();
                let result = probe::run(&spec.probe, &mut probe_state, spec.timeout).await;
                let took = started.elapsed();
                // A standing that changed during the run makes its result meaningless here.
                if !standing.borrow().runs(spec.scope) {
                    break;
                }
                self.count(i, result, took);
                next += spec.interval;
                let now = Instant::now();
                if next < now {
                    next = now + spec.interval;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass() -> Result<String, String> {
        Ok("fine".into())
    }

    fn fail() -> Result<String, String> {
        Err("down".into())
    }

    #[test]
    fn max_failures_in_a_row_make_a_monitor_failed_and_rise_passes_heal_it() {
        let mut live = Live::idle();
        live.state = State::Unknown;
        assert_eq!(live.count(fail(), 3, 2), Some(State::Unknown));
        assert_eq!(live.state, State::Failing);
        assert_eq!(live.count(fail(), 3, 2), None);
        assert_eq!(
            live.count(pass(), 3, 2),
            Some(State::Failing),
            "a pass before max_failures clears it"
        );
        assert_eq!(live.state, State::Ok);
        for _ in 0..2 {
            live.count(fail(), 3, 2);
        }
        assert_eq!(live.state, State::Failing);
        assert_eq!(live.count(fail(), 3, 2), Some(State::Failing));
        assert_eq!((live.state, live.consecutive_failures), (State::Failed, 3));
        assert_eq!(live.count(pass(), 3, 2), None, "one pass is not `rise` passes");
        assert_eq!(live.state, State::Failed);
        live.count(fail(), 3, 2);
        live.count(pass(), 3, 2);
        assert_eq!(live.state, State::Failed, "a failure in between starts the rise over");
        assert_eq!(live.count(pass(), 3, 2), Some(State::Failed));
        assert_eq!(live.state, State::Ok);
    }

    #[test]
    fn scopes_follow_the_standing() {
        assert!(Standing::Active.runs(Scope::Active) && Standing::Active.runs(Scope::Both));
        assert!(!Standing::Active.runs(Scope::Standby));
        assert!(Standing::Standby.runs(Scope::Standby) && Standing::Standby.runs(Scope::Both));
        assert!(!Standing::Standby.runs(Scope::Active));
        for s in [Scope::Active, Scope::Standby, Scope::Both] {
            assert!(!Standing::Neither.runs(s));
        }
    }
}
