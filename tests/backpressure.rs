//! Backpressure end to end: a throttled sink slows a fast generator, and the process's memory
//! stays under a fixed bound. The same job with (practically) unbounded channels is run as a
//! control: it must exceed the bound, which shows the bound is tight enough to catch a
//! regression (a `do_send` or an unbounded queue on the data path).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rill::{Batch, Collector, OperatorContext, OperatorError, PipelineConfig, RunOptions, Sink, SinkSpec};

struct Slow {
    written: Arc<AtomicU64>,
}

impl Sink for Slow {
    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        self.written.fetch_add(batch.len() as u64, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(3));
        Ok(())
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs the job and returns (records written, peak RSS growth in MiB).
fn run_job(channel_capacity: usize) -> (u64, f64) {
    let written = Arc::new(AtomicU64::new(0));
    let mut registry = rill::registry();
    let w = written.clone();
    registry.register_sink("slow", move |_ctx| Ok(SinkSpec::new("slow", { let w = w.clone(); move |_: &OperatorContext| Ok(Slow { written: w.clone() }) })));
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: bp
work_dir: {work}
batch_size: 1024
sources:
  fast:
    type: generator
    count: 500000
    fields:
      id: id
      payload: "string(id) + '-0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789'"
sinks:
  out: {{type: slow, inputs: [fast]}}
"#,
        work = tmp.path().display()
    );
    let cfg = PipelineConfig::parse(&yaml, "bp.yaml", &[]).unwrap();
    let plan = rill::JobPlan::build(cfg, &registry).unwrap();

    let base = rss_kib();
    let peak = Arc::new(AtomicU64::new(base));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let report = rill::run(plan, RunOptions { channel_capacity, handle_ctrl_c: false, ..RunOptions::default() }).unwrap();
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    assert_eq!(report.dead_letters, 0);
    let growth = (peak.load(Ordering::Relaxed).saturating_sub(base)) as f64 / 1024.0;
    (written.load(Ordering::Relaxed), growth)
}

#[test]
fn a_slow_sink_bounds_memory() {
    // Every record is about 180 bytes of payload plus its record: 500,000 of them queued take
    // about 75 MiB. With 4 batches of 1,024 records per channel, a few MiB are in flight.
    const BOUND_MIB: f64 = 32.0;
    let (written, bounded) = run_job(4);
    assert_eq!(written, 500_000);
    assert!(bounded < BOUND_MIB, "memory grew by {bounded:.1} MiB with bounded channels");

    let (written, unbounded) = run_job(1_000_000);
    assert_eq!(written, 500_000);
    assert!(unbounded > BOUND_MIB, "the control run should queue everything, but grew only {unbounded:.1} MiB");
    eprintln!("peak memory growth: bounded {bounded:.1} MiB, unbounded {unbounded:.1} MiB");
}
