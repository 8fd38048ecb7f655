//! The lease rule of DESIGN §4 on real processes: exactly one data node answers
//! `/health/active` with 200, the standby takes over after the active dies or is cut off, and no
//! sample ever finds two nodes answering 200.

use std::time::Duration;

use tandem_tests::health_active;
use tandem_tests::http_status;
use tandem_tests::other_data_node;
use tandem_tests::overlapping;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;
use tandem_tests::HealthSampler;
use tandem_tests::PeerCut;

/// `tandemctl` against all three nodes: whether it succeeded, and what it printed.
fn ctl(cluster: &Cluster, args: &[&str]) -> (bool, String) {
    let (code, text) = cluster.ctl(args);
    (code == Some(0), text)
}

const SETTLE: Duration = Duration::from_secs(10);

#[test]
fn exactly_one_data_node_is_active_and_the_others_say_so() {
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let active = cluster.wait_active(None, SETTLE);
    let s = cluster.snapshot();
    let a = s.get(active).unwrap();
    assert_eq!(a.kind, "data");
    assert_eq!(a.service, "active");
    assert_eq!(a.active_epoch, Some(a.term), "the epoch is the term of the activation");
    assert_eq!(
        a.activation.as_ref().map(|x| (x.node, x.epoch)),
        Some((a.node_id, a.term))
    );
    for other in s.reachable().filter(|n| n.name != active) {
        assert_ne!(other.service, "active", "{other:#?}");
        assert_eq!(other.active_epoch, None);
    }
    // The standby is synced; the witness is never a standby.
    let standby = other_data_node(active);
    let code = |name: &str, path: &str| http_status(&cluster.spec(name).admin_addr(), path);
    cluster
        .wait_for("the standby is synced", SETTLE, |_| {
            code(standby, "/health/standby") == Some(200)
        })
        .unwrap();
    assert_eq!(code("w", "/health/standby"), Some(503));
    assert_eq!(code(active, "/health/standby"), Some(503));
}

#[test]
fn the_standby_takes_over_after_the_active_is_killed_with_no_overlap() {
    let mut cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let old = cluster.wait_active(None, SETTLE);
    let old_epoch = cluster.status(old).unwrap().active_epoch.unwrap();

    let sampler = HealthSampler::start(&cluster);
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill(old);
    let new = cluster.wait_active(Some(old), SETTLE);
    std::thread::sleep(Duration::from_millis(300));
    let samples = sampler.finish();
    assert!(
        overlapping(&samples).is_empty(),
        "two actives at once: {:?}",
        overlapping(&samples)
    );
    assert!(samples.len() > 50, "the sampler ran ({} samples)", samples.len());

    let new_epoch = cluster.status(new).unwrap().active_epoch.unwrap();
    assert!(new_epoch > old_epoch, "epochs grow: {old_epoch} → {new_epoch}");

    // The old active restarts as standby and stays so.
    cluster.restart(old).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!health_active(&cluster.spec(old).admin_addr()));
    assert_eq!(cluster.active(), Some(new));
}

#[test]
fn a_cut_off_active_lets_go_before_the_standby_takes_over() {
    let cluster = Cluster::start_initialized(ClusterOptions {
        own_addresses: Some(78),
        ..Default::default()
    })
    .unwrap();
    let old = cluster.wait_active(None, SETTLE);

    // Cut the active off from both peers. It still believes it leads (an isolated leader keeps
    // its Raft state), but its lease runs out and it must stop answering 200 on its own.
    let sampler = HealthSampler::start(&cluster);
    std::thread::sleep(Duration::from_millis(300));
    let cut = PeerCut::isolate(&cluster, old);
    let new = cluster.wait_active(Some(old), SETTLE);
    let isolated = cluster.status(old).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(cut);
    std::thread::sleep(Duration::from_secs(2));
    let samples = sampler.finish();

    assert_eq!(
        isolated.raft_state, "leader",
        "the cut-off node still thought it led: {isolated:#?}"
    );
    assert_eq!(
        isolated.service, "standby",
        "but it no longer claimed the service: {isolated:#?}"
    );
    assert!(
        overlapping(&samples).is_empty(),
        "two actives at once: {:?}",
        overlapping(&samples)
    );
    // After healing, the new active keeps the service.
    assert_eq!(cluster.active(), Some(new));
}

/// A cluster whose data nodes hold one [`ledger_resource`]; returns the ledger's directory
/// (keep it alive), the ledger's path and the cluster.
fn ledger_cluster(
    release_prefix: &str,
    release_timeout_ms: u64,
    own_addresses: Option<u8>,
) -> (tempfile::TempDir, std::path::PathBuf, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let cluster = Cluster::start_initialized(ClusterOptions {
        own_addresses,
        data_config: ledger_resource(&ledger, release_prefix, release_timeout_ms),
        ..Default::default()
    })
    .unwrap();
    (dir, ledger, cluster)
}

/// A script resource that appends `acquire|release <node> <epoch> <nanos>` to `ledger`; the
/// release first runs `release_prefix` (e.g. a sleep), within `release_timeout_ms`.
fn ledger_resource(ledger: &std::path::Path, release_prefix: &str, release_timeout_ms: u64) -> String {
    let line = |action: &str| {
        format!(
            "echo \"{action} $TANDEM_NODE $TANDEM_EPOCH $(date +%s%N)\" >> {}",
            ledger.display()
        )
    };
    format!(
        "[[resources]]\ntype = \"script\"\nname = \"app\"\nacquire = '{}'\nrelease = '{release_prefix}{}'\nrelease_timeout_ms = {release_timeout_ms}\n",
        line("acquire"),
        line("release")
    )
}

/// Whether the ledger at `path` shows `node` holding the resource now (acquired, not released).
fn holding(path: &std::path::Path, node: &str) -> bool {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    hold_intervals(&text)
        .iter()
        .any(|(n, _, end)| n == node && *end == u128::MAX)
}

/// Hold intervals from a ledger of `acquire|release <node> <epoch> <nanos>` lines: from an
/// acquire to the same node's next release (open-ended if none followed).
fn hold_intervals(ledger: &str) -> Vec<(String, u128, u128)> {
    let mut open: std::collections::BTreeMap<String, u128> = Default::default();
    let mut held = Vec::new();
    for line in ledger.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [action, node, _epoch, at] = parts[..] else {
            panic!("bad ledger line {line:?}")
        };
        let at: u128 = at.parse().unwrap();
        match action {
            "acquire" => {
                open.entry(node.to_string()).or_insert(at);
            }
            "release" => {
                if let Some(start) = open.remove(node) {
                    held.push((node.to_string(), start, at));
                }
            }
            other => panic!("bad action {other:?}"),
        }
    }
    held.extend(open.into_iter().map(|(n, start)| (n, start, u128::MAX)));
    held
}

#[test]
fn hold_intervals_pair_each_acquire_with_the_next_release() {
    let ledger = "release a 0 5\nacquire a 3 10\nrelease a 3 20\nacquire b 4 30\n";
    assert_eq!(
        hold_intervals(ledger),
        vec![("a".into(), 10, 20), ("b".into(), 30, u128::MAX)]
    );
}

#[test]
fn a_cut_off_active_releases_its_resources_before_the_standby_acquires_them() {
    let (_dir, ledger, cluster) = ledger_cluster("sleep 2.5; ", 3000, Some(79));
    let old = cluster.wait_active(None, SETTLE);
    let held_by = |name: &str| holding(&ledger, name);
    cluster
        .wait_for("the active ran its acquire script", SETTLE, |_| held_by(old))
        .unwrap();

    // Cut the active off: its lease runs out and it releases (the release takes 2.5 s, longer than an election); only
    // then may the standby acquire, after the previous lease plus the release budget.
    let cut = PeerCut::isolate(&cluster, old);
    let new = cluster.wait_active(Some(old), SETTLE);
    cluster
        .wait_for("the new active ran its acquire script", SETTLE, |_| held_by(new))
        .unwrap();
    drop(cut);
    std::thread::sleep(Duration::from_secs(2));

    // At no instant did both hold the resource.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let held = hold_intervals(&text);
    for (i, a) in held.iter().enumerate() {
        for b in &held[i + 1..] {
            if a.0 != b.0 {
                assert!(a.2 <= b.1 || b.2 <= a.1, "{a:?} overlaps {b:?}\nledger:\n{text}");
            }
        }
    }
    assert!(!held_by(old), "the old active released: {text}");
    assert!(held_by(new), "the new active holds the resource: {text}");
}

#[test]
fn a_planned_switchover_hands_the_service_over_in_order_and_refuses_what_it_cannot_do() {
    let (_dir, ledger, mut cluster) = ledger_cluster("", 1000, None);
    let old = cluster.wait_active(None, SETTLE);
    let standby = other_data_node(old);
    cluster
        .wait_for("the standby is synced", SETTLE, |_| {
            http_status(&cluster.spec(standby).admin_addr(), "/health/standby") == Some(200)
        })
        .unwrap();

    // The witness is no target.
    let (ok, text) = ctl(&cluster, &["switchover", "--to", "w"]);
    assert!(!ok && text.contains("bad_target"), "{text}");

    // Switch over: the old active releases before the new one acquires; never two actives.
    let sampler = HealthSampler::start(&cluster);
    let (ok, text) = ctl(&cluster, &["switchover"]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!("switchover done: {old} released epoch")),
        "{text}"
    );
    let new = cluster.wait_active(Some(old), SETTLE);
    assert_eq!(new, standby);
    let ledger_text = || std::fs::read_to_string(&ledger).unwrap_or_default();
    cluster
        .wait_for("the new active acquired", SETTLE, |_| holding(&ledger, new))
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let samples = sampler.finish();
    assert!(
        overlapping(&samples).is_empty(),
        "two actives at once: {:?}",
        overlapping(&samples)
    );
    let held = hold_intervals(&ledger_text());
    let old_hold = held
        .iter()
        .find(|(n, _, _)| n == old)
        .expect("the old active held the resource");
    let new_hold = held.iter().find(|(n, _, _)| n == new).expect("the new active holds it");
    assert!(old_hold.2 <= new_hold.1, "released before acquired: {held:?}");

    // Refusals: a standby is not the active; an unreachable standby is not synced.
    let (code, _) = (http_status(&cluster.spec(old).admin_addr(), "/health/active"), ());
    assert_eq!(code, Some(503));
    cluster.kill(old);
    std::thread::sleep(Duration::from_millis(500));
    let (ok, text) = ctl(&cluster, &["switchover"]);
    assert!(!ok && text.contains("standby_not_synced"), "{text}");
    assert_eq!(cluster.active(), Some(new), "a refused switchover changes nothing");
}

#[test]
fn a_killed_active_releases_at_restart_and_stays_standby() {
    let (_dir, ledger, mut cluster) = ledger_cluster("", 500, None);
    let ledger_text = || std::fs::read_to_string(&ledger).unwrap_or_default();
    let holds = |name: &str| holding(&ledger, name);
    let old = cluster.wait_active(None, SETTLE);
    cluster.wait_for("the active acquired", SETTLE, |_| holds(old)).unwrap();

    // SIGKILL: no release script runs; the process died holding the resource.
    cluster.kill(old);
    let new = cluster.wait_active(Some(old), SETTLE);
    cluster
        .wait_for("the new active acquired", SETTLE, |_| holds(new))
        .unwrap();
    assert!(holds(old), "a killed process releases nothing: {}", ledger_text());

    // Restarted, the ex-active lets go of what its previous process held, and stays standby.
    cluster.restart(old).unwrap();
    cluster
        .wait_for("the restarted node released", SETTLE, |_| !holds(old))
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(!holds(old), "{}", ledger_text());
    assert!(holds(new));
    assert_eq!(cluster.active(), Some(new));
    assert_eq!(cluster.status(old).unwrap().service, "standby");
}

#[test]
fn a_forced_failover_reports_what_the_target_lacks_and_acts_only_when_told() {
    let cluster = Cluster::start_initialized(ClusterOptions {
        own_addresses: Some(79),
        ..Default::default()
    })
    .unwrap();
    let active = cluster.wait_active(None, SETTLE);
    let standby = other_data_node(active);
    let ctl = |args: &[&str]| cluster.ctl(args);

    // The standby is cut off while records are written: it lacks them.
    let cut = PeerCut::isolate(&cluster, standby);
    for id in 0..20 {
        cluster.write(id, "written while the standby was cut off").unwrap();
    }
    // Past election_timeout_min without an acknowledgement, it is no longer synced.
    std::thread::sleep(Duration::from_millis(600));
    let (code, text) = ctl(&["switchover"]);
    assert!(code != Some(0) && text.contains("standby_not_synced"), "{text}");
    let (code, text) = ctl(&["failover", "--to", standby]);
    assert!(code != Some(0) && text.contains("--force"), "{text}");

    // --force alone only reports (exit 3), exactly, and changes nothing.
    let (code, text) = ctl(&["--json", "failover", "--to", standby, "--force"]);
    assert_eq!(code, Some(3), "{text}");
    let report: tandem_client::api::FailoverReport = serde_json::from_str(text.trim()).unwrap();
    let leader = cluster.status(active).unwrap();
    assert!(!report.executed);
    assert_eq!(report.committed_index, leader.committed_index);
    let lacks = report.committed_index.unwrap() - report.target_matched_index.unwrap_or(0);
    assert_eq!(report.missing_records, lacks, "{report:?}");
    assert!(report.missing_records >= 20, "{report:?}");
    assert!(report.missing_bytes > 20 * 30, "{report:?}");
    let (code, text) = ctl(&["failover", "--to", standby, "--force"]);
    assert_eq!(code, Some(3));
    assert!(
        text.contains("committed records") && text.contains("--accept-data-loss"),
        "{text}"
    );
    assert_eq!(cluster.active(), Some(active), "a report changes nothing");

    // Going ahead while the target is unreachable: it cannot lead without the records, so
    // the hand-off fails and the old active takes the service back.
    let (code, text) = ctl(&["failover", "--to", standby, "--force", "--accept-data-loss"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("took the service back"), "{text}");
    assert_eq!(cluster.wait_active(None, SETTLE), active);

    // Healed: the records reach the target, which then leads and serves.
    drop(cut);
    let (code, text) = ctl(&["failover", "--to", standby, "--force", "--accept-data-loss"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(&format!("{standby} leads and takes the service")),
        "{text}"
    );
    assert_eq!(cluster.wait_active(Some(active), SETTLE), standby);
    let records = cluster.status(standby).unwrap().test_records;
    assert_eq!(records, 20, "the new active holds every record");
    let (code, text) = ctl(&["--json", "audit"]);
    assert_eq!(code, Some(0), "{text}");
    let trail: Vec<tandem_client::api::AuditInfo> = serde_json::from_str(text.trim()).unwrap();
    let forced: Vec<_> = trail.iter().filter(|e| e.action == "failover").collect();
    assert_eq!(forced.len(), 2, "both forced failovers are audited: {trail:?}");
    assert!(
        forced.iter().all(|e| e.detail.contains("the target lacked")),
        "{trail:?}"
    );
}

#[test]
fn a_failing_check_starts_the_resources_over_and_a_hung_acquire_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, broken, hang) = (
        dir.path().join("ledger"),
        dir.path().join("broken"),
        dir.path().join("hang"),
    );
    let data_config = format!(
        "[[resources]]\ntype = \"script\"\nname = \"app\"\nacquire = \"if [ -e {hang} ]; then echo hanging; sleep 60; fi; echo acquire $TANDEM_NODE >> {ledger}\"\nrelease = \"echo release $TANDEM_NODE >> {ledger}\"\nacquire_timeout_ms = 120000\nrelease_timeout_ms = 1000\ncheck = \"! test -e {broken}\"\ncheck_interval_ms = 200\n",
        hang = hang.display(),
        ledger = ledger.display(),
        broken = broken.display()
    );
    let cluster = Cluster::start_initialized(ClusterOptions {
        data_config,
        ..Default::default()
    })
    .unwrap();
    let active = cluster.wait_active(None, SETTLE);
    let ctl = |args: &[&str]| {
        let (code, text) = cluster.ctl(args);
        assert_eq!(code, Some(0), "{args:?}: {text}");
        text
    };
    let lines = || -> Vec<String> {
        std::fs::read_to_string(&ledger)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    let count = |what: &str| lines().iter().filter(|l| **l == format!("{what} {active}")).count();
    let acquires = || count("acquire");
    cluster
        .wait_for("the first acquire", SETTLE, |_| acquires() == 1)
        .unwrap();
    let releases = count("release"); // the one every node runs at start

    // The check fails: the resources are released and acquired again, on the same active.
    std::fs::write(&broken, "").unwrap();
    cluster
        .wait_for("a release after the failed check", SETTLE, |_| {
            count("release") > releases
        })
        .unwrap();
    std::fs::remove_file(&broken).unwrap();
    cluster
        .wait_for("the acquire again", SETTLE, |_| acquires() >= 2)
        .unwrap_or_else(|e| panic!("{e}\nledger: {:?}\n{}", lines(), ctl(&["resources"])));
    // The same node serves again once its resources are held (no other node meanwhile).
    assert_eq!(
        cluster.wait_active(None, SETTLE),
        active,
        "the identity stayed where it was"
    );

    // The next acquire hangs; the operator cancels it, and the resources start over.
    std::fs::write(&hang, "").unwrap();
    std::fs::write(&broken, "").unwrap();
    cluster
        .wait_for("a hung acquire", SETTLE, |_| {
            ctl(&["resources"]).contains("running: acquire of app")
        })
        .unwrap();
    std::fs::remove_file(&broken).unwrap();
    std::fs::remove_file(&hang).unwrap();
    let before = acquires();
    let text = ctl(&["resources", "--cancel"]);
    assert!(
        text.contains(&format!("cancelled acquire of app on {active}")),
        "{text}"
    );
    cluster
        .wait_for("the acquire after the cancel", SETTLE, |_| acquires() > before)
        .unwrap();
    let text = ctl(&["--json", "resources"]);
    let info: tandem_client::api::ResourcesInfo = serde_json::from_str(&text).unwrap();
    let cancelled = info
        .recent
        .iter()
        .find(|r| r.outcome.contains("cancelled by the operator"))
        .unwrap_or_else(|| panic!("the cancelled run is kept: {info:#?}"));
    assert_eq!(cancelled.action, "acquire");
    assert!(
        cancelled.stdout.contains("hanging"),
        "its output is kept: {cancelled:?}"
    );
    assert!(info.recent.iter().any(|r| r.action == "check" && r.outcome != "ok"));
    assert!(ctl(&["audit"]).contains("cancel-script"));
}
