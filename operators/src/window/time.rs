//! Tumbling and sliding windows: fixed-size windows of event (or processing) time, keyed by
//! their start. A tumbling window is a sliding window whose slide is its size, so a record
//! belongs to exactly one of them.

use rill_engine::operator::{Collector, OperatorError};
use rill_engine::record::Record;
use rill_engine::state::StateKey;
use rill_engine::value::{Key, Value};

use super::{new_win, Window, WindowKind};

/// Windows `[start, start + size)` with starts every `slide` milliseconds.
pub(super) struct TimeWindows {
    pub(super) size: i64,
    pub(super) slide: i64,
}

impl WindowKind for TimeWindows {
    fn add(&self, w: &mut Window, key: Key, ts: i64, proc: bool, record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError> {
        let (size, slide) = (self.size, self.slide);
        let mut accepted = false;
        for start in super::sliding_starts(ts, size, slide) {
            let end = start + size;
            if !proc && end - 1 + w.lateness <= w.watermark {
                continue;
            }
            accepted = true;
            let sk = StateKey { key: key.clone(), namespace: start };
            let mut created = false;
            let calls = &w.calls;
            let wins = w.wins.as_mut().expect("opened");
            let win = wins.get_or_insert_with(&sk, || {
                created = true;
                new_win(calls)
            })?;
            Window::rehydrate(&w.calls, win);
            Window::add(&w.inputs, win, ts);
            let (fired, count) = (win.fired, win.count);
            if fired || w.every.is_some_and(|n| count % n == 0) {
                let win = w.wins.as_mut().expect("opened").get(&sk)?.expect("just updated");
                out.emit(w.shape.result(&key.0, Value::Int(start), Value::Int(end), win, end - 1));
            }
            if created {
                w.schedule(&key, start, end, proc, out);
            }
        }
        if !accepted {
            out.emit_side(0, record());
        }
        Ok(())
    }

    fn fire(&self, w: &mut Window, key: &Key, start: i64, _time: i64, purge: bool) -> Result<(), OperatorError> {
        let sk = StateKey { key: key.clone(), namespace: start };
        let end = start + self.size;
        let wins = w.wins.as_mut().expect("opened");
        if purge {
            let Some(mut win) = wins.remove(&sk)? else { return Ok(()) };
            Window::rehydrate(&w.calls, &mut win);
            w.results.push(&key.0, start, end, &win, end - 1);
        } else {
            let Some(win) = wins.get_mut(&sk)? else { return Ok(()) };
            Window::rehydrate(&w.calls, win);
            win.fired = true;
            w.results.push(&key.0, start, end, win, end - 1);
        }
        Ok(())
    }

    fn drop_window(&self, w: &mut Window, key: &Key, start: i64, _time: i64) -> Result<(), OperatorError> {
        w.wins.as_mut().expect("opened").remove(&StateKey { key: key.clone(), namespace: start })?;
        Ok(())
    }

    fn partial(&self, w: &mut Window, key: &Key, start: i64, _time: i64, out: &mut Collector) -> Result<(), OperatorError> {
        let end = start + self.size;
        let sk = StateKey { key: key.clone(), namespace: start };
        if let Some(win) = w.wins.as_mut().expect("opened").get(&sk)? {
            if !win.fired {
                out.emit(w.shape.result(&key.0, Value::Int(start), Value::Int(end), win, end - 1));
            }
        }
        Ok(())
    }
}
