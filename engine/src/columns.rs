//! Column batches: records stored field by field.
//!
//! A [`Columns`] holds `len` records as one [`Column`] per field (a shared schema: every record has
//! every field, in the same order) plus the per-record metadata as plain arrays (timestamps, source
//! offsets) and what is the same for the whole batch (source index, entry time). Typed columns
//! (`Int`, `Float`, `Bool`) are flat vectors with no nulls, so a filter or a map over them is a loop
//! over a slice the compiler vectorises ([`crate::expr::Expr::eval_columns`]); anything else — nulls,
//! strings, lists, a field whose type changes from record to record — is an `Any` column of
//! [`Value`]s, which every kernel still accepts (per record, as the row evaluator does).
//!
//! Invariants: every column and the metadata arrays have exactly `len` entries; field names are
//! distinct. A record materialised from row `i` ([`Columns::row`]) equals the record that a row
//! operator would have built: same fields in the same order, same timestamp and origin.

use crate::record::{Origin, Record, NO_TIMESTAMP};
use crate::value::{Sym, Value};

/// One field of every record of a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Column {
    Int(Vec<i64>),
    Float(Vec<f64>),
    Bool(Vec<bool>),
    /// Any values, nulls included (the fallback for what has no typed form).
    Any(Vec<Value>),
}

impl Column {
    pub fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Any(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value in row `i`.
    #[inline]
    pub fn get(&self, i: usize) -> Value {
        match self {
            Column::Int(v) => Value::Int(v[i]),
            Column::Float(v) => Value::Float(v[i]),
            Column::Bool(v) => Value::Bool(v[i]),
            Column::Any(v) => v[i].clone(),
        }
    }

    /// A column of `n` copies of `v`, typed where `v` has a typed form.
    pub fn repeat(v: &Value, n: usize) -> Column {
        match v {
            Value::Int(x) => Column::Int(vec![*x; n]),
            Value::Float(x) => Column::Float(vec![*x; n]),
            Value::Bool(x) => Column::Bool(vec![*x; n]),
            other => Column::Any(vec![other.clone(); n]),
        }
    }

    /// A column of these values: typed when they all have one type with a typed form.
    pub fn from_values(values: Vec<Value>) -> Column {
        let all = |p: fn(&Value) -> bool| values.iter().all(p);
        if values.is_empty() {
            Column::Any(values)
        } else if all(|v| matches!(v, Value::Int(_))) {
            Column::Int(values.iter().map(|v| if let Value::Int(x) = v { *x } else { unreachable!() }).collect())
        } else if all(|v| matches!(v, Value::Float(_))) {
            Column::Float(values.iter().map(|v| if let Value::Float(x) = v { *x } else { unreachable!() }).collect())
        } else if all(|v| matches!(v, Value::Bool(_))) {
            Column::Bool(values.iter().map(|v| if let Value::Bool(x) = v { *x } else { unreachable!() }).collect())
        } else {
            Column::Any(values)
        }
    }

    /// The rows at `rows`, in that order.
    pub fn gather(&self, rows: &[u32]) -> Column {
        fn g<T: Clone>(v: &[T], rows: &[u32]) -> Vec<T> {
            rows.iter().map(|&i| v[i as usize].clone()).collect()
        }
        match self {
            Column::Int(v) => Column::Int(g(v, rows)),
            Column::Float(v) => Column::Float(g(v, rows)),
            Column::Bool(v) => Column::Bool(g(v, rows)),
            Column::Any(v) => Column::Any(g(v, rows)),
        }
    }

    /// The rows where `keep` is set (`keep` has one entry per row).
    pub fn select(&self, keep: &[bool]) -> Column {
        self.select_runs(&runs(keep))
    }

    /// The rows in `runs` (ranges of rows, in order).
    fn select_runs(&self, runs: &[(usize, usize)]) -> Column {
        fn s<T: Clone>(v: &[T], runs: &[(usize, usize)]) -> Vec<T> {
            let mut out = Vec::with_capacity(runs.iter().map(|(a, b)| b - a).sum());
            for &(a, b) in runs {
                out.extend_from_slice(&v[a..b]);
            }
            out
        }
        match self {
            Column::Int(v) => Column::Int(s(v, runs)),
            Column::Float(v) => Column::Float(s(v, runs)),
            Column::Bool(v) => Column::Bool(s(v, runs)),
            Column::Any(v) => Column::Any(s(v, runs)),
        }
    }

    /// Splits off rows `at..`, keeping `..at` here.
    pub fn split_off(&mut self, at: usize) -> Column {
        match self {
            Column::Int(v) => Column::Int(v.split_off(at)),
            Column::Float(v) => Column::Float(v.split_off(at)),
            Column::Bool(v) => Column::Bool(v.split_off(at)),
            Column::Any(v) => Column::Any(v.split_off(at)),
        }
    }
}

/// The runs of set entries of `keep`, as ranges `(start, end)`.
fn runs(keep: &[bool]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < keep.len() {
        if keep[i] {
            let start = i;
            while i < keep.len() && keep[i] {
                i += 1;
            }
            runs.push((start, i));
        } else {
            i += 1;
        }
    }
    runs
}

/// Records stored as columns (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct Columns {
    len: usize,
    fields: Vec<(Sym, Column)>,
    /// Event or ingestion time per record ([`NO_TIMESTAMP`] before one is assigned).
    pub timestamps: Vec<i64>,
    /// Position of each record in its source ([`Origin::offset`]).
    pub offsets: Vec<u64>,
    /// The source every record of the batch came from ([`Origin::source`]).
    pub source: u32,
    /// When the batch entered the job ([`Record::born`]).
    pub born: u64,
}

impl Columns {
    /// A batch of `len` records with no fields yet, no timestamps, and offsets `offsets`.
    pub fn new(offsets: Vec<u64>) -> Columns {
        let len = offsets.len();
        Columns { len, fields: Vec::new(), timestamps: vec![NO_TIMESTAMP; len], offsets, source: 0, born: 0 }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The fields, in schema order.
    pub fn fields(&self) -> &[(Sym, Column)] {
        &self.fields
    }

    /// The column of field `name`.
    #[inline]
    pub fn column(&self, name: Sym) -> Option<&Column> {
        self.fields.iter().find(|(k, _)| *k == name).map(|(_, c)| c)
    }

    /// Sets field `name` of every record (replacing it in place, or appending it at the end of the
    /// schema, as [`Record::set`] does).
    pub fn set(&mut self, name: Sym, column: Column) {
        assert_eq!(column.len(), self.len, "column `{name}` has {} rows in a batch of {}", column.len(), self.len);
        match self.fields.iter_mut().find(|(k, _)| *k == name) {
            Some((_, c)) => *c = column,
            None => self.fields.push((name, column)),
        }
    }

    /// Removes field `name` from every record.
    pub fn remove(&mut self, name: Sym) -> Option<Column> {
        let i = self.fields.iter().position(|(k, _)| *k == name)?;
        Some(self.fields.remove(i).1)
    }

    /// Record `i`, materialised.
    pub fn row(&self, i: usize) -> Record {
        let mut r = Record::with_capacity(self.fields.len());
        for (name, c) in &self.fields {
            r.push(*name, c.get(i));
        }
        r.timestamp = self.timestamps[i];
        r.origin = Origin { source: self.source, offset: self.offsets[i] };
        r.born = self.born;
        r
    }

    /// Every record, materialised (what a per-record operator reads).
    pub fn to_records(&self) -> Vec<Record> {
        (0..self.len).map(|i| self.row(i)).collect()
    }

    /// The records where `keep` is set, in order. Copies runs of kept records whole (a
    /// selective filter keeps long runs).
    pub fn select(self, keep: &[bool]) -> Columns {
        debug_assert_eq!(keep.len(), self.len);
        let runs = runs(keep);
        if runs.len() == 1 && runs[0] == (0, self.len) {
            return self;
        }
        let slices = |v: &[u64]| {
            let mut out = Vec::with_capacity(self.len);
            runs.iter().for_each(|&(a, b)| out.extend_from_slice(&v[a..b]));
            out
        };
        let timestamps = {
            let mut out = Vec::with_capacity(self.len);
            runs.iter().for_each(|&(a, b)| out.extend_from_slice(&self.timestamps[a..b]));
            out
        };
        Columns {
            len: runs.iter().map(|(a, b)| b - a).sum(),
            fields: self.fields.iter().map(|(k, c)| (*k, c.select_runs(&runs))).collect(),
            timestamps,
            offsets: slices(&self.offsets),
            source: self.source,
            born: self.born,
        }
    }

    /// The records at `rows`, in that order.
    pub fn gather(&self, rows: &[u32]) -> Columns {
        Columns {
            len: rows.len(),
            fields: self.fields.iter().map(|(k, c)| (*k, c.gather(rows))).collect(),
            timestamps: rows.iter().map(|&i| self.timestamps[i as usize]).collect(),
            offsets: rows.iter().map(|&i| self.offsets[i as usize]).collect(),
            source: self.source,
            born: self.born,
        }
    }

    /// Splits off records `at..`, keeping `..at` here.
    pub fn split_off(&mut self, at: usize) -> Columns {
        assert!(at <= self.len);
        let rest = Columns {
            len: self.len - at,
            fields: self.fields.iter_mut().map(|(k, c)| (*k, c.split_off(at))).collect(),
            timestamps: self.timestamps.split_off(at),
            offsets: self.offsets.split_off(at),
            source: self.source,
            born: self.born,
        };
        self.len = at;
        rest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Columns {
        let mut c = Columns::new(vec![10, 11, 12]);
        c.set(Sym::new("a"), Column::Int(vec![1, 2, 3]));
        c.set(Sym::new("b"), Column::Any(vec![Value::str("x"), Value::Null, Value::Float(1.5)]));
        c.timestamps = vec![5, 6, 7];
        c.source = 2;
        c
    }

    #[test]
    fn rows_are_the_records_a_row_operator_would_build() {
        let r = batch().row(1);
        assert_eq!(r.to_json(), r#"{"a":2,"b":null}"#);
        assert_eq!((r.timestamp, r.origin), (6, Origin { source: 2, offset: 11 }));
    }

    #[test]
    fn select_gather_and_split_keep_rows_and_metadata_together() {
        let c = batch();
        let s = c.clone().select(&[true, false, true]);
        assert_eq!(s.to_records(), vec![c.row(0), c.row(2)]);
        let g = c.gather(&[2, 0]);
        assert_eq!(g.to_records(), vec![c.row(2), c.row(0)]);
        let mut front = c.clone();
        let back = front.split_off(1);
        assert_eq!(front.to_records(), vec![c.row(0)]);
        assert_eq!(back.to_records(), vec![c.row(1), c.row(2)]);
    }

    #[test]
    fn set_replaces_in_place_and_appends_new_fields() {
        let mut c = batch();
        c.set(Sym::new("a"), Column::Bool(vec![true, false, true]));
        c.set(Sym::new("z"), Column::Float(vec![0.0; 3]));
        assert_eq!(c.row(0).to_json(), r#"{"a":true,"b":"x","z":0.0}"#);
        c.remove(Sym::new("b"));
        assert_eq!(c.row(0).to_json(), r#"{"a":true,"z":0.0}"#);
    }

    #[test]
    fn from_values_types_a_column_only_when_every_value_has_that_type() {
        assert_eq!(Column::from_values(vec![Value::Int(1), Value::Int(2)]), Column::Int(vec![1, 2]));
        assert!(matches!(Column::from_values(vec![Value::Int(1), Value::Float(2.0)]), Column::Any(_)));
        assert!(matches!(Column::from_values(vec![Value::Int(1), Value::Null]), Column::Any(_)));
    }
}
