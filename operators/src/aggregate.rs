//! `aggregate`: a running aggregate per key. After each record it emits the record's key and the
//! updated aggregates (an "upsert" stream: the last record per key is the current total).

use std::collections::HashMap;

use rill_engine::aggregate::{Acc, AggregateCall};
use rill_engine::config::{ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, Operator, OperatorError, Snapshot};
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
    groups: HashMap<Key, Group, KeyHasher>,
    inputs: Vec<Value>,
    key_groups: std::ops::Range<u32>,
    max_parallelism: u32,
}

/// One key's aggregates, and whether they changed since the last snapshot (incremental
/// checkpoints write only those).
struct Group {
    accs: Vec<Acc>,
    changed: bool,
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

    fn restore_rescaled_chains(&mut self, chains: &[Vec<Vec<u8>>]) -> Result<(), OperatorError> {
        self.groups.clear();
        for chain in chains {
            for s in chain {
                self.restore_more(s)?;
            }
        }
        let (range, max) = (self.key_groups.clone(), self.max_parallelism);
        self.groups.retain(|k, _| range.contains(&rill_engine::exchange::KeyGroup::of_hash(k.0.stable_hash(), max).0));
        Ok(())
    }

    /// Full: every group; delta: the groups updated since the last snapshot (groups are never
    /// removed, so a delta is only upserts).
    fn snapshot_incremental(&mut self, _epoch: rill_engine::message::Epoch, full: bool) -> Result<Option<Snapshot>, OperatorError> {
        // A delta of more than half the groups costs about what a full snapshot does.
        let full = full || self.groups.values().filter(|g| g.changed).count() * 2 > self.groups.len();
        let groups: Vec<(&Value, &Vec<Acc>)> = self.groups.iter().filter(|(_, g)| full || g.changed).map(|(k, g)| (&k.0, &g.accs)).collect();
        let bytes = serde_json::to_vec(&groups).map_err(|e| OperatorError::new(e.to_string()))?;
        self.groups.values_mut().for_each(|g| g.changed = false);
        Ok(Some(if full { Snapshot::Full(bytes) } else { Snapshot::Delta(bytes) }))
    }

    fn restore_chain(&mut self, chain: &[Vec<u8>]) -> Result<(), OperatorError> {
        self.groups.clear();
        for s in chain {
            self.restore_more(s)?;
        }
        Ok(())
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
        let group = self.groups.entry(Key(key.clone())).or_insert_with(|| Group { accs: calls.iter().map(|(_, c)| c.function.create()).collect(), changed: true });
        group.changed = true;
        let accs = &mut group.accs;
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
            self.groups.insert(Key(k), Group { accs, changed: false });
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

#[cfg(test)]
mod tests {
    use super::*;
    use rill_engine::aggregate::AggregateRegistry;
    use rill_engine::message::Epoch;

    fn op() -> Aggregate {
        let calls = vec![(Sym::new("n"), AggregateRegistry::default().parse("n", "count()").unwrap())];
        Aggregate::new(Some((Sym::new("k"), Expr::compile("k").unwrap())), calls)
    }

    fn feed(a: &mut Aggregate, keys: impl IntoIterator<Item = i64>) {
        let mut out = Collector::default();
        for k in keys {
            a.process([("k", Value::Int(k))].into_iter().collect(), &mut out).unwrap();
        }
    }

    fn counts(a: &Aggregate) -> Vec<(i64, Value)> {
        let mut v: Vec<(i64, Value)> = a.groups.iter().map(|(k, g)| (if let Value::Int(i) = k.0 { i } else { -1 }, g.accs[0].result())).collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    #[test]
    fn a_delta_holds_only_changed_groups_and_a_chain_restores_everything() {
        let mut a = op();
        feed(&mut a, 0..1000);
        let Some(Snapshot::Full(base)) = a.snapshot_incremental(Epoch(1), true).unwrap() else { panic!("full asked") };
        feed(&mut a, [3, 3, 7]);
        let Some(Snapshot::Delta(d1)) = a.snapshot_incremental(Epoch(2), false).unwrap() else { panic!("delta") };
        feed(&mut a, [1000, 7]);
        let Some(Snapshot::Delta(d2)) = a.snapshot_incremental(Epoch(3), false).unwrap() else { panic!("delta") };
        let groups = |b: &[u8]| serde_json::from_slice::<Vec<serde_json::Value>>(b).unwrap().len();
        assert_eq!((groups(&base), groups(&d1), groups(&d2)), (1000, 2, 2));
        assert!(d1.len() * 100 < base.len());

        let mut b = op();
        b.restore_chain(&[base.clone(), d1.clone(), d2.clone()]).unwrap();
        assert_eq!(counts(&b), counts(&a));

        // At two instances, each keeps its key groups of the same folded state.
        let chains = vec![vec![base, d1, d2]];
        let mut merged = Vec::new();
        for range in [0..64, 64..128] {
            let mut c = op();
            c.key_groups = range;
            c.restore_rescaled_chains(&chains).unwrap();
            merged.extend(counts(&c));
        }
        merged.sort_by_key(|(k, _)| *k);
        assert_eq!(merged, counts(&a));
    }
}
