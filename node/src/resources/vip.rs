//! The node's network identity: its virtual IPs (DESIGN §4, §7).
//!
//! A VIP is added with a kernel lifetime of [`VIP_LIFETIME_SECS`] and renewed while the lease
//! holds, so a holder that is frozen or wedged loses it by itself; a new active therefore waits
//! [`Identity::identity_wait`] after the previous active's lease before it adds the VIP.
//! Renewals happen only within [`VIP_RENEW_WINDOW`] of the quorum ack the lease counts from, so
//! the last one precedes the lease's end by `lease − VIP_RENEW_WINDOW`, and that much of the
//! lifetime has already run when the lease ends. Taking the identity announces it on the link
//! (gratuitous ARP / unsolicited neighbour advertisement) on the [`ANNOUNCE_AT`] schedule.
//!
//! Every operation resolves the interface by name again, so a link that was re-created is
//! found; netlink calls are quick, non-blocking in practice, and made inline by the caller.

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use tandem_raft_store::Epoch;

use super::announce;
use super::netlink::Netlink;
use crate::config::VipConfig;

/// Kernel lifetime (valid and preferred) of a held VIP, renewed while the lease holds.
pub const VIP_LIFETIME_SECS: u32 = 1;
/// How late after its lifetime the kernel may still hold an unrenewed VIP. The kernel checks
/// address lifetimes from delayed work: each renewal runs a check at once, and each check
/// schedules the next no sooner than a second after it ran (`ADDRCONF_TIMER_FUZZ_MAX`), rounded
/// up by up to a quarter second. A check that runs late (its worker starved of CPU, or waiting
/// for the routing netlink lock) therefore pushes the removal out by as much. Measured removal
/// after the last renewal: mostly 1.0–1.25 s, up to 1.95 s with both cores busy building (see
/// `docs/benchmarks.md`); the test in `node/tests/vip.rs` checks the bound.
pub const VIP_EXPIRY_MARGIN: Duration = Duration::from_millis(1500);
/// Least time between two renewals of a held VIP's lifetime.
pub const VIP_RENEW_INTERVAL: Duration = Duration::from_millis(200);
/// A renewal happens only this soon after the sending of the heartbeat whose quorum ack keeps
/// the lease; with heartbeats every 100 ms a live holder renews every 200–300 ms, far inside
/// the lifetime.
pub const VIP_RENEW_WINDOW: Duration = Duration::from_millis(60);
/// When, after taking the identity, the VIP is announced on the link.
pub const ANNOUNCE_AT: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_millis(100),
    Duration::from_millis(300),
    Duration::from_millis(700),
    Duration::from_millis(1500),
];

/// The VIPs of one node.
pub struct Identity {
    vips: Vec<VipConfig>,
    netlink: Mutex<Option<Netlink>>,
    /// Bumped on every take and drop; an announcement of an older generation is not sent.
    generation: AtomicU64,
    /// Generation of the take in force, 0 when not held.
    held: AtomicU64,
}

impl Identity {
    pub fn new(vips: Vec<VipConfig>) -> Arc<Self> {
        Arc::new(Self {
            vips,
            netlink: Mutex::new(None),
            generation: AtomicU64::new(0),
            held: AtomicU64::new(0),
        })
    }

    /// How long after the previous active's lease ended its VIPs are surely gone: the kernel
    /// lifetime plus [`VIP_EXPIRY_MARGIN`], less the part of it that had run by the lease's
    /// end (`lease − VIP_RENEW_WINDOW`, see the module docs). Zero without VIPs.
    pub fn identity_wait(&self, lease: Duration) -> Duration {
        if self.vips.is_empty() {
            return Duration::ZERO;
        }
        (Duration::from_secs(VIP_LIFETIME_SECS.into()) + VIP_EXPIRY_MARGIN)
            .saturating_sub(lease.saturating_sub(VIP_RENEW_WINDOW))
    }

    pub fn is_held(&self) -> bool {
        self.held.load(Ordering::SeqCst) != 0
    }

    /// At start: a node starts as standby, so a VIP left on the link by an earlier process is
    /// removed (it would have lapsed within its lifetime anyway).
    pub fn clear_stale(&self) {
        for vip in &self.vips {
            match self.with_netlink(|nl| {
                let link = nl.link(&vip.interface)?;
                nl.delete_address(link.index, vip.address, vip.prefix)
            }) {
                Ok(true) => {
                    tracing::warn!(vip = %vip.name, address = %vip.address, "removed a VIP left by an earlier process")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(vip = %vip.name, error = %e, "cannot check for a stale VIP; {}", fix_hint(&e))
                }
            }
        }
    }

    /// Take the identity: add every VIP with its lifetime, then announce them.
    pub fn take(self: &Arc<Self>, epoch: Epoch) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.held.store(generation, Ordering::SeqCst);
        self.assert_held();
        if self.vips.is_empty() {
            return;
        }
        tracing::info!(%epoch, "VIP taken; announcing it on the link");
        let me = self.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now();
            for at in ANNOUNCE_AT {
                tokio::time::sleep_until(start + at).await;
                if me.held.load(Ordering::SeqCst) != generation {
                    return; // dropped (or taken again) since: this round is over
                }
                me.announce();
            }
        });
    }

    /// Renew the lifetime of every VIP, adding back one that went missing (level-triggered).
    /// The caller checks, just before, that the lease still holds.
    pub fn renew(&self) {
        if self.is_held() {
            self.assert_held();
        }
    }

    /// Drop the identity at once: remove every VIP.
    pub fn drop_now(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.held.store(0, Ordering::SeqCst);
        for vip in &self.vips {
            match self.with_netlink(|nl| {
                let link = nl.link(&vip.interface)?;
                nl.delete_address(link.index, vip.address, vip.prefix)
            }) {
                Ok(_) => {}
                Err(e) => tracing::error!(
                    vip = %vip.name,
                    error = %e,
                    "cannot remove the VIP; the kernel drops it within its lifetime ({VIP_LIFETIME_SECS} s). {}",
                    fix_hint(&e)
                ),
            }
        }
    }

    fn assert_held(&self) {
        for vip in &self.vips {
            if let Err(e) = self.with_netlink(|nl| {
                let link = nl.link(&vip.interface)?;
                nl.add_address(link.index, vip.address, vip.prefix, Some(VIP_LIFETIME_SECS))
            }) {
                tracing::error!(vip = %vip.name, interface = %vip.interface, error = %e, "cannot hold the VIP; {}", fix_hint(&e));
            }
        }
    }

    fn announce(&self) {
        for vip in &self.vips {
            let result =
                self.with_netlink(|nl| nl.link(&vip.interface))
                    .and_then(|link| match (link.mac, vip.address) {
                        (None, _) => Ok(()), // no link layer: nothing to announce
                        (Some(mac), IpAddr::V4(ip)) => announce::send_gratuitous_arp(link.index, mac, ip),
                        (Some(mac), IpAddr::V6(ip)) => announce::send_neighbour_advertisement(link.index, mac, ip),
                    });
            if let Err(e) = result {
                tracing::warn!(vip = %vip.name, error = %e, "cannot announce the VIP; neighbours learn it when their entries expire");
            }
        }
    }

    fn with_netlink<T>(&self, f: impl FnOnce(&mut Netlink) -> std::io::Result<T>) -> std::io::Result<T> {
        let mut guard = self.netlink.lock().expect("netlink lock");
        if guard.is_none() {
            *guard = Some(Netlink::open()?);
        }
        let result = f(guard.as_mut().expect("opened above"));
        if result.is_err() {
            *guard = None; // start again from a fresh socket next time
        }
        result
    }
}

fn fix_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "tandem needs CAP_NET_ADMIN (and CAP_NET_RAW to announce) to manage a VIP"
        }
        Some(libc::ENODEV) => "check the vip's interface name in the config",
        _ if e.kind() == std::io::ErrorKind::NotFound => "check the vip's interface name in the config",
        _ => "see the error above",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_wait_is_what_is_left_of_the_lifetime_at_the_leases_end() {
        let none = Identity::new(vec![]);
        assert_eq!(none.identity_wait(Duration::from_millis(340)), Duration::ZERO);
        let one = Identity::new(vec![VipConfig {
            name: "front".into(),
            address: "10.0.0.100".parse().unwrap(),
            prefix: 24,
            interface: "eth0".into(),
        }]);
        // 1 s + 1.5 s − (340 ms − 60 ms) = 2220 ms.
        assert_eq!(
            one.identity_wait(Duration::from_millis(340)),
            Duration::from_millis(2220)
        );
    }
}
