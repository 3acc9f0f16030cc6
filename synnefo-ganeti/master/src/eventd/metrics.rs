//! Counters an operator (and the benches) read while eventd runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde::Serialize;

/// Live counters, shared between eventd's tasks.
#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) published: AtomicU64,
    pub(crate) spooled: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) spool_depth: AtomicU64,
    pub(crate) publish_failures: AtomicU64,
    pub(crate) duplicates_suppressed: AtomicU64,
    pub(crate) parse_errors: AtomicU64,
    pub(crate) job_files_read: AtomicU64,
    pub(crate) temp_files_ignored: AtomicU64,
    pub(crate) ops_skipped: AtomicU64,
    pub(crate) observed_not_owned: AtomicU64,
    pub(crate) catch_up_files: AtomicU64,
    pub(crate) takeovers: AtomicU64,
    pub(crate) rescans: AtomicU64,
    pub(crate) master: AtomicBool,
}

pub(crate) fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A copy of the counters at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MetricsSnapshot {
    /// Messages the broker confirmed (direct and replayed).
    pub published: u64,
    /// Messages written to the spool because the broker did not confirm.
    pub spooled: u64,
    /// Spooled messages later confirmed.
    pub replayed: u64,
    /// Messages waiting in the spool now.
    pub spool_depth: u64,
    /// Publish attempts that failed or timed out.
    pub publish_failures: u64,
    /// Job-file reads that changed no status (Ganeti's rewrites).
    pub duplicates_suppressed: u64,
    /// Job files that could not be parsed (logged with the reason).
    pub parse_errors: u64,
    /// Job files read.
    pub job_files_read: u64,
    /// Events about temp files (`job-N-*.tmp`, `*.new`), never read.
    pub temp_files_ignored: u64,
    /// Opcodes not published (not instance ops, foreign instances).
    pub ops_skipped: u64,
    /// Status changes left to another master.
    pub observed_not_owned: u64,
    /// Job files read by catch-up scans.
    pub catch_up_files: u64,
    /// Times this node became master.
    pub takeovers: u64,
    /// Full rescans (inotify queue overflow).
    pub rescans: u64,
    /// This node is master now.
    pub master: bool,
}

impl Metrics {
    /// The counters now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            published: g(&self.published),
            spooled: g(&self.spooled),
            replayed: g(&self.replayed),
            spool_depth: g(&self.spool_depth),
            publish_failures: g(&self.publish_failures),
            duplicates_suppressed: g(&self.duplicates_suppressed),
            parse_errors: g(&self.parse_errors),
            job_files_read: g(&self.job_files_read),
            temp_files_ignored: g(&self.temp_files_ignored),
            ops_skipped: g(&self.ops_skipped),
            observed_not_owned: g(&self.observed_not_owned),
            catch_up_files: g(&self.catch_up_files),
            takeovers: g(&self.takeovers),
            rescans: g(&self.rescans),
            master: self.master.load(Ordering::Relaxed),
        }
    }
}
