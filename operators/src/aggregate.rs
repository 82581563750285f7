//! `aggregate`: a running aggregate per key. After each record it emits the record's key and the
//! updated aggregates (an "upsert" stream: the last record per key is the current total).

use rill_engine::aggregate::{Acc, AggregateCall};
use rill_engine::config::{ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, Operator, OperatorError, Snapshot};
use rill_engine::record::{Batch, Origin, Record};
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::state::{KeyedState, StateKey, StateOptions};
use rill_engine::value::{Key, Sym, Value};

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
    /// Each key's accumulators, in keyed state: hot groups in memory, the rest spilled to sled
    /// under `state.cache_entries`; tracks what changed since the last snapshot.
    groups: Option<KeyedState<Vec<Acc>>>,
    inputs: Vec<Value>,
    key_groups: std::ops::Range<u32>,
}


impl Aggregate {
    pub fn new(key: Option<(Sym, Expr)>, calls: Vec<(Sym, AggregateCall)>) -> Aggregate {
        Aggregate { key, calls, groups: None, inputs: Vec::new(), key_groups: 0..u32::MAX }
    }

    fn groups(&mut self) -> &mut KeyedState<Vec<Acc>> {
        self.groups.get_or_insert_with(|| KeyedState::in_memory("groups"))
    }
}

impl Operator for Aggregate {
    fn open(&mut self, ctx: &rill_engine::operator::OperatorContext) -> Result<(), OperatorError> {
        self.key_groups = ctx.key_groups.clone();
        self.groups = Some(ctx.keyed_state("groups", StateOptions::default())?);
        Ok(())
    }

    fn restore_rescaled_chains(&mut self, chains: &[Vec<Vec<u8>>]) -> Result<(), OperatorError> {
        let key_groups = self.key_groups.clone();
        crate::keyed::checkpoint::restore_rescaled(self.groups(), chains, &key_groups, "aggregate")
    }

    fn snapshot_incremental(&mut self, _epoch: rill_engine::message::Epoch, full: bool) -> Result<Option<Snapshot>, OperatorError> {
        crate::keyed::checkpoint::snapshot(self.groups(), full)
    }

    fn restore_chain(&mut self, chain: &[Vec<u8>]) -> Result<(), OperatorError> {
        crate::keyed::checkpoint::restore_chain(self.groups(), chain, "aggregate")
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        crate::keyed::process(self, record, out)
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        crate::keyed::process_batch(self, batch, out)
    }
}

impl crate::keyed::KeyedOperator for Aggregate {
    fn key_and_calls(&self) -> (&crate::keyed::Key, &crate::keyed::Calls) {
        (&self.key, &self.calls)
    }

    fn inputs(&mut self) -> &mut Vec<Value> {
        &mut self.inputs
    }

    fn keyed(&mut self, key: Value, timestamp: i64, origin: Origin, _record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.process_keyed(key, timestamp, origin, out)
    }
}

impl Aggregate {
    /// Adds one record (its key given, its inputs in `self.inputs`) and emits the new result.
    fn process_keyed(&mut self, key: Value, timestamp: i64, origin: Origin, out: &mut Collector) -> Result<(), OperatorError> {
        let (calls, inputs) = (&self.calls, &self.inputs);
        let groups = self.groups.get_or_insert_with(|| KeyedState::in_memory("groups"));
        let accs = groups.get_or_insert_with(&StateKey { key: Key(key.clone()), namespace: 0 }, || calls.iter().map(|(_, c)| c.function.create()).collect())?;
        let mut result = Record::with_capacity(calls.len() + 1);
        if let Some((name, _)) = &self.key {
            result.push(*name, key);
        }
        for ((acc, v), (name, call)) in accs.iter_mut().zip(inputs).zip(calls) {
            call.rehydrate(acc); // a custom accumulator read back from sled
            acc.add(v);
            result.push(*name, acc.result());
        }
        result.timestamp = timestamp;
        result.origin = origin;
        out.emit(result);
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
        crate::keyed::describe(&cfg.aggregates),
        key.as_ref().map(|(_, e)| format!("`{}`", e.source())).unwrap_or_else(|| "job (one global group)".into())
    );
    let mut spec = TransformSpec::new(description, {
        let key = key.clone();
        move |_| Ok(Aggregate::new(key.clone(), calls.clone()))
    });
    crate::keyed::route_by(&mut spec, key.map(|(_, e)| e));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use rill_engine::aggregate::AggregateRegistry;
    use rill_engine::message::Epoch;

    fn op() -> Aggregate {
        let calls = vec![(Sym::new("n"), AggregateRegistry::default().parse("n", "count()").unwrap())];
        Aggregate::new(Some((Sym::new("k"), Expr::compile("k").unwrap())), calls)
    }

    /// Feeds `keys`; returns the last count emitted for each.
    fn feed(a: &mut Aggregate, keys: impl IntoIterator<Item = i64>) -> BTreeMap<i64, i64> {
        let mut out = Collector::default();
        for k in keys {
            a.process([("k", Value::Int(k))].into_iter().collect(), &mut out).unwrap();
        }
        let mut last = BTreeMap::new();
        for r in out.records() {
            let (Some(Value::Int(k)), Some(Value::Int(n))) = (r.get(Sym::new("k")), r.get(Sym::new("n"))) else { panic!("{r}") };
            last.insert(*k, *n);
        }
        last
    }

    /// Every group's count, read by counting each key once more.
    fn counts(a: &mut Aggregate, keys: std::ops::Range<i64>) -> BTreeMap<i64, i64> {
        feed(a, keys).into_iter().map(|(k, n)| (k, n - 1)).collect()
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
        let groups = |b: &[u8]| rill_engine::state::entries_from_bytes(b).unwrap().len();
        assert_eq!((groups(&base), groups(&d1), groups(&d2)), (1000, 2, 2));
        assert!(d1.len() * 100 < base.len());

        let mut b = op();
        b.restore_chain(&[base.clone(), d1.clone(), d2.clone()]).unwrap();
        let want = counts(&mut a, 0..1001);
        assert_eq!(counts(&mut b, 0..1001), want);
        assert_eq!((want[&3], want[&7], want[&1000]), (3, 3, 1));

        // At two instances, each keeps its key groups of the same folded state.
        let chains = vec![vec![base, d1, d2]];
        let mut merged = BTreeMap::new();
        for range in [0..64, 64..128] {
            let mut c = op();
            c.key_groups = range.clone();
            c.restore_rescaled_chains(&chains).unwrap();
            let mine: Vec<i64> = (0..1001).filter(|k| range.contains(&rill_engine::exchange::KeyGroup::of_hash(Value::Int(*k).stable_hash(), 128).0)).collect();
            merged.extend(feed(&mut c, mine).into_iter().map(|(k, n)| (k, n - 1)));
        }
        assert_eq!(merged, want);
    }

    #[test]
    fn groups_beyond_the_cache_spill_to_sled_and_come_back() {
        let dir = std::env::temp_dir().join(format!("rill-aggregate-spill-{}", std::process::id()));
        let backend = rill_engine::state::StateBackend::open_fresh(&dir, 100, 128).unwrap();
        let mut a = op();
        a.open(&rill_engine::operator::OperatorContext::standalone("a", Some(backend))).unwrap();
        feed(&mut a, 0..5000);
        assert!(a.groups().cached() <= 100, "{} groups in memory with a cache of 100", a.groups().cached());
        feed(&mut a, (0..5000).rev());
        let all = counts(&mut a, 0..5000);
        assert!(all.values().all(|&n| n == 2), "every group counted twice, also those read back from sled");
        let Some(Snapshot::Full(full)) = a.snapshot_incremental(Epoch(1), true).unwrap() else { panic!("full") };
        assert_eq!(rill_engine::state::entries_from_bytes(&full).unwrap().len(), 5000, "a snapshot has the spilled groups too");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
