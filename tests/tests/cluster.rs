//! The three real processes on loopback: election, replication, failover, restart, witness.

use std::time::Duration;

use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

const SETTLE: Duration = Duration::from_secs(10);

#[test]
fn leader_is_elected_and_records_reach_all_three() {
    // Start three processes and bootstrap through node a.
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let s = cluster.snapshot();
    let leader = s.leader_status().unwrap();
    assert_eq!(leader.kind, "data", "a data node leads");
    assert!(
        s.reachable().all(|n| n.leader == Some(leader.node_id)),
        "everyone agrees on the leader: {s:#?}"
    );

    // Write records through the leader.
    let mut last_index = 0;
    for id in 1..=20 {
        let r = cluster.write(id, &format!("record {id}")).unwrap();
        assert!(r.index > last_index, "indexes grow");
        last_index = r.index;
    }

    // All three apply the same 20 records, in the same order, up to the last index.
    cluster
        .wait_for("all three applied the 20 records", SETTLE, |s| {
            s.agree_on_records(&["a", "b", "w"], 20) && s.reachable().all(|n| n.applied_index >= Some(last_index))
        })
        .unwrap();
}

#[test]
fn killing_the_leader_moves_leadership_to_the_other_data_node_and_the_old_leader_rejoins_as_follower() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    for id in 1..=5 {
        cluster.write(id, "before").unwrap();
    }
    let s = cluster.snapshot();
    let old = s.leader_status().unwrap().clone();
    let old_name = cluster.name_of(old.node_id);
    let other = tandem_tests::other_data_node(old_name);

    // SIGKILL the leader: the other data node leads (the witness may lead briefly, then hands over).
    cluster.kill(old_name);
    let s = cluster
        .wait_for("the other data node leads", SETTLE, |s| {
            s.leader_status().is_some_and(|l| l.name == other && l.term > old.term)
        })
        .unwrap();
    let new_term = s.get(other).unwrap().term;

    // It keeps accepting writes.
    for id in 6..=10 {
        let r = cluster.write(id, "after").unwrap();
        assert_eq!(cluster.name_of(r.leader), other);
    }

    // The killed node restarts, catches up to every record…
    cluster.restart(old_name).unwrap();
    cluster
        .wait_for("the restarted node caught up", SETTLE, |s| {
            s.agree_on_records(&["a", "b", "w"], 10)
        })
        .unwrap();

    // …and never reclaims leadership by restoring its old state: it follows in the new term.
    std::thread::sleep(Duration::from_secs(3));
    let s = cluster.snapshot();
    let restarted = s.get(old_name).unwrap();
    assert_eq!(restarted.raft_state, "follower", "{s:#?}");
    assert_eq!(s.leader_status().map(|l| l.name.as_str()), Some(other), "{s:#?}");
    assert_eq!(
        s.get(other).unwrap().term,
        new_term,
        "no election after the restart: {s:#?}"
    );
}

#[test]
fn killing_the_witness_changes_no_leadership() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let before = cluster.snapshot().leader_status().unwrap().clone();

    // Without the witness the two data nodes still form a quorum.
    cluster.kill("w");
    for id in 1..=5 {
        cluster.write(id, "no witness").unwrap();
    }
    std::thread::sleep(Duration::from_secs(3));
    let s = cluster.snapshot();
    let after = s.leader_status().expect("still a leader");
    assert_eq!(after.node_id, before.node_id, "same leader: {s:#?}");
    assert_eq!(after.term, before.term, "same term: {s:#?}");
    assert!(s.agree_on_records(&["a", "b"], 5));

    // The witness comes back and catches up without disturbing anyone.
    cluster.restart("w").unwrap();
    cluster
        .wait_for("the witness caught up", SETTLE, |s| {
            s.agree_on_records(&["a", "b", "w"], 5)
        })
        .unwrap();
    let s = cluster.snapshot();
    assert_eq!(s.leader_status().unwrap().term, before.term, "{s:#?}");
}

#[test]
fn sigterm_stops_a_node_gracefully_and_it_restarts_from_its_data() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    for id in 1..=3 {
        cluster.write(id, "kept").unwrap();
    }
    cluster
        .wait_for("b applied", SETTLE, |s| s.agree_on_records(&["a", "b", "w"], 3))
        .unwrap();
    let follower = {
        let s = cluster.snapshot();
        let leader = s.leader_status().unwrap().name.clone();
        if leader == "a" {
            "b"
        } else {
            "a"
        }
    };

    // SIGTERM: clean exit, well within the shutdown bound.
    let status = cluster.terminate(follower, Duration::from_secs(8)).unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(
        cluster.log_tail(follower).contains("stopped"),
        "{}",
        cluster.log_tail(follower)
    );

    // Its state survives: after restart it reports the records before hearing anything new.
    cluster.restart(follower).unwrap();
    let s = cluster
        .wait_for("restarted node has its records", SETTLE, |s| {
            s.agree_on_records(&["a", "b", "w"], 3)
        })
        .unwrap();
    assert!(s.get(follower).unwrap().initialized);
}

#[test]
fn the_witness_catches_a_lagging_data_node_up_and_hands_leadership_to_it() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let leader = cluster.snapshot().leader_status().unwrap().name.clone();
    let standby = tandem_tests::other_data_node(&leader);

    // The standby goes down; records commit on the leader and the witness only.
    cluster.kill(standby);
    for id in 1..=5 {
        cluster.write(id, "only on leader and witness").unwrap();
    }
    cluster
        .wait_for("the witness holds the records", SETTLE, |s| {
            s.agree_on_records(&[&leader, "w"], 5)
        })
        .unwrap();

    // The leader dies and the lagging standby returns: only the witness has the records, so
    // the standby cannot win on its own log. The witness stands, wins, catches it up, and
    // hands leadership to it.
    cluster.kill(&leader);
    cluster.restart(standby).unwrap();
    let s = cluster
        .wait_for("the returning data node leads with every record", SETTLE, |s| {
            s.leader_status().is_some_and(|l| l.name == standby) && s.agree_on_records(&[standby, "w"], 5)
        })
        .unwrap();
    assert_eq!(s.get("w").unwrap().raft_state, "follower");
    let log = std::fs::read_to_string(cluster.log_path("w")).unwrap();
    assert!(
        log.contains("handing leadership to the up-to-date data node"),
        "the witness led and handed over"
    );

    // Writes work again through the data node.
    let r = cluster.write(6, "after hand-off").unwrap();
    assert_eq!(cluster.name_of(r.leader), standby);
}

#[test]
fn a_node_that_missed_purged_entries_catches_up_from_a_snapshot_sent_by_the_leader() {
    let opts = ClusterOptions {
        extra_config: "[log]\nsnapshot_every_entries = 50\nkept_after_snapshot = 10\n".into(),
        ..Default::default()
    };
    let mut cluster = Cluster::start_initialized(opts).unwrap();
    let leader = cluster.snapshot().leader_status().unwrap().name.clone();
    let standby = tandem_tests::other_data_node(&leader);
    let standby_last = cluster.status(standby).unwrap().last_log_index.unwrap();

    // The standby is down while the leader writes far past it and purges its log.
    cluster.kill(standby);
    for id in 1..=150 {
        cluster.write(id, "while the standby is away").unwrap();
    }
    cluster
        .wait_for("the leader purged entries the standby lacks", SETTLE, |s| {
            s.get(&leader)
                .is_some_and(|l| l.purged_index.is_some_and(|p| p > standby_last))
        })
        .unwrap();

    // Back up, it can only be caught up by a snapshot over the peer port, then by log.
    cluster.restart(standby).unwrap();
    let s = cluster
        .wait_for("the standby caught up", SETTLE, |s| {
            s.agree_on_records(&["a", "b", "w"], 150)
        })
        .unwrap();
    let st = s.get(standby).unwrap();
    assert!(
        st.snapshot_index.is_some_and(|i| i > standby_last),
        "the standby installed a snapshot: {st:#?}"
    );
    assert_eq!(st.raft_state, "follower");
}
