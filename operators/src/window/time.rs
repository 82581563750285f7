//! Tumbling and sliding windows: fixed-size windows of event (or processing) time, keyed by
//! their start. A tumbling window is a sliding window whose slide is its size, so a record
//! belongs to exactly one of them.

use std::collections::HashMap;

use rill_engine::columns::{Column, Columns};
use rill_engine::operator::{Collector, OperatorError};
use rill_engine::record::{Record, NO_TIMESTAMP};
use rill_engine::state::StateKey;
use rill_engine::value::{Key, KeyHasher, Value};

use super::{new_win, Pane, Window, WindowKind};
use crate::keyed::ColumnInputs;

/// A batch's rows grouped by window: `(key, window start)` of each group in the order the
/// groups first appear, and each group's rows in their order in the batch.
#[derive(Default)]
pub(super) struct Groups {
    index: HashMap<(i64, i64), u32, KeyHasher>,
    windows: Vec<(i64, i64)>,
    /// (group, row) for every window a row belongs to, in row order.
    members: Vec<(u32, u32)>,
    /// Where each group's rows start in `rows` (one more entry than groups).
    starts: Vec<u32>,
    rows: Vec<u32>,
}

impl Groups {
    fn clear(&mut self) {
        self.index.clear();
        self.windows.clear();
        self.members.clear();
    }

    fn add(&mut self, key: i64, start: i64, row: usize) {
        let next = self.windows.len() as u32;
        let group = *self.index.entry((key, start)).or_insert(next);
        if group == next {
            self.windows.push((key, start));
        }
        self.members.push((group, row as u32));
    }

    /// Sorts the members by group, keeping row order within each (a counting sort).
    fn sort(&mut self) {
        self.starts.clear();
        self.starts.resize(self.windows.len() + 1, 0);
        for (g, _) in &self.members {
            self.starts[*g as usize + 1] += 1;
        }
        for g in 0..self.windows.len() {
            self.starts[g + 1] += self.starts[g];
        }
        self.rows.clear();
        self.rows.resize(self.members.len(), 0);
        let mut next = self.starts.clone();
        for (g, row) in &self.members {
            self.rows[next[*g as usize] as usize] = *row;
            next[*g as usize] += 1;
        }
    }
}

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
                Box::new(new_win(calls))
            })?;
            Window::rehydrate(&w.calls, win);
            Window::add(&w.inputs, win, ts);
            let (fired, count) = (win.fired, win.count);
            if fired || w.every.is_some_and(|n| count % n == 0) {
                let pane = w.pane(if fired { Pane::Late } else { Pane::Early });
                let win = w.wins.as_mut().expect("opened").get(&sk)?.expect("just updated");
                out.emit(w.shape.result(&key.0, Value::Int(start), Value::Int(end), win, end - 1, pane));
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

    /// Groups the batch's rows by (key, window) first, so that each window's state is looked up
    /// once per batch, then adds each window's rows in their order: the same additions, in the
    /// same order per window, as record by record. Windows are created (and scheduled) in the
    /// order their first row comes; late rows go to the `late` output in row order. Event-time
    /// batches with integer keys (or none) only.
    fn add_columns(&self, w: &mut Window, columns: &Columns, evaluated: &ColumnInputs, marks: &[(usize, i64)], out: &mut Collector) -> Result<bool, OperatorError> {
        let keys: Option<&[i64]> = match evaluated.key_column() {
            None => None,
            Some(Column::Int(k)) => Some(k),
            Some(_) => return Ok(false),
        };
        if evaluated.any_failed() || columns.timestamps.contains(&NO_TIMESTAMP) {
            return Ok(false);
        }
        let (size, slide) = (self.size, self.slide);
        let all_accepted = evaluated.all_accepted(&w.calls);
        let mut groups = std::mem::take(&mut w.groups);
        groups.clear();
        let (mut watermark, mut marks) = (w.watermark, marks.iter().peekable());
        for (i, &ts) in columns.timestamps.iter().enumerate() {
            while let Some((_, wm)) = marks.next_if(|(at, _)| *at <= i) {
                watermark = watermark.max(*wm);
            }
            if !all_accepted && !evaluated.accepted(i, &w.calls) {
                // The record path rejects it, saying why.
                crate::keyed::process(w, columns.row(i), out)?;
                continue;
            }
            let key = keys.map_or(0, |k| k[i]);
            let mut accepted = false;
            for start in super::sliding_starts(ts, size, slide) {
                if start + size - 1 <= watermark {
                    continue;
                }
                accepted = true;
                groups.add(key, start, i);
            }
            if !accepted {
                out.emit_side(0, columns.row(i));
            }
        }
        groups.sort();
        let inputs: Vec<Option<&Column>> = (0..w.calls.len()).map(|j| evaluated.input_column(j)).collect();
        let result = (|| {
            for (g, &(key, start)) in groups.windows.iter().enumerate() {
                let key = Key(if keys.is_some() { Value::Int(key) } else { Value::Null });
                let sk = StateKey { key, namespace: start };
                let mut created = false;
                let calls = &w.calls;
                let win = w.wins.as_mut().expect("opened").get_or_insert_with(&sk, || {
                    created = true;
                    Box::new(new_win(calls))
                })?;
                Window::rehydrate(calls, win);
                let rows = &groups.rows[groups.starts[g] as usize..groups.starts[g + 1] as usize];
                for (acc, column) in win.accs.iter_mut().zip(&inputs) {
                    acc.add_rows(*column, rows);
                }
                win.count += rows.len() as u64;
                for &row in rows {
                    let ts = columns.timestamps[row as usize];
                    win.first_ts = win.first_ts.min(ts);
                    win.last_ts = win.last_ts.max(ts);
                }
                if created {
                    w.schedule(&sk.key, start, start + size, false, out);
                }
            }
            Ok(())
        })();
        w.groups = groups;
        result.map(|()| true)
    }

    fn fire(&self, w: &mut Window, key: &Key, start: i64, _time: i64, purge: bool) -> Result<(), OperatorError> {
        let sk = StateKey { key: key.clone(), namespace: start };
        let end = start + self.size;
        let pane = w.pane(Pane::Final);
        let wins = w.wins.as_mut().expect("opened");
        if purge {
            let Some(mut win) = wins.remove(&sk)? else { return Ok(()) };
            Window::rehydrate(&w.calls, &mut win);
            w.results.push(&key.0, start, end, &win, end - 1, pane);
        } else {
            let Some(win) = wins.get_mut(&sk)? else { return Ok(()) };
            Window::rehydrate(&w.calls, win);
            win.fired = true;
            w.results.push(&key.0, start, end, win, end - 1, pane);
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
        let pane = w.pane(Pane::Early);
        if let Some(win) = w.wins.as_mut().expect("opened").get(&sk)? {
            if !win.fired {
                out.emit(w.shape.result(&key.0, Value::Int(start), Value::Int(end), win, end - 1, pane));
            }
        }
        Ok(())
    }
}
