//! RapiBackend (in progress).
