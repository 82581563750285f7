//! Sources: where records enter a job.
//!
//! A source is polled by its actor: each [`Source::poll`] appends up to `max` records to the
//! output and says whether more are ready now, none are ready yet (poll again after a delay), or
//! the source has ended. Sources never block the actor's thread waiting for input.

use std::sync::Arc;
use std::time::Duration;

use crate::operator::{OperatorError, Rejected, RejectedInput};
use crate::columns::Columns;
use crate::record::{Data, Emitted, Record};

/// What a poll found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceStatus {
    /// More may be ready: poll again at once.
    Ready,
    /// Nothing ready now: poll again after this delay.
    Idle(Duration),
    /// The source has ended (bounded sources only).
    Finished,
}

/// Where a source instance runs.
#[derive(Clone, Debug)]
pub struct SourceContext {
    pub name: Arc<str>,
    pub subtask: u32,
    pub parallelism: u32,
    /// Index of this source among the job's sources (stamped into each record's origin).
    pub source_index: u32,
    pub batch_size: usize,
    /// Where its gauges are shown (none outside a job).
    pub(crate) counters: Option<Arc<crate::metrics::Counters>>,
}

impl SourceContext {
    /// A gauge of this instance, exported by the HTTP API as Prometheus gauge `name` (and in
    /// the status as `gauges`). Outside a job it is kept but shown nowhere.
    pub fn gauge(&self, name: &'static str, help: &'static str) -> Arc<crate::metrics::NamedGauge> {
        let g = Arc::new(crate::metrics::NamedGauge::new(name, help));
        if let Some(c) = &self.counters {
            c.gauges.lock().expect("metrics lock").push(g.clone());
        }
        g
    }
}

/// The output of one poll.
pub struct SourceOutput {
    pub(crate) records: Emitted,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) max: usize,
    /// (records emitted before, split) each time the split changes.
    pub(crate) splits: Vec<(usize, u64)>,
    pub(crate) finished_splits: Vec<u64>,
    pub(crate) idle: bool,
}

impl SourceOutput {
    pub fn new(max: usize) -> SourceOutput {
        let mut records = Emitted::default();
        records.reserve(max);
        SourceOutput { records, rejected: Vec::new(), max, splits: Vec::new(), finished_splits: Vec::new(), idle: false }
    }

    /// The records emitted from now on come from split `id` (a Kafka partition): with event
    /// time, the instance's watermark is then the lowest of its splits' (each trailing its own
    /// largest timestamp), so that one split far ahead of another makes no record late. A split
    /// named before it has data is declared: it holds the watermark back until it has some, is
    /// idle for `idle_timeout`, or finishes.
    pub fn split(&mut self, id: u64) {
        if self.splits.last().is_none_or(|(_, s)| *s != id) {
            self.splits.push((self.records.len(), id));
        }
    }

    /// Split `id` has ended (bounded input): it no longer holds the watermark back.
    pub fn split_finished(&mut self, id: u64) {
        self.finished_splits.push(id);
    }

    /// The instance has nothing to read for now (e.g. no partition is assigned to it): it stops
    /// holding back the watermark of what it feeds until it emits again.
    pub fn idle(&mut self) {
        self.idle = true;
    }

    #[inline]
    pub fn emit(&mut self, record: Record) {
        self.records.push(record)
    }

    /// Emits a batch of records as columns (sources that make records field by field).
    pub fn emit_columns(&mut self, columns: Columns) {
        self.records.push_columns(columns)
    }

    /// Input that could not be decoded: counted and sent to the dead-letter output.
    pub fn reject_raw(&mut self, raw: impl Into<String>, error: impl Into<String>, position: serde_json::Value) {
        self.rejected.push(Rejected { input: RejectedInput::Raw(raw.into()), error: error.into(), position: Some(position) })
    }

    /// How many more records fit in this poll.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.max.saturating_sub(self.records.len())
    }

    /// How many records were emitted in this poll so far.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn is_full(&self) -> bool {
        self.records.len() >= self.max
    }

    /// The records emitted so far (as rows).
    pub fn records(&self) -> Vec<Record> {
        self.records.to_records()
    }

    /// Takes what was emitted, in pieces, in order.
    pub(crate) fn take(&mut self) -> Vec<Data> {
        self.records.take()
    }

    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }
}

/// Progress of a bounded source, for the progress line.
#[derive(Clone, Copy, Debug, Default)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A source of records.
pub trait Source: 'static {
    /// Called once on the instance's own thread before the first poll.
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Appends records to `out` (at most `out.remaining()`).
    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError>;

    /// Where the source is, for checkpoints (file offsets, generator ids): replaying from this
    /// position gives exactly the records not yet emitted.
    fn position(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Continues from a position returned by [`position`](Self::position) (restore from a
    /// checkpoint): the next poll emits the first record after it.
    fn restore(&mut self, _position: &serde_json::Value) -> Result<(), OperatorError> {
        Err(OperatorError::new("this source cannot resume from a checkpoint"))
    }

    /// Continues from the positions of every instance of an earlier run at another parallelism
    /// (a source whose [`SourceSpec::rescalable`](crate::registry::SourceSpec::rescalable) is
    /// set): this instance takes what it now owns (Kafka: its partitions' offsets).
    fn restore_rescaled(&mut self, _positions: &[serde_json::Value]) -> Result<(), OperatorError> {
        Err(OperatorError::new("this source cannot change parallelism"))
    }

    /// The checkpoint that recorded `position` (what [`position`](Self::position) returned at
    /// its barrier) is complete (Kafka: commit the offsets to the consumer group, for
    /// monitoring). Recovery never relies on it.
    fn checkpoint_complete(&mut self, _position: &serde_json::Value) -> Result<(), OperatorError> {
        Ok(())
    }

    /// Progress through a bounded input.
    fn progress(&self) -> Option<Progress> {
        None
    }
}
