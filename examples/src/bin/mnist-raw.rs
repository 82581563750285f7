//! The limit for `infer`: raw tch inference of a TorchScript model on pre-made batches (inputs
//! parsed, scaled and shaped before the clock starts). Prints one JSON line: images/s and the
//! per-batch latency p50/p99.
//!
//! Usage: `mnist-raw MODEL CSV BATCH [THREADS] [PASSES]` — CSV rows are 784 pixels then a
//! label; the rows are run PASSES times (default 1); THREADS is LibTorch's intra-op threads
//! (default: all cores).

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
    let threads: usize = args.get(3).map(|a| a.parse().expect("THREADS")).unwrap_or(cores);
    let passes: usize = args.get(4).map(|a| a.parse().expect("PASSES")).unwrap_or(1);
    tch::set_num_threads(threads as i32);
    let device = if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu };
    let mut model = CModule::load_on_device(&args[0], device).expect("model loads");
    model.set_eval();

    let text = std::fs::read_to_string(&args[1]).expect("CSV reads");
    let mut pixels: Vec<f32> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let cells: Vec<&str> = line.split(',').collect();
        pixels.extend(cells[..784].iter().map(|c| c.trim().parse::<f32>().expect("pixel") / 255.0));
    }
    let n = pixels.len() / 784;
    let batches: Vec<Tensor> = pixels
        .chunks(batch * 784)
        .map(|c| Tensor::from_slice(c).view([(c.len() / 784) as i64, 1, 28, 28]).to_device(device))
        .collect();

    let run = |t: &Tensor| -> i64 {
        let y = tch::no_grad(|| model.forward_ts(&[t]).expect("forward"));
        y.argmax(1, false).to_device(Device::Cpu).int64_value(&[0])
    };
    run(&batches[0]); // warm-up
    let mut latencies = Vec::with_capacity(batches.len() * passes);
    let started = Instant::now();
    let mut check = 0i64;
    for _ in 0..passes {
        for t in &batches {
            let t0 = Instant::now();
            check += run(t);
            latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let q = |p: f64| latencies[((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1];
    println!(
        "{{\"images\":{},\"batch\":{batch},\"threads\":{threads},\"device\":\"{device:?}\",\"images_per_s\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"check\":{check}}}",
        n * passes,
        (n * passes) as f64 / secs,
        q(0.5),
        q(0.99)
    );
}
