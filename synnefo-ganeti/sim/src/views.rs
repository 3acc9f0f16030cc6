//! How the cluster looks on the wire: the RAPI JSON of instances, nodes,
//! the cluster and jobs, with Ganeti 3.0's field names and value kinds
//! (checked against recorded answers by `tests/sim_golden.rs`). Instances
//! are serialised straight from the model, so a 100k-instance bulk listing
//! builds no intermediate JSON tree.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use crate::jobs::Job;
use crate::model::{SimInstance, SimNic, SimState};

/// Serialises an iterator as a JSON list without collecting it first.
struct Seq<I>(std::cell::Cell<Option<I>>);

impl<I, T> Serialize for Seq<I>
where
    I: Iterator<Item = T>,
    T: Serialize,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.take() {
            Some(it) => s.collect_seq(it),
            None => s.collect_seq(std::iter::empty::<T>()),
        }
    }
}

fn seq<I: Iterator>(it: I) -> Seq<I> {
    Seq(std::cell::Cell::new(Some(it)))
}

/// Serialises an instance with Ganeti's `I_FIELDS`, optionally restricted.
pub(crate) struct InstanceView<'a> {
    /// The instance.
    pub inst: &'a SimInstance,
    /// Only these fields (`?fields=`), or all.
    pub fields: Option<&'a [String]>,
}

impl Serialize for InstanceView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.inst;
        let want = |f: &str| self.fields.is_none_or(|fs| fs.iter().any(|x| x == f));
        let mut m = s.serialize_map(None)?;
        macro_rules! field {
            ($k:literal, $v:expr) => {
                if want($k) {
                    m.serialize_entry($k, &$v)?;
                }
            };
        }
        field!("name", i.name);
        field!("admin_state", if i.admin_up { "up" } else { "down" });
        field!("os", i.os);
        field!("pnode", i.pnode);
        field!("snodes", seq(std::iter::empty::<&str>()));
        field!("disk_template", i.disk_template);
        field!("nic.ips", seq(i.nics.iter().map(|n| n.ip.as_deref())));
        field!("nic.macs", seq(i.nics.iter().map(|n| n.mac.as_str())));
        field!("nic.modes", seq(i.nics.iter().map(|n| n.mode.as_str())));
        field!("nic.uuids", seq(i.nics.iter().map(|n| n.uuid.as_str())));
        field!("nic.names", seq(i.nics.iter().map(|n| n.name.as_deref())));
        field!("nic.links", seq(i.nics.iter().map(|n| n.link.as_str())));
        field!(
            "nic.networks",
            seq(i.nics.iter().map(|n| n.network_uuid.as_deref()))
        );
        field!(
            "nic.networks.names",
            seq(i.nics.iter().map(|n| n.network.as_deref()))
        );
        field!(
            "nic.bridges",
            seq(i
                .nics
                .iter()
                .map(|n| (n.mode == "bridged").then_some(n.link.as_str())))
        );
        field!("network_port", i.network_port);
        field!("disk.sizes", seq(i.disks.iter().map(|d| d.size)));
        field!(
            "disk.spindles",
            seq(i.disks.iter().map(|_| Option::<u64>::None))
        );
        field!("disk_usage", i.disks.iter().map(|d| d.size).sum::<u64>());
        field!("disk.uuids", seq(i.disks.iter().map(|d| d.uuid.as_str())));
        field!("disk.names", seq(i.disks.iter().map(|d| d.name.as_deref())));
        if want("beparams") {
            m.serialize_entry("beparams", &BeView { i, filled: true })?;
        }
        field!(
            "hvparams",
            crate::ops::modify::filled_hvparams(&i.hypervisor, &i.hvparams)
        );
        field!("oper_state", i.running);
        field!("oper_ram", i.running.then_some(i.maxmem));
        field!("oper_vcpus", i.running.then_some(i.vcpus));
        field!("status", i.status());
        field!("custom_hvparams", i.hvparams);
        if want("custom_beparams") {
            m.serialize_entry("custom_beparams", &BeView { i, filled: false })?;
        }
        field!("custom_nicparams", seq(i.nics.iter().map(NicParams)));
        field!("ctime", i.ctime);
        field!("mtime", i.mtime);
        field!("uuid", i.uuid);
        field!("serial_no", i.serial_no);
        field!("tags", i.tags);
        m.end()
    }
}

/// `beparams` (filled with the cluster defaults) or `custom_beparams`.
struct BeView<'a> {
    i: &'a SimInstance,
    filled: bool,
}

impl Serialize for BeView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("minmem", &self.i.minmem)?;
        m.serialize_entry("maxmem", &self.i.maxmem)?;
        m.serialize_entry("vcpus", &self.i.vcpus)?;
        if self.filled {
            m.serialize_entry("auto_balance", &true)?;
            m.serialize_entry("always_failover", &false)?;
            m.serialize_entry("spindle_use", &1)?;
            m.serialize_entry("memory", &self.i.maxmem)?;
        }
        m.end()
    }
}

/// A NIC's `custom_nicparams` entry.
struct NicParams<'a>(&'a SimNic);

impl Serialize for NicParams<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("mode", &self.0.mode)?;
        m.serialize_entry("link", &self.0.link)?;
        if let Some(vlan) = &self.0.vlan {
            m.serialize_entry("vlan", vlan)?;
        }
        m.end()
    }
}

/// Ganeti's `J_FIELDS`.
pub(crate) const J_FIELDS: &[&str] = &[
    "id",
    "ops",
    "status",
    "summary",
    "opstatus",
    "received_ts",
    "start_ts",
    "end_ts",
    "oplog",
    "opresult",
];

impl Job {
    /// The RAPI `J_FIELDS` value of one field.
    pub(crate) fn field(&self, name: &str) -> Value {
        match name {
            "id" => json!(self.id),
            "ops" => Value::Array(
                self.ops
                    .iter()
                    .map(|o| Value::Object(o.input.clone()))
                    .collect(),
            ),
            "status" => json!(self.status().as_str()),
            "summary" => Value::Array(
                self.ops
                    .iter()
                    .map(|o| {
                        let target = if o.params.instance.is_empty() {
                            &o.params.network
                        } else {
                            &o.params.instance
                        };
                        json!(format!("{}({target})", o.opcode.trim_start_matches("OP_")))
                    })
                    .collect(),
            ),
            "opstatus" => Value::Array(self.ops.iter().map(|o| json!(o.status.as_str())).collect()),
            "received_ts" => json!(self.received),
            "start_ts" => json!(self.start),
            "end_ts" => json!(self.end),
            "oplog" => Value::Array(self.ops.iter().map(|o| json!(o.log)).collect()),
            "opresult" => Value::Array(self.ops.iter().map(|o| o.result.clone()).collect()),
            _ => Value::Null,
        }
    }

    /// The answer of `GET /2/jobs/ID`: every `J_FIELDS` field.
    pub(crate) fn rapi_json(&self) -> Value {
        let mut m = Map::new();
        for f in J_FIELDS {
            m.insert((*f).into(), self.field(f));
        }
        Value::Object(m)
    }
}

impl SimState {
    /// `GET /2/nodes?bulk=1`.
    pub(crate) fn nodes_json(&self) -> Value {
        let used = self.used_memory();
        let master = self.master();
        Value::Array(
            self.nodes
                .iter()
                .map(|n| {
                    let (mem, count) = used.get(n.cfg.name.as_str()).copied().unwrap_or_default();
                    let pinst: Vec<&str> =
                        self.instances.values().filter(|i| i.pnode == n.cfg.name).map(|i| i.name.as_str()).collect();
                    let role = if n.cfg.name == master {
                        "M"
                    } else if n.cfg.offline {
                        "O"
                    } else if n.cfg.drained {
                        "D"
                    } else {
                        "C"
                    };
                    let offline = n.cfg.offline;
                    json!({
                        "name": n.cfg.name, "offline": offline, "master_candidate": !offline && !n.cfg.drained,
                        "drained": n.cfg.drained,
                        "dtotal": (!offline).then_some(n.cfg.disk_mib), "dfree": (!offline).then_some(n.cfg.disk_mib),
                        "sptotal": null, "spfree": null,
                        "mtotal": (!offline).then_some(n.cfg.memory_mib), "mnode": (!offline).then_some(n.cfg.node_memory_mib),
                        "mfree": (!offline).then(|| self.node_free(n, mem)),
                        "pinst_cnt": count, "sinst_cnt": 0,
                        "ctotal": (!offline).then_some(n.cfg.cpus), "cnos": (!offline).then_some(1), "cnodes": (!offline).then_some(1),
                        "csockets": (!offline).then_some(1),
                        "pip": n.ip, "sip": n.ip, "role": role,
                        "pinst_list": pinst, "sinst_list": [],
                        "master_capable": true, "vm_capable": true,
                        "ndparams": {"oob_program": "", "spindle_count": 1, "exclusive_storage": false, "ovs": false,
                                     "ovs_name": "switch1", "ovs_link": "", "ssh_port": 22, "cpu_speed": 1},
                        "group.uuid": n.group_uuid,
                        "ctime": n.ctime, "mtime": n.ctime, "uuid": n.uuid, "serial_no": 1, "tags": [],
                    })
                })
                .collect(),
        )
    }

    /// `GET /2/info`.
    pub(crate) fn info_json(&self) -> Value {
        let mut v: Value =
            serde_json::from_str(include_str!("cluster-info.json")).unwrap_or_else(|_| json!({}));
        if let Value::Object(m) = &mut v {
            m.insert("name".into(), json!(self.cfg.cluster_name));
            m.insert("master".into(), json!(self.master()));
            m.insert("uuid".into(), json!(self.cluster_uuid));
            m.insert("ctime".into(), json!(self.ctime));
            m.insert("mtime".into(), json!(self.ctime));
            m.insert("default_hypervisor".into(), json!(self.cfg.hypervisor));
            let mut hvs = vec![self.cfg.hypervisor.clone()];
            for h in ["kvm", "fake"] {
                if !hvs.iter().any(|x| x == h) {
                    hvs.push(h.into());
                }
            }
            m.insert("enabled_hypervisors".into(), json!(hvs));
        }
        v
    }

    /// `GET /2/instances/NAME/console`.
    pub(crate) fn console_json(&self, name: &str) -> Option<Value> {
        let i = self.instances.get(name)?;
        Some(match (i.hypervisor.as_str(), i.network_port) {
            (_, _) if !i.running => {
                json!({"instance": name, "kind": "msg", "message": format!("Instance {name} is not running")})
            }
            ("kvm", Some(port)) => {
                let host = self
                    .nodes
                    .iter()
                    .find(|n| n.cfg.name == i.pnode)
                    .map(|n| n.ip.clone())
                    .unwrap_or_else(|| i.pnode.clone());
                json!({"instance": name, "kind": "vnc", "host": host, "port": port, "display": port.saturating_sub(5900)})
            }
            (hv, _) => {
                json!({"instance": name, "kind": "msg", "message": format!("Console not available for {hv} hypervisor")})
            }
        })
    }
}
