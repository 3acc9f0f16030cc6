//! Networks, subnets, ports and floating IPs: the model, and the pure
//! address arithmetic the store's pools are built on.
//!
//! # Why it is built this way
//!
//! * **Cyclades on Ganeti, in Neutron's shape.** A network is a Ganeti
//!   network (`snf-net-<id>`) made on a cluster the first time one of its
//!   servers lands there, with a mode and link from the network's
//!   [flavor](NetworkFlavor) (Synnefo's recipes). A port is a NIC: its MAC
//!   and addresses are allocated here, in the database, and handed to
//!   Ganeti explicitly, so the database is the single source of truth and
//!   Ganeti's own pool only mirrors it.
//! * **Pools are an index space, not a bitmap.** A subnet's allocation
//!   pools are numbered `0..size` ([`PoolRanges`]). The store keeps a
//!   high-water mark (`pool_next`: every index below it was handed out at
//!   least once) and a table of released indexes. Allocating takes the
//!   lowest released index, else the mark: an indexed read and a write,
//!   whatever the pool's size (a /16 costs what a /29 costs), where
//!   Synnefo's bitmap is decoded, scanned and re-encoded whole. The
//!   subnet's row is locked for the allocation, so concurrent creates in
//!   any number of processes serialize per subnet and never share an
//!   address; a unique index on `(subnet, address)` is the backstop.
//! * **IPv6 is SLAAC, as in Synnefo**: a port's IPv6 address is the
//!   subnet's /64 prefix with the EUI-64 of its MAC ([`eui64`]); nothing to
//!   allocate, nothing to collide (MACs are unique).
//! * **A floating IP is an address of an external network owned by a
//!   project.** Associating it with a server's port gives the server a NIC
//!   on the external network carrying that address (there is no NAT on a
//!   Ganeti node), which is what Cyclades did; the API shows it as Neutron
//!   does, associated with the port the user named.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::DomainError;

pub mod pools;

pub use pools::{LinkPool, MacPrefixPool, PoolKind, PoolLease, ResourcePool};

/// Prefix of the Ganeti network name of network `<id>`.
pub const GANETI_NETWORK_PREFIX: &str = "snf-net-";
/// Prefix of the Ganeti NIC name of port `<id>`.
pub const GANETI_NIC_PREFIX: &str = "snf-nic-";
/// Largest IPv4 subnet accepted (a /16: 65,536 addresses).
pub const MIN_V4_PREFIX: u8 = 16;
/// IPv6 subnets are /64 (SLAAC).
pub const V6_PREFIX: u8 = 64;

/// The Ganeti name of a network.
pub fn ganeti_network_name(network_id: &str) -> String {
    format!("{GANETI_NETWORK_PREFIX}{network_id}")
}

/// The Ganeti name of a port's NIC.
pub fn ganeti_nic_name(port_id: &str) -> String {
    format!("{GANETI_NIC_PREFIX}{port_id}")
}

/// Synnefo's network kinds: how a network is wired on the nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NetworkFlavor {
    /// Routed, without an L2 segment of its own (Synnefo's public
    /// network kind): `routed` mode on a routing table.
    IpLessRouted,
    /// A shared bridge where each network's MACs are filtered apart
    /// (Synnefo's private network kind).
    MacFiltered,
    /// A bridge (VLAN) of its own.
    PhysicalVlan,
    /// Mode and link given by the operator.
    Custom,
}

impl NetworkFlavor {
    /// Synnefo's name (`IP_LESS_ROUTED`, `MAC_FILTERED`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::IpLessRouted => "IP_LESS_ROUTED",
            Self::MacFiltered => "MAC_FILTERED",
            Self::PhysicalVlan => "PHYSICAL_VLAN",
            Self::Custom => "CUSTOM",
        }
    }

    /// Parses Synnefo's name (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::IpLessRouted,
            Self::MacFiltered,
            Self::PhysicalVlan,
            Self::Custom,
        ]
        .into_iter()
        .find(|f| f.as_str().eq_ignore_ascii_case(s))
    }
}

/// A network's lifecycle state (Neutron's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkStatus {
    /// Usable.
    Active,
    /// Ganeti could not create it on some cluster.
    Error,
}

impl NetworkStatus {
    /// Neutron's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Error => "ERROR",
        }
    }

    /// Parses Neutron's word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ACTIVE" => Some(Self::Active),
            "ERROR" => Some(Self::Error),
            _ => None,
        }
    }
}

/// A network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Id (a UUID).
    pub id: String,
    /// Name (not unique).
    pub name: String,
    /// Owner (`None`: the operator's, e.g. the public network).
    pub project_id: Option<String>,
    /// Every project may put ports on it.
    pub shared: bool,
    /// Floating IPs come from it (Neutron's `router:external`).
    pub external: bool,
    /// How it is wired.
    pub flavor: NetworkFlavor,
    /// Ganeti NIC mode (`bridged`, `routed`, `openvswitch`).
    pub mode: String,
    /// Ganeti NIC link.
    pub link: String,
    /// The MAC prefix of its ports (a `MAC_FILTERED` network's own, from
    /// its flavor's pool); `None`: the cloud's `[network] mac_prefix`.
    pub mac_prefix: Option<String>,
    /// Lifecycle state.
    pub status: NetworkStatus,
    /// Neutron's `admin_state_up`.
    pub admin_state_up: bool,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
}

impl Network {
    /// Its Ganeti name.
    pub fn ganeti_name(&self) -> String {
        ganeti_network_name(&self.id)
    }

    /// The MAC prefix of its ports: its own, else `default` (the
    /// cloud's `[network] mac_prefix`).
    pub fn port_mac_prefix<'a>(&'a self, default: &'a str) -> &'a str {
        self.mac_prefix.as_deref().unwrap_or(default)
    }

    /// True if `project` may see and use it.
    pub fn visible_to(&self, project: &str) -> bool {
        self.shared || self.external || self.project_id.as_deref() == Some(project)
    }
}

/// What to store for a new network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNetwork {
    /// Name.
    pub name: String,
    /// Owner (`None`: the operator's).
    pub project_id: Option<String>,
    /// Shared with every project.
    pub shared: bool,
    /// External (floating IPs).
    pub external: bool,
    /// Wiring.
    pub flavor: NetworkFlavor,
    /// Ganeti mode.
    pub mode: String,
    /// Ganeti link (replaced by the leased link when `pools` has a link
    /// pool).
    pub link: String,
    /// `admin_state_up`.
    pub admin_state_up: bool,
    /// Pools to lease from in the inserting transaction: a link pool's
    /// value becomes the network's link, a MAC prefix pool's its
    /// `mac_prefix` (`Exhausted` when a pool has nothing left).
    pub pools: Vec<ResourcePool>,
}

/// Changes to a network (`None` leaves a field alone).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkUpdate {
    /// New name.
    pub name: Option<String>,
    /// New `admin_state_up`.
    pub admin_state_up: Option<bool>,
    /// New `shared` (operators).
    pub shared: Option<bool>,
    /// New `router:external` (operators).
    pub external: Option<bool>,
}

/// An inclusive range of addresses a subnet allocates from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AllocationPool {
    /// First address.
    pub start: IpAddr,
    /// Last address.
    pub end: IpAddr,
}

/// A subnet: an address range of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// Id (a UUID).
    pub id: String,
    /// Its network.
    pub network_id: String,
    /// Owner (`None`: the operator's).
    pub project_id: Option<String>,
    /// Name.
    pub name: String,
    /// The range.
    pub cidr: Cidr,
    /// Gateway, if any.
    pub gateway: Option<IpAddr>,
    /// DHCP (nfdhcpd on the nodes) on or off.
    pub enable_dhcp: bool,
    /// Where addresses are allocated from.
    pub allocation_pools: Vec<AllocationPool>,
    /// DNS servers handed out.
    pub dns_nameservers: Vec<IpAddr>,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
}

/// What to store for a new subnet (already validated by [`plan_subnet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubnet {
    /// Network.
    pub network_id: String,
    /// Owner.
    pub project_id: Option<String>,
    /// Name.
    pub name: String,
    /// Range.
    pub cidr: Cidr,
    /// Gateway.
    pub gateway: Option<IpAddr>,
    /// DHCP.
    pub enable_dhcp: bool,
    /// Pools (within `cidr`, ordered, disjoint, gateway excluded).
    pub allocation_pools: Vec<AllocationPool>,
    /// DNS servers.
    pub dns_nameservers: Vec<IpAddr>,
}

/// Changes to a subnet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetUpdate {
    /// New name.
    pub name: Option<String>,
    /// New DHCP flag.
    pub enable_dhcp: Option<bool>,
    /// New DNS servers.
    pub dns_nameservers: Option<Vec<IpAddr>>,
}

/// One address of a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedIp {
    /// The subnet it belongs to.
    pub subnet_id: String,
    /// The address.
    pub ip: IpAddr,
}

/// A port's state (Neutron's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortStatus {
    /// Bound to a server whose NIC Ganeti has not reported yet.
    Build,
    /// The NIC exists.
    Active,
    /// Not bound to a server.
    Down,
    /// Ganeti could not add the NIC.
    Error,
}

impl PortStatus {
    /// Neutron's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Build => "BUILD",
            Self::Active => "ACTIVE",
            Self::Down => "DOWN",
            Self::Error => "ERROR",
        }
    }

    /// Parses Neutron's word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "BUILD" => Some(Self::Build),
            "ACTIVE" => Some(Self::Active),
            "DOWN" => Some(Self::Down),
            "ERROR" => Some(Self::Error),
            _ => None,
        }
    }
}

/// `device_owner` of a server's port.
pub const DEVICE_OWNER_COMPUTE: &str = "compute:nova";

/// A port: a (future) NIC of a server on a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    /// Id (a UUID).
    pub id: String,
    /// Network.
    pub network_id: String,
    /// Owner.
    pub project_id: Option<String>,
    /// Name.
    pub name: String,
    /// The server it is bound to (its id), or empty.
    pub device_id: String,
    /// `compute:nova` for a server's, else empty or the caller's value.
    pub device_owner: String,
    /// MAC address (allocated; unique across the cloud).
    pub mac: String,
    /// Addresses.
    pub fixed_ips: Vec<FixedIp>,
    /// State.
    pub status: PortStatus,
    /// `admin_state_up`.
    pub admin_state_up: bool,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
}

impl Port {
    /// Its Ganeti NIC name.
    pub fn ganeti_name(&self) -> String {
        ganeti_nic_name(&self.id)
    }

    /// The server it is bound to, if it is a server's port.
    pub fn server(&self) -> Option<crate::ids::VmId> {
        self.device_id.parse().ok()
    }
}

/// An address a new port asks for on a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRequest {
    /// The subnet.
    pub subnet_id: String,
    /// This address, or any free one from the pools.
    pub ip: Option<IpAddr>,
}

/// What to store for a new port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPort {
    /// Network.
    pub network_id: String,
    /// Owner.
    pub project_id: Option<String>,
    /// The user who asks (for the address history).
    pub user_id: Option<String>,
    /// Name.
    pub name: String,
    /// Bound server, or empty.
    pub device_id: String,
    /// Device owner.
    pub device_owner: String,
    /// Addresses to allocate (IPv4 from pools or as given; IPv6 subnets
    /// get the EUI-64 address).
    pub ips: Vec<IpRequest>,
    /// `admin_state_up`.
    pub admin_state_up: bool,
    /// The 3-byte prefix of the MAC to allocate (`aa:00:00`).
    pub mac_prefix: String,
    /// Most ports the project may hold, checked in the inserting
    /// transaction (`QuotaExceeded`, resource `ports`); `None`: no bound.
    pub port_limit: Option<i64>,
}

/// Changes to a port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortUpdate {
    /// New name.
    pub name: Option<String>,
    /// New `admin_state_up`.
    pub admin_state_up: Option<bool>,
    /// Bind to a server / unbind (`Some("")`), with the owner.
    pub device: Option<(String, String)>,
    /// New status.
    pub status: Option<PortStatus>,
}

/// A floating IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIp {
    /// Id (a UUID).
    pub id: String,
    /// Owner.
    pub project_id: String,
    /// The external network it comes from.
    pub network_id: String,
    /// Its subnet.
    pub subnet_id: String,
    /// The address.
    pub address: IpAddr,
    /// The port it is associated with.
    pub port_id: Option<String>,
    /// That port's address it stands for (Neutron's `fixed_ip_address`).
    pub fixed_ip: Option<IpAddr>,
    /// MAC of the NIC that carries it on the external network, while
    /// associated.
    pub mac: Option<String>,
    /// Description.
    pub description: String,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
}

impl FloatingIp {
    /// The Ganeti name of the NIC that carries it.
    pub fn ganeti_nic_name(&self) -> String {
        ganeti_nic_name(&self.id)
    }
}

/// Who held an address when: Synnefo keeps this for abuse reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpHistoryEntry {
    /// The address.
    pub address: IpAddr,
    /// Its network.
    pub network_id: String,
    /// The port that held it (absent for an unassociated floating IP).
    pub port_id: Option<String>,
    /// The floating IP, when it was one.
    pub floating_ip_id: Option<String>,
    /// The server, if the holder was bound to one.
    pub server_id: Option<String>,
    /// The project.
    pub project_id: Option<String>,
    /// The user who asked.
    pub user_id: Option<String>,
    /// From.
    pub allocated: DateTime<Utc>,
    /// Until (`None`: still held).
    pub released: Option<DateTime<Utc>>,
}

/// A subnet's pool as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolUsage {
    /// Addresses in the allocation pools.
    pub size: u64,
    /// Addresses held (ports, floating IPs).
    pub used: u64,
}

/// What a pool check found (reconciliation): indexes the free list and the
/// held addresses disagree on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCheck {
    /// The subnet.
    pub subnet_id: String,
    /// Below the mark, neither held nor free: never handed out again.
    pub leaked: Vec<u64>,
    /// Both free and held: would be handed out twice but for the
    /// backstop.
    pub double: Vec<u64>,
    /// Fixed (the free list rebuilt).
    pub fixed: bool,
}

impl PoolCheck {
    /// True if the pool is consistent.
    pub fn is_clean(&self) -> bool {
        self.leaked.is_empty() && self.double.is_empty()
    }
}

// ------------------------------------------------------------ addresses

/// An IP network in CIDR notation, normalized (host bits zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cidr {
    /// Network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub prefix: u8,
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = DomainError;

    /// Parses `a.b.c.d/n` or `x::/n`; host bits must be zero.
    fn from_str(s: &str) -> Result<Self, DomainError> {
        let bad = |why: &str| DomainError::InvalidRequest(format!("invalid CIDR {s:?}: {why}"));
        let (a, p) = s.split_once('/').ok_or_else(|| bad("no prefix length"))?;
        let addr: IpAddr = a.trim().parse().map_err(|_| bad("not an address"))?;
        let prefix: u8 = p.trim().parse().map_err(|_| bad("bad prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad("prefix length too long"));
        }
        let c = Cidr { addr, prefix };
        if c.network_bits() != to_u128(addr) {
            return Err(bad("host bits set"));
        }
        Ok(c)
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Cidr {
    /// 4 or 6.
    pub fn version(&self) -> u8 {
        if self.addr.is_ipv4() { 4 } else { 6 }
    }

    fn bits(&self) -> u8 {
        if self.addr.is_ipv4() { 32 } else { 128 }
    }

    fn host_bits(&self) -> u32 {
        u32::from(self.bits() - self.prefix)
    }

    fn network_bits(&self) -> u128 {
        let hb = self.host_bits();
        if hb >= 128 {
            0
        } else {
            (to_u128(self.addr) >> hb) << hb
        }
    }

    fn addr_of(&self, v: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(v as u32)),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }

    /// Number of addresses (saturating for huge IPv6 ranges).
    pub fn size(&self) -> u128 {
        let hb = self.host_bits();
        if hb >= 128 { u128::MAX } else { 1u128 << hb }
    }

    /// True if `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        let hb = self.host_bits();
        hb >= 128 || (to_u128(ip) >> hb) == (to_u128(self.addr) >> hb)
    }

    /// The `n`th address (0 is the network address).
    pub fn nth(&self, n: u128) -> Option<IpAddr> {
        (n < self.size()).then(|| self.addr_of(self.network_bits() + n))
    }

    /// `ip`'s position in the range.
    pub fn offset(&self, ip: IpAddr) -> Option<u128> {
        self.contains(ip).then(|| to_u128(ip) - self.network_bits())
    }

    /// The last address (IPv4 broadcast).
    pub fn last(&self) -> IpAddr {
        self.addr_of(self.network_bits() + (self.size() - 1))
    }
}

/// The EUI-64 IPv6 address of `mac` in the /64 `prefix` (SLAAC).
pub fn eui64(prefix: &Cidr, mac: &str) -> Option<IpAddr> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    if bytes.len() != 6 || prefix.version() != 6 || prefix.prefix > 64 {
        return None;
    }
    let iid = [
        bytes[0] ^ 0x02,
        bytes[1],
        bytes[2],
        0xff,
        0xfe,
        bytes[3],
        bytes[4],
        bytes[5],
    ];
    let iid = u64::from_be_bytes(iid);
    let net = match prefix.addr {
        IpAddr::V6(a) => u128::from(a) >> 64 << 64,
        IpAddr::V4(_) => return None,
    };
    Some(IpAddr::V6(Ipv6Addr::from(net | u128::from(iid))))
}

/// The MAC of the `n`th allocation under a 3-byte `prefix`
/// (`aa:00:00` + 24 bits); `None` past the 16,777,216th.
pub fn mac_from_counter(prefix: &str, n: u64) -> Option<String> {
    (n < 1 << 24).then(|| {
        format!(
            "{}:{:02x}:{:02x}:{:02x}",
            prefix.to_ascii_lowercase(),
            (n >> 16) & 0xff,
            (n >> 8) & 0xff,
            n & 0xff
        )
    })
}

/// A subnet's allocation pools as one index space `0..size`, in pool
/// order. Index `i` maps to an address in `O(pools)`; the store keeps
/// only indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolRanges {
    cidr: Cidr,
    /// `(first offset in the CIDR, count)` per pool.
    ranges: Vec<(u128, u64)>,
}

impl PoolRanges {
    /// The index space of `pools` in `cidr` (pools already validated).
    pub fn new(cidr: Cidr, pools: &[AllocationPool]) -> Self {
        let ranges = pools
            .iter()
            .filter_map(|p| {
                let s = cidr.offset(p.start)?;
                let e = cidr.offset(p.end)?;
                let n = u64::try_from(e.checked_sub(s)? + 1).ok()?;
                Some((s, n))
            })
            .collect();
        Self { cidr, ranges }
    }

    /// Addresses in all pools.
    pub fn size(&self) -> u64 {
        self.ranges.iter().map(|(_, n)| n).sum()
    }

    /// The address at index `i`.
    pub fn address(&self, mut i: u64) -> Option<IpAddr> {
        for (start, n) in &self.ranges {
            if i < *n {
                return self.cidr.nth(start + u128::from(i));
            }
            i -= n;
        }
        None
    }

    /// The index of `ip`, if it lies in a pool.
    pub fn index(&self, ip: IpAddr) -> Option<u64> {
        let off = self.cidr.offset(ip)?;
        let mut base = 0u64;
        for (start, n) in &self.ranges {
            if off >= *start && off < start + u128::from(*n) {
                return Some(base + u64::try_from(off - start).ok()?);
            }
            base += n;
        }
        None
    }
}

/// What a subnet create asks for, before validation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubnetRequest {
    /// Range.
    pub cidr: String,
    /// 4 or 6, if given (must match the CIDR).
    pub ip_version: Option<u8>,
    /// Gateway: `None` = the first address, `Some(None)` = no gateway.
    pub gateway: Option<Option<String>>,
    /// Pools (`None`: the whole range less network, broadcast and gateway).
    pub allocation_pools: Option<Vec<(String, String)>>,
    /// DHCP.
    pub enable_dhcp: Option<bool>,
    /// DNS servers.
    pub dns_nameservers: Vec<String>,
}

/// Validates a subnet request the way Neutron does (and as Ganeti can
/// take it): the CIDR normalized, an IPv4 range no larger than a
/// [`MIN_V4_PREFIX`] and with room for hosts, IPv6 exactly /64, the gateway
/// inside and outside the pools, pools inside, ordered and disjoint.
/// Returns the CIDR, gateway and pools to store.
#[allow(clippy::type_complexity)]
pub fn plan_subnet(
    req: &SubnetRequest,
) -> Result<(Cidr, Option<IpAddr>, Vec<AllocationPool>, Vec<IpAddr>), DomainError> {
    let bad = |m: String| DomainError::InvalidRequest(m);
    let cidr: Cidr = req.cidr.parse().map_err(|_| {
        bad(format!(
            "Invalid input for cidr. Reason: '{}' is not a valid IP subnet.",
            req.cidr
        ))
    })?;
    if let Some(v) = req.ip_version
        && v != cidr.version()
    {
        return Err(bad(format!(
            "Cidr {} does not match ip_version {v}",
            req.cidr
        )));
    }
    match cidr.version() {
        4 if cidr.prefix < MIN_V4_PREFIX || cidr.prefix > 30 => {
            return Err(bad(format!(
                "Invalid input for cidr. Reason: an IPv4 subnet must be /{MIN_V4_PREFIX} to /30, not /{}.",
                cidr.prefix
            )));
        }
        6 if cidr.prefix != V6_PREFIX => {
            return Err(bad(format!(
                "Invalid input for cidr. Reason: an IPv6 subnet must be a /{V6_PREFIX} (addresses are SLAAC), not /{}.",
                cidr.prefix
            )));
        }
        _ => {}
    }
    let parse_ip = |s: &str, what: &str| -> Result<IpAddr, DomainError> {
        let ip: IpAddr = s.trim().parse().map_err(|_| {
            bad(format!(
                "Invalid input for {what}. Reason: '{s}' is not a valid IP address."
            ))
        })?;
        if !cidr.contains(ip) {
            return Err(bad(format!("{what} {ip} is not in subnet {cidr}")));
        }
        Ok(ip)
    };
    let gateway = match &req.gateway {
        None => cidr.nth(1),
        Some(None) => None,
        Some(Some(g)) => Some(parse_ip(g, "gateway_ip")?),
    };
    let dns = req
        .dns_nameservers
        .iter()
        .map(|d| {
            d.trim().parse::<IpAddr>().map_err(|_| {
                bad(format!(
                    "Invalid input for dns_nameservers. Reason: '{d}' is not a valid nameserver."
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if cidr.version() == 6 {
        // SLAAC: no pools to hand out.
        return Ok((cidr, gateway, Vec::new(), dns));
    }
    let pools = match &req.allocation_pools {
        Some(ps) => {
            let mut out = Vec::new();
            for (s, e) in ps {
                let start = parse_ip(s, "allocation_pools")?;
                let end = parse_ip(e, "allocation_pools")?;
                if to_u128(end) < to_u128(start) {
                    return Err(bad(format!(
                        "The allocation pool {start}-{end} spans beyond the subnet cidr {cidr}."
                    )));
                }
                if start == cidr.addr || end == cidr.last() {
                    return Err(bad(format!(
                        "The allocation pool {start}-{end} includes the network or broadcast address of {cidr}."
                    )));
                }
                out.push(AllocationPool { start, end });
            }
            out.sort_by_key(|p| to_u128(p.start));
            for w in out.windows(2) {
                if to_u128(w[1].start) <= to_u128(w[0].end) {
                    return Err(bad(format!(
                        "Found overlapping allocation pools: {}-{} and {}-{}",
                        w[0].start, w[0].end, w[1].start, w[1].end
                    )));
                }
            }
            if let Some(g) = gateway
                && out
                    .iter()
                    .any(|p| to_u128(g) >= to_u128(p.start) && to_u128(g) <= to_u128(p.end))
            {
                return Err(bad(format!(
                    "Gateway ip {g} conflicts with allocation pool"
                )));
            }
            out
        }
        None => default_pools(&cidr, gateway),
    };
    Ok((cidr, gateway, pools, dns))
}

/// The whole range less the network and broadcast addresses and the
/// gateway (Neutron's default).
fn default_pools(cidr: &Cidr, gateway: Option<IpAddr>) -> Vec<AllocationPool> {
    let first = 1u128;
    let last = cidr.size() - 2;
    let mut out = Vec::new();
    let g = gateway.and_then(|g| cidr.offset(g));
    let mut push = |s: u128, e: u128| {
        if s <= e
            && let (Some(start), Some(end)) = (cidr.nth(s), cidr.nth(e))
        {
            out.push(AllocationPool { start, end });
        }
    };
    match g {
        Some(g) if g >= first && g <= last => {
            if g > first {
                push(first, g - 1);
            }
            push(g + 1, last);
        }
        _ => push(first, last),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn req(cidr: &str) -> SubnetRequest {
        SubnetRequest {
            cidr: cidr.into(),
            ..Default::default()
        }
    }

    #[test]
    fn default_v4_pool_skips_network_gateway_broadcast() {
        let (c, g, pools, _) = plan_subnet(&req("10.0.0.0/24")).unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/24");
        assert_eq!(g, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(
            pools,
            vec![AllocationPool {
                start: "10.0.0.2".parse().unwrap(),
                end: "10.0.0.254".parse().unwrap()
            }]
        );
        let r = PoolRanges::new(c, &pools);
        assert_eq!(r.size(), 253);
        assert_eq!(r.address(0), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(r.address(252), Some("10.0.0.254".parse().unwrap()));
        assert_eq!(r.address(253), None);
    }

    #[test]
    fn gateway_in_the_middle_splits_the_pool() {
        let mut r = req("192.168.0.0/29");
        r.gateway = Some(Some("192.168.0.3".into()));
        let (_, _, pools, _) = plan_subnet(&r).unwrap();
        assert_eq!(pools.len(), 2);
        r.gateway = Some(None);
        let (_, g, pools, _) = plan_subnet(&r).unwrap();
        assert_eq!(g, None);
        assert_eq!(pools.len(), 1);
    }

    #[test]
    fn bad_subnets_are_refused_with_a_reason() {
        for (cidr, why) in [
            ("10.0.0.1/24", "host bits"),
            ("10.0.0.0/8", "/16"),
            ("10.0.0.0/31", "/30"),
            ("nonsense", "valid IP subnet"),
            ("2001:db8::/48", "/64"),
        ] {
            let e = plan_subnet(&req(cidr)).unwrap_err().to_string();
            assert!(
                e.contains(why) || e.contains("valid IP subnet"),
                "{cidr}: {e}"
            );
        }
        let mut r = req("10.0.0.0/24");
        r.allocation_pools = Some(vec![
            ("10.0.0.10".into(), "10.0.0.20".into()),
            ("10.0.0.15".into(), "10.0.0.30".into()),
        ]);
        assert!(
            plan_subnet(&r)
                .unwrap_err()
                .to_string()
                .contains("overlapping")
        );
        r.allocation_pools = Some(vec![("10.0.0.1".into(), "10.0.0.20".into())]);
        assert!(plan_subnet(&r).unwrap_err().to_string().contains("Gateway"));
        r.allocation_pools = Some(vec![("10.0.1.1".into(), "10.0.1.20".into())]);
        assert!(plan_subnet(&r).is_err());
        let mut r = req("10.0.0.0/24");
        r.ip_version = Some(6);
        assert!(plan_subnet(&r).is_err());
    }

    #[test]
    fn slaac_address_from_mac() {
        let c: Cidr = "2001:db8:1::/64".parse().unwrap();
        assert_eq!(
            eui64(&c, "aa:00:00:12:34:56"),
            Some("2001:db8:1::a800:ff:fe12:3456".parse().unwrap())
        );
        assert_eq!(eui64(&c, "zz"), None);
    }

    #[test]
    fn macs_from_the_counter() {
        assert_eq!(
            mac_from_counter("AA:00:00", 0x010203).as_deref(),
            Some("aa:00:00:01:02:03")
        );
        assert_eq!(mac_from_counter("aa:00:00", 1 << 24), None);
    }

    proptest! {
        /// Index and address are inverse over every pool layout, and
        /// every index maps inside the CIDR, outside the gateway.
        #[test]
        fn pool_index_round_trips(prefix in 16u8..=29, cuts in proptest::collection::vec(any::<u16>(), 0..6), pick in any::<u64>()) {
            let cidr: Cidr = format!("10.1.0.0/{prefix}").parse().unwrap();
            let size = cidr.size() as u64;
            // pools between cut points, skipping a gap after each
            let mut pts: Vec<u64> = cuts.iter().map(|c| 1 + u64::from(*c) % (size - 2)).collect();
            pts.sort_unstable();
            pts.dedup();
            let mut pools = Vec::new();
            let mut prev = 2u64;
            for p in pts {
                if p > prev + 1 {
                    pools.push(AllocationPool { start: cidr.nth(u128::from(prev)).unwrap(), end: cidr.nth(u128::from(p - 1)).unwrap() });
                }
                prev = p + 1;
            }
            if prev < size - 1 {
                pools.push(AllocationPool { start: cidr.nth(u128::from(prev)).unwrap(), end: cidr.nth(u128::from(size - 2)).unwrap() });
            }
            let r = PoolRanges::new(cidr, &pools);
            prop_assume!(r.size() > 0);
            let i = pick % r.size();
            let a = r.address(i).unwrap();
            prop_assert!(cidr.contains(a));
            prop_assert_ne!(Some(a), cidr.nth(1));
            prop_assert_eq!(r.index(a), Some(i));
            prop_assert_eq!(r.address(r.size()), None);
        }
    }
}
