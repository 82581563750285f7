//! The compiled expression tree and its evaluator.

use std::cmp::Ordering;
use std::sync::Arc;

use super::EvalError;
use crate::record::Record;
use crate::value::{Sym, Value};

#[derive(Debug)]
pub(crate) enum Node {
    Const(Value),
    Field(Sym),
    Select(Box<Node>, Sym),
    Has(Box<Node>, Sym),
    List(Vec<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    Index(Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
    Coalesce(Vec<Node>),
    Call(Func, Vec<Node>),
    // Specialised forms made by `fold`: a constant right operand, a one-argument call.
    ArithK(Arith, Box<Node>, Value),
    CmpK(Cmp, Box<Node>, Value),
    Call1(Func, Box<Node>),
    /// A function with one of the pipeline's secrets (resolved when compiled).
    Keyed(Keyed, Box<Node>, Arc<crate::secrets::Secret>),
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) enum Keyed {
    HmacSha256,
    Encrypt,
    Decrypt,
}

#[derive(Copy, Clone, Debug, PartialEq)]
pub(crate) enum Arith {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Copy, Clone, Debug)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Built-in functions. Each may be called as `f(x, ...)` or, for the first argument, as a method
/// `x.f(...)`.
#[derive(Copy, Clone, Debug)]
pub(crate) enum Func {
    Size,
    Contains,
    StartsWith,
    EndsWith,
    Lower,
    Upper,
    Trim,
    Substring,
    Replace,
    Split,
    IndexOf,
    ToInt,
    ToDouble,
    ToString,
    ToBool,
    Abs,
    Floor,
    Ceil,
    Round,
    Min,
    Max,
    Sha256,
    Mask,
}

const ANY: usize = usize::MAX;

impl Node {
    /// Adds the top-level fields this expression reads to `out`.
    pub(crate) fn fields(&self, out: &mut Vec<Sym>) {
        match self {
            Node::Const(_) => {}
            Node::Field(s) => out.push(*s),
            Node::Select(a, _) | Node::Has(a, _) | Node::Not(a) | Node::Neg(a) | Node::ArithK(_, a, _) | Node::CmpK(_, a, _) | Node::Call1(_, a) | Node::Keyed(_, a, _) => a.fields(out),
            Node::And(a, b) | Node::Or(a, b) | Node::Arith(_, a, b) | Node::Cmp(_, a, b) | Node::Index(a, b) | Node::In(a, b) => {
                a.fields(out);
                b.fields(out)
            }
            Node::Cond(a, b, c) => {
                a.fields(out);
                b.fields(out);
                c.fields(out)
            }
            Node::List(items) | Node::Coalesce(items) | Node::Call(_, items) => items.iter().for_each(|n| n.fields(out)),
        }
    }

    /// What the expression gives, whatever the record, when that is known to be something other
    /// than a bool (for checking conditions before a run); `None` when it may be a bool.
    pub(crate) fn never_bool(&self) -> Option<&'static str> {
        use Func::*;
        match self {
            Node::Const(Value::Bool(_)) | Node::Const(Value::Null) => None,
            Node::Const(Value::Int(_)) => Some("an int"),
            Node::Const(Value::Float(_)) => Some("a double"),
            Node::Const(Value::Str(_)) => Some("a string"),
            Node::Const(_) => Some("a constant"),
            Node::Arith(..) | Node::ArithK(..) | Node::Neg(_) => Some("a number, string or list (arithmetic)"),
            Node::List(_) => Some("a list"),
            Node::Keyed(..) => Some("a string"),
            Node::Cond(_, a, b) => a.never_bool().and(b.never_bool()),
            Node::Call(f, _) | Node::Call1(f, _) => match f {
                Size | IndexOf | ToInt => Some("an int"),
                ToDouble | Floor | Ceil | Round => Some("a double"),
                Lower | Upper | Trim | Substring | Replace | ToString | Sha256 | Mask => Some("a string"),
                Split => Some("a list"),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Func {
    /// (name, function, accepted argument counts including the receiver)
    pub(crate) const NAMES: &'static [(&'static str, Func, (usize, usize))] = &[
        ("size", Func::Size, (1, 1)),
        ("contains", Func::Contains, (2, 2)),
        ("startsWith", Func::StartsWith, (2, 2)),
        ("endsWith", Func::EndsWith, (2, 2)),
        ("lowerAscii", Func::Lower, (1, 1)),
        ("upperAscii", Func::Upper, (1, 1)),
        ("trim", Func::Trim, (1, 1)),
        ("substring", Func::Substring, (2, 3)),
        ("replace", Func::Replace, (3, 3)),
        ("split", Func::Split, (2, 2)),
        ("indexOf", Func::IndexOf, (2, 2)),
        ("int", Func::ToInt, (1, 1)),
        ("uint", Func::ToInt, (1, 1)),
        ("double", Func::ToDouble, (1, 1)),
        ("string", Func::ToString, (1, 1)),
        ("bool", Func::ToBool, (1, 1)),
        ("abs", Func::Abs, (1, 1)),
        ("floor", Func::Floor, (1, 1)),
        ("ceil", Func::Ceil, (1, 1)),
        ("round", Func::Round, (1, 1)),
        ("min", Func::Min, (1, ANY)),
        ("max", Func::Max, (1, ANY)),
        ("sha256", Func::Sha256, (1, 1)),
        ("mask", Func::Mask, (2, 2)),
    ];

    pub(crate) fn lookup(name: &str) -> Option<(Func, std::ops::RangeInclusive<usize>)> {
        let name = name.strip_prefix("math.").unwrap_or(name);
        Self::NAMES.iter().find(|(n, _, _)| *n == name).map(|(_, f, (a, b))| (*f, *a..=*b))
    }
}

fn err<T>(msg: String) -> Result<T, EvalError> {
    Err(EvalError(msg))
}

impl Node {
    /// Folds constant sub-trees (`1000 * 60`, `double(5)`) so they are computed once.
    pub(crate) fn fold(self) -> Node {
        let empty = Record::new();
        let constant = |n: &Node| matches!(n, Node::Const(_));
        let n = match self {
            Node::Not(a) => Node::Not(Box::new(a.fold())),
            Node::Neg(a) => Node::Neg(Box::new(a.fold())),
            Node::Arith(k, a, b) => Node::Arith(k, Box::new(a.fold()), Box::new(b.fold())),
            Node::Cmp(k, a, b) => Node::Cmp(k, Box::new(a.fold()), Box::new(b.fold())),
            Node::Call(f, args) => Node::Call(f, args.into_iter().map(Node::fold).collect()),
            Node::List(items) => Node::List(items.into_iter().map(Node::fold).collect()),
            other => return other,
        };
        let all_const = match &n {
            Node::Not(a) | Node::Neg(a) => constant(a),
            Node::Arith(_, a, b) | Node::Cmp(_, a, b) => constant(a) && constant(b),
            Node::Call(_, args) | Node::List(args) => args.iter().all(constant),
            _ => false,
        };
        if all_const {
            if let Ok(v) = n.eval(&empty) {
                return Node::Const(v);
            }
        }
        match n {
            Node::Arith(k, a, b) => match *b {
                Node::Const(v) => Node::ArithK(k, a, v),
                b => Node::Arith(k, a, Box::new(b)),
            },
            Node::Cmp(k, a, b) => match *b {
                Node::Const(v) => Node::CmpK(k, a, v),
                b => Node::Cmp(k, a, Box::new(b)),
            },
            Node::Call(f, mut args) if args.len() == 1 => Node::Call1(f, Box::new(args.pop().expect("one argument"))),
            n => n,
        }
    }

    pub(crate) fn eval(&self, r: &Record) -> Result<Value, EvalError> {
        match self {
            Node::Const(v) => Ok(v.clone()),
            Node::Field(s) => Ok(r.get(*s).cloned().unwrap_or(Value::Null)),
            Node::ArithK(k, a, b) => match (a.eval(r)?, b) {
                (Value::Int(x), Value::Int(y)) if *y != 0 => int_arith(*k, x, *y),
                (x, y) => arith(*k, x, y.clone()),
            },
            Node::CmpK(k, a, b) => {
                let x = a.eval(r)?;
                match (&x, b) {
                    (Value::Float(x), Value::Float(y)) => Ok(Value::Bool(cmp_ord(*k, x.partial_cmp(y)))),
                    (Value::Int(x), Value::Int(y)) => Ok(Value::Bool(cmp_ord(*k, Some(x.cmp(y))))),
                    _ => compare(*k, &x, b).map(Value::Bool),
                }
            }
            Node::Call1(f, a) => {
                let v = a.eval(r)?;
                match (f, &v) {
                    (Func::ToDouble, Value::Int(i)) => Ok(Value::Float(*i as f64)),
                    _ => call_values(*f, std::slice::from_ref(&v)),
                }
            }
            Node::And(a, b) => Ok(Value::Bool(bool_of(a.eval(r)?, "&&")? && bool_of(b.eval(r)?, "&&")?)),
            Node::Or(a, b) => Ok(Value::Bool(bool_of(a.eval(r)?, "||")? || bool_of(b.eval(r)?, "||")?)),
            _ => self.eval_cold(r),
        }
    }

    /// The less common forms, kept out of `eval` so that its frame stays small.
    #[inline(never)]
    fn eval_cold(&self, r: &Record) -> Result<Value, EvalError> {
        match self {
            Node::Select(base, field) => match base.eval(r)? {
                Value::Map(m) => Ok(m.get(*field).cloned().unwrap_or(Value::Null)),
                Value::Null => Ok(Value::Null),
                other => err(format!("cannot select field `{field}` from a {}", other.type_name())),
            },
            Node::Has(base, field) => match base.eval(r)? {
                Value::Map(m) => Ok(Value::Bool(m.get(*field).is_some_and(|v| !v.is_null()))),
                _ => Ok(Value::Bool(false)),
            },
            Node::List(items) => {
                let v: Result<Vec<Value>, _> = items.iter().map(|n| n.eval(r)).collect();
                Ok(Value::List(v?.into()))
            }
            Node::Not(a) => Ok(Value::Bool(!bool_of(a.eval(r)?, "!")?)),
            Node::Neg(a) => match a.eval(r)? {
                Value::Int(i) => i.checked_neg().map(Value::Int).ok_or_else(|| EvalError("integer overflow in negation".into())),
                Value::Float(f) => Ok(Value::Float(-f)),
                other => err(format!("cannot negate a {}", other.type_name())),
            },
            Node::Cond(c, a, b) => {
                if bool_of(c.eval(r)?, "?:")? {
                    a.eval(r)
                } else {
                    b.eval(r)
                }
            }
            Node::Arith(k, a, b) => arith(*k, a.eval(r)?, b.eval(r)?),
            Node::Cmp(k, a, b) => compare(*k, &a.eval(r)?, &b.eval(r)?).map(Value::Bool),
            Node::Index(a, b) => index(a.eval(r)?, b.eval(r)?),
            Node::In(a, b) => {
                let x = a.eval(r)?;
                match b.eval(r)? {
                    Value::List(l) => Ok(Value::Bool(l.contains(&x))),
                    Value::Floats(l) => Ok(Value::Bool(l.iter().any(|v| Value::Float(*v as f64) == x))),
                    Value::Map(m) => match x {
                        Value::Str(s) => Ok(Value::Bool(m.get_str(&s).is_some())),
                        _ => Ok(Value::Bool(false)),
                    },
                    other => err(format!("`in` needs a list or map on the right, got a {}", other.type_name())),
                }
            }
            Node::Coalesce(args) => {
                for a in args {
                    let v = a.eval(r)?;
                    if !v.is_null() {
                        return Ok(v);
                    }
                }
                Ok(Value::Null)
            }
            Node::Call(f, args) => call(*f, args, r),
            Node::Keyed(f, a, secret) => {
                let v = a.eval(r)?;
                let Some(text) = text_input(&v, f.name(), *f == Keyed::Decrypt)? else { return Ok(Value::Null) };
                Ok(match f {
                    Keyed::HmacSha256 => Value::str(&secret.hmac_sha256(text.as_bytes())),
                    Keyed::Encrypt => Value::str(&secret.encrypt(text.as_bytes())),
                    Keyed::Decrypt => {
                        let plain = secret.decrypt(&text).map_err(|e| EvalError(format!("`decrypt`: the value {e}")))?;
                        Value::str(&String::from_utf8(plain).map_err(|_| EvalError("`decrypt`: the decrypted bytes are not UTF-8".into()))?)
                    }
                })
            }
            Node::Const(_) | Node::Field(_) | Node::ArithK(..) | Node::CmpK(..) | Node::Call1(..) | Node::And(..) | Node::Or(..) => {
                unreachable!("handled by eval")
            }
        }
    }
}

/// The text a hashing, masking or encrypting function works on: a string as is, and (unless
/// `strings_only`) a number or bool as written (`1234`, `true`); `None` for null (the result is
/// null).
fn text_input<'v>(v: &'v Value, function: &str, strings_only: bool) -> Result<Option<std::borrow::Cow<'v, str>>, EvalError> {
    match v {
        Value::Null => Ok(None),
        Value::Str(s) => Ok(Some(std::borrow::Cow::Borrowed(s))),
        Value::Int(_) | Value::Float(_) | Value::Bool(_) if !strings_only => Ok(Some(std::borrow::Cow::Owned(v.to_string()))),
        other => err(format!("`{function}` needs a string{}, got a {}", if strings_only { "" } else { ", number or bool" }, other.type_name())),
    }
}

impl Keyed {
    fn name(self) -> &'static str {
        match self {
            Keyed::HmacSha256 => "hmac_sha256",
            Keyed::Encrypt => "encrypt",
            Keyed::Decrypt => "decrypt",
        }
    }
}

fn bool_of(v: Value, op: &str) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(b),
        other => err(format!("`{op}` needs bool operands, got {} ({})", other, other.type_name())),
    }
}

#[inline]
fn int_arith(k: Arith, x: i64, y: i64) -> Result<Value, EvalError> {
    let r = match k {
        Arith::Add => x.checked_add(y),
        Arith::Sub => x.checked_sub(y),
        Arith::Mul => x.checked_mul(y),
        Arith::Div => x.checked_div(y),
        Arith::Rem => x.checked_rem(y),
    };
    r.map(Value::Int).ok_or_else(|| EvalError(format!("integer overflow in {x} {k:?} {y}")))
}

#[inline]
fn cmp_ord(k: Cmp, o: Option<Ordering>) -> bool {
    match (k, o) {
        (Cmp::Eq, o) => o == Some(Ordering::Equal),
        (Cmp::Ne, o) => o != Some(Ordering::Equal),
        (_, None) => false,
        (Cmp::Lt, Some(o)) => o == Ordering::Less,
        (Cmp::Le, Some(o)) => o != Ordering::Greater,
        (Cmp::Gt, Some(o)) => o == Ordering::Greater,
        (Cmp::Ge, Some(o)) => o != Ordering::Less,
    }
}

/// `a k b` on two values, as a record's evaluation computes it.
pub(super) fn arith_values(k: Arith, a: Value, b: Value) -> Result<Value, EvalError> {
    arith(k, a, b)
}

/// `f(v)` for a one-argument function, as a record's evaluation computes it.
pub(super) fn call1_value(f: Func, v: Value) -> Result<Value, EvalError> {
    call_values(f, std::slice::from_ref(&v))
}

#[inline(never)]
fn arith(k: Arith, a: Value, b: Value) -> Result<Value, EvalError> {
    use Value::*;
    let name = match k {
        Arith::Add => "+",
        Arith::Sub => "-",
        Arith::Mul => "*",
        Arith::Div => "/",
        Arith::Rem => "%",
    };
    match (a, b) {
        (Int(x), Int(y)) => {
            let r = match k {
                Arith::Add => x.checked_add(y),
                Arith::Sub => x.checked_sub(y),
                Arith::Mul => x.checked_mul(y),
                Arith::Div if y == 0 => return err("division by zero".into()),
                Arith::Rem if y == 0 => return err("modulus by zero".into()),
                Arith::Div => x.checked_div(y),
                Arith::Rem => x.checked_rem(y),
            };
            r.map(Int).ok_or_else(|| EvalError(format!("integer overflow in {x} {name} {y}")))
        }
        (x @ (Int(_) | Float(_)), y @ (Int(_) | Float(_))) => {
            let (x, y) = (x.as_f64().expect("number"), y.as_f64().expect("number"));
            let r = match k {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
                Arith::Rem => x % y,
            };
            // Doubles stay finite: NaN or an infinity would be written as null and compare
            // false with everything, silently.
            match () {
                _ if r.is_finite() => Ok(Float(r)),
                _ if y == 0.0 && matches!(k, Arith::Div | Arith::Rem) => err(format!("division by zero in {x:?} {name} {y:?}")),
                _ => err(format!("{x:?} {name} {y:?} is not a finite number")),
            }
        }
        (Str(x), Str(y)) if matches!(k, Arith::Add) => {
            let mut s = String::with_capacity(x.len() + y.len());
            s.push_str(&x);
            s.push_str(&y);
            Ok(Value::str(&s))
        }
        (List(x), List(y)) if matches!(k, Arith::Add) => Ok(List(x.iter().chain(y.iter()).cloned().collect())),
        (x, y) => err(format!(
            "cannot apply `{name}` to {} and {}{}",
            x.type_name(),
            y.type_name(),
            if x.is_null() || y.is_null() { " (a field is missing or null; `coalesce(field, 0)` gives a default)" } else { "" }
        )),
    }
}

/// Orders two values of comparable types.
pub fn order(a: &Value, b: &Value) -> Option<Ordering> {
    use Value::*;
    match (a, b) {
        (Int(x), Int(y)) => Some(x.cmp(y)),
        (Int(_) | Float(_), Int(_) | Float(_)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        (Str(x), Str(y)) => Some(x.cmp(y)),
        (Bool(x), Bool(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[inline(never)]
fn compare(k: Cmp, a: &Value, b: &Value) -> Result<bool, EvalError> {
    match k {
        Cmp::Eq => Ok(a == b),
        Cmp::Ne => Ok(a != b),
        _ => {
            let Some(o) = order(a, b) else {
                return err(format!(
                    "cannot compare {} with {}{}",
                    a.type_name(),
                    b.type_name(),
                    if a.is_null() || b.is_null() { " (a field is missing or null)" } else { "" }
                ));
            };
            Ok(match k {
                Cmp::Lt => o == Ordering::Less,
                Cmp::Le => o != Ordering::Greater,
                Cmp::Gt => o == Ordering::Greater,
                Cmp::Ge => o != Ordering::Less,
                Cmp::Eq | Cmp::Ne => unreachable!("handled above"),
            })
        }
    }
}

fn index(a: Value, i: Value) -> Result<Value, EvalError> {
    match (a, i) {
        (Value::List(l), Value::Int(i)) => {
            let idx = usize::try_from(i).ok().filter(|&i| i < l.len());
            idx.map(|i| l[i].clone()).ok_or_else(|| EvalError(format!("index {i} out of range for a list of {}", l.len())))
        }
        (Value::Floats(l), Value::Int(i)) => {
            let idx = usize::try_from(i).ok().filter(|&i| i < l.len());
            idx.map(|i| Value::Float(l[i] as f64)).ok_or_else(|| EvalError(format!("index {i} out of range for a list of {}", l.len())))
        }
        (Value::Map(m), Value::Str(k)) => Ok(m.get_str(&k).cloned().unwrap_or(Value::Null)),
        (Value::Null, _) => Ok(Value::Null),
        (a, i) => err(format!("cannot index a {} with a {}", a.type_name(), i.type_name())),
    }
}

fn string_arg(v: &Value, f: &str) -> Result<Arc<str>, EvalError> {
    match v {
        Value::Str(s) => Ok(s.clone()),
        other => err(format!("`{f}` needs a string, got {} ({})", other, other.type_name())),
    }
}

fn int_arg(v: &Value, f: &str) -> Result<i64, EvalError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => err(format!("`{f}` needs an int, got {} ({})", other, other.type_name())),
    }
}

fn call(f: Func, args: &[Node], r: &Record) -> Result<Value, EvalError> {
    let mut vals: smallvec_lite::Args = smallvec_lite::Args::default();
    for a in args {
        vals.push(a.eval(r)?);
    }
    call_values(f, vals.as_slice())
}

#[inline(never)]
fn call_values(f: Func, v: &[Value]) -> Result<Value, EvalError> {
    let s = |i: usize, name: &str| string_arg(&v[i], name);
    Ok(match f {
        Func::Size => match &v[0] {
            Value::Str(x) => Value::Int(x.chars().count() as i64),
            Value::List(l) => Value::Int(l.len() as i64),
            Value::Floats(l) => Value::Int(l.len() as i64),
            Value::Map(m) => Value::Int(m.len() as i64),
            other => return err(format!("`size` needs a string, list or map, got a {}", other.type_name())),
        },
        Func::Contains => Value::Bool(s(0, "contains")?.contains(&*s(1, "contains")?)),
        Func::StartsWith => Value::Bool(s(0, "startsWith")?.starts_with(&*s(1, "startsWith")?)),
        Func::EndsWith => Value::Bool(s(0, "endsWith")?.ends_with(&*s(1, "endsWith")?)),
        Func::Lower => Value::str(&s(0, "lowerAscii")?.to_ascii_lowercase()),
        Func::Upper => Value::str(&s(0, "upperAscii")?.to_ascii_uppercase()),
        Func::Trim => Value::str(s(0, "trim")?.trim()),
        Func::Substring => {
            let text = s(0, "substring")?;
            let chars: Vec<char> = text.chars().collect();
            let start = int_arg(&v[1], "substring")?;
            let end = if v.len() > 2 { int_arg(&v[2], "substring")? } else { chars.len() as i64 };
            if start < 0 || end < start || end as usize > chars.len() {
                return err(format!("substring({start}, {end}) out of range for a string of {} characters", chars.len()));
            }
            Value::str(&chars[start as usize..end as usize].iter().collect::<String>())
        }
        Func::Replace => Value::str(&s(0, "replace")?.replace(&*s(1, "replace")?, &s(2, "replace")?)),
        Func::Split => Value::List(s(0, "split")?.split(&*s(1, "split")?).map(Value::str).collect()),
        Func::IndexOf => {
            let text = s(0, "indexOf")?;
            let needle = s(1, "indexOf")?;
            Value::Int(text.find(&*needle).map(|b| text[..b].chars().count() as i64).unwrap_or(-1))
        }
        Func::ToInt => match &v[0] {
            Value::Int(i) => Value::Int(*i),
            Value::Float(x) if x.is_finite() && x.abs() < 9.2e18 => Value::Int(x.trunc() as i64),
            Value::Bool(b) => Value::Int(*b as i64),
            Value::Str(t) => match t.trim().parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => return err(format!("int(\"{t}\"): not an integer")),
            },
            other => return err(format!("cannot convert {} ({}) to int", other, other.type_name())),
        },
        Func::ToDouble => match &v[0] {
            Value::Int(i) => Value::Float(*i as f64),
            Value::Float(x) => Value::Float(*x),
            Value::Str(t) => match t.trim().parse::<f64>() {
                Ok(x) if x.is_finite() => Value::Float(x),
                Ok(_) => return err(format!("double(\"{t}\"): not a finite number")),
                Err(_) => return err(format!("double(\"{t}\"): not a number")),
            },
            other => return err(format!("cannot convert {} ({}) to double", other, other.type_name())),
        },
        Func::ToString => match &v[0] {
            Value::Str(t) => Value::Str(t.clone()),
            other => Value::str(&other.to_string()),
        },
        Func::ToBool => match &v[0] {
            Value::Bool(b) => Value::Bool(*b),
            Value::Str(t) => match &**t {
                "true" | "TRUE" | "True" | "1" => Value::Bool(true),
                "false" | "FALSE" | "False" | "0" => Value::Bool(false),
                _ => return err(format!("bool(\"{t}\"): not a bool")),
            },
            other => return err(format!("cannot convert {} ({}) to bool", other, other.type_name())),
        },
        Func::Abs => match &v[0] {
            Value::Int(i) => Value::Int(i.checked_abs().ok_or_else(|| EvalError("integer overflow in abs".into()))?),
            Value::Float(x) => Value::Float(x.abs()),
            other => return err(format!("`abs` needs a number, got a {}", other.type_name())),
        },
        Func::Floor | Func::Ceil | Func::Round => {
            let x = v[0].as_f64().ok_or_else(|| EvalError(format!("`{f:?}` needs a number, got a {}", v[0].type_name())))?;
            Value::Float(match f {
                Func::Floor => x.floor(),
                Func::Ceil => x.ceil(),
                _ => x.round(),
            })
        }
        Func::Min | Func::Max => {
            let items: &[Value] = match v {
                [Value::List(l)] => l,
                _ => v,
            };
            let mut best: Option<&Value> = None;
            for x in items {
                best = Some(match best {
                    None => x,
                    Some(b) => match order(x, b) {
                        Some(o) if (o == Ordering::Less) == matches!(f, Func::Min) && o != Ordering::Equal => x,
                        Some(_) => b,
                        None => return err(format!("cannot compare {} with {}", x.type_name(), b.type_name())),
                    },
                });
            }
            best.cloned().unwrap_or(Value::Null)
        }
        Func::Sha256 => match text_input(&v[0], "sha256", false)? {
            Some(text) => Value::str(&crate::secrets::sha256_hex(text.as_bytes())),
            None => Value::Null,
        },
        Func::Mask => {
            let keep = int_arg(&v[1], "mask")?;
            if keep < 0 {
                return err(format!("`mask(x, {keep})`: the characters to keep cannot be negative"));
            }
            match text_input(&v[0], "mask", false)? {
                Some(text) => {
                    let n = text.chars().count();
                    let hide = n.saturating_sub(keep as usize);
                    Value::str(&text.chars().enumerate().map(|(i, c)| if i < hide { '*' } else { c }).collect::<String>())
                }
                None => Value::Null,
            }
        }
    })
}

/// A tiny inline vector for call arguments, so a call does not allocate for up to 4 arguments.
mod smallvec_lite {
    use crate::value::Value;

    #[derive(Default)]
    pub(super) struct Args {
        inline: [Value; 4],
        len: usize,
        spill: Vec<Value>,
    }

    impl Args {
        pub(super) fn push(&mut self, v: Value) {
            if self.len < 4 {
                self.inline[self.len] = v;
                self.len += 1;
            } else {
                if self.spill.is_empty() {
                    self.spill.extend(self.inline.iter_mut().map(std::mem::take));
                }
                self.spill.push(v);
                self.len += 1;
            }
        }
        pub(super) fn as_slice(&self) -> &[Value] {
            if self.spill.is_empty() {
                &self.inline[..self.len]
            } else {
                &self.spill
            }
        }
    }
}
