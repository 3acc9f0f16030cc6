//! The sea-orm store (in progress).
