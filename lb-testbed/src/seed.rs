//! The seed's addresses (its keepalived.conf and ipvsadm commands), once,
//! for the BPF_PROG_TEST_RUN harness, the namespace topology, the demo and
//! the bench.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The seed's subnet, 172.16.122.0/24.
pub const SUBNET_PREFIX: u8 = 24;
/// The virtual IP of the seed's DR service (keepalived's virtual_ipaddress).
pub const VIP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 100);
/// The virtual service's port.
pub const PORT: u16 = 80;
/// The client the seed curls from.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 50);
/// The director (MASTER); also the NAT VIP of section 4 and TUN's outer source.
pub const LB_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 188);
/// The seed's backup director.
pub const LB2_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 189);
/// The two real servers.
pub const RS1_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 193);
pub const RS2_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 195);
/// A third web server, for sorry_server scenarios (not in the seed).
pub const SORRY_IP: Ipv4Addr = Ipv4Addr::new(172, 16, 122, 197);

/// The IPv6 network beside the seed's (not in the seed: 2001:db8::/32 is
/// the documentation prefix), each host ::N where the seed has .N.
pub const SUBNET6_PREFIX: u8 = 64;
pub const fn seed6(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0x122, 0, 0, 0, 0, last)
}
pub const VIP6: Ipv6Addr = seed6(0x100);
pub const CLIENT_IP6: Ipv6Addr = seed6(0x50);
pub const LB_IP6: Ipv6Addr = seed6(0x188);
pub const LB2_IP6: Ipv6Addr = seed6(0x189);
pub const RS1_IP6: Ipv6Addr = seed6(0x193);
pub const RS2_IP6: Ipv6Addr = seed6(0x195);
pub const SORRY_IP6: Ipv6Addr = seed6(0x197);
