//! Neutron list semantics: filters, `fields`, `limit`/`marker`.
//!
//! * **Filters**: any attribute a resource lists in its filter set; keys
//!   AND, a repeated key ORs (`?name=a&name=b`); booleans accept `True`,
//!   `true`, `1`, ... (400 otherwise); other keys are ignored. A filter is
//!   pushed down to the store ([`NetQuery`]) when the store can apply it
//!   exactly (a single value of a key it knows); every filter is then
//!   checked on the rendered item too, so the two always agree.
//! * **Pagination**: items are ordered by id; `marker` is the last id of
//!   the previous page and is honoured by the store (ids after it), so the
//!   SDK's marker loop always ends. A full page with more after it gets a
//!   `<collection>_links` `next` link; the last page gets none. Pages are
//!   bounded ([`ListRequest::bounded`], Neutron's `pagination_max_limit`):
//!   a list without `limit`, or with a larger one, gets a page of the
//!   maximum and a `next` link, and the store is read in pages of that
//!   size ([`ListRequest::collect`]) even when a filter cannot be pushed
//!   down to it.
//! * **`fields`**: only those keys, exactly (no implicit `id`).

use serde_json::{Map, Value};
use synnefo_core::ports::NetQuery;

use super::{Fault, bad_request};
use crate::extract::Params;

/// Boolean attributes (filter values are parsed, not compared as text).
const BOOLEANS: &[&str] = &["admin_state_up", "shared", "router:external", "enable_dhcp"];

/// Parameters that are not filters.
const CONTROL: &[&str] = &[
    "fields",
    "limit",
    "marker",
    "page_reverse",
    "sort_key",
    "sort_dir",
];

/// Parses a Neutron boolean (case-insensitive).
pub fn parse_bool(key: &str, v: &str) -> Result<bool, Fault> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" | "yes" | "y" | "on" => Ok(true),
        "false" | "0" | "f" | "no" | "n" | "off" => Ok(false),
        _ => Err(bad_request(format!(
            "Invalid input for {key}. Reason: '{v}' cannot be converted to boolean."
        ))),
    }
}

/// A list request, parsed.
#[derive(Debug, Clone)]
pub struct ListRequest {
    /// What the store is asked for.
    pub query: NetQuery,
    limit: Option<u64>,
    exact: bool,
    filters: Vec<(String, Vec<String>)>,
    fields: Vec<String>,
    params: Vec<(String, String)>,
}

impl ListRequest {
    /// Parses the query string: `allowed` are the resource's filter keys;
    /// `push` sets a single-valued filter on the store query and returns
    /// true when the store applies it exactly.
    pub fn parse(
        p: &Params,
        allowed: &[&str],
        push: impl Fn(&str, &str, &mut NetQuery) -> bool,
    ) -> Result<Self, Fault> {
        let limit = match p.limit().map_err(Fault::from)? {
            Some(0) | None => None,
            Some(n) => Some(n),
        };
        let mut query = NetQuery {
            marker: p.get("marker").map(str::to_string),
            ..NetQuery::default()
        };
        let mut exact = true;
        let mut filters: Vec<(String, Vec<String>)> = Vec::new();
        for (k, _) in &p.0 {
            if CONTROL.contains(&k.as_str())
                || !allowed.contains(&k.as_str())
                || filters.iter().any(|(f, _)| f == k)
            {
                continue;
            }
            let mut values: Vec<String> = Vec::new();
            for v in p.all(k) {
                if BOOLEANS.contains(&k.as_str()) {
                    values.push(parse_bool(k, v)?.to_string());
                } else {
                    values.push(v.to_string());
                }
            }
            let pushed = if k == "id" {
                query.ids = Some(values.clone());
                true
            } else {
                values.len() == 1 && push(k, &values[0], &mut query)
            };
            exact &= pushed;
            filters.push((k.clone(), values));
        }
        if exact {
            query.limit = limit.map(|l| l.saturating_add(1));
        }
        let fields = p
            .all("fields")
            .into_iter()
            .flat_map(|f| f.split(','))
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect();
        let params = p.0.iter().filter(|(k, _)| k != "marker").cloned().collect();
        Ok(Self {
            query,
            limit,
            exact,
            filters,
            fields,
            params,
        })
    }

    /// Bounds the page to `max` items (at least 1): no `limit` or a larger
    /// one becomes `max`.
    pub fn bounded(mut self, max: u64) -> Self {
        let max = max.max(1);
        let limit = self.limit.map_or(max, |l| l.min(max));
        self.limit = Some(limit);
        self.query.limit = self.exact.then(|| limit.saturating_add(1));
        self
    }

    /// The items of the page, rendered by `fetch` from store pages: one
    /// read of `limit + 1` when the store applies every filter; else reads
    /// of that size from the marker on, until `limit + 1` items pass the
    /// filters or the store has no more, so no read is larger than a page
    /// whatever the filters. Unbounded (one read) without a limit.
    pub async fn collect<F, Fut>(&self, mut fetch: F) -> Result<Vec<Value>, Fault>
    where
        F: FnMut(NetQuery) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Value>, Fault>>,
    {
        let Some(limit) = self.limit else {
            return fetch(self.query.clone()).await;
        };
        let chunk = limit.saturating_add(1);
        let want = usize::try_from(chunk).unwrap_or(usize::MAX);
        let mut q = self.query.clone();
        q.limit = Some(chunk);
        let mut out: Vec<Value> = Vec::new();
        loop {
            let page = fetch(q.clone()).await?;
            let got = page.len() as u64;
            let last = page
                .last()
                .and_then(|it| it.get("id"))
                .and_then(Value::as_str)
                .map(str::to_string);
            out.extend(
                page.into_iter()
                    .filter(|it| self.filters.iter().all(|(k, vs)| matches(it, k, vs))),
            );
            if out.len() >= want || got < chunk {
                break;
            }
            match last {
                Some(l) => q.marker = Some(l),
                None => break,
            }
        }
        Ok(out)
    }

    /// The response body: `items` filtered, paged, cut to `fields`, under
    /// `collection`, with a `next` link to `url` when more follow.
    pub fn finish(&self, collection: &str, items: Vec<Value>, url: &str) -> Value {
        let mut items: Vec<Value> = items
            .into_iter()
            .filter(|it| self.filters.iter().all(|(k, vs)| matches(it, k, vs)))
            .collect();
        let mut more = false;
        if let Some(l) = self.limit.and_then(|l| usize::try_from(l).ok())
            && items.len() > l
        {
            items.truncate(l);
            more = true;
        }
        let last = items
            .last()
            .and_then(|it| it.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let items: Vec<Value> = if self.fields.is_empty() {
            items
        } else {
            items.into_iter().map(|it| self.select(it)).collect()
        };
        let mut body = Map::new();
        body.insert(collection.to_string(), Value::Array(items));
        if more && let Some(last) = last {
            let mut q = self.params.clone();
            q.push(("marker".into(), last));
            let qs = serde_urlencoded::to_string(&q).unwrap_or_default();
            body.insert(
                format!("{collection}_links"),
                serde_json::json!([{"rel": "next", "href": format!("{url}?{qs}")}]),
            );
        }
        Value::Object(body)
    }

    /// One item cut to `fields` (show requests honour `fields` too).
    pub fn select(&self, item: Value) -> Value {
        if self.fields.is_empty() {
            return item;
        }
        match item {
            Value::Object(mut m) => Value::Object(
                self.fields
                    .iter()
                    .filter_map(|f| m.remove(f).map(|v| (f.clone(), v)))
                    .collect(),
            ),
            other => other,
        }
    }
}

/// True if `item` matches one of `wanted` for `key`.
fn matches(item: &Value, key: &str, wanted: &[String]) -> bool {
    if key == "fixed_ips" {
        // `fixed_ips=ip_address=A` / `fixed_ips=subnet_id=S`
        let ips = item.get("fixed_ips").and_then(Value::as_array);
        return wanted.iter().any(|w| {
            let Some((k, v)) = w.split_once('=') else {
                return false;
            };
            ips.is_some_and(|ips| {
                ips.iter()
                    .any(|ip| ip.get(k).and_then(Value::as_str) == Some(v))
            })
        });
    }
    let field = item.get(key);
    wanted.iter().any(|w| match field {
        Some(Value::String(s)) if key == "mac_address" => s.eq_ignore_ascii_case(w),
        Some(Value::String(s)) => s == w,
        Some(Value::Bool(b)) => b.to_string() == *w,
        Some(Value::Number(n)) => n.to_string() == *w,
        Some(Value::Null) | None => w.is_empty(),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(q: &str) -> ListRequest {
        ListRequest::parse(
            &Params::parse(Some(q)).unwrap(),
            &["id", "name", "shared", "fixed_ips"],
            |k, v, q| {
                if k == "name" {
                    q.name = Some(v.into());
                    true
                } else {
                    false
                }
            },
        )
        .unwrap()
    }

    fn items() -> Vec<Value> {
        vec![
            json!({"id": "a", "name": "x", "shared": true, "fixed_ips": [{"ip_address": "10.0.0.2", "subnet_id": "s"}]}),
            json!({"id": "b", "name": "y", "shared": false, "fixed_ips": []}),
            json!({"id": "c", "name": "x", "shared": false, "fixed_ips": []}),
        ]
    }

    fn ids(v: &Value, coll: &str) -> Vec<String> {
        v[coll]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn filters_and_or_and_booleans() {
        let r = req("name=x&name=y&shared=FALSE");
        assert!(r.query.name.is_none(), "two names are not pushed");
        assert_eq!(ids(&r.finish("n", items(), "u"), "n"), ["b", "c"]);
        let r = req("name=x");
        assert_eq!(r.query.name.as_deref(), Some("x"));
        let r = req("fixed_ips=ip_address%3D10.0.0.2&unknown=1");
        assert_eq!(ids(&r.finish("n", items(), "u"), "n"), ["a"]);
        assert!(
            ListRequest::parse(
                &Params::parse(Some("shared=maybe")).unwrap(),
                &["shared"],
                |_, _, _| false
            )
            .is_err()
        );
    }

    #[test]
    fn fields_are_exact_and_pages_link_on() {
        let r = req("fields=id&fields=name&limit=2&name=x&name=y");
        assert_eq!(
            r.query.limit, None,
            "a filter the store cannot apply: no store limit"
        );
        let out = r.finish("networks", items(), "http://h/network/v2.0/networks");
        assert_eq!(
            out["networks"],
            json!([{"id": "a", "name": "x"}, {"id": "b", "name": "y"}])
        );
        let href = out["networks_links"][0]["href"].as_str().unwrap();
        assert!(
            href.contains("marker=b") && href.contains("limit=2"),
            "{href}"
        );
        let r = req("limit=3");
        let out = r.finish("networks", items(), "u");
        assert!(out.get("networks_links").is_none());
        assert_eq!(r.query.limit, Some(4), "one more than the page, to know");
    }

    /// `n` items with ids `i000`, `i001`, ..., every third named `x`.
    fn many(n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"id": format!("i{i:03}"), "name": if i % 3 == 0 { "x" } else { "y" }}))
            .collect()
    }

    /// A store of `all`: ids after the marker, at most `limit`; records
    /// the size of every read.
    async fn store_read(
        all: &[Value],
        q: NetQuery,
        reads: &std::sync::Mutex<Vec<usize>>,
    ) -> Vec<Value> {
        let after: Vec<Value> = all
            .iter()
            .filter(|it| {
                q.marker
                    .as_deref()
                    .is_none_or(|m| it["id"].as_str().unwrap() > m)
            })
            .filter(|it| q.name.as_deref().is_none_or(|n| it["name"] == n))
            .take(q.limit.map_or(usize::MAX, |l| l as usize))
            .cloned()
            .collect();
        reads.lock().unwrap().push(after.len());
        after
    }

    fn bounded(q: &str, max: u64) -> ListRequest {
        req(q).bounded(max)
    }

    #[tokio::test]
    async fn pages_are_bounded_without_a_limit_and_capped_above_it() {
        let all = &many(25)[..];
        let reads = &std::sync::Mutex::new(Vec::new());
        // no limit: a page of the maximum, a next link, one read of max + 1
        let r = bounded("", 10);
        assert_eq!(r.query.limit, Some(11));
        let items = r
            .collect(move |q| async move { Ok(store_read(all, q, reads).await) })
            .await
            .unwrap();
        let out = r.finish("networks", items, "u");
        assert_eq!(ids(&out, "networks").len(), 10);
        let href = out["networks_links"][0]["href"].as_str().unwrap();
        assert!(href.contains("marker=i009"), "{href}");
        assert_eq!(*reads.lock().unwrap(), vec![11]);
        // a larger limit is capped; a smaller one kept
        assert_eq!(bounded("limit=500", 10).query.limit, Some(11));
        assert_eq!(bounded("limit=4", 10).query.limit, Some(5));
        // following the next links walks the whole list exactly once
        let mut seen = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let q = match &marker {
                Some(m) => format!("limit=7&marker={m}"),
                None => "limit=7".to_string(),
            };
            let r = bounded(&q, 10);
            let items = r
                .collect(move |q| async move { Ok(store_read(all, q, reads).await) })
                .await
                .unwrap();
            let out = r.finish("networks", items, "u");
            seen.extend(ids(&out, "networks"));
            match out.get("networks_links") {
                Some(l) => {
                    let href = l[0]["href"].as_str().unwrap();
                    marker = Some(href.rsplit("marker=").next().unwrap().to_string());
                }
                None => break,
            }
        }
        let want: Vec<String> = (0..25).map(|i| format!("i{i:03}")).collect();
        assert_eq!(seen, want);
    }

    #[tokio::test]
    async fn filters_the_store_cannot_apply_read_in_bounded_pages() {
        let all = &many(30)[..];
        let reads = &std::sync::Mutex::new(Vec::new());
        // two names: not pushed down; matches are i000, i003, ... (x) and
        // every y: ask for a page of 3 x-or-z items
        let r = bounded("name=x&name=z", 3);
        assert_eq!(r.query.limit, None, "not pushed: no single store limit");
        let items = r
            .collect(move |q| async move { Ok(store_read(all, q, reads).await) })
            .await
            .unwrap();
        let out = r.finish("networks", items, "u");
        assert_eq!(ids(&out, "networks"), ["i000", "i003", "i006"]);
        assert!(
            out["networks_links"][0]["href"]
                .as_str()
                .unwrap()
                .contains("marker=i006")
        );
        let reads = reads.lock().unwrap().clone();
        assert!(
            reads.iter().all(|&n| n <= 4),
            "every read at most a page + 1: {reads:?}"
        );
        assert_eq!(
            reads.len(),
            3,
            "4 + 4 + 4 rows read until 4 matched: {reads:?}"
        );
    }
}
