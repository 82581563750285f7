//! `aggregate`: a running aggregate per key. After each record it emits the record's key and the
//! updated aggregates (an "upsert" stream: the last record per key is the current total).

use std::collections::HashMap;

use rill_engine::aggregate::{Acc, AggregateCall};
use rill_engine::config::{ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, Operator, OperatorError};
use rill_engine::record::Record;
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::value::{Key, KeyHasher, Sym, Value};

use crate::Ordered;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateConfig {
    /// Grouping key (an expression). Without it, one global group (parallelism 1).
    key_by: Option<Spanned<String>>,
    /// `name: function(expression)`, e.g. `total: sum(amount)`.
    aggregates: Ordered<Spanned<String>>,
}

pub struct Aggregate {
    key: Option<(Sym, Expr)>,
    calls: Vec<(Sym, AggregateCall)>,
    groups: HashMap<Key, Vec<Acc>, KeyHasher>,
    inputs: Vec<Value>,
    key_groups: std::ops::Range<u32>,
    max_parallelism: u32,
}

impl Aggregate {
    pub fn new(key: Option<(Sym, Expr)>, calls: Vec<(Sym, AggregateCall)>) -> Aggregate {
        Aggregate { key, calls, groups: HashMap::default(), inputs: Vec::new(), key_groups: 0..u32::MAX, max_parallelism: 128 }
    }
}

impl Operator for Aggregate {
    fn open(&mut self, ctx: &rill_engine::operator::OperatorContext) -> Result<(), OperatorError> {
        self.key_groups = ctx.key_groups.clone();
        self.max_parallelism = ctx.max_parallelism;
        Ok(())
    }

    fn restore_rescaled(&mut self, states: &[Vec<u8>]) -> Result<(), OperatorError> {
        for s in states {
            self.restore_more(s)?;
        }
        let (range, max) = (self.key_groups.clone(), self.max_parallelism);
        self.groups.retain(|k, _| range.contains(&rill_engine::exchange::KeyGroup::of_hash(k.0.stable_hash(), max).0));
        Ok(())
    }

    fn snapshot(&mut self, _epoch: rill_engine::message::Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        let groups: Vec<(&Value, &Vec<Acc>)> = self.groups.iter().map(|(k, v)| (&k.0, v)).collect();
        serde_json::to_vec(&groups).map(Some).map_err(|e| OperatorError::new(e.to_string()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        self.groups.clear();
        self.restore_more(state)
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        let key = match crate::keyed::evaluate(&self.key, &self.calls, &record, &mut self.inputs) {
            Ok(k) => k,
            Err(e) => {
                out.reject(record, e);
                return Ok(());
            }
        };
        let calls = &self.calls;
        let accs = self.groups.entry(Key(key.clone())).or_insert_with(|| calls.iter().map(|(_, c)| c.function.create()).collect());
        let mut result = Record::with_capacity(calls.len() + 1);
        if let Some((name, _)) = &self.key {
            result.push(*name, key);
        }
        for ((acc, v), (name, _)) in accs.iter_mut().zip(&self.inputs).zip(calls) {
            acc.add(v);
            result.push(*name, acc.result());
        }
        result.timestamp = record.timestamp;
        result.origin = record.origin;
        out.emit(result);
        Ok(())
    }
}

impl Aggregate {
    /// Adds the groups of a snapshot.
    fn restore_more(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        let groups: Vec<(Value, Vec<Acc>)> = serde_json::from_slice(state).map_err(|e| OperatorError::new(format!("aggregate checkpoint: {e}")))?;
        for (k, mut accs) in groups {
            for (acc, (_, call)) in accs.iter_mut().zip(&self.calls) {
                call.rehydrate(acc);
            }
            self.groups.insert(Key(k), accs);
        }
        Ok(())
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: AggregateConfig = ctx.options()?;
    let mut errors = Vec::new();
    let (key, calls) = crate::keyed::parse(ctx, &cfg.key_by, &cfg.aggregates, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let description = format!(
        "running {} per {}",
        cfg.aggregates.0.iter().map(|(n, s)| format!("{n} = {}", s.value.trim())).collect::<Vec<_>>().join(", "),
        key.as_ref().map(|(_, e)| format!("`{}`", e.source())).unwrap_or_else(|| "job (one global group)".into())
    );
    let mut spec = TransformSpec::new(description, {
        let key = key.clone();
        move |_| Ok(Aggregate::new(key.clone(), calls.clone()))
    });
    spec.key_by = key.map(|(_, e)| e);
    if spec.key_by.is_none() {
        spec.max_parallelism = Some(1);
    }
    Ok(spec)
}
