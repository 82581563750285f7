//! CEL AST (from the `cel` crate's parser) to [`Node`].

use cel::common::ast::{operators as op, Expr as Ast, IdedExpr, LiteralValue, SourceInfo};

use super::eval::{Arith, Cmp, Func, Keyed, Node};
use crate::secrets::Keys;
use crate::value::{Sym, Value};

/// An expression that does not compile: what is wrong and where.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileError {
    pub message: String,
    /// 1-based line and column inside the expression text.
    pub line: usize,
    pub column: usize,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (expression line {}, column {})", self.message, self.line, self.column)
    }
}

pub(super) fn compile(source: &str, keys: &Keys) -> Result<Node, CompileError> {
    let parsed = cel::parser::Parser::new().parse_with_source_info(source);
    let (ast, info) = match parsed {
        Ok(x) => x,
        Err(errs) => {
            let e = errs.errors.into_iter().next();
            let (line, column, msg) = match e {
                Some(e) => (e.pos.0.max(1) as usize, e.pos.1.max(1) as usize, e.msg),
                None => (1, 1, "syntax error".to_string()),
            };
            return Err(CompileError { message: format!("syntax error: {msg}"), line, column });
        }
    };
    let c = Compiler { source, info: &info, keys };
    let node = c.node(&ast)?;
    Ok(node.fold())
}

struct Compiler<'a> {
    source: &'a str,
    info: &'a SourceInfo,
    keys: &'a Keys,
}

impl Compiler<'_> {
    fn err(&self, e: &IdedExpr, message: impl Into<String>) -> CompileError {
        let offset = self.info.offset_for(e.id).map(|(s, _)| s as usize).unwrap_or(0);
        let before: String = self.source.chars().take(offset).collect();
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
        CompileError { message: message.into(), line, column }
    }

    fn node(&self, e: &IdedExpr) -> Result<Node, CompileError> {
        Ok(match &e.expr {
            Ast::Literal(l) => Node::Const(literal(l)),
            Ast::Ident(name) => Node::Field(Sym::new(name)),
            Ast::Select(s) => {
                let field = Sym::new(&s.field);
                let operand = self.node(&s.operand)?;
                if s.test {
                    Node::Has(Box::new(operand), field)
                } else {
                    Node::Select(Box::new(operand), field)
                }
            }
            Ast::List(l) => Node::List(l.elements.iter().map(|x| self.node(x)).collect::<Result<_, _>>()?),
            Ast::Call(call) => self.call(e, &call.func_name, call.target.as_deref(), &call.args)?,
            Ast::Map(_) | Ast::Struct(_) => return Err(self.err(e, "map and message literals are not supported")),
            Ast::Comprehension(_) => {
                return Err(self.err(e, "comprehension macros (all, exists, map, filter) are not supported"))
            }
            Ast::Unspecified => return Err(self.err(e, "empty expression")),
        })
    }

    fn call(&self, e: &IdedExpr, name: &str, target: Option<&IdedExpr>, args: &[IdedExpr]) -> Result<Node, CompileError> {
        let mut all: Vec<Node> = Vec::with_capacity(args.len() + 1);
        if let Some(t) = target {
            all.push(self.node(t)?);
        }
        for a in args {
            all.push(self.node(a)?);
        }
        let arity = |n: usize| -> Result<(), CompileError> {
            if all.len() == n {
                Ok(())
            } else {
                Err(self.err(e, format!("`{}` takes {} argument(s), got {}", display_name(name), n, all.len())))
            }
        };
        let bin = |all: &mut Vec<Node>| {
            let b = all.pop().expect("arity checked");
            let a = all.pop().expect("arity checked");
            (Box::new(a), Box::new(b))
        };
        let node = match name {
            op::LOGICAL_AND => {
                arity(2)?;
                let (a, b) = bin(&mut all);
                Node::And(a, b)
            }
            op::LOGICAL_OR => {
                arity(2)?;
                let (a, b) = bin(&mut all);
                Node::Or(a, b)
            }
            op::LOGICAL_NOT => {
                arity(1)?;
                Node::Not(Box::new(all.pop().expect("arity checked")))
            }
            op::NEGATE => {
                arity(1)?;
                Node::Neg(Box::new(all.pop().expect("arity checked")))
            }
            op::CONDITIONAL => {
                arity(3)?;
                let c = all.pop().expect("arity");
                let b = all.pop().expect("arity");
                let a = all.pop().expect("arity");
                Node::Cond(Box::new(a), Box::new(b), Box::new(c))
            }
            op::ADD | op::SUBSTRACT | op::MULTIPLY | op::DIVIDE | op::MODULO => {
                arity(2)?;
                let k = match name {
                    op::ADD => Arith::Add,
                    op::SUBSTRACT => Arith::Sub,
                    op::MULTIPLY => Arith::Mul,
                    op::DIVIDE => Arith::Div,
                    _ => Arith::Rem,
                };
                let (a, b) = bin(&mut all);
                Node::Arith(k, a, b)
            }
            op::EQUALS | op::NOT_EQUALS | op::LESS | op::LESS_EQUALS | op::GREATER | op::GREATER_EQUALS => {
                arity(2)?;
                let k = match name {
                    op::EQUALS => Cmp::Eq,
                    op::NOT_EQUALS => Cmp::Ne,
                    op::LESS => Cmp::Lt,
                    op::LESS_EQUALS => Cmp::Le,
                    op::GREATER => Cmp::Gt,
                    _ => Cmp::Ge,
                };
                let (a, b) = bin(&mut all);
                Node::Cmp(k, a, b)
            }
            op::INDEX => {
                arity(2)?;
                let (a, b) = bin(&mut all);
                Node::Index(a, b)
            }
            op::IN => {
                arity(2)?;
                let (a, b) = bin(&mut all);
                Node::In(a, b)
            }
            "hmac_sha256" | "encrypt" | "decrypt" => {
                arity(2)?;
                let key = match all.pop() {
                    Some(Node::Const(Value::Str(k))) => k,
                    _ => return Err(self.err(e, format!("`{name}` takes the name of a key as a quoted string, e.g. `{name}(card, \"card_key\")`"))),
                };
                let Some(secret) = self.keys.get(&key) else {
                    let names = self.keys.names();
                    let known = if names.is_empty() { "the pipeline has no `keys:`".to_string() } else { format!("keys: {}", names.join(", ")) };
                    return Err(self.err(e, format!("`{name}` names key `{key}`, which the pipeline's `keys:` does not define ({known})")));
                };
                let f = match name {
                    "hmac_sha256" => Keyed::HmacSha256,
                    "encrypt" => Keyed::Encrypt,
                    _ => Keyed::Decrypt,
                };
                Node::Keyed(f, Box::new(all.pop().expect("arity checked")), secret.clone())
            }
            "coalesce" => {
                if all.is_empty() {
                    return Err(self.err(e, "`coalesce` needs at least one argument"));
                }
                Node::Coalesce(all)
            }
            _ => {
                let Some((f, n)) = Func::lookup(name) else {
                    return Err(self.err(
                        e,
                        format!(
                            "unknown function `{name}`; available: {}",
                            Func::NAMES.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(", ")
                        ),
                    ));
                };
                if !n.contains(&all.len()) {
                    return Err(self.err(
                        e,
                        format!("`{name}` takes {} argument(s) (counting the receiver), got {}", describe(&n), all.len()),
                    ));
                }
                Node::Call(f, all)
            }
        };
        Ok(node)
    }
}

fn describe(r: &std::ops::RangeInclusive<usize>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else if *r.end() == usize::MAX {
        format!("{} or more", r.start())
    } else {
        format!("{} to {}", r.start(), r.end())
    }
}

fn display_name(op_name: &str) -> &str {
    match op_name {
        op::LOGICAL_AND => "&&",
        op::LOGICAL_OR => "||",
        op::LOGICAL_NOT => "!",
        op::NEGATE => "-",
        op::CONDITIONAL => "?:",
        other => other,
    }
}

fn literal(l: &LiteralValue) -> Value {
    match l {
        LiteralValue::Boolean(b) => Value::Bool(**b),
        LiteralValue::Int(i) => Value::Int(**i),
        LiteralValue::UInt(u) => i64::try_from(**u).map(Value::Int).unwrap_or(Value::Float(**u as f64)),
        LiteralValue::Double(d) => Value::Float(**d),
        LiteralValue::String(s) => Value::str(s),
        LiteralValue::Bytes(b) => Value::str(&String::from_utf8_lossy(b)),
        LiteralValue::Null => Value::Null,
    }
}
