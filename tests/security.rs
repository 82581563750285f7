//! Protecting sensitive fields: named secrets (`keys:` from a file and from the environment),
//! `sha256`, `hmac_sha256`, `mask`, `encrypt`/`decrypt` in a real job, checked against Python's
//! `hashlib`/`hmac`; and no planted secret in any output, log, checkpoint or dead letter.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::tls::Pki;
use common::{lines, rill, write};

const FILE_SECRET: &str = "planted-file-secret-91bd";
const ENV_SECRET: &str = "planted-env-secret-7f3a";

fn pipeline(dir: &Path) -> std::path::PathBuf {
    let d = dir.display();
    write(
        dir,
        "protect.yaml",
        &format!(
            r#"name: protect
work_dir: {d}/work
checkpoint: {{interval: 20ms, dir: {d}/checkpoints}}
keys:
  card_key: {{file: {d}/card.key}}
  sign_key: {{env: RILL_TEST_SIGN_KEY}}
sources:
  tx: {{type: file, path: {d}/tx.jsonl, redact: [card, note]}}
transforms:
  protected:
    type: map
    inputs: [tx]
    fields:
      card_id: "hmac_sha256(card, 'card_key')"
      card_masked: "mask(card, 4)"
      card_enc: "encrypt(card, 'card_key')"
      note_hash: "sha256(note)"
      signature: "hmac_sha256(string(id), 'sign_key')"
      brand: "card.startsWith('4') ? 'visa' : 'other'"
    drop: [card]
  opened:
    type: map
    inputs: [protected]
    fields: {{card_dec: "decrypt(card_enc, 'card_key')"}}
sinks:
  out: {{type: file, inputs: [opened], path: {d}/out.jsonl}}
"#
        ),
    )
}

/// What Python's standard library computes for each record: id → (card_id, note_hash, signature).
fn python_reference(dir: &Path) -> BTreeMap<i64, (String, String, String)> {
    let script = r#"
import hashlib, hmac, json, sys
d = sys.argv[1]
card_key = open(d + "/card.key", "rb").read()
sign_key = sys.argv[2].encode()
for line in open(d + "/tx.jsonl"):
    r = json.loads(line)
    if not isinstance(r.get("card"), str):
        continue
    print(json.dumps([r["id"], hmac.new(card_key, r["card"].encode(), hashlib.sha256).hexdigest(),
                      hashlib.sha256(r["note"].encode()).hexdigest(),
                      hmac.new(sign_key, str(r["id"]).encode(), hashlib.sha256).hexdigest()]))
"#;
    let out = std::process::Command::new("python3").args(["-c", script, &dir.display().to_string(), ENV_SECRET]).output().expect("python3 runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v[0].as_i64().unwrap(), (v[1].as_str().unwrap().into(), v[2].as_str().unwrap().into(), v[3].as_str().unwrap().into()))
        })
        .collect()
}

/// Every file under `dir` but the key file, with its bytes.
fn files(dir: &Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.file_name().unwrap() != "card.key" {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
}

#[test]
fn sensitive_fields_are_hashed_masked_and_encrypted_and_no_secret_leaks() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("card.key"), FILE_SECRET).unwrap();
    let mut tx = String::new();
    for i in 0..500 {
        tx += &format!("{{\"id\": {i}, \"card\": \"4{:015}\", \"note\": \"note {i} ü\"}}\n", i * 7919);
    }
    // A card that is not a string cannot be hashed, nor a number checked for its brand: dead
    // letters, not a crash, and without the redacted fields (the number is in the error too).
    tx += "{\"id\": 500, \"card\": [4, 1], \"note\": \"bad\"}\n";
    tx += "{\"id\": 501, \"card\": 4999888877776666, \"note\": \"private words\"}\n";
    std::fs::write(dir.path().join("tx.jsonl"), &tx).unwrap();
    let p = pipeline(dir.path());
    let p = p.to_str().unwrap();

    let mut seen = Vec::new();
    for args in [vec!["validate", p], vec!["graph", p], vec!["-v", "run", p, "--progress", "never"]] {
        let out = rill().args(&args).env("RILL_TEST_SIGN_KEY", ENV_SECRET).env("RUST_LOG", "debug").output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        seen.push((format!("{args:?} stdout"), out.stdout));
        seen.push((format!("{args:?} stderr"), out.stderr));
    }
    let run_out = format!("{}{}", String::from_utf8_lossy(&seen[4].1), String::from_utf8_lossy(&seen[5].1));
    assert!(run_out.contains("dead letters: 2"), "{run_out}");
    let dead = lines(&dir.path().join("work/dead_letter.jsonl"));
    assert_eq!(dead.len(), 2);
    for d in &dead {
        assert_eq!(d["input"]["card"], "[redacted]", "{d}");
        assert_eq!(d["input"]["note"], "[redacted]", "{d}");
        assert!(d["input"]["id"].is_i64(), "other fields stay: {d}");
    }
    let text = std::fs::read_to_string(dir.path().join("work/dead_letter.jsonl")).unwrap();
    assert!(dead.iter().any(|d| d["error"].as_str().unwrap().contains("[redacted]")), "the number is cut out of the error: {text}");
    for clear in ["4999888877776666", "private words"] {
        assert!(!text.contains(clear), "`{clear}` in the dead letters:\n{text}");
    }

    let want = python_reference(dir.path());
    let out = lines(&dir.path().join("out.jsonl"));
    assert_eq!(out.len(), 500, "every good record once");
    for r in &out {
        let id = r["id"].as_i64().unwrap();
        let card = format!("4{:015}", id * 7919);
        let (card_id, note_hash, signature) = &want[&id];
        assert_eq!(r["card_id"], *card_id, "HMAC-SHA-256 with the file's bytes: {r}");
        assert_eq!(r["note_hash"], *note_hash, "{r}");
        assert_eq!(r["signature"], *signature, "HMAC-SHA-256 with the variable's bytes: {r}");
        assert_eq!(r["card_masked"], format!("************{}", &card[12..]), "{r}");
        assert_eq!(r["card_dec"], card, "decrypt gives back what encrypt took: {r}");
        assert!(r.get("card").is_none(), "the clear card was dropped: {r}");
        assert!(!r["card_enc"].as_str().unwrap().contains(&card[4..]), "{r}");
    }
    let encrypted: std::collections::HashSet<&str> = out.iter().map(|r| r["card_enc"].as_str().unwrap()).collect();
    assert_eq!(encrypted.len(), 500, "a fresh nonce per value");

    // The planted secrets appear nowhere: outputs, logs, dead letters, checkpoints.
    let mut all = Vec::new();
    files(dir.path(), &mut all);
    assert!(all.iter().any(|(p, _)| p.to_string_lossy().contains("checkpoints")), "checkpoints were written");
    assert!(all.iter().any(|(p, b)| p.ends_with("dead_letter.jsonl") && !b.is_empty()), "the bad record is a dead letter");
    all.extend(seen.into_iter().map(|(what, b)| (what.into(), b)));
    for (what, bytes) in &all {
        let text = String::from_utf8_lossy(bytes);
        for secret in [FILE_SECRET, ENV_SECRET] {
            assert!(!text.contains(secret), "{} holds a secret:\n{text}", what.display());
        }
    }
}

#[test]
fn a_missing_or_unknown_key_is_an_error_at_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tx.jsonl"), "").unwrap();
    let p = pipeline(dir.path());
    // No key file, no variable: both reported, with their places.
    let out = rill().args(["validate", p.to_str().unwrap()]).env_remove("RILL_TEST_SIGN_KEY").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("protect.yaml:5:20: error: key `card_key`: cannot read"), "{err}");
    assert!(err.contains("protect.yaml:6:19: error: key `sign_key`: the environment variable `RILL_TEST_SIGN_KEY` is not set"), "{err}");

    std::fs::write(dir.path().join("card.key"), FILE_SECRET).unwrap();
    let text = std::fs::read_to_string(&p).unwrap().replace("'sign_key'", "'signing_key'");
    std::fs::write(&p, text).unwrap();
    let out = rill().args(["validate", p.to_str().unwrap()]).env("RILL_TEST_SIGN_KEY", ENV_SECRET).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("names key `signing_key`, which the pipeline's `keys:` does not define (keys: card_key, sign_key)"), "{err}");
    assert!(!err.contains(FILE_SECRET) && !err.contains(ENV_SECRET), "{err}");
}

#[test]
fn the_audit_trail_records_each_run_and_verify_finds_a_changed_or_removed_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write(dir.path(), "in.jsonl", "{\"id\": 1}\n{\"id\": 2}\n");
    let p = write(
        dir.path(),
        "audited.yaml",
        &format!(
            "name: audited\nwork_dir: {d}/work\ncheckpoint: {{interval: 20ms, dir: {d}/checkpoints}}\n\
             keys:\n  audit_key: {{env: RILL_TEST_AUDIT_KEY}}\naudit: {{path: {d}/audit/audit.jsonl, key: audit_key}}\n\
             sources:\n  in: {{type: file, path: {d}/in.jsonl}}\nsinks:\n  out: {{type: file, inputs: [in], path: {d}/out.jsonl}}\n"
        ),
    );
    let p = p.to_str().unwrap();
    let rill_with_key = |args: &[&str]| rill().args(args).env("RILL_TEST_AUDIT_KEY", ENV_SECRET).output().unwrap();
    for _ in 0..2 {
        let out = rill_with_key(&["run", p, "--progress", "never", "--set", "parallelism=1"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let log = dir.path().join("audit/audit.jsonl");
    let entries = lines(&log);
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(actions, ["start", "finish", "start", "finish"]);
    for e in &entries {
        assert_eq!(e["job"], "audited");
        assert_eq!(e["result"], "ok");
        assert!(e["who"].as_str().unwrap().contains("pid:"), "{e}");
    }
    let want_hash = {
        let mut h = std::fs::read(p).unwrap();
        h.extend_from_slice(b"\n--set parallelism=1");
        h
    };
    let hash = std::process::Command::new("python3").args(["-c", "import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).spawn().and_then(|mut c| {
        use std::io::Write;
        c.stdin.take().unwrap().write_all(&want_hash)?;
        c.wait_with_output()
    }).unwrap();
    assert_eq!(entries[0]["details"]["config_sha256"], String::from_utf8_lossy(&hash.stdout).trim(), "the hash of what ran: the file and its --set");
    assert_eq!(entries[3]["details"]["dead_letters"], 0);
    assert!(!std::fs::read_to_string(&log).unwrap().contains(ENV_SECRET));

    let verify = || rill_with_key(&["audit", "verify", p]);
    let ok = verify();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("4 entries"));

    let text = std::fs::read_to_string(&log).unwrap();
    let all: Vec<&str> = text.lines().collect();
    // A result changed in line 2, then line 3 removed: each is named, exit 1.
    for (tampered, line) in [(text.replacen("\"result\":\"ok\"", "\"result\":\"no\"", 2).replacen("\"result\":\"no\"", "\"result\":\"ok\"", 1), 2), (format!("{}\n{}\n{}\n", all[0], all[1], all[3]), 3)] {
        std::fs::write(&log, tampered).unwrap();
        let bad = verify();
        let err = String::from_utf8_lossy(&bad.stderr);
        assert_eq!(bad.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("audit.jsonl:{line}: ")), "line {line}: {err}");
    }
    // Another key does not verify it either.
    std::fs::write(&log, &text).unwrap();
    let other = rill().args(["audit", "verify", p]).env("RILL_TEST_AUDIT_KEY", "not the key").output().unwrap();
    assert_eq!(other.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&other.stderr).contains("audit.jsonl:1: its mac does not match"));
}

#[test]
fn environment_values_are_interpolated_and_shown_as_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write(dir.path(), "in.jsonl", &format!("{{\"name\": \"{ENV_SECRET}\"}}\n{{\"name\": \"public\"}}\n"));
    let text = format!(
        "name: interpolated\nparallelism: ${{RILL_TEST_P:-2}}\nwork_dir: {d}/work\n\
         sources:\n  in: {{type: file, path: \"${{RILL_TEST_DIR}}/in.jsonl\"}}\n\
         transforms:\n  public:\n    type: filter\n    inputs: [in]\n    condition: \"name != '${{RILL_TEST_SECRET}}'\"\n\
         sinks:\n  out: {{type: file, inputs: [public], path: \"{d}/out-$${{literal}}.jsonl\"}}\n"
    );
    let p = write(dir.path(), "env.yaml", &text);
    let p = p.to_str().unwrap();
    let with_env = |args: &[&str]| rill().args(args).env("RILL_TEST_SECRET", ENV_SECRET).env("RILL_TEST_DIR", dir.path()).env_remove("RILL_TEST_P").output().unwrap();
    let graph = with_env(&["graph", p]);
    let shown = String::from_utf8_lossy(&graph.stdout);
    assert!(graph.status.success(), "{}", String::from_utf8_lossy(&graph.stderr));
    assert!(shown.contains("${RILL_TEST_SECRET}") && !shown.contains(ENV_SECRET), "{shown}");
    assert!(shown.contains("parallelism 2"), "the default: {shown}");
    let run = with_env(&["run", p, "--progress", "never"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let out = lines(&dir.path().join("out-${literal}.jsonl"));
    assert_eq!(out, vec![serde_json::json!({"name": "public"})], "the filter used the variable's value; `$${{` is a literal `${{`");
    for o in [&graph.stderr, &run.stdout, &run.stderr] {
        assert!(!String::from_utf8_lossy(o).contains(ENV_SECRET));
    }
    // An error about a value from the environment shows the variable, not the value.
    let bad = rill().args(["validate", p, "--set", "batch_size=${RILL_TEST_SECRET}"]).env("RILL_TEST_SECRET", ENV_SECRET).env("RILL_TEST_DIR", dir.path()).output().unwrap();
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{err}");
    assert!(!err.contains(ENV_SECRET), "{err}");
    // An unset variable without a default: an error at its place.
    let unset = rill().args(["validate", p]).env("RILL_TEST_SECRET", ENV_SECRET).env_remove("RILL_TEST_DIR").output().unwrap();
    let err = String::from_utf8_lossy(&unset.stderr);
    assert_eq!(unset.status.code(), Some(2), "{err}");
    assert!(err.contains("env.yaml:5:27: error: the environment variable `RILL_TEST_DIR` (`${RILL_TEST_DIR}`) is not set"), "{err}");
}

#[test]
fn socket_tls_with_client_certificates_and_wrong_certificates_refused() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let (pki, rogue) = (Pki::new(), Pki::new());
    pki.issue(dir.path(), "server");
    pki.issue(dir.path(), "client");
    rogue.issue(dir.path(), "rogue");
    let port = common::free_port();
    let server = write(
        dir.path(),
        "server.yaml",
        &format!(
            "name: tls-server\nwork_dir: {d}/server-work\nsources:\n  in:\n    type: socket\n    address: 127.0.0.1:{port}\n    tls: {{cert: {d}/server.pem, key: {d}/server.key, client_ca: {d}/client-ca.pem}}\n\
             sinks:\n  out: {{type: file, inputs: [in], path: {d}/received.jsonl}}\n"
        ),
    );
    let client = |name: &str, tls: &str, n: u32| {
        let p = write(
            dir.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nwork_dir: {d}/{name}-work\nsources:\n  g: {{type: generator, count: {n}, fields: {{n: id, from: \"'{name}'\"}}}}\n\
                 sinks:\n  out:\n    type: socket\n    inputs: [g]\n    address: 127.0.0.1:{port}\n    connect_timeout: 30s\n    tls: {tls}\n"
            ),
        );
        rill().args(["run", p.to_str().unwrap(), "--progress", "never"]).output().unwrap()
    };
    let stderr = dir.path().join("server.err");
    let mut job = common::Guard(rill().args(["run", server.to_str().unwrap(), "--progress", "never"]).stderr(std::fs::File::create(&stderr).unwrap()).spawn().unwrap());
    let received = dir.path().join("received.jsonl");
    let count = || std::fs::read_to_string(&received).map(|t| t.lines().count()).unwrap_or(0);

    // Mutual TLS: the client proves itself with its certificate, the server with its own.
    let good = client("good", &format!("{{ca: {d}/server-ca.pem, cert: {d}/client.pem, key: {d}/client.key}}"), 50);
    assert!(good.status.success(), "{}", String::from_utf8_lossy(&good.stderr));
    assert!(common::wait_for(std::time::Duration::from_secs(30), || count() == 50), "received {}", count());

    // A server the client's CA did not sign is refused at the handshake: the job fails (exit 1).
    let wrong_ca = client("wrong-ca", &format!("{{ca: {d}/rogue-ca.pem, cert: {d}/client.pem, key: {d}/client.key}}"), 5);
    let err = String::from_utf8_lossy(&wrong_ca.stderr);
    assert_eq!(wrong_ca.status.code(), Some(1), "{err}");
    assert!(err.contains("TLS handshake with 127.0.0.1") && err.to_lowercase().contains("certificate"), "{err}");

    // A client whose certificate the server's client_ca did not sign, and one with none: the
    // server refuses both handshakes and reads nothing of them.
    let _ = client("rogue-client", &format!("{{ca: {d}/server-ca.pem, cert: {d}/rogue.pem, key: {d}/rogue.key}}"), 5);
    let _ = client("anonymous", &format!("{{ca: {d}/server-ca.pem}}"), 5);
    assert!(
        common::wait_for(std::time::Duration::from_secs(30), || std::fs::read_to_string(&stderr).unwrap_or_default().matches("TLS handshake with client").count() >= 2),
        "{}",
        std::fs::read_to_string(&stderr).unwrap_or_default()
    );
    common::interrupt(&job.0);
    let _ = job.0.wait();
    let mut log = String::new();
    std::fs::File::open(&stderr).unwrap().read_to_string(&mut log).unwrap();
    let lines = lines(&received);
    assert_eq!(lines.len(), 50, "{log}");
    assert!(lines.iter().all(|l| l["from"] == "good"), "only the client with a good certificate got through");
}

#[test]
fn a_tls_option_that_cannot_work_is_an_error_before_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let p = write(
        dir.path(),
        "bad.yaml",
        &format!("sources:\n  in: {{type: socket, address: 127.0.0.1:1, tls: {{ca: {d}/none.pem}}}}\nsinks:\n  out: {{type: socket, inputs: [in], address: 127.0.0.1:2, tls: {{cert: {d}/x.pem}}}}\n"),
    );
    let r = common::run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("bad.yaml:2:49: error: tls: a TLS server needs `cert` and `key`"), "{}", r.stderr);
    assert!(r.stderr.contains("tls: a TLS client needs `ca`"), "{}", r.stderr);
}

/// A sink that refuses a record with an error quoting its card, as a database's error might.
struct Quoting;

impl rill::Sink for Quoting {
    fn write(&mut self, batch: rill::Batch, _out: &mut rill::Collector) -> Result<(), rill::OperatorError> {
        match batch.records().first() {
            Some(r) => Err(rill::OperatorError::user(format!("the store refused card {} (duplicate key)", r.get(rill::Sym::new("card")).map(|v| v.to_string()).unwrap_or_default()))),
            None => Ok(()),
        }
    }
}

#[test]
fn a_failure_downstream_of_redact_does_not_quote_the_redacted_value() {
    let mut registry = rill::registry();
    registry.register_sink("quoting", |_ctx| Ok(rill::SinkSpec::new("quoting", |_: &rill::OperatorContext| Ok(Quoting))));
    let tmp = tempfile::tempdir().unwrap();
    let run = |redact: &str| {
        let yaml = format!(
            "name: quote\nwork_dir: {}\nsources:\n  g: {{type: generator, count: 10, fields: {{card: \"'4111-0000-' + string(id)\"}}{redact}}}\n\
             transforms:\n  m: {{type: map, inputs: [g], fields: {{seen: 'true'}}}}\nsinks:\n  out: {{type: quoting, inputs: [m]}}\n",
            tmp.path().display()
        );
        let plan = rill::JobPlan::build(rill::PipelineConfig::parse(&yaml, "quote.yaml", &[]).unwrap(), &registry).unwrap();
        rill::run(plan, rill::RunOptions { handle_ctrl_c: false, ..rill::RunOptions::default() }).unwrap_err().to_string()
    };
    let plain = run("");
    assert!(plain.contains("the store refused card 4111-0000-0"), "{plain}");
    // With `redact: [card]` on the source, the sink two steps downstream fails without saying it.
    let redacted = run(", redact: [card]");
    assert!(redacted.contains("the store refused card [redacted] (duplicate key)") && !redacted.contains("4111"), "{redacted}");
}
