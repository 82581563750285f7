//! Records and the batches they travel in.

use std::fmt;

use serde::ser::SerializeMap;

use crate::columns::Columns;
use crate::value::{Sym, Value};

/// Timestamp of a record without one (before event or ingestion time is assigned).
pub const NO_TIMESTAMP: i64 = i64::MIN;

/// Where a record came from: the source component and its position there (byte offset for files
/// and sockets, sequence number for generators). Carried so that a record rejected anywhere
/// downstream can be traced back to its input.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Default)]
pub struct Origin {
    /// Index of the source component in the job (see [`crate::plan::JobPlan::sources`]).
    pub source: u32,
    pub offset: u64,
}

/// One event: an ordered list of named fields, plus its timestamp and origin.
#[derive(Clone, Debug)]
pub struct Record {
    fields: Vec<(Sym, Value)>,
    /// Event or ingestion time in epoch milliseconds, or [`NO_TIMESTAMP`].
    pub timestamp: i64,
    pub origin: Origin,
    /// When the record entered the job ([`crate::time::mono_micros`]; 0 when unknown), for the
    /// source-to-sink latency that sinks measure. Not part of equality.
    pub born: u64,
}

impl PartialEq for Record {
    fn eq(&self, other: &Record) -> bool {
        self.fields == other.fields && self.timestamp == other.timestamp && self.origin == other.origin
    }
}

impl Default for Record {
    fn default() -> Self {
        Record::new()
    }
}

impl Record {
    pub fn new() -> Record {
        Record { fields: Vec::new(), timestamp: NO_TIMESTAMP, origin: Origin::default(), born: 0 }
    }

    pub fn with_capacity(n: usize) -> Record {
        Record { fields: Vec::with_capacity(n), timestamp: NO_TIMESTAMP, origin: Origin::default(), born: 0 }
    }

    /// The value of field `name`, if present.
    #[inline]
    pub fn get(&self, name: Sym) -> Option<&Value> {
        self.fields.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub fn get_str(&self, name: &str) -> Option<&Value> {
        self.get(Sym::new(name))
    }

    /// Sets field `name`, replacing an existing value in place or appending a new field.
    #[inline]
    pub fn set(&mut self, name: Sym, value: Value) {
        match self.fields.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.fields.push((name, value)),
        }
    }

    /// Appends a field without checking for an existing one (for builders that know the names
    /// are distinct).
    #[inline]
    pub fn push(&mut self, name: Sym, value: Value) {
        self.fields.push((name, value))
    }

    pub fn remove(&mut self, name: Sym) -> Option<Value> {
        let i = self.fields.iter().position(|(k, _)| *k == name)?;
        Some(self.fields.remove(i).1)
    }

    pub fn fields(&self) -> &[(Sym, Value)] {
        &self.fields
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Parses one JSON object into a record.
    pub fn from_json(text: &[u8]) -> Result<Record, serde_json::Error> {
        serde_json::from_slice(text)
    }

    /// Writes the record as one JSON object (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("writing JSON to a Vec cannot fail")
    }

    pub fn to_json(&self) -> String {
        let mut v = Vec::new();
        self.write_json(&mut v);
        String::from_utf8(v).expect("serde_json writes UTF-8")
    }
}

impl<S: AsRef<str>, V: Into<Value>> FromIterator<(S, V)> for Record {
    fn from_iter<I: IntoIterator<Item = (S, V)>>(iter: I) -> Self {
        let mut r = Record::new();
        for (k, v) in iter {
            r.set(Sym::new(k.as_ref()), v.into());
        }
        r
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json())
    }
}

impl serde::Serialize for Record {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            m.serialize_entry(k.as_str(), v)?;
        }
        m.end()
    }
}

impl<'de> serde::Deserialize<'de> for Record {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        d.deserialize_map(RecordVisitor)
    }
}

pub(crate) struct RecordVisitor;

impl RecordVisitor {
    pub(crate) fn visit_fields<'de, A: serde::de::MapAccess<'de>>(mut map: A) -> Result<Record, A::Error> {
        let mut r = Record::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            let v: Value = map.next_value()?;
            r.set(Sym::new(&k), v);
        }
        Ok(r)
    }
}

impl<'de> serde::de::Visitor<'de> for RecordVisitor {
    type Value = Record;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Record, A::Error> {
        Self::visit_fields(map)
    }
}

/// A batch of records: the unit that moves between operators. One actor message carries a whole
/// batch, so per-message costs are paid once per batch, not per record.
///
/// The records are stored either as columns ([`Columns`]: what generators and column operators
/// make, and what filters and maps evaluate with kernels) or as rows (what decoders of
/// free-form input and per-record operators make). Either way a per-record operator reads them
/// as [`Record`]s ([`into_records`](Self::into_records)).
///
/// A batch may be tagged with watermarks: `(n, wm)` means the sender's watermark became `wm`
/// after its first `n` records. Tagging keeps watermarks exactly where they belong among the
/// records without cutting batches into small pieces.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub data: Data,
    pub watermarks: Vec<(usize, crate::message::Watermark)>,
}

/// How a batch stores its records.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Rows(Vec<Record>),
    Columns(Columns),
}

impl Default for Data {
    fn default() -> Self {
        Data::Rows(Vec::new())
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new(Vec::new())
    }
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::Rows(r) => r.len(),
            Data::Columns(c) => c.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The records, as rows.
    pub fn into_records(self) -> Vec<Record> {
        match self {
            Data::Rows(r) => r,
            Data::Columns(c) => c.to_records(),
        }
    }

    /// Splits off records `at..`, keeping `..at` here.
    pub fn split_off(&mut self, at: usize) -> Data {
        match self {
            Data::Rows(r) => Data::Rows(r.split_off(at)),
            Data::Columns(c) => Data::Columns(c.split_off(at)),
        }
    }
}

impl Batch {
    pub fn new(records: Vec<Record>) -> Batch {
        Batch { data: Data::Rows(records), watermarks: Vec::new() }
    }

    pub fn from_columns(columns: Columns) -> Batch {
        Batch { data: Data::Columns(columns), watermarks: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The records, as rows (materialised from columns if need be).
    pub fn into_records(self) -> Vec<Record> {
        self.data.into_records()
    }

    /// The records, as rows, without consuming the batch.
    pub fn records(&self) -> std::borrow::Cow<'_, [Record]> {
        match &self.data {
            Data::Rows(r) => std::borrow::Cow::Borrowed(r),
            Data::Columns(c) => std::borrow::Cow::Owned(c.to_records()),
        }
    }

    /// For operators with a column path: the batch's columns, or, for a batch of rows, `None`
    /// after handing each record to `each` (the operator's `process`).
    pub fn into_columns_or<E>(self, mut each: impl FnMut(Record) -> Result<(), E>) -> Result<Option<Columns>, E> {
        match self.data {
            Data::Columns(c) => Ok(Some(c)),
            Data::Rows(records) => {
                for r in records {
                    each(r)?;
                }
                Ok(None)
            }
        }
    }

    /// The columns, when the batch is stored as columns.
    pub fn columns(&self) -> Option<&Columns> {
        match &self.data {
            Data::Columns(c) => Some(c),
            Data::Rows(_) => None,
        }
    }
}

/// Output in the order it was emitted: runs of records emitted one by one, and column batches.
/// Positions (of watermarks, of deferred work) count records across all of it.
#[derive(Default, Debug)]
pub(crate) struct Emitted {
    done: Vec<Data>,
    done_len: usize,
    open: Vec<Record>,
}

impl Emitted {
    #[inline]
    pub(crate) fn push(&mut self, r: Record) {
        self.open.push(r)
    }

    pub(crate) fn push_columns(&mut self, c: Columns) {
        if c.is_empty() {
            return;
        }
        self.close();
        self.done_len += c.len();
        self.done.push(Data::Columns(c));
    }

    /// Ends the current run of records, so that what comes next starts a new piece; returns the
    /// number of pieces before it.
    pub(crate) fn close(&mut self) -> usize {
        if !self.open.is_empty() {
            self.done_len += self.open.len();
            self.done.push(Data::Rows(std::mem::take(&mut self.open)));
        }
        self.done.len()
    }

    pub(crate) fn len(&self) -> usize {
        self.done_len + self.open.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.open.reserve(n)
    }

    /// Every record so far, as rows.
    pub(crate) fn to_records(&self) -> Vec<Record> {
        let mut out = Vec::with_capacity(self.len());
        for d in &self.done {
            match d {
                Data::Rows(r) => out.extend(r.iter().cloned()),
                Data::Columns(c) => out.extend(c.to_records()),
            }
        }
        out.extend(self.open.iter().cloned());
        out
    }

    /// Takes the pieces out, in order.
    pub(crate) fn take(&mut self) -> Vec<Data> {
        self.close();
        self.done_len = 0;
        std::mem::take(&mut self.done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_keeps_field_order_and_types() {
        let text = br#"{"b":1,"a":"x","c":2.5,"d":null,"e":[1,true],"f":{"g":1}}"#;
        let r = Record::from_json(text).unwrap();
        assert_eq!(r.to_json(), std::str::from_utf8(text).unwrap());
        assert_eq!(r.get_str("b"), Some(&Value::Int(1)));
        assert_eq!(r.get_str("c"), Some(&Value::Float(2.5)));
    }

    #[test]
    fn set_replaces_in_place() {
        let mut r: Record = [("a", 1i64), ("b", 2)].into_iter().collect();
        r.set(Sym::new("a"), Value::Int(5));
        assert_eq!(r.to_json(), r#"{"a":5,"b":2}"#);
    }

    #[test]
    fn non_objects_are_rejected() {
        assert!(Record::from_json(b"[1,2]").is_err());
        assert!(Record::from_json(b"{\"a\":").is_err());
    }
}
