//! One type per RAPI call. Each endpoint is plain data that knows its
//! method, path, query and JSON body: building a request is a pure
//! function, tested without a server, and [`super::RapiClient::call`]
//! sends any of them the same way (retrying only idempotent GETs).

use std::time::Duration;

use reqwest::Method;
use serde::de::DeserializeOwned;
use serde_json::Value;
use synnefo_core::state::RebootKind;

use super::types::{
    CancelResult, ClusterInfo, ConnectNetworkRequest, CreateInstanceRequest, CreateNetworkRequest,
    DisconnectNetworkRequest, Instance, InstanceConsole, JobChange, ModifyInstanceRequest, Network,
    NodeGroup, NodeInfo, RapiJob, ReinstallRequest, ShutdownRequest, WaitForJobRequest, WireJobId,
};
use crate::error::RapiError;

/// A RAPI call: request shape and response type.
pub trait Endpoint {
    /// The decoded answer.
    type Response: DeserializeOwned;
    /// The HTTP method (`GET`, `POST`, `PUT`, `DELETE`).
    fn method(&self) -> Method;
    /// Path below the base URL (`/2/instances/snf-1/startup`), percent-encoded.
    fn path(&self) -> String;
    /// Query arguments (`bulk=1`, `dry-run=1`, ...); none by default.
    fn query(&self) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// JSON body, if any (GET `/wait` has one too).
    fn body(&self) -> Result<Option<Value>, RapiError> {
        Ok(None)
    }
    /// Safe to retry on transport errors: true for GETs only.
    fn idempotent(&self) -> bool {
        self.method() == Method::GET
    }
    /// A request timeout other than the client's default (long polls).
    fn timeout(&self) -> Option<Duration> {
        None
    }
}

fn to_body<T: serde::Serialize>(v: &T) -> Result<Option<Value>, RapiError> {
    serde_json::to_value(v)
        .map(Some)
        .map_err(|e| RapiError::Decode(format!("cannot encode request: {e}")))
}

/// Percent-encodes one path segment (instance names are DNS names, but be safe).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

macro_rules! simple_get {
    ($(#[$doc:meta])* $name:ident, $path:literal, $resp:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name;
        impl Endpoint for $name {
            type Response = $resp;
            fn method(&self) -> Method {
                Method::GET
            }
            fn path(&self) -> String {
                $path.to_string()
            }
        }
    };
}

simple_get!(
    /// `GET /version`: the RAPI version (2).
    GetVersion,
    "/version",
    u32
);
simple_get!(
    /// `GET /2/info`: cluster information.
    GetInfo,
    "/2/info",
    ClusterInfo
);
simple_get!(
    /// `GET /2/features`: optional features (`instance-create-reqv1`, ...).
    GetFeatures,
    "/2/features",
    Vec<String>
);

/// `GET /2/nodes?bulk=1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListNodes;

impl Endpoint for ListNodes {
    type Response = Vec<NodeInfo>;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        "/2/nodes".into()
    }
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![("bulk", "1".into())]
    }
}

/// `GET /2/instances?bulk=1[&fields=a,b]`. Ganeti 3.0 ignores `fields`
/// and sends every field; the simulator honours it (smaller answers for
/// 100k instances). The response type decodes either.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListInstances {
    /// Restrict the fields (empty: all).
    pub fields: Vec<String>,
}

impl Endpoint for ListInstances {
    type Response = Vec<Instance>;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        "/2/instances".into()
    }
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = vec![("bulk", "1".to_string())];
        if !self.fields.is_empty() {
            q.push(("fields", self.fields.join(",")));
        }
        q
    }
}

/// `GET /2/instances/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetInstance {
    /// The instance, by name.
    pub name: String,
}

impl Endpoint for GetInstance {
    type Response = Instance;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        format!("/2/instances/{}", encode_segment(&self.name))
    }
}

/// `POST /2/instances` with a version-1 body.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateInstance {
    /// The JSON request body.
    pub request: CreateInstanceRequest,
    /// Only run the pre-checks.
    pub dry_run: bool,
}

impl Endpoint for CreateInstance {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::POST
    }
    fn path(&self) -> String {
        "/2/instances".into()
    }
    fn query(&self) -> Vec<(&'static str, String)> {
        if self.dry_run {
            vec![("dry-run", "1".into())]
        } else {
            Vec::new()
        }
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
}

/// `DELETE /2/instances/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveInstance {
    /// The instance, by name.
    pub name: String,
}

impl Endpoint for RemoveInstance {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::DELETE
    }
    fn path(&self) -> String {
        format!("/2/instances/{}", encode_segment(&self.name))
    }
}

/// `PUT /2/instances/NAME/startup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupInstance {
    /// The instance, by name.
    pub name: String,
}

impl Endpoint for StartupInstance {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::PUT
    }
    fn path(&self) -> String {
        format!("/2/instances/{}/startup", encode_segment(&self.name))
    }
}

/// `PUT /2/instances/NAME/shutdown` (body: `{"timeout": secs}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownInstance {
    /// The instance, by name.
    pub name: String,
    /// The JSON request body.
    pub request: ShutdownRequest,
}

impl Endpoint for ShutdownInstance {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::PUT
    }
    fn path(&self) -> String {
        format!("/2/instances/{}/shutdown", encode_segment(&self.name))
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
}

/// `POST /2/instances/NAME/reboot?type=soft|hard`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebootInstance {
    /// The instance, by name.
    pub name: String,
    /// Soft or hard.
    pub kind: RebootKind,
}

impl Endpoint for RebootInstance {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::POST
    }
    fn path(&self) -> String {
        format!("/2/instances/{}/reboot", encode_segment(&self.name))
    }
    fn query(&self) -> Vec<(&'static str, String)> {
        let t = match self.kind {
            RebootKind::Soft => "soft",
            RebootKind::Hard => "hard",
        };
        vec![("type", t.into())]
    }
}

/// `PUT /2/instances/NAME/modify`.
#[derive(Debug, Clone, PartialEq)]
pub struct ModifyInstance {
    /// The instance, by name.
    pub name: String,
    /// The JSON request body.
    pub request: ModifyInstanceRequest,
}

impl Endpoint for ModifyInstance {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::PUT
    }
    fn path(&self) -> String {
        format!("/2/instances/{}/modify", encode_segment(&self.name))
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
}

/// `POST /2/instances/NAME/reinstall`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReinstallInstance {
    /// The instance, by name.
    pub name: String,
    /// The JSON request body.
    pub request: ReinstallRequest,
}

impl Endpoint for ReinstallInstance {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::POST
    }
    fn path(&self) -> String {
        format!("/2/instances/{}/reinstall", encode_segment(&self.name))
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
}

/// `GET /2/instances/NAME/console`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetConsole {
    /// The instance, by name.
    pub name: String,
}

impl Endpoint for GetConsole {
    type Response = InstanceConsole;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        format!("/2/instances/{}/console", encode_segment(&self.name))
    }
}

/// `GET /2/jobs/ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetJob {
    /// The job, by id.
    pub id: u64,
}

impl Endpoint for GetJob {
    type Response = RapiJob;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        format!("/2/jobs/{}", self.id)
    }
}

/// `GET /2/jobs/ID/wait` with a JSON body; `null` (`None`) when nothing
/// changed within Ganeti's ~10 s.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitForJobChange {
    /// The job, by id.
    pub id: u64,
    /// The JSON request body.
    pub request: WaitForJobRequest,
    /// Request timeout (must exceed the server's long-poll budget).
    pub timeout: Duration,
}

impl Endpoint for WaitForJobChange {
    type Response = Option<JobChange>;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        format!("/2/jobs/{}/wait", self.id)
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
    fn timeout(&self) -> Option<Duration> {
        Some(self.timeout)
    }
}

/// `DELETE /2/jobs/ID`: cancel a job that has not started running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelJob {
    /// The job, by id.
    pub id: u64,
}

impl Endpoint for CancelJob {
    type Response = CancelResult;
    fn method(&self) -> Method {
        Method::DELETE
    }
    fn path(&self) -> String {
        format!("/2/jobs/{}", self.id)
    }
}

/// `GET /2/groups?bulk=1`: the node groups.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListGroups;

impl Endpoint for ListGroups {
    type Response = Vec<NodeGroup>;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        "/2/groups".into()
    }
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![("bulk", "1".into())]
    }
}

/// `GET /2/networks?bulk=1`: every network with its fields.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListNetworks;

impl Endpoint for ListNetworks {
    type Response = Vec<Network>;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        "/2/networks".into()
    }
    fn query(&self) -> Vec<(&'static str, String)> {
        vec![("bulk", "1".into())]
    }
}

/// `GET /2/networks/NAME` (404 for an unknown network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetNetwork {
    /// The network, by name.
    pub name: String,
}

impl Endpoint for GetNetwork {
    type Response = Network;
    fn method(&self) -> Method {
        Method::GET
    }
    fn path(&self) -> String {
        format!("/2/networks/{}", encode_segment(&self.name))
    }
}

/// `POST /2/networks` (`OP_NETWORK_ADD`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNetwork {
    /// The JSON request body.
    pub request: CreateNetworkRequest,
}

impl Endpoint for CreateNetwork {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::POST
    }
    fn path(&self) -> String {
        "/2/networks".into()
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
}

/// `PUT /2/networks/NAME/connect` (`OP_NETWORK_CONNECT`, one node group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectNetwork {
    /// The network, by name.
    pub name: String,
    /// The JSON request body.
    pub request: ConnectNetworkRequest,
}

impl Endpoint for ConnectNetwork {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::PUT
    }
    fn path(&self) -> String {
        format!("/2/networks/{}/connect", encode_segment(&self.name))
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
}

/// `PUT /2/networks/NAME/disconnect` (`OP_NETWORK_DISCONNECT`, one node group).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectNetwork {
    /// The network, by name.
    pub name: String,
    /// The JSON request body.
    pub request: DisconnectNetworkRequest,
}

impl Endpoint for DisconnectNetwork {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::PUT
    }
    fn path(&self) -> String {
        format!("/2/networks/{}/disconnect", encode_segment(&self.name))
    }
    fn body(&self) -> Result<Option<Value>, RapiError> {
        to_body(&self.request)
    }
}

/// `DELETE /2/networks/NAME` (`OP_NETWORK_REMOVE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveNetwork {
    /// The network, by name.
    pub name: String,
}

impl Endpoint for RemoveNetwork {
    type Response = WireJobId;
    fn method(&self) -> Method {
        Method::DELETE
    }
    fn path(&self) -> String {
        format!("/2/networks/{}", encode_segment(&self.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_and_methods() {
        assert_eq!(GetVersion.path(), "/version");
        assert_eq!(ListNodes.query(), vec![("bulk", "1".to_string())]);
        let l = ListInstances {
            fields: vec!["name".into(), "status".into()],
        };
        assert_eq!(
            l.query(),
            vec![
                ("bulk", "1".to_string()),
                ("fields", "name,status".to_string())
            ]
        );
        let r = RebootInstance {
            name: "snf-1".into(),
            kind: RebootKind::Hard,
        };
        assert_eq!(
            (r.method(), r.path()),
            (Method::POST, "/2/instances/snf-1/reboot".to_string())
        );
        assert_eq!(r.query(), vec![("type", "hard".to_string())]);
        assert!(!r.idempotent());
        assert!(GetJob { id: 3 }.idempotent());
        assert_eq!(CancelJob { id: 3 }.method(), Method::DELETE);
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn network_requests() {
        assert_eq!(
            (ListNetworks.path(), ListNetworks.query()),
            ("/2/networks".to_string(), vec![("bulk", "1".to_string())])
        );
        assert_eq!(ListGroups.path(), "/2/groups");
        let c = CreateNetwork {
            request: CreateNetworkRequest {
                network_name: "snf-net-1".into(),
                network: "10.0.0.0/24".into(),
                gateway: Some("10.0.0.1".into()),
                conflicts_check: true,
                ..Default::default()
            },
        };
        assert_eq!(c.method(), Method::POST);
        assert_eq!(
            c.body().unwrap(),
            Some(
                json!({"network_name": "snf-net-1", "network": "10.0.0.0/24", "gateway": "10.0.0.1", "conflicts_check": true})
            )
        );
        let d = DisconnectNetwork {
            name: "a b".into(),
            request: DisconnectNetworkRequest {
                group_name: "default".into(),
            },
        };
        assert_eq!(
            (d.method(), d.path()),
            (Method::PUT, "/2/networks/a%20b/disconnect".to_string())
        );
        assert_eq!(d.body().unwrap(), Some(json!({"group_name": "default"})));
        let r = RemoveNetwork { name: "n".into() };
        assert_eq!(
            (r.method(), r.path()),
            (Method::DELETE, "/2/networks/n".to_string())
        );
        assert!(!r.idempotent());
    }

    #[test]
    fn shutdown_and_wait_bodies() {
        let s = ShutdownInstance {
            name: "x".into(),
            request: ShutdownRequest { timeout: Some(30) },
        };
        assert_eq!(s.body().unwrap(), Some(json!({"timeout": 30})));
        let w = WaitForJobChange {
            id: 9,
            request: WaitForJobRequest {
                fields: vec!["status".into()],
                previous_job_info: None,
                previous_log_serial: Some(4),
            },
            timeout: Duration::from_secs(20),
        };
        assert_eq!(w.method(), Method::GET);
        assert_eq!(
            w.body().unwrap(),
            Some(
                json!({"fields": ["status"], "previous_job_info": null, "previous_log_serial": 4})
            )
        );
    }
}
