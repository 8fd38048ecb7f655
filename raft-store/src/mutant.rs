//! Mutation switches: each removes one safety rule, so the simulator can show that its checker
//! notices (`simulation/tests/mutants.rs`).
//!
//! They exist only in a build with the `mutants` feature, which refuses to compile outside the
//! simulator's build (see the crate root). Without the feature [`on`] is a constant `false` and
//! every switched branch is compiled out. With it, one build carries all of them, all off, and
//! the simulator turns on at most one per process ([`enable`]) before any node starts.

use std::fmt;

/// One safety rule that a mutant removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// The active serves only while `now < lease_until` (DESIGN §4).
    NoLeaseCheck,
    /// A new active waits `lease end + release budget + margin` before it acquires.
    NoTakeoverWait,
    /// Raft pre-vote: a returning node cannot depose a healthy leader.
    NoPreVote,
    /// The apply step fences records from an epoch older than the current activation.
    NoEpochCheck,
    /// The vote and appended entries are flushed before they are acknowledged.
    AckBeforeFlush,
}

impl Mutant {
    pub const ALL: [Mutant; 5] = [
        Mutant::NoLeaseCheck,
        Mutant::NoTakeoverWait,
        Mutant::NoPreVote,
        Mutant::NoEpochCheck,
        Mutant::AckBeforeFlush,
    ];

    /// The name the simulator takes (`--mutant NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Mutant::NoLeaseCheck => "no-lease-check",
            Mutant::NoTakeoverWait => "no-takeover-wait",
            Mutant::NoPreVote => "no-pre-vote",
            Mutant::NoEpochCheck => "no-epoch-check",
            Mutant::AckBeforeFlush => "ack-before-flush",
        }
    }

    pub fn from_name(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for Mutant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether this build carries the switches (the `mutants` feature).
pub const AVAILABLE: bool = cfg!(feature = "mutants");

#[cfg(feature = "mutants")]
static ACTIVE: std::sync::OnceLock<Mutant> = std::sync::OnceLock::new();

/// Why [`enable`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnableError {
    #[error("this build carries no mutation switches (build with the `mutants` feature)")]
    NotInThisBuild,
    #[error("mutant {0} is already on; one mutant per process")]
    AnotherIsOn(Mutant),
}

/// Turn `m` on for the rest of the process. Only one mutant per process: a second, different
/// one is refused.
pub fn enable(m: Mutant) -> Result<(), EnableError> {
    #[cfg(feature = "mutants")]
    return match *ACTIVE.get_or_init(|| m) {
        on if on == m => Ok(()),
        on => Err(EnableError::AnotherIsOn(on)),
    };
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        Err(EnableError::NotInThisBuild)
    }
}

/// The mutant this process runs with, if any.
pub fn active() -> Option<Mutant> {
    #[cfg(feature = "mutants")]
    return ACTIVE.get().copied();
    #[cfg(not(feature = "mutants"))]
    return None;
}

/// Whether `m`'s rule is removed in this process. Always `false` without the `mutants` feature.
#[inline]
pub fn on(m: Mutant) -> bool {
    #[cfg(feature = "mutants")]
    return ACTIVE.get() == Some(&m);
    #[cfg(not(feature = "mutants"))]
    {
        let _ = m;
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_distinct() {
        for m in Mutant::ALL {
            assert_eq!(Mutant::from_name(m.name()), Some(m));
        }
        assert_eq!(Mutant::from_name("no-such-rule"), None);
    }

    #[test]
    fn a_build_without_the_feature_has_every_rule_and_refuses_a_mutant() {
        if !AVAILABLE {
            assert_eq!(enable(Mutant::NoLeaseCheck), Err(EnableError::NotInThisBuild));
            assert!(Mutant::ALL.into_iter().all(|m| !on(m)));
            assert_eq!(active(), None);
        }
    }
}
