//! `map`: sets fields from expressions, and drops fields.

use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, Operator, OperatorError};
use rill_engine::record::{Batch, Record};
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::value::{Sym, Value};

use crate::Ordered;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MapConfig {
    /// `name: expression` pairs. Every expression sees the input record (not fields set by
    /// the others); results are set in order, replacing fields of the same name.
    #[serde(default)]
    fields: Ordered<Spanned<String>>,
    /// Fields to remove after `fields` are set.
    #[serde(default)]
    drop: Vec<String>,
}

pub struct Map {
    fields: Vec<(Sym, Expr)>,
    drop: Vec<Sym>,
    scratch: Vec<Value>,
}

impl Map {
    pub fn new(fields: Vec<(Sym, Expr)>, drop: Vec<Sym>) -> Map {
        Map { fields, drop, scratch: Vec::new() }
    }
}

impl Operator for Map {
    fn process(&mut self, mut record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        self.scratch.clear();
        for (name, e) in &self.fields {
            match e.eval(&record) {
                Ok(v) => self.scratch.push(v),
                Err(err) => {
                    out.reject(record, format!("map field `{name}` = `{}`: {err}", e.source()));
                    return Ok(());
                }
            }
        }
        for ((name, _), v) in self.fields.iter().zip(self.scratch.drain(..)) {
            record.set(*name, v);
        }
        for d in &self.drop {
            record.remove(*d);
        }
        out.emit(record);
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        let Some(mut columns) = batch.into_columns_or(|r| self.process(r, out))? else { return Ok(()) };
        // Every expression sees the input records; a record is rejected, unchanged, with the
        // first field (in order) that fails on it, as `process` does.
        let mut failed: Vec<Option<String>> = Vec::new();
        let mut results = Vec::with_capacity(self.fields.len());
        for (name, e) in &self.fields {
            let evaluated = e.eval_columns(&columns);
            for (row, err) in evaluated.errors {
                if failed.is_empty() {
                    failed = vec![None; columns.len()];
                }
                failed[row].get_or_insert_with(|| format!("map field `{name}` = `{}`: {err}", e.source()));
            }
            results.push(evaluated.column.into_owned());
        }
        let mut keep = Vec::new();
        if !failed.is_empty() {
            for (row, error) in failed.into_iter().enumerate() {
                keep.push(error.is_none());
                if let Some(error) = error {
                    out.reject(columns.row(row), error);
                }
            }
        }
        for ((name, _), column) in self.fields.iter().zip(results) {
            columns.set(*name, column);
        }
        for d in &self.drop {
            columns.remove(*d);
        }
        out.emit_columns(if keep.is_empty() { columns } else { columns.select(&keep) });
        Ok(())
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: MapConfig = ctx.options()?;
    let (fields, mut errors) = match ctx.named_exprs(&cfg.fields) {
        Ok(f) => (f, Vec::new()),
        Err(e) => (Vec::new(), e),
    };
    if fields.is_empty() && cfg.drop.is_empty() && errors.is_empty() {
        errors.push(ConfigError::new(Some(&ctx.options.span), "`map` needs `fields` or `drop`").hint("write `fields: {name: expression}`"));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let drop: Vec<Sym> = cfg.drop.iter().map(|d| Sym::new(d)).collect();
    let description = format!(
        "sets {}{}",
        fields.iter().map(|(n, e)| format!("{n} = {}", e.source())).collect::<Vec<_>>().join(", "),
        if drop.is_empty() { String::new() } else { format!("; drops {}", cfg.drop.join(", ")) }
    );
    Ok(TransformSpec::new(description, move |_| Ok(Map::new(fields.clone(), drop.clone()))))
}
