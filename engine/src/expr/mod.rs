//! The expression language: [CEL](https://cel.dev) syntax, parsed by the `cel` crate and compiled
//! once into a tree that evaluates directly against a [`Record`].
//!
//! Why not the `cel` crate's interpreter: it resolves every variable through a name-keyed context
//! that must be rebuilt per record; here field names are resolved to [`Sym`]s at compile time, so
//! evaluating `amount > 100.0` is one field scan and one comparison.
//!
//! Semantics follow CEL with stream-friendly differences, documented in the README:
//! - a field that is absent evaluates to `null` (CEL: an error); `has(a.b)` tests presence;
//! - `int` and `double` mix in arithmetic (`amount * 0.92` works for integer amounts), giving
//!   `double`; `int` arithmetic is checked (overflow and division by zero are errors);
//! - `coalesce(a, b, ...)` returns its first non-null argument;
//! - errors (a type mismatch, `null` in arithmetic) are per record: the record goes to the
//!   dead-letter output with the message.

mod compile;
pub use eval::order;
mod eval;
mod vector;

use std::fmt;
use std::sync::Arc;

use std::borrow::Cow;

use crate::columns::{Column, Columns};
use crate::record::Record;
use crate::value::{Sym, Value};

pub use compile::CompileError;

/// A compiled expression. Cheap to clone (shared).
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    node: Arc<eval::Node>,
    /// The top-level fields the expression reads (what a record built for it needs).
    reads: Arc<[Sym]>,
}

/// The result of [`Expr::eval_columns`]: one value per record, and the records it failed on.
pub struct Evaluated<'a> {
    /// The values; a record that failed has `null` here.
    pub column: Cow<'a, Column>,
    /// (row, error) for the records it failed on, in row order.
    pub errors: Vec<(usize, EvalError)>,
}

/// An expression failed on one record.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl Expr {
    /// Parses and compiles `source`.
    pub fn compile(source: &str) -> Result<Expr, CompileError> {
        Self::compile_with(source, &crate::secrets::Keys::default())
    }

    /// Like [`compile`](Self::compile), with the pipeline's named secrets for
    /// `hmac_sha256(x, "name")`, `encrypt` and `decrypt` (the key is looked up here, once).
    pub fn compile_with(source: &str, keys: &crate::secrets::Keys) -> Result<Expr, CompileError> {
        let node = compile::compile(source, keys)?;
        let mut reads = Vec::new();
        node.fields(&mut reads);
        reads.sort();
        reads.dedup();
        Ok(Expr { source: source.into(), node: Arc::new(node), reads: reads.into() })
    }

    /// The text this expression was compiled from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates against `record`.
    #[inline]
    pub fn eval(&self, record: &Record) -> Result<Value, EvalError> {
        self.node.eval(record)
    }

    /// Evaluates a condition: `true` or `false`, anything else is an error.
    #[inline]
    pub fn eval_bool(&self, record: &Record) -> Result<bool, EvalError> {
        match self.node.eval(record)? {
            Value::Bool(b) => Ok(b),
            other => Err(self.not_a_bool(&other)),
        }
    }

    /// The error of a condition that gave `v`, which is not a bool.
    pub fn not_a_bool(&self, v: &Value) -> EvalError {
        EvalError(format!("condition `{}` gave {} ({}), not a bool", self.source, v, v.type_name()))
    }

    /// Evaluates against every record of `columns` at once: column kernels where the
    /// expression and the column types allow it, record by record otherwise. The values and
    /// errors are exactly what [`eval`](Self::eval) gives for each record.
    pub fn eval_columns<'a>(&self, columns: &'a Columns) -> Evaluated<'a> {
        match vector::eval(&self.node, columns) {
            Some(vector::V::Col(column)) => Evaluated { column, errors: Vec::new() },
            Some(vector::V::Scalar(v)) => Evaluated { column: Cow::Owned(Column::repeat(&v, columns.len())), errors: Vec::new() },
            None => self.eval_rows(columns),
        }
    }

    /// [`eval_columns`](Self::eval_columns) one record at a time.
    #[inline(never)]
    fn eval_rows<'a>(&self, columns: &'a Columns) -> Evaluated<'a> {
        let mut values = Vec::with_capacity(columns.len());
        let mut errors = Vec::new();
        let mut scratch = Record::with_capacity(self.reads.len());
        let read: Vec<(Sym, &Column)> = self.reads.iter().filter_map(|&s| columns.column(s).map(|c| (s, c))).collect();
        for i in 0..columns.len() {
            for (s, c) in &read {
                scratch.set(*s, c.get(i));
            }
            match self.node.eval(&scratch) {
                Ok(v) => values.push(v),
                Err(e) => {
                    values.push(Value::Null);
                    errors.push((i, e));
                }
            }
        }
        Evaluated { column: Cow::Owned(Column::from_values(values)), errors }
    }

    /// Why this expression can never be a condition: it gives something other than a bool
    /// whatever the record (`amount + 1`, `'yes'`, `size(x)`). `None` when it may give a bool.
    pub fn not_a_condition(&self) -> Option<String> {
        self.node.never_bool().map(|t| format!("`{}` gives {t}, not a bool", self.source))
    }

    /// The field name if this expression is a plain field reference (`customer`).
    pub fn as_field(&self) -> Option<crate::value::Sym> {
        match &*self.node {
            eval::Node::Field(s) => Some(*s),
            _ => None,
        }
    }

    /// `(a, b)` if this expression is a field of a field (`left.amount`).
    pub fn as_field_of_field(&self) -> Option<(crate::value::Sym, crate::value::Sym)> {
        match &*self.node {
            eval::Node::Select(base, field) => match &**base {
                eval::Node::Field(a) => Some((*a, *field)),
                _ => None,
            },
            _ => None,
        }
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

#[cfg(test)]
mod tests;
