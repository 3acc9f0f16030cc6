//! Master migration: which eventd publishes which change.
//!
//! The seed left master migration "TBD". Our answer: eventd runs on every
//! master candidate (Ganeti replicates the job queue to all of them), and
//! a change is published by the node that was master **when the change
//! happened** (its event time), as told by `ssconf_master_node` and the time
//! that file last changed. Each eventd remembers the history of masters it
//! has seen ([`MasterHistory`]) and applies the same rule, so two of them
//! watching the same queue split the stream with neither a gap nor (with
//! zero slack) an overlap, and without talking to each other.
//!
//! Why this is exact: eventd reads a job file, *then* checks the master
//! file. If the master file still names the old master, the switch had not
//! happened when the job file was read, so every change in it is older than
//! the switch and belongs to the old master; if it names the new one, the
//! switch time (the file's mtime) decides. Filesystem timestamps are coarse
//! (a few ms) and two machines' clocks differ, so a `slack` widens each
//! master's claim on both sides of a switch: changes near a switch may then
//! be published by both (the dispatcher drops duplicates), never by none.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// One observed state of the master file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// When the file took this content (its mtime), µs since the epoch.
    pub at_us: i64,
    /// The master's name (`None`: missing or empty file).
    pub master: Option<String>,
}

/// A change of this node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleChange {
    /// This node became master (at the given time, µs).
    BecameMaster(i64),
    /// This node stopped being master (at the given time, µs).
    LostMaster(i64),
}

/// How many transitions are kept (older ones no longer matter).
const MAX_TRANSITIONS: usize = 32;

/// The masters this node has seen, oldest first, and the ownership rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterHistory {
    me: Option<String>,
    slack_us: i64,
    transitions: Vec<Transition>,
}

/// True when `a` and `b` name the same node: equal ignoring case, or one
/// is the other's short name (`node1` and `node1.example.org`).
pub fn same_node(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim().to_ascii_lowercase(), b.trim().to_ascii_lowercase());
    if a.is_empty() || b.is_empty() {
        return false;
    }
    a == b
        || a.strip_prefix(&b).is_some_and(|r| r.starts_with('.'))
        || b.strip_prefix(&a).is_some_and(|r| r.starts_with('.'))
}

impl MasterHistory {
    /// A node that is always master (no master file: embedded mode, tests).
    pub fn always() -> Self {
        Self {
            me: None,
            slack_us: 0,
            transitions: Vec::new(),
        }
    }

    /// The history of node `me`, with a `slack` around each switch.
    pub fn for_node(me: &str, slack_us: i64) -> Self {
        Self {
            me: Some(me.to_string()),
            slack_us: slack_us.max(0),
            transitions: Vec::new(),
        }
    }

    /// Restores saved transitions (from the state file).
    pub fn with_transitions(mut self, transitions: Vec<Transition>) -> Self {
        if self.me.is_some() {
            self.transitions = transitions;
            self.transitions.sort_by_key(|t| t.at_us);
            self.trim();
        }
        self
    }

    /// The transitions, for the state file.
    pub fn transitions(&self) -> &[Transition] {
        &self.transitions
    }

    fn is_me(&self, master: Option<&str>) -> bool {
        match (&self.me, master) {
            (None, _) => true,
            (Some(me), Some(m)) => same_node(me, m),
            (Some(_), None) => false,
        }
    }

    fn trim(&mut self) {
        if self.transitions.len() > MAX_TRANSITIONS {
            let drop = self.transitions.len() - MAX_TRANSITIONS;
            self.transitions.drain(..drop);
        }
    }

    /// True when this node is master now.
    pub fn is_master(&self) -> bool {
        match &self.me {
            None => true,
            Some(_) => self.is_me(self.transitions.last().and_then(|t| t.master.as_deref())),
        }
    }

    /// Records the master file's content `master` with mtime `at_us`;
    /// returns the role change, if the content changed this node's role.
    pub fn observe(&mut self, at_us: i64, master: Option<String>) -> Option<RoleChange> {
        self.me.as_ref()?;
        let was = self.is_master();
        let same = self.transitions.last().is_some_and(|t| {
            t.master.as_deref().map(str::to_ascii_lowercase)
                == master.as_deref().map(str::to_ascii_lowercase)
        });
        if same {
            return None;
        }
        // A switch can only happen after the previous one.
        let at_us = self
            .transitions
            .last()
            .map_or(at_us, |t| at_us.max(t.at_us));
        self.transitions.push(Transition { at_us, master });
        self.trim();
        match (was, self.is_master()) {
            (false, true) => Some(RoleChange::BecameMaster(at_us)),
            (true, false) if self.transitions.len() > 1 => Some(RoleChange::LostMaster(at_us)),
            _ => None,
        }
    }

    /// The master at time `t_us` (before the first transition: the first
    /// one seen, since nothing older is known).
    fn master_at(&self, t_us: i64) -> Option<&str> {
        let idx = self.transitions.partition_point(|tr| tr.at_us <= t_us);
        let tr = if idx == 0 {
            self.transitions.first()
        } else {
            self.transitions.get(idx - 1)
        };
        tr.and_then(|t| t.master.as_deref())
    }

    /// True when this node owns a change that happened at `t_us`: it was
    /// master at some instant within `slack` of it.
    pub fn owns(&self, t_us: i64) -> bool {
        if self.me.is_none() {
            return true;
        }
        if self.transitions.is_empty() {
            return false;
        }
        let (lo, hi) = (
            t_us.saturating_sub(self.slack_us),
            t_us.saturating_add(self.slack_us),
        );
        if self.is_me(self.master_at(lo)) {
            return true;
        }
        self.transitions
            .iter()
            .any(|tr| tr.at_us > lo && tr.at_us <= hi && self.is_me(tr.master.as_deref()))
    }
}

/// Microseconds since the epoch of a system time (0 before the epoch).
pub fn system_time_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What the master file says now: its first line (trimmed), its mtime,
/// and an identity (inode, mtime, length) to notice rewrites cheaply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterFile {
    /// The master's name; `None` when the file is missing or empty.
    pub master: Option<String>,
    /// Its mtime, µs since the epoch (now if missing).
    pub mtime_us: i64,
    /// `(inode, mtime ns, len)`, to skip re-reading an unchanged file.
    pub identity: Option<(u64, i128, u64)>,
}

/// Stats the master file (cheap), re-reading its content only when its
/// identity differs from `known`. `Ok(None)`: unchanged.
pub fn read_master_file(
    path: &Path,
    known: Option<&MasterFile>,
) -> std::io::Result<Option<MasterFile>> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let missing = MasterFile {
                master: None,
                mtime_us: system_time_us(SystemTime::now()),
                identity: None,
            };
            return Ok(match known {
                Some(k) if k.identity.is_none() => None,
                _ => Some(missing),
            });
        }
        Err(e) => return Err(e),
    };
    let identity = Some((
        meta.ino(),
        i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        meta.len(),
    ));
    if known.is_some_and(|k| k.identity == identity) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path)?;
    let master = text
        .lines()
        .next()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    Ok(Some(MasterFile {
        master,
        mtime_us: meta
            .modified()
            .map(system_time_us)
            .unwrap_or_else(|_| system_time_us(SystemTime::now())),
        identity,
    }))
}

/// This host's name, for `eventd.node_name = ""`.
pub fn host_name() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_match_short_and_long() {
        assert!(same_node("node1", "node1.lab.test"));
        assert!(same_node("NODE1.lab.test", "node1.lab.test\n"));
        assert!(!same_node("node1", "node10.lab.test"));
        assert!(!same_node("node1", ""));
    }

    #[test]
    fn always_master_owns_everything() {
        let h = MasterHistory::always();
        assert!(h.is_master() && h.owns(0) && h.owns(i64::MAX));
    }

    #[test]
    fn a_switch_splits_ownership_at_its_time() {
        let mut a = MasterHistory::for_node("a", 0);
        let mut b = MasterHistory::for_node("b", 0);
        assert_eq!(
            a.observe(1_000, Some("a".into())),
            Some(RoleChange::BecameMaster(1_000))
        );
        assert_eq!(b.observe(1_000, Some("a".into())), None);
        // Before the first observation, the first master is assumed.
        assert!(a.owns(10) && !b.owns(10));
        assert_eq!(
            a.observe(5_000, Some("b".into())),
            Some(RoleChange::LostMaster(5_000))
        );
        assert_eq!(
            b.observe(5_000, Some("b".into())),
            Some(RoleChange::BecameMaster(5_000))
        );
        for t in [0, 1_000, 4_999, 5_000, 5_001, 9_000] {
            assert!(a.owns(t) != b.owns(t), "exactly one owner at {t}");
        }
        assert!(a.owns(4_999) && b.owns(5_000));
        // Same content again changes nothing.
        assert_eq!(b.observe(6_000, Some("B".into())), None);
        assert!(b.is_master() && !a.is_master());
    }

    #[test]
    fn slack_makes_both_own_changes_near_a_switch_and_none_are_orphaned() {
        let mut a = MasterHistory::for_node("a", 100);
        let mut b = MasterHistory::for_node("b", 100);
        for h in [&mut a, &mut b] {
            h.observe(0, Some("a".into()));
            h.observe(1_000, Some("b".into()));
        }
        for t in (0..3_000).step_by(7) {
            assert!(a.owns(t) || b.owns(t), "someone owns {t}");
        }
        assert!(a.owns(1_050) && b.owns(950));
        assert!(!a.owns(1_200) && !b.owns(800));
    }

    #[test]
    fn a_missing_master_file_means_nobody() {
        let mut a = MasterHistory::for_node("a", 0);
        a.observe(0, Some("a".into()));
        a.observe(10, None);
        assert!(!a.is_master() && !a.owns(20) && a.owns(5));
    }

    #[test]
    fn restored_history_covers_a_switch_made_while_down() {
        // a was master, stopped, and b took over at 5000 while a was down.
        let saved = vec![Transition {
            at_us: 1_000,
            master: Some("a".into()),
        }];
        let mut a = MasterHistory::for_node("a", 0).with_transitions(saved);
        assert_eq!(
            a.observe(5_000, Some("b".into())),
            Some(RoleChange::LostMaster(5_000))
        );
        assert!(
            a.owns(4_000),
            "changes before the switch are still a's to publish"
        );
        assert!(!a.owns(5_000));
    }

    #[test]
    fn reads_the_master_file_only_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ssconf_master_node");
        let none = read_master_file(&p, None).unwrap().unwrap();
        assert_eq!(none.master, None);
        assert!(read_master_file(&p, Some(&none)).unwrap().is_none());
        std::fs::write(&p, "node1.lab.test\n").unwrap();
        let one = read_master_file(&p, Some(&none)).unwrap().unwrap();
        assert_eq!(one.master.as_deref(), Some("node1.lab.test"));
        assert!(read_master_file(&p, Some(&one)).unwrap().is_none());
    }
}
