//! Named scenarios from real incidents: fixed fault plans on a fixed seed, each asserted by a
//! test in `tests/scenarios.rs` on top of the invariants. At the start `a` is the active (the
//! cluster is initialized through it and it wins the first election).

use std::time::Duration;

use crate::cluster::Plan;
use crate::faults::isolation;
use crate::faults::Fault;

const fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// The active `a` is cut off from both other nodes for 8 s. It keeps running its service
/// until its lease ends, and must have released it before the standby acquires.
pub fn isolated_active(seed: u64) -> Plan {
    Plan {
        seed,
        faults: isolation(1, s(6), s(14)),
        heal_at: s(20),
    }
}

/// The standby `b` is cut off from the active while the active and the witness commit
/// writes; then the active dies. The witness holds entries `b` lacks, so `b` cannot win an
/// election: the witness must, bring `b` up to date and hand leadership over (no deadlock).
pub fn witness_holds_what_the_standby_lacks(seed: u64) -> Plan {
    Plan {
        seed,
        faults: vec![
            (s(6), Fault::Partition(1, 2)),
            (s(8), Fault::Crash(1)),
            (s(8), Fault::Repair(1, 2)),
        ],
        heal_at: s(24),
    }
}

/// The active `a` crashes and is back 300 ms later, before anyone noticed. It must not take
/// its old leadership back without an election (DESIGN §3, `enable_leader_restore = false`)
/// and may serve again only in a newer epoch.
pub fn restarted_ex_leader(seed: u64) -> Plan {
    Plan {
        seed,
        faults: vec![(s(6), Fault::Crash(1)), (s(6) + ms(300), Fault::Restart(1))],
        heal_at: s(16),
    }
}

/// The standby `b` loses contact with both other nodes for 3 s, then comes back. With
/// pre-vote it must not depose the healthy active `a`.
pub fn standby_blip(seed: u64) -> Plan {
    Plan {
        seed,
        faults: isolation(2, s(6), s(9)),
        heal_at: s(16),
    }
}
