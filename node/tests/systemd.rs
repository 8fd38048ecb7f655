//! The systemd-unit resource against a real systemd: a private systemd boots as PID 1 of its
//! own PID, mount and network namespaces, with a private `/run`, a target that pulls in
//! nothing, and the units that would touch shared files or kernel settings (tmpfiles cleaning
//! `/tmp`, sysctl) masked, so it changes nothing of this machine; a test unit lives in its `/run/systemd/system`; the resource agent then runs inside its mount namespace,
//! where `systemctl` reaches it; so does the `systemd` health monitor. Needs root, util-linux and the systemd package (tests/run.sh
//! installs it).

use std::process::Child;
use std::process::Command;
use std::process::Output;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use tandem_node::config::ValidConfig;
use tandem_node::monitor::probe;
use tandem_node::monitor::probe::ProbeState;
use tandem_node::monitor::spec::Probe;
use tandem_node::resources::ResourceAgent;

const UNIT: &str = "tandem-probe.service";

/// A systemd of its own, killed (with everything it started) on drop.
struct PrivateSystemd {
    unshare: Child,
    pid: u32,
}

impl PrivateSystemd {
    fn boot() -> Self {
        // Units that would touch this machine's shared files or kernel settings are masked;
        // the empty target pulls in nothing else.
        let masked = [
            "systemd-tmpfiles-setup.service",
            "systemd-tmpfiles-setup-dev.service",
            "systemd-tmpfiles-clean.service",
            "systemd-tmpfiles-clean.timer",
            "systemd-sysctl.service",
            "systemd-binfmt.service",
            "systemd-remount-fs.service",
        ]
        .map(|u| format!("ln -s /dev/null /run/systemd/system/{u}"))
        .join(" && ");
        let setup = format!(
            "ip link set lo up && mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && {masked} && \
             printf '[Unit]\\nDescription=Tandem test target\\n' > /run/systemd/system/tandem-test.target && \
             printf '[Unit]\\nDescription=Tandem test unit\\n[Service]\\nExecStart=/bin/sleep 3600\\n' > /run/systemd/system/{UNIT} && \
             exec /lib/systemd/systemd --system --unit=tandem-test.target"
        );
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--fork",
                "--mount",
                "--mount-proc",
                "--net",
                "--uts",
                "--propagation",
                "private",
                "sh",
                "-c",
                &setup,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux) must be installed");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        let pid = loop {
            let text = std::fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = text.split_whitespace().next().and_then(|p| p.parse().ok()) {
                break pid;
            }
            assert!(Instant::now() < deadline, "systemd did not start (needs root)");
            std::thread::sleep(Duration::from_millis(20));
        };
        let sd = Self { unshare, pid };
        loop {
            let state = sd.systemctl(&["is-system-running"]);
            let text = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if text == "running" || text == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the private systemd did not come up: {text:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sd
    }

    fn enter(&self) -> Command {
        let mut c = Command::new("nsenter");
        // The PID namespace too: systemd refuses clients whose pid it cannot see.
        c.args(["-t", &self.pid.to_string(), "-m", "-p", "--"]);
        c
    }

    /// A command in the private systemd's mount, PID and network namespaces.
    fn enter_net(&self) -> Command {
        let mut c = Command::new("nsenter");
        c.args(["-t", &self.pid.to_string(), "-m", "-p", "-n", "--"]);
        c
    }

    fn show(&self, unit: &str, property: &str) -> String {
        let out = self.systemctl(&["show", unit, "-p", property, "--value"]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        self.enter().arg("systemctl").args(args).output().expect("nsenter")
    }

    fn is_active(&self) -> String {
        String::from_utf8_lossy(&self.systemctl(&["is-active", UNIT]).stdout)
            .trim()
            .to_string()
    }
}

impl Drop for PrivateSystemd {
    fn drop(&mut self) {
        // Killing PID 1 of a PID namespace ends everything in it.
        let _ = Command::new("kill").args(["-9", &self.pid.to_string()]).status();
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

#[test]
fn a_systemd_unit_resource_starts_checks_and_stops_a_real_unit() {
    let sd = PrivateSystemd::boot();
    assert_eq!(sd.is_active(), "inactive");
    let exe = std::env::current_exe().unwrap();
    let out = sd
        .enter()
        .arg(exe)
        .args(["--exact", "systemd_unit_helper", "--ignored", "--nocapture"])
        .env("TANDEM_TEST_SYSTEMD_PID", sd.pid.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the helper failed:\n{text}");
    assert!(text.contains("1 passed"), "the helper ran:\n{text}");
    assert_eq!(sd.is_active(), "inactive", "released: the unit is stopped");
}

fn systemctl(args: &[&str]) -> String {
    let out = Command::new("systemctl").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "helper: run inside a private systemd's mount namespace by a_systemd_unit_resource_starts_checks_and_stops_a_real_unit"]
fn systemd_unit_helper() {
    assert!(
        std::env::var("TANDEM_TEST_SYSTEMD_PID").is_ok(),
        "run by the test above"
    );
    let text = format!(
        r#"node_id = 1
data_dir = "/tmp/unused"
peer_listen = "127.0.0.1:7001"
admin_listen = "127.0.0.1:7101"
cluster_secret = "0123456789abcdef0123"

[[members]]
id = 1
name = "a"
role = "data"
peer_addr = "127.0.0.1:7001"
admin_addr = "127.0.0.1:7101"

[[members]]
id = 2
name = "b"
role = "data"
peer_addr = "127.0.0.1:7002"
admin_addr = "127.0.0.1:7102"

[[members]]
id = 3
name = "w"
role = "witness"
peer_addr = "127.0.0.1:7003"
admin_addr = "127.0.0.1:7103"

[[resources]]
type = "systemd"
name = "probe"
unit = "{UNIT}"
"#
    );
    let cfg = ValidConfig::parse(&text, std::path::Path::new("/tmp")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let agent = ResourceAgent::new("a".into(), cfg.resources.clone());
        agent.acquire(1).await.expect("systemctl start");
        assert_eq!(systemctl(&["is-active", UNIT]), "active");
        assert!(matches!(agent.check(0, 1).await, Some(Ok(()))), "is-active passes");
        // A `systemd` health monitor of the same unit passes too.
        let monitor = Probe::Systemd { unit: UNIT.into() };
        let mut probe_state = ProbeState::default();
        let passed = probe::run(&monitor, &mut probe_state, Duration::from_secs(5)).await;
        assert_eq!(passed, Ok(format!("unit {UNIT} is active")));

        // The unit dies behind tandem's back: the check says so.
        systemctl(&["kill", "--signal=KILL", UNIT]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while systemctl(&["is-active", UNIT]) == "active" {
            assert!(Instant::now() < deadline, "the unit did not die");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let failed = agent.check(0, 1).await.expect("ran").unwrap_err();
        assert!(failed.to_string().contains("resource probe: check exited"), "{failed}");
        // The monitor fails and names the unit's state.
        let failed = probe::run(&monitor, &mut probe_state, Duration::from_secs(5)).await;
        let reason = failed.expect_err("a killed unit fails the monitor");
        assert!(
            reason == format!("unit {UNIT} is failed") || reason == format!("unit {UNIT} is inactive"),
            "{reason}"
        );

        // Started over, then released: the unit ends stopped.
        agent.release().await.expect("systemctl stop");
        agent.acquire(1).await.expect("systemctl start again");
        assert_eq!(systemctl(&["is-active", UNIT]), "active");
        agent.release().await.expect("systemctl stop");
        assert_eq!(systemctl(&["is-active", UNIT]), "inactive");
    });
}

/// The shipped unit, with the binary and config paths of this test (a drop-in changes nothing
/// else), for node `name` whose config is at `config`.
/// Where the units' binary, configs and data live: the private systemd's own `/run` (a tmpfs of
/// its mount namespace). Not the build's directories: the unit gives the node a private `/tmp`
/// (`PrivateTmp=yes`), and a checkout may well be under `/tmp`.
const RUN_DIR: &str = "/run/tandem-test";

/// Write `bytes` to `path` in the private systemd's mount namespace.
fn put(sd: &PrivateSystemd, path: &str, bytes: &[u8]) {
    let mut child = sd
        .enter()
        .args(["sh", "-c", &format!("mkdir -p \"$(dirname {path})\" && cat > {path}")])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), bytes).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success(), "writing {path}");
}

fn install_unit(sd: &PrivateSystemd, name: &str, watchdog: &str) {
    let bin = format!("{RUN_DIR}/tandem");
    let config = format!("{RUN_DIR}/{name}.toml");
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd/tandem.service")).unwrap();
    let dropin = format!(
        "[Service]\nExecStart=\nExecStart={bin} run --config {c}\nExecStopPost=\nExecStopPost={bin} release-vips --config {c}\n\
         # The data dir is in the test directory, not in /var/lib of this machine.\nStateDirectory=\nWatchdogSec={watchdog}\n",
        c = config
    );
    let script = format!(
        "cat > /run/systemd/system/tandem-{name}.service && mkdir -p /run/systemd/system/tandem-{name}.service.d && \
         printf '%s' '{dropin}' > /run/systemd/system/tandem-{name}.service.d/test.conf"
    );
    let mut child = sd
        .enter()
        .args(["sh", "-c", &script])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), unit.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> Option<String>) {
    let deadline = Instant::now() + within;
    let mut last;
    loop {
        match check() {
            None => return,
            Some(state) => last = state,
        }
        assert!(Instant::now() < deadline, "{what}: still {last}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_shipped_unit_passes_systemd_analyze_verify_and_the_check_catches_a_bad_key() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_tandem"), r.join("usr/local/bin/tandem")).unwrap();
    // The system's own units (targets the unit refers to) as in an installed system.
    let copied = Command::new("cp")
        .args(["-r", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(copied.success());
    let unit =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/systemd/tandem.service")).unwrap();
    let verify = |name: &str, text: &str| {
        std::fs::write(r.join("etc/systemd/system").join(name), text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", r.display()))
            .arg(name)
            .output()
            .expect("systemd-analyze (package systemd; tests/run.sh installs it)");
        let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = verify("tandem.service", &unit);
    assert!(ok && text.trim().is_empty(), "systemd-analyze verify:\n{text}");
    for needed in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "ExecStopPost=/usr/local/bin/tandem release-vips",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "NoNewPrivileges=yes",
    ] {
        assert!(unit.contains(needed), "the unit lacks {needed}");
    }
    // The check sees a mistyped key, and a missing binary.
    let (_, text) = verify("typo.service", &unit.replace("WatchdogSec=", "WatchdogSecs="));
    assert!(text.contains("Unknown key"), "a typo went unnoticed:\n{text}");
    let (ok, text) = verify(
        "nobin.service",
        &unit.replace("/usr/local/bin/tandem run", "/usr/local/bin/tandemd run"),
    );
    assert!(
        !ok && text.contains("not executable"),
        "a missing binary went unnoticed:\n{text}"
    );
}

#[test]
fn the_shipped_unit_reports_readiness_once_joined_restarts_a_hung_node_and_releases_its_vip() {
    let sd = PrivateSystemd::boot();
    put(
        &sd,
        &format!("{RUN_DIR}/tandem"),
        &std::fs::read(env!("CARGO_BIN_EXE_tandem")).unwrap(),
    );
    assert!(sd
        .enter()
        .args(["chmod", "755", &format!("{RUN_DIR}/tandem")])
        .status()
        .unwrap()
        .success());
    // The VIP's link: one end of a veth pair inside the private network namespace.
    let added = sd
        .enter_net()
        .args([
            "sh",
            "-c",
            "ip link add tvip0 type veth peer name tvip1 && ip link set tvip0 up && ip link set tvip1 up",
        ])
        .status()
        .unwrap();
    assert!(added.success());
    let members = (1..=3)
        .map(|i| {
            let (name, role) = [("a", "data"), ("b", "data"), ("w", "witness")][i - 1];
            format!(
                "[[members]]\nid = {i}\nname = \"{name}\"\nrole = \"{role}\"\npeer_addr = \"127.0.0.1:700{i}\"\nadmin_addr = \"127.0.0.1:710{i}\"\n"
            )
        })
        .collect::<String>();
    for (i, name) in ["a", "b", "w"].iter().enumerate() {
        let id = i + 1;
        // Only node a has a VIP: all three share one network namespace here.
        let vip = if *name == "a" {
            "[[resources]]\ntype = \"vip\"\nname = \"front\"\naddress = \"10.77.0.10/24\"\ninterface = \"tvip0\"\n"
        } else {
            ""
        };
        let config = format!(
            "node_id = {id}\ndata_dir = \"{RUN_DIR}/{name}\"\npeer_listen = \"127.0.0.1:700{id}\"\nadmin_listen = \"127.0.0.1:710{id}\"\n\
             cluster_secret = \"0123456789abcdef0123\"\n{vip}\n{members}"
        );
        put(&sd, &format!("{RUN_DIR}/{name}.toml"), config.as_bytes());
        install_unit(&sd, name, "3s");
    }
    assert!(sd.systemctl(&["daemon-reload"]).status.success());
    let started = sd.systemctl(&["start", "--no-block", "tandem-a", "tandem-b", "tandem-w"]);
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));

    // Before `tandem init`, no node has joined: the units stay "activating" and say why.
    wait_for("node a's status line", Duration::from_secs(20), || {
        let status = sd.show("tandem-a", "StatusText");
        (!status.contains("waiting to join")).then_some(status)
    });
    assert_eq!(sd.show("tandem-a", "ActiveState"), "activating");
    let init = sd
        .enter_net()
        .arg(env!("CARGO_BIN_EXE_tandem"))
        .args(["init", "--config", &format!("{RUN_DIR}/a.toml")])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "tandem init: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    for unit in ["tandem-a", "tandem-b", "tandem-w"] {
        wait_for(&format!("{unit} ready"), Duration::from_secs(30), || {
            let state = sd.show(unit, "ActiveState");
            (state != "active").then_some(state)
        });
    }
    // Find the active data node; the service (with node a's VIP) runs there.
    let mut active = String::new();
    wait_for("an active node", Duration::from_secs(30), || {
        for unit in ["tandem-a", "tandem-b"] {
            if sd.show(unit, "StatusText").starts_with("active, epoch") {
                active = unit.to_string();
                return None;
            }
        }
        Some(format!(
            "{} / {}",
            sd.show("tandem-a", "StatusText"),
            sd.show("tandem-b", "StatusText")
        ))
    });
    let vip_present = || {
        let out = sd
            .enter_net()
            .args(["ip", "-o", "addr", "show", "dev", "tvip0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("10.77.0.10/24")
    };
    if active != "tandem-a" {
        // Hand the service to a, so that its VIP is up.
        let out = sd
            .enter_net()
            // Built beside tandem by tests/run.sh (`cargo build --workspace --bins`).
            .arg(std::path::Path::new(env!("CARGO_BIN_EXE_tandem")).with_file_name("tandemctl"))
            .args(["--nodes", "127.0.0.1:7101", "switchover", "--to", "a"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "switchover: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    wait_for("node a active with its VIP", Duration::from_secs(30), || {
        let s = sd.show("tandem-a", "StatusText");
        (!(s.starts_with("active, epoch") && vip_present())).then_some(s)
    });

    // A hung node: stopped by SIGSTOP, it no longer pets the watchdog; systemd kills it and
    // starts it again (Restart=on-failure), and the stop step removes its VIP.
    let pid = sd.show("tandem-a", "MainPID");
    assert!(sd.enter().args(["kill", "-STOP", &pid]).status().unwrap().success());
    wait_for("the watchdog to restart node a", Duration::from_secs(30), || {
        let restarts = sd.show("tandem-a", "NRestarts");
        (restarts == "0").then_some(format!("NRestarts={restarts}"))
    });
    assert_ne!(sd.show("tandem-a", "MainPID"), pid, "a new process");
    let stop_post = sd.show("tandem-a", "ExecStopPost");
    assert!(
        stop_post.contains("status=0/0"),
        "the stop step ran and succeeded: {stop_post}"
    );
    assert!(!vip_present(), "the VIP went with the process");
    // Node b takes over, and the restarted a joins again as standby.
    wait_for("b active, a back", Duration::from_secs(40), || {
        let (a, b) = (sd.show("tandem-a", "StatusText"), sd.show("tandem-b", "StatusText"));
        let ok = b.starts_with("active, epoch") && sd.show("tandem-a", "ActiveState") == "active";
        (!ok).then_some(format!("a: {a}; b: {b}"))
    });
    let journal = sd.systemctl(&["status", "tandem-a", "--no-pager"]);
    let text = String::from_utf8_lossy(&journal.stdout);
    assert!(text.contains("active (running)"), "{text}");
}
