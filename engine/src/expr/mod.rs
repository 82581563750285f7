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

use std::fmt;
use std::sync::Arc;

use crate::record::Record;
use crate::value::Value;

pub use compile::CompileError;

/// A compiled expression. Cheap to clone (shared).
#[derive(Clone)]
pub struct Expr {
    source: Arc<str>,
    node: Arc<eval::Node>,
}

/// An expression failed on one record.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

impl Expr {
    /// Parses and compiles `source`.
    pub fn compile(source: &str) -> Result<Expr, CompileError> {
        let node = compile::compile(source)?;
        Ok(Expr { source: source.into(), node: Arc::new(node) })
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
            other => Err(EvalError(format!(
                "condition `{}` gave {} ({}), not a bool",
                self.source,
                other,
                other.type_name()
            ))),
        }
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
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Expr({:?})", self.source)
    }
}

#[cfg(test)]
mod tests;
