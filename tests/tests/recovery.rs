//! Quorum gone for good: the survivor never activates on its own; an operator's
//! `tandemctl recover --force-single-node` makes it serve alone (audited); the others rejoin
//! with an empty data dir, and a returning node that kept its old log cannot disturb it.

use std::time::Duration;
use std::time::Instant;

use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

/// `tandemctl` against all three nodes: whether it succeeded, and what it printed.
fn ctl(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let (code, text) = cluster.ctl(args);
    (code == Some(0), text)
}

#[test]
fn a_lone_survivor_serves_only_when_told_and_the_others_rejoin_empty() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let survivor = cluster.wait_active(None, Duration::from_secs(10));
    let other = tandem_tests::other_data_node(survivor);
    for id in 0..10 {
        cluster.write(id, "before the loss").unwrap();
    }

    // Both other members are gone. The survivor's lease runs out and it never activates alone.
    cluster.kill(other);
    cluster.kill("w");
    let lost_at = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    let (ok, text) = ctl(&cluster, &["recover", "--force-single-node", "--node", survivor]);
    assert!(!ok && text.contains("quorum_present"), "too early: {text}");
    let (ok, text) = ctl(&cluster, &["recover", "--node", survivor]);
    assert!(!ok && text.contains("--force-single-node"), "{text}");
    while lost_at.elapsed() < Duration::from_secs(6) {
        let s = cluster.status(survivor).unwrap();
        assert_eq!(s.active_epoch, None, "a node without quorum never activates: {s:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }

    // The operator forces it: it restarts in place (same pid) as the only voter and serves.
    let pid = cluster.pid(survivor).unwrap();
    let (ok, text) = ctl(&cluster, &["recover", "--force-single-node", "--node", survivor]);
    assert!(ok, "{text}");
    assert!(text.contains("WARNING") && text.contains("split brain"), "{text}");
    assert_eq!(cluster.wait_active(None, Duration::from_secs(20)), survivor);
    assert_eq!(cluster.pid(survivor), Some(pid));
    let s = cluster.status(survivor).unwrap();
    assert_eq!(s.test_records, 10, "nothing committed before is lost");
    assert_eq!(s.members.iter().filter(|m| m.voter).count(), 1, "{:?}", s.members);
    for id in 10..15 {
        cluster.write(id, "served alone").unwrap();
    }
    // Recorded in the audit trail once the recovered node leads.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (ok, text) = ctl(&cluster, &["--json", "audit"]);
        assert!(ok, "{text}");
        if text.contains("recover-single-node") {
            break;
        }
        assert!(Instant::now() < deadline, "the recovery is audited: {text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, text) = ctl(&cluster, &["recover", "--force-single-node", "--node", survivor]);
    assert!(!ok && text.contains("already_single"), "{text}");

    // The witness comes back with its old log: refused, and the survivor keeps serving.
    cluster.restart("w").unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(cluster.active(), Some(survivor), "{}", cluster.log_tail(survivor));
    let (ok, text) = ctl(&cluster, &["rejoin", "w"]);
    assert!(!ok && text.contains("holds_old_data"), "{text}");

    // Emptied, both come back as voters and receive everything.
    cluster.kill("w");
    for n in ["w", other] {
        std::fs::remove_dir_all(cluster.data_dir(n)).unwrap();
        cluster.restart(n).unwrap();
        let (ok, text) = ctl(&cluster, &["rejoin", n]);
        assert!(ok, "rejoin {n}: {text}");
    }
    cluster
        .wait_for("all three hold every record", Duration::from_secs(20), |s| {
            s.agree_on_records(&["a", "b", "w"], 15)
        })
        .unwrap();
    let s = cluster.status(survivor).unwrap();
    assert_eq!(s.members.iter().filter(|m| m.voter).count(), 3, "{:?}", s.members);

    // A whole cluster again: losing the survivor fails over to the other data node.
    cluster.kill(survivor);
    assert_eq!(cluster.wait_active(None, Duration::from_secs(15)), other);
}
