//! What a running job shows of itself while it runs: the status behind the HTTP API
//! (`GET /api/v1/job`), its Prometheus metrics (`GET /metrics`) and the requests it takes
//! (`POST /api/v1/savepoint`, `POST /api/v1/stop`). One [`Live`] lives as long as `rill run`,
//! across restarts; each run of the job hands it its counters and reports checkpoints.
//!
//! Rates come from [`Live::sample`], called once a second: the difference between the last
//! two samples. Backpressure is Flink's: the share of the last second an instance waited for
//! space in a full output channel, `ok` up to 10 %, `low` up to 50 %, `high` above.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::dead_letter::DeadLetter;
use crate::metrics::{Counters, JobMetrics};
use crate::plan::JobPlan;

/// Where the job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Starting,
    Running,
    /// Failed and waiting to restart (`restart:`).
    Restarting,
    /// Taking its final checkpoint or savepoint, or draining, before it stops.
    Stopping,
    Finished,
    Failed,
}

/// A request to the running job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Take a savepoint, publish up to it and stop (as `rill savepoint`).
    Savepoint,
    /// Stop: at a final checkpoint (as Ctrl-C), or with `checkpoint: false` at once, nothing
    /// after the last complete checkpoint published (the next run resumes from it). Without
    /// `checkpoint:` in the pipeline the job drains either way.
    Stop { checkpoint: bool },
}

/// One component as the plan has it.
#[derive(Clone, Debug, Serialize)]
struct Component {
    name: String,
    #[serde(rename = "type")]
    type_name: String,
    role: &'static str,
    parallelism: u32,
    /// `(upstream component[.port], exchange)`.
    inputs: Vec<Input>,
}

#[derive(Clone, Debug, Serialize)]
struct Input {
    from: String,
    exchange: &'static str,
}

/// A checkpoint as the status lists it.
#[derive(Clone, Debug, Serialize)]
pub struct CheckpointEntry {
    pub epoch: u64,
    pub completed_ms: i64,
    pub duration_ms: u64,
    pub alignment_ms: u64,
    pub bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
struct Failure {
    epoch: u64,
    at_ms: i64,
    cause: String,
}

#[derive(Clone, Debug, Serialize)]
struct Exception {
    at_ms: i64,
    message: String,
}

/// Totals of one instance at one moment.
#[derive(Clone, Copy, Default)]
struct Totals {
    records_in: u64,
    records_out: u64,
    busy_us: u64,
    backpressured_us: u64,
}

impl Totals {
    fn of(c: &Counters) -> Totals {
        Totals {
            records_in: Counters::get(&c.records_in),
            records_out: Counters::get(&c.records_out),
            busy_us: Counters::get(&c.busy_us),
            backpressured_us: Counters::get(&c.backpressured_us),
        }
    }
}

/// Per-second rates of one instance over the last sampling interval.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
struct Rates {
    in_per_s: f64,
    out_per_s: f64,
    /// Shares of the interval (0..=1).
    busy: f64,
    backpressured: f64,
}

#[derive(Default)]
struct Inner {
    state: Option<JobState>,
    metrics: Option<JobMetrics>,
    dead_letter: Option<Arc<DeadLetter>>,
    completed: u64,
    failed: u64,
    history: VecDeque<CheckpointEntry>,
    failures: VecDeque<Failure>,
    exceptions: VecDeque<Exception>,
    restarts: u32,
    /// The last sample: when, and each instance's totals by (component, subtask).
    sample: Option<(Instant, Vec<((String, u32), Totals)>)>,
    rates: std::collections::HashMap<(String, u32), Rates>,
}

/// Entries kept of each history (checkpoints, failures, exceptions).
const KEPT: usize = 20;

/// The running job, as the HTTP API shows it.
pub struct Live {
    job: String,
    started: Instant,
    started_ms: i64,
    components: Vec<Component>,
    checkpointing: bool,
    /// Per component, the fields `redact:` keeps out (of taps too).
    redact: std::collections::HashMap<String, Vec<String>>,
    inner: Mutex<Inner>,
    requests_tx: tokio::sync::mpsc::UnboundedSender<Control>,
    requests: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Control>>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("job", &self.job).finish_non_exhaustive()
    }
}

fn now_ms() -> i64 {
    crate::time::now_millis()
}

fn push<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == KEPT {
        q.pop_front();
    }
    q.push_back(v);
}

impl Live {
    pub fn new(plan: &JobPlan) -> Arc<Live> {
        let components = plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| Component {
                name: n.name.to_string(),
                type_name: n.type_name.clone(),
                role: match n.role {
                    crate::config::Role::Source => "source",
                    crate::config::Role::Transform => "transform",
                    crate::config::Role::Sink => "sink",
                },
                parallelism: n.parallelism,
                inputs: plan
                    .edges
                    .iter()
                    .filter(|e| e.to == i)
                    .map(|e| {
                        let from = &plan.nodes[e.from];
                        Input {
                            from: if e.port == 0 { from.name.to_string() } else { format!("{}.{}", from.name, from.ports[e.port]) },
                            exchange: match e.exchange {
                                crate::exchange::Exchange::Forward => "forward",
                                crate::exchange::Exchange::Rebalance => "rebalance",
                                crate::exchange::Exchange::Hash { .. } => "hash",
                                crate::exchange::Exchange::Single => "single",
                            },
                        }
                    })
                    .collect(),
            })
            .collect();
        let (requests_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Arc::new(Live {
            job: plan.config.name.clone(),
            started: Instant::now(),
            started_ms: now_ms(),
            components,
            checkpointing: plan.config.checkpoint.is_some(),
            redact: plan.config.redacted_fields(),
            inner: Mutex::new(Inner { state: Some(JobState::Starting), ..Default::default() }),
            requests_tx,
            requests: Mutex::new(Some(rx)),
        })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("live status lock")
    }

    pub fn state(&self) -> JobState {
        self.inner().state.unwrap_or(JobState::Starting)
    }

    /// A run of the job began with these counters and this dead-letter output.
    pub fn running(&self, metrics: &JobMetrics, dead_letter: &Arc<DeadLetter>) {
        let mut i = self.inner();
        i.state = Some(JobState::Running);
        i.metrics = Some(metrics.clone());
        i.dead_letter = Some(dead_letter.clone());
        i.sample = None;
        i.rates.clear();
    }

    pub fn set_state(&self, state: JobState) {
        self.inner().state = Some(state);
    }

    /// The run failed with `message`; `restarting` when `restart:` runs it again.
    pub fn failed(&self, message: &str, restarting: bool) {
        let mut i = self.inner();
        push(&mut i.exceptions, Exception { at_ms: now_ms(), message: message.to_string() });
        if restarting {
            i.restarts += 1;
        }
        i.state = Some(if restarting { JobState::Restarting } else { JobState::Failed });
    }

    pub fn checkpoint_completed(&self, entry: CheckpointEntry) {
        let mut i = self.inner();
        i.completed += 1;
        push(&mut i.history, entry);
    }

    pub fn checkpoint_failed(&self, epoch: u64, cause: &str) {
        let mut i = self.inner();
        i.failed += 1;
        push(&mut i.failures, Failure { epoch, at_ms: now_ms(), cause: cause.to_string() });
    }

    /// Asks the running job to take `c`. `Err` when it cannot now (says why).
    pub fn request(&self, c: Control) -> Result<(), String> {
        if c == Control::Savepoint && !self.checkpointing {
            return Err("the pipeline has no `checkpoint:`; savepoints need it".into());
        }
        match self.state() {
            JobState::Running => {}
            s => return Err(format!("the job is {}", serde_json::to_value(s).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default())),
        }
        self.requests_tx.send(c).map_err(|_| "the job is not running".to_string())
    }

    /// The requests, for the run now starting (given back with [`Live::give_back`]).
    pub fn take_requests(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<Control>> {
        self.requests.lock().expect("requests lock").take()
    }

    pub fn give_back(&self, rx: tokio::sync::mpsc::UnboundedReceiver<Control>) {
        *self.requests.lock().expect("requests lock") = Some(rx);
    }

    /// Takes a sample of every instance's counters and updates the rates (call about once a
    /// second).
    pub fn sample(&self) {
        let mut i = self.inner();
        let Some(metrics) = i.metrics.clone() else { return };
        let now = Instant::now();
        let totals: Vec<((String, u32), Totals)> =
            metrics.instances.lock().expect("metrics lock").iter().map(|m| ((m.component.to_string(), m.subtask), Totals::of(&m.counters))).collect();
        if let Some((then, before)) = &i.sample {
            let dt = now.saturating_duration_since(*then).as_secs_f64().max(1e-3);
            let mut rates = std::collections::HashMap::new();
            for (id, t) in &totals {
                let Some((_, b)) = before.iter().find(|(k, _)| k == id) else { continue };
                let share = |a: u64, b: u64| (a.saturating_sub(b) as f64 / 1e6 / dt).min(1.0);
                rates.insert(
                    id.clone(),
                    Rates {
                        in_per_s: t.records_in.saturating_sub(b.records_in) as f64 / dt,
                        out_per_s: t.records_out.saturating_sub(b.records_out) as f64 / dt,
                        busy: share(t.busy_us, b.busy_us),
                        backpressured: share(t.backpressured_us, b.backpressured_us),
                    },
                );
            }
            i.rates = rates;
        }
        i.sample = Some((now, totals));
    }

    /// Starts sampling up to `limit` records as they leave `component` (`rill tap`).
    pub fn tap(self: &Arc<Self>, component: &str, limit: u64) -> Result<TapSession, String> {
        if !self.components.iter().any(|c| c.name == component) {
            let names: Vec<&str> = self.components.iter().map(|c| c.name.as_str()).collect();
            return Err(format!("the job has no component `{component}` (it has {})", names.join(", ")));
        }
        let metrics = self.inner().metrics.clone().ok_or("the job is not running")?;
        let instances: Vec<Arc<Counters>> = metrics.instances.lock().expect("metrics lock").iter().filter(|m| *m.component == *component).map(|m| m.counters.clone()).collect();
        for c in &instances {
            c.tap.want(limit);
        }
        Ok(TapSession { redact: self.redact.get(component).cloned().unwrap_or_default(), left: limit, instances })
    }

    /// `GET /api/v1/job`: the whole status.
    pub fn status(&self) -> serde_json::Value {
        let i = self.inner();
        let instances = i.metrics.as_ref().map(|m| m.instances.lock().expect("metrics lock").clone()).unwrap_or_default();
        let now = now_ms();
        let components: Vec<serde_json::Value> = self
            .components
            .iter()
            .map(|c| {
                let mine: Vec<_> = instances.iter().filter(|m| *m.component == *c.name).collect();
                let sum = |f: fn(&Counters) -> u64| mine.iter().map(|m| f(&m.counters)).sum::<u64>();
                let rates: Vec<Rates> = mine.iter().map(|m| i.rates.get(&(c.name.clone(), m.subtask)).copied().unwrap_or_default()).collect();
                let worst = rates.iter().map(|r| r.backpressured).fold(0.0, f64::max);
                let watermark = watermark_of(mine.iter().map(|m| &m.counters));
                let mut v = serde_json::to_value(c).expect("serializes");
                let o = v.as_object_mut().expect("an object");
                o.insert("records_in".into(), sum(|c| Counters::get(&c.records_in)).into());
                o.insert("records_out".into(), sum(|c| Counters::get(&c.records_out)).into());
                o.insert("rejected".into(), sum(|c| Counters::get(&c.rejected)).into());
                o.insert("batches".into(), sum(|c| Counters::get(&c.batches)).into());
                o.insert("late".into(), sum(|c| Counters::get(&c.late)).into());
                o.insert("records_in_per_s".into(), round(rates.iter().map(|r| r.in_per_s).sum()).into());
                o.insert("records_out_per_s".into(), round(rates.iter().map(|r| r.out_per_s).sum()).into());
                o.insert("backpressure".into(), level(worst).into());
                o.insert("watermark_ms".into(), watermark.into());
                if !c.inputs.is_empty() {
                    o.insert("input_watermark_ms".into(), self.input_watermark(c, &instances).into());
                }
                // Bounded sources: what their instances read of what they are to read (one
                // source's instances count in the same unit).
                let (done, total) = mine.iter().fold((0u64, 0u64), |(d, t), m| (d + Counters::get(&m.counters.progress_done), t + Counters::get(&m.counters.progress_total)));
                o.insert("progress".into(), (total > 0).then(|| round3((done as f64 / total as f64).min(1.0))).into());
                o.insert("watermark_lag_ms".into(), watermark.map(|w| now.saturating_sub(w)).into());
                let latency = latency_of(mine.iter().map(|m| &m.counters));
                if latency.count() > 0 {
                    let h = latency;
                    o.insert("latency_ms".into(), json!({"p50": h.quantile(0.5) as f64 / 1000.0, "p99": h.quantile(0.99) as f64 / 1000.0, "count": h.count()}));
                }
                let own = named(mine.iter().map(|m| &m.counters));
                if !own.is_empty() {
                    let by_name: serde_json::Map<String, serde_json::Value> = own
                        .iter()
                        .map(|(n, (h, _))| {
                            let scaled = |v: f64| v * n.scale;
                            (n.name.to_string(), json!({"count": h.count(), "mean": scaled(h.mean()), "p50": scaled(h.quantile(0.5) as f64), "p99": scaled(h.quantile(0.99) as f64)}))
                        })
                        .collect();
                    o.insert("histograms".into(), by_name.into());
                }
                o.insert(
                    "instances".into(),
                    mine.iter()
                        .zip(&rates)
                        .map(|(m, r)| {
                            json!({
                                "subtask": m.subtask,
                                "records_in": Counters::get(&m.counters.records_in),
                                "records_out": Counters::get(&m.counters.records_out),
                                "records_in_per_s": round(r.in_per_s),
                                "records_out_per_s": round(r.out_per_s),
                                "busy": round3(r.busy),
                                "backpressured": round3(r.backpressured),
                                "idle": round3((1.0 - r.busy - r.backpressured).max(0.0)),
                                "backpressure": level(r.backpressured),
                                "watermark_ms": m.counters.watermark.get().filter(|&w| w != i64::MAX),
                                "channel_fill": fill(&m.counters).map(round3),
                                "gauges": m.counters.gauges.lock().expect("metrics lock").iter().filter_map(|g| Some((g.name.to_string(), json!(g.get()?)))).collect::<serde_json::Map<_, _>>(),
                            })
                        })
                        .collect::<Vec<_>>()
                        .into(),
                );
                v
            })
            .collect();
        let dead = i.dead_letter.as_ref();
        json!({
            "job": self.job,
            "state": i.state.unwrap_or(JobState::Starting),
            "started_ms": self.started_ms,
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "restarts": i.restarts,
            "components": components,
            "checkpoints": {
                "enabled": self.checkpointing,
                "completed": i.completed,
                "failed": i.failed,
                "latest": i.history.back(),
                "history": i.history,
                "failures": i.failures,
            },
            "dead_letters": {
                "count": dead.map(|d| d.count()).unwrap_or(0),
                "output": dead.map(|d| d.description.clone()),
                "recent": dead.map(|d| d.recent()).unwrap_or_default(),
            },
            "exceptions": i.exceptions,
            "process": process(),
        })
    }

    /// `GET /metrics`: the Prometheus text format (version 0.0.4).
    pub fn prometheus(&self) -> String {
        let i = self.inner();
        let instances = i.metrics.as_ref().map(|m| m.instances.lock().expect("metrics lock").clone()).unwrap_or_default();
        let job = escape(&self.job);
        let mut out = String::new();
        let mut family = |name: &str, kind: &str, help: &str, rows: Vec<(String, f64)>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(out, "{name}{{job=\"{job}\"{labels}}} {}", number(v));
            }
        };
        let per_component = |f: &dyn Fn(&Counters) -> f64| -> Vec<(String, f64)> {
            self.components
                .iter()
                .map(|c| (format!(",component=\"{}\"", escape(&c.name)), instances.iter().filter(|m| *m.component == *c.name).map(|m| f(&m.counters)).sum()))
                .collect()
        };
        let per_instance = |f: &dyn Fn(&Counters) -> f64| -> Vec<(String, f64)> {
            instances.iter().map(|m| (format!(",component=\"{}\",instance=\"{}\"", escape(&m.component), m.subtask), f(&m.counters))).collect()
        };
        family("rill_records_in_total", "counter", "Records that entered a component.", per_component(&|c| Counters::get(&c.records_in) as f64));
        family("rill_records_out_total", "counter", "Records a component sent on.", per_component(&|c| Counters::get(&c.records_out) as f64));
        family("rill_records_rejected_total", "counter", "Records a component rejected (dead-lettered).", per_component(&|c| Counters::get(&c.rejected) as f64));
        family("rill_batches_total", "counter", "Batches a component handled.", per_component(&|c| Counters::get(&c.batches) as f64));
        family("rill_busy_seconds_total", "counter", "Time an instance spent handling input or polling its source.", per_instance(&|c| Counters::get(&c.busy_us) as f64 / 1e6));
        let up = self.started.elapsed().as_secs_f64();
        family(
            "rill_idle_seconds_total",
            "counter",
            "Time an instance was neither busy nor backpressured since the job started (waiting for input).",
            per_instance(&|c| (up - (Counters::get(&c.busy_us) + Counters::get(&c.backpressured_us)) as f64 / 1e6).max(0.0)),
        );
        family(
            "rill_backpressured_seconds_total",
            "counter",
            "Time an instance waited for space in a full output channel.",
            per_instance(&|c| Counters::get(&c.backpressured_us) as f64 / 1e6),
        );
        family(
            "rill_late_records_total",
            "counter",
            "Records that came after the watermark had closed their window or interval (sent to the `late` output).",
            per_component(&|c| Counters::get(&c.late) as f64),
        );
        family(
            "rill_channel_fill_ratio",
            "gauge",
            "How full an instance's output channels were after its last send: messages queued over their room.",
            instances.iter().filter_map(|m| Some((format!(",component=\"{}\",instance=\"{}\"", escape(&m.component), m.subtask), fill(&m.counters)?))).collect(),
        );
        let now = now_ms();
        let marks: Vec<(String, Option<i64>)> = self
            .components
            .iter()
            .map(|c| (format!(",component=\"{}\"", escape(&c.name)), watermark_of(instances.iter().filter(|m| *m.component == *c.name).map(|m| &m.counters))))
            .collect();
        family(
            "rill_watermark_seconds",
            "gauge",
            "A component's current watermark (the lowest of its instances'), in seconds since the epoch.",
            marks.iter().filter_map(|(l, w)| Some((l.clone(), (*w)? as f64 / 1e3))).collect(),
        );
        let input_marks: Vec<(String, Option<i64>)> = self
            .components
            .iter()
            .filter(|c| !c.inputs.is_empty())
            .map(|c| (format!(",component=\"{}\"", escape(&c.name)), self.input_watermark(c, &instances)))
            .collect();
        family(
            "rill_input_watermark_seconds",
            "gauge",
            "The watermark coming into a component: the lowest of its inputs' watermarks, in seconds since the epoch.",
            input_marks.iter().filter_map(|(l, w)| Some((l.clone(), (*w)? as f64 / 1e3))).collect(),
        );
        family(
            "rill_watermark_lag_seconds",
            "gauge",
            "How far a component's watermark is behind the wall clock.",
            marks.iter().filter_map(|(l, w)| Some((l.clone(), now.saturating_sub((*w)?) as f64 / 1e3))).collect(),
        );
        let dead = i.dead_letter.as_ref().map(|d| d.count()).unwrap_or(0);
        family("rill_dead_letters_total", "counter", "Records written to the dead-letter output.", vec![(String::new(), dead as f64)]);
        family("rill_checkpoints_completed_total", "counter", "Checkpoints completed.", vec![(String::new(), i.completed as f64)]);
        family("rill_checkpoints_failed_total", "counter", "Checkpoints that failed (not written, or past their timeout).", vec![(String::new(), i.failed as f64)]);
        if let Some(last) = i.history.back() {
            family("rill_checkpoint_duration_seconds", "gauge", "How long the last complete checkpoint took.", vec![(String::new(), last.duration_ms as f64 / 1e3)]);
            family("rill_checkpoint_alignment_seconds", "gauge", "The longest an instance held an input for the last checkpoint's barrier.", vec![(String::new(), last.alignment_ms as f64 / 1e3)]);
            family("rill_checkpoint_size_bytes", "gauge", "The last complete checkpoint's size.", vec![(String::new(), last.bytes as f64)]);
        }
        family("rill_restarts_total", "counter", "Restarts after a failure (`restart:`).", vec![(String::new(), i.restarts as f64)]);
        family("rill_uptime_seconds", "gauge", "Time since `rill run` started.", vec![(String::new(), self.started.elapsed().as_secs_f64())]);
        // Source-to-sink latency at each sink, as a histogram.
        const BOUNDS_US: [u64; 12] = [100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000, 60_000_000];
        let _ = writeln!(out, "# HELP rill_latency_seconds Source-to-sink latency of the records a sink received.\n# TYPE rill_latency_seconds histogram");
        for c in self.components.iter().filter(|c| c.role == "sink") {
            let h = latency_of(instances.iter().filter(|m| *m.component == *c.name).map(|m| &m.counters));
            let labels = format!("job=\"{job}\",component=\"{}\"", escape(&c.name));
            for (b, n) in BOUNDS_US.iter().zip(h.at_most(&BOUNDS_US)) {
                let _ = writeln!(out, "rill_latency_seconds_bucket{{{labels},le=\"{}\"}} {n}", number(*b as f64 / 1e6));
            }
            let _ = writeln!(out, "rill_latency_seconds_bucket{{{labels},le=\"+Inf\"}} {}", h.count());
            let _ = writeln!(out, "rill_latency_seconds_sum{{{labels}}} {}", number(h.sum() as f64 / 1e6));
            let _ = writeln!(out, "rill_latency_seconds_count{{{labels}}} {}", h.count());
        }
        // Histograms operators keep of themselves (an `infer`'s batch sizes and latencies).
        let mut families: Vec<(Arc<crate::metrics::NamedHistogram>, Vec<(String, (crate::metrics::Histogram, Vec<u64>))>)> = Vec::new();
        for c in &self.components {
            for (n, h) in named(instances.iter().filter(|m| *m.component == *c.name).map(|m| &m.counters)) {
                let series = (c.name.clone(), h);
                match families.iter_mut().find(|(f, _)| f.name == n.name) {
                    Some((_, all)) => all.push(series),
                    None => families.push((n, vec![series])),
                }
            }
        }
        for (n, all) in &families {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} histogram", n.name, n.help, n.name);
            for (component, (h, at_most)) in all {
                let labels = format!("job=\"{job}\",component=\"{}\"", escape(component));
                for (b, count) in n.bounds.iter().zip(at_most) {
                    let _ = writeln!(out, "{}_bucket{{{labels},le=\"{}\"}} {count}", n.name, number(*b as f64 * n.scale));
                }
                let _ = writeln!(out, "{}_bucket{{{labels},le=\"+Inf\"}} {}", n.name, h.count());
                let _ = writeln!(out, "{}_sum{{{labels}}} {}", n.name, number(h.sum() as f64 * n.scale));
                let _ = writeln!(out, "{}_count{{{labels}}} {}", n.name, h.count());
            }
        }
        // Gauges sources keep of themselves (a Kafka source's lag), per instance.
        let mut gauges: Vec<(Arc<crate::metrics::NamedGauge>, Vec<(String, f64)>)> = Vec::new();
        for m in &instances {
            for g in m.counters.gauges.lock().expect("metrics lock").iter() {
                let Some(v) = g.get() else { continue };
                let row = (format!("job=\"{job}\",component=\"{}\",instance=\"{}\"", escape(&m.component), m.subtask), v);
                match gauges.iter_mut().find(|(f, _)| f.name == g.name) {
                    Some((_, rows)) => rows.push(row),
                    None => gauges.push((g.clone(), vec![row])),
                }
            }
        }
        for (g, rows) in &gauges {
            let _ = writeln!(out, "# HELP {} {}\n# TYPE {} gauge", g.name, g.help, g.name);
            for (labels, v) in rows {
                let _ = writeln!(out, "{}{{{labels}}} {}", g.name, number(*v));
            }
        }
        let p = process();
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(out, "process_resident_memory_bytes {}", p["rss_bytes"].as_u64().unwrap_or(0));
        let _ = writeln!(out, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter");
        let _ = writeln!(out, "process_cpu_seconds_total {}", number(p["cpu_seconds"].as_f64().unwrap_or(0.0)));
        out
    }
}

/// A tap in progress: records sampled from a component's instances, until `limit` came or it is
/// dropped (which stops the sampling).
pub struct TapSession {
    redact: Vec<String>,
    left: u64,
    instances: Vec<Arc<Counters>>,
}

impl TapSession {
    /// The records taken since the last call, as JSON (with `redact:` applied).
    pub fn poll(&mut self) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for c in &self.instances {
            for r in c.tap.take() {
                if self.left == 0 {
                    break;
                }
                self.left -= 1;
                let mut v = serde_json::to_value(&r).unwrap_or_default();
                for field in &self.redact {
                    if let Some(x) = v.get_mut(field.as_str()).filter(|x| !x.is_null()) {
                        *x = crate::dead_letter::REDACTED.into();
                    }
                }
                out.push(v);
            }
        }
        if self.left == 0 {
            self.instances.iter().for_each(|c| c.tap.want(0));
        }
        out
    }

    /// Whether every record asked for came.
    pub fn done(&self) -> bool {
        self.left == 0
    }
}

impl Drop for TapSession {
    fn drop(&mut self) {
        self.instances.iter().for_each(|c| c.tap.want(0));
    }
}

/// The source-to-sink latency of some (sink) instances, merged.
fn latency_of<'a>(counters: impl Iterator<Item = &'a Arc<Counters>>) -> crate::metrics::Histogram {
    let mut h = crate::metrics::Histogram::default();
    for c in counters {
        h.merge(&c.latency.lock().expect("latency lock"));
    }
    h
}

/// The histograms some instances keep of themselves, merged by name (each with its first
/// instance's description): the quantile histogram and the exact counts at each bound.
fn named<'a>(counters: impl Iterator<Item = &'a Arc<Counters>>) -> Vec<(Arc<crate::metrics::NamedHistogram>, (crate::metrics::Histogram, Vec<u64>))> {
    let mut out: Vec<(Arc<crate::metrics::NamedHistogram>, (crate::metrics::Histogram, Vec<u64>))> = Vec::new();
    for c in counters {
        for h in c.histograms.lock().expect("metrics lock").iter() {
            let values = h.values.lock().expect("histogram lock");
            match out.iter_mut().find(|(n, _)| n.name == h.name) {
                Some((_, (all, at_most))) => {
                    all.merge(&values.0);
                    at_most.iter_mut().zip(&values.1).for_each(|(a, b)| *a += b);
                }
                None => out.push((h.clone(), values.clone())),
            }
        }
    }
    out
}

/// The lowest watermark of some instances (`None` if one has none yet; finished instances,
/// at the end of time, do not count unless all are).
fn watermark_of<'a>(counters: impl Iterator<Item = &'a Arc<Counters>>) -> Option<i64> {
    let marks: Vec<Option<i64>> = counters.map(|c| c.watermark.get()).collect();
    if marks.is_empty() || marks.iter().any(Option::is_none) {
        return None;
    }
    let live: Vec<i64> = marks.into_iter().flatten().filter(|&w| w != i64::MAX).collect();
    live.into_iter().min()
}

impl Live {
    /// The lowest watermark of a component's inputs (none until each has one).
    fn input_watermark(&self, c: &Component, instances: &[crate::metrics::InstanceMetrics]) -> Option<i64> {
        let mut lowest = i64::MAX;
        for input in &c.inputs {
            let from = input.from.split('.').next().unwrap_or_default();
            lowest = lowest.min(watermark_of(instances.iter().filter(|m| *m.component == *from).map(|m| &m.counters))?);
        }
        (lowest != i64::MAX).then_some(lowest)
    }
}

/// Flink's backpressure levels.
fn level(backpressured: f64) -> &'static str {
    if backpressured <= 0.10 {
        "ok"
    } else if backpressured <= 0.50 {
        "low"
    } else {
        "high"
    }
}

fn round(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// A number as Prometheus writes it (no exponent for integers).
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// A label value, escaped as the text format asks.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// This process's resident memory and CPU time (from `/proc/self`).
/// How full an instance's output channels were after its last send (none without outputs).
fn fill(c: &Counters) -> Option<f64> {
    let (queued, room) = (Counters::get(&c.out_queued), Counters::get(&c.out_capacity));
    (room > 0).then(|| (queued as f64 / room as f64).min(1.0))
}

fn process() -> serde_json::Value {
    let page = 4096u64;
    let rss = std::fs::read_to_string("/proc/self/statm").ok().and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok()).map(|p| p * page);
    // Fields 14 and 15 of /proc/self/stat (after the command in parentheses): user and system
    // time in clock ticks (100 a second on Linux).
    let cpu = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| {
        let rest = &s[s.rfind(')')? + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        Some((f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?) as f64 / 100.0)
    });
    json!({"rss_bytes": rss, "cpu_seconds": cpu})
}

/// How long [`Live::sample`] waits between samples.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_numbers_follow_flink_and_prometheus() {
        assert_eq!((level(0.0), level(0.10), level(0.11), level(0.5), level(0.51)), ("ok", "ok", "low", "low", "high"));
        assert_eq!((number(3.0), number(0.25)), ("3".to_string(), "0.25".to_string()));
        assert_eq!(escape("a\"b\\c"), "a\\\"b\\\\c");
    }

    #[test]
    fn a_watermark_is_the_lowest_of_the_instances_still_running() {
        let c = |w: Option<i64>| {
            let c = Arc::new(Counters::default());
            if let Some(w) = w {
                c.watermark.set(w);
            }
            c
        };
        let (a, b, done, none) = (c(Some(10)), c(Some(7)), c(Some(i64::MAX)), c(None));
        assert_eq!(watermark_of([&a, &b, &done].into_iter()), Some(7));
        assert_eq!(watermark_of([&a, &none].into_iter()), None, "one without a watermark holds it back");
        assert_eq!(watermark_of([&done].into_iter()), None);
    }
}
