//! `logistic_regression`: a model trained on the stream. Each record is scored with the model
//! as it is (the probability and the prediction are added to it), then, if it has a label, the
//! model learns from it (progressive validation, as River's `progressive_val_score`).
//!
//! One global model (the component runs at parallelism 1), or one model per key (`key_by`), in
//! keyed state: spilled to sled beyond the cache, rescaled by key groups. Every model is part of
//! the checkpoint with its optimizer's accumulators, so a job resumed after a crash scores every
//! record as an uninterrupted run does. The arithmetic is in [`model`].

pub mod model;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rill_engine::columns::Column;
use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::message::Epoch;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError, Snapshot};
use rill_engine::record::{Batch, Record, NO_TIMESTAMP};
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::state::{KeyedState, StateKey, StateOptions, TimeDomain, Timer};
use rill_engine::value::{Key, Sym, Value};

use model::{Model, Optimizer, Settings};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LearnConfig {
    /// Feature expressions (a field name is the simplest), in the model's order.
    features: Option<Vec<Spanned<String>>>,
    /// Or one field holding all features as a list of numbers (`f32[N]` from CSV).
    features_field: Option<Spanned<String>>,
    /// The label: 0/1 or false/true; a record whose label is null is scored only.
    label: Option<Spanned<String>>,
    /// One model per key (else one global model).
    key_by: Option<Spanned<String>>,
    #[serde(default)]
    optimizer: Optimizer,
    #[serde(default = "intercept_lr")]
    intercept_learning_rate: f64,
    #[serde(default)]
    l2: f64,
    #[serde(default = "half")]
    threshold: f64,
    #[serde(default = "one")]
    batch_size: usize,
    #[serde(default)]
    outputs: OutputsConfig,
    /// Write each model to the `model` side output every N learned records, or every duration
    /// (processing time), and at the end of input.
    emit_model_every: Option<Every>,
    /// A model written by the `model` side output (a JSON object, or JSON lines: the last one),
    /// to start from.
    initial_model: Option<Spanned<String>>,
}

fn intercept_lr() -> f64 {
    0.01
}
fn half() -> f64 {
    0.5
}
fn one() -> usize {
    1
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputsConfig {
    #[serde(default = "probability")]
    probability: String,
    #[serde(default = "prediction")]
    prediction: String,
}

fn probability() -> String {
    "probability".into()
}
fn prediction() -> String {
    "prediction".into()
}
impl Default for OutputsConfig {
    fn default() -> Self {
        OutputsConfig { probability: probability(), prediction: prediction() }
    }
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum Every {
    Records(u64),
    Time(String),
}

/// When models go to the side output.
#[derive(Clone, Copy, Debug)]
enum Emit {
    Never,
    Records(u64),
    Millis(i64),
}

/// Where the features come from.
#[derive(Clone)]
enum Features {
    /// One expression per feature, named (the field name, or the expression's text).
    Exprs(Vec<(String, Expr)>),
    /// One list field.
    Field(Sym),
}

/// What the instances of one component share.
struct Spec {
    features: Features,
    label: Option<Expr>,
    key: Option<(Sym, Expr)>,
    settings: Settings,
    probability: Sym,
    prediction: Sym,
    emit: Emit,
    initial: Option<Model>,
}

pub struct LogisticRegression {
    spec: Arc<Spec>,
    /// The global model (`None` until the first record when the width is not known in advance).
    global: Option<Model>,
    /// Keyed models (with `key_by`).
    keyed: Option<KeyedState<Model>>,
    scratch: Model,
    x: Vec<f64>,
    key_groups: std::ops::Range<u32>,
    /// Keys whose model learned since it was last written out (time-based `emit_model_every`).
    dirty: HashSet<Key>,
    timer_at: Option<i64>,
}

/// What one record gives: its features (in `x`), its label, its key.
struct Row {
    label: Option<bool>,
    /// The label's type, to give the prediction the same one (`None`: no label).
    label_is_bool: Option<bool>,
    key: Value,
}

/// A feature value as a number: numbers, bools (1/0), null (0); anything else is an error.
fn number(name: &str, v: &Value) -> Result<f64, String> {
    let x = match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => *b as u8 as f64,
        Value::Null => 0.0,
        other => return Err(format!("feature `{name}` is {} ({}), not a number", other, other.type_name())),
    };
    if x.is_finite() {
        Ok(x)
    } else {
        Err(format!("feature `{name}` is {x}: features must be finite numbers"))
    }
}

fn label(source: &str, v: &Value) -> Result<(Option<bool>, Option<bool>), String> {
    Ok(match v {
        Value::Null => (None, None),
        Value::Bool(b) => (Some(*b), Some(true)),
        Value::Int(0) => (Some(false), Some(false)),
        Value::Int(1) => (Some(true), Some(false)),
        Value::Float(f) if *f == 0.0 => (Some(false), Some(false)),
        Value::Float(f) if *f == 1.0 => (Some(true), Some(false)),
        other => return Err(format!("label `{source}` is {} ({}); a label is 0, 1, false, true or null (score only)", other, other.type_name())),
    })
}

/// Reads one record's features into `x`, its label and its key.
fn read(spec: &Spec, record: &Record, x: &mut Vec<f64>) -> Result<Row, String> {
    x.clear();
    match &spec.features {
        Features::Exprs(exprs) => {
            for (name, e) in exprs {
                let v = e.eval(record).map_err(|err| format!("feature `{name}`: {err}"))?;
                x.push(number(name, &v)?);
            }
        }
        Features::Field(field) => match record.get(*field) {
            Some(Value::Floats(fs)) => {
                for (i, f) in fs.iter().enumerate() {
                    if !f.is_finite() {
                        return Err(format!("feature {i} of `{field}` is {f}: features must be finite numbers"));
                    }
                    x.push(*f as f64);
                }
            }
            Some(Value::List(vs)) => {
                for (i, v) in vs.iter().enumerate() {
                    x.push(number(&format!("{field}[{i}]"), v)?);
                }
            }
            Some(other) => return Err(format!("features field `{field}` is {} ({}), not a list of numbers", other, other.type_name())),
            None => return Err(format!("the record has no features field `{field}`")),
        },
    }
    let (label, label_is_bool) = match &spec.label {
        Some(e) => label(e.source(), &e.eval(record).map_err(|err| format!("label `{}`: {err}", e.source()))?)?,
        None => (None, None),
    };
    let key = match &spec.key {
        Some((_, e)) => e.eval(record).map_err(|err| format!("key_by `{}`: {err}", e.source()))?,
        None => Value::Null,
    };
    Ok(Row { label, label_is_bool, key })
}

/// What scoring one row gave.
struct Scored {
    p: f64,
    positive: bool,
    /// The labels are bools (the prediction is a bool too), else 0/1.
    bool_labels: bool,
    /// The model, when a record-count model output is due.
    model_out: Option<Record>,
}

impl Scored {
    fn prediction(&self) -> Value {
        if self.bool_labels {
            Value::Bool(self.positive)
        } else {
            Value::Int(self.positive as i64)
        }
    }
}

/// The model of `key` (the global one without `key_by`), made from the initial model or zeros
/// (`n` features) if it is new.
fn model_of<'a>(spec: &Spec, global: &'a mut Option<Model>, keyed: &'a mut Option<KeyedState<Model>>, key: &Value, n: usize) -> Result<&'a mut Model, OperatorError> {
    match &spec.key {
        None => Ok(global.get_or_insert_with(|| fresh_model(spec, n))),
        Some(_) => keyed_model(spec, keyed, key, n),
    }
}

fn fresh_model(spec: &Spec, n: usize) -> Model {
    spec.initial.clone().unwrap_or_else(|| Model::zeros(n))
}

fn keyed_model<'a>(spec: &Spec, keyed: &'a mut Option<KeyedState<Model>>, key: &Value, n: usize) -> Result<&'a mut Model, OperatorError> {
    let k = StateKey { key: Key(key.clone()), namespace: 0 };
    Ok(keyed.get_or_insert_with(|| KeyedState::in_memory("models")).get_or_insert_with(&k, || fresh_model(spec, n))?)
}

/// Scores `x` with `model` and learns from the row's label; `Err`: why the row is rejected
/// (the model is unchanged).
#[inline]
fn score_row(spec: &Spec, model: &mut Model, row: &Row, x: &[f64], timestamp: i64, scratch: &mut Model, dirty: &mut HashSet<Key>) -> Result<Scored, String> {
    let p = model.score(&spec.settings, x, row.label, scratch).map_err(|why| why.to_string())?;
    if let Some(b) = row.label_is_bool {
        model.bool_labels = b;
    }
    let mut model_out = None;
    if row.label.is_some() {
        match spec.emit {
            Emit::Records(every) if model.learned % every == 0 => model_out = Some(model_record(spec, &row.key, model, timestamp)),
            Emit::Millis(_) => {
                dirty.insert(Key(row.key.clone()));
            }
            _ => {}
        }
    }
    Ok(Scored { p, positive: p > spec.settings.threshold, bool_labels: model.bool_labels, model_out })
}

impl LogisticRegression {
    fn new(spec: Arc<Spec>) -> LogisticRegression {
        LogisticRegression {
            spec,
            global: None,
            keyed: None,
            scratch: Model::default(),
            x: Vec::new(),
            key_groups: 0..u32::MAX,
            dirty: HashSet::new(),
            timer_at: None,
        }
    }

    fn keyed(&mut self) -> &mut KeyedState<Model> {
        self.keyed.get_or_insert_with(|| KeyedState::in_memory("models"))
    }

    fn read(&mut self, record: &Record) -> Result<Row, String> {
        read(&self.spec, record, &mut self.x)
    }

    /// Scores (and learns from) the row whose features are in `self.x`.
    fn score(&mut self, row: Row, timestamp: i64) -> Result<Result<Scored, String>, OperatorError> {
        let model = model_of(&self.spec, &mut self.global, &mut self.keyed, &row.key, self.x.len())?;
        Ok(score_row(&self.spec, model, &row, &self.x, timestamp, &mut self.scratch, &mut self.dirty))
    }

    /// Asks for the next time-based model output, if none is pending.
    fn arm_timer(&mut self, out: &mut Collector) {
        if let (Emit::Millis(every), None, false) = (self.spec.emit, self.timer_at, self.dirty.is_empty()) {
            let due = rill_engine::time::now_millis() + every;
            out.timers().register(TimeDomain::Processing, &Value::Null, 0, due);
            self.timer_at = Some(due);
        }
    }

    /// Writes out the models of `keys` (as they are now).
    fn emit_models(&mut self, keys: Vec<Key>, out: &mut Collector) -> Result<(), OperatorError> {
        let spec = self.spec.clone();
        for k in keys {
            let model = match &spec.key {
                None => self.global.as_ref().cloned(),
                Some(_) => self.keyed().get(&StateKey { key: k.clone(), namespace: 0 })?.cloned(),
            };
            // (A global model made for a batch whose every row was rejected has nothing to say.)
            if let Some(m) = model.filter(|m| m.scored > 0) {
                out.emit_side(0, model_record(&spec, &k.0, &m, NO_TIMESTAMP));
            }
        }
        Ok(())
    }
}

/// A model as a record of the `model` side output (what `initial_model` reads back).
fn model_record(spec: &Spec, key: &Value, m: &Model, timestamp: i64) -> Record {
    let mut r = Record::with_capacity(12);
    if let Some((name, _)) = &spec.key {
        r.push(*name, key.clone());
    }
    let weights = match &spec.features {
        Features::Exprs(exprs) => Value::Map(Arc::new(exprs.iter().zip(&m.weights).map(|((n, _), w)| (n.as_str(), Value::Float(*w))).collect())),
        Features::Field(_) => Value::List(m.weights.iter().map(|w| Value::Float(*w)).collect()),
    };
    let float = |x: f64| Value::Float(x);
    r.push(Sym::new("version"), Value::Int(m.version as i64));
    r.push(Sym::new("learned"), Value::Int(m.learned as i64));
    r.push(Sym::new("scored"), Value::Int(m.scored as i64));
    r.push(Sym::new("weights"), weights);
    r.push(Sym::new("intercept"), float(m.intercept));
    r.push(Sym::new("log_loss"), if m.learned == 0 { Value::Null } else { float(m.loss_sum / m.learned as f64) });
    r.push(Sym::new("accuracy"), if m.learned == 0 { Value::Null } else { float(m.hits as f64 / m.learned as f64) });
    r.push(Sym::new("optimizer"), Value::str(spec.settings.optimizer.name()));
    r.push(Sym::new("steps"), Value::Int(m.steps as i64));
    r.push(Sym::new("accumulators"), Value::List(m.accumulators.iter().map(|[a, b]| Value::List(vec![float(*a), float(*b)].into())).collect()));
    r.timestamp = timestamp;
    r
}

/// A feature column as numbers, with the rows that are not (row, error).
fn numbers<'a>(name: &str, column: &'a Column) -> (std::borrow::Cow<'a, [f64]>, Vec<(usize, String)>) {
    match column {
        Column::Float(v) if v.iter().all(|x| x.is_finite()) => (std::borrow::Cow::Borrowed(v.as_slice()), Vec::new()),
        Column::Int(v) => (v.iter().map(|&i| i as f64).collect(), Vec::new()),
        Column::Bool(v) => (v.iter().map(|&b| b as u8 as f64).collect(), Vec::new()),
        other => {
            let mut errors = Vec::new();
            let xs = (0..other.len())
                .map(|i| {
                    number(name, &other.get(i)).unwrap_or_else(|e| {
                        errors.push((i, e));
                        0.0
                    })
                })
                .collect();
            (xs, errors)
        }
    }
}

impl Operator for LogisticRegression {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        self.key_groups = ctx.key_groups.clone();
        if self.spec.key.is_some() {
            self.keyed = Some(ctx.keyed_state("models", StateOptions::default())?);
        }
        Ok(())
    }

    fn process(&mut self, mut record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        let row = match self.read(&record) {
            Ok(row) => row,
            Err(e) => {
                out.reject(record, e);
                return Ok(());
            }
        };
        match self.score(row, record.timestamp)? {
            Ok(scored) => {
                record.set(self.spec.probability, Value::Float(scored.p));
                record.set(self.spec.prediction, scored.prediction());
                out.emit(record);
                if let Some(m) = scored.model_out {
                    out.emit_side(0, m);
                }
            }
            Err(e) => out.reject(record, e),
        }
        self.arm_timer(out);
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        let Some(columns) = batch.into_columns_or(|r| self.process(r, out))? else { return Ok(()) };
        let Features::Exprs(exprs) = &self.spec.features else {
            // A list field: record by record.
            for r in columns.to_records() {
                self.process(r, out)?;
            }
            return Ok(());
        };
        let n = columns.len();
        let spec = self.spec.clone();
        // Every input as a column; a row on which one fails takes the record path (its error).
        let mut failed = vec![false; n];
        let mut eval = |e: &Expr| {
            let evaluated = e.eval_columns(&columns);
            for (row, _) in &evaluated.errors {
                failed[*row] = true;
            }
            evaluated.column
        };
        let feature_columns: Vec<_> = exprs.iter().map(|(_, e)| eval(e)).collect();
        let label_column = spec.label.as_ref().map(&mut eval);
        let key_column = spec.key.as_ref().map(|(_, e)| eval(e));
        let mut xs = Vec::with_capacity(exprs.len());
        for ((name, _), c) in exprs.iter().zip(&feature_columns) {
            let (x, errors) = numbers(name, c);
            errors.iter().for_each(|(row, _)| failed[*row] = true);
            xs.push(x);
        }
        let (mut ps, mut positives, mut keep) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
        let mut as_bool = Vec::with_capacity(n);
        let mut models = Vec::new();
        let label_source = spec.label.as_ref().map_or("", |e| e.source());
        let Self { global, keyed, x, scratch, dirty, .. } = self;
        // The global model, looked up once for the batch.
        let mut global_model = match spec.key {
            None => Some(global.get_or_insert_with(|| fresh_model(&spec, exprs.len()))),
            Some(_) => None,
        };
        for i in 0..n {
            // A row on which an input failed, or whose label is not one, takes the record path
            // (for its error).
            let labelled = match &label_column {
                _ if failed[i] => Err(()),
                Some(c) => match &**c {
                    Column::Bool(v) => Ok((Some(v[i]), Some(true))),
                    c => label(label_source, &c.get(i)).map_err(|_| ()),
                },
                None => Ok((None, None)),
            };
            let scored = match labelled {
                Ok((label, label_is_bool)) => {
                    x.clear();
                    x.extend(xs.iter().map(|x| x[i]));
                    let row = Row { label, label_is_bool, key: key_column.as_ref().map_or(Value::Null, |c| c.get(i)) };
                    let model = match global_model.as_deref_mut() {
                        Some(m) => m,
                        None => keyed_model(&spec, keyed, &row.key, x.len())?,
                    };
                    score_row(&spec, model, &row, x, columns.timestamps[i], scratch, dirty)
                }
                Err(()) => Err(String::new()),
            };
            match scored {
                Ok(scored) => {
                    ps.push(scored.p);
                    positives.push(scored.positive);
                    as_bool.push(scored.bool_labels);
                    if !keep.is_empty() {
                        keep.push(true);
                    }
                    models.extend(scored.model_out);
                }
                Err(mut e) => {
                    if keep.is_empty() {
                        keep = vec![true; i];
                    }
                    keep.push(false);
                    let r = columns.row(i);
                    if e.is_empty() {
                        // The record path says what is wrong with it.
                        e = read(&spec, &r, &mut Vec::new()).err().unwrap_or_else(|| "the record could not be scored".into());
                    }
                    out.reject(r, e);
                }
            }
        }
        let mut columns = if keep.is_empty() { columns } else { columns.select(&keep) };
        columns.set(spec.probability, Column::Float(ps));
        columns.set(
            spec.prediction,
            if as_bool.iter().all(|b| *b) {
                Column::Bool(positives)
            } else if as_bool.iter().all(|b| !*b) {
                Column::Int(positives.into_iter().map(|p| p as i64).collect())
            } else {
                // Labels of both kinds (models of different keys): each as its model's.
                Column::Any(positives.into_iter().zip(as_bool).map(|(p, b)| if b { Value::Bool(p) } else { Value::Int(p as i64) }).collect())
            },
        );
        out.emit_columns(columns);
        for m in models {
            out.emit_side(0, m);
        }
        self.arm_timer(out);
        Ok(())
    }

    fn on_timer(&mut self, _timer: Timer, out: &mut Collector) -> Result<(), OperatorError> {
        self.timer_at = None;
        let mut keys: Vec<Key> = self.dirty.drain().collect();
        keys.sort_by_cached_key(|k| k.0.to_string());
        self.emit_models(keys, out)
    }

    fn on_end(&mut self, out: &mut Collector) -> Result<(), OperatorError> {
        // Partly gathered mini-batches make their step; every model goes out as it ends.
        let settings = self.spec.settings.clone();
        let keys: Vec<Key> = match &self.spec.key {
            None => vec![Key(Value::Null)],
            Some(_) => {
                // In a stable order (keyed state has none).
                let mut keys: Vec<Key> = self.keyed().keys()?.into_iter().map(|k| k.key).collect();
                keys.sort_by_cached_key(|k| k.0.to_string());
                keys
            }
        };
        if settings.batch_size > 1 {
            for k in &keys {
                let model = match &self.spec.key {
                    None => self.global.as_mut(),
                    Some(_) => self.keyed.as_mut().map(|s| s.get_mut(&StateKey { key: k.clone(), namespace: 0 })).transpose()?.flatten(),
                };
                if let Some(m) = model {
                    // A step that would not be finite is dropped, as a refused record is.
                    let _ = m.flush(&settings, &mut self.scratch);
                }
            }
        }
        if let Emit::Never = self.spec.emit {
            return Ok(());
        }
        self.dirty.clear();
        self.emit_models(keys, out)
    }

    fn snapshot_incremental(&mut self, _epoch: Epoch, full: bool) -> Result<Option<Snapshot>, OperatorError> {
        match &self.spec.key {
            None => Ok(Some(Snapshot::Full(serde_json::to_vec(&self.global).map_err(|e| OperatorError::new(e.to_string()))?))),
            Some(_) => crate::keyed::checkpoint::snapshot(self.keyed(), full),
        }
    }

    fn restore_chain(&mut self, chain: &[Vec<u8>]) -> Result<(), OperatorError> {
        match &self.spec.key {
            None => {
                if let Some(last) = chain.last() {
                    self.global = serde_json::from_slice(last).map_err(|e| OperatorError::new(format!("logistic_regression checkpoint: {e}")))?;
                }
                Ok(())
            }
            Some(_) => crate::keyed::checkpoint::restore_chain(self.keyed(), chain, "logistic_regression"),
        }
    }

    fn restore_rescaled_chains(&mut self, chains: &[Vec<Vec<u8>>]) -> Result<(), OperatorError> {
        match &self.spec.key {
            None => Err(OperatorError::new("a global logistic regression model runs at parallelism 1 and cannot be rescaled")),
            Some(_) => {
                let key_groups = self.key_groups.clone();
                crate::keyed::checkpoint::restore_rescaled(self.keyed(), chains, &key_groups, "logistic_regression")
            }
        }
    }
}

/// Reads `initial_model`: a JSON object as the `model` side output writes it, or JSON lines of
/// them (the last is taken).
fn load_model(path: &str, features: &Features, optimizer: &Optimizer) -> Result<Model, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read `{path}`: {e}"))?;
    let (line_no, line) = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).last().ok_or_else(|| format!("`{path}` is empty"))?;
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("`{path}` line {}: not JSON ({e})", line_no + 1))?;
    let at = format!("`{path}` line {}", line_no + 1);
    let weights: Vec<f64> = match (&v["weights"], features) {
        (serde_json::Value::Object(map), Features::Exprs(exprs)) => {
            let mut ws = Vec::with_capacity(exprs.len());
            for (name, _) in exprs {
                ws.push(map.get(name).and_then(|w| w.as_f64()).ok_or_else(|| format!("{at}: no weight for feature `{name}`"))?);
            }
            if let Some(extra) = map.keys().find(|k| !exprs.iter().any(|(n, _)| n == *k)) {
                return Err(format!("{at}: the model has a weight for `{extra}`, which is not one of the features"));
            }
            ws
        }
        (serde_json::Value::Array(list), _) => list.iter().map(|w| w.as_f64().ok_or_else(|| format!("{at}: a weight is not a number"))).collect::<Result<_, _>>()?,
        _ => return Err(format!("{at}: `weights` must be an object (feature: weight) for `features`, or a list for `features_field`")),
    };
    if let Features::Exprs(exprs) = features {
        if weights.len() != exprs.len() {
            return Err(format!("{at}: {} weights for {} features", weights.len(), exprs.len()));
        }
    }
    let mut m = Model::zeros(weights.len());
    m.weights = weights;
    m.intercept = v["intercept"].as_f64().unwrap_or(0.0);
    m.version = v["version"].as_u64().unwrap_or(0);
    // The optimizer's state carries over when it is the same optimizer.
    if v["optimizer"].as_str() == Some(optimizer.name()) {
        if let Some(acc) = v["accumulators"].as_array().filter(|a| a.len() == m.weights.len()) {
            for (slot, pair) in m.accumulators.iter_mut().zip(acc) {
                *slot = [pair[0].as_f64().unwrap_or(0.0), pair[1].as_f64().unwrap_or(0.0)];
            }
            m.steps = v["steps"].as_u64().unwrap_or(0);
        }
    }
    Ok(m)
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: LearnConfig = ctx.options()?;
    let mut errors = Vec::new();
    let at = Some(&ctx.options.span);
    let features = match (&cfg.features, &cfg.features_field) {
        (Some(list), None) if !list.is_empty() => {
            let mut exprs = Vec::new();
            for f in list {
                match ctx.expr(f) {
                    Ok(e) => exprs.push((e.as_field().map(|s| s.as_str().to_string()).unwrap_or_else(|| f.value.trim().to_string()), e)),
                    Err(e) => errors.push(e),
                }
            }
            Features::Exprs(exprs)
        }
        (None, Some(field)) => Features::Field(Sym::new(field.value.trim())),
        (Some(_), Some(field)) => {
            errors.push(ConfigError::new(Some(&field.span), "`features` and `features_field` are two ways to say the same: give one"));
            Features::Exprs(Vec::new())
        }
        _ => {
            errors.push(ConfigError::new(at, "`logistic_regression` needs `features` (a list of expressions) or `features_field` (one list field)").hint("e.g. `features: [amount, velocity_1m]`"));
            Features::Exprs(Vec::new())
        }
    };
    let label = cfg.label.as_ref().and_then(|l| ctx.expr(l).map_err(|e| errors.push(e)).ok());
    let key = cfg.key_by.as_ref().and_then(|k| ctx.expr(k).map_err(|e| errors.push(e)).ok()).map(|e| (e.as_field().unwrap_or_else(|| Sym::new("key")), e));
    let option_span = |name: &str| ctx.options.get(name).map(|n| n.span.clone());
    if let Err(e) = cfg.optimizer.check() {
        errors.push(ConfigError::new(option_span("optimizer").as_ref().or(at), format!("optimizer: {e}")));
    }
    for (name, v, ok) in [
        ("intercept_learning_rate", cfg.intercept_learning_rate, cfg.intercept_learning_rate.is_finite() && cfg.intercept_learning_rate >= 0.0),
        ("l2", cfg.l2, cfg.l2.is_finite() && cfg.l2 >= 0.0),
        ("threshold", cfg.threshold, (0.0..=1.0).contains(&cfg.threshold)),
    ] {
        if !ok {
            errors.push(ConfigError::new(option_span(name).as_ref().or(at), format!("`{name}` cannot be {v}")));
        }
    }
    if cfg.batch_size == 0 {
        errors.push(ConfigError::new(option_span("batch_size").as_ref().or(at), "`batch_size` must be at least 1"));
    }
    let emit = match &cfg.emit_model_every {
        None => Emit::Never,
        Some(Every::Records(0)) => {
            errors.push(ConfigError::new(option_span("emit_model_every").as_ref().or(at), "`emit_model_every` must be at least 1 record"));
            Emit::Never
        }
        Some(Every::Records(n)) => Emit::Records(*n),
        Some(Every::Time(t)) => match humantime::parse_duration(t.trim()) {
            Ok(d) if d >= Duration::from_millis(1) => Emit::Millis(d.as_millis() as i64),
            _ => {
                errors.push(ConfigError::new(option_span("emit_model_every").as_ref().or(at), format!("`emit_model_every: {t}` is neither a number of records nor a duration")).hint("write e.g. `1000` or `10s`"));
                Emit::Never
            }
        },
    };
    let initial = cfg.initial_model.as_ref().and_then(|p| load_model(&p.value, &features, &cfg.optimizer).map_err(|e| errors.push(ConfigError::new(Some(&p.span), format!("initial_model: {e}")))).ok());
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let settings = Settings { optimizer: cfg.optimizer, intercept_learning_rate: cfg.intercept_learning_rate, l2: cfg.l2, threshold: cfg.threshold, batch_size: cfg.batch_size, track_loss: !matches!(emit, Emit::Never) };
    let description = format!(
        "logistic regression ({}) on {}{}{}",
        settings.optimizer.name(),
        match &features {
            Features::Exprs(e) => format!("{} features", e.len()),
            Features::Field(f) => format!("the list `{f}`"),
        },
        label.as_ref().map(|l| format!(", learning from `{}`", l.source())).unwrap_or_else(|| ", scoring only".into()),
        key.as_ref().map(|(_, e)| format!(", a model per `{}`", e.source())).unwrap_or_default(),
    );
    let spec = Arc::new(Spec {
        features,
        label,
        key: key.clone(),
        settings,
        probability: Sym::new(&cfg.outputs.probability),
        prediction: Sym::new(&cfg.outputs.prediction),
        emit,
        initial,
    });
    let mut t = TransformSpec::new(description, move |_| Ok(LogisticRegression::new(spec.clone())));
    t.side_outputs = vec!["model".into()];
    crate::keyed::route_by(&mut t, key.map(|(_, e)| e));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rill_engine::testing::{Harness, Output};

    fn spec(key: bool, batch_size: usize) -> Arc<Spec> {
        let e = |s: &str| Expr::compile(s).unwrap();
        Arc::new(Spec {
            features: Features::Exprs(vec![("a".into(), e("a")), ("b".into(), e("b")), ("a * 0.5".into(), e("a * 0.5"))]),
            label: Some(e("y")),
            key: key.then(|| (Sym::new("k"), e("k"))),
            settings: Settings { optimizer: Optimizer::Adam { learning_rate: 0.1, beta_1: 0.9, beta_2: 0.999, eps: 1e-8 }, intercept_learning_rate: 0.1, l2: 0.01, threshold: 0.5, batch_size, track_loss: true },
            probability: Sym::new("p"),
            prediction: Sym::new("pred"),
            emit: Emit::Records(7),
            initial: None,
        })
    }

    /// A column batch of rows (k, a, b, y); y: 0/1, 3 = null (scored only), 2 = not a label.
    fn columns(rows: &[(i64, f64, i64, u8)], offset: u64) -> rill_engine::columns::Columns {
        let mut c = rill_engine::columns::Columns::new((offset..offset + rows.len() as u64).collect());
        c.set(Sym::new("k"), Column::Int(rows.iter().map(|r| r.0).collect()));
        c.set(Sym::new("a"), Column::Float(rows.iter().map(|r| r.1).collect()));
        c.set(Sym::new("b"), Column::Int(rows.iter().map(|r| r.2).collect()));
        c.set(Sym::new("y"), Column::from_values(rows.iter().map(|r| if r.3 == 3 { Value::Null } else { Value::Int(r.3 as i64) }).collect()));
        c.timestamps = vec![5; rows.len()];
        c
    }

    proptest! {
        #[test]
        fn column_batches_score_as_records_do(
            batches in prop::collection::vec(prop::collection::vec((0i64..3, -3.0f64..3.0, -2i64..3, 0u8..4), 1..40), 1..6),
            key in any::<bool>(),
            batch_size in 1usize..4,
        ) {
            let (mut by_rows, mut by_columns) = (Harness::new(LogisticRegression::new(spec(key, batch_size))).unwrap(), Harness::new(LogisticRegression::new(spec(key, batch_size))).unwrap());
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let mut offset = 0;
            for rows in &batches {
                let c = columns(rows, offset);
                offset += rows.len() as u64;
                a.extend(by_rows.push(c.to_records()).unwrap());
                b.extend(by_columns.push_columns(c).unwrap());
            }
            a.extend(by_rows.end().unwrap());
            b.extend(by_columns.end().unwrap());
            prop_assert_eq!(&a, &b);
            let rejected = a.iter().filter(|o| matches!(o, Output::Rejected(..))).count();
            prop_assert_eq!(rejected, batches.iter().flatten().filter(|r| r.3 == 2).count());
        }
    }

    #[test]
    fn a_restored_instance_scores_on_as_the_original() {
        for key in [false, true] {
            let rows: Vec<(i64, f64, i64, u8)> = (0..200).map(|i| (i % 3, (i as f64 * 0.37).sin() * 2.0, i % 5 - 2, (i % 7 < 3) as u8)).collect();
            let mut a = Harness::new(LogisticRegression::new(spec(key, 2))).unwrap();
            a.push_columns(columns(&rows[..120], 0)).unwrap();
            let (_, saved) = a.checkpoint(1).unwrap();
            let mut b = Harness::restored(LogisticRegression::new(spec(key, 2)), &saved).unwrap();
            let rest = columns(&rows[120..], 120);
            assert_eq!(a.push_columns(rest.clone()).unwrap(), b.push_columns(rest).unwrap(), "keyed: {key}");
        }
    }
}
