//! What a VM's state shows: the OpenStack server status and Synnefo's own
//! (Cyclades) status name. Pure functions of [`VmState`].

use serde::{Deserialize, Serialize};

use super::{Action, OperState, PendingAction, RebootKind, RescueStage, ResizeStage, VmState};

/// The OpenStack server status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerStatus {
    /// Running.
    Active,
    /// Being built.
    Build,
    /// Shut off.
    Shutoff,
    /// A soft reboot is in progress.
    Reboot,
    /// A hard reboot is in progress.
    HardReboot,
    /// A resize's job runs (Nova's `RESIZE`).
    Resize,
    /// A resize succeeded and awaits `confirmResize` or `revertResize`.
    VerifyResize,
    /// A revert's job runs (back to the old flavor).
    RevertResize,
    /// A rebuild's job runs (Nova's `REBUILD`).
    Rebuild,
    /// In rescue mode: boots the rescue image (Nova's `RESCUE`), also
    /// while an unrescue's job runs.
    Rescue,
    /// Failed.
    Error,
    /// Deleted.
    Deleted,
}

impl ServerStatus {
    /// Every status, for exhaustive tests and parsing.
    pub const ALL: [ServerStatus; 12] = [
        ServerStatus::Active,
        ServerStatus::Build,
        ServerStatus::Shutoff,
        ServerStatus::Reboot,
        ServerStatus::HardReboot,
        ServerStatus::Resize,
        ServerStatus::VerifyResize,
        ServerStatus::RevertResize,
        ServerStatus::Rebuild,
        ServerStatus::Rescue,
        ServerStatus::Error,
        ServerStatus::Deleted,
    ];

    /// The OpenStack name.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerStatus::Active => "ACTIVE",
            ServerStatus::Build => "BUILD",
            ServerStatus::Shutoff => "SHUTOFF",
            ServerStatus::Reboot => "REBOOT",
            ServerStatus::HardReboot => "HARD_REBOOT",
            ServerStatus::Resize => "RESIZE",
            ServerStatus::VerifyResize => "VERIFY_RESIZE",
            ServerStatus::RevertResize => "REVERT_RESIZE",
            ServerStatus::Rebuild => "REBUILD",
            ServerStatus::Rescue => "RESCUE",
            ServerStatus::Error => "ERROR",
            ServerStatus::Deleted => "DELETED",
        }
    }

    /// Parses an OpenStack status name (the `status=` list filter).
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str().eq_ignore_ascii_case(s))
    }
}

/// Maps a VM to its OpenStack status.
pub fn server_status(vm: &VmState) -> ServerStatus {
    if vm.deleted || vm.operstate == OperState::Destroyed {
        return ServerStatus::Deleted;
    }
    match vm.operstate {
        OperState::Build => ServerStatus::Build,
        OperState::Error => ServerStatus::Error,
        OperState::Destroyed => ServerStatus::Deleted,
        OperState::Started | OperState::Stopped => {
            if vm.rebuild.is_some() {
                return ServerStatus::Rebuild;
            }
            if let Some(r) = &vm.resize {
                return match r.stage {
                    ResizeStage::Resizing => ServerStatus::Resize,
                    ResizeStage::Verifying => ServerStatus::VerifyResize,
                    ResizeStage::Reverting => ServerStatus::RevertResize,
                };
            }
            // A rescue's job runs on a stopped server: SHUTOFF (Nova's
            // `rescuing` task of a stopped server) until it succeeds.
            if vm.rescue.is_some_and(|r| r.stage != RescueStage::Rescuing)
                && !matches!(
                    vm.action,
                    Some(PendingAction {
                        action: Action::Reboot(_),
                        ..
                    })
                )
            {
                return ServerStatus::Rescue;
            }
            match vm.action {
                Some(PendingAction {
                    action: Action::Reboot(kind),
                    ..
                }) => match kind {
                    RebootKind::Soft => ServerStatus::Reboot,
                    RebootKind::Hard => ServerStatus::HardReboot,
                },
                _ if vm.operstate == OperState::Started => ServerStatus::Active,
                _ => ServerStatus::Shutoff,
            }
        }
    }
}

/// Synnefo's own (Cyclades) status name, as served by `/compute/v2.0`.
/// Synnefo has no rescue status: a server in rescue mode shows its
/// operstate (`SNF:rescue` tells the mode).
/// Synnefo's resize has no verify step: a resize (or revert) whose job
/// runs is `RESIZE`; one that awaits a Nova client's confirmation shows
/// the state the server is in (`STOPPED`).
pub fn synnefo_status(vm: &VmState) -> &'static str {
    match server_status(vm) {
        ServerStatus::Active => "ACTIVE",
        ServerStatus::Build => "BUILD",
        ServerStatus::Shutoff => "STOPPED",
        ServerStatus::Reboot | ServerStatus::HardReboot => "REBOOT",
        ServerStatus::Resize | ServerStatus::RevertResize => "RESIZE",
        ServerStatus::Rebuild => "REBUILD",
        ServerStatus::VerifyResize if vm.operstate == OperState::Started => "ACTIVE",
        ServerStatus::VerifyResize => "STOPPED",
        ServerStatus::Rescue if vm.operstate == OperState::Started => "ACTIVE",
        ServerStatus::Rescue => "STOPPED",
        ServerStatus::Error => "ERROR",
        ServerStatus::Deleted => "DELETED",
    }
}
