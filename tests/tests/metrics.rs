//! `GET /metrics` on a real cluster: every family is well formed (HELP and TYPE once, before
//! its samples; one value per name and label set), and the values follow what the cluster did:
//! role, lease, commit latency, replication lag, monitors, resource actions, takeovers.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::time::Duration;

use tandem_tests::http_request;
use tandem_tests::other_data_node;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

/// Parse the exposition: sample (`name{labels}`) → value; fails the test on any malformed
/// line, a sample before its family's TYPE, or a repeated sample.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut typed = BTreeSet::new();
    let mut helped = BTreeSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(helped.insert(name.to_string()), "HELP twice for {name}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap();
            let kind = parts.next().unwrap();
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(typed.insert(name.to_string()), "TYPE twice for {name}");
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("malformed line {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "bad metric name in {line:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "sample before its TYPE: {line:?}");
        assert!(samples.insert(key.to_string(), value).is_none(), "sample twice: {key}");
    }
    samples
}

fn metrics(cluster: &Cluster, node: &str) -> BTreeMap<String, f64> {
    let (code, body) = http_request(&cluster.spec(node).admin_addr(), "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(code, 200);
    parse(&String::from_utf8_lossy(&body))
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        let near: Vec<&String> = m
            .keys()
            .filter(|k| k.starts_with(key.split('{').next().unwrap()))
            .collect();
        panic!("no sample {key}; found {near:?}")
    })
}

#[test]
fn metrics_follow_roles_commits_lag_monitors_resources_and_takeovers() {
    let data = r#"
[[resources]]
type = "script"
name = "svc"
acquire = "sleep 0.05"
release = "true"

[[monitors]]
name = "always"
type = "script"
command = "true"
interval_ms = 200
"#;
    let cluster = Cluster::start_initialized(ClusterOptions {
        data_config: data.into(),
        ..Default::default()
    })
    .unwrap();
    let active = cluster.wait_active(None, Duration::from_secs(20));
    for i in 0..20 {
        cluster.write(i, "metrics").unwrap();
    }
    let standby = other_data_node(active);
    // The planned switchover moves the service: the new active counts it.
    let (code, out) = cluster.ctl(&["switchover", "--to", standby]);
    assert_eq!(code, Some(0), "{out}");
    let active = cluster.wait_active(Some(active), Duration::from_secs(30));
    let old = other_data_node(active);
    for i in 20..30 {
        cluster.write(i, "metrics").unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (m, o) = loop {
        let (m, o) = (metrics(&cluster, active), metrics(&cluster, old));
        let settled = get(&m, "tandem_monitor_state{monitor=\"always\",state=\"ok\"}") == 1.0
            && m.contains_key("tandem_replication_lag_records{to=\"w\"}");
        if settled || std::time::Instant::now() > deadline {
            break (m, o);
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    assert_eq!(get(&m, "tandem_role{role=\"active\"}"), 1.0);
    assert_eq!(get(&m, "tandem_role{role=\"standby\"}"), 0.0);
    assert_eq!(get(&o, "tandem_role{role=\"standby\"}"), 1.0);
    assert_eq!(get(&o, "tandem_role{role=\"active\"}"), 0.0);
    assert_eq!(get(&m, "tandem_raft_leader"), 1.0);
    assert!(get(&m, "tandem_lease_remaining_seconds") > 0.0);
    assert_eq!(get(&o, "tandem_lease_remaining_seconds"), 0.0);
    assert!(get(&m, "tandem_epoch") >= 2.0);
    // The writes after the switchover were proposed by the new leader: its latency histogram
    // holds them, cumulative up to +Inf.
    let count = get(&m, "tandem_commit_latency_seconds_count");
    assert!(count >= 10.0, "{count}");
    assert_eq!(get(&m, "tandem_commit_latency_seconds_bucket{le=\"+Inf\"}"), count);
    assert!(get(&m, "tandem_commit_latency_seconds_bucket{le=\"30\"}") <= count);
    assert!(get(&m, "tandem_commit_latency_seconds_sum") > 0.0);
    // Lag as the leader sees it, per member; none once the writes settled.
    assert!(m.contains_key(&format!("tandem_replication_lag_records{{to=\"{old}\"}}")));
    assert!(m.contains_key("tandem_replication_lag_bytes{to=\"w\"}"));
    assert!(
        !o.contains_key("tandem_replication_lag_records{to=\"w\"}"),
        "only the leader reports lag"
    );
    // The monitor runs on the active and reports its state and its last run's duration.
    assert_eq!(get(&m, "tandem_monitor_state{monitor=\"always\",state=\"ok\"}"), 1.0);
    assert_eq!(
        get(&m, "tandem_monitor_state{monitor=\"always\",state=\"failed\"}"),
        0.0
    );
    assert!(get(&m, "tandem_monitor_last_duration_seconds{monitor=\"always\"}") > 0.0);
    // The resource actions: the acquire script sleeps 50 ms.
    assert!(
        get(
            &m,
            "tandem_resource_action_last_duration_seconds{resource=\"svc\",action=\"acquire\"}"
        ) >= 0.05
    );
    assert!(get(&m, "tandem_resource_acquire_seconds_count") >= 1.0);
    assert!(get(&m, "tandem_resource_acquire_seconds_sum") >= 0.05);
    assert!(get(&o, "tandem_resource_release_seconds_count") >= 1.0);
    // How the service came to each node.
    assert_eq!(get(&m, "tandem_takeovers_total{kind=\"switchover\"}"), 1.0);
    assert_eq!(get(&m, "tandem_takeovers_total{kind=\"failover\"}"), 0.0);
    assert_eq!(get(&o, "tandem_takeovers_total{kind=\"start\"}"), 1.0);

    // A failover: the active dies without releasing; the other node counts a failover.
    let mut cluster = cluster;
    cluster.kill(active);
    let next = cluster.wait_active(Some(active), Duration::from_secs(30));
    assert_eq!(next, old);
    let n = metrics(&cluster, next);
    assert_eq!(get(&n, "tandem_takeovers_total{kind=\"failover\"}"), 1.0);
    assert_eq!(get(&n, "tandem_role{role=\"active\"}"), 1.0);
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let port = |_| tandem_tests::free_port("127.0.0.1");
    let ports: Vec<u16> = (0..6).map(port).collect();
    let members: String = [(1, "a", "data"), (2, "b", "data"), (3, "w", "witness")]
        .iter()
        .enumerate()
        .map(|(i, (id, name, role))| {
            format!(
                "[[members]]\nid = {id}\nname = \"{name}\"\nrole = \"{role}\"\npeer_addr = \"127.0.0.1:{}\"\nadmin_addr = \"127.0.0.1:{}\"\n",
                ports[2 * i],
                ports[2 * i + 1]
            )
        })
        .collect();
    let config = dir.path().join("a.toml");
    std::fs::write(
        &config,
        format!(
            "node_id = 1\ndata_dir = \"a\"\npeer_listen = \"127.0.0.1:{}\"\nadmin_listen = \"127.0.0.1:{}\"\ncluster_secret = \"{}\"\n{members}",
            ports[0],
            ports[1],
            tandem_tests::SECRET
        ),
    )
    .unwrap();
    let mut child = tandem_tests::tandem()
        .args(["run", "--config"])
        .arg(&config)
        .env("TANDEM_LOG_FORMAT", "json")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut seen = Vec::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            let done = line.contains("tandem node started");
            seen.push(line);
            if done {
                break;
            }
        }
        seen
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lines.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let lines = lines.join().unwrap();
    let started = lines.last().expect("log lines");
    assert!(started.contains("tandem node started"), "{lines:?}");
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
    let v: serde_json::Value = serde_json::from_str(started).unwrap();
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["fields"]["role"], "data");
    assert_eq!(v["span"]["node"], "a", "the node's span names it: {started}");
}
