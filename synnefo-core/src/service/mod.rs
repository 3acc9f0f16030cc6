//! Application services (in progress).
