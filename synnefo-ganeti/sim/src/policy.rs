//! Cluster policy as a create meets it: the primary node's state, the
//! instance policy (disk sizes), the OS and its parameters, free memory,
//! and the allocator's choice of node.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::config::SimOsConfig;
use crate::model::{NodeState, SimState};
use crate::ops::prereq;

impl SimState {
    /// A primary node must be online and not drained.
    pub(crate) fn check_primary_node(&self, node: &NodeState) -> Result<(), Value> {
        let pnode = &node.cfg.name;
        if node.cfg.offline {
            return Err(prereq(
                format!("Cannot use offline primary node '{pnode}'"),
                "wrong_state",
            ));
        }
        if node.cfg.drained {
            return Err(prereq(
                format!("Cannot use drained primary node '{pnode}'"),
                "wrong_state",
            ));
        }
        Ok(())
    }

    /// The instance policy of the node's group: every disk size within
    /// `[disk_size_min_mib, disk_size_max_mib]`.
    pub(crate) fn check_ipolicy(
        &self,
        node: &NodeState,
        disk_sizes: impl Iterator<Item = u64>,
    ) -> Result<(), Value> {
        let (min, max) = (
            self.cfg.ipolicy.disk_size_min_mib,
            self.cfg.ipolicy.disk_size_max_mib,
        );
        let violations: Vec<String> = disk_sizes
            .enumerate()
            .filter(|(_, size)| *size < min || *size > max)
            .map(|(i, size)| format!("disk-size/{i} value {size} is not in range [{min}, {max}]"))
            .collect();
        if violations.is_empty() {
            return Ok(());
        }
        Err(prereq(
            format!(
                "Instance allocation to group {} (default) violates policy: {}",
                node.group_uuid,
                violations.join(", ")
            ),
            "wrong_input",
        ))
    }

    /// Ganeti's `CheckNodeHasOS`: the OS exists on the node, with the variant.
    pub(crate) fn check_os(
        &self,
        os_type: &str,
        node: &str,
        force_variant: bool,
    ) -> Result<&SimOsConfig, Value> {
        let (base, variant) = match os_type.split_once('+') {
            Some((b, v)) => (b, Some(v)),
            None => (os_type, None),
        };
        let os = self.cfg.os.iter().find(|o| o.name == base).ok_or_else(|| {
            prereq(
                format!(
                    "OS '{os_type}' not in supported OS list for node {node}: Directory for OS {base} not found in search path"
                ),
                "wrong_input",
            )
        })?;
        if force_variant {
            return Ok(os);
        }
        match variant {
            Some(v) if os.variants.is_empty() => Err(prereq(
                format!("OS '{}' doesn't support variants ('{v}' passed)", os.name),
                "wrong_input",
            )),
            None if !os.variants.is_empty() => Err(prereq(
                "OS name must include a variant".into(),
                "wrong_input",
            )),
            Some(v) if !os.variants.iter().any(|x| x == v) => {
                Err(prereq("Unsupported OS variant".into(), "wrong_input"))
            }
            _ => Ok(os),
        }
    }

    /// Ganeti's `CheckOSParams`: every OS parameter given (public, private
    /// or secret) is one the OS declares. Ganeti raises this one as an
    /// `OpExecError` from the node.
    pub(crate) fn check_os_params(
        os: &SimOsConfig,
        node: &str,
        given: BTreeSet<&str>,
    ) -> Result<(), Value> {
        let unsupported: Vec<&str> = given
            .into_iter()
            .filter(|k| !os.parameters.iter().any(|p| p == k))
            .collect();
        if unsupported.is_empty() {
            return Ok(());
        }
        Err(json!([
            "OpExecError",
            [format!(
                "OS Parameters validation failed on node {node}: The following parameters are not supported by the OS {}: {}",
                os.name,
                unsupported.join(", ")
            )]
        ]))
    }

    /// Enough free memory on the node to start the instance.
    pub(crate) fn check_free_memory(
        &self,
        node: &NodeState,
        instance: &str,
        mem: u64,
    ) -> Result<(), Value> {
        let pnode = node.cfg.name.as_str();
        let used = self.used_memory();
        let free = self.node_free(node, used.get(pnode).map(|u| u.0).unwrap_or(0));
        if free < mem {
            return Err(prereq(
                format!(
                    "Not enough memory on node {pnode} for starting instance {instance}: needed {mem} MiB, available {free} MiB"
                ),
                "insufficient_resources",
            ));
        }
        Ok(())
    }

    /// The allocator: the usable node (online, not drained) with the most
    /// free memory, at least `need` MiB; ties go to the first name.
    pub(crate) fn pick_node(&self, need: u64) -> Option<String> {
        let used = self.used_memory();
        self.nodes
            .iter()
            .filter(|n| !n.cfg.offline && !n.cfg.drained)
            .map(|n| {
                (
                    self.node_free(n, used.get(n.cfg.name.as_str()).map(|u| u.0).unwrap_or(0)),
                    &n.cfg.name,
                )
            })
            .filter(|(free, _)| *free >= need)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
            .map(|(_, name)| name.clone())
    }
}
