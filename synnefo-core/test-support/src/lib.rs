//! Dev-only support shared by the integration tests of every Synnefo crate.
//!
//! * [`db`]: a fresh, migrated store per test (SQLite in memory or on disk,
//!   a uniquely named PostgreSQL or MariaDB database dropped afterwards);
//! * [`private`]: a PostgreSQL cluster or RabbitMQ node of the test's own,
//!   for tests that stop or restart a service (never the machine's shared
//!   one);
//! * [`process`]: `synnefo` child processes killed when the test ends;
//! * [`api`]: a typed client for our own HTTP API;
//! * [`wait`]: free ports and polling helpers;
//! * [`builders`]: users, projects, flavors and VMs in a store.
//!
//! The service policy is that of [`synnefo_core::testing`], re-exported
//! here: under `CI=true` an unreachable service fails the test, elsewhere
//! the test prints a loud `SKIPPED` line and returns.

pub mod api;
pub mod builders;
pub mod db;
pub mod private;
pub mod process;
pub mod wait;

pub use synnefo_core::testing::{amqp_url, in_ci, mysql_url, pg_url, service_unavailable};

/// A name no other test of any process uses: `prefix`, then 12 hex digits.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}
