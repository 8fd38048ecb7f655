//! Resources: what the active holds for the service (DESIGN §7).
//!
//! - [`vip`]: the virtual IPs, the node's network identity: taken first, with a kernel lifetime
//!   renewed while the lease holds, and dropped the moment it fails;
//! - [`agent`]: the ordered resources after them (scripts), acquired in order and released in
//!   reverse, each within its timeout;
//! - [`netlink`] and [`announce`]: the kernel interfaces the VIP uses.

pub mod agent;
pub mod announce;
pub mod netlink;
pub mod vip;

pub use agent::ResourceAgent;
pub use agent::ResourceError;
