//! Backpressure end to end: a throttled sink slows a fast source, and the records in flight
//! (emitted but not yet written) stay under a fixed bound. The same job with (practically)
//! unbounded channels is run as a control: there the source runs to its end while the sink
//! waits, which shows the bound comes from backpressure and would catch a regression (a
//! `do_send` or an unbounded queue on the data path). Counting records, not sampling RSS, keeps
//! the verdict independent of the machine's load.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rill::{
    Batch, Collector, OperatorContext, OperatorError, PipelineConfig, Record, RunOptions, Sink, SinkSpec, Source, SourceOutput,
    SourceSpec, SourceStatus, Sym, Value,
};

const TOTAL: u64 = 500_000;
const BATCH: u64 = 1024;

/// Emits `TOTAL` records of about 180 bytes as fast as it may, counting what it has emitted.
struct Counting {
    next: u64,
    emitted: Arc<AtomicU64>,
    payload: Value,
}

impl Source for Counting {
    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError> {
        while !out.is_full() && self.next < TOTAL {
            let mut r = Record::with_capacity(2);
            r.push(Sym::new("id"), Value::Int(self.next as i64));
            r.push(Sym::new("payload"), self.payload.clone());
            out.emit(r);
            self.next += 1;
        }
        self.emitted.store(self.next, Ordering::SeqCst);
        Ok(if self.next == TOTAL { SourceStatus::Finished } else { SourceStatus::Ready })
    }
}

/// How the sink waits before its first write, so that the source can run ahead as far as the
/// channels let it.
#[derive(Clone, Copy)]
enum Hold {
    /// Until the source has stopped advancing for a while (backpressure stopped it). When
    /// that happens does not matter: the bound holds at any moment.
    UntilStalled,
    /// Until the source has emitted everything: only possible without backpressure.
    UntilAllEmitted,
}

struct Slow {
    emitted: Arc<AtomicU64>,
    written: u64,
    max_in_flight: Arc<AtomicU64>,
    hold: Option<Hold>,
}

impl Sink for Slow {
    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        match self.hold.take() {
            Some(Hold::UntilStalled) => {
                let mut last = u64::MAX;
                while self.emitted.load(Ordering::SeqCst) != last {
                    last = self.emitted.load(Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            Some(Hold::UntilAllEmitted) => {
                while self.emitted.load(Ordering::SeqCst) < TOTAL {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            None => {}
        }
        // Emitted but not yet written: queued in channels and actors.
        let in_flight = self.emitted.load(Ordering::SeqCst) - self.written;
        self.max_in_flight.fetch_max(in_flight, Ordering::SeqCst);
        self.written += batch.len() as u64;
        std::thread::sleep(Duration::from_millis(1));
        Ok(())
    }
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Runs the job; returns (records written, most records ever in flight, peak RSS growth in MiB).
fn run_job(channel_capacity: usize, hold: Hold) -> (u64, u64, f64) {
    let emitted = Arc::new(AtomicU64::new(0));
    let max_in_flight = Arc::new(AtomicU64::new(0));
    let mut registry = rill::registry();
    let (e, m) = (emitted.clone(), max_in_flight.clone());
    let payload = Value::str(&"0123456789".repeat(18));
    registry.register_source("counting", move |_ctx| {
        let (e, payload) = (e.clone(), payload.clone());
        Ok(SourceSpec::new("counting", move |_| Ok(Counting { next: 0, emitted: e.clone(), payload: payload.clone() })))
    });
    let (e, m2) = (emitted.clone(), m.clone());
    registry.register_sink("slow", move |_ctx| {
        let (e, m) = (e.clone(), m2.clone());
        Ok(SinkSpec::new("slow", move |_: &OperatorContext| Ok(Slow { emitted: e.clone(), written: 0, max_in_flight: m.clone(), hold: Some(hold) })))
    });
    let tmp = tempfile::tempdir().unwrap();
    let yaml = format!(
        "name: bp\nwork_dir: {work}\nbatch_size: {BATCH}\nsources:\n  fast: {{type: counting}}\nsinks:\n  out: {{type: slow, inputs: [fast]}}\n",
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
    let written = report.components.iter().find(|c| c.component.as_ref() as &str == "out").map(|c| c.records_in).unwrap_or(0);
    (written, max_in_flight.load(Ordering::SeqCst), growth)
}

#[test]
fn a_slow_sink_bounds_memory() {
    // In flight at most: 4 batches in the channel, the one being routed, the one the sink
    // holds, and one the source is filling. Structural, so it holds under any load.
    const BOUND: u64 = 8 * BATCH;
    let (written, in_flight, bounded) = run_job(4, Hold::UntilStalled);
    assert_eq!(written, TOTAL);
    assert!(in_flight <= BOUND, "{in_flight} records in flight with bounded channels");

    // The control: with (practically) unbounded channels the source runs to its end while the
    // sink waits, which shows that the bound above comes from backpressure.
    let (written, in_flight_unbounded, unbounded) = run_job(1_000_000, Hold::UntilAllEmitted);
    assert_eq!(written, TOTAL);
    assert!(in_flight_unbounded > TOTAL - BATCH, "{in_flight_unbounded} in flight without backpressure");
    eprintln!("most records in flight: bounded {in_flight}, unbounded {in_flight_unbounded}; peak RSS growth: bounded {bounded:.1} MiB, unbounded {unbounded:.1} MiB");
}
