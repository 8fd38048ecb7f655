//! The CI seed set and the determinism check.

use tandem_simulation::cluster;
use tandem_simulation::cluster::Plan;
use tandem_simulation::reproduce;

/// Seeds run by CI on every change (more with `cargo run --release -- --seeds N`).
pub const CI_SEEDS: u64 = 200;

#[test]
fn the_ci_seed_set_keeps_every_invariant() {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let workers: Vec<_> = (0..jobs)
        .map(|j| {
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for seed in (0..CI_SEEDS).filter(|s| s % jobs == j) {
                    let r = cluster::run(&Plan::random(seed));
                    if !r.violations.is_empty() {
                        let lines: Vec<String> = r.violations.iter().map(|v| format!("  {v}")).collect();
                        failures.push(format!(
                            "seed {seed}:\n{}\n  reproduce: {}",
                            lines.join("\n"),
                            reproduce(seed)
                        ));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = workers.into_iter().flat_map(|w| w.join().expect("worker")).collect();
    assert!(
        failures.is_empty(),
        "{} of {CI_SEEDS} seeds failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn the_same_seed_gives_a_byte_identical_trace() {
    for seed in [3, 17] {
        let first = cluster::run(&Plan::random(seed)).trace.join("\n");
        let second = cluster::run(&Plan::random(seed)).trace.join("\n");
        assert!(
            first.lines().count() > 100,
            "a real trace: {} lines",
            first.lines().count()
        );
        assert!(first == second, "seed {seed} gave two different traces");
        // A different seed is a different run.
        assert_ne!(first, cluster::run(&Plan::random(seed + 1000)).trace.join("\n"));
    }
}
