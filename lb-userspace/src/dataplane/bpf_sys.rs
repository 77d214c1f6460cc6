//! The kernel interfaces aya 0.14 does not wrap: BPF_MAP_LOOKUP_AND_DELETE_ELEM
//! (remove a flow and learn the state it had at that instant), mmap of an
//! array map (atomic adds on the counters the data plane shares, atomic
//! stores of service_hits' words) and the
//! interface a pinned XDP link is attached to (aya's LinkInfo hides it).

use std::{
    io,
    marker::PhantomData,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicI64, AtomicU8, AtomicU16, AtomicU32, AtomicU64, Ordering},
};

use lb_common::{
    MAX_BACKEND_SETS, MAX_REALS, MAX_SERVICES, RealConns,
    least::{LEAST_TREE_NODES, LeastTree, NO_SERVER, Nodes},
};

/// bpf(2) command numbers (uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
/// Size of `struct bpf_link_info` as of Linux 6.x, with room to spare (the
/// kernel fills at most what it knows and what we ask for).
const LINK_INFO_LEN: usize = 128;
/// Offset of the type-specific union in `struct bpf_link_info` (type, id,
/// prog_id, then the union, 8-byte aligned); for XDP links it starts with
/// the interface index.
const LINK_INFO_UNION_OFFSET: usize = 16;
/// Entries asked for per BPF_MAP_LOOKUP_BATCH call: large enough for any
/// hash bucket (the kernel answers ENOSPC when a bucket does not fit).
const BATCH: usize = 4096;

/// The batch part of `union bpf_attr`.
#[repr(C)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Every entry of a hash map, read BATCH at a time (BPF_MAP_LOOKUP_BATCH):
/// two orders of magnitude fewer system calls than get_next_key + lookup
/// per entry, which is what makes a per-second sweep of a million flows
/// affordable. Not a snapshot: entries changing meanwhile may be missed
/// or seen twice, as with any iteration.
pub fn lookup_all<K: Copy + Default, V: Copy + Default>(
    map: BorrowedFd<'_>,
) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    for_each_batch(map, |keys: &[K], values: &[V]| -> io::Result<()> {
        out.extend(keys.iter().copied().zip(values.iter().copied()));
        Ok(())
    })?;
    Ok(out)
}

/// As `lookup_all`, handing each batch to `visit` instead of keeping it:
/// the memory is one batch's however large the map (a million flows read
/// whole were 40 MB, twice over while the vector grew). `visit` may delete
/// entries it was given: the batch token is a bucket index, and those
/// buckets were read.
pub fn for_each_batch<K: Copy + Default, V: Copy + Default, E: From<io::Error>>(
    map: BorrowedFd<'_>,
    mut visit: impl FnMut(&[K], &[V]) -> Result<(), E>,
) -> Result<(), E> {
    let mut keys = vec![K::default(); BATCH];
    let mut values = vec![V::default(); BATCH];
    // The hash map's batch token is a bucket index.
    let (mut token_in, mut token_out) = (0u32, 0u32);
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first {
                0
            } else {
                &token_in as *const u32 as u64
            },
            out_batch: &mut token_out as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: BATCH as u32,
            map_fd: map.as_raw_fd() as u32,
            elem_flags: 0,
            flags: 0,
        };
        // SAFETY: the buffers hold BATCH keys and values of the map's types.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                size_of::<BatchAttr>(),
            )
        };
        let done = if rc == 0 {
            false
        } else {
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ENOENT) {
                return Err(err.into());
            }
            true
        };
        let n = (attr.count as usize).min(BATCH);
        visit(&keys[..n], &values[..n])?;
        if done {
            return Ok(());
        }
        token_in = token_out;
        first = false;
    }
}

/// The map-element part of `union bpf_attr`.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Deletes `key` from a hash map and returns the value it held, or None if
/// it was not there.
pub fn lookup_and_delete<K: Copy, V: Copy + Default>(
    map: BorrowedFd<'_>,
    key: &K,
) -> io::Result<Option<V>> {
    let mut value = V::default();
    let attr = MapElemAttr {
        map_fd: map.as_raw_fd() as u32,
        _pad: 0,
        key: key as *const K as u64,
        value: &mut value as *mut V as u64,
        flags: 0,
    };
    // SAFETY: attr points at valid key and value buffers of the map's sizes
    // (the caller's K and V are the map's key and value types).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_AND_DELETE_ELEM,
            &attr as *const MapElemAttr,
            size_of::<MapElemAttr>(),
        )
    };
    if rc == 0 {
        return Ok(Some(value));
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        Ok(None)
    } else {
        Err(err)
    }
}

/// The `BPF_OBJ_GET` part of `union bpf_attr`.
#[repr(C)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` part of `union bpf_attr`.
#[repr(C)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The interface index a pinned XDP link is attached to; 0 once its device
/// is gone (the kernel detaches an XDP link when its interface, or the
/// network namespace holding it, is deleted, and the link lives on,
/// defunct, as long as it is pinned).
pub fn pinned_xdp_link_ifindex(pin: &std::path::Path) -> io::Result<u32> {
    use std::os::{fd::FromRawFd as _, unix::ffi::OsStrExt as _};
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let get = ObjGetAttr {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
    };
    // SAFETY: attr points at a NUL-terminated path that outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            &get as *const ObjGetAttr,
            size_of::<ObjGetAttr>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor the kernel just gave us; closed on drop.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut info = [0u8; LINK_INFO_LEN];
    let attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: LINK_INFO_LEN as u32,
        info: info.as_mut_ptr() as u64,
    };
    // SAFETY: attr points at a writable buffer of info_len bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET_INFO_BY_FD,
            &attr as *const InfoAttr,
            size_of::<InfoAttr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let at = LINK_INFO_UNION_OFFSET;
    Ok(u32::from_ne_bytes([
        info[at],
        info[at + 1],
        info[at + 2],
        info[at + 3],
    ]))
}

/// The fields of RealConns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Active,
    Inactive,
    Persistent,
}

impl Counter {
    /// Where a flow in `state` is counted.
    pub fn of_state(state: u8) -> Self {
        if lb_common::conntrack::is_active(state) {
            Self::Active
        } else {
            Self::Inactive
        }
    }
}

/// A BPF_F_MMAPABLE array map's values, mapped into this process.
struct ArrayMapping<T> {
    base: NonNull<T>,
    len: usize,
}

// SAFETY: the mapping is only touched through atomic operations.
unsafe impl<T> Send for ArrayMapping<T> {}

impl<T> ArrayMapping<T> {
    /// Maps the `len` values of the array behind `map`.
    fn map(map: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's value area; the kernel
        // checks the length against the map.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len * size_of::<T>(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            base: NonNull::new(addr.cast()).ok_or_else(io::Error::last_os_error)?,
            len,
        })
    }

    /// The value at `index`, if in bounds (page-aligned base: a value is
    /// as aligned as its size is, for the 8- and 32-byte values mapped).
    fn at(&self, index: u32) -> Option<*mut T> {
        // SAFETY: in bounds of the mapping.
        ((index as usize) < self.len).then(|| unsafe { self.base.as_ptr().add(index as usize) })
    }
}

impl<T> Drop for ArrayMapping<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len * size_of::<T>()) };
    }
}

/// The data plane's `real_conns` array, mapped into this process.
pub struct SharedConns(ArrayMapping<RealConns>);

impl SharedConns {
    /// Maps the (BPF_F_MMAPABLE) array behind `map`.
    pub fn map(map: BorrowedFd<'_>) -> io::Result<Self> {
        ArrayMapping::map(map, MAX_REALS as usize).map(Self)
    }

    fn field(&self, real_id: u32, which: Counter) -> Option<&AtomicI64> {
        let conns = self.0.at(real_id)?;
        // SAFETY: inside the mapping, 8-byte aligned (32-byte values); the
        // data plane uses atomic adds on the same words.
        unsafe {
            let field = match which {
                Counter::Active => &raw mut (*conns).active,
                Counter::Inactive => &raw mut (*conns).inactive,
                Counter::Persistent => &raw mut (*conns).persistent,
            };
            Some(AtomicI64::from_ptr(field))
        }
    }

    /// Adds to one of a server's counts.
    pub fn add(&self, real_id: u32, which: Counter, delta: i64) {
        if let Some(f) = self.field(real_id, which) {
            f.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// (active, inactive) of a server.
    pub fn get(&self, real_id: u32) -> (i64, i64) {
        (
            self.load(real_id, Counter::Active),
            self.load(real_id, Counter::Inactive),
        )
    }

    pub fn load(&self, real_id: u32, which: Counter) -> i64 {
        self.field(real_id, which)
            .map_or(0, |f| f.load(Ordering::Relaxed))
    }
}

/// The data plane's `least_trees` array, mapped into this process.
pub struct SharedTrees(ArrayMapping<LeastTree>);

impl SharedTrees {
    pub fn map(map: BorrowedFd<'_>) -> io::Result<Self> {
        ArrayMapping::map(map, MAX_BACKEND_SETS as usize).map(Self)
    }

    /// Backend-set slot `set`'s tree.
    pub fn at(&self, set: u32) -> Option<MappedTree<'_>> {
        Some(MappedTree {
            tree: self.0.at(set)?,
            _mapping: PhantomData,
        })
    }
}

/// One tree inside the mapping, read and written with atomic operations
/// (the data plane recomputes nodes at the same time).
pub struct MappedTree<'a> {
    tree: *mut LeastTree,
    _mapping: PhantomData<&'a SharedTrees>,
}

impl MappedTree<'_> {
    fn node_at(&self, n: u32) -> Option<&AtomicU16> {
        ((n as usize) < LEAST_TREE_NODES).then(|| {
            // SAFETY: inside the mapping (n in bounds), 2-byte aligned (the
            // 520-byte values start 4-aligned, nodes at offset 8).
            unsafe {
                AtomicU16::from_ptr((&raw mut (*self.tree).nodes).cast::<u16>().add(n as usize))
            }
        })
    }

    /// Stores the tree's cost and leaves: cost 0 turns it off (the data
    /// plane then scans), so it is stored first when turning it off and
    /// last when turning it on.
    pub fn set_header(&mut self, cost: u8, leaves: u32) {
        // SAFETY: inside the mapping; the fields are aligned (offsets 0, 4).
        let (c, l) = unsafe {
            (
                AtomicU8::from_ptr(&raw mut (*self.tree).cost),
                AtomicU32::from_ptr(&raw mut (*self.tree).leaves),
            )
        };
        if cost == 0 {
            c.store(0, Ordering::Release);
            l.store(leaves, Ordering::Release);
        } else {
            l.store(leaves, Ordering::Release);
            c.store(cost, Ordering::Release);
        }
    }
}

impl Nodes for MappedTree<'_> {
    fn node(&self, n: u32) -> u16 {
        self.node_at(n)
            .map_or(NO_SERVER, |v| v.load(Ordering::Relaxed))
    }

    fn set_node(&mut self, n: u32, server: u16) {
        if let Some(v) = self.node_at(n) {
            v.store(server, Ordering::Relaxed);
        }
    }
}

/// The data plane's `service_hits` array, mapped into this process: each
/// word is stored whole, so a packet never reads half an update.
pub struct SharedServiceHits(ArrayMapping<u64>);

impl SharedServiceHits {
    pub fn map(map: BorrowedFd<'_>) -> io::Result<Self> {
        ArrayMapping::map(map, MAX_SERVICES as usize).map(Self)
    }

    /// Stores service `service_id`'s word (lb_common::service_hit).
    pub fn store(&self, service_id: u32, word: u64) {
        if let Some(w) = self.0.at(service_id) {
            // SAFETY: inside the mapping, 8-byte aligned; the data plane
            // reads the word with one 8-byte load.
            unsafe { AtomicU64::from_ptr(w) }.store(word, Ordering::Release);
        }
    }
}
