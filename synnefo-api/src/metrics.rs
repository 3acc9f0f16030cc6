//! Request metrics in the Prometheus text format, hand-rolled.
//!
//! Two families are enough to watch an API process: a request counter by
//! method, route template and status, and a latency histogram by route
//! template. Route templates (`/v2.1/servers/{id}`), not raw paths, keep
//! the label set bounded whatever clients send.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds (seconds).
pub const BUCKETS: [f64; 11] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
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
            .entry((method.to_string(), route.to_string(), status))
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
}
