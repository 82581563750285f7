//! `rill chaos`: the chaos-test harness.
//!
//! Runs the pipeline once without failures (the reference), then again while killing it with
//! SIGKILL at random (seeded) moments and restarting it each time — it resumes from its latest
//! checkpoint — and finally lets it finish. Every file sink's output must then equal the
//! reference exactly, as a multiset of lines: anything missing is lost, anything extra is
//! duplicated. The reference is run twice: a sink whose failure-free output differs between the
//! two (it depends on timing) cannot be judged, and is reported so rather than compared. Every
//! requested fault happens: if the job finishes first, the sequence starts again with shorter
//! delays before the kills.
//!
//! With `--panics N`, N more runs end by an operator panic instead of a kill: the harness sets
//! `RILL_FAULTS=panic=COMPONENT@RECORD` for them (a random transform or sink, at a random record
//! of what it received in the reference run). With `--slow`, every run also slows a random
//! transform or sink by 1–10 ms per batch (`RILL_FAULTS=slow=…`), which moves barriers, backlogs
//! and kills to other places. See `engine/src/runtime/faults.rs`.

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

/// Records received per instance, by component, from the summary table a run prints.
fn received(summary: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let mut table = false;
    for line in summary.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() == Some(&"component") {
            table = true;
            continue;
        }
        match (table, f.as_slice()) {
            (true, [name, _type, inst, records_in, _out, _rejected, _batches]) => {
                if let (Ok(i), Ok(n)) = (inst.parse::<u64>(), records_in.parse::<u64>()) {
                    out.insert(name.to_string(), n / i.max(1));
                }
            }
            _ => table = false,
        }
    }
    out
}

/// What the harness does to the pipeline.
pub struct Faults {
    pub kills: u32,
    /// Runs ended by an injected operator panic.
    pub panics: u32,
    /// Slow a random operator in every run.
    pub slow: bool,
}

/// How one chaos sequence ended.
enum Sequence {
    /// Every run ended by its fault, then a final run finished.
    Done { killed: u32, panicked: u32, slowed: Vec<String> },
    /// A run finished before its fault: fewer faults than asked happened.
    TooShort { faulted: u32 },
    Failed(String),
}

/// One chaos sequence (see the module docs) into `chaos`, killing each run within `max` of its
/// start.
#[allow(clippy::too_many_arguments)]
fn sequence(exe: &Path, chaos_args: &[String], faults: &Faults, targets: &[(String, u64)], reference_time: Duration, max: Duration, rng: &mut rand::rngs::StdRng) -> Sequence {
    // Which runs end by a panic rather than a kill.
    let runs = faults.kills + faults.panics;
    let mut panic_runs = std::collections::BTreeSet::new();
    while panic_runs.len() < faults.panics as usize {
        panic_runs.insert(rng.gen_range(0..runs));
    }
    let (mut killed, mut panicked) = (0, 0);
    let mut slowed = Vec::new();
    for i in 0..runs {
        let mut cmd = Command::new(exe);
        // Its stderr is kept, to say why if it fails by itself.
        let log = std::env::temp_dir().join(format!("rill-chaos-run-{}-{i}.log", std::process::id()));
        let stderr = std::fs::File::create(&log).map(Stdio::from).unwrap_or_else(|_| Stdio::null());
        cmd.args(chaos_args).stdout(Stdio::null()).stderr(stderr);
        if i == 0 {
            cmd.arg("--from-scratch");
        }
        let mut env = Vec::new();
        if faults.slow {
            let (c, _) = &targets[rng.gen_range(0..targets.len())];
            let ms = rng.gen_range(1..=10);
            env.push(format!("slow={c}:{ms}ms"));
            slowed.push(format!("{c} {ms} ms"));
        }
        let panic_run = panic_runs.contains(&i);
        if panic_run {
            let (c, n) = &targets[rng.gen_range(0..targets.len())];
            // Early enough to come before the run ends: a restored run has only what is left.
            env.push(format!("panic={c}@{}", rng.gen_range(1..=(*n / (runs as u64 + 1)).max(1))));
        }
        cmd.env("RILL_FAULTS", env.join(";"));
        let mut child = cmd.spawn().expect("rill starts");
        let delay = Duration::from_micros(rng.gen_range(max.as_micros() as u64 / 10..=max.as_micros() as u64));
        let start = Instant::now();
        // A panic run ends by itself (exit 1) when its operator reaches the record; a run
        // whose panic comes too late (after a restore there is less to do) is killed instead.
        let limit = if panic_run { delay.max(reference_time * 2) } else { delay };
        let ended = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Some(st),
                _ if start.elapsed() >= limit => break None,
                _ => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        match ended {
            None => {
                let _ = child.kill(); // SIGKILL
                let _ = child.wait();
                killed += 1;
            }
            Some(st) if st.success() => return Sequence::TooShort { faulted: killed + panicked },
            Some(_) if panic_run => panicked += 1,
            Some(st) => {
                let said = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = said.lines().rev().take(5).collect::<Vec<_>>().into_iter().rev().collect();
                let _ = std::fs::remove_file(&log);
                return Sequence::Failed(format!("run {i} failed by itself ({st}):\n{}", tail.join("\n")));
            }
        }
        let _ = std::fs::remove_file(&log);
    }
    let status = Command::new(exe).args(chaos_args).stdout(Stdio::null()).stderr(Stdio::null()).env_remove("RILL_FAULTS").status();
    if !status.as_ref().is_ok_and(|s| s.success()) {
        return Sequence::Failed(format!("the final run after {killed} kills and {panicked} panics failed ({status:?})"));
    }
    Sequence::Done { killed, panicked, slowed }
}

/// How many times a chaos sequence is tried again, with half the kill delay each time, when the
/// job finished before every fault was done.
const SHORTER_TRIES: u32 = 8;

/// Runs the harness; see the module docs. Exit codes: 0 nothing lost or duplicated, 1 a
/// difference (or a run failed), 2 the pipeline cannot be judged (or is invalid).
pub fn main(pipeline: &Path, faults: Faults, seed: u64, max_delay: Option<Duration>, sets: &[String], registry: &Registry) -> ExitCode {
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
    let (reference, again, chaos) = (root.join("reference"), root.join("reference-2"), root.join("chaos"));

    // Two failure-free runs: a sink whose output differs between them is not deterministic, and
    // comparing it with a run that was killed could only raise false alarms.
    let t0 = Instant::now();
    // Not quiet: its summary says how many records each component received.
    let reference_args: Vec<String> = args(pipeline, sets, &reference, &sinks).into_iter().filter(|a| a != "-q").collect();
    let out = Command::new(&exe).args(reference_args).arg("--from-scratch").stdout(Stdio::null()).output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        eprintln!("error: the failure-free run failed");
        return ExitCode::from(1);
    };
    let reference_time = t0.elapsed();
    let second = Command::new(&exe).args(args(pipeline, sets, &again, &sinks)).arg("--from-scratch").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if !second.is_ok_and(|s| s.success()) {
        eprintln!("error: the second failure-free run failed");
        return ExitCode::from(1);
    }
    let (judged, unjudged): (Vec<String>, Vec<String>) = sinks.iter().cloned().partition(|s| {
        let d = diff(s, &reference.join(format!("{s}.out")), &again.join(format!("{s}.out")));
        d.lost == 0 && d.duplicated == 0
    });
    for s in &unjudged {
        eprintln!("cannot judge sink `{s}`: two failure-free runs wrote different lines (its output depends on timing, e.g. a running aggregate fed by several source instances)");
    }
    if judged.is_empty() {
        let _ = std::fs::remove_dir_all(&root);
        println!("chaos test of {}: cannot judge: no file sink has a deterministic output", pipeline.display());
        return ExitCode::from(2);
    }
    // Where faults can go: transforms and sinks that received records, with how many each.
    let received = received(&String::from_utf8_lossy(&out.stderr));
    let targets: Vec<(String, u64)> = plan
        .nodes
        .iter()
        .filter(|n| n.role != Role::Source)
        .filter_map(|n| Some((n.name.to_string(), *received.get(&*n.name).filter(|&&r| r > 0)?)))
        .collect();
    if (faults.panics > 0 || faults.slow) && targets.is_empty() {
        eprintln!("error: no transform or sink received records in the failure-free run; nothing to inject faults into");
        return ExitCode::from(1);
    }
    // Each run gets on by about its delay; all of them together should leave the job unfinished.
    let runs = (faults.kills + faults.panics).max(1);
    let mut max = max_delay.unwrap_or(reference_time * 3 / (2 * runs)).max(Duration::from_millis(20));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let chaos_args = args(pipeline, sets, &chaos, &sinks);
    let mut tries = 0;
    let (killed, panicked, slowed) = loop {
        eprintln!("failure-free run: {:.2} s; killing {} times within {} ms of each start", reference_time.as_secs_f64(), faults.kills, max.as_millis());
        match sequence(&exe, &chaos_args, &faults, &targets, reference_time, max, &mut rng) {
            Sequence::Done { killed, panicked, slowed } => break (killed, panicked, slowed),
            Sequence::Failed(why) => {
                eprintln!("error: {why}");
                return ExitCode::from(1);
            }
            Sequence::TooShort { faulted } if tries < SHORTER_TRIES && max > Duration::from_millis(2) => {
                tries += 1;
                max /= 2;
                eprintln!("the job finished after {faulted} of {runs} faults: again from the start, killing sooner");
            }
            Sequence::TooShort { faulted } => {
                eprintln!("error: the job finished after {faulted} of {runs} faults, even killed within {} ms; give it more input", max.as_millis());
                return ExitCode::from(2);
            }
        }
    };
    let diffs: Vec<SinkDiff> = judged
        .iter()
        .map(|s| diff(s, &reference.join(format!("{s}.out")), &chaos.join(format!("{s}.out"))))
        .collect();
    let mut what = format!("{killed} kills");
    if faults.panics > 0 {
        what += &format!(", {panicked} operator panics");
    }
    println!("chaos test of {}: {what} (seed {seed})", pipeline.display());
    if faults.slow {
        println!("slowed per batch, run by run: {}", slowed.join(", "));
    }
    println!("{:<16} {:>10} {:>12} {:>6} {:>10}", "sink", "reference", "after kills", "lost", "duplicated");
    let mut ok = true;
    for d in &diffs {
        println!("{:<16} {:>10} {:>12} {:>6} {:>10}", d.sink, d.reference, d.got, d.lost, d.duplicated);
        ok &= d.lost == 0 && d.duplicated == 0;
    }
    for s in &unjudged {
        println!("{s:<16} {:>10} {:>12} {:>6} {:>10}", "-", "-", "?", "?");
    }
    if !ok {
        println!("FAILED: outputs differ (kept in {})", root.display());
        return ExitCode::from(1);
    }
    let _ = std::fs::remove_dir_all(&root);
    if unjudged.is_empty() {
        println!("ok: no record lost, none duplicated");
        ExitCode::SUCCESS
    } else {
        println!("ok for {}: no record lost, none duplicated; {} could not be judged", judged.join(", "), unjudged.join(", "));
        ExitCode::from(2)
    }
}
