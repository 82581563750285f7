//! The HTTP API of a running job, called over real sockets (plain and TLS): Prometheus
//! metrics, the status, tokens and roles, control, the audit trail of calls.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::http::*;
use common::*;

/// Ctrl-C to the job; it must stop cleanly.
fn stop_ok(child: Guard, rx: std::sync::mpsc::Receiver<String>) {
    interrupt(&child.0);
    let (code, log) = finish(child, rx);
    assert_eq!(code, 0, "{log}");
}

/// The value of one sample in Prometheus text (`name{labels}`, labels as written).
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn pipeline(tmp: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let d = tmp.display();
    write(
        tmp,
        "p.yaml",
        &format!(
            "name: api-test\nwork_dir: {d}/w\ncheckpoint: {{interval: 100ms, dir: {d}/ck}}\n{extra}\
             sources:\n  g: {{type: generator, count: 10000000, rate: 4000, fields: {{n: id, ts: \"1700000000000 + id\"}}, event_time: {{field: ts}}}}\n\
             transforms:\n  m: {{type: map, inputs: [g], fields: {{x: \"10 / (n % 100)\"}}}}\n\
             sinks:\n  out: {{type: file, inputs: [m], path: {d}/out.jsonl}}\n"
        ),
    )
}

#[test]
fn metrics_and_status_describe_the_running_job_and_control_needs_tokens() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "");
    let (child, addr, rx) = start(&p, &["--http", "127.0.0.1:0"]);
    // Wait until the job has run a while: rates need two samples, and checkpoints complete.
    let ready = |j: &serde_json::Value| j["components"][0]["records_in_per_s"].as_f64().unwrap_or(0.0) > 0.0 && j["checkpoints"]["completed"].as_u64().unwrap_or(0) > 0;
    assert!(wait_for(Duration::from_secs(60), || ready(&call(&addr, "GET", "/api/v1/job", None).json())));
    let job = call(&addr, "GET", "/api/v1/job", None);
    assert_eq!(job.status, 200);
    assert!(job.headers.contains("content-type: application/json"), "{}", job.headers);
    let j = job.json();
    assert_eq!((j["job"].as_str(), j["state"].as_str()), (Some("api-test"), Some("running")));
    let names: Vec<(&str, &str, &str)> = j["components"].as_array().unwrap().iter().map(|c| (c["name"].as_str().unwrap(), c["type"].as_str().unwrap(), c["role"].as_str().unwrap())).collect();
    assert_eq!(names, [("g", "generator", "source"), ("m", "map", "transform"), ("out", "file", "sink")]);
    let m = &j["components"][1];
    assert_eq!(m["inputs"], serde_json::json!([{"from": "g", "exchange": "forward"}]));
    assert!(m["records_in"].as_u64().unwrap() > 0 && m["rejected"].as_u64().unwrap() > 0, "{m}");
    // One in a hundred fails (division by zero): dead-lettered, and the last few shown.
    let dead = &j["dead_letters"];
    assert!(dead["count"].as_u64().unwrap() > 0 && dead["recent"][0]["component"] == "m", "{dead}");
    assert!(dead["recent"][0]["error"].as_str().unwrap().contains("division by zero"), "{dead}");
    // Event time: the watermark of each component, and how far it is behind the clock.
    let wm = j["components"][0]["watermark_ms"].as_i64().unwrap();
    assert!(wm >= 1_700_000_000_000 && j["components"][0]["watermark_lag_ms"].as_i64().unwrap() > 0, "{}", j["components"][0]);
    assert!(["ok", "low", "high"].contains(&j["components"][2]["backpressure"].as_str().unwrap()));
    let latest = &j["checkpoints"]["latest"];
    assert!(latest["epoch"].as_u64().unwrap() >= 1 && latest["bytes"].as_u64().unwrap() > 0, "{latest}");
    assert!(j["process"]["rss_bytes"].as_u64().unwrap() > 1_000_000);

    let first = call(&addr, "GET", "/metrics", None);
    assert_eq!(first.status, 200);
    assert!(first.headers.contains("content-type: text/plain; version=0.0.4"), "{}", first.headers);
    let text = first.body;
    assert!(text.contains("# TYPE rill_records_in_total counter") && text.contains("# TYPE rill_latency_seconds histogram"), "{text}");
    let g_in = |t: &str| sample(t, "rill_records_in_total{job=\"api-test\",component=\"g\"}").unwrap();
    let before = g_in(&text);
    assert!(before > 0.0);
    assert!(sample(&text, "rill_records_rejected_total{job=\"api-test\",component=\"m\"}").unwrap() > 0.0);
    assert_eq!(sample(&text, "rill_dead_letters_total{job=\"api-test\"}"), Some(sample(&text, "rill_records_rejected_total{job=\"api-test\",component=\"m\"}").unwrap()));
    assert!(sample(&text, "rill_checkpoints_completed_total{job=\"api-test\"}").unwrap() >= 1.0);
    let count = sample(&text, "rill_latency_seconds_count{job=\"api-test\",component=\"out\"}").unwrap();
    assert_eq!(sample(&text, "rill_latency_seconds_bucket{job=\"api-test\",component=\"out\",le=\"+Inf\"}"), Some(count));
    assert!(sample(&text, "rill_watermark_seconds{job=\"api-test\",component=\"m\"}").unwrap() >= 1_700_000_000.0);
    assert!(sample(&text, "process_resident_memory_bytes").unwrap() > 1e6);
    assert!(wait_for(Duration::from_secs(30), || g_in(&call(&addr, "GET", "/metrics", None).body) > before), "the counters move");

    // The terminal tools: `rill top` draws the same numbers, `rill tap` prints records.
    let top = run(&["top", &addr, "--once"]);
    assert_eq!(top.code, 0, "{}", top.stderr);
    assert!(top.stdout.starts_with("api-test  running  up "), "{}", top.stdout);
    let row = top.stdout.lines().find(|l| l.starts_with("m ")).unwrap_or_else(|| panic!("{}", top.stdout));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!((cols[1], cols[2]), ("map", "1"), "{row}");
    assert!(cols[3].parse::<u64>().unwrap() > 0 && cols[6].parse::<u64>().unwrap() > 0, "records in and rejected: {row}");
    let tap = run(&["tap", &addr, "m", "--limit", "3"]);
    assert_eq!(tap.code, 0, "{}", tap.stderr);
    let taken: Vec<serde_json::Value> = tap.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(taken.len(), 3, "{}", tap.stdout);
    assert!(taken.iter().all(|r| r["n"].is_i64() && r["x"] == 10 / (r["n"].as_i64().unwrap() % 100) && r["ts"].is_i64()), "{taken:?}");
    let nope = run(&["tap", &addr, "nope"]);
    assert_eq!(nope.code, 1);
    assert!(nope.stderr.contains("404: the job has no component `nope` (it has g, m, out)"), "{}", nope.stderr);

    // No tokens: no control endpoints, and nothing else is there either.
    let stop = call(&addr, "POST", "/api/v1/stop", None);
    assert_eq!(stop.status, 404);
    assert!(stop.json()["error"].as_str().unwrap().contains("only with `http.tokens`"));
    assert_eq!(call(&addr, "GET", "/nope", None).status, 404);
    assert_eq!(call(&addr, "DELETE", "/metrics", None).status, 405);
    stop_ok(child, rx);
}

#[test]
fn tokens_guard_every_endpoint_an_operate_token_stops_the_job_and_calls_are_audited() {
    let tmp = tempfile::tempdir().unwrap();
    let (reader, operator) = ("r3ad-0123456789abcdef", "0p3r-fedcba9876543210");
    write(tmp.path(), "tokens.txt", &format!("# name role token\nscraper read {reader}\nops operate {operator}\n"));
    let extra = format!(
        "http: {{listen: 127.0.0.1:0, tokens: {{file: {d}/tokens.txt}}}}\naudit: {{path: {d}/audit.jsonl, key: audit_key}}\nkeys: {{audit_key: {{env: RILL_TEST_AUDIT_KEY}}}}\n",
        d = tmp.path().display()
    );
    let p = pipeline(tmp.path(), &extra);
    let key = [("RILL_TEST_AUDIT_KEY", "a-key-for-the-audit-trail")];
    let (child, addr, rx) = start_with(&p, &["--set", "sources.g.redact=[n]"], &key);
    // A tap needs a token too, and keeps `redact:` fields out.
    let tap = run(&["tap", &addr, "m", "--limit", "2"]);
    assert!(tap.code == 1 && tap.stderr.contains("401") && tap.stderr.contains("RILL_TOKEN"), "{}", tap.stderr);
    let tap = rill().args(["tap", &addr, "m", "--limit", "2"]).env("RILL_TOKEN", reader).output().unwrap();
    assert!(tap.status.success(), "{}", String::from_utf8_lossy(&tap.stderr));
    let taken: Vec<serde_json::Value> = String::from_utf8_lossy(&tap.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(taken.len(), 2);
    assert!(taken.iter().all(|r| r["n"] == "[redacted]" && r["x"].is_i64()), "{taken:?}");
    for path in ["/metrics", "/api/v1/job"] {
        let r = call(&addr, "GET", path, None);
        assert_eq!(r.status, 401, "{path}: {}", r.body);
        assert!(r.headers.contains("www-authenticate: bearer"), "{}", r.headers);
        assert_eq!(call(&addr, "GET", path, Some("not-a-token-at-all-really")).status, 401);
        assert_eq!(call(&addr, "GET", path, Some(reader)).status, 200);
    }
    let r = call(&addr, "POST", "/api/v1/stop", Some(reader));
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("`scraper` has role `read`"));
    assert_eq!(call(&addr, "POST", "/api/v1/savepoint", None).status, 401);
    // Once a checkpoint exists, the operator takes a savepoint: the job stops at it.
    assert!(wait_for(Duration::from_secs(60), || call(&addr, "GET", "/api/v1/job", Some(reader)).json()["checkpoints"]["completed"].as_u64().unwrap_or(0) > 0));
    let r = call(&addr, "POST", "/api/v1/savepoint", Some(operator));
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(r.json(), serde_json::json!({"requested": "savepoint", "by": "ops"}));
    let (code, log) = finish(child, rx);
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("savepoint requested (HTTP API)") && log.contains("stopped at savepoint"), "{log}");
    // Who did what, refusals included; the tokens themselves nowhere.
    let audit = lines(&tmp.path().join("audit.jsonl"));
    let entries: Vec<(String, String, String)> = audit
        .iter()
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["details"]["who"].as_str().unwrap_or("").to_string(), e["result"].as_str().unwrap().to_string()))
        .collect();
    assert!(entries.iter().any(|(a, _, r)| a == "http" && r == "refused (401): no token"), "{entries:?}");
    assert!(entries.iter().any(|(a, _, r)| a == "http" && r == "refused (401): a token that is not in the tokens file"), "{entries:?}");
    assert!(entries.iter().any(|(a, w, r)| a == "http" && w == "scraper" && r == "refused (403): a read token"), "{entries:?}");
    assert!(entries.iter().any(|(a, w, r)| a == "savepoint" && w == "ops" && r == "ok"), "{entries:?}");
    assert_eq!(entries.last().unwrap().0, "savepoint", "the job's own end, last: {entries:?}");
    let raw = std::fs::read_to_string(tmp.path().join("audit.jsonl")).unwrap();
    for secret in [reader, operator] {
        assert!(!raw.contains(secret) && !log.contains(secret), "a token was written out");
    }
    let v = rill().args(["audit", "verify", p.to_str().unwrap()]).envs(key).output().unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
}

#[test]
fn the_api_refuses_to_listen_beyond_loopback_without_tokens_and_names_bad_token_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let p = pipeline(tmp.path(), "http: {listen: '0.0.0.0:8642'}\n");
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("p.yaml:4:17: error: the HTTP API would listen on 0.0.0.0:8642, which is not a loopback address, without `http.tokens`"), "{}", r.stderr);
    assert!(r.stderr.contains("help: add `tokens: {file: ...}`"), "{}", r.stderr);
    let p = pipeline(tmp.path(), "");
    let r = run(&["validate", p.to_str().unwrap(), "--set", "http.listen=localhost"]);
    assert!(r.code == 2 && r.stderr.contains("`localhost` is not an address to listen on"), "{}", r.stderr);
    write(tmp.path(), "tokens.txt", "ops operate 0p3r-fedcba9876543210\nsomeone admin 0123456789abcdef0123\n");
    let p = pipeline(tmp.path(), &format!("http: {{listen: 127.0.0.1:0, tokens: {{file: {}/tokens.txt}}}}\n", tmp.path().display()));
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("tokens.txt:2: role `admin` is not `read` or `operate`"), "{}", r.stderr);
    assert!(!r.stderr.contains("fedcba"), "{}", r.stderr);
}

#[test]
fn the_api_serves_https_with_the_pipelines_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = common::tls::Pki::new();
    pki.issue_for(tmp.path(), "server", &["rill.test", "127.0.0.1"]);
    let d = tmp.path().display();
    let p = pipeline(tmp.path(), &format!("http: {{listen: 127.0.0.1:0, tls: {{cert: {d}/server.pem, key: {d}/server.key}}}}\n"));
    let (child, addr, rx) = start(&p, &[]);
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_no_client_auth();
    let tls = rustls::ClientConnection::new(std::sync::Arc::new(config), rustls::pki_types::ServerName::IpAddress("127.0.0.1".parse::<std::net::IpAddr>().unwrap().into())).unwrap();
    let r = request(rustls::StreamOwned::new(tls, TcpStream::connect(&addr).unwrap()), "GET", "/api/v1/job", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["job"], "api-test");
    // `rill top` over HTTPS, trusting the CA it is given.
    let ca_pem = tmp.path().join("server-ca.pem");
    let top = run(&["top", &format!("https://{addr}"), "--ca", ca_pem.to_str().unwrap(), "--once"]);
    assert!(top.code == 0 && top.stdout.starts_with("api-test  running"), "{}{}", top.stdout, top.stderr);
    let untrusted = run(&["top", &format!("https://{addr}"), "--ca", tmp.path().join("server.pem").to_str().unwrap(), "--once"]);
    assert_eq!(untrusted.code, 1, "a certificate the given CA did not sign: {}", untrusted.stdout);
    // Plain HTTP on the TLS port gets no answer.
    let plain = std::panic::catch_unwind(|| call(&addr, "GET", "/api/v1/job", None).status);
    assert!(plain.map_or(true, |s| s != 200));
    stop_ok(child, rx);
}

/// Runs tests/page/check.js: the live page in a real headless Chromium.
fn browse(url: &str, shot: &std::path::Path, credentials: Option<(&str, &str)>) -> serde_json::Value {
    let mut node = std::process::Command::new("node");
    node.arg(root().join("tests/page/check.js")).arg(url).arg(shot).env("PLAYWRIGHT_CORE", root().join(".venv/node/node_modules/playwright-core"));
    if let Some((user, password)) = credentials {
        node.args([user, password]);
    }
    let out = node.output().expect("node runs (scripts/setup.sh installs it, chromium and playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn the_live_page_shows_the_running_job_in_a_real_browser_and_updates_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let token = "0p3r-fedcba9876543210";
    write(tmp.path(), "tokens.txt", &format!("ops operate {token}\n"));
    let p = pipeline(tmp.path(), &format!("http: {{listen: 127.0.0.1:0, tokens: {{file: {}/tokens.txt}}}}\n", tmp.path().display()));
    let (child, addr, rx) = start(&p, &[]);
    let url = format!("http://{addr}/");
    let shot = tmp.path().join("page.png");
    // Without the token the browser is asked for it (basic authentication), and sees nothing.
    assert_eq!(browse(&url, &shot, None), serde_json::json!({"status": 401}));
    let r = call(&addr, "GET", "/", None);
    assert!(r.status == 401 && r.headers.contains("www-authenticate: basic realm=\"rill\""), "{}", r.headers);
    let seen = browse(&url, &shot, Some(("ops", token)));
    assert_eq!(seen["status"], 200);
    assert_eq!(seen["title"], "Rill · api-test");
    assert_eq!(seen["state"], "running");
    let boxes: Vec<&str> = seen["components"].as_array().unwrap().iter().map(|c| c[0].as_str().unwrap()).collect();
    assert_eq!(boxes, ["g", "m", "out"]);
    assert!(seen["components"].as_array().unwrap().iter().all(|c| ["component ok", "component low", "component high"].contains(&c[1].as_str().unwrap())), "{seen}");
    assert_eq!(seen["edges"], 2);
    let count = |v: &serde_json::Value| v.as_str().unwrap().replace(',', "").parse::<u64>().unwrap();
    assert!(count(&seen["later"]) > count(&seen["first"]), "the page updates by itself: {seen}");
    assert!(seen["checkpoints"].as_u64().unwrap() > 0, "{seen}");
    assert!(seen["dead_letters"].as_array().unwrap().iter().any(|e| e.as_str().unwrap().contains("division by zero")), "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors");
    // Everything it loaded came from the job: no CDN.
    let mut paths: Vec<&str> = seen["paths"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    paths.sort();
    assert_eq!(paths, ["/", "/api/v1/job"], "{seen}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "a screenshot");
    stop_ok(child, rx);
}

/// The inference operator's own histograms reach `/metrics` and the status (the live MNIST
/// demo, paced so that it runs long enough to be read).
#[test]
fn inference_batch_sizes_and_latencies_are_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, work) = (format!("sinks.predictions.path={}", tmp.path().join("p.jsonl").display()), format!("work_dir={}", tmp.path().join("w").display()));
    let (child, addr, rx) = start(&root().join("examples/mnist.yaml"), &["--http", "127.0.0.1:0", "--set", "sources.digits.rate=200", "--set", &out, "--set", &work]);
    let count = |t: &str, name: &str| sample(t, &format!("{name}_count{{job=\"mnist-live\",component=\"predicted\"}}")).unwrap_or(0.0);
    assert!(wait_for(Duration::from_secs(60), || count(&call(&addr, "GET", "/metrics", None).body, "rill_infer_seconds") >= 3.0));
    let text = call(&addr, "GET", "/metrics", None).body;
    assert!(text.contains("# TYPE rill_infer_batch_size histogram") && text.contains("# TYPE rill_infer_queue_seconds histogram"), "{text}");
    let batches = count(&text, "rill_infer_batch_size");
    let size = |le: &str| sample(&text, &format!("rill_infer_batch_size_bucket{{job=\"mnist-live\",component=\"predicted\",le=\"{le}\"}}")).unwrap();
    assert_eq!(size("+Inf"), batches);
    assert!(size("1") <= size("64") && size("64") <= size("+Inf") && size("64") == batches, "max_size is 64: {text}");
    let records = sample(&text, "rill_infer_batch_size_sum{job=\"mnist-live\",component=\"predicted\"}").unwrap();
    assert!(records >= batches, "{records} records in {batches} batches");
    assert!(sample(&text, "rill_infer_seconds_sum{job=\"mnist-live\",component=\"predicted\"}").unwrap() > 0.0);
    let j = call(&addr, "GET", "/api/v1/job", None).json();
    let infer = j["components"].as_array().unwrap().iter().find(|c| c["name"] == "predicted").unwrap();
    let h = &infer["histograms"]["rill_infer_seconds"];
    assert!(h["count"].as_u64().unwrap() >= 3 && h["p50"].as_f64().unwrap() > 0.0 && h["p99"].as_f64().unwrap() >= h["p50"].as_f64().unwrap(), "{h}");
    stop_ok(child, rx);
}

#[test]
fn late_records_and_channel_fill_are_exported() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().display();
    // Every 10th event is 5 s behind the others: late for its 1 s window.
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: late-test\nwork_dir: {d}/w\n\
             sources:\n  g: {{type: generator, count: 10000000, rate: 4000, fields: {{n: id, ts: \"1700000000000 + id - (id % 10 == 0 ? 5000 : 0)\"}}, event_time: {{field: ts}}}}\n\
             transforms:\n  w: {{type: window, inputs: [g], key_by: \"n % 3\", window: {{type: tumbling, size: 1s}}, aggregates: {{c: count()}}}}\n\
             sinks:\n  out: {{type: blackhole, inputs: [w]}}\n  late: {{type: blackhole, inputs: [w.late]}}\n"
        ),
    );
    let (child, addr, rx) = start(&p, &["--http", "127.0.0.1:0"]);
    let late = |t: &str| sample(t, "rill_late_records_total{job=\"late-test\",component=\"w\"}");
    assert!(wait_for(Duration::from_secs(60), || late(&call(&addr, "GET", "/metrics", None).body).unwrap_or(0.0) > 0.0), "late records are counted");
    let text = call(&addr, "GET", "/metrics", None).body;
    assert!(text.contains("# TYPE rill_late_records_total counter") && text.contains("# TYPE rill_channel_fill_ratio gauge"), "{text}");
    let fill = sample(&text, "rill_channel_fill_ratio{job=\"late-test\",component=\"g\",instance=\"0\"}").expect("the source's channel fill");
    assert!((0.0..=1.0).contains(&fill), "{fill}");
    assert_eq!(sample(&text, "rill_late_records_total{job=\"late-test\",component=\"g\"}"), Some(0.0));
    assert!(sample(&text, "rill_channel_fill_ratio{job=\"late-test\",component=\"out\",instance=\"0\"}").is_none(), "a sink has no output channel");
    // What comes into the window: its input's watermark; and the sink mostly waits for input.
    assert!(sample(&text, "rill_input_watermark_seconds{job=\"late-test\",component=\"w\"}").unwrap() >= 1_700_000_000.0, "{text}");
    assert!(sample(&text, "rill_input_watermark_seconds{job=\"late-test\",component=\"g\"}").is_none(), "a source has no input");
    assert!(sample(&text, "rill_idle_seconds_total{job=\"late-test\",component=\"out\",instance=\"0\"}").unwrap() >= 0.0);
    let j = call(&addr, "GET", "/api/v1/job", None).json();
    let w = j["components"].as_array().unwrap().iter().find(|c| c["name"] == "w").unwrap().clone();
    assert!(w["late"].as_u64().unwrap() > 0 && w["instances"][0]["channel_fill"].as_f64().is_some(), "{w}");
    assert!(w["input_watermark_ms"].as_i64().unwrap() >= 1_700_000_000_000 && (0.0..=1.0).contains(&w["instances"][0]["idle"].as_f64().unwrap()), "{w}");
    stop_ok(child, rx);
}
