//! The least-connection family's costs and their tournament trees.
//!
//! lc (ip_vs_lc.c), wlc (ip_vs_wlc.c), sed (ip_vs_sed.c) and nq
//! (ip_vs_nq.c) choose the server of least cost; servers of weight 0 are
//! skipped and ties go to the first in list order (IPVS's strict
//! comparisons). A scan of the set costs a few nanoseconds per server, so
//! lc, wlc and sed keep a tree instead: `least_trees`, per backend-set
//! slot, a tournament tree whose node n holds the index of the best server
//! under it. A new connection reads the root; a change of a server's count
//! recomputes the nodes on its path to the root (log2 of the set's size).
//! The winner of two is the earlier one unless the later one is strictly
//! better, so the root is the first server of least cost: the scan's answer.
//!
//! Node updates from several CPUs (and the agent) do not lock: a recompute
//! that read a child before another CPU rewrote it can leave a node stale
//! until the next change below it, or the agent's sweep, recomputes it.
//! IPVS's own scan reads counts that other CPUs change under it, so under
//! concurrent changes its answer is no more defined than this one.
//! nq is not kept: its first idle server is the first of a scan.

use crate::{MAX_BACKENDS_PER_SERVICE, RealConns, SchedulerKind};

/// Internal nodes of a tree at most (node 0 is unused).
pub const LEAST_TREE_NODES: usize = MAX_BACKENDS_PER_SERVICE as usize;
/// Levels from a leaf to the root at most.
pub const LEAST_TREE_DEPTH: u32 = MAX_BACKENDS_PER_SERVICE.trailing_zeros();
/// No server may be chosen under the node.
pub const NO_SERVER: u16 = u16::MAX;
/// A `RealLeaf` names a tree.
pub const REAL_LEAF_PRESENT: u16 = 1;

/// What a least-connection scheduler minimises.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeastCost {
    /// lc: overhead (active * 256 + inactive), weights ignored.
    Overhead = 1,
    /// wlc: overhead / weight.
    OverheadPerWeight = 2,
    /// sed: (active + 1) / weight.
    ExpectedDelay = 3,
    /// nq: the first server with no active connection, else as sed.
    NeverQueue = 4,
}

impl LeastCost {
    /// The cost of a least-connection scheduler (None for the others).
    #[inline(always)]
    pub fn of(kind: SchedulerKind) -> Option<Self> {
        match kind {
            SchedulerKind::Lc => Some(Self::Overhead),
            SchedulerKind::Wlc => Some(Self::OverheadPerWeight),
            SchedulerKind::Sed => Some(Self::ExpectedDelay),
            SchedulerKind::Nq => Some(Self::NeverQueue),
            _ => None,
        }
    }

    /// The cost stored as `v` (LeastTree::cost).
    #[inline(always)]
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Overhead),
            2 => Some(Self::OverheadPerWeight),
            3 => Some(Self::ExpectedDelay),
            4 => Some(Self::NeverQueue),
            _ => None,
        }
    }

    /// Whether a tree answers for this cost (nq scans).
    #[inline(always)]
    pub fn has_tree(self) -> bool {
        self != Self::NeverQueue
    }

    /// A server's cost.
    #[inline(always)]
    pub fn of_conns(self, c: &RealConns) -> i64 {
        match self {
            Self::Overhead | Self::OverheadPerWeight => c.overhead(),
            Self::ExpectedDelay | Self::NeverQueue => c.active + 1,
        }
    }

    /// Whether a server of `cost` and `weight` is strictly better than the
    /// best so far (`best_cost`, `best_weight`), as IPVS compares: lc by
    /// overhead, the others by cost / weight without division.
    #[inline(always)]
    pub fn beats(self, cost: i64, weight: i64, best_cost: i64, best_weight: i64) -> bool {
        match self {
            Self::Overhead => cost < best_cost,
            _ => best_cost * weight > cost * best_weight,
        }
    }
}

/// `least_trees` value, one per backend-set slot; built by the agent when
/// it writes the slot's set, kept by whoever changes a server's count.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeastTree {
    /// LeastCost as u8; 0: no tree for this slot.
    pub cost: u8,
    pub _pad: [u8; 3],
    /// Leaves: the set's size rounded up to a power of two, at least 2.
    /// Leaf `leaves + i` is server i; a node n < leaves has children 2n
    /// and 2n + 1.
    pub leaves: u32,
    /// nodes[n]: index of the best server under node n, or NO_SERVER.
    pub nodes: [u16; LEAST_TREE_NODES],
}

impl Default for LeastTree {
    fn default() -> Self {
        Self {
            cost: 0,
            _pad: [0; 3],
            leaves: 0,
            nodes: [NO_SERVER; LEAST_TREE_NODES],
        }
    }
}

/// `real_leaves` value, per real id: the tree (backend-set slot) and leaf
/// (index in the set) of the server, so a change of its count can find
/// the path to recompute.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RealLeaf {
    pub set: u32,
    pub index: u16,
    /// REAL_LEAF_PRESENT, or 0: the server's service keeps no tree.
    pub flags: u16,
}

/// The leaves a tree over `count` servers needs.
pub fn leaves_for(count: u32) -> u32 {
    count.clamp(2, MAX_BACKENDS_PER_SERVICE).next_power_of_two()
}

/// The servers of a set, as a tree compares them.
pub trait Servers {
    /// Weight and counts of server `index`; None when it may not be chosen
    /// (outside the set, or weight 0).
    fn server(&self, index: u32) -> Option<(i64, RealConns)>;
}

/// A tree's nodes wherever they live (a map value, a mapping of one).
pub trait Nodes {
    fn node(&self, n: u32) -> u16;
    fn set_node(&mut self, n: u32, server: u16);
}

// black_box on the index: the BPF verifier must see the bounds check on
// the register that indexes (left alone, the compiler checks one copy of
// it and indexes with another).
impl Nodes for LeastTree {
    #[inline(always)]
    fn node(&self, n: u32) -> u16 {
        // read_volatile: other CPUs rewrite nodes; read each one once.
        self.nodes
            .get(core::hint::black_box(n) as usize)
            // SAFETY: a reference to an element of the array, aligned.
            .map_or(NO_SERVER, |v| unsafe { core::ptr::read_volatile(v) })
    }

    #[inline(always)]
    fn set_node(&mut self, n: u32, server: u16) {
        if let Some(v) = self.nodes.get_mut(core::hint::black_box(n) as usize) {
            // SAFETY: as node; one 2-byte store.
            unsafe { core::ptr::write_volatile(v, server) };
        }
    }
}

/// The best server under child `c` of a tree with `leaves` leaves.
#[inline(always)]
fn child<N: Nodes>(nodes: &N, leaves: u32, c: u32) -> u16 {
    if c >= leaves {
        (c - leaves) as u16
    } else {
        nodes.node(c)
    }
}

/// The better of servers `a` (earlier in the set) and `b`: `b` only if it
/// is strictly better.
#[inline(always)]
fn winner<S: Servers>(cost: LeastCost, servers: &S, a: u16, b: u16) -> u16 {
    let sa = if a == NO_SERVER {
        None
    } else {
        servers.server(a.into())
    };
    let sb = if b == NO_SERVER {
        None
    } else {
        servers.server(b.into())
    };
    match (sa, sb) {
        (None, None) => NO_SERVER,
        (Some(_), None) => a,
        (None, Some(_)) => b,
        (Some((wa, ca)), Some((wb, cb))) => {
            if cost.beats(cost.of_conns(&cb), wb, cost.of_conns(&ca), wa) {
                b
            } else {
                a
            }
        }
    }
}

/// Recomputes node `n` (1..leaves) from its children; returns its server.
#[inline(always)]
fn recompute<N: Nodes, S: Servers>(
    nodes: &mut N,
    cost: LeastCost,
    leaves: u32,
    servers: &S,
    n: u32,
) -> u16 {
    let best = winner(
        cost,
        servers,
        child(nodes, leaves, 2 * n),
        child(nodes, leaves, 2 * n + 1),
    );
    nodes.set_node(n, best);
    best
}

/// The node above server `index`'s leaf: the first an update recomputes.
#[inline(always)]
pub fn parent_of_leaf(leaves: u32, index: u32) -> u32 {
    (leaves + index) >> 1
}

/// One level of an update after server `index`'s count changed:
/// recomputes node `n` on its path; returns whether the nodes above may
/// change too. They may not when the node keeps its server and that is
/// another one: its cost did not move, and a node above sees nothing else
/// of this subtree. (So a server that does not lead its subtree pays one
/// level, not the walk to the root.)
#[inline(always)]
pub fn update_level<N: Nodes, S: Servers>(
    nodes: &mut N,
    cost: LeastCost,
    leaves: u32,
    servers: &S,
    n: u32,
    index: u32,
) -> bool {
    let before = nodes.node(n);
    let after = recompute(nodes, cost, leaves, servers, n);
    before != after || u32::from(after) == index
}

/// Recomputes the nodes from server `index`'s leaf up, as far as they can
/// change. (The data plane takes the same steps in a bpf_loop.)
pub fn update<N: Nodes, S: Servers>(
    nodes: &mut N,
    cost: LeastCost,
    leaves: u32,
    servers: &S,
    index: u32,
) {
    let mut n = parent_of_leaf(leaves, index);
    while n > 0 && update_level(nodes, cost, leaves, servers, n, index) {
        n >>= 1;
    }
}

/// Recomputes every node, leaves upward.
pub fn rebuild<N: Nodes, S: Servers>(nodes: &mut N, cost: LeastCost, leaves: u32, servers: &S) {
    for n in (1..leaves).rev() {
        recompute(nodes, cost, leaves, servers, n);
    }
}

/// The best server of the tree (its root), if any may be chosen.
#[inline(always)]
pub fn best<N: Nodes>(nodes: &N) -> Option<u32> {
    let root = nodes.node(1);
    (root != NO_SERVER).then_some(root.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set's servers as a plain list of (weight, counts).
    struct List(Vec<(u32, RealConns)>);

    impl Servers for List {
        fn server(&self, index: u32) -> Option<(i64, RealConns)> {
            let (w, c) = *self.0.get(index as usize)?;
            (w > 0).then_some((i64::from(w), c))
        }
    }

    /// IPVS's scan: the first server of least cost.
    fn scan(cost: LeastCost, list: &List) -> Option<u32> {
        let mut best: Option<(u32, i64, i64)> = None;
        for i in 0..list.0.len() as u32 {
            let Some((w, c)) = list.server(i) else {
                continue;
            };
            let doh = cost.of_conns(&c);
            if best.is_none_or(|(_, bc, bw)| cost.beats(doh, w, bc, bw)) {
                best = Some((i, doh, w));
            }
        }
        best.map(|(i, _, _)| i)
    }

    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) % n
        }
    }

    const COSTS: [LeastCost; 3] = [
        LeastCost::Overhead,
        LeastCost::OverheadPerWeight,
        LeastCost::ExpectedDelay,
    ];

    #[test]
    fn the_root_is_the_scans_answer_after_every_change() {
        let mut rng = Lcg(7);
        for cost in COSTS {
            for count in [1usize, 2, 3, 5, 16, 17, 100, 256] {
                let mut list = List(
                    (0..count)
                        .map(|_| (rng.next(4) as u32, RealConns::default()))
                        .collect(),
                );
                let leaves = leaves_for(count as u32);
                let mut tree = LeastTree::default();
                rebuild(&mut tree, cost, leaves, &list);
                assert_eq!(best(&tree), scan(cost, &list), "{cost:?} {count} built");
                for step in 0..600 {
                    let i = rng.next(count as u64) as usize;
                    let c = &mut list.0[i].1;
                    match rng.next(5) {
                        0 => c.active += 1,
                        1 if c.active > 0 => c.active -= 1,
                        2 => c.inactive += 1,
                        3 if c.inactive > 0 => c.inactive -= 1,
                        // A weight change: the agent rebuilds.
                        4 => {
                            list.0[i].0 = rng.next(4) as u32;
                            rebuild(&mut tree, cost, leaves, &list);
                        }
                        _ => {}
                    }
                    update(&mut tree, cost, leaves, &list, i as u32);
                    assert_eq!(
                        best(&tree),
                        scan(cost, &list),
                        "{cost:?} {count} servers, step {step}"
                    );
                }
            }
        }
    }

    #[test]
    fn ties_go_to_the_first_server_and_weight_zero_is_never_chosen() {
        let list = List(vec![
            (0, RealConns::default()),
            (1, RealConns::default()),
            (1, RealConns::default()),
        ]);
        let mut tree = LeastTree::default();
        rebuild(&mut tree, LeastCost::Overhead, leaves_for(3), &list);
        assert_eq!(best(&tree), Some(1));
        let none = List(vec![(0, RealConns::default()); 3]);
        rebuild(&mut tree, LeastCost::Overhead, leaves_for(3), &none);
        assert_eq!(best(&tree), None);
    }

    #[test]
    fn wlc_weighs_and_sed_counts_the_new_connection() {
        // 2 active on weight 4 (512 / 4 = 128 per weight) against 1 active
        // on weight 1 (256): wlc takes the heavier server.
        let busy = |active| RealConns {
            active,
            ..RealConns::default()
        };
        let list = List(vec![(1, busy(1)), (4, busy(2))]);
        let mut tree = LeastTree::default();
        rebuild(&mut tree, LeastCost::OverheadPerWeight, 2, &list);
        assert_eq!(best(&tree), Some(1));
        // lc ignores weights: 256 < 512.
        rebuild(&mut tree, LeastCost::Overhead, 2, &list);
        assert_eq!(best(&tree), Some(0));
        // sed: (0 + 1) / 1 = 1 against (1 + 1) / 2 = 1: a tie, the first.
        let list = List(vec![(1, busy(0)), (2, busy(1))]);
        rebuild(&mut tree, LeastCost::ExpectedDelay, 2, &list);
        assert_eq!(best(&tree), Some(0));
    }

    #[test]
    fn leaves_are_a_power_of_two_of_at_least_two() {
        assert_eq!(leaves_for(0), 2);
        assert_eq!(leaves_for(1), 2);
        assert_eq!(leaves_for(3), 4);
        assert_eq!(leaves_for(256), 256);
        assert_eq!(leaves_for(1000), 256);
    }
}
