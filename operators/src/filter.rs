//! `filter`: keeps the records for which `condition` is true.

use rill_engine::config::{ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, Operator, OperatorError};
use rill_engine::record::Record;
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
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: FilterConfig = ctx.options()?;
    let condition = ctx.condition(&cfg.condition)?;
    let description = format!("keeps records where `{}`", condition.source());
    Ok(TransformSpec::new(description, move |_| Ok(Filter::new(condition.clone()))))
}
