//! Rescue mode: Synnefo's rules in the state machine
//! ([`state::start_rescue`], [`state::start_unrescue`]: a stopped server),
//! one `OP_INSTANCE_SET_PARAMS` job that makes the instance boot the
//! configured rescue image (`[ganeti] rescue_image`) as its CD-ROM, or its
//! disk again. The server stays stopped; started, it boots the rescue
//! image until it is unrescued.

use super::actions::Start;
use super::{Caller, Compute};
use crate::error::ServiceError;
use crate::model::Vm;
use crate::state::{self, Action, VmState};

impl Compute {
    /// Puts a stopped server into rescue mode: its next boot is from the
    /// rescue image. Refused (the state machine's errors) unless the server
    /// is stopped, idle, not suspended, not resized and not in rescue mode;
    /// a locked server refuses its owner.
    pub async fn rescue(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        if self.config.rescue_image.is_empty() {
            return Err(ServiceError::Backend(crate::error::BackendError::Rejected(
                "Rescue is not available: no rescue image is configured.".into(),
            )));
        }
        let transition = |s: &VmState| state::start_rescue(s);
        let start = Start {
            action: Action::Rescue,
            transition: &transition,
            quota: None,
            beparams: None,
            reinstall: None,
        };
        let vm = self.run_action(caller, vm, start).await?;
        tracing::info!(server = %vm.id, user = %caller.user_id, image = %self.config.rescue_image, "rescue accepted");
        Ok(vm)
    }

    /// Takes a stopped server out of rescue mode: its next boot is from its
    /// disk again.
    pub async fn unrescue(&self, caller: &Caller, id: &str) -> Result<Vm, ServiceError> {
        let vm = self.server(caller, id).await?;
        let transition = |s: &VmState| state::start_unrescue(s);
        let start = Start {
            action: Action::Unrescue,
            transition: &transition,
            quota: None,
            beparams: None,
            reinstall: None,
        };
        let vm = self.run_action(caller, vm, start).await?;
        tracing::info!(server = %vm.id, user = %caller.user_id, "unrescue accepted");
        Ok(vm)
    }
}
