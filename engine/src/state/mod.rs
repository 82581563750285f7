//! Keyed state: values scoped by key (and a namespace, such as a window), kept in memory while
//! hot and stored in sled when cold.
//!
//! One sled database per job (`<work_dir>/state`), one tree per operator and state name. In
//! sled, an entry's key starts with its key group (2 bytes), then its namespace, then the key
//! itself, so a whole key group can be read out or moved (snapshots, rescaling).
//!
//! Access never touches sled while the working set fits the cache (`state.cache_entries`
//! entries per state): reads and writes go to a hash map. When the cache is full, entries not
//! used since the last sweep are evicted, the changed ones written to sled first; a later read of
//! an evicted key loads it back. This is the pattern of Flink's heap backend for speed and of its
//! RocksDB backend for size: state larger than memory works, and costs only for the cold part.

mod timers;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

pub use timers::{TimeDomain, Timer, Timers};

use crate::exchange::KeyGroup;
use crate::value::{Key, KeyHasher, Value};

/// A state failure (sled I/O, or a stored value that no longer decodes).
#[derive(Debug, thiserror::Error)]
#[error("state `{state}`: {message}")]
pub struct StateError {
    pub state: String,
    pub message: String,
}

/// The job's state database, opened on first use (a stateless job never opens it).
#[derive(Clone)]
pub struct StateBackend {
    dir: std::path::PathBuf,
    db: std::sync::Arc<std::sync::OnceLock<Result<sled::Db, String>>>,
    /// Entries each state keeps in memory before evicting to sled.
    pub cache_entries: usize,
    pub max_parallelism: u32,
}

impl std::fmt::Debug for StateBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StateBackend({}, cache_entries: {})", self.dir.display(), self.cache_entries)
    }
}

impl StateBackend {
    /// The state database under `dir`. Without checkpoints to restore from, a run starts from
    /// empty state: whatever an earlier run left there is cleared when it is first opened.
    pub fn open_fresh(dir: &Path, cache_entries: usize, max_parallelism: u32) -> Result<StateBackend, String> {
        Ok(StateBackend { dir: dir.to_path_buf(), db: Default::default(), cache_entries: cache_entries.max(16), max_parallelism })
    }

    fn db(&self) -> Result<&sled::Db, String> {
        self.db
            .get_or_init(|| {
                // What an earlier run left is of no use (state comes from checkpoints), and a
                // database killed mid-write would only be recovered to be cleared: remove it.
                // The job's lock on its work folder makes this safe.
                if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(format!("cannot clear the old state database at {}: {e}", self.dir.display()));
                    }
                }
                let db = sled::Config::new()
                    .path(&self.dir)
                    .cache_capacity(64 << 20)
                    .mode(sled::Mode::HighThroughput)
                    .open()
                    .map_err(|e| {
                        format!(
                            "cannot open the state database at {}: {e} (is another job with the same `name` or `work_dir` running?)",
                            self.dir.display()
                        )
                    })?;
                for name in db.tree_names() {
                    if name != b"__sled__default" {
                        db.drop_tree(&name).map_err(|e| format!("cannot clear old state: {e}"))?;
                    }
                }
                Ok(db)
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The state `name` of `operator` holding values of type `T`.
    pub fn keyed<T: Serialize + DeserializeOwned>(&self, operator: &str, name: &str, options: StateOptions) -> Result<KeyedState<T>, StateError> {
        let full = format!("{operator}/{name}");
        let err = |message: String| StateError { state: full.clone(), message };
        let tree = self.db().map_err(err)?.open_tree(full.as_bytes()).map_err(|e| err(e.to_string()))?;
        Ok(KeyedState {
            name: full,
            tree: Some(tree),
            cache: HashMap::default(),
            capacity: self.cache_entries,
            in_store: false,
            ttl: options.ttl.map(|d| d.as_millis() as i64),
            max_parallelism: self.max_parallelism,
            changed_out: Default::default(),
            tracking: true,
            _t: PhantomData,
        })
    }

    pub fn flush(&self) -> Result<(), String> {
        match self.db.get() {
            Some(Ok(db)) => db.flush().map(|_| ()).map_err(|e| e.to_string()),
            _ => Ok(()),
        }
    }
}

/// Options of one state.
#[derive(Clone, Debug, Default)]
pub struct StateOptions {
    /// Entries expire this long (processing time) after they were last written.
    pub ttl: Option<Duration>,
}

/// Where one entry lives: its key and a namespace (0 for plain keyed state; the window start
/// for window state).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StateKey {
    pub key: Key,
    pub namespace: i64,
}

struct Slot<T> {
    /// `None`: deleted (a tombstone until written to sled).
    value: Option<T>,
    /// Changed since it was last written to sled.
    dirty: bool,
    /// Changed since the last snapshot (incremental checkpoints).
    changed: bool,
    /// The key may be in the last snapshot: removing it must be recorded (an entry made and
    /// removed between two snapshots needs no record).
    persisted: bool,
    used: bool,
    expires: i64,
}

/// Serialized entries of a keyed state, (sled key, value), as snapshots hold them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// One keyed state of one operator instance.
pub struct KeyedState<T> {
    name: String,
    tree: Option<sled::Tree>,
    cache: HashMap<StateKey, Slot<T>, KeyHasher>,
    capacity: usize,
    /// Whether anything was ever written to sled: until then a cache miss is a plain miss.
    in_store: bool,
    ttl: Option<i64>,
    max_parallelism: u32,
    /// Keys changed since the last snapshot whose entry left the cache (evicted or removed).
    changed_out: std::collections::HashSet<StateKey, KeyHasher>,
    /// Whether changes are tracked (a job with checkpoints; on by default).
    tracking: bool,
    _t: PhantomData<T>,
}

impl<T: Serialize + DeserializeOwned> KeyedState<T> {
    /// A state that lives only in memory (no eviction): for tests and for operators without a
    /// job around them.
    pub fn in_memory(name: &str) -> KeyedState<T> {
        KeyedState {
            name: name.into(),
            tree: None,
            cache: HashMap::default(),
            capacity: usize::MAX,
            in_store: false,
            ttl: None,
            max_parallelism: crate::exchange::DEFAULT_MAX_PARALLELISM,
            changed_out: Default::default(),
            tracking: true,
            _t: PhantomData,
        }
    }

    /// Turns tracking of changes for incremental snapshots on or off (off: nothing is recorded
    /// about removed or evicted entries; a job without checkpoints needs none of it).
    pub fn track_changes(&mut self, on: bool) {
        self.tracking = on;
        if !on {
            self.changed_out.clear();
        }
    }

    /// Entries changed since the last snapshot, roughly (changed entries in memory, and keys
    /// changed and then evicted or removed): to choose between a delta and a full snapshot.
    pub fn changes(&self) -> usize {
        self.cache.values().filter(|s| s.changed).count() + self.changed_out.len()
    }

    fn err(&self, message: impl ToString) -> StateError {
        StateError { state: self.name.clone(), message: message.to_string() }
    }

    fn encode(&self, k: &StateKey) -> Vec<u8> {
        encode(k, self.max_parallelism)
    }

    fn now() -> i64 {
        crate::time::now_millis()
    }

    /// Makes sure `k` is in the cache if it exists at all.
    fn load(&mut self, k: &StateKey) -> Result<(), StateError> {
        if !self.in_store || self.cache.contains_key(k) {
            return Ok(());
        }
        let Some(tree) = &self.tree else { return Ok(()) };
        let bytes = tree.get(self.encode(k)).map_err(|e| self.err(e))?;
        if let Some(b) = bytes {
            let (expires, value): (i64, T) = serde_json::from_slice(&b).map_err(|e| self.err(format!("stored value does not decode: {e}")))?;
            self.make_room()?;
            self.cache.insert(k.clone(), Slot { value: Some(value), dirty: false, changed: false, persisted: true, used: true, expires });
        }
        Ok(())
    }

    fn make_room(&mut self) -> Result<(), StateError> {
        if self.cache.len() < self.capacity || self.tree.is_none() {
            return Ok(());
        }
        // Second chance: entries used since the last sweep lose their mark, the others go.
        let want = (self.capacity / 8).max(1);
        let mut victims = Vec::with_capacity(want);
        for pass in 0..2 {
            for (k, slot) in self.cache.iter_mut() {
                if victims.len() >= want {
                    break;
                }
                if slot.used && pass == 0 {
                    slot.used = false;
                } else if !victims.contains(k) {
                    victims.push(k.clone());
                }
            }
            if victims.len() >= want {
                break;
            }
        }
        let tree = self.tree.clone().expect("checked above");
        for k in victims {
            let slot = self.cache.remove(&k).expect("victim is cached");
            if slot.changed && self.tracking {
                self.changed_out.insert(k.clone());
            }
            if slot.dirty {
                self.store(&tree, &k, slot.value.as_ref(), slot.expires)?;
            }
        }
        Ok(())
    }

    /// Writes one entry to sled (`None`: deletes it).
    fn store(&mut self, tree: &sled::Tree, k: &StateKey, value: Option<&T>, expires: i64) -> Result<(), StateError> {
        let key = self.encode(k);
        match value {
            Some(v) => {
                let bytes = serde_json::to_vec(&(expires, v)).map_err(|e| self.err(e))?;
                tree.insert(key, bytes).map_err(|e| self.err(e))?;
                self.in_store = true;
            }
            None if self.in_store => {
                tree.remove(key).map_err(|e| self.err(e))?;
            }
            None => {}
        }
        Ok(())
    }

    fn live(&self, slot: &Slot<T>) -> bool {
        slot.value.is_some() && (self.ttl.is_none() || slot.expires > Self::now())
    }

    /// The value at `k`, if any (and not expired).
    pub fn get(&mut self, k: &StateKey) -> Result<Option<&T>, StateError> {
        self.load(k)?;
        let ttl = self.ttl.is_some();
        let now = if ttl { Self::now() } else { 0 };
        Ok(match self.cache.get_mut(k) {
            Some(slot) if slot.value.is_some() && (!ttl || slot.expires > now) => {
                slot.used = true;
                slot.value.as_ref()
            }
            _ => None,
        })
    }

    /// The value at `k` for changing in place (marks it changed; refreshes its TTL).
    pub fn get_mut(&mut self, k: &StateKey) -> Result<Option<&mut T>, StateError> {
        self.load(k)?;
        let expires = self.ttl.map(|t| Self::now() + t).unwrap_or(i64::MAX);
        let ttl = self.ttl.is_some();
        let now = if ttl { Self::now() } else { 0 };
        Ok(match self.cache.get_mut(k) {
            Some(slot) if slot.value.is_some() && (!ttl || slot.expires > now) => {
                slot.used = true;
                slot.dirty = true;
                slot.changed = true;
                slot.expires = expires;
                slot.value.as_mut()
            }
            _ => None,
        })
    }

    /// The value at `k`, inserting `make()` if there is none.
    pub fn get_or_insert_with(&mut self, k: &StateKey, make: impl FnOnce() -> T) -> Result<&mut T, StateError> {
        self.load(k)?;
        if self.cache.len() >= self.capacity && !self.cache.contains_key(k) {
            self.make_room()?;
        }
        let (ttl, now) = match self.ttl {
            Some(t) => (Some(t), Self::now()),
            None => (None, 0),
        };
        let slot = self.cache.entry(k.clone()).or_insert_with(|| Slot { value: None, dirty: true, changed: true, persisted: false, used: true, expires: i64::MAX });
        if slot.value.is_none() || ttl.is_some_and(|_| slot.expires <= now) {
            slot.value = Some(make());
        }
        slot.used = true;
        slot.dirty = true;
        slot.changed = true;
        if let Some(t) = ttl {
            slot.expires = now + t;
        }
        Ok(slot.value.as_mut().expect("set above"))
    }

    pub fn put(&mut self, k: &StateKey, value: T) -> Result<(), StateError> {
        self.load(k)?;
        if !self.cache.contains_key(k) {
            self.make_room()?;
        }
        let expires = self.ttl.map(|t| Self::now() + t).unwrap_or(i64::MAX);
        let slot = Slot { value: Some(value), dirty: true, changed: true, persisted: false, used: true, expires };
        match self.cache.entry(k.clone()) {
            // Replacing keeps whether the key may be in the last snapshot.
            std::collections::hash_map::Entry::Occupied(mut e) => {
                let persisted = e.get().persisted;
                *e.get_mut() = Slot { persisted, ..slot };
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(slot);
            }
        }
        Ok(())
    }

    /// Removes and returns the value at `k`.
    pub fn remove(&mut self, k: &StateKey) -> Result<Option<T>, StateError> {
        if !self.in_store {
            // Nothing was spilled: one probe of the cache.
            let Some(slot) = self.cache.remove(k) else { return Ok(None) };
            let live = self.live(&slot);
            if self.tracking && slot.persisted {
                self.changed_out.insert(k.clone());
            }
            return Ok(if live { slot.value } else { None });
        }
        self.load(k)?;
        let live = self.cache.get(k).map(|s| self.live(s)).unwrap_or(false);
        let Some(slot) = self.cache.get_mut(k) else { return Ok(None) };
        let v = slot.value.take();
        slot.changed = true;
        let persisted = slot.persisted;
        if self.in_store {
            slot.dirty = true;
        } else {
            self.cache.remove(k);
            if self.tracking && persisted {
                self.changed_out.insert(k.clone());
            }
        }
        Ok(if live { v } else { None })
    }

    /// Changes the value at `k` in place if there is one; `f` returns whether to keep it
    /// (`false` removes the entry). One probe of the cache where nothing was ever spilled to
    /// sled and entries do not expire (what a join does per row).
    pub fn modify<R>(&mut self, k: &StateKey, f: impl FnOnce(&mut T) -> (bool, R)) -> Result<Option<R>, StateError> {
        if self.in_store || self.ttl.is_some() {
            let Some(v) = self.get_mut(k)? else { return Ok(None) };
            let (keep, r) = f(v);
            if !keep {
                self.remove(k)?;
            }
            return Ok(Some(r));
        }
        let std::collections::hash_map::Entry::Occupied(mut e) = self.cache.entry(k.clone()) else { return Ok(None) };
        let slot = e.get_mut();
        let Some(v) = slot.value.as_mut() else { return Ok(None) };
        slot.used = true;
        slot.dirty = true;
        slot.changed = true;
        let (keep, r) = f(v);
        if !keep {
            // As `remove` does with nothing in sled.
            let (k, slot) = e.remove_entry();
            if self.tracking && slot.persisted {
                self.changed_out.insert(k);
            }
        }
        Ok(Some(r))
    }

    /// Writes every changed entry to sled (for a checkpoint).
    pub fn flush(&mut self) -> Result<(), StateError> {
        let Some(tree) = self.tree.clone() else { return Ok(()) };
        let mut wrote = false;
        let mut deleted = Vec::new();
        for (k, slot) in self.cache.iter_mut().filter(|(_, s)| s.dirty) {
            let key = encode(k, self.max_parallelism);
            let r = match &slot.value {
                Some(v) => {
                    wrote = true;
                    let bytes = serde_json::to_vec(&(slot.expires, v)).map_err(|e| e.to_string());
                    bytes.and_then(|b| tree.insert(key, b).map(|_| ()).map_err(|e| e.to_string()))
                }
                None => {
                    deleted.push(k.clone());
                    tree.remove(key).map(|_| ()).map_err(|e| e.to_string())
                }
            };
            r.map_err(|m| StateError { state: self.name.clone(), message: m })?;
            slot.dirty = false;
        }
        for k in deleted {
            if self.cache.remove(&k).is_some_and(|s| s.changed) && self.tracking {
                self.changed_out.insert(k);
            }
        }
        self.in_store |= wrote;
        Ok(())
    }

    /// Every live key (in memory and spilled), in no particular order; changes nothing.
    pub fn keys(&self) -> Result<Vec<StateKey>, StateError> {
        let mut keys: std::collections::HashSet<StateKey> = std::collections::HashSet::new();
        if let (Some(tree), true) = (&self.tree, self.in_store) {
            for item in tree.iter() {
                let (k, _) = item.map_err(|e| self.err(e))?;
                keys.insert(decode(&k).ok_or_else(|| self.err("a stored key does not decode"))?);
            }
        }
        for (k, slot) in &self.cache {
            if slot.value.is_some() {
                keys.insert(k.clone());
            } else {
                keys.remove(k);
            }
        }
        Ok(keys.into_iter().collect())
    }

    /// Every live entry, serialized: for a full snapshot of this state. Reads the cache and
    /// whatever was spilled to sled, and writes nothing: taking a snapshot does not change where
    /// entries live (so access stays in memory afterwards).
    pub fn snapshot_entries(&mut self) -> Result<Entries, StateError> {
        if !self.in_store {
            // Nothing ever spilled: the cache is the whole state.
            let mut all = Vec::with_capacity(self.cache.len());
            for (k, slot) in self.cache.iter_mut() {
                if let Some(v) = &slot.value {
                    all.push((encode(k, self.max_parallelism), serde_json::to_vec(&(slot.expires, v)).map_err(|e| StateError { state: self.name.clone(), message: e.to_string() })?));
                }
                slot.changed = false;
                slot.persisted = slot.value.is_some();
            }
            self.changed_out.clear();
            return Ok(all);
        }
        let mut all: std::collections::BTreeMap<Vec<u8>, Vec<u8>> = std::collections::BTreeMap::new();
        if let (Some(tree), true) = (&self.tree, self.in_store) {
            for item in tree.iter() {
                let (k, v) = item.map_err(|e| self.err(e))?;
                all.insert(k.to_vec(), v.to_vec());
            }
        }
        for (k, slot) in &self.cache {
            let key = encode(k, self.max_parallelism);
            match &slot.value {
                Some(v) => {
                    all.insert(key, serde_json::to_vec(&(slot.expires, v)).map_err(|e| self.err(e))?);
                }
                None => {
                    all.remove(&key);
                }
            }
        }
        self.cache.values_mut().for_each(|s| {
            s.changed = false;
            s.persisted = s.value.is_some();
        });
        self.changed_out.clear();
        Ok(all.into_iter().collect())
    }

    /// What changed since the last snapshot (full or incremental), for an incremental one:
    /// entries written (serialized as in [`snapshot_entries`](Self::snapshot_entries)) and keys
    /// removed. Costs a pass over the cache and a sled read per changed entry that was evicted;
    /// unchanged entries are not serialized.
    pub fn snapshot_changes(&mut self) -> Result<(Entries, Vec<Vec<u8>>), StateError> {
        let (mut upserts, mut removed) = (Vec::new(), Vec::new());
        for (k, slot) in self.cache.iter_mut().filter(|(_, s)| s.changed) {
            let key = encode(k, self.max_parallelism);
            match &slot.value {
                Some(v) => upserts.push((key, serde_json::to_vec(&(slot.expires, v)).map_err(|e| StateError { state: self.name.clone(), message: e.to_string() })?)),
                None if slot.persisted => removed.push(key),
                None => {}
            }
            slot.changed = false;
            slot.persisted = slot.value.is_some();
        }
        for k in std::mem::take(&mut self.changed_out) {
            if self.cache.contains_key(&k) {
                continue; // changed again since it left: its slot said so above
            }
            let key = encode(&k, self.max_parallelism);
            let stored = match (&self.tree, self.in_store) {
                (Some(tree), true) => tree.get(&key).map_err(|e| self.err(e))?,
                _ => None,
            };
            match stored {
                Some(v) => upserts.push((key, v.to_vec())),
                None => removed.push(key),
            }
        }
        upserts.sort();
        removed.sort();
        Ok((upserts, removed))
    }

    /// The key group an entry of [`snapshot_entries`](Self::snapshot_entries) belongs to.
    pub fn entry_key_group(entry: &(Vec<u8>, Vec<u8>)) -> u32 {
        entry_key_group(entry)
    }

    /// Replaces every entry with `entries` from [`snapshot_entries`](Self::snapshot_entries),
    /// returning the keys restored. Entries go to memory while the cache has room (dirty, so
    /// that evicting them later writes them to sled), the rest straight to sled.
    pub fn restore_entries(&mut self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<Vec<StateKey>, StateError> {
        self.cache.clear();
        self.changed_out.clear();
        self.in_store = false;
        let mut keys = Vec::with_capacity(entries.len());
        if let Some(tree) = self.tree.clone() {
            tree.clear().map_err(|e| self.err(e))?;
        }
        self.cache.reserve(entries.len().min(self.capacity));
        for (k, v) in entries {
            let key = decode(k).ok_or_else(|| self.err("a stored key does not decode"))?;
            keys.push(key.clone());
            match &self.tree {
                Some(tree) if self.cache.len() >= self.capacity => {
                    tree.insert(k.as_slice(), v.as_slice()).map_err(|e| self.err(e))?;
                    self.in_store = true;
                }
                _ => {
                    let (expires, value): (i64, T) = serde_json::from_slice(v).map_err(|e| self.err(format!("stored value does not decode: {e}")))?;
                    self.cache.insert(key, Slot { value: Some(value), dirty: true, changed: false, persisted: true, used: false, expires });
                }
            }
        }
        Ok(keys)
    }

    /// Entries in memory now (for tests and metrics).
    pub fn cached(&self) -> usize {
        self.cache.len()
    }
}

/// The entry key back from its sled key.
fn decode(bytes: &[u8]) -> Option<StateKey> {
    let ns = u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?) ^ (1 << 63);
    let key: Value = serde_json::from_slice(bytes.get(10..)?).ok()?;
    Some(StateKey { key: Key(key), namespace: ns as i64 })
}

/// The sled key of an entry: key group, namespace (order-preserving), then the key as JSON.
fn encode(k: &StateKey, max_parallelism: u32) -> Vec<u8> {
    let kg = KeyGroup::of_hash(k.key.0.stable_hash(), max_parallelism).0 as u16;
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(&kg.to_be_bytes());
    out.extend_from_slice(&((k.namespace as u64) ^ (1 << 63)).to_be_bytes());
    serde_json::to_writer(&mut out, &k.key.0).expect("values serialize");
    out
}

/// `entries` as compact bytes for a snapshot: for each, the key's and the value's length (u32,
/// little-endian) and bytes. (JSON would write every byte as a number.)
pub fn entries_to_bytes(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.iter().map(|(k, v)| 8 + k.len() + v.len()).sum());
    for (k, v) in entries {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// The entries [`entries_to_bytes`] wrote; `Err` if the bytes are cut or garbled.
pub fn entries_from_bytes(mut bytes: &[u8]) -> Result<Entries, String> {
    let take = |bytes: &mut &[u8]| -> Result<Vec<u8>, String> {
        let cut = || "snapshot entries are cut short".to_string();
        let n = u32::from_le_bytes(bytes.get(..4).ok_or_else(cut)?.try_into().expect("4 bytes")) as usize;
        let part = bytes.get(4..4 + n).ok_or_else(cut)?.to_vec();
        *bytes = &bytes[4 + n..];
        Ok(part)
    };
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let k = take(&mut bytes)?;
        let v = take(&mut bytes)?;
        out.push((k, v));
    }
    Ok(out)
}

/// The key group an entry of [`KeyedState::snapshot_entries`] belongs to.
pub fn entry_key_group(entry: &(Vec<u8>, Vec<u8>)) -> u32 {
    u16::from_be_bytes([entry.0[0], entry.0[1]]) as u32
}

/// State that the runtime snapshots, restores and rescales for the operator that made it
/// through its context ([`crate::operator::OperatorContext::value_state`] and kin): checkpoints
/// include it with no code in the operator.
pub trait ManagedState: Send + Sync {
    /// Every live entry (see [`KeyedState::snapshot_entries`]).
    fn snapshot(&self) -> Result<Entries, StateError>;
    /// Replaces every entry (see [`KeyedState::restore_entries`]).
    fn restore(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError>;
}

impl<T: Serialize + DeserializeOwned + Send> ManagedState for Mutex<KeyedState<T>> {
    fn snapshot(&self) -> Result<Entries, StateError> {
        self.lock().expect("state lock").snapshot_entries()
    }
    fn restore(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StateError> {
        self.lock().expect("state lock").restore_entries(entries).map(|_| ())
    }
}

/// The states an operator instance made through its context, by name.
#[derive(Clone, Default)]
pub struct ManagedStates(Arc<Mutex<Vec<Named>>>);

/// A managed state and its name.
type Named = (String, Arc<dyn ManagedState>);

impl std::fmt::Debug for ManagedStates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.0.lock().expect("registry lock").iter().map(|(n, _)| n.clone()).collect();
        f.debug_tuple("ManagedStates").field(&names).finish()
    }
}

impl ManagedStates {
    pub(crate) fn register(&self, name: &str, state: Arc<dyn ManagedState>) -> Result<(), StateError> {
        let mut all = self.0.lock().expect("registry lock");
        if all.iter().any(|(n, _)| n == name) {
            return Err(StateError { state: name.into(), message: "an operator instance has one state of each name; this one was made twice".into() });
        }
        all.push((name.to_string(), state));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.0.lock().expect("registry lock").is_empty()
    }

    /// Every state's entries, by name.
    pub fn snapshot(&self) -> Result<Vec<(String, Entries)>, StateError> {
        self.0.lock().expect("registry lock").iter().map(|(n, s)| Ok((n.clone(), s.snapshot()?))).collect()
    }

    /// Restores what [`snapshot`](Self::snapshot) returned, keeping the entries for which
    /// `keep` holds (the instance's key groups, when rescaling). A state the operator no longer
    /// makes is left out, with a warning.
    pub fn restore(&self, saved: &[(String, Entries)], keep: impl Fn(&(Vec<u8>, Vec<u8>)) -> bool) -> Result<(), StateError> {
        let all = self.0.lock().expect("registry lock");
        for (name, state) in all.iter() {
            let entries: Entries = saved.iter().filter(|(n, _)| n == name).flat_map(|(_, e)| e.iter()).filter(|e| keep(e)).cloned().collect();
            state.restore(&entries)?;
        }
        for (name, _) in saved.iter().filter(|(n, _)| !all.iter().any(|(m, _)| m == n)) {
            tracing::warn!("the checkpoint has keyed state `{name}`, which the operator no longer makes; it is left out");
        }
        Ok(())
    }
}

fn sk(key: &Value) -> StateKey {
    StateKey { key: Key(key.clone()), namespace: 0 }
}

/// Keyed value state: one value per key. Made by
/// [`OperatorContext::value_state`](crate::operator::OperatorContext::value_state), it is part
/// of every checkpoint, restored on recovery and moved with its key groups when parallelism
/// changes, with no code in the operator.
pub struct ValueState<T>(Arc<Mutex<KeyedState<T>>>);

impl<T: Serialize + DeserializeOwned + Send + 'static> ValueState<T> {
    /// Wraps `state` (the runtime manages it only if it came from the context).
    pub fn new(state: KeyedState<T>) -> ValueState<T> {
        ValueState(Arc::new(Mutex::new(state)))
    }
    pub(crate) fn managed(&self) -> Arc<dyn ManagedState> {
        self.0.clone()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyedState<T>> {
        self.0.lock().expect("state lock")
    }
    /// The value for `key` (a copy).
    pub fn get(&self, key: &Value) -> Result<Option<T>, StateError>
    where
        T: Clone,
    {
        Ok(self.lock().get(&sk(key))?.cloned())
    }
    pub fn set(&self, key: &Value, value: T) -> Result<(), StateError> {
        self.lock().put(&sk(key), value)
    }
    pub fn clear(&self, key: &Value) -> Result<(), StateError> {
        self.lock().remove(&sk(key)).map(|_| ())
    }

    /// Changes the value for `key` in place, with no copy (`make` gives one where there is
    /// none); `f` returns whether to keep it: `false` removes the entry.
    pub fn update<R>(&self, key: &Value, make: impl FnOnce() -> T, f: impl FnOnce(&mut T) -> (bool, R)) -> Result<R, StateError> {
        let mut state = self.lock();
        let k = sk(key);
        let (keep, r) = f(state.get_or_insert_with(&k, make)?);
        if !keep {
            state.remove(&k)?;
        }
        Ok(r)
    }

    /// Changes the value for `key` in place if there is one (as [`update`](Self::update));
    /// `None` where there is none.
    pub fn update_existing<R>(&self, key: &Value, f: impl FnOnce(&mut T) -> (bool, R)) -> Result<Option<R>, StateError> {
        self.lock().modify(&sk(key), f)
    }
}

/// Keyed list state: a list per key (managed as [`ValueState`] is).
pub struct ListState<T>(Arc<Mutex<KeyedState<Vec<T>>>>);

impl<T: Serialize + DeserializeOwned + Send + 'static> ListState<T> {
    pub fn new(state: KeyedState<Vec<T>>) -> ListState<T> {
        ListState(Arc::new(Mutex::new(state)))
    }
    pub(crate) fn managed(&self) -> Arc<dyn ManagedState> {
        self.0.clone()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyedState<Vec<T>>> {
        self.0.lock().expect("state lock")
    }
    pub fn add(&self, key: &Value, item: T) -> Result<(), StateError> {
        self.lock().get_or_insert_with(&sk(key), Vec::new)?.push(item);
        Ok(())
    }
    /// The list for `key` (a copy; empty if none).
    pub fn get(&self, key: &Value) -> Result<Vec<T>, StateError>
    where
        T: Clone,
    {
        Ok(self.lock().get(&sk(key))?.cloned().unwrap_or_default())
    }
    pub fn clear(&self, key: &Value) -> Result<(), StateError> {
        self.lock().remove(&sk(key)).map(|_| ())
    }
}

/// Keyed map state: a map from string to value per key (managed as [`ValueState`] is).
pub struct MapState<T>(Arc<Mutex<KeyedState<std::collections::BTreeMap<String, T>>>>);

impl<T: Serialize + DeserializeOwned + Send + 'static> MapState<T> {
    pub fn new(state: KeyedState<std::collections::BTreeMap<String, T>>) -> MapState<T> {
        MapState(Arc::new(Mutex::new(state)))
    }
    pub(crate) fn managed(&self) -> Arc<dyn ManagedState> {
        self.0.clone()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, KeyedState<std::collections::BTreeMap<String, T>>> {
        self.0.lock().expect("state lock")
    }
    pub fn put(&self, key: &Value, name: &str, value: T) -> Result<(), StateError> {
        self.lock().get_or_insert_with(&sk(key), Default::default)?.insert(name.to_string(), value);
        Ok(())
    }
    pub fn get(&self, key: &Value, name: &str) -> Result<Option<T>, StateError>
    where
        T: Clone,
    {
        Ok(self.lock().get(&sk(key))?.and_then(|m| m.get(name).cloned()))
    }
    pub fn remove(&self, key: &Value, name: &str) -> Result<Option<T>, StateError> {
        Ok(self.lock().get_mut(&sk(key))?.and_then(|m| m.remove(name)))
    }
    /// Every (name, value) for `key` (copies).
    pub fn entries(&self, key: &Value) -> Result<Vec<(String, T)>, StateError>
    where
        T: Clone,
    {
        Ok(self.lock().get(&sk(key))?.map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default())
    }
    pub fn clear(&self, key: &Value) -> Result<(), StateError> {
        self.lock().remove(&sk(key)).map(|_| ())
    }
}

#[cfg(test)]
mod tests;
