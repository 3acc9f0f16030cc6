//! What eventd remembers: per-job marks in memory, and a small state file.
//!
//! The marks ([`Marks`]) are bounded: finished jobs are forgotten oldest
//! first (lowest id) once there are more than `capacity`. The state file,
//! `state.json` in the spool directory, holds the marks, the masters seen
//! and a *watermark*: every job-file write older than it was handled. A
//! restart reads it and catches up only on files changed since, so it
//! neither republishes the whole queue nor misses what changed while it was
//! down. It is written atomically (temp file, fsync, rename) and only with
//! marks whose messages were already handed off (published or spooled), so
//! a crash can cause duplicates (harmless) but not losses.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::diff::JobMark;
use super::master::Transition;

/// The state file's name inside the spool directory.
pub const STATE_FILE: &str = "state.json";

/// Per-job marks, bounded.
#[derive(Debug, Clone)]
pub struct Marks {
    map: BTreeMap<u64, JobMark>,
    capacity: usize,
}

impl Marks {
    /// Empty, remembering about `capacity` jobs.
    pub fn new(capacity: usize) -> Self {
        Self {
            map: BTreeMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// The mark of a job.
    pub fn get(&self, id: u64) -> Option<&JobMark> {
        self.map.get(&id)
    }

    /// Jobs remembered.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when no job is remembered.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Remembers a job's mark, forgetting old finished jobs when full.
    pub fn insert(&mut self, id: u64, mark: JobMark) {
        self.map.insert(id, mark);
        if self.map.len() > self.capacity + self.capacity / 8 {
            self.evict();
        }
    }

    fn evict(&mut self) {
        let excess = self.map.len().saturating_sub(self.capacity);
        let finished: Vec<u64> = self
            .map
            .iter()
            .filter(|(_, m)| m.is_finished())
            .map(|(id, _)| *id)
            .take(excess)
            .collect();
        for id in finished {
            self.map.remove(&id);
        }
        // Unfinished jobs are kept up to twice the capacity, then the
        // oldest go too (a restart may then republish them: harmless).
        while self.map.len() > self.capacity * 2 {
            self.map.pop_first();
        }
    }

    /// All marks, for the state file.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &JobMark)> {
        self.map.iter()
    }
}

/// The state file's content.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SavedState {
    /// Format version (1).
    pub version: u32,
    /// Every job-file write before this (µs since the epoch) was handled.
    pub watermark_us: Option<i64>,
    /// Masters seen, oldest first.
    pub masters: Vec<Transition>,
    /// Marks by job id.
    pub jobs: Vec<(u64, JobMark)>,
}

impl SavedState {
    /// The state of `marks`, `masters` and `watermark_us`.
    pub fn capture(marks: &Marks, masters: &[Transition], watermark_us: Option<i64>) -> Self {
        Self {
            version: 1,
            watermark_us,
            masters: masters.to_vec(),
            jobs: marks.iter().map(|(id, m)| (*id, m.clone())).collect(),
        }
    }

    /// Marks bounded by `capacity`.
    pub fn marks(&self, capacity: usize) -> Marks {
        let mut marks = Marks::new(capacity);
        for (id, m) in &self.jobs {
            marks.insert(*id, m.clone());
        }
        marks
    }
}

/// Reads the state file; `Ok(None)` when there is none. An unreadable
/// file is moved aside (`state.json.bad`) and reported, so eventd starts
/// afresh (catching up on the whole queue) instead of refusing to run.
pub fn load_state(dir: &Path) -> std::io::Result<Option<SavedState>> {
    let path = dir.join(STATE_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match serde_json::from_slice::<SavedState>(&bytes) {
        Ok(s) if s.version == 1 => Ok(Some(s)),
        Ok(s) => {
            tracing::error!(path = %path.display(), version = s.version, "unknown state file version; starting afresh");
            std::fs::rename(&path, dir.join("state.json.bad"))?;
            Ok(None)
        }
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "unreadable state file; starting afresh");
            std::fs::rename(&path, dir.join("state.json.bad"))?;
            Ok(None)
        }
    }
}

/// Writes the state file atomically and durably.
pub fn save_state(dir: &Path, state: &SavedState) -> std::io::Result<()> {
    let tmp = dir.join("state.json.tmp");
    let body = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(STATE_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventd::diff::{OpMark, Origin};
    use synnefo_core::state::JobStatus;

    fn mark(status: JobStatus) -> JobMark {
        JobMark {
            received: Some((1, 0)),
            ops: vec![Some(OpMark {
                status,
                origin: Origin::Published,
            })],
        }
    }

    #[test]
    fn finished_jobs_are_forgotten_oldest_first() {
        let mut m = Marks::new(8);
        m.insert(1, mark(JobStatus::Running));
        for id in 2..=9 {
            m.insert(id, mark(JobStatus::Success));
        }
        assert_eq!(m.len(), 9, "within the slack");
        m.insert(10, mark(JobStatus::Success));
        assert_eq!(m.len(), 8);
        assert!(m.get(1).is_some(), "a running job is kept");
        assert!(m.get(2).is_none() && m.get(3).is_none());
        assert!(m.get(10).is_some());
    }

    #[test]
    fn unfinished_jobs_are_bounded_too() {
        let mut m = Marks::new(4);
        for id in 0..100 {
            m.insert(id, mark(JobStatus::Running));
        }
        assert!(m.len() <= 8);
        assert!(m.get(99).is_some());
    }

    #[test]
    fn state_round_trips_and_a_bad_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_state(dir.path()).unwrap(), None);
        let mut marks = Marks::new(10);
        marks.insert(4, mark(JobStatus::Success));
        let masters = vec![Transition {
            at_us: 5,
            master: Some("a".into()),
        }];
        let s = SavedState::capture(&marks, &masters, Some(77));
        save_state(dir.path(), &s).unwrap();
        let back = load_state(dir.path()).unwrap().unwrap();
        assert_eq!(back, s);
        assert_eq!(back.marks(10).get(4), marks.get(4));
        std::fs::write(dir.path().join(STATE_FILE), b"{garbage").unwrap();
        assert_eq!(load_state(dir.path()).unwrap(), None);
        assert!(dir.path().join("state.json.bad").exists());
    }
}
