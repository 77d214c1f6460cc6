//! Forwarding methods: header rewrite and the XDP verdict.

pub mod dr;
pub mod nat;
pub mod nat6;
pub mod nexthop;
pub mod tun;
