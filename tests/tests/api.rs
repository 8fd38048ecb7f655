//! The peer port's authentication, bootstrap rules, and the admin API's answers to bad input.

use std::time::Duration;

use tandem_tests::other_data_node;
use tandem_tests::tandem;
use tandem_tests::tandemctl;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;
use tandem_tests::SECRET;

/// One raw HTTP/1.1 request; returns (status code, body).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let (code, body) = tandem_tests::http_request(addr, method, path, headers, body).unwrap();
    (code, String::from_utf8_lossy(&body).to_string())
}

#[test]
fn peer_requests_without_the_cluster_secret_are_refused() {
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let peer = cluster.spec("b").peer_addr();
    let before = cluster.status("b").unwrap();

    // No secret, a wrong secret, and a right-length wrong secret: all 401, nothing decoded.
    let (code, body) = http(&peer, "POST", "/raft/vote", &[], b"\x01garbage");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("cluster secret"), "{body}");
    let wrong = "x".repeat(SECRET.len());
    for secret in ["nope", wrong.as_str()] {
        let (code, _) = http(
            &peer,
            "POST",
            "/raft/append",
            &[("x-tandem-cluster-secret", secret)],
            b"\x01garbage",
        );
        assert_eq!(code, 401);
    }

    // With the secret, a malformed body is a clear 400 and changes nothing.
    let (code, body) = http(
        &peer,
        "POST",
        "/raft/vote",
        &[("x-tandem-cluster-secret", SECRET)],
        b"\x01garbage",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("cannot decode peer request"), "{body}");
    let after = cluster.status("b").unwrap();
    assert_eq!((after.term, after.leader), (before.term, before.leader));
}

#[test]
fn init_is_refused_on_the_witness_and_only_happens_once() {
    let cluster = Cluster::start(ClusterOptions::default()).unwrap();

    // The CLI refuses before sending anything…
    let out = tandem()
        .args(["init", "--config"])
        .arg(cluster.config_path("w"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the witness never bootstraps"));
    // …and so does the witness itself.
    let (code, body) = http(&cluster.spec("w").admin_addr(), "POST", "/v1/cluster/init", &[], b"{}");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("witness_cannot_init"), "{body}");
    assert!(!cluster.status("w").unwrap().initialized);

    // A data node bootstraps all three voters; a second init is refused by name.
    let out = tandem()
        .args(["init", "--config"])
        .arg(cluster.config_path("b"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("w (witness, id 3)"));
    cluster
        .wait_for("all three know the membership", Duration::from_secs(10), |s| {
            s.reachable().count() == 3 && s.reachable().all(|n| n.initialized) && s.leader_status().is_some()
        })
        .unwrap();
    let out = tandem()
        .args(["init", "--config"])
        .arg(cluster.config_path("a"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already initialized"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn admin_api_answers_bad_input_with_clear_errors() {
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let s = cluster.snapshot();
    let leader = s.leader_status().unwrap().name.clone();
    let follower = tandem_tests::other_data_node(&leader);
    let json = [("content-type", "application/json")];
    let leader_addr = cluster.spec(&leader).admin_addr();

    // Malformed JSON and unknown fields: 400, nothing written.
    let (code, body) = http(&leader_addr, "POST", "/v1/test-records", &json, b"{\"id\": ");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("bad_request"), "{body}");
    let (code, body) = http(
        &leader_addr,
        "POST",
        "/v1/test-records",
        &json,
        b"{\"id\": 1, \"colour\": 2}",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("colour"), "{body}");

    // Over TEST_RECORD_MAX_BYTES: 413 naming the limit; over the body limit: 413 too.
    let big = format!("{{\"id\": 1, \"payload\": \"{}\"}}", "x".repeat(64 * 1024 + 1));
    let (code, body) = http(&leader_addr, "POST", "/v1/test-records", &json, big.as_bytes());
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("TEST_RECORD_MAX_BYTES"), "{body}");
    let huge = format!("{{\"id\": 1, \"payload\": \"{}\"}}", "x".repeat(300 * 1024));
    let (code, _) = http(&leader_addr, "POST", "/v1/test-records", &json, huge.as_bytes());
    assert_eq!(code, 413);
    assert_eq!(
        cluster.status(&leader).unwrap().test_records,
        0,
        "rejected writes change nothing"
    );

    // A write to a follower names the leader to use.
    let (code, body) = http(
        &cluster.spec(follower).admin_addr(),
        "POST",
        "/v1/test-records",
        &json,
        b"{\"id\": 1}",
    );
    assert_eq!(code, 421, "{body}");
    assert!(body.contains("not_leader") && body.contains(&leader_addr), "{body}");

    // tandemctl follows that hint by itself.
    let out = tandemctl()
        .args([
            "--nodes",
            &cluster.spec(follower).admin_addr(),
            "write-test-record",
            "--id",
            "7",
            "--payload",
            "via follower",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("record 7 committed at index"));
}

#[test]
fn tandemctl_status_shows_every_member_as_a_table_and_as_json() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let nodes = ["a", "b", "w"].map(|n| cluster.spec(n).admin_addr()).join(",");
    let leader = cluster.snapshot().leader_status().unwrap().name.clone();

    let out = tandemctl().args(["--nodes", &nodes, "status"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.starts_with("NODE  ID  KIND     ROLE"), "{table}");
    assert!(table.contains(&format!("leader: {leader} (term")), "{table}");
    assert_eq!(table.lines().filter(|l| l.contains(" yes")).count(), 3, "{table}");

    // With the witness down, status still answers and marks it unreachable.
    cluster.kill("w");
    let out = tandemctl()
        .args(["--nodes", &nodes, "--json", "status"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    let w = rows.iter().find(|r| r["name"] == "w").unwrap();
    assert_eq!(w["reachable"], false);
    let l = rows.iter().find(|r| r["name"] == leader.as_str()).unwrap();
    assert_eq!(l["status"]["raft_state"], "leader");
    assert!(l["status"]["lease_remaining_ms"].as_u64().is_some());
}

#[test]
fn policies_and_maintenance_are_replicated_and_every_change_is_audited() {
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let s = cluster.snapshot();
    let leader = s.leader_status().unwrap().name.clone();
    let follower = tandem_tests::other_data_node(&leader);
    assert!(!s.get("w").unwrap().policies.maintenance, "off by default");

    // Through a follower: tandemctl follows the not-leader answer to the leader.
    let out = tandemctl()
        .args(["--nodes", &cluster.spec(follower).admin_addr(), "maintenance", "on"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("maintenance              on"));
    cluster
        .wait_for("every node applied the policy", Duration::from_secs(10), |s| {
            s.reachable().count() == 3 && s.reachable().all(|n| n.policies.maintenance)
        })
        .unwrap();

    // Bad input changes nothing: over a named limit, unknown fields, malformed JSON.
    let json = [("content-type", "application/json")];
    let leader_addr = cluster.spec(&leader).admin_addr();
    let (code, body) = http(
        &leader_addr,
        "PUT",
        "/v1/policies",
        &json,
        b"{\"min_active_secs\": 99999999}",
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("POLICY_SECS_MAX"), "{body}");
    let (code, body) = http(&leader_addr, "PUT", "/v1/policies", &json, b"{\"maintenence\": true}");
    assert_eq!(code, 400, "{body}");
    let (code, _) = http(&leader_addr, "PUT", "/v1/policies", &json, b"{\"maintenance\": ");
    assert_eq!(code, 400);
    let (code, body) = http(
        &leader_addr,
        "PUT",
        "/v1/policies",
        &json,
        b"{\"windows\": [\"mon-fri 08:00-18:00\", \"funday 08:00-09:00\"]}",
    );
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("unknown day in \\\"funday\\\""), "{body}");
    assert_eq!(cluster.status(&leader).unwrap().policies.min_active_secs, 60);
    assert!(cluster.status(&leader).unwrap().policies.windows.is_empty());

    // The change, and only it, is in the audit trail — on every node, the witness included.
    let out = tandemctl()
        .args(["--nodes", &cluster.spec("w").admin_addr(), "--json", "audit"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let entries: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = entries.as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["action"], "set-policies");
    assert_eq!(entries[0]["detail"], "maintenance false -> true");
    assert_eq!(entries[0]["actor"], format!("admin-api@{leader}"));

    // Effective windows through tandemctl, replicated like the rest, and removed again.
    let (code, out) = cluster.ctl(&[
        "policy",
        "--window",
        "mon-fri 08:00-18:00",
        "--window",
        "sat 22:00-02:00",
        "--window-utc-offset-min",
        "-300",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("effective windows        mon,tue,wed,thu,fri 08:00-18:00; sat 22:00-02:00 (UTC-05:00)"),
        "{out}"
    );
    cluster
        .wait_for("the witness applied the windows", Duration::from_secs(10), |s| {
            s.get("w")
                .is_some_and(|w| w.policies.windows.len() == 2 && w.policies.window_utc_offset_min == -300)
        })
        .unwrap();
    let (code, out) = cluster.ctl(&["policy", "--no-windows"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("effective windows        always"), "{out}");
}

#[test]
fn a_write_carrying_an_old_or_future_epoch_is_refused_and_changes_nothing() {
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let active = cluster.wait_active(None, Duration::from_secs(10));
    let addr = cluster.spec(active).admin_addr();
    let json = [("content-type", "application/json")];
    let (code, body) = http(&addr, "GET", "/health/active", &[], b"");
    assert_eq!(code, 200, "{body}");
    let epoch: u64 = body.trim().strip_prefix("active epoch ").unwrap().parse().unwrap();
    let status = |c: &Cluster| c.status(active).unwrap();

    // The epoch the active reported: written.
    let ok = format!("{{\"id\": 1, \"payload\": \"x\", \"epoch\": {epoch}}}");
    let (code, body) = http(&addr, "POST", "/v1/test-records", &json, ok.as_bytes());
    assert_eq!(code, 200, "{body}");

    // An epoch that has not begun: refused before it enters the log.
    let before = status(&cluster);
    let future = format!("{{\"id\": 2, \"payload\": \"x\", \"epoch\": {}}}", epoch + 1000);
    let (code, body) = http(&addr, "POST", "/v1/test-records", &json, future.as_bytes());
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("future_epoch") && body.contains("has not begun"),
        "{body}"
    );
    assert_eq!(
        status(&cluster).last_log_index,
        before.last_log_index,
        "nothing entered the log"
    );

    // An epoch older than the activation: committed but rejected when applied, on every node.
    let stale = format!("{{\"id\": 3, \"payload\": \"x\", \"epoch\": {}}}", epoch - 1);
    let (code, body) = http(&addr, "POST", "/v1/test-records", &json, stale.as_bytes());
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("stale epoch"), "{body}");
    assert_eq!(
        status(&cluster).test_records,
        before.test_records,
        "the stale write changed nothing"
    );
}

#[test]
fn the_cluster_view_shows_roles_links_and_the_witness_and_notices_a_lost_member() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let active = cluster.wait_active(None, Duration::from_secs(10));
    let view = |cluster: &Cluster| cluster.block_on(cluster.client("a").cluster()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let v = view(&cluster);
        if v.cluster_status.state == "ready" {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "never ready: {v:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(ready.active.as_deref(), Some(active));
    let role = |v: &tandem_client::api::ClusterView, n: &str| {
        let node = v.nodes.iter().find(|x| x.name == n).unwrap();
        node.status.as_ref().map(|s| s.role.clone())
    };
    assert_eq!(role(&ready, active).as_deref(), Some("active"));
    assert_eq!(role(&ready, other_data_node(active)).as_deref(), Some("standby"));
    assert_eq!(role(&ready, "w").as_deref(), Some("witness"));
    for node in &ready.nodes {
        let s = node.status.as_ref().unwrap();
        assert_eq!(s.links.len(), 2, "{s:#?}");
        assert!(s.links.iter().all(|l| l.state == "up"), "{:#?}", s.links);
        let expected = (s.kind == "data").then_some(true);
        assert_eq!(s.witness_contact, expected, "{}", node.name);
    }

    // The witness goes: the data nodes lose contact, the cluster warns and names the links.
    cluster.kill("w");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Each data node notices on its own heartbeat timer: wait for the active's link.
    let warned = loop {
        let v = view(&cluster);
        let names_link = v
            .cluster_status
            .warnings
            .iter()
            .any(|w| w.contains(&format!("link {active} -> w is down")));
        if v.cluster_status.state == "warning" && names_link {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "no warning: {v:#?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let w = warned.nodes.iter().find(|n| n.name == "w").unwrap();
    assert!(w.status.is_none() && w.error.is_some(), "{w:#?}");
    let reasons = warned.cluster_status.warnings.join("; ");
    assert!(reasons.contains(&format!("link {active} -> w is down")), "{reasons}");
    let s = cluster.status(active).unwrap();
    assert_eq!(s.witness_contact, Some(false));
    // tandemctl shows the same.
    let nodes = ["a", "b", "w"].map(|n| cluster.spec(n).admin_addr()).join(",");
    let out = tandemctl().args(["--nodes", &nodes, "status"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("cluster: warning (link"), "{table}");
    assert!(
        table.contains(&format!("links of {active}: ")) && table.contains("w down"),
        "{table}"
    );
}
