//! How records move from the instances of one operator to the instances of the next.
//!
//! Keyed exchanges route by *key group*, as Flink does: a key hashes into one of
//! `max_parallelism` key groups, and each instance owns a contiguous range of them. State is
//! scoped by key group, so a job restored at another parallelism only moves whole groups.

use crate::expr::Expr;

/// Default number of key groups (the upper bound on any keyed operator's parallelism).
pub const DEFAULT_MAX_PARALLELISM: u32 = 128;

/// A key group: `hash(key) mod max_parallelism`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyGroup(pub u32);

impl KeyGroup {
    pub fn of_hash(hash: u64, max_parallelism: u32) -> KeyGroup {
        KeyGroup((hash % max_parallelism as u64) as u32)
    }

    /// The instance (of `parallelism`) that owns this group. Same formula as Flink's
    /// `KeyGroupRangeAssignment.computeOperatorIndexForKeyGroup`.
    pub fn subtask(self, max_parallelism: u32, parallelism: u32) -> u32 {
        (self.0 as u64 * parallelism as u64 / max_parallelism as u64) as u32
    }
}

/// Which of `parallelism` instances owns a key hash: [`KeyGroup::of_hash`] then
/// [`KeyGroup::subtask`], with their divisions done once, into a table of the groups' owners.
pub struct Owners {
    max_parallelism: u64,
    /// `max_parallelism - 1` where it is a power of two (the remainder is then a mask).
    mask: Option<u64>,
    of_group: Vec<u32>,
}

impl Owners {
    pub fn new(max_parallelism: u32, parallelism: u32) -> Owners {
        let of_group = (0..max_parallelism).map(|g| KeyGroup(g).subtask(max_parallelism, parallelism)).collect();
        let mask = max_parallelism.is_power_of_two().then(|| max_parallelism as u64 - 1);
        Owners { max_parallelism: max_parallelism as u64, mask, of_group }
    }

    #[inline]
    pub fn of_hash(&self, hash: u64) -> usize {
        let group = match self.mask {
            Some(m) => hash & m,
            None => hash % self.max_parallelism,
        };
        self.of_group[group as usize] as usize
    }
}

/// The contiguous key-group range owned by instance `subtask` of `parallelism`.
pub fn key_group_range(max_parallelism: u32, parallelism: u32, subtask: u32) -> std::ops::Range<u32> {
    let start = (subtask as u64 * max_parallelism as u64).div_ceil(parallelism as u64) as u32;
    let end = ((subtask as u64 + 1) * max_parallelism as u64).div_ceil(parallelism as u64) as u32;
    start..end
}

/// The exchange on one edge of the dataflow.
#[derive(Clone, Debug)]
pub enum Exchange {
    /// Instance `i` sends to instance `i` (both sides have the same parallelism).
    Forward,
    /// Batches go round-robin to the downstream instances.
    Rebalance,
    /// Records go to the instance owning the key group of `key`.
    Hash { key: Expr, max_parallelism: u32 },
    /// Every instance sends everything to instance 0 (downstream parallelism 1).
    Single,
}

impl Exchange {
    pub fn name(&self) -> String {
        match self {
            Exchange::Forward => "forward".into(),
            Exchange::Rebalance => "rebalance".into(),
            Exchange::Hash { key, .. } => format!("hash({})", key.source()),
            Exchange::Single => "single".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The table gives what the two divisions give, with a mask or a remainder.
        #[test]
        fn owners_are_the_key_groups_owners(hash in any::<u64>(), max_parallelism in prop_oneof![Just(128u32), Just(1u32 << 15), 1u32..1000], p in 1u32..8) {
            let p = p.min(max_parallelism);
            let want = KeyGroup::of_hash(hash, max_parallelism).subtask(max_parallelism, p) as usize;
            prop_assert_eq!(Owners::new(max_parallelism, p).of_hash(hash), want);
        }

        #[test]
        fn ranges_partition_key_groups_and_agree_with_subtask(max in 1u32..512, p in 1u32..64) {
            prop_assume!(p <= max);
            let mut next = 0;
            for s in 0..p {
                let r = key_group_range(max, p, s);
                prop_assert_eq!(r.start, next);
                for kg in r.clone() {
                    prop_assert_eq!(KeyGroup(kg).subtask(max, p), s);
                }
                next = r.end;
            }
            prop_assert_eq!(next, max);
        }
    }
}
