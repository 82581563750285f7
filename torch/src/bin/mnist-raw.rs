//! The limit for `infer`: raw tch inference of a TorchScript model on pre-made batches (inputs
//! parsed, scaled and shaped before the clock starts). Prints one JSON line: images/s and the
//! per-batch latency p50/p99.
//!
//! Usage: `mnist-raw MODEL CSV BATCH [THREADS] [PASSES] [WORKERS]` — CSV rows are 784 pixels
//! then a label; the rows are run PASSES times (default 1). WORKERS threads (default 1) each
//! load the model and take every WORKERS-th batch, with THREADS LibTorch intra-op threads each
//! (default: cores / WORKERS) — `infer`'s layout, without the engine around it.

use std::time::Instant;

use tch::{CModule, Device, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        eprintln!("usage: mnist-raw MODEL CSV BATCH [THREADS] [PASSES]");
        std::process::exit(2);
    }
    let batch: usize = args[2].parse().expect("BATCH");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let passes: usize = args.get(4).map(|a| a.parse().expect("PASSES")).unwrap_or(1);
    let workers: usize = args.get(5).map(|a| a.parse().expect("WORKERS")).unwrap_or(1);
    let threads: usize = args.get(3).filter(|a| !a.is_empty() && *a != "-").map(|a| a.parse().expect("THREADS")).unwrap_or((cores / workers).max(1));
    let device = if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu };

    let text = std::fs::read_to_string(&args[1]).expect("CSV reads");
    let mut pixels: Vec<f32> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        pixels.extend(cells[..784].iter().map(|c| c.trim().parse::<f32>().expect("pixel") / 255.0));
    }
    let n = pixels.len() / 784;
    let chunks: Vec<&[f32]> = pixels.chunks(batch * 784).collect();

    // Each worker: its own model and thread; batch i goes to worker i % WORKERS.
    let barrier = std::sync::Barrier::new(workers + 1);
    let (started, results) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (chunks, barrier, model_path) = (&chunks, &barrier, &args[0]);
                scope.spawn(move || {
                    tch::set_num_threads(threads as i32);
                    let batches: Vec<Tensor> = chunks
                        .iter()
                        .skip(w)
                        .step_by(workers)
                        .map(|c| Tensor::from_slice(c).view([(c.len() / 784) as i64, 1, 28, 28]).to_device(device))
                        .collect();
                    let mut model = CModule::load_on_device(model_path, device).expect("model loads");
                    model.set_eval();
                    let run = |t: &Tensor| -> i64 {
                        let y = tch::no_grad(|| model.forward_ts(&[t]).expect("forward"));
                        y.argmax(1, false).to_device(Device::Cpu).int64_value(&[0])
                    };
                    run(&batches[0]); // warm-up
                    barrier.wait();
                    let (mut latencies, mut check) = (Vec::new(), 0i64);
                    for _ in 0..passes {
                        for t in &batches {
                            let t0 = Instant::now();
                            check += run(t);
                            latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    (latencies, check)
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        (started, handles.into_iter().map(|h| h.join().expect("worker")).collect::<Vec<_>>())
    });
    let mut latencies: Vec<f64> = results.iter().flat_map(|(l, _)| l.iter().copied()).collect();
    let check: i64 = results.iter().map(|(_, c)| c).sum();
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "{{\"images\":{},\"batch\":{batch},\"workers\":{workers},\"threads\":{threads},\"device\":\"{device:?}\",\"images_per_s\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"check\":{check}}}",
        n * passes,
        (n * passes) as f64 / secs,
        q(0.5),
        q(0.99)
    );
}
