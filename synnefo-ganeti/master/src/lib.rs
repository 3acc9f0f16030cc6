//! # synnefo-ganeti-master
//!
//! What Synnefo runs on a cluster's GANETI-MASTER node, next to Ganeti's
//! own master daemons (the seed's `ganeti/ganeti-eventd` and
//! `ganeti/snf-ganeti-hook.py`). Both report to the control plane over the
//! message bus; neither talks RAPI, so this crate does not depend on the
//! RAPI client.
//!
//! * [`eventd`]: `synnefo eventd`, the job-queue watcher. It follows
//!   `queue/job-N` files with inotify, turns each op's progress into
//!   `ganeti-op-status` messages, and publishes them with confirms,
//!   spooling to disk while the broker is away.
//! * [`hook`]: `synnefo ganeti-hook`, the Ganeti hook. Ganeti runs it
//!   after instance start/add/modify; it reports the instance's NICs as a
//!   `ganeti-net-status` message, and installs itself into Ganeti's hooks
//!   directory.
//!
//! * [`progress`]: `synnefo progress-monitor`, snf-image's
//!   `PROGRESS_MONITOR` on every node that builds instances: it publishes
//!   snf-image's monitor messages as Synnefo's `snf-progress-monitor`
//!   does.
//!
//! The `synnefo` binary (synnefo-cli) wires them to settings and to the
//! AMQP bus; tests drive them against a simulated cluster
//! (`synnefo-ganeti-sim`) and an in-memory bus ([`eventd::testing`]).

pub mod eventd;
pub mod hook;
pub mod progress;
