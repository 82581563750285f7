//! Failures at the edges are loud: a job that cannot go on stops with the cause and exit 1, two
//! runs of one job cannot share its folders, nothing is lost silently.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Far longer than a failing job needs to stop (well under a second), far shorter than a hang.
const STOPS_WITHIN: Duration = Duration::from_secs(30);

/// Waits for `child` to exit, up to [`STOPS_WITHIN`]; its exit code, or `None` if it hangs.
fn exit_code(child: &mut std::process::Child) -> Option<i32> {
    let mut code = None;
    wait_for(STOPS_WITHIN, || match child.try_wait() {
        Ok(Some(s)) => {
            code = Some(s.code().unwrap_or(-1));
            true
        }
        _ => false,
    });
    code
}

/// Reads lines from `from` until one contains `needle` (failing if the stream ends first).
fn read_until(from: &mut impl BufRead, needle: &str) -> String {
    let mut line = String::new();
    while !line.contains(needle) {
        line.clear();
        assert!(from.read_line(&mut line).unwrap() > 0, "the stream ended before `{needle}`");
    }
    line
}

/// Everything `child` wrote to stderr (killed first if it still runs, so this cannot hang).
fn stderr_of(child: &mut std::process::Child) -> String {
    if !matches!(child.try_wait(), Ok(Some(_))) {
        let _ = child.kill();
    }
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

fn unbounded(tmp: &std::path::Path, sink: &str) -> std::path::PathBuf {
    write(
        tmp,
        "p.yaml",
        &format!(
            r#"name: unbounded
work_dir: {work}
sources:
  gen:
    type: generator
    fields: {{n: "id", k: "id % 7"}}
transforms:
  m:
    type: map
    inputs: [gen]
    fields: {{twice: "n * 2"}}
sinks:
  out:
    inputs: [m]
{sink}
"#,
            work = tmp.join("work").display()
        ),
    )
}

#[test]
fn a_full_disk_stops_an_unbounded_job_with_the_cause() {
    // /dev/full answers every write with ENOSPC, as a full disk does.
    let tmp = tempfile::tempdir().unwrap();
    let p = unbounded(tmp.path(), "    type: file\n    path: /dev/full\n    append: true");
    let mut child = Guard(rill().args(["run", p.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let code = exit_code(&mut child.0);
    let err = stderr_of(&mut child.0);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("No space left on device") && err.contains("`out`"), "{err}");
}

#[test]
fn a_closed_stdout_stops_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let p = unbounded(tmp.path(), "    type: stdout");
    let mut child = Guard(rill().args(["run", p.to_str().unwrap()]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap());
    // `| head -2`: read two lines, then close the pipe.
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    for _ in 0..2 {
        line.clear();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("\"twice\""), "{line}");
    }
    drop(out);
    let code = exit_code(&mut child.0);
    let err = stderr_of(&mut child.0);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("Broken pipe"), "{err}");
}

#[test]
fn a_socket_sink_whose_peer_closes_stops_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let p = unbounded(tmp.path(), &format!("    type: socket\n    address: {addr}"));
    let mut child = Guard(rill().args(["run", p.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    let (conn, _) = server.accept().unwrap();
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"twice\""), "{line}");
    drop(r);
    drop(server);
    let code = exit_code(&mut child.0);
    let err = stderr_of(&mut child.0);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("cannot write to {addr}")), "{err}");
}

fn checkpointed_unbounded(tmp: &std::path::Path) -> std::path::PathBuf {
    write(
        tmp,
        "p.yaml",
        &format!(
            "name: owned\nwork_dir: {w}\ncheckpoint: {{interval: 50ms}}\nsources:\n  g: {{type: generator, rate: 2000, fields: {{n: id}}}}\nsinks:\n  o: {{type: file, inputs: [g], path: {o}}}\n",
            w = tmp.join("work").display(),
            o = tmp.join("out.jsonl").display()
        ),
    )
}

fn has_checkpoint(dir: &std::path::Path) -> bool {
    std::fs::read_dir(dir).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("chk-"))).unwrap_or(false)
}

#[test]
fn a_second_run_of_a_running_job_is_refused_and_touches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = checkpointed_unbounded(tmp.path());
    let ps = p.to_str().unwrap();
    let first = Guard(rill().args(["run", ps]).stderr(Stdio::null()).spawn().unwrap());
    let ck = tmp.path().join("work/checkpoints");
    assert!(wait_for(STOPS_WITHIN, || has_checkpoint(&ck)));
    for args in [vec!["run", ps], vec!["run", ps, "--from-scratch"]] {
        let second = run(&args);
        assert_eq!(second.code, 1, "{}", second.stderr);
        assert!(
            second.stderr.contains("is in use by another running job") && second.stderr.contains(&format!("(pid {})", first.0.id())),
            "{}",
            second.stderr
        );
        assert!(!second.stderr.contains("resuming"), "{}", second.stderr);
        assert!(has_checkpoint(&ck), "the running job's checkpoints are still there");
    }
    // The running job is the one `rill savepoint` stops.
    let sp = run(&["savepoint", ps]);
    assert_eq!(sp.code, 0, "{}", sp.stderr);
    let mut first = first;
    assert!(first.0.wait().unwrap().success());
}

#[test]
fn savepoint_never_signals_a_process_that_does_not_hold_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let p = checkpointed_unbounded(tmp.path());
    let ps = p.to_str().unwrap();
    let mut job = Guard(rill().args(["run", ps]).stderr(Stdio::null()).spawn().unwrap());
    assert!(wait_for(STOPS_WITHIN, || has_checkpoint(&tmp.path().join("work/checkpoints"))));
    job.0.kill().unwrap();
    job.0.wait().unwrap();
    // The lock file names a pid that is no longer the job; make it an unrelated live process.
    let mut bystander = Guard(std::process::Command::new("sleep").arg("60").spawn().unwrap());
    std::fs::write(tmp.path().join("work/rill.lock"), bystander.0.id().to_string()).unwrap();
    let sp = run(&["savepoint", ps]);
    assert_eq!(sp.code, 1, "{}", sp.stderr);
    assert!(sp.stderr.contains("no running job `owned`"), "{}", sp.stderr);
    assert!(bystander.0.try_wait().unwrap().is_none(), "the bystander was not signalled");
    // The kill released the lock: the job runs again (and resumes).
    let mut again = Guard(rill().args(["run", ps]).stderr(Stdio::piped()).spawn().unwrap());
    let mut err = BufReader::new(again.0.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("resuming from checkpoint"), "{line}");
    // Under way once it has completed a checkpoint of its own (then Ctrl-C is handled).
    let history = tmp.path().join("work/checkpoints/history.jsonl");
    let count = || std::fs::read_to_string(&history).map(|s| s.lines().count()).unwrap_or(0);
    let before = count();
    assert!(wait_for(STOPS_WITHIN, || count() > before));
    interrupt(&again.0);
    assert_eq!(exit_code(&mut again.0), Some(0));
}

#[test]
fn a_job_whose_checkpoints_keep_failing_fails_and_publishes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = checkpointed_unbounded(tmp.path());
    let r = rill()
        .args(["run", p.to_str().unwrap(), "--set", "checkpoint.tolerable_failed_checkpoints=2"])
        .env("RILL_FAULTS", "checkpoint=fail")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{err}");
    assert!(err.contains("checkpoints are failing: 3 checkpoints in a row failed (checkpoint.tolerable_failed_checkpoints is 2)"), "{err}");
    assert!(err.contains("Read-only file system") && err.contains(&tmp.path().join("work/checkpoints").display().to_string()), "{err}");
    // No checkpoint completed, so nothing may have been committed to the exactly-once sink.
    let out = std::fs::read_to_string(tmp.path().join("out.jsonl")).unwrap_or_default();
    assert_eq!(out, "");
}

/// A pipeline over `input` (JSON lines, event time `ts`): a tumbling window of 1 s per `k`
/// with no `late` output wired, into `out.jsonl`; dead letters to `dead.jsonl`.
fn windowed(tmp: &std::path::Path, input: &str) -> std::path::PathBuf {
    let data = write(tmp, "in.jsonl", input);
    write(
        tmp,
        "p.yaml",
        &format!(
            "name: w\nwork_dir: {t}/work\ndead_letter: {{type: file, path: {t}/dead.jsonl}}\nsources:\n  in: {{type: file, path: {d}, event_time: {{field: ts}}}}\ntransforms:\n  w: {{type: window, inputs: [in], key_by: k, window: {{type: tumbling, size: 1s}}, aggregates: {{n: count()}}}}\nsinks:\n  out: {{type: file, inputs: [w], path: {t}/out.jsonl}}\n",
            t = tmp.display(),
            d = data.display()
        ),
    )
}

#[test]
fn late_records_without_a_late_output_are_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let p = windowed(
        tmp.path(),
        "{\"k\":\"a\",\"ts\":100}\n{\"k\":\"a\",\"ts\":2500}\n{\"k\":\"a\",\"ts\":300}\n{\"k\":\"b\",\"ts\":400}\n{\"k\":\"a\",\"ts\":2600}\n",
    );
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("dead letters: 2"), "{}", r.stderr);
    let dead = lines(&tmp.path().join("dead.jsonl"));
    let late: Vec<i64> = dead.iter().map(|d| d["input"]["ts"].as_i64().unwrap()).collect();
    assert_eq!(late, [300, 400]);
    assert!(dead.iter().all(|d| d["component"] == "w" && d["error"].as_str().unwrap().contains("`w.late`, which no component reads")), "{dead:?}");
    let out = lines(&tmp.path().join("out.jsonl"));
    assert_eq!(out.iter().map(|o| o["n"].as_i64().unwrap()).sum::<i64>(), 3, "{out:?}");
}

#[test]
fn a_timestamp_at_the_end_of_time_is_a_bad_record_not_the_watermark() {
    let tmp = tempfile::tempdir().unwrap();
    // Were 1.5e300 taken, the watermark would jump past every window and 2100 would be late.
    let p = windowed(tmp.path(), "{\"k\":\"a\",\"ts\":100}\n{\"k\":\"a\",\"ts\":1.5e300}\n{\"k\":\"a\",\"ts\":2100}\n");
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let dead = lines(&tmp.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0]["error"].as_str().unwrap().contains("outside the years 1 to 9999"), "{dead:?}");
    let out = lines(&tmp.path().join("out.jsonl"));
    assert_eq!(out.iter().map(|o| o["n"].as_i64().unwrap()).collect::<Vec<_>>(), [1, 1], "{out:?}");
}

fn socket_client(tmp: &std::path::Path, addr: std::net::SocketAddr) -> std::path::PathBuf {
    write(
        tmp,
        "p.yaml",
        &format!(
            "name: s\nwork_dir: {t}/work\ndead_letter: {{type: file, path: {t}/dead.jsonl}}\nsources:\n  in: {{type: socket, mode: client, address: '{addr}', connect_timeout: 300ms}}\nsinks:\n  o: {{type: file, inputs: [in], path: {t}/out.jsonl}}\n",
            t = tmp.display()
        ),
    )
}

#[test]
fn a_bad_line_on_a_socket_is_dead_lettered_and_reading_goes_on() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let p = socket_client(tmp.path(), server.local_addr().unwrap());
    let child = rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let (mut conn, _) = server.accept().unwrap();
    conn.write_all(b"{\"n\": 1}\n{\"n\": \"\xff\xfe\"}\n").unwrap();
    conn.write_all(&vec![b'x'; 3 << 20]).unwrap(); // a 3 MiB line
    conn.write_all(b"\n{\"n\": 4}\r\n{\"n\": 5}").unwrap();
    drop(conn);
    let done = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(0), "{err}");
    let ns: Vec<i64> = lines(&tmp.path().join("out.jsonl")).iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [1, 4, 5], "every good line, also after the bad ones");
    let dead = lines(&tmp.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert!(dead[0]["error"].as_str().unwrap().contains("not valid UTF-8 (byte 8) at 127.0.0.1:"), "{dead:?}");
    assert_eq!((dead[0]["position"]["line"].as_i64(), dead[0]["position"]["offset"].as_i64()), (Some(2), Some(9)));
    assert!(dead[1]["error"].as_str().unwrap().contains("line longer than"), "{dead:?}");
    assert_eq!(dead[1]["position"]["line"], 3);
}

#[test]
fn a_socket_client_that_cannot_connect_fails_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed again: nothing listens
    let p = socket_client(tmp.path(), addr);
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("cannot connect to {addr} within 300ms")), "{}", r.stderr);
}

#[test]
fn dead_letters_that_cannot_be_written_fail_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "in.jsonl", "{\"n\": 1}\nnot json\n{\"n\": 3}\n");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: dl\nwork_dir: {t}/work\ndead_letter: {{type: file, path: /dev/full}}\nsources:\n  in: {{type: file, path: {d}}}\nsinks:\n  out: {{type: file, inputs: [in], path: {t}/out.jsonl}}\n",
            t = tmp.path().display(),
            d = data.display()
        ),
    );
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot write to the dead-letter output /dev/full: No space left on device")
            && r.stderr.contains("1 rejected records of `in` could not be recorded"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("dead letters:"), "no summary claims them: {}", r.stderr);
}

/// Runs file `name` (holding `data`) → map `fields` → `out.jsonl`; returns the run, the output
/// and the dead letters.
fn through_map(tmp: &std::path::Path, name: &str, data: &[u8], format: &str, fields: &str) -> (Run, Vec<serde_json::Value>, Vec<serde_json::Value>) {
    let input = tmp.join(name);
    std::fs::write(&input, data).unwrap();
    let p = write(
        tmp,
        "p.yaml",
        &format!(
            "name: v\nwork_dir: {t}/work\ndead_letter: {{type: file, path: {t}/dead.jsonl}}\nsources:\n  in: {{type: file, path: {i}, format: {format}}}\ntransforms:\n  m: {{type: map, inputs: [in], fields: {fields}}}\nsinks:\n  out: {{type: file, inputs: [m], path: {t}/out.jsonl}}\n",
            t = tmp.display(),
            i = input.display()
        ),
    );
    let r = run(&["run", p.to_str().unwrap()]);
    let read = |f: &str| if tmp.join(f).exists() { lines(&tmp.join(f)) } else { Vec::new() };
    (r, read("out.jsonl"), read("dead.jsonl"))
}

#[test]
fn non_finite_doubles_and_huge_integers_are_rejected_not_nulled() {
    let tmp = tempfile::tempdir().unwrap();
    let json = b"\xEF\xBB\xBF{\"x\": 1.5}\n{\"x\": 0}\n{\"x\": 18446744073709551615}\n{\"x\": 1e308}\n";
    let (r, out, dead) = through_map(tmp.path(), "in.jsonl", json, "json", "{q: \"10.0 / x\", big: \"x * 1e10\"}");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(out, [serde_json::json!({"x": 1.5, "q": 10.0 / 1.5, "big": 1.5e10})], "the byte-order mark is skipped");
    let errors: Vec<&str> = dead.iter().map(|d| d["error"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    // Rejected at the source first, then by the map.
    assert!(errors[0].contains("integer 18446744073709551615 is beyond the 64-bit signed range") && errors[0].contains("in.jsonl:3:"), "{errors:?}");
    assert!(errors[1].contains("division by zero in 10.0 / 0.0"), "{errors:?}");
    assert!(errors[2].contains("1e308 * 10000000000.0 is not a finite number"), "{errors:?}");
}

#[test]
fn csv_cells_that_are_not_finite_or_too_big_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let csv = b"\xEF\xBB\xBFid,x\n1,2.5\n2,99999999999999999999\n3,1e999\n4,Nan\n";
    let (r, out, dead) = through_map(tmp.path(), "in.csv", csv, "csv", "{y: \"id * 2\"}");
    assert_eq!(r.code, 0, "{}", r.stderr);
    let ids: Vec<i64> = out.iter().map(|o| o["id"].as_i64().unwrap()).collect();
    // `Nan` is a word here (a header CSV infers types); 1e999 overflows to infinity.
    assert_eq!(ids, [1, 4], "the byte-order mark is not part of the first column's name: {out:?}");
    assert_eq!(out[1]["x"], "Nan");
    let errors: Vec<&str> = dead.iter().map(|d| d["error"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("column `x`: integer `99999999999999999999` is beyond the 64-bit signed range") && errors[0].contains("in.csv:3:3"), "{errors:?}");
    assert!(errors[1].contains("column `x`: `1e999` is not a finite number"), "{errors:?}");
}

#[test]
fn a_csv_header_naming_a_column_twice_fails_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let (r, out, _) = through_map(tmp.path(), "in.csv", b"id,x,id\n1,2,3\n", "csv", "{y: \"x\"}");
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("the CSV header names column `id` twice (fields 1 and 3); rename one at") && r.stderr.contains("in.csv:1:6"), "{}", r.stderr);
    assert!(out.is_empty());
}

#[test]
fn ctrl_c_never_publishes_what_the_next_run_takes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.jsonl");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: stop\nwork_dir: {w}\ncheckpoint: {{interval: 100ms}}\nsources:\n  g: {{type: generator, rate: 5000, fields: {{k: \"id % 5\", ts: id}}, event_time: {{field: ts}}}}\ntransforms:\n  w: {{type: window, inputs: [g], key_by: k, window: {{type: tumbling, size: 200ms}}, aggregates: {{n: count()}}}}\nsinks:\n  o: {{type: file, inputs: [w], path: {o}}}\n",
            w = tmp.path().join("work").display(),
            o = out.display()
        ),
    );
    let history = tmp.path().join("work/checkpoints/history.jsonl");
    let checkpoints = || std::fs::read_to_string(&history).map(|s| s.lines().count()).unwrap_or(0);
    let mut published: Vec<String> = Vec::new();
    for round in 0..2 {
        let mut job = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap());
        let before = checkpoints();
        assert!(wait_for(STOPS_WITHIN, || checkpoints() >= before + 3), "round {round}: checkpoints complete");
        interrupt(&job.0);
        assert_eq!(exit_code(&mut job.0), Some(0), "round {round}");
        let err = stderr_of(&mut job.0);
        assert!(err.contains("stopped (Ctrl-C) at checkpoint"), "{err}");
        let now: Vec<String> = std::fs::read_to_string(&out).unwrap().lines().map(String::from).collect();
        assert!(now.len() >= published.len() && now[..published.len()] == published[..], "round {round}: committed output was taken back");
        published = now;
    }
    // Only whole windows were published: every (key, window) once, each of 200 events / 5 keys.
    let rows = lines(&out);
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["n"] == 40), "a partial window was published: {rows:?}");
}

fn bounded_checkpointed(tmp: &std::path::Path) -> std::path::PathBuf {
    write(
        tmp,
        "p.yaml",
        &format!(
            "name: integrity\nwork_dir: {w}\ncheckpoint: {{interval: 50ms, retain: 10}}\nsources:\n  g: {{type: generator, count: 20000, rate: 5000, fields: {{n: id}}}}\nsinks:\n  o: {{type: file, inputs: [g], path: {o}}}\n",
            w = tmp.join("work").display(),
            o = tmp.join("out.jsonl").display()
        ),
    )
}

fn newest_checkpoint(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("chk-").and_then(|n| n.parse().ok()))
        .max()
        .unwrap()
}

#[test]
fn a_damaged_checkpoint_is_skipped_and_the_job_resumes_from_an_intact_one() {
    let tmp = tempfile::tempdir().unwrap();
    let p = bounded_checkpointed(tmp.path());
    let ck = tmp.path().join("work/checkpoints");
    let mut job = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap());
    assert!(wait_for(STOPS_WITHIN, || std::fs::read_dir(&ck).map(|d| d.flatten().filter(|e| e.file_name().to_string_lossy().starts_with("chk-")).count() >= 3).unwrap_or(false)));
    job.0.kill().unwrap();
    job.0.wait().unwrap();
    let newest = newest_checkpoint(&ck);
    let meta = ck.join(format!("chk-{newest}/_metadata"));
    let mut bytes = std::fs::read(&meta).unwrap();
    let at = bytes.len() - 10;
    bytes[at] ^= 0x20;
    std::fs::write(&meta, bytes).unwrap();
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("skipping checkpoint {newest}: {} is damaged: its checksum does not match", meta.display())), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("resuming from checkpoint {}", newest - 1)), "{}", r.stderr);
    let mut ns: Vec<i64> = lines(&tmp.path().join("out.jsonl")).iter().map(|r| r["n"].as_i64().unwrap()).collect();
    ns.sort();
    assert_eq!(ns, (0..20000).collect::<Vec<_>>(), "exactly once");
}

#[test]
fn recovery_refuses_committed_output_that_went_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let p = bounded_checkpointed(tmp.path());
    let out = tmp.path().join("out.jsonl");
    let mut job = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::null()).spawn().unwrap());
    assert!(wait_for(STOPS_WITHIN, || std::fs::metadata(&out).map(|m| m.len() > 0).unwrap_or(false)));
    interrupt(&job.0);
    assert_eq!(exit_code(&mut job.0), Some(0));
    let committed = std::fs::metadata(&out).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&out).unwrap().set_len(committed / 2).unwrap();
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("cannot recover {}: it holds {} bytes, fewer than the {committed} committed", out.display(), committed / 2)),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::metadata(&out).unwrap().len(), committed / 2, "neither padded nor rewritten");
}

#[test]
fn a_followed_file_that_is_truncated_or_rotated_is_read_again_from_its_start() {
    use std::io::Write;
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "app.log", "{\"n\": 1}\n{\"n\": 2}\n");
    let out = tmp.path().join("out.jsonl");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: tail\nwork_dir: {t}/work\ndead_letter: {{type: file, path: {t}/dead.jsonl}}\nsources:\n  in: {{type: file, path: {i}, follow: true, poll_interval: 10ms}}\nsinks:\n  o: {{type: file, inputs: [in], path: {o}}}\n",
            t = tmp.path().display(),
            i = input.display(),
            o = out.display()
        ),
    );
    let mut job = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap());
    let count = || std::fs::read_to_string(&out).map(|s| s.lines().count()).unwrap_or(0);
    assert!(wait_for(STOPS_WITHIN, || count() == 2));
    // copytruncate: the same file, emptied, then written again (shorter than before).
    std::fs::OpenOptions::new().write(true).truncate(true).open(&input).unwrap();
    std::fs::write(&input, "{\"n\": 3}\n").unwrap();
    assert!(wait_for(STOPS_WITHIN, || count() == 3), "read from the start after truncation");
    // Rotation: the old file ends with a line without a newline; a new file takes its name.
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    write!(f, "{{\"n\": 4}}").unwrap();
    drop(f);
    std::fs::rename(&input, tmp.path().join("app.log.1")).unwrap();
    std::fs::write(&input, "{\"n\": 5}\n{\"n\": 6}\n").unwrap();
    assert!(wait_for(STOPS_WITHIN, || count() == 6), "read the new file after rotation");
    interrupt(&job.0);
    assert_eq!(exit_code(&mut job.0), Some(0));
    let ns: Vec<i64> = lines(&out).iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3, 4, 5, 6]);
    assert!(!tmp.path().join("dead.jsonl").exists() || std::fs::read_to_string(tmp.path().join("dead.jsonl")).unwrap().is_empty());
}

#[test]
fn validate_reports_every_problem_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        r#"name: v
parallelism: 100000
sources:
  a:
    type: generator
    fields: {n: id}
    colour: red
    size: 3
transforms:
  f:
    type: filter
    inputs: [a, h]
    condition: "n + 1"
  g:
    type: map
    inputs: [f]
    fields: {x: "n * 2"}
    extra: true
  h:
    type: filter
    inputs: [g]
    condition: "true"
  after:
    type: map
    inputs: [h]
    fields: {y: "x"}
    parallelism: 5000
sinks:
  out:
    type: stdout
    inputs: [after]
"#,
    );
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    let f = p.display().to_string();
    for expected in [
        format!("{f}:2:14: error: `parallelism` must be between 1 and 1024, not 100000"),
        format!("{f}:7:5: error: unknown field `colour`"),
        format!("{f}:8:5: error: unknown field `size`"),
        format!("{f}:13:17: error: condition `n + 1` gives a number, string or list (arithmetic), not a bool"),
        format!("{f}:18:5: error: unknown field `extra`"),
        format!("{f}:27:18: error: `parallelism` must be between 1 and 1024, not 5000"),
        format!("{f}:10:3: error: the pipeline has a cycle through: f → g → h\n"),
    ] {
        assert!(r.stderr.contains(&expected), "missing `{expected}` in:\n{}", r.stderr);
    }
    assert!(r.stderr.contains("7 problems found"), "{}", r.stderr);
}

#[test]
fn the_chaos_harness_does_not_judge_an_output_that_depends_on_timing() {
    let tmp = tempfile::tempdir().unwrap();
    // Processing-time windows: their bounds are the wall clock of each run.
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: clock\nwork_dir: {t}/w\ncheckpoint: {{interval: 30ms}}\nsources:\n  g: {{type: generator, count: 3000, rate: 6000, fields: {{k: \"id % 3\"}}}}\ntransforms:\n  w: {{type: window, inputs: [g], key_by: k, window: {{type: tumbling, size: 100ms}}, aggregates: {{n: count()}}}}\nsinks:\n  out: {{type: file, inputs: [w], path: {t}/out.jsonl}}\n",
            t = tmp.path().display()
        ),
    );
    let r = run(&["chaos", p.to_str().unwrap(), "--kills", "2"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("cannot judge sink `out`: two failure-free runs wrote different lines"), "{}", r.stderr);
    assert!(!r.stdout.contains("FAILED"), "no false alarm: {}", r.stdout);
}

#[test]
fn the_chaos_harness_performs_every_kill_it_is_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: short\nwork_dir: {t}/w\ncheckpoint: {{interval: 20ms}}\nsources:\n  g: {{type: generator, count: 4000, rate: 8000, fields: {{n: id}}}}\nsinks:\n  out: {{type: file, inputs: [g], path: {t}/out.jsonl}}\n",
            t = tmp.path().display()
        ),
    );
    // Kill delays of up to 2 s would let this half-second job finish first: the harness
    // starts again with shorter ones until all 8 kills happen.
    let r = run(&["chaos", p.to_str().unwrap(), "--kills", "8", "--max-delay", "2s", "--seed", "4"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("chaos test of") && r.stdout.contains(": 8 kills"), "{}", r.stdout);
    assert!(r.stderr.contains("again from the start, killing sooner"), "{}", r.stderr);
}

#[test]
fn the_restart_strategy_does_not_retry_a_user_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write(tmp.path(), "in.csv", "id,id\n1,2\n");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: user\nwork_dir: {t}/work\nrestart: {{max_attempts: 3, backoff: 10ms}}\nsources:\n  in: {{type: file, path: {d}, format: csv}}\nsinks:\n  out: {{type: file, inputs: [in], path: {t}/out.jsonl}}\n",
            t = tmp.path().display(),
            d = data.display()
        ),
    );
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("component `in` (instance 0) failed (user error, not retried): the CSV header names column `id` twice"), "{}", r.stderr);
    assert!(!r.stderr.contains("restarting"), "{}", r.stderr);
}

#[test]
fn verbose_runs_say_what_the_job_does() {
    let tmp = tempfile::tempdir().unwrap();
    let work = format!("work_dir={}", tmp.path().display());
    let quiet = run(&["run", "examples/orders.yaml", "--set", "sinks.out.path=/dev/null", "--set", &work]);
    assert_eq!(quiet.code, 0, "{}", quiet.stderr);
    assert!(!quiet.stderr.contains("INFO"), "{}", quiet.stderr);
    let loud = run(&["-v", "run", "examples/orders.yaml", "--set", "sinks.out.path=/dev/null", "--set", &work]);
    assert_eq!(loud.code, 0, "{}", loud.stderr);
    assert!(loud.stderr.contains("INFO") && loud.stderr.contains("starting job `orders-demo`: 6 components, 9 instances"), "{}", loud.stderr);
    assert!(loud.stderr.contains("source `orders` instance 0 ended after 300 records"), "{}", loud.stderr);
    assert!(!loud.stderr.contains('\u{1b}'), "no colour codes when stderr is not a terminal");
    // -vv: Rill's own debug lines, not the storage library's (a keyed job opens sled).
    let debug = run(&["-vv", "run", "examples/orders.yaml", "--set", "sinks.out.path=/dev/null", "--set", &work, "--set", "checkpoint={interval: 10ms}"]);
    assert_eq!(debug.code, 0, "{}", debug.stderr);
    assert!(debug.stderr.contains("starting job"), "{}", debug.stderr);
    assert!(!debug.stderr.contains("sled::"), "{}", debug.stderr);
}

#[test]
fn validate_prints_the_guarantee_each_sink_really_gives() {
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        "name: g\ncheckpoint: {interval: 1s}\nsources:\n  s: {type: generator, count: 1, fields: {n: id}}\nsinks:\n  f: {type: file, inputs: [s], path: out.jsonl}\n  o: {type: stdout, inputs: [s]}\n  b: {type: blackhole, inputs: [s]}\n",
    );
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("sink `f` (file): exactly-once"), "{}", r.stdout);
    assert!(r.stdout.contains("sink `o` (stdout): at-least-once"), "{}", r.stdout);
    assert!(r.stdout.contains("sink `b` (blackhole): at-least-once"), "{}", r.stdout);
}

#[test]
fn a_second_ctrl_c_aborts_a_job_that_cannot_drain() {
    // An operator stuck for a minute in its first batch: the first Ctrl-C's drain cannot finish.
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: stuck\nwork_dir: {t}/work\nsources:\n  g: {{type: generator, fields: {{n: id}}}}\ntransforms:\n  slow: {{type: fault, inputs: [g], delay_per_batch: 60s}}\nsinks:\n  out: {{type: blackhole, inputs: [slow]}}\n",
            t = tmp.path().display()
        ),
    );
    let mut job = Guard(rill().args(["-v", "run", p.to_str().unwrap()]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    // The job logs that it starts once it listens for Ctrl-C.
    let mut err = BufReader::new(job.0.stderr.take().unwrap());
    read_until(&mut err, "starting job `stuck`");
    interrupt(&job.0);
    read_until(&mut err, "stopping:");
    assert!(job.0.try_wait().unwrap().is_none(), "still draining");
    interrupt(&job.0);
    assert_eq!(exit_code(&mut job.0), Some(130));
}
