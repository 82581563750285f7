//! Aggregate functions: `count()`, `sum(x)`, `min(x)`, `max(x)`, `avg(x)`, `first(x)`,
//! `last(x)`, written in pipelines as `name: fn(expression)`.
//!
//! The running `aggregate` transform uses them now; windows build on the same trait, and a user
//! adds their own by implementing [`AggregateFunction`] and registering it.
//! Nulls are skipped, as in SQL (`count()` counts records, `count(x)` non-null values).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::expr::{CompileError, Expr};
use crate::value::Value;

/// The running state of one aggregate for one key.
pub trait Accumulator: Send {
    /// Adds a value (never called with a value rejected by [`AggregateFunction::check`]).
    fn add(&mut self, value: &Value);
    fn result(&self) -> Value;
}

/// A kind of aggregate.
pub trait AggregateFunction: Send + Sync {
    /// Number of arguments: 0 (`count()`) or 1.
    fn arity(&self) -> std::ops::RangeInclusive<usize>;
    /// Rejects a value this aggregate cannot take (the record goes to the dead-letter output,
    /// and no aggregate of it is updated).
    fn check(&self, _value: &Value) -> Result<(), String> {
        Ok(())
    }
    fn create(&self) -> Box<dyn Accumulator>;
}

fn numeric(v: &Value) -> Result<(), String> {
    match v {
        Value::Int(_) | Value::Float(_) | Value::Null => Ok(()),
        other => Err(format!("expected a number, got {} ({})", other, other.type_name())),
    }
}

struct Count;
#[derive(Default)]
struct CountAcc(i64);
impl Accumulator for CountAcc {
    fn add(&mut self, v: &Value) {
        if !v.is_null() {
            self.0 += 1
        }
    }
    fn result(&self) -> Value {
        Value::Int(self.0)
    }
}
impl AggregateFunction for Count {
    fn arity(&self) -> std::ops::RangeInclusive<usize> {
        0..=1
    }
    fn create(&self) -> Box<dyn Accumulator> {
        Box::<CountAcc>::default()
    }
}

struct Sum;
#[derive(Default)]
enum SumAcc {
    #[default]
    Empty,
    Int(i64),
    Float(f64),
}
impl Accumulator for SumAcc {
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
    fn result(&self) -> Value {
        match self {
            SumAcc::Empty => Value::Int(0),
            SumAcc::Int(i) => Value::Int(*i),
            SumAcc::Float(f) => Value::Float(*f),
        }
    }
}
impl AggregateFunction for Sum {
    fn arity(&self) -> std::ops::RangeInclusive<usize> {
        1..=1
    }
    fn check(&self, v: &Value) -> Result<(), String> {
        numeric(v)
    }
    fn create(&self) -> Box<dyn Accumulator> {
        Box::<SumAcc>::default()
    }
}

struct Avg;
#[derive(Default)]
struct AvgAcc {
    sum: f64,
    n: u64,
}
impl Accumulator for AvgAcc {
    fn add(&mut self, v: &Value) {
        if let Some(x) = v.as_f64() {
            self.sum += x;
            self.n += 1;
        }
    }
    fn result(&self) -> Value {
        if self.n == 0 {
            Value::Null
        } else {
            Value::Float(self.sum / self.n as f64)
        }
    }
}
impl AggregateFunction for Avg {
    fn arity(&self) -> std::ops::RangeInclusive<usize> {
        1..=1
    }
    fn check(&self, v: &Value) -> Result<(), String> {
        numeric(v)
    }
    fn create(&self) -> Box<dyn Accumulator> {
        Box::<AvgAcc>::default()
    }
}

struct Extreme {
    max: bool,
}
struct ExtremeAcc {
    max: bool,
    best: Value,
}
impl Accumulator for ExtremeAcc {
    fn add(&mut self, v: &Value) {
        if v.is_null() {
            return;
        }
        let better = match crate::expr::order(v, &self.best) {
            _ if self.best.is_null() => true,
            Some(o) => (o == std::cmp::Ordering::Greater) == self.max && o != std::cmp::Ordering::Equal,
            None => false,
        };
        if better {
            self.best = v.clone();
        }
    }
    fn result(&self) -> Value {
        self.best.clone()
    }
}
impl AggregateFunction for Extreme {
    fn arity(&self) -> std::ops::RangeInclusive<usize> {
        1..=1
    }
    fn check(&self, v: &Value) -> Result<(), String> {
        match v {
            Value::Int(_) | Value::Float(_) | Value::Str(_) | Value::Bool(_) | Value::Null => Ok(()),
            other => Err(format!("cannot order a {}", other.type_name())),
        }
    }
    fn create(&self) -> Box<dyn Accumulator> {
        Box::new(ExtremeAcc { max: self.max, best: Value::Null })
    }
}

struct FirstLast {
    last: bool,
}
struct FirstLastAcc {
    last: bool,
    seen: bool,
    value: Value,
}
impl Accumulator for FirstLastAcc {
    fn add(&mut self, v: &Value) {
        if self.last || !self.seen {
            self.value = v.clone();
            self.seen = true;
        }
    }
    fn result(&self) -> Value {
        self.value.clone()
    }
}
impl AggregateFunction for FirstLast {
    fn arity(&self) -> std::ops::RangeInclusive<usize> {
        1..=1
    }
    fn create(&self) -> Box<dyn Accumulator> {
        Box::new(FirstLastAcc { last: self.last, seen: false, value: Value::Null })
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
        r.register("count", Count);
        r.register("sum", Sum);
        r.register("avg", Avg);
        r.register("min", Extreme { max: false });
        r.register("max", Extreme { max: true });
        r.register("first", FirstLast { last: false });
        r.register("last", FirstLast { last: true });
        r
    }
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
        let argument = if inner.trim().is_empty() {
            None
        } else {
            Some(Expr::compile(inner).map_err(|mut e| {
                if e.line == 1 {
                    e.column += lead + open + 1;
                }
                e
            })?)
        };
        let n = argument.is_some() as usize;
        if !function.arity().contains(&n) {
            return Err(at(lead + 1, format!("`{fname}` takes {} argument(s), got {n}", if *function.arity().start() == 1 { "1" } else { "0 or 1" })));
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
    fn sum_rejects_strings() {
        let call = AggregateRegistry::default().parse("x", "sum(v)").unwrap();
        assert!(call.function.check(&Value::str("a")).is_err());
    }
}
