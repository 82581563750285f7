//! Checkpoint storage: one folder per complete checkpoint, `chk-<epoch>/_metadata`.
//!
//! A checkpoint is written to `.chk-<epoch>.tmp/`, its metadata fsynced, the folder renamed to
//! `chk-<epoch>` and the parent folder fsynced: a crash at any step leaves either no
//! `chk-<epoch>` or a complete one, and the previous complete checkpoints untouched. The newest
//! `retain` are kept. `history.jsonl` in the folder records every completed checkpoint's
//! metrics (for `rill checkpoints list`).
//!
//! Small instance states (source positions, sink transactions, small operator states) are kept
//! inline in `_metadata`. A larger operator state is written by its instance, as the bytes its
//! snapshot returned, to a file of its own under `shared/` (fsynced before it acknowledges):
//! large state is never parsed or re-encoded. `_metadata` lists the instance's chain of such
//! files — a full snapshot and the deltas taken after it, which later checkpoints share — and
//! files no retained checkpoint lists are deleted once a newer checkpoint is complete.
//!
//! Every file starts with a header line naming its kind, its format version and the CRC-32 and
//! length of what follows (`RILL-CHECKPOINT 1 crc32=… len=…`): a damaged or cut file is detected
//! before anything is restored from it, and [`latest`] falls back to the newest intact
//! checkpoint, reporting the ones it skipped. A file without a header was written by a Rill
//! from before format versions, whose layout this one does not read: it is refused as such.

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
    pub state: Option<SavedState>,
    /// The instance had finished (its input ended) before this checkpoint: `state` is what it
    /// left (a source's final position), and a run resuming from here starts it finished.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

/// What one instance saved, by kind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SavedState {
    /// A source's position (what its `position` returned).
    Source(serde_json::Value),
    /// A transform's or sink's state.
    Operator(OperatorState),
}

/// An event-time (`true`) or processing-time timer: (domain, time, key, namespace).
pub type SavedTimer = (bool, i64, crate::value::Value, i64);

/// What a transform or sink instance saved at a checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct OperatorState {
    /// Its snapshot, if it took one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Stored>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timers: Vec<SavedTimer>,
    /// The keyed state the runtime manages for it ([`crate::state::ManagedState`]), encoded by
    /// [`crate::state::entries_to_bytes`] per state name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<Stored>,
    /// Bytes written to state files for this checkpoint (for its size).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub written: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Where saved bytes are: in the metadata (small), or in files under `shared/`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Stored {
    /// Bytes that are JSON, kept as JSON (readable in `_metadata`).
    Json(serde_json::Value),
    /// Other bytes, hex-encoded.
    Hex(String),
    /// A chain of files: a whole snapshot, then the deltas taken after it, oldest first.
    Files(Vec<StateFile>),
}

/// One state file of a chain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StateFile {
    /// Relative to the checkpoint folder's parent (`shared/…`).
    pub file: String,
    /// Where it is, once the checkpoint was loaded.
    #[serde(skip)]
    pub path: PathBuf,
}

impl Stored {
    /// `bytes` inline: as JSON if they are JSON, else hex.
    pub fn inline(bytes: &[u8]) -> Stored {
        match serde_json::from_slice(bytes) {
            Ok(v) => Stored::Json(v),
            Err(_) => Stored::Hex(bytes.iter().map(|x| format!("{x:02x}")).collect()),
        }
    }

    /// The saved bytes: one element inline, each file's (checked) for a chain.
    pub fn read(&self) -> Result<Vec<Vec<u8>>, String> {
        match self {
            Stored::Json(v) => Ok(vec![serde_json::to_vec(v).expect("JSON re-encodes")]),
            Stored::Hex(h) => {
                let bytes: Option<Vec<u8>> = (0..h.len() / 2).map(|i| u8::from_str_radix(h.get(2 * i..2 * i + 2)?, 16).ok()).collect();
                bytes.filter(|_| h.len() % 2 == 0).map(|b| vec![b]).ok_or_else(|| "checkpoint state: bad hex".to_string())
            }
            Stored::Files(files) => files.iter().map(|f| read_state_file(&f.path)).collect(),
        }
    }

    fn files(&self) -> &[StateFile] {
        match self {
            Stored::Files(f) => f,
            _ => &[],
        }
    }

    fn files_mut(&mut self) -> &mut [StateFile] {
        match self {
            Stored::Files(f) => f,
            _ => &mut [],
        }
    }
}

impl OperatorState {
    /// The state files it lists.
    pub fn files(&self) -> impl Iterator<Item = &StateFile> {
        self.snapshot.iter().chain(&self.managed).flat_map(Stored::files)
    }

    fn files_mut(&mut self) -> impl Iterator<Item = &mut StateFile> {
        self.snapshot.iter_mut().chain(self.managed.iter_mut()).flat_map(Stored::files_mut)
    }

    /// Whether it holds anything to restore.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.managed.is_none() && self.timers.is_empty()
    }
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
    /// Where it was loaded from (state files are relative to it).
    #[serde(skip)]
    pub folder: Option<PathBuf>,
}

/// Operator states up to this size stay inline in `_metadata`; larger ones get a file.
pub const INLINE_LIMIT: usize = 64 * 1024;

/// Format version of checkpoint metadata and state files written now.
pub const FORMAT_VERSION: u32 = 1;
const METADATA_MAGIC: &str = "RILL-CHECKPOINT";
const STATE_MAGIC: &str = "RILL-STATE";

/// `body` behind a header line that lets a reader check it (see the module docs).
fn framed(magic: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!("{magic} {FORMAT_VERSION} crc32={:08x} len={}\n", crc32fast::hash(body), body.len()).into_bytes();
    out.extend_from_slice(body);
    out
}

/// The body of a file written by [`framed`], checked. A file without a header (from before
/// format versions) is refused, saying so.
fn unframe<'a>(magic: &str, bytes: &'a [u8], path: &Path) -> Result<&'a [u8], String> {
    let damaged = |why: String| format!("{} is damaged: {why}", path.display());
    let Some(rest) = bytes.strip_prefix(magic.as_bytes()) else {
        return Err(format!(
            "{} has no `{magic}` header: an older Rill wrote it (before checkpoint format {FORMAT_VERSION}), in a layout this one does not read; resume with that Rill, or start afresh with --from-scratch",
            path.display()
        ));
    };
    let nl = rest.iter().position(|&b| b == b'\n').ok_or_else(|| damaged("its header line is cut".into()))?;
    let header = std::str::from_utf8(&rest[..nl]).map_err(|_| damaged("its header is not text".into()))?;
    let body = &rest[nl + 1..];
    let fields: Vec<&str> = header.split_whitespace().collect();
    let (Some(version), Some(crc), Some(len)) = (
        fields.first().and_then(|v| v.parse::<u32>().ok()),
        fields.iter().find_map(|f| f.strip_prefix("crc32=")).and_then(|c| u32::from_str_radix(c, 16).ok()),
        fields.iter().find_map(|f| f.strip_prefix("len=")).and_then(|l| l.parse::<usize>().ok()),
    ) else {
        return Err(damaged(format!("bad header `{magic}{header}`")));
    };
    if version > FORMAT_VERSION {
        return Err(format!("{} has format {version}; this Rill reads up to {FORMAT_VERSION} (use a newer Rill)", path.display()));
    }
    if body.len() != len {
        return Err(damaged(format!("{} bytes where {len} were written", body.len())));
    }
    if crc32fast::hash(body) != crc {
        return Err(damaged("its checksum does not match (the contents changed)".into()));
    }
    Ok(body)
}

/// Reads an operator state file written by [`write_state_file`], checked.
pub fn read_state_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read checkpoint state file {}: {e}", path.display()))?;
    unframe(STATE_MAGIC, &bytes, path).map(<[u8]>::to_vec)
}

/// The folder checkpoint `epoch` is staged in until it is complete.
pub fn staging(dir: &Path, epoch: u64) -> PathBuf {
    dir.join(format!(".chk-{epoch}.tmp"))
}

/// Writes one instance's state for checkpoint `epoch` durably under `shared/`; returns the
/// file's name relative to `dir` (what the metadata records).
pub fn write_state_file(dir: &Path, epoch: u64, component: &str, subtask: u32, bytes: &[u8]) -> std::io::Result<String> {
    let folder = dir.join("shared");
    fs::create_dir_all(&folder)?;
    let safe: String = component.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    let name = format!("shared/{safe}.{subtask}.{epoch}.state");
    let mut f = fs::File::create(dir.join(&name))?;
    f.write_all(&framed(STATE_MAGIC, bytes))?;
    f.sync_all()?;
    sync_dir(&folder)?;
    Ok(name)
}

/// The operator states of a checkpoint.
fn operator_states(cp: &Checkpoint) -> impl Iterator<Item = &OperatorState> {
    cp.instances.iter().filter_map(|i| match &i.state {
        Some(SavedState::Operator(o)) => Some(o),
        _ => None,
    })
}

/// The state files a checkpoint's metadata lists.
fn files_of(cp: &Checkpoint) -> Vec<String> {
    operator_states(cp).flat_map(OperatorState::files).map(|f| f.file.clone()).collect()
}

/// Deletes files under `shared/` that no complete checkpoint lists, among those written for
/// checkpoints up to `upto` (later ones may belong to a checkpoint still in flight).
fn collect_garbage(dir: &Path, upto: u64) -> std::io::Result<()> {
    let mut keep = std::collections::HashSet::new();
    for (_, p) in complete(dir)? {
        if let Ok(cp) = load(&p) {
            keep.extend(files_of(&cp));
        }
    }
    let Ok(entries) = fs::read_dir(dir.join("shared")) else { return Ok(()) };
    for e in entries.flatten() {
        let name = format!("shared/{}", e.file_name().to_string_lossy());
        let epoch = name.strip_suffix(".state").and_then(|n| n.rsplit('.').next()).and_then(|n| n.parse::<u64>().ok());
        if epoch.is_some_and(|ep| ep <= upto) && !keep.contains(&name) {
            let _ = fs::remove_file(e.path());
        }
    }
    Ok(())
}

/// Removes staging folders of checkpoints that never completed (a crash or an abandoned
/// checkpoint): all of them at start, or those older than `before`.
pub fn discard_staging(dir: &Path, before: Option<u64>) {
    let Ok(entries) = fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name.strip_prefix(".chk-").and_then(|n| n.strip_suffix(".tmp")).and_then(|n| n.parse::<u64>().ok()) {
            if before.is_none_or(|b| n < b) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
}

impl Checkpoint {
    /// Instance states by (component, subtask).
    pub fn by_instance(&self) -> BTreeMap<(String, u32), &InstanceState> {
        self.instances.iter().map(|i| ((i.component.clone(), i.subtask), i)).collect()
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

/// Writes `cp` durably under `dir` and drops old checkpoints beyond `retain`. Returns its size
/// (metadata and state files).
pub fn write(dir: &Path, cp: &Checkpoint, retain: usize) -> std::io::Result<u64> {
    if crate::faults::checkpoints_fail() {
        return Err(std::io::Error::from_raw_os_error(libc::EROFS));
    }
    fs::create_dir_all(dir)?;
    // The instances' state files are already there.
    let tmp = staging(dir, cp.epoch);
    fs::create_dir_all(&tmp)?;
    let bytes = framed(METADATA_MAGIC, &serde_json::to_vec(cp).map_err(std::io::Error::other)?);
    let files: u64 = operator_states(cp).map(|o| o.written).sum();
    let total = bytes.len() as u64 + files;
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
        bytes: total,
        savepoint: cp.savepoint,
    };
    writeln!(h, "{}", serde_json::to_string(&entry).map_err(std::io::Error::other)?)?;
    discard_staging(dir, Some(cp.epoch));
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
    collect_garbage(dir, cp.epoch)?;
    Ok(total)
}

/// Deletes every checkpoint (and history) under `dir`, keeping the folder and the running
/// job's lock on it.
pub fn clear(dir: &Path) -> std::io::Result<()> {
    let Ok(entries) = fs::read_dir(dir) else { return Ok(()) };
    for e in entries.flatten() {
        if e.file_name() == crate::lock::CHECKPOINT_LOCK {
            continue;
        }
        let path = e.path();
        if e.file_type()?.is_dir() { fs::remove_dir_all(&path) } else { fs::remove_file(&path) }
            .map_err(|err| std::io::Error::new(err.kind(), format!("cannot delete {}: {err}", path.display())))?;
    }
    Ok(())
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
    let body = unframe(METADATA_MAGIC, &bytes, &meta)?;
    let mut cp: Checkpoint = serde_json::from_slice(body).map_err(|e| format!("{} is damaged: {e}", meta.display()))?;
    let folder = meta.parent().map(Path::to_path_buf).unwrap_or_default();
    // State files are named relative to the checkpoint root (the folder's parent): add paths.
    let root = folder.parent().map(Path::to_path_buf).unwrap_or_default();
    for i in &mut cp.instances {
        if let Some(SavedState::Operator(o)) = &mut i.state {
            o.files_mut().for_each(|f| f.path = root.join(&f.file));
        }
    }
    cp.folder = Some(folder);
    Ok(cp)
}

/// Reads checkpoint `path` and checks every state file it lists.
pub fn load_checked(path: &Path) -> Result<Checkpoint, String> {
    let cp = load(path)?;
    for f in operator_states(&cp).flat_map(OperatorState::files) {
        read_state_file(&f.path)?;
    }
    Ok(cp)
}

/// A complete checkpoint [`latest`] did not resume from, and why.
#[derive(Debug, Clone)]
pub struct Skipped {
    pub epoch: u64,
    pub reason: String,
}

/// The newest intact complete checkpoint under `dir`, if any, and the newer ones skipped
/// because they are damaged. `Err` when there are checkpoints but none is intact: starting
/// afresh instead would silently redo (and rewrite) everything.
pub fn latest(dir: &Path) -> Result<(Option<Checkpoint>, Vec<Skipped>), String> {
    let mut skipped = Vec::new();
    for (epoch, p) in complete(dir).map_err(|e| format!("cannot list checkpoints in {}: {e}", dir.display()))?.into_iter().rev() {
        match load_checked(&p) {
            Ok(cp) => return Ok((Some(cp), skipped)),
            Err(reason) => skipped.push(Skipped { epoch, reason }),
        }
    }
    match skipped.first() {
        None => Ok((None, skipped)),
        Some(newest) => Err(format!(
            "no intact checkpoint in {} ({} damaged; the newest, {}: {}); start afresh with --from-scratch",
            dir.display(),
            skipped.len(),
            newest.epoch,
            newest.reason
        )),
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
            instances: vec![InstanceState { component: "a".into(), subtask: 0, state: Some(SavedState::Source(serde_json::json!({"n": epoch}))), finished: false }],
            folder: None,
        }
    }

    fn operator(files: &[&str]) -> SavedState {
        let files = files.iter().map(|f| StateFile { file: f.to_string(), path: PathBuf::new() }).collect();
        SavedState::Operator(OperatorState { snapshot: Some(Stored::Files(files)), written: 100, ..Default::default() })
    }

    #[test]
    fn inline_state_keeps_json_readable_and_other_bytes_as_hex() {
        assert_eq!(Stored::inline(br#"{"a":[1,2]}"#), Stored::Json(serde_json::json!({"a": [1, 2]})));
        let hex = Stored::inline(&[0, 255, 16]);
        assert_eq!(hex, Stored::Hex("00ff10".into()));
        assert_eq!(hex.read().unwrap(), [vec![0, 255, 16]]);
        assert!(Stored::Hex("0g".into()).read().is_err());
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
        let mut last = latest(&dir).unwrap().0.unwrap();
        assert_eq!(last.folder.take(), Some(dir.join("chk-5")));
        assert_eq!(last, cp(5));
        assert_eq!(history(&dir).len(), 5);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_checkpoint_is_skipped_for_the_newest_intact_one() {
        let dir = std::env::temp_dir().join(format!("rill-ckpt-damage-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for e in 1..=3 {
            write(&dir, &cp(e), 5).unwrap();
        }
        // Checkpoint 3: one byte of its metadata changed. Checkpoint 2: cut short.
        let meta = |e: u64| dir.join(format!("chk-{e}/_metadata"));
        let mut bytes = fs::read(meta(3)).unwrap();
        let at = bytes.len() - 5;
        bytes[at] ^= 1;
        fs::write(meta(3), &bytes).unwrap();
        let bytes = fs::read(meta(2)).unwrap();
        fs::write(meta(2), &bytes[..bytes.len() - 3]).unwrap();
        let (found, skipped) = latest(&dir).unwrap();
        assert_eq!(found.map(|c| c.epoch), Some(1));
        let reasons: Vec<(u64, &str)> = skipped.iter().map(|s| (s.epoch, s.reason.as_str())).collect();
        assert_eq!(reasons.len(), 2);
        assert!(reasons[0].0 == 3 && reasons[0].1.contains("checksum does not match"), "{reasons:?}");
        assert!(reasons[1].0 == 2 && reasons[1].1.contains("bytes where"), "{reasons:?}");
        // None intact: an error, not a silent fresh start.
        fs::write(meta(1), b"RILL-CHECKPOINT 1 crc32=0 len=2\n{}").unwrap();
        let err = latest(&dir).unwrap_err();
        assert!(err.contains("no intact checkpoint") && err.contains("3 damaged"), "{err}");
        // Metadata from before format versions (plain JSON) is refused as such, not as damage.
        fs::write(meta(1), serde_json::to_vec(&cp(1)).unwrap()).unwrap();
        let err = load(&dir.join("chk-1")).unwrap_err();
        assert!(err.contains("an older Rill wrote it"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_state_file_makes_its_checkpoint_unusable() {
        let dir = std::env::temp_dir().join(format!("rill-ckpt-state-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut c = cp(1);
        let f = write_state_file(&dir, 1, "w", 0, &[1u8; 300]).unwrap();
        c.instances[0].state = Some(operator(&[&f]));
        write(&dir, &c, 2).unwrap();
        assert!(load_checked(&dir.join("chk-1")).is_ok());
        let mut bytes = fs::read(dir.join(&f)).unwrap();
        let at = bytes.len() - 1;
        bytes[at] = 9;
        fs::write(dir.join(&f), &bytes).unwrap();
        let err = load_checked(&dir.join("chk-1")).unwrap_err();
        assert!(err.contains("w.0.1.state is damaged: its checksum does not match"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn state_files_are_shared_by_chains_and_collected_when_unlisted() {
        let dir = std::env::temp_dir().join(format!("rill-ckpt-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let with_chain = |epoch: u64, files: &[&str]| {
            let mut c = cp(epoch);
            c.instances[0].state = Some(operator(files));
            c
        };
        let base = write_state_file(&dir, 1, "my window", 1, &[7u8; 100]).unwrap();
        assert_eq!(base, "shared/my_window.1.1.state");
        write(&dir, &with_chain(1, &[&base]), 2).unwrap();
        let d2 = write_state_file(&dir, 2, "my window", 1, b"delta 2").unwrap();
        write(&dir, &with_chain(2, &[&base, &d2]), 2).unwrap();
        let orphan = write_state_file(&dir, 3, "my window", 1, b"from an abandoned checkpoint").unwrap();
        let future = write_state_file(&dir, 5, "my window", 1, b"checkpoint 5, in flight").unwrap();
        let d4 = write_state_file(&dir, 4, "my window", 1, b"delta 4").unwrap();
        // Checkpoint 4 drops checkpoint 1 (retain 2): the base stays, listed by 2 and 4.
        let size = write(&dir, &with_chain(4, &[&base, &d2, &d4]), 2).unwrap();
        assert!(size > 100, "{size}");
        assert!(dir.join(&base).exists() && dir.join(&d2).exists() && dir.join(&d4).exists());
        assert!(!dir.join(&orphan).exists(), "listed by no checkpoint");
        assert!(dir.join(&future).exists(), "may belong to a checkpoint in flight");
        let back = latest(&dir).unwrap().0.unwrap();
        let Some(SavedState::Operator(o)) = &back.instances[0].state else { panic!("an operator state") };
        let chain = o.snapshot.as_ref().unwrap().read().unwrap();
        assert_eq!(chain, [vec![7u8; 100], b"delta 2".to_vec(), b"delta 4".to_vec()]);
        let _ = fs::remove_dir_all(&dir);
    }
}
