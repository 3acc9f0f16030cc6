//! Requests, filters and answers of the compute service, and the
//! validation rules they must pass.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rand::Rng;

use super::{ADMIN_PASS_LEN, Caller, MAX_META_LEN, MAX_NAME_LEN, MAX_SERVER_META};
use crate::error::ServiceError;
use crate::ids::{FlavorId, VmId};
use crate::model::{Image, Quota, Usage, Vm};
use crate::state::{JobStatus, OperState, ServerStatus};

/// A validated-on-use create request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateServer {
    /// Display name.
    pub name: String,
    /// Flavor reference (`flavorRef`: an id, or a URL ending in one).
    pub flavor_ref: String,
    /// Image reference (`imageRef`: an id, or a URL ending in one).
    pub image_ref: String,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Admin password chosen by the caller (generated when `None`).
    pub admin_pass: Option<String>,
    /// The NICs to give it (Nova's `networks`; default: a port on a
    /// public network).
    pub networks: crate::service::network::ServerNetworks,
    /// The caller's key pairs to inject (Nova's `key_name`, Synnefo's
    /// `SNF:key_names`); unknown names are a 400.
    pub key_names: Vec<String>,
    /// Files snf-image writes into the new server (Nova's and Synnefo's
    /// `personality`), checked against `api.max_personality` and
    /// `api.max_personality_bytes`.
    pub personality: Vec<PersonalityFile>,
    /// Nova's `user_data` (base64, at most `api.max_user_data_bytes`
    /// characters), for snf-image's `cloud_userdata`.
    pub user_data: Option<String>,
}

/// One file to inject at create, as the caller gave it; sent to snf-image
/// in its `img_personality` OS parameter (a JSON list of these).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PersonalityFile {
    /// Absolute path in the server.
    pub path: String,
    /// The file's contents, base64 as given (checked to decode).
    pub contents: String,
    /// Owner (Synnefo's extension; snf-image's default when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Group (Synnefo's extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Permission bits (Synnefo's extension; 0 to 0o777).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

/// A created server and the admin password it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedServer {
    /// The stored VM (BUILD, or ERROR if Ganeti refused it).
    pub vm: Vm,
    /// The admin password (shown once).
    pub admin_pass: String,
}

/// Server list filters (already parsed by the adapter).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerFilter {
    /// Name matches this regular expression (anywhere, as in Nova).
    pub name: Option<crate::model::NameRegex>,
    /// Every project's servers (operators only; Nova's `all_tenants`).
    pub all_tenants: bool,
    /// Only these statuses.
    pub statuses: Option<Vec<ServerStatus>>,
    /// Only this image id.
    pub image: Option<String>,
    /// Only this flavor id.
    pub flavor: Option<FlavorId>,
    /// Changed at or after (includes deleted servers, as in Nova).
    pub changes_since: Option<DateTime<Utc>>,
    /// Page marker (a server id the caller saw).
    pub marker: Option<VmId>,
    /// Page size.
    pub limit: Option<u64>,
}

/// Flavor list filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FlavorFilter {
    /// At least this much disk (GiB).
    pub min_disk: Option<i32>,
    /// At least this much RAM (MiB).
    pub min_ram: Option<i32>,
    /// `Some(true)`: public only; `Some(false)`: private only; `None`: both
    /// (private ones for operators only).
    pub is_public: Option<bool>,
    /// Page marker (a flavor id).
    pub marker: Option<FlavorId>,
    /// Page size.
    pub limit: Option<u64>,
}

/// Image list filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageFilter {
    /// Exact name.
    pub name: Option<String>,
    /// Only these ids.
    pub ids: Option<Vec<String>>,
    /// Only this status (case-insensitive).
    pub status: Option<String>,
    /// Page marker (an image id).
    pub marker: Option<String>,
    /// Page size.
    pub limit: Option<u64>,
}

/// A project's limits and usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The quota.
    pub quota: Quota,
    /// Current usage.
    pub usage: Usage,
    /// Most key pairs a user may hold (per user, not per project).
    pub max_keypairs: i64,
    /// Most personality files per create.
    pub max_personality: i64,
    /// Largest decoded personality file, bytes.
    pub max_personality_bytes: i64,
}

/// The error recorded on a VM whose create failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// Ganeti's message.
    pub message: String,
    /// When it was recorded.
    pub created: DateTime<Utc>,
}

/// The fault of an ERROR VM, if any.
pub fn fault(vm: &Vm) -> Option<Fault> {
    if vm.state.operstate() != OperState::Error {
        return None;
    }
    let message = match &vm.state.job() {
        Some(job) if matches!(job.status, JobStatus::Error | JobStatus::Canceled) => {
            job.message().unwrap_or_else(|| match job.job_id {
                Some(id) => format!("Ganeti job {id} failed"),
                None => "Ganeti refused to create the server".to_string(),
            })
        }
        _ => "the server failed to build".to_string(),
    };
    Some(Fault {
        message,
        created: vm.updated,
    })
}

// ---------------------------------------------------------------- validation

/// Checks a server name: 1..=255 characters, no control characters, no
/// leading or trailing whitespace.
pub fn validate_server_name(name: &str) -> Result<(), ServiceError> {
    let bad = |why: &str| {
        Err(ServiceError::BadRequest(format!(
            "Invalid input for field/attribute name. {why}"
        )))
    };
    if name.is_empty() {
        return bad("The name must not be empty.");
    }
    if name.chars().count() > MAX_NAME_LEN {
        return bad(&format!(
            "The name is longer than {MAX_NAME_LEN} characters."
        ));
    }
    if name.chars().any(char::is_control) {
        return bad("The name contains control characters.");
    }
    if name.trim() != name {
        return bad("The name has leading or trailing whitespace.");
    }
    Ok(())
}

/// Checks metadata sizes (Nova: 403 for too many items, 400 for bad keys).
pub fn validate_metadata(items: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    if items.len() > MAX_SERVER_META {
        return Err(ServiceError::OverLimit(format!(
            "Quota exceeded for metadata items: {} requested, limit {MAX_SERVER_META}",
            items.len()
        )));
    }
    for (k, v) in items {
        if k.is_empty() || k.chars().count() > MAX_META_LEN {
            return Err(ServiceError::BadRequest(format!(
                "Invalid metadata key {k:?}: must be 1 to {MAX_META_LEN} characters"
            )));
        }
        if k.chars().any(char::is_control) {
            return Err(ServiceError::BadRequest(format!(
                "Invalid metadata key {k:?}: control characters"
            )));
        }
        if v.chars().count() > MAX_META_LEN {
            return Err(ServiceError::BadRequest(format!(
                "Invalid metadata value for {k:?}: longer than {MAX_META_LEN} characters"
            )));
        }
    }
    Ok(())
}

/// The last path segment of a reference (`flavorRef` may be a URL).
pub fn ref_id(reference: &str) -> &str {
    reference
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(reference)
}

/// A random password of [`ADMIN_PASS_LEN`] letters and digits.
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
    let mut rng = rand::rngs::OsRng;
    (0..ADMIN_PASS_LEN)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Is `image` visible to `caller`?
pub fn image_visible(image: &Image, caller: &Caller) -> bool {
    image.is_public || caller.is_admin || image.owner.as_deref() == Some(caller.project_id.as_str())
}
