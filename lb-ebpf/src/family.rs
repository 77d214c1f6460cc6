//! What the connection path needs of a flow, for IPv4 and IPv6 alike: the
//! flow table it lives in, its ports and protocol, and IPVS's 32-bit fold
//! of its addresses (what dh, sh, mh and the full-table fallback hash).
//! Conntrack and the schedulers are generic over it and compiled once per
//! family, so the IPv4 path is the code it was before IPv6.

use lb_common::{
    FlowEntry, FlowKey, FlowKey6, Ipv6Octets, LocalityEntry, LocalityKey, LocalityKey6,
    PersistEntry, PersistKey, PersistKey6, ServiceInfo,
};

use crate::{
    kernel::{BPF_ANY, BPF_NOEXIST},
    maps::{FLOW_TABLE, FLOW_TABLE6, LOCALITY, LOCALITY6, PERSIST, PERSIST6, TEMPLATE6_SCRATCH},
};

/// A persistence template's key (PersistKey, PersistKey6) and its table.
pub trait TemplateKey: Copy {
    fn entry(&self) -> Option<*mut PersistEntry>;
    /// Creates it (BPF_NOEXIST); the kernel's error if not.
    fn create(&self, entry: &PersistEntry) -> Result<(), i32>;
}

impl TemplateKey for PersistKey {
    #[inline(always)]
    fn entry(&self) -> Option<*mut PersistEntry> {
        PERSIST.get_ptr_mut(self)
    }
    #[inline(always)]
    fn create(&self, entry: &PersistEntry) -> Result<(), i32> {
        PERSIST.insert(self, entry, BPF_NOEXIST)
    }
}

/// An IPv6 template key, built in this CPU's scratch slot: its 36 bytes
/// (and their copies in `persist::Template`) do not fit in lb6's stack
/// beside the flow's key.
#[derive(Clone, Copy)]
pub struct ScratchKey6(*mut PersistKey6);

impl ScratchKey6 {
    /// The key itself (to announce the template).
    #[inline(always)]
    pub fn key(&self) -> &PersistKey6 {
        // SAFETY: as in entry() below.
        unsafe { &*self.0 }
    }
}

impl TemplateKey for ScratchKey6 {
    #[inline(always)]
    fn entry(&self) -> Option<*mut PersistEntry> {
        // SAFETY: the per-CPU scratch slot, written by template_key in this
        // run and untouched since.
        PERSIST6.get_ptr_mut(unsafe { &*self.0 })
    }
    #[inline(always)]
    fn create(&self, entry: &PersistEntry) -> Result<(), i32> {
        // SAFETY: as above.
        PERSIST6.insert(unsafe { &*self.0 }, entry, BPF_NOEXIST)
    }
}

/// A client -> VIP 5-tuple of either family (FlowKey, FlowKey6) and the
/// maps its family keeps it in.
pub trait Flow {
    fn proto(&self) -> u8;
    /// Network byte order.
    fn sport(&self) -> u16;
    /// Network byte order.
    fn dport(&self) -> u16;
    /// IPVS's addr_fold of the source, host order: the address itself for
    /// IPv4, the XOR of its four 32-bit words for IPv6 (ip_vs_sh_hashkey).
    fn src_fold(&self) -> u32;
    /// The same of the destination (ip_vs_dh_hashkey).
    fn dst_fold(&self) -> u32;
    /// lblc / lblcr's entry for the flow's destination in `service_id`.
    fn locality(&self, service_id: u32) -> Option<*mut LocalityEntry>;
    /// Writes it (a full LRU cache drops its oldest entry).
    fn set_locality(&self, service_id: u32, entry: &LocalityEntry);
    type Template: TemplateKey;
    /// The persistence template of the flow's client network (the source
    /// cut by the service's granularity) for `svc` on `vport` (its port,
    /// 0 for an all-ports service).
    fn template_key(&self, svc: &ServiceInfo, vport: u16) -> Option<Self::Template>;
    /// The flow's entry in its family's flow table.
    fn entry(&self) -> Option<*mut FlowEntry>;
    /// Creates the flow's entry (BPF_NOEXIST); the kernel's error if not.
    fn create(&self, entry: &FlowEntry) -> Result<(), i32>;
}

/// IPVS's fold of an IPv6 address into 32 bits, host order.
#[inline(always)]
fn fold6(addr: &Ipv6Octets) -> u32 {
    let word = |i: usize| u32::from_be_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    word(0) ^ word(4) ^ word(8) ^ word(12)
}

impl Flow for FlowKey {
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn sport(&self) -> u16 {
        self.sport
    }
    #[inline(always)]
    fn dport(&self) -> u16 {
        self.dport
    }
    #[inline(always)]
    fn src_fold(&self) -> u32 {
        u32::from_be_bytes(self.src)
    }
    #[inline(always)]
    fn dst_fold(&self) -> u32 {
        u32::from_be_bytes(self.dst)
    }
    #[inline(always)]
    fn locality(&self, service_id: u32) -> Option<*mut LocalityEntry> {
        LOCALITY.get_ptr_mut(&LocalityKey {
            service_id,
            daddr: self.dst,
        })
    }
    #[inline(always)]
    fn set_locality(&self, service_id: u32, entry: &LocalityEntry) {
        let key = LocalityKey {
            service_id,
            daddr: self.dst,
        };
        // A full cache only loses an entry (LRU): the choice stands.
        let _ = LOCALITY.insert(&key, entry, BPF_ANY);
    }
    type Template = PersistKey;
    #[inline(always)]
    fn template_key(&self, svc: &ServiceInfo, vport: u16) -> Option<PersistKey> {
        Some(PersistKey {
            client_net: (u32::from_ne_bytes(self.src) & svc.persist_mask).to_ne_bytes(),
            vip: self.dst,
            vport,
            proto: self.proto,
            _pad: 0,
        })
    }
    #[inline(always)]
    fn entry(&self) -> Option<*mut FlowEntry> {
        FLOW_TABLE.get_ptr_mut(self)
    }
    #[inline(always)]
    fn create(&self, entry: &FlowEntry) -> Result<(), i32> {
        FLOW_TABLE.insert(self, entry, BPF_NOEXIST)
    }
}

impl Flow for FlowKey6 {
    #[inline(always)]
    fn proto(&self) -> u8 {
        self.proto
    }
    #[inline(always)]
    fn sport(&self) -> u16 {
        self.sport
    }
    #[inline(always)]
    fn dport(&self) -> u16 {
        self.dport
    }
    #[inline(always)]
    fn src_fold(&self) -> u32 {
        fold6(&self.src)
    }
    #[inline(always)]
    fn dst_fold(&self) -> u32 {
        fold6(&self.dst)
    }
    #[inline(always)]
    fn locality(&self, service_id: u32) -> Option<*mut LocalityEntry> {
        LOCALITY6.get_ptr_mut(&LocalityKey6 {
            service_id,
            daddr: self.dst,
        })
    }
    #[inline(always)]
    fn set_locality(&self, service_id: u32, entry: &LocalityEntry) {
        let key = LocalityKey6 {
            service_id,
            daddr: self.dst,
        };
        let _ = LOCALITY6.insert(&key, entry, BPF_ANY);
    }
    type Template = ScratchKey6;
    #[inline(always)]
    fn template_key(&self, svc: &ServiceInfo, vport: u16) -> Option<ScratchKey6> {
        let slot = TEMPLATE6_SCRATCH.get_ptr_mut(0)?;
        // SAFETY: per-CPU slot, only this CPU uses it while we run.
        let key = unsafe { &mut *slot };
        key.client_net = PersistKey6::client_net_of(&self.src, svc.persist_mask);
        key.vip = self.dst;
        key.vport = vport;
        key.proto = self.proto;
        key._pad = 0;
        Some(ScratchKey6(slot))
    }
    #[inline(always)]
    fn entry(&self) -> Option<*mut FlowEntry> {
        FLOW_TABLE6.get_ptr_mut(self)
    }
    #[inline(always)]
    fn create(&self, entry: &FlowEntry) -> Result<(), i32> {
        FLOW_TABLE6.insert(self, entry, BPF_NOEXIST)
    }
}
