//! The runtime's message protocol, end to end on actors: records of every input arrive, the
//! watermark an operator sees is the minimum over its inputs and never decreases, bounded
//! sources close with the final watermark, and end-of-stream comes last.

use std::sync::{Arc, Mutex};

use rill_engine::config::{ConfigErrors, PipelineConfig};
use rill_engine::message::Watermark;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError, Sink};
use rill_engine::plan::JobPlan;
use rill_engine::record::{Batch, Record};
use rill_engine::registry::{BuildContext, Registry, SinkSpec, SourceSpec, TransformSpec};
use rill_engine::runtime::{run, RunOptions};
use rill_engine::source::{Source, SourceOutput, SourceStatus};
use rill_engine::value::{Sym, Value};

/// Emits `n` records `{i}` in batches of `chunk`.
struct Counting {
    next: i64,
    n: i64,
    chunk: usize,
}

impl Source for Counting {
    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError> {
        for _ in 0..self.chunk.min(out.remaining()) {
            if self.next == self.n {
                return Ok(SourceStatus::Finished);
            }
            let mut r = Record::new();
            r.push(Sym::new("i"), Value::Int(self.next));
            out.emit(r);
            self.next += 1;
        }
        Ok(SourceStatus::Ready)
    }
}

#[derive(Default, Debug)]
struct Seen {
    records: usize,
    watermarks: Vec<i64>,
    ended_after_watermarks: bool,
}

struct Probe(Arc<Mutex<Seen>>);

impl Operator for Probe {
    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.0.lock().unwrap().records += 1;
        out.emit(record);
        Ok(())
    }
    fn on_watermark(&mut self, wm: Watermark, _out: &mut Collector) -> Result<(), OperatorError> {
        self.0.lock().unwrap().watermarks.push(wm.0);
        Ok(())
    }
    fn on_end(&mut self, _out: &mut Collector) -> Result<(), OperatorError> {
        let mut s = self.0.lock().unwrap();
        s.ended_after_watermarks = s.watermarks.last() == Some(&i64::MAX);
        Ok(())
    }
}

struct Count(Arc<Mutex<usize>>);

impl Sink for Count {
    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        *self.0.lock().unwrap() += batch.len();
        Ok(())
    }
}

#[test]
fn two_sources_into_one_operator() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let written = Arc::new(Mutex::new(0usize));
    let mut reg = Registry::new();
    reg.register_source("counting", |ctx: &BuildContext| -> Result<SourceSpec, ConfigErrors> {
        #[derive(serde::Deserialize)]
        struct C {
            n: i64,
        }
        let c: C = ctx.options()?;
        let n = c.n;
        Ok(SourceSpec::new("counts", move |_| Ok(Counting { next: 0, n, chunk: 7 })))
    });
    let s = seen.clone();
    reg.register_transform("probe", move |_| Ok(TransformSpec::new("probe", { let s = s.clone(); move |_: &OperatorContext| Ok(Probe(s.clone())) })));
    let w = written.clone();
    reg.register_sink("count", move |_| Ok(SinkSpec::new("count", { let w = w.clone(); move |_: &OperatorContext| Ok(Count(w.clone())) })));
    let tmp = std::env::temp_dir().join(format!("rill-runtime-test-{}", std::process::id()));
    let yaml = format!(
        "work_dir: {}\nbatch_size: 5\nsources:\n  a: {{type: counting, n: 1000}}\n  b: {{type: counting, n: 333}}\ntransforms:\n  p: {{type: probe, inputs: [a, b]}}\nsinks:\n  o: {{type: count, inputs: [p]}}\n",
        tmp.display()
    );
    let plan = JobPlan::build(PipelineConfig::parse(&yaml, "t.yaml", &[]).unwrap(), &reg).unwrap();
    let report = run(plan, RunOptions { channel_capacity: 1, handle_ctrl_c: false, ..Default::default() }).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.records, 1333);
    assert_eq!(*written.lock().unwrap(), 1333);
    // Only when both sources have ended does the combined watermark reach the maximum, once.
    assert_eq!(seen.watermarks, [i64::MAX]);
    assert!(seen.ended_after_watermarks);
    let p = report.components.iter().find(|c| c.component == "p").unwrap();
    assert_eq!((p.records_in, p.records_out), (1333, 1333));
    let _ = std::fs::remove_dir_all(tmp);
}
