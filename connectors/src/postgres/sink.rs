//! The `postgres` sink.
//!
//! Rows are batched (`batch.max_rows`, `batch.max_delay`) and written with `COPY … FROM STDIN`
//! (append) or one `INSERT … SELECT … FROM unnest($1::text[], …) ON CONFLICT (key) DO UPDATE`
//! per batch (upsert; the batch keeps the last row of each key, since one statement may not
//! update a row twice). Upsert sinks route records by key, so one instance writes each key.
//! A batch the database refuses for its data (SQLSTATE classes 22 and 23: a bad value, a
//! constraint) is written again row by row, and the rows it refuses go to the dead-letter
//! output with the database's message.
//!
//! `at_least_once` (the default): each batch commits by itself, and a barrier waits until the
//! buffered rows are written. A lost connection is retried with backoff for `retry_for`.
//!
//! `exactly_once` (needs checkpoints, and `max_prepared_transactions > 0` on the server): two-phase
//! commit with `PREPARE TRANSACTION`. Each instance writes an epoch's rows into one transaction;
//! at the barrier it also records the epoch in `rill_sink_commits` (one row per sink instance)
//! and prepares the transaction as `rill/<job>/<sink>/<instance>/<epoch>`; when the checkpoint
//! is complete it runs `COMMIT PREPARED`. A prepared transaction survives a crash of Rill and
//! of the server, so recovery from checkpoint `e` finishes the work by name: prepared
//! transactions of epochs up to `e` are committed, later ones rolled back (their rows come
//! again from the sources); a fresh start rolls back whatever an earlier run left prepared.
//! Why this and not only an epoch number written with the rows: rows are written as they
//! come, not held until the checkpoint completes, so the checkpoint stays small and the commit
//! is quick. Rows that come while a prepared transaction waits for its checkpoint are held
//! (an upsert could otherwise wait on the prepared transaction's row locks) and written once it
//! commits; if the next barrier comes first, they go into that checkpoint, and recovery writes
//! them unless `rill_sink_commits` says they are in. When the job ends no checkpoint completes
//! any more: each instance prepares an `end` transaction recording an epoch beyond every
//! checkpoint, and the instance that finds all of them prepared commits every prepared
//! transaction of the sink. The first of those commits decides: recovery after it commits the
//! rest and writes nothing again; a crash before it resumes as if the job had not finished.
//!
//! Upsert with exactly-once coalesces an epoch's rows by key (up to `batch.max_keys` keys)
//! before writing: nothing is visible before the checkpoint anyway.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rill_engine::config::de::duration;
use rill_engine::config::{ConfigError, ConfigErrors, Ordered, Spanned};
use rill_engine::expr::Expr;
use rill_engine::message::Epoch;
use rill_engine::operator::{Collector, OperatorContext, OperatorError, Sink};
use rill_engine::record::{Batch, Record};
use rill_engine::registry::{BuildContext, SinkSpec};
use rill_engine::state::{TimeDomain, Timer};
use rill_engine::value::{Sym, Value};

use super::{ident, literal, Conn, Db, Failure, Hint};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresSinkConfig {
    url: Spanned<String>,
    /// The environment variable holding the password (default `PGPASSWORD`).
    password_env: Option<String>,
    table: Spanned<String>,
    #[serde(default)]
    mode: Option<Spanned<String>>,
    /// Upsert: the conflict target (column names).
    #[serde(default)]
    key: Vec<Spanned<String>>,
    /// `column: expression`; by default every field of the first record, by its name.
    columns: Option<Ordered<Spanned<String>>>,
    /// Column types for `create_table` (`column: SQL type`) where the values' types are not it.
    #[serde(default)]
    types: Ordered<Spanned<String>>,
    #[serde(default)]
    create_table: bool,
    #[serde(default)]
    delivery: Option<Spanned<String>>,
    #[serde(default)]
    batch: BatchConfig,
    /// How long a lost connection is tried again before the job fails (default 30 s).
    #[serde(default, with = "duration::option")]
    retry_for: Option<Duration>,
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BatchConfig {
    max_rows: Option<Spanned<usize>>,
    /// Upsert with exactly-once: distinct keys an epoch's rows are coalesced into before they
    /// are written (default 100,000).
    max_keys: Option<usize>,
    #[serde(default, with = "duration::option")]
    max_delay: Option<Duration>,
}

/// Where a column's value comes from.
#[derive(Clone)]
enum Source {
    Field(Sym),
    Expr(Expr),
}

struct Settings {
    target: super::Target,
    table: String,
    upsert: bool,
    /// Upsert: the key columns, by name.
    key: Vec<String>,
    /// Declared columns; `None`: the first record's fields.
    columns: Option<Vec<(String, Source)>>,
    types: BTreeMap<String, String>,
    create_table: bool,
    exactly_once: bool,
    max_rows: usize,
    max_keys: usize,
    max_delay: Duration,
    retry_for: Duration,
    /// `rill/<job>/<sink>/`: the start of this sink's instance ids and prepared transactions.
    prefix: String,
}

pub(crate) fn build(ctx: &BuildContext) -> Result<SinkSpec, ConfigErrors> {
    let cfg: PostgresSinkConfig = ctx.options()?;
    let mut errors = Vec::new();
    let target = crate::options::keep(super::parse_url(&cfg.url, cfg.password_env.as_deref(), ctx.pipeline), &mut errors);
    let upsert = crate::options::choice(&cfg.mode, "mode", &["append", "upsert"], &mut errors) == 1;
    let exactly_once = crate::options::choice(&cfg.delivery, "delivery", &["at_least_once", "exactly_once"], &mut errors) == 1;
    if exactly_once && ctx.pipeline.checkpoint.is_none() {
        errors.push(
            ConfigError::new(Some(&ctx.options.span), "`delivery: exactly_once` needs checkpoints: each checkpoint commits its epoch's rows")
                .hint("add `checkpoint: {interval: 10s}` to the pipeline, or use `delivery: at_least_once`"),
        );
    }
    if upsert && cfg.key.is_empty() {
        errors.push(ConfigError::new(Some(&ctx.options.span), "`mode: upsert` needs `key`: the columns of the conflict target").hint("e.g. `key: [card_id]` (a primary key or unique index of the table)"));
    }
    if !upsert && !cfg.key.is_empty() {
        errors.push(ConfigError::new(Some(&cfg.key[0].span), "`key` is for `mode: upsert`").hint("add `mode: upsert`, or remove `key`"));
    }
    let columns = cfg.columns.as_ref().map(|cols| {
        cols.0
            .iter()
            .filter_map(|(name, e)| {
                let compiled = crate::options::keep(ctx.expr(e), &mut errors)?;
                Some((name.clone(), compiled.as_field().map(Source::Field).unwrap_or(Source::Expr(compiled))))
            })
            .collect::<Vec<_>>()
    });
    if let (Some(cols), Some(declared)) = (&columns, &cfg.columns) {
        for k in &cfg.key {
            if !cols.iter().any(|(c, _)| *c == k.value) {
                errors.push(ConfigError::new(Some(&k.span), format!("key column `{}` is not one of `columns`", k.value)).hint(format!(
                    "the columns are {}",
                    declared.0.iter().map(|(c, _)| format!("`{c}`")).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    // Upsert: one writer per key, so records of a key reach the same instance.
    let key_by = if upsert && !cfg.key.is_empty() {
        let parts: Vec<String> = cfg
            .key
            .iter()
            .map(|k| match cfg.columns.as_ref().and_then(|c| c.0.iter().find(|(c, _)| *c == k.value)) {
                Some((_, e)) => format!("({})", e.value),
                None => k.value.clone(),
            })
            .collect();
        let source = if parts.len() == 1 { parts[0].clone() } else { format!("[{}]", parts.join(", ")) };
        match Expr::compile(&source) {
            Ok(e) => Some(e),
            Err(e) => {
                errors.push(ConfigError::new(Some(&cfg.key[0].span), format!("cannot route by the key `{source}`: {e}")).hint("declare the key columns in `columns` with an expression each"));
                None
            }
        }
    } else {
        None
    };
    let max_rows = cfg.batch.max_rows.as_ref().map(|m| m.value).unwrap_or(5000);
    if let Some(m) = cfg.batch.max_rows.as_ref().filter(|m| m.value == 0) {
        errors.push(ConfigError::new(Some(&m.span), "`batch.max_rows` must be at least 1"));
    }
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let target = target.expect("checked");
    let s = Arc::new(Settings {
        target,
        table: cfg.table.value.clone(),
        upsert,
        key: cfg.key.iter().map(|k| k.value.clone()).collect(),
        columns,
        types: cfg.types.0.iter().map(|(c, t)| (c.clone(), t.value.clone())).collect(),
        create_table: cfg.create_table,
        exactly_once,
        max_rows,
        max_keys: cfg.batch.max_keys.unwrap_or(100_000).max(max_rows),
        max_delay: cfg.batch.max_delay.unwrap_or(Duration::from_millis(200)),
        retry_for: cfg.retry_for.unwrap_or(Duration::from_secs(30)),
        // A scaled-out task's prepared transactions are its own (recovery finishes them by name).
        prefix: match ctx.pipeline.scale_out.as_ref().and_then(|s| s.task) {
            Some(task) => format!("rill/{}/{}/task-{task}/", ctx.pipeline.name, ctx.name),
            None => format!("rill/{}/{}/", ctx.pipeline.name, ctx.name),
        },
    });
    let description = format!(
        "writes table {} on {} ({}, {})",
        s.table,
        s.target.shown,
        if upsert { format!("upsert on ({})", s.key.join(", ")) } else { "append".into() },
        if exactly_once { "exactly-once with checkpoints: a prepared transaction per checkpoint" } else { "at-least-once" }
    );
    let mut spec = SinkSpec::new(description, move |c: &OperatorContext| Ok(PostgresSink::new(s.clone(), c)));
    spec.exactly_once = exactly_once;
    spec.key_by = key_by;
    spec.rescalable = true;
    Ok(spec)
}

/// How a column's values are written, by its type in the table.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Bool,
    Json,
    /// `timestamp`, `timestamptz`, `date`: an integer is epoch milliseconds.
    Time,
    /// An array type: a list is written as `{a,b}`.
    Array,
    Other,
}

impl Kind {
    fn of(sql_type: &str) -> Kind {
        let t = sql_type.to_ascii_lowercase();
        if t.ends_with("[]") {
            Kind::Array
        } else if t == "json" || t == "jsonb" {
            Kind::Json
        } else if t.starts_with("timestamp") || t == "date" {
            Kind::Time
        } else if t == "boolean" {
            Kind::Bool
        } else {
            Kind::Other
        }
    }
}

/// The table as it is in the database, and the statements that write it.
struct Table {
    columns: Vec<String>,
    /// The columns as field names (where `columns` is not declared, fields are read by name).
    fields: Vec<Sym>,
    /// Upsert: the positions of the key columns.
    key: Vec<usize>,
    kinds: Vec<Kind>,
    copy: String,
    insert: String,
}

impl Table {
    fn new(s: &Settings, columns: Vec<String>, types: Vec<String>) -> Table {
        let kinds = types.iter().map(|t| Kind::of(t)).collect();
        let cols = columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ");
        let copy = format!("COPY {} ({cols}) FROM STDIN", ident(&s.table));
        let params = (1..=columns.len()).map(|i| format!("${i}::text[]")).collect::<Vec<_>>().join(", ");
        let aliases = (1..=columns.len()).map(|i| format!("c{i}")).collect::<Vec<_>>().join(", ");
        let casts = types.iter().enumerate().map(|(i, t)| format!("u.c{}::{t}", i + 1)).collect::<Vec<_>>().join(", ");
        let mut insert = format!("INSERT INTO {} ({cols}) SELECT {casts} FROM unnest({params}) AS u({aliases})", ident(&s.table));
        if s.upsert {
            let key = s.key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ");
            let set: Vec<String> = columns.iter().filter(|c| !s.key.contains(c)).map(|c| format!("{0} = EXCLUDED.{0}", ident(c))).collect();
            insert += &if set.is_empty() { format!(" ON CONFLICT ({key}) DO NOTHING") } else { format!(" ON CONFLICT ({key}) DO UPDATE SET {}", set.join(", ")) };
        }
        let fields = columns.iter().map(|c| Sym::new(c)).collect();
        let key = s.key.iter().filter_map(|k| columns.iter().position(|c| c == k)).collect();
        Table { columns, fields, key, kinds, copy, insert }
    }
}

/// An upsert row as written: its cells as PostgreSQL text input (`None`: NULL), and the record
/// it came from (for the dead-letter output).
struct Row {
    cells: Vec<Option<String>>,
    record: Record,
}

/// A record kept in a checkpoint (as JSON).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Held(#[serde(with = "record_json")] Record);

/// Rows encoded for one statement.
enum Encoded {
    /// Append: COPY text, one line per row.
    Copy(Vec<u8>),
    /// Upsert: the rows' cells (one row per key).
    Cells(Vec<Vec<Option<String>>>),
}

/// A batch the connection's thread is writing: its result, and the records (for rejects).
struct InFlight {
    /// The refused rows, and the COPY text's buffer back for the next batch.
    result: std::sync::mpsc::Receiver<(Result<Vec<(usize, String)>, Failure>, Option<Vec<u8>>)>,
    records: Vec<Record>,
}

mod record_json {
    use rill_engine::record::Record;
    pub fn serialize<S: serde::Serializer>(r: &Record, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&r.to_json())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Record, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        Record::from_json(text.as_bytes()).map_err(serde::de::Error::custom)
    }
}

/// The exactly-once sink's part of a checkpoint.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Pending {
    epoch: u64,
    instance: u32,
    /// The epoch of the transaction prepared and not yet committed at the barrier.
    staged: Option<u64>,
    /// Records held behind it, by the barrier they came before.
    held: Vec<(u64, Vec<Held>)>,
}

/// Not yet followed by a barrier (held rows).
const OPEN: u64 = u64::MAX;

pub struct PostgresSink {
    s: Arc<Settings>,
    instance: u32,
    parallelism: u32,
    db: Option<Db>,
    table: Option<Arc<Table>>,
    /// The table is missing and `create_table` is set: made from the first batch.
    to_create: bool,
    /// Records waiting for the next batch.
    buffer: Vec<Record>,
    since: Option<Instant>,
    timer_at: Option<i64>,
    /// Exactly-once: a transaction is open on the connection.
    in_transaction: bool,
    staged: Option<u64>,
    held: Vec<(u64, Vec<Record>)>,
    /// Upsert: where each key's record is in `buffer` (a later record of a key replaces it).
    keyed: HashMap<Vec<Option<String>>, usize>,
    in_flight: Option<InFlight>,
    /// A COPY buffer to fill (reused: fresh pages cost more than the copying).
    spare: Vec<u8>,
    last_epoch: u64,
    /// The run before this one finished after the checkpoint restored: its output is all in.
    finished_before: bool,
    rejected: Vec<(Record, String)>,
}

type DbResult<T> = Result<T, OperatorError>;

impl PostgresSink {
    fn new(s: Arc<Settings>, c: &OperatorContext) -> PostgresSink {
        PostgresSink {
            s,
            instance: c.subtask,
            parallelism: c.parallelism,
            db: None,
            table: None,
            to_create: false,
            buffer: Vec::new(),
            since: None,
            timer_at: None,
            in_transaction: false,
            staged: None,
            held: Vec::new(),
            keyed: HashMap::new(),
            in_flight: None,
            spare: Vec::new(),
            last_epoch: 0,
            finished_before: false,
            rejected: Vec::new(),
        }
    }

    fn db(&self) -> &Db {
        self.db.as_ref().expect("opened")
    }

    fn instance_id(&self, instance: u32) -> String {
        format!("{}{instance}", self.s.prefix)
    }

    fn gid(&self, epoch: u64) -> String {
        format!("{}{}/{epoch}", self.s.prefix, self.instance)
    }

    /// The name of this instance's last transaction of a finished job.
    fn end_gid(&self) -> String {
        format!("{}{}/end", self.s.prefix, self.instance)
    }

    fn fail(&self, what: &str, f: Failure) -> OperatorError {
        f.into_error(&format!("PostgreSQL at {}: {what}", self.s.target.shown))
    }

    /// The table's columns and types, or `None` if there is no such table.
    fn describe_table(&self) -> DbResult<Option<(Vec<String>, Vec<String>)>> {
        let table = self.s.table.clone();
        let got = self.db().call(move |c| -> Result<Vec<(String, String)>, Failure> {
            let client = c.client().map_err(Failure::Lost)?;
            let rows = client
                .query(
                    "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                     WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
                    &[&super::ident(&table)],
                )
                .map_err(|e| Failure::of(&e))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        });
        let cols = got.map_err(|f| self.fail(&format!("cannot read table {}", self.s.table), f))?;
        if cols.is_empty() {
            return Ok(None);
        }
        Ok(Some(cols.into_iter().unzip()))
    }

    /// The columns rows are written to, in order (declared, or the first record's fields).
    fn column_names(&self, first: Option<&Record>) -> Vec<String> {
        match (&self.s.columns, first) {
            (Some(c), _) => c.iter().map(|(n, _)| n.clone()).collect(),
            (None, Some(r)) => r.fields().iter().map(|(k, _)| k.as_str().to_string()).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// Learns the table (after `open`, once the first batch shows the columns if needed).
    fn resolve_table(&mut self, rows: &[Record]) -> DbResult<()> {
        if self.table.is_some() {
            return Ok(());
        }
        let names = self.column_names(rows.first());
        match self.describe_table()? {
            Some((have, types)) => {
                let mut picked = Vec::new();
                for n in &names {
                    match have.iter().position(|h| h == n) {
                        Some(i) => picked.push(types[i].clone()),
                        None => {
                            return Err(OperatorError::user(format!(
                                "PostgreSQL at {}: table {} has no column `{n}` (it has {})",
                                self.s.target.shown,
                                self.s.table,
                                have.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ")
                            )))
                        }
                    }
                }
                self.table = Some(Arc::new(Table::new(&self.s, names, picked)));
            }
            None if self.to_create => {
                let fields: Vec<Sym> = names.iter().map(|n| Sym::new(n)).collect();
                let types: Vec<String> = names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        self.s.types.get(n).cloned().unwrap_or_else(|| {
                            // The type of the batch's values; integers among doubles are doubles.
                            let seen: Vec<&'static str> = rows
                                .iter()
                                .map(|r| self.column_value(&fields, r, i).unwrap_or(Value::Null))
                                .filter(|v| !v.is_null())
                                .map(|v| match v {
                                    Value::Int(_) => "bigint",
                                    Value::Float(_) => "double precision",
                                    Value::Bool(_) => "boolean",
                                    Value::List(_) | Value::Floats(_) | Value::Map(_) => "jsonb",
                                    Value::Str(_) | Value::Null => "text",
                                })
                                .collect();
                            let all = |t: &str| !seen.is_empty() && seen.iter().all(|s| *s == t);
                            if seen.iter().all(|s| *s == "bigint" || *s == "double precision") && seen.contains(&"double precision") {
                                "double precision".into()
                            } else if let Some(t) = ["bigint", "boolean", "jsonb"].into_iter().find(|t| all(t)) {
                                t.into()
                            } else {
                                "text".into()
                            }
                        })
                    })
                    .collect();
                let mut cols: Vec<String> = names.iter().zip(&types).map(|(n, t)| format!("{} {t}", ident(n))).collect();
                if self.s.upsert {
                    cols.push(format!("PRIMARY KEY ({})", self.s.key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ")));
                }
                let sql = format!("CREATE TABLE IF NOT EXISTS {} ({})", ident(&self.s.table), cols.join(", "));
                tracing::info!("postgres sink: creating table {}: {sql}", self.s.table);
                // Two instances may race to create it: the loser's error means it is there.
                if let Err(e) = self.db().batch(sql) {
                    if self.describe_table()?.is_none() {
                        return Err(e);
                    }
                }
                self.to_create = false;
                return self.resolve_table(rows);
            }
            None => {
                return Err(OperatorError::user(format!("PostgreSQL at {}: there is no table {}", self.s.target.shown, self.s.table))
                    .with_hint("create it, or set `create_table: true` to have Rill create it from the records' types"))
            }
        }
        Ok(())
    }

    /// A record's value for column `i` (named `columns[i]`); a failing expression says why.
    fn column_value(&self, columns: &[Sym], r: &Record, i: usize) -> Result<Value, String> {
        Ok(match &self.s.columns {
            Some(cols) => match &cols[i].1 {
                Source::Field(f) => r.get(*f).cloned().unwrap_or(Value::Null),
                Source::Expr(e) => e.eval(r).map_err(|err| format!("column `{}` = `{}`: {err}", columns[i], e.source()))?,
            },
            None => r.get(columns[i]).cloned().unwrap_or(Value::Null),
        })
    }

    /// The cells of a record; a record whose expression fails is rejected.
    fn cells(&mut self, table: &Table, r: &Record) -> Option<Vec<Option<String>>> {
        let mut cells = Vec::with_capacity(table.columns.len());
        for (i, kind) in table.kinds.iter().enumerate() {
            match self.column_value(&table.fields, r, i) {
                Ok(v) => cells.push(cell(&v, *kind)),
                Err(msg) => {
                    self.rejected.push((r.clone(), msg));
                    return None;
                }
            }
        }
        Some(cells)
    }

    /// The upsert key of a record (its key columns' text), if its key expressions evaluate.
    fn key_of(&self, table: &Table, r: &Record) -> Option<Vec<Option<String>>> {
        table.key.iter().map(|&i| self.column_value(&table.fields, r, i).ok().map(|v| cell(&v, table.kinds[i]))).collect()
    }

    /// Turns records into one statement's rows; a record whose expression fails is rejected.
    fn encode(&mut self, records: Vec<Record>) -> (Encoded, Vec<Record>) {
        let table = self.table.clone().expect("resolved");
        if self.s.upsert {
            let mut rows = Vec::with_capacity(records.len());
            for r in records {
                if let Some(cells) = self.cells(&table, &r) {
                    rows.push(Row { cells, record: r });
                }
            }
            dedupe(&mut rows, &table.key);
            let (cells, records) = rows.into_iter().map(|r| (r.cells, r.record)).unzip();
            return (Encoded::Cells(cells), records);
        }
        let mut text = std::mem::take(&mut self.spare);
        text.clear();
        let mut kept = Vec::with_capacity(records.len());
        'records: for r in records {
            let start = text.len();
            for (i, kind) in table.kinds.iter().enumerate() {
                if i > 0 {
                    text.push(b'\t');
                }
                match self.column_value(&table.fields, &r, i) {
                    Ok(v) => copy_cell(&v, *kind, &mut text),
                    Err(msg) => {
                        text.truncate(start);
                        self.rejected.push((r, msg));
                        continue 'records;
                    }
                }
            }
            text.push(b'\n');
            kept.push(r);
        }
        (Encoded::Copy(text), kept)
    }

    /// Takes a record into the buffer (upsert: in place of the key's earlier one).
    fn buffer_record(&mut self, r: Record) -> DbResult<()> {
        if !self.s.upsert {
            self.buffer.push(r);
            return Ok(());
        }
        if self.table.is_none() {
            self.resolve_table(std::slice::from_ref(&r))?;
        }
        let table = self.table.clone().expect("resolved");
        match self.key_of(&table, &r) {
            Some(k) => match self.keyed.get(&k) {
                Some(&i) => self.buffer[i] = r,
                None => {
                    self.keyed.insert(k, self.buffer.len());
                    self.buffer.push(r);
                }
            },
            None => self.buffer.push(r), // its expression fails again when encoded: rejected then
        }
        Ok(())
    }

    /// How many buffered records make a batch: upsert with exactly-once coalesces the epoch's
    /// rows by key up to `max_keys`, since nothing is visible before the checkpoint anyway.
    fn batch_limit(&self) -> usize {
        if self.s.upsert && self.s.exactly_once { self.s.max_keys } else { self.s.max_rows }
    }

    /// Writes the buffered records (or holds them, exactly-once, behind a prepared
    /// transaction).
    fn write_buffer(&mut self) -> DbResult<()> {
        self.since = None;
        self.keyed.clear();
        if self.buffer.is_empty() {
            return Ok(());
        }
        let records = std::mem::take(&mut self.buffer);
        self.resolve_table(&records)?;
        if self.s.exactly_once && self.staged.is_some() {
            match self.held.last_mut() {
                Some((OPEN, held)) => held.extend(records),
                _ => self.held.push((OPEN, records)),
            }
            return Ok(());
        }
        self.write_rows(records)
    }

    /// Waits for the batch the connection's thread is writing; its refused rows are rejected.
    fn wait(&mut self) -> DbResult<()> {
        let Some(f) = self.in_flight.take() else { return Ok(()) };
        let (result, spare) = f.result.recv().unwrap_or_else(|_| (Err(Failure::Fatal("the PostgreSQL thread stopped".into())), None));
        if let Some(spare) = spare {
            self.spare = spare;
        }
        match result {
            Ok(refused) => {
                for (i, msg) in refused {
                    self.rejected.push((f.records[i].clone(), format!("PostgreSQL refused the row: {msg}")));
                }
                Ok(())
            }
            Err(e) => Err(self.fail(&format!("cannot write to {}", self.s.table), e)),
        }
    }

    /// Writes records: into the open transaction (exactly-once) or committed at once. The
    /// batch is written while the next one is made; [`wait`](Self::wait) collects it.
    fn write_rows(&mut self, records: Vec<Record>) -> DbResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.resolve_table(&records)?;
        let (encoded, records) = self.encode(records);
        self.wait()?;
        if records.is_empty() {
            return Ok(());
        }
        if self.s.exactly_once && !self.in_transaction {
            self.db().batch("BEGIN".into())?;
            self.in_transaction = true;
        }
        let table = self.table.clone().expect("resolved");
        let (in_txn, deadline) = (self.in_transaction, self.s.retry_for);
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.db().submit(move |c| {
            let result = write_batch(c, &table, &encoded, in_txn, deadline);
            let _ = tx.send((result, if let Encoded::Copy(text) = encoded { Some(text) } else { None }));
        });
        self.in_flight = Some(InFlight { result: rx, records });
        Ok(())
    }

    /// Commits the open transaction directly, recording `epoch` as committed.
    fn commit_open(&mut self, epoch: u64) -> DbResult<()> {
        self.wait()?;
        if !self.in_transaction {
            return Ok(());
        }
        let sql = format!("{}; COMMIT", self.mark_sql(epoch));
        self.db().batch(sql)?;
        self.in_transaction = false;
        Ok(())
    }

    fn mark_sql(&self, epoch: u64) -> String {
        self.mark_row_sql(&self.instance_id(self.instance), epoch)
    }

    /// Records `epoch` in the row `sink` of `rill_sink_commits`. The `end` transaction has a
    /// row of its own: the instance's own row may be locked by its prepared transaction.
    fn mark_row_sql(&self, sink: &str, epoch: u64) -> String {
        format!(
            "INSERT INTO rill_sink_commits (sink, epoch) VALUES ({}, {epoch}) ON CONFLICT (sink) DO UPDATE SET epoch = EXCLUDED.epoch, committed_at = now()",
            literal(sink)
        )
    }

    /// Writes `rows` (none of them in the database) in a transaction of their own, committed
    /// at once and recorded as epoch `epoch`.
    fn write_committed(&mut self, epoch: u64, rows: Vec<Record>) -> DbResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.write_rows(rows)?;
        self.commit_open(epoch)
    }

    /// Writes `rows` in a transaction prepared as epoch `epoch`'s.
    fn prepare(&mut self, epoch: u64, rows: Vec<Record>) -> DbResult<()> {
        self.write_rows(rows)?;
        self.wait()?;
        if !self.in_transaction {
            return Ok(());
        }
        rill_engine::faults::crash_point("postgres-before-prepare");
        let sql = format!("{}; PREPARE TRANSACTION {}", self.mark_sql(epoch), literal(&self.gid(epoch)));
        self.db().batch(sql)?;
        self.in_transaction = false;
        self.staged = Some(epoch);
        Ok(())
    }

    /// The sink's prepared transactions, as (gid, instance, epoch; `None` for an `end` one).
    fn prepared(&self) -> DbResult<Vec<(String, u32, Option<u64>)>> {
        let prefix = self.s.prefix.clone();
        let got = self.db().call(move |c| -> Result<Vec<String>, Failure> {
            let client = c.client().map_err(Failure::Lost)?;
            let rows = client
                .query("SELECT gid FROM pg_prepared_xacts WHERE database = current_database() AND left(gid, length($1)) = $1", &[&prefix])
                .map_err(|e| Failure::of(&e))?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        });
        let gids = got.map_err(|f| self.fail("cannot list prepared transactions", f))?;
        Ok(gids
            .into_iter()
            .filter_map(|g| {
                let rest = g[self.s.prefix.len()..].to_string();
                let (i, e) = rest.split_once('/')?;
                let epoch = if e == "end" { None } else { Some(e.parse().ok()?) };
                Some((g, i.parse().ok()?, epoch))
            })
            .collect())
    }

    /// Those this instance answers for: of instances `i` with `i % parallelism == instance` (its
    /// own, and, after a rescale, those of instances that are no more).
    fn lingering(&self) -> DbResult<Vec<(String, u32, Option<u64>)>> {
        Ok(self.prepared()?.into_iter().filter(|(_, i, _)| i % self.parallelism == self.instance).collect())
    }

    /// `COMMIT PREPARED` or `ROLLBACK PREPARED`; one another instance finished first is fine.
    fn finish_prepared(&self, gid: &str, commit: bool) -> DbResult<()> {
        tracing::info!("postgres sink: {} prepared transaction {gid}", if commit { "committing" } else { "rolling back" });
        let sql = format!("{} PREPARED {}", if commit { "COMMIT" } else { "ROLLBACK" }, literal(gid));
        let shown = self.s.target.shown.clone();
        self.db().call(move |c| -> DbResult<()> {
            let client = c.client().map_err(OperatorError::external)?;
            match client.batch_execute(&sql) {
                Ok(()) => Ok(()),
                Err(e) if e.as_db_error().is_some_and(|d| d.code().code() == "42704") => Ok(()),
                Err(e) => Err(OperatorError::external(format!("PostgreSQL at {shown}: {sql}: {}", Failure::of(&e).message()))),
            }
        })
    }

    /// Runs `f` holding the sink's advisory lock: one instance at a time finishes the sink's
    /// transactions at the end (two committing one prepared transaction at once fail).
    fn exclusively(&self, f: impl FnOnce(&Self) -> DbResult<()>) -> DbResult<()> {
        let key = self.s.prefix.clone();
        let lock = move |sql: &'static str| {
            let key = key.clone();
            move |c: &mut Conn| -> Result<(), Failure> {
                let client = c.client().map_err(Failure::Lost)?;
                client.execute(sql, &[&key]).map(|_| ()).map_err(|e| Failure::of(&e))
            }
        };
        self.db().call(lock("SELECT pg_advisory_lock(hashtext($1))")).map_err(|e| self.fail("cannot take the sink's advisory lock", e))?;
        let r = f(self);
        self.db().call(lock("SELECT pg_advisory_unlock(hashtext($1))")).map_err(|e| self.fail("cannot release the sink's advisory lock", e))?;
        r
    }

    /// Finishes prepared transactions by name: those of epochs up to `upto` are committed (their
    /// checkpoint completed), later ones and `end` ones rolled back.
    fn resolve(&self, upto: Option<u64>) -> DbResult<()> {
        for (gid, _, epoch) in self.lingering()? {
            self.finish_prepared(&gid, epoch.zip(upto).is_some_and(|(e, u)| e <= u))?;
        }
        Ok(())
    }

    /// The epochs recorded as committed, by instance id.
    fn committed(&self) -> DbResult<HashMap<String, u64>> {
        let prefix = self.s.prefix.clone();
        let got = self.db().call(move |c| -> Result<Vec<(String, i64)>, Failure> {
            let client = c.client().map_err(Failure::Lost)?;
            let rows = client.query("SELECT sink, epoch FROM rill_sink_commits WHERE left(sink, length($1)) = $1", &[&prefix]).map_err(|e| Failure::of(&e))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        });
        let rows = got.map_err(|f| self.fail("cannot read rill_sink_commits", f))?;
        Ok(rows.into_iter().map(|(k, v)| (k, v as u64)).collect())
    }

    fn recover_from(&mut self, pendings: Vec<Pending>) -> DbResult<()> {
        let Some(epoch) = pendings.iter().map(|p| p.epoch).max() else { return Ok(()) };
        // Only the `end` transactions of a finished run record an epoch beyond every checkpoint:
        // once one of them committed, the run had decided to finish, and everything it prepared
        // is committed (by whichever instance gets there first).
        if self.committed()?.values().any(|&d| d > epoch) {
            self.exclusively(|me| {
                for (gid, _, _) in me.prepared()? {
                    me.finish_prepared(&gid, true)?;
                }
                Ok(())
            })?;
            tracing::info!("postgres sink: the run before this one finished after checkpoint {epoch} and committed everything; what comes again is dropped");
            self.finished_before = true;
            return Ok(());
        }
        self.resolve(Some(epoch))?;
        let committed = self.committed()?;
        let mine: Vec<Pending> = pendings.into_iter().filter(|p| p.instance % self.parallelism == self.instance).collect();
        for p in mine {
            let done = committed.get(&self.instance_id(p.instance)).copied();
            if let Some(s) = p.staged.filter(|s| done.is_none_or(|d| d < *s)) {
                return Err(OperatorError::user(format!(
                    "PostgreSQL at {}: the prepared transaction {}{}/{s} of checkpoint {} is gone and its rows are not in {}: it was rolled back outside Rill",
                    self.s.target.shown, self.s.prefix, p.instance, p.epoch, self.s.table
                ))
                .with_hint("its rows are lost to the table; start the job afresh with --from-scratch to write everything again"));
            }
            let todo: Vec<Record> = p.held.into_iter().filter(|(e, _)| done.is_none_or(|d| d < *e)).flat_map(|(_, rows)| rows).map(|h| h.0).collect();
            if !todo.is_empty() {
                tracing::info!("postgres sink: writing {} row(s) that waited behind a prepared transaction at checkpoint {}", todo.len(), p.epoch);
                let table = self.describe_table()?;
                if self.table.is_none() && table.is_none() {
                    return Err(OperatorError::user(format!("PostgreSQL at {}: table {} is gone", self.s.target.shown, self.s.table)));
                }
                self.resolve_table(&[])?;
                // Recorded as this instance's commit of the checkpoint's epoch: the held rows
                // of every old instance it answers for are in.
                self.write_committed(p.epoch, todo)?;
            }
        }
        Ok(())
    }

    fn arm_timer(&mut self, out: &mut Collector) {
        let Some(since) = self.since else { return };
        let due = rill_engine::time::now_millis() + self.s.max_delay.saturating_sub(since.elapsed()).as_millis() as i64 + 1;
        if self.timer_at.is_none_or(|t| t > due) {
            out.timers().register(TimeDomain::Processing, &Value::Null, 0, due);
            self.timer_at = Some(due);
        }
    }

    fn drain_rejected(&mut self, out: &mut Collector) {
        for (r, e) in std::mem::take(&mut self.rejected) {
            out.reject(r, e);
        }
    }
}

/// Keeps the last row of each key, in the order of the keys' first rows.
fn dedupe(rows: &mut Vec<Row>, key: &[usize]) {
    let mut at: HashMap<Vec<Option<String>>, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for r in rows.drain(..) {
        let k: Vec<Option<String>> = key.iter().map(|&i| r.cells[i].clone()).collect();
        match at.get(&k) {
            Some(&i) => out[i] = r,
            None => {
                at.insert(k, out.len());
                out.push(r);
            }
        }
    }
    *rows = out;
}

/// A value as PostgreSQL text input for a column of kind `kind`.
fn cell(v: &Value, kind: Kind) -> Option<String> {
    Some(match (v, kind) {
        (Value::Null, _) => return None,
        (Value::Int(ms), Kind::Time) => {
            let mut s = String::new();
            super::timestamp_text(*ms, &mut s);
            s
        }
        (_, Kind::Json) => serde_json::to_string(v).expect("JSON of a value"),
        (Value::List(_) | Value::Floats(_), Kind::Array) => {
            let items: Vec<String> = match v {
                Value::List(l) => l.iter().map(|x| cell(x, Kind::Other).map(|s| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))).unwrap_or_else(|| "NULL".into())).collect(),
                Value::Floats(f) => f.iter().map(|x| float(*x as f64)).collect(),
                _ => unreachable!(),
            };
            format!("{{{}}}", items.join(","))
        }
        (Value::Bool(b), _) => (if *b { "true" } else { "false" }).to_string(),
        (Value::Int(i), _) => itoa::Buffer::new().format(*i).to_string(),
        (Value::Float(f), _) => float(*f),
        (Value::Str(s), _) => s.to_string(),
        (Value::List(_) | Value::Floats(_) | Value::Map(_), _) => serde_json::to_string(v).expect("JSON of a value"),
    })
}

fn float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        (if f > 0.0 { "Infinity" } else { "-Infinity" }).into()
    } else {
        format!("{f}")
    }
}

/// A value in COPY's text format: `\N` for NULL; backslash, tab, newline and carriage return
/// escaped.
fn copy_cell(v: &Value, kind: Kind, out: &mut Vec<u8>) {
    let escaped = |text: &str, out: &mut Vec<u8>| {
        for &b in text.as_bytes() {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(b),
            }
        }
    };
    match (v, kind) {
        (Value::Null, _) => out.extend_from_slice(b"\\N"),
        (Value::Int(i), Kind::Other) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        (Value::Str(text), Kind::Other) => escaped(text, out),
        (Value::Float(f), Kind::Other) if f.is_finite() => {
            use std::io::Write;
            let _ = write!(out, "{f}");
        }
        (Value::Bool(b), Kind::Other | Kind::Bool) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        _ => escaped(&cell(v, kind).expect("not null"), out),
    }
}

/// One statement writing `rows` (COPY for append, the unnest INSERT for upsert).
fn write_once(client: &mut postgres::Client, t: &Table, rows: &Encoded) -> Result<(), postgres::Error> {
    match rows {
        Encoded::Cells(rows) => {
            let arrays: Vec<Vec<Option<&str>>> = (0..t.columns.len()).map(|c| rows.iter().map(|r| r[c].as_deref()).collect()).collect();
            let params: Vec<&(dyn postgres::types::ToSql + Sync)> = arrays.iter().map(|a| a as &(dyn postgres::types::ToSql + Sync)).collect();
            client.execute(&t.insert, &params)?;
        }
        Encoded::Copy(text) => {
            use std::io::Write;
            let mut w = client.copy_in(&t.copy)?;
            // A write fails when the server has refused the COPY; `finish` returns why.
            let _ = w.write_all(text);
            w.finish()?;
        }
    }
    Ok(())
}

/// The rows of a batch one by one.
fn each_row(rows: &Encoded) -> Vec<Encoded> {
    match rows {
        Encoded::Cells(rows) => rows.iter().map(|r| Encoded::Cells(vec![r.clone()])).collect(),
        Encoded::Copy(text) => text.split_inclusive(|&b| b == b'\n').map(|line| Encoded::Copy(line.to_vec())).collect(),
    }
}

/// Writes a batch; where the database refuses its data, row by row, returning the refused rows
/// (by index) with the database's message. In a transaction, savepoints keep a refused
/// statement from aborting it; outside one, a lost connection is tried again until `retry_for`
/// has passed.
fn write_batch(c: &mut Conn, t: &Table, rows: &Encoded, in_txn: bool, retry_for: Duration) -> Result<Vec<(usize, String)>, Failure> {
    let start = Instant::now();
    loop {
        let attempt = (|| -> Result<Vec<(usize, String)>, Failure> {
            let client = c.client().map_err(Failure::Lost)?;
            let guarded = |client: &mut postgres::Client, rows: &Encoded| -> Result<(), Failure> {
                if in_txn {
                    client.batch_execute("SAVEPOINT rill_batch").map_err(|e| Failure::of(&e))?;
                }
                match write_once(client, t, rows) {
                    Ok(()) => {
                        if in_txn {
                            client.batch_execute("RELEASE SAVEPOINT rill_batch").map_err(|e| Failure::of(&e))?;
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let f = Failure::of(&e);
                        if in_txn && !matches!(f, Failure::Lost(_)) {
                            client.batch_execute("ROLLBACK TO SAVEPOINT rill_batch").map_err(|e| Failure::of(&e))?;
                        }
                        Err(f)
                    }
                }
            };
            match guarded(client, rows) {
                Ok(()) => Ok(Vec::new()),
                Err(Failure::Row(_)) => {
                    let mut refused = Vec::new();
                    for (i, r) in each_row(rows).iter().enumerate() {
                        match guarded(client, r) {
                            Ok(()) => {}
                            Err(Failure::Row(m)) => refused.push((i, m)),
                            Err(f) => return Err(f),
                        }
                    }
                    Ok(refused)
                }
                Err(f) => Err(f),
            }
        })();
        match attempt {
            Err(Failure::Lost(m)) => {
                c.lost();
                if in_txn || start.elapsed() >= retry_for {
                    return Err(Failure::Lost(if in_txn { format!("{m} (the connection was lost in the middle of a transaction; the job restarts from its last checkpoint)") } else { m }));
                }
                tracing::warn!("postgres sink: connection lost ({m}); writing the batch again");
                std::thread::sleep(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

impl Sink for PostgresSink {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        let db = Db::open(&self.s.target, self.s.retry_for, &format!("{}-{}", ctx.name, ctx.subtask))?;
        self.db = Some(db);
        if self.s.exactly_once && ctx.checkpointing {
            let setting = self.db().call(|c| -> Result<String, Failure> {
                let client = c.client().map_err(Failure::Lost)?;
                client.query_one("SHOW max_prepared_transactions", &[]).map(|r| r.get(0)).map_err(|e| Failure::of(&e))
            });
            let setting = setting.map_err(|f| self.fail("cannot read max_prepared_transactions", f))?;
            if setting.trim() == "0" {
                return Err(OperatorError::user(format!(
                    "PostgreSQL at {}: `delivery: exactly_once` prepares a transaction per checkpoint, and the server's max_prepared_transactions is 0",
                    self.s.target.shown
                ))
                .with_hint("set max_prepared_transactions (to the number of sink instances or more) in postgresql.conf and restart the server, or use `delivery: at_least_once`"));
            }
            let made = self.db().batch(
                "CREATE TABLE IF NOT EXISTS rill_sink_commits (sink text PRIMARY KEY, epoch bigint NOT NULL, committed_at timestamptz NOT NULL DEFAULT now())".into(),
            );
            if let Err(e) = made {
                // Instances race to create it; the loser's error is fine if the table is there.
                let there = self.db().call(|c| c.client().ok().and_then(|cl| cl.query_one("SELECT to_regclass('rill_sink_commits') IS NOT NULL", &[]).ok()).map(|r| r.get::<_, bool>(0)));
                if there != Some(true) {
                    return Err(e);
                }
            }
            if !ctx.restoring {
                // A fresh start: what an earlier run left prepared or recorded is not ours.
                self.resolve(None)?;
                let mine: Vec<String> = (0..ctx.max_parallelism)
                    .filter(|i| i % self.parallelism == self.instance)
                    .flat_map(|i| [literal(&self.instance_id(i)), literal(&format!("{}{i}/end", self.s.prefix))])
                    .collect();
                self.db().batch(format!("DELETE FROM rill_sink_commits WHERE sink IN ({})", mine.join(", ")))?;
            }
        }
        match self.describe_table()? {
            Some(_) => {}
            None if self.s.create_table => self.to_create = true,
            None => {
                return Err(OperatorError::user(format!("PostgreSQL at {}: there is no table {}", self.s.target.shown, self.s.table))
                    .with_hint("create it, or set `create_table: true` to have Rill create it from the records' types"))
            }
        }
        Ok(())
    }

    fn write(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        if self.finished_before {
            return Ok(());
        }
        self.drain_rejected(out);
        self.since.get_or_insert_with(Instant::now);
        for r in batch.into_records() {
            self.buffer_record(r)?;
            if self.buffer.len() >= self.batch_limit() {
                self.write_buffer()?;
                self.since = Some(Instant::now());
            }
        }
        let coalescing = self.s.upsert && self.s.exactly_once;
        if !coalescing && self.since.is_some_and(|s| s.elapsed() >= self.s.max_delay) {
            self.write_buffer()?;
        } else if !coalescing {
            self.arm_timer(out);
        }
        self.drain_rejected(out);
        Ok(())
    }

    fn on_timer(&mut self, _timer: Timer, out: &mut Collector) -> Result<(), OperatorError> {
        self.timer_at = None;
        match self.since {
            Some(s) if s.elapsed() >= self.s.max_delay => {
                self.write_buffer()?;
                self.drain_rejected(out);
            }
            Some(_) => self.arm_timer(out),
            None => {}
        }
        Ok(())
    }

    fn flush_buffer(&mut self, out: &mut Collector) -> Result<(), OperatorError> {
        self.write_buffer()?;
        self.wait()?;
        self.drain_rejected(out);
        Ok(())
    }

    fn pre_commit(&mut self, epoch: Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        self.last_epoch = epoch.0;
        if !self.s.exactly_once {
            return Ok(None);
        }
        if self.staged.is_none() {
            self.prepare(epoch.0, Vec::new())?;
        } else if let Some(last) = self.held.last_mut().filter(|(e, _)| *e == OPEN) {
            last.0 = epoch.0;
        }
        let pending = Pending {
            epoch: epoch.0,
            instance: self.instance,
            staged: self.staged,
            held: self.held.iter().filter(|(e, _)| *e != OPEN).map(|(e, r)| (*e, r.iter().cloned().map(Held).collect())).collect(),
        };
        Ok(Some(serde_json::to_vec(&pending).expect("serializes")))
    }

    fn commit(&mut self, epoch: Epoch) -> Result<(), OperatorError> {
        if !self.s.exactly_once {
            return Ok(());
        }
        match self.staged {
            Some(e) if e <= epoch.0 => {
                rill_engine::faults::crash_point("postgres-before-commit");
                self.db().batch(format!("COMMIT PREPARED {}", literal(&self.gid(e))))?;
                self.staged = None;
            }
            Some(_) => return Ok(()),
            None => {}
        }
        // Rows held behind the prepared transaction: those whose checkpoint is complete are
        // committed at once; the next barrier's become the prepared transaction; the rest
        // open the next one.
        let (ready, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|(e, _)| *e <= epoch.0);
        if let Some(last) = ready.iter().map(|(e, _)| *e).max() {
            self.write_committed(last, ready.into_iter().flat_map(|(_, r)| r).collect())?;
        }
        let mut rest = rest.into_iter();
        if let Some((e, rows)) = rest.next() {
            if e == OPEN {
                self.write_rows(rows)?;
            } else {
                self.prepare(e, rows)?;
                self.held = rest.collect();
            }
        }
        Ok(())
    }

    fn recover(&mut self, pending: Option<&[u8]>) -> Result<(), OperatorError> {
        let Some(bytes) = pending else { return Ok(()) };
        self.recover_rescaled(&[bytes.to_vec()])
    }

    fn recover_rescaled(&mut self, pending: &[Vec<u8>]) -> Result<(), OperatorError> {
        if !self.s.exactly_once {
            return Ok(());
        }
        let mut all = Vec::new();
        for bytes in pending {
            all.push(serde_json::from_slice::<Pending>(bytes).map_err(|e| OperatorError::new(format!("postgres sink checkpoint: {e}")))?);
        }
        self.recover_from(all)
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        self.wait()?;
        if !self.s.exactly_once || self.finished_before || self.db.is_none() {
            return Ok(());
        }
        // The job ended: no checkpoint completes any more, so what is left is committed all
        // together. Each instance prepares an `end` transaction (the rows held behind a prepared
        // one, and those since the last barrier) recording an epoch beyond every checkpoint;
        // the instance that finds every instance's `end` prepared commits all of the sink's
        // prepared transactions. The first commit decides (see `recover_from`): a crash before
        // it resumes from the last checkpoint as if the job had not finished; one after it
        // commits the rest on recovery.
        let held: Vec<Record> = std::mem::take(&mut self.held).into_iter().flat_map(|(_, r)| r).collect();
        if self.s.upsert && !held.is_empty() {
            if let Some(e) = self.staged.take() {
                // The held rows would wait on its row locks. An upsert written twice after a
                // crash ends the same, so it need not wait for the others.
                self.finish_prepared(&self.gid(e), true)?;
            }
        }
        self.write_rows(held)?;
        if !self.in_transaction {
            self.db().batch("BEGIN".into())?;
            self.in_transaction = true;
        }
        let sql = format!("{}; PREPARE TRANSACTION {}", self.mark_row_sql(&self.end_gid(), self.last_epoch + 1), literal(&self.end_gid()));
        self.db().batch(sql)?;
        self.in_transaction = false;
        self.exclusively(|me| {
            let prepared = me.prepared()?;
            if prepared.iter().filter(|(_, _, e)| e.is_none()).count() as u32 >= me.parallelism {
                let (ends, rest): (Vec<_>, Vec<_>) = prepared.into_iter().partition(|(_, _, e)| e.is_none());
                for (n, (gid, _, _)) in ends.into_iter().chain(rest).enumerate() {
                    me.finish_prepared(&gid, true)?;
                    if n == 0 {
                        rill_engine::faults::crash_point("postgres-after-final-commit");
                    }
                }
            }
            Ok(())
        })?;
        self.staged = None;
        Ok(())
    }

    fn take_rejected(&mut self) -> Vec<(Record, String)> {
        std::mem::take(&mut self.rejected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_cells_escape_what_the_format_needs() {
        let mut out = Vec::new();
        copy_cell(&Value::str("a\tb\\c\nd\r"), Kind::Other, &mut out);
        copy_cell(&Value::Null, Kind::Other, &mut out);
        copy_cell(&Value::Int(0), Kind::Time, &mut out);
        assert_eq!(out, b"a\\tb\\\\c\\nd\\r\\N1970-01-01 00:00:00.000+00");
    }

    #[test]
    fn cells_follow_the_column_type() {
        assert_eq!(cell(&Value::Int(0), Kind::Time).as_deref(), Some("1970-01-01 00:00:00.000+00"));
        assert_eq!(cell(&Value::Int(7), Kind::Other).as_deref(), Some("7"));
        assert_eq!(cell(&Value::str("x"), Kind::Json).as_deref(), Some("\"x\""));
        assert_eq!(cell(&Value::Floats(vec![1.5, 2.0].into()), Kind::Array).as_deref(), Some("{1.5,2}"));
        assert_eq!(cell(&Value::Float(f64::NAN), Kind::Other).as_deref(), Some("NaN"));
        assert_eq!(cell(&Value::Null, Kind::Other), None);
        assert_eq!(Kind::of("timestamp with time zone"), Kind::Time);
        assert_eq!(Kind::of("real[]"), Kind::Array);
    }

    #[test]
    fn upsert_batches_keep_the_last_row_of_each_key() {
        let row = |k: &str, v: &str| Row { cells: vec![Some(k.into()), Some(v.into())], record: Record::new() };
        let mut rows = vec![row("a", "1"), row("b", "2"), row("a", "3")];
        dedupe(&mut rows, &[0]);
        let got: Vec<_> = rows.iter().map(|r| r.cells[1].clone().unwrap()).collect();
        assert_eq!(got, ["3", "2"]);
    }
}
