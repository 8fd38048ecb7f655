//! The README's first command: `deploy/local/cluster.sh` brings up three processes, shows who
//! leads, replicates, survives a SIGKILL, and stops them again.

use std::path::PathBuf;
use std::process::Command;
use std::process::Output;
use std::time::Duration;
use std::time::Instant;

struct Script {
    dir: tempfile::TempDir,
    port_base: u16,
}

impl Script {
    fn run(&self, args: &[&str]) -> Output {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/cluster.sh");
        Command::new("bash")
            .arg(script)
            .args(args)
            .env("TANDEM_LOCAL_DIR", self.dir.path())
            .env("TANDEM_LOCAL_PORT_BASE", self.port_base.to_string())
            // The test runner built the binaries already; building here would wait on cargo's lock.
            .env("TANDEM_SKIP_BUILD", "1")
            .output()
            .expect("run cluster.sh")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn leader(&self) -> Option<String> {
        let out = self.run(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find_map(|l| l.strip_prefix("leader: "))
            .and_then(|l| l.split_whitespace().next())
            .map(String::from)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        self.run(&["down"]);
    }
}

#[test]
fn the_local_cluster_script_runs_a_cluster_that_survives_a_kill() {
    tandem_tests::bin_dir(); // fails with the build command if the binaries are missing
    let script = Script {
        dir: tempfile::tempdir().unwrap(),
        port_base: 27300,
    };

    // `up` starts all three, bootstraps, and shows the table and what to try next.
    let up = script.ok(&["up"]);
    assert!(up.contains("NODE  ID  KIND"), "{up}");
    assert!(up.contains("leader: a") || up.contains("leader: b"), "{up}");
    assert!(up.contains("Things to try"), "{up}");

    let written = script.ok(&["write", "3"]);
    assert_eq!(
        written.lines().filter(|l| l.contains("committed at index")).count(),
        3,
        "{written}"
    );

    // Kill the leader: the other data node leads (the witness may lead for a moment first, and
    // hands over).
    let old = script.leader().expect("a leader");
    script.ok(&["kill", &old]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match script.leader() {
            Some(l) if l != old && l != "w" => break,
            _ if Instant::now() > deadline => panic!("no data node leads after killing {old}"),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }

    // Restart and stop.
    script.ok(&["restart", &old]);
    let down = script.ok(&["down"]);
    assert!(down.contains("stopped; data kept"), "{down}");
}
