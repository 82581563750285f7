//! `serde` deserialization from a [`Node`], with every error tied to the span of the node that
//! caused it. Component configs are plain `#[derive(Deserialize)]` structs with
//! `#[serde(deny_unknown_fields)]`; wrap a field in [`Spanned`] to keep its position for checks
//! made after deserialization (an expression that does not compile, a file that does not exist).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::yaml::{Node, NodeKind, Span};

/// A deserialization error at a place in the pipeline file.
#[derive(Debug, Clone)]
pub struct DeError {
    pub span: Option<Span>,
    pub message: String,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError { span: None, message: msg.to_string() }
    }
}

impl DeError {
    fn at(mut self, span: &Span) -> Self {
        if self.span.is_none() {
            self.span = Some(span.clone());
        }
        self
    }
}

thread_local! {
    /// While [`option_names`] runs: the fields of the first struct deserialized, once seen.
    static PROBE: std::cell::RefCell<Option<Option<&'static [&'static str]>>> = const { std::cell::RefCell::new(None) };
}

/// The field names of the first struct `f` deserializes from a [`Node`] (which then fails),
/// if it deserializes one: a component's option names, for `rill schema`.
pub fn option_names(f: impl FnOnce()) -> Option<&'static [&'static str]> {
    PROBE.with(|p| *p.borrow_mut() = Some(None));
    f();
    PROBE.with(|p| p.borrow_mut().take().flatten())
}

/// Deserializes `T` from `node`.
pub fn from_node<'a, T: serde::Deserialize<'a>>(node: &'a Node) -> Result<T, DeError> {
    T::deserialize(node).map_err(|e| e.at(&node.span))
}

/// A value with the position it was written at.
#[derive(Clone, Debug)]
pub struct Spanned<T> {
    pub value: T,
    pub span: Span,
}

impl<T> std::ops::Deref for Spanned<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

const SPANNED: &str = "$rill::Spanned";
const SPANNED_FIELDS: &[&str] = &["$span", "$value"];

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Spanned<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Spanned<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value with a position (only from a pipeline file)")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Spanned<T>, A::Error> {
                let _: String = map.next_key()?.ok_or_else(|| de::Error::custom("missing span"))?;
                let (file, line, column): (String, usize, usize) = map.next_value()?;
                let _: String = map.next_key()?.ok_or_else(|| de::Error::custom("missing value"))?;
                let value: T = map.next_value()?;
                Ok(Spanned { value, span: Span { file: file.into(), line, column } })
            }
        }
        d.deserialize_struct(SPANNED, SPANNED_FIELDS, V(std::marker::PhantomData))
    }
}

/// Durations written as `5ms`, `1s`, `2m 30s`, or a number of milliseconds.
pub mod duration {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
            Raw::Text(t) => humantime::parse_duration(t.trim()).map_err(|e| {
                serde::de::Error::custom(format!("`{t}` is not a duration ({e}); write e.g. `5ms`, `200ms`, `1s`, `2m`"))
            }),
        }
    }

    pub mod option {
        use std::time::Duration;
        pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

fn plain_scalar(node: &Node) -> Option<&str> {
    match &node.kind {
        NodeKind::Scalar { text, plain: true } => Some(text),
        _ => None,
    }
}

impl Node {
    fn expected(&self, what: &str) -> DeError {
        let found = match &self.kind {
            NodeKind::Scalar { text, .. } if !self.is_null() => format!("`{text}`"),
            _ => self.kind_name().to_string(),
        };
        DeError { span: Some(self.span.clone()), message: format!("expected {what}, found {found}") }
    }

    fn parse_int<T: std::str::FromStr>(&self, what: &str) -> Result<T, DeError> {
        let t = plain_scalar(self).ok_or_else(|| self.expected(what))?;
        t.replace('_', "").parse::<T>().map_err(|_| self.expected(what))
    }
}

macro_rules! de_int {
    ($($m:ident $v:ident $t:ty, $what:expr;)*) => {$(
        fn $m<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
            v.$v(self.parse_int::<$t>($what)?).map_err(|e: DeError| e.at(&self.span))
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for &'de Node {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let r = match &self.kind {
            NodeKind::Map(_) => return self.deserialize_map(v),
            NodeKind::Seq(_) => return self.deserialize_seq(v),
            NodeKind::Scalar { text, plain: false } => v.visit_str(text),
            NodeKind::Scalar { text, plain: true } => {
                if self.is_null() {
                    v.visit_unit()
                } else if let Some(b) = parse_bool(text) {
                    v.visit_bool(b)
                } else if let Ok(i) = text.replace('_', "").parse::<i64>() {
                    v.visit_i64(i)
                } else if let Some(f) = parse_float(text) {
                    v.visit_f64(f)
                } else {
                    v.visit_str(text)
                }
            }
        };
        r.map_err(|e: DeError| e.at(&self.span))
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let b = plain_scalar(self).and_then(parse_bool).ok_or_else(|| self.expected("true or false"))?;
        v.visit_bool(b).map_err(|e: DeError| e.at(&self.span))
    }

    de_int! {
        deserialize_i8 visit_i8 i8, "an integer";
        deserialize_i16 visit_i16 i16, "an integer";
        deserialize_i32 visit_i32 i32, "an integer";
        deserialize_i64 visit_i64 i64, "an integer";
        deserialize_u8 visit_u8 u8, "a non-negative integer";
        deserialize_u16 visit_u16 u16, "a non-negative integer";
        deserialize_u32 visit_u32 u32, "a non-negative integer";
        deserialize_u64 visit_u64 u64, "a non-negative integer";
    }

    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_f64(v)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        let f = plain_scalar(self).and_then(parse_float).ok_or_else(|| self.expected("a number"))?;
        v.visit_f64(f).map_err(|e: DeError| e.at(&self.span))
    }

    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => v.visit_str(text).map_err(|e: DeError| e.at(&self.span)),
            _ => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            v.visit_none()
        } else {
            v.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            v.visit_unit()
        } else {
            Err(self.expected("null"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        self.deserialize_unit(v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _: &'static str, v: V) -> Result<V::Value, DeError> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Seq(items) => v.visit_seq(SeqAccess { items: items.iter() }).map_err(|e: DeError| e.at(&self.span)),
            _ => Err(self.expected("a list (`[a, b]` or one `- item` per line)")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(self, _: &'static str, _: usize, v: V) -> Result<V::Value, DeError> {
        self.deserialize_seq(v)
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Map(entries) => v.visit_map(MapAccess { entries: entries.iter(), value: None }).map_err(|e: DeError| e.at(&self.span)),
            _ if self.is_null() => v.visit_map(MapAccess { entries: [].iter(), value: None }),
            _ => Err(self.expected("a map of `name: value` options")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(self, name: &'static str, fields: &'static [&'static str], v: V) -> Result<V::Value, DeError> {
        if name == SPANNED && fields == SPANNED_FIELDS {
            return v.visit_map(SpannedAccess { node: self, step: 0 });
        }
        let probed = PROBE.with(|p| match &mut *p.borrow_mut() {
            Some(seen @ None) => {
                *seen = Some(fields);
                true
            }
            _ => false,
        });
        if probed {
            return Err(serde::de::Error::custom("option names probed"));
        }
        self.deserialize_map(v)
    }

    fn deserialize_enum<V: Visitor<'de>>(self, _: &'static str, _: &'static [&'static str], v: V) -> Result<V::Value, DeError> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => v.visit_enum(text.as_str().into_deserializer()).map_err(|e: DeError| e.at(&self.span)),
            NodeKind::Map(entries) if entries.len() == 1 => v.visit_enum(EnumAccess { key: &entries[0].0, value: &entries[0].1 }),
            _ => Err(self.expected("one of the listed names")),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        self.deserialize_str(v)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        v.visit_unit()
    }
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_float(t: &str) -> Option<f64> {
    match t {
        ".inf" | ".Inf" | "+.inf" => Some(f64::INFINITY),
        "-.inf" | "-.Inf" => Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" => Some(f64::NAN),
        _ => t.replace('_', "").parse::<f64>().ok().filter(|_| t.chars().any(|c| c.is_ascii_digit())),
    }
}

struct SeqAccess<'a> {
    items: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqAccess<'de> {
    type Error = DeError;
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, DeError> {
        match self.items.next() {
            Some(n) => seed.deserialize(n).map(Some).map_err(|e| e.at(&n.span)),
            None => Ok(None),
        }
    }
    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapAccess<'a> {
    entries: std::slice::Iter<'a, (Node, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        match self.entries.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k).map(Some).map_err(|e| e.at(&k.span))
            }
            None => Ok(None),
        }
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let v = self.value.take().expect("next_value after next_key");
        seed.deserialize(v).map_err(|e| e.at(&v.span))
    }
}

struct SpannedAccess<'a> {
    node: &'a Node,
    step: u8,
}

impl<'de> de::MapAccess<'de> for SpannedAccess<'de> {
    type Error = DeError;
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        if self.step >= 2 {
            return Ok(None);
        }
        let key = SPANNED_FIELDS[self.step as usize];
        seed.deserialize(key.into_deserializer()).map(Some)
    }
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        self.step += 1;
        if self.step == 1 {
            let s = &self.node.span;
            let t = (s.file.to_string(), s.line, s.column);
            seed.deserialize(serde::de::value::SeqDeserializer::<_, DeError>::new(
                [
                    serde_json::Value::from(t.0),
                    serde_json::Value::from(t.1),
                    serde_json::Value::from(t.2),
                ]
                .into_iter()
                .map(JsonScalar),
            ))
        } else {
            seed.deserialize(self.node)
        }
    }
}

/// Adapts a JSON scalar for the span triple above.
struct JsonScalar(serde_json::Value);

impl<'de> IntoDeserializer<'de, DeError> for JsonScalar {
    type Deserializer = JsonScalarDe;
    fn into_deserializer(self) -> JsonScalarDe {
        JsonScalarDe(self.0)
    }
}

struct JsonScalarDe(serde_json::Value);

impl<'de> serde::Deserializer<'de> for JsonScalarDe {
    type Error = DeError;
    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, DeError> {
        match self.0 {
            serde_json::Value::String(s) => v.visit_string(s),
            serde_json::Value::Number(n) => v.visit_u64(n.as_u64().unwrap_or(0)),
            _ => v.visit_unit(),
        }
    }
    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct EnumAccess<'a> {
    key: &'a Node,
    value: &'a Node,
}

impl<'de> de::EnumAccess<'de> for EnumAccess<'de> {
    type Error = DeError;
    type Variant = VariantAccess<'de>;
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, VariantAccess<'de>), DeError> {
        let k = seed.deserialize(self.key).map_err(|e| e.at(&self.key.span))?;
        Ok((k, VariantAccess { value: self.value }))
    }
}

struct VariantAccess<'a> {
    value: &'a Node,
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'de> {
    type Error = DeError;
    fn unit_variant(self) -> Result<(), DeError> {
        Ok(())
    }
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(self.value)
    }
    fn tuple_variant<V: Visitor<'de>>(self, _: usize, v: V) -> Result<V::Value, DeError> {
        serde::Deserializer::deserialize_seq(self.value, v)
    }
    fn struct_variant<V: Visitor<'de>>(self, _: &'static [&'static str], v: V) -> Result<V::Value, DeError> {
        serde::Deserializer::deserialize_map(self.value, v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        path: Spanned<String>,
        count: Option<u64>,
        #[serde(default, with = "duration::option")]
        delay: Option<std::time::Duration>,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn parse(t: &str) -> Result<Cfg, DeError> {
        let n = Node::parse(t, "f.yaml").unwrap();
        let n: &'static Node = Box::leak(Box::new(n));
        from_node(n)
    }

    #[test]
    fn spanned_values_and_durations() {
        let c = parse("path: a.txt\ncount: 3\ndelay: 5ms\ntags: [x]\n").unwrap();
        assert_eq!(c.path.value, "a.txt");
        assert_eq!(c.path.span.to_string(), "f.yaml:1:7");
        assert_eq!(c.delay, Some(std::time::Duration::from_millis(5)));
        assert_eq!((c.count, c.tags), (Some(3), vec!["x".to_string()]));
    }

    #[test]
    fn unknown_field_points_at_the_key() {
        let e = parse("path: a\ncolor: red\n").unwrap_err();
        assert!(e.message.contains("unknown field `color`"), "{e:?}");
        assert_eq!(e.span.unwrap().line, 2);
    }

    #[test]
    fn type_errors_point_at_the_value() {
        let e = parse("path: a\ncount: many\n").unwrap_err();
        assert_eq!(e.span.as_ref().map(|s| (s.line, s.column)), Some((2, 8)), "{e:?}");
        let e = parse("path: a\ndelay: soon\n").unwrap_err();
        assert!(e.message.contains("not a duration"), "{e:?}");
    }
}
