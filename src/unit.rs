//! `rill test PIPELINE.yaml`: unit tests declared in the pipeline, as `vector test` runs them.
//!
//! ```yaml
//! tests:
//!   - name: big orders are flagged
//!     inputs:                      # records for sources, in order (a source not named gets none)
//!       orders: [{id: 1, amount: 150}, {id: 2, amount: 10}]
//!     outputs:                     # what a component emits (any component; `name.late` a port)
//!       big: [{id: 1, amount: 150}]
//!     dead_letters: 0              # optional (default 0): how many records are rejected
//! ```
//!
//! Each test runs the pipeline itself, for real, with its sources reading the given records (their
//! `event_time` kept), every sink replaced by one that discards (nothing outside is written),
//! each named component's output captured, one instance per component, one record a batch and
//! `watermark_interval: 1ms` unless the source sets it (so the watermark moves after each record,
//! as if they came one at a time), no checkpoints, and a work folder of its own. The output must equal the expected records as a multiset: the same records,
//! in any order (numbers equal by value: `2` is `2.0`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rill_engine::config::{from_node, ConfigError, ConfigErrors, Node, NodeKind, Role};

use crate::{JobPlan, PipelineConfig, Registry, RunOptions};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    inputs: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(default)]
    outputs: BTreeMap<String, Vec<serde_json::Value>>,
    #[serde(default)]
    dead_letters: u64,
}

/// Runs the tests of `pipeline` (those whose name contains `only`, if given): exit 0 if all
/// pass, 1 if one fails, 2 if the pipeline or its tests are not valid.
pub fn main(pipeline: &Path, only: Option<&str>, registry: &Registry) -> ExitCode {
    match run_all(pipeline, only, registry) {
        Ok((passed, failed)) => {
            eprintln!("\n{} test{}: {passed} passed, {failed} failed", passed + failed, if passed + failed == 1 { "" } else { "s" });
            if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

fn run_all(pipeline: &Path, only: Option<&str>, registry: &Registry) -> Result<(usize, usize), ConfigErrors> {
    let file = pipeline.display().to_string();
    let text = std::fs::read_to_string(pipeline).map_err(|e| ConfigError::new(None, format!("cannot read pipeline file {file}: {e}")))?;
    let mut root = PipelineConfig::document(&text, &file)?;
    let tests = root.get("tests").cloned();
    root.remove_path(&["tests"]);
    let Some(tests) = tests else {
        return Err(ConfigError::new(None, format!("{file} has no `tests:`")).hint("add `tests: [{name: ..., inputs: {SOURCE: [records]}, outputs: {COMPONENT: [records]}}]`").into());
    };
    let cases: Vec<(&Node, Case)> = match &tests.kind {
        NodeKind::Seq(items) => items.iter().map(|n| from_node::<Case>(n).map(|c| (n, c)).map_err(ConfigError::from)).collect::<Result<_, _>>()?,
        _ => return Err(ConfigError::new(Some(&tests.span), "`tests` is a list of tests").into()),
    };
    // Its structure, for the names the tests use; the rest is checked as each test builds it
    // (with its sources replaced: a file a source reads need not exist).
    let config = PipelineConfig::from_root(root.clone(), &file, &[])?;
    let (mut passed, mut failed) = (0, 0);
    for (at, case) in cases.iter().filter(|(_, c)| only.is_none_or(|o| c.name.contains(o))) {
        check_names(at, case, &config)?;
        let dir = std::env::temp_dir().join(format!("rill-test-{}-{}", std::process::id(), passed + failed));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| ConfigError::new(None, format!("cannot make {}: {e}", dir.display())))?;
        let outcome = run_case(&root, &file, case, &dir, registry);
        let _ = std::fs::remove_dir_all(&dir);
        match outcome? {
            Ok(()) => {
                passed += 1;
                eprintln!("test `{}` ... ok", case.name);
            }
            Err(why) => {
                failed += 1;
                eprintln!("test `{}` ({}) ... FAILED\n{why}", case.name, at.span);
            }
        }
    }
    if passed + failed == 0 {
        return Err(ConfigError::new(Some(&tests.span), match only {
            Some(o) => format!("no test's name contains `{o}`"),
            None => "`tests` is empty".into(),
        })
        .into());
    }
    Ok((passed, failed))
}

/// Every source named in `inputs` is a source; every component named in `outputs` exists.
fn check_names(node: &Node, case: &Case, config: &PipelineConfig) -> Result<(), ConfigErrors> {
    let role = |name: &str| config.components.iter().find(|c| c.name == name).map(|c| c.role);
    // Where a name is written, for the error.
    let at = |section: &str, name: &str| node.get(section).and_then(Node::entries).and_then(|e| e.iter().find(|(k, _)| k.as_str() == Some(name))).map(|(k, _)| k.span.clone());
    let mut errors = Vec::new();
    for name in case.inputs.keys() {
        if role(name) != Some(Role::Source) {
            errors.push(ConfigError::new(at("inputs", name).as_ref(), format!("test `{}`: `{name}` is not a source of the pipeline", case.name)));
        }
    }
    for name in case.outputs.keys() {
        let component = name.split('.').next().unwrap_or_default();
        if role(component).is_none() {
            errors.push(ConfigError::new(at("outputs", name).as_ref(), format!("test `{}`: the pipeline has no component `{component}`", case.name)));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A small YAML value, for the pieces the test puts into the pipeline.
fn yaml(text: &str) -> Node {
    Node::parse(text, "<rill test>").expect("valid YAML made here")
}

fn quoted(p: &Path) -> String {
    serde_json::to_string(&p.display().to_string()).expect("a string")
}

/// Runs one test: `Ok(Err(why))` when it fails.
fn run_case(root: &Node, file: &str, case: &Case, dir: &Path, registry: &Registry) -> Result<Result<(), String>, ConfigErrors> {
    let mut root = root.clone();
    for key in ["checkpoint", "restart", "http", "audit"] {
        root.remove_path(&[key]);
    }
    let set = |root: &mut Node, path: &[&str], value: Node| root.set_path(path, value).map_err(|e| ConfigErrors::from(ConfigError::new(None, e)));
    set(&mut root, &["parallelism"], yaml("1"))?;
    // One record a batch: the watermark moves after each, as if records came one at a time.
    set(&mut root, &["batch_size"], yaml("1"))?;
    set(&mut root, &["work_dir"], yaml(&quoted(&dir.join("work"))))?;
    let dead = dir.join("dead.jsonl");
    set(&mut root, &["dead_letter"], yaml(&format!("{{type: file, path: {}}}", quoted(&dead))))?;
    // Sources read the test's records (keeping their time options); sinks discard.
    let names = |root: &Node, section: &str| -> Vec<String> {
        root.get(section).and_then(Node::entries).map(|e| e.iter().filter_map(|(k, _)| k.as_str().map(str::to_string)).collect()).unwrap_or_default()
    };
    for source in names(&root, "sources") {
        let input = dir.join(format!("in-{source}.jsonl"));
        let records = case.inputs.get(&source).map(Vec::as_slice).unwrap_or_default();
        let text: String = records.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(&input, text).map_err(|e| ConfigError::new(None, format!("cannot write {}: {e}", input.display())))?;
        let mut new = yaml(&format!("{{type: file, path: {}}}", quoted(&input)));
        keep(&root, &["sources", &source], &["event_time", "ingestion_time", "redact"], &mut new);
        if new.get("event_time").is_some_and(|e| e.entries().is_some() && e.get("watermark_interval").is_none()) {
            new.set_path(&["event_time", "watermark_interval"], yaml("1ms")).map_err(|e| ConfigErrors::from(ConfigError::new(None, e)))?;
        }
        set(&mut root, &["sources", &source], new)?;
    }
    for transform in names(&root, "transforms") {
        root.remove_path(&["transforms", &transform, "parallelism"]);
    }
    for sink in names(&root, "sinks") {
        let mut new = yaml("{type: blackhole}");
        keep(&root, &["sinks", &sink], &["inputs"], &mut new);
        set(&mut root, &["sinks", &sink], new)?;
    }
    let mut captured: Vec<(&str, PathBuf)> = Vec::new();
    for (i, name) in case.outputs.keys().enumerate() {
        let path = dir.join(format!("out-{i}.jsonl"));
        let sink = format!("{{type: file, inputs: [{}], path: {}}}", serde_json::to_string(name).expect("a string"), quoted(&path));
        set(&mut root, &["sinks", &format!("rill_test_output_{i}")], yaml(&sink))?;
        captured.push((name, path));
    }
    let plan = JobPlan::build(PipelineConfig::from_root(root, file, &[])?, registry)?;
    let opts = RunOptions { handle_ctrl_c: false, ..RunOptions::default() };
    if let Err(e) = crate::run(plan, opts) {
        return Ok(Err(format!("  the job failed: {e}")));
    }
    let mut why = String::new();
    for ((name, path), want) in captured.iter().zip(case.outputs.values()) {
        let got: Vec<serde_json::Value> = std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let (missing, unexpected) = difference(want, &got);
        if !missing.is_empty() || !unexpected.is_empty() {
            why += &format!("  `{name}`: {} records expected, {} emitted\n", want.len(), got.len());
            for r in &missing {
                why += &format!("    missing:    {r}\n");
            }
            for r in &unexpected {
                why += &format!("    unexpected: {r}\n");
            }
        }
    }
    let dead: Vec<String> = std::fs::read_to_string(&dead).unwrap_or_default().lines().map(str::to_string).collect();
    if dead.len() as u64 != case.dead_letters {
        why += &format!("  {} records dead-lettered, {} expected (`dead_letters:`)\n", dead.len(), case.dead_letters);
        for d in dead.iter().take(5) {
            why += &format!("    {d}\n");
        }
    }
    Ok(if why.is_empty() { Ok(()) } else { Err(why) })
}

/// Copies the options `keys` of the component at `path` into `into` (a map).
fn keep(root: &Node, path: &[&str], keys: &[&str], into: &mut Node) {
    let old = path.iter().try_fold(root, |n, p| n.get(p));
    let NodeKind::Map(entries) = &mut into.kind else { return };
    for key in keys {
        if let Some(v) = old.and_then(|o| o.get(key)) {
            entries.push((yaml(key), v.clone()));
        }
    }
}

/// The expected records not emitted, and the emitted ones not expected (each record matched
/// once).
fn difference<'a>(want: &'a [serde_json::Value], got: &'a [serde_json::Value]) -> (Vec<&'a serde_json::Value>, Vec<&'a serde_json::Value>) {
    let mut unmatched: Vec<&serde_json::Value> = got.iter().collect();
    let mut missing = Vec::new();
    for w in want {
        match unmatched.iter().position(|g| same(w, g)) {
            Some(i) => {
                unmatched.swap_remove(i);
            }
            None => missing.push(w),
        }
    }
    (missing, unmatched)
}

/// Equal values, numbers by value (`2` and `2.0` are the same).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => x.as_f64() == y.as_f64(),
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Object(x), Object(y)) => x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w))),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outputs_match_as_multisets_with_numbers_by_value() {
        let want = [json!({"n": 2, "k": "a"}), json!({"n": 2, "k": "a"}), json!({"n": 1.5})];
        let got = [json!({"n": 1.5}), json!({"k": "a", "n": 2.0}), json!({"n": 3})];
        let (missing, unexpected) = difference(&want, &got);
        assert_eq!(missing, vec![&json!({"n": 2, "k": "a"})], "the second copy is missing");
        assert_eq!(unexpected, vec![&json!({"n": 3})]);
        assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})), "no extra fields");
    }
}
