//! One module per subcommand.

pub mod config;
pub mod db;
pub mod vncauthproxy;
pub mod ganeti_sim;
pub mod completions;
pub mod server;
pub mod api;
pub mod admin;
pub mod eventd;
pub mod ganeti_hook;
pub mod dispatcher;
pub mod reconcile;
