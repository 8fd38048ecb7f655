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
            "mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system && {masked} && \
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
