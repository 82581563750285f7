//! `generator`: deterministic synthetic events for demos and benchmarks.
//!
//! Event `id` runs from `start` to `start + count - 1`; each field is an expression of `id`.
//! Instance `s` of `p` emits ids `s, s + p, s + 2p, ...`, so every instance advances at the same
//! pace and the set of events does not depend on parallelism. With `rate`, events are spread
//! evenly over time (the rate is for the whole source).

use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::OperatorError;
use rill_engine::columns::{Column, Columns};
use rill_engine::registry::{BuildContext, SourceSpec};
use rill_engine::source::{Progress, Source, SourceContext, SourceOutput, SourceStatus};
use rill_engine::value::Sym;
use rill_engine::config::Ordered;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GeneratorConfig {
    /// Number of events; without it the generator runs until stopped.
    count: Option<u64>,
    /// Events per second for the whole source; without it, as fast as possible.
    rate: Option<Spanned<f64>>,
    /// First id (default 0).
    #[serde(default)]
    start: i64,
    /// `field: expression of id`.
    fields: Ordered<Spanned<String>>,
}

pub(crate) fn build(ctx: &BuildContext) -> Result<SourceSpec, ConfigErrors> {
    let cfg: GeneratorConfig = ctx.options()?;
    let (fields, mut errors) = match ctx.named_exprs(&cfg.fields) {
        Ok(f) => (f, Vec::new()),
        Err(e) => (Vec::new(), e),
    };
    if let Some(r) = &cfg.rate {
        if !(r.value > 0.0 && r.value.is_finite()) {
            errors.push(ConfigError::new(Some(&r.span), "`rate` must be a positive number of events per second"));
        }
    }
    if fields.is_empty() && errors.is_empty() {
        errors.push(ConfigError::new(Some(&ctx.options.span), "`generator` needs `fields`").hint("write `fields: {key: \"id % 100\"}`"));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let (count, start, rate) = (cfg.count, cfg.start, cfg.rate.map(|r| r.value));
    let description = format!(
        "generates {} events{} with {}",
        count.map(|c| c.to_string()).unwrap_or_else(|| "unbounded".into()),
        rate.map(|r| format!(" at {r}/s")).unwrap_or_default(),
        fields.iter().map(|(n, e)| format!("{n} = {}", e.source())).collect::<Vec<_>>().join(", ")
    );
    let mut spec = SourceSpec::new(description, move |c: &SourceContext| {
        Ok(Generator::new(fields.clone(), start, count, rate, c.subtask as u64, c.parallelism as u64))
    });
    // Makes events as fast as it is asked: instances keep within one poll of each other.
    spec.default_max_drift_ms = 0;
    Ok(spec)
}

pub struct Generator {
    fields: Vec<(Sym, Expr)>,
    start: i64,
    count: Option<u64>,
    /// Events per second for this instance.
    pace: Option<crate::pace::Pace>,
    /// Next index (0-based, before `start` is added) this instance emits.
    next: u64,
    step: u64,
    emitted: u64,
    id: Sym,
}

impl Generator {
    pub fn new(fields: Vec<(Sym, Expr)>, start: i64, count: Option<u64>, rate: Option<f64>, subtask: u64, parallelism: u64) -> Generator {
        let id = Sym::new("id");
        let pace = rate.map(|r| crate::pace::Pace::new(r / parallelism as f64));
        Generator { fields, start, count, pace, next: subtask, step: parallelism, emitted: 0, id }
    }
}

impl Generator {
    /// Emits the next `n` events as one column batch: `id` is a column, each field an
    /// expression evaluated over it. An event whose field fails is rejected.
    fn emit(&mut self, n: usize, out: &mut SourceOutput) {
        let offsets: Vec<u64> = (0..n as u64).map(|i| self.next + i * self.step).collect();
        let ids: Vec<i64> = offsets.iter().map(|&o| self.start + o as i64).collect();
        let mut events = Columns::new(offsets);
        events.set(self.id, Column::Int(ids));
        let mut failed: Vec<Option<String>> = Vec::new();
        let mut columns = Vec::with_capacity(self.fields.len());
        for (name, e) in &self.fields {
            let evaluated = e.eval_columns(&events);
            for (row, err) in evaluated.errors {
                if failed.is_empty() {
                    failed = vec![None; n];
                }
                failed[row].get_or_insert_with(|| format!("field `{name}` = `{}`: {err}", e.source()));
            }
            columns.push(evaluated.column.into_owned());
        }
        // The fields replace `id`, which the expressions read: the batch is the events'.
        events.remove(self.id);
        for ((name, _), column) in self.fields.iter().zip(columns) {
            events.set(*name, column);
        }
        if !failed.is_empty() {
            for (row, msg) in failed.iter().enumerate() {
                if let Some(msg) = msg {
                    let id = self.start + events.offsets[row] as i64;
                    out.reject_raw(format!("id = {id}"), msg.clone(), serde_json::json!({"id": id}));
                }
            }
            let keep: Vec<bool> = failed.iter().map(Option::is_none).collect();
            events = events.select(&keep);
        }
        out.emit_columns(events);
        self.next += n as u64 * self.step;
        self.emitted += n as u64;
    }
}

impl Source for Generator {
    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError> {
        let mut budget = out.remaining() as u64;
        if let Some(pace) = &mut self.pace {
            match pace.allowance(budget) {
                Ok(n) => {
                    budget = n;
                    pace.sent(n);
                }
                Err(wait) => return Ok(SourceStatus::Idle(wait)),
            }
        }
        let left = self.count.map_or(u64::MAX, |c| c.saturating_sub(self.next).div_ceil(self.step));
        let n = budget.min(left) as usize;
        if n > 0 {
            self.emit(n, out);
        }
        if self.count.is_some_and(|c| self.next >= c) {
            return Ok(SourceStatus::Finished);
        }
        Ok(SourceStatus::Ready)
    }

    fn position(&self) -> serde_json::Value {
        serde_json::json!({"next": self.next})
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), OperatorError> {
        let next = position["next"].as_u64().ok_or_else(|| OperatorError::new(format!("generator: bad checkpointed position {position}")))?;
        let first = self.next - self.emitted * self.step;
        if next < first || (next - first) % self.step != 0 {
            return Err(OperatorError::new(format!("generator: position {next} does not belong to this instance (parallelism changed?)")));
        }
        self.emitted = (next - first) / self.step;
        self.next = next;
        if let Some(p) = &mut self.pace {
            p.restart();
        }
        Ok(())
    }

    fn progress(&self) -> Option<Progress> {
        let first = self.next - self.emitted * self.step;
        self.count.map(|c| Progress { done: self.emitted, total: c.saturating_sub(first).div_ceil(self.step) })
    }
}
