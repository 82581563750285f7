//! The `postgres` source: the rows of a query (or of a table) read once, as a bounded source.
//!
//! Each row becomes a record through `row_to_json`: numbers, text, booleans and JSON keep their
//! types; timestamps, dates and other types arrive as their text (ISO 8601 for timestamps). The
//! rows are fetched from a cursor, `fetch_rows` at a time, on the connection's thread while the
//! job runs. The checkpoint position is the number of rows emitted: a restored job reads the
//! query again and skips that many, so the query must return its rows in a fixed order (a
//! `table` is read in primary-key order when it has one; give a `query` an `ORDER BY`).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use rill_engine::config::de::duration;
use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::operator::OperatorError;
use rill_engine::record::Record;
use rill_engine::registry::{BuildContext, SourceSpec};
use rill_engine::source::{Progress, Source, SourceContext, SourceOutput, SourceStatus};

use super::{ident, Db, Failure};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresSourceConfig {
    url: Spanned<String>,
    password_env: Option<String>,
    /// A query whose rows are the records...
    query: Option<Spanned<String>>,
    /// ...or a table, read whole.
    table: Option<Spanned<String>>,
    /// Rows fetched from the cursor at a time (default 2000).
    fetch_rows: Option<u32>,
    #[serde(default, with = "duration::option")]
    retry_for: Option<Duration>,
}

pub(crate) fn build(ctx: &BuildContext) -> Result<SourceSpec, ConfigErrors> {
    let cfg: PostgresSourceConfig = ctx.options()?;
    let mut errors = Vec::new();
    let target = crate::options::keep(super::parse_url(&cfg.url, cfg.password_env.as_deref(), ctx.pipeline), &mut errors);
    let what = match (&cfg.query, &cfg.table) {
        (Some(q), None) => Some(What::Query(q.value.clone())),
        (None, Some(t)) => Some(What::Table(t.value.clone())),
        _ => {
            errors.push(ConfigError::new(Some(&ctx.options.span), "a `postgres` source reads a `query` or a `table` (one of them)").hint("e.g. `table: card_profiles` or `query: SELECT card_id, limit FROM cards ORDER BY card_id`"));
            None
        }
    };
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let (target, what) = (target.expect("checked"), what.expect("checked"));
    let fetch = cfg.fetch_rows.unwrap_or(2000).max(1);
    let patience = cfg.retry_for.unwrap_or(Duration::from_secs(30));
    let description = format!(
        "reads {} from {} once",
        match &what {
            What::Query(q) => format!("the rows of `{q}`"),
            What::Table(t) => format!("table {t}"),
        },
        target.shown
    );
    let mut spec = SourceSpec::new(description, move |_c: &SourceContext| {
        Ok(PostgresSource { target: target.clone(), what: what.clone(), fetch, patience, rows: None, db: None, emitted: 0, skip: 0, total: Arc::new(AtomicU64::new(u64::MAX)) })
    });
    spec.max_parallelism = Some(1);
    Ok(spec)
}

#[derive(Clone)]
enum What {
    Query(String),
    Table(String),
}

type Chunk = Result<Vec<String>, String>;

pub struct PostgresSource {
    target: super::Target,
    what: What,
    fetch: u32,
    patience: Duration,
    /// Rows (as JSON text) from the connection's thread. Dropped before `db`, whose drop
    /// waits for that thread: a thread blocked sending then sees the channel closed.
    rows: Option<mpsc::Receiver<Chunk>>,
    db: Option<Db>,
    emitted: u64,
    /// Restored: rows the checkpoint had emitted already.
    skip: u64,
    /// How many rows the query gives (counted in its snapshot before they are read), for
    /// progress; `u64::MAX` until known.
    total: Arc<AtomicU64>,
}

impl PostgresSource {
    /// The query, with a table read in primary-key order.
    fn sql(&self) -> Result<String, OperatorError> {
        let table = match &self.what {
            What::Query(q) => return Ok(q.clone()),
            What::Table(t) => t.clone(),
        };
        let db = self.db.as_ref().expect("opened");
        let shown = db.shown.clone();
        let t = table.clone();
        let key: Vec<String> = db
            .call(move |c| -> Result<Vec<String>, Failure> {
                let client = c.client().map_err(Failure::Lost)?;
                let rows = client
                    .query(
                        "SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
                         WHERE i.indrelid = to_regclass($1) AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
                        &[&ident(&t)],
                    )
                    .map_err(|e| Failure::of(&e))?;
                Ok(rows.iter().map(|r| r.get(0)).collect())
            })
            .map_err(|f| OperatorError::external(format!("PostgreSQL at {shown}: cannot read table {table}: {}", f.message())))?;
        let order = if key.is_empty() { String::new() } else { format!(" ORDER BY {}", key.iter().map(|k| ident(k)).collect::<Vec<_>>().join(", ")) };
        Ok(format!("SELECT * FROM {}{order}", ident(&table)))
    }
}

impl Source for PostgresSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        self.db = Some(Db::open(&self.target, self.patience, &format!("{}-{}", ctx.name, ctx.subtask))?);
        Ok(())
    }

    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError> {
        if self.rows.is_none() {
            let query = self.sql()?;
            let sql = format!("SELECT row_to_json(q)::text FROM ({query}) q");
            let (tx, rx) = mpsc::sync_channel::<Chunk>(4);
            let fetch = self.fetch as i32;
            let total = self.total.clone();
            self.db.as_ref().expect("opened").submit(move |c| {
                let mut run = || -> Result<(), Failure> {
                    let client = c.client().map_err(Failure::Lost)?;
                    // One snapshot for the count and the rows.
                    let mut t = client.build_transaction().isolation_level(postgres::IsolationLevel::RepeatableRead).read_only(true).start().map_err(|e| Failure::of(&e))?;
                    let n: i64 = t.query_one(format!("SELECT count(*) FROM ({query}) q").as_str(), &[]).map_err(|e| Failure::of(&e))?.get(0);
                    total.store(n as u64, Relaxed);
                    let portal = t.bind(sql.as_str(), &[]).map_err(|e| Failure::of(&e))?;
                    loop {
                        let rows = t.query_portal(&portal, fetch).map_err(|e| Failure::of(&e))?;
                        if rows.is_empty() {
                            break;
                        }
                        let chunk: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                        if tx.send(Ok(chunk)).is_err() {
                            return Ok(()); // the source is gone
                        }
                    }
                    t.commit().map_err(|e| Failure::of(&e))
                };
                if let Err(f) = run() {
                    let _ = tx.send(Err(f.message().to_string()));
                }
            });
            self.rows = Some(rx);
        }
        let rx = self.rows.as_ref().expect("started");
        while out.remaining() > 0 {
            match rx.try_recv() {
                Ok(Ok(chunk)) => {
                    for text in chunk {
                        if self.skip > 0 {
                            self.skip -= 1;
                            continue;
                        }
                        match Record::from_json(text.as_bytes()) {
                            Ok(r) => out.emit(r),
                            Err(e) => out.reject_raw(text, format!("not a record: {e}"), serde_json::json!({"row": self.emitted})),
                        }
                        self.emitted += 1;
                    }
                }
                Ok(Err(e)) => return Err(OperatorError::user(format!("PostgreSQL at {}: {e}", self.target.shown))),
                Err(mpsc::TryRecvError::Empty) => return Ok(if out.is_empty() { SourceStatus::Idle(Duration::from_millis(2)) } else { SourceStatus::Ready }),
                Err(mpsc::TryRecvError::Disconnected) => return Ok(SourceStatus::Finished),
            }
        }
        Ok(SourceStatus::Ready)
    }

    fn position(&self) -> serde_json::Value {
        serde_json::json!({"rows": self.emitted})
    }

    /// Rows read of those the query gives (counted first, in the same snapshot).
    fn progress(&self) -> Option<Progress> {
        let total = self.total.load(Relaxed);
        (total != u64::MAX).then(|| Progress { done: self.emitted.min(total), total })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), OperatorError> {
        let rows = position["rows"].as_u64().ok_or_else(|| OperatorError::new(format!("postgres source: bad checkpointed position {position}")))?;
        self.emitted = rows;
        self.skip = rows;
        Ok(())
    }
}
