//! Reconciliation (in progress).
