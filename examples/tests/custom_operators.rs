//! The example custom operators, through the `rill-custom` binary, against direct computations.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn lines(p: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn rill_custom(args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_rill-custom")).args(args).current_dir(root()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn velocity_counts_recent_transactions_per_card() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("all.jsonl");
    rill_custom(&[
        "run".into(),
        "examples/velocity.yaml".into(),
        "--set".into(),
        format!("sinks.out.path={}", out.display()),
        "--set".into(),
        "sinks.out.inputs=[checked]".into(),
        "--set".into(),
        format!("work_dir={}", tmp.path().join("w").display()),
    ]);
    // Reference, in arrival order: transactions of the card seen so far within (ts - 60 s, ts].
    let input = lines(&root().join("examples/data/transactions.jsonl"));
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    let mut expected: HashMap<(String, i64), i64> = HashMap::new();
    for t in &input {
        let (card, ts) = (t["card"].as_str().unwrap().to_string(), t["ts"].as_i64().unwrap());
        let times = seen.entry(card.clone()).or_default();
        times.push(ts);
        let recent = times.iter().filter(|&&x| x > ts - 60_000 && x <= ts).count() as i64;
        expected.insert((card, ts), recent);
    }
    let got = lines(&out);
    assert_eq!(got.len(), input.len());
    let mut flagged = 0;
    for r in &got {
        let k = (r["card"].as_str().unwrap().to_string(), r["ts"].as_i64().unwrap());
        assert_eq!(r["recent"].as_i64().unwrap(), expected[&k], "{r}");
        assert_eq!(r["flagged"].as_bool().unwrap(), expected[&k] > 3);
        flagged += r["flagged"].as_bool().unwrap() as usize;
    }
    assert!(flagged > 5, "the sample has bursts to flag");
}

#[test]
fn dedupe_keeps_first_of_each_order() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("u.jsonl");
    rill_custom(&[
        "run".into(),
        "examples/dedupe.yaml".into(),
        "--set".into(),
        format!("sinks.out.path={}", out.display()),
        "--set".into(),
        format!("work_dir={}", tmp.path().join("w").display()),
    ]);
    let input = lines(&root().join("examples/data/orders_with_repeats.jsonl"));
    let mut distinct: Vec<String> = input.iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect();
    distinct.sort();
    distinct.dedup();
    let mut got: Vec<String> = lines(&out).iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect();
    got.sort();
    assert_eq!(got, distinct);
    assert!(input.len() > got.len());
}

#[test]
fn generator_velocity_file_survives_twenty_kills() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("p.yaml");
    std::fs::write(
        &p,
        format!(
            "name: chaos-velocity\nparallelism: 2\ncheckpoint: {{interval: 30ms}}\nsources:\n  tx:\n    type: generator\n    count: 30000\n    rate: 30000\n    fields: {{card: \"id % 300\", ts: \"id * 2\", amount: \"id % 97\"}}\n    event_time: {{field: ts}}\ntransforms:\n  checked: {{type: velocity, inputs: [tx], key_by: card, max_transactions: 3, within: 2s}}\nsinks:\n  out: {{type: file, inputs: [checked], path: {}}}\n",
            tmp.path().join("out.jsonl").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rill-custom"))
        .args(["chaos", p.to_str().unwrap(), "--kills", "20", "--seed", "4", "--max-delay", "150ms"])
        .current_dir(root())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("20 kills") && stdout.contains("ok: no record lost, none duplicated"), "{stdout}");
}

#[test]
fn velocity_state_moves_with_its_cards_when_parallelism_changes() {
    // `velocity` writes no snapshot or restore: its value state comes from the context, and the
    // runtime checkpoints it and splits it by key group when the instances change.
    let tmp = tempfile::tempdir().unwrap();
    let yaml = |name: &str| {
        format!(
            "name: {name}\nwork_dir: {w}\nparallelism: 2\ncheckpoint: {{interval: 50ms}}\nsources:\n  tx: {{type: generator, count: 30000, rate: 10000, fields: {{card: \"id % 300\", ts: \"id * 2\"}}, event_time: {{field: ts}}}}\ntransforms:\n  checked: {{type: velocity, inputs: [tx], key_by: card, max_transactions: 3, within: 2s}}\nsinks:\n  out: {{type: file, inputs: [checked], path: {o}}}\n",
            w = tmp.path().join(format!("{name}-work")).display(),
            o = tmp.path().join(format!("{name}.jsonl")).display()
        )
    };
    let custom = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rill-custom"));
        c.current_dir(root());
        c
    };
    let reference = tmp.path().join("reference.yaml");
    std::fs::write(&reference, yaml("reference")).unwrap();
    assert!(custom().args(["run", reference.to_str().unwrap()]).status().unwrap().success());
    let p = tmp.path().join("rescaled.yaml");
    std::fs::write(&p, yaml("rescaled")).unwrap();
    let ps = p.to_str().unwrap();
    let mut job = custom().args(["run", ps]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let history = tmp.path().join("rescaled-work/checkpoints/history.jsonl");
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_to_string(&history).map(|h| h.lines().count()).unwrap_or(0) < 3 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let sp = custom().args(["savepoint", ps]).output().unwrap();
    assert!(sp.status.success(), "{}", String::from_utf8_lossy(&sp.stderr));
    assert!(job.wait().unwrap().success());
    let resumed = custom().args(["run", ps, "--set", "transforms.checked.parallelism=3"]).output().unwrap();
    let err = String::from_utf8_lossy(&resumed.stderr);
    assert!(resumed.status.success() && err.contains("resuming from checkpoint"), "{err}");
    let sorted = |f: &str| {
        let mut l: Vec<String> = std::fs::read_to_string(tmp.path().join(f)).unwrap().lines().map(String::from).collect();
        l.sort();
        l
    };
    let (got, want) = (sorted("rescaled.jsonl"), sorted("reference.jsonl"));
    assert_eq!(got.len(), 30000);
    assert!(got == want, "{} of 30000 lines differ", got.iter().zip(&want).filter(|(a, b)| a != b).count());
}

#[test]
fn the_schema_of_a_custom_binary_has_its_operators_and_their_options() {
    let out = Command::new(env!("CARGO_BIN_EXE_rill-custom")).arg("schema").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let transforms = &schema["properties"]["transforms"]["additionalProperties"];
    let types: Vec<&str> = transforms["properties"]["type"]["enum"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert!(types.contains(&"dedupe") && types.contains(&"velocity") && types.contains(&"window"), "{types:?}");
    let dedupe = transforms["allOf"].as_array().unwrap().iter().find(|c| c["if"]["properties"]["type"]["const"] == "dedupe").unwrap();
    assert!(dedupe["then"]["properties"].get("key_by").is_some() && dedupe["then"]["additionalProperties"] == false, "{dedupe}");
}
