//! W1 as a hand-written single-threaded loop: events `key = id % K`, `value = double(id % 1000)`,
//! `ts = id` ms, summed per key in tumbling 1 s windows; a window is emitted when the
//! watermark (largest ts - 200 ms) passes its end, as the engines do. Usage: `w1-hand N K`.

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map(|a| a.parse().expect("N")).unwrap_or(10_000_000);
    let k: i64 = args.next().map(|a| a.parse().expect("K")).unwrap_or(10_000);
    let t = Instant::now();
    // Open windows by start: key → (count, sum).
    let mut open: std::collections::BTreeMap<i64, HashMap<i64, (u64, f64)>> = Default::default();
    let (mut windows, mut total_count, mut total_sum) = (0u64, 0u64, 0f64);
    let mut fire = |start: i64, w: HashMap<i64, (u64, f64)>| {
        for (key, (c, s)) in w {
            black_box((key, start, start + 1000));
            windows += 1;
            total_count += c;
            total_sum += s;
        }
    };
    for id in 0..n {
        let (key, value, ts) = (id % k, (id % 1000) as f64, id);
        let e = open.entry(ts - ts.rem_euclid(1000)).or_default().entry(key).or_default();
        e.0 += 1;
        e.1 += value;
        let watermark = ts - 200 - 1;
        while let Some(entry) = open.first_entry() {
            if entry.key() + 1000 - 1 > watermark {
                break;
            }
            let (start, w) = entry.remove_entry();
            fire(start, w);
        }
    }
    while let Some((start, w)) = open.pop_first() {
        fire(start, w);
    }
    let secs = t.elapsed().as_secs_f64();
    println!("hand-loop W1 N={n} K={k} windows={windows} count={total_count} sum={total_sum} secs={secs:.4} eps={:.0}", n as f64 / secs);
}
