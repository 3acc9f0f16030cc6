//! snf-image's build messages applied to a server (issue 16 item 7), as
//! Synnefo 0.20's `update_build_progress` does: an image-copy percentage
//! raises the server's build progress, every other message becomes a
//! diagnostic entry.
//!
//! Progress is not part of [`crate::state::VmState`]: nothing in the
//! state machine depends on it, and it would make every progress message
//! a versioned state write competing with the op-status messages of the
//! same create. It is a separate column with its own rule, enforced by the
//! store in one conditional write: set only while the server is in BUILD,
//! only upwards. That rule makes the outcome independent of order and
//! duplicates (the maximum of the percentages seen while building), and a
//! late message after the create's success changes nothing; views show
//! 100 for an ACTIVE server whatever is stored.

use crate::error::ServiceError;
use crate::messages::{BuildReport, ProgressNote};
use crate::model::BuildWrite;
use crate::ports::VmStore;
use crate::service::ApplyOutcome;
use crate::state::Ignored;

/// Applies one build message; `keep` bounds the server's diagnostics
/// (`dispatcher.max_diagnostics_per_server`). `NotFound` for a server
/// the database does not have.
pub async fn apply_build_report<S: VmStore + ?Sized>(
    store: &S,
    note: &ProgressNote,
    keep: u32,
) -> Result<ApplyOutcome, ServiceError> {
    let written = match &note.report {
        BuildReport::Copy { percent } => store.record_build_progress(note.vm, *percent).await?,
        BuildReport::Diagnostic(d) => {
            store
                .record_diagnostic(note.vm, note.time_us, d, keep)
                .await?
        }
    };
    Ok(match written {
        BuildWrite::Applied => ApplyOutcome::Applied,
        BuildWrite::Ignored => ApplyOutcome::Ignored(Ignored::Stale),
    })
}
