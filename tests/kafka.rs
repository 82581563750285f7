//! Kafka end to end, against a real Kafka-protocol broker (tansu): the source reads every
//! partition, with message metadata, and dead-letters what does not decode; the exactly-once
//! sink's committed output survives kills anywhere, including between "checkpoint complete"
//! and "transaction committed".

mod common;

use common::kafka::Broker;
use common::*;

/// `n` card transactions over 4 partitions (by card), event time increasing per partition,
/// plus one malformed message in partition 2.
fn transactions(n: u64) -> Vec<(i32, String, String)> {
    let mut out: Vec<(i32, String, String)> = (0..n)
        .map(|i| {
            let card = i % 13;
            ((card % 4) as i32, format!("card-{card}"), format!("{{\"card\":{card},\"amount\":{},\"ts\":{}}}", (i * 7) % 100, 1_000_000 + i * 3))
        })
        .collect();
    out.insert(out.len() / 2, (2, "bad".into(), "{\"card\": 1, \"amount\": ".into()));
    out
}

/// `n` transactions in topic `tx` (4 partitions), and a pipeline under `dir` (`head`: its first
/// lines) that reads them to the end (`source`: more source options) → map `m` (`fields`) →
/// `out.jsonl`, dead letters to `dead.jsonl`.
fn reading(broker: &Broker, dir: &std::path::Path, n: u64, head: &str, source: &str, fields: &str) -> std::path::PathBuf {
    broker.create_topic("tx", 4);
    broker.produce("tx", &transactions(n));
    let d = dir.display();
    write(
        dir,
        "p.yaml",
        &format!(
            "{head}\nwork_dir: {d}/w\ndead_letter: {{type: file, path: {d}/dead.jsonl}}\n\
             sources:\n  tx: {{type: kafka, bootstrap_servers: '{}', topic: tx, stop: latest, {source}}}\n\
             transforms:\n  m: {{type: map, inputs: [tx], fields: {fields}}}\n\
             sinks:\n  out: {{type: file, inputs: [m], path: {d}/out.jsonl}}\n",
            broker.bootstrap()
        ),
    )
}

#[test]
fn kafka_source_reads_every_partition_with_metadata_and_dead_letters_a_bad_message() {
    let (broker, tmp) = (Broker::start(), tempfile::tempdir().unwrap());
    let p = reading(
        &broker,
        tmp.path(),
        2000,
        "name: kafka-read\nparallelism: 3",
        "metadata: kafka",
        "{key: kafka.key, partition: kafka.partition, offset: kafka.offset}, drop: [kafka]",
    );
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let out = lines(&tmp.path().join("out.jsonl"));
    assert_eq!(out.len(), 2000, "every good message once");
    let mut seen = std::collections::HashSet::new();
    for m in &out {
        let card = m["card"].as_i64().unwrap();
        assert_eq!(m["key"], format!("card-{card}"), "{m}");
        assert_eq!(m["partition"], card % 4, "{m}");
        assert!(seen.insert((m["partition"].as_i64().unwrap(), m["offset"].as_i64().unwrap())), "twice: {m}");
    }
    let dead = lines(&tmp.path().join("dead.jsonl"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["component"], "tx");
    assert_eq!(dead[0]["position"]["topic"], "tx");
    assert_eq!(dead[0]["position"]["partition"], 2);
    assert!(dead[0]["error"].as_str().unwrap().contains("invalid JSON"), "{}", dead[0]);
    // Its offset is the one the good messages of partition 2 skip.
    let bad = dead[0]["position"]["offset"].as_i64().unwrap();
    assert!(!seen.contains(&(2, bad)) && seen.contains(&(2, bad - 1)) && seen.contains(&(2, bad + 1)));
}

#[test]
fn a_missing_topic_is_a_clear_error() {
    let broker = Broker::start();
    let tmp = tempfile::tempdir().unwrap();
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: kafka-missing\nwork_dir: {}/w\nsources:\n  tx: {{type: kafka, bootstrap_servers: '{}', topic: nope, stop: latest}}\nsinks:\n  out: {{type: stdout, inputs: [tx]}}\n",
            tmp.path().display(),
            broker.bootstrap()
        ),
    );
    let r = run(&["run", p.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("Kafka topic `nope` does not exist") && r.stderr.contains("create it first"), "{}", r.stderr);
}

/// The fraud pipeline: transactions → count and sum per card per second → alerts topic,
/// exactly-once, checkpoints every 50 ms. The sink has one instance: tansu 0.6 loses messages
/// when two transactional producers write one partition at once (README, "Kafka"). Each instance reads two partitions, interleaved as
/// the consumer fetches them, far apart in event time: only per-partition watermarks keep
/// records of the one behind from being late.
fn fraud_pipeline(dir: &std::path::Path, bootstrap: &str, out_topic: &str) -> std::path::PathBuf {
    let d = dir.display();
    write(
        dir,
        "p.yaml",
        &format!(
            "name: kafka-eos-{out_topic}\nparallelism: 2\nbatch_size: 128\nwork_dir: {d}/w\ncheckpoint: {{interval: 50ms, dir: {d}/ck}}\n\
             dead_letter: {{type: file, path: {d}/dead.jsonl}}\n\
             sources:\n  tx:\n    type: kafka\n    bootstrap_servers: '{bootstrap}'\n    topic: tx\n    stop: latest\n    event_time: {{field: ts, max_out_of_orderness: 100ms}}\n\
             transforms:\n  per_card:\n    type: window\n    inputs: [tx]\n    key_by: card\n    window: {{type: tumbling, size: 1s}}\n    aggregates: {{n: count(), total: sum(amount)}}\n\
             sinks:\n  alerts: {{type: kafka, parallelism: 1, inputs: [per_card], bootstrap_servers: '{bootstrap}', topic: {out_topic}, key: card, delivery: exactly_once}}\n"
        ),
    )
}

fn values(broker: &Broker, topic: &str) -> Vec<String> {
    let mut v: Vec<String> = broker.committed(topic).iter().map(|m| m["value"].as_str().unwrap().to_string()).collect();
    v.sort();
    v
}

#[test]
fn exactly_once_kafka_output_survives_kills_and_crashes_at_the_commit_points() {
    let broker = Broker::start();
    broker.create_topic("tx", 4);
    broker.create_topic("clean", 4);
    broker.create_topic("chaos", 4);
    broker.produce("tx", &transactions(120_000));

    // The reference: one run without failures.
    let clean = tempfile::tempdir().unwrap();
    let p = fraud_pipeline(clean.path(), &broker.bootstrap(), "clean");
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want = values(&broker, "clean");
    let windows: std::collections::BTreeSet<(i64, i64)> = want
        .iter()
        .map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap())
        .map(|v| (v["card"].as_i64().unwrap(), v["window_start"].as_i64().unwrap()))
        .collect();
    let missing: Vec<(i64, i64)> = (0..13).flat_map(|c| (0..360).map(move |w| (c, 1_000_000 + w * 1000))).filter(|k| !windows.contains(k)).collect();
    assert_eq!(want.len() as u64, 13 * (120_000 * 3 / 1000), "one result per card and second; missing {} e.g. {:?} of {:?}: {}", missing.len(), &missing[..missing.len().min(5)], missing.iter().map(|m| m.0).collect::<std::collections::BTreeSet<_>>(), broker.dump("clean"));
    let counted: i64 = want.iter().map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap()["n"].as_i64().unwrap()).sum();
    assert_eq!(counted, 120_000, "every transaction in its window: none late");

    // The same job, killed and crashed again and again, each time resumed from its checkpoint.
    let chaos = tempfile::tempdir().unwrap();
    let p = fraud_pipeline(chaos.path(), &broker.bootstrap(), "chaos");
    let mut x: u64 = 7;
    let faults = ["", "crash=kafka-before-commit@1", "", "crash=kafka-before-flush@1", "", "crash=kafka-before-commit@2", "", "crash=kafka-before-flush@1", "", "crash=kafka-before-commit@1", "crash=kafka-after-final-commit@1"];
    let (mut interrupted, mut crashed, mut finished) = (0, 0, false);
    let mut outcomes = Vec::new();
    for fault in faults {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let log = chaos.path().join(format!("run-{interrupted}-{}.log", fault.replace(['=', '@'], "-")));
        let mut child = Guard(
            rill().args(["run", p.to_str().unwrap(), "--progress", "never"]).env("RILL_FAULTS", format!("slow=per_card:10ms;{fault}")).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap(),
        );
        // Killed at a random moment (or it finishes, or crashes at its fault point, first).
        let limit = if fault.is_empty() { std::time::Duration::from_millis(100 + (x >> 33) % 500) } else { std::time::Duration::from_secs(60) };
        let ended = wait_for(limit, || child.0.try_wait().unwrap().is_some());
        assert!(ended || fault.is_empty(), "the run with {fault} neither crashed nor finished in 60 s: {}", std::fs::read_to_string(&log).unwrap());
        let _ = child.0.kill();
        let status = child.0.wait().unwrap();
        let text = std::fs::read_to_string(&log).unwrap();
        outcomes.push(format!("[{fault}] {status}: {}", text.lines().filter(|l| !l.contains("WARN")).take(3).collect::<Vec<_>>().join(" / ")));
        if status.success() {
            finished = true;
            break; // a rerun would be a new run of the job, writing everything again
        }
        interrupted += 1;
        crashed += std::fs::read_to_string(&log).unwrap().contains("RILL_FAULTS: crashing at") as u32;
    }
    assert!(interrupted >= 3 && crashed >= 1, "most runs end by a kill or a crash ({interrupted} interrupted, {crashed} at a fault point): {outcomes:#?}");
    if !finished {
        let r = run(&["run", p.to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let got = values(&broker, "chaos");
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).take(3).collect();
    let mut dups = got.clone();
    dups.dedup();
    assert!(
        got == want,
        "committed output differs from the failure-free run's: {} results for {}, {} duplicated, missing e.g. {missing:?}",
        got.len(),
        want.len(),
        got.len() - dups.len()
    );
    let dead = lines(&chaos.path().join("dead.jsonl"));
    assert!(!dead.is_empty() && dead.iter().all(|d| d["position"]["partition"] == 2), "the malformed message, dead-lettered (once per run that reached it)");
}

/// A bounded Kafka source reports its progress (offsets read of those to read), which the HTTP
/// API shows while the job runs: it moves from 0 to 1, never back (one source instance: a
/// second one's partitions, assigned a moment later, would join the sum with nothing read).
#[test]
fn a_bounded_kafka_source_reports_its_progress() {
    let (broker, tmp) = (Broker::start(), tempfile::tempdir().unwrap());
    let p = reading(&broker, tmp.path(), 20_000, "name: kafka-progress\nparallelism: 2\nbatch_size: 128", "parallelism: 1", "{k: card}");
    // About 8 s: 157 batches, each held 50 ms by the map.
    let (child, addr, rx) = common::http::start_with(&p, &["--http", "127.0.0.1:0"], &[("RILL_FAULTS", "slow=m:50ms")]);
    let (mut seen, mut lags, mut fills): (Vec<f64>, Vec<f64>, Vec<f64>) = Default::default();
    let progress = || common::http::call(&addr, "GET", "/api/v1/job", None).json()["components"][0]["progress"].as_f64();
    // A metric's value for the source's instance 0, from /metrics.
    let metric = |name: &str| {
        let text = common::http::call(&addr, "GET", "/metrics", None).body;
        let series = format!("{name}{{job=\"kafka-progress\",component=\"tx\",instance=\"0\"}} ");
        text.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse::<f64>().ok())
    };
    assert!(wait_for(std::time::Duration::from_secs(120), || {
        seen.extend(progress());
        lags.extend(metric("rill_kafka_consumer_lag_messages"));
        fills.extend(metric("rill_channel_fill_ratio"));
        seen.iter().any(|&v| v > 0.0 && v < 1.0) && seen.last().is_some_and(|&v| v > 0.5) && lags.len() >= 2
    }), "progress seen: {seen:?}, lag seen: {lags:?}");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "progress never goes back: {seen:?}");
    // The slow map holds the source back: messages wait on the broker (its consumer lag) and in
    // the source's output channels.
    assert!(lags.iter().all(|&l| l <= 20_001.0) && lags.iter().any(|&l| l > 0.0) && lags.windows(2).all(|w| w[1] <= w[0]), "lag: {lags:?}");
    assert!(fills.iter().all(|&f| (0.0..=1.0).contains(&f)) && fills.iter().any(|&f| f > 0.0), "channel fill: {fills:?}");
    let (code, log) = common::http::finish(child, rx);
    assert_eq!(code, 0, "{log}");
    assert_eq!(lines(&tmp.path().join("out.jsonl")).len(), 20_000);
}

/// TLS for real, through a stunnel proxy in front of tansu: a job reads and writes every
/// message trusting the CA that signed the proxy's certificate, and fails at once when it
/// trusts another. SASL SCRAM-SHA-256 against a broker that requires it: refused credentials
/// fail the job at once with what the broker said (no SCRAM user can be made on tansu 0.6: see
/// the README's facts about it). The password is
/// never printed, and one written in the pipeline is refused before the run.
#[test]
fn kafka_over_tls_and_sasl_refusals_are_loud() {
    let tmp = tempfile::tempdir().unwrap();
    let (pki, rogue) = (common::tls::Pki::new(), common::tls::Pki::new());
    pki.issue(tmp.path(), "server");
    rogue.issue(tmp.path(), "rogue");
    let (cert, key, ca) = (tmp.path().join("server.pem"), tmp.path().join("server.key"), tmp.path().join("server-ca.pem"));
    let client = [("security.protocol", "SSL"), ("ssl.ca.location", ca.to_str().unwrap())];
    let broker = Broker::start_secured(common::kafka::Secured { tls: Some((&cert, &key)), authentication: false, client: &client });
    broker.create_topic("tx", 4);
    broker.create_topic("out", 2);
    let txs = transactions(300);
    broker.produce("tx", &txs);
    let d = tmp.path().display();
    let pipeline = |name: &str, bootstrap: &str, props: &str| {
        write(
            tmp.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: kafka-{name}\nwork_dir: {d}/{name}-w\ndead_letter: {{type: file, path: {d}/{name}-dead.jsonl}}\n\
                 sources:\n  tx: {{type: kafka, bootstrap_servers: '{bootstrap}', topic: tx, stop: latest, properties: {props}}}\n\
                 sinks:\n  out: {{type: kafka, inputs: [tx], bootstrap_servers: '{bootstrap}', topic: out, key: card, properties: {props}}}\n"
            ),
        )
    };
    const PASSWORD: &str = "scram-Pa55-word";
    let run_with_password = |p: &std::path::Path| {
        let out = rill().args(["run", p.to_str().unwrap(), "--progress", "never"]).env("KAFKA_PASSWORD", PASSWORD).output().unwrap();
        let r = Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() };
        assert!(!r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD), "the password is never printed: {}", r.stderr);
        r
    };
    // Over TLS, the CA's file relative: taken from the pipeline file's folder.
    let tls = "{security.protocol: SSL, ssl.ca.location: server-ca.pem}";
    let r = run_with_password(&pipeline("tls", &broker.bootstrap(), tls));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sorted = |v: Vec<String>| {
        let mut v: Vec<serde_json::Value> = v.iter().map(|s| serde_json::from_str(s).unwrap()).collect();
        v.sort_by_key(|v| v.to_string());
        v
    };
    let want = sorted(txs.into_iter().filter(|(_, k, _)| k != "bad").map(|(_, _, v)| v).collect());
    assert_eq!(sorted(broker.read_all("out")), want, "every message read over TLS and written back over TLS");
    // Trusting another CA: the handshake fails, and so does the job, at once.
    let started = std::time::Instant::now();
    let r = run_with_password(&pipeline("rogue", &broker.bootstrap(), &tls.replace("server-ca.pem", "rogue-ca.pem")));
    assert!(r.code == 1 && r.stderr.contains("refused the connection") && r.stderr.contains("certificate verify failed"), "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "refused at once, not retried: {:?}", started.elapsed());
    // The sink alone trusting another CA fails the job too (at its flush, not after librdkafka's
    // five-minute message timeout).
    let sink_only = write(
        tmp.path(),
        "sink-rogue.yaml",
        &format!(
            "name: kafka-sink-rogue\nwork_dir: {d}/sink-rogue-w\nsources:\n  g: {{type: generator, count: 100, fields: {{n: id}}}}\n\
             sinks:\n  out: {{type: kafka, inputs: [g], bootstrap_servers: '{}', topic: out, properties: {}}}\n",
            broker.bootstrap(),
            tls.replace("server-ca.pem", "rogue-ca.pem")
        ),
    );
    let started = std::time::Instant::now();
    let r = run_with_password(&sink_only);
    assert!(r.code == 1 && r.stderr.contains("component `out`") && r.stderr.contains("refused the connection") && r.stderr.contains("certificate verify failed"), "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "refused at once, not retried: {:?}", started.elapsed());
    // SASL SCRAM with credentials the broker does not take.
    let sasl = Broker::start_secured(common::kafka::Secured { tls: None, authentication: true, client: &[] });
    let scram = "{security.protocol: SASL_PLAINTEXT, sasl.mechanism: SCRAM-SHA-256, sasl.username: rill, sasl.password: '${KAFKA_PASSWORD}'}";
    let started = std::time::Instant::now();
    let r = run_with_password(&pipeline("scram", &sasl.bootstrap(), scram));
    assert!(r.code == 1 && r.stderr.contains("refused the connection") && r.stderr.contains("SASL authentication error"), "{}", r.stderr);
    assert!(started.elapsed() < std::time::Duration::from_secs(30), "refused at once, not retried: {:?}", started.elapsed());
    // A password in the pipeline itself.
    let literal = pipeline("literal", &sasl.bootstrap(), &scram.replace("'${KAFKA_PASSWORD}'", PASSWORD));
    let r = run(&["validate", literal.to_str().unwrap()]);
    assert!(r.code == 2 && r.stderr.contains("`properties.sasl.password` is written in the pipeline") && r.stderr.contains("${KAFKA_PASSWORD}"), "{}", r.stderr);
    assert!(!r.stderr.contains(PASSWORD), "{}", r.stderr);
}

/// `(partition, key, value)` messages `from..to` for 12 cards over 6 partitions (card `c` in
/// partition `c % 6`, the topic keyed by card), event time rising 5 ms a message.
fn card_messages(from: u64, to: u64) -> Vec<(i32, String, String)> {
    (from..to).map(|i| ((i % 12 % 6) as i32, format!("card-{}", i % 12), format!("{{\"card\":{},\"amount\":{},\"ts\":{}}}", i % 12, i % 97, 1_000_000 + i * 5))).collect()
}

/// The tasks a scaled-out process's log says it was given last.
fn last_tasks(log: &str) -> Option<Vec<u32>> {
    let line = log.lines().filter(|l| l.contains("this process runs task")).last()?;
    let set = &line[line.rfind('{')? + 1..line.rfind('}')?];
    Some(set.split(',').filter_map(|t| t.trim().parse().ok()).collect())
}

/// Three `rill run` processes of one scaled-out pipeline share the 6 partitions of `tx`. One is
/// SIGKILLed while data flows; the other two take its tasks over from their checkpoints (window
/// state and offsets), and the committed output equals a direct computation: every window
/// once, with every message in it. The output is written by partition (`partition: card % 6`):
/// tansu 0.6 loses committed messages when two transactional producers write one partition at
/// once (README "Kafka"), so each task writes its own.
#[test]
fn three_processes_share_the_partitions_and_take_over_the_tasks_of_a_killed_one() {
    let broker = Broker::start();
    broker.create_topic("tx", 6);
    broker.create_topic("alerts", 6);
    let dir = tempfile::tempdir().unwrap();
    let (d, b) = (dir.path().display(), broker.bootstrap());
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: scaled\nbatch_size: 16\ncheckpoint: {{interval: 100ms, dir: {d}/ck}}\nwork_dir: {d}/w\n\
             scale_out: {{group: scaled-processes, session_timeout: 4s}}\n\
             sources:\n  tx:\n    type: kafka\n    bootstrap_servers: '{b}'\n    topic: tx\n    event_time: {{field: ts, max_out_of_orderness: 0ms}}\n\
             transforms:\n  per_card:\n    type: window\n    inputs: [tx]\n    key_by: card\n    window: {{type: tumbling, size: 1s}}\n    aggregates: {{n: count(), total: sum(amount)}}\n\
             sinks:\n  alerts: {{type: kafka, inputs: [per_card], bootstrap_servers: '{b}', topic: alerts, key: card, partition: card % 6, delivery: exactly_once}}\n"
        ),
    );
    let v = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(v.code, 0, "{}", v.stderr);
    assert!(v.stdout.contains("`per_card` groups by `card`: correct across processes only if the input topics are partitioned by that key"), "{}", v.stdout);

    let (half, all) = (12_000, 24_000);
    broker.produce("tx", &card_messages(0, half));
    let logs: Vec<std::path::PathBuf> = (0..3).map(|i| dir.path().join(format!("process-{i}.log"))).collect();
    let mut processes: Vec<Guard> = logs
        .iter()
        .map(|log| Guard(rill().args(["run", p.to_str().unwrap()]).env("RILL_FAULTS", "slow=per_card:40ms").stderr(std::fs::File::create(log).unwrap()).spawn().unwrap()))
        .collect();
    let read = |i: usize| std::fs::read_to_string(&logs[i]).unwrap();
    // Until each process runs two tasks, and every card has results committed.
    let shared = wait_for(std::time::Duration::from_secs(90), || (0..3).all(|i| last_tasks(&read(i)).is_some_and(|t| t.len() == 2)));
    assert!(shared, "three processes did not share six tasks: {:#?}", (0..3).map(read).collect::<Vec<_>>());
    let cards = || values(&broker, "alerts").iter().map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap()["card"].as_i64().unwrap()).collect::<std::collections::BTreeSet<_>>();
    assert!(wait_for(std::time::Duration::from_secs(90), || cards().len() == 12), "every task commits results: {:?}", cards());

    // The second half, and the kill while it is being read.
    broker.produce("tx", &card_messages(half, all));
    let killed = last_tasks(&read(1)).unwrap();
    // Its tasks read the second half as it comes (40 ms a batch of 16: 5 s a partition).
    processes[1].0.kill().unwrap();
    processes[1].0.wait().unwrap();
    // One message a partition far ahead, so that the watermark closes every window above.
    broker.produce("tx", &(0..6).map(|c| (c, format!("card-{c}"), format!("{{\"card\":{c},\"amount\":0,\"ts\":900000000}}"))).collect::<Vec<_>>());

    let mut want: std::collections::BTreeMap<(i64, i64), (i64, i64)> = Default::default();
    for i in 0..all {
        let w = want.entry(((i % 12) as i64, (1_000_000 + i as i64 * 5) / 1000 * 1000)).or_default();
        w.0 += 1;
        w.1 += (i % 97) as i64;
    }
    let done = wait_for(std::time::Duration::from_secs(120), || values(&broker, "alerts").len() >= want.len());
    assert!(done, "{} of {} results committed; logs: {}\n{}", values(&broker, "alerts").len(), want.len(), read(0), read(2));
    for i in [0, 2] {
        interrupt(&processes[i].0);
        let status = processes[i].0.wait().unwrap();
        assert!(status.success(), "process {i} stops cleanly: {status}: {}", read(i));
    }
    let got: Vec<((i64, i64), (i64, i64))> = values(&broker, "alerts")
        .iter()
        .map(|v| serde_json::from_str::<serde_json::Value>(v).unwrap())
        .map(|v| ((v["card"].as_i64().unwrap(), v["window_start"].as_i64().unwrap()), (v["n"].as_i64().unwrap(), v["total"].as_i64().unwrap())))
        .collect();
    let distinct: std::collections::BTreeMap<_, _> = got.iter().cloned().collect();
    assert_eq!(got.len(), distinct.len(), "no window committed twice");
    let wrong: Vec<_> = want.iter().filter(|(k, v)| distinct.get(k) != Some(v)).take(5).collect();
    assert!(wrong.is_empty() && distinct.len() == want.len(), "committed windows equal the direct computation; differing e.g. {wrong:?} (got {:?})", wrong.iter().map(|(k, _)| distinct.get(k)).collect::<Vec<_>>());
    broker.assert_settled("alerts");
    let survivors = read(0) + &read(2);
    for t in &killed {
        assert!(survivors.contains(&format!("task {t}: resuming from checkpoint")), "task {t} of the killed process resumed elsewhere from its checkpoint: {survivors}");
        // The source's line in the summary of its last run: `tx  kafka  1  RECORDS_IN ...`.
        let read_after: u64 = survivors
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("task {t}: tx ")))
            .map(|l| l.split_whitespace().nth(2).unwrap().parse::<u64>().unwrap())
            .last()
            .unwrap_or(0);
        assert!(read_after > 1000, "task {t} had most of the second half left to read when its process died ({read_after} read after): {survivors}");
    }
}

/// What cannot scale out is refused at validate time, each at its place: a source other than
/// Kafka (every task would read all of it), a file sink (every task would write it), no
/// checkpoints, a bounded Kafka source, the HTTP API; and `validate` says which operator is
/// not partition-local.
#[test]
fn a_pipeline_that_cannot_scale_out_is_refused_with_its_places() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write(dir.path(), "in.jsonl", "{}\n");
    let p = write(
        dir.path(),
        "bad.yaml",
        &format!(
            "name: bad\nscale_out: {{group: g}}\nhttp: {{listen: '127.0.0.1:0'}}\n\
             sources:\n  tx: {{type: kafka, bootstrap_servers: '127.0.0.1:9', topic: tx, stop: latest}}\n  more: {{type: file, path: {d}/in.jsonl}}\n\
             sinks:\n  out: {{type: file, inputs: [tx, more], path: {d}/out.jsonl}}\n"
        ),
    );
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for (place, what) in [
        ("bad.yaml:2:", "`scale_out` needs `checkpoint:`"),
        ("bad.yaml:2:", "the HTTP API cannot serve a scaled-out pipeline"),
        ("bad.yaml:5:", "a bounded Kafka source (`stop`) cannot scale out"),
        ("bad.yaml:6:", "source `more` is `file`: with `scale_out` every source must be `kafka`"),
        ("bad.yaml:8:", "sink `out` is a `file`"),
    ] {
        assert!(r.stderr.lines().any(|l| l.contains(place) && l.contains(what)), "{place} {what}: {}", r.stderr);
    }
    let ok = write(
        dir.path(),
        "ok.yaml",
        "name: ok\nscale_out: {}\ncheckpoint: {interval: 1s}\nparallelism: 2\n\
         sources:\n  tx: {type: kafka, bootstrap_servers: '127.0.0.1:9', topic: tx}\n\
         transforms:\n  total: {type: aggregate, inputs: [tx], aggregates: {n: count()}}\n\
         sinks:\n  out: {type: kafka, inputs: [total], bootstrap_servers: '127.0.0.1:9', topic: out}\n",
    );
    let r = run(&["validate", ok.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("`total` is not partition-local"), "{}", r.stdout);
    let g = run(&["graph", ok.to_str().unwrap(), "--format", "mermaid"]);
    assert!(g.code == 0 && g.stdout.contains("%%   `total` is not partition-local"), "{}{}", g.stdout, g.stderr);
}

/// An exactly-once Kafka sink restored at another parallelism: a run at p = 2 crashes between
/// "checkpoint complete" and "transaction committed", and the next run goes on at p = 1. The
/// one instance left aborts what the gone instance left open, produces its uncommitted epoch
/// again, and the committed output equals a failure-free run's. Each partition has one
/// producer (`partition:` routes records by it; tansu loses messages of concurrent ones).
#[test]
fn an_exactly_once_kafka_sink_resumed_at_a_lower_parallelism_finishes_the_gone_instances_transactions() {
    let broker = Broker::start();
    broker.create_topic("tx", 4);
    for t in ["clean", "rescaled"] {
        broker.create_topic(t, 4);
    }
    broker.produce("tx", &transactions(40_000));
    let pipeline = |dir: &std::path::Path, out: &str| {
        let (d, b) = (dir.display(), broker.bootstrap());
        write(
            dir,
            "p.yaml",
            &format!(
                "name: rescale-{out}\nparallelism: 2\nbatch_size: 128\nwork_dir: {d}/w\ncheckpoint: {{interval: 50ms, dir: {d}/ck}}\n\
                 dead_letter: {{type: file, path: {d}/dead.jsonl}}\n\
                 sources:\n  tx:\n    type: kafka\n    bootstrap_servers: '{b}'\n    topic: tx\n    stop: latest\n    event_time: {{field: ts, max_out_of_orderness: 100ms}}\n\
                 transforms:\n  per_card:\n    type: window\n    inputs: [tx]\n    key_by: card\n    window: {{type: tumbling, size: 1s}}\n    aggregates: {{n: count(), total: sum(amount)}}\n\
                 sinks:\n  alerts: {{type: kafka, inputs: [per_card], bootstrap_servers: '{b}', topic: {out}, key: card, partition: card % 4, delivery: exactly_once}}\n"
            ),
        )
    };
    let clean = tempfile::tempdir().unwrap();
    let r = run(&["run", pipeline(clean.path(), "clean").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want = values(&broker, "clean");
    assert_eq!(want.len(), 13 * 120, "one result per card and second");

    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "rescaled");
    let crashed = rill().args(["run", p.to_str().unwrap(), "--progress", "never"]).env("RILL_FAULTS", "slow=per_card:10ms;crash=kafka-before-commit@3").output().unwrap();
    let log = String::from_utf8_lossy(&crashed.stderr);
    assert!(!crashed.status.success() && log.contains("RILL_FAULTS: crashing at"), "the first run crashes at its commit point: {log}");
    let resumed = run(&["run", p.to_str().unwrap(), "--set", "parallelism=1", "--progress", "never"]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert!(resumed.stderr.contains("resuming from checkpoint"), "{}", resumed.stderr);
    let got = values(&broker, "rescaled");
    let missing: Vec<&String> = want.iter().filter(|w| !got.contains(w)).take(3).collect();
    assert!(got == want, "committed output differs from the failure-free run's: {} results for {}, missing e.g. {missing:?}", got.len(), want.len());
    broker.assert_settled("rescaled");
}

/// `delivery: exactly_once` with a topic per record: the transactions' markers live in
/// `marker_topic`; a crash between "checkpoint complete" and "transaction committed" and the
/// recovery leave both topics with what a failure-free run commits. Without `marker_topic` the
/// pipeline is refused at its place.
#[test]
fn exactly_once_with_a_topic_per_record_keeps_its_markers_in_marker_topic() {
    let broker = Broker::start();
    broker.create_topic("tx", 4);
    for t in ["clean-0", "clean-1", "chaos-0", "chaos-1"] {
        broker.create_topic(t, 2);
    }
    broker.produce("tx", &transactions(20_000));
    let pipeline = |dir: &std::path::Path, out: &str, marker: &str| {
        let (d, b) = (dir.display(), broker.bootstrap());
        write(
            dir,
            "p.yaml",
            &format!(
                "name: per-record-{out}\nbatch_size: 128\nwork_dir: {d}/w\ncheckpoint: {{interval: 50ms, dir: {d}/ck}}\n\
                 sources:\n  tx:\n    type: kafka\n    bootstrap_servers: '{b}'\n    topic: tx\n    stop: latest\n    event_time: {{field: ts, max_out_of_orderness: 100ms}}\n\
                 transforms:\n  per_card:\n    type: window\n    inputs: [tx]\n    key_by: card\n    window: {{type: tumbling, size: 1s}}\n    aggregates: {{n: count()}}\n\
                 sinks:\n  alerts:\n    type: kafka\n    inputs: [per_card]\n    bootstrap_servers: '{b}'\n    topic: \"'{out}-' + string(card % 2)\"\n    delivery: exactly_once\n{marker}"
            ),
        )
    };
    let bad = tempfile::tempdir().unwrap();
    let r = run(&["validate", pipeline(bad.path(), "clean", "").to_str().unwrap()]);
    assert!(r.code == 2 && r.stderr.contains("p.yaml:24:13: error: `delivery: exactly_once` with a topic per record needs `marker_topic`"), "{}", r.stderr);

    let clean = tempfile::tempdir().unwrap();
    let r = run(&["run", pipeline(clean.path(), "clean", "    marker_topic: clean-0\n").to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want = [values(&broker, "clean-0"), values(&broker, "clean-1")];
    assert!(!want[0].is_empty() && !want[1].is_empty() && want[0].len() + want[1].len() == 13 * 60, "{want:?}");

    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), "chaos", "    marker_topic: chaos-0\n");
    let crashed = rill().args(["run", p.to_str().unwrap(), "--progress", "never"]).env("RILL_FAULTS", "slow=per_card:10ms;crash=kafka-before-commit@3").output().unwrap();
    let log = String::from_utf8_lossy(&crashed.stderr);
    assert!(!crashed.status.success() && log.contains("RILL_FAULTS: crashing at"), "the first run crashes at its commit point: {log}");
    let r = run(&["run", p.to_str().unwrap(), "--progress", "never"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!([values(&broker, "chaos-0"), values(&broker, "chaos-1")], want, "each topic holds what the failure-free run committed");
    broker.assert_settled("chaos-0");
    broker.assert_settled("chaos-1");
}
