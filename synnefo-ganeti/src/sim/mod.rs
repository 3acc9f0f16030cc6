//! The Ganeti simulator (in progress).
