//! What `aggregate` and `window` share: a `key_by` expression and `name: function(expression)`
//! aggregates, checked at build time and evaluated per record.

use rill_engine::aggregate::AggregateCall;
use rill_engine::config::{ConfigError, Ordered, Spanned};
use rill_engine::expr::Expr;
use rill_engine::record::Record;
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
        match ctx.aggregates.parse(name, spec) {
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
