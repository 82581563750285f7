//! What a checkpoint holds of a window operator, and how chains of incremental snapshots and
//! the snapshots of other parallelisms become one instance's state.

use std::collections::BTreeMap;

use rill_engine::operator::OperatorError;
use rill_engine::state::KeyedState;
use rill_engine::value::{Key, Value};

use super::{Index, IndexChange, Win, Window};

/// What a checkpoint holds of a window operator: its state entries and its indexes.
#[derive(serde::Serialize, serde::Deserialize, Default)]
pub(super) struct WindowSnapshot {
    /// Window contents: every entry, or (in a delta) those written since the last snapshot.
    pub(super) wins: Vec<(Vec<u8>, Vec<u8>)>,
    pub(super) sessions: Vec<(Vec<u8>, Vec<u8>)>,
    /// In a delta: entries removed since the last snapshot.
    #[serde(default)]
    pub(super) wins_removed: Vec<Vec<u8>>,
    #[serde(default)]
    pub(super) sessions_removed: Vec<Vec<u8>>,
    /// In a delta: the index changes since the last snapshot, in order (the indexes above are
    /// then empty).
    #[serde(default)]
    pub(super) index_changes: Vec<IndexChange>,
    pub(super) fire: Vec<(i64, Vec<(Value, i64)>)>,
    pub(super) cleanup: Vec<(i64, Vec<(Value, i64)>)>,
    pub(super) proc_fire: Vec<(i64, Vec<(Value, i64)>)>,
    pub(super) watermark: i64,
}

impl Window {
    /// Keeps this instance's key groups of the old instances' states (rescaling).
    pub(super) fn restore_rescaled_snapshots(&mut self, states: Vec<WindowSnapshot>) -> Result<(), OperatorError> {
        let mine = |e: &(Vec<u8>, Vec<u8>)| self.key_groups.contains(&KeyedState::<Win>::entry_key_group(e));
        let mut merged = WindowSnapshot { watermark: i64::MIN, ..Default::default() };
        let owns = |k: &Value| self.key_groups.contains(&rill_engine::exchange::KeyGroup::of_hash(k.stable_hash(), self.max_parallelism).0);
        let keep = |idx: Vec<(i64, Vec<(Value, i64)>)>| -> Vec<(i64, Vec<(Value, i64)>)> {
            idx.into_iter().map(|(t, ws)| (t, ws.into_iter().filter(|(k, _)| owns(k)).collect::<Vec<_>>())).filter(|(_, ws)| !ws.is_empty()).collect()
        };
        for snap in states {
            merged.wins.extend(snap.wins.into_iter().filter(|e| mine(e)));
            merged.sessions.extend(snap.sessions.into_iter().filter(|e| mine(e)));
            merged.fire.extend(keep(snap.fire));
            merged.cleanup.extend(keep(snap.cleanup));
            merged.proc_fire.extend(keep(snap.proc_fire));
            // The slowest old instance's watermark: nothing it had not yet seen counts as late.
            merged.watermark = if merged.watermark == i64::MIN { snap.watermark } else { merged.watermark.min(snap.watermark) };
        }
        self.install(merged)
    }

    /// Takes a whole snapshot's state as this instance's.
    pub(super) fn install(&mut self, snap: WindowSnapshot) -> Result<(), OperatorError> {
        if let Some(w) = self.wins.as_mut() {
            w.restore_entries(&snap.wins)?;
        }
        if let Some(s) = self.sessions.as_mut() {
            s.restore_entries(&snap.sessions)?;
        }
        self.fire = load_index(snap.fire);
        self.cleanup = load_index(snap.cleanup);
        self.proc_fire = load_index(snap.proc_fire);
        self.watermark = snap.watermark;
        Ok(())
    }
}

/// A chain of window snapshots (a full one, then deltas) folded into one full snapshot.
pub(super) fn fold(chain: &[Vec<u8>]) -> Result<Option<WindowSnapshot>, OperatorError> {
    let parse = |b: &[u8]| serde_json::from_slice::<WindowSnapshot>(b).map_err(|e| OperatorError::new(format!("window checkpoint: {e}")));
    let Some((first, deltas)) = chain.split_first() else { return Ok(None) };
    let mut snap = parse(first)?;
    if deltas.is_empty() {
        return Ok(Some(snap));
    }
    let mut wins: BTreeMap<Vec<u8>, Vec<u8>> = std::mem::take(&mut snap.wins).into_iter().collect();
    let mut sessions: BTreeMap<Vec<u8>, Vec<u8>> = std::mem::take(&mut snap.sessions).into_iter().collect();
    let as_map = |v: Vec<(i64, Vec<(Value, i64)>)>| v.into_iter().collect::<BTreeMap<i64, Vec<(Value, i64)>>>();
    let mut indexes = [as_map(std::mem::take(&mut snap.fire)), as_map(std::mem::take(&mut snap.cleanup)), as_map(std::mem::take(&mut snap.proc_fire))];
    for d in deltas {
        let d = parse(d)?;
        wins.extend(d.wins);
        d.wins_removed.iter().for_each(|k| drop(wins.remove(k)));
        sessions.extend(d.sessions);
        d.sessions_removed.iter().for_each(|k| drop(sessions.remove(k)));
        for (which, time, key, start, added) in d.index_changes {
            let index = indexes.get_mut(which as usize).ok_or_else(|| OperatorError::new(format!("window checkpoint: unknown index {which}")))?;
            let at = index.entry(time).or_default();
            if added {
                at.push((key, start));
            } else if let Some(i) = at.iter().position(|(k, s)| *s == start && Key(k.clone()) == Key(key.clone())) {
                at.remove(i);
            }
            if at.is_empty() {
                index.remove(&time);
            }
        }
        snap.watermark = d.watermark;
    }
    snap.wins = wins.into_iter().collect();
    snap.sessions = sessions.into_iter().collect();
    let [fire, cleanup, proc_fire] = indexes.map(|m| m.into_iter().collect::<Vec<_>>());
    (snap.fire, snap.cleanup, snap.proc_fire) = (fire, cleanup, proc_fire);
    Ok(Some(snap))
}

pub(super) fn save_index(m: &Index) -> Vec<(i64, Vec<(Value, i64)>)> {
    m.iter().map(|(t, v)| (*t, v.iter().map(|(k, s, _)| (k.0.clone(), *s)).collect())).collect()
}

/// Restored entries belong to a snapshot: generation 0. Entries of one time from several
/// snapshots (rescaling) are merged.
fn load_index(v: Vec<(i64, Vec<(Value, i64)>)>) -> Index {
    let mut m: Index = BTreeMap::new();
    for (t, ws) in v {
        m.entry(t).or_default().extend(ws.into_iter().map(|(k, s)| (Key(k), s, 0)));
    }
    m
}

