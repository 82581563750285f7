//! Watermark tracking over the inputs of one operator instance: its watermark is the minimum of
//! its open inputs' watermarks, and never goes backwards.

use crate::message::Watermark;

#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    marks: Vec<i64>,
    closed: Vec<bool>,
    current: i64,
}

impl WatermarkTracker {
    pub fn new(inputs: usize) -> WatermarkTracker {
        WatermarkTracker { marks: vec![i64::MIN; inputs], closed: vec![false; inputs], current: i64::MIN }
    }

    /// The combined watermark so far.
    pub fn current(&self) -> Watermark {
        Watermark(self.current)
    }

    /// Input `i` reached `wm`. Returns the new combined watermark if it advanced.
    pub fn update(&mut self, i: usize, wm: Watermark) -> Option<Watermark> {
        self.marks[i] = self.marks[i].max(wm.0);
        self.advance()
    }

    /// Input `i` ended: it no longer holds the watermark back.
    pub fn close(&mut self, i: usize) -> Option<Watermark> {
        self.closed[i] = true;
        self.advance()
    }

    fn advance(&mut self) -> Option<Watermark> {
        let min = self.marks.iter().zip(&self.closed).filter(|(_, c)| !**c).map(|(m, _)| *m).min()?;
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
    fn minimum_of_open_inputs() {
        let mut t = WatermarkTracker::new(2);
        assert_eq!(t.update(0, Watermark(10)), None);
        assert_eq!(t.update(1, Watermark(5)), Some(Watermark(5)));
        assert_eq!(t.update(1, Watermark(20)), Some(Watermark(10)));
        assert_eq!(t.close(0), Some(Watermark(20)));
    }

    proptest! {
        #[test]
        fn never_goes_backwards(ops in proptest::collection::vec((0usize..3, -100i64..100, any::<bool>()), 0..60)) {
            let mut t = WatermarkTracker::new(3);
            let mut last = i64::MIN;
            for (i, w, close) in ops {
                let r = if close { t.close(i) } else { t.update(i, Watermark(w)) };
                if let Some(Watermark(x)) = r {
                    prop_assert!(x > last);
                    last = x;
                }
                prop_assert!(t.current().0 >= last);
            }
        }
    }
}
