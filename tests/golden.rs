//! Golden tests: each example pipeline, run unchanged but for where its files go, must give
//! exactly the checked-in output under `tests/golden/` (lines sorted: instances run in parallel,
//! so only the order between keys may vary). After an intended change of output, regenerate
//! with `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff.

mod common;

use common::*;

/// (pipeline, [(sink, golden file)])
const CASES: &[(&str, &[(&str, &str)])] = &[
    ("examples/orders.yaml", &[("out", "orders/per_customer.jsonl")]),
    ("examples/windows.yaml", &[("results", "windows/windows.jsonl"), ("late", "windows/late.jsonl")]),
];

fn sorted_lines(path: &std::path::Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(path).unwrap().lines().map(str::to_string).collect();
    l.sort();
    l
}

#[test]
fn example_pipelines_match_their_golden_output() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (pipeline, sinks) in CASES {
        for parallelism in ["1", "2"] {
            let tmp = tempfile::tempdir().unwrap();
            let mut args: Vec<String> = vec![
                "run".into(),
                pipeline.to_string(),
                "-q".into(),
                "--set".into(),
                format!("work_dir={}", tmp.path().join("work").display()),
                "--set".into(),
                format!("parallelism={parallelism}"),
            ];
            for (sink, _) in *sinks {
                args.push("--set".into());
                args.push(format!("sinks.{sink}.path={}", tmp.path().join(sink).display()));
            }
            let r = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
            assert_eq!(r.code, 0, "{pipeline}: {}", r.stderr);
            for (sink, golden) in *sinks {
                let got = sorted_lines(&tmp.path().join(sink));
                let golden = root().join("tests/golden").join(golden);
                if update {
                    std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
                    std::fs::write(&golden, got.join("\n") + "\n").unwrap();
                    continue;
                }
                let want = sorted_lines(&golden);
                assert_eq!(got, want, "{pipeline} (parallelism {parallelism}), sink `{sink}` differs from {}", golden.display());
            }
        }
    }
}
