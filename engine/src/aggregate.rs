//! Aggregate functions: `count()`, `sum(x)`, `min(x)`, `max(x)`, `avg(x)`, `first(x)`,
//! `last(x)`, ..., written in pipelines as `name: fn(expression)`, and the model-quality
//! aggregates `accuracy(prediction, label)`, `precision(prediction, label[, positive])`,
//! `recall(prediction, label[, positive])`, `f1(prediction, label[, positive])`,
//! `confusion(prediction, label[, positive])` (a map of `tp`, `fp`, `fn`, `tn`), and over
//! probabilities `log_loss(p, label)`, `brier(p, label)` and `auc(p, label)` (exact: the
//! Mann–Whitney statistic over every pair in the window, ties counted half).
//!
//! A function of several arguments gets them as one list value (`[a, b]`).
//!
//! The running `aggregate` transform uses them now; windows build on the same trait, and a user
//! adds their own by implementing [`AggregateFunction`] and registering it.
//! Nulls are skipped, as in SQL (`count()` counts records, `count(x)` non-null values).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::columns::Column;
use crate::expr::{CompileError, Expr};
use crate::value::{Key, Value};

/// The running state of a user-defined aggregate for one key (and window).
pub trait Accumulator: Send {
    /// Adds a value (never called with a value rejected by [`AggregateFunction::check`]).
    fn add(&mut self, value: &Value);
    fn result(&self) -> Value;
    /// Folds in the saved state of another accumulator of the same function (session windows
    /// merge this way).
    fn merge(&mut self, other: &Value);
    /// The state as a value, to spill to sled and to restore with [`AggregateFunction::restore`].
    fn save(&self) -> Value;
}

/// A kind of aggregate. Built-ins return an [`Acc`] variant; a user-defined one returns
/// [`Acc::Custom`] from `create` and implements `restore`.
pub trait AggregateFunction: Send + Sync {
    /// Number of arguments: 0 (`count()`), 1, or more (they arrive as one list value).
    fn arity(&self) -> std::ops::RangeInclusive<usize>;
    /// Rejects a value this aggregate cannot take (the record goes to the dead-letter output,
    /// and no aggregate of it is updated).
    fn check(&self, _value: &Value) -> Result<(), String> {
        Ok(())
    }
    fn create(&self) -> Acc;
    /// Whether [`check`](Self::check) passes every value of `column`, so that a batch need
    /// not be checked row by row. `false` (the default): each row is checked.
    fn accepts_all(&self, _column: &Column) -> bool {
        false
    }
    /// Rebuilds a user-defined accumulator from [`Accumulator::save`].
    fn restore(&self, _saved: &Value) -> Acc {
        self.create()
    }
}

fn numeric(v: &Value) -> Result<(), String> {
    match v {
        Value::Int(_) | Value::Float(_) | Value::Null => Ok(()),
        other => Err(format!("expected a number, got {} ({})", other, other.type_name())),
    }
}

/// A running sum: integers stay integers until a double (or an overflow) comes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub enum SumAcc {
    #[default]
    Empty,
    Int(i64),
    Float(f64),
}

impl SumAcc {
    fn add(&mut self, v: &Value) {
        *self = match (&*self, v) {
            (_, Value::Null) => return,
            (SumAcc::Empty, Value::Int(i)) => SumAcc::Int(*i),
            (SumAcc::Int(a), Value::Int(i)) => match a.checked_add(*i) {
                Some(s) => SumAcc::Int(s),
                None => SumAcc::Float(*a as f64 + *i as f64),
            },
            (SumAcc::Empty, v) => SumAcc::Float(v.as_f64().unwrap_or(0.0)),
            (SumAcc::Int(a), v) => SumAcc::Float(*a as f64 + v.as_f64().unwrap_or(0.0)),
            (SumAcc::Float(a), v) => SumAcc::Float(a + v.as_f64().unwrap_or(0.0)),
        }
    }
    fn value(&self) -> Value {
        match self {
            SumAcc::Empty => Value::Int(0),
            SumAcc::Int(i) => Value::Int(*i),
            SumAcc::Float(f) => Value::Float(*f),
        }
    }
}

/// The state of one aggregate. Built-ins are variants (no allocation per accumulator);
/// user-defined aggregates are boxed.
pub enum Acc {
    Count(i64),
    Sum(SumAcc),
    Avg { sum: f64, n: u64 },
    Extreme { max: bool, best: Value },
    First(Option<Value>),
    Last(Value),
    Collect(Vec<Value>),
    Distinct(HashSet<Key>),
    /// Model quality: `hits` of `n` (accuracy: prediction == label; precision: label positive
    /// among predicted positive; recall: predicted positive among labelled positive).
    Quality { kind: Quality, hits: u64, n: u64 },
    /// `f1` and `confusion`: true positives, false positives, false negatives, true negatives.
    Confusion { f1: bool, counts: [u64; 4] },
    /// `log_loss` and `brier`: the summed loss of `n` scored records.
    Loss { brier: bool, sum: f64, n: u64 },
    /// `auc`: every (probability, label) of the window.
    Auc(Vec<(f64, bool)>),
    Custom(Box<dyn Accumulator>),
    /// A user-defined accumulator read back from sled, waiting for
    /// [`AggregateCall::rehydrate`].
    Saved(Value),
}

/// How an [`Acc`] is stored.
#[derive(Serialize, Deserialize)]
enum AccRepr {
    Count(i64),
    Sum(SumAcc),
    Avg { sum: f64, n: u64 },
    Extreme { max: bool, best: Value },
    First(Option<Value>),
    Last(Value),
    Collect(Vec<Value>),
    Distinct(Vec<Value>),
    Quality { kind: Quality, hits: u64, n: u64 },
    Confusion { f1: bool, counts: [u64; 4] },
    Loss { brier: bool, sum: f64, n: u64 },
    Auc(Vec<(f64, bool)>),
    Saved(Value),
}

/// Which model-quality ratio an [`Acc::Quality`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Quality {
    Accuracy,
    Precision,
    Recall,
}

impl Quality {
    /// Counts one `[prediction, label]` or `[prediction, label, positive]` pair: (counted, hit).
    fn judge(self, v: &Value) -> (bool, bool) {
        let Value::List(args) = v else { return (false, false) };
        let (p, l) = (&args[0], &args[1]);
        if p.is_null() || l.is_null() {
            return (false, false);
        }
        let one = Value::Int(1);
        let positive = args.get(2).unwrap_or(&one);
        let is_pos = |x: &Value| x == positive || matches!((x, positive), (Value::Bool(true), Value::Int(1)));
        match self {
            Quality::Accuracy => (true, p == l),
            Quality::Precision => (is_pos(p), is_pos(l)),
            Quality::Recall => (is_pos(l), is_pos(p)),
        }
    }
}

/// A `[prediction, label(, positive)]` argument as (predicted positive, labelled positive);
/// `None` when either is null.
fn outcome(v: &Value) -> Option<(bool, bool)> {
    let Value::List(args) = v else { return None };
    let (p, l) = (&args[0], &args[1]);
    if p.is_null() || l.is_null() {
        return None;
    }
    let one = Value::Int(1);
    let positive = args.get(2).unwrap_or(&one);
    let is_pos = |x: &Value| x == positive || matches!((x, positive), (Value::Bool(true), Value::Int(1)));
    Some((is_pos(p), is_pos(l)))
}

/// A label as a bool: true/false, or 1/0.
fn binary(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        Value::Float(f) if *f == 0.0 => Some(false),
        Value::Float(f) if *f == 1.0 => Some(true),
        _ => None,
    }
}

/// A `[probability, label]` argument (checked by [`check_scored`]); `None` when either is null.
fn scored(v: &Value) -> Option<(f64, bool)> {
    let Value::List(args) = v else { return None };
    Some((args[0].as_f64()?, binary(&args[1])?))
}

fn check_scored(v: &Value) -> Result<(), String> {
    let Value::List(args) = v else { return Ok(()) };
    let (p, l) = (&args[0], &args[1]);
    if p.is_null() || l.is_null() {
        return Ok(());
    }
    match p.as_f64() {
        Some(x) if (0.0..=1.0).contains(&x) => {}
        _ => return Err(format!("expected a probability between 0 and 1, got {} ({})", p, p.type_name())),
    }
    match binary(l) {
        Some(_) => Ok(()),
        None => Err(format!("expected a label of 0, 1, false or true, got {} ({})", l, l.type_name())),
    }
}

/// The log loss of probability `p` for `label`, `p` kept within [1e-15, 1 − 1e-15] (as
/// scikit-learn does) so that it stays finite.
pub fn log_loss(p: f64, label: bool) -> f64 {
    let p = p.clamp(1e-15, 1.0 - 1e-15);
    if label {
        -p.ln()
    } else {
        -(1.0 - p).ln()
    }
}

/// The area under the ROC curve: the chance that a positive scores above a negative, ties
/// counting half (average ranks); `None` without both classes.
pub fn auc(pairs: &[(f64, bool)]) -> Option<f64> {
    let positives = pairs.iter().filter(|(_, y)| *y).count();
    let negatives = pairs.len() - positives;
    if positives == 0 || negatives == 0 {
        return None;
    }
    let mut sorted: Vec<(f64, bool)> = pairs.to_vec();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Sum of the positives' ranks (1-based), a run of equal scores sharing its mean rank.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j < sorted.len() && sorted[j].0 == sorted[i].0 {
            j += 1;
        }
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * sorted[i..j].iter().filter(|(_, y)| *y).count() as f64;
        i = j;
    }
    let p = positives as f64;
    Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64))
}

impl Serialize for Acc {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let repr = match self {
            Acc::Count(n) => AccRepr::Count(*n),
            Acc::Sum(x) => AccRepr::Sum(x.clone()),
            Acc::Avg { sum, n } => AccRepr::Avg { sum: *sum, n: *n },
            Acc::Extreme { max, best } => AccRepr::Extreme { max: *max, best: best.clone() },
            Acc::First(x) => AccRepr::First(x.clone()),
            Acc::Last(x) => AccRepr::Last(x.clone()),
            Acc::Collect(x) => AccRepr::Collect(x.clone()),
            Acc::Distinct(x) => AccRepr::Distinct(x.iter().map(|k| k.0.clone()).collect()),
            Acc::Quality { kind, hits, n } => AccRepr::Quality { kind: *kind, hits: *hits, n: *n },
            Acc::Confusion { f1, counts } => AccRepr::Confusion { f1: *f1, counts: *counts },
            Acc::Loss { brier, sum, n } => AccRepr::Loss { brier: *brier, sum: *sum, n: *n },
            Acc::Auc(pairs) => AccRepr::Auc(pairs.clone()),
            Acc::Custom(c) => AccRepr::Saved(c.save()),
            Acc::Saved(v) => AccRepr::Saved(v.clone()),
        };
        repr.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Acc {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Acc, D::Error> {
        Ok(match AccRepr::deserialize(d)? {
            AccRepr::Count(n) => Acc::Count(n),
            AccRepr::Sum(x) => Acc::Sum(x),
            AccRepr::Avg { sum, n } => Acc::Avg { sum, n },
            AccRepr::Extreme { max, best } => Acc::Extreme { max, best },
            AccRepr::First(x) => Acc::First(x),
            AccRepr::Last(x) => Acc::Last(x),
            AccRepr::Collect(x) => Acc::Collect(x),
            AccRepr::Distinct(x) => Acc::Distinct(x.into_iter().map(Key).collect()),
            AccRepr::Quality { kind, hits, n } => Acc::Quality { kind, hits, n },
            AccRepr::Confusion { f1, counts } => Acc::Confusion { f1, counts },
            AccRepr::Loss { brier, sum, n } => Acc::Loss { brier, sum, n },
            AccRepr::Auc(pairs) => Acc::Auc(pairs),
            AccRepr::Saved(v) => Acc::Saved(v),
        })
    }
}

impl std::fmt::Debug for Acc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Acc({})", self.result())
    }
}

impl Acc {
    /// Adds rows `rows` of `column` (`None`: `count()`, one per row) in their order: what
    /// [`add`](Self::add) of each row's value does, with the common cases in typed loops.
    pub fn add_rows(&mut self, column: Option<&Column>, rows: &[u32]) {
        match (self, column) {
            (Acc::Count(n), None | Some(Column::Int(_) | Column::Float(_) | Column::Bool(_))) => *n += rows.len() as i64,
            (Acc::Sum(s), Some(Column::Float(x))) => {
                let Some((&first, rest)) = rows.split_first() else { return };
                let mut sum = match *s {
                    SumAcc::Empty => x[first as usize],
                    SumAcc::Int(a) => a as f64 + x[first as usize],
                    SumAcc::Float(a) => a + x[first as usize],
                };
                for &r in rest {
                    sum += x[r as usize];
                }
                *s = SumAcc::Float(sum);
            }
            (Acc::Sum(s), Some(Column::Int(x))) => {
                for &r in rows {
                    s.add(&Value::Int(x[r as usize]));
                }
            }
            (Acc::Avg { sum, n }, Some(Column::Float(x))) => {
                for &r in rows {
                    *sum += x[r as usize];
                }
                *n += rows.len() as u64;
            }
            (Acc::Avg { sum, n }, Some(Column::Int(x))) => {
                for &r in rows {
                    *sum += x[r as usize] as f64;
                }
                *n += rows.len() as u64;
            }
            (acc, column) => {
                for &r in rows {
                    acc.add(&column.map_or(Value::Int(1), |c| c.get(r as usize)));
                }
            }
        }
    }

    #[inline]
    pub fn add(&mut self, v: &Value) {
        match self {
            Acc::Count(n) => *n += !v.is_null() as i64,
            Acc::Sum(s) => s.add(v),
            Acc::Avg { sum, n } => {
                if let Some(x) = v.as_f64() {
                    *sum += x;
                    *n += 1;
                }
            }
            Acc::Extreme { max, best } => {
                if v.is_null() {
                    return;
                }
                let better = best.is_null()
                    || matches!(crate::expr::order(v, best), Some(o) if (o == std::cmp::Ordering::Greater) == *max && o != std::cmp::Ordering::Equal);
                if better {
                    *best = v.clone();
                }
            }
            Acc::First(x) => {
                if x.is_none() {
                    *x = Some(v.clone())
                }
            }
            Acc::Last(x) => *x = v.clone(),
            Acc::Collect(items) => items.push(v.clone()),
            Acc::Distinct(set) => {
                if !v.is_null() {
                    set.insert(Key(v.clone()));
                }
            }
            Acc::Quality { kind, hits, n } => {
                let (counted, hit) = kind.judge(v);
                *n += counted as u64;
                *hits += (counted && hit) as u64;
            }
            Acc::Confusion { counts, .. } => {
                if let Some((predicted, actual)) = outcome(v) {
                    counts[match (predicted, actual) {
                        (true, true) => 0,
                        (true, false) => 1,
                        (false, true) => 2,
                        (false, false) => 3,
                    }] += 1;
                }
            }
            Acc::Loss { brier, sum, n } => {
                if let Some((p, y)) = scored(v) {
                    *sum += if *brier { (p - y as u8 as f64).powi(2) } else { log_loss(p, y) };
                    *n += 1;
                }
            }
            Acc::Auc(pairs) => pairs.extend(scored(v)),
            Acc::Custom(c) => c.add(v),
            Acc::Saved(_) => unreachable!("rehydrated before use"),
        }
    }

    pub fn result(&self) -> Value {
        match self {
            Acc::Count(n) => Value::Int(*n),
            Acc::Sum(s) => s.value(),
            Acc::Avg { n: 0, .. } => Value::Null,
            Acc::Avg { sum, n } => Value::Float(sum / *n as f64),
            Acc::Extreme { best, .. } => best.clone(),
            Acc::First(x) => x.clone().unwrap_or(Value::Null),
            Acc::Last(x) => x.clone(),
            Acc::Collect(items) => Value::List(items.clone().into()),
            Acc::Distinct(set) => Value::Int(set.len() as i64),
            Acc::Quality { n: 0, .. } => Value::Null,
            Acc::Quality { hits, n, .. } => Value::Float(*hits as f64 / *n as f64),
            Acc::Confusion { f1: true, counts: [tp, fp, fn_, _] } => {
                // 2PR / (P + R) = 2tp / (2tp + fp + fn); undefined with no positives at all.
                let d = 2 * tp + fp + fn_;
                if d == 0 { Value::Null } else { Value::Float(2.0 * *tp as f64 / d as f64) }
            }
            Acc::Confusion { f1: false, counts } => {
                let r: crate::record::Record = ["tp", "fp", "fn", "tn"].iter().zip(counts).map(|(k, c)| (*k, Value::Int(*c as i64))).collect();
                Value::Map(Arc::new(r))
            }
            Acc::Loss { n: 0, .. } => Value::Null,
            Acc::Loss { sum, n, .. } => Value::Float(sum / *n as f64),
            Acc::Auc(pairs) => auc(pairs).map_or(Value::Null, Value::Float),
            Acc::Custom(c) => c.result(),
            Acc::Saved(v) => v.clone(),
        }
    }

    /// Folds `other` (of the same function) into this one.
    pub fn merge(&mut self, other: Acc) {
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a += b,
            (Acc::Sum(a), Acc::Sum(b)) => a.add(&b.value()),
            (Acc::Avg { sum, n }, Acc::Avg { sum: s2, n: n2 }) => {
                *sum += s2;
                *n += n2;
            }
            (me @ Acc::Extreme { .. }, Acc::Extreme { best, .. }) => me.add(&best),
            (Acc::First(a), Acc::First(b)) => {
                if a.is_none() {
                    *a = b
                }
            }
            (Acc::Last(a), Acc::Last(b)) => {
                if !b.is_null() {
                    *a = b
                }
            }
            (Acc::Collect(a), Acc::Collect(b)) => a.extend(b),
            (Acc::Distinct(a), Acc::Distinct(b)) => a.extend(b),
            (Acc::Quality { hits, n, .. }, Acc::Quality { hits: h2, n: n2, .. }) => {
                *hits += h2;
                *n += n2;
            }
            (Acc::Confusion { counts: a, .. }, Acc::Confusion { counts: b, .. }) => a.iter_mut().zip(b).for_each(|(a, b)| *a += b),
            (Acc::Loss { sum, n, .. }, Acc::Loss { sum: s2, n: n2, .. }) => {
                *sum += s2;
                *n += n2;
            }
            (Acc::Auc(a), Acc::Auc(b)) => a.extend(b),
            (Acc::Custom(a), Acc::Custom(b)) => a.merge(&b.save()),
            (me, _) => debug_assert!(false, "merging accumulators of different functions: {me:?}"),
        }
    }
}

struct Builtin {
    make: fn() -> Acc,
    arity: std::ops::RangeInclusive<usize>,
    check: fn(&Value) -> Result<(), String>,
}

impl AggregateFunction for Builtin {
    fn arity(&self) -> std::ops::RangeInclusive<usize> {
        self.arity.clone()
    }
    fn check(&self, v: &Value) -> Result<(), String> {
        (self.check)(v)
    }
    fn create(&self) -> Acc {
        (self.make)()
    }
    /// The built-in checks go by a scalar's type alone, so one value stands for a typed column.
    fn accepts_all(&self, column: &Column) -> bool {
        match column {
            Column::Int(_) => (self.check)(&Value::Int(0)).is_ok(),
            Column::Float(_) => (self.check)(&Value::Float(0.0)).is_ok(),
            Column::Bool(_) => (self.check)(&Value::Bool(false)).is_ok(),
            Column::Any(_) => false,
        }
    }
}

fn any(_: &Value) -> Result<(), String> {
    Ok(())
}

fn orderable(v: &Value) -> Result<(), String> {
    match v {
        Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_) | Value::Null => Ok(()),
        other => Err(format!("cannot order a {}", other.type_name())),
    }
}

/// Aggregate functions by name.
#[derive(Clone)]
pub struct AggregateRegistry {
    functions: BTreeMap<String, Arc<dyn AggregateFunction>>,
}

impl Default for AggregateRegistry {
    fn default() -> Self {
        let mut r = AggregateRegistry { functions: BTreeMap::new() };
        let b = |make: fn() -> Acc, arity: std::ops::RangeInclusive<usize>, check: fn(&Value) -> Result<(), String>| Builtin { make, arity, check };
        r.register("count", b(|| Acc::Count(0), 0..=1, any));
        r.register("sum", b(|| Acc::Sum(SumAcc::Empty), 1..=1, numeric));
        r.register("avg", b(|| Acc::Avg { sum: 0.0, n: 0 }, 1..=1, numeric));
        r.register("min", b(|| Acc::Extreme { max: false, best: Value::Null }, 1..=1, orderable));
        r.register("max", b(|| Acc::Extreme { max: true, best: Value::Null }, 1..=1, orderable));
        r.register("first", b(|| Acc::First(None), 1..=1, any));
        r.register("last", b(|| Acc::Last(Value::Null), 1..=1, any));
        r.register("collect", b(|| Acc::Collect(Vec::new()), 1..=1, any));
        r.register("count_distinct", b(|| Acc::Distinct(HashSet::new()), 1..=1, any));
        r.register("accuracy", b(|| Acc::Quality { kind: Quality::Accuracy, hits: 0, n: 0 }, 2..=2, any));
        r.register("precision", b(|| Acc::Quality { kind: Quality::Precision, hits: 0, n: 0 }, 2..=3, any));
        r.register("recall", b(|| Acc::Quality { kind: Quality::Recall, hits: 0, n: 0 }, 2..=3, any));
        r.register("f1", b(|| Acc::Confusion { f1: true, counts: [0; 4] }, 2..=3, any));
        r.register("confusion", b(|| Acc::Confusion { f1: false, counts: [0; 4] }, 2..=3, any));
        r.register("log_loss", b(|| Acc::Loss { brier: false, sum: 0.0, n: 0 }, 2..=2, check_scored));
        r.register("brier", b(|| Acc::Loss { brier: true, sum: 0.0, n: 0 }, 2..=2, check_scored));
        r.register("auc", b(|| Acc::Auc(Vec::new()), 2..=2, check_scored));
        r
    }
}

/// The top-level comma-separated arguments of a call (commas inside brackets, parentheses and
/// string literals do not split).
fn split_arguments(inner: &str) -> Vec<&str> {
    if inner.trim().is_empty() {
        return Vec::new();
    }
    let (mut depth, mut quote, mut start, mut out) = (0i32, None::<char>, 0, Vec::new());
    let mut chars = inner.char_indices();
    while let Some((i, c)) = chars.next() {
        match (quote, c) {
            (Some(_), '\\') => {
                chars.next();
            }
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&inner[start..]);
    out
}

/// One aggregate of a pipeline: `total: sum(amount)`.
#[derive(Clone)]
pub struct AggregateCall {
    pub function: Arc<dyn AggregateFunction>,
    pub name: String,
    /// The argument, or `None` for `count()`.
    pub argument: Option<Expr>,
}

impl std::fmt::Debug for AggregateCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AggregateCall({}: {:?})", self.name, self.argument)
    }
}

impl AggregateCall {
    /// Turns an accumulator read back from sled into a live one.
    pub fn rehydrate(&self, acc: &mut Acc) {
        if let Acc::Saved(v) = acc {
            *acc = self.function.restore(v);
        }
    }

    /// The value this record contributes (`Int(1)` stands for a record in `count()`).
    #[inline]
    pub fn input(&self, r: &crate::record::Record) -> Result<Value, crate::expr::EvalError> {
        match &self.argument {
            None => Ok(Value::Int(1)),
            Some(e) => e.eval(r),
        }
    }
}

impl AggregateRegistry {
    pub fn register(&mut self, name: &str, f: impl AggregateFunction + 'static) {
        self.functions.insert(name.into(), Arc::new(f));
    }

    pub fn names(&self) -> Vec<&str> {
        self.functions.keys().map(String::as_str).collect()
    }

    /// Parses `fn(expression)`. The error's column is within `text`.
    pub fn parse(&self, name: &str, text: &str) -> Result<AggregateCall, CompileError> {
        self.parse_with(name, text, &crate::secrets::Keys::default())
    }

    /// Like [`parse`](Self::parse), with the pipeline's named secrets for the argument.
    pub fn parse_with(&self, name: &str, text: &str, keys: &crate::secrets::Keys) -> Result<AggregateCall, CompileError> {
        let at = |column: usize, message: String| CompileError { message, line: 1, column };
        let t = text.trim();
        let lead = text.len() - text.trim_start().len();
        let open = t.find('(').filter(|_| t.ends_with(')')).ok_or_else(|| {
            at(1, format!("`{t}` is not an aggregate call; write e.g. `count()` or `sum(amount)`"))
        })?;
        let fname = t[..open].trim();
        let function = self.functions.get(fname).ok_or_else(|| {
            at(lead + 1, format!("unknown aggregate function `{fname}`; available: {}", self.names().join(", ")))
        })?;
        let inner = &t[open + 1..t.len() - 1];
        let n = split_arguments(inner).len();
        // One argument is compiled as is; several as one list expression `[a, b, ...]`.
        let (source, offset) = if n > 1 { (format!("[{inner}]"), lead + open) } else { (inner.to_string(), lead + open + 1) };
        let argument = if n == 0 {
            None
        } else {
            Some(Expr::compile_with(&source, keys).map_err(|mut e| {
                if e.line == 1 {
                    e.column += offset;
                }
                e
            })?)
        };
        let arity = function.arity();
        if !arity.contains(&n) {
            let takes = if arity.start() == arity.end() { arity.start().to_string() } else { format!("{} to {}", arity.start(), arity.end()) };
            return Err(at(lead + 1, format!("`{fname}` takes {takes} argument(s), got {n}")));
        }
        Ok(AggregateCall { function: function.clone(), name: name.into(), argument })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(spec: &str, values: &[Value]) -> Value {
        let call = AggregateRegistry::default().parse("x", spec).unwrap();
        let mut acc = call.function.create();
        for v in values {
            call.function.check(v).unwrap();
            acc.add(v);
        }
        // Split in two and merged, through a sled round trip, the result is the same.
        let (a, b) = values.split_at(values.len() / 2);
        let mut left = call.function.create();
        a.iter().for_each(|v| left.add(v));
        let mut right = call.function.create();
        b.iter().for_each(|v| right.add(v));
        let mut right: Acc = serde_json::from_slice(&serde_json::to_vec(&right).unwrap()).unwrap();
        call.rehydrate(&mut right);
        left.merge(right);
        assert_eq!(left.result(), acc.result(), "{spec}");
        acc.result()
    }

    #[test]
    fn builtins() {
        let vs = [Value::Int(3), Value::Null, Value::Float(1.5), Value::Int(7)];
        assert_eq!(run("sum(v)", &vs), Value::Float(11.5));
        assert_eq!(run("sum(v)", &[Value::Int(2), Value::Int(3)]), Value::Int(5));
        assert_eq!(run("count(v)", &vs), Value::Int(3));
        assert_eq!(run("min(v)", &vs), Value::Float(1.5));
        assert_eq!(run("max(v)", &vs), Value::Int(7));
        assert_eq!(run("avg(v)", &vs), Value::Float(11.5 / 3.0));
        assert_eq!(run("first(v)", &vs), Value::Int(3));
        assert_eq!(run("last(v)", &vs), Value::Int(7));
        assert_eq!(run("collect(v)", &[Value::Int(1), Value::str("a")]), Value::List(vec![Value::Int(1), Value::str("a")].into()));
        assert_eq!(run("count_distinct(v)", &[Value::Int(1), Value::Int(2), Value::Int(1), Value::Float(1.0)]), Value::Int(3));
    }

    #[test]
    fn parse_errors() {
        let r = AggregateRegistry::default();
        assert!(r.parse("x", "median(v)").unwrap_err().message.contains("unknown aggregate function `median`"));
        assert!(r.parse("x", "sum()").unwrap_err().message.contains("takes 1 argument"));
        assert!(r.parse("x", "sum(a +)").is_err());
        assert!(r.parse("x", "amount").is_err());
        assert!(r.parse("x", "count()").unwrap().argument.is_none());
    }

    #[test]
    fn model_quality() {
        let pair = |p: i64, l: i64| Value::List(vec![Value::Int(p), Value::Int(l)].into());
        // predictions vs labels: (1,1) (0,1) (1,0) (2,2) (0,0)
        let vs = [pair(1, 1), pair(0, 1), pair(1, 0), pair(2, 2), pair(0, 0)];
        assert_eq!(run("accuracy(p, l)", &vs), Value::Float(3.0 / 5.0));
        assert_eq!(run("precision(p, l)", &vs), Value::Float(1.0 / 2.0));
        assert_eq!(run("recall(p, l)", &vs), Value::Float(1.0 / 2.0));
        assert_eq!(run("accuracy(p, l)", &[Value::List(vec![Value::Null, Value::Int(1)].into())]), Value::Null);
        let call = AggregateRegistry::default().parse("x", "recall(p, l, 'spam')").unwrap();
        let r: crate::record::Record = [("p", Value::str("spam")), ("l", Value::str("spam"))].into_iter().collect();
        let mut acc = call.function.create();
        acc.add(&call.input(&r).unwrap());
        assert_eq!(acc.result(), Value::Float(1.0));
    }

    #[test]
    fn probability_quality() {
        let pair = |p: f64, l: bool| Value::List(vec![Value::Float(p), Value::Bool(l)].into());
        let vs = [pair(0.9, true), pair(0.4, true), pair(0.4, false), pair(0.1, false), pair(0.8, false)];
        // Pairs (positive, negative) ranked right: (0.9: all 3), (0.4: above 0.1, tie with 0.4) = 3 + 1.5 of 6.
        assert_eq!(run("auc(p, l)", &vs), Value::Float(4.5 / 6.0));
        let Value::Float(ll) = run("log_loss(p, l)", &vs) else { panic!() };
        let want = -(0.9f64.ln() + 0.4f64.ln() + 0.6f64.ln() + 0.9f64.ln() + 0.2f64.ln()) / 5.0;
        assert!((ll - want).abs() < 1e-12, "{ll} {want}");
        let Value::Float(b) = run("brier(p, l)", &vs) else { panic!() };
        assert!((b - (0.01 + 0.36 + 0.16 + 0.01 + 0.64) / 5.0).abs() < 1e-12);
        assert_eq!(run("auc(p, l)", &[pair(0.3, true)]), Value::Null, "one class only");
        assert!(run("log_loss(p, l)", &[pair(1.0, false)]).as_f64().unwrap().is_finite());
        let call = AggregateRegistry::default().parse("x", "log_loss(p, l)").unwrap();
        assert!(call.function.check(&Value::List(vec![Value::Float(1.5), Value::Int(1)].into())).unwrap_err().contains("probability"));
        assert!(call.function.check(&Value::List(vec![Value::Float(0.5), Value::Int(2)].into())).unwrap_err().contains("label"));
    }

    #[test]
    fn f1_and_confusion() {
        let pair = |p: i64, l: i64| Value::List(vec![Value::Int(p), Value::Int(l)].into());
        let vs = [pair(1, 1), pair(1, 1), pair(1, 0), pair(0, 1), pair(0, 0), pair(0, 0)];
        // precision 2/3, recall 2/3 → f1 2/3
        assert_eq!(run("f1(p, l)", &vs), Value::Float(4.0 / 6.0));
        let Value::Map(m) = run("confusion(p, l)", &vs) else { panic!() };
        assert_eq!(m.to_json(), r#"{"tp":2,"fp":1,"fn":1,"tn":2}"#);
    }

    #[test]
    fn arguments_split_at_top_level_commas() {
        assert_eq!(split_arguments(" a, f(b, c), [1, 2], 'x,y' "), vec![" a", " f(b, c)", " [1, 2]", " 'x,y' "]);
        assert!(split_arguments("  ").is_empty());
        let r = AggregateRegistry::default();
        assert!(r.parse("x", "accuracy(p)").unwrap_err().message.contains("`accuracy` takes 2 argument(s), got 1"));
        assert!(r.parse("x", "precision(p, l, 1, 2)").unwrap_err().message.contains("takes 2 to 3 argument(s), got 4"));
        assert_eq!(r.parse("x", "accuracy(p, l +)").unwrap_err().column, 16);
    }

    #[test]
    fn sum_rejects_strings() {
        let call = AggregateRegistry::default().parse("x", "sum(v)").unwrap();
        assert!(call.function.check(&Value::str("a")).is_err());
    }
}
