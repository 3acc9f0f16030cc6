//! Identifier newtypes and the Ganeti instance-name convention.
//!
//! Synnefo names a VM's Ganeti instance `<BACKEND_PREFIX_ID><vm id>`
//! (`snf-42` is VM 42); everything that crosses the Ganeti boundary goes
//! through [`InstanceName`] so a name that does not parse is rejected once,
//! at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::DomainError;

macro_rules! int_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                s.parse::<i64>()
                    .ok()
                    .filter(|v| *v > 0)
                    .map($name)
                    .ok_or_else(|| DomainError::InvalidId(s.to_string()))
            }
        }
    };
}

int_id!(
    /// A virtual machine's id; rendered as a JSON string by the OpenStack API.
    VmId
);
int_id!(
    /// A Ganeti backend (cluster) id in our DB.
    BackendId
);
int_id!(
    /// A flavor id.
    FlavorId
);

/// A Ganeti job id. Ganeti's ids fit a 32-bit integer, but we keep 64 bits
/// so a re-initialised cluster's ids never wrap in our arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub u64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Ganeti instance name that belongs to us: `<prefix><vm id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceName {
    prefix: String,
    vm: VmId,
}

impl InstanceName {
    /// The instance name of `vm` under `prefix` (e.g. `snf-`).
    pub fn new(prefix: &str, vm: VmId) -> Self {
        Self {
            prefix: prefix.to_string(),
            vm,
        }
    }

    /// Parses `name` as one of ours; `None` for names that are not
    /// `<prefix><positive integer>` (other tenants of the cluster).
    pub fn parse(prefix: &str, name: &str) -> Option<Self> {
        let rest = name.strip_prefix(prefix)?;
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) || rest.starts_with('0') {
            return None;
        }
        let id = rest.parse::<i64>().ok()?;
        Some(Self::new(prefix, VmId(id)))
    }

    /// The VM this instance belongs to.
    pub fn vm_id(&self) -> VmId {
        self.vm
    }

    /// The configured prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.prefix, self.vm.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_round_trip() {
        let n = InstanceName::new("snf-", VmId(42));
        assert_eq!(n.to_string(), "snf-42");
        assert_eq!(InstanceName::parse("snf-", "snf-42"), Some(n));
    }

    #[test]
    fn foreign_names_are_not_ours() {
        for bad in [
            "snf-",
            "snf-x",
            "snf-4a",
            "vm-42",
            "snf--1",
            "snf-042",
            "snf-99999999999999999999",
        ] {
            assert_eq!(InstanceName::parse("snf-", bad), None, "{bad}");
        }
    }

    #[test]
    fn ids_parse_only_positive_integers() {
        assert_eq!("7".parse::<VmId>().unwrap(), VmId(7));
        assert!("0".parse::<VmId>().is_err());
        assert!("-3".parse::<VmId>().is_err());
        assert!("abc".parse::<VmId>().is_err());
    }
}
