//! Forwarding methods: header rewrite and the XDP verdict.

pub mod dr;
