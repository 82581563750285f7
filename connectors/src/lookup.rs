//! `lookup`: enriches each record with the row of a table for its key (Flink's lookup join).
//!
//! The table is loaded when the job starts, from a file (JSON Lines or CSV, reloaded when the
//! file changes) or from PostgreSQL (a query or a table, loaded again every `refresh`), on a
//! thread of each instance's own; a record is enriched with the version loaded last, so the
//! join is as of processing time. Small tables are broadcast: every instance loads all of it.
//! With `partitioned: true` the input is routed by key and each instance keeps only the rows of
//! its key groups. A failed reload keeps the version before it (and says so); a failed first
//! load fails the job.

use std::collections::HashMap;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime};

use rill_engine::config::de::duration;
use rill_engine::config::{ConfigError, ConfigErrors, Ordered, Spanned};
use rill_engine::expr::Expr;
use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError};
use rill_engine::record::{Batch, Record};
use rill_engine::registry::{BuildContext, TransformSpec};
use rill_engine::value::{Key, Sym, Value};

use crate::format::{Decoder, Format, FormatConfig};
use crate::options::{choice, keep};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupConfig {
    /// The record's key: an expression.
    key: Spanned<String>,
    table: TableConfig,
    /// `field: expression` over the record and `table` (the matched row, as a map).
    select: Option<Ordered<Spanned<String>>>,
    /// `null` (the selected fields are null), `drop`, or `dead_letter`.
    on_miss: Option<Spanned<String>>,
    #[serde(default)]
    partitioned: bool,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TableConfig {
    #[serde(rename = "type")]
    kind: Spanned<String>,
    /// The table's column holding the key.
    key: String,
    path: Option<Spanned<String>>,
    #[serde(default)]
    format: FormatConfig,
    url: Option<Spanned<String>>,
    password_env: Option<String>,
    query: Option<String>,
    table: Option<String>,
    #[serde(default, with = "duration::option")]
    refresh: Option<Duration>,
}

#[derive(Clone)]
enum From {
    File { path: std::path::PathBuf, format: Format },
    Postgres { target: crate::postgres::Target, sql: String },
}

#[derive(Clone, Copy, PartialEq)]
enum Miss {
    Null,
    Drop,
    DeadLetter,
}

struct Settings {
    key: Expr,
    from: From,
    table_key: Sym,
    refresh: Duration,
    select: Option<Vec<(Sym, Expr)>>,
    miss: Miss,
    partitioned: bool,
    name: String,
    /// `table`, the matched row's name in `select`.
    table_field: Sym,
}

pub(crate) fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: LookupConfig = ctx.options()?;
    let mut errors = Vec::new();
    let key = keep(ctx.expr(&cfg.key), &mut errors);
    let t = &cfg.table;
    let from = match t.kind.value.as_str() {
        "file" => match &t.path {
            Some(p) => keep(t.format.build(), &mut errors).map(|format| From::File { path: ctx.pipeline.resolve(&p.value), format }),
            None => {
                errors.push(ConfigError::new(Some(&t.kind.span), "a `file` table needs `path`"));
                None
            }
        },
        "postgres" => {
            let sql = match (&t.query, &t.table) {
                (Some(q), None) => Some(q.clone()),
                (None, Some(name)) => Some(format!("SELECT * FROM {}", crate::postgres::ident(name))),
                _ => {
                    errors.push(ConfigError::new(Some(&t.kind.span), "a `postgres` table reads a `query` or a `table` (one of them)"));
                    None
                }
            };
            match &t.url {
                Some(url) => keep(crate::postgres::parse_url(url, t.password_env.as_deref(), ctx.pipeline), &mut errors).zip(sql).map(|(target, sql)| From::Postgres { target, sql }),
                None => {
                    errors.push(ConfigError::new(Some(&t.kind.span), "a `postgres` table needs `url`"));
                    None
                }
            }
        }
        other => {
            errors.push(ConfigError::new(Some(&t.kind.span), format!("unknown table type `{other}`")).hint("a lookup table is `type: file` or `type: postgres`"));
            None
        }
    };
    let select = cfg.select.as_ref().map(|s| s.0.iter().filter_map(|(name, e)| Some((Sym::new(name), keep(ctx.expr(e), &mut errors)?))).collect());
    let miss = [Miss::Null, Miss::Drop, Miss::DeadLetter][choice(&cfg.on_miss, "on_miss", &["null", "drop", "dead_letter"], &mut errors)];
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let (key, from) = (key.expect("checked"), from.expect("checked"));
    let refresh = t.refresh.unwrap_or(match from {
        From::File { .. } => Duration::from_secs(1),
        From::Postgres { .. } => Duration::from_secs(60),
    });
    let description = format!(
        "adds the row of {} whose `{}` is `{}` ({}; {}), on a miss: {}",
        match &from {
            From::File { path, .. } => format!("file {}", path.display()),
            From::Postgres { target, sql } => format!("`{sql}` on {}", target.shown),
        },
        t.key,
        key.source(),
        match &from {
            From::File { .. } => format!("reloaded when it changes, checked every {}", humantime::format_duration(refresh)),
            From::Postgres { .. } => format!("loaded again every {}", humantime::format_duration(refresh)),
        },
        if cfg.partitioned { "partitioned by key" } else { "broadcast to every instance" },
        ["null fields", "dropped", "dead-lettered"][miss as usize]
    );
    let s = Arc::new(Settings { key: key.clone(), from, table_key: Sym::new(&t.key), refresh, select, miss, partitioned: cfg.partitioned, name: ctx.name.to_string(), table_field: Sym::new("table") });
    let mut spec = TransformSpec::new(description, move |c: &OperatorContext| Ok(Lookup::new(s.clone(), c)));
    if cfg.partitioned {
        spec.key_by = Some(key);
    }
    Ok(spec)
}

/// One loaded version of the table.
#[derive(Default)]
struct Table {
    rows: HashMap<Key, Arc<Record>>,
    /// The columns of the rows (of the first), for a miss without `select`.
    columns: Vec<Sym>,
}

pub struct Lookup {
    s: Arc<Settings>,
    key_groups: std::ops::Range<u32>,
    max_parallelism: u32,
    current: Arc<Mutex<Arc<Table>>>,
    /// Dropped with the operator: the loading thread then stops.
    _stop: Option<mpsc::Sender<()>>,
    misses: u64,
    dropped: u64,
    loads: Arc<std::sync::atomic::AtomicU64>,
}

impl Lookup {
    fn new(s: Arc<Settings>, c: &OperatorContext) -> Lookup {
        Lookup {
            s,
            key_groups: c.key_groups.clone(),
            max_parallelism: c.max_parallelism,
            current: Arc::default(),
            _stop: None,
            misses: 0,
            dropped: 0,
            loads: Arc::default(),
        }
    }
}

/// What identifies a version of the table's source (a file's length and modification time).
type Version = Option<(u64, SystemTime)>;

/// Loads the table: its rows by key (only those of `groups` when partitioned).
/// `client` is the loading thread's PostgreSQL connection, kept from one load to the next (made
/// again after it failed).
fn load(s: &Settings, groups: &Option<(std::ops::Range<u32>, u32)>, client: &mut Option<postgres::Client>) -> Result<(Table, Version), String> {
    let records: Vec<Record> = match &s.from {
        From::File { path, format } => {
            let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let version = meta.modified().ok().map(|m| (meta.len(), m));
            let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let mut decoder = Decoder::new(format);
            let mut out = Vec::new();
            for (i, line) in text.split(|&b| b == b'\n').enumerate() {
                match decoder.decode(line) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => {}
                    Err(e) => return Err(format!("{} at {}:{}:{}", e.message, path.display(), i + 1, e.column)),
                }
            }
            return index(s, out, groups).map(|t| (t, version));
        }
        From::Postgres { target, sql } => {
            if client.as_ref().is_none_or(|c| c.is_closed()) {
                *client = Some(crate::postgres::connect(target, Duration::from_secs(30))?);
            }
            let got = client.as_mut().expect("connected").query(&format!("SELECT row_to_json(q)::text FROM ({sql}) q"), &[]);
            let rows = got.map_err(|e| {
                *client = None;
                format!("PostgreSQL at {}: {}", target.shown, crate::postgres::Failure::of(&e).message())
            })?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let text: String = r.get(0);
                out.push(Record::from_json(text.as_bytes()).map_err(|e| format!("PostgreSQL row {text}: {e}"))?);
            }
            out
        }
    };
    index(s, records, groups).map(|t| (t, None))
}

fn index(s: &Settings, records: Vec<Record>, groups: &Option<(std::ops::Range<u32>, u32)>) -> Result<Table, String> {
    let mut t = Table { rows: HashMap::with_capacity(records.len()), columns: records.first().map(|r| r.fields().iter().map(|(k, _)| *k).collect()).unwrap_or_default() };
    let mut keyless = 0;
    for r in records {
        let Some(k) = r.get(s.table_key).filter(|v| !v.is_null()).cloned() else {
            keyless += 1;
            continue;
        };
        if let Some((range, max)) = groups {
            if !range.contains(&rill_engine::exchange::KeyGroup::of_hash(k.stable_hash(), *max).0) {
                continue;
            }
        }
        t.rows.insert(Key(k), Arc::new(r));
    }
    if keyless > 0 {
        tracing::warn!("lookup `{}`: {keyless} row(s) of the table have no `{}`; they cannot match", s.name, s.table_key);
    }
    Ok(t)
}

impl Lookup {
    fn enrich(&mut self, table: &Table, mut r: Record, out: &mut Collector) {
        let key = match self.s.key.eval(&r) {
            Ok(k) => k,
            Err(e) => return out.reject(r, format!("lookup key `{}`: {e}", self.s.key.source())),
        };
        let row = table.rows.get(&Key(key.clone()));
        if row.is_none() {
            self.misses += 1;
            match self.s.miss {
                Miss::Drop => {
                    self.dropped += 1;
                    return;
                }
                Miss::DeadLetter => return out.reject(r, format!("lookup: no row of the table has `{}` = {key}", self.s.table_key)),
                Miss::Null => {}
            }
        }
        match (&self.s.select, row) {
            (None, Some(row)) => {
                for (k, v) in row.fields() {
                    if *k != self.s.table_key {
                        r.set(*k, v.clone());
                    }
                }
            }
            (None, None) => {
                for k in &table.columns {
                    if *k != self.s.table_key {
                        r.set(*k, Value::Null);
                    }
                }
            }
            (Some(select), row) => {
                // `table` is the row while the expressions run (a field of that name, put back).
                let table_sym = self.s.table_field;
                let own = r.remove(table_sym);
                r.set(table_sym, row.map(|row| Value::Map(row.clone())).unwrap_or(Value::Null));
                let mut values = Vec::with_capacity(select.len());
                let mut failed = None;
                for (name, e) in select {
                    match (row, e.eval(&r)) {
                        (_, Ok(v)) => values.push(v),
                        (None, Err(_)) => values.push(Value::Null), // `table.x` of no row
                        (Some(_), Err(err)) => {
                            failed = Some(format!("lookup field `{name}` = `{}`: {err}", e.source()));
                            break;
                        }
                    }
                }
                r.remove(table_sym);
                if let Some(v) = own {
                    r.set(table_sym, v);
                }
                if let Some(error) = failed {
                    return out.reject(r, error);
                }
                for ((name, _), v) in select.iter().zip(values) {
                    r.set(*name, v);
                }
            }
        }
        out.emit(r);
    }
}

impl Operator for Lookup {
    fn open(&mut self, _ctx: &OperatorContext) -> Result<(), OperatorError> {
        let groups = self.s.partitioned.then(|| (self.key_groups.clone(), self.max_parallelism));
        let (stop, stopped) = mpsc::channel::<()>();
        self._stop = Some(stop);
        let (first_tx, first_rx) = mpsc::channel::<Result<usize, String>>();
        let (s, current, loads) = (self.s.clone(), self.current.clone(), self.loads.clone());
        // Loads run on a thread of their own (the PostgreSQL client cannot run inside the
        // actor's runtime); `open` waits for the first.
        std::thread::Builder::new()
            .name(format!("lookup-{}", s.name))
            .spawn(move || {
                let mut version = None;
                let mut first = true;
                let mut client = None;
                loop {
                    let unchanged = match (&s.from, first) {
                        (From::File { path, .. }, false) => {
                            let now = std::fs::metadata(path).ok().and_then(|m| Some((m.len(), m.modified().ok()?)));
                            now.is_none() || now == version // gone for now: the version before stays
                        }
                        _ => false,
                    };
                    if !unchanged {
                        match load(&s, &groups, &mut client) {
                            Ok((t, v)) => {
                                let n = t.rows.len();
                                tracing::info!("lookup `{}`: {} {n} row(s)", s.name, if first { "loaded" } else { "reloaded" });
                                version = v;
                                *current.lock().expect("not poisoned") = Arc::new(t);
                                loads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                if first {
                                    let _ = first_tx.send(Ok(n));
                                }
                            }
                            Err(e) if first => {
                                let _ = first_tx.send(Err(e));
                                return;
                            }
                            Err(e) => tracing::warn!("lookup `{}`: cannot reload the table ({e}); the version before stays", s.name),
                        }
                    }
                    first = false;
                    if !matches!(stopped.recv_timeout(s.refresh), Err(mpsc::RecvTimeoutError::Timeout)) {
                        return;
                    }
                }
            })
            .map_err(|e| OperatorError::new(format!("cannot start a thread: {e}")))?;
        match first_rx.recv() {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(OperatorError::external(format!("lookup `{}`: cannot load the table: {e}", self.s.name))),
            Err(_) => Err(OperatorError::new(format!("lookup `{}`: the loading thread stopped", self.s.name))),
        }
    }

    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        let table = self.current.lock().expect("not poisoned").clone();
        self.enrich(&table, record, out);
        Ok(())
    }

    fn process_batch(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        let table = self.current.lock().expect("not poisoned").clone();
        for r in batch.into_records() {
            self.enrich(&table, r, out);
        }
        Ok(())
    }

    fn report(&self) -> Option<String> {
        Some(format!(
            "{} miss(es){}, table loaded {} time(s)",
            self.misses,
            if self.dropped > 0 { format!(" ({} dropped)", self.dropped) } else { String::new() },
            self.loads.load(std::sync::atomic::Ordering::Relaxed)
        ))
    }
}
