//! One module per subcommand.

pub mod admin;
pub mod api;
pub mod completions;
pub mod config;
pub mod db;
pub mod dispatcher;
pub mod eventd;
pub mod ganeti_hook;
pub mod ganeti_sim;
pub mod progress_monitor;
pub mod reconcile;
pub mod server;
pub mod up;
pub mod vncauthproxy;
