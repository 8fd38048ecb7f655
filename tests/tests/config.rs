//! Bad config files: each is refused at start with an error that names the key and the rule,
//! and nothing is created on disk.

use tandem_tests::tandem;

const GOOD: &str = r#"
node_id = 1
data_dir = "data"
peer_listen = "127.0.0.1:7901"
admin_listen = "127.0.0.1:7911"
cluster_secret = "config-test-secret-0123456789"

[timers]
heartbeat_ms = 100
election_timeout_min_ms = 400
election_timeout_max_ms = 800
lease_ms = 340

[[members]]
id = 1
name = "a"
role = "data"
peer_addr = "127.0.0.1:7901"
admin_addr = "127.0.0.1:7911"

[[members]]
id = 2
name = "b"
role = "data"
peer_addr = "127.0.0.1:7902"
admin_addr = "127.0.0.1:7912"

[[members]]
id = 3
name = "w"
role = "witness"
peer_addr = "127.0.0.1:7903"
admin_addr = "127.0.0.1:7913"
"#;

/// (what is wrong, edit to the good file, text the error must contain)
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    vec![
        (
            "lease longer than the election rule allows",
            GOOD.replace("lease_ms = 340", "lease_ms = 390"),
            vec![
                "`timers.lease_ms`",
                "election_timeout_min × (1 − 2ρ) − margin",
                "342 ms",
            ],
        ),
        (
            "heartbeat not shorter than the election timeout",
            GOOD.replace("heartbeat_ms = 100", "heartbeat_ms = 450"),
            vec!["`timers.heartbeat_ms`", "must be shorter than election_timeout_min_ms"],
        ),
        (
            "unknown key",
            GOOD.replace("lease_ms = 340", "lease_ms = 340\nlease_timeout = 3"),
            vec!["`lease_timeout`", "unknown field"],
        ),
        (
            "duplicate node ids",
            GOOD.replace("id = 2\n", "id = 1\n"),
            vec!["`members[1].id`", "duplicate member id 1"],
        ),
        (
            "no witness among the voters",
            GOOD.replace("role = \"witness\"", "role = \"data\""),
            vec!["`members`", "the witness must be a voter"],
        ),
        (
            "node id not among the members",
            GOOD.replace("node_id = 1", "node_id = 4"),
            vec!["`node_id`", "not the id of any entry in [[members]]"],
        ),
        (
            "secret too short",
            GOOD.replace("config-test-secret-0123456789", "short"),
            vec!["`cluster_secret`", "CLUSTER_SECRET_MIN_BYTES"],
        ),
        (
            "two members",
            GOOD[..GOOD.rfind("[[members]]").unwrap()].to_string(),
            vec!["`members`", "exactly three voters"],
        ),
        (
            "bad listen address",
            GOOD.replace("peer_listen = \"127.0.0.1:7901\"", "peer_listen = \"localhost\""),
            vec!["`peer_listen`", "not an IP address with a port"],
        ),
        ("not TOML", "node_id = [".to_string(), vec!["invalid config"]),
        (
            "unknown monitor type",
            format!("{GOOD}\n[[monitors]]\nname = \"web\"\ntype = \"ping\"\n"),
            vec!["`monitors[0].type`", "unknown monitor type \"ping\"", "tcp, http"],
        ),
        (
            "zero monitor interval",
            format!(
                "{GOOD}\n[[monitors]]\nname = \"web\"\ntype = \"tcp\"\naddress = \"127.0.0.1:80\"\ninterval_ms = 0\n"
            ),
            vec!["`monitors[0].interval_ms`", "below MONITOR_INTERVAL_MIN_MS"],
        ),
        (
            "monitor without its target",
            format!("{GOOD}\n[[monitors]]\nname = \"web\"\ntype = \"tcp\"\n"),
            vec!["`monitors[0].address`", "a tcp monitor needs address"],
        ),
        (
            "monitors on the witness",
            format!(
                "{}\n[[monitors]]\nname = \"m\"\ntype = \"memory\"\nmax_used_percent = 90\n",
                GOOD.replace("node_id = 1", "node_id = 3")
            ),
            vec!["`monitors`", "the witness never runs the service"],
        ),
    ]
}

#[test]
fn bad_config_files_each_produce_their_named_error_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for (what, text, expected) in cases() {
        let path = dir.path().join("node.toml");
        std::fs::write(&path, &text).unwrap();
        for sub in ["check-config", "run"] {
            let out = tandem().args([sub, "--config"]).arg(&path).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{what} ({sub}): exit code; stderr: {stderr}"
            );
            for needle in &expected {
                assert!(
                    stderr.contains(needle),
                    "{what} ({sub}): expected {needle:?} in: {stderr}"
                );
            }
            assert!(
                !dir.path().join("data").exists(),
                "{what} ({sub}): a rejected config must create nothing"
            );
        }
    }
}

#[test]
fn the_good_config_passes_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, GOOD).unwrap();
    for check in [&["config", "check"][..], &["check-config"][..]] {
        let out = tandem().args(check).arg("--config").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(said.contains("ok (node 1 \"a\", data; admin API on "), "{said}");
    }
}
