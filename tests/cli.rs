//! `rill validate`, `rill graph`, `--set`, help and exit codes.

mod common;

use common::*;

#[test]
fn validate_accepts_the_examples() {
    // The examples whose inputs are in the repository (or not files); the others run in their
    // own tests (fraud, MNIST, the custom operators' in examples/tests).
    for p in ["examples/orders.yaml", "examples/w0.yaml", "examples/w1.yaml", "examples/windows.yaml", "examples/kafka_fraud.yaml"] {
        let r = run(&["validate", p]);
        assert_eq!(r.code, 0, "{p}: {}", r.stderr);
        assert!(r.stdout.contains("is valid"), "{}", r.stdout);
    }
}

#[test]
fn validate_accepts_the_benchmark_pipelines() {
    // The benches/ scripts run these from the repository root; a path in them is taken from
    // benches/, so a `data/...` or `models/...` written as from the root fails here, not in a
    // benchmark run. (benches/mnist_bench.yaml needs models/mnist_cnn.pt from scripts/setup.sh.)
    let mut seen = 0;
    for entry in std::fs::read_dir(root().join("benches")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let r = run(&["validate", path.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{}: {}", path.display(), r.stderr);
            seen += 1;
        }
    }
    assert!(seen >= 4, "only {seen} pipelines in benches/");
}

#[test]
fn validate_reports_every_problem_with_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "bad.yaml",
        r#"name: bad
sources:
  a:
    type: file
    path: no/such/file.jsonl
  b:
    type: kafkaa
transforms:
  f:
    type: filter
    inputs: [a, nowhere]
    condition: "amount > > 1"
  g:
    type: map
    inputs: [h]
    fields: {x: "y + 1"}
    colour: blue
  h:
    type: filter
    inputs: [g]
    condition: "true"
sinks:
  out:
    type: stdout
    inputs: [f]
"#,
    );
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let f = p.display().to_string();
    for expected in [
        format!("{f}:5:11: error: input path `{}` cannot be read", tmp.path().join("no/such/file.jsonl").display()),
        format!("{f}:7:11: error: unknown source type `kafkaa`"),
        format!("{f}:11:17: error: input `nowhere` of `f` is not a component"),
        format!("{f}:12:26: error: in expression `amount > > 1`: syntax error"),
        format!("{f}:17:5: error: unknown field `colour`"),
        format!("{f}:13:3: error: the pipeline has a cycle through: g → h"),
    ] {
        assert!(r.stderr.contains(&expected), "missing `{expected}` in:\n{}", r.stderr);
    }
    assert!(r.stderr.contains("help: known sources: file, generator, kafka, postgres, socket"), "{}", r.stderr);
    assert!(r.stderr.contains("6 problems found"), "{}", r.stderr);

    // A cycle through a component that reads two inputs.
    let cyc = write(
        tmp.path(),
        "cycle.yaml",
        "sources:\n  a: {type: generator, count: 1, fields: {x: id}}\ntransforms:\n  g: {type: filter, inputs: [a, h], condition: 'true'}\n  h: {type: filter, inputs: [g], condition: 'true'}\nsinks:\n  o: {type: blackhole, inputs: [h]}\n",
    );
    let r = run(&["validate", cyc.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains(":4:3: error: the pipeline has a cycle through: g → h"), "{}", r.stderr);
}

#[test]
fn yaml_syntax_errors_have_positions() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), "broken.yaml", "sources:\n  a: {type: file\n");
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains(&format!("{}:3:", p.display())) && r.stderr.contains("invalid YAML"), "{}", r.stderr);
}

#[test]
fn missing_pipeline_file_is_a_usage_error() {
    let r = run(&["run", "no-such-pipeline.yaml"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("cannot read pipeline file no-such-pipeline.yaml"), "{}", r.stderr);
}

#[test]
fn graph_in_three_formats() {
    let r = run(&["graph", "examples/orders.yaml"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for s in [
        "orders (source `file`), parallelism 1 — this source cannot be split further (asked for 2)",
        "big (transform `filter`), parallelism 2",
        "<- orders via rebalance",
        "<- big via forward",
        "<- enriched via hash(customer)",
        "<- per_customer via single",
    ] {
        assert!(r.stdout.contains(s), "missing `{s}` in\n{}", r.stdout);
    }
    let m = run(&["graph", "examples/orders.yaml", "--format", "mermaid"]);
    assert!(m.stdout.starts_with("flowchart LR"));
    assert!(m.stdout.contains("-->|\"hash(customer)\"|"), "{}", m.stdout);
    let d = run(&["graph", "examples/orders.yaml", "--format", "dot"]);
    assert!(d.stdout.starts_with("digraph \"orders-demo\" {"));
    assert!(d.stdout.contains("[label=\"forward\"]"), "{}", d.stdout);
}

#[test]
fn set_overrides_any_option() {
    let r = run(&["graph", "examples/orders.yaml", "--set", "transforms.big.parallelism=3", "--set", "name=renamed"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("job `renamed`"));
    assert!(r.stdout.contains("big (transform `filter`), parallelism 3"), "{}", r.stdout);
    let bad = run(&["validate", "examples/orders.yaml", "--set", "transforms.big.condition=amount >"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("in expression `amount >`"), "{}", bad.stderr);
    let no_eq = run(&["validate", "examples/orders.yaml", "--set", "parallelism"]);
    assert_eq!(no_eq.code, 2);
    assert!(no_eq.stderr.contains("has no `=`"), "{}", no_eq.stderr);
}

#[test]
fn help_is_complete_and_usage_errors_exit_2() {
    let h = run(&["--help"]);
    assert_eq!(h.code, 0);
    for s in ["run", "validate", "graph", "Exit codes"] {
        assert!(h.stdout.contains(s), "{}", h.stdout);
    }
    let hr = run(&["run", "--help"]);
    for s in ["--set", "--threads", "--progress", "Ctrl-C", "dead-letter"] {
        assert!(hr.stdout.contains(s), "missing {s}: {}", hr.stdout);
    }
    assert_eq!(run(&["frobnicate"]).code, 2);
    assert_eq!(run(&["run"]).code, 2);
}

#[test]
fn runtime_failure_exits_1_with_the_cause() {
    let port = free_port();
    let r = run(&[
        "run",
        "examples/w0.yaml",
        "--set",
        "sinks.discard={type: socket, inputs: [keep], address: \"127.0.0.1:PORT\", connect_timeout: 200ms}".replace("PORT", &port.to_string()).as_str(),
        "--set",
        "sources.events.count=10",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("component `discard` (instance 0) failed (external error): cannot connect to 127.0.0.1:{port}")), "{}", r.stderr);
}

/// The code block of the README that follows the line containing `after`.
fn readme_block(after: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let rest = readme.split_once(after).unwrap_or_else(|| panic!("the README has `{after}`")).1;
    let block = rest.split_once("```\n").unwrap().1.split_once("```").unwrap().0;
    block.lines().map(String::from).collect()
}

#[test]
fn the_readme_shows_what_rill_prints_for_the_orders_demo() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, work) = (format!("sinks.out.path={}", tmp.path().join("o.jsonl").display()), format!("work_dir={}", tmp.path().display()));
    let r = run(&["run", "examples/orders.yaml", "--set", &out, "--set", &work]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // The summary's table, line for line (the timing line aside).
    let shown = readme_block("At the end `rill run` prints a summary");
    let table: Vec<&String> = shown.iter().filter(|l| !l.starts_with("job ") && !l.starts_with("dead letters")).collect();
    for line in &table {
        assert!(r.stderr.lines().any(|l| l == line.as_str()), "README line `{line}` is not in:\n{}", r.stderr);
    }
    assert!(r.stderr.contains("dead letters: 0"), "{}", r.stderr);
    // Every line the README shows of `rill graph` (it elides some with `...`).
    let g = run(&["graph", "examples/orders.yaml"]);
    for line in readme_block("`rill graph examples/orders.yaml` shows how the job is laid out").iter().filter(|l| *l != "...") {
        assert!(g.stdout.lines().any(|l| l == line), "README line `{line}` is not in:\n{}", g.stdout);
    }
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish_name_the_commands_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let bash = run(&["completions", "bash"]);
    assert_eq!(bash.code, 0, "{}", bash.stderr);
    for word in ["validate", "savepoint", "--from-scratch", "--set"] {
        assert!(bash.stdout.contains(word), "bash completion lacks `{word}`");
    }
    let script = dir.path().join("rill.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    // Sourced by a real bash, it registers the completion, and completing `rill va` offers `validate`.
    let probe = format!("source {}; complete -p rill && COMP_WORDS=(rill va) COMP_CWORD=1 && _rill rill va rill && echo \"${{COMPREPLY[@]}}\"", script.display());
    let out = std::process::Command::new("bash").args(["-c", &probe]).output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(said.contains("-F _rill rill") && said.lines().last().unwrap_or_default().split(' ').any(|w| w == "validate"), "{said}");
    let zsh = run(&["completions", "zsh"]);
    assert!(zsh.stdout.starts_with("#compdef rill"), "{}", &zsh.stdout[..zsh.stdout.len().min(200)]);
    let fish = run(&["completions", "fish"]);
    assert!(fish.stdout.contains("complete -c rill") && fish.stdout.contains("validate"));
    assert_eq!(run(&["completions", "tcsh"]).code, 2, "an unknown shell is a usage error");
}

#[test]
fn set_to_null_removes_an_option() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let p = write(dir.path(), "p.yaml", &format!("batch_size: 0\nsources:\n  a: {{type: file, path: {d}/a.jsonl}}\ntransforms:\n  f: {{type: filter, inputs: [a], condition: 'x > 1'}}\nsinks:\n  o: {{type: stdout, inputs: [f]}}\n"));
    write(dir.path(), "a.jsonl", "");
    let p = p.to_str().unwrap();
    assert_eq!(run(&["validate", p]).code, 2, "batch_size 0 is out of range");
    let r = run(&["validate", p, "--set", "batch_size=null"]);
    assert_eq!(r.code, 0, "without it, the default: {}", r.stderr);
    let r = run(&["validate", p, "--set", "batch_size=null", "--set", "transforms.f.condition=null"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("condition"), "a required option taken out is missing: {}", r.stderr);
}

#[test]
fn run_json_prints_the_summary_as_one_json_object() {
    let tmp = tempfile::tempdir().unwrap();
    let work = format!("work_dir={}", tmp.path().display());
    let r = run(&["run", "examples/orders.yaml", "--set", "sinks.out.path=/dev/null", "--set", &work, "--json", "--progress", "never"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(r.stderr.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {}", r.stderr));
    assert_eq!(v["job"], "orders-demo");
    assert_eq!(v["outcome"], "finished");
    let orders = v["components"].as_array().unwrap().iter().find(|c| c["component"] == "orders").unwrap();
    assert_eq!((orders["records_in"].as_u64(), orders["type"].as_str()), (Some(300), Some("file")));
    assert_eq!(v["dead_letters"]["count"], 0);
    assert!(!r.stderr.contains("records in"), "no text table as well: {}", r.stderr);
    // A failed job says so in JSON too (exit 1).
    let failed = run(&["run", "examples/orders.yaml", "--set", "sinks.out.path=/dev/full", "--set", &work, "--json", "--progress", "never"]);
    assert_eq!(failed.code, 1, "{}", failed.stderr);
    let v: serde_json::Value = serde_json::from_str(failed.stderr.lines().last().unwrap()).unwrap();
    assert_eq!(v["outcome"], "failed");
    assert!(v["error"].as_str().unwrap().contains("/dev/full"), "{v}");
}

/// Relative paths are the pipeline file's folder's: the same files from any directory.
#[test]
fn relative_paths_are_taken_from_the_pipeline_files_folder() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(tmp.path().join("jobs/data")).unwrap();
    write(&tmp.path().join("jobs/data"), "in.jsonl", "{\"n\":1,\"card\":\"4111\"}\n{\"n\":2,\"card\":\"5500\"}\n");
    write(&tmp.path().join("jobs"), "card.key", "k3y");
    let p = write(
        &tmp.path().join("jobs"),
        "p.yaml",
        "name: rel\ncheckpoint: {interval: 50ms}\nkeys: {card_key: {file: card.key}}\nsources:\n  i: {type: file, path: data/in.jsonl}\ntransforms:\n  m: {type: map, inputs: [i], fields: {h: \"hmac_sha256(card, 'card_key')\"}}\nsinks:\n  o: {type: file, inputs: [m], path: out/o.jsonl}\n",
    );
    // Run from elsewhere (the filesystem root), the pipeline named by its absolute path.
    let r = std::process::Command::new(env!("CARGO_BIN_EXE_rill")).current_dir("/").args(["run", p.to_str().unwrap()]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let out = lines(&tmp.path().join("jobs/out/o.jsonl"));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0]["h"].as_str().unwrap().len(), 64);
    assert!(tmp.path().join("jobs/.rill/rel/checkpoints").is_dir(), "the work dir, next to the pipeline");
    // A missing file says where it looked.
    let missing = std::process::Command::new(env!("CARGO_BIN_EXE_rill")).current_dir("/").args(["validate", p.to_str().unwrap(), "--set", "sources.i.path=nope.jsonl"]).output().unwrap();
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains(&tmp.path().join("jobs/nope.jsonl").display().to_string()) && err.contains("taken from the pipeline file's folder"), "{err}");
}

#[test]
fn rill_test_runs_the_unit_tests_declared_in_a_pipeline() {
    // The examples' tests pass; the Kafka one runs with no broker (its source and sink are
    // replaced while testing).
    for example in ["examples/orders.yaml", "examples/kafka_fraud.yaml"] {
        let r = run(&["test", example]);
        assert_eq!(r.code, 0, "{example}: {}", r.stderr);
        assert!(r.stderr.contains(" passed, 0 failed") && !r.stderr.contains("FAILED"), "{}", r.stderr);
    }
    // A failing test says what is missing and what is unexpected, and nothing reaches the
    // pipeline's own sink.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let pipeline = |tests: &str| {
        write(
            dir.path(),
            "p.yaml",
            &format!(
                "name: unit\nsources:\n  tx: {{type: file, path: nowhere.jsonl, event_time: {{field: ts, max_out_of_orderness: 0s}}}}\n\
                 transforms:\n  w: {{type: window, inputs: [tx], key_by: card, window: {{type: tumbling, size: 10}}, aggregates: {{n: count()}}}}\n\
                 \x20 m: {{type: map, inputs: [tx], fields: {{double: 'amount * 2'}}}}\n\
                 sinks:\n  out: {{type: file, inputs: [w], path: {d}/real-output.jsonl}}\ntests:\n{tests}"
            ),
        )
    };
    let p = pipeline(
        "  - name: windows\n    inputs:\n      tx: [{card: a, ts: 1, amount: 1}, {card: a, ts: 5, amount: 2}, {card: b, ts: 12, amount: 3}, {card: a, ts: 3, amount: 4}]\n\
         \x20   outputs:\n      w: [{card: a, n: 2, window_start: 0, window_end: 10}, {card: b, n: 1, window_start: 10, window_end: 20}]\n      w.late: [{card: a, ts: 3, amount: 4}]\n\
         \x20 - name: wrong\n    inputs:\n      tx: [{card: a, ts: 1, amount: 1}, {card: a, ts: 2, amount: oops}]\n    outputs:\n      m: [{card: a, ts: 1, amount: 1, double: 3}]\n",
    );
    let r = run(&["test", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("test `windows` ... ok"), "{}", r.stderr);
    assert!(r.stderr.contains("test `wrong` (") && r.stderr.contains("p.yaml:16:5) ... FAILED"), "{}", r.stderr);
    assert!(r.stderr.contains(r#"missing:    {"amount":1,"card":"a","double":3,"ts":1}"#), "{}", r.stderr);
    assert!(r.stderr.contains(r#"unexpected: {"amount":1,"card":"a","double":2,"ts":1}"#), "{}", r.stderr);
    assert!(r.stderr.contains("1 records dead-lettered, 0 expected"), "{}", r.stderr);
    assert!(r.stderr.contains("2 tests: 1 passed, 1 failed"), "{}", r.stderr);
    assert!(!dir.path().join("real-output.jsonl").exists(), "the pipeline's sinks discard while testing");
    // `run` and `validate` take a pipeline with tests as they are (`rill test` did not need the
    // file its source reads).
    write(dir.path(), "nowhere.jsonl", "");
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Naming a source or component the pipeline lacks is an error at its place.
    let p = pipeline("  - name: typo\n    inputs:\n      txs: [{card: a}]\n    outputs:\n      ww: []\n");
    let r = run(&["test", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("p.yaml:12:7: error: test `typo`: `txs` is not a source of the pipeline"), "{}", r.stderr);
    assert!(r.stderr.contains("p.yaml:14:7: error: test `typo`: the pipeline has no component `ww`"), "{}", r.stderr);
}

#[test]
fn the_schema_names_every_option_the_examples_use_and_no_other() {
    let r = run(&["schema"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let schema: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    // The options a type takes, by the schema.
    let options = |section: &str, t: &str| -> Vec<String> {
        let cases = schema["properties"][section]["additionalProperties"]["allOf"].as_array().unwrap();
        let case = cases.iter().find(|c| c["if"]["properties"]["type"]["const"] == t).unwrap_or_else(|| panic!("no {section} type {t}"));
        assert_eq!(case["then"]["additionalProperties"], false, "{t}'s options are known");
        case["then"]["properties"].as_object().unwrap().keys().cloned().collect()
    };
    let kafka = options("sources", "kafka");
    for o in ["bootstrap_servers", "topic", "topics", "topic_pattern", "group_id", "start", "stop", "format", "properties", "event_time", "parallelism", "redact"] {
        assert!(kafka.contains(&o.to_string()), "{o}: {kafka:?}");
    }
    assert!(!options("transforms", "filter").contains(&"colour".to_string()));
    // Every option of every component of the examples is in it.
    let mut checked = 0;
    for dir in ["examples", "examples/fraud"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let doc = rill::PipelineConfig::document(&text, &path.display().to_string()).unwrap();
            for key in doc.entries().unwrap().iter().filter_map(|(k, _)| k.as_str()) {
                assert!(schema["properties"].get(key).is_some(), "{}: top-level `{key}`", path.display());
            }
            for section in ["sources", "transforms", "sinks"] {
                for (name, c) in doc.get(section).and_then(|s| s.entries()).unwrap_or_default() {
                    let t = c.get("type").and_then(|t| t.as_str()).unwrap();
                    if ["dedupe", "velocity"].contains(&t) {
                        continue; // custom operators: in their own binary's schema (examples/tests)
                    }
                    let known = options(section, t);
                    for (k, _) in c.entries().unwrap() {
                        let k = k.as_str().unwrap().to_string();
                        assert!(known.contains(&k), "{}: {}.{k} ({t}) is not in the schema: {known:?}", path.display(), name.as_str().unwrap());
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 100, "{checked} options checked");
}
