//! The OpenAPI 3.1 document served at `/openapi.json`.
//!
//! Hand-written from one table instead of derived with utoipa: the bodies
//! change shape with the microversion (keys appear and disappear), which
//! derive macros describe poorly, and the authoritative schemas are Nova's
//! own api-ref. The document lists every operation with its parameters,
//! success status and fault responses; a test keeps it in step with the
//! router.

use serde_json::{Map, Value, json};

/// `(method, path, tag, summary, success status)` of every operation.
pub const OPERATIONS: &[(&str, &str, &str, &str, u16)] = &[
    ("get", "/", "compute", "List compute API versions", 200),
    ("get", "/v2/", "compute", "Show the v2.0 version", 200),
    (
        "get",
        "/v2.1/",
        "compute",
        "Show the v2.1 version (microversion range)",
        200,
    ),
    (
        "get",
        "/v2.1/servers",
        "compute",
        "List servers (name, status, image, flavor, changes-since, limit, marker)",
        200,
    ),
    (
        "post",
        "/v2.1/servers",
        "compute",
        "Create a server (202, adminPass)",
        202,
    ),
    (
        "get",
        "/v2.1/servers/detail",
        "compute",
        "List servers in detail",
        200,
    ),
    ("get", "/v2.1/servers/{id}", "compute", "Show a server", 200),
    (
        "put",
        "/v2.1/servers/{id}",
        "compute",
        "Rename a server",
        200,
    ),
    (
        "delete",
        "/v2.1/servers/{id}",
        "compute",
        "Delete a server",
        204,
    ),
    (
        "post",
        "/v2.1/servers/{id}/action",
        "compute",
        "reboot, os-start, os-stop, lock, unlock, os-getVNCConsole (< 2.6)",
        202,
    ),
    (
        "get",
        "/v2.1/servers/{id}/ips",
        "compute",
        "List a server's addresses",
        200,
    ),
    (
        "get",
        "/v2.1/servers/{id}/ips/{network}",
        "compute",
        "List a server's addresses on one network",
        200,
    ),
    (
        "get",
        "/v2.1/servers/{id}/metadata",
        "compute",
        "List metadata",
        200,
    ),
    (
        "post",
        "/v2.1/servers/{id}/metadata",
        "compute",
        "Merge metadata",
        200,
    ),
    (
        "put",
        "/v2.1/servers/{id}/metadata",
        "compute",
        "Replace metadata",
        200,
    ),
    (
        "get",
        "/v2.1/servers/{id}/metadata/{key}",
        "compute",
        "Show a metadata item",
        200,
    ),
    (
        "put",
        "/v2.1/servers/{id}/metadata/{key}",
        "compute",
        "Set a metadata item",
        200,
    ),
    (
        "delete",
        "/v2.1/servers/{id}/metadata/{key}",
        "compute",
        "Delete a metadata item",
        204,
    ),
    (
        "post",
        "/v2.1/servers/{id}/remote-consoles",
        "compute",
        "Create a remote console (2.6+)",
        200,
    ),
    (
        "get",
        "/v2.1/flavors",
        "compute",
        "List flavors (minDisk, minRam, is_public, limit, marker)",
        200,
    ),
    (
        "get",
        "/v2.1/flavors/detail",
        "compute",
        "List flavors in detail",
        200,
    ),
    ("get", "/v2.1/flavors/{id}", "compute", "Show a flavor", 200),
    (
        "get",
        "/v2.1/images",
        "compute",
        "List images (image proxy, < 2.36)",
        200,
    ),
    (
        "get",
        "/v2.1/images/detail",
        "compute",
        "List images in detail (< 2.36)",
        200,
    ),
    (
        "get",
        "/v2.1/images/{id}",
        "compute",
        "Show an image (< 2.36)",
        200,
    ),
    (
        "get",
        "/v2.1/limits",
        "compute",
        "Show absolute limits and usage",
        200,
    ),
    (
        "get",
        "/v2.1/os-keypairs",
        "compute",
        "List the caller's key pairs (user_id 2.10+, limit/marker 2.35+)",
        200,
    ),
    (
        "post",
        "/v2.1/os-keypairs",
        "compute",
        "Create (generate) or import a key pair (201 from 2.2)",
        200,
    ),
    (
        "get",
        "/v2.1/os-keypairs/{name}",
        "compute",
        "Show a key pair",
        200,
    ),
    (
        "delete",
        "/v2.1/os-keypairs/{name}",
        "compute",
        "Delete a key pair (204 from 2.2)",
        202,
    ),
    (
        "get",
        "/identity",
        "identity",
        "List identity versions",
        300,
    ),
    ("get", "/identity/v3", "identity", "Show identity v3", 200),
    (
        "post",
        "/identity/v3/auth/tokens",
        "identity",
        "Issue a token (password or token method)",
        201,
    ),
    (
        "get",
        "/identity/v3/auth/tokens",
        "identity",
        "Validate a token (X-Subject-Token)",
        200,
    ),
    (
        "head",
        "/identity/v3/auth/tokens",
        "identity",
        "Check a token",
        200,
    ),
    (
        "delete",
        "/identity/v3/auth/tokens",
        "identity",
        "Revoke a token",
        204,
    ),
    (
        "get",
        "/image/versions",
        "image",
        "List image API versions",
        200,
    ),
    (
        "get",
        "/image/v2/images",
        "image",
        "List images (name, id=in:, status, visibility, limit, marker)",
        200,
    ),
    (
        "get",
        "/image/v2/images/{id}",
        "image",
        "Show an image",
        200,
    ),
    (
        "post",
        "/identity/v2.0/tokens",
        "synnefo",
        "Astakos: authenticate (token or passwordCredentials)",
        200,
    ),
    (
        "get",
        "/account/v1.0/quotas",
        "synnefo",
        "Astakos: the caller's quotas per project and resource",
        200,
    ),
    (
        "get",
        "/account/v1.0/resources",
        "synnefo",
        "Astakos: the accounted resources",
        200,
    ),
    (
        "get",
        "/account/v1.0/projects",
        "synnefo",
        "Astakos: the caller's projects",
        200,
    ),
    (
        "get",
        "/account/v1.0/projects/{id}",
        "synnefo",
        "Astakos: show a project",
        200,
    ),
    (
        "post",
        "/account/v1.0/user_catalogs",
        "synnefo",
        "Astakos: user names from uuids and back",
        200,
    ),
    (
        "get",
        "/compute/v2.0/servers",
        "synnefo",
        "Cyclades: list servers",
        200,
    ),
    (
        "post",
        "/compute/v2.0/servers",
        "synnefo",
        "Cyclades: create a server",
        202,
    ),
    (
        "get",
        "/compute/v2.0/servers/detail",
        "synnefo",
        "Cyclades: list servers in detail",
        200,
    ),
    (
        "get",
        "/compute/v2.0/servers/{id}",
        "synnefo",
        "Cyclades: show a server",
        200,
    ),
    (
        "put",
        "/compute/v2.0/servers/{id}",
        "synnefo",
        "Cyclades: rename a server",
        204,
    ),
    (
        "delete",
        "/compute/v2.0/servers/{id}",
        "synnefo",
        "Cyclades: delete a server",
        204,
    ),
    (
        "post",
        "/compute/v2.0/servers/{id}/action",
        "synnefo",
        "Cyclades: start, shutdown, reboot, console",
        202,
    ),
    (
        "get",
        "/compute/v2.0/servers/{id}/metadata",
        "synnefo",
        "Cyclades: list metadata",
        200,
    ),
    (
        "get",
        "/compute/v2.0/flavors",
        "synnefo",
        "Cyclades: list flavors",
        200,
    ),
    (
        "get",
        "/compute/v2.0/flavors/detail",
        "synnefo",
        "Cyclades: list flavors in detail",
        200,
    ),
    (
        "get",
        "/compute/v2.0/flavors/{id}",
        "synnefo",
        "Cyclades: show a flavor",
        200,
    ),
    (
        "get",
        "/compute/v2.0/images",
        "synnefo",
        "Cyclades: list images",
        200,
    ),
    (
        "get",
        "/compute/v2.0/images/detail",
        "synnefo",
        "Cyclades: list images in detail",
        200,
    ),
    (
        "get",
        "/compute/v2.0/images/{id}",
        "synnefo",
        "Cyclades: show an image",
        200,
    ),
    (
        "get",
        "/healthz",
        "operations",
        "Liveness and database reachability",
        200,
    ),
    ("get", "/metrics", "operations", "Prometheus metrics", 200),
    ("get", "/openapi.json", "operations", "This document", 200),
];

fn fault_schema() -> Value {
    json!({
        "type": "object",
        "description": "A Nova fault: one key (itemNotFound, badRequest, unauthorized, forbidden, conflictingRequest, overLimit, serviceUnavailable, ...) holding code and message.",
        "additionalProperties": {
            "type": "object",
            "properties": {"code": {"type": "integer"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        },
    })
}

/// The document, with `public_url` as the server.
pub fn document(public_url: &str) -> Value {
    let mut paths = Map::new();
    for (method, path, tag, summary, status) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut responses = Map::new();
        responses.insert(status.to_string(), json!({"description": "Success"}));
        for (code, what) in [
            ("400", "Bad request"),
            ("401", "Missing or invalid token"),
            ("404", "Not found (or another project's)"),
        ] {
            responses.insert(
                code.to_string(),
                json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Fault"}}}}),
            );
        }
        let mut op = json!({
            "tags": [tag],
            "summary": summary,
            "operationId": format!("{method}{}", path.replace(['/', '{', '}', '.', '-'], "_")),
            "parameters": params,
            "responses": responses,
        });
        if *tag == "compute"
            && path.starts_with("/v2.1/")
            && let Some(p) = op["parameters"].as_array_mut()
        {
            p.push(
                json!({"name": "OpenStack-API-Version", "in": "header", "required": false,
                "schema": {"type": "string", "example": "compute 2.79"}}),
            );
        }
        if !matches!(*tag, "operations")
            && !path.starts_with("/identity")
            && *path != "/"
            && !path.ends_with("versions")
        {
            op["security"] = json!([{"token": []}]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Synnefo compute API",
            "version": crate::microversion::MAX.to_string(),
            "description": "OpenStack Compute v2.1 (microversions 2.1 to 2.79), Keystone v3 and Glance v2 subsets, and Synnefo's Cyclades/Astakos dialects.",
        },
        "servers": [{"url": public_url}],
        "paths": paths,
        "components": {
            "schemas": {"Fault": fault_schema()},
            "securitySchemes": {"token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"}},
        },
    })
}
