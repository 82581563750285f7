//! Watermark tracking over the inputs of one operator instance: its watermark is the minimum of
//! its open inputs' watermarks, and never goes backwards.

use crate::message::Watermark;

#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    marks: Vec<i64>,
    closed: Vec<bool>,
    idle: Vec<bool>,
    current: i64,
}

impl WatermarkTracker {
    pub fn new(inputs: usize) -> WatermarkTracker {
        WatermarkTracker { marks: vec![i64::MIN; inputs], closed: vec![false; inputs], idle: vec![false; inputs], current: i64::MIN }
    }

    /// The combined watermark so far.
    pub fn current(&self) -> Watermark {
        Watermark(self.current)
    }

    /// Input `i` reached `wm`. Returns the new combined watermark if it advanced.
    pub fn update(&mut self, i: usize, wm: Watermark) -> Option<Watermark> {
        self.marks[i] = self.marks[i].max(wm.0);
        self.idle[i] = false;
        self.advance()
    }

    /// Input `i` went idle: it no longer holds the watermark back until it is active again.
    pub fn set_idle(&mut self, i: usize) -> Option<Watermark> {
        self.idle[i] = true;
        self.advance()
    }

    /// Input `i` sent data: it counts again (its watermark may be behind; the combined
    /// watermark does not go back, and its late records are handled as late).
    pub fn activate(&mut self, i: usize) {
        self.idle[i] = false;
    }

    /// Every open input is idle.
    pub fn all_idle(&self) -> bool {
        self.closed.iter().zip(&self.idle).all(|(c, i)| *c || *i) && self.closed.iter().any(|c| !c)
    }

    /// Input `i` ended: it no longer holds the watermark back.
    pub fn close(&mut self, i: usize) -> Option<Watermark> {
        self.closed[i] = true;
        self.advance()
    }

    fn advance(&mut self) -> Option<Watermark> {
        let min = (0..self.marks.len()).filter(|&i| !self.closed[i] && !self.idle[i]).map(|i| self.marks[i]).min()?;
        (min > self.current).then(|| {
            self.current = min;
            Watermark(min)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idle_inputs_do_not_hold_back() {
        let mut t = WatermarkTracker::new(2);
        t.update(0, Watermark(100));
        assert_eq!(t.set_idle(1), Some(Watermark(100)));
        t.activate(1);
        assert_eq!(t.update(1, Watermark(50)), None, "never backwards");
        assert_eq!(t.update(1, Watermark(150)), None);
        assert_eq!(t.update(0, Watermark(200)), Some(Watermark(150)));
    }

    #[test]
    fn minimum_of_open_inputs() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.update(0, Watermark(10)), None);
        assert_eq!(t.update(1, Watermark(5)), Some(Watermark(5)));
        assert_eq!(t.update(1, Watermark(20)), Some(Watermark(10)));
        assert_eq!(t.close(0), Some(Watermark(20)));
    }

    proptest! {
        #[test]
        fn never_goes_backwards(ops in proptest::collection::vec((0usize..3, -100i64..100, 0u8..4), 0..60)) {
            let mut t = WatermarkTracker::new(3);
            let mut last = i64::MIN;
            for (i, w, op) in ops {
                let r = match op {
                    0 => t.close(i),
                    1 => t.set_idle(i),
                    2 => {
                        t.activate(i);
                        None
                    }
                    _ => t.update(i, Watermark(w)),
                };
                if let Some(Watermark(x)) = r {
                    prop_assert!(x > last);
                    last = x;
                }
                prop_assert!(t.current().0 >= last);
            }
        }
    }

    /// Two upstream instances send records stamped with event times and their watermarks, in
    /// order, on their own threads; the operator takes them in whatever order they arrive. In
    /// every interleaving no record is behind a watermark the operator already reached (no
    /// record of an input is late through its own input's ordering), the combined watermark
    /// never goes back, and it ends at the smaller final watermark until both inputs end.
    #[test]
    fn loom_the_combined_watermark_is_safe_in_any_arrival_order() {
        enum Msg {
            Record(i64),
            Mark(i64),
            End,
        }
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let mut receivers = Vec::new();
            let mut producers = Vec::new();
            for i in 0..2i64 {
                let (tx, rx) = loom::sync::mpsc::channel();
                receivers.push(rx);
                producers.push(loom::thread::spawn(move || {
                    // Input 0 runs ahead of input 1 in event time.
                    let base = if i == 0 { 100 } else { 0 };
                    for m in [Msg::Record(base + 5), Msg::Mark(base + 10), Msg::Record(base + 15), Msg::Mark(base + 20), Msg::End] {
                        tx.send(m).unwrap();
                    }
                }));
            }
            let mut t = WatermarkTracker::new(2);
            let mut ended = [false; 2];
            let mut history = vec![t.current().0];
            while !ended.iter().all(|e| *e) {
                let mut progressed = false;
                for i in 0..2 {
                    if ended[i] {
                        continue;
                    }
                    let Ok(m) = receivers[i].try_recv() else { continue };
                    progressed = true;
                    let advanced = match m {
                        Msg::Record(ts) => {
                            t.activate(i);
                            assert!(ts > t.current().0, "record at {ts} behind watermark {}", t.current().0);
                            None
                        }
                        Msg::Mark(wm) => t.update(i, Watermark(wm)),
                        Msg::End => {
                            ended[i] = true;
                            if ended.iter().all(|e| *e) {
                                None
                            } else {
                                assert!(t.current().0 <= 20, "input 1 holds the watermark at its own");
                                t.close(i)
                            }
                        }
                    };
                    if let Some(w) = advanced {
                        history.push(w.0);
                    }
                }
                if !progressed {
                    loom::thread::yield_now();
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            assert!(history.windows(2).all(|w| w[0] < w[1]), "{history:?}");
        });
    }
}
