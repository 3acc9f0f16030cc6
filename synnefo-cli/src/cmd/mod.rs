//! One module per subcommand.

pub mod config;
pub mod db;
pub mod vncauthproxy;
