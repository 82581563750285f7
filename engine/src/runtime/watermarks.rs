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
}
