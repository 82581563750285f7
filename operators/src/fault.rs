//! `fault`: injects failures, for testing recovery (the chaos harness, restart strategies).
//! Passes records through unchanged; with `panic_after: N` instance 0 panics at its N-th record,
//! once per process (a restarted job in the same process runs through); with
//! `delay_per_batch`, it sleeps that long per batch (a slow operator).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rill_engine::config::ConfigErrors;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError};
use rill_engine::record::{Batch, Record};
use rill_engine::registry::{BuildContext, TransformSpec};

static PANICKED: AtomicBool = AtomicBool::new(false);

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
    seen: u64,
    first_instance: bool,
}

impl Operator for Fault {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        self.first_instance = ctx.subtask == 0;
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.seen += 1;
        if self.first_instance && self.panic_after == Some(self.seen) && !PANICKED.swap(true, Ordering::SeqCst) {
            panic!("injected fault after {} records", self.seen);
        }
        out.emit(record);
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        for r in batch.records {
            self.process(r, out)?;
        }
        Ok(())
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: FaultConfig = ctx.options()?;
    let (panic_after, delay) = (cfg.panic_after, cfg.delay_per_batch);
    Ok(TransformSpec::new("injects faults (testing)", move |_| Ok(Fault { panic_after, delay, seen: 0, first_instance: false })))
}
