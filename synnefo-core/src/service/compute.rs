//! Compute (server) use cases shared by the API dialects (in progress).
