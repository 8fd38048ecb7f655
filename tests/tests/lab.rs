//! The failover lab (deploy/lab/lab.sh) under faults: network namespaces as hosts, the real
//! binaries, the VIP as the way clients reach the service.
//!
//! Over `TANDEM_LAB_TRIALS` rounds (default 10) of four faults on the active — (a) its link
//! cut, (b) SIGKILL of its tandem process, (c) SIGSTOP of it for longer than the lease, (d) only
//! the link between the two data nodes cut — a client in its own namespace requests the VIP
//! every 10 ms and a sampler in every node's namespace lists that node's addresses every 10 ms.
//! The test fails if two nodes ever hold the VIP at once, or if no node serves the VIP within
//! 5 s of a fault. It prints the client-observed failover times.
//!
//! Needs root (namespaces, iptables); tests/run.sh checks.

use std::net::IpAddr;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use std::time::Instant;

use tandem_client::Client;
use tandem_node::resources::netlink::Netlink;
use tokio::io::AsyncReadExt;
use tokio::io::AsyncWriteExt;

const VIP: &str = "10.77.0.100";
const NODES: [&str; 3] = ["n1", "n2", "w"];
const PROBE_EVERY: Duration = Duration::from_millis(10);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);
const SAMPLE_EVERY: Duration = Duration::from_millis(10);
/// No node serving the VIP this long after a fault fails the test.
const SERVE_WITHIN: Duration = Duration::from_secs(5);
/// How long the split between the data nodes (fault d) is held.
const SPLIT_HOLD: Duration = Duration::from_secs(3);
/// How long the cluster may take to be whole again after a fault is healed.
const STEADY_WITHIN: Duration = Duration::from_secs(30);

fn lab_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/lab/lab.sh")
}

/// The lab, brought up for the test and torn down after it.
struct Lab {
    dir: tempfile::TempDir,
}

impl Lab {
    fn up() -> Self {
        let lab = Lab {
            dir: tempfile::tempdir().unwrap(),
        };
        let out = lab.command(&["up"]).output().expect("run deploy/lab/lab.sh");
        assert!(
            out.status.success(),
            "lab.sh up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(lab_script());
        c.args(args)
            .env("TANDEM_LAB_DIR", self.dir.path())
            .env("TANDEM_SKIP_BUILD", "1")
            .env("TANDEM_BIN_DIR", tandem_tests::bin_dir());
        c
    }

    async fn sh(&self, args: &[&str]) {
        let out = tokio::process::Command::from(self.command(args))
            .output()
            .await
            .expect("run deploy/lab/lab.sh");
        assert!(
            out.status.success(),
            "lab.sh {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn log_tail(&self, node: &str) -> String {
        let text = std::fs::read_to_string(self.dir.path().join(format!("{node}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = self.command(&["down"]).output();
    }
}

/// Move the calling thread into host `name`'s network namespace.
fn enter(name: &str) {
    let ns = std::fs::File::open(format!("/run/netns/tdl-{name}")).expect("lab namespace");
    rustix::thread::move_into_link_name_space(ns.as_fd(), Some(rustix::thread::LinkNameSpaceType::Network))
        .expect("setns (needs root)");
}

/// Whether each node held the VIP, sampled from inside its namespace.
#[derive(Debug, Clone, Copy)]
struct AddrSample {
    at: Instant,
    node: usize,
    held: bool,
}

fn sample_addresses(node: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<AddrSample>> {
    std::thread::spawn(move || {
        enter(NODES[node]);
        let vip: IpAddr = VIP.parse().unwrap();
        let mut nl = Netlink::open().expect("netlink in the node namespace");
        let index = nl.link("eth0").expect("eth0").index;
        let mut samples = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let held = nl
                .addresses(Some(index))
                .expect("list addresses")
                .iter()
                .any(|a| a.address == vip);
            samples.push(AddrSample {
                at: Instant::now(),
                node,
                held,
            });
            std::thread::sleep(SAMPLE_EVERY);
        }
        samples
    })
}

/// Times at which, going by each node's latest sample, two nodes held the VIP.
fn double_holds(samples: &[AddrSample]) -> Vec<(Instant, Vec<&'static str>)> {
    let mut sorted = samples.to_vec();
    sorted.sort_by_key(|s| s.at);
    let mut state = [false; NODES.len()];
    let mut found = Vec::new();
    for s in sorted {
        state[s.node] = s.held;
        if state.iter().filter(|h| **h).count() > 1 {
            let holders = (0..NODES.len()).filter(|i| state[*i]).map(|i| NODES[i]).collect();
            found.push((s.at, holders));
        }
    }
    found
}

#[derive(Debug, Clone)]
struct Probe {
    sent: Instant,
    done: Instant,
    /// The node that answered, if the request got an answer.
    by: Option<String>,
}

async fn probe_once(addr: SocketAddr) -> Option<String> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).await.ok()?;
        body.lines().last().map(|l| l.trim().to_string())
    };
    tokio::time::timeout(PROBE_TIMEOUT, exchange).await.ok().flatten()
}

/// Starts a request to the VIP every [`PROBE_EVERY`], each with its own timeout.
async fn probe_loop(probes: Arc<Mutex<Vec<Probe>>>, stop: Arc<AtomicBool>) {
    let addr = SocketAddr::new(VIP.parse().unwrap(), 80);
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let probes = probes.clone();
        tokio::spawn(async move {
            let sent = Instant::now();
            let by = probe_once(addr).await;
            probes.lock().unwrap().push(Probe {
                sent,
                done: Instant::now(),
                by,
            });
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    CutLink,
    Kill,
    Stop,
    SplitDataNodes,
}

impl Fault {
    const ALL: [Fault; 4] = [Fault::CutLink, Fault::Kill, Fault::Stop, Fault::SplitDataNodes];

    fn label(self) -> &'static str {
        match self {
            Fault::CutLink => "(a) active's link cut",
            Fault::Kill => "(b) SIGKILL of the active's tandem",
            Fault::Stop => "(c) SIGSTOP of the active beyond the lease",
            Fault::SplitDataNodes => "(d) active-standby link cut only",
        }
    }
}

struct Run {
    lab: Lab,
    probes: Arc<Mutex<Vec<Probe>>>,
    clients: Vec<(String, Client)>,
}

impl Run {
    /// The cluster is whole: every node follows one data-node leader that is active, all hold
    /// the same log, and the last 200 ms of probes were all answered by that leader.
    async fn wait_steady(&self) -> String {
        let deadline = Instant::now() + STEADY_WITHIN;
        loop {
            if let Some(active) = self.steady().await {
                return active;
            }
            assert!(
                Instant::now() < deadline,
                "the lab did not settle within {STEADY_WITHIN:?}; n1:\n{}\nn2:\n{}",
                self.lab.log_tail("n1"),
                self.lab.log_tail("n2")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn steady(&self) -> Option<String> {
        let mut statuses = Vec::new();
        for (_, c) in &self.clients {
            statuses.push(c.status().await.ok()?);
        }
        let leader = statuses[0].leader?;
        let head = statuses.iter().find(|s| s.node_id == leader)?;
        let whole = statuses
            .iter()
            .all(|s| s.leader == Some(leader) && s.term == head.term && s.last_log_index == head.last_log_index);
        if !whole || head.active_epoch.is_none() || head.kind != "data" {
            return None;
        }
        let recent: Vec<Option<String>> = {
            let probes = self.probes.lock().unwrap();
            let since = Instant::now() - Duration::from_millis(200) - PROBE_TIMEOUT;
            probes
                .iter()
                .filter(|p| p.sent >= since)
                .map(|p| p.by.clone())
                .collect()
        };
        let name = head.name.clone();
        (recent.len() >= 10 && recent.iter().all(|by| by.as_deref() == Some(name.as_str()))).then_some(name)
    }

    /// Probes sent at or after `t0`, in the order they were sent.
    fn probes_since(&self, t0: Instant) -> Vec<Probe> {
        let mut v: Vec<Probe> = self
            .probes
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.sent >= t0)
            .cloned()
            .collect();
        v.sort_by_key(|p| p.sent);
        v
    }

    /// Inject `fault` on `active`; wait for the outcome; heal. Returns the client-observed
    /// failover time (a–c: until the standby first answers on the VIP) or the longest gap
    /// between answers (d: the active should keep serving).
    async fn trial(&self, fault: Fault, active: &str) -> Duration {
        let standby = if active == "n1" { "n2" } else { "n1" };
        let t0 = Instant::now();
        match fault {
            Fault::CutLink => self.lab.sh(&["cut", active]).await,
            Fault::Kill => self.lab.sh(&["kill", active]).await,
            Fault::Stop => self.lab.sh(&["stop", active]).await,
            Fault::SplitDataNodes => self.lab.sh(&["split"]).await,
        }
        let measured = if fault == Fault::SplitDataNodes {
            tokio::time::sleep(SPLIT_HOLD).await;
            let probes = self.probes_since(t0);
            let answered: Vec<Instant> = probes.iter().filter(|p| p.by.is_some()).map(|p| p.done).collect();
            assert!(!answered.is_empty(), "{}: nobody served the VIP", fault.label());
            let mut gap = answered[0] - t0;
            for w in answered.windows(2) {
                gap = gap.max(w[1] - w[0]);
            }
            gap = gap.max(Instant::now() - *answered.last().unwrap());
            assert!(
                gap < SERVE_WITHIN,
                "{}: no answer on the VIP for {gap:?}",
                fault.label()
            );
            gap
        } else {
            loop {
                let served = self
                    .probes_since(t0)
                    .into_iter()
                    .filter(|p| p.by.as_deref() == Some(standby))
                    .map(|p| p.done - t0)
                    .min();
                if let Some(d) = served {
                    break d;
                }
                assert!(
                    t0.elapsed() < SERVE_WITHIN,
                    "{}: the standby {standby} did not serve the VIP within {SERVE_WITHIN:?}; {standby}:\n{}",
                    fault.label(),
                    self.lab.log_tail(standby)
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        match fault {
            Fault::CutLink => self.lab.sh(&["heal", active]).await,
            Fault::Kill => self.lab.sh(&["restart", active]).await,
            Fault::Stop => {
                // Held beyond the lease by construction: the standby took over meanwhile.
                self.lab.sh(&["cont", active]).await
            }
            Fault::SplitDataNodes => self.lab.sh(&["join"]).await,
        }
        measured
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[test]
fn the_vip_is_never_held_twice_and_moves_within_five_seconds_of_any_fault() {
    let trials: usize = std::env::var("TANDEM_LAB_TRIALS")
        .ok()
        .map(|v| v.parse().expect("TANDEM_LAB_TRIALS must be a number"))
        .unwrap_or(10);
    let lab = Lab::up();
    let stop = Arc::new(AtomicBool::new(false));
    let samplers: Vec<_> = (0..NODES.len()).map(|i| sample_addresses(i, stop.clone())).collect();

    let probes = Arc::new(Mutex::new(Vec::new()));
    let (probes2, stop2) = (probes.clone(), stop.clone());
    // Everything that talks to the lab's network runs on one thread in the client namespace.
    let results = std::thread::spawn(move || {
        enter("client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            tokio::spawn(probe_loop(probes2.clone(), stop2.clone()));
            let clients = ["10.77.0.1", "10.77.0.2", "10.77.0.3"]
                .iter()
                .zip(NODES)
                .map(|(ip, n)| {
                    (
                        n.to_string(),
                        Client::new(format!("{ip}:7200")).with_timeout(Duration::from_millis(300)),
                    )
                })
                .collect();
            let run = Run {
                lab,
                probes: probes2,
                clients,
            };
            let mut results: Vec<(Fault, Vec<Duration>)> = Fault::ALL.iter().map(|f| (*f, Vec::new())).collect();
            for round in 0..trials {
                for (fault, times) in results.iter_mut() {
                    let active = run.wait_steady().await;
                    let t = run.trial(*fault, &active).await;
                    eprintln!("round {round}: {} on {active}: {t:?}", fault.label());
                    times.push(t);
                }
            }
            run.wait_steady().await;
            stop2.store(true, Ordering::SeqCst);
            drop(run); // tears the lab down
            results
        })
    })
    .join()
    .expect("the client-side thread");
    stop.store(true, Ordering::SeqCst);
    let samples: Vec<AddrSample> = samplers.into_iter().flat_map(|h| h.join().unwrap()).collect();

    println!("client-observed failover through the VIP ({trials} trials each, probes every 10 ms):");
    for (fault, mut times) in results {
        times.sort();
        println!(
            "  {:44} p50 {:>5} ms  p99 {:>5} ms  max {:>5} ms{}",
            fault.label(),
            percentile(&times, 50.0).as_millis(),
            percentile(&times, 99.0).as_millis(),
            times.last().unwrap().as_millis(),
            if fault == Fault::SplitDataNodes {
                "  (longest gap between answers)"
            } else {
                ""
            }
        );
    }
    let held: usize = samples.iter().filter(|s| s.held).count();
    println!("  address samples: {} ({held} with the VIP held)", samples.len());
    assert!(held > 0, "the samplers saw the VIP");
    let doubles = double_holds(&samples);
    assert!(
        doubles.is_empty(),
        "the VIP was held by two nodes at once: {:?}",
        &doubles[..doubles.len().min(5)]
    );
}

#[test]
fn the_double_hold_check_catches_two_holders() {
    let t = Instant::now();
    let at = |ms: u64, node: usize, held: bool| AddrSample {
        at: t + Duration::from_millis(ms),
        node,
        held,
    };
    // n1 lets go before n2 takes: fine.
    let handover = [at(0, 0, true), at(10, 0, false), at(11, 1, false), at(20, 1, true)];
    assert!(double_holds(&handover).is_empty());
    // n2 takes while n1's latest sample still shows it holding: caught.
    let overlap = [at(0, 0, true), at(5, 1, true), at(10, 0, false)];
    assert_eq!(double_holds(&overlap).len(), 1);
    assert_eq!(double_holds(&overlap)[0].1, vec!["n1", "n2"]);
}
