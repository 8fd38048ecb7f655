//! Proof that the checker bites: each mutation switch removes one safety rule from the node,
//! and the simulator must report a violation within [`MUTANT_SEED_BUDGET`] seeds. A mutant that
//! survives fails this test.
//!
//! Each mutant is a separate build of the simulator (`cargo run --features mutant-…`), in
//! its own target directory so it never waits on the lock of the build running this test.

use std::process::Command;

/// A mutant must be caught within this many seeds.
pub const MUTANT_SEED_BUDGET: u64 = 1000;

fn caught(feature: &str) {
    let dir = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO"))
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", format!("{dir}/target/mutants"))
        .args(["run", "--quiet", "--locked", "--features", feature, "--"])
        .args(["--seeds", &MUTANT_SEED_BUDGET.to_string(), "--until-violation"])
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().rev().find(|l| l.starts_with("error")).unwrap_or("");
    assert!(
        out.status.success(),
        "mutant {feature} survived {MUTANT_SEED_BUDGET} seeds (or did not build):\n{stdout}\n{last}"
    );
    let found = stdout.lines().find(|l| l.starts_with("violation found")).unwrap_or("");
    let first = stdout.lines().find(|l| l.trim_start().starts_with('[')).unwrap_or("");
    println!("{feature}: {found}\n  {}", first.trim());
}

#[test]
fn without_the_lease_check_two_nodes_serve_at_once() {
    caught("mutant-no-lease-check");
}

#[test]
fn without_the_takeover_wait_the_service_runs_twice() {
    caught("mutant-no-takeover-wait");
}

#[test]
fn without_pre_vote_a_returning_node_deposes_a_healthy_active() {
    caught("mutant-no-pre-vote");
}

#[test]
fn without_the_epoch_check_on_apply_a_stale_write_is_acknowledged() {
    caught("mutant-no-epoch-check");
}

#[test]
fn acknowledging_before_the_flush_loses_committed_entries_in_a_crash() {
    caught("mutant-ack-before-flush");
}
