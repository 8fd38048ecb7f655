//! Pre-vote (DESIGN §3): a standby cut off for longer than an election timeout, then
//! reconnected, must not depose a healthy leader. The cut is real: iptables drops the
//! standby's peer traffic on its own loopback address. Needs root and iptables (tests/run.sh
//! installs it).

use std::time::Duration;

use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;
use tandem_tests::PeerCut;

#[test]
fn a_standby_cut_off_briefly_does_not_depose_a_healthy_leader() {
    let cluster = Cluster::start_initialized(ClusterOptions {
        own_addresses: Some(77),
        ..Default::default()
    })
    .unwrap();
    for id in 1..=3 {
        cluster.write(id, "before the cut").unwrap();
    }
    let s = cluster.snapshot();
    let leader = s.leader_status().unwrap().clone();
    let standby = tandem_tests::other_data_node(&leader.name);
    let standby_term = s.get(standby).unwrap().term;
    assert_eq!(standby_term, leader.term);

    // Cut the standby off for several election timeouts (400–800 ms).
    let cut = PeerCut::isolate(&cluster, standby);
    std::thread::sleep(Duration::from_secs(3));

    // Its pre-votes found no quorum, so it never raised its term.
    let cut_off = cluster.status(standby).unwrap();
    assert_eq!(
        cut_off.term, standby_term,
        "the isolated standby raised its term: {cut_off:#?}"
    );
    // Meanwhile the leader kept working with the witness.
    cluster.write(4, "during the cut").unwrap();

    // Reconnect: the leader stays, in the same term, and the standby catches up.
    drop(cut);
    cluster
        .wait_for("the standby caught up", Duration::from_secs(10), |s| {
            s.agree_on_records(&["a", "b", "w"], 4)
        })
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let s = cluster.snapshot();
    let after = s.leader_status().expect("a leader");
    assert_eq!(after.node_id, leader.node_id, "leader deposed: {s:#?}");
    assert_eq!(after.term, leader.term, "an election happened: {s:#?}");
}
