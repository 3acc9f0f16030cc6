//! A typed client for our own HTTP API (identity and compute), on reqwest.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

/// An error of a reqwest call with its causes (`a: b: c`).
pub fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// The Keystone v3 password request for a project-scoped token.
pub fn password_auth(user: &str, password: &str, project: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}})
}

/// An id printed as a JSON number or string.
pub fn json_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One answer: status, headers and body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
    /// Response body.
    pub body: Vec<u8>,
}

impl Reply {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "HTTP {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The API at `base` (`http://127.0.0.1:PORT`), as one user sees it once
/// logged in.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl ApiClient {
    /// A client for the API at `base`, each request bounded by `timeout`.
    pub fn new(base: &str, timeout: Duration) -> ApiClient {
        ApiClient {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .expect("HTTP client"),
            base: base.trim_end_matches('/').to_string(),
            token: None,
        }
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The token requests carry (after [`login`](Self::login)).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Uses `token` for the requests that follow.
    pub fn set_token(&mut self, token: &str) {
        self.token = Some(token.to_string());
    }

    /// One request to `base + path`, with the token and a JSON body if any.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply, reqwest::Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.header("X-Auth-Token", t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let r = req.send().await?;
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let body = r.bytes().await?.to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// A GET's status, or why no answer came.
    pub async fn status(&self, path: &str) -> Result<u16, String> {
        self.request(Method::GET, path, None)
            .await
            .map(|r| r.status)
            .map_err(|e| error_chain(&e))
    }

    /// Keystone v3 password login: the answer; on 201 its token is used
    /// from now on.
    pub async fn login(
        &mut self,
        user: &str,
        password: &str,
        project: &str,
    ) -> Result<Reply, reqwest::Error> {
        let r = self
            .request(
                Method::POST,
                "/identity/v3/auth/tokens",
                Some(&password_auth(user, password, project)),
            )
            .await?;
        if r.status == 201
            && let Some(t) = r.header("x-subject-token")
        {
            self.token = Some(t.to_string());
        }
        Ok(r)
    }

    /// `GET <compute>/servers/ID`: the server, `None` on 404.
    pub async fn server(&self, compute: &str, id: &str) -> Result<Option<Value>, String> {
        let path = format!("{compute}/servers/{id}");
        let r = self
            .request(Method::GET, &path, None)
            .await
            .map_err(|e| format!("GET {path}: {}", error_chain(&e)))?;
        match r.status {
            200 => Ok(Some(r.json()?["server"].clone())),
            404 => Ok(None),
            s => Err(format!("GET {path}: HTTP {s}: {}", r.text())),
        }
    }

    /// `POST <compute>/servers`: the new server's id and `adminPass`.
    pub async fn create_server(
        &self,
        compute: &str,
        name: &str,
        image: &str,
        flavor: &str,
    ) -> Result<(String, String), String> {
        let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor}});
        let r = self
            .request(Method::POST, &format!("{compute}/servers"), Some(&body))
            .await
            .map_err(|e| format!("create {name}: {}", error_chain(&e)))?;
        if r.status != 202 {
            return Err(format!("create {name}: HTTP {}: {}", r.status, r.text()));
        }
        let v = r.json()?;
        let id = json_id(&v["server"]["id"]).ok_or_else(|| format!("create {name}: no id: {v}"))?;
        let pass = v["server"]["adminPass"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        Ok((id, pass))
    }

    /// `POST <compute>/servers/ID/action` that must be accepted (202).
    pub async fn action(&self, compute: &str, id: &str, body: &Value) -> Result<(), String> {
        let r = self
            .request(
                Method::POST,
                &format!("{compute}/servers/{id}/action"),
                Some(body),
            )
            .await
            .map_err(|e| format!("action {body} on {id}: {}", error_chain(&e)))?;
        if r.status == 202 {
            Ok(())
        } else {
            Err(format!(
                "action {body} on {id}: HTTP {}: {}",
                r.status,
                r.text()
            ))
        }
    }

    /// `DELETE <compute>/servers/ID` that must be accepted (204).
    pub async fn delete_server(&self, compute: &str, id: &str) -> Result<(), String> {
        let r = self
            .request(Method::DELETE, &format!("{compute}/servers/{id}"), None)
            .await
            .map_err(|e| format!("delete {id}: {}", error_chain(&e)))?;
        if r.status == 204 {
            Ok(())
        } else {
            Err(format!("delete {id}: HTTP {}: {}", r.status, r.text()))
        }
    }
}
