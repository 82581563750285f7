//! Count windows: every `size` records of a key form a window, emitted as the last one
//! arrives (from the first record's time to the last's). They hold no timers: nothing is
//! indexed, so firing, dropping and early firing by time never concern them.

use rill_engine::operator::{Collector, OperatorError};
use rill_engine::record::Record;
use rill_engine::state::StateKey;
use rill_engine::value::{Key, Value};

use super::{new_win, Pane, Window, WindowKind};

pub(super) struct CountWindows {
    pub(super) size: u64,
}

impl WindowKind for CountWindows {
    fn add(&self, w: &mut Window, key: Key, ts: i64, _proc: bool, _record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError> {
        let sk = StateKey { key: key.clone(), namespace: 0 };
        let calls = &w.calls;
        let wins = w.wins.as_mut().expect("opened");
        let win = wins.get_or_insert_with(&sk, || Box::new(new_win(calls)))?;
        Window::rehydrate(&w.calls, win);
        Window::add(&w.inputs, win, ts);
        let count = win.count;
        if count >= self.size || w.every.is_some_and(|n| count % n == 0) {
            let pane = w.pane(if count >= self.size { Pane::Final } else { Pane::Early });
            let win = w.wins.as_mut().expect("opened").get(&sk)?.expect("just updated");
            let r = w.shape.result(&key.0, Value::Int(win.first_ts), Value::Int(win.last_ts + 1), win, win.last_ts, pane);
            out.emit(r);
            if count >= self.size {
                w.wins.as_mut().expect("opened").remove(&sk)?;
            }
        }
        Ok(())
    }

    fn fire(&self, _w: &mut Window, _key: &Key, _start: i64, _time: i64, _purge: bool) -> Result<(), OperatorError> {
        Ok(())
    }

    fn drop_window(&self, _w: &mut Window, _key: &Key, _start: i64, _time: i64) -> Result<(), OperatorError> {
        Ok(())
    }

    fn partial(&self, _w: &mut Window, _key: &Key, _start: i64, _time: i64, _out: &mut Collector) -> Result<(), OperatorError> {
        Ok(())
    }
}
