//! Proxy-wide counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// A point-in-time copy of the proxy's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Forwardings waiting for their client.
    pub pending_forwardings: u64,
    /// Sessions relaying now.
    pub active_sessions: u64,
    /// Sessions authenticated since start.
    pub total_sessions: u64,
    /// Forwardings requested since start.
    pub total_forwardings: u64,
    /// Forwardings whose password expired unused.
    pub expired_forwardings: u64,
    /// Bytes relayed from viewers to backends.
    pub bytes_client_to_server: u64,
    /// Bytes relayed from backends to viewers.
    pub bytes_server_to_client: u64,
    /// Wrong or reused passwords.
    pub auth_failures: u64,
    /// Connections refused by the failure rate limit or the session limit.
    pub rejected_connections: u64,
    /// Sessions that failed at the backend (connect or handshake).
    pub backend_failures: u64,
    /// Forwarding requests refused by a per-user or per-project cap or a
    /// full port pool.
    pub rejected_forwardings: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub pending_forwardings: AtomicU64,
    pub active_sessions: AtomicU64,
    pub total_sessions: AtomicU64,
    pub total_forwardings: AtomicU64,
    pub expired_forwardings: AtomicU64,
    pub bytes_client_to_server: AtomicU64,
    pub bytes_server_to_client: AtomicU64,
    pub auth_failures: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub backend_failures: AtomicU64,
    pub rejected_forwardings: AtomicU64,
}

impl Metrics {
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            pending_forwardings: self.pending_forwardings.load(Relaxed),
            active_sessions: self.active_sessions.load(Relaxed),
            total_sessions: self.total_sessions.load(Relaxed),
            total_forwardings: self.total_forwardings.load(Relaxed),
            expired_forwardings: self.expired_forwardings.load(Relaxed),
            bytes_client_to_server: self.bytes_client_to_server.load(Relaxed),
            bytes_server_to_client: self.bytes_server_to_client.load(Relaxed),
            auth_failures: self.auth_failures.load(Relaxed),
            rejected_connections: self.rejected_connections.load(Relaxed),
            backend_failures: self.backend_failures.load(Relaxed),
            rejected_forwardings: self.rejected_forwardings.load(Relaxed),
        }
    }
}

pub(crate) fn inc(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

pub(crate) fn dec(c: &AtomicU64) {
    c.fetch_sub(1, Relaxed);
}
