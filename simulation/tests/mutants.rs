//! Proof that the checker bites: each mutation switch removes one safety rule from the node,
//! and the simulator must report a violation within [`MUTANT_SEED_BUDGET`] seeds. A mutant that
//! survives fails this test.
//!
//! The test build of the simulator carries every switch, all off (a dev-dependency feature of
//! the node, see Cargo.toml); each test runs that simulator with one `--mutant NAME`.

use std::process::Command;

/// A mutant must be caught within this many seeds.
pub const MUTANT_SEED_BUDGET: u64 = 1000;

fn caught(mutant: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem-simulation"))
        .args(["--mutant", mutant])
        .args(["--seeds", &MUTANT_SEED_BUDGET.to_string(), "--until-violation"])
        .output()
        .expect("the simulator runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The progress line is redrawn with `\r`: its last state and any error after it.
    let stderr = stderr.rsplit('\r').next().unwrap_or_default();
    assert!(
        out.status.success(),
        "mutant {mutant} survived {MUTANT_SEED_BUDGET} seeds (or was refused):\n{stdout}\n{stderr}"
    );
    let found = stdout.lines().find(|l| l.starts_with("violation found")).unwrap_or("");
    let first = stdout.lines().find(|l| l.trim_start().starts_with('[')).unwrap_or("");
    println!("{mutant}: {found}\n  {}", first.trim());
}

#[test]
fn without_the_lease_check_two_nodes_serve_at_once() {
    caught("no-lease-check");
}

#[test]
fn without_the_takeover_wait_the_service_runs_twice() {
    caught("no-takeover-wait");
}

#[test]
fn without_pre_vote_a_returning_node_deposes_a_healthy_active() {
    caught("no-pre-vote");
}

#[test]
fn without_the_epoch_check_on_apply_a_stale_write_is_acknowledged() {
    caught("no-epoch-check");
}

#[test]
fn acknowledging_before_the_flush_loses_committed_entries_in_a_crash() {
    caught("ack-before-flush");
}

/// A name that is not a mutant is refused, with the names there are, and nothing runs.
#[test]
fn an_unknown_mutant_is_refused_with_the_names() {
    let out = Command::new(env!("CARGO_BIN_EXE_tandem-simulation"))
        .args(["--seeds", "1", "--mutant", "no-such-rule"])
        .output()
        .expect("the simulator runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no such mutant") && err.contains("ack-before-flush"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "nothing runs: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
