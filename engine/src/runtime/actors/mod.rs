//! The two actors — one per source instance (`source.rs`), one per transform or sink instance
//! (`operator.rs`) — and what they share: the job's dead-letter output and event channel, panic
//! guarding, and waiting for channel space before going on.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use actix::prelude::*;
use tokio::sync::mpsc::UnboundedSender;

use super::alignment::{Alignment, BarrierAligner};
use super::input::GateControl;
use super::output::Outputs;
use super::watermarks::WatermarkTracker;
use super::JobEvent;
use crate::dead_letter::DeadLetter;
use crate::message::{Message, Watermark};
use crate::metrics::Counters;
use crate::operator::{Collector, Operator, OperatorError, Rejected, RejectedInput, Snapshot};
use crate::checkpoint::{OperatorState, SavedState, SavedTimer, StateFile, Stored};
use crate::record::{Batch, Data, Record};
use crate::source::{Source, SourceContext, SourceOutput, SourceStatus};

/// What every actor shares with the job.
#[derive(Clone)]
pub(crate) struct Shared {
    pub(crate) events: UnboundedSender<JobEvent>,
    pub(crate) dead_letter: Arc<DeadLetter>,
    /// Source names by `Origin::source`, to say where a rejected record came from.
    pub(crate) source_names: Arc<Vec<Arc<str>>>,
    /// The checkpoint folder (large operator states are written there as files).
    pub(crate) checkpoint_dir: Option<std::path::PathBuf>,
}

impl Shared {
    /// Counts and dead-letters `rejected`; `Err` (the instance must fail) if they could not be
    /// written.
    fn reject(&self, component: &str, rejected: Vec<Rejected>, counters: &Counters) -> Result<(), OperatorError> {
        if rejected.is_empty() {
            return Ok(());
        }
        Counters::add(&counters.rejected, rejected.len() as u64);
        let names = &self.source_names;
        self.dead_letter
            .write(component, rejected, |r: &Record| {
                let source = names.get(r.origin.source as usize).map(|s| s.to_string()).unwrap_or_default();
                serde_json::json!({"source": source, "offset": r.origin.offset})
            })
            .map_err(OperatorError::new)
    }
}

fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T, OperatorError>) -> Result<T, OperatorError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(OperatorError::new(format!("panicked in {what}: {msg}")))
        }
    }
}

/// Continues after every pending output was sent, or stops the actor if a receiver has stopped
/// (the job is failing or being torn down: whoever failed reported it, and nothing more this
/// actor makes can be delivered).
fn after_flush<A>(act: &mut A, ctx: &mut Context<A>, then: impl FnOnce(&mut A, &mut Context<A>) + 'static)
where
    A: Actor<Context = Context<A>> + HasOutputs,
{
    let outs = act.outputs().take().expect("outputs present between flushes");
    if !outs.has_pending() {
        let closed = outs.closed();
        *act.outputs() = Some(outs);
        return if closed { act.downstream_gone(ctx) } else { then(act, ctx) };
    }
    let waiting = std::time::Instant::now();
    ctx.wait(outs.flush().into_actor(act).map(move |outs, act, ctx| {
        Counters::add(&act.counters().backpressured_us, waiting.elapsed().as_micros() as u64);
        let closed = outs.closed();
        *act.outputs() = Some(outs);
        if closed {
            act.downstream_gone(ctx)
        } else {
            then(act, ctx)
        }
    }));
}

pub(crate) trait HasOutputs: Actor<Context = Context<Self>> {
    fn outputs(&mut self) -> &mut Option<Outputs>;

    fn counters(&self) -> &Counters;

    /// A receiver stopped before the end of the stream: stop without finishing.
    fn downstream_gone(&mut self, ctx: &mut Context<Self>);
}


mod operator;
mod source;

pub(crate) use operator::{OperatorActor, Restore, Unmade};
pub(crate) use source::{Commit, Inject, SourceActor, SourceRestore, Stop};
