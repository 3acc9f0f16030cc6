//! Networks (`GET /2/networks`, `GET /2/networks/NAME`) and node groups
//! (`GET /2/groups?bulk=1`), as Ganeti 3.0 lists them (recorded in
//! `synnefo-ganeti/tests/fixtures/ganeti-3.0-networks/`).

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use synnefo_core::ports::NetworkInfo;

use super::*;

/// One node group connection of a network: Ganeti lists
/// `[group, mode, link, vlan]` (older releases `[group, mode, link]`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct NetworkGroup {
    /// The node group's name.
    pub group: String,
    /// `bridged`, `routed` or `openvswitch`.
    pub mode: String,
    /// Bridge, routing table or switch.
    pub link: String,
    /// VLAN (`""` when none).
    pub vlan: String,
}

impl<'de> Deserialize<'de> for NetworkGroup {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let items: Vec<Option<String>> = Deserialize::deserialize(d)?;
        if !(3..=4).contains(&items.len()) {
            return Err(de::Error::custom(format!(
                "a group connection has 3 or 4 items, not {}",
                items.len()
            )));
        }
        let mut it = items.into_iter().map(Option::unwrap_or_default);
        Ok(NetworkGroup {
            group: it.next().unwrap_or_default(),
            mode: it.next().unwrap_or_default(),
            link: it.next().unwrap_or_default(),
            vlan: it.next().unwrap_or_default(),
        })
    }
}

/// One network of `GET /2/networks?bulk=1` or `GET /2/networks/NAME`
/// (Ganeti's `NET_FIELDS`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Network {
    /// The network's name.
    pub name: String,
    /// IPv4 subnet (`10.15.0.0/24`).
    pub network: Option<String>,
    /// IPv4 gateway.
    pub gateway: Option<String>,
    /// IPv6 subnet.
    pub network6: Option<String>,
    /// IPv6 gateway.
    pub gateway6: Option<String>,
    /// MAC prefix of the NICs Ganeti generates on it (`aa:15:00`).
    pub mac_prefix: Option<String>,
    /// Addresses neither reserved nor in use.
    pub free_count: Option<u64>,
    /// Addresses reserved or in use.
    pub reserved_count: Option<u64>,
    /// The pool as a string, one character per address (`X` taken, `.` free).
    pub map: Option<String>,
    /// The node groups it is connected to.
    #[serde(deserialize_with = "null_default")]
    pub group_list: Vec<NetworkGroup>,
    /// Instances with a NIC on it.
    #[serde(deserialize_with = "null_default")]
    pub inst_list: Vec<String>,
    /// External reservations, comma-separated (`"10.15.0.0, 10.15.0.1"`).
    pub external_reservations: Option<String>,
    /// When it was created (seconds since the epoch).
    pub ctime: Option<f64>,
    /// When it last changed (seconds since the epoch).
    pub mtime: Option<f64>,
    /// Its UUID.
    pub uuid: Option<String>,
    /// Configuration serial.
    pub serial_no: Option<u64>,
    /// Ganeti tags on the network.
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
}

impl Network {
    /// The core's view of this network.
    pub fn to_info(&self) -> NetworkInfo {
        NetworkInfo {
            name: self.name.clone(),
            network: self.network.clone(),
            gateway: self.gateway.clone(),
            network6: self.network6.clone(),
            mac_prefix: self.mac_prefix.clone(),
            free_count: self.free_count,
            groups: self
                .group_list
                .iter()
                .map(|g| (g.group.clone(), g.mode.clone(), g.link.clone()))
                .collect(),
            instances: self.inst_list.clone(),
            tags: self.tags.clone(),
        }
    }
}

/// One node group of `GET /2/groups?bulk=1` (Ganeti's `G_FIELDS`; the
/// policies and parameters are kept as JSON).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeGroup {
    /// The group's name (`default` on a new cluster).
    pub name: String,
    /// `preferred`, `last_resort` or `unallocable`.
    pub alloc_policy: Option<String>,
    /// How many nodes it has.
    pub node_cnt: Option<u64>,
    /// Its nodes' names.
    #[serde(deserialize_with = "null_default")]
    pub node_list: Vec<String>,
    /// The group's UUID.
    pub uuid: Option<String>,
    /// Configuration serial.
    pub serial_no: Option<u64>,
    /// Ganeti tags on the group.
    #[serde(deserialize_with = "null_default")]
    pub tags: Vec<String>,
    /// Everything else (`ipolicy`, `diskparams`, `ndparams`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}
