//! `filter`: keeps the records for which `condition` is true.

use rill_engine::config::{ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, Operator, OperatorError};
use rill_engine::columns::Column;
use rill_engine::record::{Batch, Record};
use rill_engine::value::Value;
use rill_engine::registry::{BuildContext, TransformSpec};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FilterConfig {
    /// A CEL condition; records where it is false are dropped, records where it fails are
    /// rejected to the dead-letter output.
    condition: Spanned<String>,
}

pub struct Filter {
    condition: Expr,
}

impl Filter {
    pub fn new(condition: Expr) -> Filter {
        Filter { condition }
    }
}

impl Operator for Filter {
    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        match self.condition.eval_bool(&record) {
            Ok(true) => out.emit(record),
            Ok(false) => {}
            Err(e) => out.reject(record, format!("filter condition `{}`: {e}", self.condition.source())),
        }
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        let Some(columns) = batch.into_columns_or(|r| self.process(r, out))? else { return Ok(()) };
        let evaluated = self.condition.eval_columns(&columns);
        if evaluated.errors.is_empty() && matches!(&*evaluated.column, Column::Bool(_)) {
            // A copy only when the condition is a column of `columns` itself.
            let Column::Bool(keep) = evaluated.column.into_owned() else { unreachable!("matched above") };
            out.emit_columns(columns.select(&keep));
            return Ok(());
        }
        // Some records failed or gave something other than a bool: as `process` does, one by one.
        let (column, errors) = (evaluated.column, evaluated.errors);
        let mut errors = errors.into_iter().peekable();
        let mut keep = vec![false; columns.len()];
        for (i, k) in keep.iter_mut().enumerate() {
            let error = match errors.next_if(|(row, _)| *row == i) {
                Some((_, e)) => e,
                None => match column.get(i) {
                    Value::Bool(b) => {
                        *k = b;
                        continue;
                    }
                    other => self.condition.not_a_bool(&other),
                },
            };
            out.reject(columns.row(i), format!("filter condition `{}`: {error}", self.condition.source()));
        }
        drop(column);
        out.emit_columns(columns.select(&keep));
        Ok(())
    }
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: FilterConfig = ctx.options()?;
    let condition = ctx.condition(&cfg.condition)?;
    let description = format!("keeps records where `{}`", condition.source());
    Ok(TransformSpec::new(description, move |_| Ok(Filter::new(condition.clone()))))
}
