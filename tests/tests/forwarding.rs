//! Each admin API reachable only on its own machine (the members list admin addresses nobody
//! listens on): tandemctl and the console work through whichever node they reach. Status and
//! events are gathered over the peer ports; a switchover, a forced failover and a policy change
//! sent to a standby or the witness are passed on to the member that must carry them out, and
//! one node's own views (resources, files, database) are passed on to the node named.

use std::time::Duration;

use tandem_tests::http_request;
use tandem_tests::other_data_node;
use tandem_tests::tandemctl;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

fn ctl_via(cluster: &Cluster, node: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = tandemctl()
        .args(["--nodes", &cluster.spec(node).admin_addr()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn actions_sent_to_any_member_reach_the_one_that_carries_them_out() {
    let cluster = Cluster::start_initialized(ClusterOptions {
        admin_addrs_unreachable: true,
        ..Default::default()
    })
    .unwrap();
    let active = cluster.wait_active(None, Duration::from_secs(20));
    let standby = other_data_node(active);

    // Status through the witness: all three members, gathered over the peer ports.
    let (code, out) = ctl_via(&cluster, "w", &["--json", "status"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("\"reachable\": true").count(), 3, "{out}");

    // A switchover sent to the standby is carried out by the active.
    let (code, out) = ctl_via(&cluster, standby, &["switchover"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{active} released")), "{out}");
    let now = cluster.wait_active(Some(active), Duration::from_secs(30));
    assert_eq!(now, standby);

    // A policy change sent to the witness reaches the leader, and every member holds it.
    let (code, out) = ctl_via(&cluster, "w", &["maintenance", "on"]);
    assert_eq!(code, Some(0), "{out}");
    cluster
        .wait_for("maintenance everywhere", Duration::from_secs(10), |s| {
            s.reachable().count() == 3 && s.reachable().all(|n| n.policies.maintenance)
        })
        .unwrap();
    let (code, out) = ctl_via(&cluster, "w", &["maintenance", "off"]);
    assert_eq!(code, Some(0), "{out}");

    // A forced failover's report, asked of the witness, comes from the active; nothing moves.
    let (code, out) = ctl_via(&cluster, "w", &["failover", "--to", active, "--force"]);
    assert_eq!(code, Some(3), "report only: {out}");
    assert_eq!(cluster.active(), Some(standby));

    // The audit trail names the member that carried the switchover out.
    let audit = cluster.block_on(cluster.client("w").audit()).unwrap();
    let entry = audit.iter().rev().find(|e| e.action == "switchover").expect("audited");
    assert_eq!(entry.actor, format!("admin-api@{active}"));

    // The events of both data nodes, through the standby (the other's over the peer port).
    let (code, out) = ctl_via(&cluster, active, &["events", "--json"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("unreachable"), "{out}");
    for name in ["a", "b"] {
        assert!(
            out.contains(&format!("\"node\":\"{name}\"")),
            "no events of {name}: {out}"
        );
    }

    // One node's own views and actions through another (`--node`, passed on over the peer
    // port): each data node's resources through the witness, a cancel on the active, and an
    // error of the member asked (it mirrors no folders) comes back as that member gave it.
    for name in ["a", "b"] {
        let (code, out) = ctl_via(&cluster, "w", &["resources", "--node", name]);
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains(&format!("resources of {name}:")), "{out}");
    }
    let (code, out) = ctl_via(&cluster, "w", &["resources", "--node", standby, "--cancel"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("no script is running on {standby}")), "{out}");
    let (code, out) = ctl_via(&cluster, "w", &["files", "--node", active]);
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("no_sync_folders"), "{out}");
    let err = cluster
        .block_on(cluster.client("w").on_node("x").resources())
        .expect_err("no member x");
    assert_eq!(err.code(), Some("unknown_node"), "{err}");
    assert!(err.to_string().contains("members: a, b, w"), "{err}");
    let (status, body) = http_request(
        &cluster.spec("w").admin_addr(),
        "GET",
        "/v1/resources?node=a&node=b",
        &[],
        b"",
    )
    .unwrap();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bad_query") && body.contains("node"), "{body}");
    // The witness's own view needs no passing on.
    let own = cluster.block_on(cluster.client("w").on_node("w").resources()).unwrap();
    assert_eq!(own.node, "w");
}
