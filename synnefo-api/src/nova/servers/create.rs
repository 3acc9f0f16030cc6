//! `POST /servers`: Nova's create request, validated field by field as
//! Nova's JSON schema has it (unknown fields, counts, booleans, access
//! addresses, block devices, networks), then handed to the compute
//! service.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::model::AccessIps;
use synnefo_core::service::compute::{CreateCount, CreateServer, PersonalityFile};
use synnefo_core::service::network::ServerNetworks;

use super::super::Mount;
use super::super::views;
use super::*;
use crate::error::ApiError;
use crate::extract::{Auth, Body};
use crate::microversion::Version;
use crate::state::Shared;

/// Nova's create request (`additionalProperties: false`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    server: CreateBody,
    #[serde(rename = "os:scheduler_hints", default)]
    _hints: Option<Value>,
    #[serde(rename = "OS-SCH-HNT:scheduler_hints", default)]
    _hints_legacy: Option<Value>,
}

/// The `server` object of a create request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    #[serde(rename = "imageRef", default)]
    image_ref: Option<String>,
    #[serde(rename = "flavorRef")]
    flavor_ref: Value,
    #[serde(rename = "adminPass", default)]
    admin_pass: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    networks: Option<Value>,
    #[serde(rename = "accessIPv4", default)]
    access_ipv4: Option<String>,
    #[serde(rename = "accessIPv6", default)]
    access_ipv6: Option<String>,
    #[serde(default)]
    personality: Option<Vec<Value>>,
    #[serde(default)]
    key_name: Option<String>,
    #[serde(default)]
    user_data: Option<String>,
    #[serde(default)]
    availability_zone: Option<String>,
    #[serde(default)]
    block_device_mapping: Option<Vec<Value>>,
    #[serde(default)]
    block_device_mapping_v2: Option<Vec<Value>>,
    #[serde(default)]
    config_drive: Option<Value>,
    #[serde(default)]
    min_count: Option<Value>,
    #[serde(default)]
    max_count: Option<Value>,
    #[serde(default)]
    return_reservation_id: Option<Value>,
    #[serde(default)]
    security_groups: Option<Vec<SecurityGroupRef>>,
    #[serde(rename = "OS-DCF:diskConfig", default)]
    disk_config: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    trusted_image_certificates: Option<Vec<String>>,
    #[serde(default)]
    host: Option<String>,
    #[serde(default)]
    hypervisor_hostname: Option<String>,
}

/// `{"name": ...}` in `security_groups`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRef {
    name: String,
}

pub(super) fn unsupported(what: &str) -> ApiError {
    ApiError::bad_request(format!("{what} is not supported by this cloud."))
}

/// `accessIPv4` / `accessIPv6` as Nova validates them (format `ipv4` /
/// `ipv6`); an empty string means unset.
pub fn access_ips(v4: Option<&str>, v6: Option<&str>) -> Result<AccessIps, ApiError> {
    fn one<T: std::str::FromStr>(
        key: &str,
        kind: &str,
        v: Option<&str>,
    ) -> Result<Option<T>, ApiError> {
        match v {
            None | Some("") => Ok(None),
            Some(s) => s.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "Invalid input for field/attribute {key}. Value: {s}. '{s}' is not a '{kind}'"
                ))
            }),
        }
    }
    Ok(AccessIps {
        v4: one("accessIPv4", "ipv4", v4)?,
        v6: one("accessIPv6", "ipv6", v6)?,
    })
}

/// Nova's `min_count` / `max_count` (`positive_integer`: an integer or a
/// string of digits, at least 1).
pub(super) fn positive_count(v: &Option<Value>, key: &str) -> Result<Option<u32>, ApiError> {
    let bad = |other: &Value| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: {other}. {other} is not a positive integer"
        ))
    };
    let n = match v {
        None => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.parse::<u64>().ok()
        }
        Some(other) => return Err(bad(other)),
    };
    match n {
        Some(n) if n >= 1 => Ok(Some(u32::try_from(n).unwrap_or(u32::MAX))),
        _ => Err(bad(v.as_ref().unwrap_or(&Value::Null))),
    }
}

/// A Nova boolean (`parameter_types.boolean`): JSON true/false or the
/// strings Nova accepts.
pub(super) fn nova_bool(v: &Option<Value>, key: &str) -> Result<bool, ApiError> {
    match v {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) => match s.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" | "y" | "t" => Ok(true),
            "false" | "0" | "no" | "off" | "n" | "f" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute {key}. Value: {s}."
            ))),
        },
        Some(other) => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute {key}. Value: {other}."
        ))),
    }
}

/// A block device mapping that only says "boot from the image onto a
/// local disk", which is what python-openstackclient sends for
/// `--image`: the one mapping Synnefo honours (it is what it does anyway).
pub(super) fn is_image_to_local(b: &Value) -> bool {
    let field = |k: &str| b.get(k).and_then(Value::as_str);
    let boot_index_zero = match b.get("boot_index") {
        None | Some(Value::Null) => true,
        Some(Value::Number(n)) => n.as_i64() == Some(0),
        Some(Value::String(s)) => s == "0",
        _ => false,
    };
    field("source_type") == Some("image")
        && matches!(field("destination_type"), None | Some("local"))
        && boot_index_zero
        && b.get("volume_size").is_none_or(Value::is_null)
}

impl CreateBody {
    /// The image to boot: `imageRef`, or the image of an image-to-local
    /// block device mapping.
    fn image(&self) -> Option<String> {
        if let Some(i) = self.image_ref.as_deref().filter(|i| !i.is_empty()) {
            return Some(i.to_string());
        }
        self.block_device_mapping_v2
            .as_ref()?
            .iter()
            .find(|b| is_image_to_local(b))
            .and_then(|b| b.get("uuid").and_then(Value::as_str))
            .map(str::to_string)
    }

    /// Refuses the Nova features Synnefo cannot honour instead of silently
    /// ignoring them.
    fn check(&self, v: Version) -> Result<(), ApiError> {
        if self.image().is_none() {
            return Err(unsupported("Booting from volume (no imageRef)"));
        }
        match &self.networks {
            None => {
                if v.at_least(37) {
                    return Err(ApiError::bad_request(
                        "Invalid input for field/attribute server. 'networks' is a required property",
                    ));
                }
            }
            Some(Value::String(s)) if s == "auto" || s == "none" => {}
            Some(Value::Array(a)) => {
                server_networks(a)?;
            }
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute networks. Value: {other}."
                )));
            }
        }
        if self.personality.is_some() && v.at_least(57) {
            return Err(ApiError::bad_request(
                "Invalid input for field/attribute server. Additional properties are not allowed ('personality' was unexpected)",
            ));
        }
        if let Some(k) = &self.key_name
            && (k.is_empty() || k.chars().count() > 255)
        {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute key_name. Value: {k}."
            )));
        }
        if self
            .availability_zone
            .as_deref()
            .is_some_and(|z| !z.is_empty() && z != "nova")
        {
            return Err(ApiError::bad_request(format!(
                "The requested availability zone {:?} is not available",
                self.availability_zone.as_deref().unwrap_or("")
            )));
        }
        if self
            .block_device_mapping
            .as_ref()
            .is_some_and(|b| !b.is_empty())
            || self
                .block_device_mapping_v2
                .as_ref()
                .is_some_and(|b| !b.iter().all(is_image_to_local))
        {
            return Err(unsupported("Block device mapping"));
        }
        if matches!(&self.config_drive, Some(Value::Bool(true)))
            || matches!(&self.config_drive, Some(Value::String(s)) if s.eq_ignore_ascii_case("true"))
        {
            return Err(unsupported("Config drive"));
        }
        if let Some(groups) = &self.security_groups
            && groups.iter().any(|g| g.name != "default")
        {
            return Err(unsupported("Security groups"));
        }
        if let Some(dc) = &self.disk_config
            && dc != "AUTO"
            && dc != "MANUAL"
        {
            return Err(ApiError::bad_request(format!(
                "Invalid input for field/attribute OS-DCF:diskConfig. Value: {dc}."
            )));
        }
        let gated: [(&str, bool, u16); 5] = [
            ("description", self.description.is_some(), 19),
            ("tags", self.tags.is_some(), 52),
            (
                "trusted_image_certificates",
                self.trusted_image_certificates.is_some(),
                63,
            ),
            ("host", self.host.is_some(), 74),
            (
                "hypervisor_hostname",
                self.hypervisor_hostname.is_some(),
                74,
            ),
        ];
        for (key, given, min) in gated {
            if given && !v.at_least(min) {
                return Err(ApiError::bad_request(format!(
                    "Invalid input for field/attribute server. Additional properties are not allowed ('{key}' was unexpected)"
                )));
            }
            if given {
                let meaningful = match key {
                    "description" => self.description.as_deref().is_some_and(|d| !d.is_empty()),
                    "tags" => self.tags.as_ref().is_some_and(|t| !t.is_empty()),
                    "trusted_image_certificates" => self
                        .trusted_image_certificates
                        .as_ref()
                        .is_some_and(|t| !t.is_empty()),
                    _ => true,
                };
                if meaningful {
                    return Err(unsupported(key));
                }
            }
        }
        Ok(())
    }
}

pub(super) fn flavor_ref_string(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) if !s.is_empty() => Ok(s.clone()),
        Value::Number(n) if n.is_u64() => Ok(n.to_string()),
        other => Err(ApiError::bad_request(format!(
            "Invalid input for field/attribute flavorRef. Value: {other}."
        ))),
    }
}

/// `POST /servers`.
pub async fn create(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Body(req): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let s = req.server;
    s.check(v)?;
    let min_count = positive_count(&s.min_count, "min_count")?.unwrap_or(1);
    let max_count = positive_count(&s.max_count, "max_count")?.unwrap_or(min_count);
    if min_count > max_count {
        return Err(ApiError::bad_request("min_count must be <= max_count"));
    }
    let reservation = nova_bool(&s.return_reservation_id, "return_reservation_id")?;
    let access = access_ips(s.access_ipv4.as_deref(), s.access_ipv6.as_deref())?;
    let image = s.image().unwrap_or_default();
    let networks = match &s.networks {
        Some(Value::String(n)) if n == "none" => ServerNetworks::None,
        Some(Value::Array(a)) if !a.is_empty() => ServerNetworks::List(server_networks(a)?),
        _ => ServerNetworks::Auto,
    };
    let batch = app
        .compute
        .create_servers(
            &auth.caller(),
            CreateServer {
                name: s.name,
                flavor_ref: flavor_ref_string(&s.flavor_ref)?,
                image_ref: image,
                metadata: s.metadata.unwrap_or_default(),
                admin_pass: s.admin_pass,
                networks,
                key_names: s.key_name.into_iter().collect(),
                personality: personality_files(
                    s.personality.as_deref().unwrap_or_default(),
                    false,
                )?,
                user_data: s.user_data,
            },
            CreateCount {
                min: min_count,
                max: max_count,
            },
            access,
        )
        .await?;
    if reservation {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({"reservation_id": batch.reservation_id})),
        )
            .into_response());
    }
    // Nova answers a multi-create with the first server.
    let Some(created) = batch.servers.into_iter().next() else {
        return Err(ApiError::internal());
    };
    let body = json!({"server": views::created(&app.base(m.0), &created.vm, created.admin_pass)});
    let location = format!("{}/v2.1/servers/{}", app.base(m.0), created.vm.id);
    let mut resp = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(h) = location.parse() {
        resp.headers_mut().insert(axum::http::header::LOCATION, h);
    }
    Ok(resp)
}

/// The `personality` list of a create request: Nova's items are
/// `{"path", "contents"}` (`additionalProperties: false`); Synnefo's
/// (`synnefo` true) may add `owner`, `group` and `mode`. Limits and
/// base64 are the compute service's to check.
pub(crate) fn personality_files(
    items: &[Value],
    synnefo: bool,
) -> Result<Vec<PersonalityFile>, ApiError> {
    let invalid = |what: String| {
        ApiError::bad_request(format!(
            "Invalid input for field/attribute personality. {what}"
        ))
    };
    items
        .iter()
        .map(|item| {
            let obj = item
                .as_object()
                .ok_or_else(|| invalid(format!("Value: {item} is not of type 'object'")))?;
            let allowed: &[&str] = if synnefo {
                &["path", "contents", "owner", "group", "mode"]
            } else {
                &["path", "contents"]
            };
            if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(invalid(format!(
                    "Additional properties are not allowed ('{k}' was unexpected)"
                )));
            }
            let text = |key: &str, required: bool| -> Result<Option<String>, ApiError> {
                match obj.get(key) {
                    Some(Value::String(v)) => Ok(Some(v.clone())),
                    None | Some(Value::Null) if !required => Ok(None),
                    None => Err(invalid(format!("'{key}' is a required property"))),
                    Some(other) => Err(invalid(format!("{key}: {other} is not of type 'string'"))),
                }
            };
            let mode = match obj.get("mode") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) => Some(
                    n.as_u64()
                        .and_then(|m| u32::try_from(m).ok())
                        .ok_or_else(|| invalid(format!("mode: {n} is not a file mode")))?,
                ),
                Some(other) => return Err(invalid(format!("mode: {other} is not an integer"))),
            };
            Ok(PersonalityFile {
                path: text("path", true)?.unwrap_or_default(),
                contents: text("contents", true)?.unwrap_or_default(),
                owner: text("owner", false)?,
                group: text("group", false)?,
                mode,
            })
        })
        .collect()
}
