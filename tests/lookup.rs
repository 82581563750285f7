//! The `lookup` transform: records enriched from a file or a PostgreSQL table, reloaded as the
//! table changes.

mod common;

use std::time::Duration;

use common::postgres::{Server, PASSWORD};
use common::{interrupt, lines, rill, run, wait_for, write, Guard};

/// Cards 0..n: limit = 100·card, tier by card mod 3; card 7 is missing from the table.
fn cards_csv(dir: &std::path::Path, n: u64, scale: u64) -> std::path::PathBuf {
    let mut text = "card,limit,tier\n".to_string();
    for c in (0..n).filter(|c| *c != 7) {
        text += &format!("{c},{},{}\n", c * scale, ["gold", "silver", "basic"][(c % 3) as usize]);
    }
    write(dir, "cards.csv", &text)
}

#[test]
fn records_are_enriched_from_a_file_table_with_each_miss_policy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let table = cards_csv(dir.path(), 50, 100);
    let mut tx = String::new();
    for i in 0..5000u64 {
        tx += &format!("{{\"id\": {i}, \"card\": {}, \"amount\": {}}}\n", i % 53, i % 17);
    }
    write(dir.path(), "tx.jsonl", &tx);
    let lookup = |name: &str, extra: &str| {
        format!("  {name}:\n    type: lookup\n    inputs: [tx]\n    key: card\n    table: {{type: file, path: {}, format: {{type: csv, header: true}}, key: card}}\n{extra}", table.display())
    };
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: lookup-file\nparallelism: 2\ndead_letter: {{type: file, path: {d}/dead.jsonl}}\nsources:\n  tx: {{type: file, path: {d}/tx.jsonl}}\ntransforms:\n{}{}{}\
             sinks:\n  all: {{type: file, inputs: [plain], path: {d}/plain.jsonl}}\n  sel: {{type: file, inputs: [chosen], path: {d}/chosen.jsonl}}\n  dead: {{type: file, inputs: [strict], path: {d}/strict.jsonl}}\n",
            lookup("plain", ""),
            lookup("chosen", "    select: {headroom: 'table.limit - amount', tier: table.tier}\n    on_miss: drop\n    partitioned: true\n"),
            lookup("strict", "    on_miss: dead_letter\n"),
        ),
    );
    let r = run(&["run", p.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let known = |c: u64| c < 50 && c != 7;
    let tier = |c: u64| ["gold", "silver", "basic"][(c % 3) as usize];
    // Every column of the row but the key; nulls on a miss.
    let mut plain = lines(&dir.path().join("plain.jsonl"));
    plain.sort_by_key(|v| v["id"].as_u64());
    assert_eq!(plain.len(), 5000);
    for v in &plain {
        let c = v["card"].as_u64().unwrap();
        let want = if known(c) { serde_json::json!([c * 100, tier(c)]) } else { serde_json::json!([null, null]) };
        assert_eq!(serde_json::json!([v["limit"], v["tier"]]), want, "{v}");
    }
    // `select` over the record and `table`; misses dropped; partitioned by key.
    let chosen = lines(&dir.path().join("chosen.jsonl"));
    let want: Vec<u64> = (0..5000u64).filter(|i| known(i % 53)).collect();
    assert_eq!(chosen.len(), want.len());
    for v in &chosen {
        let (c, amount) = (v["card"].as_u64().unwrap(), v["amount"].as_i64().unwrap());
        assert_eq!(v["headroom"].as_i64().unwrap(), (c * 100) as i64 - amount);
        assert_eq!(v["tier"], tier(c));
        assert!(v.get("limit").is_none(), "only the selected fields: {v}");
    }
    // Misses dead-lettered, with the key.
    let strict = lines(&dir.path().join("strict.jsonl"));
    let dead: Vec<serde_json::Value> = lines(&dir.path().join("dead.jsonl")).into_iter().filter(|d| d["component"] == "strict").collect();
    assert_eq!(strict.len() + dead.len(), 5000);
    assert_eq!(dead.len(), (0..5000u64).filter(|i| !known(i % 53)).count());
    assert!(dead[0]["error"].as_str().unwrap().contains("no row of the table has `card` ="), "{}", dead[0]);
    assert!(r.stderr.contains("table loaded 1 time(s)"), "{}", r.stderr);
}

/// Runs `p` until interrupted, while `change` alters the table; waits for records enriched
/// with the new version.
fn sees_the_change(p: &std::path::Path, out: &std::path::Path, env: &[(&str, &str)], change: impl FnOnce(), new_limit: i64) {
    let mut cmd = rill();
    cmd.args(["run", p.to_str().unwrap(), "--progress", "never"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Guard(cmd.stderr(std::process::Stdio::null()).spawn().unwrap());
    // Card 1's limits, in output order.
    let limits = || {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()).filter(|v| v["card"] == 1).map(|v| v["limit"].as_i64()).collect::<Vec<_>>()
    };
    assert!(wait_for(Duration::from_secs(30), || limits().iter().any(|l| *l == Some(100))), "enriched with the first version");
    change();
    assert!(wait_for(Duration::from_secs(30), || limits().iter().any(|l| *l == Some(new_limit))), "enriched with the new version: {:?}", &limits()[limits().len().saturating_sub(5)..]);
    interrupt(&child.0);
    let mut child = child;
    assert!(child.0.wait().unwrap().success());
    // Once changed, never the old version again.
    let got = limits();
    let first_new = got.iter().position(|l| *l == Some(new_limit)).unwrap();
    assert!(got[first_new..].iter().all(|l| *l == Some(new_limit)), "{:?}", &got[first_new..]);
}

fn stream_pipeline(dir: &std::path::Path, table: &str) -> std::path::PathBuf {
    let d = dir.display();
    write(
        dir,
        "p.yaml",
        &format!(
            "name: lookup-live\nsources:\n  tx: {{type: generator, fields: {{card: 'id % 2 + 1'}}, rate: 400}}\n\
             transforms:\n  enriched:\n    type: lookup\n    inputs: [tx]\n    key: card\n    table: {table}\n\
             sinks:\n  out: {{type: file, inputs: [enriched], path: {d}/out.jsonl}}\n"
        ),
    )
}

#[test]
fn a_file_table_is_reloaded_when_the_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let table = cards_csv(dir.path(), 3, 100);
    let p = stream_pipeline(dir.path(), &format!("{{type: file, path: {}, format: {{type: csv, header: true}}, key: card, refresh: 50ms}}", table.display()));
    sees_the_change(
        &p,
        &dir.path().join("out.jsonl"),
        &[],
        || {
            // Written whole under another name and renamed over it, as a deploy would.
            let next = tempfile::tempdir().unwrap();
            std::fs::rename(cards_csv(next.path(), 3, 250), &table).unwrap();
        },
        250,
    );
}

#[test]
fn a_postgres_table_is_loaded_again_every_refresh() {
    let pg = Server::start();
    pg.exec("CREATE TABLE cards (card bigint PRIMARY KEY, \"limit\" bigint, tier text); INSERT INTO cards VALUES (1, 100, 'gold'), (2, 200, 'basic')");
    let dir = tempfile::tempdir().unwrap();
    let p = stream_pipeline(dir.path(), &format!("{{type: postgres, url: '{}', table: cards, key: card, refresh: 100ms}}", pg.url()));
    sees_the_change(&p, &dir.path().join("out.jsonl"), &[("PGPASSWORD", PASSWORD)], || pg.exec("UPDATE cards SET \"limit\" = 999 WHERE card = 1; DELETE FROM cards WHERE card = 2"), 999);
    let out = lines(&dir.path().join("out.jsonl"));
    let after = out.iter().position(|v| v["limit"] == 999).unwrap();
    assert!(out[after..].iter().filter(|v| v["card"] == 2).all(|v| v["limit"].is_null()), "a deleted row is a miss");
}

#[test]
fn a_lookup_survives_kills_with_nothing_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let table = cards_csv(dir.path(), 50, 100);
    let mut tx = String::new();
    for i in 0..30_000u64 {
        tx += &format!("{{\"id\": {i}, \"card\": {}}}\n", i % 53);
    }
    write(dir.path(), "tx.jsonl", &tx);
    let p = write(
        dir.path(),
        "p.yaml",
        &format!(
            "name: lookup-chaos\nparallelism: 2\nbatch_size: 256\ncheckpoint: {{interval: 30ms}}\nsources:\n  tx: {{type: file, path: {d}/tx.jsonl}}\n\
             transforms:\n  enriched: {{type: lookup, inputs: [tx], key: card, partitioned: true, table: {{type: file, path: {}, format: {{type: csv, header: true}}, key: card}}}}\n\
             sinks:\n  out: {{type: file, inputs: [enriched], path: {d}/out.jsonl}}\n",
            table.display()
        ),
    );
    let r = run(&["chaos", p.to_str().unwrap(), "--kills", "5", "--seed", "4", "--max-delay", "150ms"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ok: no record lost, none duplicated") && r.stdout.contains(": 5 kills ("), "{}", r.stdout);
}
