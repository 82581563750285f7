//! The chaos harness as a test: file → window → file at parallelism 2, killed with SIGKILL at
//! 20+ random moments; the output must equal a failure-free run's exactly (no record lost,
//! none duplicated).

mod common;

use common::*;

/// Writes pipeline `name` under `tmp`: work folder `w`, checkpoints every 30 ms in `ck`, its
/// `body` (sources and transforms), and a file sink `out` of `sink_input` to `out.jsonl`.
fn checkpointed(tmp: &std::path::Path, name: &str, parallelism: u32, body: &str, sink_input: &str) -> std::path::PathBuf {
    write(
        tmp,
        "p.yaml",
        &format!(
            "name: {name}\nwork_dir: {w}\nparallelism: {parallelism}\ncheckpoint: {{interval: 30ms, dir: {d}}}\n{body}sinks:\n  out: {{type: file, inputs: [{sink_input}], path: {o}}}\n",
            w = tmp.join("w").display(),
            d = tmp.join("ck").display(),
            o = tmp.join("out.jsonl").display()
        ),
    )
}

/// Runs the chaos harness on `p` with `args`; asserts nothing was lost or duplicated.
fn chaos_ok(p: &std::path::Path, args: &[&str]) -> String {
    let r = run(&[&["chaos", p.to_str().unwrap()], args].concat());
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ok: no record lost, none duplicated"), "{}", r.stdout);
    r.stdout
}

#[test]
fn file_window_file_survives_twenty_kills() {
    let tmp = tempfile::tempdir().unwrap();
    // 40,000 events over 41 keys, out of order by up to 150 ms.
    let mut rows: Vec<(u64, String)> = Vec::new();
    let mut t: u64 = 1_000_000;
    let mut x: u64 = 12345;
    for _ in 0..40_000 {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        t += (x >> 60) % 4;
        let jitter = (x >> 20) % 150;
        rows.push((t + jitter, format!("{{\"ts\":{t},\"k\":{},\"v\":{}}}", (x >> 33) % 41, (x >> 40) % 100)));
    }
    rows.sort();
    let input = write(tmp.path(), "in.jsonl", &(rows.into_iter().map(|(_, l)| l).collect::<Vec<_>>().join("\n") + "\n"));
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: chaos-windows\nparallelism: 2\nbatch_size: 256\ncheckpoint: {{interval: 30ms}}\nsources:\n  e:\n    type: file\n    path: {}\n    event_time: {{field: ts, max_out_of_orderness: 200ms}}\ntransforms:\n  w:\n    type: window\n    inputs: [e]\n    key_by: k\n    window: {{type: tumbling, size: 100ms}}\n    aggregates: {{n: count(), s: sum(v)}}\nsinks:\n  out: {{type: file, inputs: [w], path: {}}}\n",
            input.display(),
            tmp.path().join("out.jsonl").display()
        ),
    );
    let r = run(&["chaos", p.to_str().unwrap(), "--kills", "20", "--seed", "11", "--max-delay", "100ms"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("20 kills"), "{}", r.stdout);
    assert!(r.stdout.contains("ok: no record lost, none duplicated"), "{}", r.stdout);
    let row = r.stdout.lines().find(|l| l.starts_with("out ")).unwrap().split_whitespace().collect::<Vec<_>>();
    assert!(row[1].parse::<u64>().unwrap() > 10_000, "{row:?}");
    assert_eq!(row[1], row[2]);
}

#[test]
fn injected_panics_and_slow_operators_lose_and_duplicate_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "in.jsonl",
        &(0..100_000).map(|i| format!("{{\"ts\":{},\"k\":{},\"v\":{}}}", 1_000_000 + i * 2, i % 37, i % 11)).collect::<Vec<_>>().join("\n"),
    );
    let body = format!(
        "batch_size: 256\nsources:\n  e:\n    type: file\n    path: {}\n    event_time: {{field: ts, max_out_of_orderness: 50ms}}\ntransforms:\n  w: {{type: window, inputs: [e], key_by: k, window: {{type: tumbling, size: 100ms}}, aggregates: {{n: count(), s: sum(v)}}}}\n",
        input.display()
    );
    let p = checkpointed(tmp.path(), "chaos-panics", 2, &body, "w");
    let out = chaos_ok(&p, &["--kills", "6", "--panics", "6", "--slow", "--seed", "5", "--max-delay", "150ms"]);
    let panics: u32 = out.split(" operator panics").next().and_then(|s| s.rsplit(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(panics >= 3, "most panic runs end by their panic: {out}");
    assert!(out.contains("slowed per batch, run by run: "), "{out}");
}

#[test]
fn checkpoints_are_listed_and_a_finished_job_starts_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "work_dir: {w}\ncheckpoint: {{interval: 20ms, dir: {d}, retain: 2}}\nsources:\n  g: {{type: generator, count: 3000, rate: 10000, fields: {{n: id}}}}\nsinks:\n  o: {{type: file, inputs: [g], path: {o}}}\n",
            w = tmp.path().join("w").display(),
            d = dir.display(),
            o = tmp.path().join("o.jsonl").display()
        ),
    );
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(lines(&tmp.path().join("o.jsonl")).len(), 3000);
    let l = run(&["checkpoints", "list", dir.to_str().unwrap()]);
    assert_eq!(l.code, 0, "{}", l.stderr);
    let kept = l.stdout.lines().filter(|x| x.trim_end().ends_with("yes")).count();
    assert_eq!(kept, 2, "retain: 2\n{}", l.stdout);
    assert!(l.stdout.lines().count() > 3, "{}", l.stdout);
    // The job finished: running it again starts from the beginning, not from a checkpoint.
    let again = run(&["run", p.to_str().unwrap()]);
    assert!(!again.stderr.contains("resuming"), "{}", again.stderr);
    assert_eq!(lines(&tmp.path().join("o.jsonl")).len(), 3000);
}

#[test]
fn a_failed_operator_restarts_the_job_from_its_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let pipeline = |name: &str, fault: &str, restart: &str| {
        write(
            tmp.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nwork_dir: {w}\nparallelism: 2\ncheckpoint: {{interval: 20ms}}\n{restart}\nsources:\n  g: {{type: generator, count: 20000, rate: 20000, fields: {{k: \"id % 50\", v: \"id % 7\", ts: id}}, event_time: {{field: ts}}}}\ntransforms:\n  f: {{type: fault, inputs: [g]{fault}}}\n  w: {{type: window, inputs: [f], key_by: k, window: {{type: tumbling, size: 1s}}, aggregates: {{n: count(), s: sum(v)}}}}\nsinks:\n  o: {{type: file, inputs: [w], path: {o}}}\n",
                w = tmp.path().join(name).display(),
                o = tmp.path().join(format!("{name}.jsonl")).display()
            ),
        )
    };
    let reference = pipeline("reference", "", "");
    let faulty = pipeline("faulty", ", panic_after: 4000", "restart: {max_attempts: 2, backoff: 10ms}");
    let no_restart = pipeline("fails", ", panic_after: 4000", "");
    let r = run(&["run", reference.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = run(&["run", faulty.to_str().unwrap()]);
    assert_eq!(f.code, 0, "{}", f.stderr);
    assert!(f.stderr.contains("restarting (1 of 2)") && f.stderr.contains("restarts after failures: 1"), "{}", f.stderr);
    let sorted = |name: &str| {
        let mut l: Vec<String> = std::fs::read_to_string(tmp.path().join(format!("{name}.jsonl"))).unwrap().lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(sorted("faulty"), sorted("reference"));
    assert_eq!(sorted("reference").len(), 1000);
    let e = run(&["run", no_restart.to_str().unwrap()]);
    assert_eq!(e.code, 1);
    assert!(e.stderr.contains("component `f` (instance 0) failed (internal error): panicked in process: injected fault after 4000 records"), "{}", e.stderr);
}

#[test]
fn savepoint_stops_the_job_and_run_resumes_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: sp\nwork_dir: {w}\nparallelism: 2\ncheckpoint: {{interval: 50ms}}\nsources:\n  g: {{type: generator, count: 20000, rate: 10000, fields: {{k: \"id % 20\", v: \"id % 7\", ts: id}}, event_time: {{field: ts}}}}\ntransforms:\n  w: {{type: window, inputs: [g], key_by: k, window: {{type: tumbling, size: 500ms}}, aggregates: {{n: count(), s: sum(v)}}}}\nsinks:\n  o: {{type: file, inputs: [w], path: {o}}}\n",
            w = tmp.path().join("work").display(),
            o = tmp.path().join("out.jsonl").display()
        ),
    );
    let ps = p.to_str().unwrap();
    let mut job = Guard(rill().args(["run", ps, "--from-scratch"]).stderr(std::process::Stdio::piped()).spawn().unwrap());
    // Wait until the job has completed a checkpoint, so that it is well under way.
    let ck = tmp.path().join("work/checkpoints");
    assert!(wait_for(std::time::Duration::from_secs(30), || rill_engine_complete(&ck)));
    let sp = run(&["savepoint", ps]);
    assert_eq!(sp.code, 0, "{}", sp.stderr);
    assert!(sp.stdout.starts_with("savepoint "), "{}", sp.stdout);
    assert!(job.0.wait().unwrap().success());
    let partial = lines(&tmp.path().join("out.jsonl")).len();
    assert!(partial < 800, "stopped before the end: {partial}");
    let r = run(&["run", ps]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming from checkpoint"), "{}", r.stderr);
    let mut all: Vec<String> = std::fs::read_to_string(tmp.path().join("out.jsonl")).unwrap().lines().map(String::from).collect();
    assert_eq!(all.len(), 800, "40 windows of 500 ms × 20 keys, each once");
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800);
}

fn rill_engine_complete(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("chk-"))).unwrap_or(false)
}

#[test]
fn keyed_state_moves_between_instances_when_parallelism_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = |name: &str| {
        format!(
            "name: rescale\nwork_dir: {w}\nparallelism: 2\ncheckpoint: {{interval: 50ms}}\nsources:\n  g: {{type: generator, count: 20000, rate: 10000, fields: {{k: \"id % 20\", v: \"id % 7\", ts: id}}, event_time: {{field: ts}}}}\ntransforms:\n  w: {{type: window, inputs: [g], key_by: k, window: {{type: tumbling, size: 500ms}}, aggregates: {{n: count(), s: sum(v)}}}}\n  a: {{type: aggregate, inputs: [w], key_by: k, aggregates: {{windows: count(), total: sum(n)}}}}\nsinks:\n  o: {{type: file, inputs: [w], path: {o}}}\n  t: {{type: file, inputs: [a], path: {t}}}\n",
            w = tmp.path().join(format!("{name}-work")).display(),
            o = tmp.path().join(format!("{name}.jsonl")).display(),
            t = tmp.path().join(format!("{name}-totals.jsonl")).display(),
        )
    };
    let reference = write(tmp.path(), "reference.yaml", &yaml("reference"));
    assert_eq!(run(&["run", reference.to_str().unwrap()]).code, 0);
    let p = write(tmp.path(), "rescaled.yaml", &yaml("rescaled"));
    let ps = p.to_str().unwrap();
    let mut job = Guard(rill().args(["run", ps]).stderr(std::process::Stdio::piped()).spawn().unwrap());
    assert!(wait_for(std::time::Duration::from_secs(30), || rill_engine_complete(&tmp.path().join("rescaled-work/checkpoints"))));
    let sp = run(&["savepoint", ps]);
    assert_eq!(sp.code, 0, "{}", sp.stderr);
    let savepoint = sp.stdout.trim().split(": ").nth(1).unwrap().to_string();
    assert!(job.0.wait().unwrap().success());
    // Resume with three window and aggregate instances instead of two.
    let r = run(&["run", ps, "--set", "transforms.w.parallelism=3", "--set", "transforms.a.parallelism=3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming from checkpoint"), "{}", r.stderr);
    let sorted = |f: &str| {
        let mut l: Vec<String> = std::fs::read_to_string(tmp.path().join(f)).unwrap().lines().map(String::from).collect();
        l.sort();
        l
    };
    assert_eq!(sorted("rescaled.jsonl"), sorted("reference.jsonl"));
    assert_eq!(sorted("rescaled-totals.jsonl"), sorted("reference-totals.jsonl"));
    // A source cannot change parallelism: its positions belong to its instances.
    let bad = run(&["run", ps, "--from", &savepoint, "--set", "sources.g.parallelism=3"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("sources and sinks cannot"), "{}", bad.stderr);
}

#[test]
fn a_large_operator_state_goes_to_a_file_and_survives_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    // 20,000 running groups: a snapshot of several hundred KB, stored as files (a full one and
    // deltas) beside the checkpoints rather than inline.
    let body = "sources:\n  g: {type: generator, count: 120000, rate: 200000, fields: {k: \"id % 20000\", v: \"id % 7\"}}\ntransforms:\n  a: {type: aggregate, inputs: [g], key_by: k, aggregates: {n: count(), s: sum(v)}}\n";
    let p = checkpointed(tmp.path(), "big-state", 1, body, "a");
    chaos_ok(&p, &["--kills", "5", "--seed", "3", "--max-delay", "150ms"]);
    // The harness keeps its checkpoints to itself; one plain run shows where the state went.
    let plain = run(&["run", p.to_str().unwrap(), "--from-scratch"]);
    assert_eq!(plain.code, 0, "{}", plain.stderr);
    let kept = rill_engine_latest(&dir);
    assert!(kept.contains("\"files\"") && kept.contains("shared/a.0."), "{kept}");
}

#[test]
fn incremental_window_checkpoints_survive_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ck");
    // 6,000 keys with open windows: state beyond the inline limit, so checkpoints are chains of
    // a full snapshot and deltas (paced, so that a checkpoint interval changes a fraction of the
    // windows whatever the machine's load).
    let body = "sources:\n  g: {type: generator, count: 60000, rate: 30000, fields: {k: \"id % 6000\", v: \"id % 7\", ts: \"id / 50\"}, event_time: {field: ts}}\ntransforms:\n  w: {type: window, inputs: [g], key_by: k, window: {type: tumbling, size: 1s}, aggregates: {n: count(), s: sum(v)}}\n";
    let p = checkpointed(tmp.path(), "incremental-windows", 2, body, "w");
    chaos_ok(&p, &["--kills", "8", "--seed", "9", "--max-delay", "300ms"]);
    // Deterministically: resume from a checkpoint whose state is a full snapshot plus deltas.
    let text = std::fs::read_to_string(&p).unwrap().replace("checkpoint: {", "checkpoint: {retain: 1000, ");
    std::fs::write(&p, text).unwrap();
    let reference = run(&["run", p.to_str().unwrap(), "--from-scratch"]);
    assert_eq!(reference.code, 0, "{}", reference.stderr);
    let sorted = |path: &std::path::Path| {
        let mut l: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(String::from).collect();
        l.sort();
        l
    };
    let expected = sorted(&tmp.path().join("out.jsonl"));
    let with_deltas = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|path| {
            let Ok(cp) = rill::engine::checkpoint::load(path) else { return false };
            cp.instances.iter().any(|i| {
                matches!(&i.state, Some(rill::engine::checkpoint::SavedState::Operator(o)) if matches!(&o.snapshot, Some(rill::engine::checkpoint::Stored::Files(f)) if f.len() >= 2))
            })
        })
        .min()
        .expect("some checkpoint used a delta");
    let resumed = run(&["run", p.to_str().unwrap(), "--from", with_deltas.to_str().unwrap()]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    // The file sink truncated its output to what that checkpoint had committed, then went on.
    let got = sorted(&tmp.path().join("out.jsonl"));
    let differing = got.iter().zip(&expected).filter(|(a, b)| a != b).count() + got.len().abs_diff(expected.len());
    assert!(differing == 0, "resumed from {}: {differing} of {} results differ", with_deltas.display(), expected.len());
}

/// The newest checkpoint's metadata under `dir`.
fn rill_engine_latest(dir: &std::path::Path) -> String {
    let mut all: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.join("_metadata").exists()).collect();
    all.sort();
    std::fs::read_to_string(all.last().expect("a checkpoint").join("_metadata")).unwrap()
}

/// One source ends at once, the other runs on: checkpoints go on (the ended one's final
/// position stands for it), a run killed after that resumes with the ended source ended, and
/// random kills lose and duplicate nothing.
#[test]
fn checkpoints_go_on_after_a_source_ends_and_a_resumed_run_starts_it_ended() {
    let tmp = tempfile::tempdir().unwrap();
    let early = write(tmp.path(), "early.jsonl", &(0..50).map(|i| format!("{{\"n\":{i},\"from\":\"early\"}}\n")).collect::<String>());
    let body = format!(
        "sources:\n  early: {{type: file, path: {}}}\n  late: {{type: generator, count: 20000, rate: 4000, fields: {{n: id, from: \"'late'\"}}}}\ntransforms:\n  both: {{type: map, inputs: [early, late], fields: {{k: \"from + '-' + string(n)\"}}}}\n",
        early.display()
    );
    let p = checkpointed(tmp.path(), "after-finish", 1, &body, "both");
    let ck = tmp.path().join("ck");
    let mut job = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(std::process::Stdio::null()).spawn().unwrap());
    // A checkpoint taken after `early` ended, with `late` still running.
    let after_end = || {
        std::fs::read_dir(&ck)
            .map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("chk-")).any(|e| std::fs::read_to_string(e.path().join("_metadata")).is_ok_and(|m| m.contains("\"finished\":true"))))
            .unwrap_or(false)
    };
    assert!(wait_for(std::time::Duration::from_secs(60), || after_end() || job.0.try_wait().unwrap().is_some()));
    assert!(job.0.try_wait().unwrap().is_none(), "the job ended before a checkpoint was taken after `early` ended");
    job.0.kill().unwrap();
    job.0.wait().unwrap();
    let r = run(&["run", p.to_str().unwrap(), "-v"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("source `early` instance 0 had ended before the checkpoint; it ends at once"), "{}", r.stderr);
    let mut keys: Vec<String> = lines(&tmp.path().join("out.jsonl")).iter().map(|v| v["k"].as_str().unwrap().to_string()).collect();
    keys.sort();
    let n = keys.len();
    keys.dedup();
    assert_eq!((n, keys.len()), (20_050, 20_050), "every record once");
    // Random kills, resumed each time: the same output as a run without failures.
    let _ = std::fs::remove_dir_all(&ck);
    chaos_ok(&p, &["--kills", "8", "--seed", "3", "--max-delay", "800ms"]);
}
