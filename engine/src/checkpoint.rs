//! Checkpoint storage: one folder per complete checkpoint, `chk-<epoch>/_metadata`.
//!
//! A checkpoint is written to `.chk-<epoch>.tmp/`, its metadata fsynced, the folder renamed to
//! `chk-<epoch>` and the parent folder fsynced: a crash at any step leaves either no
//! `chk-<epoch>` or a complete one, and the previous complete checkpoints untouched. The newest
//! `retain` are kept. `history.jsonl` in the folder records every completed checkpoint's
//! metrics (for `rill checkpoints list`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The state of one operator or source instance in a checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InstanceState {
    pub component: String,
    pub subtask: u32,
    /// What the instance's snapshot returned (JSON), if anything.
    pub state: Option<serde_json::Value>,
}

/// A complete checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub job: String,
    pub epoch: u64,
    /// A savepoint (taken on request to stop the job).
    #[serde(default)]
    pub savepoint: bool,
    pub created_ms: i64,
    /// From injecting the barriers to the last acknowledgement.
    pub duration_ms: u64,
    /// Longest time an instance held inputs waiting for the barrier on its other inputs.
    #[serde(default)]
    pub alignment_ms: u64,
    pub instances: Vec<InstanceState>,
}

impl Checkpoint {
    /// Instance states by (component, subtask).
    pub fn by_instance(&self) -> BTreeMap<(String, u32), Option<serde_json::Value>> {
        self.instances.iter().map(|i| ((i.component.clone(), i.subtask), i.state.clone())).collect()
    }
}

/// One line of `history.jsonl`.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct HistoryEntry {
    pub epoch: u64,
    pub created_ms: i64,
    pub duration_ms: u64,
    #[serde(default)]
    pub alignment_ms: u64,
    pub bytes: u64,
    pub savepoint: bool,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Writes `cp` durably under `dir` and drops old checkpoints beyond `retain`. Returns its size.
pub fn write(dir: &Path, cp: &Checkpoint, retain: usize) -> std::io::Result<u64> {
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".chk-{}.tmp", cp.epoch));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let bytes = serde_json::to_vec(cp).map_err(std::io::Error::other)?;
    let mut f = fs::File::create(tmp.join("_metadata"))?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    sync_dir(&tmp)?;
    let done = dir.join(format!("chk-{}", cp.epoch));
    let _ = fs::remove_dir_all(&done);
    fs::rename(&tmp, &done)?;
    sync_dir(dir)?;
    let mut h = fs::OpenOptions::new().create(true).append(true).open(dir.join("history.jsonl"))?;
    let entry = HistoryEntry {
        epoch: cp.epoch,
        created_ms: cp.created_ms,
        duration_ms: cp.duration_ms,
        alignment_ms: cp.alignment_ms,
        bytes: bytes.len() as u64,
        savepoint: cp.savepoint,
    };
    writeln!(h, "{}", serde_json::to_string(&entry).map_err(std::io::Error::other)?)?;
    // Retention: savepoints stay; the newest `retain` checkpoints stay.
    let mut all = complete(dir)?;
    all.retain(|(_, p)| !p.join("_savepoint").exists());
    let n = all.len();
    for (_, p) in all.into_iter().take(n.saturating_sub(retain)) {
        let _ = fs::remove_dir_all(p);
    }
    if cp.savepoint {
        fs::File::create(done.join("_savepoint"))?.sync_all()?;
    }
    Ok(bytes.len() as u64)
}

/// Complete checkpoints under `dir`, oldest first.
pub fn complete(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else { return Ok(out) };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) {
            if e.path().join("_metadata").is_file() {
                out.push((n, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a checkpoint folder (or its `_metadata` file).
pub fn load(path: &Path) -> Result<Checkpoint, String> {
    let meta = if path.is_dir() { path.join("_metadata") } else { path.to_path_buf() };
    let bytes = fs::read(&meta).map_err(|e| format!("cannot read checkpoint {}: {e}", meta.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("checkpoint {} is damaged: {e}", meta.display()))
}

/// The newest complete checkpoint under `dir`, if any.
pub fn latest(dir: &Path) -> Result<Option<Checkpoint>, String> {
    match complete(dir).map_err(|e| e.to_string())?.pop() {
        Some((_, p)) => load(&p).map(Some),
        None => Ok(None),
    }
}

/// The recorded history under `dir`.
pub fn history(dir: &Path) -> Vec<HistoryEntry> {
    fs::read_to_string(dir.join("history.jsonl"))
        .map(|s| s.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(epoch: u64) -> Checkpoint {
        Checkpoint {
            job: "j".into(),
            epoch,
            savepoint: false,
            created_ms: 0,
            duration_ms: 1,
            alignment_ms: 0,
            instances: vec![InstanceState { component: "a".into(), subtask: 0, state: Some(serde_json::json!({"n": epoch})) }],
        }
    }

    #[test]
    fn keeps_the_newest_and_ignores_unfinished_ones() {
        let dir = std::env::temp_dir().join(format!("rill-ckpt-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for e in 1..=5 {
            write(&dir, &cp(e), 3).unwrap();
        }
        // A crash half-way through checkpoint 6 leaves only a temporary folder.
        fs::create_dir_all(dir.join(".chk-6.tmp")).unwrap();
        fs::create_dir_all(dir.join("chk-7")).unwrap(); // no metadata: not complete
        let all: Vec<u64> = complete(&dir).unwrap().into_iter().map(|(e, _)| e).collect();
        assert_eq!(all, [3, 4, 5]);
        assert_eq!(latest(&dir).unwrap().unwrap(), cp(5));
        assert_eq!(history(&dir).len(), 5);
        let _ = fs::remove_dir_all(&dir);
    }
}
