//! Just enough rtnetlink to hold a virtual IP: look a link up by name, add an address with a
//! kernel lifetime (or renew it), delete it, and list a link's addresses.
//!
//! Requests are built by hand (the message formats are small and stable kernel ABI) and sent
//! on a `NETLINK_ROUTE` socket opened in the caller's network namespace. Every request asks
//! for an acknowledgement, so an error comes back as the kernel's errno.

use std::io;
use std::net::IpAddr;
use std::net::Ipv4Addr;
use std::net::Ipv6Addr;
use std::os::fd::OwnedFd;

use rustix::net::netlink;
use rustix::net::AddressFamily;
use rustix::net::RecvFlags;
use rustix::net::SendFlags;
use rustix::net::SocketType;

// Message types and flags from <linux/netlink.h> and <linux/rtnetlink.h>.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_GETADDR: u16 = 22;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_CREATE: u16 = 0x400;
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
/// Take a v6 address into use at once, without duplicate address detection: the lease, not
/// DAD, decides who holds the VIP.
const IFA_F_NODAD: u32 = 0x02;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const NLMSG_HDR_LEN: usize = 16;
/// Largest reply read at once (a dump of a busy link's addresses fits many times over).
const RECV_BUFFER_BYTES: usize = 64 * 1024;

/// A link (network interface) as the VIP needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// The hardware address, if the link has one (loopback and tunnels may not).
    pub mac: Option<[u8; 6]>,
}

/// An address on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkAddress {
    pub link: u32,
    pub address: IpAddr,
    pub prefix: u8,
}

/// A `NETLINK_ROUTE` socket.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Open a socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let fd = rustix::net::socket(AddressFamily::NETLINK, SocketType::RAW, None)?; // NETLINK_ROUTE
        rustix::net::bind(&fd, &netlink::SocketAddrNetlink::new(0, 0))?;
        Ok(Self { fd, seq: 0 })
    }

    /// Look up a link by name.
    pub fn link(&mut self, name: &str) -> io::Result<Link> {
        let mut body = ifinfomsg(0);
        push_attr(&mut body, IFLA_IFNAME, &nul_terminated(name));
        let replies = self.request(RTM_GETLINK, 0, &body)?;
        replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWLINK)
            .find_map(|(_, payload)| parse_link(payload))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no link named {name:?}")))
    }

    /// Add `address/prefix` to `link`, or renew it if it is there, with the given lifetime in
    /// seconds (valid and preferred alike); `None` means permanent.
    pub fn add_address(
        &mut self,
        link: u32,
        address: IpAddr,
        prefix: u8,
        lifetime_secs: Option<u32>,
    ) -> io::Result<()> {
        let mut body = addr_body(link, address, prefix);
        if let Some(secs) = lifetime_secs {
            // struct ifa_cacheinfo { ifa_prefered, ifa_valid, cstamp, tstamp }
            let mut info = Vec::with_capacity(16);
            for v in [secs, secs, 0, 0] {
                info.extend_from_slice(&v.to_ne_bytes());
            }
            push_attr(&mut body, IFA_CACHEINFO, &info);
        }
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &body).map(drop)
    }

    /// Remove `address/prefix` from `link`. `Ok(false)` if it was not there.
    pub fn delete_address(&mut self, link: u32, address: IpAddr, prefix: u8) -> io::Result<bool> {
        match self.request(RTM_DELADDR, 0, &addr_body(link, address, prefix)) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) || e.raw_os_error() == Some(libc::ENOENT) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Every address of every link, or of one link.
    pub fn addresses(&mut self, link: Option<u32>) -> io::Result<Vec<LinkAddress>> {
        let mut body = Vec::with_capacity(8);
        body.extend_from_slice(&[0u8; 8]); // struct ifaddrmsg, any family
        let replies = self.request(RTM_GETADDR, NLM_F_DUMP, &body)?;
        Ok(replies
            .iter()
            .filter(|(kind, _)| *kind == RTM_NEWADDR)
            .filter_map(|(_, payload)| parse_address(payload))
            .filter(|a| link.is_none_or(|l| l == a.link))
            .collect())
    }

    /// Send one request and collect the replies up to its acknowledgement (or end of dump).
    fn request(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut msg = Vec::with_capacity(NLMSG_HDR_LEN + body.len());
        msg.extend_from_slice(&((NLMSG_HDR_LEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        rustix::net::sendto(
            &self.fd,
            &msg,
            SendFlags::empty(),
            &netlink::SocketAddrNetlink::new(0, 0),
        )?;

        let mut out = Vec::new();
        let mut buf = vec![0u8; RECV_BUFFER_BYTES];
        loop {
            let (n, _) = rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::empty())?;
            let mut rest = &buf[..n];
            while rest.len() >= NLMSG_HDR_LEN {
                let len = u32::from_ne_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2 bytes"));
                let reply_seq = u32::from_ne_bytes(rest[8..12].try_into().expect("4 bytes"));
                if len < NLMSG_HDR_LEN || len > rest.len() {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply"));
                }
                let payload = &rest[NLMSG_HDR_LEN..len];
                rest = &rest[align(len).min(rest.len())..];
                if reply_seq != seq {
                    continue; // a late answer to an earlier request
                }
                match kind {
                    NLMSG_ERROR => {
                        let code = payload
                            .get(0..4)
                            .map(|b| i32::from_ne_bytes(b.try_into().expect("4 bytes")))
                            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "short netlink error"))?;
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE if dump => return Ok(out),
                    _ => out.push((kind, payload.to_vec())),
                }
            }
        }
    }
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align(buf.len()), 0);
}

/// The attributes after a fixed header of `skip` bytes.
fn attrs(payload: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = payload.get(skip..).unwrap_or(&[]);
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let value = &rest[4..len];
        rest = &rest[align(len).min(rest.len())..];
        Some((kind, value))
    })
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// struct ifinfomsg { family u8, pad u8, type u16, index i32, flags u32, change u32 }
fn ifinfomsg(index: u32) -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

/// struct ifaddrmsg { family u8, prefixlen u8, flags u8, scope u8, index u32 } and the address.
fn addr_body(link: u32, address: IpAddr, prefix: u8) -> Vec<u8> {
    let (family, bytes) = match address {
        IpAddr::V4(a) => (AF_INET, a.octets().to_vec()),
        IpAddr::V6(a) => (AF_INET6, a.octets().to_vec()),
    };
    let mut b = vec![family, prefix, 0, 0];
    b.extend_from_slice(&link.to_ne_bytes());
    push_attr(&mut b, IFA_LOCAL, &bytes);
    push_attr(&mut b, IFA_ADDRESS, &bytes);
    if family == AF_INET6 {
        push_attr(&mut b, IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    b
}

fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut name = None;
    let mut mac = None;
    for (kind, value) in attrs(payload, 16) {
        match kind {
            IFLA_IFNAME => name = Some(String::from_utf8_lossy(value).trim_end_matches('\0').to_string()),
            IFLA_ADDRESS if value.len() == 6 => mac = value.try_into().ok(),
            _ => {}
        }
    }
    Some(Link {
        index,
        name: name?,
        mac,
    })
}

fn parse_address(payload: &[u8]) -> Option<LinkAddress> {
    let family = *payload.first()?;
    let prefix = *payload.get(1)?;
    let link = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut local = None;
    let mut address = None;
    for (kind, value) in attrs(payload, 8) {
        let ip = match (family, value.len()) {
            (AF_INET, 4) => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(value).ok()?)),
            (AF_INET6, 16) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(value).ok()?)),
            _ => continue,
        };
        match kind {
            IFA_LOCAL => local = Some(ip),
            IFA_ADDRESS => address = Some(ip),
            _ => {}
        }
    }
    Some(LinkAddress {
        link,
        address: local.or(address)?,
        prefix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_read_back() {
        let mut b = Vec::new();
        push_attr(&mut b, IFLA_IFNAME, &nul_terminated("eth0"));
        push_attr(&mut b, IFLA_ADDRESS, &[2, 0, 0, 0, 0, 1]);
        assert_eq!(b.len() % 4, 0);
        let got: Vec<_> = attrs(&b, 0).collect();
        assert_eq!(
            got,
            vec![(IFLA_IFNAME, &b"eth0\0"[..]), (IFLA_ADDRESS, &[2u8, 0, 0, 0, 0, 1][..])]
        );
        // A truncated attribute ends the walk instead of reading past the buffer.
        assert_eq!(attrs(&b[..6], 0).count(), 0);
    }

    #[test]
    fn the_loopback_link_is_found_by_name_and_a_missing_one_is_named() {
        let mut nl = Netlink::open().expect("a netlink socket");
        let lo = nl.link("lo").expect("every namespace has lo");
        assert_eq!(lo.name, "lo");
        assert!(lo.index > 0);
        let err = nl.link("tdl-missing0").unwrap_err();
        assert!(
            err.to_string().contains("tdl-missing0") || err.raw_os_error() == Some(libc::ENODEV),
            "{err}"
        );
    }
}
