//! The user's side of the multi-process test: a client that behaves like a
//! load balancer in front of the two APIs, and resolves requests cut off
//! in flight as a careful client would.

use super::*;

// ------------------------------------------------------------------ the load-balancing client

/// What became of one request.
pub(super) enum Sent {
    /// The API answered.
    Answer {
        api: usize,
        status: u16,
        body: Value,
    },
    /// The connection broke after the request was sent: it may or may not
    /// have taken effect.
    CutOff { api: usize, error: String },
}

/// Counters of the client.
#[derive(Default)]
pub(super) struct Stats {
    /// Requests answered, per API.
    pub(super) served: [AtomicU64; 2],
    /// Connections refused (request never delivered; sent to the other API).
    pub(super) refused: [AtomicU64; 2],
    /// Requests cut off in flight, per API.
    pub(super) cut_off: [AtomicU64; 2],
    /// 409 answers to actions and deletes.
    pub(super) conflicts: AtomicU64,
    /// Servers created so far (the kill's trigger).
    pub(super) created: AtomicUsize,
}

/// The user's view: a round-robin client in front of the APIs, with the
/// catalog entries the servers are created from.
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) apis: Vec<String>,
    pub(super) next: AtomicUsize,
    pub(super) token: OnceLock<String>,
    pub(super) image: String,
    pub(super) flavor: String,
    /// Write requests (POST/DELETE) in flight, per API.
    pub(super) in_flight_writes: [AtomicUsize; 2],
    pub(super) stats: Stats,
    /// What happened to servers with a cut-off request, by server name.
    pub(super) notes: Mutex<BTreeMap<String, Vec<String>>>,
    /// VM ids whose create was cut off.
    pub(super) cut_creates: Mutex<BTreeSet<String>>,
    /// VM ids whose delete was cut off.
    pub(super) cut_deletes: Mutex<BTreeSet<String>>,
}

/// How one lifecycle ended.
pub(super) enum Outcome {
    /// Created, stopped, started, deleted.
    Done,
    /// Its create was cut off and it stays in BUILD: only reconciliation
    /// can settle it.
    Stranded { id: String },
}

impl Client {
    pub(super) fn note(&self, name: &str, what: String) {
        eprintln!("[{TEST}] {name}: {what}");
        self.notes
            .lock()
            .expect("notes")
            .entry(name.to_string())
            .or_default()
            .push(what);
    }

    /// Sends one request to the next API in turn; a refused connection
    /// goes to the other one.
    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Sent, String> {
        let n = self.apis.len();
        let first = self.next.fetch_add(1, Relaxed) % n;
        let mut refusals = Vec::new();
        for k in 0..n {
            let api = (first + k) % n;
            let url = format!("{}{path}", self.apis[api]);
            let mut req = self.http.request(method.clone(), &url);
            if let Some(t) = self.token.get() {
                req = req.header("X-Auth-Token", t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let write = method != Method::GET;
            if write {
                self.in_flight_writes[api].fetch_add(1, Relaxed);
            }
            let result = async {
                let r = req.send().await?;
                let status = r.status().as_u16();
                let bytes = r.bytes().await?;
                Ok::<_, reqwest::Error>((status, bytes))
            }
            .await;
            if write {
                self.in_flight_writes[api].fetch_sub(1, Relaxed);
            }
            match result {
                Ok((status, bytes)) => {
                    self.stats.served[api].fetch_add(1, Relaxed);
                    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(&bytes).into_owned())
                    });
                    return Ok(Sent::Answer { api, status, body });
                }
                Err(e) if e.is_connect() => {
                    self.stats.refused[api].fetch_add(1, Relaxed);
                    refusals.push(format!("{}: {}", API_NAMES[api], error_chain(&e)));
                }
                Err(e) if e.is_timeout() => {
                    // Not a death: something hangs. A retry could act twice.
                    return Err(format!("{method} {url}: timed out: {}", error_chain(&e)));
                }
                Err(e) => {
                    self.stats.cut_off[api].fetch_add(1, Relaxed);
                    return Ok(Sent::CutOff {
                        api,
                        error: error_chain(&e),
                    });
                }
            }
        }
        Err(format!(
            "{method} {path}: no API accepted the connection: {refusals:?}"
        ))
    }

    /// A GET, sent again when cut off (reads are idempotent).
    pub(super) async fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let mut last = String::new();
        for _ in 0..5 {
            match self.send(Method::GET, path, None).await? {
                Sent::Answer { status, body, .. } => return Ok((status, body)),
                Sent::CutOff { api, error } => {
                    last = format!("{}: {error}", API_NAMES[api]);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        Err(format!("GET {path}: cut off 5 times; last: {last}"))
    }

    /// Keystone v3: a project-scoped token.
    pub(super) async fn login(
        &self,
        user: &str,
        password: &str,
        project: &str,
    ) -> Result<(), String> {
        let body = synnefo_test_support::api::password_auth(user, password, project);
        let url = format!("{}/identity/v3/auth/tokens", self.apis[0]);
        let r = self
            .http
            .post(&url)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {}", error_chain(&e)))?;
        let status = r.status();
        let token = r
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let text = r.text().await.unwrap_or_default();
        match token {
            Some(t) if status.as_u16() == 201 => {
                let _ = self.token.set(t);
                Ok(())
            }
            _ => Err(format!("POST {url}: HTTP {status}: {text}")),
        }
    }

    /// `GET /servers/ID`: its status, or None once it is gone (404).
    pub(super) async fn status(&self, id: &str) -> Result<Option<String>, String> {
        match self.get(&format!("/v2.1/servers/{id}")).await? {
            (200, v) => Ok(Some(
                v["server"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )),
            (404, _) => Ok(None),
            (s, v) => Err(format!("GET /servers/{id}: HTTP {s}: {v}")),
        }
    }

    /// Polls until the server's status is `want` ("DELETED": gone).
    /// Ok(Err(last status)) when `timeout` passes first.
    pub(super) async fn wait_status(
        &self,
        id: &str,
        want: &str,
        timeout: Duration,
    ) -> Result<Result<(), String>, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.status(id).await? {
                None if want == "DELETED" => return Ok(Ok(())),
                None => return Err(format!("server {id} vanished while waiting for {want}")),
                Some(s) if s == want => return Ok(Ok(())),
                Some(s) if s == "ERROR" => {
                    return Err(format!(
                        "server {id} went to ERROR while waiting for {want}"
                    ));
                }
                Some(s) => s,
            };
            if Instant::now() > deadline {
                return Ok(Err(last));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Our servers with exactly this name: (id, status).
    pub(super) async fn find_by_name(&self, name: &str) -> Result<Vec<(String, String)>, String> {
        let (status, v) = self
            .get(&format!("/v2.1/servers/detail?name={name}"))
            .await?;
        if status != 200 {
            return Err(format!(
                "GET /servers/detail?name={name}: HTTP {status}: {v}"
            ));
        }
        Ok(v["servers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["name"] == name)
            .map(|s| {
                (
                    json_id(&s["id"]).unwrap_or_default(),
                    s["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect())
    }

    /// Creates a server; a cut-off create is looked up by name before it is
    /// sent again. Returns (id, whether a create was cut off).
    pub(super) async fn create(&self, name: &str) -> Result<(String, bool), String> {
        let body =
            json!({"server": {"name": name, "imageRef": self.image, "flavorRef": self.flavor}});
        let mut cut = false;
        for _ in 0..5 {
            match self
                .send(Method::POST, "/v2.1/servers", Some(&body))
                .await?
            {
                Sent::Answer {
                    status: 202, body, ..
                } => {
                    let id = json_id(&body["server"]["id"])
                        .ok_or_else(|| format!("create {name}: no server id in {body}"))?;
                    if cut {
                        self.note(name, format!("created again as {id}"));
                    }
                    return Ok((id, cut));
                }
                Sent::Answer { api, status, body } => {
                    return Err(format!(
                        "create {name} via {}: HTTP {status}: {body}",
                        API_NAMES[api]
                    ));
                }
                Sent::CutOff { api, error } => {
                    cut = true;
                    let found = self.find_by_name(name).await?;
                    match found.as_slice() {
                        [] => self.note(
                            name,
                            format!(
                                "create cut off by {} ({error}); not stored: creating again",
                                API_NAMES[api]
                            ),
                        ),
                        [(id, status)] => {
                            self.note(
                                name,
                                format!(
                                    "create cut off by {} ({error}); stored as {id}, {status}",
                                    API_NAMES[api]
                                ),
                            );
                            self.cut_creates.lock().expect("set").insert(id.clone());
                            return Ok((id.clone(), true));
                        }
                        more => {
                            return Err(format!(
                                "{name}: several servers after one create: {more:?}"
                            ));
                        }
                    }
                }
            }
        }
        Err(format!("create {name}: cut off 5 times"))
    }

    /// Runs an action until the server is in `want`.
    pub(super) async fn act(
        &self,
        name: &str,
        id: &str,
        action: &str,
        want: &str,
    ) -> Result<(), String> {
        let body = json!({ action: null });
        let path = format!("/v2.1/servers/{id}/action");
        let mut cut = false;
        for _ in 0..10 {
            match self.send(Method::POST, &path, Some(&body)).await? {
                Sent::Answer { status: 202, .. } => {
                    return match self.wait_status(id, want, STATE_TIMEOUT).await? {
                        Ok(()) => Ok(()),
                        Err(last) => Err(format!(
                            "{name} ({id}): {action} accepted, but still {last} after {STATE_TIMEOUT:?}"
                        )),
                    };
                }
                Sent::Answer {
                    api,
                    status: 409,
                    body,
                } => {
                    self.stats.conflicts.fetch_add(1, Relaxed);
                    let now = self.status(id).await?;
                    if now.as_deref() == Some(want) {
                        if cut {
                            self.note(name, format!("{action}: 409, already {want}: done"));
                        }
                        return Ok(());
                    }
                    self.note(
                        name,
                        format!(
                            "{action} via {}: 409 ({body}) while {now:?}; again",
                            API_NAMES[api]
                        ),
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Sent::Answer { api, status, body } => {
                    return Err(format!(
                        "{name} ({id}): {action} via {}: HTTP {status}: {body}",
                        API_NAMES[api]
                    ));
                }
                Sent::CutOff { api, error } => {
                    cut = true;
                    match self.wait_status(id, want, SETTLE).await? {
                        Ok(()) => {
                            self.note(
                                name,
                                format!(
                                    "{action} cut off by {} ({error}); it went through: {want}",
                                    API_NAMES[api]
                                ),
                            );
                            return Ok(());
                        }
                        Err(last) => self.note(
                            name,
                            format!(
                                "{action} cut off by {} ({error}); still {last} after {SETTLE:?}: again",
                                API_NAMES[api]
                            ),
                        ),
                    }
                }
            }
        }
        Err(format!("{name} ({id}): {action} never went through"))
    }

    /// Deletes a server and waits until it is gone.
    pub(super) async fn delete(&self, name: &str, id: &str) -> Result<(), String> {
        let path = format!("/v2.1/servers/{id}");
        let mut gone = false;
        for _ in 0..10 {
            match self.send(Method::DELETE, &path, None).await? {
                Sent::Answer {
                    status: 204 | 404, ..
                } => {
                    gone = true;
                    break;
                }
                Sent::Answer {
                    api,
                    status: 409,
                    body,
                } => {
                    self.stats.conflicts.fetch_add(1, Relaxed);
                    self.note(
                        name,
                        format!("delete via {}: 409 ({body}); again", API_NAMES[api]),
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Sent::Answer { api, status, body } => {
                    return Err(format!(
                        "{name} ({id}): delete via {}: HTTP {status}: {body}",
                        API_NAMES[api]
                    ));
                }
                Sent::CutOff { api, error } => {
                    let now = self.status(id).await?;
                    self.note(
                        name,
                        format!(
                            "delete cut off by {} ({error}); now {}",
                            API_NAMES[api],
                            now.as_deref().unwrap_or("gone")
                        ),
                    );
                    self.cut_deletes.lock().expect("set").insert(id.to_string());
                    if now.is_none() {
                        gone = true;
                        break;
                    }
                }
            }
        }
        if !gone {
            return Err(format!("{name} ({id}): delete never went through"));
        }
        match self.wait_status(id, "DELETED", STATE_TIMEOUT).await? {
            Ok(()) => Ok(()),
            Err(last) => Err(format!("{name} ({id}): deleted, but still {last}")),
        }
    }

    /// One server's life: create -> ACTIVE, os-stop -> SHUTOFF,
    /// os-start -> ACTIVE, delete -> gone.
    pub(super) async fn lifecycle(&self, name: &str) -> Result<Outcome, String> {
        let (id, create_cut) = self.create(name).await?;
        self.stats.created.fetch_add(1, Relaxed);
        let wait = if create_cut {
            STRANDED_AFTER
        } else {
            STATE_TIMEOUT
        };
        if let Err(last) = self.wait_status(&id, "ACTIVE", wait).await? {
            if create_cut && last == "BUILD" {
                self.note(
                    name,
                    format!(
                        "{id} still BUILD {STRANDED_AFTER:?} after its cut-off create: stranded"
                    ),
                );
                return Ok(Outcome::Stranded { id });
            }
            return Err(format!(
                "{name} ({id}) not ACTIVE {wait:?} after its create; last {last}"
            ));
        }
        self.act(name, &id, "os-stop", "SHUTOFF").await?;
        self.act(name, &id, "os-start", "ACTIVE").await?;
        self.delete(name, &id).await?;
        Ok(Outcome::Done)
    }
}
