//! The dispatcher loop: consume notifications, apply, ack (in progress).
