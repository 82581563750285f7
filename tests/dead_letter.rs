//! Bad input never crashes a job and is never silently dropped: every malformed record is
//! counted and written to the dead-letter output with its error and source position.

mod common;

use common::*;

#[test]
fn malformed_records_reach_the_dead_letter_output_with_their_position() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "in.jsonl",
        concat!(
            "{\"id\": 1, \"amount\": 10}\n",
            "{\"id\": 2, \"amount\": \n",          // line 2: bad JSON
            "{\"id\": 3, \"amount\": \"lots\"}\n", // line 3: type error in the filter
            "\n",                                  // blank lines are skipped
            "{\"id\": 4, \"amount\": 50}\n",
            "[1, 2]\n",                            // line 6: not an object
            "{\"id\": 6}\n",                       // line 7: amount missing: null in arithmetic
            "{\"id\": 7, \"amount\": 70}\n",
        ),
    );
    let pipeline = write(
        tmp.path(),
        "p.yaml",
        &format!(
            r#"name: dl
parallelism: 2
dead_letter: {{type: file, path: {dl}}}
sources:
  in: {{type: file, path: {input}}}
transforms:
  small: {{type: filter, inputs: [in], condition: "amount < 60"}}
  doubled: {{type: map, inputs: [in], fields: {{twice: "amount * 2"}}}}
sinks:
  a: {{type: file, inputs: [small], path: {a}}}
  b: {{type: file, inputs: [doubled], path: {b}}}
"#,
            dl = tmp.path().join("dead.jsonl").display(),
            input = input.display(),
            a = tmp.path().join("a.jsonl").display(),
            b = tmp.path().join("b.jsonl").display(),
        ),
    );
    let r = run(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let ids = |f: &str| -> Vec<i64> {
        let mut v: Vec<i64> = lines(&tmp.path().join(f)).iter().map(|r| r["id"].as_i64().unwrap()).collect();
        v.sort();
        v
    };
    assert_eq!(ids("a.jsonl"), [1, 4]);
    assert_eq!(ids("b.jsonl"), [1, 4, 7]);

    let dead = lines(&tmp.path().join("dead.jsonl"));
    let by = |component: &str| dead.iter().filter(|d| d["component"] == component).cloned().collect::<Vec<_>>();
    let src = by("in");
    assert_eq!(src.len(), 2, "{dead:#?}");
    assert_eq!(src[0]["position"]["line"], 2);
    assert_eq!(src[0]["position"]["offset"], 24);
    assert_eq!(src[0]["input"], "{\"id\": 2, \"amount\": ");
    assert!(src[0]["error"].as_str().unwrap().starts_with("invalid JSON: EOF while parsing"), "{}", src[0]);
    assert!(src[0]["error"].as_str().unwrap().contains(&format!("{}:2:", input.display())), "{}", src[0]);
    assert_eq!(src[1]["position"]["line"], 6);
    assert!(src[1]["error"].as_str().unwrap().contains("invalid JSON"), "{}", src[1]);

    // Rejected downstream: the error names the expression, the position points into the input.
    let small = by("small");
    let small_ids: Vec<i64> = small.iter().map(|d| d["input"]["id"].as_i64().unwrap()).collect();
    assert_eq!(small_ids.len(), 2);
    assert!(small_ids.contains(&3) && small_ids.contains(&6));
    let three = small.iter().find(|d| d["input"]["id"] == 3).unwrap();
    assert!(three["error"].as_str().unwrap().contains("cannot compare string with int"), "{three}");
    assert_eq!(three["position"], serde_json::json!({"source": "in", "offset": 45}));
    let doubled: Vec<i64> = by("doubled").iter().map(|d| d["input"]["id"].as_i64().unwrap()).collect();
    assert_eq!(doubled.len(), 2, "{dead:#?}");
    assert!(by("doubled").iter().any(|d| d["error"].as_str().unwrap().contains("a field is missing or null")));

    // Counted in the summary.
    assert!(r.stderr.contains("dead letters: 6"), "{}", r.stderr);
}

#[test]
fn csv_arity_and_type_errors_are_rejected_with_line_and_column() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "in.csv", "1,bob,2.5\n2,alice\n3,carol,x\n4,dan,1e3\n");
    let pipeline = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "dead_letter: {dl}\nsources:\n  in:\n    type: file\n    path: {input}\n    format: {{type: csv, header: false, schema: {{id: i64, name: string, score: f64}}}}\nsinks:\n  out: {{type: file, inputs: [in], path: {out}}}\n",
            dl = tmp.path().join("dead.jsonl").display(),
            input = input.display(),
            out = tmp.path().join("out.jsonl").display()
        ),
    );
    let r = run(&["run", pipeline.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = lines(&tmp.path().join("out.jsonl"));
    assert_eq!(out, [serde_json::json!({"id": 1, "name": "bob", "score": 2.5}), serde_json::json!({"id": 4, "name": "dan", "score": 1000.0})]);
    let dead = lines(&tmp.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 2);
    assert!(dead[0]["error"].as_str().unwrap().starts_with("expected 3 CSV fields, found 2"), "{}", dead[0]);
    assert_eq!((dead[0]["position"]["line"].as_i64(), dead[0]["position"]["column"].as_i64()), (Some(2), Some(8)));
    assert!(dead[1]["error"].as_str().unwrap().starts_with("column `score`: `x` is not an f64"), "{}", dead[1]);
    assert_eq!((dead[1]["position"]["line"].as_i64(), dead[1]["position"]["column"].as_i64()), (Some(3), Some(9)));
}
