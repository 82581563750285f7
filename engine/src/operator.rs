//! The Rust extension API: what a custom operator implements.
//!
//! An operator implements one required method, [`Operator::process`], called for each record.
//! Everything else has a default: batch processing, watermarks, end of stream, and the
//! snapshot/restore pair used by checkpoints. Operators never see barrier alignment or channels:
//! the runtime aligns barriers and then asks the operator to snapshot.
//!
//! ```
//! use rill_engine::operator::{Collector, Operator, OperatorError};
//! use rill_engine::record::Record;
//! use rill_engine::value::{Sym, Value};
//!
//! /// Adds `len`, the length of the `text` field.
//! struct Length { text: Sym, len: Sym }
//!
//! impl Operator for Length {
//!     fn process(&mut self, mut record: Record, out: &mut Collector) -> Result<(), OperatorError> {
//!         match record.get(self.text) {
//!             Some(Value::Str(s)) => {
//!                 let n = s.chars().count() as i64;
//!                 record.set(self.len, Value::Int(n));
//!                 out.emit(record);
//!             }
//!             _ => out.reject(record, "`text` is missing or not a string"),
//!         }
//!         Ok(())
//!     }
//! }
//! # let mut op = Length { text: Sym::new("text"), len: Sym::new("len") };
//! # let mut out = Collector::default();
//! # op.process([("text", "héllo")].into_iter().collect(), &mut out).unwrap();
//! # assert_eq!(out.records()[0].to_json(), r#"{"text":"héllo","len":5}"#);
//! ```

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use crate::message::{Epoch, Watermark};
use crate::columns::Columns;
use crate::record::{Batch, Data, Emitted, Record};

/// What [`Operator::snapshot_incremental`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Snapshot {
    /// The whole state.
    Full(Vec<u8>),
    /// What changed since the instance's previous snapshot.
    Delta(Vec<u8>),
}

/// Whose problem a failure is (as Arroyo's errors say): what the restart strategy may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    /// The pipeline or its input is wrong (a CSV header naming a column twice, output changed
    /// outside Rill): running again cannot help, so `restart:` does not retry it.
    User,
    /// Something outside failed (a disk, a peer, the network): it may succeed again.
    External,
    /// A bug or a panic in an operator: retried, since the next attempt may well pass.
    Internal,
}

impl ErrorDomain {
    /// Whether a restart may succeed.
    pub fn retryable(self) -> bool {
        self != ErrorDomain::User
    }

    pub fn describe(self) -> &'static str {
        match self {
            ErrorDomain::User => "user error",
            ErrorDomain::External => "external error",
            ErrorDomain::Internal => "internal error",
        }
    }
}

/// A failure that stops the job (as opposed to a bad record, which is rejected and counted).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct OperatorError {
    pub message: String,
    pub domain: ErrorDomain,
}

impl OperatorError {
    /// A failure of unknown cause (treated as internal: retried).
    pub fn new(message: impl Into<String>) -> OperatorError {
        OperatorError { message: message.into(), domain: ErrorDomain::Internal }
    }

    /// The pipeline or its input must change first; never retried.
    pub fn user(message: impl Into<String>) -> OperatorError {
        OperatorError { message: message.into(), domain: ErrorDomain::User }
    }

    /// Something outside failed (I/O, a peer); retried by `restart:`.
    pub fn external(message: impl Into<String>) -> OperatorError {
        OperatorError { message: message.into(), domain: ErrorDomain::External }
    }
}

impl From<std::io::Error> for OperatorError {
    fn from(e: std::io::Error) -> Self {
        OperatorError::external(e.to_string())
    }
}

/// Where an operator instance runs.
#[derive(Clone, Debug)]
pub struct OperatorContext {
    /// The component's name in the pipeline.
    pub name: Arc<str>,
    pub subtask: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    /// Key groups this instance owns (keyed operators).
    pub key_groups: Range<u32>,
    /// The job's working directory (state, dead letters).
    pub work_dir: PathBuf,
    /// The job's state database.
    pub state: Option<crate::state::StateBackend>,
    /// The job takes checkpoints (sinks stage output for two-phase commit).
    pub checkpointing: bool,
    /// The job resumes from a checkpoint: `restore` (or `Sink::recover`) follows `open`.
    pub restoring: bool,
    /// The states made by [`value_state`](Self::value_state), [`list_state`](Self::list_state)
    /// and [`map_state`](Self::map_state): the runtime snapshots and restores them.
    pub(crate) managed: crate::state::ManagedStates,
    /// The instance's counters, where [`histogram`](Self::histogram) registers (none outside a job).
    pub(crate) counters: Option<Arc<crate::metrics::Counters>>,
}

impl OperatorContext {
    /// A histogram of this instance, exported by the HTTP API as Prometheus histogram `name`
    /// (values times `scale` are its unit; `bounds` are the buckets' upper bounds in recorded
    /// values). Outside a job it is kept but shown nowhere.
    pub fn histogram(&self, name: &'static str, help: &'static str, scale: f64, bounds: Vec<u64>) -> Arc<crate::metrics::NamedHistogram> {
        let h = Arc::new(crate::metrics::NamedHistogram::new(name, help, scale, bounds));
        if let Some(c) = &self.counters {
            c.histograms.lock().expect("metrics lock").push(h.clone());
        }
        h
    }

    /// A context for one instance run outside a job (unit tests, tools): instance 0 of 1 owning
    /// every key group, keyed state in `state` (in memory without one), no checkpoints.
    pub fn standalone(name: &str, state: Option<crate::state::StateBackend>) -> OperatorContext {
        let max_parallelism = crate::exchange::DEFAULT_MAX_PARALLELISM;
        OperatorContext {
            name: name.into(),
            subtask: 0,
            parallelism: 1,
            max_parallelism,
            key_groups: 0..max_parallelism,
            work_dir: std::env::temp_dir(),
            state,
            checkpointing: true,
            restoring: false,
            managed: Default::default(),
            counters: None,
        }
    }

    fn keyed<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &str,
        options: crate::state::StateOptions,
    ) -> Result<crate::state::KeyedState<T>, OperatorError> {
        let mut state = match &self.state {
            Some(b) => b.keyed(&format!("{}#{}", self.name, self.subtask), name, options).map_err(|e| OperatorError::new(e.to_string()))?,
            None => crate::state::KeyedState::in_memory(name),
        };
        state.track_changes(self.checkpointing);
        Ok(state)
    }

    /// Keyed value state `name` of this operator instance. Made in `open`, it is part of every
    /// checkpoint, restored on recovery and rescaled by key groups by the runtime: the operator
    /// needs no `snapshot` or `restore` for it.
    pub fn value_state<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        options: crate::state::StateOptions,
    ) -> Result<crate::state::ValueState<T>, OperatorError> {
        let state = crate::state::ValueState::new(self.keyed(name, options)?);
        self.managed.register(name, state.managed())?;
        Ok(state)
    }

    /// Keyed list state `name` (managed as [`value_state`](Self::value_state) is).
    pub fn list_state<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        options: crate::state::StateOptions,
    ) -> Result<crate::state::ListState<T>, OperatorError> {
        let state = crate::state::ListState::new(self.keyed(name, options)?);
        self.managed.register(name, state.managed())?;
        Ok(state)
    }

    /// Keyed map state `name`, string keys within each key (managed as
    /// [`value_state`](Self::value_state) is).
    pub fn map_state<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        options: crate::state::StateOptions,
    ) -> Result<crate::state::MapState<T>, OperatorError> {
        let state = crate::state::MapState::new(self.keyed(name, options)?);
        self.managed.register(name, state.managed())?;
        Ok(state)
    }

    /// Keyed state with a namespace per entry (what windows use).
    pub fn keyed_state<T: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        name: &str,
        options: crate::state::StateOptions,
    ) -> Result<crate::state::KeyedState<T>, OperatorError> {
        self.keyed(name, options)
    }
}

impl From<crate::state::StateError> for OperatorError {
    fn from(e: crate::state::StateError) -> Self {
        OperatorError::new(e.to_string())
    }
}

/// A record that could not be processed: it goes to the dead-letter output with its error.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub input: RejectedInput,
    pub error: String,
    /// Source position (for rejects at a source: file, line, byte offset).
    pub position: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub enum RejectedInput {
    /// Raw input that could not be decoded into a record.
    Raw(String),
    Record(Record),
}

/// Output an operator will have later, from work it handed to other threads (see
/// [`Collector::defer`]).
pub type Deferred = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Collector, OperatorError>>>>;

/// Where an operator puts its output.
#[derive(Default)]
pub struct Collector {
    main: Emitted,
    side: Vec<(usize, Record)>,
    rejected: Vec<Rejected>,
    timers: crate::state::Timers,
    /// Watermarks reached while collecting: (records emitted before it, watermark).
    marks: Vec<(usize, Watermark)>,
    /// Output still being computed: (pieces of output before it, watermarks before it, work).
    deferred: Vec<(usize, usize, Deferred)>,
}

impl Collector {
    /// Emits a record on the main output.
    #[inline]
    pub fn emit(&mut self, record: Record) {
        self.main.push(record)
    }

    /// Emits a whole column batch on the main output (after everything emitted before).
    pub fn emit_columns(&mut self, columns: Columns) {
        self.main.push_columns(columns)
    }

    /// Emits a record on side output `port` (the index in the operator's declared outputs).
    pub fn emit_side(&mut self, port: usize, record: Record) {
        self.side.push((port, record))
    }

    /// Rejects a record: it is counted and written to the dead-letter output with `error`.
    pub fn reject(&mut self, record: Record, error: impl fmt::Display) {
        self.rejected.push(Rejected { input: RejectedInput::Record(record), error: error.to_string(), position: None })
    }

    /// The records emitted on the main output so far (as rows).
    pub fn records(&self) -> Vec<Record> {
        self.main.to_records()
    }

    /// Emits, in this place of the output, what `work` will produce (its emitted and rejected
    /// records). For operators that hand work to other threads (model inference): the instance
    /// takes no further input until every deferred work of the call has finished, the works of
    /// one call run concurrently, and their output keeps its place relative to everything else
    /// the operator emits — records, watermarks, barriers. An error fails the job.
    pub fn defer(&mut self, work: impl std::future::Future<Output = Result<Collector, OperatorError>> + 'static) {
        let place = self.main.close();
        self.deferred.push((place, self.marks.len(), Box::pin(work)))
    }

    /// Whether work was deferred (and not yet taken by the runtime).
    pub fn has_deferred(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// This instance's timers: register event-time or processing-time callbacks per key;
    /// they arrive in [`Operator::on_timer`].
    pub fn timers(&mut self) -> &mut crate::state::Timers {
        &mut self.timers
    }

    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// Records emitted on side outputs so far, as (port, record); takes them out.
    pub fn side_records(&mut self) -> Vec<(usize, Record)> {
        std::mem::take(&mut self.side)
    }

    pub(crate) fn take(&mut self) -> Collected {
        Collected {
            main: self.main.take(),
            side: std::mem::take(&mut self.side),
            rejected: std::mem::take(&mut self.rejected),
            marks: std::mem::take(&mut self.marks),
            deferred: std::mem::take(&mut self.deferred),
        }
    }

    /// The instance's watermark became `wm` after the records emitted so far.
    pub(crate) fn mark(&mut self, wm: Watermark) {
        let deferred_since_last_mark = matches!(self.deferred.last(), Some(d) if d.1 == self.marks.len());
        match self.marks.last_mut() {
            Some((n, last)) if *n == self.main.len() && !deferred_since_last_mark => *last = wm,
            _ => self.marks.push((self.main.len(), wm)),
        }
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.main.reserve(n)
    }
}

/// What an instance emitted while handling one message.
pub(crate) struct Collected {
    /// The main output, in pieces (in order).
    pub(crate) main: Vec<Data>,
    pub(crate) side: Vec<(usize, Record)>,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) marks: Vec<(usize, Watermark)>,
    pub(crate) deferred: Vec<(usize, usize, Deferred)>,
}

impl Collected {
    /// Splits off the deferred works, to be awaited before [`splice`](Self::splice).
    pub(crate) fn take_deferred(&mut self) -> Vec<Deferred> {
        self.deferred.iter_mut().map(|(_, _, w)| std::mem::replace(w, Box::pin(std::future::pending()))).collect()
    }

    /// Puts the output of the deferred works (in order) in their places.
    pub(crate) fn splice(&mut self, results: Vec<Result<Collector, OperatorError>>) -> Result<(), OperatorError> {
        let places: Vec<(usize, usize)> = self.deferred.drain(..).map(|(r, m, _)| (r, m)).collect();
        let mut main = Vec::with_capacity(self.main.len() + places.len());
        let mut ready = std::mem::take(&mut self.main).into_iter();
        let mut taken = 0;
        for ((at, marks_before), result) in places.into_iter().zip(results) {
            let mut c = result?.take();
            debug_assert!(c.deferred.is_empty(), "deferred work defers again");
            main.extend(ready.by_ref().take(at - taken));
            taken = at;
            let added: usize = c.main.iter().map(Data::len).sum();
            for mark in &mut self.marks[marks_before..] {
                mark.0 += added;
            }
            main.append(&mut c.main);
            self.side.append(&mut c.side);
            self.rejected.append(&mut c.rejected);
        }
        main.extend(ready);
        self.main = main;
        Ok(())
    }
}

/// A transform: records in, records out.
pub trait Operator: 'static {
    /// Handles one record.
    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError>;

    /// Handles a batch; the default calls [`process`](Self::process) for each record.
    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        for r in batch.into_records() {
            self.process(r, out)?;
        }
        Ok(())
    }

    /// Handles a batch from input `input` (its place in the component's `inputs:`): for
    /// operators that treat their inputs differently (a join's left and right). The default
    /// calls [`process_batch`](Self::process_batch), so that inputs are a union.
    fn process_input(&mut self, _input: usize, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        self.process_batch(batch, out)
    }

    /// A column batch from input `input` inside which the watermark advances: `marks` are
    /// `(n, wm)`, "from row `n` on, the watermark is `wm`", in order. An operator that can take
    /// the whole batch at once, with the results it would give segment by segment, does so and
    /// returns `true`; the runtime then advances the watermark through `marks` as usual (timers,
    /// [`on_watermark`](Self::on_watermark)). `false` (the default): nothing was done, and the
    /// batch comes again in segments, the watermark advancing between them.
    fn process_watermarked(&mut self, _input: usize, _columns: &crate::columns::Columns, _marks: &[(usize, i64)], _out: &mut Collector) -> Result<bool, OperatorError> {
        Ok(false)
    }

    /// Called once before the first record, on the instance's own thread.
    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// A timer registered through [`Collector::timers`] is due. Event-time timers fire when the
    /// watermark passes their time (before [`on_watermark`](Self::on_watermark)), processing-time
    /// timers when the clock does.
    fn on_timer(&mut self, _timer: crate::state::Timer, _out: &mut Collector) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Event time has advanced to `watermark` on every input.
    fn on_watermark(&mut self, _watermark: Watermark, _out: &mut Collector) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The watermark this operator sends on when its input watermark is `input` (after
    /// [`on_watermark`](Self::on_watermark)). By default the same; an operator that emits rows
    /// older than its input watermark (a join's rows carry the left row's time, and go out when
    /// the right side can no longer match) holds it back, so that they are not late downstream.
    /// The end of input (`Watermark::MAX`) must stay `MAX`.
    fn output_watermark(&self, input: Watermark) -> Watermark {
        input
    }

    /// Every input has ended. Emit what is still pending.
    fn on_end(&mut self, _out: &mut Collector) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Checkpoint `epoch`'s barrier has been aligned and is about to be snapshotted and
    /// forwarded: emit what is buffered (e.g. a partly gathered batch), so that it goes out
    /// before the barrier and need not be part of the snapshot.
    fn before_barrier(&mut self, _epoch: Epoch, _out: &mut Collector) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Snapshot of the operator's state for checkpoint `epoch`, taken after barrier alignment.
    fn snapshot(&mut self, _epoch: Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        Ok(None)
    }

    /// Restores state written by [`snapshot`](Self::snapshot) (called after `open`).
    fn restore(&mut self, _state: &[u8]) -> Result<(), OperatorError> {
        Ok(())
    }

    /// The runtime calls this (not [`snapshot`](Self::snapshot)) at every checkpoint, and
    /// [`restore_chain`](Self::restore_chain) / [`restore_rescaled_chains`](Self::restore_rescaled_chains)
    /// on recovery: an operator implements either the plain pair (`snapshot`, `restore`,
    /// `restore_rescaled`) or this one.
    ///
    /// Incremental checkpoints, for operators with large state: return [`Snapshot::Delta`] —
    /// only what changed since this instance's previous snapshot — unless `full` is set (the
    /// runtime needs a base: the first checkpoint of a run, or after several deltas). The
    /// runtime stores the chain (a full snapshot and the deltas after it) and hands it to
    /// [`restore_chain`](Self::restore_chain). The default takes [`snapshot`](Self::snapshot),
    /// full every time.
    fn snapshot_incremental(&mut self, epoch: Epoch, _full: bool) -> Result<Option<Snapshot>, OperatorError> {
        Ok(self.snapshot(epoch)?.map(Snapshot::Full))
    }

    /// Restores from a chain of snapshots, oldest first: a full one, then deltas. The default
    /// restores a chain of one full snapshot with [`restore`](Self::restore).
    fn restore_chain(&mut self, chain: &[Vec<u8>]) -> Result<(), OperatorError> {
        match chain {
            [] => Ok(()),
            [full] => self.restore(full),
            _ => Err(OperatorError::new("this operator wrote incremental snapshots but does not implement restore_chain")),
        }
    }

    /// Restores at another parallelism from every old instance's chain. The default passes
    /// single full snapshots to [`restore_rescaled`](Self::restore_rescaled).
    fn restore_rescaled_chains(&mut self, chains: &[Vec<Vec<u8>>]) -> Result<(), OperatorError> {
        let mut fulls = Vec::with_capacity(chains.len());
        for c in chains {
            match c.as_slice() {
                [] => {}
                [full] => fulls.push(full.clone()),
                _ => return Err(OperatorError::new("this operator wrote incremental snapshots but does not implement restore_rescaled_chains")),
            }
        }
        if fulls.is_empty() {
            return Ok(());
        }
        self.restore_rescaled(&fulls)
    }

    /// Restores at a different parallelism: `states` are the snapshots of every instance of the
    /// checkpoint; keep the keys of this instance's key groups (`open` got them in its
    /// context). Keyed built-in operators implement it; by default it is refused.
    fn restore_rescaled(&mut self, _states: &[Vec<u8>]) -> Result<(), OperatorError> {
        Err(OperatorError::new("this operator cannot be restored at another parallelism"))
    }

    /// Checkpoint `epoch` is complete everywhere (sinks publish here).
    fn notify_checkpoint_complete(&mut self, _epoch: Epoch) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Records rejected outside a call with a collector (a sink publishing at checkpoint
    /// completion or recovering): the runtime dead-letters them after those calls.
    fn take_rejected(&mut self) -> Vec<Rejected> {
        Vec::new()
    }

    /// A line about this instance for the end-of-run summary (e.g. batching figures).
    fn report(&self) -> Option<String> {
        None
    }
}

/// A sink: the end of a pipeline.
///
/// Exactly-once sinks take part in two-phase commit: at checkpoint `n`'s barrier the runtime
/// calls [`pre_commit`](Self::pre_commit) (make everything written so far durable but not yet
/// visible, and say how to finish it); once checkpoint `n` is complete, [`commit`](Self::commit)
/// publishes it. After a crash, [`recover`](Self::recover) gets what `pre_commit` returned for
/// the checkpoint being restored and finishes or discards what was pending.
pub trait Sink: 'static {
    /// Writes a batch.
    fn write(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError>;

    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Every input has ended: publish everything and close.
    fn close(&mut self) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Stages what was written since the last checkpoint; the returned bytes are stored in
    /// checkpoint `epoch` and handed to [`recover`](Self::recover) after a crash.
    fn pre_commit(&mut self, _epoch: Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        Ok(None)
    }

    /// Checkpoint `epoch` is complete: publish what was staged up to it.
    fn commit(&mut self, _epoch: Epoch) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Restoring: finish the transaction recorded in the checkpoint (`None` for a fresh start)
    /// and discard anything written after it.
    fn recover(&mut self, _pending: Option<&[u8]>) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Restoring at another parallelism: `pending` holds what every old instance staged (each
    /// new instance gets all of them).
    fn recover_rescaled(&mut self, _pending: &[Vec<u8>]) -> Result<(), OperatorError> {
        Err(OperatorError::new("this sink cannot be restored at another parallelism"))
    }

    /// Writes out what the sink buffers, where rows it cannot write are rejected into `out`:
    /// called at every barrier (before [`pre_commit`](Self::pre_commit)) and at the end
    /// (before [`close`](Self::close)).
    fn flush_buffer(&mut self, _out: &mut Collector) -> Result<(), OperatorError> {
        Ok(())
    }

    /// A timer the sink registered (`out.timers()`) is due: e.g. a batch's `max_delay`.
    fn on_timer(&mut self, _timer: crate::state::Timer, _out: &mut Collector) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Rows rejected where no collector was at hand ([`commit`](Self::commit),
    /// [`recover`](Self::recover)), with why: the runtime dead-letters them right after.
    fn take_rejected(&mut self) -> Vec<(Record, String)> {
        Vec::new()
    }
}

/// Runs a [`Sink`] as an operator with no outputs.
pub(crate) struct SinkOperator(pub Box<dyn Sink>);

impl Operator for SinkOperator {
    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.0.write(Batch::new(vec![record]), out)
    }
    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        self.0.write(batch, out)
    }
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        self.0.open(ctx)
    }
    fn on_end(&mut self, out: &mut Collector) -> Result<(), OperatorError> {
        self.0.flush_buffer(out)?;
        self.0.close()?;
        for (r, e) in self.0.take_rejected() {
            out.reject(r, e);
        }
        Ok(())
    }
    fn before_barrier(&mut self, _epoch: Epoch, out: &mut Collector) -> Result<(), OperatorError> {
        self.0.flush_buffer(out)
    }
    fn on_timer(&mut self, timer: crate::state::Timer, out: &mut Collector) -> Result<(), OperatorError> {
        self.0.on_timer(timer, out)
    }
    fn snapshot(&mut self, epoch: Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        self.0.pre_commit(epoch)
    }
    fn restore(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        self.0.recover(Some(state))
    }
    fn restore_rescaled(&mut self, states: &[Vec<u8>]) -> Result<(), OperatorError> {
        self.0.recover_rescaled(states)
    }
    fn take_rejected(&mut self) -> Vec<Rejected> {
        self.0.take_rejected().into_iter().map(|(r, error)| Rejected { input: RejectedInput::Record(r), error, position: None }).collect()
    }
    fn notify_checkpoint_complete(&mut self, epoch: Epoch) -> Result<(), OperatorError> {
        self.0.commit(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn rec(i: i64) -> Record {
        [("i", Value::Int(i))].into_iter().collect()
    }

    fn later(ids: &[i64]) -> impl std::future::Future<Output = Result<Collector, OperatorError>> {
        let mut c = Collector::default();
        ids.iter().for_each(|&i| c.emit(rec(i)));
        std::future::ready(Ok(c))
    }

    #[test]
    fn deferred_output_keeps_its_place_among_records_and_watermarks() {
        let mut out = Collector::default();
        out.emit(rec(1));
        out.defer(later(&[2, 3]));
        out.mark(Watermark(10));
        out.defer(later(&[4]));
        out.mark(Watermark(20)); // not merged into the mark at 10: deferred output lies between
        out.emit(rec(5));
        out.defer(later(&[]));
        out.mark(Watermark(30));
        let mut c = out.take();
        let results = c.take_deferred().into_iter().map(futures::executor::block_on).collect();
        c.splice(results).unwrap();
        let ids: Vec<i64> = c.main.into_iter().flat_map(Data::into_records).map(|r| match r.get_str("i") { Some(Value::Int(i)) => *i, _ => -1 }).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(c.marks, [(3, Watermark(10)), (4, Watermark(20)), (5, Watermark(30))]);
    }
}
