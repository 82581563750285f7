//! File (directory, CSV header, follow), generator and socket connectors, end to end.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use common::*;

/// Accepts one connection, failing the test (rather than hanging) if none comes.
fn accept(l: &TcpListener) -> TcpStream {
    l.set_nonblocking(true).unwrap();
    let mut got = None;
    assert!(wait_for(Duration::from_secs(30), || {
        got = l.accept().ok().map(|(s, _)| s);
        got.is_some()
    }), "no connection from rill");
    let s = got.unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

#[test]
fn directory_source_reads_every_file_in_parallel() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("in");
    std::fs::create_dir(&dir).unwrap();
    let mut expected = Vec::new();
    for f in 0..5 {
        let mut text = String::from("id,name\n");
        for i in 0..100 {
            let id = f * 100 + i;
            text.push_str(&format!("{id},n{id}\n"));
            expected.push(id);
        }
        std::fs::write(dir.join(format!("part-{f}.csv")), text).unwrap();
    }
    std::fs::write(dir.join(".hidden"), "ignored").unwrap();
    let out = tmp.path().join("out.jsonl");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!("work_dir: {w}\nparallelism: 3\nsources:\n  in: {{type: file, path: {}, format: csv}}\nsinks:\n  out: {{type: file, inputs: [in], path: {}}}\n", dir.display(), out.display(), w = tmp.path().join("w").display()),
    );
    let g = run(&["graph", p.to_str().unwrap()]);
    assert!(g.stdout.contains("in (source `file`), parallelism 3"), "{}", g.stdout);
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut got: Vec<i64> = lines(&out).iter().map(|r| r["id"].as_i64().unwrap()).collect();
    got.sort();
    assert_eq!(got, expected);
    assert_eq!(lines(&out)[0]["name"].as_str().unwrap().chars().next(), Some('n'));
}

#[test]
fn generator_emits_each_id_once_at_any_parallelism() {
    for p in ["1", "3"] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("o.jsonl");
        let pipe = write(
            tmp.path(),
            "p.yaml",
            &format!("work_dir: {w}\nparallelism: {p}\nsources:\n  g: {{type: generator, count: 1000, start: 5, fields: {{n: id, sq: 'id * id', even: 'id % 2 == 0'}}}}\nsinks:\n  o: {{type: file, inputs: [g], path: {}}}\n", out.display(), w = tmp.path().join("w").display()),
        );
        let r = run(&["run", pipe.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let mut rows: Vec<(i64, i64, bool)> =
            lines(&out).iter().map(|r| (r["n"].as_i64().unwrap(), r["sq"].as_i64().unwrap(), r["even"].as_bool().unwrap())).collect();
        rows.sort();
        let expected: Vec<(i64, i64, bool)> = (5..1005).map(|i| (i, i * i, i % 2 == 0)).collect();
        assert_eq!(rows, expected, "p={p}");
    }
}

#[test]
fn follow_tails_a_growing_file_until_ctrl_c_then_flushes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "grow.jsonl", "{\"n\": 1}\n");
    let out = tmp.path().join("o.jsonl");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!("work_dir: {w}\nsources:\n  in: {{type: file, path: {}, follow: true, poll_interval: 20ms}}\nsinks:\n  o: {{type: file, inputs: [in], path: {}}}\n", input.display(), out.display(), w = tmp.path().join("w").display()),
    );
    let mut guard = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap());
    let child = &mut guard.0;
    let count = || std::fs::read_to_string(&out).map(|s| s.lines().count()).unwrap_or(0);
    assert!(wait_for(Duration::from_secs(20), || count() == 1), "first line arrives");
    let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
    write!(f, "{{\"n\": 2}}\n{{\"n\": ").unwrap(); // the second line is incomplete for now
    f.flush().unwrap();
    assert!(wait_for(Duration::from_secs(20), || count() == 2));
    writeln!(f, "3}}").unwrap();
    assert!(wait_for(Duration::from_secs(20), || count() == 3), "the completed line arrives");
    interrupt(child);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let ns: Vec<i64> = lines(&out).iter().map(|r| r["n"].as_i64().unwrap()).collect();
    assert_eq!(ns, [1, 2, 3]);
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(err.contains("stopped (Ctrl-C)"), "{err}");
}

#[test]
fn socket_source_as_server_and_socket_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    // The sink side: a server in this test that the pipeline's socket sink connects to.
    let sink_server = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink_server.local_addr().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "work_dir: {w}\ndead_letter: {dl}\nsources:\n  in: {{type: socket, address: '127.0.0.1:{port}'}}\ntransforms:\n  t: {{type: map, inputs: [in], fields: {{y: 'x * 10'}}}}\nsinks:\n  o: {{type: socket, inputs: [t], address: '{sink_addr}'}}\n",
            dl = tmp.path().join("dead.jsonl").display(),
            w = tmp.path().join("w").display()
        ),
    );
    let mut guard = Guard(rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap());
    let child = &mut guard.0;
    let sink_conn = accept(&sink_server);
    sink_conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut client = None;
    assert!(wait_for(Duration::from_secs(20), || {
        client = TcpStream::connect(("127.0.0.1", port)).ok();
        client.is_some()
    }));
    let mut client = client.unwrap();
    for x in 0..50 {
        writeln!(client, "{{\"x\": {x}}}").unwrap();
    }
    writeln!(client, "not json").unwrap();
    client.flush().unwrap();
    let mut reader = BufReader::new(sink_conn.try_clone().unwrap());
    let mut ys = Vec::new();
    for _ in 0..50 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        ys.push(v["y"].as_i64().unwrap());
    }
    assert_eq!(ys, (0..50).map(|x| x * 10).collect::<Vec<_>>(), "one connection, order kept");
    interrupt(child);
    assert!(child.wait().unwrap().success());
    let dead = lines(&tmp.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["input"], "not json");
    assert_eq!(dead[0]["position"]["line"], 51);
}

#[test]
fn socket_source_as_client_ends_when_the_peer_closes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let out = tmp.path().join("o.jsonl");
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!("work_dir: {w}\nsources:\n  in: {{type: socket, mode: client, address: '{addr}', format: csv}}\nsinks:\n  o: {{type: file, inputs: [in], path: {}}}\n", out.display(), w = tmp.path().join("w").display()),
    );
    let child = rill().args(["run", p.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let mut conn = accept(&server);
    conn.write_all(b"a,b\n1,x\n2,y\n").unwrap();
    drop(conn);
    let done = child.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(lines(&out), [serde_json::json!({"a": 1, "b": "x"}), serde_json::json!({"a": 2, "b": "y"})]);
}

#[test]
fn generator_rate_spreads_events_over_time() {
    // 300 events at 1,000 per second cannot finish in less than about 0.3 s; without the rate
    // the same job takes a few milliseconds. (A lower bound: no guess at how fast a machine is.)
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!("work_dir: {}\nparallelism: 2\nsources:\n  g: {{type: generator, count: 300, rate: 1000, fields: {{n: id}}}}\nsinks:\n  o: {{type: blackhole, inputs: [g]}}\n", tmp.path().display()),
    );
    let start = std::time::Instant::now();
    let r = run(&["run", p.to_str().unwrap()]);
    let took = start.elapsed();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(took >= Duration::from_millis(280), "took {took:?}");
    let row = r.stderr.lines().find(|l| l.starts_with("o ")).unwrap().split_whitespace().collect::<Vec<_>>();
    assert_eq!(row[3], "300");
}
