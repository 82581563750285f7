//! What `aggregate` and `window` share: a `key_by` expression and `name: function(expression)`
//! aggregates, checked at build time and evaluated per record.

use std::borrow::Cow;

use rill_engine::aggregate::AggregateCall;
use rill_engine::columns::{Column, Columns};
use rill_engine::config::{ConfigError, Ordered, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, OperatorError};
use rill_engine::record::{Batch, Origin, Record};
use rill_engine::registry::BuildContext;
use rill_engine::value::{Sym, Value};

/// The key (output name and expression) and the aggregate calls.
pub(crate) type Key = Option<(Sym, Expr)>;
pub(crate) type Calls = Vec<(Sym, AggregateCall)>;

/// Compiles `key_by` and `aggregates`, adding every problem to `errors`.
pub(crate) fn parse(ctx: &BuildContext, key_by: &Option<Spanned<String>>, aggregates: &Ordered<Spanned<String>>, errors: &mut Vec<ConfigError>) -> (Key, Calls) {
    let key = match key_by {
        Some(k) => match ctx.expr(k) {
            Ok(e) => Some((e.as_field().unwrap_or_else(|| Sym::new("key")), e)),
            Err(e) => {
                errors.push(e);
                None
            }
        },
        None => None,
    };
    let mut calls = Vec::new();
    for (name, spec) in &aggregates.0 {
        match ctx.aggregates.parse_with(name, spec, &ctx.pipeline.keys) {
            Ok(c) => calls.push((Sym::new(name), c)),
            Err(e) => {
                let mut span = spec.span.clone();
                span.column += e.column.saturating_sub(1);
                errors.push(ConfigError::new(Some(&span), format!("aggregate `{name}`: {}", e.message)).hint(format!(
                    "aggregates are written `name: function(expression)`; functions: {}",
                    ctx.aggregates.names().join(", ")
                )));
            }
        }
    }
    if calls.is_empty() && errors.is_empty() {
        errors.push(ConfigError::new(Some(&ctx.options.span), format!("`{}` needs at least one entry under `aggregates`", ctx.type_name)));
    }
    (key, calls)
}

/// Evaluates the record's key and every aggregate's input (into `inputs`). Every input is
/// checked before any is used, so that a bad record updates no aggregate; the error says why
/// the record is rejected.
pub(crate) fn evaluate(key: &Key, calls: &Calls, record: &Record, inputs: &mut Vec<Value>) -> Result<Value, String> {
    let k = match key {
        Some((_, e)) => e.eval(record).map_err(|err| format!("key_by `{}`: {err}", e.source()))?,
        None => Value::Null,
    };
    inputs.clear();
    for (name, call) in calls {
        let v = call
            .input(record)
            .map_err(|e| e.to_string())
            .and_then(|v| call.function.check(&v).map(|_| v))
            .map_err(|err| format!("aggregate `{name}`: {err}"))?;
        inputs.push(v);
    }
    Ok(k)
}

/// The keys and aggregate inputs of a whole column batch, evaluated with column kernels.
pub(crate) struct ColumnInputs<'a> {
    key: Option<Cow<'a, Column>>,
    inputs: Vec<Option<Cow<'a, Column>>>,
    /// Rows on which the key or an input failed (empty when none did).
    failed: Vec<bool>,
}

pub(crate) fn evaluate_columns<'a>(key: &Key, calls: &Calls, columns: &'a Columns) -> ColumnInputs<'a> {
    let mut failed = Vec::new();
    let mut column = |e: &Expr| {
        let evaluated = e.eval_columns(columns);
        for (row, _) in &evaluated.errors {
            if failed.is_empty() {
                failed = vec![false; columns.len()];
            }
            failed[*row] = true;
        }
        evaluated.column
    };
    let key_column = key.as_ref().map(|(_, e)| column(e));
    let inputs = calls.iter().map(|(_, c)| c.argument.as_ref().map(&mut column)).collect();
    ColumnInputs { key: key_column, inputs, failed }
}

impl ColumnInputs<'_> {
    /// The key column (`None`: no `key_by`).
    pub(crate) fn key_column(&self) -> Option<&Column> {
        self.key.as_deref()
    }

    /// Aggregate `j`'s input column (`None`: `count()`, one per record).
    pub(crate) fn input_column(&self, j: usize) -> Option<&Column> {
        self.inputs[j].as_deref()
    }

    /// Whether the key or an input failed on any row.
    pub(crate) fn any_failed(&self) -> bool {
        !self.failed.is_empty()
    }

    /// Whether every aggregate takes every row's input, by the input columns' types alone.
    pub(crate) fn all_accepted(&self, calls: &Calls) -> bool {
        calls.iter().zip(&self.inputs).all(|((_, call), column)| column.as_ref().is_none_or(|c| call.function.accepts_all(c)))
    }

    /// Whether every aggregate takes row `i`'s input ([`evaluate`] says why one does not).
    #[inline]
    pub(crate) fn accepted(&self, i: usize, calls: &Calls) -> bool {
        calls.iter().zip(&self.inputs).all(|((_, call), column)| column.as_ref().is_none_or(|c| call.function.check(&c.get(i)).is_ok()))
    }

    /// Row `i`'s key, with its aggregate inputs in `inputs`, as [`evaluate`] gives them; `None`
    /// when the row fails (hand the record to [`evaluate`] for the error).
    #[inline]
    pub(crate) fn row(&self, i: usize, calls: &Calls, inputs: &mut Vec<Value>) -> Option<Value> {
        if self.failed.get(i) == Some(&true) {
            return None;
        }
        inputs.clear();
        for ((_, call), column) in calls.iter().zip(&self.inputs) {
            let v = column.as_ref().map_or(Value::Int(1), |c| c.get(i));
            call.function.check(&v).ok()?;
            inputs.push(v);
        }
        Some(self.key.as_ref().map_or(Value::Null, |c| c.get(i)))
    }
}

/// What `aggregate` and `window` do around their own per-record work: evaluate the key and the
/// aggregate inputs (per record, or per column batch), reject a record on which they fail, and
/// hand the others to [`keyed`](Self::keyed).
pub(crate) trait KeyedOperator {
    fn key_and_calls(&self) -> (&Key, &Calls);
    /// Where a record's aggregate inputs are put for [`keyed`](Self::keyed).
    fn inputs(&mut self) -> &mut Vec<Value>;
    /// One record whose key evaluated (its inputs in [`inputs`](Self::inputs)); `record` builds
    /// it if it is needed (a late record to the side output).
    fn keyed(&mut self, key: Value, timestamp: i64, origin: Origin, record: &dyn Fn() -> Record, out: &mut Collector) -> Result<(), OperatorError>;
    /// A whole column batch at once, where the operator has a faster way than record by
    /// record; `false`: it has not (and has done nothing), the rows go to [`keyed`](Self::keyed).
    fn keyed_columns(&mut self, _columns: &Columns, _evaluated: &ColumnInputs, _out: &mut Collector) -> Result<bool, OperatorError> {
        Ok(false)
    }
}

/// [`Operator::process`](rill_engine::operator::Operator::process) of a keyed operator.
pub(crate) fn process<O: KeyedOperator>(op: &mut O, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
    let mut inputs = std::mem::take(op.inputs());
    let (key, calls) = op.key_and_calls();
    let evaluated = evaluate(key, calls, &record, &mut inputs);
    *op.inputs() = inputs;
    match evaluated {
        Ok(k) => {
            let (timestamp, origin) = (record.timestamp, record.origin);
            op.keyed(k, timestamp, origin, &move || record.clone(), out)
        }
        Err(e) => {
            out.reject(record, e);
            Ok(())
        }
    }
}

/// [`Operator::process_batch`](rill_engine::operator::Operator::process_batch) of a keyed
/// operator: keys and inputs read from columns; no record is built unless one is needed.
pub(crate) fn process_batch<O: KeyedOperator>(op: &mut O, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
    let Some(columns) = batch.into_columns_or(|r| process(op, r, out))? else { return Ok(()) };
    let (key, calls) = op.key_and_calls();
    let evaluated = evaluate_columns(key, calls, &columns);
    if op.keyed_columns(&columns, &evaluated, out)? {
        return Ok(());
    }
    for i in 0..columns.len() {
        let mut inputs = std::mem::take(op.inputs());
        let key = evaluated.row(i, op.key_and_calls().1, &mut inputs);
        *op.inputs() = inputs;
        match key {
            Some(key) => {
                let origin = Origin { source: columns.source, offset: columns.offsets[i] };
                op.keyed(key, columns.timestamps[i], origin, &|| columns.row(i), out)?
            }
            // Failed somewhere: the record path says why.
            None => process(op, columns.row(i), out)?,
        }
    }
    Ok(())
}

/// Checkpoints of an operator whose whole state is one [`KeyedState`]: a snapshot is its
/// entries (all of them, or in a delta those written since the last snapshot), as
/// [`rill_engine::state::entries_to_bytes`] writes them; a chain is folded into every key's
/// latest entry.
pub(crate) mod checkpoint {
    use std::collections::BTreeMap;

    use rill_engine::operator::{OperatorError, Snapshot};
    use rill_engine::state::{Entries, KeyedState};

    fn fold(chain: &[Vec<u8>], what: &str) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, OperatorError> {
        let mut entries = BTreeMap::new();
        for s in chain {
            entries.extend(rill_engine::state::entries_from_bytes(s).map_err(|e| OperatorError::new(format!("{what} checkpoint: {e}")))?);
        }
        Ok(entries)
    }

    pub(crate) fn snapshot<T: serde::Serialize + serde::de::DeserializeOwned>(state: &mut KeyedState<T>, full: bool) -> Result<Option<Snapshot>, OperatorError> {
        let entries = if full { state.snapshot_entries()? } else { state.snapshot_changes()?.0 };
        let bytes = rill_engine::state::entries_to_bytes(&entries);
        Ok(Some(if full { Snapshot::Full(bytes) } else { Snapshot::Delta(bytes) }))
    }

    pub(crate) fn restore_chain<T: serde::Serialize + serde::de::DeserializeOwned>(state: &mut KeyedState<T>, chain: &[Vec<u8>], what: &str) -> Result<(), OperatorError> {
        let all: Entries = fold(chain, what)?.into_iter().collect();
        state.restore_entries(&all)?;
        Ok(())
    }

    /// Keeps the keys of `key_groups` from every old instance's chain.
    pub(crate) fn restore_rescaled<T: serde::Serialize + serde::de::DeserializeOwned>(
        state: &mut KeyedState<T>,
        chains: &[Vec<Vec<u8>>],
        key_groups: &std::ops::Range<u32>,
        what: &str,
    ) -> Result<(), OperatorError> {
        let mut mine: Entries = Vec::new();
        for chain in chains {
            mine.extend(fold(chain, what)?.into_iter().filter(|e| key_groups.contains(&rill_engine::state::entry_key_group(e))));
        }
        state.restore_entries(&mine)?;
        Ok(())
    }
}

/// Routes the component's records by `key` (hash exchange); without one it is a single global
/// group and runs as one instance.
pub(crate) fn route_by(spec: &mut rill_engine::registry::TransformSpec, key: Option<Expr>) {
    spec.max_parallelism = if key.is_none() { Some(1) } else { spec.max_parallelism };
    spec.key_by = key;
}

/// `n = count(), s = sum(v)`: the aggregates as a description says them.
pub(crate) fn describe(aggregates: &Ordered<Spanned<String>>) -> String {
    aggregates.0.iter().map(|(n, s)| format!("{n} = {}", s.value.trim())).collect::<Vec<_>>().join(", ")
}
