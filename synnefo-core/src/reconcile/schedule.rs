//! The staggered schedule of the seed.
//!
//! Run every `interval` minutes, each run reconciles the VMs reconciled
//! longest ago, so that every VM is seen at least once per
//! `RECONCILIATION_MIN`. The seed's count is `ceil(N * interval /
//! RECONCILIATION_MIN)`. With `m = floor(RECONCILIATION_MIN / interval)`
//! runs per window and batches of `k` taken round-robin in
//! least-recently-reconciled order, a VM waits `ceil(N / k)` runs, so the
//! guarantee needs `ceil(N / k) <= m`, i.e. `k = ceil(N / m)`. That equals
//! the seed's formula whenever the interval divides RECONCILIATION_MIN (the
//! defaults, 1 and 30, and any sane cron setup); otherwise the seed's count
//! can be a little short (N = 100, 30 min, 7 min: 24 per run, a VM waits 5
//! runs = 35 min), so [`batch_size`] rounds up to keep the promise.

/// The seed's count, `ceil(num_vms * interval / reconciliation_min)`,
/// capped at `num_vms`.
pub fn seed_batch_size(num_vms: u64, interval_min: u64, reconciliation_min: u64) -> u64 {
    if num_vms == 0 {
        return 0;
    }
    let r = u128::from(reconciliation_min.max(1));
    let k = (u128::from(num_vms) * u128::from(interval_min)).div_ceil(r);
    u64::try_from(k).unwrap_or(u64::MAX).clamp(1, num_vms)
}

/// VMs to reconcile per run: `ceil(num_vms / floor(reconciliation_min /
/// interval))`, capped at `num_vms`; equal to [`seed_batch_size`] when the
/// interval divides `reconciliation_min`, never smaller.
pub fn batch_size(num_vms: u64, interval_min: u64, reconciliation_min: u64) -> u64 {
    if num_vms == 0 {
        return 0;
    }
    let runs_per_window = (reconciliation_min / interval_min.max(1)).max(1);
    num_vms.div_ceil(runs_per_window).clamp(1, num_vms)
}
