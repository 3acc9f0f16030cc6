//! The RAPI client: one reqwest connection pool per cluster, HTTPS with a
//! pinned certificate or CA, basic auth, timeouts, and retries with
//! exponential backoff for idempotent GETs only (a retried POST could
//! create a second instance).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use synnefo_core::settings::ClusterSettings;
use synnefo_core::state::{JobStatus, RebootKind};

use super::endpoints::*;
use super::tls::{NoVerification, PinnedOrCaVerifier, provider};
use super::types::*;
use crate::error::RapiError;

/// How to reach one cluster's RAPI.
#[derive(Clone)]
pub struct RapiConfig {
    /// Base URL, e.g. `https://cluster.example.org:5080`.
    pub url: String,
    /// Basic-auth user (none: no `Authorization` header).
    pub username: Option<String>,
    /// Basic-auth password (hidden in `Debug` output).
    pub password: Option<String>,
    /// PEM of the CA or of the pinned server certificate.
    pub ca_pem: Option<Vec<u8>>,
    /// Skip certificate verification (labs only; logged with `warn!`).
    pub insecure: bool,
    /// How long one HTTP request may take (connect, send, read the answer).
    pub timeout: Duration,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Extra attempts for idempotent GETs on transient errors.
    pub get_retries: u32,
    /// First backoff between retries (doubles each time).
    pub retry_backoff: Duration,
    /// Request timeout of one `/wait` long poll (Ganeti holds it ~10 s).
    pub wait_request_timeout: Duration,
}

impl fmt::Debug for RapiConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RapiConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .field("get_retries", &self.get_retries)
            .finish_non_exhaustive()
    }
}

impl RapiConfig {
    /// Defaults for `url`: 30 s timeout, 2 GET retries from 200 ms.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_string(),
            username: None,
            password: None,
            ca_pem: None,
            insecure: false,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            get_retries: 2,
            retry_backoff: Duration::from_millis(200),
            wait_request_timeout: Duration::from_secs(25),
        }
    }

    /// Sets basic-auth credentials.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.username = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Trusts this PEM (CA or pinned certificate).
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Sets the per-request timeout.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// From a `[ganeti.clusters.NAME]` section (reads `ca_file`).
    pub fn from_cluster(c: &ClusterSettings) -> Result<Self, RapiError> {
        let scheme = if c.https { "https" } else { "http" };
        let host = if c.host.contains(':') && !c.host.starts_with('[') {
            format!("[{}]", c.host)
        } else {
            c.host.clone()
        };
        let mut cfg = RapiConfig::new(format!("{scheme}://{host}:{}", c.port));
        if !c.username.is_empty() {
            cfg = cfg.credentials(c.username.clone(), c.password.expose());
        }
        if let Some(path) = &c.ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| RapiError::Config(format!("cannot read {}: {e}", path.display())))?;
            cfg.ca_pem = Some(pem);
        }
        cfg.insecure = c.insecure;
        cfg.timeout = Duration::from_secs(c.timeout_secs.max(1));
        Ok(cfg)
    }
}

/// An async Ganeti RAPI v2 client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RapiClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    cfg: RapiConfig,
}

impl RapiClient {
    /// Builds a client; fails on a bad URL or an unreadable CA PEM.
    pub fn new(cfg: RapiConfig) -> Result<Self, RapiError> {
        let url = reqwest::Url::parse(&cfg.url)
            .map_err(|e| RapiError::Config(format!("invalid RAPI URL {:?}: {e}", cfg.url)))?;
        let mut b = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .user_agent(concat!("synnefo-rs/", env!("CARGO_PKG_VERSION")));
        if url.scheme() == "https" {
            let algs = provider().signature_verification_algorithms;
            let verifier: Option<Arc<dyn rustls::client::danger::ServerCertVerifier>> = if cfg
                .insecure
            {
                tracing::warn!(
                    url = %cfg.url,
                    "RAPI certificate verification is DISABLED (insecure = true): anyone on the path can \
                     impersonate this Ganeti cluster; use this only in a lab"
                );
                Some(Arc::new(NoVerification(algs)))
            } else if let Some(pem) = &cfg.ca_pem {
                Some(Arc::new(PinnedOrCaVerifier::new(pem)?))
            } else {
                None
            };
            if let Some(v) = verifier {
                let tls = rustls::ClientConfig::builder_with_provider(provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| RapiError::Tls(e.to_string()))?
                    .dangerous()
                    .with_custom_certificate_verifier(v)
                    .with_no_client_auth();
                b = b.use_preconfigured_tls(tls);
            }
        } else if url.scheme() != "http" {
            return Err(RapiError::Config(format!(
                "unsupported URL scheme {:?}",
                url.scheme()
            )));
        }
        let http = b
            .build()
            .map_err(|e| RapiError::Config(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner { http, cfg }),
        })
    }

    /// The configuration this client was built with.
    pub fn config(&self) -> &RapiConfig {
        &self.inner.cfg
    }

    /// Sends one endpoint's request and decodes its answer, retrying
    /// idempotent GETs on transient errors.
    pub async fn call<E: Endpoint>(&self, ep: &E) -> Result<E::Response, RapiError> {
        let bytes = self.call_raw(ep).await?;
        decode(&bytes)
    }

    /// Like [`call`](Self::call) but returns the raw body (benchmarks,
    /// fixture recording).
    pub async fn call_raw<E: Endpoint>(&self, ep: &E) -> Result<bytes::Bytes, RapiError> {
        let retries = if ep.idempotent() {
            self.inner.cfg.get_retries
        } else {
            0
        };
        let mut attempt = 0;
        loop {
            match self.send_once(ep).await {
                Ok(b) => return Ok(b),
                Err(e) if e.is_transient() && attempt < retries => {
                    let wait = self
                        .inner
                        .cfg
                        .retry_backoff
                        .saturating_mul(1 << attempt.min(10));
                    tracing::debug!(path = %ep.path(), attempt, error = %e, "retrying RAPI GET in {wait:?}");
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send_once<E: Endpoint>(&self, ep: &E) -> Result<bytes::Bytes, RapiError> {
        let cfg = &self.inner.cfg;
        let url = format!("{}{}", cfg.url, ep.path());
        let mut req = self
            .inner
            .http
            .request(ep.method(), &url)
            .header("Accept", "application/json");
        let query = ep.query();
        if !query.is_empty() {
            req = req.query(&query);
        }
        if let Some(user) = &cfg.username {
            req = req.basic_auth(user, cfg.password.as_deref());
        }
        if let Some(body) = ep.body()? {
            let bytes = serde_json::to_vec(&body).map_err(|e| RapiError::Decode(e.to_string()))?;
            req = req.header("Content-Type", "application/json").body(bytes);
        }
        if let Some(t) = ep.timeout() {
            req = req.timeout(t);
        }
        let resp = req.send().await.map_err(|e| classify(e, &url))?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| classify(e, &url))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(http_error(status, &body, &ep.path()))
    }

    // ------------------------------------------------------------ typed helpers

    /// `GET /version`.
    pub async fn version(&self) -> Result<u32, RapiError> {
        self.call(&GetVersion).await
    }

    /// `GET /2/info`.
    pub async fn info(&self) -> Result<ClusterInfo, RapiError> {
        self.call(&GetInfo).await
    }

    /// `GET /2/features`.
    pub async fn features(&self) -> Result<Vec<String>, RapiError> {
        self.call(&GetFeatures).await
    }

    /// `GET /2/nodes?bulk=1`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, RapiError> {
        self.call(&ListNodes).await
    }

    /// `GET /2/instances?bulk=1`.
    pub async fn instances(&self) -> Result<Vec<Instance>, RapiError> {
        self.call(&ListInstances::default()).await
    }

    /// `GET /2/instances?bulk=1&fields=...` (the simulator honours `fields`).
    pub async fn instances_with_fields(&self, fields: &[&str]) -> Result<Vec<Instance>, RapiError> {
        self.call(&ListInstances {
            fields: fields.iter().map(|s| s.to_string()).collect(),
        })
        .await
    }

    /// `GET /2/instances/NAME`; [`RapiError::NotFound`] if absent.
    pub async fn instance(&self, name: &str) -> Result<Instance, RapiError> {
        self.call(&GetInstance { name: name.into() }).await
    }

    /// `POST /2/instances`.
    pub async fn create_instance(&self, request: &CreateInstanceRequest) -> Result<u64, RapiError> {
        Ok(self
            .call(&CreateInstance {
                request: request.clone(),
                dry_run: false,
            })
            .await?
            .0)
    }

    /// `DELETE /2/instances/NAME`.
    pub async fn remove_instance(&self, name: &str) -> Result<u64, RapiError> {
        Ok(self.call(&RemoveInstance { name: name.into() }).await?.0)
    }

    /// `PUT /2/instances/NAME/startup`.
    pub async fn startup(&self, name: &str) -> Result<u64, RapiError> {
        Ok(self.call(&StartupInstance { name: name.into() }).await?.0)
    }

    /// `PUT /2/instances/NAME/shutdown` (`timeout`: seconds for a clean shutdown).
    pub async fn shutdown(&self, name: &str, timeout: Option<Duration>) -> Result<u64, RapiError> {
        Ok(self
            .call(&ShutdownInstance {
                name: name.into(),
                request: ShutdownRequest {
                    timeout: timeout.map(|t| t.as_secs()),
                },
            })
            .await?
            .0)
    }

    /// `POST /2/instances/NAME/reboot?type=...`.
    pub async fn reboot(&self, name: &str, kind: RebootKind) -> Result<u64, RapiError> {
        Ok(self
            .call(&RebootInstance {
                name: name.into(),
                kind,
            })
            .await?
            .0)
    }

    /// `PUT /2/instances/NAME/modify`.
    pub async fn modify(
        &self,
        name: &str,
        request: &ModifyInstanceRequest,
    ) -> Result<u64, RapiError> {
        Ok(self
            .call(&ModifyInstance {
                name: name.into(),
                request: request.clone(),
            })
            .await?
            .0)
    }

    /// `POST /2/instances/NAME/reinstall` (body version 1).
    pub async fn reinstall(
        &self,
        name: &str,
        request: &ReinstallRequest,
    ) -> Result<u64, RapiError> {
        Ok(self
            .call(&ReinstallInstance {
                name: name.into(),
                request: request.clone(),
            })
            .await?
            .0)
    }

    /// `GET /2/groups?bulk=1`.
    pub async fn groups(&self) -> Result<Vec<NodeGroup>, RapiError> {
        self.call(&ListGroups).await
    }

    /// `GET /2/networks?bulk=1`.
    pub async fn networks(&self) -> Result<Vec<Network>, RapiError> {
        self.call(&ListNetworks).await
    }

    /// `GET /2/networks/NAME`; [`RapiError::NotFound`] if absent.
    pub async fn network(&self, name: &str) -> Result<Network, RapiError> {
        self.call(&GetNetwork { name: name.into() }).await
    }

    /// `POST /2/networks`.
    pub async fn create_network(&self, request: &CreateNetworkRequest) -> Result<u64, RapiError> {
        Ok(self
            .call(&CreateNetwork {
                request: request.clone(),
            })
            .await?
            .0)
    }

    /// `PUT /2/networks/NAME/connect` (one node group).
    pub async fn connect_network(
        &self,
        name: &str,
        request: &ConnectNetworkRequest,
    ) -> Result<u64, RapiError> {
        Ok(self
            .call(&ConnectNetwork {
                name: name.into(),
                request: request.clone(),
            })
            .await?
            .0)
    }

    /// `PUT /2/networks/NAME/disconnect` (one node group).
    pub async fn disconnect_network(&self, name: &str, group: &str) -> Result<u64, RapiError> {
        Ok(self
            .call(&DisconnectNetwork {
                name: name.into(),
                request: DisconnectNetworkRequest {
                    group_name: group.into(),
                },
            })
            .await?
            .0)
    }

    /// `DELETE /2/networks/NAME`.
    pub async fn remove_network(&self, name: &str) -> Result<u64, RapiError> {
        Ok(self.call(&RemoveNetwork { name: name.into() }).await?.0)
    }

    /// `GET /2/instances/NAME/console`.
    pub async fn console(&self, name: &str) -> Result<InstanceConsole, RapiError> {
        self.call(&GetConsole { name: name.into() }).await
    }

    /// `GET /2/jobs/ID`; [`RapiError::NotFound`] for an unknown job (which
    /// Ganeti answers with 200 and all fields null).
    pub async fn job(&self, id: u64) -> Result<RapiJob, RapiError> {
        let job = self.call(&GetJob { id }).await?;
        if job.is_missing() {
            return Err(RapiError::NotFound(format!("job {id}")));
        }
        Ok(job)
    }

    /// One `GET /2/jobs/ID/wait` long poll; `None` when nothing changed.
    pub async fn wait_for_job_change(
        &self,
        id: u64,
        request: &WaitForJobRequest,
    ) -> Result<Option<JobChange>, RapiError> {
        self.call(&WaitForJobChange {
            id,
            request: request.clone(),
            timeout: self.inner.cfg.wait_request_timeout,
        })
        .await
    }

    /// `DELETE /2/jobs/ID`.
    pub async fn cancel_job(&self, id: u64) -> Result<CancelResult, RapiError> {
        self.call(&CancelJob { id }).await
    }

    /// Long-polls until the job reaches a terminal status (or `timeout`
    /// passes: [`RapiError::Timeout`]) and returns its final state,
    /// whatever the outcome.
    pub async fn wait_for_job(&self, id: u64, timeout: Duration) -> Result<RapiJob, RapiError> {
        let deadline = Instant::now() + timeout;
        let mut request = WaitForJobRequest {
            fields: vec!["status".into()],
            previous_job_info: None,
            previous_log_serial: None,
        };
        loop {
            let job = self.job(id).await?;
            if job.job_status()?.is_terminal() {
                return Ok(job);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RapiError::Timeout(format!(
                    "job {id} still {} after {timeout:?}",
                    job.status.unwrap_or_default()
                )));
            }
            request.previous_job_info =
                Some(vec![Value::String(job.status.clone().unwrap_or_default())]);
            let ep = WaitForJobChange {
                id,
                request: request.clone(),
                timeout: self
                    .inner
                    .cfg
                    .wait_request_timeout
                    .min(left + Duration::from_millis(50)),
            };
            match tokio::time::timeout(left, self.call(&ep)).await {
                Ok(Ok(Some(change))) => {
                    if let Some(last) = change.log_entries.last() {
                        request.previous_log_serial = Some(last.serial);
                    }
                }
                Ok(Ok(None)) => {}
                Ok(Err(RapiError::Timeout(_))) | Err(_) => {}
                Ok(Err(e)) => return Err(e),
            }
        }
    }

    /// Like [`wait_for_job`](Self::wait_for_job), but a job that ends in
    /// `error` or `canceled` is a [`RapiError::JobFailed`] carrying the op
    /// result and the log.
    pub async fn wait_for_job_success(
        &self,
        id: u64,
        timeout: Duration,
    ) -> Result<RapiJob, RapiError> {
        let job = self.wait_for_job(id, timeout).await?;
        match job.job_status()? {
            JobStatus::Success => Ok(job),
            _ => {
                let (result, message) = job.failure().unwrap_or((
                    Value::Null,
                    format!("job {}", job.status.clone().unwrap_or_default()),
                ));
                Err(RapiError::JobFailed {
                    job_id: id,
                    message,
                    error: synnefo_core::state::OpError::from_result(&result).map(Box::new),
                    result,
                    log: job.log_messages(),
                })
            }
        }
    }
}

/// Decodes a RAPI JSON body.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RapiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned();
        RapiError::Decode(format!("{e} (body starts {head:?})"))
    })
}

/// Decodes a `GET /2/instances?bulk=1` body (what the benchmark measures).
pub fn decode_instances(bytes: &[u8]) -> Result<Vec<Instance>, RapiError> {
    decode(bytes)
}

fn http_error(status: StatusCode, body: &[u8], path: &str) -> RapiError {
    let text = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) => e.text(),
        Err(_) => {
            let s = String::from_utf8_lossy(&body[..body.len().min(500)])
                .trim()
                .to_string();
            if s.is_empty() {
                status.canonical_reason().unwrap_or("").to_string()
            } else {
                s
            }
        }
    };
    match status.as_u16() {
        401 | 403 => RapiError::Auth {
            status: status.as_u16(),
            message: text,
        },
        404 => RapiError::NotFound(format!("{path}: {text}")),
        409 => RapiError::Conflict(text),
        400 | 415 => RapiError::BadRequest(text),
        s => RapiError::Http {
            status: s,
            message: text,
        },
    }
}

fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // io::Error::source() skips the wrapped error itself: look inside.
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
            && is_tls(inner)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !parts.contains(&s) {
            parts.push(s);
        }
        cur = err.source();
    }
    parts.join(": ")
}

fn classify(e: reqwest::Error, url: &str) -> RapiError {
    let msg = format!("{url}: {}", chain(&e));
    if is_tls(&e) {
        RapiError::Tls(msg)
    } else if e.is_timeout() {
        RapiError::Timeout(msg)
    } else if e.is_decode() {
        RapiError::Decode(msg)
    } else {
        RapiError::Transport(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_mapping() {
        let body = br#"{"code": 401, "message": "Unauthorized", "explain": "No authentication"}"#;
        match http_error(StatusCode::UNAUTHORIZED, body, "/2/info") {
            RapiError::Auth { status, message } => {
                assert_eq!(status, 401);
                assert!(message.contains("Unauthorized"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            http_error(StatusCode::NOT_FOUND, b"", "/x"),
            RapiError::NotFound(_)
        ));
        assert!(matches!(
            http_error(StatusCode::CONFLICT, b"{}", "/x"),
            RapiError::Conflict(_)
        ));
        assert!(matches!(
            http_error(StatusCode::UNSUPPORTED_MEDIA_TYPE, b"x", "/x"),
            RapiError::BadRequest(_)
        ));
        assert!(matches!(
            http_error(StatusCode::BAD_GATEWAY, b"x", "/x"),
            RapiError::Http { status: 502, .. }
        ));
    }

    #[test]
    fn config_debug_hides_password() {
        let c = RapiConfig::new("https://h:5080/").credentials("u", "secret");
        assert_eq!(c.url, "https://h:5080");
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[test]
    fn bad_urls_are_config_errors() {
        assert!(matches!(
            RapiClient::new(RapiConfig::new("not a url")),
            Err(RapiError::Config(_))
        ));
        assert!(matches!(
            RapiClient::new(RapiConfig::new("ftp://x")),
            Err(RapiError::Config(_))
        ));
        assert!(matches!(
            RapiClient::new(RapiConfig::new("https://x").ca_pem(b"junk".to_vec())),
            Err(RapiError::Config(_))
        ));
    }

    #[test]
    fn decode_errors_do_not_panic() {
        assert!(matches!(
            decode_instances(b"[{\"name\": 3}]"),
            Err(RapiError::Decode(_))
        ));
        assert!(matches!(
            decode_instances(b"\xff\xfe"),
            Err(RapiError::Decode(_))
        ));
    }
}
