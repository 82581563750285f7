//! `window`: aggregates over tumbling, sliding, session and count windows, keyed or global.
//!
//! Event-time windows fire when the watermark passes their end, then stay open for
//! `allowed_lateness`: a late record within it updates its window, which is emitted again. A
//! record too late for every window it belongs to goes to the `late` output
//! (`inputs: [name.late]`), never silently away. Records without a timestamp (sources on
//! processing time) are windowed by this operator's clock and fire by processing-time timers.
//! Optional early firing (`trigger: {every: N}` records, or `{interval: 5s}` of processing time)
//! emits partial results of open windows before they close.
//!
//! Window contents live in keyed state (sled-backed, cached in memory; see
//! `rill_engine::state`), namespaced by window start. Fire and clean-up times are kept in
//! ordered indexes, one entry per window.

mod count;
mod session;
mod snapshot;
mod time;

use snapshot::{fold, save_index, WindowSnapshot};

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use rill_engine::aggregate::{Acc, AggregateCall};
use rill_engine::columns::{Column, Columns};
use rill_engine::config::{ConfigError, ConfigErrors, Ordered, Spanned};
use rill_engine::expr::Expr;
use rill_engine::message::Watermark;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError, Snapshot};
use rill_engine::record::{Batch, Record, NO_TIMESTAMP};
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::state::{KeyedState, StateOptions, TimeDomain, Timer};
use rill_engine::value::{Key, Sym, Value};
use smallvec::SmallVec;

use rill_engine::config::de::duration;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowConfig {
    /// Grouping expression; without it, one global window stream (one instance).
    key_by: Option<Spanned<String>>,
    window: WindowSpec,
    /// How long after a window fired late records still update it.
    #[serde(default, with = "duration::option")]
    allowed_lateness: Option<Duration>,
    /// `name: function(expression)`.
    aggregates: Ordered<Spanned<String>>,
    /// Early firing of open windows.
    trigger: Option<TriggerConfig>,
}

/// A `window:` option as written (also a window join's).
#[derive(serde::Deserialize, Clone, Debug)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub(crate) enum WindowSpec {
    Tumbling {
        #[serde(with = "duration")]
        size: Duration,
    },
    Sliding {
        #[serde(with = "duration")]
        size: Duration,
        #[serde(with = "duration")]
        slide: Duration,
    },
    Session {
        #[serde(with = "duration")]
        gap: Duration,
    },
    Count {
        size: u64,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerConfig {
    /// Emit a window's partial result after every N records it receives.
    every: Option<u64>,
    /// Emit every open window's partial result at this processing-time interval.
    #[serde(default, with = "duration::option")]
    interval: Option<Duration>,
}

/// The kind of window, sizes in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Tumbling { size: i64 },
    Sliding { size: i64, slide: i64 },
    Session { gap: i64 },
    Count { size: u64 },
}

impl WindowSpec {
    /// The window in milliseconds; an error (at `span`) for a size below 1 ms (1 record) or a
    /// slide above the size.
    pub(crate) fn kind(&self, span: Option<&rill_engine::config::Span>, errors: &mut Vec<ConfigError>) -> Kind {
        let ms = |d: Duration| d.as_millis() as i64;
        let kind = match *self {
            WindowSpec::Tumbling { size } => Kind::Tumbling { size: ms(size) },
            WindowSpec::Sliding { size, slide } => Kind::Sliding { size: ms(size), slide: ms(slide) },
            WindowSpec::Session { gap } => Kind::Session { gap: ms(gap) },
            WindowSpec::Count { size } => Kind::Count { size },
        };
        let positive = match kind {
            Kind::Tumbling { size } => size > 0,
            Kind::Sliding { size, slide } => size > 0 && slide > 0 && slide <= size,
            Kind::Session { gap } => gap > 0,
            Kind::Count { size } => size > 0,
        };
        if !positive {
            errors.push(
                ConfigError::new(span, "window sizes must be at least 1 ms (count: 1 record), and a slide at most the size")
                    .hint("e.g. `window: {type: sliding, size: 10s, slide: 5s}`"),
            );
        }
        kind
    }
}

/// Start of the tumbling window of `size` that holds `ts`.
pub fn tumbling_start(ts: i64, size: i64) -> i64 {
    ts - ts.rem_euclid(size)
}

/// Starts of every sliding window (`size`, `slide`) that holds `ts`, latest first.
pub fn sliding_starts(ts: i64, size: i64, slide: i64) -> impl Iterator<Item = i64> {
    let last = ts - ts.rem_euclid(slide);
    (0..).map(move |k| last - k * slide).take_while(move |s| *s > ts - size)
}

/// The contents of one window. Window state holds it boxed, with up to two accumulators
/// inline: the state map's entries stay small (a key, a pointer and flags), and a window's
/// contents are one allocation, made in the order windows open (BENCHMARKS.md, W1 K = 10000).
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Win {
    accs: SmallVec<[Acc; 2]>,
    count: u64,
    fired: bool,
    first_ts: i64,
    last_ts: i64,
}

fn new_win(calls: &[(Sym, AggregateCall)]) -> Win {
    Win { accs: calls.iter().map(|(_, c)| c.function.create()).collect(), count: 0, fired: false, first_ts: i64::MAX, last_ts: i64::MIN }
}

/// One session of a key.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Session {
    start: i64,
    end: i64,
    win: Win,
}

impl crate::keyed::KeyedOperator for Window {
    fn key_and_calls(&self) -> (&crate::keyed::Key, &crate::keyed::Calls) {
        (&self.key, &self.calls)
    }

    fn inputs(&mut self) -> &mut Vec<Value> {
        &mut self.inputs
    }

    fn keyed(&mut self, key: Value, timestamp: i64, _origin: rill_engine::record::Origin, record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.process_keyed(key, timestamp, record, out)
    }

    /// Without early firing or allowed lateness, adding a record emits nothing but late
    /// records, so a batch may be taken window by window instead of record by record.
    fn keyed_columns(&mut self, columns: &Columns, evaluated: &crate::keyed::ColumnInputs, out: &mut Collector) -> Result<bool, OperatorError> {
        if !self.adds_silently() {
            return Ok(false);
        }
        self.assigner.clone().add_columns(self, columns, evaluated, &[], out)
    }
}

/// What one kind of window decides; the operator around it does keys, the indexes of fire and
/// clean-up times, timers, lateness bookkeeping and checkpoints. The record's aggregate inputs
/// are in `w.inputs`.
trait WindowKind {
    /// Adds a record of `key` at time `ts` (`proc`: processing time) to its windows, emitting
    /// what early or late firing asks for; a record too late for all of them goes to the `late`
    /// output (`record` builds it).
    fn add(&self, w: &mut Window, key: Key, ts: i64, proc: bool, record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError>;
    /// Adds a whole column batch (keys and inputs in `evaluated`) when the window has neither
    /// early firing nor allowed lateness, with the same results, state and order of output as
    /// [`add`](Self::add) record by record; `false`: this kind has no such path for this batch
    /// (and has done nothing). `marks` (as in [`Operator::process_watermarked`]) say where the
    /// watermark that decides whether a row is late moves inside the batch; the windows it
    /// closes fire after, when the runtime advances the watermark.
    fn add_columns(&self, _w: &mut Window, _columns: &Columns, _evaluated: &crate::keyed::ColumnInputs, _marks: &[(usize, i64)], _out: &mut Collector) -> Result<bool, OperatorError> {
        Ok(false)
    }
    /// The window of `key` starting at `start`, indexed to fire at `time`, fires: its result
    /// goes to `w.results`; `purge` drops it after.
    fn fire(&self, w: &mut Window, key: &Key, start: i64, time: i64, purge: bool) -> Result<(), OperatorError>;
    /// Its allowed lateness is over (`time` as indexed for clean-up): drop it.
    fn drop_window(&self, w: &mut Window, key: &Key, start: i64, time: i64) -> Result<(), OperatorError>;
    /// Early firing: emit the window's current result unless it has fired.
    fn partial(&self, w: &mut Window, key: &Key, start: i64, time: i64, out: &mut Collector) -> Result<(), OperatorError>;
}

/// Emitted window results are tagged with this namespace in processing-time timers for the
/// early-firing interval (window timers use the fire time as their time and namespace 0).
const INTERVAL_TIMER: i64 = 1;

pub struct Window {
    kind: Kind,
    /// What the kind of window decides (one file each: `time.rs`, `session.rs`, `count.rs`).
    assigner: Rc<dyn WindowKind>,
    key: Option<(Sym, Expr)>,
    calls: Vec<(Sym, AggregateCall)>,
    lateness: i64,
    every: Option<u64>,
    interval: Option<i64>,
    wins: Option<KeyedState<Box<Win>>>,
    sessions: Option<KeyedState<Vec<Session>>>,
    /// Event-time windows by the time they fire (end - 1): (key, window start, generation).
    fire: Index,
    /// Event-time windows by the time their state is dropped (end - 1 + allowed lateness).
    cleanup: Index,
    /// Processing-time windows by the time they fire.
    proc_fire: Index,
    /// Snapshots taken so far, plus one: index entries made since the last snapshot carry the
    /// current value (an incremental snapshot lists them as added; removing one before the next
    /// snapshot needs no record at all).
    generation: u64,
    watermark: i64,
    inputs: Vec<Value>,
    /// Scratch space of [`WindowKind::add_columns`].
    groups: time::Groups,
    shape: Shape,
    results: Results,
    /// This instance's key groups, for restoring at another parallelism.
    key_groups: std::ops::Range<u32>,
    max_parallelism: u32,
    /// With checkpoints: index entries of earlier snapshots removed since the last one, for
    /// incremental snapshots (index code, time, key, window start, `false`).
    index_log: Option<Vec<IndexChange>>,
}

/// Windows by a time: (key, window start, generation it was indexed in).
type Index = BTreeMap<i64, Vec<(Key, i64, u64)>>;

/// One change to an index in a delta snapshot: (index code, time, key, window start, added).
type IndexChange = (u8, i64, Value, i64, bool);

/// The fields of a result record.
struct Shape {
    key: Option<Sym>,
    names: Vec<Sym>,
    window_start: Sym,
    window_end: Sym,
    pane: Sym,
}

/// Which firing of its window a result is (the `pane` field, where a window can fire more
/// than once: with a `trigger` or `allowed_lateness`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Pane {
    /// Before the window closed (a trigger).
    Early,
    /// When the watermark (or the clock) closed it.
    Final,
    /// Again after it closed, for a late record within `allowed_lateness`.
    Late,
}

impl Pane {
    fn name(self) -> &'static str {
        match self {
            Pane::Early => "early",
            Pane::Final => "final",
            Pane::Late => "late",
        }
    }
}

impl Shape {
    /// `pane`: `None` where the window fires once only (no field then).
    fn result(&self, key: &Value, start: Value, end: Value, w: &Win, time: i64, pane: Option<Pane>) -> Record {
        let mut r = Record::with_capacity(self.names.len() + 4);
        if let Some(name) = self.key {
            r.push(name, key.clone());
        }
        r.push(self.window_start, start);
        r.push(self.window_end, end);
        if let Some(p) = pane {
            r.push(self.pane, Value::str(p.name()));
        }
        for (name, acc) in self.names.iter().zip(&w.accs) {
            r.push(*name, acc.result());
        }
        r.timestamp = time;
        r
    }

}

/// Results of windows fired by one watermark or timer, gathered into one column batch.
#[derive(Default)]
struct Results {
    keys: Vec<Value>,
    starts: Vec<i64>,
    ends: Vec<i64>,
    /// One vector per aggregate.
    values: Vec<Vec<Value>>,
    times: Vec<i64>,
    /// Where the window marks its panes (else empty).
    panes: Vec<Value>,
}

impl Results {
    fn push(&mut self, key: &Value, start: i64, end: i64, w: &Win, time: i64, pane: Option<Pane>) {
        self.keys.push(key.clone());
        self.starts.push(start);
        self.ends.push(end);
        if let Some(p) = pane {
            self.panes.push(Value::str(p.name()));
        }
        self.values.resize_with(w.accs.len(), Vec::new);
        for (v, acc) in self.values.iter_mut().zip(&w.accs) {
            v.push(acc.result());
        }
        self.times.push(time);
    }

    /// Emits what was gathered, with the fields of [`Shape::result`] in its order.
    fn flush(&mut self, shape: &Shape, out: &mut Collector) {
        let n = self.starts.len();
        if n == 0 {
            return;
        }
        let mut c = Columns::new(vec![0; n]);
        let keys = std::mem::take(&mut self.keys);
        if let Some(name) = shape.key {
            c.set(name, Column::from_values(keys));
        }
        c.set(shape.window_start, Column::Int(std::mem::take(&mut self.starts)));
        c.set(shape.window_end, Column::Int(std::mem::take(&mut self.ends)));
        if !self.panes.is_empty() {
            c.set(shape.pane, Column::from_values(std::mem::take(&mut self.panes)));
        }
        for (i, name) in shape.names.iter().enumerate() {
            let values = self.values.get_mut(i).map(std::mem::take).unwrap_or_else(|| vec![Value::Null; n]);
            c.set(*name, Column::from_values(values));
        }
        c.timestamps = std::mem::take(&mut self.times);
        out.emit_columns(c);
    }
}

impl Window {
    /// `p`, where this window can fire more than once (so its results say which firing).
    fn pane(&self, p: Pane) -> Option<Pane> {
        (self.every.is_some() || self.interval.is_some() || self.lateness > 0).then_some(p)
    }

    pub fn new(kind: Kind, key: Option<(Sym, Expr)>, calls: Vec<(Sym, AggregateCall)>, lateness: i64) -> Window {
        let key_name = key.as_ref().map(|(n, _)| *n);
        let call_names = calls.iter().map(|(n, _)| *n).collect();
        let assigner: Rc<dyn WindowKind> = match kind {
            Kind::Tumbling { size } => Rc::new(time::TimeWindows { size, slide: size }),
            Kind::Sliding { size, slide } => Rc::new(time::TimeWindows { size, slide }),
            Kind::Session { gap } => Rc::new(session::Sessions { gap }),
            Kind::Count { size } => Rc::new(count::CountWindows { size }),
        };
        Window {
            kind,
            assigner,
            key,
            calls,
            lateness,
            every: None,
            interval: None,
            wins: None,
            sessions: None,
            fire: BTreeMap::new(),
            cleanup: BTreeMap::new(),
            proc_fire: BTreeMap::new(),
            watermark: i64::MIN,
            inputs: Vec::new(),
            groups: time::Groups::default(),
            results: Results::default(),
            key_groups: 0..u32::MAX,
            max_parallelism: rill_engine::exchange::DEFAULT_MAX_PARALLELISM,
            index_log: None,
            generation: 1,
            shape: Shape {
                key: key_name,
                names: call_names,
                window_start: Sym::new("window_start"),
                window_end: Sym::new("window_end"),
                pane: Sym::new("pane"),
            },
        }
    }

    /// Adds one record (its key given, its aggregate inputs in `self.inputs`) to its windows;
    /// `record` builds it if it has to go to the `late` output.
    fn process_keyed(&mut self, key: Value, timestamp: i64, record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError> {
        if let Some(i) = self.interval {
            if out.timers().next_processing().is_none() {
                let now = rill_engine::time::now_millis();
                out.timers().register(TimeDomain::Processing, &Value::Null, INTERVAL_TIMER, now + i);
            }
        }
        let (ts, proc) = if timestamp == NO_TIMESTAMP { (rill_engine::time::now_millis(), true) } else { (timestamp, false) };
        self.assigner.clone().add(self, Key(key), ts, proc, record, out)
    }

    /// Neither early firing nor allowed lateness: adding a row emits nothing but a late record.
    fn adds_silently(&self) -> bool {
        self.every.is_none() && self.interval.is_none() && self.lateness == 0
    }

    fn new_win(&self) -> Win {
        new_win(&self.calls)
    }

    fn rehydrate(calls: &[(Sym, AggregateCall)], w: &mut Win) {
        for (acc, (_, c)) in w.accs.iter_mut().zip(calls) {
            c.rehydrate(acc);
        }
    }

    fn add(inputs: &[Value], w: &mut Win, ts: i64) {
        for (acc, v) in w.accs.iter_mut().zip(inputs) {
            acc.add(v);
        }
        w.count += 1;
        w.first_ts = w.first_ts.min(ts);
        w.last_ts = w.last_ts.max(ts);
    }

    fn index(&mut self, which: Due, time: i64, key: &Key, start: i64) {
        let map = match which {
            Due::Fire => &mut self.fire,
            Due::Cleanup => &mut self.cleanup,
            Due::Processing => &mut self.proc_fire,
        };
        map.entry(time).or_default().push((key.clone(), start, self.generation));
    }

    /// A window was created: schedule its firing (and clean-up).
    fn schedule(&mut self, key: &Key, start: i64, end: i64, proc: bool, out: &mut Collector) {
        if proc {
            self.index(Due::Processing, end - 1, key, start);
            out.timers().register(TimeDomain::Processing, &Value::Null, 0, end - 1);
        } else {
            self.index(Due::Fire, end - 1, key, start);
            if self.lateness > 0 {
                self.index(Due::Cleanup, end - 1 + self.lateness, key, start);
            }
        }
    }

    /// Fires the windows indexed in `index` at or before `upto`; `purge` drops them after.
    fn fire_due(&mut self, which: Due, upto: i64, out: &mut Collector) -> Result<(), OperatorError> {
        loop {
            let index = match which {
                Due::Fire => &mut self.fire,
                Due::Cleanup => &mut self.cleanup,
                Due::Processing => &mut self.proc_fire,
            };
            let Some(entry) = index.first_entry() else { break };
            if *entry.key() > upto {
                break;
            }
            let (time, windows) = entry.remove_entry();
            if let Some(log) = &mut self.index_log {
                let generation = self.generation;
                log.extend(windows.iter().filter(|w| w.2 < generation).map(|(k, start, _)| (which as u8, time, k.0.clone(), *start, false)));
            }
            let kind = self.assigner.clone();
            for (key, start, _) in windows {
                match which {
                    Due::Fire | Due::Processing => {
                        let purge = self.lateness == 0 || which == Due::Processing;
                        kind.fire(self, &key, start, time, purge)?
                    }
                    Due::Cleanup => kind.drop_window(self, &key, start, time)?,
                }
            }
        }
        self.results.flush(&self.shape, out);
        Ok(())
    }

    /// Emits the current (partial) result of every open window.
    fn early_fire_all(&mut self, out: &mut Collector) -> Result<(), OperatorError> {
        let open: Vec<(Key, i64, i64)> = self
            .fire
            .iter()
            .chain(self.proc_fire.iter())
            .flat_map(|(t, ws)| ws.iter().map(move |(k, s, _)| (k.clone(), *s, *t)))
            .collect();
        let kind = self.assigner.clone();
        for (key, start, time) in open {
            kind.partial(self, &key, start, time, out)?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq)]
#[repr(u8)]
enum Due {
    Fire,
    Cleanup,
    Processing,
}

impl Operator for Window {
    /// Full: every window's contents and the fire and clean-up indexes; delta: the contents
    /// written or removed since the last snapshot and the index entries removed and added (a
    /// window opened and fired between two snapshots appears in neither).
    fn snapshot_incremental(&mut self, _epoch: rill_engine::message::Epoch, full: bool) -> Result<Option<Snapshot>, OperatorError> {
        // Index changes: removals of earlier snapshots' entries, then entries made since.
        let mut log = self.index_log.as_mut().map(std::mem::take).unwrap_or_default();
        let generation = self.generation;
        self.generation += 1;
        let mut open = 0;
        for (which, index) in [(Due::Fire, &self.fire), (Due::Cleanup, &self.cleanup), (Due::Processing, &self.proc_fire)] {
            for (time, ws) in index {
                open += ws.len();
                log.extend(ws.iter().filter(|w| w.2 == generation).map(|(k, start, _)| (which as u8, *time, k.0.clone(), *start, true)));
            }
        }
        // When most of the state turned over since the last snapshot, a delta would be about
        // as large as the state: take a full one instead.
        let changes = log.len() + self.wins.as_ref().map_or(0, |w| w.changes()) + self.sessions.as_ref().map_or(0, |s| s.changes());
        let full = full || changes > open;
        let (fire, cleanup, proc_fire, index_changes) = if full {
            (save_index(&self.fire), save_index(&self.cleanup), save_index(&self.proc_fire), vec![])
        } else {
            (vec![], vec![], vec![], log)
        };
        let mut snap = WindowSnapshot { index_changes, fire, cleanup, proc_fire, watermark: self.watermark, ..Default::default() };
        if let Some(w) = self.wins.as_mut() {
            if full {
                snap.wins = w.snapshot_entries()?;
            } else {
                (snap.wins, snap.wins_removed) = w.snapshot_changes()?;
            }
        }
        if let Some(s) = self.sessions.as_mut() {
            if full {
                snap.sessions = s.snapshot_entries()?;
            } else {
                (snap.sessions, snap.sessions_removed) = s.snapshot_changes()?;
            }
        }
        let bytes = serde_json::to_vec(&snap).map_err(|e| OperatorError::new(e.to_string()))?;
        Ok(Some(if full { Snapshot::Full(bytes) } else { Snapshot::Delta(bytes) }))
    }

    fn restore_chain(&mut self, chain: &[Vec<u8>]) -> Result<(), OperatorError> {
        match fold(chain)? {
            Some(snap) => self.install(snap),
            None => Ok(()),
        }
    }

    fn restore_rescaled_chains(&mut self, chains: &[Vec<Vec<u8>>]) -> Result<(), OperatorError> {
        let mut states = Vec::new();
        for c in chains {
            states.extend(fold(c)?);
        }
        self.restore_rescaled_snapshots(states)
    }

    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        self.key_groups = ctx.key_groups.clone();
        self.max_parallelism = ctx.max_parallelism;
        self.index_log = ctx.checkpointing.then(Vec::new);
        if let Kind::Session { .. } = self.kind {
            self.sessions = Some(ctx.keyed_state("sessions", StateOptions::default())?);
        } else {
            self.wins = Some(ctx.keyed_state("windows", StateOptions::default())?);
        }
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        crate::keyed::process(self, record, out)
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        crate::keyed::process_batch(self, batch, out)
    }

    /// Without early firing or allowed lateness, rows emit nothing but late records, and a
    /// window the watermark closes inside the batch takes no row after that place (such a row
    /// is late): so the batch is taken whole, each row judged against the watermark at its
    /// place, and the windows fire after, in the order segment by segment would fire them.
    fn process_watermarked(&mut self, _input: usize, columns: &Columns, marks: &[(usize, i64)], out: &mut Collector) -> Result<bool, OperatorError> {
        if !self.adds_silently() {
            return Ok(false);
        }
        let evaluated = crate::keyed::evaluate_columns(&self.key, &self.calls, columns);
        self.assigner.clone().add_columns(self, columns, &evaluated, marks, out)
    }

    fn on_watermark(&mut self, wm: Watermark, out: &mut Collector) -> Result<(), OperatorError> {
        self.watermark = wm.0;
        self.fire_due(Due::Fire, wm.0, out)?;
        self.fire_due(Due::Cleanup, wm.0, out)
    }

    fn on_timer(&mut self, timer: Timer, out: &mut Collector) -> Result<(), OperatorError> {
        if timer.namespace == INTERVAL_TIMER {
            self.early_fire_all(out)?;
            if let Some(i) = self.interval {
                if !self.fire.is_empty() || !self.proc_fire.is_empty() {
                    out.timers().register(TimeDomain::Processing, &Value::Null, INTERVAL_TIMER, timer.time + i);
                }
            }
            return Ok(());
        }
        self.fire_due(Due::Processing, timer.time, out)
    }

    fn on_end(&mut self, out: &mut Collector) -> Result<(), OperatorError> {
        // Processing-time windows still open when the input ends are emitted now.
        self.fire_due(Due::Processing, i64::MAX, out)
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: WindowConfig = ctx.options()?;
    let mut errors = Vec::new();
    let ms = |d: Duration| d.as_millis() as i64;
    let window_span = ctx.options.get("window").map(|n| n.span.clone());
    let kind = cfg.window.kind(window_span.as_ref(), &mut errors);
    let (key, calls) = crate::keyed::parse(ctx, &cfg.key_by, &cfg.aggregates, &mut errors);
    let (every, interval) = match &cfg.trigger {
        Some(t) => (t.every.filter(|n| *n > 0), t.interval.map(ms).filter(|i| *i > 0)),
        None => (None, None),
    };
    if let (Some(t), None, None) = (&cfg.trigger, every, interval) {
        let _ = t;
        errors.push(ConfigError::new(ctx.options.get("trigger").map(|n| &n.span), "`trigger` needs `every: N` (records) or `interval: DURATION`"));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let lateness = cfg.allowed_lateness.map(ms).unwrap_or(0);
    let description = format!(
        "{} window{} computing {}{}",
        match kind {
            Kind::Tumbling { size } => format!("tumbling {size} ms"),
            Kind::Sliding { size, slide } => format!("sliding {size} ms every {slide} ms"),
            Kind::Session { gap } => format!("session (gap {gap} ms)"),
            Kind::Count { size } => format!("count {size}"),
        },
        key.as_ref().map(|(_, e)| format!(" per `{}`", e.source())).unwrap_or_default(),
        crate::keyed::describe(&cfg.aggregates),
        if lateness > 0 { format!("; late records up to {lateness} ms update windows") } else { String::new() }
    );
    let mut spec = TransformSpec::new(description, {
        let key = key.clone();
        move |_| {
            let mut w = Window::new(kind, key.clone(), calls.clone(), lateness);
            w.every = every;
            w.interval = interval;
            Ok(w)
        }
    });
    spec.side_outputs = vec!["late".into()];
    crate::keyed::route_by(&mut spec, key.map(|(_, e)| e));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rill_engine::testing::Harness;

    proptest! {
        #[test]
        fn tumbling_window_holds_its_timestamp(ts in -1_000_000i64..1_000_000, size in 1i64..10_000) {
            let s = tumbling_start(ts, size);
            prop_assert!(s <= ts && ts < s + size);
            prop_assert_eq!(s.rem_euclid(size), 0);
        }

        #[test]
        fn sliding_windows_are_exactly_those_holding_the_timestamp(ts in -100_000i64..100_000, slide in 1i64..500, k in 1i64..6) {
            let size = slide * k;
            let starts: Vec<i64> = sliding_starts(ts, size, slide).collect();
            prop_assert_eq!(starts.len() as i64, k, "a timestamp is in size/slide windows");
            for s in &starts {
                prop_assert!(*s <= ts && ts < s + size);
                prop_assert_eq!(s.rem_euclid(slide), 0);
            }
            // No other aligned window holds it.
            let before = starts.last().unwrap() - slide;
            prop_assert!(!(before <= ts && ts < before + size));
        }
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Rows of (key, value, event time); value: 0 null, 1 int, 2 double, 3 string.
        Batch(Vec<(i64, (u8, i64), i64)>),
        Watermark(i64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => prop::collection::vec((0i64..4, (0u8..4, -50i64..50), 0i64..3000), 0..40).prop_map(Step::Batch),
            // Integer or double columns only: the typed loops of `Acc::add_rows`.
            2 => (1u8..3, prop::collection::vec((0i64..4, -50i64..50, 0i64..3000), 0..40))
                .prop_map(|(t, rows)| Step::Batch(rows.into_iter().map(|(k, x, ts)| (k, (t, x), ts)).collect())),
            1 => (0i64..3000).prop_map(Step::Watermark),
        ]
    }

    fn columns_of(rows: &[(i64, (u8, i64), i64)], first: u64) -> Columns {
        let mut c = Columns::new((first..first + rows.len() as u64).collect());
        c.set(Sym::new("k"), Column::Int(rows.iter().map(|r| r.0).collect()));
        let value = |(t, x): (u8, i64)| match t {
            0 => Value::Null,
            1 => Value::Int(x),
            2 => Value::Float(x as f64 / 8.0),
            _ => Value::str(&format!("s{x}")),
        };
        c.set(Sym::new("v"), Column::from_values(rows.iter().map(|r| value(r.1)).collect()));
        c.timestamps = rows.iter().map(|r| r.2).collect();
        c
    }

    /// A window keyed by `k` with aggregates `a0, a1, ...`: tumbling (`per` = 1) or sliding
    /// `per` slides of `slide` ms.
    fn keyed_window(aggregates: &[&str], slide: i64, per: i64, lateness: i64) -> Window {
        let registry = rill_engine::aggregate::AggregateRegistry::default();
        let calls = aggregates.iter().enumerate().map(|(i, a)| (Sym::new(&format!("a{i}")), registry.parse(&format!("a{i}"), a).unwrap())).collect();
        let kind = if per == 1 { Kind::Tumbling { size: slide } } else { Kind::Sliding { size: slide * per, slide } };
        Window::new(kind, Some((Sym::new("k"), Expr::compile("k").unwrap())), calls, lateness)
    }

    proptest! {
        /// Windows take a column batch window by window (`add_columns`) and a batch of rows
        /// record by record: the same results, late records and rejects, in the same order.
        #[test]
        fn column_batches_and_rows_give_the_same_windows(
            steps in prop::collection::vec(step(), 1..30),
            slide in 50i64..400,
            per in 1i64..4,
            lateness in prop_oneof![4 => Just(0i64), 1 => Just(300i64)],
        ) {
            let make = || keyed_window(&["count()", "sum(v)", "avg(v)", "min(v)", "max(v)", "first(v)", "last(v)", "collect(v)", "count(v)"], slide, per, lateness);
            let (mut by_rows, mut by_columns) = (Harness::new(make()).unwrap(), Harness::new(make()).unwrap());
            let mut offset = 0;
            for s in &steps {
                let (a, b) = match s {
                    Step::Batch(rows) => {
                        let c = columns_of(rows, offset);
                        offset += rows.len() as u64;
                        (by_rows.push(c.to_records()).unwrap(), by_columns.push_columns(c).unwrap())
                    }
                    Step::Watermark(wm) => (by_rows.watermark(*wm).unwrap(), by_columns.watermark(*wm).unwrap()),
                };
                prop_assert_eq!(a, b);
            }
            prop_assert_eq!(by_rows.end().unwrap(), by_columns.end().unwrap());
        }
    }

    /// Each output stream on its own (records with watermarks; late records; rejects), in order.
    /// Watermarks with no record between them say what the last of them says: only it is kept.
    fn streams(outputs: Vec<rill_engine::testing::Output>) -> [Vec<rill_engine::testing::Output>; 3] {
        use rill_engine::testing::Output;
        let mut s: [Vec<Output>; 3] = Default::default();
        for o in outputs {
            if let (Output::Watermark(_), Some(Output::Watermark(_))) = (&o, s[0].last()) {
                s[0].pop();
            }
            let i = match &o {
                Output::Record(_) | Output::Watermark(_) => 0,
                Output::Side(..) => 1,
                Output::Rejected(..) => 2,
            };
            s[i].push(o);
        }
        s
    }

    proptest! {
        /// A column batch inside which the watermark advances, taken whole
        /// (`process_watermarked`), gives what its segments give pushed one by one with the
        /// watermark advanced between them: the same results and watermarks, late records and
        /// rejects, each in the same order.
        #[test]
        fn a_batch_with_watermarks_inside_gives_what_its_segments_give(
            batches in prop::collection::vec((
                prop::collection::vec((0i64..4, (0u8..4, -50i64..50), 0i64..1500), 0..60),
                prop_oneof![2 => Just(None), 1 => (1u8..3).prop_map(Some)],
                prop::collection::vec((0usize..60, 1i64..300), 0..5),
            ), 1..12),
            slide in 50i64..400,
            per in 1i64..4,
            lateness in prop_oneof![4 => Just(0i64), 1 => Just(300i64)],
        ) {
            let make = || keyed_window(&["count()", "sum(v)", "avg(v)", "min(v)", "count(v)"], slide, per, lateness);
            let (mut whole, mut segmented) = (Harness::new(make()).unwrap(), Harness::new(make()).unwrap());
            let (mut offset, mut wm) = (0, 0);
            for (b, (rows, typed, cuts)) in batches.iter().enumerate() {
                // Times move on from batch to batch, as a source's do, some rows late.
                let rows: Vec<_> = rows.iter().map(|&(k, (t, x), ts)| (k, (typed.unwrap_or(t), x), ts + 400 * b as i64)).collect();
                let c = columns_of(&rows, offset);
                offset += rows.len() as u64;
                let mut cuts = cuts.clone();
                cuts.sort();
                let marks: Vec<(usize, i64)> = cuts.iter().map(|&(at, step)| { wm += step; (at.min(rows.len()), wm) }).collect();
                let mut want = Vec::new();
                let mut rest = c.clone();
                let mut segments: Vec<_> = marks.iter().rev().map(|(at, _)| rest.split_off(*at)).collect();
                segments.push(rest);
                for (i, segment) in segments.into_iter().rev().enumerate() {
                    if i > 0 {
                        want.extend(segmented.watermark(marks[i - 1].1).unwrap());
                    }
                    want.extend(segmented.push_columns(segment).unwrap());
                }
                prop_assert_eq!(streams(whole.push_watermarked(c, &marks).unwrap()), streams(want));
            }
            prop_assert_eq!(whole.end().unwrap(), segmented.end().unwrap());
        }
    }

    fn window(kind: Kind, lateness: i64) -> Window {
        let calls = vec![(Sym::new("n"), rill_engine::aggregate::AggregateRegistry::default().parse("n", "count()").unwrap())];
        let mut w = Window::new(kind, Some((Sym::new("k"), Expr::compile("k").unwrap())), calls, lateness);
        w.wins = Some(KeyedState::in_memory("w"));
        w.sessions = Some(KeyedState::in_memory("s"));
        w
    }

    fn rec(k: &str, ts: i64) -> Record {
        let mut r: Record = [("k", k)].into_iter().collect();
        r.timestamp = ts;
        r
    }

    fn results(out: &mut Collector) -> Vec<(String, i64, i64, i64)> {
        out.records()
            .iter()
            .map(|r| {
                let g = |f: &str| r.get_str(f).cloned().unwrap();
                let Value::Str(k) = g("k") else { panic!() };
                let i = |v: Value| if let Value::Int(i) = v { i } else { panic!() };
                (k.to_string(), i(g("window_start")), i(g("window_end")), i(g("n")))
            })
            .collect()
    }

    #[test]
    fn results_say_which_firing_they_are_where_a_window_fires_more_than_once() {
        let panes = |out: &Collector| out.records().iter().map(|r| (r.get_str("pane").cloned(), r.get_str("n").cloned())).collect::<Vec<_>>();
        let s = |p: &str| Some(Value::str(p));
        // Early firing every 2 records, then the watermark closes it, then a late record.
        // (Session windows fire early on a processing-time `interval` only.)
        for kind in [Kind::Tumbling { size: 1000 }, Kind::Session { gap: 1000 }] {
            let mut w = window(kind, 5000);
            w.every = Some(2);
            let early = matches!(kind, Kind::Tumbling { .. });
            let mut out = Collector::default();
            for ts in [10, 20, 30] {
                w.process(rec("a", ts), &mut out).unwrap();
            }
            w.on_watermark(Watermark(3000), &mut out).unwrap();
            w.process(rec("a", 40), &mut out).unwrap();
            let want = [(s("early"), Some(Value::Int(2))), (s("final"), Some(Value::Int(3))), (s("late"), Some(Value::Int(4)))];
            assert_eq!(panes(&out), want[if early { 0 } else { 1 }..], "{kind:?}");
        }
        let mut w = window(Kind::Count { size: 3 }, 0);
        w.every = Some(2);
        let mut out = Collector::default();
        for ts in [1, 2, 3] {
            w.process(rec("a", ts), &mut out).unwrap();
        }
        assert_eq!(panes(&out), [(s("early"), Some(Value::Int(2))), (s("final"), Some(Value::Int(3)))]);
        // A window that fires once has no `pane` field.
        let mut w = window(Kind::Tumbling { size: 1000 }, 0);
        let mut out = Collector::default();
        w.process(rec("a", 1), &mut out).unwrap();
        w.on_watermark(Watermark::MAX, &mut out).unwrap();
        assert_eq!(panes(&out), [(None, Some(Value::Int(1)))]);
    }

    #[test]
    fn sessions_merge_and_fire_at_the_watermark() {
        let mut w = window(Kind::Session { gap: 100 }, 0);
        let mut out = Collector::default();
        for (k, ts) in [("a", 0), ("a", 150), ("b", 10), ("a", 80), ("a", 400)] {
            w.process(rec(k, ts), &mut out).unwrap();
        }
        assert!(out.records().is_empty());
        w.on_watermark(Watermark(300), &mut out).unwrap();
        let mut got = results(&mut out);
        got.sort();
        // a: 0, 80, 150 merge into [0, 250); b alone; a@400 still open.
        assert_eq!(got, [("a".into(), 0, 250, 3), ("b".into(), 10, 110, 1)]);
        let mut out = Collector::default();
        w.on_watermark(Watermark::MAX, &mut out).unwrap();
        assert_eq!(results(&mut out), [("a".into(), 400, 500, 1)]);
    }

    #[test]
    fn results_watermarks_and_late_records_leave_in_order_through_the_harness() {
        use rill_engine::testing::Output;
        let calls = vec![(Sym::new("n"), rill_engine::aggregate::AggregateRegistry::default().parse("n", "count()").unwrap())];
        let w = Window::new(Kind::Tumbling { size: 1000 }, Some((Sym::new("k"), Expr::compile("k").unwrap())), calls, 0);
        let mut h = Harness::new(w).unwrap();
        assert_eq!(h.push([rec("a", 100), rec("b", 900), rec("a", 1100)]).unwrap(), []);
        let out = h.watermark(999).unwrap();
        let fired: Vec<(Value, Value)> = out
            .iter()
            .filter_map(|o| match o {
                Output::Record(r) => Some((r.get_str("k").cloned().unwrap(), r.get_str("n").cloned().unwrap())),
                _ => None,
            })
            .collect();
        assert_eq!(fired.len(), 2, "{out:?}");
        assert!(fired.contains(&(Value::str("a"), Value::Int(1))) && fired.contains(&(Value::str("b"), Value::Int(1))));
        assert_eq!(out.last(), Some(&Output::Watermark(999)), "the watermark after the results it released");
        let out = h.push([rec("b", 500)]).unwrap();
        assert!(matches!(&out[..], [Output::Side(_, r)] if r.timestamp == 500), "too late: {out:?}");
        let out = h.end().unwrap();
        assert!(matches!(&out[..], [Output::Record(r), Output::Watermark(i64::MAX)] if r.get_str("k") == Some(&Value::str("a"))), "the open window at the end: {out:?}");
    }

    #[test]
    fn late_records_update_within_lateness_then_go_to_the_late_output() {
        let mut w = window(Kind::Tumbling { size: 1000 }, 500);
        let mut out = Collector::default();
        w.process(rec("a", 100), &mut out).unwrap();
        w.on_watermark(Watermark(1200), &mut out).unwrap();
        assert_eq!(results(&mut out), [("a".into(), 0, 1000, 1)]);
        let mut out = Collector::default();
        w.process(rec("a", 200), &mut out).unwrap(); // late, within lateness: re-emitted
        assert_eq!(results(&mut out), [("a".into(), 0, 1000, 2)]);
        let mut out = Collector::default();
        w.on_watermark(Watermark(1499), &mut out).unwrap(); // clean-up time passed
        w.process(rec("a", 300), &mut out).unwrap();
        assert!(out.records().is_empty());
        let (_, side, _) = collector_parts(&mut out);
        assert_eq!(side.len(), 1, "too late: to the late output");
    }

    fn collector_parts(out: &mut Collector) -> (usize, Vec<(usize, Record)>, usize) {
        let side = out.side_records();
        (out.records().len(), side, out.rejected().len())
    }

    #[test]
    fn count_windows_fire_every_n_per_key() {
        let mut w = window(Kind::Count { size: 2 }, 0);
        let mut out = Collector::default();
        for (k, ts) in [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("b", 5)] {
            w.process(rec(k, ts), &mut out).unwrap();
        }
        assert_eq!(results(&mut out), [("a".into(), 1, 4, 2), ("b".into(), 2, 6, 2)]);
    }
}
