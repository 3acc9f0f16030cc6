//! Ganeti job-queue watcher (`synnefo eventd`); placeholder, filled in by its own issue.
