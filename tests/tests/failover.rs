//! The lease rule of DESIGN §4 on real processes: exactly one data node answers
//! `/health/active` with 200, the standby takes over after the active dies or is cut off, and no
//! sample ever finds two nodes answering 200.

use std::process::Command;
use std::time::Duration;

use tandem_tests::health_active;
use tandem_tests::http_status;
use tandem_tests::overlapping;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;
use tandem_tests::HealthSampler;
use tandem_tests::NodeSpec;

const SETTLE: Duration = Duration::from_secs(10);

/// The one node answering `/health/active` with 200, if any; two at once fail the test.
fn active_node(cluster: &Cluster) -> Option<&'static str> {
    let up: Vec<&'static str> = cluster
        .nodes
        .iter()
        .filter(|n| health_active(&n.admin_addr()))
        .map(|n| n.name)
        .collect();
    assert!(up.len() <= 1, "two actives at once: {up:?}");
    up.first().copied()
}

fn wait_active(cluster: &Cluster, not: Option<&str>) -> &'static str {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        if let Some(n) = active_node(cluster).filter(|n| Some(*n) != not) {
            return n;
        }
        assert!(std::time::Instant::now() < deadline, "no node became active");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn exactly_one_data_node_is_active_and_the_others_say_so() {
    let cluster = Cluster::start_initialized(ClusterOptions::default()).unwrap();
    let active = wait_active(&cluster, None);
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
    let standby = if active == "a" { "b" } else { "a" };
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
    let old = wait_active(&cluster, None);
    let old_epoch = cluster.status(old).unwrap().active_epoch.unwrap();

    let sampler = HealthSampler::start(&cluster);
    std::thread::sleep(Duration::from_millis(300));
    cluster.kill(old);
    let new = wait_active(&cluster, Some(old));
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
    assert_eq!(active_node(&cluster), Some(new));
}

/// Drops one node's peer traffic with iptables (needs root); removed on drop.
struct Cut(String);

impl Cut {
    fn isolate(node: &NodeSpec, others: &[&NodeSpec]) -> Self {
        let chain = format!("TANDEM_FO_{}", std::process::id());
        let run = |args: &[&str]| {
            let out = Command::new("iptables")
                .args(args)
                .output()
                .expect("iptables (run tests/run.sh as root)");
            assert!(
                out.status.success(),
                "iptables {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&["-w", "-N", &chain]);
        let cut = Cut(chain.clone());
        let port = node.peer_port.to_string();
        run(&[
            "-w", "-A", &chain, "-p", "tcp", "-d", &node.ip, "--dport", &port, "-j", "DROP",
        ]);
        for o in others {
            let port = o.peer_port.to_string();
            run(&[
                "-w", "-A", &chain, "-p", "tcp", "-s", &node.ip, "-d", &o.ip, "--dport", &port, "-j", "DROP",
            ]);
        }
        run(&["-w", "-I", "INPUT", "-j", &chain]);
        cut
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        for args in [["-w", "-D", "INPUT", "-j"], ["-w", "-F", "", ""], ["-w", "-X", "", ""]] {
            let args: Vec<&str> = args.iter().copied().filter(|a| !a.is_empty()).collect();
            let _ = Command::new("iptables").args(&args).arg(&self.0).output();
        }
    }
}

#[test]
fn a_cut_off_active_lets_go_before_the_standby_takes_over() {
    let cluster = Cluster::start_initialized(ClusterOptions {
        own_addresses: Some(78),
        ..Default::default()
    })
    .unwrap();
    let old = wait_active(&cluster, None);

    // Cut the active off from both peers. It still believes it leads (an isolated leader keeps
    // its Raft state), but its lease runs out and it must stop answering 200 on its own.
    let sampler = HealthSampler::start(&cluster);
    std::thread::sleep(Duration::from_millis(300));
    let others: Vec<&NodeSpec> = cluster.nodes.iter().filter(|n| n.name != old).collect();
    let cut = Cut::isolate(cluster.spec(old), &others);
    let new = wait_active(&cluster, Some(old));
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
    assert_eq!(active_node(&cluster), Some(new));
}
