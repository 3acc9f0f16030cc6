//! The in-process EventBus for the embedded default (in progress).
