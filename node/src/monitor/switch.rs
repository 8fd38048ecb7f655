//! What a failed monitor on the active leads to (DESIGN §6): a graceful switchover when the
//! switch policy allows it, otherwise a warning, while the active keeps serving.
//!
//! [`decide`] is the rule, pure; [`run`] applies it on the active whenever a monitor changes
//! state and every [`DECIDE_INTERVAL`] (a policy change can unblock a waiting switch).

use std::sync::Arc;
use std::time::Duration;

use tandem_raft_store::records::AuditEntry;
use tandem_raft_store::records::Policies;
use tandem_raft_store::records::Record;
use tandem_raft_store::state::AUDIT_TRAIL_CAPACITY;
use tandem_raft_store::MemberRole;
use tokio::sync::watch;

use super::spec::Scope;
use crate::cluster::ClusterState;
use crate::cluster::Role;
use crate::cluster::Summary;
use crate::events::Kind;
use crate::unix_ms;

/// How often the decision is taken again while nothing changes.
pub const DECIDE_INTERVAL: Duration = Duration::from_millis(200);
/// The audit-trail action of an automatic switchover (counted by the anti-flap rule).
pub const AUTO_SWITCH_ACTION: &str = "auto-switchover";

/// Everything the decision looks at.
#[derive(Debug, Clone)]
pub struct Situation<'a> {
    /// Failed monitors of this active that ask for action: (name, scope, why).
    pub failed: Vec<(String, Scope, String)>,
    pub policies: &'a Policies,
    pub now_unix_ms: u64,
    /// How long this node has served without a break.
    pub serving_for: Duration,
    /// Automatic switchovers in the audit trail within the policy's window.
    pub recent_auto_switches: u32,
    /// The standby's latest summary, if its link is up.
    pub standby: Option<&'a Summary>,
    pub standby_name: &'a str,
    /// The standby holds every committed record (and acknowledges the leader).
    pub standby_synced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing failed.
    Healthy,
    /// Hand the service to the standby.
    Switch { reason: String },
    /// A failure that policy keeps from being acted on: shown as a warning.
    Wait { warning: String },
}

/// The switch rule of DESIGN §6.
pub fn decide(s: &Situation) -> Decision {
    let Some((name, _, why)) = s.failed.first() else {
        return Decision::Healthy;
    };
    let failure = format!("monitor {name} failed ({why})");
    let wait = |because: String| Decision::Wait {
        warning: format!("{failure}; not switching: {because}"),
    };
    let p = s.policies;
    if p.maintenance {
        return wait("maintenance mode is on".into());
    }
    if !p.auto_switch {
        return wait("auto-switch is off".into());
    }
    if !p.in_window(s.now_unix_ms) {
        let windows: Vec<String> = p.windows.iter().map(|w| w.to_string()).collect();
        return wait(format!("outside the effective windows ({})", windows.join("; ")));
    }
    let Some(standby) = s.standby else {
        return wait(format!("standby {} does not answer heartbeats", s.standby_name));
    };
    if p.only_switch_when_synced && !s.standby_synced {
        return wait(format!("standby {} is not synced", s.standby_name));
    }
    let sick: Vec<&str> = standby
        .monitors
        .iter()
        .filter(|m| m.state == "failed" && !m.log_only && m.scope != "active")
        .map(|m| m.name.as_str())
        .collect();
    if !sick.is_empty() {
        return wait(format!(
            "standby {} fails monitor {} too",
            s.standby_name,
            sick.join(", ")
        ));
    }
    // Scope `both`: the standby must pass the same check, or it is no better.
    for (name, scope, _) in &s.failed {
        if *scope == Scope::Both && !standby.monitors.iter().any(|m| m.name == *name && m.state == "ok") {
            return wait(format!("{name} does not pass on standby {} either", s.standby_name));
        }
    }
    if s.serving_for < Duration::from_secs(p.min_active_secs) {
        return wait(format!(
            "anti-flap: active for {} s, less than min_active_secs ({})",
            s.serving_for.as_secs(),
            p.min_active_secs
        ));
    }
    if s.recent_auto_switches >= p.max_auto_switches {
        return wait(format!(
            "anti-flap: {} automatic switches in the last {} s (max_auto_switches {})",
            s.recent_auto_switches, p.switch_window_secs, p.max_auto_switches
        ));
    }
    Decision::Switch { reason: failure }
}

/// On the active: take the decision whenever a monitor changes and every [`DECIDE_INTERVAL`];
/// start a switchover or raise a warning. Until `shutdown`.
pub async fn run(state: Arc<ClusterState>, mut shutdown: watch::Receiver<bool>) {
    let cfg = state.config();
    let Some(standby) = cfg
        .members
        .iter()
        .find(|m| m.role == MemberRole::Data && m.id != cfg.node_id)
        .cloned()
    else {
        return;
    };
    if cfg.role() != MemberRole::Data {
        return;
    }
    let mut changes = state.monitors.watch();
    let mut shown: Option<String> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(DECIDE_INTERVAL) => {}
            r = changes.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let consensus = state.consensus();
        let failover = state.failover();
        let serving_for = failover.serving_for();
        let decision = match serving_for {
            Some(serving_for) if state.role() == Role::Active => {
                let policies = consensus.policies();
                let now = unix_ms();
                let since = now.saturating_sub(policies.switch_window_secs * 1000);
                let recent = consensus
                    .audit(AUDIT_TRAIL_CAPACITY)
                    .iter()
                    .filter(|a| a.action == AUTO_SWITCH_ACTION && a.at_ms >= since)
                    .count() as u32;
                let summary = state.peer_summary(standby.id);
                decide(&Situation {
                    failed: state.monitors.failed(&[Scope::Active, Scope::Both]),
                    policies: &policies,
                    now_unix_ms: now,
                    serving_for,
                    recent_auto_switches: recent,
                    standby: summary.as_ref(),
                    standby_name: &standby.name,
                    standby_synced: consensus.in_sync(standby.id, cfg.timers.election_timeout_min),
                })
            }
            _ => Decision::Healthy,
        };
        match decision {
            Decision::Healthy => {
                state.set_warning(None);
                shown = None;
            }
            Decision::Wait { warning } => {
                if shown.as_ref() != Some(&warning) {
                    state.events.record(Kind::Warning, warning.clone());
                    shown = Some(warning.clone());
                }
                state.set_warning(Some(warning));
            }
            Decision::Switch { reason } => {
                let epoch = failover.active_epoch().unwrap_or_default();
                let detail = format!("{} -> {} (epoch {epoch}): {reason}", cfg.me().name, standby.name);
                state
                    .events
                    .record(Kind::Failover, format!("automatic switchover {detail}"));
                let entry = AuditEntry {
                    at_ms: unix_ms(),
                    actor: format!("monitor@{}", cfg.me().name),
                    action: AUTO_SWITCH_ACTION.into(),
                    detail,
                };
                if let Err(e) = consensus.propose(Record::Audit(entry)).await {
                    tracing::warn!(error = %e, "could not record the automatic switchover in the audit trail");
                }
                match failover.start_switchover(standby.id).await {
                    Ok(()) => {
                        state.set_warning(None);
                        shown = None;
                    }
                    Err(refused) => {
                        let warning = format!("{reason}; the switchover was refused: {refused}");
                        state.events.record(Kind::Warning, warning.clone());
                        state.set_warning(Some(warning.clone()));
                        shown = Some(warning);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_client::api::MonitorInfo;
    use tandem_raft_store::records::SwitchWindow;

    fn standby(monitors: Vec<(&str, &str, &str)>) -> Summary {
        Summary {
            node: 2,
            role: Role::Standby,
            monitors: monitors
                .into_iter()
                .map(|(name, scope, state)| MonitorInfo {
                    name: name.into(),
                    kind: "http".into(),
                    target: "http GET http://127.0.0.1/".into(),
                    scope: scope.into(),
                    log_only: false,
                    state: state.into(),
                    last_result: None,
                    last_run_ms: None,
                    last_duration_us: None,
                    consecutive_failures: 0,
                    max_failures: 3,
                })
                .collect(),
            links: Vec::new(),
            warning: None,
            standby_behind: None,
            standby_synced: None,
            files: None,
            db: None,
        }
    }

    fn situation<'a>(policies: &'a Policies, standby: Option<&'a Summary>, scope: Scope) -> Situation<'a> {
        Situation {
            failed: vec![("web".into(), scope, "HTTP 500 (expected 200)".into())],
            policies,
            now_unix_ms: 1_795_132_800_000 + 9 * 3_600_000, // a Friday, 09:00 UTC
            serving_for: Duration::from_secs(3600),
            recent_auto_switches: 0,
            standby,
            standby_name: "beta",
            standby_synced: true,
        }
    }

    fn warning(d: Decision) -> String {
        match d {
            Decision::Wait { warning } => warning,
            other => panic!("expected a warning, got {other:?}"),
        }
    }

    #[test]
    fn a_failed_active_with_a_healthy_synced_standby_switches() {
        let p = Policies::default();
        let sb = standby(vec![("web", "both", "ok")]);
        assert_eq!(
            decide(&situation(&p, Some(&sb), Scope::Active)),
            Decision::Switch {
                reason: "monitor web failed (HTTP 500 (expected 200))".into()
            }
        );
        let mut s = situation(&p, Some(&sb), Scope::Both);
        assert!(
            matches!(decide(&s), Decision::Switch { .. }),
            "scope both, passing on the standby"
        );
        s.failed.clear();
        assert_eq!(decide(&s), Decision::Healthy);
    }

    #[test]
    fn each_policy_rule_turns_the_switch_into_a_named_warning() {
        let sb = standby(vec![("web", "both", "ok")]);
        let base = Policies::default();
        let cases: Vec<(Policies, &str)> = vec![
            (
                Policies {
                    maintenance: true,
                    ..base.clone()
                },
                "maintenance mode is on",
            ),
            (
                Policies {
                    auto_switch: false,
                    ..base.clone()
                },
                "auto-switch is off",
            ),
            (
                Policies {
                    windows: vec![SwitchWindow::parse("sat,sun 00:00-24:00").unwrap()],
                    ..base.clone()
                },
                "outside the effective windows (sat,sun 00:00-24:00)",
            ),
        ];
        for (p, expected) in cases {
            let w = warning(decide(&situation(&p, Some(&sb), Scope::Active)));
            assert!(w.contains(expected), "{w}");
            assert!(w.starts_with("monitor web failed"), "{w}");
        }
        let w = warning(decide(&situation(&base, None, Scope::Active)));
        assert!(w.contains("standby beta does not answer heartbeats"), "{w}");

        let mut s = situation(&base, Some(&sb), Scope::Active);
        s.standby_synced = false;
        assert!(warning(decide(&s)).contains("standby beta is not synced"));
        let relaxed = Policies {
            only_switch_when_synced: false,
            ..base.clone()
        };
        s.policies = &relaxed;
        assert!(matches!(decide(&s), Decision::Switch { .. }), "synced-only off");

        let mut s = situation(&base, Some(&sb), Scope::Active);
        s.serving_for = Duration::from_secs(10);
        assert!(warning(decide(&s)).contains("active for 10 s, less than min_active_secs (60)"));
        let mut s = situation(&base, Some(&sb), Scope::Active);
        s.recent_auto_switches = 3;
        assert!(warning(decide(&s)).contains("3 automatic switches in the last 3600 s"));
    }

    #[test]
    fn scope_both_needs_the_standby_to_pass_the_same_check() {
        let p = Policies::default();
        let sb = standby(vec![("web", "both", "failed")]);
        let w = warning(decide(&situation(&p, Some(&sb), Scope::Both)));
        assert!(w.contains("standby beta fails monitor web too"), "{w}");
        for state in ["failing", "unknown", "idle"] {
            let sb = standby(vec![("web", "both", state)]);
            let w = warning(decide(&situation(&p, Some(&sb), Scope::Both)));
            assert!(w.contains("web does not pass on standby beta either"), "{state}: {w}");
        }
        let sb = standby(Vec::new());
        assert!(matches!(
            decide(&situation(&p, Some(&sb), Scope::Both)),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn a_standby_failing_its_own_checks_is_no_target() {
        let p = Policies::default();
        let sb = standby(vec![("disk", "standby", "failed")]);
        let w = warning(decide(&situation(&p, Some(&sb), Scope::Active)));
        assert!(w.contains("standby beta fails monitor disk too"), "{w}");
        let sb = standby(vec![("vip-ping", "active", "failed")]);
        assert!(
            matches!(
                decide(&situation(&p, Some(&sb), Scope::Active)),
                Decision::Switch { .. }
            ),
            "a scope-active monitor's state on the standby means nothing"
        );
    }
}
