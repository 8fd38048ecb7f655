//! Telling the link that a virtual IP moved: a gratuitous ARP request (IPv4) or an unsolicited
//! neighbour advertisement with the override flag (IPv6), so that clients and routers point
//! their neighbour entries at the new holder's hardware address at once instead of after their
//! own entries time out.
//!
//! The ARP frame needs an `AF_PACKET` socket addressed with a `sockaddr_ll`, which no safe
//! wrapper in our dependencies builds; this module is therefore the one place with `unsafe`
//! code (decision 0005): one `sendto` call on a fully initialised, correctly sized address.

use std::io;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::net::SocketAddrV6;
use std::os::fd::AsRawFd;

use rustix::net::AddressFamily;
use rustix::net::SendFlags;
use rustix::net::SocketType;

const ETH_P_ARP: u16 = 0x0806;
const BROADCAST: [u8; 6] = [0xff; 6];
/// Shortest Ethernet frame without its checksum; the ARP frame is padded to it.
const ETH_FRAME_MIN: usize = 60;

/// The gratuitous ARP request for `ip` at `mac`: sender and target protocol address are both
/// the VIP, broadcast, so every host on the link updates an entry it has for the VIP.
pub fn arp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETH_FRAME_MIN);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(ETH_FRAME_MIN, 0);
    f
}

/// The ICMPv6 neighbour advertisement for `ip` at `mac` (the kernel fills in the checksum).
pub fn neighbour_advertisement(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let mut m = vec![136, 0, 0, 0];
    m.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // flags: override
    m.extend_from_slice(&ip.octets());
    m.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    m.extend_from_slice(&mac);
    m
}

/// Send one gratuitous ARP for `ip` out of link `ifindex`.
pub fn send_gratuitous_arp(ifindex: u32, mac: [u8; 6], ip: Ipv4Addr) -> io::Result<()> {
    let protocol = rustix::net::eth::ARP;
    let fd = rustix::net::socket(AddressFamily::PACKET, SocketType::RAW, Some(protocol))?;
    let frame = arp_frame(mac, ip);
    let ifindex = i32::try_from(ifindex).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut sll_addr = [0u8; 8];
    sll_addr[..6].copy_from_slice(&BROADCAST);
    let addr = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        sll_protocol: ETH_P_ARP.to_be(),
        sll_ifindex: ifindex,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 6,
        sll_addr,
    };
    #[allow(unsafe_code)]
    // SAFETY: `frame` is a live buffer of `frame.len()` bytes; `addr` is a fully initialised
    // `sockaddr_ll` on the stack and the length passed is exactly its size; the fd is open for
    // the whole call.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Send one unsolicited neighbour advertisement for `ip` to all nodes on link `ifindex`.
pub fn send_neighbour_advertisement(ifindex: u32, mac: [u8; 6], ip: Ipv6Addr) -> io::Result<()> {
    let fd = rustix::net::socket(
        AddressFamily::INET6,
        SocketType::RAW,
        Some(rustix::net::ipproto::ICMPV6),
    )?;
    // RFC 4861: neighbour discovery messages carry hop limit 255, or receivers drop them.
    rustix::net::sockopt::set_ipv6_multicast_hops(&fd, 255)?;
    rustix::net::sockopt::set_ipv6_multicast_if(&fd, ifindex)?;
    let all_nodes = SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1), 0, 0, ifindex);
    rustix::net::sendto(&fd, &neighbour_advertisement(mac, ip), SendFlags::empty(), &all_nodes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arp_frame_announces_the_vip_at_our_address() {
        let mac = [2, 0, 0, 0, 0, 7];
        let f = arp_frame(mac, Ipv4Addr::new(10, 77, 0, 100));
        assert_eq!(f.len(), ETH_FRAME_MIN);
        assert_eq!(&f[0..6], &BROADCAST, "broadcast");
        assert_eq!(&f[6..12], &mac, "from us");
        assert_eq!(&f[12..14], &[0x08, 0x06], "ARP");
        assert_eq!(&f[20..22], &[0, 1], "a request");
        assert_eq!(&f[22..28], &mac, "sender hardware address");
        assert_eq!(&f[28..32], &[10, 77, 0, 100], "sender IP = VIP");
        assert_eq!(&f[38..42], &[10, 77, 0, 100], "target IP = VIP");
    }

    #[test]
    fn the_advertisement_overrides_and_names_our_address() {
        let mac = [2, 0, 0, 0, 0, 7];
        let ip: Ipv6Addr = "fd77::100".parse().unwrap();
        let m = neighbour_advertisement(mac, ip);
        assert_eq!(m[0], 136, "neighbour advertisement");
        assert_eq!(m[4] & 0x20, 0x20, "override flag");
        assert_eq!(m[4] & 0x40, 0, "unsolicited: not a reply");
        assert_eq!(&m[8..24], &ip.octets());
        assert_eq!(&m[24..26], &[2, 1]);
        assert_eq!(&m[26..32], &mac);
    }
}
