//! Nova JSON bodies, per microversion, as typed structs.
//!
//! Strict clients validate Nova bodies with `additionalProperties: false`,
//! so every key here is one Nova sends for that microversion and view, and
//! keys that appear with a later microversion are skipped before it. The
//! view is the non-admin one of Nova's default policy: no
//! `OS-EXT-SRV-ATTR:*` attributes and no `host_status`, for anyone (our
//! operators do not need Nova's hypervisor details; Ganeti has them). No
//! `security_groups` key either: Synnefo has none, and Nova omits the key
//! for a server without groups.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use synnefo_core::ids::FlavorId;
use synnefo_core::model::{Flavor, Image, ServerAttrs, Vm};
use synnefo_core::service::compute::{Limits, fault};
use synnefo_core::service::network::ServerAddress;
use synnefo_core::state::{
    Action, OperState, PendingAction, RebootKind, RescueStage, ResizeStage, ServerStatus,
    server_status,
};

use crate::microversion::Version;

/// Nova's timestamp form (`2013-09-03T04:01:32Z`).
pub fn iso(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Nova's `launched_at` form (microseconds, no zone).
fn iso_micro(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// A link.
#[derive(Debug, Clone, Serialize)]
pub struct Link {
    /// URL.
    pub href: String,
    /// `self`, `bookmark`, `next`, ...
    pub rel: &'static str,
    /// Media type (alternate links only).
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
}

/// `self` and `bookmark` links of a resource under `base`.
pub fn links(base: &str, collection: &str, id: &str) -> Vec<Link> {
    vec![
        Link {
            href: format!("{base}/v2.1/{collection}/{id}"),
            rel: "self",
            kind: None,
        },
        Link {
            href: format!("{base}/{collection}/{id}"),
            rel: "bookmark",
            kind: None,
        },
    ]
}

/// A bookmark-only link (image and flavor references in servers).
fn bookmark(base: &str, collection: &str, id: &str) -> Vec<Link> {
    vec![Link {
        href: format!("{base}/{collection}/{id}"),
        rel: "bookmark",
        kind: None,
    }]
}

/// The `next` link of a page, if the page is full.
pub fn next_link(
    base: &str,
    path: &str,
    params: &[(String, String)],
    last_id: Option<String>,
    limit: Option<u64>,
    count: usize,
) -> Option<Vec<Link>> {
    let page = limit
        .unwrap_or(synnefo_core::service::compute::MAX_PAGE)
        .min(synnefo_core::service::compute::MAX_PAGE);
    let last = last_id?;
    if count == 0 || (count as u64) < page {
        return None;
    }
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(k, _)| k != "marker")
        .cloned()
        .collect();
    if limit.is_some() && !pairs.iter().any(|(k, _)| k == "limit") {
        pairs.push(("limit".into(), page.to_string()));
    }
    pairs.push(("marker".into(), last));
    let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
    Some(vec![Link {
        href: format!("{base}/v2.1/{path}?{query}"),
        rel: "next",
        kind: None,
    }])
}

// ---------------------------------------------------------------- servers

/// Which server view to render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// `GET /servers/detail` entries.
    Detail,
    /// `GET /servers/{id}`.
    Show,
    /// `PUT /servers/{id}` answer (smaller before 2.75).
    Update,
}

/// `{"id", "links", "name"}` entries of `GET /servers`.
#[derive(Debug, Serialize)]
pub struct ServerRef {
    /// Id.
    pub id: String,
    /// Links.
    pub links: Vec<Link>,
    /// Name.
    pub name: String,
}

/// A server reference.
pub fn server_ref(base: &str, vm: &Vm) -> ServerRef {
    let id = vm.id.to_string();
    ServerRef {
        links: links(base, "servers", &id),
        id,
        name: vm.name.clone(),
    }
}

/// An image reference inside a server.
#[derive(Debug, Serialize)]
pub struct ImageRef {
    id: String,
    links: Vec<Link>,
}

/// A flavor inside a server: a link before 2.47, embedded from 2.47.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ServerFlavor {
    /// Before 2.47.
    Link {
        /// Flavor id.
        id: String,
        /// Bookmark.
        links: Vec<Link>,
    },
    /// From 2.47.
    Embedded {
        /// GiB.
        disk: i32,
        /// Always 0.
        ephemeral: i32,
        /// Always empty.
        extra_specs: BTreeMap<String, String>,
        /// The flavor's name at creation.
        original_name: String,
        /// MiB.
        ram: i32,
        /// Always 0.
        swap: i32,
        /// vCPUs.
        vcpus: i32,
    },
}

/// One address of a server.
#[derive(Debug, Serialize)]
pub struct Address {
    addr: String,
    version: u8,
    #[serde(rename = "OS-EXT-IPS:type", skip_serializing_if = "Option::is_none")]
    ip_type: Option<&'static str>,
    #[serde(
        rename = "OS-EXT-IPS-MAC:mac_addr",
        skip_serializing_if = "Option::is_none"
    )]
    mac: Option<String>,
}

/// The fault of an ERROR server.
#[derive(Debug, Serialize)]
pub struct FaultBody {
    code: u16,
    created: String,
    message: String,
}

/// A server body (detail, show, update).
#[derive(Debug, Serialize)]
pub struct ServerBody {
    id: String,
    name: String,
    status: &'static str,
    tenant_id: String,
    user_id: String,
    metadata: BTreeMap<String, String>,
    #[serde(rename = "hostId")]
    host_id: String,
    image: ImageRef,
    flavor: ServerFlavor,
    created: String,
    updated: String,
    addresses: BTreeMap<String, Vec<Address>>,
    #[serde(rename = "accessIPv4")]
    access_ipv4: String,
    #[serde(rename = "accessIPv6")]
    access_ipv6: String,
    links: Vec<Link>,
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    progress: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fault: Option<FaultBody>,
    // Extended attributes (show and detail; update from 2.75).
    #[serde(
        rename = "OS-EXT-AZ:availability_zone",
        skip_serializing_if = "Option::is_none"
    )]
    availability_zone: Option<&'static str>,
    #[serde(
        rename = "OS-EXT-STS:power_state",
        skip_serializing_if = "Option::is_none"
    )]
    power_state: Option<u8>,
    #[serde(
        rename = "OS-EXT-STS:task_state",
        skip_serializing_if = "Option::is_none"
    )]
    task_state: Option<Option<&'static str>>,
    #[serde(
        rename = "OS-EXT-STS:vm_state",
        skip_serializing_if = "Option::is_none"
    )]
    vm_state: Option<&'static str>,
    #[serde(
        rename = "OS-SRV-USG:launched_at",
        skip_serializing_if = "Option::is_none"
    )]
    launched_at: Option<Option<String>>,
    #[serde(
        rename = "OS-SRV-USG:terminated_at",
        skip_serializing_if = "Option::is_none"
    )]
    terminated_at: Option<Option<String>>,
    #[serde(
        rename = "os-extended-volumes:volumes_attached",
        skip_serializing_if = "Option::is_none"
    )]
    volumes_attached: Option<Vec<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_drive: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_name: Option<Option<String>>,
    // Microversioned.
    #[serde(skip_serializing_if = "Option::is_none")]
    locked: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Option<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tags: Option<Vec<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    trusted_image_certificates: Option<Option<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_groups: Option<Vec<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locked_reason: Option<Option<String>>,
    // Operators only, from 2.3 (show and detail).
    #[serde(
        rename = "OS-EXT-SRV-ATTR:user_data",
        skip_serializing_if = "Option::is_none"
    )]
    user_data: Option<Option<String>>,
}

impl ServerBody {
    /// Adds Nova's `OS-EXT-SRV-ATTR:user_data` (2.3, operators): the
    /// `user_data` given at create, `null` without one.
    pub fn with_user_data(mut self, user_data: Option<String>) -> Self {
        self.user_data = Some(user_data);
        self
    }
}

/// Nova's `vm_state`, `task_state` and `power_state` for a VM. A resize
/// runs as Nova's `resize_prep` task on the server's state, awaits
/// confirmation as `vm_state` `resized` (no task), and reverts as
/// `resized` with the `resize_reverting` task (Nova's names for the
/// statuses `RESIZE`, `VERIFY_RESIZE`, `REVERT_RESIZE`). A rebuild is the
/// `rebuilding` task on the state the server was in when it started
/// (`active` or `stopped`; Ganeti shuts it down and, if it was running,
/// starts it again within the job), Nova's `REBUILD`.
pub fn nova_states(vm: &Vm) -> (&'static str, Option<&'static str>, u8) {
    let s = &vm.state;
    let task = |p: Option<PendingAction>| -> Option<&'static str> {
        match p.map(|p| p.action) {
            Some(Action::Start) => Some("powering-on"),
            Some(Action::Stop) | Some(Action::Suspend) => Some("powering-off"),
            Some(Action::Reboot(RebootKind::Soft)) => Some("rebooting"),
            Some(Action::Reboot(RebootKind::Hard)) => Some("rebooting_hard"),
            Some(Action::Destroy) => Some("deleting"),
            Some(Action::Create) => Some("spawning"),
            Some(Action::Resize) => Some("resize_prep"),
            Some(Action::RevertResize) => Some("resize_reverting"),
            Some(Action::Rebuild) => Some("rebuilding"),
            Some(Action::Rescue) => Some("rescuing"),
            Some(Action::Unrescue) => Some("unrescuing"),
            Some(Action::Unsuspend) | None => None,
        }
    };
    if s.deleted() || s.operstate() == OperState::Destroyed {
        return ("deleted", None, 0);
    }
    let power = match s.operstate() {
        OperState::Started => 1,
        OperState::Stopped => 4,
        _ => 0,
    };
    // A delete (or suspension) started during a resize names its own task.
    let own_task = task(s.action()).filter(|t| !t.starts_with("resize"));
    if let Some(r) = s.rebuild() {
        let own = task(s.action()).filter(|t| *t != "rebuilding");
        return (
            if r.start { "active" } else { "stopped" },
            own.or(Some("rebuilding")),
            power,
        );
    }
    if let Some(r) = s.resize() {
        return match r.stage {
            ResizeStage::Resizing => (
                if power == 1 { "active" } else { "stopped" },
                own_task.or(Some("resize_prep")),
                power,
            ),
            ResizeStage::Verifying => ("resized", own_task, power),
            ResizeStage::Reverting => ("resized", own_task.or(Some("resize_reverting")), power),
        };
    }
    // In rescue mode (Synnefo's: the server boots the rescue image,
    // started or not): Nova's `rescued`; a rescue whose job runs is the
    // stopped server's `rescuing` task.
    if s.rescue().is_some_and(|r| r.stage != RescueStage::Rescuing) {
        return ("rescued", task(s.action()), power);
    }
    match s.operstate() {
        OperState::Build => ("building", task(s.action()).or(Some("scheduling")), 0),
        OperState::Error => ("error", None, 0),
        OperState::Started => ("active", task(s.action()), 1),
        OperState::Stopped => ("stopped", task(s.action()), 4),
        OperState::Destroyed => ("deleted", None, 0),
    }
}

/// The `hostId`: an opaque per-project digest of the backend, `""` if none.
fn host_id(vm: &Vm) -> String {
    match vm.backend_id {
        Some(b) => {
            let digest =
                synnefo_core::service::identity::token_digest(&format!("{}{}", vm.project_id, b));
            digest[..56].to_string()
        }
        None => String::new(),
    }
}

/// Addresses of a VM, by network name (Nova's shape: floating IPs in the
/// list of the port they are associated with).
pub fn addresses(nics: &[ServerAddress], extended: bool) -> BTreeMap<String, Vec<Address>> {
    let mut out: BTreeMap<String, Vec<Address>> = BTreeMap::new();
    for a in nics {
        out.entry(a.network.clone()).or_default().push(Address {
            addr: a.ip.to_string(),
            version: if a.ip.is_ipv4() { 4 } else { 6 },
            ip_type: extended.then_some(if a.floating { "floating" } else { "fixed" }),
            mac: extended.then(|| a.mac.clone()),
        });
    }
    out
}

/// Renders one server (`attrs`: its `accessIPv4`/`accessIPv6`, `""` when
/// unset as in Nova, its key pair names and its lock).
pub fn server(
    base: &str,
    v: Version,
    view: View,
    vm: &Vm,
    nics: &[ServerAddress],
    flavors: &HashMap<FlavorId, Flavor>,
    attrs: &ServerAttrs,
) -> ServerBody {
    let access = &attrs.access;
    let status = server_status(&vm.state);
    let extended = view != View::Update || v.at_least(75);
    let id = vm.id.to_string();
    let flavor = if v.at_least(47) {
        let f = flavors.get(&vm.flavor_id);
        ServerFlavor::Embedded {
            disk: f.map_or(0, |f| f.disk_gib),
            ephemeral: 0,
            extra_specs: BTreeMap::new(),
            original_name: f.map_or_else(String::new, |f| f.name.clone()),
            ram: f.map_or(0, |f| f.ram_mib),
            swap: 0,
            vcpus: f.map_or(0, |f| f.vcpus),
        }
    } else {
        let fid = vm.flavor_id.to_string();
        ServerFlavor::Link {
            links: bookmark(base, "flavors", &fid),
            id: fid,
        }
    };
    let progress = match status {
        ServerStatus::Active => Some(100),
        // snf-image's image-copy percentage while it builds.
        ServerStatus::Build => Some(attrs.build_progress.min(100)),
        _ => None,
    };
    let fault = if matches!(status, ServerStatus::Error | ServerStatus::Deleted) {
        fault(vm).map(|f| FaultBody {
            code: 500,
            created: iso(&f.created),
            message: f.message,
        })
    } else {
        None
    };
    let (vm_state, task_state, power_state) = nova_states(vm);
    let launched = match vm.state.operstate() {
        OperState::Build | OperState::Error => None,
        _ => Some(iso_micro(&vm.created)),
    };
    ServerBody {
        name: vm.name.clone(),
        status: status.as_str(),
        tenant_id: vm.project_id.clone(),
        user_id: vm.user_id.clone(),
        metadata: vm.metadata.clone(),
        host_id: host_id(vm),
        image: ImageRef {
            links: bookmark(base, "images", &vm.image_id),
            id: vm.image_id.clone(),
        },
        flavor,
        created: iso(&vm.created),
        updated: iso(&vm.updated),
        addresses: addresses(nics, extended),
        access_ipv4: access.v4.map(|a| a.to_string()).unwrap_or_default(),
        access_ipv6: access.v6.map(|a| a.to_string()).unwrap_or_default(),
        links: links(base, "servers", &id),
        id,
        disk_config: "AUTO",
        progress,
        fault,
        availability_zone: extended.then_some("nova"),
        power_state: extended.then_some(power_state),
        task_state: extended.then_some(task_state),
        vm_state: extended.then_some(vm_state),
        launched_at: extended.then_some(launched),
        terminated_at: extended.then_some(None),
        volumes_attached: extended.then(Vec::new),
        config_drive: extended.then_some(""),
        key_name: extended.then(|| attrs.key_names.first().cloned()),
        locked: v.at_least(9).then_some(attrs.lock.is_some()),
        description: v.at_least(19).then_some(None),
        tags: v.at_least(26).then(Vec::new),
        trusted_image_certificates: v.at_least(63).then_some(None),
        server_groups: (v.at_least(71) && view != View::Detail).then(Vec::new),
        locked_reason: v
            .at_least(73)
            .then(|| attrs.lock.as_ref().and_then(|l| l.reason.clone())),
        user_data: None,
    }
}

/// The create answer.
#[derive(Debug, Serialize)]
pub struct CreatedBody {
    id: String,
    links: Vec<Link>,
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: &'static str,
    #[serde(rename = "adminPass")]
    admin_pass: String,
}

/// Renders the create answer.
pub fn created(base: &str, vm: &Vm, admin_pass: String) -> CreatedBody {
    let id = vm.id.to_string();
    CreatedBody {
        links: links(base, "servers", &id),
        id,
        disk_config: "AUTO",
        admin_pass,
    }
}

// ---------------------------------------------------------------- flavors

/// `{"id", "links", "name"}` (+ description from 2.55).
#[derive(Debug, Serialize)]
pub struct FlavorRef {
    id: String,
    links: Vec<Link>,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Option<()>>,
}

/// A flavor reference.
pub fn flavor_ref(base: &str, v: Version, f: &Flavor) -> FlavorRef {
    let id = f.id.to_string();
    FlavorRef {
        links: links(base, "flavors", &id),
        id,
        name: f.name.clone(),
        description: v.at_least(55).then_some(None),
    }
}

/// The swap field: `""` before 2.75, `0` from 2.75.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Swap {
    /// Before 2.75.
    Empty(&'static str),
    /// From 2.75.
    Zero(i32),
}

/// A flavor in detail.
#[derive(Debug, Serialize)]
pub struct FlavorBody {
    id: String,
    links: Vec<Link>,
    name: String,
    ram: i32,
    vcpus: i32,
    disk: i32,
    swap: Swap,
    rxtx_factor: f64,
    #[serde(rename = "OS-FLV-DISABLED:disabled")]
    disabled: bool,
    #[serde(rename = "OS-FLV-EXT-DATA:ephemeral")]
    ephemeral: i32,
    #[serde(rename = "os-flavor-access:is_public")]
    is_public: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<Option<()>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    extra_specs: Option<BTreeMap<String, String>>,
}

/// A flavor in detail.
pub fn flavor(base: &str, v: Version, f: &Flavor) -> FlavorBody {
    let id = f.id.to_string();
    FlavorBody {
        links: links(base, "flavors", &id),
        id,
        name: f.name.clone(),
        ram: f.ram_mib,
        vcpus: f.vcpus,
        disk: f.disk_gib,
        swap: if v.at_least(75) {
            Swap::Zero(0)
        } else {
            Swap::Empty("")
        },
        rxtx_factor: 1.0,
        disabled: f.deleted,
        ephemeral: 0,
        is_public: f.is_public,
        description: v.at_least(55).then_some(None),
        extra_specs: v.at_least(61).then(BTreeMap::new),
    }
}

// ---------------------------------------------------------------- images

/// `{"id", "links", "name"}` of Nova's image proxy.
#[derive(Debug, Serialize)]
pub struct ImageRefBody {
    id: String,
    links: Vec<Link>,
    name: String,
}

fn image_links(base: &str, id: &str) -> Vec<Link> {
    let mut l = links(base, "images", id);
    l.push(Link {
        href: format!("{base}/image/v2/images/{id}"),
        rel: "alternate",
        kind: Some("application/vnd.openstack.image"),
    });
    l
}

/// An image reference.
pub fn image_ref(base: &str, img: &Image) -> ImageRefBody {
    ImageRefBody {
        id: img.id.clone(),
        links: image_links(base, &img.id),
        name: img.name.clone(),
    }
}

/// An image in detail (Nova's proxy view).
#[derive(Debug, Serialize)]
pub struct ImageBody {
    id: String,
    name: String,
    links: Vec<Link>,
    #[serde(rename = "minDisk")]
    min_disk: i32,
    #[serde(rename = "minRam")]
    min_ram: i32,
    progress: u8,
    status: String,
    created: String,
    updated: String,
    metadata: BTreeMap<String, String>,
    #[serde(rename = "OS-DCF:diskConfig")]
    disk_config: &'static str,
    #[serde(rename = "OS-EXT-IMG-SIZE:size")]
    size: u64,
}

/// Nova's image status names from Glance's.
pub fn nova_image_status(status: &str) -> String {
    match status.to_ascii_lowercase().as_str() {
        "active" => "ACTIVE".into(),
        "queued" | "saving" | "importing" | "uploading" => "SAVING".into(),
        "deleted" | "pending_delete" => "DELETED".into(),
        "killed" => "ERROR".into(),
        _ => "UNKNOWN".into(),
    }
}

/// An image in detail.
pub fn image(base: &str, img: &Image) -> ImageBody {
    let status = nova_image_status(&img.status);
    ImageBody {
        id: img.id.clone(),
        name: img.name.clone(),
        links: image_links(base, &img.id),
        min_disk: img.min_disk_gib,
        min_ram: img.min_ram_mib,
        progress: if status == "ACTIVE" { 100 } else { 0 },
        status,
        created: iso(&img.created),
        updated: iso(&img.updated),
        metadata: img.metadata.clone(),
        disk_config: "AUTO",
        size: 0,
    }
}

// ---------------------------------------------------------------- limits

/// `{"limits": {"absolute": ..., "rate": []}}` for the version.
pub fn limits(v: Version, l: &Limits) -> serde_json::Value {
    let lim = |x: Option<i64>| x.unwrap_or(-1);
    let mut abs = serde_json::Map::new();
    let mut put = |k: &str, val: i64| {
        abs.insert(k.to_string(), serde_json::Value::from(val));
    };
    put(
        "maxServerMeta",
        synnefo_core::service::compute::MAX_SERVER_META as i64,
    );
    put("maxTotalCores", lim(l.quota.vcpus));
    put("maxTotalInstances", lim(l.quota.servers));
    put("maxTotalRAMSize", lim(l.quota.ram_mib));
    put("maxTotalKeypairs", l.max_keypairs);
    put("maxServerGroups", 0);
    put("maxServerGroupMembers", 0);
    put("totalCoresUsed", l.usage.vcpus);
    put("totalInstancesUsed", l.usage.servers);
    put("totalRAMUsed", l.usage.ram_mib);
    put("totalServerGroupsUsed", 0);
    if !v.at_least(36) {
        put("maxSecurityGroupRules", 0);
        put("maxSecurityGroups", 0);
        put("maxTotalFloatingIps", 0);
        put("totalSecurityGroupsUsed", 0);
        put("totalFloatingIpsUsed", 0);
    }
    if !v.at_least(39) {
        put("maxImageMeta", 128);
    }
    if !v.at_least(57) {
        put("maxPersonality", l.max_personality);
        put("maxPersonalitySize", l.max_personality_bytes);
    }
    serde_json::json!({"limits": {"absolute": abs, "rate": []}})
}

#[cfg(test)]
mod tests {
    use super::*;
    use synnefo_core::ids::VmId;
    use synnefo_core::state::{StoredVmState, VmState};

    fn vm() -> Vm {
        Vm {
            id: VmId(42),
            user_id: "u1".into(),
            project_id: "p1".into(),
            name: "web".into(),
            flavor_id: FlavorId(1),
            image_id: "img-1".into(),
            backend_id: Some(synnefo_core::ids::BackendId(1)),
            state: VmState::from_stored(StoredVmState::settled(OperState::Started)),
            metadata: BTreeMap::new(),
            created: Utc::now(),
            updated: Utc::now(),
            last_reconciled: None,
            version: 1,
        }
    }

    fn keys(v: &serde_json::Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn keys_follow_microversions() {
        let flavors = HashMap::new();
        let show21 = serde_json::to_value(server(
            "http://x",
            Version(1),
            View::Show,
            &vm(),
            &[],
            &flavors,
            &ServerAttrs::default(),
        ))
        .unwrap();
        assert_eq!(show21["id"], "42");
        assert!(show21["flavor"]["links"].is_array());
        for absent in [
            "locked",
            "description",
            "tags",
            "server_groups",
            "locked_reason",
            "security_groups",
            "host_status",
        ] {
            assert!(show21.get(absent).is_none(), "{absent} at 2.1");
        }
        assert!(show21["OS-EXT-STS:task_state"].is_null());
        assert_eq!(show21["OS-EXT-STS:vm_state"], "active");
        let show79 = serde_json::to_value(server(
            "http://x",
            Version(79),
            View::Show,
            &vm(),
            &[],
            &flavors,
            &ServerAttrs::default(),
        ))
        .unwrap();
        assert!(show79["flavor"].get("original_name").is_some());
        for present in [
            "locked",
            "description",
            "tags",
            "server_groups",
            "locked_reason",
            "trusted_image_certificates",
        ] {
            assert!(show79.get(present).is_some(), "{present} at 2.79");
        }
        let detail79 = serde_json::to_value(server(
            "http://x",
            Version(79),
            View::Detail,
            &vm(),
            &[],
            &flavors,
            &ServerAttrs::default(),
        ))
        .unwrap();
        assert!(
            detail79.get("server_groups").is_none(),
            "server_groups is show-only"
        );
        let upd21 = serde_json::to_value(server(
            "http://x",
            Version(1),
            View::Update,
            &vm(),
            &[],
            &flavors,
            &ServerAttrs::default(),
        ))
        .unwrap();
        assert!(upd21.get("OS-EXT-STS:vm_state").is_none());
        let upd75 = serde_json::to_value(server(
            "http://x",
            Version(75),
            View::Update,
            &vm(),
            &[],
            &flavors,
            &ServerAttrs::default(),
        ))
        .unwrap();
        let show75 = serde_json::to_value(server(
            "http://x",
            Version(75),
            View::Show,
            &vm(),
            &[],
            &flavors,
            &ServerAttrs::default(),
        ))
        .unwrap();
        assert_eq!(
            keys(&upd75),
            keys(&show75),
            "2.75: update answers like show"
        );
    }

    #[test]
    fn flavor_swap_and_limits_by_version() {
        let f = Flavor {
            id: FlavorId(1),
            name: "m1".into(),
            vcpus: 1,
            ram_mib: 512,
            disk_gib: 1,
            disk_template: "plain".into(),
            is_public: true,
            deleted: false,
        };
        assert_eq!(
            serde_json::to_value(flavor("b", Version(1), &f)).unwrap()["swap"],
            ""
        );
        assert_eq!(
            serde_json::to_value(flavor("b", Version(75), &f)).unwrap()["swap"],
            0
        );
        let l = Limits {
            quota: Default::default(),
            usage: Default::default(),
            max_keypairs: 100,
            max_personality: 5,
            max_personality_bytes: 10240,
        };
        let v1 = limits(Version(1), &l);
        assert_eq!(v1["limits"]["absolute"]["maxTotalInstances"], -1);
        assert!(v1["limits"]["absolute"].get("maxSecurityGroups").is_some());
        let v57 = limits(Version(57), &l);
        assert!(v57["limits"]["absolute"].get("maxSecurityGroups").is_none());
        assert!(v57["limits"]["absolute"].get("maxPersonality").is_none());
        assert!(v57["limits"]["absolute"].get("maxImageMeta").is_none());
    }
}
