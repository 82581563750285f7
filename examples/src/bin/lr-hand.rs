//! Online logistic regression as a hand-written loop: the limit Rill's `logistic_regression`
//! is measured against (BENCHMARKS.md, "Online learning"). The same arithmetic as River's
//! `LogisticRegression(optimizer=SGD(0.1), intercept_lr=0.1)`: predict, then learn.
//!
//!   lr-hand gen N        # the generated stream of benches/learn.yaml (9 features from `id`)
//!   lr-hand file PATH    # Phishing-shaped JSON lines: parse each with serde, score, learn

use std::hint::black_box;
use std::io::BufRead;
use std::time::Instant;

const LR: f64 = 0.1;

struct Model {
    w: [f64; 9],
    b: f64,
}

impl Model {
    /// Scores `x`, learns from `y`; returns the probability before learning.
    #[inline]
    fn score(&mut self, x: &[f64; 9], y: bool) -> f64 {
        let mut z = 0.0;
        for (w, x) in self.w.iter().zip(x) {
            z += w * x;
        }
        z += self.b;
        let p = if z < -30.0 { 0.0 } else if z > 30.0 { 1.0 } else { 1.0 / (1.0 + (-z).exp()) };
        let s = if y { 1.0 } else { -1.0 };
        let m = z * s;
        let g = if m > 18.0 { (-m).exp() * -s } else if m < -18.0 { -s } else { -s / (m.exp() + 1.0) };
        self.b -= LR * g;
        for (w, x) in self.w.iter_mut().zip(x) {
            *w -= LR * g * x;
        }
        p
    }
}

#[derive(serde::Deserialize)]
struct Page {
    empty_server_form_handler: f64,
    popup_window: f64,
    https: f64,
    request_from_other_domain: f64,
    anchor_from_other_domain: f64,
    is_popular: f64,
    long_url: f64,
    age_of_domain: f64,
    ip_in_url: f64,
    is_phishing: bool,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut m = Model { w: [0.0; 9], b: 0.0 };
    let (mut hits, mut n) = (0u64, 0u64);
    let t = Instant::now();
    match args.get(1).map(String::as_str) {
        Some("gen") => {
            let count: i64 = args.get(2).map(|a| a.parse().expect("N")).unwrap_or(10_000_000);
            for id in 0..count {
                // The fields of benches/learn.yaml's generator.
                let mut x = [0.0; 9];
                for (j, x) in x.iter_mut().enumerate() {
                    *x = ((id * (2 * j as i64 + 3) + j as i64) % 11) as f64 / 10.0;
                }
                let y = (id * 7 + id / 3) % 5 < 2;
                let p = m.score(black_box(&x), y);
                hits += ((p > 0.5) == y) as u64;
                n += 1;
            }
        }
        Some("file") => {
            let f = std::io::BufReader::new(std::fs::File::open(&args[2]).expect("input file"));
            for line in f.lines() {
                let r: Page = serde_json::from_str(&line.expect("line")).expect("a page");
                let x = [r.empty_server_form_handler, r.popup_window, r.https, r.request_from_other_domain, r.anchor_from_other_domain, r.is_popular, r.long_url, r.age_of_domain, r.ip_in_url];
                let p = m.score(&x, r.is_phishing);
                hits += ((p > 0.5) == r.is_phishing) as u64;
                n += 1;
            }
        }
        _ => panic!("usage: lr-hand gen N | lr-hand file PATH"),
    }
    let secs = t.elapsed().as_secs_f64();
    println!("hand-loop n={n} accuracy={:.6} secs={secs:.4} rps={:.0}", hits as f64 / n as f64, n as f64 / secs);
}
