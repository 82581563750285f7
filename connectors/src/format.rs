//! Record formats: JSON Lines and CSV (with a header line or a declared schema).

use std::borrow::Cow;
use std::sync::Arc;

use rill_engine::config::{ConfigError, Spanned};
use rill_engine::columns::{Column, Columns};
use rill_engine::record::{Batch, Data, Record};
use rill_engine::value::{Sym, Value};
use rill_engine::config::Ordered;

/// `format: json`, `format: csv`, or `format: {type: csv, header: false, schema: {...}}`
/// (absent: JSON Lines).
#[derive(serde::Deserialize, Clone, Debug, Default)]
#[serde(transparent)]
pub struct FormatConfig(Option<Spanned<FormatRaw>>);

#[derive(serde::Deserialize, Clone, Debug)]
#[serde(untagged)]
pub enum FormatRaw {
    Name(String),
    Spec(FormatSpec),
}

#[derive(serde::Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    #[serde(rename = "type")]
    kind: String,
    /// CSV: the first line of each file names the columns (default true).
    header: Option<bool>,
    /// CSV: one character (default `,`).
    delimiter: Option<char>,
    /// CSV: `column: type` in column order; types `string`, `i64`, `f64`, `bool`, and arrays
    /// `f32[N]` / `i64[N]` that take N consecutive columns.
    schema: Option<Ordered<String>>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ColumnType {
    String,
    Int,
    Float,
    Bool,
    /// `f32[N]`: N consecutive columns into one packed float list.
    F32s(usize),
    /// `i64[N]`: N consecutive columns into one list of ints.
    Ints(usize),
}

impl ColumnType {
    /// How many CSV columns the type takes.
    fn width(self) -> usize {
        match self {
            ColumnType::F32s(n) | ColumnType::Ints(n) => n,
            _ => 1,
        }
    }

    fn parse(name: &str) -> Option<ColumnType> {
        Some(match name {
            "string" | "str" => ColumnType::String,
            "i64" | "int" | "long" => ColumnType::Int,
            "f64" | "double" | "float" => ColumnType::Float,
            "bool" | "boolean" => ColumnType::Bool,
            _ => {
                let (elem, rest) = name.split_once('[')?;
                let n: usize = rest.strip_suffix(']')?.trim().parse().ok().filter(|&n| n > 0)?;
                match elem.trim() {
                    "f32" | "float32" => ColumnType::F32s(n),
                    "i64" | "int64" => ColumnType::Ints(n),
                    _ => return None,
                }
            }
        })
    }
}

/// A checked format.
#[derive(Clone, Debug)]
pub enum Format {
    Json,
    /// Each line (each message) is one string field, `value`; written back as that field's text.
    Raw,
    Csv { header: bool, delimiter: u8, schema: Option<Arc<Vec<(Sym, ColumnType)>>> },
}

impl FormatConfig {
    pub fn build(&self) -> Result<Format, ConfigError> {
        let Some(raw) = &self.0 else { return Ok(Format::Json) };
        let span = &raw.span;
        let (kind, spec) = match &raw.value {
            FormatRaw::Name(n) => (n, None),
            FormatRaw::Spec(s) => (&s.kind, Some(s)),
        };
        match kind.as_str() {
            "json" | "jsonl" | "ndjson" => {
                if let Some(s) = spec {
                    if s.header.is_some() || s.delimiter.is_some() || s.schema.is_some() {
                        return Err(ConfigError::new(Some(span), "`header`, `delimiter` and `schema` are CSV options"));
                    }
                }
                Ok(Format::Json)
            }
            "raw" | "text" => {
                if spec.is_some_and(|s| s.header.is_some() || s.delimiter.is_some() || s.schema.is_some()) {
                    return Err(ConfigError::new(Some(span), "`header`, `delimiter` and `schema` are CSV options"));
                }
                Ok(Format::Raw)
            }
            "csv" => {
                let header = spec.and_then(|s| s.header).unwrap_or(true);
                let delimiter = spec.and_then(|s| s.delimiter).unwrap_or(',');
                if !delimiter.is_ascii() {
                    return Err(ConfigError::new(Some(span), "the CSV delimiter must be one ASCII character"));
                }
                let schema = match spec.and_then(|s| s.schema.as_ref()) {
                    None => None,
                    Some(cols) => {
                        let mut out = Vec::new();
                        for (name, t) in &cols.0 {
                            let Some(ty) = ColumnType::parse(t.trim()) else {
                                return Err(ConfigError::new(Some(span), format!("unknown type `{t}` for column `{name}`"))
                                    .hint("column types: string, i64, f64, bool, and arrays over N columns: f32[N], i64[N]"));
                            };
                            out.push((Sym::new(name), ty));
                        }
                        Some(Arc::new(out))
                    }
                };
                if !header && schema.is_none() {
                    return Err(ConfigError::new(Some(span), "CSV without a header line needs a `schema`")
                        .hint("add `schema: {column: type, ...}` in column order, or `header: true`"));
                }
                Ok(Format::Csv { header, delimiter: delimiter as u8, schema })
            }
            other => Err(ConfigError::new(Some(span), format!("unknown format `{other}`")).hint("formats: json, csv, raw")),
        }
    }
}

/// Decodes lines of one input (one file, one connection) into records.
pub struct Decoder {
    format: Format,
    /// CSV column names from the header line, once read (CSV without a schema).
    columns: Option<Vec<Sym>>,
    /// CSV with a schema and a header line: the header is still to be skipped.
    skip_header: bool,
    /// No line decoded yet (a byte-order mark may start the first).
    at_start: bool,
}

/// Why a line is not a record: message and 1-based column.
#[derive(Debug)]
pub struct DecodeError {
    pub message: String,
    pub column: usize,
    /// The whole input is unusable (a CSV header naming a column twice): the source fails
    /// rather than reject every line.
    pub fatal: bool,
}

impl DecodeError {
    fn new(message: impl Into<String>, column: usize) -> DecodeError {
        DecodeError { message: message.into(), column, fatal: false }
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl Decoder {
    pub fn new(format: &Format) -> Decoder {
        let skip_header = matches!(format, Format::Csv { header: true, schema: Some(_), .. });
        Decoder { format: format.clone(), columns: None, skip_header, at_start: true }
    }

    /// Decodes one line (without its newline). `Ok(None)` for lines that carry no record
    /// (blank lines, the CSV header). A UTF-8 byte-order mark before the first line is skipped.
    pub fn decode(&mut self, line: &[u8]) -> Result<Option<Record>, DecodeError> {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = if std::mem::take(&mut self.at_start) { line.strip_prefix(BOM).unwrap_or(line) } else { line };
        if line.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        match &self.format {
            Format::Raw => {
                let mut r = Record::with_capacity(1);
                r.push(Sym::new("value"), Value::str(&String::from_utf8_lossy(line)));
                Ok(Some(r))
            }
            Format::Json => {
                let r = Record::from_json(line).map_err(|e| DecodeError::new(format!("invalid JSON: {e}"), e.column()))?;
                // serde_json reads an integer literal beyond 64 bits as a double: look for one,
                // only where a double that large was read (other records cost nothing more).
                if r.fields().iter().any(|(_, v)| has_huge_double(v)) {
                    if let Some((column, digits)) = huge_integer(line) {
                        return Err(DecodeError::new(format!("invalid JSON: integer {digits} is beyond the 64-bit range (write it as a string or a double)"), column));
                    }
                }
                Ok(Some(r))
            }
            Format::Csv { delimiter, schema, .. } => {
                let text = std::str::from_utf8(line).map_err(|e| DecodeError::new(format!("not UTF-8: {e}"), e.valid_up_to() + 1))?;
                let cells = split_csv(text, *delimiter as char).map_err(|(message, column)| DecodeError::new(message, column))?;
                if let Some(schema) = schema {
                    if std::mem::take(&mut self.skip_header) {
                        return Ok(None);
                    }
                    return decode_with_schema(schema, cells, text.len()).map(Some);
                }
                let Some(columns) = &self.columns else {
                    let names: Vec<Sym> = cells.iter().map(|(c, _)| Sym::new(c.trim())).collect();
                    for (i, name) in names.iter().enumerate() {
                        if let Some(j) = names[..i].iter().position(|n| n == name) {
                            return Err(DecodeError {
                                message: format!("the CSV header names column `{name}` twice (fields {} and {}); rename one", j + 1, i + 1),
                                column: cells[i].1,
                                fatal: true,
                            });
                        }
                    }
                    self.columns = Some(names);
                    return Ok(None);
                };
                if cells.len() != columns.len() {
                    return Err(DecodeError::new(
                        format!("expected {} CSV fields, found {}", columns.len(), cells.len()),
                        cells.get(columns.len()).map(|(_, c)| *c).unwrap_or(text.len() + 1),
                    ));
                }
                let mut r = Record::with_capacity(columns.len());
                for ((cell, col), name) in cells.into_iter().zip(columns) {
                    r.push(*name, infer(&cell).map_err(|m| DecodeError::new(format!("column `{name}`: {m}"), col))?);
                }
                Ok(Some(r))
            }
        }
    }
}

/// The fields of a CSV line with their 1-based columns (slices of the line unless unquoted).
pub type Cells<'a> = Vec<(Cow<'a, str>, usize)>;

/// One CSV line typed by a schema (whose array types take several columns).
fn decode_with_schema(schema: &[(Sym, ColumnType)], cells: Cells<'_>, line_len: usize) -> Result<Record, DecodeError> {
    let expected: usize = schema.iter().map(|(_, t)| t.width()).sum();
    if cells.len() != expected {
        return Err(DecodeError::new(
            format!("expected {expected} CSV fields, found {} (by the schema)", cells.len()),
            cells.get(expected).map(|(_, c)| *c).unwrap_or(line_len + 1),
        ));
    }
    let mut r = Record::with_capacity(schema.len());
    let mut cells = cells.into_iter();
    for (name, t) in schema {
        let bad = |m: String, col: usize| DecodeError::new(format!("column `{name}`: {m}"), col);
        let value = match *t {
            ColumnType::F32s(n) => {
                let mut v = Vec::with_capacity(n);
                for (i, (cell, col)) in cells.by_ref().take(n).enumerate() {
                    let x = match small_uint(&cell) {
                        Some(u) => u as f32,
                        None => match cell.trim().parse::<f32>() {
                            Ok(x) if x.is_finite() => x,
                            Ok(_) => return Err(bad(format!("element {i}: `{cell}` is not a finite number"), col)),
                            Err(_) => return Err(bad(format!("element {i}: `{cell}` is not an f32"), col)),
                        },
                    };
                    v.push(x);
                }
                Value::Floats(v.into())
            }
            ColumnType::Ints(n) => {
                let mut v = Vec::with_capacity(n);
                for (i, (cell, col)) in cells.by_ref().take(n).enumerate() {
                    let x = cell.trim().parse::<i64>().map_err(|_| bad(format!("element {i}: `{cell}` is not an i64"), col))?;
                    v.push(Value::Int(x));
                }
                Value::List(v.into())
            }
            t => {
                let (cell, col) = cells.next().expect("counted above");
                typed(&cell, t).map_err(|m| bad(m, col))?
            }
        };
        r.push(*name, value);
    }
    Ok(r)
}

/// A cell of up to 7 ASCII digits (pixels, counts): parsed directly, much faster than a general
/// float parse, and exact as an f32.
#[inline]
fn small_uint(cell: &str) -> Option<u32> {
    let b = cell.as_bytes();
    if b.is_empty() || b.len() > 7 {
        return None;
    }
    b.iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + (c - b'0') as u32))
}

/// Whether `v` holds a double at least as large as an integer beyond 64 bits would read as.
fn has_huge_double(v: &Value) -> bool {
    match v {
        Value::Float(f) => f.abs() >= 9.2e18,
        Value::List(l) => l.iter().any(has_huge_double),
        Value::Map(m) => m.fields().iter().any(|(_, v)| has_huge_double(v)),
        _ => false,
    }
}

/// The first integer literal of a JSON line (outside strings) beyond the 64-bit range — above
/// u64's maximum, or below i64's minimum — with its 1-based column.
fn huge_integer(line: &[u8]) -> Option<(usize, String)> {
    let (mut in_string, mut escaped, mut i) = (false, false, 0);
    while i < line.len() {
        let b = line[i];
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            i += 1;
            continue;
        }
        if b == b'"' {
            in_string = true;
        } else if b.is_ascii_digit() {
            let start = i;
            while i < line.len() && line[i].is_ascii_digit() {
                i += 1;
            }
            let before = start.checked_sub(1).map(|p| line[p]);
            let part_of_double = matches!(before, Some(b'.' | b'e' | b'E' | b'+')) || matches!(line.get(i), Some(b'.' | b'e' | b'E'));
            let digits = &line[start..i];
            let negative = before == Some(b'-');
            let limit: &[u8] = if negative { b"9223372036854775808" } else { b"18446744073709551615" };
            if !part_of_double && (digits.len() > limit.len() || (digits.len() == limit.len() && digits > limit)) {
                let shown = String::from_utf8_lossy(digits);
                return Some(if negative { (start, format!("-{shown}")) } else { (start + 1, shown.into_owned()) });
            }
            continue;
        }
        i += 1;
    }
    None
}

/// Whether `cell` is written as an integer (an optional sign, then digits).
fn integer_literal(cell: &str) -> bool {
    let digits = cell.strip_prefix(['-', '+']).unwrap_or(cell);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// A double that is finite; NaN and the infinities are errors, not values that would be
/// written as null.
fn finite(cell: &str, x: f64) -> Result<Value, String> {
    if x.is_finite() {
        Ok(Value::Float(x))
    } else {
        Err(format!("`{cell}` is not a finite number"))
    }
}

/// A header CSV cell's value: an integer, a double, a bool or a string. Words a double parser
/// would read as NaN or an infinity (`nan`, `inf`, `Infinity`) stay strings, as written: a
/// column declared `f64` in a schema rejects them instead.
fn infer(cell: &str) -> Result<Value, String> {
    if cell.is_empty() {
        Ok(Value::Null)
    } else if let Ok(i) = cell.parse::<i64>() {
        Ok(Value::Int(i))
    } else if integer_literal(cell) {
        Err(format!("integer `{cell}` is beyond the 64-bit signed range"))
    } else if let Ok(f) = cell.parse::<f64>() {
        if f.is_finite() {
            Ok(Value::Float(f))
        } else if cell.bytes().any(|b| b.is_ascii_digit()) {
            Err(format!("`{cell}` is not a finite number")) // too large for a double: `1e999`
        } else {
            Ok(Value::str(cell)) // a word: `nan`, `inf`
        }
    } else {
        Ok(match cell {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::str(cell),
        })
    }
}

fn typed(cell: &str, t: ColumnType) -> Result<Value, String> {
    if cell.is_empty() && t != ColumnType::String {
        return Ok(Value::Null);
    }
    match t {
        ColumnType::String => Ok(Value::str(cell)),
        ColumnType::Int => cell.trim().parse().map(Value::Int).map_err(|_| match integer_literal(cell.trim()) {
            true => format!("integer `{cell}` is beyond the 64-bit signed range"),
            false => format!("`{cell}` is not an i64"),
        }),
        ColumnType::Float => cell.trim().parse().map_err(|_| format!("`{cell}` is not an f64")).and_then(|x| finite(cell, x)),
        ColumnType::Bool => match cell.trim() {
            "true" | "1" => Ok(Value::Bool(true)),
            "false" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("`{cell}` is not a bool")),
        },
        ColumnType::F32s(_) | ColumnType::Ints(_) => unreachable!("arrays are decoded by decode_with_schema"),
    }
}

/// Splits one CSV line (RFC 4180 quoting; a quoted field cannot span lines). Returns each field
/// with its 1-based start column.
pub fn split_csv(line: &str, delim: char) -> Result<Cells<'_>, (String, usize)> {
    if !line.contains('"') {
        // No quoting: every field is a slice of the line (array columns make hundreds a line).
        if line.is_ascii() && delim.is_ascii() {
            // Columns are byte offsets, and the delimiter one byte: a plain byte scan.
            let d = delim as u8;
            let mut out = Vec::with_capacity(line.len() / 2 + 1);
            let mut start = 0;
            for (i, &b) in line.as_bytes().iter().enumerate() {
                if b == d {
                    out.push((Cow::Borrowed(&line[start..i]), start + 1));
                    start = i + 1;
                }
            }
            out.push((Cow::Borrowed(&line[start..]), start + 1));
            return Ok(out);
        }
        let mut col = 1;
        return Ok(line
            .split(delim)
            .map(|f| {
                let at = col;
                col += f.chars().count() + 1;
                (Cow::Borrowed(f), at)
            })
            .collect());
    }
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    // 1-based column (in characters) of the next field; counted as we go (a line has hundreds
    // of fields for array columns).
    let mut col = 1;
    let mut seen = 0;
    loop {
        let start = chars.peek().map(|(i, _)| *i).unwrap_or(line.len());
        col += line[seen..start].chars().count();
        seen = start;
        let mut field = String::new();
        if chars.peek().map(|(_, c)| *c) == Some('"') {
            chars.next();
            loop {
                match chars.next() {
                    Some((_, '"')) if chars.peek().map(|(_, c)| *c) == Some('"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some((_, '"')) => break,
                    Some((_, c)) => field.push(c),
                    None => return Err(("unterminated quoted field".into(), col)),
                }
            }
            match chars.next() {
                None => {
                    out.push((Cow::Owned(field), col));
                    return Ok(out);
                }
                Some((_, c)) if c == delim => out.push((Cow::Owned(field), col)),
                Some((i, _)) => return Err(("text after a closing quote".into(), line[..i].chars().count() + 1)),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push((Cow::Owned(field), col));
                        return Ok(out);
                    }
                    Some((_, c)) if c == delim => break,
                    Some((_, c)) => field.push(c),
                }
            }
            out.push((Cow::Owned(field), col));
        }
    }
}

/// Encodes records as lines.
pub struct Encoder {
    format: Format,
    columns: Option<Vec<Sym>>,
}

impl Encoder {
    pub fn new(format: &Format) -> Encoder {
        Encoder { format: format.clone(), columns: None }
    }

    /// Appends `record` and a newline to `out`.
    pub fn encode(&mut self, record: &Record, out: &mut Vec<u8>) {
        match &self.format {
            Format::Json => record.write_json(out),
            Format::Raw => match record.get(Sym::new("value")) {
                None | Some(Value::Null) => {}
                Some(Value::Str(s)) => out.extend_from_slice(s.as_bytes()),
                Some(v) => out.extend_from_slice(v.to_string().as_bytes()),
            },
            Format::Csv { delimiter, header, .. } => {
                let d = *delimiter as char;
                if self.columns.is_none() {
                    let cols: Vec<Sym> = record.fields().iter().map(|(k, _)| *k).collect();
                    if *header {
                        let line: Vec<String> = cols.iter().map(|c| csv_cell(c.as_str(), d)).collect();
                        out.extend_from_slice(line.join(&d.to_string()).as_bytes());
                        out.push(b'\n');
                    }
                    self.columns = Some(cols);
                }
                let cols = self.columns.as_ref().expect("set above");
                let cells: Vec<String> = cols
                    .iter()
                    .map(|c| match record.get(*c) {
                        None | Some(Value::Null) => String::new(),
                        Some(Value::Str(s)) => csv_cell(s, d),
                        Some(v) => csv_cell(&v.to_string(), d),
                    })
                    .collect();
                out.extend_from_slice(cells.join(&d.to_string()).as_bytes());
            }
        }
        out.push(b'\n');
    }
}

impl Encoder {
    /// Appends every record of `batch`, a line each.
    pub fn encode_batch(&mut self, batch: &Batch, out: &mut Vec<u8>) {
        match &batch.data {
            Data::Columns(c) => self.encode_columns(c, out),
            Data::Rows(records) => records.iter().for_each(|r| self.encode(r, out)),
        }
    }

    /// Appends every record of `columns` (a line each) to `out`, as [`encode`](Self::encode)
    /// would for the records they hold. JSON is written straight from the columns: field names
    /// once per batch, no record built.
    pub fn encode_columns(&mut self, columns: &Columns, out: &mut Vec<u8>) {
        if !matches!(self.format, Format::Json) {
            for i in 0..columns.len() {
                self.encode(&columns.row(i), out);
            }
            return;
        }
        let names: Vec<Vec<u8>> = columns
            .fields()
            .iter()
            .enumerate()
            .map(|(i, (k, _))| {
                let mut n = if i == 0 { b"{".to_vec() } else { b",".to_vec() };
                serde_json::to_writer(&mut n, k.as_str()).expect("JSON to a Vec");
                n.push(b':');
                n
            })
            .collect();
        for i in 0..columns.len() {
            if names.is_empty() {
                out.push(b'{');
            }
            for (name, (_, c)) in names.iter().zip(columns.fields()) {
                out.extend_from_slice(name);
                match c {
                    Column::Int(v) => out.extend_from_slice(itoa::Buffer::new().format(v[i]).as_bytes()),
                    Column::Bool(v) => out.extend_from_slice(if v[i] { b"true" } else { b"false" }),
                    c => serde_json::to_writer(&mut *out, &c.get(i)).expect("JSON to a Vec"),
                }
            }
            out.extend_from_slice(b"}\n");
        }
    }
}

fn csv_cell(s: &str, d: char) -> String {
    if s.contains([d, '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_batches_encode_as_their_records_do() {
        let mut c = Columns::new(vec![0, 1, 2]);
        c.set(Sym::new("i"), Column::Int(vec![1, -5, i64::MAX]));
        c.set(Sym::new("f"), Column::Float(vec![0.5, -0.0, 1e300]));
        c.set(Sym::new("b"), Column::Bool(vec![true, false, true]));
        c.set(Sym::new("a \"q\""), Column::Any(vec![Value::Null, Value::str("x\ny"), Value::List(vec![Value::Int(1)].into())]));
        for format in [Format::Json, Format::Csv { delimiter: b',', header: true, schema: None }] {
            let (mut by_rows, mut by_columns) = (Vec::new(), Vec::new());
            let mut e = Encoder::new(&format);
            c.to_records().iter().for_each(|r| e.encode(r, &mut by_rows));
            Encoder::new(&format).encode_columns(&c, &mut by_columns);
            assert_eq!(String::from_utf8(by_columns).unwrap(), String::from_utf8(by_rows).unwrap());
        }
        let mut empty = Vec::new();
        Encoder::new(&Format::Json).encode_columns(&Columns::new(vec![7]), &mut empty);
        assert_eq!(empty, b"{}\n");
    }

    #[test]
    fn csv_quoting() {
        let cells = split_csv(r#"a,"b,""c""",,d"#, ',').unwrap();
        let texts: Vec<&str> = cells.iter().map(|(s, _)| s.as_ref()).collect();
        assert_eq!(texts, ["a", "b,\"c\"", "", "d"]);
        assert_eq!(cells[3].1, 14);
        let plain = split_csv("a,,héllo,d", ',').unwrap();
        assert_eq!(plain.iter().map(|(s, c)| (s.as_ref(), *c)).collect::<Vec<_>>(), [("a", 1), ("", 3), ("héllo", 4), ("d", 10)]);
        let ascii = split_csv("a,,hello,d", ',').unwrap();
        assert_eq!(ascii.iter().map(|(s, c)| (s.as_ref(), *c)).collect::<Vec<_>>(), [("a", 1), ("", 3), ("hello", 4), ("d", 10)]);
        assert_eq!(split_csv("", ',').unwrap().len(), 1);
        assert!(split_csv(r#"a,"b"#, ',').is_err());
    }

    #[test]
    fn json_integers_beyond_64_bits_are_errors_not_doubles() {
        let mut d = Decoder::new(&Format::Json);
        for (line, digits, column) in [
            (r#"{"a": 1.5, "b": 100000000000000000000}"#, "100000000000000000000", 17),
            (r#"{"a": [-9223372036854775809, 2.0]}"#, "-9223372036854775809", 8),
        ] {
            let e = d.decode(line.as_bytes()).unwrap_err();
            assert!(e.message.contains(&format!("integer {digits} is beyond the 64-bit range")), "{line}: {}", e.message);
            assert_eq!(e.column, column, "{line}");
        }
        // Doubles, and digits in strings, are fine.
        for line in [r#"{"a": 1.5e300, "s": "123456789012345678901234567890"}"#, r#"{"a": 12345678901234567890.5}"#, r#"{"a": -9223372036854775808.0}"#] {
            assert!(d.decode(line.as_bytes()).is_ok(), "{line}");
        }
    }

    #[test]
    fn csv_header_and_arity() {
        let f = Format::Csv { header: true, delimiter: b',', schema: None };
        let mut d = Decoder::new(&f);
        assert!(d.decode(b"id,name,amount").unwrap().is_none());
        let r = d.decode(b"1,bob,2.5").unwrap().unwrap();
        assert_eq!(r.to_json(), r#"{"id":1,"name":"bob","amount":2.5}"#);
        let e = d.decode(b"1,bob").err().unwrap();
        assert!(e.message.contains("expected 3 CSV fields, found 2"));
    }

    #[test]
    fn csv_round_trip() {
        let f = Format::Csv { header: true, delimiter: b',', schema: None };
        let r: Record = [("a", Value::str("x,y")), ("b", Value::Int(2))].into_iter().collect();
        let mut out = Vec::new();
        Encoder::new(&f).encode(&r, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "a,b\n\"x,y\",2\n");
    }

    #[test]
    fn csv_array_columns() {
        assert_eq!(ColumnType::parse("f32[784]"), Some(ColumnType::F32s(784)));
        assert_eq!(ColumnType::parse("i64[ 3 ]"), Some(ColumnType::Ints(3)));
        assert_eq!(ColumnType::parse("f32[0]"), None);
        assert_eq!(ColumnType::parse("u8[3]"), None);
        let schema = vec![(Sym::new("px"), ColumnType::F32s(3)), (Sym::new("label"), ColumnType::Int)];
        let f = Format::Csv { header: false, delimiter: b',', schema: Some(Arc::new(schema)) };
        let mut d = Decoder::new(&f);
        let r = d.decode(b"0,128,255,7").unwrap().unwrap();
        assert_eq!(r.get_str("px"), Some(&Value::Floats(vec![0.0, 128.0, 255.0].into())));
        assert_eq!(r.to_json(), r#"{"px":[0.0,128.0,255.0],"label":7}"#);
        let e = d.decode(b"0,128,7").err().unwrap();
        assert!(e.message.contains("expected 4 CSV fields, found 3 (by the schema)"), "{}", e.message);
        let e = d.decode(b"0,x,255,7").err().unwrap();
        assert_eq!((e.message.as_str(), e.column), ("column `px`: element 1: `x` is not an f32", 3));
    }
}
