//! Helpers for tests that need real services (PostgreSQL, MariaDB, RabbitMQ).
//!
//! The policy of the project: under `CI=true` an unreachable service is a
//! failure; elsewhere the test prints a loud `SKIPPED` line and returns.

/// Default PostgreSQL URL for tests (`SYNNEFO_TEST_DATABASE_URL`).
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Default MariaDB URL for tests (`SYNNEFO_TEST_MYSQL_URL`).
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/test";
/// Default RabbitMQ URL for tests (`SYNNEFO_TEST_AMQP_URL`).
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The PostgreSQL URL tests use.
pub fn pg_url() -> String {
    std::env::var("SYNNEFO_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

/// The MariaDB URL tests use.
pub fn mysql_url() -> String {
    std::env::var("SYNNEFO_TEST_MYSQL_URL").unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_string())
}

/// The RabbitMQ URL tests use.
pub fn amqp_url() -> String {
    std::env::var("SYNNEFO_TEST_AMQP_URL").unwrap_or_else(|_| DEFAULT_AMQP_URL.to_string())
}

/// True when running under CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// Handles an unreachable service: panics under CI, otherwise prints a loud
/// SKIPPED line. Call it and `return` from the test.
pub fn service_unavailable(test: &str, service: &str, why: &str) {
    if in_ci() {
        panic!("{test}: {service} is unreachable under CI=true: {why}");
    }
    eprintln!("\n********** SKIPPED {test}: {service} unreachable ({why}) **********\n");
}
