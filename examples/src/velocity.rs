//! `velocity`: flags a card with more than `max_transactions` transactions within `within`
//! (event time) — the classic fraud "velocity" check, written against the public keyed-state
//! API.
//!
//! Per card it keeps the times of its recent transactions in value state. The state has a TTL
//! (processing time) so that cards that go quiet do not keep state forever, and an event-time
//! timer at `last transaction + within` clears a card's state once its window has passed.
//! Every transaction goes out with `recent` (transactions of its card within `within`, itself
//! included) and `flagged` (`recent > max_transactions`). The state comes from the context, so
//! checkpoints, recovery and rescaling include it with no code here.

use std::collections::VecDeque;
use std::time::Duration;

use rill::engine::config::{de::duration, ConfigErrors, Spanned};
use rill::engine::state::{StateOptions, TimeDomain, Timer, ValueState};
use rill::engine::value::Sym;
use rill::{BuildContext, Collector, Expr, Operator, OperatorContext, OperatorError, Record, TransformSpec, Value};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VelocityConfig {
    /// The card (an expression).
    key_by: Spanned<String>,
    /// Flag a card above this many transactions...
    max_transactions: usize,
    /// ...within this much event time.
    #[serde(with = "duration")]
    within: Duration,
    /// How long an idle card's state lives (processing time); default 10 × `within`.
    #[serde(default, with = "duration::option")]
    state_ttl: Option<Duration>,
}

pub struct Velocity {
    card: Expr,
    max: usize,
    within: i64,
    ttl: Duration,
    recent: Option<ValueState<VecDeque<i64>>>,
    recent_field: Sym,
    flagged_field: Sym,
}

impl Operator for Velocity {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        self.recent = Some(ctx.value_state("recent", StateOptions { ttl: Some(self.ttl) })?);
        Ok(())
    }

    fn process(&mut self, mut record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        let card = match self.card.eval(&record) {
            Ok(Value::Null) => {
                out.reject(record, format!("card `{}` is missing", self.card.source()));
                return Ok(());
            }
            Ok(c) => c,
            Err(e) => {
                out.reject(record, format!("card `{}`: {e}", self.card.source()));
                return Ok(());
            }
        };
        let ts = record.timestamp;
        if ts == rill::engine::record::NO_TIMESTAMP {
            out.reject(record, "velocity needs event time: set `event_time` on the source");
            return Ok(());
        }
        let state = self.recent.as_mut().expect("opened");
        let mut times = state.get(&card)?.unwrap_or_default();
        while times.front().is_some_and(|&t| t <= ts - self.within) {
            times.pop_front();
        }
        let at = times.partition_point(|&t| t <= ts);
        times.insert(at, ts);
        let recent = times.iter().filter(|&&t| t > ts - self.within && t <= ts).count();
        let last = *times.back().expect("just inserted");
        state.set(&card, times)?;
        out.timers().register(TimeDomain::Event, &card, 0, last + self.within);
        record.set(self.recent_field, Value::Int(recent as i64));
        record.set(self.flagged_field, Value::Bool(recent > self.max));
        out.emit(record);
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, _out: &mut Collector) -> Result<(), OperatorError> {
        let state = self.recent.as_mut().expect("opened");
        // Clear the card once its latest transaction has left the window.
        if state.get(&timer.key)?.and_then(|t| t.back().copied()).is_some_and(|last| last + self.within <= timer.time) {
            state.clear(&timer.key)?;
        }
        Ok(())
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: VelocityConfig = ctx.options()?;
    let card = ctx.expr(&cfg.key_by)?;
    let within = cfg.within.as_millis() as i64;
    let ttl = cfg.state_ttl.unwrap_or(cfg.within * 10);
    let max = cfg.max_transactions;
    let mut spec = TransformSpec::new(format!("flags `{}` with more than {max} transactions in {within} ms", card.source()), {
        let card = card.clone();
        move |_| {
            Ok(Velocity {
                card: card.clone(),
                max,
                within,
                ttl,
                recent: None,
                recent_field: Sym::new("recent"),
                flagged_field: Sym::new("flagged"),
            })
        }
    });
    spec.key_by = Some(card);
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rill::engine::testing::{Harness, Output};

    fn tx(card: &str, ts: i64) -> Record {
        let mut r: Record = [("card", card)].into_iter().collect();
        r.timestamp = ts;
        r
    }

    fn velocity(max: usize, within: i64) -> Velocity {
        Velocity {
            card: Expr::compile("card").unwrap(),
            max,
            within,
            ttl: Duration::from_secs(60),
            recent: None,
            recent_field: Sym::new("recent"),
            flagged_field: Sym::new("flagged"),
        }
    }

    fn field(out: &[Output], i: usize, name: &str) -> Value {
        match &out[i] {
            Output::Record(r) => r.get_str(name).cloned().unwrap_or(Value::Null),
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn timer_clears_a_card_after_its_window() {
        let mut h = Harness::new(velocity(1, 1000)).unwrap();
        let out = h.push([tx("a", 0), tx("a", 500)]).unwrap();
        assert_eq!((field(&out, 0, "flagged"), field(&out, 1, "flagged")), (Value::Bool(false), Value::Bool(true)));
        // Both transactions' timers fire at 1500: the card is cleared, nothing is emitted.
        assert_eq!(h.watermark(1500).unwrap(), [Output::Watermark(1500)]);
        let out = h.push([tx("a", 1600)]).unwrap();
        assert_eq!(field(&out, 0, "recent"), Value::Int(1));
    }

    #[test]
    fn its_state_and_timers_survive_a_checkpoint_with_no_code_of_its_own() {
        let mut h = Harness::new(velocity(2, 1000)).unwrap();
        h.push([tx("a", 0), tx("a", 100), tx("b", 150)]).unwrap();
        let (_, saved) = h.checkpoint(1).unwrap();
        assert!(saved.snapshot.is_none(), "velocity snapshots nothing itself");
        let mut again = Harness::restored(velocity(2, 1000), &saved).unwrap();
        let out = again.push([tx("a", 200)]).unwrap();
        assert_eq!((field(&out, 0, "recent"), field(&out, 0, "flagged")), (Value::Int(3), Value::Bool(true)));
        // The restored timers still clear the cards.
        again.watermark(1300).unwrap();
        let out = again.push([tx("a", 1400), tx("b", 1400)]).unwrap();
        assert_eq!((field(&out, 0, "recent"), field(&out, 1, "recent")), (Value::Int(1), Value::Int(1)));
    }
}
