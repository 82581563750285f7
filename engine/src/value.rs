//! Values and interned field names.
//!
//! Field names are interned once into a [`Sym`] (a `u32`): records store `(Sym, Value)` pairs, so a
//! field lookup is a scan comparing integers, and expressions resolve names when they are compiled,
//! never per record.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock, RwLock};

use crate::record::Record;

/// An interned field name. Equal names always give equal symbols within one process.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sym(u32);

struct Interner {
    ids: HashMap<&'static str, u32>,
    names: Vec<&'static str>,
}

fn interner() -> &'static RwLock<Interner> {
    static INTERNER: OnceLock<RwLock<Interner>> = OnceLock::new();
    INTERNER.get_or_init(|| RwLock::new(Interner { ids: HashMap::new(), names: Vec::new() }))
}

thread_local! {
    static LOCAL: std::cell::RefCell<HashMap<Box<str>, Sym>> = std::cell::RefCell::new(HashMap::new());
}

impl Sym {
    /// Interns `name`. Cheap after the first call for a name on a thread (a thread-local cache sits
    /// in front of the global table). Names are never freed: the set of field names is assumed to
    /// be small and stable, as it is for real schemas.
    pub fn new(name: &str) -> Sym {
        if let Some(s) = LOCAL.with(|l| l.borrow().get(name).copied()) {
            return s;
        }
        let sym = Self::global(name);
        LOCAL.with(|l| l.borrow_mut().insert(name.into(), sym));
        sym
    }

    fn global(name: &str) -> Sym {
        if let Some(&id) = interner().read().expect("interner poisoned").ids.get(name) {
            return Sym(id);
        }
        let mut w = interner().write().expect("interner poisoned");
        if let Some(&id) = w.ids.get(name) {
            return Sym(id);
        }
        let id = u32::try_from(w.names.len()).expect("more than 2^32 field names");
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        w.ids.insert(leaked, id);
        w.names.push(leaked);
        Sym(id)
    }

    /// The name this symbol stands for.
    pub fn as_str(self) -> &'static str {
        interner().read().expect("interner poisoned").names[self.0 as usize]
    }
}

impl fmt::Debug for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_str())
    }
}

impl fmt::Display for Sym {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A dynamically typed value of a record field.
///
/// Strings, lists and nested records are reference counted, so cloning a value never copies
/// its contents.
#[derive(Clone, Debug, Default)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Arc<str>),
    List(Arc<[Value]>),
    /// A packed list of 32-bit floats (tensors, embeddings, pixels: `f32[N]` CSV columns). In
    /// expressions and output it behaves as a list of doubles.
    Floats(Arc<[f32]>),
    Map(Arc<Record>),
}

impl Value {
    /// The type name used in error messages (CEL's names).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "double",
            Value::Str(_) => "string",
            Value::List(_) | Value::Floats(_) => "list",
            Value::Map(_) => "map",
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            _ => None,
        }
    }

    pub fn str(s: &str) -> Value {
        Value::Str(Arc::from(s))
    }

    /// Feeds a stable hash of the value (the same in every process and release: key groups of
    /// checkpointed state depend on it).
    pub fn stable_hash(&self) -> u64 {
        let mut h = StableHasher::new();
        self.hash_into(&mut h);
        h.finish()
    }

    fn hash_into(&self, h: &mut StableHasher) {
        match self {
            Value::Null => h.write_u8(0),
            Value::Bool(b) => {
                h.write_u8(1);
                h.write_u8(*b as u8)
            }
            Value::Int(i) => h.write_word(2, *i as u64),
            Value::Float(f) => {
                h.write_u8(3);
                let f = if *f == 0.0 { 0.0 } else { *f };
                h.write_bytes(&f.to_bits().to_le_bytes())
            }
            Value::Str(s) => {
                h.write_u8(4);
                h.write_bytes(s.as_bytes())
            }
            Value::List(l) => {
                h.write_u8(5);
                for v in l.iter() {
                    v.hash_into(h)
                }
            }
            Value::Floats(l) => {
                h.write_u8(5);
                for f in l.iter() {
                    Value::Float(*f as f64).hash_into(h)
                }
            }
            Value::Map(m) => {
                h.write_u8(6);
                for (k, v) in m.fields() {
                    h.write_bytes(k.as_str().as_bytes());
                    v.hash_into(h)
                }
            }
        }
    }
}

/// FNV-1a with a final avalanche: stable across processes, unlike `std`'s `DefaultHasher`.
struct StableHasher(u64);

impl StableHasher {
    fn new() -> Self {
        StableHasher(0xcbf2_9ce4_8422_2325)
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
    }
    /// A whole 64-bit word at once (integers are most keys: one multiply instead of nine).
    fn write_word(&mut self, tag: u8, w: u64) {
        self.0 = (self.0 ^ tag as u64 ^ w.rotate_left(8)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u8(b)
        }
    }
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

impl PartialEq for Value {
    /// Numbers compare by value across int and double (`1 == 1.0`), as CEL does.
    fn eq(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Int(a), Value::Float(b)) | (Value::Float(b), Value::Int(a)) => (*a as f64) == *b,
            (Value::Float(a), Value::Float(b)) => a == b,
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Floats(a), Value::Floats(b)) => a == b,
            (Value::Floats(f), Value::List(l)) | (Value::List(l), Value::Floats(f)) => {
                f.len() == l.len() && f.iter().zip(l.iter()).all(|(a, b)| Value::Float(*a as f64) == *b)
            }
            (Value::Map(a), Value::Map(b)) => a.fields() == b.fields(),
            _ => false,
        }
    }
}

/// Equality used for grouping keys: like `==` but exact on types, so `1` and `1.0` are distinct
/// keys (they hash differently).
#[derive(Clone, Debug)]
pub struct Key(pub Value);

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.type_name() == other.0.type_name() && self.0 == other.0
    }
}
impl Eq for Key {}
impl std::hash::Hash for Key {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.stable_hash())
    }
}

/// A hasher for keys that already hash themselves well ([`Key`] writes its stable 64-bit hash):
/// it keeps the word instead of hashing it again. Use with `HashMap<Key, _, KeyHasher>`.
#[derive(Default, Clone, Copy)]
pub struct PassThroughHasher(u64);

impl std::hash::Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(29) ^ w).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w;
    }
    fn write_i64(&mut self, w: i64) {
        self.write_u64(w as u64)
    }
}

/// Build hasher for maps keyed by [`Key`] (or structs of keys and integers).
pub type KeyHasher = std::hash::BuildHasherDefault<PassThroughHasher>;

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::str(v)
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            other => f.write_str(&serde_json::to_string(other).unwrap_or_default()),
        }
    }
}

impl serde::Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Int(i) => s.serialize_i64(*i),
            Value::Float(x) if x.is_finite() => s.serialize_f64(*x),
            Value::Float(_) => s.serialize_unit(),
            Value::Str(v) => s.serialize_str(v),
            Value::List(l) => s.collect_seq(l.iter()),
            Value::Floats(l) => s.collect_seq(l.iter().map(|f| if f.is_finite() { Some(*f) } else { None })),
            Value::Map(m) => m.serialize(s),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v).map(Value::Int).map_err(|_| E::custom(format!("integer {v} is beyond the 64-bit signed range (write it as a string or a double)")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::str(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Value::List(items.into()))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Value, A::Error> {
        Ok(Value::Map(Arc::new(crate::record::RecordVisitor::visit_fields(map)?)))
    }
}
