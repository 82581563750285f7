//! The orders demo (`examples/orders.yaml`) runs unchanged and its outputs are right: checked
//! against a direct computation over the same input file.

mod common;

use std::collections::BTreeMap;

use common::*;

struct Expected {
    /// Per customer: the running (count, total) after each of its big orders, in input order.
    running: BTreeMap<String, Vec<(i64, f64)>>,
    big: Vec<serde_json::Value>,
}

fn expected() -> Expected {
    let mut running: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    let mut big = Vec::new();
    for o in lines(&root().join("examples/data/orders.jsonl")) {
        let amount = o["amount"].as_f64().unwrap();
        if amount > 100.0 && o["country"] != "US" {
            let steps = running.entry(o["customer"].as_str().unwrap().to_string()).or_default();
            let (n, t) = steps.last().copied().unwrap_or((0, 0.0));
            steps.push((n + 1, t + amount * 0.92));
            big.push(o);
        }
    }
    Expected { running, big }
}

fn check_output(path: &std::path::Path, exp: &Expected) {
    let mut got: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
    for r in lines(path) {
        let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["customer", "orders", "total"], "{r}");
        got.entry(r["customer"].as_str().unwrap().into()).or_default().push((r["orders"].as_i64().unwrap(), r["total"].as_f64().unwrap()));
    }
    assert_eq!(got.len(), exp.running.len());
    for (c, steps) in &exp.running {
        let g = &got[c];
        assert_eq!(g.len(), steps.len(), "customer {c}");
        for ((gn, gt), (en, et)) in g.iter().zip(steps) {
            assert_eq!(gn, en, "customer {c}");
            assert!((gt - et).abs() < 1e-6, "customer {c}: {gt} vs {et}");
        }
    }
}

#[test]
fn demo_runs_unchanged_and_is_right() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("per_customer.jsonl");
    let r = run(&[
        "run",
        "examples/orders.yaml",
        "--set",
        &format!("sinks.out.path={}", out.display()),
        "--set",
        &format!("work_dir={}", tmp.path().join("work").display()),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let exp = expected();
    assert!(exp.big.len() > 100, "the sample has enough matching orders");
    check_output(&out, &exp);

    // The audit sink printed exactly the filtered orders, unchanged.
    let mut audit: Vec<serde_json::Value> = r.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut big = exp.big.clone();
    let id = |v: &serde_json::Value| v["order_id"].as_str().unwrap().to_string();
    audit.sort_by_key(id);
    big.sort_by_key(id);
    assert_eq!(audit, big);

    // The summary counts every component's records.
    assert!(r.stderr.contains("job `orders-demo` finished"), "{}", r.stderr);
    let row = r.stderr.lines().find(|l| l.starts_with("big ")).unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[3..5], ["300", &exp.big.len().to_string()]);
}

#[test]
fn results_do_not_depend_on_parallelism() {
    let exp = expected();
    for p in ["1", "3"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("o.jsonl");
        let r = run(&[
            "run",
            "examples/orders.yaml",
            "-q",
            "--set",
            &format!("parallelism={p}"),
            "--set",
            &format!("sinks.out.path={}", out.display()),
            "--set",
            &format!("work_dir={}", tmp.path().display()),
        ]);
        assert_eq!(r.code, 0, "p={p}: {}", r.stderr);
        check_output(&out, &exp);
    }
}
