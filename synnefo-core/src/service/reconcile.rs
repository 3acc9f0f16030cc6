//! Reconciliation fixes applied through the one VM code path (in progress).
