//! `over`: every record goes out with aggregates over the records of its key within `range`
//! of event time before it, itself included — Flink SQL's `OVER (PARTITION BY key ORDER BY
//! time RANGE BETWEEN range PRECEDING AND CURRENT ROW)`. Per-record features such as "this
//! card's transactions in the last hour" or "this amount against the card's average".
//!
//! Each key keeps the times and aggregate inputs of its recent records in managed value state
//! (checkpointed, restored and rescaled by the runtime), as long as they are within `range` of the
//! key's newest. Records are taken in the order they come: one older than the key's newest sees
//! the records kept that came before it, within its own range (what fell out of the newest's
//! range is gone). A record without event time is rejected.

use std::collections::VecDeque;
use std::time::Duration;

use rill_engine::config::de::duration;
use rill_engine::config::{ConfigError, ConfigErrors, Ordered, Spanned};
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError};
use rill_engine::record::{Origin, Record, NO_TIMESTAMP};
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::state::{StateOptions, ValueState};
use rill_engine::value::Value;

use crate::keyed::{Calls, Key};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OverConfig {
    key_by: Option<Spanned<String>>,
    /// How far back (event time) a record's aggregates reach.
    #[serde(with = "duration")]
    range: Duration,
    aggregates: Ordered<Spanned<String>>,
}

/// One key's recent records: (event time, aggregate inputs), oldest first.
type Recent = VecDeque<(i64, Vec<Value>)>;

pub struct Over {
    key: Key,
    calls: Calls,
    range: i64,
    recent: Option<ValueState<Recent>>,
    inputs: Vec<Value>,
}

impl Operator for Over {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        self.recent = Some(ctx.value_state("recent", StateOptions::default())?);
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        crate::keyed::process(self, record, out)
    }
}

impl crate::keyed::KeyedOperator for Over {
    fn key_and_calls(&self) -> (&Key, &Calls) {
        (&self.key, &self.calls)
    }

    fn inputs(&mut self) -> &mut Vec<Value> {
        &mut self.inputs
    }

    fn keyed(&mut self, key: Value, ts: i64, _origin: Origin, record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError> {
        let mut r = record();
        if ts == NO_TIMESTAMP {
            out.reject(r, "`over` needs event time: set `event_time` on the source");
            return Ok(());
        }
        let state = self.recent.get_or_insert_with(|| ValueState::new(rill_engine::state::KeyedState::in_memory("recent")));
        let mut recent = state.get(&key)?.unwrap_or_default();
        let newest = recent.back().map_or(ts, |(t, _)| (*t).max(ts));
        // What no later record can reach any more.
        while recent.front().is_some_and(|(t, _)| *t < newest - self.range) {
            recent.pop_front();
        }
        let mut accs: Vec<_> = self.calls.iter().map(|(_, c)| c.function.create()).collect();
        for (_, inputs) in recent.iter().filter(|(t, _)| *t >= ts - self.range && *t <= ts) {
            accs.iter_mut().zip(inputs).for_each(|(a, v)| a.add(v));
        }
        accs.iter_mut().zip(&self.inputs).for_each(|(a, v)| a.add(v));
        for ((name, _), acc) in self.calls.iter().zip(&accs) {
            r.set(*name, acc.result());
        }
        if ts >= newest - self.range {
            recent.push_back((ts, std::mem::take(&mut self.inputs)));
        }
        state.set(&key, recent)?;
        out.emit(r);
        Ok(())
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: OverConfig = ctx.options()?;
    let mut errors = Vec::new();
    let (key, calls) = crate::keyed::parse(ctx, &cfg.key_by, &cfg.aggregates, &mut errors);
    let range = cfg.range.as_millis() as i64;
    if range < 1 {
        errors.push(ConfigError::new(ctx.options.get("range").map(|n| &n.span), "`range` must be at least 1 ms"));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let description = format!(
        "adds {} over the preceding {} per {}",
        crate::keyed::describe(&cfg.aggregates),
        humantime::format_duration(cfg.range),
        key.as_ref().map(|(_, e)| format!("`{}`", e.source())).unwrap_or_else(|| "job".into())
    );
    let mut spec = TransformSpec::new(description, {
        let (key, calls) = (key.clone(), calls.clone());
        move |_| Ok(Over { key: key.clone(), calls: calls.clone(), range, recent: None, inputs: Vec::new() })
    });
    crate::keyed::route_by(&mut spec, key.map(|(_, e)| e));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill_engine::aggregate::AggregateRegistry;
    use rill_engine::expr::Expr;
    use rill_engine::testing::{Harness, Output};
    use rill_engine::value::Sym;

    fn tx(card: &str, amount: f64, ts: i64) -> Record {
        let mut r: Record = [("card", Value::str(card)), ("amount", Value::Float(amount))].into_iter().collect();
        r.timestamp = ts;
        r
    }

    #[test]
    fn each_record_gets_the_aggregates_of_its_keys_preceding_range() {
        let reg = AggregateRegistry::default();
        let calls = vec![(Sym::new("n"), reg.parse("n", "count()").unwrap()), (Sym::new("avg"), reg.parse("avg", "avg(amount)").unwrap())];
        let op = Over { key: Some((Sym::new("card"), Expr::compile("card").unwrap())), calls, range: 100, recent: None, inputs: Vec::new() };
        let mut h = Harness::new(op).unwrap();
        let got = h.push([tx("a", 10.0, 1000), tx("b", 1.0, 1010), tx("a", 20.0, 1050), tx("a", 30.0, 1100), tx("a", 60.0, 1201), tx("a", 5.0, 1150)]).unwrap();
        let rows: Vec<(i64, f64)> = got
            .iter()
            .map(|o| match o {
                Output::Record(r) => (r.get_str("n").unwrap().as_f64().unwrap() as i64, r.get_str("avg").unwrap().as_f64().unwrap()),
                other => panic!("{other:?}"),
            })
            .collect();
        // a@1100 reaches back to 1000 (inclusive); a@1201 to 1101: only itself; the late a@1150
        // comes after 1100 was dropped (out of the newest's range): only itself.
        assert_eq!(rows, [(1, 10.0), (1, 1.0), (2, 15.0), (3, 20.0), (1, 60.0), (1, 5.0)]);
        let mut untimed = tx("a", 1.0, 0);
        untimed.timestamp = NO_TIMESTAMP;
        assert!(matches!(&h.push([untimed]).unwrap()[0], Output::Rejected(_, e) if e.contains("needs event time")));
    }
}
