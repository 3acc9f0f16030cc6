//! Synnefo's per-network resource pools: a network of a flavor that has
//! one gets a value of its own, held until the network is deleted.
//!
//! * **Links** (`PHYSICAL_VLAN`): each network is a bridge (a VLAN) of its
//!   own, `prv0`, `prv1`, ... set up on every node beforehand; Synnefo's
//!   bridge pool (`PRIVATE_PHYSICAL_VLAN_BRIDGE_PREFIX`,
//!   `PRIVATE_PHYSICAL_VLAN_MAX_NUMBER`).
//! * **MAC prefixes** (`MAC_FILTERED`): the networks share one bridge and
//!   each network's NICs carry a 3-byte MAC prefix of their own, so the
//!   nodes can filter frames by prefix; Synnefo's MAC prefix pool.
//!
//! A pool is an index space `0..size` mapped to values; the store leases
//! the lowest index whose value no network holds, under a lock, with the
//! value unique per kind as the backstop (see
//! [`NetworkStore::create_network`](crate::ports::NetworkStore::create_network)).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// Longest link name: a Linux interface name has at most 15 bytes.
pub const MAX_LINK_LEN: usize = 15;

/// Largest pool: 65,536 values (two bytes of MAC prefixes; more bridges
/// than any node carries).
pub const MAX_POOL_SIZE: u32 = 1 << 16;

/// What a pool hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// A Ganeti NIC link (a bridge).
    Link,
    /// A 3-byte MAC prefix.
    MacPrefix,
}

impl PoolKind {
    /// The name stored with a lease (`link`, `mac_prefix`).
    pub fn as_str(self) -> &'static str {
        match self {
            PoolKind::Link => "link",
            PoolKind::MacPrefix => "mac_prefix",
        }
    }

    /// Parses [`PoolKind::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "link" => Some(PoolKind::Link),
            "mac_prefix" => Some(PoolKind::MacPrefix),
            _ => None,
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn check_size(field: &'static str, size: u32) -> Result<(), DomainError> {
    if size == 0 || size > MAX_POOL_SIZE {
        return Err(invalid(
            field,
            format!("must be 1 to {MAX_POOL_SIZE}, not {size}"),
        ));
    }
    Ok(())
}

/// Links `<prefix>0` to `<prefix><size - 1>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkPool {
    prefix: String,
    size: u32,
}

impl LinkPool {
    /// A pool of `size` links named `<prefix><n>`: the prefix is ASCII
    /// letters, digits, `_`, `-` or `.`, starts with a letter and does not
    /// end with a digit (`prv1` + `0` would read as `prv` + `10`), and the
    /// longest name fits [`MAX_LINK_LEN`].
    pub fn new(prefix: &str, size: u32) -> Result<Self, DomainError> {
        const FIELD: &str = "link pool";
        check_size(FIELD, size)?;
        let ok_chars = prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !ok_chars || !prefix.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(invalid(
                FIELD,
                format!(
                    "prefix {prefix:?} must start with a letter and hold only letters, digits, '_', '-' or '.'"
                ),
            ));
        }
        if prefix.ends_with(|c: char| c.is_ascii_digit()) {
            return Err(invalid(
                FIELD,
                format!("prefix {prefix:?} must not end with a digit"),
            ));
        }
        let longest = prefix.len() + (size - 1).to_string().len();
        if longest > MAX_LINK_LEN {
            return Err(invalid(
                FIELD,
                format!(
                    "{prefix}{} is longer than {MAX_LINK_LEN} bytes (an interface name)",
                    size - 1
                ),
            ));
        }
        Ok(Self {
            prefix: prefix.to_string(),
            size,
        })
    }

    /// The name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many links.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Link `i`, if `i < size`.
    pub fn value(&self, i: u32) -> Option<String> {
        (i < self.size).then(|| format!("{}{i}", self.prefix))
    }
}

/// 3-byte MAC prefixes `base`, `base + 1`, ..., `base + size - 1` (as
/// 24-bit numbers), all with `base`'s first byte: unicast, and not
/// crossing into another first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MacPrefixPool {
    base: u32,
    size: u32,
}

/// Parses a 3-byte MAC prefix (`ae:10:00`) into a 24-bit number.
pub fn parse_mac_prefix(s: &str) -> Option<u32> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 3 {
        return None;
    }
    let mut v = 0u32;
    for p in parts {
        if p.len() != 2 {
            return None;
        }
        v = (v << 8) | u32::from(u8::from_str_radix(p, 16).ok()?);
    }
    Some(v)
}

fn mac_prefix_string(v: u32) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}",
        (v >> 16) & 0xff,
        (v >> 8) & 0xff,
        v & 0xff
    )
}

impl MacPrefixPool {
    /// A pool of `size` prefixes from `base`; refused when `base` is not
    /// a 3-byte unicast prefix or the range leaves its first byte.
    pub fn new(base: &str, size: u32) -> Result<Self, DomainError> {
        const FIELD: &str = "MAC prefix pool";
        check_size(FIELD, size)?;
        let b = parse_mac_prefix(base).ok_or_else(|| {
            invalid(
                FIELD,
                format!("base {base:?} must be three hex bytes, e.g. \"ae:10:00\""),
            )
        })?;
        if (b >> 16) & 1 == 1 {
            return Err(invalid(
                FIELD,
                format!("base {base:?} must be unicast (first byte even)"),
            ));
        }
        let last = b + (size - 1);
        if last >> 16 != b >> 16 {
            return Err(invalid(
                FIELD,
                format!(
                    "{base} + {size} prefixes would run past {} (leaving the first byte)",
                    mac_prefix_string((b | 0xffff) & 0xff_ffff)
                ),
            ));
        }
        Ok(Self { base: b, size })
    }

    /// How many prefixes.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// The first prefix.
    pub fn base(&self) -> String {
        mac_prefix_string(self.base)
    }

    /// Prefix `i`, if `i < size`.
    pub fn value(&self, i: u32) -> Option<String> {
        (i < self.size).then(|| mac_prefix_string(self.base + i))
    }

    /// True if `prefix` (3 bytes) is one of the pool's.
    pub fn contains(&self, prefix: &str) -> bool {
        parse_mac_prefix(prefix).is_some_and(|p| p >= self.base && p - self.base < self.size)
    }
}

/// A pool a network flavor leases from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ResourcePool {
    /// Links.
    Link(LinkPool),
    /// MAC prefixes.
    MacPrefix(MacPrefixPool),
}

impl ResourcePool {
    /// What it hands out.
    pub fn kind(&self) -> PoolKind {
        match self {
            ResourcePool::Link(_) => PoolKind::Link,
            ResourcePool::MacPrefix(_) => PoolKind::MacPrefix,
        }
    }

    /// How many values.
    pub fn size(&self) -> u32 {
        match self {
            ResourcePool::Link(p) => p.size(),
            ResourcePool::MacPrefix(p) => p.size(),
        }
    }

    /// Value `i`, if `i < size`.
    pub fn value(&self, i: u32) -> Option<String> {
        match self {
            ResourcePool::Link(p) => p.value(i),
            ResourcePool::MacPrefix(p) => p.value(i),
        }
    }

    /// The lowest index whose value is not `taken`, and that value;
    /// `None` when every value is taken. `O(size)` in the worst case, on
    /// a set of at most as many values as networks hold leases.
    pub fn first_free(&self, taken: &HashSet<String>) -> Option<(u32, String)> {
        (0..self.size())
            .filter_map(|i| self.value(i).map(|v| (i, v)))
            .find(|(_, v)| !taken.contains(v))
    }

    /// How the pool reads in messages (`prv0..prv99`).
    pub fn describe(&self) -> String {
        let last = self.size().saturating_sub(1);
        format!(
            "{}..{}",
            self.value(0).unwrap_or_default(),
            self.value(last).unwrap_or_default()
        )
    }
}

/// A value a network holds from a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolLease {
    /// What it is.
    pub kind: PoolKind,
    /// The link or MAC prefix.
    pub value: String,
    /// The network holding it.
    pub network_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn link_pools_name_their_links() {
        let p = LinkPool::new("prv", 100).unwrap();
        assert_eq!(p.value(0).as_deref(), Some("prv0"));
        assert_eq!(p.value(99).as_deref(), Some("prv99"));
        assert_eq!(p.value(100), None);
        for (prefix, size, why) in [
            ("prv", 0, "must be 1"),
            ("prv1", 10, "digit"),
            ("0prv", 10, "start with a letter"),
            ("br 0", 10, "letters"),
            ("averylongbridge", 10, "longer than 15"),
        ] {
            let e = LinkPool::new(prefix, size).unwrap_err().to_string();
            assert!(e.contains(why), "{prefix}/{size}: {e}");
        }
    }

    #[test]
    fn mac_prefix_pools_stay_unicast_and_in_their_first_byte() {
        let p = MacPrefixPool::new("ae:10:00", 4096).unwrap();
        assert_eq!(p.value(0).as_deref(), Some("ae:10:00"));
        assert_eq!(p.value(257).as_deref(), Some("ae:11:01"));
        assert_eq!(p.value(4096), None);
        assert!(p.contains("AE:1f:ff") && !p.contains("ae:20:00") && !p.contains("ae:0f:ff"));
        for (base, size, why) in [
            ("af:00:00", 10, "unicast"),
            ("ae:ff:00", 257, "run past ae:ff:ff"),
            ("ae:10", 10, "three hex bytes"),
            ("ae:10:zz", 10, "three hex bytes"),
            ("ae:10:00", 70_000, "must be 1"),
        ] {
            let e = MacPrefixPool::new(base, size).unwrap_err().to_string();
            assert!(e.contains(why), "{base}/{size}: {e}");
        }
    }

    #[test]
    fn first_free_takes_the_lowest_value_nobody_holds() {
        let p = ResourcePool::Link(LinkPool::new("prv", 3).unwrap());
        let mut taken: HashSet<String> = HashSet::new();
        assert_eq!(p.first_free(&taken), Some((0, "prv0".into())));
        taken.insert("prv0".into());
        taken.insert("prv2".into());
        assert_eq!(p.first_free(&taken), Some((1, "prv1".into())));
        taken.insert("prv1".into());
        assert_eq!(p.first_free(&taken), None);
        assert_eq!(p.describe(), "prv0..prv2");
    }

    proptest! {
        /// Every index maps to a distinct value the pool contains, and
        /// back.
        #[test]
        fn mac_prefixes_are_distinct_and_contained(base in 0u32..=0xff_ffff, size in 1u32..=512) {
            let base = base & !0x01_0000;
            let text = mac_prefix_string(base);
            match MacPrefixPool::new(&text, size) {
                Ok(p) => {
                    let values: HashSet<String> = (0..size).filter_map(|i| p.value(i)).collect();
                    prop_assert_eq!(values.len(), size as usize);
                    prop_assert!(values.iter().all(|v| p.contains(v)));
                    prop_assert!(values.iter().all(|v| parse_mac_prefix(v).is_some_and(|n| (n >> 16) & 1 == 0)));
                }
                Err(_) => prop_assert!((base & 0xffff) + size > 0x1_0000),
            }
        }
    }
}
