//! The compute API as the lab's user sees it, over the shared typed client.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use serde_json::{Value, json};
use synnefo_test_support::api::{ApiClient, Reply, error_chain};

use crate::{Procs, STATE_TIMEOUT};

// ------------------------------------------------------------------ the API client

/// The compute API as a user sees it (its base is the compute endpoint).
pub(crate) struct Api {
    pub(crate) client: ApiClient,
}

impl Api {
    pub(crate) async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        self.client
            .request(method.clone(), path, body)
            .await
            .map_err(|e| anyhow!("{method} {path}: {}", error_chain(&e)))
    }

    /// `METHOD PATH` that must answer `status`; its JSON body (`Null` when
    /// the body is empty).
    pub(crate) async fn expect(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        status: u16,
    ) -> Result<Value> {
        let r = self.call(method, path, body).await?;
        ensure!(
            r.status == status,
            "{method} {path}: HTTP {} (expected {status}): {}",
            r.status,
            r.text()
        );
        if r.text().trim().is_empty() {
            return Ok(Value::Null);
        }
        r.json()
            .map_err(|e| anyhow!("{method} {path}: not JSON: {e}"))
    }

    /// `GET /servers/ID`: the server, or None on 404.
    pub(crate) async fn server(&self, id: &str) -> Result<Option<Value>> {
        let r = self.call("GET", &format!("/servers/{id}"), None).await?;
        match r.status {
            200 => Ok(Some(r.json().map_err(|e| anyhow!(e))?["server"].clone())),
            404 => Ok(None),
            s => bail!("GET /servers/{id}: HTTP {s}: {}", r.text()),
        }
    }

    pub(crate) async fn action(&self, id: &str, body: Value) -> Result<()> {
        let r = self
            .call("POST", &format!("/servers/{id}/action"), Some(&body))
            .await?;
        ensure!(
            r.status == 202,
            "action {body} on server {id}: HTTP {}: {}",
            r.status,
            r.text()
        );
        Ok(())
    }

    pub(crate) async fn create(&self, name: &str, image: &str, flavor: &str) -> Result<String> {
        Ok(self.create_with_password(name, image, flavor).await?.0)
    }

    /// Creates a server; returns its id and `adminPass`.
    pub(crate) async fn create_with_password(
        &self,
        name: &str,
        image: &str,
        flavor: &str,
    ) -> Result<(String, String)> {
        let body = json!({"server": {"name": name, "imageRef": image, "flavorRef": flavor}});
        let r = self.call("POST", "/servers", Some(&body)).await?;
        ensure!(
            r.status == 202,
            "create {name}: HTTP {}: {}",
            r.status,
            r.text()
        );
        let v = r.json().map_err(|e| anyhow!(e))?;
        let id = v["server"]["id"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("create {name}: no server id in {v}"))?;
        let pass = v["server"]["adminPass"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("create {name}: no adminPass in {v}"))?;
        Ok((id, pass))
    }

    /// Creates a server with Nova's `networks` (e.g. `[{"uuid": N}]`);
    /// returns its id.
    pub(crate) async fn create_on_networks(
        &self,
        name: &str,
        image: &str,
        flavor: &str,
        networks: Value,
    ) -> Result<String> {
        let body = json!({"server": {
            "name": name, "imageRef": image, "flavorRef": flavor, "networks": networks,
        }});
        let v = self.expect("POST", "/servers", Some(&body), 202).await?;
        v["server"]["id"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("create {name}: no server id in {v}"))
    }

    // ---- Neutron (an `Api` whose base is the network endpoint's `/v2.0`)

    /// `POST /networks`: a private network of the caller's; its id.
    pub(crate) async fn create_network(&self, name: &str) -> Result<String> {
        let body = json!({"network": {"name": name}});
        let v = self.expect("POST", "/networks", Some(&body), 201).await?;
        v["network"]["id"]
            .as_str()
            .map(String::from)
            .with_context(|| format!("POST /networks: no id in {v}"))
    }

    /// `POST /subnets`: an IPv4 subnet (gateway and pool by default); its body.
    pub(crate) async fn create_subnet(&self, network: &str, cidr: &str) -> Result<Value> {
        let body = json!({"subnet": {
            "network_id": network, "ip_version": 4, "cidr": cidr, "name": cidr,
        }});
        let v = self.expect("POST", "/subnets", Some(&body), 201).await?;
        Ok(v["subnet"].clone())
    }

    /// `GET /ports?QUERY`: the ports.
    pub(crate) async fn ports(&self, query: &str) -> Result<Vec<Value>> {
        let v = self
            .expect("GET", &format!("/ports?{query}"), None, 200)
            .await?;
        v["ports"]
            .as_array()
            .cloned()
            .with_context(|| format!("GET /ports?{query}: no ports in {v}"))
    }

    /// `GET /networks/ID`: the network, or None on 404.
    pub(crate) async fn network(&self, id: &str) -> Result<Option<Value>> {
        let r = self.call("GET", &format!("/networks/{id}"), None).await?;
        match r.status {
            200 => Ok(Some(r.json().map_err(|e| anyhow!(e))?["network"].clone())),
            404 => Ok(None),
            s => bail!("GET /networks/{id}: HTTP {s}: {}", r.text()),
        }
    }

    /// Polls until the server's status is `want` (or it is gone, for
    /// `want == "DELETED"`); fails at once on an unexpected ERROR.
    pub(crate) async fn wait_status(
        &self,
        id: &str,
        want: &str,
        procs: &mut Procs,
    ) -> Result<Value> {
        let deadline = Instant::now() + STATE_TIMEOUT;
        let mut last;
        loop {
            let server = self.server(id).await?;
            match server {
                None if want == "DELETED" => return Ok(Value::Null),
                None => bail!("server {id} vanished while waiting for {want}"),
                Some(s) => {
                    let status = s["status"].as_str().unwrap_or_default().to_string();
                    if status == want {
                        return Ok(s);
                    }
                    if status == "ERROR" && want != "ERROR" {
                        bail!("server {id} went to ERROR while waiting for {want}: {s}");
                    }
                    last = s;
                }
            }
            procs.check_alive()?;
            if Instant::now() > deadline {
                bail!("server {id} not {want} after {STATE_TIMEOUT:?}; last seen: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Every IPv4 address of a server (`addresses` of the API's server body).
pub(crate) fn server_ips(server: &Value) -> Vec<String> {
    server["addresses"]
        .as_object()
        .map(|nets| {
            nets.values()
                .filter_map(Value::as_array)
                .flatten()
                .filter_map(|a| a["addr"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
