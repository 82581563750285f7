//! `join` in whole jobs: interval, window and temporal joins of two files, checked against a
//! direct computation at parallelism 1 and 2, through `rill chaos` kills, and resumed at
//! another parallelism.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{lines, rill, run, wait_for, write, Guard};

/// One generated row: (id, key, event time).
type Row = (i64, i64, i64);

/// A small deterministic generator (no crate needed for a test's data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> i64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 33) % n) as i64
    }
}

/// Orders (left), payments (right) and card updates (a changelog: `closed` deletes the card),
/// each written out of order by less than the sources' 200 ms bound, so that no row is late
/// and the output is fixed whatever the interleaving of the two inputs.
struct Data {
    orders: Vec<Row>,
    payments: Vec<Row>,
    /// (id, key, time, limit, closed)
    cards: Vec<(i64, i64, i64, i64, bool)>,
}

fn data(dir: &Path, n: i64) -> Data {
    let mut g = Lcg(7);
    let (mut orders, mut payments, mut cards) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let t = 1_000 + i * 5;
        let k = g.next(41);
        orders.push((i, k, t + g.next(50)));
        for j in 0..g.next(3) {
            payments.push((i * 10 + j, k, t - 100 + g.next(700)));
        }
        if g.next(10) == 0 {
            let card = (i, g.next(41), t + g.next(50), 100 * g.next(50), g.next(8) == 0);
            // One update per card and time, so that "the latest" is never a tie.
            if !cards.iter().any(|c: &(i64, i64, i64, i64, bool)| c.1 == card.1 && c.2 == card.2) {
                cards.push(card);
            }
        }
    }
    let mut shuffle = |ts: Vec<i64>| -> Vec<usize> {
        let mut order: Vec<(i64, usize)> = ts.iter().enumerate().map(|(i, t)| (t + g.next(150), i)).collect();
        order.sort();
        order.into_iter().map(|(_, i)| i).collect()
    };
    let text = |order: Vec<usize>, line: &dyn Fn(usize) -> String| order.into_iter().map(|i| line(i) + "\n").collect::<String>();
    let o = text(shuffle(orders.iter().map(|r| r.2).collect()), &|i| format!("{{\"order\":{},\"card\":{},\"ts\":{}}}", orders[i].0, orders[i].1, orders[i].2));
    let p = text(shuffle(payments.iter().map(|r| r.2).collect()), &|i| format!("{{\"payment\":{},\"card\":{},\"ts\":{}}}", payments[i].0, payments[i].1, payments[i].2));
    let c = text(shuffle(cards.iter().map(|r| r.2).collect()), &|i| {
        let (id, k, ts, limit, closed) = cards[i];
        format!("{{\"update\":{id},\"card\":{k},\"ts\":{ts},\"limit\":{limit},\"status\":\"{}\"}}", if closed { "closed" } else { "open" })
    });
    write(dir, "orders.jsonl", &o);
    write(dir, "payments.jsonl", &p);
    write(dir, "cards.jsonl", &c);
    Data { orders, payments, cards }
}

/// Three joins of the same inputs, each to its own file. `extra` goes at the top.
fn pipeline(dir: &Path, extra: &str, rate: &str) -> std::path::PathBuf {
    let d = dir.display();
    let src = |name: &str| format!("  {name}: {{type: file, path: {d}/{name}.jsonl, {rate}event_time: {{field: ts, max_out_of_orderness: 200ms}}}}\n");
    write(
        dir,
        "p.yaml",
        &format!(
            "name: joins\nwork_dir: {d}/work\n{extra}sources:\n{}{}{}transforms:\n\
             \x20 paid:\n    type: join\n    inputs: [orders, payments]\n    on: {{left: card, right: card}}\n    kind: interval\n    between: [-50ms, 200ms]\n    how: left\n    select: {{order: left.order, payment: right.payment}}\n\
             \x20 same_window:\n    type: join\n    inputs: [orders, payments]\n    on: {{left: card, right: card}}\n    kind: window\n    window: {{type: tumbling, size: 100ms}}\n    how: full\n    select: {{order: left.order, payment: right.payment}}\n\
             \x20 with_card:\n    type: join\n    inputs: [orders, cards]\n    on: {{left: card, right: card}}\n    kind: temporal\n    deletes: \"status == 'closed'\"\n    how: left\n    select: {{order: left.order, update: right.update, limit: right.limit}}\n\
             sinks:\n  paid_out: {{type: file, inputs: [paid], path: {d}/paid.jsonl}}\n  window_out: {{type: file, inputs: [same_window], path: {d}/window.jsonl}}\n  card_out: {{type: file, inputs: [with_card], path: {d}/card.jsonl}}\n\
             \x20 late_out: {{type: file, inputs: [paid.late, same_window.late, with_card.late], path: {d}/late.jsonl}}\n",
            src("orders"),
            src("payments"),
            src("cards"),
        ),
    )
}

fn pair(v: &serde_json::Value, a: &str, b: &str) -> (i64, i64) {
    (v[a].as_i64().unwrap_or(-1), v[b].as_i64().unwrap_or(-1))
}

fn read_pairs(path: &Path, a: &str, b: &str) -> Vec<(i64, i64)> {
    let mut v: Vec<(i64, i64)> = lines(path).iter().map(|v| pair(v, a, b)).collect();
    v.sort();
    v
}

/// What the three joins must give, computed directly.
fn expected(d: &Data) -> [Vec<(i64, i64)>; 3] {
    let mut paid = Vec::new();
    for o in &d.orders {
        let mut met = false;
        for p in d.payments.iter().filter(|p| p.1 == o.1 && p.2 - o.2 >= -50 && p.2 - o.2 <= 200) {
            paid.push((o.0, p.0));
            met = true;
        }
        if !met {
            paid.push((o.0, -1));
        }
    }
    let mut windows: BTreeMap<(i64, i64), (Vec<i64>, Vec<i64>)> = BTreeMap::new();
    for o in &d.orders {
        windows.entry((o.1, o.2.div_euclid(100))).or_default().0.push(o.0);
    }
    for p in &d.payments {
        windows.entry((p.1, p.2.div_euclid(100))).or_default().1.push(p.0);
    }
    let mut window = Vec::new();
    for (os, ps) in windows.values() {
        match (os.is_empty(), ps.is_empty()) {
            (false, false) => os.iter().for_each(|o| ps.iter().for_each(|p| window.push((*o, *p)))),
            (false, true) => os.iter().for_each(|o| window.push((*o, -1))),
            (true, _) => ps.iter().for_each(|p| window.push((-1, *p))),
        }
    }
    let mut card = Vec::new();
    for o in &d.orders {
        // The latest update at or before the order.
        let version = d.cards.iter().filter(|c| c.1 == o.1 && c.2 <= o.2).max_by_key(|c| c.2);
        card.push(match version {
            Some(c) if !c.4 => (o.0, c.0),
            _ => (o.0, -1),
        });
    }
    for v in [&mut paid, &mut window, &mut card] {
        v.sort();
    }
    [paid, window, card]
}

fn check(dir: &Path, want: &[Vec<(i64, i64)>; 3]) {
    assert_eq!(read_pairs(&dir.join("paid.jsonl"), "order", "payment"), want[0], "interval join");
    assert_eq!(read_pairs(&dir.join("window.jsonl"), "order", "payment"), want[1], "window join");
    assert_eq!(read_pairs(&dir.join("card.jsonl"), "order", "update"), want[2], "temporal join");
    assert!(lines(&dir.join("late.jsonl")).is_empty(), "no row is late in this data");
}

#[test]
fn joins_of_two_files_equal_a_direct_computation_at_parallelism_1_and_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path(), 6000);
    let want = expected(&d);
    assert!(want[0].iter().filter(|p| p.1 >= 0).count() > 1000 && want[0].iter().any(|p| p.1 < 0), "the data has pairs and misses");
    assert!(want[2].iter().filter(|p| p.1 >= 0).count() > 1000 && want[2].iter().any(|p| p.1 < 0));
    for p in [1, 2] {
        let path = pipeline(dir.path(), &format!("parallelism: {p}\n"), "");
        let r = run(&["run", path.to_str().unwrap(), "--progress", "never"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        check(dir.path(), &want);
        assert!(r.stderr.contains("paid #0: ") && r.stderr.contains(" outer, 0 late"), "{}", r.stderr);
    }
}

#[test]
fn joins_survive_kills_with_nothing_lost_or_doubled() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path(), 6000);
    let path = pipeline(dir.path(), "parallelism: 2\nbatch_size: 128\ncheckpoint: {interval: 30ms}\n", "rate: 20000, ");
    let r = run(&["chaos", path.to_str().unwrap(), "--kills", "6", "--seed", "3", "--max-delay", "200ms"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("ok: no record lost, none duplicated") && r.stdout.contains(": 6 kills ("), "{}", r.stdout);
    // The chaos harness ran a failure-free reference into its own folder; the killed runs'
    // output equals it, and here the direct computation too.
    let r = run(&["run", path.to_str().unwrap(), "--progress", "never", "--from-scratch"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    check(dir.path(), &expected(&d));
}

#[test]
fn join_state_moves_between_instances_when_parallelism_changes() {
    let dir = tempfile::tempdir().unwrap();
    let d = data(dir.path(), 4000);
    let path = pipeline(dir.path(), "parallelism: 2\ncheckpoint: {interval: 50ms}\n", "rate: 2000, ");
    let ps = path.to_str().unwrap();
    let mut job = Guard(rill().args(["run", ps, "--progress", "never"]).stderr(std::process::Stdio::piped()).spawn().unwrap());
    let checkpoints = dir.path().join("work/checkpoints");
    let complete = || std::fs::read_dir(&checkpoints).map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with("chk-"))).unwrap_or(false);
    assert!(wait_for(std::time::Duration::from_secs(30), complete));
    let sp = run(&["savepoint", ps]);
    assert_eq!(sp.code, 0, "{}", sp.stderr);
    assert!(job.0.wait().unwrap().success());
    let partial = lines(&dir.path().join("paid.jsonl")).len();
    assert!(partial < d.orders.len(), "stopped before the end: {partial}");
    // Resume with three instances of each join instead of two.
    let sets: Vec<String> = ["paid", "same_window", "with_card"].iter().map(|t| format!("transforms.{t}.parallelism=3")).collect();
    let mut args = vec!["run", ps, "--progress", "never"];
    sets.iter().for_each(|s| args.extend(["--set", s.as_str()]));
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming from checkpoint"), "{}", r.stderr);
    assert!(r.stderr.contains("paid #2: "), "three instances: {}", r.stderr);
    check(dir.path(), &expected(&d));
}

#[test]
fn a_join_with_a_wrong_shape_is_refused_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    write(dir.path(), "a.jsonl", "");
    write(dir.path(), "b.jsonl", "");
    let p = write(
        dir.path(),
        "bad.yaml",
        &format!(
            "name: bad\nsources:\n  a: {{type: file, path: {d}/a.jsonl}}\n  b: {{type: file, path: {d}/b.jsonl}}\ntransforms:\n\
             \x20 three:\n    type: join\n    inputs: [a, b, a]\n    on: {{left: k, right: k}}\n    between: [0, 1s]\n\
             \x20 backwards:\n    type: join\n    inputs: [a, b]\n    on: {{left: k, right: k}}\n    between: [10m, -1m]\n\
             \x20 odd:\n    type: join\n    inputs: [a, b]\n    on: {{left: k, right: k}}\n    kind: sideways\n    how: outer\n\
             \x20 sessions:\n    type: join\n    inputs: [a, b]\n    on: {{left: k, right: k}}\n    kind: window\n    window: {{type: session, gap: 1m}}\n\
             sinks:\n  o: {{type: file, inputs: [three, backwards, odd, sessions], path: {d}/o.jsonl}}\n"
        ),
    );
    let r = run(&["validate", p.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    for want in [
        "bad.yaml:8:20: error: `three` (`join`) reads 2 inputs; it names 3",
        "bad.yaml:15:14: error: `between: [lower, upper]` needs lower ≤ upper",
        "bad.yaml:20:11: error: unknown join kind `sideways`",
        "bad.yaml:21:10: error: unknown join `how: outer`",
        "bad.yaml:27:13: error: a window join takes tumbling or sliding windows",
    ] {
        assert!(r.stderr.contains(want), "missing `{want}` in:\n{}", r.stderr);
    }
}

#[test]
fn the_fraud_example_enriches_each_transaction_as_of_its_time_and_labels_it_later() {
    let root = common::root();
    let generated = std::process::Command::new("python3").arg("examples/fraud/generate.py").current_dir(&root).output().expect("python3 runs");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let _ = std::fs::remove_file(root.join("out/fraud_labelled.jsonl"));
    let r = run(&["run", "examples/fraud/joins.yaml", "--progress", "never"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let read = |f: &str| lines(&root.join("data/fraud").join(f));
    let (tx, cards, chargebacks) = (read("transactions.jsonl"), read("cards.jsonl"), read("chargebacks.jsonl"));
    // The profile of each card as of each time: (time, limit, open), in time order.
    let mut versions: BTreeMap<String, Vec<(i64, i64, bool)>> = BTreeMap::new();
    for c in &cards {
        versions.entry(c["card"].as_str().unwrap().into()).or_default().push((c["ts"].as_i64().unwrap(), c["limit"].as_i64().unwrap(), c["status"] == "open"));
    }
    let charged: std::collections::HashSet<i64> = chargebacks.iter().map(|c| c["txn_id"].as_i64().unwrap()).collect();
    let mut labelled = lines(&root.join("out/fraud_labelled.jsonl"));
    labelled.sort_by_key(|v| v["txn_id"].as_i64());
    assert_eq!(labelled.len(), tx.len(), "every transaction once");
    let mut closed = 0;
    for (t, l) in tx.iter().zip(&labelled) {
        assert_eq!(t["txn_id"], l["txn_id"]);
        let ts = t["ts"].as_i64().unwrap();
        let (_, limit, open) = *versions[t["card"].as_str().unwrap()].iter().rev().find(|v| v.0 <= ts).expect("cards open before their first transaction");
        assert_eq!(l["card_open"].as_bool().unwrap(), open, "{l}");
        if open {
            assert_eq!(l["limit"].as_i64(), Some(limit), "the limit as of the transaction: {l}");
            assert_eq!(l["amount"], t["amount"]);
        } else {
            closed += 1;
            assert!(l["limit"].is_null(), "{l}");
            assert_eq!(l["suspicious"], true, "a transaction on a closed card is flagged: {l}");
        }
        assert_eq!(l["charged_back"].as_bool().unwrap(), charged.contains(&t["txn_id"].as_i64().unwrap()), "{l}");
    }
    assert!(closed > 0, "the data has transactions on closed cards");
    assert_eq!(labelled.iter().filter(|l| l["charged_back"] == true).count(), chargebacks.len(), "every chargeback comes within 2 days");
    // A daily quality line per day of transactions (14 days).
    assert_eq!(r.stdout.lines().filter(|l| l.contains("\"precision\"")).count(), 14, "{}", r.stdout);
}
