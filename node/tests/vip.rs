//! The VIP against the real kernel: two network namespaces joined by a veth pair; the node side
//! holds the VIP through netlink, the peer side is the client whose neighbour entry must follow
//! the announcements. Needs root and iproute2 (tests/run.sh checks both).

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

use tandem_node::config::VipConfig;
use tandem_node::resources::netlink::Netlink;
use tandem_node::resources::vip::Identity;
use tandem_node::resources::vip::VIP_EXPIRY_MARGIN;
use tandem_node::resources::vip::VIP_LIFETIME_SECS;
use tandem_node::resources::vip::VIP_RENEW_INTERVAL;

const FAKE_MAC: &str = "02:00:00:00:00:99";

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("iproute2 must be installed (tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "ip {}: {} (these tests need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Two namespaces, `node` and `peer`, joined by veth `vn` ↔ `vp`; removed on drop.
struct Link {
    node: String,
    peer: String,
}

impl Link {
    fn new(tag: &str) -> Self {
        let node = format!("tdv-{tag}-n{}", std::process::id());
        let peer = format!("tdv-{tag}-p{}", std::process::id());
        for ns in [&node, &peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
            ip(&["netns", "add", ns]);
        }
        ip(&[
            "-n", &node, "link", "add", "vn", "type", "veth", "peer", "name", "vp", "netns", &peer,
        ]);
        ip(&["-n", &node, "link", "set", "vn", "up"]);
        ip(&["-n", &peer, "link", "set", "vp", "up"]);
        ip(&["-n", &node, "addr", "add", "10.78.0.1/24", "dev", "vn"]);
        ip(&["-n", &peer, "addr", "add", "10.78.0.2/24", "dev", "vp"]);
        ip(&["-n", &node, "addr", "add", "fd78::1/64", "dev", "vn", "nodad"]);
        ip(&["-n", &peer, "addr", "add", "fd78::2/64", "dev", "vp", "nodad"]);
        Self { node, peer }
    }

    /// Run `f` on a thread inside the node namespace, with a runtime of its own there.
    fn in_node<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.node);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&ns),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns (needs root)");
            f()
        })
        .join()
        .expect("namespace thread")
    }

    fn node_has(&self, address: &str) -> bool {
        ip(&["-n", &self.node, "-o", "addr", "show", "dev", "vn"]).contains(&format!(" {address}/"))
    }

    /// The peer's neighbour entry for `address`, set to a wrong hardware address first.
    fn plant_stale_neighbour(&self, address: &str) {
        ip(&[
            "-n", &self.peer, "neigh", "replace", address, "lladdr", FAKE_MAC, "dev", "vp", "nud", "stale",
        ]);
    }

    fn peer_neighbour(&self, address: &str) -> String {
        ip(&["-n", &self.peer, "neigh", "show", address, "dev", "vp"])
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for ns in [&self.node, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn vip(address: &str, prefix: u8) -> VipConfig {
    VipConfig {
        name: "front".into(),
        address: address.parse::<IpAddr>().unwrap(),
        prefix,
        interface: "vn".into(),
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// Take the VIP, check the peer learns it, renew past the lifetime, then stop renewing and
/// check the kernel drops it within the bound the takeover wait counts on.
fn hold_announce_and_lapse(tag: &str, address: &'static str, prefix: u8) {
    let link = Link::new(tag);
    link.plant_stale_neighbour(address);
    let node_mac = link.in_node(|| {
        let mut nl = Netlink::open().unwrap();
        let mac = nl.link("vn").unwrap().mac.expect("a veth has a hardware address");
        mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
    });

    let identity = Identity::new(vec![vip(address, prefix)]);
    let held = identity.clone();
    let lapsed_after = link.in_node(move || {
        runtime().block_on(async move {
            held.take(7);
            // Renew for twice the lifetime: the VIP must stay.
            let until = tokio::time::Instant::now() + Duration::from_secs(2 * u64::from(VIP_LIFETIME_SECS));
            while tokio::time::Instant::now() < until {
                tokio::time::sleep(VIP_RENEW_INTERVAL).await;
                held.renew();
            }
            let mut nl = Netlink::open().unwrap();
            let index = nl.link("vn").unwrap().index;
            let present = |nl: &mut Netlink| {
                nl.addresses(Some(index))
                    .unwrap()
                    .iter()
                    .any(|a| a.address == address.parse::<IpAddr>().unwrap())
            };
            assert!(present(&mut nl), "renewed past its lifetime, the VIP is still there");
            // Stop renewing, as a frozen holder would. What counts is when the VIP was last
            // seen: the kernel surely held it then. (When it was first missed also includes
            // however late this thread woke to look, on a loaded machine.)
            let last_renewal = Instant::now();
            held.renew();
            let mut seen_at = Duration::ZERO;
            loop {
                let looked_at = last_renewal.elapsed();
                if !present(&mut nl) {
                    break (seen_at, last_renewal.elapsed());
                }
                seen_at = looked_at;
                if looked_at > Duration::from_secs(5) {
                    break (seen_at, looked_at);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    });
    let (held_at, missed_at) = lapsed_after;
    let neighbour = link.peer_neighbour(address);
    assert!(
        neighbour.contains(&node_mac),
        "the announcement pointed the peer at the holder ({node_mac}): {neighbour}"
    );
    let bound = Duration::from_secs(VIP_LIFETIME_SECS.into()) + VIP_EXPIRY_MARGIN;
    assert!(
        held_at <= bound,
        "an unrenewed VIP was still there {held_at:?} after the last renewal; the takeover wait \
         assumes at most {bound:?}"
    );
    assert!(!link.node_has(address));
    eprintln!("{address}: the unrenewed VIP was last seen {held_at:?} after the last renewal, missed at {missed_at:?}");
}

#[test]
fn an_ipv4_vip_is_announced_renewed_and_lapses_on_its_own() {
    hold_announce_and_lapse("v4", "10.78.0.100", 24);
}

#[test]
fn an_ipv6_vip_is_announced_renewed_and_lapses_on_its_own() {
    hold_announce_and_lapse("v6", "fd78::100", 64);
}

#[test]
fn a_dropped_vip_is_gone_at_once_and_no_longer_announced() {
    let link = Link::new("drop");
    let identity = Identity::new(vec![vip("10.78.0.100", 24)]);
    let held = identity.clone();
    let (had, gone) = link.in_node(move || {
        runtime().block_on(async move {
            held.take(3);
            let had = Link::has_now("10.78.0.100");
            held.drop_now();
            (had, !Link::has_now("10.78.0.100"))
        })
    });
    assert!(had, "taken");
    assert!(gone, "removed by the drop, not left to its lifetime");
    // The announcement round of the dropped take must not run: a wrong entry stays wrong.
    link.plant_stale_neighbour("10.78.0.100");
    std::thread::sleep(Duration::from_millis(1800));
    assert!(link.peer_neighbour("10.78.0.100").contains(FAKE_MAC));
}

#[test]
fn a_vip_left_by_an_earlier_process_is_removed_at_start_and_a_missing_one_is_added_back() {
    let link = Link::new("stale");
    ip(&["-n", &link.node, "addr", "add", "10.78.0.100/24", "dev", "vn"]);
    assert!(link.node_has("10.78.0.100"));
    let identity = Identity::new(vec![vip("10.78.0.100", 24)]);
    let held = identity.clone();
    link.in_node(move || held.clear_stale());
    assert!(!link.node_has("10.78.0.100"), "a starting node holds no VIP");

    // Level-triggered: a renewal puts back a VIP someone removed while it is held.
    let held = identity.clone();
    link.in_node(move || runtime().block_on(async move { held.take(4) }));
    ip(&["-n", &link.node, "addr", "del", "10.78.0.100/24", "dev", "vn"]);
    let held = identity.clone();
    link.in_node(move || held.renew());
    assert!(link.node_has("10.78.0.100"));
    // A bad interface name is an error in the log, not a crash, and holds nothing.
    let wrong = Identity::new(vec![VipConfig {
        interface: "nosuch0".into(),
        ..vip("10.78.0.101", 24)
    }]);
    link.in_node(move || runtime().block_on(async move { wrong.take(5) }));
    assert!(!link.node_has("10.78.0.101"));
    assert!(
        wait_until(Duration::from_secs(3), || !link.node_has("10.78.0.100")).is_some(),
        "not renewed any more, it lapses"
    );
}

impl Link {
    /// From inside the node namespace: is `address` on `vn`?
    fn has_now(address: &str) -> bool {
        let mut nl = Netlink::open().unwrap();
        let index = nl.link("vn").unwrap().index;
        nl.addresses(Some(index))
            .unwrap()
            .iter()
            .any(|a| a.address == address.parse::<IpAddr>().unwrap())
    }
}
