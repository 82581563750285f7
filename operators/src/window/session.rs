//! Session windows: a key's records closer than `gap` to each other form one window, which
//! grows (and merges with its neighbours) as records arrive. A key's open sessions are one state
//! entry (namespace 0), a list of (start, end, contents).

use rill_engine::operator::{Collector, OperatorError};
use rill_engine::record::Record;
use rill_engine::state::StateKey;
use rill_engine::value::{Key, Value};

use super::{Pane, Session, Window, WindowKind};

pub(super) struct Sessions {
    pub(super) gap: i64,
}

impl WindowKind for Sessions {
    fn add(&self, w: &mut Window, key: Key, ts: i64, proc: bool, record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError> {
        let (mut start, mut end) = (ts, ts + self.gap);
        if !proc && end - 1 + w.lateness <= w.watermark {
            out.emit_side(0, record());
            return Ok(());
        }
        let mut merged = w.new_win();
        Window::add(&w.inputs, &mut merged, ts);
        let sk = StateKey { key: key.clone(), namespace: 0 };
        let calls = &w.calls;
        let sessions = w.sessions.as_mut().expect("opened").get_or_insert_with(&sk, Vec::new)?;
        let mut i = 0;
        while i < sessions.len() {
            let s = &sessions[i];
            if s.start <= end && start <= s.end {
                let mut s = sessions.swap_remove(i);
                Window::rehydrate(calls, &mut s.win);
                start = start.min(s.start);
                end = end.max(s.end);
                merged.fired |= s.win.fired;
                merged.count += s.win.count;
                merged.first_ts = merged.first_ts.min(s.win.first_ts);
                merged.last_ts = merged.last_ts.max(s.win.last_ts);
                for (a, b) in merged.accs.iter_mut().zip(s.win.accs) {
                    a.merge(b);
                }
            } else {
                i += 1;
            }
        }
        if merged.fired {
            out.emit(w.shape.result(&key.0, Value::Int(start), Value::Int(end), &merged, end - 1, w.pane(Pane::Late)));
        }
        let sessions = w.sessions.as_mut().expect("opened").get_mut(&sk)?.expect("inserted above");
        sessions.push(Session { start, end, win: merged });
        w.schedule(&key, start, end, proc, out);
        Ok(())
    }

    fn fire(&self, w: &mut Window, key: &Key, start: i64, time: i64, purge: bool) -> Result<(), OperatorError> {
        let sk = StateKey { key: key.clone(), namespace: 0 };
        let pane = w.pane(Pane::Final);
        let calls = &w.calls;
        let Some(sessions) = w.sessions.as_mut().expect("opened").get_mut(&sk)? else { return Ok(()) };
        let Some(i) = sessions.iter().position(|s| s.start == start && s.end - 1 == time && !s.win.fired) else {
            return Ok(()); // merged into a larger session since
        };
        Window::rehydrate(calls, &mut sessions[i].win);
        let s = &mut sessions[i];
        s.win.fired = true;
        w.results.push(&key.0, s.start, s.end, &s.win, s.end - 1, pane);
        if purge {
            let sessions = w.sessions.as_mut().expect("opened").get_mut(&sk)?.expect("present");
            sessions.swap_remove(i);
            if sessions.is_empty() {
                w.sessions.as_mut().expect("opened").remove(&sk)?;
            }
        }
        Ok(())
    }

    fn drop_window(&self, w: &mut Window, key: &Key, start: i64, time: i64) -> Result<(), OperatorError> {
        let sk = StateKey { key: key.clone(), namespace: 0 };
        let lateness = w.lateness;
        let sessions = w.sessions.as_mut().expect("opened");
        if let Some(list) = sessions.get_mut(&sk)? {
            list.retain(|s| !(s.start == start && s.end - 1 + lateness == time));
            if list.is_empty() {
                sessions.remove(&sk)?;
            }
        }
        Ok(())
    }

    fn partial(&self, w: &mut Window, key: &Key, start: i64, time: i64, out: &mut Collector) -> Result<(), OperatorError> {
        let sk = StateKey { key: key.clone(), namespace: 0 };
        let pane = w.pane(Pane::Early);
        if let Some(list) = w.sessions.as_mut().expect("opened").get(&sk)? {
            if let Some(s) = list.iter().find(|s| s.start == start && s.end - 1 == time && !s.win.fired) {
                out.emit(w.shape.result(&key.0, Value::Int(s.start), Value::Int(s.end), &s.win, s.end - 1, pane));
            }
        }
        Ok(())
    }
}
