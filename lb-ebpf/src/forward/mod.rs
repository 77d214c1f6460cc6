//! Forwarding methods: header rewrite and the XDP verdict.

pub mod dr;
pub mod nexthop;
pub mod tun;
