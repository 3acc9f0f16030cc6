//! inotify (through `notify`), reduced to what eventd acts on.
//!
//! Ganeti's writes show up as `IN_MOVED_TO job-N` (temp file renamed over
//! the job file); a writer that writes in place shows up as
//! `IN_CLOSE_WRITE job-N`. Everything else in the queue directory (temp
//! files being written, `IN_MOVED_FROM` when a job goes to `archive/`,
//! opens, the `lock` and `serial` files) is dropped here, in the watcher's
//! own thread, so it never reaches the main loop. The master file is
//! watched through its directory (Ganeti replaces ssconf files by rename).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::EventdError;
use super::job::job_id_from_file_name;
use super::metrics::{Metrics, inc};

/// What the main loop hears from the watcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WatchEvent {
    /// `job-N` was (re)written.
    Job(u64),
    /// The master file may have changed.
    Master,
    /// Events were lost (queue overflow): rescan.
    Rescan,
}

/// Classifies one notify event (pure, for tests).
pub(crate) fn classify(
    ev: &Event,
    queue_dir: &Path,
    master_file: Option<&Path>,
    temp_files: &mut u64,
) -> Vec<WatchEvent> {
    let mut out = Vec::new();
    if ev.need_rescan() {
        out.push(WatchEvent::Rescan);
    }
    // Which paths are "the file now has new content". notify reports an
    // inotify rename as `To`, then again as `Both` (from, to): `Both` is
    // skipped, so one rename is one read.
    let written: &[PathBuf] = match &ev.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any))
        | EventKind::Access(AccessKind::Close(AccessMode::Write)) => &ev.paths,
        _ => &[],
    };
    for p in written {
        if p.parent() == Some(queue_dir)
            && let Some(name) = p.file_name().and_then(|n| n.to_str())
        {
            match job_id_from_file_name(name) {
                Some(id) => out.push(WatchEvent::Job(id)),
                None if name.starts_with("job-") => *temp_files += 1,
                None => {}
            }
        }
    }
    if let Some(mf) = master_file {
        let touches_master = ev.paths.iter().any(|p| p == mf)
            && !matches!(
                ev.kind,
                EventKind::Access(
                    AccessKind::Open(_) | AccessKind::Read | AccessKind::Close(AccessMode::Read)
                )
            );
        if touches_master && !out.contains(&WatchEvent::Master) {
            out.push(WatchEvent::Master);
        }
    }
    out
}

/// Starts watching; events go to `tx` until the watcher is dropped.
pub(crate) fn start(
    queue_dir: &Path,
    master_file: Option<&Path>,
    tx: UnboundedSender<WatchEvent>,
    metrics: Arc<Metrics>,
) -> Result<RecommendedWatcher, EventdError> {
    let q = queue_dir.to_path_buf();
    let mf = master_file.map(Path::to_path_buf);
    let watch_err = |path: &Path, e: notify::Error| EventdError::Watch {
        path: path.display().to_string(),
        reason: e.to_string(),
    };
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<Event>| match res {
        Ok(ev) => {
            let mut temp = 0;
            for w in classify(&ev, &q, mf.as_deref(), &mut temp) {
                let _ = tx.send(w);
            }
            if temp > 0 {
                inc(&metrics.temp_files_ignored, temp);
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "inotify error; rescanning the queue");
            let _ = tx.send(WatchEvent::Rescan);
        }
    })
    .map_err(|e| watch_err(queue_dir, e))?;
    watcher
        .watch(queue_dir, RecursiveMode::NonRecursive)
        .map_err(|e| watch_err(queue_dir, e))?;
    if let Some(dir) = master_file.and_then(Path::parent)
        && dir != queue_dir
    {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| watch_err(dir, e))?;
    }
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::CreateKind;

    fn ev(kind: EventKind, paths: &[&str]) -> Event {
        let mut e = Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        e
    }

    #[test]
    fn only_renames_and_close_writes_of_job_files_count() {
        let q = Path::new("/q");
        let m = Some(Path::new("/g/ssconf_master_node"));
        let to = EventKind::Modify(ModifyKind::Name(RenameMode::To));
        let cases: Vec<(Event, Vec<WatchEvent>, u64)> = vec![
            (ev(to, &["/q/job-7"]), vec![WatchEvent::Job(7)], 0),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
                    &["/q/job-7-1-2.tmp", "/q/job-7"],
                ),
                vec![],
                0,
            ),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    &["/q/job-8"],
                ),
                vec![WatchEvent::Job(8)],
                0,
            ),
            (
                ev(
                    EventKind::Access(AccessKind::Close(AccessMode::Write)),
                    &["/q/job-8-1-2.tmp"],
                ),
                vec![],
                1,
            ),
            (ev(to, &["/q/job-9abc.new"]), vec![], 1),
            (
                ev(EventKind::Create(CreateKind::File), &["/q/job-7-1-2.tmp"]),
                vec![],
                0,
            ),
            (
                ev(
                    EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                    &["/q/job-7"],
                ),
                vec![],
                0,
            ),
            (ev(to, &["/q/archive/0/job-7"]), vec![], 0),
            (ev(to, &["/elsewhere/job-7"]), vec![], 0),
            (ev(to, &["/q/serial"]), vec![], 0),
            (
                ev(to, &["/g/ssconf_master_node"]),
                vec![WatchEvent::Master],
                0,
            ),
            (
                ev(
                    EventKind::Access(AccessKind::Open(notify::event::AccessMode::Any)),
                    &["/g/ssconf_master_node"],
                ),
                vec![],
                0,
            ),
            (
                ev(EventKind::Other, &[]).set_flag(notify::event::Flag::Rescan),
                vec![WatchEvent::Rescan],
                0,
            ),
        ];
        for (e, want, want_temp) in cases {
            let mut temp = 0;
            assert_eq!(classify(&e, q, m, &mut temp), want, "{e:?}");
            assert_eq!(temp, want_temp, "{e:?}");
        }
    }
}
