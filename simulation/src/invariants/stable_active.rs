//! **A healthy active is not deposed** (DESIGN §3: with pre-vote, "a standby that lost contact
//! for a moment must not depose a healthy active").
//!
//! An active is healthy while it runs, is not stalled, passes its health check, no operator
//! asked for a hand-off, and it has a clean link (both ways, no loss, no added latency) to a
//! running voter: then it keeps its quorum and its lease. If it stops being active after being
//! healthy for [`HEALTHY_FOR`] and still healthy, something deposed it needlessly.

use std::collections::BTreeMap;
use std::time::Duration;

use tandem_raft_store::NodeId;

use crate::world::name;

/// How long an active must have been healthy before losing the role counts as needless: long
/// enough for connections cut by an earlier fault to be made again.
pub const HEALTHY_FOR: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
pub struct StableActive {
    was_active: BTreeMap<NodeId, bool>,
}

impl StableActive {
    /// One sample: `active` says whether `node` is active now; `healthy_since` is when its
    /// current healthy stretch began (None: not healthy now).
    pub fn sample(
        &mut self,
        now: Duration,
        node: NodeId,
        active: bool,
        healthy_since: Option<Duration>,
    ) -> Result<(), String> {
        let was = self.was_active.insert(node, active).unwrap_or(false);
        match healthy_since {
            Some(since) if was && !active && now.saturating_sub(since) >= HEALTHY_FOR => Err(format!(
                "{} lost the active role though healthy since {:.3}s (running, a clean link to a voter, no operator action)",
                name(node),
                since.as_secs_f64()
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losing_the_role_while_healthy_is_a_violation_but_not_after_a_fault() {
        let s = Duration::from_secs;
        let mut c = StableActive::default();
        c.sample(s(10), 1, true, Some(s(1))).unwrap();
        assert!(c.sample(s(11), 1, false, Some(s(1))).is_err());
        let mut c = StableActive::default();
        c.sample(s(10), 1, true, None).unwrap();
        c.sample(s(11), 1, false, None).unwrap();
        // Healthy again only briefly: not counted.
        c.sample(s(12), 1, true, Some(s(11))).unwrap();
        c.sample(s(13), 1, false, Some(s(11))).unwrap();
    }
}
