//! The inference workers: synchronous actors (one OS thread each, an actix `SyncArbiter`), each
//! holding its own copy of the TorchScript model on the chosen device. Every LibTorch call runs
//! here, never on an event loop.

use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::time::Instant;

use actix::prelude::*;

pub(crate) use super::torch::Device;
use super::torch::{torch, Model};

/// One model input of a batch: the values of `n` records, flat, and the shape of one record's.
pub(crate) enum InputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

pub(crate) struct BatchInput {
    pub(crate) data: InputData,
    /// Shape of one record's tensor (the batch dimension is added in front).
    pub(crate) shape: Vec<i64>,
}

/// Runs the model on one batch.
pub(crate) struct Run {
    pub(crate) n: usize,
    pub(crate) inputs: Vec<BatchInput>,
}

/// The model's output for a batch: `n × width` floats, row by row.
pub(crate) struct RunOutput {
    pub(crate) width: usize,
    pub(crate) values: Vec<f32>,
    /// When the worker started on it (queue time ends), and how long the model took.
    pub(crate) started: Instant,
    pub(crate) micros: u64,
}

impl Message for Run {
    type Result = Result<RunOutput, String>;
}

pub(crate) struct Worker {
    model: Result<Model, String>,
    device: Device,
}

impl Actor for Worker {
    type Context = SyncContext<Self>;
}

/// What a worker reports once it has loaded the model and run it once.
pub(crate) struct Ready {
    pub(crate) worker: usize,
    pub(crate) result: Result<WarmupInfo, String>,
}

pub(crate) struct WarmupInfo {
    /// Output width (classes) for one record.
    pub(crate) width: usize,
    pub(crate) micros: u64,
}

pub(crate) struct WorkerSpec {
    pub(crate) model: PathBuf,
    pub(crate) device: Device,
    pub(crate) threads: usize,
    /// One record's input shapes and kinds, for the warm-up batch.
    pub(crate) warmup: Vec<(Vec<i64>, bool)>,
}

impl Worker {
    /// Loads the model, sets this thread's intra-op parallelism and runs a warm-up batch of
    /// one record of zeros; reports the outcome on `ready`.
    pub(crate) fn start(index: usize, spec: &WorkerSpec, ready: &Sender<Ready>) -> Worker {
        let model = torch().and_then(|t| {
            t.set_threads(spec.threads);
            t.load(&spec.model, spec.device).map_err(|e| format!("cannot load TorchScript model `{}`: {}", spec.model.display(), first_line(&e)))
        });
        let mut worker = Worker { model, device: spec.device };
        let result = match &worker.model {
            Err(e) => Err(e.clone()),
            Ok(_) => {
                let inputs = spec
                    .warmup
                    .iter()
                    .map(|(shape, int)| {
                        let n: i64 = shape.iter().product();
                        let data = if *int { InputData::I64(vec![0; n as usize]) } else { InputData::F32(vec![0.0; n as usize]) };
                        BatchInput { data, shape: shape.clone() }
                    })
                    .collect();
                worker.run(Run { n: 1, inputs }).map(|o| WarmupInfo { width: o.width, micros: o.micros })
            }
        };
        if let Err(e) = &result {
            worker.model = Err(e.clone());
        }
        let _ = ready.send(Ready { worker: index, result });
        worker
    }

    fn run(&mut self, batch: Run) -> Result<RunOutput, String> {
        let started = Instant::now();
        let model = self.model.as_ref().map_err(Clone::clone)?;
        let n = batch.n as i64;
        let (values, size) = torch()?
            .forward(model, self.device, batch.n, &batch.inputs)
            .map_err(|e| format!("the model failed on a batch of {n}: {}", first_line(&e)))?;
        let width = match size.as_slice() {
            [rows] if *rows == n => 1,
            [rows, w] if *rows == n => *w as usize,
            other => {
                return Err(format!(
                    "the model returned a tensor of shape {other:?} for a batch of {n}; expected [{n}] or [{n}, classes]"
                ))
            }
        };
        Ok(RunOutput { width, values, started, micros: started.elapsed().as_micros() as u64 })
    }
}

impl Handler<Run> for Worker {
    type Result = Result<RunOutput, String>;
    fn handle(&mut self, batch: Run, _: &mut SyncContext<Self>) -> Self::Result {
        self.run(batch)
    }
}

/// The telling line of a LibTorch error: TorchScript errors carry a traceback and end with the
/// Python-style `RuntimeError: ...` line; others are one line.
fn first_line(s: &str) -> String {
    let cause = s.lines().rev().find_map(|l| l.trim().strip_prefix("RuntimeError: "));
    let line = cause.unwrap_or_else(|| s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim());
    line.strip_prefix("Internal torch error: ").unwrap_or(line).to_string()
}

/// Which device `device:` names, checking that it is really there: asking for CUDA where it is
/// not available is an error saying why, never a silent fall back to the CPU.
pub(crate) fn resolve_device(name: &str) -> Result<Device, String> {
    let cuda = |index: usize| -> Result<Device, String> {
        let count = torch()?.cuda_devices();
        if count == 0 {
            return Err(cuda_missing());
        }
        if index >= count {
            return Err(format!("`device: cuda:{index}`, but this machine has {count} CUDA device(s) (cuda:0 to cuda:{})", count.saturating_sub(1)));
        }
        Ok(Device::Cuda(index))
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(if torch()?.cuda_devices() > 0 { Device::Cuda(0) } else { Device::Cpu }),
        "cuda" | "gpu" => cuda(0),
        other => match other.strip_prefix("cuda:").and_then(|i| i.parse().ok()) {
            Some(i) => cuda(i),
            None => Err(format!("unknown device `{other}`; use cpu, cuda, cuda:N or auto")),
        },
    }
}

/// Why CUDA is not available: the library or the GPU is missing.
fn cuda_missing() -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    if !maps.contains("libtorch_cuda") {
        "`device: cuda`, but this build of LibTorch has no CUDA support (libtorch_cuda is not loaded): \
         build rill against a CUDA-enabled torch (scripts/setup.sh installs one), or use `device: cpu` or `auto`"
            .into()
    } else {
        "`device: cuda`, but no CUDA GPU is usable (LibTorch has CUDA support; the driver reports no device): \
         check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use `device: cpu` or `auto`"
            .into()
    }
}

pub(crate) fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
    }
}
