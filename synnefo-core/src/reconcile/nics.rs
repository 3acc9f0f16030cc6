//! Ports against NICs: what the DB says each server's NICs are (its ports
//! and the floating IPs associated with them) against the NICs Ganeti
//! lists on its instance, as a pure diff (the service lists and fixes; see
//! [`Networking::reconcile`](crate::service::network::Networking::reconcile)).
//!
//! # Pairing
//!
//! Each NIC the DB wants ([`WantedNic`]: a port's, named
//! `snf-nic-<port id>`, or an associated floating IP's, named
//! `snf-nic-<floating IP id>`) is paired with the instance's NIC of that
//! name, else with the NIC carrying its MAC (MACs are unique across the
//! cloud). Then:
//!
//! | found | finding | fix |
//! |---|---|---|
//! | a wanted NIC no NIC pairs with | [`MissingNic`] | `--fix-stale`: added again (`OP_INSTANCE_SET_PARAMS` NIC add, from the port) |
//! | a NIC named `snf-nic-<id>` nothing wanted pairs with | [`ExtraNic`] | `--fix-orphans`: removed |
//! | a pair whose MAC, IPv4, network or name differ | [`NicDiffers`] | none (report only): replacing a guest's NIC moves it to another slot and may cut it off; an operator decides |
//!
//! A NIC without our name prefix that pairs with nothing is not ours (the
//! `[ganeti] default_nic_*` NIC of a server made without a public
//! network, or one an operator added by hand): counted in
//! [`NicStats::foreign_ignored`], never reported.
//!
//! # Guards
//!
//! Only servers in STARTED or STOPPED whose instance is on their recorded
//! cluster are checked (the server rules deal with the rest); a finding
//! is [held](HeldNic) instead of reported when a job is in flight for the
//! server ([`in_flight`], as the server rules decide it), or when the port
//! or floating IP it concerns changed within [`Guards::stuck_after`]: an
//! attach, detach or association may be between its database write and
//! its Ganeti job (the network service touches a port before it removes
//! its NIC, so a detach is covered too).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Guards, in_flight};
use crate::ids::{BackendId, JobId, VmId};
use crate::model::{Nic, Vm};
use crate::network::{FloatingIp, GANETI_NIC_PREFIX, Network, Port, ganeti_network_name};
use crate::ports::InstanceInfo;
use crate::state::OperState;

/// How a NIC joins its network on the nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "via")]
pub enum NicWiring {
    /// Through the Ganeti network `snf-net-<id>` (networks with an IPv4
    /// subnet).
    Network {
        /// Its Ganeti name.
        network: String,
    },
    /// A plain mode/link NIC (networks without an IPv4 subnet).
    Link {
        /// Ganeti NIC mode.
        mode: String,
        /// Ganeti NIC link.
        link: String,
    },
}

impl NicWiring {
    /// How NICs of `n` are wired: through its Ganeti network when it has
    /// an IPv4 subnet (what
    /// [`Networking::nic_specs`](crate::service::network::Networking::nic_specs)
    /// makes), else by its mode and link.
    pub fn of(n: &Network, has_ipv4_subnet: bool) -> Self {
        if has_ipv4_subnet {
            NicWiring::Network {
                network: ganeti_network_name(&n.id),
            }
        } else {
            NicWiring::Link {
                mode: n.mode.clone(),
                link: n.link.clone(),
            }
        }
    }
}

/// Whose NIC it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "owner", content = "id")]
pub enum NicOwner {
    /// A port's.
    Port(String),
    /// A floating IP's (the NIC on the external network that carries it).
    FloatingIp(String),
}

impl NicOwner {
    /// The port's or floating IP's id.
    pub fn id(&self) -> &str {
        match self {
            NicOwner::Port(id) | NicOwner::FloatingIp(id) => id,
        }
    }
}

/// A NIC the DB says a server has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WantedNic {
    /// Its Ganeti name, `snf-nic-<owner id>`.
    pub name: String,
    /// The port or floating IP.
    pub owner: NicOwner,
    /// Its MAC (lower case).
    pub mac: String,
    /// Its IPv4 address, if any.
    pub ip: Option<String>,
    /// Its network.
    pub wiring: NicWiring,
    /// When its port (or floating IP, or that IP's port) last changed.
    pub changed: DateTime<Utc>,
}

/// The NICs the DB wants on a server: each of `ports` (in order), each
/// followed by the floating IPs associated with it that have a NIC of
/// their own. A floating IP of the port's own (external) network is
/// *carried* by the port: no NIC of its own, the port's NIC has its
/// address when the port has no IPv4 address (what
/// [`Networking::nic_specs`](crate::service::network::Networking::nic_specs)
/// makes). `wiring` maps a network id to how its NICs are wired; a port
/// or floating IP of a network missing there is left out (a network
/// deleted meanwhile).
pub fn wanted_nics(
    ports: &[Port],
    floating: &HashMap<String, Vec<FloatingIp>>,
    wiring: &HashMap<String, NicWiring>,
) -> Vec<WantedNic> {
    let mut out = Vec::new();
    for p in ports {
        let fips = floating.get(&p.id).map(Vec::as_slice).unwrap_or_default();
        let carried = |f: &FloatingIp| f.network_id == p.network_id;
        if let Some(w) = wiring.get(&p.network_id) {
            let ip = match p.fixed_ips.iter().find(|f| f.ip.is_ipv4()) {
                Some(f) => Some(f.ip.to_string()),
                None => fips
                    .iter()
                    .find(|f| carried(f))
                    .map(|f| f.address.to_string()),
            };
            out.push(WantedNic {
                name: p.ganeti_name(),
                owner: NicOwner::Port(p.id.clone()),
                mac: p.mac.to_ascii_lowercase(),
                ip,
                wiring: w.clone(),
                changed: fips
                    .iter()
                    .map(|f| f.updated)
                    .fold(p.updated, DateTime::max),
            });
        }
        for f in fips.iter().filter(|f| !carried(f)) {
            let (Some(mac), Some(w)) = (&f.mac, wiring.get(&f.network_id)) else {
                continue;
            };
            out.push(WantedNic {
                name: f.ganeti_nic_name(),
                owner: NicOwner::FloatingIp(f.id.clone()),
                mac: mac.to_ascii_lowercase(),
                ip: Some(f.address.to_string()),
                wiring: w.clone(),
                changed: f.updated.max(p.updated),
            });
        }
    }
    out
}

/// A NIC as Ganeti lists it on an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GanetiNic {
    /// Its index on the instance.
    pub index: i32,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// MAC.
    pub mac: Option<String>,
    /// IP.
    pub ip: Option<String>,
    /// Ganeti network name.
    pub network: Option<String>,
    /// Mode.
    pub mode: Option<String>,
    /// Link.
    pub link: Option<String>,
}

impl GanetiNic {
    /// The instance's NICs with their names.
    pub fn of(instance: &InstanceInfo) -> Vec<GanetiNic> {
        let mut nics: Vec<&Nic> = instance.nics.iter().collect();
        nics.sort_by_key(|n| n.index);
        let non_empty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        nics.into_iter()
            .map(|n| GanetiNic {
                index: n.index,
                name: usize::try_from(n.index)
                    .ok()
                    .and_then(|i| instance.nic_names.get(i).cloned().flatten())
                    .filter(|s| !s.is_empty()),
                mac: non_empty(&n.mac).map(|m| m.to_ascii_lowercase()),
                ip: non_empty(&n.ip),
                network: non_empty(&n.network),
                mode: non_empty(&n.mode),
                link: non_empty(&n.link),
            })
            .collect()
    }

    /// The port or floating IP id its name says it belongs to.
    pub fn owner_id(&self) -> Option<&str> {
        self.name.as_deref()?.strip_prefix(GANETI_NIC_PREFIX)
    }
}

/// What differs between a NIC and the DB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NicField {
    /// Its name (a later detach finds it by name).
    Name,
    /// Its MAC.
    Mac,
    /// Its IPv4 address.
    Ip,
    /// Its network (or mode and link).
    Network,
}

/// A NIC the DB wants that the instance does not have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MissingNic {
    /// The server.
    pub vm: VmId,
    /// Its cluster.
    pub backend: BackendId,
    /// The instance.
    pub instance: String,
    /// The NIC.
    pub nic: WantedNic,
}

/// A NIC of ours (named `snf-nic-<id>`) the DB does not want there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraNic {
    /// The server.
    pub vm: VmId,
    /// Its cluster.
    pub backend: BackendId,
    /// The instance.
    pub instance: String,
    /// The NIC.
    pub nic: GanetiNic,
    /// Another NIC of the instance has the same name (it is removed by
    /// index then).
    pub name_shared: bool,
}

impl ExtraNic {
    /// How a NIC removal names it: its name, or its index when another
    /// NIC shares the name.
    pub fn identifier(&self) -> String {
        match (&self.nic.name, self.name_shared) {
            (Some(n), false) => n.clone(),
            _ => self.nic.index.to_string(),
        }
    }
}

/// A NIC paired with a wanted one whose attributes differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicDiffers {
    /// The server.
    pub vm: VmId,
    /// Its cluster.
    pub backend: BackendId,
    /// The instance.
    pub instance: String,
    /// What the DB says.
    pub nic: WantedNic,
    /// What Ganeti has.
    pub ganeti: GanetiNic,
    /// What differs.
    pub fields: Vec<NicField>,
}

/// Why a NIC finding was held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "guard")]
pub enum NicGuard {
    /// A job for the server is in flight.
    JobInFlight {
        /// The job, if its id is known.
        job: Option<JobId>,
    },
    /// The port or floating IP changed within [`Guards::stuck_after`].
    RecentlyChanged {
        /// When.
        at: DateTime<Utc>,
    },
}

/// A NIC finding a guard held back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldNic {
    /// The server.
    pub vm: VmId,
    /// The NIC's name (or index, unnamed).
    pub nic: String,
    /// What would have been reported (`missing_nic`, `extra_nic`,
    /// `nic_differs`).
    pub finding: String,
    /// Why it was not.
    #[serde(flatten)]
    pub guard: NicGuard,
}

/// One NIC finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NicFinding {
    /// See [`MissingNic`].
    Missing(MissingNic),
    /// See [`ExtraNic`].
    Extra(ExtraNic),
    /// See [`NicDiffers`].
    Differs(NicDiffers),
}

impl NicFinding {
    /// Its kind's name.
    pub fn kind(&self) -> &'static str {
        match self {
            NicFinding::Missing(_) => "missing_nic",
            NicFinding::Extra(_) => "extra_nic",
            NicFinding::Differs(_) => "nic_differs",
        }
    }

    /// The server.
    pub fn vm(&self) -> VmId {
        match self {
            NicFinding::Missing(m) => m.vm,
            NicFinding::Extra(e) => e.vm,
            NicFinding::Differs(d) => d.vm,
        }
    }

    /// The NIC's name (its index when unnamed).
    pub fn nic(&self) -> String {
        match self {
            NicFinding::Missing(m) => m.nic.name.clone(),
            NicFinding::Extra(e) => e.identifier(),
            NicFinding::Differs(d) => d.nic.name.clone(),
        }
    }
}

/// One server to check: its row, the instance listed for it and where,
/// and what the DB wants on it.
#[derive(Debug, Clone)]
pub struct ServerNics<'a> {
    /// The VM row.
    pub vm: &'a Vm,
    /// The cluster the instance was listed on.
    pub backend: BackendId,
    /// The instance.
    pub instance: &'a InstanceInfo,
    /// Its NICs per the DB ([`wanted_nics`]).
    pub wanted: Vec<WantedNic>,
}

/// Everything [`diff_nics`] looks at.
#[derive(Debug, Clone, Copy)]
pub struct NicInput<'a> {
    /// The time of the run.
    pub now: DateTime<Utc>,
    /// Guard thresholds.
    pub guards: Guards,
    /// The servers.
    pub servers: &'a [ServerNics<'a>],
    /// When each port or floating IP an extra NIC's name points at last
    /// changed (absent: it no longer exists).
    pub owners_changed: &'a HashMap<String, DateTime<Utc>>,
}

/// Counters of a NIC diff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NicStats {
    /// Servers checked.
    pub servers: usize,
    /// Servers not checked (not STARTED or STOPPED, deleted, or listed
    /// off their recorded cluster).
    pub unchecked: usize,
    /// NICs that are not ours and pair with nothing (ignored).
    pub foreign_ignored: usize,
}

/// The outcome of [`diff_nics`].
#[derive(Debug, Clone, Default)]
pub struct NicDiff {
    /// What disagrees.
    pub findings: Vec<NicFinding>,
    /// What a guard held back.
    pub held: Vec<HeldNic>,
    /// Counters.
    pub stats: NicStats,
}

fn same_mac(a: &str, b: Option<&str>) -> bool {
    b.is_some_and(|b| a.eq_ignore_ascii_case(b))
}

/// What differs between a wanted NIC and the NIC paired with it.
pub fn differences(w: &WantedNic, n: &GanetiNic) -> Vec<NicField> {
    let mut out = Vec::new();
    if n.name.as_deref() != Some(w.name.as_str()) {
        out.push(NicField::Name);
    }
    if !same_mac(&w.mac, n.mac.as_deref()) {
        out.push(NicField::Mac);
    }
    if w.ip.as_deref() != n.ip.as_deref() {
        out.push(NicField::Ip);
    }
    let network_ok = match &w.wiring {
        NicWiring::Network { network } => n.network.as_deref() == Some(network.as_str()),
        NicWiring::Link { mode, link } => {
            n.network.is_none()
                && n.link.as_deref().is_none_or(|l| l == link)
                && n.mode.as_deref().is_none_or(|m| m == mode)
        }
    };
    if !network_ok {
        out.push(NicField::Network);
    }
    out
}

/// The findings of every server of `input`; see the [module docs](self).
pub fn diff_nics(input: &NicInput<'_>) -> NicDiff {
    let mut out = NicDiff::default();
    for s in input.servers {
        check_server(input, s, &mut out);
    }
    out
}

fn check_server(input: &NicInput<'_>, s: &ServerNics<'_>, out: &mut NicDiff) {
    let vm = s.vm;
    let settled = matches!(
        vm.state.operstate(),
        OperState::Started | OperState::Stopped
    );
    if vm.state.deleted() || !settled || vm.backend_id != Some(s.backend) {
        out.stats.unchecked += 1;
        return;
    }
    out.stats.servers += 1;
    let flight =
        in_flight(vm, None, input.now, input.guards).map(|job| NicGuard::JobInFlight { job });
    let recent = |at: DateTime<Utc>| {
        (input.now - at < input.guards.stuck_after).then_some(NicGuard::RecentlyChanged { at })
    };
    let nics = GanetiNic::of(s.instance);
    let instance = s.instance.name.clone();

    // Pair: by name, then by MAC.
    let mut used = vec![false; nics.len()];
    let mut pair: Vec<Option<usize>> = vec![None; s.wanted.len()];
    for (wi, w) in s.wanted.iter().enumerate() {
        if let Some(j) =
            (0..nics.len()).find(|&j| !used[j] && nics[j].name.as_deref() == Some(w.name.as_str()))
        {
            used[j] = true;
            pair[wi] = Some(j);
        }
    }
    for (wi, w) in s.wanted.iter().enumerate() {
        if pair[wi].is_some() {
            continue;
        }
        if let Some(j) = (0..nics.len()).find(|&j| {
            !used[j]
                && same_mac(&w.mac, nics[j].mac.as_deref())
                && nics[j].owner_id().is_none_or(|id| id == w.owner.id())
        }) {
            used[j] = true;
            pair[wi] = Some(j);
        }
    }

    let mut emit = |finding: NicFinding, guard: Option<NicGuard>| match guard {
        Some(guard) => out.held.push(HeldNic {
            vm: vm.id,
            nic: finding.nic(),
            finding: finding.kind().to_string(),
            guard,
        }),
        None => out.findings.push(finding),
    };
    for (w, p) in s.wanted.iter().zip(&pair) {
        let guard = flight.or_else(|| recent(w.changed));
        match p {
            None => emit(
                NicFinding::Missing(MissingNic {
                    vm: vm.id,
                    backend: s.backend,
                    instance: instance.clone(),
                    nic: w.clone(),
                }),
                guard,
            ),
            Some(j) => {
                let fields = differences(w, &nics[*j]);
                if !fields.is_empty() {
                    emit(
                        NicFinding::Differs(NicDiffers {
                            vm: vm.id,
                            backend: s.backend,
                            instance: instance.clone(),
                            nic: w.clone(),
                            ganeti: nics[*j].clone(),
                            fields,
                        }),
                        guard,
                    );
                }
            }
        }
    }
    let mut foreign = 0;
    for (j, n) in nics.iter().enumerate() {
        if used[j] {
            continue;
        }
        let Some(owner) = n.owner_id() else {
            foreign += 1;
            continue;
        };
        let guard = flight.or_else(|| input.owners_changed.get(owner).and_then(|at| recent(*at)));
        let name_shared = nics
            .iter()
            .enumerate()
            .any(|(k, m)| k != j && m.name == n.name);
        emit(
            NicFinding::Extra(ExtraNic {
                vm: vm.id,
                backend: s.backend,
                instance: instance.clone(),
                nic: n.clone(),
                name_shared,
            }),
            guard,
        );
    }
    out.stats.foreign_ignored += foreign;
}
