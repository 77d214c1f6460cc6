//! The two kernel interfaces aya 0.14 does not wrap: BPF_MAP_LOOKUP_AND_DELETE_ELEM
//! (remove a flow and learn the state it had at that instant) and mmap of an
//! array map (atomic adds on the counters the data plane shares).

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
    ptr::NonNull,
    sync::atomic::{AtomicI64, Ordering},
};

use lb_common::{MAX_REALS, RealConns};

/// bpf(2) command number (uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

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

/// The data plane's `real_conns` array, mapped into this process.
pub struct SharedConns {
    base: NonNull<RealConns>,
    len: usize,
}

// SAFETY: the mapping is only touched through atomic operations.
unsafe impl Send for SharedConns {}

impl SharedConns {
    const BYTES: usize = MAX_REALS as usize * size_of::<RealConns>();

    /// Maps the (BPF_F_MMAPABLE) array behind `map`.
    pub fn map(map: BorrowedFd<'_>) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of the map's value area; the kernel
        // checks the length against the map.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::BYTES,
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
            len: MAX_REALS as usize,
        })
    }

    fn field(&self, real_id: u32, which: Counter) -> Option<&AtomicI64> {
        if real_id as usize >= self.len {
            return None;
        }
        // SAFETY: in bounds of the mapping, 8-byte aligned (page-aligned base,
        // 32-byte values); the data plane uses atomic adds on the same words.
        unsafe {
            let conns = self.base.as_ptr().add(real_id as usize);
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

impl Drop for SharedConns {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe { libc::munmap(self.base.as_ptr().cast(), Self::BYTES) };
    }
}
