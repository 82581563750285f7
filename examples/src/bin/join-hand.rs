//! Workload J (BENCHMARKS.md, "Joins") as a hand-written single-threaded loop: left `i` (key
//! `i % K`, time `i` ms) and right `j` (key `j % K`, time `j + 500` ms) arrive interleaved as
//! two in-order streams would; an interval join `right − left ∈ [0, 1000]` per key, each row
//! kept in a hash map of its key until the watermark (the lower of the two streams' times)
//! passes the last time a partner could come, cleaned up in time order. Usage:
//! `join-hand N K`; prints the pairs and the seconds.

use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::time::Instant;

#[derive(Default)]
struct Sides {
    left: Vec<i64>,
    right: Vec<i64>,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: i64 = args.next().map(|a| a.parse().expect("N")).unwrap_or(5_000_000);
    let k: i64 = args.next().map(|a| a.parse().expect("K")).unwrap_or(100_000);
    let (lower, upper) = (0i64, 1000i64);
    let t = Instant::now();
    let mut rows: HashMap<i64, Sides> = HashMap::new();
    // (time the row can go, key) per side, in time order as each stream is.
    let mut cleanup: [VecDeque<(i64, i64)>; 2] = Default::default();
    let mut pairs = 0u64;
    let (mut left_time, mut right_time) = (i64::MIN, i64::MIN);
    for i in 0..n {
        for side_is_left in [true, false] {
            let (key, ts) = if side_is_left { (i % k, i) } else { (i % k, i + 500) };
            let sides = rows.entry(key).or_default();
            if side_is_left {
                for &r in sides.right.iter().filter(|&&r| r - ts >= lower && r - ts <= upper) {
                    black_box((key, ts, r));
                    pairs += 1;
                }
                sides.left.push(ts);
                cleanup[0].push_back((ts + upper, key));
                left_time = ts;
            } else {
                for &l in sides.left.iter().filter(|&&l| ts - l >= lower && ts - l <= upper) {
                    black_box((key, l, ts));
                    pairs += 1;
                }
                sides.right.push(ts);
                cleanup[1].push_back((ts - lower, key));
                right_time = ts;
            }
        }
        let watermark = left_time.min(right_time);
        for (side, queue) in cleanup.iter_mut().enumerate() {
            while let Some((until, key)) = queue.front().copied().filter(|c| c.0 <= watermark) {
                queue.pop_front();
                let Some(s) = rows.get_mut(&key) else { continue };
                if side == 0 {
                    s.left.retain(|&l| l + upper > until);
                } else {
                    s.right.retain(|&r| r - lower > until);
                }
                if s.left.is_empty() && s.right.is_empty() {
                    rows.remove(&key);
                }
            }
        }
    }
    println!("join-hand N={n} K={k} pairs={pairs} secs={:.3}", t.elapsed().as_secs_f64());
}
