//! Health monitors and the switch policy on the real three-process cluster: the protected
//! service is a real HTTP server (`lab-service`) started by the active's resource script and
//! watched by an `http` monitor; a failure is made by killing it.

use std::path::PathBuf;
use std::time::Duration;
use std::time::Instant;

use tandem_client::api::EventInfo;
use tandem_client::EventsQuery;
use tandem_tests::lab_service_resource;
use tandem_tests::other_data_node;
use tandem_tests::Cluster;
use tandem_tests::ClusterOptions;

const SETTLE: Duration = Duration::from_secs(15);
const MONITOR_INTERVAL_MS: u64 = 300;
const MAX_FAILURES: u64 = 3;

/// A port prefix P such that P1 and P2 (node a's and b's service ports) are free.
fn port_prefix() -> String {
    for prefix in (2801..3200).map(|p| p + (std::process::id() as u16 % 300)) {
        let free = |id| std::net::TcpListener::bind(("127.0.0.1", prefix * 10 + id)).is_ok();
        if free(1) && free(2) {
            return prefix.to_string();
        }
    }
    panic!("no free pair of service ports");
}

struct Setup {
    cluster: Cluster,
    dir: tempfile::TempDir,
    prefix: String,
}

impl Setup {
    /// A cluster whose data nodes run `lab-service` as their resource, with `monitors` (TOML,
    /// `SERVICE_PORT` standing for the node's service port) added; anti-flap's dwell time is
    /// set to 0 so a fresh active may switch.
    fn start(monitors: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let prefix = port_prefix();
        let monitors = monitors.replace("SERVICE_PORT", &format!("{prefix}@NODE_ID@"));
        let data_config = format!("{}{monitors}", lab_service_resource(dir.path(), &prefix));
        let cluster = Cluster::start_initialized(ClusterOptions {
            data_config,
            ..Default::default()
        })
        .unwrap();
        let setup = Setup { cluster, dir, prefix };
        setup.policy(&["--min-active-secs", "0"]);
        setup
    }

    /// `tandemctl policy ARGS`, again while no leader is known yet (just after the start).
    fn policy(&self, args: &[&str]) {
        let args: Vec<&str> = ["policy"].into_iter().chain(args.iter().copied()).collect();
        self.wait(&format!("tandemctl {args:?} succeeds"), || {
            let (code, out) = self.cluster.ctl(&args);
            assert!(code == Some(0) || out.contains("no leader is known yet"), "{out}");
            (code == Some(0)).then_some(())
        });
    }

    fn service_addr(&self, node: &str) -> String {
        format!("{}{}", self.prefix, self.cluster.spec(node).id)
    }

    /// What the service of `node` answers, if it answers.
    fn service_answer(&self, node: &str) -> Option<String> {
        use std::io::Read;
        use std::io::Write;
        let addr = format!("127.0.0.1:{}", self.service_addr(node));
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    fn pid_file(&self, node: &str) -> PathBuf {
        self.dir.path().join(format!("svc-{node}.pid"))
    }

    /// SIGKILL the service on `node` (not Tandem).
    fn kill_service(&self, node: &str) {
        let pid = std::fs::read_to_string(self.pid_file(node)).expect("the service's pid file");
        let ok = std::process::Command::new("kill")
            .args(["-9", pid.trim()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill the service of {node}");
    }

    /// Wait for the active whose service answers and whose monitors all pass, and a synced
    /// standby ("ready").
    fn wait_ready(&self) -> &'static str {
        let active = self.cluster.wait_active(None, SETTLE);
        self.wait(&format!("{active} serves and the cluster is ready"), || {
            let s = self.cluster.status(active).ok()?;
            let monitors_ok = s.monitors.iter().all(|m| m.state == "ok" || m.scope == "standby");
            (s.cluster_status.state == "ready" && monitors_ok && self.service_answer(active).is_some()).then_some(())
        });
        active
    }

    fn wait<T>(&self, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + SETTLE;
        loop {
            if let Some(v) = cond() {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for: {what}\n{:#?}",
                self.cluster.snapshot()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn events(&self, node: &str, kind: &str) -> Vec<EventInfo> {
        let q = EventsQuery {
            kind: Some(kind.into()),
            ..Default::default()
        };
        self.cluster
            .block_on(self.cluster.client(node).events(&q))
            .unwrap()
            .events
    }

    /// `node` stays active (and nobody else becomes so) for `time`.
    fn stays_active(&self, node: &str, time: Duration) {
        let until = Instant::now() + time;
        while Instant::now() < until {
            assert_eq!(self.cluster.active(), Some(node), "the active must not move");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An `http` monitor of the node's own service, which answers with the node's name.
fn http_monitor(scope: &str, log_only: bool) -> String {
    format!(
        "[[monitors]]\nname = \"web\"\ntype = \"http\"\nurl = \"http://127.0.0.1:SERVICE_PORT/\"\nbody_contains = \"@NODE@\"\ninterval_ms = {MONITOR_INTERVAL_MS}\ntimeout_ms = {MONITOR_INTERVAL_MS}\nmax_failures = {MAX_FAILURES}\nscope = \"{scope}\"\nlog_only = {log_only}\n"
    )
}

#[test]
fn killing_the_service_on_the_active_moves_it_to_the_standby() {
    let setup = Setup::start(&http_monitor("active", false));
    let first = setup.wait_ready();
    let second = other_data_node(first);
    assert!(setup.service_answer(second).is_none(), "the standby runs no service");

    let killed_at = tandem_events_clock();
    setup.kill_service(first);
    let now_active = setup.cluster.wait_active(Some(first), SETTLE);
    assert_eq!(now_active, second);
    let answer = setup.wait(&format!("the service answers on {second}"), || {
        setup.service_answer(second)
    });
    assert!(answer.ends_with(&format!("{second}\n")), "{answer}");

    // What happened, in the event log of the node that failed.
    let monitor = setup.events(first, "monitor");
    assert!(
        monitor.iter().any(|e| e.detail.starts_with(&format!(
            "web (http GET http://127.0.0.1:{}/) failed 3 times in a row",
            setup.service_addr(first)
        ))),
        "{monitor:#?}"
    );
    let switched = setup.events(first, "failover");
    let auto = switched
        .iter()
        .find(|e| {
            e.detail
                .starts_with(&format!("automatic switchover {first} -> {second}"))
        })
        .unwrap_or_else(|| panic!("{switched:#?}"));
    // Detection to switchover start, for the record (the bound is measured in the benchmark).
    eprintln!(
        "service killed -> automatic switchover started: {} ms (interval {MONITOR_INTERVAL_MS} ms x max_failures {MAX_FAILURES})",
        auto.at_ms.saturating_sub(killed_at)
    );
    let roles = setup.events(second, "role");
    assert!(roles.iter().any(|e| e.detail.ends_with("-> active")), "{roles:#?}");
    // The automatic switchover is in the replicated audit trail.
    let (code, audit) = setup.cluster.ctl(&["audit"]);
    assert_eq!(code, Some(0), "{audit}");
    assert!(
        audit.contains("auto-switchover") && audit.contains(&format!("monitor@{first}")),
        "{audit}"
    );
}

/// Milliseconds since the Unix epoch: the clock the event log stamps with.
fn tandem_events_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[test]
fn with_auto_switch_off_a_failing_active_raises_a_warning_and_nothing_moves() {
    let setup = Setup::start(&http_monitor("active", false));
    setup.policy(&["--auto-switch", "off"]);
    let first = setup.wait_ready();

    setup.kill_service(first);
    let warning = setup.wait("the cluster shows warning", || {
        let c = setup.cluster.status(first).ok()?.cluster_status;
        (c.state == "warning").then_some(c.reason)
    });
    assert!(
        warning.contains("monitor web failed") && warning.contains("not switching: auto-switch is off"),
        "{warning}"
    );
    // tandemctl status shows it too.
    let (_, table) = setup.cluster.ctl(&["status"]);
    assert!(table.contains("cluster: warning ("), "{table}");
    assert!(table.contains("web") && table.contains("failed"), "{table}");
    setup.stays_active(first, Duration::from_millis(MONITOR_INTERVAL_MS * MAX_FAILURES * 2));
    let warnings = setup.events(first, "warning");
    assert_eq!(warnings.len(), 1, "one warning event for one condition: {warnings:#?}");

    // `tandemctl events --follow` shows the policy change live.
    let nodes: Vec<String> = ["a", "b", "w"]
        .iter()
        .map(|n| setup.cluster.spec(n).admin_addr())
        .collect();
    let mut follow = tandem_tests::tandemctl()
        .args(["--nodes", &nodes.join(","), "events", "--follow", "--kind", "policy"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = follow.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));

    // The policy is what held it: turned on, the waiting switch happens.
    setup.policy(&["--auto-switch", "on"]);
    let line = lines.recv_timeout(SETTLE).expect("a followed policy event");
    assert!(
        line.contains(" policy ") && line.contains("auto_switch false -> true"),
        "{line}"
    );
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(setup.cluster.wait_active(Some(first), SETTLE), other_data_node(first));
    let policy = setup.events(first, "policy");
    assert!(
        policy.iter().any(|e| e.detail.contains("auto_switch false -> true")),
        "{policy:#?}"
    );
}

#[test]
fn with_scope_both_and_the_service_broken_on_both_nodes_nothing_moves() {
    // The check is a real script on a per-node marker file; both markers make both fail.
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("broken-@NODE@");
    let monitor = format!(
        "[[monitors]]\nname = \"app\"\ntype = \"script\"\ncommand = '! test -e {}'\ninterval_ms = {MONITOR_INTERVAL_MS}\nmax_failures = {MAX_FAILURES}\nscope = \"both\"\n",
        marker.display()
    );
    let setup = Setup::start(&monitor);
    let first = setup.wait_ready();
    let second = other_data_node(first);
    let broken = |n: &str| dir.path().join(format!("broken-{n}"));
    std::fs::write(broken(second), "").unwrap();
    std::fs::write(broken(first), "").unwrap();

    let warning = setup.wait("the active waits: the standby fails the same check", || {
        let c = setup.cluster.status(first).ok()?.cluster_status;
        (c.state == "warning" && c.reason.contains("not switching")).then_some(c.reason)
    });
    // Depending on which node counted its third failure first, the standby is seen failing
    // or not yet passing: either way it is no better.
    assert!(
        warning.contains(&format!("standby {second} fails monitor app too"))
            || warning.contains(&format!("app does not pass on standby {second} either")),
        "{warning}"
    );
    setup.stays_active(first, Duration::from_millis(MONITOR_INTERVAL_MS * MAX_FAILURES * 2));

    // Mend the standby only: now it is better, and the service moves there.
    std::fs::remove_file(broken(second)).unwrap();
    assert_eq!(setup.cluster.wait_active(Some(first), SETTLE), second);
}

#[test]
fn a_log_only_monitor_only_logs() {
    let setup = Setup::start(&http_monitor("active", true));
    let first = setup.wait_ready();
    // Follow the active's live event stream while the failure happens.
    let client = setup.cluster.client(first);
    let streamed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<EventInfo>::new()));
    let sink = streamed.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = rt.block_on(client.follow_events(Some("monitor"), |e| sink.lock().unwrap().push(e)));
    });
    std::thread::sleep(Duration::from_millis(300));

    setup.kill_service(first);
    let logged = setup.wait("the failure is logged", || {
        let events = setup.events(first, "monitor");
        events
            .into_iter()
            .find(|e| e.detail.contains("failed 3 times in a row"))
    });
    assert!(logged.detail.ends_with("(log only: no action)"), "{logged:?}");
    setup.stays_active(first, Duration::from_millis(MONITOR_INTERVAL_MS * MAX_FAILURES * 2));
    let s = setup.cluster.status(first).unwrap();
    assert_eq!(s.cluster_status.state, "ready", "{:?}", s.cluster_status);
    let web = s.monitors.iter().find(|m| m.name == "web").unwrap();
    assert_eq!((web.state.as_str(), web.log_only), ("failed", true));
    assert!(setup.events(first, "warning").is_empty());
    assert!(setup
        .events(first, "failover")
        .iter()
        .all(|e| !e.detail.contains("automatic")));

    // The stream carried the same failure, and only monitor events.
    let streamed = streamed.lock().unwrap().clone();
    assert!(
        streamed
            .iter()
            .any(|e| e.seq == logged.seq && e.detail == logged.detail),
        "{streamed:#?}"
    );
    assert!(streamed.iter().all(|e| e.kind == "monitor"));

    // tandemctl: the merged list, a filter by node, and CSV.
    let (code, out) = setup.cluster.ctl(&["events", "--kind", "monitor", "--node", first]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("failed 3 times in a row"), "{out}");
    let (code, csv) = setup.cluster.ctl(&["events", "--csv", "--kind", "role"]);
    assert_eq!(code, Some(0), "{csv}");
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("seq,time_utc,at_ms,node,epoch,kind,detail"));
    assert!(
        lines
            .clone()
            .any(|l| l.ends_with(",role,standby -> active") || l.contains(",role,")),
        "{csv}"
    );
    assert!(lines.all(|l| l.contains(",role,")), "{csv}");
    // Into a pipe whose reader is already gone (`| head` that has what it wanted): a quiet end.
    let nodes: Vec<String> = setup.cluster.nodes.iter().map(|n| n.admin_addr()).collect();
    let mut child = tandem_tests::tandemctl()
        .args(["--nodes", &nodes.join(","), "events", "--csv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{:?}: {stderr}",
        out.status
    );
    let (code, out) = setup.cluster.ctl(&["events", "--kind", "nonsense"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("unknown event kind \"nonsense\""), "{out}");
}
