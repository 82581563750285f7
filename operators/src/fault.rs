//! `fault`: injects failures, for testing recovery (the chaos harness, restart strategies).
//! Passes records through unchanged; with `panic_after: N` instance 0 panics at the batch that
//! brings its N-th record, once per process (a restarted job in the same process runs
//! through); with `delay_per_batch`, it sleeps that long per batch (a slow operator). Both come
//! from `rill_engine::faults`, which the chaos harness also uses.

use std::time::Duration;

use rill_engine::config::ConfigErrors;
use rill_engine::faults::InjectedFault;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError};
use rill_engine::record::{Batch, Record};
use rill_engine::registry::{BuildContext, TransformSpec};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultConfig {
    panic_after: Option<u64>,
    #[serde(default, with = "rill_engine::config::de::duration::option")]
    delay_per_batch: Option<Duration>,
}

pub struct Fault {
    panic_after: Option<u64>,
    delay: Option<Duration>,
    /// Made in `open`: only instance 0 panics.
    fault: Option<InjectedFault>,
}

impl Operator for Fault {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        let panic_after = self.panic_after.filter(|_| ctx.subtask == 0);
        self.fault = Some(InjectedFault::new(panic_after, self.delay));
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.process_batch(Batch::new(vec![record]), out)
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        if let Some(f) = &mut self.fault {
            f.before_batch(batch.len());
        }
        for r in batch.into_records() {
            out.emit(r);
        }
        Ok(())
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: FaultConfig = ctx.options()?;
    let (panic_after, delay) = (cfg.panic_after, cfg.delay_per_batch);
    Ok(TransformSpec::new("injects faults (testing)", move |_| Ok(Fault { panic_after, delay, fault: None })))
}
