//! `rill chaos`: the chaos-test harness.
//!
//! Runs the pipeline once without failures (the reference), then again while killing it with
//! SIGKILL at random (seeded) moments and restarting it each time — it resumes from its latest
//! checkpoint — and finally lets it finish. Every file sink's output must then equal the
//! reference exactly, as a multiset of lines: anything missing is lost, anything extra is
//! duplicated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use crate::{JobPlan, PipelineConfig, Registry};
use rill_engine::config::Role;

/// Lines lost and duplicated in one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkDiff {
    pub sink: String,
    pub reference: usize,
    pub got: usize,
    pub lost: usize,
    pub duplicated: usize,
}

fn counts(path: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in std::fs::read_to_string(path).unwrap_or_default().lines() {
        *m.entry(l.to_string()).or_default() += 1;
    }
    m
}

/// Compares two outputs line by line, as multisets.
pub fn diff(sink: &str, reference: &Path, got: &Path) -> SinkDiff {
    let (a, b) = (counts(reference), counts(got));
    let mut d = SinkDiff { sink: sink.into(), reference: a.values().sum(), got: b.values().sum(), lost: 0, duplicated: 0 };
    for (line, n) in &a {
        d.lost += n.saturating_sub(*b.get(line).unwrap_or(&0));
    }
    for (line, n) in &b {
        d.duplicated += n.saturating_sub(*a.get(line).unwrap_or(&0));
    }
    d
}

fn args(pipeline: &Path, sets: &[String], dir: &Path, sinks: &[String]) -> Vec<String> {
    let mut a = vec!["run".into(), pipeline.display().to_string(), "-q".into(), "--progress".into(), "never".into()];
    for s in sets {
        a.push("--set".into());
        a.push(s.clone());
    }
    a.push("--set".into());
    a.push(format!("work_dir={}", dir.join("work").display()));
    a.push("--set".into());
    a.push(format!("checkpoint.dir={}", dir.join("checkpoints").display()));
    for s in sinks {
        a.push("--set".into());
        a.push(format!("sinks.{s}.path={}", dir.join(format!("{s}.out")).display()));
    }
    a
}

/// Runs the harness; see the module docs.
pub fn main(pipeline: &Path, kills: u32, seed: u64, max_delay: Option<Duration>, sets: &[String], registry: &Registry) -> ExitCode {
    let plan = match PipelineConfig::load(pipeline, sets).and_then(|c| JobPlan::build(c, registry)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if plan.config.checkpoint.is_none() {
        eprintln!("error: {} has no `checkpoint:`; the chaos test checks recovery from checkpoints", pipeline.display());
        return ExitCode::from(2);
    }
    let sinks: Vec<String> = plan.nodes.iter().filter(|n| n.role == Role::Sink && n.type_name == "file").map(|n| n.name.to_string()).collect();
    if sinks.is_empty() {
        eprintln!("error: {} has no file sink to compare", pipeline.display());
        return ExitCode::from(2);
    }
    let exe = std::env::current_exe().expect("own path");
    let root: PathBuf = std::env::temp_dir().join(format!("rill-chaos-{}-{seed}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (reference, chaos) = (root.join("reference"), root.join("chaos"));

    let t0 = Instant::now();
    let status = Command::new(&exe).args(args(pipeline, sets, &reference, &sinks)).arg("--from-scratch").stdout(Stdio::null()).status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        eprintln!("error: the failure-free run failed ({status:?})");
        return ExitCode::from(1);
    }
    let reference_time = t0.elapsed();
    let max = max_delay.unwrap_or(reference_time / 2).max(Duration::from_millis(20));
    eprintln!("failure-free run: {:.2} s; killing up to {kills} times within {} ms of each start", reference_time.as_secs_f64(), max.as_millis());

    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut killed = 0;
    let mut done = false;
    let chaos_args = args(pipeline, sets, &chaos, &sinks);
    for i in 0..kills {
        let mut cmd = Command::new(&exe);
        cmd.args(&chaos_args).stdout(Stdio::null()).stderr(Stdio::null());
        if i == 0 {
            cmd.arg("--from-scratch");
        }
        let mut child = cmd.spawn().expect("rill starts");
        let delay = Duration::from_micros(rng.gen_range(max.as_micros() as u64 / 10..=max.as_micros() as u64));
        let start = Instant::now();
        while start.elapsed() < delay {
            if let Ok(Some(st)) = child.try_wait() {
                if !st.success() {
                    eprintln!("error: run {i} failed by itself ({st})");
                    return ExitCode::from(1);
                }
                done = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if done {
            eprintln!("run {} finished before its kill; {killed} kills done", i + 1);
            break;
        }
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        killed += 1;
    }
    if !done {
        let status = Command::new(&exe).args(&chaos_args).stdout(Stdio::null()).status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            eprintln!("error: the final run after {killed} kills failed ({status:?})");
            return ExitCode::from(1);
        }
    }
    let diffs: Vec<SinkDiff> = sinks
        .iter()
        .map(|s| diff(s, &reference.join(format!("{s}.out")), &chaos.join(format!("{s}.out"))))
        .collect();
    println!("chaos test of {}: {killed} kills (seed {seed})", pipeline.display());
    println!("{:<16} {:>10} {:>12} {:>6} {:>10}", "sink", "reference", "after kills", "lost", "duplicated");
    let mut ok = true;
    for d in &diffs {
        println!("{:<16} {:>10} {:>12} {:>6} {:>10}", d.sink, d.reference, d.got, d.lost, d.duplicated);
        ok &= d.lost == 0 && d.duplicated == 0;
    }
    if ok {
        let _ = std::fs::remove_dir_all(&root);
        println!("ok: no record lost, none duplicated");
        ExitCode::SUCCESS
    } else {
        println!("FAILED: outputs differ (kept in {})", root.display());
        ExitCode::from(1)
    }
}
