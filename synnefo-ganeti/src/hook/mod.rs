//! The Ganeti hook (`synnefo ganeti-hook`); placeholder, filled in by its own issue.
