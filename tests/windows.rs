//! Windows end to end: the demo pipeline's results and late data, and a reference check —
//! for random inputs, out of order within the allowed out-of-orderness, every window kind gives
//! exactly what a direct computation over the same file gives, at any parallelism and batch
//! size.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use proptest::prelude::*;
use rill::{JobPlan, PipelineConfig, RunOptions};

#[test]
fn windows_demo_accounts_for_every_record() {
    let tmp = tempfile::tempdir().unwrap();
    let (res, late) = (tmp.path().join("w.jsonl"), tmp.path().join("late.jsonl"));
    let r = run(&[
        "run",
        "examples/windows.yaml",
        "--set",
        &format!("sinks.results.path={}", res.display()),
        "--set",
        &format!("sinks.late.path={}", late.display()),
        "--set",
        &format!("work_dir={}", tmp.path().join("work").display()),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let input = lines(&root().join("examples/data/events.jsonl"));
    let windows = lines(&res);
    let late = lines(&late);
    assert!(!late.is_empty(), "the sample has records beyond the allowed lateness");

    // The last emission of each window is final; earlier ones were updated by late records.
    let mut last: BTreeMap<(String, i64), serde_json::Value> = BTreeMap::new();
    let mut emissions: HashMap<(String, i64), usize> = HashMap::new();
    for w in &windows {
        let k = (w["key"].as_str().unwrap().to_string(), w["window_start"].as_i64().unwrap());
        assert_eq!(w["window_end"].as_i64().unwrap() - k.1, 1000);
        *emissions.entry(k.clone()).or_default() += 1;
        last.insert(k, w.clone());
    }
    assert!(emissions.values().any(|&n| n > 1), "some window was updated by a record within the lateness");
    let counted: i64 = last.values().map(|w| w["n"].as_i64().unwrap()).sum();
    assert_eq!(counted + late.len() as i64, input.len() as i64, "every record is in one window or in `late`, once");

    // Each final window holds exactly the input records of its key and second, less the late ones.
    let late_set: Vec<&serde_json::Value> = late.iter().collect();
    for ((key, start), w) in &last {
        let mine: Vec<&serde_json::Value> = input
            .iter()
            .filter(|e| e["key"] == key.as_str() && e["ts"].as_i64().unwrap().div_euclid(1000) * 1000 == *start)
            .filter(|e| !late_set.contains(e))
            .collect();
        assert_eq!(w["n"].as_i64().unwrap(), mine.len() as i64, "{key} {start}");
        let total: f64 = mine.iter().map(|e| e["value"].as_f64().unwrap()).sum();
        assert!((w["total"].as_f64().unwrap() - total).abs() < 1e-6);
        let peak = mine.iter().map(|e| e["value"].as_f64().unwrap()).fold(f64::MIN, f64::max);
        assert_eq!(w["peak"].as_f64().unwrap(), peak);
    }
}

#[derive(Debug, Clone)]
enum Kind {
    Tumbling(i64),
    Sliding(i64, i64),
    Session(i64),
    Count(usize),
}

fn yaml_window(k: &Kind) -> String {
    match k {
        Kind::Tumbling(s) => format!("{{type: tumbling, size: {s}ms}}"),
        Kind::Sliding(s, sl) => format!("{{type: sliding, size: {s}ms, slide: {sl}ms}}"),
        Kind::Session(g) => format!("{{type: session, gap: {g}ms}}"),
        Kind::Count(n) => format!("{{type: count, size: {n}}}"),
    }
}

/// (key, window_start, window_end) → (count, sum), computed directly.
fn reference(kind: &Kind, events: &[(i64, i64, i64)]) -> BTreeMap<(i64, i64, i64), (i64, i64)> {
    let mut out: BTreeMap<(i64, i64, i64), (i64, i64)> = BTreeMap::new();
    let mut add = |k: (i64, i64, i64), v: i64| {
        let e = out.entry(k).or_default();
        e.0 += 1;
        e.1 += v;
    };
    match kind {
        Kind::Tumbling(size) => events.iter().for_each(|&(key, ts, v)| {
            let s = ts.div_euclid(*size) * size;
            add((key, s, s + size), v)
        }),
        Kind::Sliding(size, slide) => events.iter().for_each(|&(key, ts, v)| {
            let mut s = ts.div_euclid(*slide) * slide;
            while s > ts - size {
                add((key, s, s + size), v);
                s -= slide;
            }
        }),
        Kind::Session(gap) => {
            let mut by_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
            events.iter().for_each(|&(key, ts, v)| by_key.entry(key).or_default().push((ts, v)));
            for (key, mut evs) in by_key {
                evs.sort();
                let mut i = 0;
                while i < evs.len() {
                    let mut j = i;
                    while j + 1 < evs.len() && evs[j + 1].0 - evs[j].0 <= *gap {
                        j += 1;
                    }
                    for &(_, v) in &evs[i..=j] {
                        add((key, evs[i].0, evs[j].0 + gap), v);
                    }
                    i = j + 1;
                }
            }
        }
        Kind::Count(n) => {
            let mut by_key: BTreeMap<i64, Vec<(i64, i64)>> = BTreeMap::new();
            events.iter().for_each(|&(key, ts, v)| by_key.entry(key).or_default().push((ts, v)));
            for (key, evs) in by_key {
                for chunk in evs.chunks(*n).filter(|c| c.len() == *n) {
                    let lo = chunk.iter().map(|e| e.0).min().unwrap();
                    let hi = chunk.iter().map(|e| e.0).max().unwrap();
                    for &(_, v) in chunk {
                        add((key, lo, hi + 1), v);
                    }
                }
            }
        }
    }
    out
}

fn run_windows(kind: &Kind, events: &[(i64, i64, i64)], parallelism: u32, batch: usize) -> BTreeMap<(i64, i64, i64), (i64, i64)> {
    run_windows_cached(kind, events, parallelism, batch, 1_000_000)
}

fn run_windows_cached(kind: &Kind, events: &[(i64, i64, i64)], parallelism: u32, batch: usize, cache: usize) -> BTreeMap<(i64, i64, i64), (i64, i64)> {
    let tmp = tempfile::tempdir().unwrap();
    let input: String = events.iter().map(|(k, ts, v)| format!("{{\"k\":{k},\"ts\":{ts},\"v\":{v}}}\n")).collect();
    let inp = write(tmp.path(), "in.jsonl", &input);
    let out = tmp.path().join("out.jsonl");
    let yaml = format!(
        "work_dir: {w}\nstate: {{cache_entries: {cache}}}\nparallelism: {parallelism}\nbatch_size: {batch}\nsources:\n  e:\n    type: file\n    path: {i}\n    event_time: {{field: ts, max_out_of_orderness: 200ms}}\ntransforms:\n  w:\n    type: window\n    inputs: [e]\n    key_by: k\n    window: {win}\n    aggregates: {{n: count(), s: sum(v)}}\nsinks:\n  o: {{type: file, inputs: [w], path: {o}}}\n  late: {{type: file, inputs: [w.late], path: {l}}}\n",
        w = tmp.path().join("work").display(),
        i = inp.display(),
        win = yaml_window(kind),
        o = out.display(),
        l = tmp.path().join("late.jsonl").display(),
    );
    let plan = JobPlan::build(PipelineConfig::parse(&yaml, "ref.yaml", &[]).unwrap(), &rill::registry()).unwrap();
    let report = rill::run(plan, RunOptions { handle_ctrl_c: false, ..Default::default() }).unwrap();
    assert_eq!(report.dead_letters, 0);
    assert!(lines(&tmp.path().join("late.jsonl")).is_empty(), "nothing is late within the out-of-orderness");
    let mut got = BTreeMap::new();
    for r in lines(&out) {
        let k = (r["k"].as_i64().unwrap(), r["window_start"].as_i64().unwrap(), r["window_end"].as_i64().unwrap());
        assert!(got.insert(k, (r["n"].as_i64().unwrap(), r["s"].as_i64().unwrap())).is_none(), "window {k:?} emitted twice");
    }
    got
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![
        (50i64..1000).prop_map(Kind::Tumbling),
        (1i64..5, 20i64..300).prop_map(|(k, slide)| Kind::Sliding(slide * k, slide)),
        (10i64..400).prop_map(Kind::Session),
        (1usize..6).prop_map(Kind::Count),
    ]
}

/// Events (key, ts, value) in an arrival order that is out of order by less than 200 ms.
fn events() -> impl Strategy<Value = Vec<(i64, i64, i64)>> {
    proptest::collection::vec((0i64..4, 1i64..60, 0i64..199, -50i64..100), 1..200).prop_map(|raw| {
        let mut t = 1_000_000;
        let mut evs: Vec<(i64, i64, i64, i64)> = raw
            .into_iter()
            .map(|(k, step, jitter, v)| {
                t += step;
                (t + jitter, k, t, v) // (arrival position, key, ts, value)
            })
            .collect();
        evs.sort();
        evs.into_iter().map(|(_, k, ts, v)| (k, ts, v)).collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn windows_match_a_direct_computation(kind in kinds(), events in events(), parallelism in 1u32..4, batch in 1usize..50) {
        let expected = reference(&kind, &events);
        let got = run_windows(&kind, &events, parallelism, batch);
        prop_assert_eq!(got, expected);
    }
}

/// More windows open at once than the state cache holds: they spill to sled and come back,
/// and the results are still exact.
#[test]
fn state_larger_than_the_cache() {
    let events: Vec<(i64, i64, i64)> = (0..20_000).map(|i| (i % 3_000, 1_000_000 + i / 10, i % 7)).collect();
    for kind in [Kind::Tumbling(1000), Kind::Session(50)] {
        let expected = reference(&kind, &events);
        assert!(expected.len() >= 3_000);
        let got = run_windows_cached(&kind, &events, 2, 256, 100);
        assert_eq!(got, expected, "{kind:?}");
    }
}
