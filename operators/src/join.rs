//! `join`: two keyed streams joined on event (or processing) time.
//!
//! - `kind: interval` — a left row at time `tl` and a right row at `tr` of the same key match
//!   when `tr − tl` is within `between: [lower, upper]` (inclusive), Flink's interval join. A pair
//!   goes out as soon as its second row arrives. A row is kept until the watermark passes the
//!   last time a partner could still come (`tl + upper` for a left row, `tr − lower` for a right
//!   one); an outer row (a row that never matched, in a `left`, `right` or `full` join) goes out
//!   then.
//! - `kind: window` — rows of the same key in the same tumbling or sliding window match; the
//!   window's pairs (and its outer rows) go out when the watermark passes its end, at
//!   `end − 1`, Flink's window join.
//! - `kind: temporal` — each left row meets the right side's row of its key *as of the left
//!   row's time*: the right input is a changelog (the latest row per key wins; `deletes:` marks
//!   rows that delete their key), Flink SQL's `FOR SYSTEM_TIME AS OF` join. A left row goes out
//!   once the watermark reaches its time, so that every version up to it has arrived.
//!
//! Joined rows of interval and temporal joins carry the left row's time (a right outer row its
//! own), so that a window after the join groups them by when the left row happened (a
//! prediction, not its label). An interval join holds the watermark it sends on back by the
//! interval (`upper`, and `−lower` with right outer rows), so that none of them is late
//! downstream. Rows too late to join (at or before the watermark when they come) go to the
//! `late` output. Rows without a timestamp (sources on processing time) are joined by this
//! operator's clock, and their output has no timestamp either.
//!
//! Both inputs are routed by their key, so equal keys meet in one instance; a null key meets
//! nothing (SQL's rule). The rows of a key live in managed keyed state (sled-backed, cached in
//! memory; checkpointed, restored and rescaled by key group by the runtime). When an interval
//! join's rows can go is kept in a queue per side (rows come nearly in time order), saved with
//! the watermark in the operator's snapshot; window and temporal joins use timers.

use std::sync::Arc;

use crate::window;

use rill_engine::config::{ConfigError, ConfigErrors, Ordered, Spanned};
use rill_engine::expr::Expr;
use rill_engine::message::Watermark;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError};
use rill_engine::record::{Batch, Record, NO_TIMESTAMP};
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::state::{StateOptions, TimeDomain, Timer, ValueState};
use rill_engine::value::{Sym, Value};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinConfig {
    on: OnConfig,
    kind: Option<Spanned<String>>,
    /// Interval joins: `[lower, upper]`, right's time minus left's (`-1m`, `10m`).
    between: Option<Spanned<Vec<Spanned<String>>>>,
    window: Option<crate::window::WindowSpec>,
    how: Option<Spanned<String>>,
    /// Temporal joins: a condition over a right row that makes it delete its key's row.
    deletes: Option<Spanned<String>>,
    select: Option<Ordered<Spanned<String>>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OnConfig {
    left: Spanned<String>,
    right: Spanned<String>,
}

/// What decides which rows meet (times in milliseconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// `tr − tl ∈ [lower, upper]`.
    Interval { lower: i64, upper: i64 },
    /// The same window (tumbling: `slide == size`).
    Window { size: i64, slide: i64 },
    /// The right side's row as of the left row's time.
    Temporal,
}

/// Which unmatched rows go out (with the other side null).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct How {
    pub left: bool,
    pub right: bool,
}

impl How {
    fn outer(self, side: usize) -> bool {
        if side == LEFT {
            self.left
        } else {
            self.right
        }
    }
}

const LEFT: usize = 0;
const RIGHT: usize = 1;

/// A kept row: its time (event time, or this operator's clock), whether it has met a partner
/// (interval joins), and the row.
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Kept {
    ts: i64,
    /// A row on processing time (no timestamp of its own; `ts` is the clock when it came).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    untimed: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    matched: bool,
    /// A temporal join's right row that deletes its key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    deletes: bool,
    row: Record,
}

/// The rows of one key: left and right (temporal joins: the left rows waiting for the
/// watermark, the right side's versions in time order).
#[derive(serde::Serialize, serde::Deserialize, Default, Debug)]
struct Sides {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    left: Vec<Kept>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    right: Vec<Kept>,
}

impl Kept {
    fn new(ts: i64, row: Record) -> Kept {
        Kept { ts, untimed: row.timestamp == NO_TIMESTAMP, matched: false, deletes: false, row }
    }

    /// The row's own timestamp (kept rows lose it when they go through sled).
    fn time(&self) -> i64 {
        if self.untimed {
            NO_TIMESTAMP
        } else {
            self.ts
        }
    }
}

impl Sides {
    fn side(&mut self, s: usize) -> &mut Vec<Kept> {
        if s == LEFT {
            &mut self.left
        } else {
            &mut self.right
        }
    }

    fn is_empty(&self) -> bool {
        self.left.is_empty() && self.right.is_empty()
    }
}

/// The compiled component, shared by its instances.
pub struct Settings {
    pub kind: Kind,
    pub how: How,
    keys: [Expr; 2],
    deletes: Option<Expr>,
    select: Option<Vec<(Sym, Expr)>>,
    /// `select` when every field is `left.x` or `right.x`: (output, side, field), copied
    /// without building a record of both rows.
    direct: Option<Vec<(Sym, usize, Sym)>>,
    left_sym: Sym,
    right_sym: Sym,
}

#[derive(Default)]
struct Counts {
    pairs: u64,
    outer: u64,
    late: u64,
    misses: u64,
}

pub struct Join {
    s: Arc<Settings>,
    rows: Option<ValueState<Sides>>,
    /// Interval joins on event time: when each kept row can go.
    cleanup: Cleanup,
    /// This instance's key groups (of `max_parallelism`), to keep its part of the clean-up
    /// queue when restored at another parallelism.
    key_groups: std::ops::Range<u32>,
    max_parallelism: u32,
    watermark: i64,
    counts: Counts,
    /// Joined rows, built under the state's lock and emitted after it.
    pending: Vec<Record>,
}

impl Join {
    pub fn new(s: Arc<Settings>) -> Join {
        let max_parallelism = rill_engine::exchange::DEFAULT_MAX_PARALLELISM;
        Join { s, rows: None, cleanup: Cleanup::default(), key_groups: 0..max_parallelism, max_parallelism, watermark: i64::MIN, counts: Counts::default(), pending: Vec::new() }
    }

    /// The output row of a pair (`None` for the missing side of an outer row), at time `ts`.
    fn joined(s: &Settings, left: Option<&Record>, right: Option<&Record>, ts: i64, out: &mut Vec<Record>) -> Result<(), (Record, String)> {
        let mut r = match &s.select {
            Some(_) if s.direct.is_some() => {
                let direct = s.direct.as_ref().expect("checked");
                let mut r = Record::with_capacity(direct.len());
                for (name, side, field) in direct {
                    let row = if *side == LEFT { left } else { right };
                    r.push(*name, row.and_then(|row| row.get(*field)).cloned().unwrap_or(Value::Null));
                }
                r
            }
            None => {
                let mut r = left.cloned().unwrap_or_default();
                if let Some(right) = right {
                    for (k, v) in right.fields() {
                        if left.is_some_and(|l| l.get(*k).is_some()) {
                            r.set(Sym::new(&format!("right_{k}")), v.clone());
                        } else {
                            r.set(*k, v.clone());
                        }
                    }
                }
                r
            }
            Some(select) => {
                let mut both = Record::with_capacity(2);
                both.push(s.left_sym, left.map(|l| Value::Map(Arc::new(l.clone()))).unwrap_or(Value::Null));
                both.push(s.right_sym, right.map(|r| Value::Map(Arc::new(r.clone()))).unwrap_or(Value::Null));
                let mut r = Record::with_capacity(select.len());
                for (name, e) in select {
                    match e.eval(&both) {
                        Ok(v) => r.push(*name, v),
                        Err(err) => return Err((both, format!("join field `{name}` = `{}`: {err}", e.source()))),
                    }
                }
                r
            }
        };
        r.timestamp = ts;
        out.push(r);
        Ok(())
    }

    fn flush(&mut self, out: &mut Collector, failed: Vec<(Record, String)>) {
        for r in self.pending.drain(..) {
            out.emit(r);
        }
        for (r, e) in failed {
            out.reject(r, e);
        }
    }

    fn take(&mut self, side: usize, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        let key = match self.s.keys[side].eval(&record) {
            Ok(k) => k,
            Err(e) => {
                out.reject(record, format!("join key `{}` ({} input): {e}", self.s.keys[side].source(), if side == LEFT { "left" } else { "right" }));
                return Ok(());
            }
        };
        let (ts, domain) = if record.timestamp == NO_TIMESTAMP { (rill_engine::time::now_millis(), TimeDomain::Processing) } else { (record.timestamp, TimeDomain::Event) };
        let wm = if domain == TimeDomain::Event { self.watermark } else { i64::MIN };
        let late = match self.s.kind {
            Kind::Interval { .. } | Kind::Temporal => ts <= wm,
            // Too late for the last window that holds it.
            Kind::Window { size, slide } => ts - ts.rem_euclid(slide) + size - 1 <= wm,
        };
        if late {
            self.counts.late += 1;
            out.emit_side(0, record);
            return Ok(());
        }
        let s = self.s.clone();
        let mut failed = Vec::new();
        // SQL's rule: a null key meets nothing. Such rows are kept as any other (an outer
        // join emits them when their interval or window closes), but never paired.
        let meets = !key.is_null();
        match s.kind {
            Kind::Interval { lower, upper } => {
                let (from, to, until) = if side == LEFT { (ts + lower, ts + upper, ts + upper) } else { (ts - upper, ts - lower, ts - lower) };
                let pending = &mut self.pending;
                let mut pairs = 0;
                let kept = until > wm;
                let mut record = Some(record);
                let matched = rows(&mut self.rows).update(&key, Sides::default, |sides| {
                    let mut matched = false;
                    let this = record.as_ref().expect("taken below");
                    for other in sides.side(1 - side).iter_mut().filter(|o| meets && o.ts >= from && o.ts <= to) {
                        let (l, r, at) = if side == LEFT { (this, &other.row, this.timestamp) } else { (&other.row, this, other.time()) };
                        Self::joined(&s, Some(l), Some(r), at, pending).unwrap_or_else(|e| failed.push(e));
                        other.matched = true;
                        matched = true;
                        pairs += 1;
                    }
                    if kept {
                        sides.side(side).push(Kept { matched, ..Kept::new(ts, record.take().expect("once")) });
                    }
                    (!sides.is_empty(), matched)
                })?;
                self.counts.pairs += pairs;
                if kept && domain == TimeDomain::Event {
                    self.cleanup.push(until, key, side);
                } else if kept {
                    out.timers().register(domain, &key, side as i64, until);
                } else if let (false, true, Some(record)) = (matched, s.how.outer(side), record) {
                    // No partner can come any more (an interval entirely behind the watermark).
                    let (l, r) = if side == LEFT { (Some(&record), None) } else { (None, Some(&record)) };
                    self.counts.outer += 1;
                    Self::joined(&s, l, r, record.timestamp, &mut self.pending).unwrap_or_else(|e| failed.push(e));
                }
            }
            Kind::Window { size, slide } => {
                rows(&mut self.rows).update(&key, Sides::default, |sides| {
                    sides.side(side).push(Kept::new(ts, record));
                    (true, ())
                })?;
                let last = ts - ts.rem_euclid(slide);
                let mut start = last;
                while start > ts - size {
                    if start + size - 1 > wm {
                        out.timers().register(domain, &key, 0, start + size - 1);
                    }
                    start -= slide;
                }
            }
            Kind::Temporal if side == RIGHT && !meets => {
                out.reject(record, format!("join: the table's key `{}` is null: no row can ask for it", s.keys[RIGHT].source()));
                return Ok(());
            }
            Kind::Temporal if side == RIGHT => {
                let deletes = match &s.deletes {
                    Some(d) => match d.eval(&record) {
                        Ok(Value::Bool(b)) => b,
                        Ok(Value::Null) => false,
                        Ok(other) => {
                            out.reject(record, format!("join `deletes` = `{}` gave {} (expected a bool)", d.source(), other.type_name()));
                            return Ok(());
                        }
                        Err(e) => {
                            out.reject(record, format!("join `deletes` = `{}`: {e}", d.source()));
                            return Ok(());
                        }
                    },
                    None => false,
                };
                rows(&mut self.rows).update(&key, Sides::default, |sides| {
                    // In time order; of equal times the later arrival wins.
                    let at = sides.right.partition_point(|v| v.ts <= ts);
                    sides.right.insert(at, Kept { deletes, ..Kept::new(ts, record) });
                    prune_versions(&mut sides.right, wm);
                    (!sides.is_empty(), ())
                })?;
            }
            Kind::Temporal => {
                if domain == TimeDomain::Processing || !meets {
                    let version = rows(&mut self.rows).update_existing(&key, |sides| (true, sides.right.last().filter(|v| !v.deletes).map(|v| v.row.clone())))?.flatten();
                    self.emit_temporal(&record, record.timestamp, version.as_ref(), &mut failed);
                } else {
                    rows(&mut self.rows).update(&key, Sides::default, |sides| {
                        sides.left.push(Kept::new(ts, record));
                        (true, ())
                    })?;
                    out.timers().register(domain, &key, 0, ts);
                }
            }
        }
        self.flush(out, failed);
        Ok(())
    }

    /// Drops the rows of `key` on `side` whose interval closed by `time`, emitting the outer
    /// rows among them (at `time`); returns how many.
    #[allow(clippy::too_many_arguments)]
    fn clean_interval(s: &Settings, rows: &ValueState<Sides>, key: &Value, side: usize, time: i64, lower: i64, upper: i64, pending: &mut Vec<Record>, failed: &mut Vec<(Record, String)>) -> Result<u64, OperatorError> {
        let until = |k: &Kept| if side == LEFT { k.ts + upper } else { k.ts - lower };
        let mut outer = 0;
        rows.update_existing(key, |sides| {
            sides.side(side).retain(|k| {
                if until(k) > time {
                    return true;
                }
                if !k.matched && s.how.outer(side) {
                    let (l, r) = if side == LEFT { (Some(&k.row), None) } else { (None, Some(&k.row)) };
                    outer += 1;
                    Self::joined(s, l, r, k.time(), pending).unwrap_or_else(|e| failed.push(e));
                }
                false
            });
            (!sides.is_empty(), ())
        })?;
        Ok(outer)
    }

    fn read_snapshot(state: &[u8]) -> Result<(i64, Vec<(i64, Value, u8)>), OperatorError> {
        let bad = || OperatorError::new("a join's snapshot does not decode");
        let (w, rest) = state.split_at_checked(8).ok_or_else(bad)?;
        let entries = serde_json::from_slice(rest).map_err(|_| bad())?;
        Ok((i64::from_le_bytes(w.try_into().map_err(|_| bad())?), entries))
    }

    /// A temporal join's left row with the right side's row as of its time (`None`: no row).
    fn emit_temporal(&mut self, left: &Record, at: i64, version: Option<&Record>, failed: &mut Vec<(Record, String)>) {
        match version {
            Some(v) => {
                self.counts.pairs += 1;
                Self::joined(&self.s, Some(left), Some(v), at, &mut self.pending).unwrap_or_else(|e| failed.push(e));
            }
            None => {
                self.counts.misses += 1;
                if self.s.how.left {
                    self.counts.outer += 1;
                    Self::joined(&self.s, Some(left), None, at, &mut self.pending).unwrap_or_else(|e| failed.push(e));
                }
            }
        }
    }
}

/// When kept rows can go: (time, key, side) in time order. The rows of each side come nearly
/// in time order, so most entries go at the back of that side's queue; the few that come
/// earlier than its back wait in an ordered map. An entry due finds its key's rows whose time
/// has come (none, if an earlier entry of the key took them).
#[derive(Default)]
struct Cleanup {
    queues: [std::collections::VecDeque<(i64, Value)>; 2],
    early: std::collections::BTreeMap<i64, Vec<(Value, u8)>>,
}

impl Cleanup {
    fn push(&mut self, time: i64, key: Value, side: usize) {
        let queue = &mut self.queues[side];
        match queue.back() {
            Some((last, _)) if *last > time => self.early.entry(time).or_default().push((key, side as u8)),
            _ => queue.push_back((time, key)),
        }
    }

    /// The next entry due at `watermark`, earliest first.
    fn pop_due(&mut self, watermark: i64) -> Option<(i64, Value, usize)> {
        let fronts = [self.queues[0].front().map(|e| e.0), self.queues[1].front().map(|e| e.0), self.early.first_key_value().map(|e| *e.0)];
        let (which, time) = fronts.iter().enumerate().filter_map(|(i, t)| t.map(|t| (i, t))).min_by_key(|(_, t)| *t)?;
        if time > watermark {
            return None;
        }
        if which < 2 {
            return self.queues[which].pop_front().map(|(t, k)| (t, k, which));
        }
        let mut entry = self.early.first_entry().expect("checked");
        let (key, side) = entry.get_mut().pop().expect("never empty");
        if entry.get().is_empty() {
            entry.remove();
        }
        Some((time, key, side as usize))
    }

    /// Every entry, for a snapshot.
    fn entries(&self) -> Vec<(i64, &Value, u8)> {
        let mut all: Vec<(i64, &Value, u8)> = Vec::with_capacity(self.queues[0].len() + self.queues[1].len());
        for (side, q) in self.queues.iter().enumerate() {
            all.extend(q.iter().map(|(t, k)| (*t, k, side as u8)));
        }
        all.extend(self.early.iter().flat_map(|(t, v)| v.iter().map(move |(k, s)| (*t, k, *s))));
        all
    }

    fn from_entries(mut entries: Vec<(i64, Value, u8)>) -> Cleanup {
        entries.sort_by_key(|e| e.0);
        let mut c = Cleanup::default();
        for (t, k, s) in entries {
            c.push(t, k, s as usize);
        }
        c
    }
}

/// The rows of every key (in memory where the join runs outside a job).
fn rows(slot: &mut Option<ValueState<Sides>>) -> &ValueState<Sides> {
    slot.get_or_insert_with(|| ValueState::new(rill_engine::state::KeyedState::in_memory("rows")))
}

fn keep<T>(r: Result<T, ConfigError>, errors: &mut Vec<ConfigError>) -> Option<T> {
    r.map_err(|e| errors.push(e)).ok()
}

/// Drops the versions no left row can ask for any more: those older than the newest version at
/// or before the watermark.
fn prune_versions(versions: &mut Vec<Kept>, wm: i64) {
    let at_or_before = versions.partition_point(|v| v.ts <= wm);
    if at_or_before > 1 {
        versions.drain(..at_or_before - 1);
    }
}

impl Operator for Join {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        self.rows = Some(ctx.value_state("rows", StateOptions::default())?);
        self.key_groups = ctx.key_groups.clone();
        self.max_parallelism = ctx.max_parallelism;
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.take(LEFT, record, out)
    }

    fn process_input(&mut self, input: usize, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        for r in batch.into_records() {
            self.take(input.min(RIGHT), r, out)?;
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: Watermark, out: &mut Collector) -> Result<(), OperatorError> {
        self.watermark = watermark.0;
        if let Kind::Interval { lower, upper } = self.s.kind {
            let mut failed = Vec::new();
            while let Some((until, key, side)) = self.cleanup.pop_due(watermark.0) {
                let outer = Self::clean_interval(&self.s, rows(&mut self.rows), &key, side, until, lower, upper, &mut self.pending, &mut failed)?;
                self.counts.outer += outer;
            }
            self.flush(out, failed);
        }
        Ok(())
    }

    /// Interval joins hold the watermark back by the interval: a pair goes out at the left
    /// row's time when the right row comes (up to `upper` later), an outer row at its own time
    /// when its interval closes.
    fn output_watermark(&self, input: Watermark) -> Watermark {
        match self.s.kind {
            _ if input == Watermark::MAX => input,
            Kind::Interval { lower, upper } => {
                let delay = if self.s.how.right { upper.max(-lower) } else { upper }.max(0);
                Watermark(input.0.saturating_sub(delay))
            }
            _ => input,
        }
    }

    /// The watermark and the clean-up queue (the rows are managed state and the timers are
    /// saved by the runtime), so that a row late before a crash is late after it too.
    fn snapshot(&mut self, _epoch: rill_engine::message::Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        let mut bytes = self.watermark.to_le_bytes().to_vec();
        serde_json::to_writer(&mut bytes, &self.cleanup.entries()).map_err(|e| OperatorError::new(e.to_string()))?;
        Ok(Some(bytes))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        let (watermark, entries) = Self::read_snapshot(state)?;
        self.watermark = watermark;
        self.cleanup = Cleanup::from_entries(entries);
        Ok(())
    }

    /// Every instance had the same watermark at the barrier (each reads every upstream
    /// instance); the lowest is taken all the same. The clean-up entries of this instance's
    /// key groups are kept.
    fn restore_rescaled(&mut self, states: &[Vec<u8>]) -> Result<(), OperatorError> {
        let mut mine = Vec::new();
        let mut watermark = None::<i64>;
        for s in states {
            let (w, entries) = Self::read_snapshot(s)?;
            watermark = Some(watermark.map_or(w, |x| x.min(w)));
            let max = self.max_parallelism;
            mine.extend(entries.into_iter().filter(|(_, key, _)| self.key_groups.contains(&rill_engine::exchange::KeyGroup::of_hash(key.stable_hash(), max).0)));
        }
        self.watermark = watermark.unwrap_or(i64::MIN);
        self.cleanup = Cleanup::from_entries(mine);
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Collector) -> Result<(), OperatorError> {
        let s = self.s.clone();
        let pending = &mut self.pending;
        let mut failed = Vec::new();
        let mut counts = Counts::default();
        let time = timer.time;
        let rows = rows(&mut self.rows);
        match s.kind {
            // Rows on processing time (event-time rows are cleaned up in `on_watermark`).
            Kind::Interval { lower, upper } => {
                counts.outer += Self::clean_interval(&s, rows, &timer.key, timer.namespace as usize, time, lower, upper, pending, &mut failed)?;
            }
            Kind::Window { size, slide } => {
                let (start, end) = (time + 1 - size, time + 1);
                // A window's rows go out at its last moment (on the clock: untimed).
                let at = if timer.domain == TimeDomain::Event { time } else { NO_TIMESTAMP };
                rows.update_existing(&timer.key, |sides| {
                    let inside = |k: &&Kept| k.ts >= start && k.ts < end;
                    let meets = !timer.key.is_null();
                    let right: Vec<&Kept> = sides.right.iter().filter(inside).collect();
                    let mut right_met = vec![false; right.len()];
                    for l in sides.left.iter().filter(inside) {
                        for (i, r) in right.iter().enumerate().filter(|_| meets) {
                            counts.pairs += 1;
                            right_met[i] = true;
                            Self::joined(&s, Some(&l.row), Some(&r.row), at, pending).unwrap_or_else(|e| failed.push(e));
                        }
                        if (right.is_empty() || !meets) && s.how.left {
                            counts.outer += 1;
                            Self::joined(&s, Some(&l.row), None, at, pending).unwrap_or_else(|e| failed.push(e));
                        }
                    }
                    if s.how.right {
                        for (r, _) in right.iter().zip(&right_met).filter(|(_, met)| !**met || !meets) {
                            counts.outer += 1;
                            Self::joined(&s, None, Some(&r.row), at, pending).unwrap_or_else(|e| failed.push(e));
                        }
                    }
                    // Rows before the next window's start are in no later window.
                    sides.left.retain(|k| k.ts >= start + slide);
                    sides.right.retain(|k| k.ts >= start + slide);
                    (!sides.is_empty(), ())
                })?;
            }
            Kind::Temporal => {
                let mut due = Vec::new();
                rows.update_existing(&timer.key, |sides| {
                    let (now, later): (Vec<Kept>, Vec<Kept>) = std::mem::take(&mut sides.left).into_iter().partition(|k| k.ts <= time);
                    sides.left = later;
                    for l in now {
                        let at = sides.right.partition_point(|v| v.ts <= l.ts);
                        let version = at.checked_sub(1).map(|i| &sides.right[i]).filter(|v| !v.deletes).map(|v| v.row.clone());
                        due.push((l, version));
                    }
                    prune_versions(&mut sides.right, time);
                    if sides.right.len() == 1 && sides.right[0].deletes && sides.right[0].ts <= time {
                        sides.right.clear();
                    }
                    (!sides.is_empty(), ())
                })?;
                for (l, version) in due {
                    self.emit_temporal(&l.row, l.time(), version.as_ref(), &mut failed);
                }
            }
        }
        self.counts.pairs += counts.pairs;
        self.counts.outer += counts.outer;
        self.flush(out, failed);
        Ok(())
    }

    fn report(&self) -> Option<String> {
        let c = &self.counts;
        Some(format!("{} joined, {} outer, {} late{}", c.pairs, c.outer, c.late, if self.s.kind == Kind::Temporal { format!(", {} without a row", c.misses) } else { String::new() }))
    }
}

/// A signed duration: `-1m`, `10m`, `0`, `250ms`, or milliseconds.
fn signed_ms(text: &Spanned<String>) -> Result<i64, ConfigError> {
    let t = text.value.trim();
    let (sign, rest) = match t.strip_prefix('-') {
        Some(r) => (-1, r.trim()),
        None => (1, t.strip_prefix('+').unwrap_or(t).trim()),
    };
    let ms = match rest.parse::<i64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(rest)
            .map_err(|e| ConfigError::new(Some(&text.span), format!("`{t}` is not a duration ({e})")).hint("write e.g. `-1m`, `0`, `10m`, `500ms`"))?
            .as_millis() as i64,
    };
    Ok(sign * ms)
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: JoinConfig = ctx.options()?;
    let mut errors = Vec::new();
    let left_key = keep(ctx.expr(&cfg.on.left), &mut errors);
    let right_key = keep(ctx.expr(&cfg.on.right), &mut errors);
    let kinds = ["interval", "window", "temporal"];
    let kind_name = cfg.kind.as_ref().map(|k| k.value.as_str()).unwrap_or("interval");
    let kind_span = cfg.kind.as_ref().map(|k| &k.span).unwrap_or(&ctx.options.span);
    let kind = match kind_name {
        "interval" => match &cfg.between {
            Some(b) if b.value.len() == 2 => match (signed_ms(&b.value[0]), signed_ms(&b.value[1])) {
                (Ok(lower), Ok(upper)) if lower <= upper => Some(Kind::Interval { lower, upper }),
                (Ok(_), Ok(_)) => {
                    errors.push(ConfigError::new(Some(&b.span), "`between: [lower, upper]` needs lower ≤ upper").hint("e.g. `between: [-1m, 10m]`: the right row from 1 minute before the left one to 10 minutes after"));
                    None
                }
                (a, b) => {
                    errors.extend(a.err());
                    errors.extend(b.err());
                    None
                }
            },
            Some(b) => {
                errors.push(ConfigError::new(Some(&b.span), "`between` takes two durations: `[lower, upper]`").hint("e.g. `between: [-1m, 10m]`: right's event time minus left's"));
                None
            }
            None => {
                errors.push(ConfigError::new(Some(kind_span), "an interval join needs `between: [lower, upper]`").hint("e.g. `between: [-1m, 10m]`: the right row from 1 minute before the left one to 10 minutes after"));
                None
            }
        },
        "window" => {
            let span = ctx.options.get("window").map(|n| &n.span);
            let hint = "e.g. `window: {type: tumbling, size: 1m}` or `{type: sliding, size: 1m, slide: 10s}`";
            let before = errors.len();
            match cfg.window.as_ref().map(|w| w.kind(span, &mut errors)) {
                None => {
                    errors.push(ConfigError::new(Some(kind_span), "a window join needs `window`").hint(hint));
                    None
                }
                _ if errors.len() > before => None,
                Some(window::Kind::Tumbling { size }) => Some(Kind::Window { size, slide: size }),
                Some(window::Kind::Sliding { size, slide }) => Some(Kind::Window { size, slide }),
                Some(_) => {
                    errors.push(ConfigError::new(span, "a window join takes tumbling or sliding windows").hint(hint));
                    None
                }
            }
        }
        "temporal" => Some(Kind::Temporal),
        other => {
            errors.push(ConfigError::new(Some(kind_span), format!("unknown join kind `{other}`")).hint(format!("`kind` is one of: {}", kinds.join(", "))));
            None
        }
    };
    for (present, option, kinds) in [(cfg.between.is_some(), "between", "interval"), (cfg.window.is_some(), "window", "window"), (cfg.deletes.is_some(), "deletes", "temporal")] {
        if present && kind_name != kinds {
            errors.push(ConfigError::new(ctx.options.get(option).map(|n| &n.span), format!("`{option}` is an option of `kind: {kinds}` joins (this one is `{kind_name}`)")));
        }
    }
    let hows = ["inner", "left", "right", "full"];
    let how_name = cfg.how.as_ref().map(|h| h.value.as_str()).unwrap_or("inner");
    let how = match hows.iter().position(|h| *h == how_name) {
        Some(i) => How { left: i == 1 || i == 3, right: i == 2 || i == 3 },
        None => {
            errors.push(ConfigError::new(cfg.how.as_ref().map(|h| &h.span), format!("unknown join `how: {how_name}`")).hint(format!("`how` is one of: {}", hows.join(", "))));
            How { left: false, right: false }
        }
    };
    if kind == Some(Kind::Temporal) && how.right {
        errors.push(ConfigError::new(cfg.how.as_ref().map(|h| &h.span), "a temporal join is `how: inner` or `how: left`").hint("it enriches the left stream; the right input is the table"));
    }
    let deletes = cfg.deletes.as_ref().and_then(|d| keep(ctx.condition(d), &mut errors));
    let select = cfg.select.as_ref().map(|s| s.0.iter().filter_map(|(name, e)| Some((Sym::new(name), keep(ctx.expr(e), &mut errors)?))).collect::<Vec<_>>());
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let (kind, left_key, right_key) = (kind.expect("checked"), left_key.expect("checked"), right_key.expect("checked"));
    let description = format!(
        "{} {} join on left `{}` = right `{}`{}",
        how_name,
        kind_name,
        left_key.source(),
        right_key.source(),
        match kind {
            Kind::Interval { lower, upper } => format!(", right's time − left's in [{lower} ms, {upper} ms]"),
            Kind::Window { size, slide } if size == slide => format!(", tumbling {size} ms windows"),
            Kind::Window { size, slide } => format!(", sliding {size} ms windows every {slide} ms"),
            Kind::Temporal => ", the right row as of the left row's time".into(),
        }
    );
    let settings = Arc::new(Settings::new(kind, how, left_key.clone(), right_key.clone(), deletes, select));
    let mut spec = TransformSpec::new(description, move |_| Ok(Join::new(settings.clone())));
    spec.input_keys = Some(vec![left_key, right_key]);
    spec.side_outputs = vec!["late".into()];
    Ok(spec)
}

impl Settings {
    /// A join built in code (tests, the extension API).
    pub fn new(kind: Kind, how: How, left_key: Expr, right_key: Expr, deletes: Option<Expr>, select: Option<Vec<(Sym, Expr)>>) -> Settings {
        let (left_sym, right_sym) = (Sym::new("left"), Sym::new("right"));
        let direct = select.as_ref().and_then(|select| {
            select
                .iter()
                .map(|(name, e)| match e.as_field_of_field() {
                    Some((side, field)) if side == left_sym => Some((*name, LEFT, field)),
                    Some((side, field)) if side == right_sym => Some((*name, RIGHT, field)),
                    _ => None,
                })
                .collect()
        });
        Settings { kind, how, keys: [left_key, right_key], deletes, select, direct, left_sym, right_sym }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rill_engine::testing::{Harness, Output, Saved};

    fn row(id: i64, k: Option<i64>, ts: i64) -> Record {
        let mut r: Record = [("id", Value::Int(id)), ("k", k.map(Value::Int).unwrap_or(Value::Null))].into_iter().collect();
        r.timestamp = ts;
        r
    }

    fn settings(kind: Kind, how: How) -> Arc<Settings> {
        let select = vec![(Sym::new("l"), Expr::compile("left.id").unwrap()), (Sym::new("r"), Expr::compile("right.id").unwrap())];
        Arc::new(Settings::new(kind, how, Expr::compile("k").unwrap(), Expr::compile("k").unwrap(), None, Some(select)))
    }

    fn id(v: Option<&Value>) -> i64 {
        match v {
            Some(Value::Int(i)) => *i,
            _ => -1,
        }
    }

    /// What came out: joined (left id, right id, time) with −1 for a missing side, the ids of
    /// late rows; asserts that no joined row is late for the watermark already sent.
    #[derive(Default, Debug)]
    struct Seen {
        joined: Vec<(i64, i64, i64)>,
        late: Vec<i64>,
        rejected: Vec<i64>,
        sent_watermark: i64,
    }

    impl Seen {
        fn take(&mut self, outputs: Vec<Output>) {
            for o in outputs {
                match o {
                    Output::Record(r) => {
                        assert!(r.timestamp > self.sent_watermark, "{r} at {} is behind watermark {}", r.timestamp, self.sent_watermark);
                        self.joined.push((id(r.get_str("l")), id(r.get_str("r")), r.timestamp));
                    }
                    Output::Watermark(w) => self.sent_watermark = self.sent_watermark.max(w),
                    // The only side output (named `late` in a pipeline).
                    Output::Side(_, r) => self.late.push(id(r.get_str("id"))),
                    Output::Rejected(r, _) => self.rejected.push(id(r.get_str("id"))),
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// (side, key — `None` null —, event time)
        Row(usize, Option<i64>, i64),
        /// Advance the watermark by this much.
        Watermark(i64),
        /// Checkpoint, then carry on in a new instance restored from it.
        Restart,
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        let step = prop_oneof![
            6 => (0..2usize, prop_oneof![1 => Just(None), 8 => (0..4i64).prop_map(Some)], 0..300i64).prop_map(|(s, k, t)| Step::Row(s, k, t)),
            2 => (0..40i64).prop_map(Step::Watermark),
            1 => Just(Step::Restart),
        ];
        proptest::collection::vec(step, 0..80)
    }

    fn how(i: u8) -> How {
        How { left: i & 1 == 1, right: i & 2 == 2 }
    }

    /// Runs `steps` through the join (restarted from a checkpoint at each `Restart`), then ends
    /// the input.
    fn run(s: &Arc<Settings>, steps: &[Step]) -> Seen {
        let mut h = Harness::new(Join::new(s.clone())).unwrap();
        let mut seen = Seen { sent_watermark: i64::MIN, ..Default::default() };
        let mut wm = 0;
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Row(side, k, t) => seen.take(h.push_input(*side, [row(i as i64, *k, *t)]).unwrap()),
                Step::Watermark(d) => {
                    wm += d;
                    seen.take(h.watermark(wm).unwrap());
                }
                Step::Restart => {
                    let (out, saved): (Vec<Output>, Saved) = h.checkpoint(i as u64 + 1).unwrap();
                    seen.take(out);
                    h = Harness::restored(Join::new(s.clone()), &saved).unwrap();
                }
            }
        }
        seen.take(h.end().unwrap());
        seen
    }

    /// The rows that were not late, each with the watermark when it came: (id, side, key, time, watermark).
    fn accepted(steps: &[Step], late: impl Fn(i64, i64) -> bool) -> (Vec<(i64, usize, Option<i64>, i64, i64)>, Vec<i64>) {
        let (mut wm, mut rows, mut late_ids) = (i64::MIN, Vec::new(), Vec::new());
        for (i, step) in steps.iter().enumerate() {
            match step {
                Step::Row(side, k, t) if late(*t, wm) => late_ids.push(i as i64),
                Step::Row(side, k, t) => rows.push((i as i64, *side, *k, *t, wm)),
                Step::Watermark(d) => wm = if wm == i64::MIN { *d } else { wm + d },
                Step::Restart => {}
            }
        }
        (rows, late_ids)
    }

    fn sorted(mut v: Vec<(i64, i64)>) -> Vec<(i64, i64)> {
        v.sort();
        v
    }

    proptest! {
        /// An interval join, restarted from checkpoints at random, gives exactly the pairs of a
        /// direct computation over the rows that were on time, and the outer rows of those
        /// without a partner; late rows go to `late`; nothing joined is behind the watermark.
        #[test]
        fn interval_join_matches_a_direct_computation(steps in steps(), lower in -60i64..20, width in 0i64..60, h in 0u8..4) {
            let (lower, upper) = (lower, lower + width);
            let seen = run(&settings(Kind::Interval { lower, upper }, how(h)), &steps);
            let (rows, late) = accepted(&steps, |t, wm| t <= wm);
            let mut want = Vec::new();
            for l in rows.iter().filter(|r| r.1 == LEFT) {
                let mut met = false;
                for r in rows.iter().filter(|r| r.1 == RIGHT) {
                    if l.2.is_some() && l.2 == r.2 && r.3 - l.3 >= lower && r.3 - l.3 <= upper {
                        want.push((l.0, r.0));
                        met = true;
                    }
                }
                if !met && how(h).left {
                    want.push((l.0, -1));
                }
            }
            for r in rows.iter().filter(|r| r.1 == RIGHT) {
                let met = rows.iter().any(|l| l.1 == LEFT && l.2.is_some() && l.2 == r.2 && r.3 - l.3 >= lower && r.3 - l.3 <= upper);
                if !met && how(h).right {
                    want.push((-1, r.0));
                }
            }
            prop_assert_eq!(sorted(seen.joined.iter().map(|j| (j.0, j.1)).collect()), sorted(want));
            prop_assert_eq!(seen.late, late);
            prop_assert!(seen.rejected.is_empty());
        }

        /// A tumbling or sliding window join against a direct computation: the pairs of each
        /// window among its rows that came before it fired, outer rows per window.
        #[test]
        fn window_join_matches_a_direct_computation(steps in steps(), slide in 1i64..50, k in 1i64..4, h in 0u8..4) {
            let size = slide * k;
            let seen = run(&settings(Kind::Window { size, slide }, how(h)), &steps);
            let last_end = |t: i64| t - t.rem_euclid(slide) + size - 1;
            let (rows, late) = accepted(&steps, |t, wm| last_end(t) <= wm);
            // Windows (by start) each row is in and that had not fired when it came.
            let windows = |t: i64, wm: i64| crate::window::sliding_starts(t, size, slide).filter(move |s| s + size - 1 > wm).collect::<Vec<i64>>();
            let mut want = Vec::new();
            let mut starts: Vec<i64> = rows.iter().flat_map(|r| windows(r.3, r.4)).collect();
            starts.sort();
            starts.dedup();
            for w in starts {
                let inside: Vec<_> = rows.iter().filter(|r| windows(r.3, r.4).contains(&w)).collect();
                for l in inside.iter().filter(|r| r.1 == LEFT) {
                    let partners: Vec<_> = inside.iter().filter(|r| r.1 == RIGHT && l.2.is_some() && r.2 == l.2).collect();
                    partners.iter().for_each(|r| want.push((l.0, r.0, w + size - 1)));
                    if partners.is_empty() && how(h).left {
                        want.push((l.0, -1, w + size - 1));
                    }
                }
                for r in inside.iter().filter(|r| r.1 == RIGHT) {
                    if how(h).right && !inside.iter().any(|l| l.1 == LEFT && l.2.is_some() && l.2 == r.2) {
                        want.push((-1, r.0, w + size - 1));
                    }
                }
            }
            let mut got = seen.joined.clone();
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!(seen.late, late);
            prop_assert!(seen.rejected.is_empty());
        }

        /// A temporal join against a direct computation: each on-time left row meets the right
        /// row of its key with the latest time at or before its own (later arrival first among
        /// equal times), if that row is not a deletion.
        #[test]
        fn temporal_join_matches_a_direct_computation(steps in steps(), left_outer in any::<bool>()) {
            let deletes = Some(Expr::compile("id % 5 == 0").unwrap());
            let select = vec![(Sym::new("l"), Expr::compile("left.id").unwrap()), (Sym::new("r"), Expr::compile("right.id").unwrap())];
            let s = Arc::new(Settings::new(Kind::Temporal, How { left: left_outer, right: false }, Expr::compile("k").unwrap(), Expr::compile("k").unwrap(), deletes, Some(select)));
            let seen = run(&s, &steps);
            let (rows, late) = accepted(&steps, |t, wm| t <= wm);
            let mut want = Vec::new();
            for l in rows.iter().filter(|r| r.1 == LEFT) {
                let version = rows.iter().filter(|r| r.1 == RIGHT && l.2.is_some() && r.2 == l.2 && r.3 <= l.3).max_by_key(|r| (r.3, r.0));
                match version {
                    Some(v) if v.0 % 5 != 0 => want.push((l.0, v.0, l.3)),
                    _ if left_outer => want.push((l.0, -1, l.3)),
                    _ => {}
                }
            }
            let mut got = seen.joined.clone();
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
            prop_assert_eq!(seen.late, late);
            // A table row without a key is refused, not dropped.
            prop_assert_eq!(seen.rejected, rows.iter().filter(|r| r.1 == RIGHT && r.2.is_none()).map(|r| r.0).collect::<Vec<_>>());
        }
    }

    #[test]
    fn an_interval_join_pairs_rows_as_they_come_and_outer_rows_when_the_interval_closes() {
        let mut h = Harness::new(Join::new(settings(Kind::Interval { lower: -10, upper: 20 }, How { left: true, right: true }))).unwrap();
        let mut seen = Seen { sent_watermark: i64::MIN, ..Default::default() };
        seen.take(h.push_input(LEFT, [row(1, Some(7), 100), row(2, Some(8), 100)]).unwrap());
        seen.take(h.push_input(RIGHT, [row(3, Some(7), 115), row(4, Some(7), 121), row(5, Some(7), 89)]).unwrap());
        // At the left row's time; the watermark sent on is held back by the upper bound (20).
        assert_eq!(seen.joined, [(1, 3, 100)], "right 4 is 21 after, right 5 11 before");
        seen.take(h.watermark(119).unwrap());
        // Right 5 (89) could meet left rows up to 99; left 2 (100) may still meet one at 120.
        assert_eq!(&seen.joined[1..], [(-1, 5, 89)]);
        assert_eq!(seen.sent_watermark, 99);
        seen.take(h.watermark(120).unwrap());
        assert_eq!(&seen.joined[2..], [(2, -1, 100)]);
        seen.take(h.push_input(LEFT, [row(6, Some(7), 120), row(7, Some(7), 121)]).unwrap());
        assert_eq!(seen.late, [6]);
        assert_eq!(&seen.joined[3..], [(7, 3, 121), (7, 4, 121)]);
    }

    #[test]
    fn select_takes_expressions_over_both_rows_and_no_select_takes_every_field() {
        let exprs = vec![(Sym::new("sum"), Expr::compile("left.id + right.id").unwrap()), (Sym::new("r"), Expr::compile("right.id").unwrap())];
        let s = Arc::new(Settings::new(Kind::Interval { lower: 0, upper: 10 }, How { left: true, right: false }, Expr::compile("k").unwrap(), Expr::compile("k").unwrap(), None, Some(exprs)));
        let mut h = Harness::new(Join::new(s)).unwrap();
        h.push_input(LEFT, [row(1, Some(3), 100), row(2, Some(4), 100)]).unwrap();
        let out = h.push_input(RIGHT, [row(10, Some(3), 105)]).unwrap();
        assert!(matches!(&out[..], [Output::Record(r)] if r.to_json() == r#"{"sum":11,"r":10}"#), "{out:?}");
        let out = h.end().unwrap();
        // The outer row of left 2: `left.id + null` fails, so the pair of rows is dead-lettered
        // with why (and what to write instead), not dropped.
        assert!(
            out.iter().any(|o| matches!(o, Output::Rejected(r, e) if r.to_json() == r#"{"left":{"id":2,"k":4},"right":null}"# && e.contains("join field `sum`") && e.contains("coalesce"))),
            "{out:?}"
        );
        // Without `select`: the left row's fields, then the right row's, renamed `right_…` where
        // the left row has a field of that name.
        let s = Arc::new(Settings::new(Kind::Interval { lower: 0, upper: 10 }, How { left: false, right: false }, Expr::compile("k").unwrap(), Expr::compile("k").unwrap(), None, None));
        let mut h = Harness::new(Join::new(s)).unwrap();
        h.push_input(LEFT, [row(1, Some(3), 100)]).unwrap();
        let mut right = row(10, Some(3), 101);
        right.set(Sym::new("paid"), Value::Bool(true));
        let out = h.push_input(RIGHT, [right]).unwrap();
        assert!(matches!(&out[..], [Output::Record(r)] if r.to_json() == r#"{"id":1,"k":3,"right_id":10,"right_k":3,"paid":true}"#), "{out:?}");
    }

    #[test]
    fn rows_without_timestamps_join_on_the_operators_clock() {
        let untimed = |id, k| {
            let mut r = row(id, Some(k), 0);
            r.timestamp = NO_TIMESTAMP;
            r
        };
        let s = settings(Kind::Interval { lower: -60_000, upper: 60_000 }, How { left: true, right: false });
        let mut h = Harness::new(Join::new(s)).unwrap();
        h.push_input(LEFT, [untimed(1, 1), untimed(2, 2)]).unwrap();
        let out = h.push_input(RIGHT, [untimed(3, 1)]).unwrap();
        assert!(matches!(&out[..], [Output::Record(r)] if r.get_str("l") == Some(&Value::Int(1)) && r.timestamp == NO_TIMESTAMP), "{out:?}");
        assert!(h.clock(rill_engine::time::now_millis()).unwrap().is_empty(), "the interval is still open");
        let out = h.clock(rill_engine::time::now_millis() + 61_000).unwrap();
        let outer: Vec<i64> = out.iter().filter_map(|o| if let Output::Record(r) = o { Some(id(r.get_str("l"))) } else { None }).collect();
        assert_eq!(outer, [2], "left 2 met nothing within a minute of the clock: {out:?}");
    }

    #[test]
    fn a_checkpoint_keeps_the_watermark_rows_and_timers() {
        let s = settings(Kind::Interval { lower: 0, upper: 50 }, How { left: true, right: false });
        let mut h = Harness::new(Join::new(s.clone())).unwrap();
        h.push_input(LEFT, [row(1, Some(1), 100)]).unwrap();
        h.watermark(120).unwrap();
        let (_, saved) = h.checkpoint(1).unwrap();
        let mut h = Harness::restored(Join::new(s), &saved).unwrap();
        let mut seen = Seen { sent_watermark: i64::MIN, ..Default::default() };
        seen.take(h.push_input(RIGHT, [row(2, Some(1), 110), row(3, Some(1), 130)]).unwrap());
        assert_eq!(seen.late, [2], "late before the checkpoint, late after it");
        assert_eq!(seen.joined, [(1, 3, 100)]);
        seen.take(h.watermark(150).unwrap());
        assert_eq!(seen.joined.len(), 1, "left 1 met a partner: no outer row");
    }
}
