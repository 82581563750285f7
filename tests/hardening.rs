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
