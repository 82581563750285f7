//! The `postgres` sink and source against a real PostgreSQL server (started by the tests).

mod common;

use std::time::Duration;

use common::postgres::{Server, PASSWORD};
use common::{lines, rill, wait_for, write, Guard};

/// `n` card transactions as JSON Lines: card `i % cards`, amount, a flag, tags, event time.
fn transactions(dir: &std::path::Path, n: u64, cards: u64) -> std::path::PathBuf {
    let mut text = String::new();
    for i in 0..n {
        let amount = (i * 37 % 1000) as f64 / 4.0;
        text += &format!(
            "{{\"id\": {i}, \"card\": \"c{:03}\", \"amount\": {amount}, \"online\": {}, \"tags\": [\"t{}\", \"x\\ty\"], \"ts\": {}}}\n",
            i % cards,
            i % 3 == 0,
            i % 5,
            1_764_000_000_000 + i as i64 * 10
        );
    }
    write(dir, "tx.jsonl", &text)
}

fn run_env(args: &[&str]) -> common::Run {
    let out = rill().args(args).env("PGPASSWORD", PASSWORD).output().expect("rill starts");
    common::Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

#[test]
fn append_and_upsert_write_typed_rows_and_dead_letter_what_the_database_refuses() {
    let pg = Server::start();
    // A table made beforehand with a constraint some rows break: amount < 200.
    pg.exec("CREATE TABLE capped (id bigint, card text, amount double precision CHECK (amount < 200), at timestamptz, tags jsonb)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let tx = transactions(dir.path(), 3000, 50);
    let url = pg.url();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: pg-basic\nparallelism: 2\nwork_dir: {d}/w\ndead_letter: {{type: file, path: {d}/dead.jsonl}}\n\
             sources:\n  tx: {{type: file, path: {}}}\n\
             sinks:\n\
             \x20 events:\n    type: postgres\n    inputs: [tx]\n    url: {url}\n    table: events\n    create_table: true\n    types: {{ts: timestamptz}}\n    batch: {{max_rows: 700}}\n\
             \x20 latest:\n    type: postgres\n    inputs: [tx]\n    url: {url}\n    table: latest\n    mode: upsert\n    key: [card]\n    create_table: true\n    columns: {{card: card, last_id: id, total: 'amount * 2.0', at: ts}}\n    types: {{at: timestamptz}}\n\
             \x20 capped:\n    type: postgres\n    inputs: [tx]\n    url: {url}\n    table: capped\n    columns: {{id: id, card: card, amount: amount, at: ts, tags: tags}}\n",
            tx.display()
        ),
    );
    let r = run_env(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains(PASSWORD) && !r.stderr.contains(PASSWORD), "the password is never printed");

    // Append: every record, typed by what its values are (the event time as a timestamp).
    let types = pg.rows("SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'events'");
    let want_types = [["amount", "double precision"], ["card", "text"], ["id", "bigint"], ["online", "boolean"], ["tags", "jsonb"], ["ts", "timestamp with time zone"]];
    assert_eq!(types, want_types.map(|r| r.map(String::from).to_vec()).to_vec());
    let events = pg.rows("SELECT id, card, amount, online, tags::text, (extract(epoch from ts) * 1000)::bigint AS ms FROM events");
    assert_eq!(events.len(), 3000, "every record once");
    let mut want: Vec<Vec<String>> = (0..3000u64)
        .map(|i| {
            vec![
                i.to_string(),
                format!("c{:03}", i % 50),
                format!("{}", (i * 37 % 1000) as f64 / 4.0),
                (if i % 3 == 0 { "t" } else { "f" }).to_string(),
                format!("[\"t{}\", \"x\\ty\"]", i % 5),
                (1_764_000_000_000 + i * 10).to_string(),
            ]
        })
        .collect();
    want.sort();
    let differ: Vec<_> = events.iter().zip(&want).filter(|(a, b)| a != b).take(2).collect();
    assert!(differ.is_empty(), "each row as its record; differing (got, want): {differ:?}");

    // Upsert: one row per card, from its last record.
    let latest = pg.rows("SELECT card, last_id, total, (extract(epoch from at) * 1000)::bigint FROM latest");
    let mut want: Vec<Vec<String>> = (0..50u64)
        .map(|c| {
            let last = 2950 + c;
            vec![format!("c{c:03}"), last.to_string(), format!("{}", (last * 37 % 1000) as f64 / 4.0 * 2.0), (1_764_000_000_000 + last * 10).to_string()]
        })
        .collect();
    want.sort();
    assert_eq!(latest, want);
    let pk = pg.rows("SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'latest'::regclass AND i.indisprimary");
    assert_eq!(pk, [["card".to_string()]], "the key is the primary key of a created upsert table");

    // The constraint: rows it refuses are dead-lettered with the database's message, the rest in.
    let refused: Vec<u64> = (0..3000u64).filter(|i| (i * 37 % 1000) as f64 / 4.0 >= 200.0).collect();
    let capped = pg.rows("SELECT count(*) FROM capped");
    assert_eq!(capped, [[(3000 - refused.len()).to_string()]]);
    let dead = lines(&dir.path().join("dead.jsonl"));
    let mut dead_ids: Vec<u64> = dead.iter().filter(|d| d["component"] == "capped").map(|d| d["input"]["id"].as_u64().unwrap()).collect();
    dead_ids.sort();
    assert_eq!(dead_ids, refused, "each refused row dead-lettered once");
    let e = dead[0]["error"].as_str().unwrap();
    assert!(e.contains("capped_amount_check") && e.contains("23514"), "the database's message: {e}");
    assert!(r.stderr.contains(&format!("dead letters: {}", refused.len())), "the summary counts them: {}", r.stderr);
}

#[test]
fn bad_settings_are_clear_errors() {
    let pg = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let tx = transactions(dir.path(), 10, 2);
    let pipeline = |name: &str, sink: &str| {
        write(dir.path(), name, &format!("name: pg-bad\nsources:\n  tx: {{type: file, path: {}}}\nsinks:\n  out:\n    type: postgres\n    inputs: [tx]\n{sink}", tx.display()))
    };
    let url = pg.url();
    // A password in the URL: refused before anything runs, and not echoed.
    let p = pipeline("pw.yaml", &format!("    url: postgres://rill:{PASSWORD}@127.0.0.1:{}/postgres\n    table: t\n", pg.port));
    let r = run_env(&["validate", p.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("pw.yaml:8:") && r.stderr.contains("holds a password") && r.stderr.contains("PGPASSWORD"), "{}", r.stderr);
    // Upsert without a key; exactly-once without checkpoints.
    let p = pipeline("nokey.yaml", &format!("    url: {url}\n    table: t\n    mode: upsert\n    delivery: exactly_once\n"));
    let r = run_env(&["validate", p.to_str().unwrap()]);
    assert!(r.stderr.contains("needs `key`") && r.stderr.contains("needs checkpoints"), "{}", r.stderr);
    // No such table, and no `create_table`.
    let p = pipeline("missing.yaml", &format!("    url: {url}\n    table: nowhere\n"));
    let r = run_env(&["run", p.to_str().unwrap()]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("there is no table nowhere") && r.stderr.contains("create_table"), "{}", r.stderr);
    // A column the table lacks.
    pg.exec("CREATE TABLE narrow (id bigint)");
    let p = pipeline("narrow.yaml", &format!("    url: {url}\n    table: narrow\n    columns: {{id: id, card: card}}\n"));
    let r = run_env(&["run", p.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("has no column `card`") && r.stderr.contains("`id`"), "{}", r.stderr);
    // The wrong password: refused at once, not retried for half a minute.
    let p = pipeline("wrong.yaml", &format!("    url: {url}\n    table: narrow\n"));
    let out = rill().args(["run", p.to_str().unwrap()]).env("PGPASSWORD", "wrong").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("refused the connection") && err.contains("28P01"), "{err}");
    // Nobody listening, with `retry_for: 1s`: it fails after trying for that long.
    let port = common::free_port();
    let p = pipeline("gone.yaml", &format!("    url: postgres://rill@127.0.0.1:{port}/postgres\n    table: narrow\n    retry_for: 1s\n"));
    let r = run_env(&["run", p.to_str().unwrap()]);
    assert!(r.code != 0 && r.stderr.contains("cannot connect to PostgreSQL") && r.stderr.contains("tried for 1s"), "{}", r.stderr);
}

/// The chaos pipeline: transactions through a slowed map into an exactly-once sink.
/// With `rate`, the file is read at that many records per second, so that a run lasts long
/// enough for the checkpoints a fault point counts.
fn chaos_pipeline(dir: &std::path::Path, tx: &std::path::Path, url: &str, table: &str, upsert: bool, rate: Option<u32>) -> std::path::PathBuf {
    let d = dir.display();
    let mode = if upsert { "    mode: upsert\n    key: [card]\n    columns: {card: card, last_id: id, n: seq}\n" } else { "    columns: {id: id, card: card, fee: fee}\n" };
    write(
        dir,
        "p.yaml",
        &format!(
            "name: pg-eos-{table}\nparallelism: 2\nbatch_size: 64\nwork_dir: {d}/w\ncheckpoint: {{interval: 50ms, dir: {d}/ck}}\n\
             sources:\n  tx: {{type: file, path: {}{}}}\n\
             transforms:\n  fees: {{type: map, parallelism: 1, inputs: [tx], fields: {{fee: 'amount * 0.01', seq: 'id + 1'}}}}\n\
             sinks:\n  out:\n    type: postgres\n    inputs: [fees]\n    url: {url}\n    table: {table}\n    create_table: true\n    delivery: exactly_once\n    batch: {{max_rows: 200}}\n{mode}",
            tx.display(),
            rate.map(|r| format!(", rate: {r}")).unwrap_or_default()
        ),
    )
}

#[test]
fn exactly_once_tables_survive_kills_and_crashes_around_the_commit() {
    let pg = Server::start();
    let data = tempfile::tempdir().unwrap();
    let tx = transactions(data.path(), 40_000, 100);
    for upsert in [false, true] {
        let kind = if upsert { "upsert" } else { "append" };
        let clean = tempfile::tempdir().unwrap();
        let r = run_env(&["run", chaos_pipeline(clean.path(), &tx, &pg.url(), &format!("clean_{kind}"), upsert, None).to_str().unwrap()]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let query = |t: &str| if upsert { format!("SELECT card, last_id, n FROM {t}") } else { format!("SELECT id, card, fee FROM {t}") };
        let want = pg.rows(&query(&format!("clean_{kind}")));
        assert_eq!(want.len(), if upsert { 100 } else { 40_000 });

        let chaos = tempfile::tempdir().unwrap();
        let table = format!("chaos_{kind}");
        let p = chaos_pipeline(chaos.path(), &tx, &pg.url(), &table, upsert, None);
        let faults = ["", "crash=postgres-before-commit@2", "", "crash=postgres-before-prepare@3", "", "crash=postgres-before-commit@1", "", "crash=postgres-after-final-commit@1"];
        let (mut x, mut interrupted, mut crashed, mut finished) = (11u64, 0, 0, false);
        let mut outcomes = Vec::new();
        for fault in faults {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let log = chaos.path().join(format!("run-{interrupted}.log"));
            let mut child = Guard(
                rill()
                    .args(["run", p.to_str().unwrap(), "--progress", "never"])
                    .env("PGPASSWORD", PASSWORD)
                    .env("RILL_FAULTS", format!("slow=fees:5ms;{fault}"))
                    .stderr(std::fs::File::create(&log).unwrap())
                    .spawn()
                    .unwrap(),
            );
            // Killed at a random moment (or it finishes, or crashes at its fault point, first).
            let limit = if fault.is_empty() { Duration::from_millis(200 + (x >> 33) % 600) } else { Duration::from_secs(60) };
            let ended = wait_for(limit, || child.0.try_wait().unwrap().is_some());
            let text = || std::fs::read_to_string(&log).unwrap();
            assert!(ended || fault.is_empty(), "the run with {fault} neither crashed nor finished in 60 s: {}", text());
            let _ = child.0.kill();
            let status = child.0.wait().unwrap();
            outcomes.push(format!("[{fault}] {status}: {}", text().lines().filter(|l| !l.contains("WARN")).take(3).collect::<Vec<_>>().join(" / ")));
            if status.success() {
                finished = true;
                break;
            }
            interrupted += 1;
            crashed += text().contains("RILL_FAULTS: crashing at") as u32;
        }
        assert!(interrupted >= 3 && crashed >= 1, "{kind}: most runs end by a kill or a crash ({interrupted} interrupted, {crashed} at a fault point): {outcomes:#?}");
        if !finished {
            let r = run_env(&["run", p.to_str().unwrap()]);
            assert_eq!(r.code, 0, "{}", r.stderr);
        }
        let got = pg.rows(&query(&table));
        let missing: Vec<&Vec<String>> = want.iter().filter(|w| !got.contains(w)).take(3).collect();
        let mut dedup = got.clone();
        dedup.dedup();
        assert!(got == want, "{kind}: the table differs from the failure-free run's: {} rows for {}, {} duplicated, missing e.g. {missing:?}; runs: {outcomes:#?}", got.len(), want.len(), got.len() - dedup.len());
        assert_eq!(pg.prepared(), Vec::<String>::new(), "{kind}: no prepared transaction is left behind");
    }
}

#[test]
fn a_fresh_start_rolls_back_what_an_earlier_run_left_prepared() {
    let pg = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let tx = transactions(dir.path(), 2000, 10);
    let p = chaos_pipeline(dir.path(), &tx, &pg.url(), "fresh", false, Some(2000));
    // Crashes between a checkpoint's completion and its commit: a prepared transaction waits.
    // (The run lasts a second: some 20 checkpoints at 50 ms, whatever the machine's load.)
    let out = rill().args(["run", p.to_str().unwrap()]).env("PGPASSWORD", PASSWORD).env("RILL_FAULTS", "slow=fees:2ms;crash=postgres-before-commit@2").output().unwrap();
    assert!(!out.status.success());
    let left = pg.prepared();
    assert!(!left.is_empty() && left.iter().all(|g| g.starts_with("rill/pg-eos-fresh/out/")), "{left:?}");
    let before: u64 = pg.rows("SELECT count(*) FROM fresh")[0][0].parse().unwrap();
    // A new run from scratch rolls it back and appends everything once more: the rows of the
    // checkpoints the first run committed stay, those of the prepared transaction do not.
    let r = run_env(&["run", p.to_str().unwrap(), "--from-scratch"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(pg.prepared(), Vec::<String>::new());
    assert_eq!(pg.rows("SELECT count(*), count(DISTINCT id) FROM fresh"), [[(before + 2000).to_string(), "2000".to_string()]]);
}

#[test]
fn a_table_or_a_query_is_a_bounded_source_that_resumes_where_it_was() {
    let pg = Server::start();
    pg.exec(
        "CREATE TABLE profiles (card text PRIMARY KEY, limit_eur double precision, tier int, opened timestamptz, meta jsonb, note text);
         INSERT INTO profiles SELECT 'c' || lpad(i::text, 5, '0'), i * 1.5, i % 3, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute',
                                     jsonb_build_object('risk', i % 7), CASE WHEN i % 2 = 0 THEN 'even' END
                              FROM generate_series(20000, 1, -1) i;",
    );
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let url = pg.url();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: pg-source\nwork_dir: {d}/w\ncheckpoint: {{interval: 20ms}}\n\
             sources:\n  cards: {{type: postgres, url: '{url}', table: profiles, fetch_rows: 300}}\n  gold: {{type: postgres, url: '{url}', query: 'SELECT card, tier FROM profiles WHERE tier = 2 ORDER BY card'}}\n\
             sinks:\n  all: {{type: file, inputs: [cards], path: {d}/all.jsonl}}\n  some: {{type: file, inputs: [gold], path: {d}/gold.jsonl}}\n"
        ),
    );
    let r = run_env(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let all = lines(&dir.path().join("all.jsonl"));
    assert_eq!(all.len(), 20_000);
    // In primary-key order, typed: numbers, text, JSON as a map, NULL as null, timestamps as text.
    assert_eq!(all[0], serde_json::json!({"card": "c00001", "limit_eur": 1.5, "tier": 1, "opened": "2026-01-01T00:01:00+00:00", "meta": {"risk": 1}, "note": null}));
    assert_eq!(all[19_999]["card"], "c20000");
    assert!(all.windows(2).all(|w| w[0]["card"].as_str() < w[1]["card"].as_str()));
    let gold = lines(&dir.path().join("gold.jsonl"));
    assert_eq!(gold.len(), (1..=20_000).filter(|i| i % 3 == 2).count());
    assert!(gold.iter().all(|g| g["tier"] == 2 && g.as_object().unwrap().len() == 2));

    // Killed again and again, each run resumes after the rows it had emitted: nothing lost or
    // written twice.
    let out = rill().args(["chaos", p.to_str().unwrap(), "--kills", "4", "--seed", "5", "--max-delay", "150ms"]).env("PGPASSWORD", PASSWORD).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("ok: no record lost, none duplicated"), "{text}");
    assert!(text.contains(": 4 kills ("), "the runs were killed: {text}");
}

#[test]
fn at_least_once_rides_out_a_server_restart_and_fails_loudly_when_it_stays_away() {
    let mut pg = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let tx = transactions(dir.path(), 20_000, 10);
    let url = pg.url();
    let pipeline = |name: &str, retry: &str| {
        write(
            dir.path(),
            name,
            &format!(
                "name: pg-restart\nwork_dir: {d}/w-{name}\nsources:\n  tx: {{type: file, path: {}, rate: 8000}}\n\
                 sinks:\n  out: {{type: postgres, inputs: [tx], url: '{url}', table: landed, create_table: true, columns: {{id: id}}, batch: {{max_rows: 100, max_delay: 20ms}}, retry_for: {retry}}}\n",
                tx.display()
            ),
        )
    };
    let count = |pg: &Server| -> u64 { pg.rows("SELECT count(DISTINCT id) FROM landed").first().map(|r| r[0].parse().unwrap()).unwrap_or(0) };
    let table_has_rows = |pg: &Server| pg.rows("SELECT to_regclass('landed') IS NOT NULL")[0][0] == "t" && count(pg) > 1000;

    // The server goes away for a moment mid-run: the sink reconnects and the job ends with
    // every row in (at-least-once: some maybe twice).
    let p = pipeline("back.yaml", "30s");
    let child = Guard(rill().args(["run", p.to_str().unwrap(), "--progress", "never"]).env("PGPASSWORD", PASSWORD).stderr(std::fs::File::create(dir.path().join("back.log")).unwrap()).spawn().unwrap());
    assert!(wait_for(Duration::from_secs(30), || table_has_rows(&pg)), "rows arrive");
    pg.stop();
    std::thread::sleep(Duration::from_millis(500)); // an outage, not a guess at timing: any length below 30 s works
    pg.start_again();
    let mut child = child;
    let status = child.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("back.log")).unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("PostgreSQL") && (log.contains("trying again") || log.contains("writing the batch again")), "the outage is logged: {log}");
    assert_eq!(count(&pg), 20_000, "{log}");

    // It stays away: the job fails after `retry_for`, naming the cause.
    pg.exec("DROP TABLE landed");
    let p = pipeline("gone.yaml", "1s");
    let mut child = Guard(rill().args(["run", p.to_str().unwrap(), "--progress", "never"]).env("PGPASSWORD", PASSWORD).stderr(std::fs::File::create(dir.path().join("gone.log")).unwrap()).spawn().unwrap());
    assert!(wait_for(Duration::from_secs(30), || table_has_rows(&pg)), "rows arrive");
    pg.stop();
    let status = child.0.wait().unwrap();
    let log = std::fs::read_to_string(dir.path().join("gone.log")).unwrap();
    assert!(!status.success() && log.contains("cannot connect to PostgreSQL") && log.contains("tried for 1s"), "{status}: {log}");
    pg.start_again();
}

#[test]
fn the_fraud_example_scores_cards_into_tables() {
    let pg = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tx.jsonl");
    let made = std::process::Command::new("python3").arg("examples/fraud/generate.py").arg(&data).current_dir(common::root()).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let d = dir.path().display();
    let url = pg.url();
    let r = run_env(&[
        "run",
        "examples/fraud/postgres.yaml",
        "--progress",
        "never",
        "--set",
        &format!("sources.tx.path={}", data.display()),
        "--set",
        &format!("work_dir={d}/w"),
        "--set",
        &format!("checkpoint.dir={d}/ck"),
        "--set",
        &format!("sinks.card_scores.url={url}"),
        "--set",
        &format!("sinks.fraud_alerts.url={url}"),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let cards: std::collections::BTreeSet<String> = lines(&data).iter().map(|t| t["card"].as_str().unwrap().to_string()).collect();
    assert_eq!(pg.rows("SELECT count(*), count(DISTINCT card_id) FROM card_scores"), [[cards.len().to_string(), cards.len().to_string()]], "one row per card");
    let frauds: u64 = lines(&data).iter().filter(|t| t["is_fraud"] == true).count() as u64;
    let alerts = pg.rows("SELECT count(*), count(*) FILTER (WHERE was_fraud) FROM fraud_alerts");
    let (n, caught): (u64, u64) = (alerts[0][0].parse().unwrap(), alerts[0][1].parse().unwrap());
    assert!(caught * 10 >= frauds * 5 && caught * 10 >= n * 8, "alerts catch fraud: {caught} of {frauds} frauds among {n} alerts");
    let types = pg.rows("SELECT column_name::text, data_type::text FROM information_schema.columns WHERE table_name = 'card_scores'");
    assert!(types.contains(&vec!["at".to_string(), "timestamp with time zone".to_string()]) && types.contains(&vec!["flagged".to_string(), "boolean".to_string()]), "{types:?}");
}

#[test]
fn an_exactly_once_sink_resumes_at_another_parallelism() {
    let pg = Server::start();
    let data = tempfile::tempdir().unwrap();
    let tx = transactions(data.path(), 20_000, 100);
    for upsert in [false, true] {
        let kind = if upsert { "upsert" } else { "append" };
        let dir = tempfile::tempdir().unwrap();
        let table = format!("rescaled_{kind}");
        let p = chaos_pipeline(dir.path(), &tx, &pg.url(), &table, upsert, Some(20_000));
        // At parallelism 2, crashed between a checkpoint's completion and its commit: that
        // checkpoint's transactions wait, prepared (the crash hits whichever instance commits
        // first, so one or both).
        let out = rill().args(["run", p.to_str().unwrap()]).env("PGPASSWORD", PASSWORD).env("RILL_FAULTS", "slow=fees:3ms;crash=postgres-before-commit@3").output().unwrap();
        assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let left = pg.prepared();
        assert!(!left.is_empty(), "a prepared transaction waits: {left:?}");
        // Resumed with one sink instance, which answers for instance 1's transactions too.
        let r = run_env(&["run", p.to_str().unwrap(), "--set", "sinks.out.parallelism=1"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(pg.prepared(), Vec::<String>::new(), "{kind}: nothing is left prepared");
        let (query, want) = if upsert {
            (format!("SELECT count(*), count(DISTINCT card), sum(last_id) FROM {table}"), vec![vec!["100".to_string(), "100".into(), (19_900..20_000u64).sum::<u64>().to_string()]])
        } else {
            (format!("SELECT count(*), count(DISTINCT id) FROM {table}"), vec![vec!["20000".to_string(), "20000".into()]])
        };
        assert_eq!(pg.rows(&query), want, "{kind}: every row once");
    }
}

#[test]
fn sslmode_is_honoured_with_real_handshakes_and_wrong_certificates_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, rogue) = (common::tls::Pki::new(), common::tls::Pki::new());
    pki.issue(dir.path(), "server"); // for 127.0.0.1, not for "localhost"
    pki.issue(dir.path(), "client");
    rogue.issue(dir.path(), "rogue");
    let path = |f: &str| dir.path().join(f);
    let (cert, key, client_ca) = (path("server.pem"), path("server.key"), path("client-ca.pem"));
    // The server speaks TLS, wants a client certificate its CA signed, and refuses TCP without TLS.
    let pg = Server::start_tls(common::postgres::Tls { cert: &cert, key: &key, client_ca: Some(&client_ca) });
    let d = dir.path().display();
    let client = format!("sslcert={d}/client.pem&sslkey={d}/client.key");
    let mut n = 0;
    let mut run = |host: &str, query: &str| {
        n += 1;
        let p = write(
            dir.path(),
            &format!("p{n}.yaml"),
            &format!(
                "name: pg-tls-{n}\nwork_dir: {d}/w{n}\nsources:\n  g: {{type: generator, count: 50, fields: {{n: id}}}}\n\
                 sinks:\n  out: {{type: postgres, inputs: [g], url: 'postgres://rill@{host}:{}/postgres?{query}', table: t{n}, create_table: true, retry_for: 30s}}\n",
                pg.port
            ),
        );
        (n, run_env(&["run", p.to_str().unwrap(), "--progress", "never"]))
    };
    let written = |n: u32| pg.rows(&format!("SELECT count(*) FROM t{n}"))[0][0].clone();
    // verify-full: the CA signed the certificate, and it is for 127.0.0.1.
    let (n, r) = run("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={d}/server-ca.pem&{client}"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(written(n), "50");
    // The default (prefer, as libpq) encrypts without checking the server; so does require.
    for mode in ["", "sslmode=require&"] {
        let (n, r) = run("127.0.0.1", &format!("{mode}{client}"));
        assert_eq!(r.code, 0, "{mode}: {}", r.stderr);
        assert_eq!(written(n), "50");
    }
    // By the name `localhost` the certificate does not fit: verify-full refuses it, verify-ca
    // (the CA signed it, whatever it is for) takes it.
    let (_, r) = run("localhost", &format!("sslmode=verify-full&sslrootcert={d}/server-ca.pem&{client}"));
    assert!(r.code == 1 && r.stderr.contains("error performing TLS handshake") && r.stderr.contains("not valid for name"), "{}", r.stderr);
    let (n, r) = run("localhost", &format!("sslmode=verify-ca&sslrootcert={d}/server-ca.pem&{client}"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(written(n), "50");
    // Trusting another CA: the handshake fails at once (not retried for `retry_for`).
    let started = std::time::Instant::now();
    let (_, r) = run("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={d}/rogue-ca.pem&{client}"));
    assert!(r.code == 1 && r.stderr.contains("error performing TLS handshake") && r.stderr.contains("UnknownIssuer"), "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(25), "a refused certificate is not retried");
    // No client certificate, or one another CA signed: the server refuses.
    let (_, r) = run("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={d}/server-ca.pem"));
    assert!(r.code == 1 && r.stderr.contains("PostgreSQL at postgres://rill@127.0.0.1") && r.stderr.contains("requires a valid client certificate"), "{}", r.stderr);
    let (_, r) = run("127.0.0.1", &format!("sslmode=verify-full&sslrootcert={d}/server-ca.pem&sslcert={d}/rogue.pem&sslkey={d}/rogue.key"));
    assert!(r.code == 1 && r.stderr.contains("UnknownCA"), "{}", r.stderr);
    // Without TLS the server's pg_hba.conf refuses the connection.
    let (_, r) = run("127.0.0.1", "sslmode=disable");
    assert!(r.code == 1 && r.stderr.contains("refused the connection") && r.stderr.contains("no encryption"), "{}", r.stderr);
    assert!(!r.stderr.contains(PASSWORD));
    // Settings that cannot work are errors before the run, at the URL's place.
    for (query, says) in [
        ("sslmode=verify-full", "give the CA that signed it as `sslrootcert=PATH`"),
        ("sslmode=verify-ca&sslrootcert=nowhere.pem", "nowhere.pem"),
        ("sslmode=sometimes", "not one of disable, prefer, require, verify-ca, verify-full"),
        ("sslmode=require&sslcert=client.pem", "`sslcert` and `sslkey` go together"),
    ] {
        let p = write(dir.path(), "bad.yaml", &format!("name: pg-tls-bad\nsources:\n  g: {{type: generator, count: 1}}\nsinks:\n  out: {{type: postgres, inputs: [g], url: 'postgres://rill@127.0.0.1:5432/postgres?{query}', table: t}}\n"));
        let r = run_env(&["validate", p.to_str().unwrap()]);
        assert!(r.code == 2 && r.stderr.contains("bad.yaml:5:") && r.stderr.contains(says), "{query}: {}", r.stderr);
    }
}

#[test]
fn a_postgres_source_reports_its_progress() {
    let pg = Server::start();
    pg.exec("CREATE TABLE cards AS SELECT i AS id, 'card-' || i AS card FROM generate_series(1, 5000) i; ALTER TABLE cards ADD PRIMARY KEY (id)");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: pg-progress\nbatch_size: 50\nwork_dir: {d}/w\nsources:\n  cards: {{type: postgres, url: '{}', table: cards, fetch_rows: 100}}\n\
             transforms:\n  m: {{type: map, inputs: [cards], fields: {{n: id}}}}\nsinks:\n  out: {{type: file, inputs: [m], path: {d}/out.jsonl}}\n",
            pg.url()
        ),
    );
    // About 3 s: 100 batches, each held 30 ms by the map.
    let (child, addr, rx) = common::http::start_with(&p, &["--http", "127.0.0.1:0"], &[("RILL_FAULTS", "slow=m:30ms"), ("PGPASSWORD", PASSWORD)]);
    let mut seen: Vec<f64> = Vec::new();
    assert!(
        wait_for(Duration::from_secs(120), || {
            seen.extend(common::http::call(&addr, "GET", "/api/v1/job", None).json()["components"][0]["progress"].as_f64());
            seen.iter().any(|&v| v > 0.0 && v < 1.0) && seen.last().is_some_and(|&v| v > 0.5)
        }),
        "progress seen: {seen:?}"
    );
    assert!(seen.windows(2).all(|w| w[0] <= w[1]) && seen.iter().all(|&v| v <= 1.0), "progress: {seen:?}");
    let (code, log) = common::http::finish(child, rx);
    assert_eq!(code, 0, "{log}");
    assert_eq!(lines(&dir.path().join("out.jsonl")).len(), 5000);
}
