//! Online logistic regression end to end: the issue's Phishing pipeline, run unchanged, gives
//! River's probabilities (River 0.26.1 runs beside it on the same real data), for every
//! optimizer; per-key models; a model written out and read back as the starting point; bad
//! records to dead letters; and a job killed again and again scores every record exactly as an
//! uninterrupted run.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const FEATURES: [&str; 9] = [
    "empty_server_form_handler",
    "popup_window",
    "https",
    "request_from_other_domain",
    "anchor_from_other_domain",
    "is_popular",
    "long_url",
    "age_of_domain",
    "ip_in_url",
];

fn phishing() -> std::path::PathBuf {
    let p = root().join("data/phishing.jsonl");
    assert!(p.exists(), "{} is missing: run `bash scripts/setup.sh` (it writes River's Phishing data set)", p.display());
    p
}

/// River's progressive-validation probabilities for `file` with `settings` (Rill's option names).
fn river(file: &Path, settings: &str) -> Vec<f64> {
    let out = Command::new(root().join(".venv/bin/python"))
        .arg(root().join("scripts/river_reference.py"))
        .arg(file)
        .arg("is_phishing")
        .arg(settings)
        .args(FEATURES)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "river_reference.py: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| l.parse().unwrap()).collect()
}

fn probabilities(rows: &[serde_json::Value], field: &str) -> Vec<f64> {
    rows.iter().map(|r| r[field].as_f64().unwrap_or_else(|| panic!("no `{field}` in {r}"))).collect()
}

fn assert_close(rill: &[f64], river: &[f64], what: &str) {
    assert_eq!(rill.len(), river.len(), "{what}: as many scores");
    let (i, worst) = rill.iter().zip(river).map(|(a, b)| (a - b).abs()).enumerate().fold((0, 0.0), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(worst <= 1e-9, "{what}: record {i} differs by {worst:e} (rill {}, river {})", rill[i], river[i]);
}

/// The exact AUC by comparing every positive with every negative (ties count half).
fn pairwise_auc(scores: &[(f64, bool)]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (p, _) in scores.iter().filter(|s| s.1) {
        for (q, _) in scores.iter().filter(|s| !s.1) {
            pairs += 1.0;
            wins += if p > q { 1.0 } else if p == q { 0.5 } else { 0.0 };
        }
    }
    wins / pairs
}

#[test]
fn the_phishing_pipeline_runs_unchanged_and_matches_river() {
    let data = phishing();
    let _ = std::fs::remove_file(root().join("out/scores.jsonl"));
    let r = run(&["run", "examples/phishing.yaml", "--progress", "never"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let scored = lines(&root().join("out/scores.jsonl"));
    assert_eq!(scored.len(), 1250);
    let want = river(&data, r#"{"optimizer": {"type": "sgd", "learning_rate": 0.1}, "intercept_learning_rate": 0.1, "l2": 0.0}"#);
    assert_close(&probabilities(&scored, "p_phishing"), &want, "sgd");
    // The prediction is a bool like the label, and the model is as good as River says (86 %).
    let hits = scored.iter().filter(|r| r["predicted"] == r["is_phishing"]).count();
    assert!(scored.iter().all(|r| r["predicted"].is_boolean()));
    assert_eq!(hits, 1075, "River's progressive accuracy on Phishing with these settings is 86.00 %");

    // Five count windows of 250 on stdout: accuracy, log loss and the exact AUC of each.
    let metrics: Vec<serde_json::Value> = r.stdout.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(metrics.len(), 5, "{}", r.stdout);
    for (w, m) in metrics.iter().enumerate() {
        let rows = &scored[w * 250..(w + 1) * 250];
        let pairs: Vec<(f64, bool)> = rows.iter().map(|r| (r["p_phishing"].as_f64().unwrap(), r["is_phishing"].as_bool().unwrap())).collect();
        let accuracy = rows.iter().filter(|r| r["predicted"] == r["is_phishing"]).count() as f64 / 250.0;
        let logloss = pairs.iter().map(|(p, y)| if *y { -p.ln() } else { -(1.0 - p).ln() }).sum::<f64>() / 250.0;
        assert_eq!(m["accuracy"].as_f64().unwrap(), accuracy, "window {w}");
        assert!((m["logloss"].as_f64().unwrap() - logloss).abs() < 1e-12, "window {w}: {m}");
        assert!((m["auc"].as_f64().unwrap() - pairwise_auc(&pairs)).abs() < 1e-12, "window {w}: {m}");
    }
    assert!(metrics[4]["auc"].as_f64().unwrap() > 0.9, "the model learns: {}", metrics[4]);
}

/// The example with its optimizer and regularisation lines replaced.
fn variant(tmp: &Path, name: &str, optimizer: &str, extra: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(root().join("examples/phishing.yaml")).unwrap();
    let text = text
        .replace("    optimizer: {type: sgd, learning_rate: 0.1}\n", &format!("    optimizer: {optimizer}\n{extra}"))
        .replace("../out/scores.jsonl", &tmp.join(format!("{name}.jsonl")).display().to_string())
        .replace("../data/phishing.jsonl", &root().join("data/phishing.jsonl").display().to_string())
        .replace("name: phishing-online", &format!("name: phishing-{name}\nwork_dir: {}", tmp.join(name).display()));
    write(tmp, &format!("{name}.yaml"), &text)
}

#[test]
fn ftrl_adam_adagrad_and_l2_match_river() {
    let data = phishing();
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("ftrl", "{type: ftrl, alpha: 0.1, beta: 1.0, l1: 0.01, l2: 1.0}", "", r#"{"optimizer": {"type": "ftrl", "alpha": 0.1, "beta": 1.0, "l1": 0.01, "l2": 1.0}, "intercept_learning_rate": 0.1}"#),
        ("adam", "{type: adam, learning_rate: 0.05}", "", r#"{"optimizer": {"type": "adam", "learning_rate": 0.05}, "intercept_learning_rate": 0.1}"#),
        ("adagrad", "{type: adagrad, learning_rate: 0.2}", "", r#"{"optimizer": {"type": "adagrad", "learning_rate": 0.2}, "intercept_learning_rate": 0.1}"#),
        ("l2", "{type: sgd, learning_rate: 0.3}", "", r#"{"optimizer": {"type": "sgd", "learning_rate": 0.3}, "intercept_learning_rate": 0.1, "l2": 0.01}"#),
    ];
    for (name, optimizer, extra, settings) in cases {
        let p = variant(tmp.path(), name, optimizer, extra);
        if name == "l2" {
            std::fs::write(&p, std::fs::read_to_string(&p).unwrap().replace("    l2: 0.0\n", "    l2: 0.01\n")).unwrap();
        }
        let r = run(&["run", p.to_str().unwrap(), "--progress", "never"]);
        assert_eq!(r.code, 0, "{name}: {}\n{}", r.stdout, r.stderr);
        let scored = lines(&tmp.path().join(format!("{name}.jsonl")));
        assert_close(&probabilities(&scored, "p_phishing"), &river(&data, settings), name);
    }
}

#[test]
fn a_model_per_key_learns_from_its_own_records_only() {
    let tmp = tempfile::tempdir().unwrap();
    // Phishing twice over, each page with a site key 0..3; key 1's records alone, for River.
    let pages = std::fs::read_to_string(phishing()).unwrap();
    let (mut all, mut one) = (String::new(), String::new());
    for (i, line) in pages.lines().chain(pages.lines()).enumerate() {
        let keyed = format!("{{\"site\":{},{}", i % 3, &line[1..]);
        if i % 3 == 1 {
            one.push_str(line);
            one.push('\n');
        }
        all.push_str(&keyed);
        all.push('\n');
    }
    let input = write(tmp.path(), "keyed.jsonl", &all);
    let only = write(tmp.path(), "one.jsonl", &one);
    let p = write(
        tmp.path(),
        "keyed.yaml",
        &format!(
            "name: keyed-models\nwork_dir: {w}\nparallelism: 2\nsources:\n  pages: {{type: file, path: {input}, format: json}}\ntransforms:\n  scored:\n    type: logistic_regression\n    inputs: [pages]\n    key_by: site\n    features: [{f}]\n    label: is_phishing\n    optimizer: {{type: adam, learning_rate: 0.05}}\n    intercept_learning_rate: 0.1\n    emit_model_every: 500\nsinks:\n  out: {{type: file, inputs: [scored], path: {o}}}\n  models: {{type: file, inputs: [scored.model], path: {m}}}\n",
            w = tmp.path().join("w").display(),
            input = input.display(),
            f = FEATURES.join(", "),
            o = tmp.path().join("out.jsonl").display(),
            m = tmp.path().join("models.jsonl").display(),
        ),
    );
    let r = run(&["run", p.to_str().unwrap(), "--progress", "never"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let scored = lines(&tmp.path().join("out.jsonl"));
    assert_eq!(scored.len(), 2500);
    let mine: Vec<f64> = scored.iter().filter(|r| r["site"] == 1).map(|r| r["probability"].as_f64().unwrap()).collect();
    assert_close(&mine, &river(&only, r#"{"optimizer": {"type": "adam", "learning_rate": 0.05}, "intercept_learning_rate": 0.1}"#), "site 1's model");
    // 834 labelled records per site: a model out at 500 and one at the end, for each site.
    let models = lines(&tmp.path().join("models.jsonl"));
    let mut versions: Vec<(i64, i64)> = models.iter().map(|m| (m["site"].as_i64().unwrap(), m["learned"].as_i64().unwrap())).collect();
    versions.sort();
    let per_site = |s: i64| (0..2500).filter(|i| i % 3 == s as usize).count() as i64;
    assert_eq!(versions, (0..3).flat_map(|s| [(s, 500), (s, per_site(s))]).collect::<Vec<_>>());
    assert!(models.iter().all(|m| m["weights"].as_object().unwrap().len() == 9 && m["optimizer"] == "adam"));
}

#[test]
fn a_saved_model_is_a_starting_point_with_its_optimizer_state() {
    let tmp = tempfile::tempdir().unwrap();
    let pages: Vec<String> = std::fs::read_to_string(phishing()).unwrap().lines().map(String::from).collect();
    let first = write(tmp.path(), "first.jsonl", &(pages[..600].join("\n") + "\n"));
    let rest = write(tmp.path(), "rest.jsonl", &(pages[600..].join("\n") + "\n"));
    let pipeline = |name: &str, input: &Path, initial: &str| {
        write(
            tmp.path(),
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nwork_dir: {w}\nsources:\n  pages: {{type: file, path: {input}, format: json}}\ntransforms:\n  scored:\n    type: logistic_regression\n    inputs: [pages]\n    features: [{f}]\n    label: is_phishing\n    optimizer: {{type: adam, learning_rate: 0.05}}\n    emit_model_every: 1h\n{initial}sinks:\n  out: {{type: file, inputs: [scored], path: {o}}}\n  models: {{type: file, inputs: [scored.model], path: {m}}}\n",
                w = tmp.path().join(name).display(),
                input = input.display(),
                f = FEATURES.join(", "),
                o = tmp.path().join(format!("{name}.out.jsonl")).display(),
                m = tmp.path().join(format!("{name}.models.jsonl")).display(),
            ),
        )
    };
    let whole = pipeline("whole", &phishing(), "");
    let part1 = pipeline("part1", &first, "");
    let part2 = pipeline("part2", &rest, &format!("    initial_model: {}\n", tmp.path().join("part1.models.jsonl").display()));
    for p in [&whole, &part1, &part2] {
        let r = run(&["run", p.to_str().unwrap(), "--progress", "never"]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    }
    let saved = lines(&tmp.path().join("part1.models.jsonl"));
    assert_eq!(saved.len(), 1, "a time-based model output writes the last model at the end");
    assert_eq!((saved[0]["learned"].as_i64(), saved[0]["version"].as_i64()), (Some(600), Some(600)));
    let p_whole = probabilities(&lines(&tmp.path().join("whole.out.jsonl")), "probability");
    let p_rest = probabilities(&lines(&tmp.path().join("part2.out.jsonl")), "probability");
    assert_close(&p_rest, &p_whole[600..], "resumed from the saved model");
    let last = lines(&tmp.path().join("part2.models.jsonl"));
    assert_eq!(last[0]["version"].as_i64(), Some(1250), "the version carries on");
}

#[test]
fn bad_features_and_labels_go_to_dead_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(
        tmp.path(),
        "in.jsonl",
        "{\"a\":1.0,\"b\":2,\"y\":1}\n{\"a\":\"x\",\"b\":2,\"y\":1}\n{\"a\":1.0,\"b\":2,\"y\":2}\n{\"a\":1e308,\"b\":0,\"y\":0}\n{\"a\":0.5,\"b\":true,\"y\":null}\n",
    );
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: bad-learning\nwork_dir: {w}\nsources:\n  e: {{type: file, path: {i}, format: json}}\ntransforms:\n  s:\n    type: logistic_regression\n    inputs: [e]\n    features: [a, b, a * 2.0]\n    label: y\nsinks:\n  out: {{type: file, inputs: [s], path: {o}}}\n",
            w = tmp.path().join("w").display(),
            i = input.display(),
            o = tmp.path().join("out.jsonl").display(),
        ),
    );
    let r = run(&["run", p.to_str().unwrap(), "--progress", "never"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let out = lines(&tmp.path().join("out.jsonl"));
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(out[1]["prediction"], 1, "an unlabelled record is scored; the prediction is 0/1 like the labels");
    let dead = lines(&tmp.path().join("w/dead_letter.jsonl"));
    let errors: Vec<&str> = dead.iter().map(|d| d["error"].as_str().unwrap()).collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].contains("feature `a` is x (string), not a number"), "{errors:?}");
    assert!(errors[1].contains("label `y` is 2 (int)"), "{errors:?}");
    assert!(errors[2].contains("feature `a * 2.0`: 1e308 * 2.0 is not a finite number"), "{errors:?}");
    assert!(r.stderr.contains("dead letters: 3"), "{}", r.stderr);
}

#[test]
fn a_job_killed_again_and_again_scores_as_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    // Phishing 16 times over (20,000 pages) in 4 sites, FTRL (accumulators in the checkpoint).
    let pages = std::fs::read_to_string(phishing()).unwrap();
    let mut all = String::new();
    for round in 0..16 {
        for (i, line) in pages.lines().enumerate() {
            all.push_str(&format!("{{\"site\":{},\"round\":{round},{}\n", i % 4, &line[1..]));
        }
    }
    let input = write(tmp.path(), "in.jsonl", &all);
    let p = write(
        tmp.path(),
        "p.yaml",
        &format!(
            "name: chaos-learning\nparallelism: 2\nbatch_size: 128\ncheckpoint: {{interval: 30ms}}\nsources:\n  pages: {{type: file, path: {input}, format: json}}\ntransforms:\n  scored:\n    type: logistic_regression\n    inputs: [pages]\n    key_by: site\n    features: [{f}]\n    label: is_phishing\n    optimizer: {{type: ftrl, alpha: 0.1}}\nsinks:\n  out: {{type: file, inputs: [scored], path: {o}}}\n",
            input = input.display(),
            f = FEATURES.join(", "),
            o = tmp.path().join("out.jsonl").display(),
        ),
    );
    let r = run(&["chaos", p.to_str().unwrap(), "--kills", "8", "--seed", "3", "--max-delay", "150ms"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("8 kills"), "{}", r.stdout);
    assert!(r.stdout.contains("ok: no record lost, none duplicated"), "{}", r.stdout);
}

#[test]
fn the_fraud_example_learns_to_catch_fraud() {
    let generated = Command::new("python3").arg("examples/fraud/generate.py").current_dir(root()).output().expect("python3 runs");
    assert!(generated.status.success(), "{}", String::from_utf8_lossy(&generated.stderr));
    let _ = std::fs::remove_file(root().join("out/fraud_alerts.jsonl"));
    let r = run(&["run", "examples/fraud/pipeline.yaml", "--progress", "never"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let frauds = std::fs::read_to_string(root().join("data/fraud/transactions.jsonl")).unwrap().matches("\"is_fraud\": true").count();
    let alerts = lines(&root().join("out/fraud_alerts.jsonl"));
    let caught = alerts.iter().filter(|a| a["is_fraud"] == true).count();
    assert!(caught * 10 >= frauds * 6, "alerts catch most fraud: {caught} of {frauds}");
    assert!(caught * 10 >= alerts.len() * 8, "most alerts are fraud: {caught} of {}", alerts.len());
    // Live quality over sliding windows: the AUC of windows that hold fraud.
    let aucs: Vec<f64> = r.stdout.lines().filter(|l| l.starts_with('{')).filter_map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["auc"].as_f64()).collect();
    assert!(aucs.len() > 100, "{} windows with an AUC", aucs.len());
    let mean = aucs.iter().sum::<f64>() / aucs.len() as f64;
    assert!(mean > 0.9, "mean windowed AUC {mean}");
    let models = lines(&root().join("out/fraud_models.jsonl"));
    assert_eq!(models.last().unwrap()["learned"].as_u64(), Some(lines(&root().join("data/fraud/transactions.jsonl")).len() as u64));
}
