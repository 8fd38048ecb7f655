//! The properties every simulated run must keep, one file each, each citing the part of
//! DESIGN.md it checks. Each checker is a small state machine fed by the harness after every
//! simulation step (or once at the end, for the properties about the healed cluster), with unit
//! tests on synthetic histories that show it flags the violation it exists for.

pub mod acked_records;
pub mod converges;
pub mod epochs;
pub mod raft_safety;
pub mod single_active;
pub mod stable_active;
pub mod standby_applied;

use std::fmt;
use std::time::Duration;

/// A broken invariant: which, when (simulated time), and what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub invariant: &'static str,
    pub at: Duration,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}] at {:.3}s: {}",
            self.invariant,
            self.at.as_secs_f64(),
            self.detail
        )
    }
}
