//! Harness for black-box tests: runs the real `tandem` binary as three processes on loopback
//! and talks to them through their admin APIs (the `tandem-client` crate) and `tandemctl`.
//!
//! The binaries must be built first (`cargo build --workspace --bins`); `tests/run.sh` does
//! that before `cargo test`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::time::Duration;
use std::time::Instant;

use anyhow::bail;
use anyhow::Context;
use tandem_client::api::NodeStatus;
use tandem_client::api::WriteTestRecord;
use tandem_client::api::WriteTestRecordResult;
use tandem_client::Client;
use tandem_client::ClientError;

pub mod mariadb;

/// The last `lines` lines of a log file (empty if it cannot be read).
fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub const SECRET: &str = "integration-test-secret-0123456789";

/// The data node that is not `name` (of the test clusters' `a` and `b`).
pub fn other_data_node(name: &str) -> &'static str {
    if name == "a" {
        "b"
    } else {
        "a"
    }
}

/// Directory holding the built `tandem` and `tandemctl`.
pub fn bin_dir() -> PathBuf {
    // Test executables live in target/<profile>/deps/, the bench binary in target/<profile>/.
    let exe = std::env::current_exe().expect("test executable path");
    let mut dir = exe.parent().expect("target/<profile>").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    for bin in ["tandem", "tandemctl"] {
        assert!(
            dir.join(bin).exists(),
            "{} not found: build the binaries first with `cargo build --workspace --bins` (tests/run.sh does this)",
            dir.join(bin).display()
        );
    }
    dir
}

pub fn tandem() -> Command {
    Command::new(bin_dir().join("tandem"))
}

pub fn tandemctl() -> Command {
    Command::new(bin_dir().join("tandemctl"))
}

/// A free TCP port on `ip` (bound, then released), never one this process handed out before:
/// the kernel may offer a just-released port again, and two members of one cluster (or a
/// node and a database server) must not be given the same one.
pub fn free_port(ip: &str) -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind((ip, 0))
            .expect("bind a free port")
            .local_addr()
            .unwrap()
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub id: u64,
    pub name: &'static str,
    pub role: &'static str,
    pub ip: String,
    pub peer_port: u16,
    pub admin_port: u16,
    /// Free for a `health_listen` (`@HEALTH_PORT@` in [`ClusterOptions::extra_config`]).
    pub health_port: u16,
}

impl NodeSpec {
    pub fn admin_addr(&self) -> String {
        format!("{}:{}", self.ip, self.admin_port)
    }

    pub fn peer_addr(&self) -> String {
        format!("{}:{}", self.ip, self.peer_port)
    }
}

/// Options for a test cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Give each node its own loopback address (127.0.<n>.1, 127.0.<n>.2, 127.0.<n>.3), so a
    /// test can cut one off with iptables.
    pub own_addresses: Option<u8>,
    /// TOML inserted into every node's config before the members (e.g. a `[log]` table);
    /// `@NODE@` and `@HEALTH_PORT@` in it become the node's name and a free port.
    pub extra_config: String,
    /// TOML appended to the data nodes' configs only (e.g. `[[resources]]`); `@NODE@`,
    /// `@NODE_ID@` and `@OTHER_NODE_ID@` in it become the node's name, its id and the other
    /// data node's id; `@DIR@` the cluster's directory.
    pub data_config: String,
    /// The same peer and admin port for every node (with `own_addresses`): a cluster whose
    /// stored membership names these addresses can be started again from its data.
    pub fixed_ports: Option<(u16, u16)>,
    /// A `.tar.gz` unpacked into the cluster's directory before the nodes start: their data
    /// dirs (`a/`, `b/`, `w/`) and whatever else a test kept beside them.
    pub data_from: Option<PathBuf>,
    /// Members list admin addresses nobody listens on (127.0.0.1:<id>), as when every admin
    /// API listens on loopback and the machines cannot reach each other's: whatever works
    /// must go over the peer ports.
    pub admin_addrs_unreachable: bool,
}

/// A `[[resources]]` script for [`ClusterOptions::data_config`] that runs `lab-service` as the
/// protected service on `127.0.0.1:<port_prefix><node id>` and keeps its pid in
/// `pid_dir/svc-<node>.pid` (so a test can kill the service behind Tandem's back).
pub fn lab_service_resource(pid_dir: &std::path::Path, port_prefix: &str) -> String {
    let pid = pid_dir.join("svc-@NODE@.pid");
    format!(
        "[[resources]]\ntype = \"script\"\nname = \"svc\"\nacquire = 'setsid {service} @NODE@ 127.0.0.1:{port_prefix}@NODE_ID@ >/dev/null 2>&1 </dev/null & echo $! > {pid}'\nrelease = 'if [ -e {pid} ]; then kill $(cat {pid}) 2>/dev/null; rm -f {pid}; fi; true'\n",
        service = bin_dir().join("lab-service").display(),
        pid = pid.display(),
    )
}

/// `sorted[p %]`, nearest rank (`p` from 0 to 100), for the bench binaries.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A bench binary's numeric option `name` (`--seconds 60`), or `default`.
pub fn bench_arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} needs a number")))
        .unwrap_or(default)
}

/// Clusters in one test binary run one at a time: three nodes with sub-second timers per
/// cluster are all two cores can run without starving elections.
static ONE_CLUSTER_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeSpec>,
    procs: Vec<Option<Child>>,
    /// One runtime for every admin API call the test makes.
    rt: tokio::runtime::Runtime,
    _turn: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Write the three configs and start the three processes (not yet initialized).
    pub fn start(opts: ClusterOptions) -> anyhow::Result<Self> {
        // A test that failed while holding the lock leaves it poisoned; the next may still run.
        let turn = ONE_CLUSTER_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir()?;
        let ip = |i: u64| match opts.own_addresses {
            Some(net) => format!("127.0.{net}.{i}"),
            None => "127.0.0.1".to_string(),
        };
        let nodes: Vec<NodeSpec> = [(1, "a", "data"), (2, "b", "data"), (3, "w", "witness")]
            .into_iter()
            .map(|(id, name, role)| {
                let ip = ip(id);
                let (peer_port, admin_port) = opts.fixed_ports.unwrap_or_else(|| (free_port(&ip), free_port(&ip)));
                NodeSpec {
                    id,
                    name,
                    role,
                    peer_port,
                    admin_port,
                    health_port: free_port(&ip),
                    ip,
                }
            })
            .collect();
        let members: String = nodes
            .iter()
            .map(|n| {
                format!(
                    "\n[[members]]\nid = {}\nname = \"{}\"\nrole = \"{}\"\npeer_addr = \"{}\"\nadmin_addr = \"{}\"\n",
                    n.id,
                    n.name,
                    n.role,
                    n.peer_addr(),
                    if opts.admin_addrs_unreachable {
                        format!("127.0.0.1:{}", n.id)
                    } else {
                        n.admin_addr()
                    }
                )
            })
            .collect();
        for n in &nodes {
            let cfg = format!(
                "node_id = {}\ndata_dir = \"{}\"\npeer_listen = \"{}\"\nadmin_listen = \"{}\"\ncluster_secret = \"{SECRET}\"\n{}\n{members}",
                n.id,
                n.name,
                n.peer_addr(),
                n.admin_addr(),
                opts.extra_config
                    .replace("@HEALTH_PORT@", &n.health_port.to_string())
                    .replace("@NODE@", n.name)
            );
            let cfg = if n.role == "data" {
                let own = opts
                    .data_config
                    .replace("@NODE@", n.name)
                    .replace("@DIR@", &dir.path().display().to_string())
                    .replace("@OTHER_NODE_ID@", &(3 - n.id).to_string())
                    .replace("@NODE_ID@", &n.id.to_string());
                format!("{cfg}\n{own}")
            } else {
                cfg
            };
            std::fs::write(dir.path().join(format!("{}.toml", n.name)), cfg)?;
        }
        if let Some(tar) = &opts.data_from {
            let out = Command::new("tar")
                .arg("-xzf")
                .arg(tar)
                .arg("-C")
                .arg(dir.path())
                .output()?;
            if !out.status.success() {
                bail!("unpacking {}: {}", tar.display(), String::from_utf8_lossy(&out.stderr));
            }
        }
        let mut cluster = Cluster {
            dir,
            procs: nodes.iter().map(|_| None).collect(),
            nodes,
            rt: tokio::runtime::Builder::new_current_thread().enable_all().build()?,
            _turn: turn,
        };
        for name in ["a", "b", "w"] {
            cluster.spawn(name)?;
        }
        for name in ["a", "b", "w"] {
            cluster.wait_admin(name)?;
        }
        Ok(cluster)
    }

    /// Start, initialize through node `a`, and wait for a data node to lead.
    pub fn start_initialized(opts: ClusterOptions) -> anyhow::Result<Self> {
        let cluster = Self::start(opts)?;
        let out = tandem()
            .args(["init", "--config"])
            .arg(cluster.config_path("a"))
            .output()?;
        if !out.status.success() {
            bail!("tandem init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        // Started means every member knows the leader of the current term, so a test that reads
        // one node's view first does not catch that node still learning of the election.
        cluster.wait_for("a data node leads, known to all three", Duration::from_secs(10), |s| {
            s.leader_status().is_some_and(|l| {
                l.kind == "data"
                    && s.reachable().count() == 3
                    && s.reachable().all(|n| n.term == l.term && n.leader == Some(l.node_id))
            })
        })?;
        Ok(cluster)
    }

    /// The directory holding the configs, the data dirs and the logs.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn config_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.toml"))
    }

    /// The one node answering `/health/active` with 200, if any; two at once fail the test.
    pub fn active(&self) -> Option<&'static str> {
        let up: Vec<&'static str> = self
            .nodes
            .iter()
            .filter(|n| health_active(&n.admin_addr()))
            .map(|n| n.name)
            .collect();
        assert!(up.len() <= 1, "two actives at once: {up:?}");
        up.first().copied()
    }

    /// Wait until a node other than `not` is active; fails the test after `within`.
    pub fn wait_active(&self, not: Option<&str>, within: Duration) -> &'static str {
        let deadline = Instant::now() + within;
        loop {
            if let Some(n) = self.active().filter(|n| Some(*n) != not) {
                return n;
            }
            assert!(Instant::now() < deadline, "no node became active within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Run `tandemctl --nodes <all three> ARGS`; returns its exit code and its stdout followed
    /// by its stderr.
    pub fn ctl(&self, args: &[&str]) -> (Option<i32>, String) {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.admin_addr()).collect();
        let out = tandemctl()
            .args(["--nodes", &nodes.join(",")])
            .args(args)
            .output()
            .expect("run tandemctl");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr),
        )
    }

    /// The node's data dir.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    pub fn spec(&self, name: &str) -> &NodeSpec {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn name_of(&self, id: u64) -> &'static str {
        self.nodes.iter().find(|n| n.id == id).map(|n| n.name).unwrap_or("?")
    }

    fn index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    pub fn spawn(&mut self, name: &str) -> anyhow::Result<()> {
        let i = self.index(name);
        assert!(self.procs[i].is_none(), "{name} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        let child = tandem()
            .args(["run", "--config"])
            .arg(self.config_path(name))
            .env("TANDEM_LOG", "info,openraft=info")
            .stdout(log.try_clone()?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .context("spawn tandem")?;
        self.procs[i] = Some(child);
        Ok(())
    }

    pub fn wait_admin(&mut self, name: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.status(name).is_ok() {
                return Ok(());
            }
            let i = self.index(name);
            if let Some(status) = self.procs[i].as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("{name} exited at start ({status}); log:\n{}", self.log_tail(name));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("{name} did not answer within 10 s; log:\n{}", self.log_tail(name))
    }

    pub fn log_tail(&self, name: &str) -> String {
        tail(&self.log_path(name), 30)
    }

    /// SIGKILL a node.
    pub fn kill(&mut self, name: &str) {
        let i = self.index(name);
        if let Some(mut c) = self.procs[i].take() {
            c.kill().expect("SIGKILL");
            c.wait().expect("reap");
        }
    }

    /// SIGTERM a node and wait for it to exit; returns its exit status.
    pub fn terminate(&mut self, name: &str, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let i = self.index(name);
        let mut child = self.procs[i].take().context("not running")?;
        let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status()?;
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                bail!("{name} did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Process id of a running node.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs[self.index(name)].as_ref().map(|c| c.id())
    }

    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        self.spawn(name)?;
        self.wait_admin(name)
    }

    pub fn client(&self, name: &str) -> Client {
        Client::new(self.spec(name).admin_addr()).with_timeout(Duration::from_millis(1000))
    }

    /// Run an admin API call (or any future) on the cluster's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn status(&self, name: &str) -> Result<NodeStatus, ClientError> {
        self.rt.block_on(self.client(name).status())
    }

    /// Every node's status (None where unreachable).
    pub fn snapshot(&self) -> Statuses {
        Statuses(self.nodes.iter().map(|n| (n.name, self.status(n.name).ok())).collect())
    }

    /// Poll until `cond` holds, or fail naming `what` and the last statuses seen.
    pub fn wait_for(&self, what: &str, within: Duration, cond: impl Fn(&Statuses) -> bool) -> anyhow::Result<Statuses> {
        let deadline = Instant::now() + within;
        loop {
            let s = self.snapshot();
            if cond(&s) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                bail!("timed out after {within:?} waiting for: {what}\nlast statuses: {s:#?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until `node`'s cluster view says `state` with a reason containing `reason`; fails
    /// the test after `within`.
    pub fn wait_cluster_status(&self, node: &str, state: &str, reason: &str, within: Duration) {
        let started = Instant::now();
        loop {
            let status = self.block_on(self.client(node).cluster()).map(|v| v.cluster_status);
            if status
                .as_ref()
                .is_ok_and(|s| s.state == state && s.reason.contains(reason))
            {
                return;
            }
            assert!(
                started.elapsed() < within,
                "the cluster status never said {state}: {reason}: {status:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Write a test record through whichever node leads, following not-leader answers.
    pub fn write(&self, id: u64, payload: &str) -> anyhow::Result<WriteTestRecordResult> {
        let req = WriteTestRecord {
            id,
            payload: payload.into(),
            epoch: None,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = self
                .snapshot()
                .leader_status()
                .filter(|l| l.kind == "data")
                .map(|l| l.name.clone());
            if let Some(name) = leader {
                match self.rt.block_on(self.client(&name).write_test_record(&req)) {
                    Ok(r) => return Ok(r),
                    Err(e) if Instant::now() > deadline => return Err(e.into()),
                    Err(_) => {}
                }
            } else if Instant::now() > deadline {
                bail!("no data node leads; cannot write record {id}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self.procs.iter_mut().flatten() {
            c.kill().ok();
            c.wait().ok();
        }
        if std::thread::panicking() {
            for n in &self.nodes {
                eprintln!("---- log of {} ----\n{}", n.name, self.log_tail(n.name));
            }
        }
    }
}

/// Statuses of all three nodes at one moment.
#[derive(Debug)]
pub struct Statuses(pub Vec<(&'static str, Option<NodeStatus>)>);

impl Statuses {
    pub fn get(&self, name: &str) -> Option<&NodeStatus> {
        self.0.iter().find(|(n, _)| *n == name).and_then(|(_, s)| s.as_ref())
    }

    pub fn reachable(&self) -> impl Iterator<Item = &NodeStatus> {
        self.0.iter().filter_map(|(_, s)| s.as_ref())
    }

    /// The leader, if exactly one reachable node with the highest term says it leads.
    pub fn leader_status(&self) -> Option<&NodeStatus> {
        let max_term = self.reachable().map(|s| s.term).max()?;
        let leaders: Vec<&NodeStatus> = self
            .reachable()
            .filter(|s| s.raft_state == "leader" && s.term == max_term)
            .collect();
        match leaders.as_slice() {
            [l] => Some(l),
            _ => None,
        }
    }

    /// True when all listed nodes applied the same test records, `count` of them.
    pub fn agree_on_records(&self, names: &[&str], count: u64) -> bool {
        let statuses: Vec<Option<&NodeStatus>> = names.iter().map(|n| self.get(n)).collect();
        let Some(Some(first)) = statuses.first() else {
            return false;
        };
        statuses
            .iter()
            .all(|s| s.is_some_and(|s| s.test_records == count && s.test_digest == first.test_digest))
    }
}

/// HTTP status of `GET path` on `addr`, or `None` without an answer (100 ms to connect,
/// 200 ms to answer).
pub fn http_status(addr: &str, path: &str) -> Option<u16> {
    use std::io::Read;
    use std::io::Write;
    let probe = || -> std::io::Result<u16> {
        let sock: std::net::SocketAddr = addr.parse().map_err(std::io::Error::other)?;
        let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(100))?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head)?;
        std::str::from_utf8(&head[9..12])
            .ok()
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP status line"))
    };
    probe().ok()
}

/// A kernel tunable (`/proc/sys/...`) set for as long as this lives, then put back.
pub struct Sysctl {
    path: &'static str,
    old: String,
}

impl Sysctl {
    /// Set `path` to `value` (needs root).
    pub fn set(path: &'static str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        std::fs::write(path, value).unwrap_or_else(|e| panic!("set {path} (needs root): {e}"));
        Sysctl { path, old }
    }

    /// The value it had before.
    pub fn old(&self) -> &str {
        self.old.trim()
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.path, self.old.trim()) {
            eprintln!("could not put {} back to {}: {e}", self.path, self.old.trim());
        }
    }
}

/// One raw HTTP/1.1 request (`Connection: close`); the status and the answer's body.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    use std::io::Read;
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let body_at = text.find("\r\n\r\n").map_or(answer.len(), |i| i + 4);
    Ok((status, answer[body_at..].to_vec()))
}

/// Whether `addr` answers `/health/active` with 200.
pub fn health_active(addr: &str) -> bool {
    http_status(addr, "/health/active") == Some(200)
}

/// One round of probes: when, and which nodes answered 200.
pub type HealthSample = (Instant, Vec<(&'static str, bool)>);

/// Samples every node's `/health/active` every 10 ms in a background thread.
pub struct HealthSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<HealthSample>>>,
}

impl HealthSampler {
    pub fn start(cluster: &Cluster) -> Self {
        let targets: Vec<(&'static str, String)> = cluster.nodes.iter().map(|n| (n.name, n.admin_addr())).collect();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let at = Instant::now();
                let sample = targets.iter().map(|(n, a)| (*n, health_active(a))).collect();
                samples.push((at, sample));
                std::thread::sleep(Duration::from_millis(10).saturating_sub(at.elapsed()));
            }
            samples
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stop and return the samples: (time, [(node, answered 200)]).
    pub fn finish(mut self) -> Vec<HealthSample> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().expect("running").join().expect("sampler thread")
    }
}

/// Samples in which more than one node answered `/health/active` with 200.
pub fn overlapping(samples: &[HealthSample]) -> Vec<Vec<&'static str>> {
    samples
        .iter()
        .map(|(_, s)| s.iter().filter(|(_, up)| *up).map(|(n, _)| *n).collect::<Vec<_>>())
        .filter(|up| up.len() > 1)
        .collect()
}

/// Drops one node's peer traffic, both ways, with an iptables chain of its own (needs root and
/// iptables; tests/run.sh installs it). The node's admin port stays reachable. Removed on drop.
pub struct PeerCut {
    chain: String,
}

fn iptables(args: &[&str]) -> std::process::Output {
    Command::new("iptables")
        .args(args)
        .output()
        .expect("iptables must be installed and the tests run as root (tests/run.sh installs it)")
}

impl PeerCut {
    /// Cut `name` off from the other two nodes' peer ports. The cluster must have been started
    /// with `own_addresses`, so the node's traffic can be told apart by address.
    pub fn isolate(cluster: &Cluster, name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let chain = format!("TANDEM_CUT_{}_{n}", std::process::id());
        let ok = |args: &[&str]| {
            let out = iptables(args);
            assert!(
                out.status.success(),
                "iptables {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let node = cluster.spec(name);
        ok(&["-w", "-N", &chain]);
        let cut = PeerCut { chain: chain.clone() };
        // Peers → the node's peer port.
        let port = node.peer_port.to_string();
        ok(&[
            "-w", "-A", &chain, "-p", "tcp", "-d", &node.ip, "--dport", &port, "-j", "DROP",
        ]);
        // The node → the peers' peer ports.
        for o in cluster.nodes.iter().filter(|o| o.name != name) {
            let port = o.peer_port.to_string();
            ok(&[
                "-w", "-A", &chain, "-p", "tcp", "-s", &node.ip, "-d", &o.ip, "--dport", &port, "-j", "DROP",
            ]);
        }
        ok(&["-w", "-I", "INPUT", "-j", &chain]);
        cut
    }
}

impl Drop for PeerCut {
    fn drop(&mut self) {
        iptables(&["-w", "-D", "INPUT", "-j", &self.chain]);
        iptables(&["-w", "-F", &self.chain]);
        iptables(&["-w", "-X", &self.chain]);
    }
}
