//! Per-instance counters, updated once per batch (relaxed atomics) and read by the progress line
//! and the summary printed at the end of a run.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Default, Debug)]
pub struct Counters {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub rejected: AtomicU64,
    pub batches: AtomicU64,
    /// Bounded sources: how far they are (bytes or records) and of how much.
    pub progress_done: AtomicU64,
    pub progress_total: AtomicU64,
    /// The operator's own line for the summary ([`crate::operator::Operator::report`]), set
    /// when the instance finishes.
    pub report: Mutex<Option<String>>,
    /// Sinks: source-to-sink latency of the records they received.
    pub latency: Mutex<Histogram>,
    /// Time spent handling input (operators) or polling (sources), in microseconds.
    pub busy_us: AtomicU64,
    /// Time spent waiting for space in a full output channel (backpressure), in microseconds.
    pub backpressured_us: AtomicU64,
    /// The instance's current watermark (epoch ms; `i64::MIN` before the first).
    pub watermark: Watermark,
    /// Records sampled as they leave the instance, while `rill tap` asks for them.
    pub tap: Tap,
    /// Histograms the operator keeps of itself ([`crate::operator::OperatorContext::histogram`]).
    pub histograms: Mutex<Vec<Arc<NamedHistogram>>>,
    /// Gauges a source keeps of itself ([`crate::source::SourceContext::gauge`]: Kafka's lag).
    pub gauges: Mutex<Vec<Arc<NamedGauge>>>,
    /// Records sent to the `late` side output (windows, joins), read or not.
    pub late: AtomicU64,
    /// The instance's output channels after its last send: messages queued, and room in all.
    pub out_queued: AtomicU64,
    pub out_capacity: AtomicU64,
}

/// A gauge a source keeps of itself, shown by the HTTP API as a Prometheus gauge per instance.
#[derive(Debug)]
pub struct NamedGauge {
    /// The Prometheus name (`rill_…`, in base units).
    pub name: &'static str,
    pub help: &'static str,
    value: AtomicU64,
}

impl NamedGauge {
    pub fn new(name: &'static str, help: &'static str) -> NamedGauge {
        NamedGauge { name, help, value: AtomicU64::new(f64::NAN.to_bits()) }
    }

    pub fn set(&self, v: f64) {
        self.value.store(v.to_bits(), Relaxed);
    }

    /// `None` until set.
    pub fn get(&self) -> Option<f64> {
        Some(f64::from_bits(self.value.load(Relaxed))).filter(|v| !v.is_nan())
    }
}

/// A histogram an operator keeps of itself (an `infer`'s batch sizes and latencies), shown by
/// the HTTP API as a Prometheus histogram per component.
#[derive(Debug)]
pub struct NamedHistogram {
    /// The Prometheus name (`rill_…`, in base units).
    pub name: &'static str,
    pub help: &'static str,
    /// What a recorded value is in the metric's unit (1e-6 for microseconds as seconds).
    pub scale: f64,
    /// The buckets' upper bounds, in recorded values, ascending.
    pub bounds: Vec<u64>,
    /// For quantiles; and, exactly, how many values were at most each bound.
    pub values: Mutex<(Histogram, Vec<u64>)>,
}

impl NamedHistogram {
    pub fn new(name: &'static str, help: &'static str, scale: f64, bounds: Vec<u64>) -> NamedHistogram {
        let n = bounds.len();
        NamedHistogram { name, help, scale, bounds, values: Mutex::new((Histogram::default(), vec![0; n])) }
    }

    pub fn record(&self, v: u64) {
        let mut values = self.values.lock().expect("histogram lock");
        values.0.record(v);
        let first = self.bounds.partition_point(|&b| b < v);
        values.1[first..].iter_mut().for_each(|c| *c += 1);
    }
}

/// Records sampled as they leave an instance (what a sink receives, for sinks): while some
/// are wanted, at most one of each batch is copied, so a tap costs the job its copies only.
#[derive(Default, Debug)]
pub struct Tap {
    wanted: AtomicU64,
    taken: Mutex<Vec<crate::record::Record>>,
}

impl Tap {
    /// Whether records are wanted (one relaxed load: what every batch pays).
    #[inline]
    pub fn wanted(&self) -> bool {
        self.wanted.load(Relaxed) > 0
    }

    /// Takes a record of `pieces` (the first), if one is still wanted.
    pub fn offer(&self, pieces: &[crate::record::Data]) {
        let Some(piece) = pieces.iter().find(|p| !p.is_empty()) else { return };
        if self.wanted.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_err() {
            return;
        }
        let record = match piece {
            crate::record::Data::Rows(r) => r[0].clone(),
            crate::record::Data::Columns(c) => c.row(0),
        };
        self.taken.lock().expect("tap lock").push(record);
    }

    /// Wants `n` records from now on (0: none).
    pub fn want(&self, n: u64) {
        self.wanted.store(n, Relaxed);
    }

    /// The records taken since the last call.
    pub fn take(&self) -> Vec<crate::record::Record> {
        std::mem::take(&mut *self.taken.lock().expect("tap lock"))
    }
}

/// A watermark readable from other threads: `i64::MIN` until one is set.
#[derive(Debug)]
pub struct Watermark(AtomicI64);

impl Default for Watermark {
    fn default() -> Self {
        Watermark(AtomicI64::new(i64::MIN))
    }
}

impl Watermark {
    pub fn set(&self, wm: i64) {
        self.0.store(wm, Relaxed);
    }
    /// `None` before the first watermark.
    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(Relaxed)).filter(|&w| w != i64::MIN)
    }
}

impl Counters {
    /// Notes the output channels' fill after a send (`Outputs::fill`).
    pub(crate) fn set_fill(&self, (queued, capacity): (u64, u64)) {
        self.out_queued.store(queued, Relaxed);
        self.out_capacity.store(capacity, Relaxed);
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// Counters of one operator instance.
#[derive(Debug, Clone)]
pub struct InstanceMetrics {
    pub component: Arc<str>,
    pub type_name: Arc<str>,
    pub subtask: u32,
    pub counters: Arc<Counters>,
}

/// All counters of a job.
#[derive(Debug, Default, Clone)]
pub struct JobMetrics {
    pub instances: Arc<Mutex<Vec<InstanceMetrics>>>,
}

/// Totals of one component over its instances.
#[derive(Debug, Clone, Default)]
pub struct ComponentSummary {
    pub component: String,
    pub type_name: String,
    pub instances: u32,
    pub records_in: u64,
    pub records_out: u64,
    pub rejected: u64,
    pub batches: u64,
    /// Lines from the instances ([`Counters::report`]), as `#subtask: line`.
    pub reports: Vec<String>,
    /// Sinks: source-to-sink latency over every instance.
    pub latency: Option<Histogram>,
}

impl JobMetrics {
    pub fn register(&self, component: &Arc<str>, type_name: &str, subtask: u32) -> Arc<Counters> {
        let counters = Arc::new(Counters::default());
        self.instances.lock().expect("metrics lock").push(InstanceMetrics {
            component: component.clone(),
            type_name: type_name.into(),
            subtask,
            counters: counters.clone(),
        });
        counters
    }

    /// Per-component totals, in registration order.
    pub fn summary(&self) -> Vec<ComponentSummary> {
        let mut out: Vec<ComponentSummary> = Vec::new();
        for i in self.instances.lock().expect("metrics lock").iter() {
            let pos = match out.iter().position(|s| *s.component == *i.component) {
                Some(p) => p,
                None => {
                    out.push(ComponentSummary {
                        component: i.component.to_string(),
                        type_name: i.type_name.to_string(),
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            let s = &mut out[pos];
            s.instances += 1;
            s.records_in += Counters::get(&i.counters.records_in);
            s.records_out += Counters::get(&i.counters.records_out);
            s.rejected += Counters::get(&i.counters.rejected);
            s.batches += Counters::get(&i.counters.batches);
            if let Some(r) = i.counters.report.lock().expect("report lock").as_ref() {
                s.reports.push(format!("#{}: {r}", i.subtask));
            }
            let latency = i.counters.latency.lock().expect("latency lock");
            if latency.count() > 0 {
                s.latency.get_or_insert_with(Histogram::default).merge(&latency);
            }
        }
        out
    }

    /// (done, total) over every bounded source that reports progress.
    /// How far the bounded source instances are, as (done, total) of one scale: the mean of
    /// each instance's share (sources count in their own units: bytes for files, events for the
    /// generator), so that one source's units do not outweigh another's.
    pub fn progress(&self) -> (u64, u64) {
        const SCALE: u64 = 1_000_000;
        let (mut done, mut total) = (0, 0);
        for i in self.instances.lock().expect("metrics lock").iter() {
            let t = Counters::get(&i.counters.progress_total);
            if t > 0 {
                done += (Counters::get(&i.counters.progress_done).min(t) as u128 * SCALE as u128 / t as u128) as u64;
                total += SCALE;
            }
        }
        (done, total)
    }
}

/// A histogram of durations in microseconds, log-linear (8 buckets per power of two: values
/// within 12.5 %), for latency percentiles without keeping samples.
#[derive(Clone, Debug)]
pub struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { buckets: vec![0; 16 + 60 * 8], count: 0, sum: 0, max: 0 }
    }
}

impl Histogram {
    fn bucket(v: u64) -> usize {
        if v < 16 {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as usize; // >= 4
        16 + (e - 4) * 8 + ((v >> (e - 3)) & 7) as usize
    }

    /// The smallest value of bucket `b`.
    fn low(b: usize) -> u64 {
        if b < 16 {
            return b as u64;
        }
        let (e, sub) = ((b - 16) / 8 + 4, (b - 16) % 8);
        (8 + sub as u64) << (e - 3)
    }

    pub fn record(&mut self, micros: u64) {
        self.record_n(micros, 1)
    }

    pub fn record_n(&mut self, micros: u64, n: u64) {
        self.buckets[Self::bucket(micros)] += n;
        self.count += n;
        self.sum += micros * n;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the values (microseconds).
    pub fn sum(&self) -> u64 {
        self.sum
    }

    /// How many values were at most each bound (microseconds, ascending), for Prometheus'
    /// cumulative `le` buckets: a bucket counts once all of it is at most the bound, so a count
    /// is low by at most the one bucket (12.5 %) that straddles it.
    pub fn at_most(&self, bounds: &[u64]) -> Vec<u64> {
        let mut out = Vec::with_capacity(bounds.len());
        let (mut b, mut seen) = (0, 0);
        for &bound in bounds {
            while b < self.buckets.len() && Self::low(b + 1) <= bound.saturating_add(1) {
                seen += self.buckets[b];
                b += 1;
            }
            out.push(seen);
        }
        out
    }

    pub fn mean(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.sum as f64 / self.count as f64 }
    }

    /// The value at quantile `q` (0..=1): the middle of its bucket, never above the maximum.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        if rank == self.count {
            return self.max;
        }
        let mut seen = 0;
        for (b, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (lo, hi) = (Self::low(b), Self::low(b + 1));
                return ((lo + hi.saturating_sub(1)) / 2).min(self.max);
            }
        }
        self.max
    }

    /// `p50 1.20 ms, p99 3.40 ms, max 5.00 ms`.
    pub fn describe(&self) -> String {
        let ms = |us: u64| us as f64 / 1000.0;
        format!("p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", ms(self.quantile(0.5)), ms(self.quantile(0.99)), ms(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::Histogram;

    #[test]
    fn progress_is_the_mean_share_of_the_bounded_instances_whatever_their_units() {
        use std::sync::atomic::Ordering::Relaxed;
        let m = super::JobMetrics::default();
        let (file, generator, unbounded) = (m.register(&"f".into(), "file", 0), m.register(&"g".into(), "generator", 0), m.register(&"k".into(), "kafka", 0));
        // Half of 10 MB read; a quarter of 4 events; an unbounded source reports nothing.
        file.progress_done.store(5_000_000, Relaxed);
        file.progress_total.store(10_000_000, Relaxed);
        generator.progress_done.store(1, Relaxed);
        generator.progress_total.store(4, Relaxed);
        let _ = unbounded;
        let (done, total) = m.progress();
        assert_eq!(done as f64 / total as f64, 0.375);
    }

    #[test]
    fn cumulative_counts_take_whole_buckets_up_to_each_bound() {
        let mut h = Histogram::default();
        [3, 10, 15, 100, 1_000, 1_000_000].into_iter().for_each(|v| h.record(v));
        assert_eq!(h.at_most(&[0, 10, 15, 1_000, 1_023, 5_000_000]), [0, 2, 3, 4, 5, 6], "1000 lies in [960, 1024): counted from 1023 on");
        assert_eq!(h.sum(), 1_001_128);
    }

    #[test]
    fn a_named_histogram_counts_each_bound_exactly() {
        let h = super::NamedHistogram::new("rill_x", "x", 1.0, vec![1, 16, 64, 128]);
        [1, 2, 64, 64, 65, 500].into_iter().for_each(|v| h.record(v));
        let values = h.values.lock().unwrap();
        assert_eq!(values.1, [1, 2, 4, 5], "64 is at most 64, whatever bucket of the quantile histogram it is in");
        assert_eq!(values.0.count(), 6);
    }

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        for v in 1..=10_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 5000.0), (0.99, 9900.0), (0.01, 100.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.07, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), 10_000);
        for v in [0u64, 1, 15, 16, 17, 1 << 20, u64::MAX >> 2] {
            let b = Histogram::bucket(v);
            assert!(Histogram::low(b) <= v && v < Histogram::low(b + 1), "{v}");
        }
    }
}
