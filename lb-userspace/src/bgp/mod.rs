//! Scale-out: the VIPs this balancer can serve, announced over BGP to the
//! routers (which spread flows over the balancers by ECMP). We do not speak
//! BGP: BIRD 2 does, as a child the agent supervises (supervisor.rs), from
//! a config generated here (bird_conf.rs) and changed with `birdc
//! configure` (birdc.rs, which also reads the sessions back). Which VIPs
//! are announced is decided in announce.rs, pure.

pub mod announce;
pub mod bird_conf;
pub mod birdc;
pub mod supervisor;
