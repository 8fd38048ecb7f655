//! # tandem-simulation
//!
//! The deterministic simulator of a Tandem cluster (DESIGN §9). It runs the real node
//! ([`tandem_node::run_with`]) on turmoil hosts `a`, `b` (data) and `w` (witness) through the
//! node's seams: the peer transport and the admin API over the simulated network ([`net`]),
//! a recording resource agent ([`agent`]), scripted health checks, and in-memory stores that
//! outlive a crash but lose what was not flushed. A seed chooses the faults ([`faults`]) and
//! the workload ([`workload`]); the invariants ([`invariants`]) are checked after every
//! simulated millisecond; the same seed gives the same trace.
//!
//! Build only from this directory: `.cargo/config.toml` sets `--cfg tokio_unstable`, which
//! seeds tokio's scheduler and `select!`.

#[cfg(not(tokio_unstable))]
compile_error!("tandem-simulation needs --cfg tokio_unstable for deterministic scheduling: run cargo from simulation/ (see .cargo/config.toml)");

pub mod agent;
pub mod cluster;
pub mod faults;
pub mod invariants;
pub mod net;
pub mod rng;
pub mod scenarios;
pub mod workload;
pub mod world;

/// The command that reproduces a seed's run: same profile (debug builds also run openraft's
/// own state checks), same mutant.
pub fn reproduce(seed: u64) -> String {
    let mut cmd = String::from("cd simulation && cargo run");
    if !cfg!(debug_assertions) {
        cmd.push_str(" --release");
    }
    match tandem_raft_store::mutant::active() {
        Some(m) => format!("{cmd} --features mutants -- --seed {seed} --mutant {m}"),
        None => format!("{cmd} -- --seed {seed}"),
    }
}
