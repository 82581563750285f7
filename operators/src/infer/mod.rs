//! `infer`: TorchScript model inference with a pool of LibTorch workers and dynamic batching.
//!
//! Records are gathered until `batch.max_size` records or `batch.max_delay` since the first,
//! whichever comes first; a watermark, a checkpoint barrier or the end of input sends the
//! partial batch at once. Each batch goes to the next free worker (a synchronous actor with
//! its own copy of the model, see [`worker`]); the operator hands the batch's result to the
//! runtime as deferred output ([`Collector::defer`]), so records leave in the order they came,
//! before any later watermark or barrier. Nothing is in flight at a checkpoint's barrier: the
//! pending batch is sent before it, and its results are emitted before the barrier is forwarded.

mod torch;
mod worker;

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use rill_engine::config::de::duration;
use rill_engine::config::{ConfigError, ConfigErrors, Ordered, Spanned};
use rill_engine::message::{Epoch, Watermark};
use rill_engine::metrics::Histogram;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError};
use rill_engine::record::Record;
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::state::{TimeDomain, Timer};
use rill_engine::value::{Sym, Value};

use worker::{BatchInput, InputData, Ready, Run, Worker, WorkerSpec};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InferConfig {
    /// TorchScript file (`torch.jit.script(model).save(path)` or `torch.jit.trace`).
    model: Spanned<String>,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when available, else CPU). Default `auto`.
    device: Option<Spanned<String>>,
    /// Worker threads per instance, each with its own copy of the model. Default 1.
    workers: Option<usize>,
    /// LibTorch intra-op threads per worker. Default: cores / workers (at least 1) on CPU, 1 on CUDA.
    threads: Option<usize>,
    #[serde(default)]
    batch: BatchConfig,
    /// The model's input(s): one `{field, shape, ...}` or a list of them (in the order of the
    /// model's `forward` arguments).
    input: Inputs,
    /// `field: argmax | max_softmax | softmax | logits` from the model's output `[N, classes]`.
    outputs: Ordered<Spanned<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchConfig {
    #[serde(default = "default_max_size")]
    max_size: usize,
    #[serde(default = "default_max_delay", with = "duration")]
    max_delay: Duration,
}

fn default_max_size() -> usize {
    32
}
fn default_max_delay() -> Duration {
    Duration::from_millis(5)
}
impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_size: default_max_size(), max_delay: default_max_delay() }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Inputs {
    One(InputConfig),
    Many(Vec<InputConfig>),
}

#[derive(serde::Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct InputConfig {
    /// The record field: a list of numbers (or one number for shape `[]`/`[1]`).
    field: String,
    /// Shape of one record's tensor, without the batch dimension.
    shape: Vec<i64>,
    /// `f32` (default) or `i64`.
    dtype: Option<String>,
    /// Values are multiplied by `scale` then `offset` is added (f32 only).
    scale: Option<f64>,
    offset: Option<f64>,
}

/// One model input, checked.
#[derive(Clone, Debug)]
struct Input {
    field: Sym,
    shape: Vec<i64>,
    len: usize,
    int: bool,
    scale: f32,
    offset: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum OutputKind {
    Argmax,
    MaxSoftmax,
    Softmax,
    Logits,
}

impl OutputKind {
    fn parse(s: &str) -> Option<OutputKind> {
        Some(match s {
            "argmax" | "class" => OutputKind::Argmax,
            "max_softmax" | "confidence" => OutputKind::MaxSoftmax,
            "softmax" | "probabilities" => OutputKind::Softmax,
            "logits" | "raw" => OutputKind::Logits,
            _ => return None,
        })
    }
}

/// Everything an instance needs, shared by the instances of the component.
#[derive(Debug)]
struct Settings {
    model: PathBuf,
    device: String,
    workers: usize,
    threads: Option<usize>,
    max_size: usize,
    max_delay: Duration,
    inputs: Vec<Input>,
    outputs: Vec<(Sym, OutputKind)>,
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: InferConfig = ctx.options()?;
    let mut errors = Vec::new();
    let span = &ctx.options.span;
    let model = ctx.pipeline.resolve(&cfg.model.value);
    if !model.is_file() {
        errors.push(
            ConfigError::new(Some(&cfg.model.span), format!("model file `{}` not found", cfg.model.value))
                .hint("a relative path is taken from the pipeline file's folder; `bash scripts/setup.sh` trains models/mnist_cnn.pt"),
        );
    }
    let device = cfg.device.as_ref().map(|d| d.value.trim().to_string()).unwrap_or_else(|| "auto".into());
    let known = matches!(device.as_str(), "cpu" | "auto" | "cuda" | "gpu") || device.strip_prefix("cuda:").is_some_and(|i| i.parse::<usize>().is_ok());
    if !known {
        let at = cfg.device.as_ref().map(|d| &d.span).unwrap_or(span);
        errors.push(ConfigError::new(Some(at), format!("unknown device `{device}`")).hint("devices: cpu, cuda, cuda:N, auto"));
    }
    let workers = cfg.workers.unwrap_or(1);
    if !(1..=64).contains(&workers) {
        errors.push(ConfigError::new(Some(span), format!("`workers` must be 1 to 64, got {workers}")));
    }
    if cfg.batch.max_size == 0 {
        errors.push(ConfigError::new(Some(span), "`batch.max_size` must be at least 1"));
    }
    let configs = match cfg.input {
        Inputs::One(i) => vec![i],
        Inputs::Many(v) => v,
    };
    if configs.is_empty() {
        errors.push(ConfigError::new(Some(span), "`input` needs at least one `{field, shape}`"));
    }
    let mut inputs = Vec::new();
    for c in configs {
        let int = match c.dtype.as_deref().unwrap_or("f32") {
            "f32" | "float32" | "float" => false,
            "i64" | "int64" | "long" => true,
            other => {
                errors.push(ConfigError::new(Some(span), format!("input `{}`: unknown dtype `{other}`", c.field)).hint("dtypes: f32, i64"));
                false
            }
        };
        if c.shape.iter().any(|&d| d < 1) {
            errors.push(ConfigError::new(Some(span), format!("input `{}`: shape {:?} has a dimension below 1", c.field, c.shape)));
            continue;
        }
        if int && (c.scale.is_some() || c.offset.is_some()) {
            errors.push(ConfigError::new(Some(span), format!("input `{}`: `scale` and `offset` apply to f32 inputs only", c.field)));
        }
        let len = c.shape.iter().product::<i64>() as usize;
        inputs.push(Input {
            field: Sym::new(&c.field),
            shape: c.shape,
            len,
            int,
            scale: c.scale.unwrap_or(1.0) as f32,
            offset: c.offset.unwrap_or(0.0) as f32,
        });
    }
    let mut outputs = Vec::new();
    for (name, kind) in &cfg.outputs.0 {
        match OutputKind::parse(kind.value.trim()) {
            Some(k) => outputs.push((Sym::new(name), k)),
            None => errors.push(
                ConfigError::new(Some(&kind.span), format!("output `{name}`: unknown output `{}`", kind.value))
                    .hint("outputs: argmax (class id), max_softmax (its probability), softmax (all probabilities), logits (the raw output)"),
            ),
        }
    }
    if outputs.is_empty() && errors.is_empty() {
        errors.push(ConfigError::new(Some(span), "`infer` needs at least one entry under `outputs`").hint("e.g. `outputs: {prediction: argmax}`"));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let settings = Arc::new(Settings {
        model,
        device,
        workers,
        threads: cfg.threads,
        max_size: cfg.batch.max_size,
        max_delay: cfg.batch.max_delay,
        inputs,
        outputs,
    });
    let description = format!(
        "{} on {} ({} worker(s), batches of up to {} within {:?}) -> {}",
        settings.model.display(),
        settings.device,
        settings.workers,
        settings.max_size,
        settings.max_delay,
        settings.outputs.iter().map(|(n, k)| format!("{n} = {k:?}")).collect::<Vec<_>>().join(", ")
    );
    Ok(TransformSpec::new(description, move |_| Ok(Infer::new(settings.clone()))))
}

/// Batches and timings of one instance.
#[derive(Default)]
struct Stats {
    batches: u64,
    records: u64,
    /// Batches by size: bucket `i` counts sizes in `2^i .. 2^(i+1)`.
    sizes: [u64; 16],
    /// From a batch's first record arriving to a worker starting on it.
    queue: Histogram,
    /// The model's time per batch (tensor in, forward, tensor out).
    inference: Histogram,
    /// The same three, for the HTTP API's `/metrics` (registered at `open`).
    exported: Option<Exported>,
}

/// `rill_infer_batch_size`, `rill_infer_queue_seconds`, `rill_infer_seconds`.
struct Exported {
    sizes: Arc<rill_engine::metrics::NamedHistogram>,
    queue: Arc<rill_engine::metrics::NamedHistogram>,
    inference: Arc<rill_engine::metrics::NamedHistogram>,
}

pub struct Infer {
    settings: Arc<Settings>,
    pool: Option<Addr<Worker>>,
    /// Records gathered for the next batch, and when the first came.
    pending: Vec<Record>,
    pending_since: Option<Instant>,
    timer_at: Option<i64>,
    stats: Rc<RefCell<Stats>>,
    device: String,
    threads: usize,
}

impl Infer {
    fn new(settings: Arc<Settings>) -> Infer {
        Infer {
            settings,
            pool: None,
            pending: Vec::new(),
            pending_since: None,
            timer_at: None,
            stats: Rc::default(),
            device: String::new(),
            threads: 1,
        }
    }

    /// Why the record cannot be a model input (it goes to the dead-letter output).
    fn check(&self, r: &Record) -> Result<(), String> {
        for input in &self.settings.inputs {
            let n = match r.get(input.field) {
                None | Some(Value::Null) => return Err(format!("field `{}` is missing (it is the model's input)", input.field)),
                Some(Value::Floats(_)) if input.int => return Err(format!("field `{}` holds floats; the model input is declared `dtype: i64`", input.field)),
                Some(Value::Floats(v)) => v.len(),
                Some(Value::List(l)) => {
                    if let Some((i, bad)) = l.iter().enumerate().find(|(_, v)| if input.int { !matches!(v, Value::Int(_)) } else { v.as_f64().is_none() }) {
                        return Err(format!("field `{}`: element {i} is {} ({}), not a{}", input.field, bad, bad.type_name(), if input.int { "n int" } else { " number" }));
                    }
                    l.len()
                }
                Some(Value::Int(_)) => 1,
                Some(Value::Float(_)) if !input.int => 1,
                Some(other) => return Err(format!("field `{}` is a {}; the model input needs numbers", input.field, other.type_name())),
            };
            if n != input.len {
                return Err(format!(
                    "field `{}` has {n} value(s); the model input needs {} (shape {:?})",
                    input.field, input.len, input.shape
                ));
            }
        }
        Ok(())
    }

    /// Sends the pending records to the pool as one batch.
    fn dispatch(&mut self, out: &mut Collector) -> Result<(), OperatorError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.pending);
        let since = self.pending_since.take().unwrap_or_else(Instant::now);
        let n = records.len();
        let inputs = self.settings.inputs.iter().map(|input| BatchInput { data: gather(input, &records), shape: input.shape.clone() }).collect();
        let pool = self.pool.as_ref().ok_or_else(|| OperatorError::new("infer: no worker pool (not opened)"))?;
        let request = pool.send(Run { n, inputs });
        let (settings, stats) = (self.settings.clone(), self.stats.clone());
        out.defer(async move {
            let result = request.await.map_err(|e| OperatorError::new(format!("an inference worker stopped: {e}")))?;
            let mut c = Collector::default();
            match result {
                Ok(o) => {
                    {
                        let mut s = stats.borrow_mut();
                        s.batches += 1;
                        s.records += n as u64;
                        s.sizes[(usize::BITS - 1 - n.leading_zeros()).min(15) as usize] += 1;
                        let queued = o.started.saturating_duration_since(since).as_micros() as u64;
                        s.queue.record(queued);
                        s.inference.record(o.micros);
                        if let Some(e) = &s.exported {
                            e.sizes.record(n as u64);
                            e.queue.record(queued);
                            e.inference.record(o.micros);
                        }
                    }
                    for (i, mut r) in records.into_iter().enumerate() {
                        let row = &o.values[i * o.width..(i + 1) * o.width];
                        for (name, kind) in &settings.outputs {
                            r.set(*name, output(*kind, row));
                        }
                        c.emit(r);
                    }
                }
                // The batch failed as a whole (e.g. out of GPU memory): its records go to the
                // dead-letter output with the reason; the job goes on.
                Err(msg) => records.into_iter().for_each(|r| c.reject(r, &msg)),
            }
            Ok(c)
        });
        Ok(())
    }
}

/// The batch's values of one input, flat, scaled.
fn gather(input: &Input, records: &[Record]) -> InputData {
    if input.int {
        let mut v = Vec::with_capacity(records.len() * input.len);
        for r in records {
            match r.get(input.field) {
                Some(Value::List(l)) => v.extend(l.iter().map(|x| if let Value::Int(i) = x { *i } else { 0 })),
                Some(Value::Int(i)) => v.push(*i),
                _ => unreachable!("checked on arrival"),
            }
        }
        return InputData::I64(v);
    }
    let (scale, offset) = (input.scale, input.offset);
    let mut v = Vec::with_capacity(records.len() * input.len);
    for r in records {
        match r.get(input.field) {
            Some(Value::Floats(f)) => v.extend(f.iter().map(|x| x * scale + offset)),
            Some(Value::List(l)) => v.extend(l.iter().map(|x| x.as_f64().unwrap_or(0.0) as f32 * scale + offset)),
            Some(x) => v.push(x.as_f64().unwrap_or(0.0) as f32 * scale + offset),
            None => unreachable!("checked on arrival"),
        }
    }
    InputData::F32(v)
}

/// One output field from one record's row of the model's output.
fn output(kind: OutputKind, row: &[f32]) -> Value {
    let argmax = || row.iter().enumerate().fold(0, |best, (i, x)| if *x > row[best] { i } else { best });
    let softmax = || {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exp: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
        let sum: f32 = exp.iter().sum();
        exp.into_iter().map(|e| e / sum).collect::<Vec<f32>>()
    };
    match kind {
        OutputKind::Argmax => Value::Int(argmax() as i64),
        OutputKind::MaxSoftmax => Value::Float(softmax()[argmax()] as f64),
        OutputKind::Softmax => Value::Floats(softmax().into()),
        OutputKind::Logits => Value::Floats(row.into()),
    }
}

impl Operator for Infer {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        let micros = || vec![100, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 5_000_000];
        self.stats.borrow_mut().exported = Some(Exported {
            sizes: ctx.histogram("rill_infer_batch_size", "Records per inference batch.", 1.0, (0..=12).map(|i| 1u64 << i).collect()),
            queue: ctx.histogram("rill_infer_queue_seconds", "From a batch's first record to a worker starting on it.", 1e-6, micros()),
            inference: ctx.histogram("rill_infer_seconds", "The model's time per batch (tensor in, forward, tensor out).", 1e-6, micros()),
        });
        let s = &self.settings;
        torch::torch().map_err(|e| OperatorError::user(format!("infer: {e}")))?;
        let device = worker::resolve_device(&s.device).map_err(OperatorError::user)?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        self.threads = s.threads.unwrap_or(if device.is_cuda() { 1 } else { (cores / s.workers).max(1) });
        self.device = worker::device_name(device);
        let spec = Arc::new(WorkerSpec {
            model: s.model.clone(),
            device,
            threads: self.threads,
            warmup: s.inputs.iter().map(|i| (i.shape.clone(), i.int)).collect(),
        });
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Ready>();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let pool = SyncArbiter::start(s.workers, move || {
            let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Worker::start(index, &spec, &ready_tx)
        });
        // Wait for every worker to load the model and run it once, so that a bad model or a
        // declared shape the model does not take fails the job now, with the reason.
        for _ in 0..s.workers {
            let ready = ready_rx
                .recv_timeout(Duration::from_secs(600))
                .map_err(|_| OperatorError::new(format!("infer: the model `{}` did not load within 10 minutes", s.model.display())))?;
            match ready.result {
                Ok(info) => tracing::info!(
                    "infer worker {} ready on {} ({} threads): warm-up batch in {:.1} ms, {} output(s) per record",
                    ready.worker,
                    self.device,
                    self.threads,
                    info.micros as f64 / 1000.0,
                    info.width
                ),
                Err(e) if e.starts_with("cannot load") => {
                    return Err(OperatorError::user(format!(
                        "infer: {e} (the model must be TorchScript: save it with `torch.jit.script(model).save(path)` or `torch.jit.trace`)"
                    )))
                }
                Err(e) => {
                    let shapes: Vec<String> = s.inputs.iter().map(|i| format!("`{}` {:?}", i.field, i.shape)).collect();
                    return Err(OperatorError::user(format!(
                        "infer: {e} (warm-up with one record of zeros, declared input {}; check `input.shape` against the model)",
                        shapes.join(", ")
                    )));
                }
            }
        }
        self.pool = Some(pool);
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        if let Err(e) = self.check(&record) {
            out.reject(record, e);
            return Ok(());
        }
        if self.pending.is_empty() {
            self.pending_since = Some(Instant::now());
        }
        self.pending.push(record);
        if self.pending.len() >= self.settings.max_size {
            self.dispatch(out)?;
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: rill_engine::record::Batch, out: &mut Collector) -> Result<(), OperatorError> {
        for r in batch.into_records() {
            self.process(r, out)?;
        }
        // What is left waits at most `max_delay` for more.
        if let Some(since) = self.pending_since {
            let due = rill_engine::time::now_millis() + (self.settings.max_delay.saturating_sub(since.elapsed()).as_micros() as i64 + 999) / 1000;
            if self.timer_at.is_none_or(|t| t > due) {
                out.timers().register(TimeDomain::Processing, &Value::Null, 0, due);
                self.timer_at = Some(due);
            }
        }
        Ok(())
    }

    fn on_timer(&mut self, _timer: Timer, out: &mut Collector) -> Result<(), OperatorError> {
        self.timer_at = None;
        match self.pending_since {
            None => Ok(()),
            Some(since) if since.elapsed() + Duration::from_micros(500) >= self.settings.max_delay => self.dispatch(out),
            Some(since) => {
                let due = rill_engine::time::now_millis() + (self.settings.max_delay - since.elapsed()).as_millis() as i64 + 1;
                out.timers().register(TimeDomain::Processing, &Value::Null, 0, due);
                self.timer_at = Some(due);
                Ok(())
            }
        }
    }

    fn on_watermark(&mut self, _wm: Watermark, out: &mut Collector) -> Result<(), OperatorError> {
        self.dispatch(out)
    }

    fn before_barrier(&mut self, _epoch: Epoch, out: &mut Collector) -> Result<(), OperatorError> {
        self.dispatch(out)
    }

    fn on_end(&mut self, out: &mut Collector) -> Result<(), OperatorError> {
        self.dispatch(out)
    }

    fn report(&self) -> Option<String> {
        let s = self.stats.borrow();
        if s.batches == 0 {
            return Some(format!("{}: no batches", self.device));
        }
        let sizes: Vec<String> = s
            .sizes
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(i, n)| if i == 0 { format!("1: {n}") } else { format!("{}-{}: {n}", 1 << i, (1 << (i + 1)) - 1) })
            .collect();
        Some(format!(
            "{} × {} worker(s), {} thread(s) each; {} batches, mean size {:.1} (sizes {}); queue {}; inference per batch {}",
            self.device,
            self.settings.workers,
            self.threads,
            s.batches,
            s.records as f64 / s.batches as f64,
            sizes.join(", "),
            s.queue.describe(),
            s.inference.describe()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_from_a_row() {
        let row = [1.0f32, 3.0, 2.0];
        assert_eq!(output(OutputKind::Argmax, &row), Value::Int(1));
        let Value::Floats(p) = output(OutputKind::Softmax, &row) else { panic!() };
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6 && p[1] > p[2] && p[2] > p[0]);
        assert_eq!(output(OutputKind::MaxSoftmax, &row), Value::Float(p[1] as f64));
        assert_eq!(output(OutputKind::Logits, &row), Value::Floats(row.as_slice().into()));
    }
}
