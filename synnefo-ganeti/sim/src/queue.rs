//! Ganeti-shaped files under the simulator's data directory.
//!
//! Like Ganeti, a job file is never written in place: each version goes to
//! a temporary name in the queue directory and is renamed over `job-N`, so
//! a watcher sees `IN_MOVED_TO` on `job-N`. luxid-style versions (queued,
//! canceled before start) are compact JSON via `job-N-<pid>-<n>.tmp`; job
//! process versions use Python separators via `job-N<random>.new`.
//! Finished jobs move to `archive/<N / 10000>/job-N`.
//!
//! This module is the simulator's persistence: [`QueueFiles`] writes the
//! files, and the job-file views give them the key order of their Ganeti
//! writer (luxid's compact JSON, or the job process's Python separators).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::json;

use crate::jobs::{Job, OpState};
use crate::json::to_py_vec;
use crate::model::SimState;

/// Jobs per archive sub-directory (Ganeti's `JOBS_PER_ARCHIVE_DIRECTORY`).
const JOBS_PER_ARCHIVE_DIRECTORY: u64 = 10_000;

/// Writes the queue directory.
#[derive(Debug)]
pub(crate) struct QueueFiles {
    dir: PathBuf,
    pid: u32,
    counter: u64,
}

impl QueueFiles {
    /// Creates `<data_dir>/queue` with `version`, `serial` and `lock`, and
    /// the `ssconf_*` files Synnefo's eventd reads.
    pub(crate) fn create(data_dir: &Path, cluster: &str, master: &str) -> io::Result<Self> {
        let dir = data_dir.join("queue");
        fs::create_dir_all(dir.join("archive"))?;
        let mut q = Self {
            dir,
            pid: std::process::id(),
            counter: 0,
        };
        q.write_luxid("version", b"1\n")?;
        if !q.dir.join("serial").exists() {
            q.write_luxid("serial", b"0\n")?;
        }
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(q.dir.join("lock"))?;
        write_plain(
            &data_dir.join("ssconf_master_node"),
            format!("{master}\n").as_bytes(),
        )?;
        write_plain(
            &data_dir.join("ssconf_cluster_name"),
            format!("{cluster}\n").as_bytes(),
        )?;
        Ok(q)
    }

    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The last job id in `serial` (0 if none).
    pub(crate) fn read_serial(&self) -> u64 {
        fs::read_to_string(self.dir.join("serial"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    fn write_via(&mut self, name: &str, tmp: String, bytes: &[u8]) -> io::Result<()> {
        let tmp_path = self.dir.join(tmp);
        {
            let mut f = fs::File::create(&tmp_path)?;
            f.write_all(bytes)?;
        }
        fs::rename(&tmp_path, self.dir.join(name))
    }

    /// luxid style: `NAME-<pid>-<n>.tmp` renamed over `NAME`.
    pub(crate) fn write_luxid(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.counter += 1;
        let tmp = format!("{name}-{}-{}.tmp", self.pid, self.counter);
        self.write_via(name, tmp, bytes)
    }

    /// Job-process style: `NAME<random>.new` renamed over `NAME`.
    pub(crate) fn write_process(&mut self, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.counter += 1;
        let tmp = format!(
            "{name}{}.new",
            random_suffix(self.counter ^ u64::from(self.pid) << 32)
        );
        self.write_via(name, tmp, bytes)
    }

    /// Moves `job-N` to `archive/<N / 10000>/job-N`.
    pub(crate) fn archive(&mut self, id: u64) -> io::Result<()> {
        let sub = self
            .dir
            .join("archive")
            .join((id / JOBS_PER_ARCHIVE_DIRECTORY).to_string());
        fs::create_dir_all(&sub)?;
        let from = self.dir.join(format!("job-{id}"));
        if from.exists() {
            fs::rename(from, sub.join(format!("job-{id}")))?;
        }
        Ok(())
    }
}

fn write_plain(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, bytes)?;
    fs::rename(tmp, path)
}

/// Eight characters like Python's `tempfile` names (`h6026jx2`).
fn random_suffix(seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789_";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..8)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize] as char
        })
        .collect()
}

impl Job {
    /// The queue file, and whether luxid (compact) or the job process wrote it.
    pub(crate) fn file_bytes(&self) -> (Vec<u8>, bool) {
        let luxid = self.process.is_none();
        let view = JobFileView { job: self, luxid };
        if luxid {
            (serde_json::to_vec(&view).unwrap_or_default(), true)
        } else {
            (to_py_vec(&view), false)
        }
    }
}

/// A job file in the key order of its writer (luxid or the job process).
struct JobFileView<'a> {
    job: &'a Job,
    luxid: bool,
}

struct OpFileView<'a> {
    op: &'a OpState,
    luxid: bool,
}

impl Serialize for OpFileView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.op;
        let mut input = o.input.clone();
        input.insert("OP_ID".into(), json!(o.opcode));
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("input", &input)?;
        m.serialize_entry("status", o.status.as_str())?;
        m.serialize_entry("result", &o.result)?;
        m.serialize_entry("log", &o.log)?;
        if self.luxid {
            m.serialize_entry("priority", &0)?;
        }
        m.serialize_entry("start_timestamp", &o.start)?;
        m.serialize_entry("exec_timestamp", &o.exec)?;
        m.serialize_entry("end_timestamp", &o.end)?;
        if !self.luxid {
            m.serialize_entry("priority", &0)?;
        }
        m.end()
    }
}

impl Serialize for JobFileView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let j = self.job;
        let ops: Vec<OpFileView<'_>> = j
            .ops
            .iter()
            .map(|op| OpFileView {
                op,
                luxid: self.luxid,
            })
            .collect();
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &j.id)?;
        m.serialize_entry("ops", &ops)?;
        match &j.process {
            None => {
                m.serialize_entry("received_timestamp", &j.received)?;
                m.serialize_entry("start_timestamp", &j.start)?;
                m.serialize_entry("end_timestamp", &j.end)?;
                if !j.status().is_terminal() {
                    m.serialize_entry(
                        "livelock",
                        &format!("/var/run/ganeti/livelocks/luxi-daemon_{}", j.received.secs),
                    )?;
                }
            }
            Some((pid, livelock)) => {
                m.serialize_entry("start_timestamp", &j.start)?;
                m.serialize_entry("end_timestamp", &j.end)?;
                m.serialize_entry("received_timestamp", &j.received)?;
                m.serialize_entry("livelock", livelock)?;
                m.serialize_entry("process_id", pid)?;
            }
        }
        m.end()
    }
}

impl SimState {
    /// Writes a job's current version to its queue file (unless archived,
    /// or the simulator writes no files).
    pub(crate) fn persist(&mut self, id: u64) {
        let (Some(q), Some(job)) = (self.queue.as_mut(), self.jobs.get(&id)) else {
            return;
        };
        if job.archived || !self.cfg.write_job_files {
            return;
        }
        let (bytes, luxid) = job.file_bytes();
        let name = format!("job-{id}");
        let r = if luxid {
            q.write_luxid(&name, &bytes)
        } else {
            q.write_process(&name, &bytes)
        };
        if let Err(e) = r {
            tracing::warn!(job = id, error = %e, "simulator cannot write job file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_renames_and_archives() {
        let dir = tempfile::tempdir().unwrap();
        let mut q = QueueFiles::create(dir.path(), "c", "m").unwrap();
        q.write_luxid("job-3", b"{}").unwrap();
        q.write_process("job-3", b"{\"a\": 1}").unwrap();
        assert_eq!(fs::read(q.dir().join("job-3")).unwrap(), b"{\"a\": 1}");
        let names: Vec<String> = fs::read_dir(q.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.ends_with(".tmp") && !n.ends_with(".new")),
            "{names:?}"
        );
        q.archive(3).unwrap();
        assert!(q.dir().join("archive/0/job-3").exists());
        q.archive(12345).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join("ssconf_master_node")).unwrap(),
            "m\n"
        );
        assert_eq!(q.read_serial(), 0);
    }
}
