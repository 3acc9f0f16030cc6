//! Schema migrations (`sea-orm-migration`), one timestamped module each.
//!
//! Migrations are append-only: a released migration is never edited, a
//! schema change is a new `mYYYYMMDD_HHMMSS_<what>` module added to
//! [`Migrator::migrations`]. The applied ones are recorded in
//! `seaql_migrations`, so `synnefo db migrate` is idempotent.
//!
//! Column types are chosen to mean the same on SQLite, PostgreSQL and
//! MySQL/MariaDB: bounded `VARCHAR` for every indexed or unique text column
//! (MySQL cannot index unbounded `TEXT`), JSON as `TEXT`, `BIGINT` for ids
//! and Ganeti job ids, and timestamps with microsecond precision
//! (`timestamptz` on PostgreSQL, `DATETIME(6)` holding UTC on MySQL, whose
//! `TIMESTAMP` stops in 2038 and drops fractions by default; RFC 3339 text on
//! SQLite). MySQL tables use `utf8mb4_bin` so that names compare
//! case-sensitively, as on the other two.

use sea_orm_migration::prelude::*;

mod m20260101_000001_initial;
mod m20261126_000001_project_vm_generation;
mod m20261207_000001_vm_access_ips;
mod m20261207_000002_vm_job_error_nics_time;
mod m20261207_000003_keypairs_and_locks;
mod m20261207_000004_instance_actions;
mod m20261207_000005_networks;
mod m20261210_000001_network_pools;
mod m20261211_000001_vm_resize;
mod m20261212_000001_vm_rebuild;
mod m20261212_000002_vm_rescue;
mod m20261212_000010_build_progress;

/// All migrations, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_initial::Migration),
            Box::new(m20261126_000001_project_vm_generation::Migration),
            Box::new(m20261207_000001_vm_access_ips::Migration),
            Box::new(m20261207_000002_vm_job_error_nics_time::Migration),
            Box::new(m20261207_000003_keypairs_and_locks::Migration),
            Box::new(m20261207_000004_instance_actions::Migration),
            Box::new(m20261207_000005_networks::Migration),
            Box::new(m20261210_000001_network_pools::Migration),
            Box::new(m20261211_000001_vm_resize::Migration),
            Box::new(m20261212_000001_vm_rebuild::Migration),
            Box::new(m20261212_000002_vm_rescue::Migration),
            Box::new(m20261212_000010_build_progress::Migration),
        ]
    }
}
