//! One job owns its folders: a running job holds an exclusive OS lock (`flock`) on
//! `<work_dir>/rill.lock` and on `<checkpoint dir>/.lock`, so a second run of the same pipeline
//! (or another pipeline pointed at the same folders) is refused before it reads or deletes a
//! checkpoint. The kernel releases the locks when the process ends, however it ends (a SIGKILL
//! included), so a crashed job never blocks the next run. The lock file holds the owner's pid:
//! `rill savepoint` signals only a pid that holds the lock, never one from a stale file.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file in a work directory.
pub const WORK_LOCK: &str = "rill.lock";
/// The lock file in a checkpoint directory (kept when checkpoints are cleared).
pub const CHECKPOINT_LOCK: &str = ".lock";

/// Held for as long as the job runs; dropping it releases the folders.
#[derive(Debug)]
pub struct JobLock {
    _files: Vec<File>,
}

/// Why a job could not take its folders.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{folder} is in use by another running job (pid {pid}); stop that job first (Ctrl-C or `rill savepoint`), or give this run its own `work_dir`/`checkpoint.dir`")]
    Busy { folder: PathBuf, pid: String },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Whether a folder's lock is held, and by which process.
#[derive(Debug, PartialEq, Eq)]
pub enum Holder {
    /// No running job holds it.
    Free,
    /// Held by the process with this pid.
    Pid(u32),
}

fn open(path: &Path) -> Result<File, LockError> {
    let io = |source| LockError::Io { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)
}

/// Takes the lock on `file` without waiting: `Ok(false)` if another open file holds it.
fn try_lock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a file descriptor this `File` owns; no memory is shared.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn pid_in(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.rewind().and_then(|_| file.read_to_string(&mut s));
    match s.trim() {
        "" => "unknown".into(),
        pid => pid.to_string(),
    }
}

impl JobLock {
    /// Locks `work_dir` and, if the job checkpoints, `checkpoint_dir` (creating them), and
    /// writes this process's pid into each lock file.
    pub fn acquire(work_dir: &Path, checkpoint_dir: Option<&Path>) -> Result<JobLock, LockError> {
        let mut files = Vec::new();
        let mut paths = vec![(work_dir.join(WORK_LOCK), work_dir)];
        paths.extend(checkpoint_dir.map(|d| (d.join(CHECKPOINT_LOCK), d)));
        for (path, folder) in paths {
            let mut file = open(&path)?;
            match try_lock(&file) {
                Ok(true) => {}
                Ok(false) => return Err(LockError::Busy { folder: folder.to_path_buf(), pid: pid_in(&mut file) }),
                Err(source) => return Err(LockError::Io { path, source }),
            }
            let pid = std::process::id().to_string();
            let written = file.set_len(0).and_then(|_| file.rewind()).and_then(|_| file.write_all(pid.as_bytes()));
            written.map_err(|source| LockError::Io { path: path.clone(), source })?;
            files.push(file);
        }
        Ok(JobLock { _files: files })
    }

    /// Who holds `work_dir`'s lock now. `Free` when no process does, whatever the file says.
    pub fn holder(work_dir: &Path) -> Holder {
        let Ok(mut file) = File::open(work_dir.join(WORK_LOCK)) else { return Holder::Free };
        match try_lock(&file) {
            // Taken by us for an instant: nobody held it (closing the file releases it).
            Ok(true) | Err(_) => Holder::Free,
            Ok(false) => pid_in(&mut file).parse().map(Holder::Pid).unwrap_or(Holder::Free),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_the_same_folders_is_refused_until_the_first_is_dropped() {
        let tmp = std::env::temp_dir().join(format!("rill-lock-{}", std::process::id()));
        let (work, ck) = (tmp.join("work"), tmp.join("ck"));
        assert_eq!(JobLock::holder(&work), Holder::Free);
        let first = JobLock::acquire(&work, Some(&ck)).unwrap();
        assert_eq!(JobLock::holder(&work), Holder::Pid(std::process::id()));
        let err = JobLock::acquire(&work, None).unwrap_err().to_string();
        assert!(err.contains("in use by another running job") && err.contains(&std::process::id().to_string()), "{err}");
        // Another work directory, the same checkpoint directory: refused too.
        let err = JobLock::acquire(&tmp.join("other"), Some(&ck)).unwrap_err().to_string();
        assert!(err.contains(&ck.display().to_string()), "{err}");
        drop(first);
        assert_eq!(JobLock::holder(&work), Holder::Free);
        let _again = JobLock::acquire(&work, Some(&ck)).unwrap();
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
