//! Evaluating a compiled expression over a whole [`Columns`] batch at once.
//!
//! [`eval`] walks the tree once per batch, not once per record: a field is its column, a constant
//! stays a scalar, and arithmetic, comparisons, casts and boolean operators on typed columns are
//! loops over slices. It returns `None` whenever the batch needs anything the kernels do not do
//! exactly as the row evaluator would — an `Any` column, a function without a kernel, an integer
//! overflow, a division by zero, a double that would not be finite — and the caller then evaluates
//! the batch record by record. So the kernels only ever compute what the row evaluator computes
//! (the property test in `tests.rs` checks it), and every error message comes from the row
//! evaluator.

use std::borrow::Cow;

use super::eval::{Arith, Cmp, Func, Node};
use crate::columns::{Column, Columns};
use crate::value::Value;

/// An intermediate result: a column, or one value for every row.
pub(super) enum V<'a> {
    Col(Cow<'a, Column>),
    Scalar(Value),
}

/// One operand of a binary kernel.
#[derive(Clone, Copy)]
enum Arg<'a, T> {
    Slice(&'a [T]),
    Scalar(T),
}

fn zip_map<A: Copy, B: Copy, R: Clone>(n: usize, a: Arg<A>, b: Arg<B>, mut f: impl FnMut(A, B) -> R) -> Vec<R> {
    match (a, b) {
        (Arg::Slice(x), Arg::Slice(y)) => x.iter().zip(y).map(|(&x, &y)| f(x, y)).collect(),
        (Arg::Slice(x), Arg::Scalar(y)) => x.iter().map(|&x| f(x, y)).collect(),
        (Arg::Scalar(x), Arg::Slice(y)) => y.iter().map(|&y| f(x, y)).collect(),
        (Arg::Scalar(x), Arg::Scalar(y)) => vec![f(x, y); n],
    }
}

/// Division by an invariant positive 32-bit divisor with two multiplications (Lemire, Kaser and
/// Kurz, "Faster remainder by direct computation", 2019): exact for every 32-bit dividend.
#[derive(Clone, Copy)]
struct Divisor32 {
    d: u64,
    m: u64,
}

impl Divisor32 {
    fn new(d: i64) -> Option<Divisor32> {
        (1..=u32::MAX as i64).contains(&d).then(|| Divisor32 { d: d as u64, m: (u64::MAX / d as u64).wrapping_add(1) })
    }

    #[inline]
    fn div(self, x: u32) -> u64 {
        if self.d == 1 {
            return x as u64;
        }
        ((self.m as u128 * x as u128) >> 64) as u64
    }

    #[inline]
    fn rem(self, x: u32) -> u64 {
        let low = self.m.wrapping_mul(x as u64);
        ((low as u128 * self.d as u128) >> 64) as u64
    }
}

/// A numeric operand: integers stay integers until a double meets them.
enum Num<'a> {
    Int(Arg<'a, i64>),
    Float(Cow<'a, [f64]>),
    FloatScalar(f64),
}

fn num<'a>(v: &'a V<'a>) -> Option<Num<'a>> {
    Some(match v {
        V::Col(c) => match c.as_ref() {
            Column::Int(x) => Num::Int(Arg::Slice(x)),
            Column::Float(x) => Num::Float(Cow::Borrowed(x)),
            _ => return None,
        },
        V::Scalar(Value::Int(x)) => Num::Int(Arg::Scalar(*x)),
        V::Scalar(Value::Float(x)) => Num::FloatScalar(*x),
        V::Scalar(_) => return None,
    })
}

impl<'a> Num<'a> {
    fn floats(&'a self) -> Arg<'a, f64> {
        match self {
            Num::Float(x) => Arg::Slice(x),
            Num::FloatScalar(x) => Arg::Scalar(*x),
            Num::Int(_) => unreachable!("converted by to_float"),
        }
    }

    fn to_float(self) -> Num<'a> {
        match self {
            Num::Int(Arg::Slice(x)) => Num::Float(Cow::Owned(x.iter().map(|&i| i as f64).collect())),
            Num::Int(Arg::Scalar(x)) => Num::FloatScalar(x as f64),
            f => f,
        }
    }
}

/// Evaluates `node` over `c`; `None`: evaluate record by record instead (see the module docs).
pub(super) fn eval<'a>(node: &Node, c: &'a Columns) -> Option<V<'a>> {
    let n = c.len();
    Some(match node {
        Node::Const(v) => V::Scalar(v.clone()),
        Node::Field(s) => match c.column(*s) {
            Some(col) => V::Col(Cow::Borrowed(col)),
            None => V::Scalar(Value::Null),
        },
        Node::ArithK(k, a, y) => arith(*k, n, eval(a, c)?, V::Scalar(y.clone()))?,
        Node::Arith(k, a, b) => arith(*k, n, eval(a, c)?, eval(b, c)?)?,
        Node::CmpK(k, a, y) => compare(*k, n, eval(a, c)?, V::Scalar(y.clone()))?,
        Node::Cmp(k, a, b) => compare(*k, n, eval(a, c)?, eval(b, c)?)?,
        Node::Call1(f, a) => call1(*f, eval(a, c)?)?,
        Node::And(a, b) => logic(n, eval(a, c)?, eval(b, c)?, |x, y| x && y)?,
        Node::Or(a, b) => logic(n, eval(a, c)?, eval(b, c)?, |x, y| x || y)?,
        Node::Not(a) => match eval(a, c)? {
            V::Col(col) => match col.as_ref() {
                Column::Bool(x) => V::Col(Cow::Owned(Column::Bool(x.iter().map(|b| !b).collect()))),
                _ => return None,
            },
            V::Scalar(Value::Bool(b)) => V::Scalar(Value::Bool(!b)),
            V::Scalar(_) => return None,
        },
        Node::Neg(a) => match eval(a, c)? {
            V::Col(col) => match col.as_ref() {
                Column::Float(x) => V::Col(Cow::Owned(Column::Float(x.iter().map(|f| -f).collect()))),
                Column::Int(x) => V::Col(Cow::Owned(Column::Int(x.iter().map(|i| i.checked_neg()).collect::<Option<_>>()?))),
                _ => return None,
            },
            V::Scalar(_) => return None,
        },
        _ => return None,
    })
}

fn arith<'a>(k: Arith, n: usize, a: V<'_>, b: V<'_>) -> Option<V<'a>> {
    if let (V::Scalar(x), V::Scalar(y)) = (&a, &b) {
        return super::eval::arith_values(k, x.clone(), y.clone()).ok().map(V::Scalar);
    }
    let (x, y) = (num(&a)?, num(&b)?);
    if let (Num::Int(x), Num::Int(y)) = (&x, &y) {
        let mut bad = false;
        let out = match (k, y) {
            // Overflow flags or-ed together, without a branch per element.
            (Arith::Add, _) => zip_map(n, *x, *y, |x, y| { let (r, o) = x.overflowing_add(y); bad |= o; r }),
            (Arith::Sub, _) => zip_map(n, *x, *y, |x, y| { let (r, o) = x.overflowing_sub(y); bad |= o; r }),
            (Arith::Mul, _) => zip_map(n, *x, *y, |x, y| { let (r, o) = x.overflowing_mul(y); bad |= o; r }),
            // A constant divisor other than 0 and -1 can neither fail nor overflow; a positive
            // 32-bit one over non-negative 32-bit values takes no division instruction at all.
            (Arith::Div | Arith::Rem, Arg::Scalar(d)) if *d != 0 && *d != -1 => match (x, Divisor32::new(*d)) {
                (Arg::Slice(xs), Some(dv)) if xs.iter().all(|&v| (0..=u32::MAX as i64).contains(&v)) => {
                    if k == Arith::Div { xs.iter().map(|&v| dv.div(v as u32) as i64).collect() } else { xs.iter().map(|&v| dv.rem(v as u32) as i64).collect() }
                }
                _ if k == Arith::Div => zip_map(n, *x, *y, |x, y| x / y),
                _ => zip_map(n, *x, *y, |x, y| x % y),
            },
            // checked_div and checked_rem are `None` for a zero divisor too.
            (Arith::Div, _) => zip_map(n, *x, *y, |x, y| x.checked_div(y).unwrap_or_else(|| { bad = true; 0 })),
            (Arith::Rem, _) => zip_map(n, *x, *y, |x, y| x.checked_rem(y).unwrap_or_else(|| { bad = true; 0 })),
        };
        return (!bad).then(|| V::Col(Cow::Owned(Column::Int(out))));
    }
    let (x, y) = (x.to_float(), y.to_float());
    let (x, y) = (x.floats(), y.floats());
    let out = match k {
        Arith::Add => zip_map(n, x, y, |x, y| x + y),
        Arith::Sub => zip_map(n, x, y, |x, y| x - y),
        Arith::Mul => zip_map(n, x, y, |x, y| x * y),
        Arith::Div => zip_map(n, x, y, |x, y| x / y),
        Arith::Rem => zip_map(n, x, y, |x, y| x % y),
    };
    // The row evaluator refuses results that are not finite.
    out.iter().all(|f| f.is_finite()).then(|| V::Col(Cow::Owned(Column::Float(out))))
}

fn compare_args<T: PartialOrd + Copy>(k: Cmp, n: usize, x: Arg<T>, y: Arg<T>) -> Vec<bool> {
    // Native operators agree with the row evaluator's `cmp_ord`, NaN included (never present:
    // doubles are kept finite).
    match k {
        Cmp::Eq => zip_map(n, x, y, |x, y| x == y),
        Cmp::Ne => zip_map(n, x, y, |x, y| x != y),
        Cmp::Lt => zip_map(n, x, y, |x, y| x < y),
        Cmp::Le => zip_map(n, x, y, |x, y| x <= y),
        Cmp::Gt => zip_map(n, x, y, |x, y| x > y),
        Cmp::Ge => zip_map(n, x, y, |x, y| x >= y),
    }
}

/// A boolean operand as `n` bools (the column itself, not a copy, when it is one).
fn bools<'v>(v: &'v V<'_>, n: usize) -> Option<Cow<'v, [bool]>> {
    match v {
        V::Col(c) => match c.as_ref() {
            Column::Bool(x) => Some(Cow::Borrowed(x)),
            _ => None,
        },
        V::Scalar(Value::Bool(b)) => Some(Cow::Owned(vec![*b; n])),
        V::Scalar(_) => None,
    }
}

fn compare<'a>(k: Cmp, n: usize, a: V<'_>, b: V<'_>) -> Option<V<'a>> {
    if let (V::Scalar(_), V::Scalar(_)) = (&a, &b) {
        return None;
    }
    if let (Some(x), Some(y)) = (bools(&a, n), bools(&b, n)) {
        return Some(V::Col(Cow::Owned(Column::Bool(compare_args(k, n, Arg::Slice(&x), Arg::Slice(&y))))));
    }
    let (x, y) = (num(&a)?, num(&b)?);
    let out = match (x, y) {
        (Num::Int(x), Num::Int(y)) => compare_args(k, n, x, y),
        (x, y) => {
            let (x, y) = (x.to_float(), y.to_float());
            compare_args(k, n, x.floats(), y.floats())
        }
    };
    Some(V::Col(Cow::Owned(Column::Bool(out))))
}

fn call1<'a>(f: Func, a: V<'a>) -> Option<V<'a>> {
    let col = match a {
        V::Scalar(v) => return super::eval::call1_value(f, v).ok().map(V::Scalar),
        V::Col(c) => c,
    };
    Some(V::Col(match (f, col.as_ref()) {
        (Func::ToDouble, Column::Int(x)) => Cow::Owned(Column::Float(x.iter().map(|&i| i as f64).collect())),
        (Func::ToDouble, Column::Float(_)) | (Func::ToInt, Column::Int(_)) | (Func::ToBool, Column::Bool(_)) => col,
        (Func::ToInt, Column::Float(x)) => {
            if !x.iter().all(|f| f.abs() < 9.2e18) {
                return None;
            }
            Cow::Owned(Column::Int(x.iter().map(|f| f.trunc() as i64).collect()))
        }
        (Func::ToInt, Column::Bool(x)) => Cow::Owned(Column::Int(x.iter().map(|&b| b as i64).collect())),
        (Func::Abs, Column::Float(x)) => Cow::Owned(Column::Float(x.iter().map(|f| f.abs()).collect())),
        (Func::Abs, Column::Int(x)) => Cow::Owned(Column::Int(x.iter().map(|i| i.checked_abs()).collect::<Option<_>>()?)),
        (Func::Floor | Func::Ceil | Func::Round, Column::Int(x)) => Cow::Owned(Column::Float(x.iter().map(|&i| i as f64).collect())),
        (Func::Floor, Column::Float(x)) => Cow::Owned(Column::Float(x.iter().map(|f| f.floor()).collect())),
        (Func::Ceil, Column::Float(x)) => Cow::Owned(Column::Float(x.iter().map(|f| f.ceil()).collect())),
        (Func::Round, Column::Float(x)) => Cow::Owned(Column::Float(x.iter().map(|f| f.round()).collect())),
        _ => return None,
    }))
}

fn logic<'a>(n: usize, a: V<'_>, b: V<'_>, f: impl Fn(bool, bool) -> bool) -> Option<V<'a>> {
    let (x, y) = (bools(&a, n)?, bools(&b, n)?);
    Some(V::Col(Cow::Owned(Column::Bool(x.iter().zip(y.iter()).map(|(&x, &y)| f(x, y)).collect()))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn division_by_an_invariant_divisor_is_exact() {
        let mut x: u64 = 7;
        for d in [1i64, 2, 3, 7, 10, 11, 1000, 10_000, 65_537, 1 << 31, u32::MAX as i64] {
            let dv = Divisor32::new(d).unwrap();
            let random = (0..2000).map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                (x >> 32) as u32
            });
            for v in [0u32, 1, 2, 9, 10, 11, u32::MAX, u32::MAX - 1, 1 << 31].into_iter().chain(random) {
                assert_eq!((dv.div(v), dv.rem(v)), (v as u64 / d as u64, v as u64 % d as u64), "{v} / {d}");
            }
        }
        assert!(Divisor32::new(0).is_none() && Divisor32::new(-3).is_none() && Divisor32::new(1 << 32).is_none());
    }
}
