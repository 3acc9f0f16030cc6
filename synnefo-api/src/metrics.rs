//! Request metrics in the Prometheus text format, hand-rolled.
//!
//! Two families are enough to watch an API process: a request counter by
//! method, route template and status, and a latency histogram by route
//! template. Every label comes from a closed set, whatever clients send:
//! route templates (`/v2.1/servers/{id}`, or `unmatched`), not raw paths;
//! the standard methods, any other as `other` ([`method_label`]); status
//! codes (at most 1,000 values).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds (seconds).
pub const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The metric label of an HTTP method: the standard ones by name, anything
/// else (extension methods are arbitrary tokens) as `other`.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(&'static str, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    tokens_purged: u64,
    token_purges_failed: u64,
}

/// In-memory request metrics of this process.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        *inner
            .requests
            .entry((method_label(method), route.to_string(), status))
            .or_default() += 1;
        let h = inner.latency.entry(route.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Records a purge of expired tokens (`Err`: the purge failed).
    pub fn tokens_purged(&self, result: Result<u64, ()>) {
        if let Ok(mut inner) = self.inner.lock() {
            match result {
                Ok(n) => inner.tokens_purged += n,
                Err(()) => inner.token_purges_failed += 1,
            }
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let Ok(inner) = self.inner.lock() else {
            return out;
        };
        out.push_str("# HELP synnefo_api_requests_total HTTP requests served, by method, route and status.\n");
        out.push_str("# TYPE synnefo_api_requests_total counter\n");
        for ((method, route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "synnefo_api_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                escape(method),
                escape(route)
            );
        }
        out.push_str(
            "# HELP synnefo_api_tokens_purged_total Expired tokens deleted by this process.\n",
        );
        out.push_str("# TYPE synnefo_api_tokens_purged_total counter\n");
        let _ = writeln!(
            out,
            "synnefo_api_tokens_purged_total {}",
            inner.tokens_purged
        );
        out.push_str(
            "# HELP synnefo_api_token_purge_failures_total Purges of expired tokens that failed.\n",
        );
        out.push_str("# TYPE synnefo_api_token_purge_failures_total counter\n");
        let _ = writeln!(
            out,
            "synnefo_api_token_purge_failures_total {}",
            inner.token_purges_failed
        );
        out.push_str("# HELP synnefo_api_request_duration_seconds Request latency, by route.\n");
        out.push_str("# TYPE synnefo_api_request_duration_seconds histogram\n");
        for (route, h) in &inner.latency {
            let r = escape(route);
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "synnefo_api_request_duration_seconds_bucket{{route=\"{r}\",le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "synnefo_api_request_duration_seconds_bucket{{route=\"{r}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "synnefo_api_request_duration_seconds_sum{{route=\"{r}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "synnefo_api_request_duration_seconds_count{{route=\"{r}\"}} {}",
                h.count
            );
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_counts_and_buckets() {
        let m = Metrics::default();
        m.observe("GET", "/v2.1/servers", 200, Duration::from_millis(3));
        m.observe("GET", "/v2.1/servers", 200, Duration::from_millis(30));
        m.observe("POST", "/v2.1/servers", 400, Duration::from_millis(1));
        let text = m.render();
        assert!(text.contains("synnefo_api_requests_total{method=\"GET\",route=\"/v2.1/servers\",status=\"200\"} 2"), "{text}");
        assert!(text.contains(
            "synnefo_api_requests_total{method=\"POST\",route=\"/v2.1/servers\",status=\"400\"} 1"
        ));
        assert!(text.contains("synnefo_api_request_duration_seconds_bucket{route=\"/v2.1/servers\",le=\"0.005\"} 2"), "{text}");
        assert!(
            text.contains("synnefo_api_request_duration_seconds_count{route=\"/v2.1/servers\"} 3")
        );
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..100 {
            m.observe(
                &format!("JUNK{i}"),
                "unmatched",
                405,
                Duration::from_millis(1),
            );
        }
        let text = m.render();
        assert!(
            text.contains("synnefo_api_requests_total{method=\"other\",route=\"unmatched\",status=\"405\"} 100"),
            "{text}"
        );
        assert!(!text.contains("JUNK"));
    }
}
