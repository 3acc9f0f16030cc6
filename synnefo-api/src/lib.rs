//! The WEBSERVER node of Synnefo: the OpenStack Compute API (plus identity,
//! image proxy and the Synnefo/Cyclades dialect) as an embeddable axum
//! `Router`, and the out-of-band VNC console proxy (`console`).

pub mod console;
