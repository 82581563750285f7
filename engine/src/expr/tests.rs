use super::*;
use crate::record::Record;

fn rec(json: &str) -> Record {
    Record::from_json(json.as_bytes()).unwrap()
}

fn eval(src: &str, json: &str) -> Result<Value, EvalError> {
    Expr::compile(src).unwrap().eval(&rec(json))
}

#[test]
fn the_demo_condition() {
    let e = Expr::compile("amount > 100.0 && country != 'US'").unwrap();
    assert!(e.eval_bool(&rec(r#"{"amount": 150.5, "country": "DE"}"#)).unwrap());
    assert!(!e.eval_bool(&rec(r#"{"amount": 150.5, "country": "US"}"#)).unwrap());
    assert!(!e.eval_bool(&rec(r#"{"amount": 99, "country": "DE"}"#)).unwrap());
    // integer amounts compare with a double literal
    assert!(e.eval_bool(&rec(r#"{"amount": 101, "country": "FR"}"#)).unwrap());
}

#[test]
fn arithmetic_and_casts() {
    assert_eq!(eval("amount * 0.92", r#"{"amount": 100}"#).unwrap(), Value::Float(92.0));
    assert_eq!(eval("id % 1000", r#"{"id": 12345}"#).unwrap(), Value::Int(345));
    assert_eq!(eval("double(id % 1000)", r#"{"id": 12345}"#).unwrap(), Value::Float(345.0));
    assert_eq!(eval("int('42') + 1", "{}").unwrap(), Value::Int(43));
    assert_eq!(eval("string(7) + 'x'", "{}").unwrap(), Value::str("7x"));
    assert_eq!(eval("7 / 2", "{}").unwrap(), Value::Int(3));
    assert!(eval("1 / 0", "{}").is_err());
    assert!(eval("9223372036854775807 + 1", "{}").is_err());
}

#[test]
fn strings() {
    let j = r#"{"name": "  Alice Smith "}"#;
    assert_eq!(eval("name.trim().lowerAscii()", j).unwrap(), Value::str("alice smith"));
    assert_eq!(eval("name.contains('Smith')", j).unwrap(), Value::Bool(true));
    assert_eq!(eval("size(name.trim())", j).unwrap(), Value::Int(11));
    assert_eq!(eval("name.trim().substring(0, 5)", j).unwrap(), Value::str("Alice"));
    assert_eq!(eval("name.trim().startsWith('Al')", j).unwrap(), Value::Bool(true));
    assert_eq!(eval("'a,b'.split(',')[1]", j).unwrap(), Value::str("b"));
}

#[test]
fn sensitive_field_functions() {
    let mut keys = crate::secrets::Keys::default();
    keys.insert(crate::secrets::Secret::new("card_key", b"Jefe".to_vec()));
    let with = |src: &str, json: &str| Expr::compile_with(src, &keys).unwrap().eval(&rec(json));
    let j = r#"{"card": "4111111111111111", "n": 1234, "none": null}"#;
    assert_eq!(eval("sha256('abc')", "{}").unwrap(), Value::str("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"));
    assert_eq!(eval("sha256(n)", j).unwrap(), eval("sha256('1234')", "{}").unwrap(), "a number hashes as written");
    assert_eq!(eval("mask(card, 4)", j).unwrap(), Value::str("************1111"));
    assert_eq!(eval("mask('abc', 4)", "{}").unwrap(), Value::str("abc"));
    assert_eq!(eval("mask('äöü€x', 1)", "{}").unwrap(), Value::str("****x"), "characters, not bytes");
    assert_eq!(eval("mask(none, 4)", j).unwrap(), Value::Null);
    assert!(eval("mask(card, -1)", j).is_err());
    // RFC 4231 test case 2.
    assert_eq!(with("hmac_sha256('what do ya want for nothing?', 'card_key')", "{}").unwrap(), Value::str("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
    assert_eq!(with("decrypt(encrypt(card, 'card_key'), 'card_key')", j).unwrap(), Value::str("4111111111111111"));
    assert_eq!(with("decrypt(encrypt(n, 'card_key'), 'card_key')", j).unwrap(), Value::str("1234"));
    assert_ne!(with("encrypt(card, 'card_key')", j).unwrap(), with("encrypt(card, 'card_key')", j).unwrap());
    assert_eq!(with("encrypt(none, 'card_key')", j).unwrap(), Value::Null);
    assert!(with("decrypt(card, 'card_key')", j).unwrap_err().0.contains("`decrypt`"));
    // Keys by name only, and only those the pipeline defines.
    let e = Expr::compile_with("hmac_sha256(card, 'other')", &keys).unwrap_err();
    assert!(e.message.contains("names key `other`, which the pipeline's `keys:` does not define (keys: card_key)"), "{e}");
    assert!(Expr::compile("encrypt(card, 'card_key')").unwrap_err().message.contains("the pipeline has no `keys:`"));
    assert!(Expr::compile_with("encrypt(card, card)", &keys).unwrap_err().message.contains("quoted string"));
    assert!(!format!("{:?}", Expr::compile_with("encrypt(card, 'card_key')", &keys).unwrap()).contains("Jefe"));
}

#[test]
fn nulls_and_coalesce() {
    assert_eq!(eval("coalesce(missing, 5)", "{}").unwrap(), Value::Int(5));
    assert_eq!(eval("coalesce(x, 5)", r#"{"x": 1}"#).unwrap(), Value::Int(1));
    assert_eq!(eval("missing == null", "{}").unwrap(), Value::Bool(true));
    let e = eval("missing + 1", "{}").unwrap_err();
    assert!(e.0.contains("null"), "{e}");
    assert!(eval("missing > 1", "{}").is_err());
}

#[test]
fn nested_fields_and_has() {
    let j = r#"{"user": {"name": "bo", "age": 3}, "tags": ["a", "b"]}"#;
    assert_eq!(eval("user.name", j).unwrap(), Value::str("bo"));
    assert_eq!(eval("has(user.age)", j).unwrap(), Value::Bool(true));
    assert_eq!(eval("has(user.zip)", j).unwrap(), Value::Bool(false));
    assert_eq!(eval("'b' in tags", j).unwrap(), Value::Bool(true));
    assert_eq!(eval("x in [1, 2, 3]", r#"{"x": 2}"#).unwrap(), Value::Bool(true));
    assert_eq!(eval("user.age > 2 ? 'old' : 'young'", j).unwrap(), Value::str("old"));
}

#[test]
fn type_errors_are_errors_not_panics() {
    assert!(eval("name > 1", r#"{"name": "x"}"#).is_err());
    assert!(eval("!name", r#"{"name": "x"}"#).is_err());
    assert!(Expr::compile("name").unwrap().eval_bool(&rec(r#"{"name": "x"}"#)).is_err());
}

#[test]
fn compile_errors_have_positions() {
    let e = Expr::compile("amount > > 3").unwrap_err();
    assert_eq!(e.line, 1);
    assert!(e.column >= 8, "{e:?}");
    let e = Expr::compile("amount > nosuch(3)").unwrap_err();
    assert!(e.message.contains("unknown function `nosuch`"), "{e:?}");
    assert_eq!(e.column, 16);
}

#[test]
fn constants_are_folded() {
    let e = Expr::compile("x * (60 * 1000)").unwrap();
    let tree = format!("{:?}", e.node);
    assert!(tree.contains("Int(60000)") && !tree.contains("Int(60)"), "{tree}");
    assert_eq!(e.eval(&rec(r#"{"x": 2}"#)).unwrap(), Value::Int(120000));
}

mod no_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The fuzz target `expr` on stable: any text compiles or fails cleanly, and a compiled
        /// expression evaluates to a value or an error.
        #[test]
        fn compile_and_eval_never_panic(text in "[a-z0-9 .,()\\[\\]'\"+*/%<>=!&|?:_-]{0,40}") {
            if let Ok(e) = Expr::compile(&text) {
                let _ = e.eval(&rec(r#"{"a": 1, "b": 2.5, "s": "text", "l": [1, 2], "m": {"x": null}}"#));
            }
        }

        #[test]
        fn arithmetic_on_ints_matches_checked_rust(a in any::<i64>(), b in any::<i64>()) {
            let r = rec(&format!(r#"{{"a": {a}, "b": {b}}}"#));
            let got = Expr::compile("a + b").unwrap().eval(&r).ok();
            prop_assert_eq!(got, a.checked_add(b).map(Value::Int));
            let got = Expr::compile("a % b").unwrap().eval(&r).ok();
            prop_assert_eq!(got, a.checked_rem(b).map(Value::Int));
        }
    }
}

/// Column kernels give exactly what the row evaluator gives, record by record: the same values
/// (of the same types) and the same errors on the same records.
mod columns_match_rows {
    use super::*;
    use crate::columns::{Column, Columns};
    use proptest::prelude::*;

    fn expr() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("c".to_string()),
            Just("d".to_string()),
            Just("missing".to_string()),
            prop_oneof![Just(0i64), Just(1), Just(-1), Just(3), Just(1000), Just(i64::MAX)].prop_map(|i| i.to_string()),
            prop_oneof![Just("2.5"), Just("0.0"), Just("-1.5"), Just("1e308")].prop_map(String::from),
            prop_oneof![Just("true"), Just("false"), Just("'x'")].prop_map(String::from),
        ];
        leaf.prop_recursive(4, 24, 3, |inner| {
            let ops = ["+", "-", "*", "/", "%", "<", "<=", ">", ">=", "==", "!=", "&&", "||"];
            let calls = ["double", "int", "abs", "floor", "ceil", "round", "!", "-"];
            prop_oneof![
                (inner.clone(), 0..ops.len(), inner.clone()).prop_map(move |(x, o, y)| format!("({x} {} {y})", ops[o])),
                (0..calls.len(), inner.clone()).prop_map(move |(f, x)| match calls[f] {
                    "!" | "-" => format!("{}({x})", calls[f]),
                    name => format!("{name}({x})"),
                }),
                (inner.clone(), inner.clone(), inner).prop_map(|(c, x, y)| format!("({c} ? {x} : {y})")),
            ]
        })
    }

    fn columns() -> impl Strategy<Value = Columns> {
        let int = prop_oneof![Just(0i64), Just(1), Just(-1), Just(7), Just(i64::MAX), Just(i64::MIN), -1000i64..1000];
        let float = prop_oneof![Just(0.0f64), Just(-0.0), Just(2.5), Just(1e308), -1e3f64..1e3];
        let mixed = prop_oneof![int.clone().prop_map(Value::Int), float.clone().prop_map(Value::Float), Just(Value::Null), Just(Value::str("s"))];
        (1usize..12).prop_flat_map(move |n| {
            (
                proptest::collection::vec(int.clone(), n),
                proptest::collection::vec(float.clone(), n),
                proptest::collection::vec(any::<bool>(), n),
                proptest::collection::vec(mixed.clone(), n),
            )
                .prop_map(|(a, b, c, d)| {
                    let mut cols = Columns::new((0..a.len() as u64).collect());
                    cols.set(Sym::new("a"), Column::Int(a));
                    cols.set(Sym::new("b"), Column::Float(b));
                    cols.set(Sym::new("c"), Column::Bool(c));
                    cols.set(Sym::new("d"), Column::from_values(d));
                    cols
                })
        })
    }

    fn same(x: &Value, y: &Value) -> bool {
        x.type_name() == y.type_name() && (x == y || matches!((x, y), (Value::Float(p), Value::Float(q)) if p.to_bits() == q.to_bits()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn kernels_agree_with_the_row_evaluator(text in expr(), cols in columns()) {
            let Ok(e) = Expr::compile(&text) else { return Ok(()) };
            let got = e.eval_columns(&cols);
            prop_assert_eq!(got.column.len(), cols.len());
            let mut errors = got.errors.iter().peekable();
            for i in 0..cols.len() {
                let row = cols.row(i);
                match e.eval(&row) {
                    Ok(v) => {
                        prop_assert!(errors.peek().is_none_or(|(r, _)| *r != i), "{text}: row {i} failed in columns only");
                        let c = got.column.get(i);
                        prop_assert!(same(&v, &c), "{text}: row {i} ({row}): rows give {v:?}, columns {c:?}");
                    }
                    Err(want) => {
                        let Some((r, err)) = errors.next() else { return Err(TestCaseError::fail(format!("{text}: row {i} failed in rows only: {want}"))) };
                        prop_assert_eq!(*r, i, "{}", text);
                        prop_assert_eq!(err, &want);
                    }
                }
            }
        }
    }
}
