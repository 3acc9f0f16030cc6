//! Typed op inputs: what the engine reads from an opcode's parameters.
//!
//! A job keeps its op's input as the JSON map Ganeti would write (defaults
//! filled in, every key the client sent, echoed in job files and `/2/jobs`).
//! The engine never walks that map: [`OpParams::parse`] reads it once into
//! these structs. Like Ganeti's Python code the simulator mimics, a
//! parameter of the wrong JSON type reads as absent (the `lenient` fields),
//! so odd input takes the same defaults it always did.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::{Map, Value};

/// A field that reads as `None` when absent, null, or of another type.
fn lenient<'de, D: Deserializer<'de>, T: DeserializeOwned>(d: D) -> Result<Option<T>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(T::deserialize(v).ok())
}

/// A JSON object field; anything else reads as empty.
fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    match Value::deserialize(d)? {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

/// A list field whose items are read one by one (an item of the wrong
/// shape reads as the item's default); anything but a list reads as empty.
fn items<'de, D: Deserializer<'de>, T: From<Value>>(d: D) -> Result<Vec<T>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(a) => Ok(a.into_iter().map(T::from).collect()),
        _ => Ok(Vec::new()),
    }
}

/// A list of strings; other items are skipped.
fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Array(a) => Ok(a
            .into_iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s),
                _ => None,
            })
            .collect()),
        _ => Ok(Vec::new()),
    }
}

/// One NIC as a create's `nics` or a modify's `add` gives it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct NicInput {
    /// An address, `pool` (the network's first free one) or `none`.
    #[serde(deserialize_with = "lenient")]
    pub ip: Option<String>,
    /// A MAC, or `auto`/`generate` for a new one.
    #[serde(deserialize_with = "lenient")]
    pub mac: Option<String>,
    /// `bridged`, `routed` or `openvswitch`.
    #[serde(deserialize_with = "lenient")]
    pub mode: Option<String>,
    /// The bridge or routing table.
    #[serde(deserialize_with = "lenient")]
    pub link: Option<String>,
    /// A Ganeti network, by name or UUID.
    #[serde(deserialize_with = "lenient")]
    pub network: Option<String>,
    /// The NIC's name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
    /// The VLAN (a modify records it, `""` when not given).
    #[serde(deserialize_with = "lenient")]
    pub vlan: Option<String>,
    /// `mode` or `link` present and not null, whatever its type: Ganeti
    /// refuses them next to a network.
    #[serde(skip)]
    pub sets_mode_or_link: bool,
}

impl From<Value> for NicInput {
    fn from(v: Value) -> Self {
        let given = |k: &str| v.get(k).is_some_and(|x| !x.is_null());
        let sets_mode_or_link = given("mode") || given("link");
        NicInput {
            sets_mode_or_link,
            ..NicInput::deserialize(v).unwrap_or_default()
        }
    }
}

/// One disk of a create.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct DiskInput {
    /// Size in MiB (0 when missing).
    #[serde(deserialize_with = "lenient")]
    pub size: Option<u64>,
    /// The disk's name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
}

impl From<Value> for DiskInput {
    fn from(v: Value) -> Self {
        DiskInput::deserialize(v).unwrap_or_default()
    }
}

/// The backend parameters the simulator models (`beparams`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct BeParams {
    /// Maximum memory, MiB.
    #[serde(deserialize_with = "lenient")]
    pub maxmem: Option<u64>,
    /// Ganeti's older name for `maxmem`.
    #[serde(deserialize_with = "lenient")]
    pub memory: Option<u64>,
    /// Minimum memory, MiB.
    #[serde(deserialize_with = "lenient")]
    pub minmem: Option<u64>,
    /// Virtual CPUs.
    #[serde(deserialize_with = "lenient")]
    pub vcpus: Option<u64>,
}

/// `OP_INSTANCE_CREATE`'s parameters, as the engine reads them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct CreateParams {
    /// The OS, `name+variant`.
    #[serde(deserialize_with = "lenient")]
    pub os_type: Option<String>,
    /// The primary node; the allocator picks one when absent.
    #[serde(deserialize_with = "lenient")]
    pub pnode: Option<String>,
    /// The allocator named in log lines (`hail` when absent).
    #[serde(deserialize_with = "lenient")]
    pub iallocator: Option<String>,
    /// The NICs.
    #[serde(deserialize_with = "items")]
    pub nics: Vec<NicInput>,
    /// The disks.
    #[serde(deserialize_with = "items")]
    pub disks: Vec<DiskInput>,
    /// Memory and CPUs; a non-object reads as empty.
    #[serde(deserialize_with = "lenient_be")]
    pub beparams: BeParams,
    /// Hypervisor parameters, kept as given.
    #[serde(deserialize_with = "object")]
    pub hvparams: Map<String, Value>,
    /// OS parameters, kept as given.
    #[serde(deserialize_with = "object")]
    pub osparams: Map<String, Value>,
    /// Private OS parameters (only their names are checked).
    #[serde(deserialize_with = "object")]
    pub osparams_private: Map<String, Value>,
    /// Secret OS parameters (values already blanked in the job's input).
    #[serde(deserialize_with = "object")]
    pub osparams_secret: Map<String, Value>,
    /// The hypervisor; the cluster default when absent.
    #[serde(deserialize_with = "lenient")]
    pub hypervisor: Option<String>,
    /// The disk template; `diskless` when absent.
    #[serde(deserialize_with = "lenient")]
    pub disk_template: Option<String>,
    /// Start the instance after creating it (default true).
    #[serde(deserialize_with = "lenient")]
    pub start: Option<bool>,
    /// Wait for the disks to sync (default true).
    #[serde(deserialize_with = "lenient")]
    pub wait_for_sync: Option<bool>,
    /// Refuse addresses already in use (default true).
    #[serde(deserialize_with = "lenient")]
    pub conflicts_check: Option<bool>,
    /// Skip the instance policy (default false).
    #[serde(deserialize_with = "lenient")]
    pub ignore_ipolicy: Option<bool>,
    /// Accept an OS variant the OS does not list (default false).
    #[serde(deserialize_with = "lenient")]
    pub force_variant: Option<bool>,
    /// Tags; non-string items are skipped.
    #[serde(deserialize_with = "strings")]
    pub tags: Vec<String>,
}

fn lenient_be<'de, D: Deserializer<'de>>(d: D) -> Result<BeParams, D::Error> {
    Ok(lenient::<D, BeParams>(d)?.unwrap_or_default())
}

impl CreateParams {
    /// Maximum memory: `maxmem`, else `memory`, else 128 MiB.
    pub(crate) fn maxmem(&self) -> u64 {
        self.beparams.maxmem.or(self.beparams.memory).unwrap_or(128)
    }

    /// Virtual CPUs (default 1).
    pub(crate) fn vcpus(&self) -> u64 {
        self.beparams.vcpus.unwrap_or(1)
    }

    /// Minimum memory (default: the maximum).
    pub(crate) fn minmem(&self) -> u64 {
        self.beparams.minmem.unwrap_or_else(|| self.maxmem())
    }

    /// The disk sizes in MiB, in order.
    pub(crate) fn disk_sizes(&self) -> impl Iterator<Item = u64> + '_ {
        self.disks.iter().map(|d| d.size.unwrap_or(0))
    }
}

/// What one item of a modify's `nics` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NicAction {
    /// `["add", {...}]` or `["add", index, {...}]`.
    Add,
    /// `["remove", identifier, {}]` (index, `-1` for the last, name or
    /// UUID) or the older `["remove", {}]` (the last).
    Remove,
    /// Anything else (`[index, {...}]` changes): ignored.
    Other,
}

/// One item of a modify's `nics`: the action and its parameters (the
/// item's last element).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NicMod {
    /// What to do.
    pub action: NicAction,
    /// Which NIC (index, name or UUID; `-1` when the item gives none).
    pub identifier: Value,
    /// The parameters of an added NIC.
    pub params: NicInput,
}

impl From<Value> for NicMod {
    fn from(v: Value) -> Self {
        let mut a = match v {
            Value::Array(a) => a,
            _ => Vec::new(),
        };
        let action = match a.first().and_then(Value::as_str) {
            Some("add") => NicAction::Add,
            Some("remove") => NicAction::Remove,
            _ => NicAction::Other,
        };
        let identifier = if a.len() == 3 {
            a[1].clone()
        } else {
            Value::from(-1)
        };
        NicMod {
            action,
            identifier,
            params: NicInput::from(a.pop().unwrap_or(Value::Null)),
        }
    }
}

/// `OP_INSTANCE_SET_PARAMS`'s parameters, as the engine reads them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct ModifyParams {
    /// NIC additions and removals.
    #[serde(deserialize_with = "items")]
    pub nics: Vec<NicMod>,
    /// Memory and CPUs to change; a non-object reads as empty.
    #[serde(deserialize_with = "lenient_be")]
    pub beparams: BeParams,
    /// Hypervisor parameters to set.
    #[serde(deserialize_with = "object")]
    pub hvparams: Map<String, Value>,
    /// OS parameters to set.
    #[serde(deserialize_with = "object")]
    pub osparams: Map<String, Value>,
    /// Refuse addresses already in use (default true).
    #[serde(deserialize_with = "lenient")]
    pub conflicts_check: Option<bool>,
    /// Hot-plug NIC changes or fail.
    #[serde(deserialize_with = "lenient")]
    pub hotplug: Option<bool>,
    /// Hot-plug NIC changes where the hypervisor can.
    #[serde(deserialize_with = "lenient")]
    pub hotplug_if_possible: Option<bool>,
}

/// `OP_NETWORK_ADD`'s parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct NetworkAddParams {
    /// IPv4 subnet.
    #[serde(deserialize_with = "lenient")]
    pub network: Option<String>,
    /// IPv4 gateway.
    #[serde(deserialize_with = "lenient")]
    pub gateway: Option<String>,
    /// IPv6 subnet.
    #[serde(deserialize_with = "lenient")]
    pub network6: Option<String>,
    /// IPv6 gateway.
    #[serde(deserialize_with = "lenient")]
    pub gateway6: Option<String>,
    /// MAC prefix.
    #[serde(deserialize_with = "lenient")]
    pub mac_prefix: Option<String>,
    /// Addresses to reserve.
    #[serde(deserialize_with = "strings")]
    pub add_reserved_ips: Vec<String>,
    /// Reserve node addresses in the subnet (default true).
    #[serde(deserialize_with = "lenient")]
    pub conflicts_check: Option<bool>,
    /// Tags.
    #[serde(deserialize_with = "strings")]
    pub tags: Vec<String>,
}

/// `OP_NETWORK_CONNECT`'s parameters.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub(crate) struct NetworkConnectParams {
    /// The node group.
    #[serde(deserialize_with = "lenient")]
    pub group_name: Option<String>,
    /// NIC mode of the connection.
    #[serde(deserialize_with = "lenient")]
    pub network_mode: Option<String>,
    /// NIC link of the connection.
    #[serde(deserialize_with = "lenient")]
    pub network_link: Option<String>,
    /// VLAN (default `""`).
    #[serde(deserialize_with = "lenient")]
    pub network_vlan: Option<String>,
    /// Refuse when the group's instances hold addresses of the subnet.
    #[serde(deserialize_with = "lenient")]
    pub conflicts_check: Option<bool>,
}

/// The opcode families the simulator runs, each with its typed parameters.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OpKind {
    /// `OP_INSTANCE_CREATE`.
    Create(Box<CreateParams>),
    /// `OP_INSTANCE_SET_PARAMS`.
    Modify(Box<ModifyParams>),
    /// `OP_INSTANCE_STARTUP`.
    Startup,
    /// `OP_INSTANCE_REBOOT`.
    Reboot,
    /// `OP_INSTANCE_SHUTDOWN`.
    Shutdown,
    /// `OP_INSTANCE_REMOVE`.
    Remove,
    /// `OP_NETWORK_ADD`.
    NetworkAdd(Box<NetworkAddParams>),
    /// `OP_NETWORK_CONNECT`.
    NetworkConnect(Box<NetworkConnectParams>),
    /// `OP_NETWORK_DISCONNECT` (the node group).
    NetworkDisconnect(String),
    /// `OP_NETWORK_REMOVE`.
    NetworkRemove,
    /// Any other opcode: accepted, then failed as not simulated.
    Other,
}

/// An op's parameters: the ones every opcode has, and its family's.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct OpParams {
    /// `instance_name` (empty when absent).
    pub instance: String,
    /// `network_name` of the network opcodes (empty when absent).
    pub network: String,
    /// `dry_run`: check, change nothing.
    pub dry_run: bool,
    /// The family and its parameters.
    pub kind: OpKind,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Common {
    #[serde(deserialize_with = "lenient")]
    instance_name: Option<String>,
    #[serde(deserialize_with = "lenient")]
    network_name: Option<String>,
    #[serde(deserialize_with = "lenient")]
    group_name: Option<String>,
    #[serde(deserialize_with = "lenient")]
    dry_run: Option<bool>,
}

impl OpParams {
    /// Reads an op's input (defaults already filled in).
    pub(crate) fn parse(opcode: &str, input: &Map<String, Value>) -> Self {
        fn read<T: DeserializeOwned + Default>(input: &Map<String, Value>) -> T {
            T::deserialize(Value::Object(input.clone())).unwrap_or_default()
        }
        let common: Common = read(input);
        let kind = match opcode {
            "OP_INSTANCE_CREATE" => OpKind::Create(Box::new(read(input))),
            "OP_INSTANCE_SET_PARAMS" => OpKind::Modify(Box::new(read(input))),
            "OP_INSTANCE_STARTUP" => OpKind::Startup,
            "OP_INSTANCE_REBOOT" => OpKind::Reboot,
            "OP_INSTANCE_SHUTDOWN" => OpKind::Shutdown,
            "OP_INSTANCE_REMOVE" => OpKind::Remove,
            "OP_NETWORK_ADD" => OpKind::NetworkAdd(Box::new(read(input))),
            "OP_NETWORK_CONNECT" => OpKind::NetworkConnect(Box::new(read(input))),
            "OP_NETWORK_DISCONNECT" => {
                OpKind::NetworkDisconnect(common.group_name.clone().unwrap_or_default())
            }
            "OP_NETWORK_REMOVE" => OpKind::NetworkRemove,
            _ => OpKind::Other,
        };
        OpParams {
            instance: common.instance_name.unwrap_or_default(),
            network: common.network_name.unwrap_or_default(),
            dry_run: common.dry_run.unwrap_or(false),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_create_reads_typed_with_lenient_fields() {
        let p = OpParams::parse(
            "OP_INSTANCE_CREATE",
            &map(json!({
                "instance_name": "vm1", "os_type": "noop+default", "start": "yes",
                "beparams": {"memory": 512, "vcpus": "2"},
                "nics": [{"network": "net1", "ip": "pool", "mode": 5}, "junk"],
                "disks": [{"size": 1024, "name": "root"}, {"size": "1G"}],
                "tags": ["a", 1, "b"], "hvparams": [1]
            })),
        );
        assert_eq!(p.instance, "vm1");
        assert!(!p.dry_run);
        let OpKind::Create(c) = p.kind else {
            panic!("not a create: {:?}", p.kind)
        };
        assert_eq!(c.start, None, "a string is not a bool");
        assert_eq!((c.maxmem(), c.minmem(), c.vcpus()), (512, 512, 1));
        assert_eq!(c.nics.len(), 2);
        assert_eq!(c.nics[0].network.as_deref(), Some("net1"));
        assert_eq!(c.nics[0].mode, None);
        assert!(
            c.nics[0].sets_mode_or_link,
            "a number is still a mode given"
        );
        assert_eq!(c.nics[1], NicInput::default());
        assert_eq!(c.disk_sizes().collect::<Vec<_>>(), vec![1024, 0]);
        assert_eq!(c.tags, vec!["a", "b"]);
        assert!(c.hvparams.is_empty());
    }

    #[test]
    fn a_modify_reads_nic_actions_and_params() {
        let p = OpParams::parse(
            "OP_INSTANCE_SET_PARAMS",
            &map(json!({
                "instance_name": "vm1", "dry_run": true,
                "nics": [["add", {"network": "n"}], ["add", -1, {"ip": "10.0.0.9"}],
                         ["remove", -1, {}], [0, {"ip": "x"}], "junk"],
                "beparams": {"maxmem": 1024}
            })),
        );
        assert!(p.dry_run);
        let OpKind::Modify(m) = p.kind else {
            panic!("not a modify: {:?}", p.kind)
        };
        let actions: Vec<NicAction> = m.nics.iter().map(|n| n.action).collect();
        use NicAction::*;
        assert_eq!(actions, vec![Add, Add, Remove, Other, Other]);
        assert_eq!(m.nics[0].identifier, json!(-1));
        assert_eq!(m.nics[2].identifier, json!(-1));
        assert_eq!(m.nics[1].params.ip.as_deref(), Some("10.0.0.9"));
        assert_eq!(m.beparams.maxmem, Some(1024));
    }

    #[test]
    fn other_opcodes_keep_only_the_common_fields() {
        let p = OpParams::parse("OP_NODE_MIGRATE", &map(json!({"instance_name": 3})));
        assert_eq!((p.instance.as_str(), p.kind), ("", OpKind::Other));
    }
}
