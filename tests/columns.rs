//! Column batches give exactly what rows give: the same pipeline fed by the generator (column
//! batches) and by a file of the same records (rows) writes the same output and the same dead
//! letters, at p = 1 and p = 2.

mod common;

use common::*;

const TRANSFORMS: &str = r#"
transforms:
  m:
    type: map
    inputs: [events]
    fields: {r: "v * 2.0 + double(k)", q: "10 / (k - 3)", label: "k % 2 == 0 ? 'even' : 'odd'"}
    drop: [bad]
  f:
    type: filter
    inputs: [m]
    condition: "v > -3.0 && label == 'odd' || k == 4"
  w:
    type: window
    inputs: [f]
    key_by: "label + string(k)"
    window: {type: tumbling, size: 100ms}
    aggregates: {n: count(), total: sum(r)}
"#;

fn pipeline(dir: &std::path::Path, name: &str, source: &str, p: u32) -> std::path::PathBuf {
    let d = dir.display();
    write(
        dir,
        &format!("{name}.yaml"),
        &format!(
            "name: {name}\nparallelism: {p}\nwork_dir: {d}/{name}-work\ndead_letter: {{type: file, path: {d}/{name}-dead.jsonl}}\nsources:\n  events: {source}\n{TRANSFORMS}\
             sinks:\n  rows: {{type: file, inputs: [f], path: {d}/{name}-rows.jsonl}}\n  windows: {{type: file, inputs: [w], path: {d}/{name}-windows.jsonl}}\n"
        ),
    )
}

fn sorted(path: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = lines(path).iter().map(|l| l.to_string()).collect();
    v.sort();
    v
}

/// The dead letters' component and error, sorted (positions differ: a generator's are ids, a
/// file's are byte offsets).
fn errors(path: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = lines(path).iter().map(|d| format!("{} {} {}", d["component"], d["error"], d["input"])).collect();
    v.sort();
    v
}

#[test]
fn column_batches_and_rows_give_the_same_results() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // The generator's records (those whose fields all evaluate), written once as rows.
    let generator = r#"{type: generator, count: 3000, fields: {k: "id % 7", v: "double(id % 13) - 6.0", ts: "id * 3", bad: "100 / (id % 17)"}, event_time: {field: ts}}"#;
    let raw = write(
        d,
        "raw.yaml",
        &format!("name: raw\nwork_dir: {}/raw-work\nsources:\n  events: {generator}\nsinks:\n  all: {{type: file, inputs: [events], path: {}/raw.jsonl}}\n", d.display(), d.display()),
    );
    let r = run(&["run", raw.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let kept = lines(&d.join("raw.jsonl")).len();
    assert_eq!(kept, 3000 - 3000usize.div_ceil(17), "rows whose `bad` field divides by zero are rejected");

    let file = format!("{{type: file, path: {}/raw.jsonl, format: json, event_time: {{field: ts}}}}", d.display());
    let by_rows = pipeline(d, "by-rows", &file, 1);
    let r = run(&["run", by_rows.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want_rows = sorted(&d.join("by-rows-rows.jsonl"));
    let want_windows = sorted(&d.join("by-rows-windows.jsonl"));
    let want_errors = errors(&d.join("by-rows-dead.jsonl"));
    assert!(!want_rows.is_empty() && !want_windows.is_empty() && !want_errors.is_empty());

    for p in [1, 2] {
        let name = format!("by-columns-{p}");
        let by_columns = pipeline(d, &name, generator, p);
        let r = run(&["run", by_columns.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(sorted(&d.join(format!("{name}-rows.jsonl"))), want_rows, "p = {p}");
        assert_eq!(sorted(&d.join(format!("{name}-windows.jsonl"))), want_windows, "p = {p}");
        // The same map errors; the generator's own rejects come on top.
        let got: Vec<String> = errors(&d.join(format!("{name}-dead.jsonl"))).into_iter().filter(|e| !e.starts_with("\"events\"")).collect();
        assert_eq!(got, want_errors, "p = {p}");
    }
}
