//! The faults a seed chooses, and when (DESIGN §9): crashes and restarts of any node,
//! symmetric partitions and one-way link loss, message loss and latency, witness loss, a
//! stalled active, health-check failures on the active, and operator switchovers and forced
//! failovers issued in the middle of the others.

use std::time::Duration;

use tandem_raft_store::NodeId;

use crate::rng::Rng;
use crate::world::NODES;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Crash(NodeId),
    Restart(NodeId),
    /// Both directions between two nodes.
    Partition(NodeId, NodeId),
    Repair(NodeId, NodeId),
    /// Messages from the first node to the second are lost.
    OneWay(NodeId, NodeId),
    RepairOneWay(NodeId, NodeId),
    /// The link between two nodes drops messages (percent chance per message to fail it).
    Loss(NodeId, NodeId, u64),
    NoLoss(NodeId, NodeId),
    /// Up to this many ms of latency on the link.
    Latency(NodeId, NodeId, u64),
    NoLatency(NodeId, NodeId),
    /// The node serving now stops running for this many ms (its tasks, its actions, its
    /// messages), then resumes.
    StallActive(u64),
    Resume(NodeId),
    /// The service's health check fails on the node serving now for this many ms.
    UnhealthyActive(u64),
    Healthy(NodeId),
    Switchover,
    ForcedFailover,
}

/// Longest stall: past the lease, yet within what the release budget covers (a stall beyond
/// it is the watchdog's job, DESIGN §4).
pub const STALL_MS: (u64, u64) = (400, 1200);

/// `node` cut off from both other nodes from `from` until `until`.
pub fn isolation(node: NodeId, from: Duration, until: Duration) -> Vec<(Duration, Fault)> {
    let others = || NODES.iter().map(|(id, _)| *id).filter(move |c| *c != node);
    let cut = others().map(|c| (from, Fault::Partition(node, c)));
    cut.chain(others().map(|c| (until, Fault::Repair(node, c)))).collect()
}

/// A random schedule of faults in `[start, start + phase)`: each fault that starts something
/// also ends it within the phase.
pub fn random(rng: &mut Rng, start: Duration, phase: Duration) -> Vec<(Duration, Fault)> {
    let mut out = Vec::new();
    let end = (start + phase).as_millis() as u64;
    let mut t = start.as_millis() as u64;
    let ids: Vec<NodeId> = NODES.iter().map(|(id, _)| *id).collect();
    loop {
        t += rng.range(200, 2500);
        if t >= end {
            break;
        }
        let a = *rng.pick(&ids);
        let b = *rng.pick(&ids.iter().copied().filter(|x| *x != a).collect::<Vec<_>>());
        let lasting = |rng: &mut Rng, lo, hi| (t + rng.range(lo, hi)).min(end);
        let ms = Duration::from_millis;
        match rng.range(0, 99) {
            0..=14 => {
                out.push((ms(t), Fault::Crash(a)));
                out.push((ms(lasting(rng, 300, 5000)), Fault::Restart(a)));
            }
            15..=34 => {
                out.push((ms(t), Fault::Partition(a, b)));
                out.push((ms(lasting(rng, 200, 5000)), Fault::Repair(a, b)));
            }
            35..=44 => {
                let until = lasting(rng, 200, 5000);
                out.extend(isolation(a, ms(t), ms(until)));
            }
            45..=54 => {
                out.push((ms(t), Fault::OneWay(a, b)));
                out.push((ms(lasting(rng, 200, 4000)), Fault::RepairOneWay(a, b)));
            }
            55..=62 => {
                out.push((ms(t), Fault::Loss(a, b, rng.range(5, 40))));
                out.push((ms(lasting(rng, 500, 4000)), Fault::NoLoss(a, b)));
            }
            63..=70 => {
                out.push((ms(t), Fault::Latency(a, b, rng.range(20, 300))));
                out.push((ms(lasting(rng, 500, 4000)), Fault::NoLatency(a, b)));
            }
            71..=78 => out.push((ms(t), Fault::StallActive(rng.range(STALL_MS.0, STALL_MS.1)))),
            79..=86 => out.push((ms(t), Fault::UnhealthyActive(rng.range(300, 3000)))),
            87..=93 => out.push((ms(t), Fault::Switchover)),
            _ => out.push((ms(t), Fault::ForcedFailover)),
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_stays_in_its_phase_and_depends_only_on_the_seed() {
        let (start, phase) = (Duration::from_secs(3), Duration::from_secs(20));
        let a = random(&mut Rng::new(5), start, phase);
        assert_eq!(a, random(&mut Rng::new(5), start, phase));
        assert_ne!(a, random(&mut Rng::new(6), start, phase));
        assert!(a.iter().all(|(at, _)| *at >= start && *at <= start + phase));
        assert!(a.len() > 5, "{a:?}");
    }
}
