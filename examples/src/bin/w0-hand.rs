//! W0 as a hand-written single-threaded loop: the baseline Rill's W0 figures are compared
//! with. Same events (`key = id % 10000`, `value = double(id % 1000)`, `ts = id`), same filter
//! (`value > 10.0`), same count of survivors. `std::hint::black_box` keeps the compiler from
//! skipping the work it could otherwise prove unused.

use std::hint::black_box;
use std::time::Instant;

struct Event {
    key: i64,
    value: f64,
    ts: i64,
}

fn main() {
    let n: i64 = std::env::args().nth(1).map(|a| a.parse().expect("N")).unwrap_or(10_000_000);
    let t = Instant::now();
    let mut kept = 0u64;
    for id in 0..n {
        let e = black_box(Event { key: id % 10000, value: (id % 1000) as f64, ts: id });
        if e.value > 10.0 {
            kept += 1;
            black_box((e.key, e.ts));
        }
    }
    let secs = t.elapsed().as_secs_f64();
    println!("hand-loop W0 N={n} kept={kept} secs={secs:.4} eps={:.0}", n as f64 / secs);
    assert_eq!(kept as i64, n / 1000 * 989 + (n % 1000 - 11).max(0), "filter result");
}
