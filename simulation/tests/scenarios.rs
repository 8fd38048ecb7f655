//! Named scenarios from real incidents (see `src/scenarios.rs`): every invariant holds, plus
//! what each incident is about.

use std::time::Duration;

use tandem_simulation::cluster;
use tandem_simulation::cluster::Report;
use tandem_simulation::reproduce;
use tandem_simulation::scenarios;
use tandem_simulation::world::LedgerKind;

const SEED: u64 = 42;

fn no_violations(r: &Report) {
    assert!(
        r.violations.is_empty(),
        "violations: {:#?}\nreproduce: {}",
        r.violations,
        reproduce(r.seed)
    );
}

/// When `node` first serves at or after `from`, and in which epoch.
fn first_serving(r: &Report, node: u64, from: Duration) -> Option<(Duration, u64)> {
    r.serving
        .iter()
        .find(|(at, n, e)| *n == node && *at >= from && e.is_some())
        .map(|(at, _, e)| (*at, e.expect("filtered")))
}

#[test]
fn an_isolated_active_releases_before_the_standby_acquires() {
    let r = cluster::run(&scenarios::isolated_active(SEED));
    no_violations(&r);
    let cut = Duration::from_secs(6);
    let released = r
        .ledger
        .iter()
        .find(|e| e.node == 1 && e.at >= cut && e.kind == LedgerKind::ReleaseDone)
        .expect("the isolated active released its service");
    let acquired = r
        .ledger
        .iter()
        .find(|e| e.node == 2 && e.at >= cut && matches!(e.kind, LedgerKind::AcquireStart { .. }))
        .expect("the standby took the service over");
    assert!(
        released.at < acquired.at,
        "a released at {:?}, b acquired at {:?}",
        released.at,
        acquired.at
    );
}

#[test]
fn a_witness_holding_entries_the_standby_lacks_hands_over_instead_of_deadlocking() {
    let plan = scenarios::witness_holds_what_the_standby_lacks(SEED);
    let r = cluster::run(&plan);
    no_violations(&r);
    let crash = Duration::from_secs(8);
    let (at, epoch) = first_serving(&r, 2, crash).expect("b became active while a was down");
    assert!(at < plan.heal_at, "b serves only at {at:?}, after a came back");
    assert!(
        r.trace.iter().any(|l| l.contains("w leads term")),
        "the witness had to lead to bring b up to date"
    );
    assert!(epoch > 1);
}

#[test]
fn a_restarted_ex_leader_does_not_take_its_leadership_back_without_an_election() {
    let r = cluster::run(&scenarios::restarted_ex_leader(SEED));
    no_violations(&r);
    let restart = Duration::from_millis(6300);
    for (at, node, epoch) in r.serving.iter().filter(|(at, _, e)| *at >= restart && e.is_some()) {
        assert!(
            epoch.expect("filtered") > 1,
            "{node} served at {at:?} in the epoch from before the restart"
        );
    }
    assert!(first_serving(&r, 1, restart).is_some() || first_serving(&r, 2, restart).is_some());
}

#[test]
fn a_standby_back_from_a_blip_does_not_depose_the_healthy_active() {
    let r = cluster::run(&scenarios::standby_blip(SEED));
    no_violations(&r);
    let changes: Vec<_> = r
        .serving
        .iter()
        .filter(|(at, _, _)| *at >= Duration::from_secs(5))
        .collect();
    assert!(changes.is_empty(), "the active changed: {changes:?}");
    assert_eq!(first_serving(&r, 1, Duration::ZERO).map(|(_, e)| e), Some(1));
}
