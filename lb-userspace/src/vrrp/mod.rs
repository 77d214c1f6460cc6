//! VRRP the keepalived way, in layers: the packet codec (packet.rs), the
//! pure state machine (state.rs), and the I/O: raw socket (socket.rs),
//! gratuitous ARP (garp.rs), notify scripts (notify.rs), and the task that
//! runs one vrrp_instance (instance.rs).

pub mod garp;
pub mod instance;
pub mod notify;
pub mod packet;
pub mod socket;
pub mod state;
