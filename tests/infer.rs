//! `infer` end to end with real LibTorch and the real MNIST digits: the model trained by
//! `scripts/setup.sh` (models/mnist_cnn.pt) on the stream part of the digits
//! (data/mnist_stream.csv). PyTorch's own predictions for those digits (models/mnist_cnn.json,
//! written when the model was trained) are the reference.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

struct Mnist {
    stream: PathBuf,
    model: PathBuf,
    /// PyTorch's prediction for each stream digit, in file order.
    expected: Vec<i64>,
    labels: Vec<i64>,
    /// The stream's CSV lines.
    rows: Vec<String>,
}

fn mnist() -> Mnist {
    let (stream, model) = (root().join("data/mnist_stream.csv"), root().join("models/mnist_cnn.pt"));
    let meta_path = root().join("models/mnist_cnn.json");
    assert!(
        stream.exists() && model.exists() && meta_path.exists(),
        "the MNIST data and model are missing: run `bash scripts/setup.sh` first"
    );
    let meta: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    let expected = meta["stream_predictions"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let rows: Vec<String> = std::fs::read_to_string(&stream).unwrap().lines().map(String::from).collect();
    let labels = rows.iter().map(|r| r.rsplit(',').next().unwrap().parse().unwrap()).collect();
    Mnist { stream, model, expected, labels, rows }
}

fn ints(rows: &[serde_json::Value], field: &str) -> Vec<i64> {
    rows.iter().map(|r| r[field].as_i64().unwrap_or_else(|| panic!("{field} in {r}"))).collect()
}

/// A pipeline: digits from `source` (YAML of the source) → infer (`extra` options) → file.
fn pipeline(dir: &Path, name: &str, source: &str, infer: &str, top: &str) -> PathBuf {
    let m = mnist();
    write(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nwork_dir: {w}\n{top}\nsources:\n  digits:\n{source}\ntransforms:\n  predicted:\n    type: infer\n    inputs: [digits]\n    model: {model}\n    device: cpu\n    input: {{field: pixels, shape: [1, 28, 28], scale: 0.00392156862745098}}\n    outputs: {{prediction: argmax, confidence: max_softmax}}\n{infer}\nsinks:\n  out: {{type: file, inputs: [predicted], path: {o}}}\n",
            w = dir.join(format!("{name}-work")).display(),
            model = m.model.display(),
            o = dir.join(format!("{name}.jsonl")).display(),
        ),
    )
}

fn csv_source(path: &Path, extra: &str) -> String {
    format!(
        "    type: file\n    path: {}\n{extra}    format: {{type: csv, header: false, schema: {{pixels: \"f32[784]\", label: i64}}}}\n",
        path.display()
    )
}

#[test]
fn mnist_example_classifies_the_held_out_digits_like_pytorch() {
    let m = mnist();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("predictions.jsonl");
    let r = run(&[
        "run",
        "examples/mnist.yaml",
        "--set",
        &format!("sinks.predictions.path={}", out.display()),
        "--set",
        &format!("work_dir={}", tmp.path().join("w").display()),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let windows: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(windows.len(), 10, "{}", r.stdout);
    assert!(windows.iter().all(|w| w["n"] == 100), "{}", r.stdout);
    let accuracy: f64 = windows.iter().map(|w| w["accuracy"].as_f64().unwrap()).sum::<f64>() / 10.0;
    assert!(accuracy >= 0.95, "accuracy {accuracy}");
    let rows = lines(&out);
    assert_eq!(ints(&rows, "label"), m.labels, "records leave in the order they came");
    assert_eq!(ints(&rows, "prediction"), m.expected, "Rill's predictions equal PyTorch's");
    let hits = m.expected.iter().zip(&m.labels).filter(|(p, l)| p == l).count();
    assert!((accuracy - hits as f64 / 1000.0).abs() < 1e-9, "windows agree with the predictions");
    // The README's figure is this one (within a point: training on another CPU may differ by a
    // few digits).
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let claimed: usize = readme
        .split_once("Accuracy on the 1000 held-out digits: **")
        .and_then(|(_, rest)| rest.split_once(" of 1000"))
        .and_then(|(figure, _)| figure.rsplit('(').next()?.trim().parse().ok())
        .expect("the README states the accuracy as `… (N of 1000`");
    assert!(claimed.abs_diff(hits) <= 10, "the README says {claimed} of 1000, the model gets {hits}");
    assert!(rows.iter().all(|r| (0.0..=1.0).contains(&r["confidence"].as_f64().unwrap())));
    assert!(r.stderr.contains("predicted #0: cpu × 2 worker(s)"), "{}", r.stderr);
    assert!(r.stderr.contains("predictions latency from source: p50"), "{}", r.stderr);
}

#[test]
fn batch_size_delay_and_workers_change_neither_results_nor_order() {
    let m = mnist();
    let tmp = tempfile::tempdir().unwrap();
    for (i, (size, delay, workers, batches)) in [(1, "1ms", 1, "1000 batches"), (7, "1ms", 3, "143 batches"), (256, "10ms", 2, "4 batches")].into_iter().enumerate() {
        let p = pipeline(
            tmp.path(),
            &format!("b{i}"),
            &csv_source(&m.stream, ""),
            &format!("    workers: {workers}\n    batch: {{max_size: {size}, max_delay: {delay}}}\n"),
            "",
        );
        let r = run(&["run", p.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let rows = lines(&tmp.path().join(format!("b{i}.jsonl")));
        assert_eq!(ints(&rows, "label"), m.labels, "max_size {size}, {workers} workers: order");
        assert_eq!(ints(&rows, "prediction"), m.expected, "max_size {size}, {workers} workers: predictions");
        let report = r.stderr.lines().find(|l| l.starts_with("predicted #0")).unwrap_or_else(|| panic!("{}", r.stderr));
        assert!(report.contains(&format!("cpu × {workers} worker(s)")) && report.contains(batches), "{report}");
    }
}

#[test]
fn a_partial_batch_leaves_after_max_delay() {
    let m = mnist();
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "in.csv", "");
    let p = pipeline(
        tmp.path(),
        "delay",
        &csv_source(&input, "    follow: true\n    poll_interval: 10ms\n"),
        "    batch: {max_size: 64, max_delay: 5ms}\n",
        "",
    );
    let child = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(std::process::Stdio::piped()).spawn().unwrap());
    let out = tmp.path().join("delay.jsonl");
    let count = || std::fs::read_to_string(&out).map(|s| s.lines().count()).unwrap_or(0);
    // One digit at a time: each must come out alone, long before 64 have gathered.
    for (i, row) in m.rows.iter().take(5).enumerate() {
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
        std::io::Write::write_all(&mut f, format!("{row}\n").as_bytes()).unwrap();
        assert!(wait_for(Duration::from_secs(60), || count() == i + 1), "digit {i} was not classified alone");
    }
    interrupt(&child.0);
    let mut child = child;
    let status = child.0.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert_eq!(ints(&lines(&out), "prediction"), m.expected[..5]);
    assert!(stderr.contains("5 batches, mean size 1.0"), "{stderr}");
}

#[test]
fn a_checkpoint_in_the_middle_of_a_batch_sends_it_and_recovery_is_exact() {
    let m = mnist();
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "in.csv", &(m.rows[..300].join("\n") + "\n"));
    // Batches never fill (max_size) nor time out (max_delay) here: only checkpoint barriers
    // send the gathered records to the model.
    let p = pipeline(
        tmp.path(),
        "ck",
        &csv_source(&input, "    follow: true\n    poll_interval: 10ms\n"),
        "    batch: {max_size: 100000, max_delay: 1h}\n",
        "checkpoint: {interval: 50ms}",
    );
    let out = tmp.path().join("ck.jsonl");
    let count = || std::fs::read_to_string(&out).map(|s| s.lines().count()).unwrap_or(0);
    let mut first = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(std::process::Stdio::null()).spawn().unwrap());
    assert!(wait_for(Duration::from_secs(60), || count() == 300), "a barrier flushes the partial batch; got {}", count());
    first.0.kill().unwrap(); // SIGKILL, mid-run
    first.0.wait().unwrap();
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    std::io::Write::write_all(&mut f, (m.rows[300..].join("\n") + "\n").as_bytes()).unwrap();
    let second = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(std::process::Stdio::piped()).spawn().unwrap());
    assert!(wait_for(Duration::from_secs(60), || count() >= 1000), "resumed run classifies the rest; got {}", count());
    interrupt(&second.0);
    let mut second = second;
    assert!(second.0.wait().unwrap().success());
    let rows = lines(&out);
    assert_eq!(ints(&rows, "label"), m.labels, "no digit lost or repeated across the kill");
    assert_eq!(ints(&rows, "prediction"), m.expected);
}

#[test]
fn bad_records_go_to_the_dead_letter_output_and_the_job_goes_on() {
    let m = mnist();
    let tmp = tempfile::tempdir().unwrap();
    let json = |row: &str, cut: usize| {
        let cells: Vec<&str> = row.split(',').collect();
        format!("{{\"pixels\":[{}],\"label\":{}}}", cells[..784 - cut].join(","), cells[784])
    };
    let input = write(
        tmp.path(),
        "in.jsonl",
        &[
            json(&m.rows[0], 0),
            json(&m.rows[1], 1),
            "{\"pixels\":[1,\"x\"],\"label\":3}".into(),
            json(&m.rows[2], 0),
            "{\"label\":3}".into(),
            json(&m.rows[3], 0),
        ]
        .join("\n"),
    );
    let p = pipeline(tmp.path(), "bad", &format!("    type: file\n    path: {}\n", input.display()), "", &format!("dead_letter: {}", tmp.path().join("dl.jsonl").display()));
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows = lines(&tmp.path().join("bad.jsonl"));
    assert_eq!(ints(&rows, "prediction"), [m.expected[0], m.expected[2], m.expected[3]]);
    let dead = lines(&tmp.path().join("dl.jsonl"));
    let errors: Vec<&str> = dead.iter().map(|d| d["error"].as_str().unwrap()).collect();
    assert_eq!(
        errors,
        [
            "field `pixels` has 783 value(s); the model input needs 784 (shape [1, 28, 28])",
            "field `pixels`: element 1 is x (string), not a number",
            "field `pixels` is missing (it is the model's input)",
        ]
    );
    assert!(dead.iter().all(|d| d["component"] == "predicted" && d["position"]["source"] == "digits" && d["position"]["offset"].is_u64()), "{errors:?}");
    assert!(r.stderr.lines().any(|l| l.starts_with("predicted ") && l.split_whitespace().nth(5) == Some("3")), "{}", r.stderr);
}

#[test]
fn a_missing_model_a_wrong_shape_and_a_file_that_is_no_model_are_clear_errors() {
    let m = mnist();
    let tmp = tempfile::tempdir().unwrap();
    let src = csv_source(&m.stream, "");
    let p = pipeline(tmp.path(), "missing", &src, "", "");
    let text = std::fs::read_to_string(&p).unwrap().replace(&format!("model: {}", m.model.display()), "model: models/nope.pt");
    std::fs::write(&p, &text).unwrap();
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let line = text.lines().position(|l| l.contains("models/nope.pt")).unwrap() + 1;
    assert!(r.stderr.contains(&format!("missing.yaml:{line}:12")) && r.stderr.contains("model file `models/nope.pt` not found"), "{}", r.stderr);

    let p = pipeline(tmp.path(), "shape", &src, "", "");
    let text = std::fs::read_to_string(&p).unwrap().replace("shape: [1, 28, 28]", "shape: [1, 14, 56]");
    std::fs::write(&p, text).unwrap();
    let r = run(&["run", p.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("declared input `pixels` [1, 14, 56]; check `input.shape` against the model"), "{}", r.stderr);

    let p = pipeline(tmp.path(), "nomodel", &src, "", "");
    let text = std::fs::read_to_string(&p).unwrap().replace(&format!("model: {}", m.model.display()), &format!("model: {}", m.stream.display()));
    std::fs::write(&p, text).unwrap();
    let r = run(&["run", p.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("cannot load TorchScript model"), "{}", r.stderr);
}

#[test]
fn device_cuda_reaches_cuda_or_says_why_not() {
    let m = mnist();
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "cuda", &csv_source(&m.stream, ""), "", "");
    let text = std::fs::read_to_string(&p).unwrap().replace("device: cpu", "device: cuda");
    std::fs::write(&p, text).unwrap();
    let r = run(&["run", p.to_str().unwrap()]);
    if r.code == 0 {
        // A machine with a GPU: the model ran there, with the same results.
        assert!(r.stderr.contains("predicted #0: cuda:0"), "{}", r.stderr);
        assert_eq!(ints(&lines(&tmp.path().join("cuda.jsonl")), "prediction"), m.expected);
    } else {
        // No GPU: an error, not a silent fall back to the CPU. That it names the missing GPU,
        // not a missing libtorch_cuda, shows the binary really links LibTorch's CUDA library.
        assert!(r.stderr.contains("no CUDA GPU is usable (LibTorch has CUDA support"), "{}", r.stderr);
    }
}

#[test]
fn libtorch_is_loaded_only_by_infer_and_a_missing_library_is_a_clear_error() {
    // Every other command starts without LibTorch: the binary does not link it.
    let maps = std::process::Command::new("ldd").arg(env!("CARGO_BIN_EXE_rill")).output().unwrap();
    assert!(!String::from_utf8_lossy(&maps.stdout).contains("libtorch"), "{}", String::from_utf8_lossy(&maps.stdout));
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "nolib", &csv_source(&mnist().stream, ""), "", "");
    let out = rill().args(["run", p.to_str().unwrap()]).env("RILL_TORCH_LIB", tmp.path().join("missing.so")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`infer` needs Rill's LibTorch library librill_torch.so, which is not at") && err.contains("missing.so"), "{err}");
}
