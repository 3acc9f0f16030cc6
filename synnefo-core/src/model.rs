//! Domain records: identity, catalog, VMs, NICs and Ganeti backends.
//!
//! Plain data; the store maps them to rows and the API to JSON.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::{BackendId, FlavorId, JobId, VmId};
use crate::state::VmState;

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Opaque id (32 hex chars, Keystone style).
    pub id: String,
    /// Unique login name.
    pub name: String,
    /// argon2 PHC string; never serialised out of the store layer.
    #[serde(skip_serializing)]
    pub password_hash: String,
    /// Disabled users cannot authenticate.
    pub enabled: bool,
    /// Operators may see and act on every project.
    pub is_admin: bool,
    /// When created.
    pub created: DateTime<Utc>,
}

/// A project (tenant): owns servers and quota.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Opaque id (32 hex chars).
    pub id: String,
    /// Unique name.
    pub name: String,
    /// When created.
    pub created: DateTime<Utc>,
}

/// Per-project limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Quota {
    /// Max servers.
    pub servers: Option<i64>,
    /// Max vCPUs summed over servers.
    pub vcpus: Option<i64>,
    /// Max RAM (MiB) summed over servers.
    pub ram_mib: Option<i64>,
}

/// What a project currently uses (non-deleted servers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Servers.
    pub servers: i64,
    /// vCPUs.
    pub vcpus: i64,
    /// RAM in MiB.
    pub ram_mib: i64,
}

impl Quota {
    /// Checks that `usage + extra` stays within the limits.
    pub fn check(&self, usage: Usage, extra: Usage) -> Result<(), crate::error::StoreError> {
        let rows = [
            ("servers", self.servers, usage.servers, extra.servers),
            ("vcpus", self.vcpus, usage.vcpus, extra.vcpus),
            ("ram", self.ram_mib, usage.ram_mib, extra.ram_mib),
        ];
        for (resource, limit, in_use, requested) in rows {
            if let Some(limit) = limit
                && in_use + requested > limit
            {
                return Err(crate::error::StoreError::QuotaExceeded {
                    resource,
                    limit,
                    in_use,
                    requested,
                });
            }
        }
        Ok(())
    }
}

/// An API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The token's SHA-256 hex digest; the secret itself is never stored.
    pub digest: String,
    /// Whose token.
    pub user_id: String,
    /// Scoped project.
    pub project_id: String,
    /// Issued at.
    pub issued: DateTime<Utc>,
    /// Expires at.
    pub expires: DateTime<Utc>,
    /// Revoked tokens are refused.
    pub revoked: bool,
}

/// A hardware template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    /// Id.
    pub id: FlavorId,
    /// Unique name.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: i32,
    /// RAM in MiB.
    pub ram_mib: i32,
    /// Disk in GiB.
    pub disk_gib: i32,
    /// Ganeti disk template (`plain`, `drbd`, `file`, `diskless`, ...).
    pub disk_template: String,
    /// Listed to everyone.
    pub is_public: bool,
    /// Hidden from new creates (existing servers keep it).
    pub deleted: bool,
}

impl Flavor {
    /// The flavor an instance's backend parameters match: Ganeti's vcpus
    /// and RAM, the recorded flavor's disk and disk template (Ganeti's
    /// parameters carry no disk size to compare; Synnefo's resize keeps the
    /// disk too). Live flavors before deleted ones, public before private
    /// (every owner may look those up), then the lowest id, so every caller
    /// picks the same. `None` when the recorded flavor is not in the
    /// catalogue or nothing matches.
    pub fn matching(
        catalogue: &[Flavor],
        recorded: FlavorId,
        vcpus: i32,
        ram_mib: i32,
    ) -> Option<FlavorId> {
        let current = catalogue.iter().find(|f| f.id == recorded)?;
        catalogue
            .iter()
            .filter(|f| {
                f.vcpus == vcpus
                    && f.ram_mib == ram_mib
                    && f.disk_gib == current.disk_gib
                    && f.disk_template == current.disk_template
            })
            .min_by_key(|f| (f.deleted, !f.is_public, f.id))
            .map(|f| f.id)
    }
}

/// Backend parameters a successful op set, as its input carried them
/// (`job_fields.beparams` in Synnefo's message, sent for `CREATE` and
/// `OP_INSTANCE_SET_PARAMS`): what
/// Synnefo's dispatcher reads to give the server its new flavor at once,
/// rather than at the next reconciliation. A parameter the op did not set
/// keeps the recorded flavor's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BeParams {
    /// `vcpus`.
    pub vcpus: Option<i32>,
    /// `maxmem` (or the older `memory`), MiB.
    pub ram_mib: Option<i32>,
    /// The flavor the VM's resize asked for (the target of its running
    /// stage, [`crate::state::target_flavor`]), if it has one: of several
    /// flavors these parameters match, the one the owner chose. Not from
    /// Ganeti: the dispatcher adds it.
    #[serde(default)]
    pub requested: Option<FlavorId>,
}

impl BeParams {
    /// Whether the op set either parameter.
    pub fn is_empty(&self) -> bool {
        self.vcpus.is_none() && self.ram_mib.is_none()
    }

    /// These parameters followed by `later` ones: what Ganeti holds after
    /// both ops (a parameter `later` does not set keeps this one's value).
    pub fn then(self, later: BeParams) -> BeParams {
        BeParams {
            vcpus: later.vcpus.or(self.vcpus),
            ram_mib: later.ram_mib.or(self.ram_mib),
            requested: later.requested.or(self.requested),
        }
    }

    /// The flavor a server of flavor `recorded` has after these parameters:
    /// the [`requested`](Self::requested) flavor if it matches them (and
    /// the recorded flavor's disk and template), else
    /// [`Flavor::matching`]'s; `None` if nothing matches or nothing changed.
    pub fn new_flavor(&self, catalogue: &[Flavor], recorded: FlavorId) -> Option<FlavorId> {
        let current = catalogue.iter().find(|f| f.id == recorded)?;
        let vcpus = self.vcpus.unwrap_or(current.vcpus);
        let ram = self.ram_mib.unwrap_or(current.ram_mib);
        if vcpus == current.vcpus && ram == current.ram_mib {
            return None;
        }
        let chosen = self
            .requested
            .and_then(|id| catalogue.iter().find(|f| f.id == id))
            .filter(|f| {
                f.vcpus == vcpus
                    && f.ram_mib == ram
                    && f.disk_gib == current.disk_gib
                    && f.disk_template == current.disk_template
            });
        match chosen {
            Some(f) => Some(f.id),
            None => Flavor::matching(catalogue, recorded, vcpus, ram),
        }
    }
}

/// An OS image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// UUID.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Ganeti OS (`os_type`, e.g. `snf-image+default`).
    pub os_type: String,
    /// Ganeti OS parameters.
    pub osparams: BTreeMap<String, String>,
    /// `ACTIVE`, `SAVING`, `DELETED`, ...
    pub status: String,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Minimum disk (GiB).
    pub min_disk_gib: i32,
    /// Minimum RAM (MiB).
    pub min_ram_mib: i32,
    /// Listed to everyone.
    pub is_public: bool,
    /// Owning project, for private images.
    pub owner: Option<String>,
    /// Created.
    pub created: DateTime<Utc>,
    /// Updated.
    pub updated: DateTime<Utc>,
}

/// A virtual machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    /// Id (instance `<prefix><id>`).
    pub id: VmId,
    /// The user that created it.
    pub user_id: String,
    /// The owning project.
    pub project_id: String,
    /// Display name.
    pub name: String,
    /// Flavor.
    pub flavor_id: FlavorId,
    /// Image.
    pub image_id: String,
    /// The Ganeti cluster it lives on (chosen at create).
    pub backend_id: Option<BackendId>,
    /// State machine fields.
    pub state: VmState,
    /// User metadata.
    pub metadata: BTreeMap<String, String>,
    /// Created.
    pub created: DateTime<Utc>,
    /// Last changed.
    pub updated: DateTime<Utc>,
    /// Last time reconciliation looked at it.
    pub last_reconciled: Option<DateTime<Utc>>,
    /// Optimistic-concurrency version; bumped by every update.
    pub version: i64,
}

/// A VM's size and cluster: what reconciliation corrects when Ganeti shows
/// otherwise (an instance resized or moved behind our back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPlacement {
    /// The flavor.
    pub flavor_id: FlavorId,
    /// The Ganeti cluster.
    pub backend_id: Option<BackendId>,
}

/// A server's `accessIPv4` / `accessIPv6`: addresses the owner declares
/// the server is reachable at (Nova stores and echoes them; nothing routes
/// by them). Unset is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessIps {
    /// `accessIPv4`.
    pub v4: Option<std::net::Ipv4Addr>,
    /// `accessIPv6`.
    pub v6: Option<std::net::Ipv6Addr>,
}

/// What a key pair holds: an SSH public key or an x509 certificate (Nova's
/// `type`, from microversion 2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KeypairType {
    /// An OpenSSH public key (`ssh-rsa AAAA... comment`).
    Ssh,
    /// A PEM x509 certificate (Nova's WinRM certificates).
    X509,
}

impl KeypairType {
    /// Nova's name (`ssh`, `x509`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeypairType::Ssh => "ssh",
            KeypairType::X509 => "x509",
        }
    }

    /// The type named `s` (`ssh`, `x509`), if any.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ssh" => Some(KeypairType::Ssh),
            "x509" => Some(KeypairType::X509),
            _ => None,
        }
    }
}

/// A user's key pair (Nova's `os-keypairs`): the public half only; a
/// generated private key is handed out once and never stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keypair {
    /// Store id (Nova shows it as `id`).
    pub id: i64,
    /// The owner: key pairs belong to a user, not a project.
    pub user_id: String,
    /// Unique per user.
    pub name: String,
    /// SSH key or x509 certificate.
    pub kind: KeypairType,
    /// Nova's fingerprint (MD5 of the key blob for SSH, SHA-1 of the DER
    /// certificate for x509; colon-separated lowercase hex).
    pub fingerprint: String,
    /// The public key (OpenSSH line) or certificate (PEM).
    pub public_key: String,
    /// When created.
    pub created: DateTime<Utc>,
}

/// Fields needed to store a new key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewKeypair {
    /// Owner.
    pub user_id: String,
    /// Name (validated by the service).
    pub name: String,
    /// Type.
    pub kind: KeypairType,
    /// Fingerprint.
    pub fingerprint: String,
    /// Public key or certificate.
    pub public_key: String,
}

/// Who locked a server (Nova's `locked_by`): a server an operator locked
/// can only be unlocked by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockedBy {
    /// The owner (any member of the project).
    Owner,
    /// An operator.
    Admin,
}

impl LockedBy {
    /// Stored and shown name (`owner`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            LockedBy::Owner => "owner",
            LockedBy::Admin => "admin",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "owner" => Some(LockedBy::Owner),
            "admin" => Some(LockedBy::Admin),
            _ => None,
        }
    }
}

/// A server's lock (Nova's `lock` action): while set, the owner's mutating
/// requests are refused with 409; operators may still act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmLock {
    /// Who locked it.
    pub by: LockedBy,
    /// Why (Nova's `locked_reason`, microversion 2.73).
    pub reason: Option<String>,
}

/// What server views show besides the [`Vm`] row: access addresses, the
/// key pairs injected at create, the lock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerAttrs {
    /// `accessIPv4`/`accessIPv6`.
    pub access: AccessIps,
    /// Key pair names given at create (Nova's `key_name` is the first;
    /// Synnefo's `SNF:key_names` all of them).
    pub key_names: Vec<String>,
    /// The lock, if locked.
    pub lock: Option<VmLock>,
    /// Percent of the image copied while the server builds (snf-image's
    /// `image-copy-progress`; 0 before any).
    pub build_progress: u8,
}

/// What a create stores besides each [`NewVm`]: shared by the batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewVmAttrs {
    /// `accessIPv4`/`accessIPv6`.
    pub access: AccessIps,
    /// Key pair names.
    pub key_names: Vec<String>,
    /// Nova's `user_data` (base64, validated), if given.
    pub user_data: Option<String>,
}

/// One entry of a server's diagnostics (Synnefo's
/// `VirtualMachineDiagnostic`): a message snf-image sent while building it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The server.
    pub vm: VmId,
    /// When it was stored.
    pub created: DateTime<Utc>,
    /// Its level.
    pub level: crate::messages::DiagnosticLevel,
    /// Its source (`image-info`, `image-helper-task-start`, ...).
    pub source: String,
    /// When the monitor read it (the message's `event_time`).
    pub source_time: DateTime<Utc>,
    /// The message.
    pub message: String,
    /// Details (standard error lines), if any.
    pub details: Option<String>,
}

/// What storing one build message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildWrite {
    /// The progress rose, or the diagnostic was stored.
    Applied,
    /// Nothing to do: the server is no longer building, the progress on
    /// record is as high already, the diagnostic is on record already
    /// (a redelivery), or the server is deleted.
    Ignored,
}

/// Longest server-name pattern [`NameRegex::new`] accepts (characters).
pub const NAME_REGEX_MAX_LEN: usize = 255;

/// Compiled size bound of a [`NameRegex`] (bytes of program and of lazy
/// DFA cache): a pattern that needs more is refused, not run.
pub const NAME_REGEX_SIZE_LIMIT: usize = 1 << 20;

/// A server-name filter as Nova applies it: a regular expression searched
/// anywhere in the name (Nova's SQL `REGEXP`). Compiled with the `regex`
/// crate, whose matching is linear in the name's length whatever the
/// pattern (no backtracking: `(a+)+$` costs what `a+$` costs), and bounded
/// in pattern length ([`NAME_REGEX_MAX_LEN`]) and compiled size
/// ([`NAME_REGEX_SIZE_LIMIT`]). Equal when the patterns are equal.
#[derive(Debug, Clone)]
pub struct NameRegex {
    pattern: String,
    regex: regex::Regex,
}

impl NameRegex {
    /// Compiles `pattern`; the error says why it is refused (too long,
    /// invalid syntax, or too big once compiled).
    pub fn new(pattern: &str) -> Result<Self, String> {
        let len = pattern.chars().count();
        if len > NAME_REGEX_MAX_LEN {
            return Err(format!(
                "the pattern is {len} characters long, more than {NAME_REGEX_MAX_LEN}"
            ));
        }
        let regex = regex::RegexBuilder::new(pattern)
            .size_limit(NAME_REGEX_SIZE_LIMIT)
            .dfa_size_limit(NAME_REGEX_SIZE_LIMIT)
            .nest_limit(64)
            .build()
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(limit) => {
                    format!("the pattern compiles to more than {limit} bytes")
                }
                other => other.to_string(),
            })?;
        Ok(Self {
            pattern: pattern.to_string(),
            regex,
        })
    }

    /// The pattern as given.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// True if the pattern occurs anywhere in `name`.
    pub fn is_match(&self, name: &str) -> bool {
        self.regex.is_match(name)
    }
}

impl PartialEq for NameRegex {
    fn eq(&self, other: &Self) -> bool {
        self.pattern == other.pattern
    }
}

impl Eq for NameRegex {}

/// A VM's network interface as Ganeti reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    /// Position on the VM (0-based).
    pub index: i32,
    /// IPv4/IPv6 address, if any.
    pub ip: Option<String>,
    /// MAC address.
    pub mac: Option<String>,
    /// Ganeti network name (or link for legacy NICs).
    pub network: Option<String>,
    /// Link (bridge / routing table).
    pub link: Option<String>,
    /// `bridged`, `routed`, `openvswitch`.
    pub mode: Option<String>,
}

/// A Ganeti cluster Synnefo drives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    /// Id.
    pub id: BackendId,
    /// Unique name (the settings key).
    pub name: String,
    /// Cluster address (RAPI host name).
    pub host: String,
    /// RAPI port.
    pub port: u16,
    /// No new VMs are placed here.
    pub drained: bool,
    /// Unreachable; skipped by placement and reconciliation.
    pub offline: bool,
    /// Created.
    pub created: DateTime<Utc>,
}

/// Fields needed to store a new VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVm {
    /// Creator.
    pub user_id: String,
    /// Project.
    pub project_id: String,
    /// Name.
    pub name: String,
    /// Flavor.
    pub flavor: Flavor,
    /// Image id.
    pub image_id: String,
    /// Chosen backend.
    pub backend_id: Option<BackendId>,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// The API request that asks for it: its `create` action is recorded
    /// with the VM, in the same transaction (`None`: no record, e.g. an
    /// operator's import).
    pub request_id: Option<String>,
}

/// One user request that changed a server (Nova's instance action): what
/// `os-instance-actions` lists and `synnefo server events` prints. Recorded
/// in the same write as the state change it asks for, so the history has
/// every accepted request, including a create or delete that crashed
/// half-way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceAction {
    /// The server.
    pub vm: VmId,
    /// The API request id (`x-openstack-request-id`, `req-<uuid>`).
    pub request_id: String,
    /// Nova's action name: `create`, `delete`, `start`, `stop`, `reboot`,
    /// `suspend`, `resume`, `lock`, `unlock`, ...
    pub action: String,
    /// Who asked.
    pub user_id: String,
    /// In which project.
    pub project_id: String,
    /// When the request was accepted.
    pub start_time: DateTime<Utc>,
    /// Last change of this record (the job submitted, or the failure).
    pub updated: DateTime<Utc>,
    /// `Error` (Nova's message) with the reason when Ganeti refused the
    /// request's job; `None` otherwise.
    pub message: Option<String>,
    /// The Ganeti job submitted for it, once known.
    pub job_id: Option<JobId>,
}

/// How a state write changes the instance-action history (see
/// [`crate::ports::VmStateUpdate::action_log`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionLog {
    /// The state machine accepted a request: record it.
    Accepted(InstanceAction),
    /// The Ganeti job submitted for request `request_id`.
    Submitted {
        /// The request.
        request_id: String,
        /// Its job.
        job_id: JobId,
    },
    /// Ganeti did not take request `request_id`'s job (rolled back).
    Failed {
        /// The request.
        request_id: String,
        /// Why.
        reason: String,
    },
    /// Ganeti jobs that ended in failure, each with why (the job's error):
    /// the request each was submitted for shows it (Nova's failed action
    /// event). Written by the dispatcher with the failure's state change,
    /// and by the API when the failure was known before the job id was
    /// recorded.
    JobsFailed(Vec<(JobId, String)>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resize_gets_the_flavor_it_asked_for_among_equal_ones() {
        let f = |id, vcpus, ram, disk, public| Flavor {
            id: FlavorId(id),
            name: format!("f{id}"),
            vcpus,
            ram_mib: ram,
            disk_gib: disk,
            disk_template: "plain".into(),
            is_public: public,
            deleted: false,
        };
        // 2 and 3 are the same size; 3 is private (after 2 in the order);
        // 4 has another disk
        let catalogue = [
            f(1, 1, 512, 10, true),
            f(2, 2, 1024, 10, true),
            f(3, 2, 1024, 10, false),
            f(4, 2, 1024, 20, true),
        ];
        let mut be = BeParams {
            vcpus: Some(2),
            ram_mib: Some(1024),
            requested: None,
        };
        assert_eq!(be.new_flavor(&catalogue, FlavorId(1)), Some(FlavorId(2)));
        be.requested = Some(FlavorId(3));
        assert_eq!(be.new_flavor(&catalogue, FlavorId(1)), Some(FlavorId(3)));
        // a request these parameters do not match is not taken
        be.requested = Some(FlavorId(4));
        assert_eq!(be.new_flavor(&catalogue, FlavorId(1)), Some(FlavorId(2)));
        // nothing changed: nothing to take
        be.requested = Some(FlavorId(3));
        assert_eq!(be.new_flavor(&catalogue, FlavorId(2)), None);
    }

    #[test]
    fn name_regex_searches_like_nova() {
        let re = NameRegex::new(r"^.*\-instance\-[0-9]+$").unwrap();
        assert!(re.is_match("ListServerFiltersTestJSON-instance-123"));
        assert!(!re.is_match("instance-x"));
        assert!(
            NameRegex::new("eb").unwrap().is_match("web-1"),
            "unanchored"
        );
        assert_eq!(NameRegex::new("a").unwrap(), NameRegex::new("a").unwrap());
        assert_ne!(NameRegex::new("a").unwrap(), NameRegex::new("b").unwrap());
    }

    #[test]
    fn name_regex_refuses_invalid_long_and_huge_patterns() {
        assert!(NameRegex::new("(").unwrap_err().contains("unclosed"));
        assert!(NameRegex::new("[z-a]").is_err());
        let long = "a".repeat(NAME_REGEX_MAX_LEN + 1);
        assert!(
            NameRegex::new(&long)
                .unwrap_err()
                .contains("characters long")
        );
        assert!(NameRegex::new(&"a".repeat(NAME_REGEX_MAX_LEN)).is_ok());
        // short, but compiles to far more than the size limit
        let huge = NameRegex::new(r"\w{1000}{1000}").unwrap_err();
        assert!(huge.contains("compiles to more than"), "{huge}");
        let nested = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(NameRegex::new(&nested).is_err(), "nesting is bounded");
    }
}
