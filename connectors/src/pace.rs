//! Paces a source at a fixed rate (records per second), evenly over time.

use std::time::{Duration, Instant};

pub(crate) struct Pace {
    rate: f64,
    /// When pacing (re)started, and how many records went since.
    began: Option<Instant>,
    sent: u64,
}

impl Pace {
    pub(crate) fn new(rate: f64) -> Pace {
        Pace { rate, began: None, sent: 0 }
    }

    /// How many records may go now (at most `want`), or how long to wait for the next one.
    pub(crate) fn allowance(&mut self, want: u64) -> Result<u64, Duration> {
        let began = *self.began.get_or_insert_with(Instant::now);
        let due = (began.elapsed().as_secs_f64() * self.rate) as u64 + 1;
        match due.saturating_sub(self.sent) {
            0 => {
                let next_at = Duration::from_secs_f64(self.sent as f64 / self.rate);
                Err(next_at.saturating_sub(began.elapsed()).max(Duration::from_micros(100)))
            }
            n => Ok(n.min(want)),
        }
    }

    pub(crate) fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// Starts counting afresh (after a restore).
    pub(crate) fn restart(&mut self) {
        self.began = None;
        self.sent = 0;
    }
}
