//! Running one operator instance by hand, for tests of built-in and custom operators alike: push
//! records, watermarks, a checkpoint or the end of input, and get back exactly what the
//! instance emitted, in order, as the runtime would route it.
//!
//! It follows the runtime's rules: event-time timers fire when a watermark passes them, before
//! [`Operator::on_watermark`], and the instance's watermark then goes out after the records it
//! emitted; processing-time timers fire when [`Harness::clock`] passes them; a checkpoint calls
//! [`Operator::before_barrier`], takes a full snapshot with the timers and the managed keyed
//! state, and [`Harness::restored`] makes an instance from it, as recovery does.
//!
//! ```
//! use rill_engine::testing::{Harness, Output};
//! use rill_engine::record::Record;
//!
//! struct Double;
//! impl rill_engine::operator::Operator for Double {
//!     fn process(&mut self, mut r: Record, out: &mut rill_engine::operator::Collector) -> Result<(), rill_engine::operator::OperatorError> {
//!         let n = r.get_str("n").and_then(|v| v.as_f64()).unwrap_or(0.0);
//!         r.set(rill_engine::value::Sym::new("n"), rill_engine::value::Value::Float(n * 2.0));
//!         out.emit(r);
//!         Ok(())
//!     }
//! }
//!
//! let mut h = Harness::new(Double).unwrap();
//! let out = h.push([[("n", 2)].into_iter().collect::<Record>()]).unwrap();
//! assert_eq!(out, [Output::Record([("n", 4.0)].into_iter().collect())]);
//! assert_eq!(h.watermark(100).unwrap(), [Output::Watermark(100)]);
//! ```

use crate::checkpoint::SavedTimer;
use crate::message::{Epoch, Watermark};
use crate::operator::{Collector, Operator, OperatorContext, OperatorError, RejectedInput, Snapshot};
use crate::record::{Batch, Record};
use crate::registry::TransformSpec;
use crate::state::{Entries, TimeDomain};

/// One thing the instance emitted.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Record(Record),
    /// The instance's watermark advanced to this, here among its records.
    Watermark(i64),
    /// A record on the named side output (`late`, ...).
    Side(String, Record),
    /// A record rejected to the dead-letter output, with its error.
    Rejected(Record, String),
}

/// What a checkpoint saved of the instance: what [`Harness::restored`] takes.
#[derive(Debug, Clone)]
pub struct Saved {
    pub snapshot: Option<Vec<u8>>,
    pub timers: Vec<SavedTimer>,
    pub managed: Vec<(String, Entries)>,
}

/// One operator instance and its collector (see the module docs).
pub struct Harness {
    op: Box<dyn Operator>,
    ctx: OperatorContext,
    out: Collector,
    side_outputs: Vec<String>,
}

impl Harness {
    /// Opens `op` in a [standalone](OperatorContext::standalone) context (keyed state in
    /// memory; instance 0 of 1).
    pub fn new(op: impl Operator) -> Result<Harness, OperatorError> {
        Harness::open(Box::new(op), OperatorContext::standalone("op", None), Vec::new())
    }

    /// Makes and opens an instance of a checked component, as the runtime does (its side
    /// outputs keep their names).
    pub fn from_spec(spec: &TransformSpec, ctx: OperatorContext) -> Result<Harness, OperatorError> {
        let op = (spec.make)(&ctx)?;
        Harness::open(op, ctx, spec.side_outputs.clone())
    }

    fn open(mut op: Box<dyn Operator>, ctx: OperatorContext, side_outputs: Vec<String>) -> Result<Harness, OperatorError> {
        op.open(&ctx)?;
        Ok(Harness { op, ctx, out: Collector::default(), side_outputs })
    }

    /// `op`, opened in a standalone context and restored from `saved`, as recovery does.
    pub fn restored(op: impl Operator, saved: &Saved) -> Result<Harness, OperatorError> {
        Harness::new(op)?.restore(saved)
    }

    /// A new instance of `spec` restored from `saved`, as recovery makes one.
    pub fn restored_from_spec(spec: &TransformSpec, ctx: OperatorContext, saved: &Saved) -> Result<Harness, OperatorError> {
        Harness::from_spec(spec, ctx)?.restore(saved)
    }

    fn restore(mut self, saved: &Saved) -> Result<Harness, OperatorError> {
        let chain: Vec<Vec<u8>> = saved.snapshot.iter().cloned().collect();
        self.op.restore_chain(&chain)?;
        self.ctx.managed.restore(&saved.managed, |_| true)?;
        self.out.timers().load(saved.timers.clone());
        Ok(self)
    }

    pub fn context(&self) -> &OperatorContext {
        &self.ctx
    }

    /// Processes `records` as one batch.
    pub fn push(&mut self, records: impl IntoIterator<Item = Record>) -> Result<Vec<Output>, OperatorError> {
        self.op.process_batch(Batch::new(records.into_iter().collect()), &mut self.out)?;
        self.drain()
    }

    /// Processes `records` as one batch from input `input` (a join's 0: left, 1: right).
    pub fn push_input(&mut self, input: usize, records: impl IntoIterator<Item = Record>) -> Result<Vec<Output>, OperatorError> {
        self.op.process_input(input, Batch::new(records.into_iter().collect()), &mut self.out)?;
        self.drain()
    }

    /// Processes `columns` as one column batch (what the generator and column operators send).
    pub fn push_columns(&mut self, columns: crate::columns::Columns) -> Result<Vec<Output>, OperatorError> {
        self.op.process_batch(Batch::from_columns(columns), &mut self.out)?;
        self.drain()
    }

    /// Processes `columns` as one column batch inside which event time advances, as the
    /// runtime does: `marks` are `(n, wm)`, "after the first `n` rows, the watermark is `wm`".
    /// The instance takes the batch whole ([`Operator::process_watermarked`]) or, where it
    /// declines, in segments with the watermark advanced between them.
    pub fn push_watermarked(&mut self, columns: crate::columns::Columns, marks: &[(usize, i64)]) -> Result<Vec<Output>, OperatorError> {
        if !self.op.process_watermarked(0, &columns, marks, &mut self.out)? {
            let mut rest = columns;
            let mut segments: Vec<_> = marks.iter().rev().map(|(at, _)| rest.split_off((*at).min(rest.len()))).collect();
            segments.push(rest);
            let mut segments = segments.into_iter().rev();
            self.op.process_batch(Batch::from_columns(segments.next().expect("one more segment than marks")), &mut self.out)?;
            for ((_, wm), segment) in marks.iter().zip(segments) {
                self.advance(*wm)?;
                self.op.process_batch(Batch::from_columns(segment), &mut self.out)?;
            }
            return self.drain();
        }
        for (_, wm) in marks {
            self.advance(*wm)?;
        }
        self.drain()
    }

    /// Advances event time to `wm` on the instance's input.
    pub fn watermark(&mut self, wm: i64) -> Result<Vec<Output>, OperatorError> {
        self.advance(wm)?;
        self.drain()
    }

    fn advance(&mut self, wm: i64) -> Result<(), OperatorError> {
        for t in self.out.timers().due(TimeDomain::Event, wm) {
            self.op.on_timer(t, &mut self.out)?;
        }
        self.op.on_watermark(Watermark(wm), &mut self.out)?;
        self.out.mark(self.op.output_watermark(Watermark(wm)));
        Ok(())
    }

    /// Fires the processing-time timers due at `now` (epoch milliseconds).
    pub fn clock(&mut self, now: i64) -> Result<Vec<Output>, OperatorError> {
        for t in self.out.timers().due(TimeDomain::Processing, now) {
            self.op.on_timer(t, &mut self.out)?;
        }
        self.drain()
    }

    /// Checkpoint `epoch`: what the instance emits before the barrier, and what it saved.
    pub fn checkpoint(&mut self, epoch: u64) -> Result<(Vec<Output>, Saved), OperatorError> {
        self.op.before_barrier(Epoch(epoch), &mut self.out)?;
        let snapshot = match self.op.snapshot_incremental(Epoch(epoch), true)? {
            Some(Snapshot::Full(b)) => Some(b),
            Some(Snapshot::Delta(_)) => return Err(OperatorError::new("a delta snapshot where a full one was asked for")),
            None => None,
        };
        let saved = Saved { snapshot, timers: self.out.timers().save(), managed: self.ctx.managed.snapshot()? };
        Ok((self.drain()?, saved))
    }

    /// The input ended: as in a job, the end of a bounded input first brings the watermark to
    /// its maximum (firing every event-time timer), then [`Operator::on_end`] is called.
    pub fn end(&mut self) -> Result<Vec<Output>, OperatorError> {
        let mut out = self.watermark(Watermark::MAX.0)?;
        self.op.on_end(&mut self.out)?;
        out.extend(self.drain()?);
        Ok(out)
    }

    /// Everything emitted since the last call, in the order the runtime would send it: records
    /// with the watermarks among them, then side-output records, then rejects.
    fn drain(&mut self) -> Result<Vec<Output>, OperatorError> {
        let c = self.out.take();
        if !c.deferred.is_empty() {
            return Err(OperatorError::new("the harness does not run deferred work (`Collector::defer`)"));
        }
        let mut outputs = Vec::with_capacity(c.marks.len() + c.side.len() + c.rejected.len());
        let mut marks = c.marks.into_iter().peekable();
        for (i, r) in c.main.into_iter().flat_map(crate::record::Data::into_records).enumerate() {
            while let Some((_, wm)) = marks.next_if(|(at, _)| *at <= i) {
                outputs.push(Output::Watermark(wm.0));
            }
            outputs.push(Output::Record(r));
        }
        outputs.extend(marks.map(|(_, wm)| Output::Watermark(wm.0)));
        for (port, r) in c.side {
            let name = self.side_outputs.get(port).cloned().unwrap_or_else(|| format!("side {}", port + 1));
            outputs.push(Output::Side(name, r));
        }
        for rej in c.rejected {
            if let RejectedInput::Record(r) = rej.input {
                outputs.push(Output::Rejected(r, rej.error));
            }
        }
        Ok(outputs)
    }
}
