//! `/v2.1/os-keypairs`: Nova's key pairs.
//!
//! The wire formats are Nova's: an imported SSH key must parse as an
//! OpenSSH public key (RSA, DSA, ECDSA or Ed25519, the algorithm in the
//! text matching the one in the blob) and its fingerprint is the MD5 of
//! the key blob as colon-separated hex; an x509 key pair holds a PEM
//! certificate, fingerprinted by the SHA-1 of its DER. A key pair created
//! without a public key gets a generated one: RSA 2048 for SSH (private key
//! in OpenSSH format), a self-signed certificate with the user id as its
//! common name for x509 (private key in PKCS#8 PEM); the private key is in
//! the create answer only and never stored.
//!
//! Microversions: `type` from 2.2 (201 on create and 204 on delete from
//! 2.2, 200 and 202 before), `user_id` (operators only) from 2.10,
//! `limit`/`marker` paging from 2.35.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{Value, json};
use synnefo_core::model::{Keypair, KeypairType, NewKeypair};
use synnefo_core::service::compute::validate_keypair_name;

use super::Mount;
use crate::error::ApiError;
use crate::extract::{Auth, Body, Params};
use crate::microversion::Version;
use crate::state::Shared;

/// Longest public key or certificate accepted (bytes).
pub const MAX_PUBLIC_KEY_BYTES: usize = 16 * 1024;

/// Nova's create body (`additionalProperties: false`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    keypair: CreateBody,
}

/// The `keypair` object of a create.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    name: String,
    #[serde(default)]
    public_key: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
}

/// A key pair's public half, checked: its fingerprint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The public key as stored (trimmed).
    pub public_key: String,
    /// Nova's fingerprint.
    pub fingerprint: String,
}

/// A generated key pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// The public half (OpenSSH line or PEM certificate).
    pub public_key: String,
    /// The private key (PEM), shown once.
    pub private_key: String,
    /// Nova's fingerprint.
    pub fingerprint: String,
}

fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn bad_key(why: &str) -> ApiError {
    ApiError::bad_request(format!("Keypair data is invalid: {why}"))
}

/// Nova's SSH fingerprint: MD5 of the key blob, colon-separated hex.
fn ssh_fingerprint(key: &ssh_key::PublicKey) -> Result<String, ApiError> {
    use md5::Digest;
    let blob = key
        .to_bytes()
        .map_err(|_| bad_key("failed to generate fingerprint"))?;
    Ok(colon_hex(&md5::Md5::digest(&blob)))
}

/// Checks an OpenSSH public key line; its fingerprint.
pub fn import_ssh(text: &str) -> Result<Imported, ApiError> {
    use ssh_key::Algorithm;
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(bad_key("failed to generate fingerprint"));
    }
    let key = ssh_key::PublicKey::from_openssh(text)
        .map_err(|_| bad_key("failed to generate fingerprint"))?;
    match key.algorithm() {
        Algorithm::Rsa { .. } | Algorithm::Dsa | Algorithm::Ecdsa { .. } | Algorithm::Ed25519 => {}
        _ => return Err(bad_key("failed to generate fingerprint")),
    }
    if let ssh_key::public::KeyData::Rsa(rsa) = key.key_data() {
        // what OpenSSH itself refuses (and the `rsa` crate cannot use)
        let bits = rsa.n.as_positive_bytes().map_or(0, |n| n.len() * 8);
        if bits < 1024 || rsa.e.as_positive_bytes().is_none() {
            return Err(bad_key("failed to generate fingerprint"));
        }
    }
    Ok(Imported {
        fingerprint: ssh_fingerprint(&key)?,
        public_key: text.to_string(),
    })
}

/// Checks a PEM x509 certificate; its fingerprint (SHA-1 of the DER).
pub fn import_x509(text: &str) -> Result<Imported, ApiError> {
    use sha1::Digest;
    let text = text.trim();
    if text.is_empty() || text.len() > MAX_PUBLIC_KEY_BYTES {
        return Err(bad_key("failed to generate fingerprint"));
    }
    let (_, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|_| bad_key("failed to generate fingerprint"))?;
    pem.parse_x509()
        .map_err(|_| bad_key("failed to generate fingerprint"))?;
    Ok(Imported {
        fingerprint: colon_hex(&sha1::Sha1::digest(&pem.contents)),
        public_key: text.to_string(),
    })
}

/// A new RSA 2048 SSH key pair (comment `Generated-by-Synnefo`).
pub fn generate_ssh() -> Result<Generated, ApiError> {
    let mut rng = rand::rngs::OsRng;
    let rsa = ssh_key::private::RsaKeypair::random(&mut rng, 2048).map_err(|e| {
        tracing::error!(error = %e, "RSA key generation failed");
        ApiError::internal()
    })?;
    let mut private = ssh_key::PrivateKey::from(rsa);
    private.set_comment("Generated-by-Synnefo");
    let public = private.public_key();
    let public_key = public.to_openssh().map_err(|_| ApiError::internal())?;
    let pem = private
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|_| ApiError::internal())?;
    Ok(Generated {
        fingerprint: ssh_fingerprint(public)?,
        public_key,
        private_key: pem.to_string(),
    })
}

/// A new self-signed x509 certificate for `user_id` (client
/// authentication, ten years from now), as Nova makes for WinRM.
pub fn generate_x509(user_id: &str) -> Result<Generated, ApiError> {
    use chrono::Datelike;
    use sha1::Digest;
    let fail = |e: rcgen::Error| {
        tracing::error!(error = %e, "certificate generation failed");
        ApiError::internal()
    };
    let key = rcgen::KeyPair::generate().map_err(fail)?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, user_id);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let today = chrono::Utc::now().date_naive();
    let month = u8::try_from(today.month()).unwrap_or(1);
    let day = u8::try_from(today.day()).unwrap_or(1).min(28);
    params.not_before = rcgen::date_time_ymd(today.year(), month, day);
    params.not_after = rcgen::date_time_ymd(today.year() + 10, month, day);
    let cert = params.self_signed(&key).map_err(fail)?;
    Ok(Generated {
        fingerprint: colon_hex(&sha1::Sha1::digest(cert.der())),
        public_key: cert.pem(),
        private_key: key.serialize_pem(),
    })
}

/// `created_at` as Nova shows it (microseconds, no zone).
fn iso_micro(t: &chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6f").to_string()
}

/// The list entry (`{"keypair": {...}}` items).
fn list_entry(v: Version, k: &Keypair) -> Value {
    let mut o = json!({
        "name": k.name,
        "public_key": k.public_key,
        "fingerprint": k.fingerprint,
    });
    if v.at_least(2) {
        o["type"] = json!(k.kind.as_str());
    }
    json!({ "keypair": o })
}

/// The show body.
fn detail(v: Version, k: &Keypair) -> Value {
    let mut o = json!({
        "public_key": k.public_key,
        "name": k.name,
        "fingerprint": k.fingerprint,
        "user_id": k.user_id,
        "deleted": false,
        "created_at": iso_micro(&k.created),
        "updated_at": null,
        "deleted_at": null,
        "id": k.id,
    });
    if v.at_least(2) {
        o["type"] = json!(k.kind.as_str());
    }
    o
}

fn additional(key: &str) -> ApiError {
    ApiError::bad_request(format!(
        "Invalid input for field/attribute keypair. Additional properties are not allowed ('{key}' was unexpected)"
    ))
}

/// The `user_id` query parameter (2.10+; ignored before, as Nova).
fn user_param(p: &Params, v: Version) -> Option<String> {
    if v.at_least(10) {
        p.get("user_id").map(str::to_string)
    } else {
        None
    }
}

/// `POST /os-keypairs`: import (`public_key` given) or generate.
pub async fn create(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
    Body(req): Body<CreateRequest>,
) -> Result<Response, ApiError> {
    let b = req.keypair;
    if b.kind.is_some() && !v.at_least(2) {
        return Err(additional("type"));
    }
    if b.user_id.is_some() && !v.at_least(10) {
        return Err(additional("user_id"));
    }
    let kind = match b.kind.as_deref() {
        None => KeypairType::Ssh,
        Some(t) => KeypairType::parse(t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid input for field/attribute type. Value: {t}. '{t}' is not one of ['ssh', 'x509']"
            ))
        })?,
    };
    // the name first: no key is generated for a name that cannot be stored
    validate_keypair_name(&b.name)?;
    let caller = auth.caller();
    let user_id = b.user_id.unwrap_or_else(|| caller.user_id.clone());
    let (public_key, fingerprint, private_key) = match (&b.public_key, kind) {
        (Some(pk), KeypairType::Ssh) => {
            let i = import_ssh(pk)?;
            (i.public_key, i.fingerprint, None)
        }
        (Some(pk), KeypairType::X509) => {
            let i = import_x509(pk)?;
            (i.public_key, i.fingerprint, None)
        }
        (None, kind) => {
            let uid = user_id.clone();
            let g = tokio::task::spawn_blocking(move || match kind {
                KeypairType::Ssh => generate_ssh(),
                KeypairType::X509 => generate_x509(&uid),
            })
            .await
            .map_err(|_| ApiError::internal())??;
            (g.public_key, g.fingerprint, Some(g.private_key))
        }
    };
    let k = app
        .compute
        .create_keypair(
            &caller,
            NewKeypair {
                user_id,
                name: b.name,
                kind,
                fingerprint,
                public_key,
            },
        )
        .await?;
    let mut o = json!({
        "fingerprint": k.fingerprint,
        "name": k.name,
        "public_key": k.public_key,
        "user_id": k.user_id,
    });
    if let Some(pk) = private_key {
        o["private_key"] = json!(pk);
    }
    let status = if v.at_least(2) {
        o["type"] = json!(k.kind.as_str());
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "keypair": o }))).into_response())
}

/// `GET /os-keypairs`.
pub async fn list(
    State(app): State<Shared>,
    Extension(m): Extension<Mount>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
) -> Result<Json<Value>, ApiError> {
    let (limit, marker) = if v.at_least(35) {
        (p.limit()?, p.get("marker").map(str::to_string))
    } else {
        (None, None)
    };
    let user = user_param(&p, v);
    let keys = app
        .compute
        .keypairs(&auth.caller(), user.as_deref(), marker.as_deref(), limit)
        .await?;
    let entries: Vec<Value> = keys.iter().map(|k| list_entry(v, k)).collect();
    let mut body = json!({ "keypairs": entries });
    if let (Some(l), Some(last)) = (limit, keys.last())
        && keys.len() as u64 >= l
    {
        let mut pairs: Vec<(String, String)> = Vec::new();
        if let Some(u) = &user {
            pairs.push(("user_id".into(), u.clone()));
        }
        pairs.push(("limit".into(), l.to_string()));
        pairs.push(("marker".into(), last.name.clone()));
        let query = serde_urlencoded::to_string(&pairs).unwrap_or_default();
        body["keypairs_links"] = json!([{
            "href": format!("{}/v2.1/os-keypairs?{query}", app.base(m.0)),
            "rel": "next",
        }]);
    }
    Ok(Json(body))
}

/// `GET /os-keypairs/{name}`.
pub async fn show(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let user = user_param(&p, v);
    let k = app
        .compute
        .keypair(&auth.caller(), &name, user.as_deref())
        .await?;
    Ok(Json(json!({ "keypair": detail(v, &k) })))
}

/// `DELETE /os-keypairs/{name}`.
pub async fn delete(
    State(app): State<Shared>,
    Extension(v): Extension<Version>,
    auth: Auth,
    p: Params,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = user_param(&p, v);
    app.compute
        .delete_keypair(&auth.caller(), &name, user.as_deref())
        .await?;
    Ok(if v.at_least(2) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::ACCEPTED
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // tempest's import test key (a public RSA key published in its source)
    const TEMPEST_KEY: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQCsNe3/1ILNCqFyfYWDeTKLD6jEXC2OQHLmietMWW+/vdaZq7KZEwO0jhglaFjU1mpqq4Gz5RX156sCTNM9vRbwKAxfsdF9laBYVsex3m3Wmui3uYrKyumsoJn2g9GNnG1PI1mrVjZ61i0GY3khna+wzlTpCCmy5HNlrmbj3XLqBUpipTOXmsnr4sChzC53KCd8LXuwc1i/CZPvF+3XipvAgFSE53pCtLOeB1kYMOBaiUPLQTWXR3JpckqFIQwhIH0zoHlJvZE8hh90XcPojYN56tI0OlrGqojbediJYD0rUsJu4weZpbn8vilb3JuDY+jwssnSA8wzBx3A/8y9Pp1B nova@ubuntu";

    #[test]
    fn imports_an_openssh_key_with_novas_fingerprint() {
        let i = import_ssh(TEMPEST_KEY).unwrap();
        assert_eq!(i.public_key, TEMPEST_KEY);
        // MD5 of the base64-decoded blob, as `ssh-keygen -l -E md5` prints it
        assert_eq!(
            i.fingerprint,
            "61:5f:fe:c7:e0:fd:d7:4a:2b:52:6e:a6:f5:bf:da:27"
        );
        assert!(import_ssh(&format!("  {TEMPEST_KEY}\n")).is_ok());
    }

    #[test]
    fn refuses_what_nova_refuses() {
        for bad in [
            "ssh-rsa JUNK nova@ubuntu",
            " ",
            "",
            &format!("ssh-rsa {} openstack@ubuntu", "A".repeat(2048)),
            // algorithm in the text differs from the blob's
            &TEMPEST_KEY.replacen("ssh-rsa", "ssh-ed25519", 1),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        ] {
            assert!(import_ssh(bad).is_err(), "{bad:?}");
        }
        assert!(import_x509("ssh-rsa AAAA").is_err());
        assert!(
            import_x509("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----").is_err()
        );
    }

    #[test]
    fn generated_keys_import_back_with_the_same_fingerprint() {
        let g = generate_ssh().unwrap();
        assert!(g.public_key.starts_with("ssh-rsa "));
        assert!(
            g.private_key
                .starts_with("-----BEGIN OPENSSH PRIVATE KEY-----")
        );
        assert_eq!(
            import_ssh(&g.public_key).unwrap().fingerprint,
            g.fingerprint
        );
        let x = generate_x509("u1").unwrap();
        assert!(x.public_key.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(x.private_key.contains("PRIVATE KEY-----"));
        assert_eq!(
            import_x509(&x.public_key).unwrap().fingerprint,
            x.fingerprint
        );
        assert_eq!(x.fingerprint.len(), 59, "SHA-1, colon-separated");
    }
}
