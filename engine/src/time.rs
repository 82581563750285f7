//! Time: which clock a source's records are stamped with, and the watermarks it emits.
//!
//! Chosen per source:
//! - `event_time: {field: ts}` (or `expression: ...`): the record's own time, in epoch
//!   milliseconds (a number) or RFC 3339 (a string). Watermarks trail the largest timestamp seen
//!   by `max_out_of_orderness` (bounded out-of-orderness, as Flink's
//!   `forBoundedOutOfOrderness`). One is sent, between the records, each time the watermark has
//!   advanced by `watermark_interval` of event time (200 ms by default; Flink's default period
//!   is 200 ms of processing time). Being driven by the data rather than the clock, which
//!   records count as late does not depend on timing or batch sizes: reruns give the same
//!   results.
//! - `ingestion_time: true`: stamped with the clock when the source reads the record; the
//!   watermark follows the clock.
//! - neither: processing time. Records carry no timestamp; windows use the clock of the operator
//!   that sees them.
//!
//! With `idle_timeout`, a source instance that has had no data for that long tells its
//! receivers it is idle, so that it does not hold their watermark back; it counts again as soon
//! as it sends data.
//!
//! Event-time sources are aligned, their instances and the sources of a job with each other:
//! an instance whose watermark is more than `max_drift` (2 s by default; 0 for files and the
//! generator, which read as fast as they are asked) plus the event time its
//! last poll covered ahead of the slowest pauses until that one catches up, so that
//! windows waiting on the slowest instance, and a join's rows waiting for the other side's
//! watermark, do not pile up in state (Flink's watermark alignment, in one group per job). An
//! idle or finished instance does not hold the others back.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{from_node, ConfigError, ConfigErrors, Node, Spanned};
use crate::expr::Expr;
use crate::message::Watermark;
use crate::operator::{Rejected, RejectedInput};
use crate::columns::{Column, Columns};
use crate::record::{Data, Record, NO_TIMESTAMP};
use crate::value::Value;

/// How a source stamps its records.
#[derive(Clone, Debug)]
pub enum TimeMode {
    Processing,
    Ingestion { idle_timeout: Option<Duration> },
    Event { timestamp: Expr, max_out_of_orderness: i64, idle_timeout: Option<Duration>, interval: i64, max_drift: i64 },
}

/// How far (event time) an instance of a source may run ahead of its slowest sibling, beyond
/// the event time of its own last poll, unless the source's spec or the pipeline says otherwise
/// ([`SourceSpec::default_max_drift_ms`](crate::registry::SourceSpec::default_max_drift_ms)).
pub const DEFAULT_MAX_DRIFT_MS: i64 = 2000;

/// Event time between two watermarks of a source unless `watermark_interval` says otherwise.
pub const DEFAULT_WATERMARK_INTERVAL_MS: i64 = 200;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EventTimeConfig {
    /// Field holding the event time.
    field: Option<String>,
    /// Or an expression giving it.
    expression: Option<Spanned<String>>,
    #[serde(default, with = "crate::config::de::duration::option")]
    max_out_of_orderness: Option<Duration>,
    #[serde(default, with = "crate::config::de::duration::option")]
    idle_timeout: Option<Duration>,
    /// Event time between two watermarks (default 200ms).
    #[serde(default, with = "crate::config::de::duration::option")]
    watermark_interval: Option<Duration>,
    /// How far an instance of this source may run ahead of the slowest one, beyond one poll
    /// (default: the source's; 2 s, 0 for files and the generator).
    #[serde(default, with = "crate::config::de::duration::option")]
    max_drift: Option<Duration>,
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum IngestionConfig {
    On(bool),
    With {
        #[serde(default, with = "crate::config::de::duration::option")]
        idle_timeout: Option<Duration>,
    },
}

impl TimeMode {
    /// From a source's `event_time` / `ingestion_time` options.
    pub fn from_options(event: Option<&Node>, ingestion: Option<&Node>) -> Result<TimeMode, ConfigErrors> {
        match (event, ingestion) {
            (Some(e), Some(_)) => Err(ConfigError::new(Some(&e.span), "a source has either `event_time` or `ingestion_time`, not both").into()),
            (None, None) => Ok(TimeMode::Processing),
            (None, Some(i)) => match from_node::<IngestionConfig>(i)? {
                IngestionConfig::On(false) => Ok(TimeMode::Processing),
                IngestionConfig::On(true) => Ok(TimeMode::Ingestion { idle_timeout: None }),
                IngestionConfig::With { idle_timeout } => Ok(TimeMode::Ingestion { idle_timeout }),
            },
            (Some(e), None) => {
                let c: EventTimeConfig = from_node(e)?;
                let timestamp = match (&c.field, &c.expression) {
                    (Some(f), None) => Expr::compile(f).map_err(|err| ConfigError::new(Some(&e.span), format!("`field: {f}`: {}", err.message)))?,
                    (None, Some(x)) => Expr::compile(&x.value).map_err(|err| {
                        ConfigError::new(Some(&x.span), format!("in expression `{}`: {}", x.value, err.message))
                    })?,
                    _ => {
                        return Err(ConfigError::new(Some(&e.span), "`event_time` needs `field` or `expression` (one of them)")
                            .hint("e.g. `event_time: {field: ts, max_out_of_orderness: 200ms}`")
                            .into())
                    }
                };
                Ok(TimeMode::Event {
                    timestamp,
                    max_out_of_orderness: c.max_out_of_orderness.map(|d| d.as_millis() as i64).unwrap_or(0),
                    idle_timeout: c.idle_timeout,
                    interval: c.watermark_interval.map(|d| (d.as_millis() as i64).max(1)).unwrap_or(DEFAULT_WATERMARK_INTERVAL_MS),
                    max_drift: c.max_drift.map(|d| d.as_millis() as i64).unwrap_or(DEFAULT_MAX_DRIFT_MS),
                })
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            TimeMode::Processing => "processing time".into(),
            TimeMode::Ingestion { .. } => "ingestion time".into(),
            TimeMode::Event { timestamp, max_out_of_orderness, .. } => {
                format!("event time `{}`, watermark {max_out_of_orderness} ms behind", timestamp.source())
            }
        }
    }
}

/// Milliseconds since the epoch, now.
/// Microseconds on a monotonic clock since the first call in this process (never 0): when a
/// record entered the job ([`crate::record::Record::born`]).
pub fn mono_micros() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64 + 1
}

pub fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The earliest event time accepted: 0001-01-01T00:00:00Z, in epoch milliseconds.
pub const MIN_TIMESTAMP_MS: i64 = -62_135_596_800_000;
/// The latest event time accepted: 9999-12-31T23:59:59.999Z. A timestamp outside the years
/// 1–9999 is a bad record (a unit mix-up, a corrupt value), not a reason to move the watermark
/// to the end of time.
pub const MAX_TIMESTAMP_MS: i64 = 253_402_300_799_999;

fn in_range(ms: f64, shown: &dyn std::fmt::Display) -> Result<i64, String> {
    if (MIN_TIMESTAMP_MS as f64..=MAX_TIMESTAMP_MS as f64).contains(&ms) {
        Ok(ms as i64)
    } else {
        Err(format!("event time {shown} is outside the years 1 to 9999 (epoch milliseconds expected)"))
    }
}

/// Reads a timestamp: epoch milliseconds as a number, or an RFC 3339 string.
pub fn parse_timestamp(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) => in_range(*i as f64, i),
        Value::Float(f) => in_range(*f, f),
        Value::Str(s) => humantime::parse_rfc3339_weak(s.trim())
            .map(|t| t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0))
            .map_err(|e| format!("`{s}` is not an RFC 3339 time ({e})")),
        Value::Null => Err("the event time is missing (null)".into()),
        other => Err(format!("an event time must be epoch milliseconds or an RFC 3339 string, not {}", other.type_name())),
    }
}

/// Stamps the records of one source instance and decides its watermarks.
pub(crate) struct Timestamper {
    mode: TimeMode,
    max_seen: i64,
    emitted: i64,
    last_data: Instant,
    idle: bool,
    /// The clocks of the instance's splits, for sources that have them (Kafka partitions):
    /// then the watermark follows the slowest split that is neither finished nor idle.
    splits: Vec<SplitClock>,
    /// This poll's records by split: (position among the poll's records, index in `splits`).
    runs: Vec<(usize, usize)>,
    run_at: usize,
    /// The lowest `max_seen` of the splits that count.
    low: i64,
}

/// One split's event-time clock.
struct SplitClock {
    id: u64,
    max_seen: i64,
    last_data: Instant,
    finished: bool,
    /// Counts for the watermark (not finished, not idle).
    counts: bool,
}

impl Timestamper {
    pub(crate) fn new(mode: TimeMode) -> Timestamper {
        Timestamper { mode, max_seen: i64::MIN, emitted: i64::MIN, last_data: Instant::now(), idle: false, splits: Vec::new(), runs: Vec::new(), run_at: 0, low: i64::MIN }
    }

    /// Where this poll's records come from: `(n, split)` means "from the n-th record of the
    /// poll on, split `split`" (a split named with no record after it is only declared: it holds
    /// the watermark back until it has data, is idle or finishes); `finished`: splits that ended.
    /// Call before [`stamp`](Self::stamp), with `total` records in the poll.
    pub(crate) fn splits(&mut self, runs: &[(usize, u64)], finished: &[u64], total: usize) {
        self.splits.retain(|c| !c.finished);
        self.runs.clear();
        self.run_at = 0;
        let now = Instant::now();
        for (i, (pos, id)) in runs.iter().enumerate() {
            let slot = match self.splits.iter().position(|c| c.id == *id) {
                Some(s) => s,
                None => {
                    self.splits.push(SplitClock { id: *id, max_seen: i64::MIN, last_data: now, finished: false, counts: true });
                    self.splits.len() - 1
                }
            };
            let end = runs.get(i + 1).map_or(total, |r| r.0);
            if end > *pos {
                self.splits[slot].last_data = now;
            }
            self.runs.push((*pos, slot));
        }
        for id in finished {
            if let Some(c) = self.splits.iter_mut().find(|c| c.id == *id) {
                c.finished = true;
            }
        }
        self.refresh_splits();
    }

    /// Which splits count now (idle ones do not, with `idle_timeout`), and the lowest clock.
    fn refresh_splits(&mut self) {
        let timeout = match &self.mode {
            TimeMode::Event { idle_timeout, .. } => *idle_timeout,
            _ => return,
        };
        for c in &mut self.splits {
            c.counts = !c.finished && timeout.is_none_or(|t| c.last_data.elapsed() < t);
        }
        self.low = self.splits.iter().filter(|c| c.counts).map(|c| c.max_seen).min().unwrap_or(i64::MIN);
    }

    /// The split of the poll's `raw`-th record, if the source has splits.
    #[inline]
    fn split_of(&mut self, raw: usize) -> Option<usize> {
        while self.runs.get(self.run_at + 1).is_some_and(|r| r.0 <= raw) {
            self.run_at += 1;
        }
        self.runs.get(self.run_at).filter(|r| r.0 <= raw).map(|r| r.1)
    }

    /// Stamps the records of one poll (`pieces`, in order); those whose time cannot be read are
    /// moved to `rejected`. Returns where watermarks go: `(n, wm)` means "after the first n
    /// records (of all pieces, counting those kept), send wm".
    pub(crate) fn stamp(&mut self, pieces: &mut [Data], rejected: &mut Vec<Rejected>) -> Vec<(usize, Watermark)> {
        let mut marks = Vec::new();
        if pieces.iter().any(|p| !p.is_empty()) {
            self.last_data = Instant::now();
            self.idle = false;
        }
        let mut before = 0;
        for piece in pieces.iter_mut() {
            match piece {
                Data::Rows(records) => self.stamp_rows(records, before, rejected, &mut marks),
                Data::Columns(columns) => self.stamp_columns(columns, before, rejected, &mut marks),
            }
            before += piece.len();
        }
        marks
    }

    /// The record kept at position `pos` (0-based, across the poll; `raw` counting those
    /// rejected too) has event time `ts`.
    #[inline]
    fn observe(&mut self, ts: i64, pos: usize, raw: usize, marks: &mut Vec<(usize, Watermark)>) {
        let TimeMode::Event { max_out_of_orderness: ooo, interval, .. } = self.mode else { return };
        let candidate = match self.split_of(raw) {
            None => {
                if ts <= self.max_seen {
                    return;
                }
                self.max_seen = ts;
                ts
            }
            Some(slot) => {
                self.max_seen = self.max_seen.max(ts);
                let c = &mut self.splits[slot];
                if ts <= c.max_seen {
                    return;
                }
                let (was, counted) = (c.max_seen, c.counts);
                c.max_seen = ts;
                c.counts = !c.finished;
                if counted && was > self.low {
                    return; // not the slowest: the watermark stays
                }
                self.low = self.splits.iter().filter(|c| c.counts).map(|c| c.max_seen).min().unwrap_or(i64::MIN);
                if self.low == i64::MIN {
                    return;
                }
                self.low
            }
        };
        let wm = candidate.saturating_sub(ooo).saturating_sub(1);
        if self.emitted == i64::MIN || wm >= self.emitted.saturating_add(interval) {
            self.emitted = wm;
            marks.push((pos + 1, Watermark(wm)));
        }
    }

    /// [`observe`](Self::observe) of a run of records that all kept their time, the first at
    /// position `before`.
    fn observe_all(&mut self, stamps: &[i64], before: usize, marks: &mut Vec<(usize, Watermark)>) {
        let TimeMode::Event { max_out_of_orderness: ooo, interval, .. } = self.mode else { return };
        if !self.runs.is_empty() {
            for (i, &ts) in stamps.iter().enumerate() {
                self.observe(ts, before + i, before + i, marks);
            }
            return;
        }
        // No splits: the same steps as `observe`, with the clock in registers.
        let (mut max_seen, mut emitted) = (self.max_seen, self.emitted);
        for (i, &ts) in stamps.iter().enumerate() {
            if ts <= max_seen {
                continue;
            }
            max_seen = ts;
            let wm = ts.saturating_sub(ooo).saturating_sub(1);
            if emitted == i64::MIN || wm >= emitted.saturating_add(interval) {
                emitted = wm;
                marks.push((before + i + 1, Watermark(wm)));
            }
        }
        (self.max_seen, self.emitted) = (max_seen, emitted);
    }

    fn stamp_rows(&mut self, records: &mut Vec<Record>, before: usize, rejected: &mut Vec<Rejected>, marks: &mut Vec<(usize, Watermark)>) {
        match &self.mode {
            TimeMode::Processing => {}
            TimeMode::Ingestion { .. } => {
                let now = now_millis();
                for r in records.iter_mut() {
                    r.timestamp = now;
                }
                self.max_seen = self.max_seen.max(now);
            }
            TimeMode::Event { timestamp, .. } => {
                let timestamp = timestamp.clone();
                let mut bad: Vec<(usize, String)> = Vec::new();
                for i in 0..records.len() {
                    match timestamp.eval(&records[i]).map_err(|e| e.to_string()).and_then(|v| parse_timestamp(&v)) {
                        Ok(ts) => {
                            records[i].timestamp = ts;
                            // Counting only the records kept.
                            self.observe(ts, before + i - bad.len(), before + i, marks);
                        }
                        Err(e) => bad.push((i, format!("event time `{}`: {e}", timestamp.source()))),
                    }
                }
                for (i, error) in bad.into_iter().rev() {
                    let r = records.remove(i);
                    rejected.push(Rejected { input: RejectedInput::Record(r), error, position: None });
                }
            }
        }
    }

    fn stamp_columns(&mut self, columns: &mut Columns, before: usize, rejected: &mut Vec<Rejected>, marks: &mut Vec<(usize, Watermark)>) {
        match &self.mode {
            TimeMode::Processing => {}
            TimeMode::Ingestion { .. } => {
                let now = now_millis();
                columns.timestamps.iter_mut().for_each(|t| *t = now);
                self.max_seen = self.max_seen.max(now);
            }
            TimeMode::Event { timestamp, .. } => {
                let timestamp = timestamp.clone();
                let evaluated = timestamp.eval_columns(columns);
                if let (true, Column::Int(x)) = (evaluated.errors.is_empty(), &*evaluated.column) {
                    if x.iter().all(|t| (MIN_TIMESTAMP_MS..=MAX_TIMESTAMP_MS).contains(t)) {
                        // Every row has its time: the column is the stamps.
                        let stamps = x.clone();
                        self.observe_all(&stamps, before, marks);
                        columns.timestamps = stamps;
                        return;
                    }
                }
                let mut failed = evaluated.errors.into_iter().peekable();
                let mut keep = Vec::new();
                let mut stamps = Vec::with_capacity(columns.len());
                let mut bad: Vec<(usize, String)> = Vec::new();
                for i in 0..columns.len() {
                    let ts = match failed.next_if(|(row, _)| *row == i) {
                        Some((_, e)) => Err(e.to_string()),
                        None => match &*evaluated.column {
                            Column::Int(x) => in_range(x[i] as f64, &x[i]),
                            other => parse_timestamp(&other.get(i)),
                        },
                    };
                    match ts {
                        Ok(ts) => {
                            stamps.push(ts);
                            self.observe(ts, before + i - bad.len(), before + i, marks);
                        }
                        Err(e) => {
                            stamps.push(NO_TIMESTAMP);
                            if keep.is_empty() {
                                keep = vec![true; columns.len()];
                            }
                            keep[i] = false;
                            bad.push((i, format!("event time `{}`: {e}", timestamp.source())));
                        }
                    }
                }
                columns.timestamps = stamps;
                for (i, error) in bad {
                    rejected.push(Rejected { input: RejectedInput::Record(columns.row(i)), error, position: None });
                }
                if !keep.is_empty() {
                    *columns = std::mem::replace(columns, Columns::new(Vec::new())).select(&keep);
                }
            }
        }
    }

    /// Ingestion time: the watermark to send now, if the clock advanced it. (Event-time
    /// watermarks come from [`stamp`](Self::stamp).)
    pub(crate) fn watermark(&mut self) -> Option<Watermark> {
        let wm = match &self.mode {
            TimeMode::Ingestion { .. } => now_millis() - 1,
            // A split that finished or went idle no longer holds the watermark back.
            TimeMode::Event { max_out_of_orderness, .. } if !self.splits.is_empty() => {
                let ooo = *max_out_of_orderness;
                self.refresh_splits();
                if self.low == i64::MIN {
                    return None;
                }
                self.low.saturating_sub(ooo).saturating_sub(1)
            }
            TimeMode::Processing | TimeMode::Event { .. } => return None,
        };
        (wm > self.emitted).then(|| {
            self.emitted = wm;
            Watermark(wm)
        })
    }

    /// The last watermark sent (event time).
    pub(crate) fn emitted(&self) -> i64 {
        self.emitted
    }

    /// Event-time drift allowed ahead of sibling instances, if aligned.
    pub(crate) fn max_drift(&self) -> Option<i64> {
        match &self.mode {
            TimeMode::Event { max_drift, .. } => Some(*max_drift),
            _ => None,
        }
    }

    /// The source says it is idle (it has nothing to read, e.g. no partitions): true if that is
    /// news.
    pub(crate) fn force_idle(&mut self) -> bool {
        !std::mem::replace(&mut self.idle, true)
    }

    /// Whether the source has just become idle (true once per idle period).
    pub(crate) fn became_idle(&mut self) -> bool {
        let timeout = match &self.mode {
            TimeMode::Processing => None,
            TimeMode::Ingestion { idle_timeout } | TimeMode::Event { idle_timeout, .. } => *idle_timeout,
        };
        match timeout {
            Some(t) if !self.idle && self.last_data.elapsed() >= t => {
                self.idle = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_from_millis_and_rfc3339() {
        assert_eq!(parse_timestamp(&Value::Int(1700000000000)), Ok(1700000000000));
        assert_eq!(parse_timestamp(&Value::str("2023-11-14T22:13:20Z")), Ok(1700000000000));
        assert_eq!(parse_timestamp(&Value::str("2023-11-14T22:13:20.250Z")), Ok(1700000000250));
        assert!(parse_timestamp(&Value::str("yesterday")).is_err());
        assert!(parse_timestamp(&Value::Null).is_err());
    }

    #[test]
    fn timestamps_outside_the_years_1_to_9999_are_errors() {
        assert_eq!(parse_timestamp(&Value::Float(1700000000000.5)), Ok(1700000000000));
        assert_eq!(parse_timestamp(&Value::Int(MAX_TIMESTAMP_MS)), Ok(MAX_TIMESTAMP_MS));
        for bad in [Value::Float(1.5e300), Value::Float(f64::NAN), Value::Float(f64::NEG_INFINITY), Value::Int(i64::MAX), Value::Int(MIN_TIMESTAMP_MS - 1)] {
            let e = parse_timestamp(&bad).unwrap_err();
            assert!(e.contains("outside the years 1 to 9999"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn bounded_out_of_orderness() {
        let mode = TimeMode::Event { timestamp: Expr::compile("ts").unwrap(), max_out_of_orderness: 200, idle_timeout: None, interval: 200, max_drift: 2000 };
        let mut t = Timestamper::new(mode);
        let mut recs: Vec<Record> = [1000i64, 1100, 1500, 1200, 1699, 1700].iter().map(|ts| [("ts", *ts)].into_iter().collect()).collect();
        recs.insert(2, [("ts", "bad")].into_iter().collect());
        let mut rejected = Vec::new();
        let mut pieces = [Data::Rows(recs)];
        let marks = t.stamp(&mut pieces, &mut rejected);
        let [Data::Rows(recs)] = pieces else { unreachable!() };
        assert_eq!(recs.iter().map(|r| r.timestamp).collect::<Vec<_>>(), [1000, 1100, 1500, 1200, 1699, 1700]);
        assert_eq!(rejected.len(), 1);
        assert!(rejected[0].error.contains("not an RFC 3339 time"), "{:?}", rejected[0]);
        // After 1000 (wm 799), after 1500 (1299: 500 on), then 1700 (1499: 200 on); 1699 is not enough.
        assert_eq!(marks, [(1, Watermark(799)), (3, Watermark(1299)), (6, Watermark(1499))]);
    }

    #[test]
    fn the_watermark_follows_the_slowest_split() {
        let mode = TimeMode::Event { timestamp: Expr::compile("ts").unwrap(), max_out_of_orderness: 0, idle_timeout: None, interval: 1, max_drift: 2000 };
        let mut t = Timestamper::new(mode);
        let rows = |ts: &[i64]| Data::Rows(ts.iter().map(|ts| [("ts", *ts)].into_iter().collect()).collect());
        let mut rejected = Vec::new();
        // Split 1 is declared and has no data yet: split 0 alone moves nothing.
        t.splits(&[(0, 0), (3, 1)], &[], 3);
        assert_eq!(t.stamp(&mut [rows(&[100, 200, 300])], &mut rejected), []);
        // Split 1 far behind: the watermark follows it, not split 0's 300.
        t.splits(&[(0, 1), (2, 0)], &[], 3);
        assert_eq!(t.stamp(&mut [rows(&[10, 20, 400])], &mut rejected), [(1, Watermark(9)), (2, Watermark(19))]);
        // Split 1 catches up past split 0's 400: now split 0 is the slowest.
        t.splits(&[(0, 1)], &[], 2);
        assert_eq!(t.stamp(&mut [rows(&[350, 500])], &mut rejected), [(1, Watermark(349)), (2, Watermark(399))]);
        assert_eq!(t.watermark(), None, "nothing new without records");
        // Split 0 ends: split 1's clock alone decides, at once.
        t.splits(&[], &[0], 0);
        assert_eq!(t.watermark(), Some(Watermark(499)));
    }

    #[test]
    fn integer_time_columns_are_stamped_as_rows_are() {
        let mode = || TimeMode::Event { timestamp: Expr::compile("ts").unwrap(), max_out_of_orderness: 100, idle_timeout: None, interval: 200, max_drift: 2000 };
        // In order, out of order, below the clock; then a batch with a time out of range.
        let batches: [&[i64]; 3] = [&[1000, 1100, 1500, 1200, 1699, 1700, 1950, 2600], &[2000, 2900, 2901, 3300], &[3400, i64::MAX, 3800]];
        let (mut by_rows, mut by_columns) = (Timestamper::new(mode()), Timestamper::new(mode()));
        for stamps in batches {
            let mut columns = Columns::new((0..stamps.len() as u64).collect());
            columns.set(crate::value::Sym::new("ts"), Column::Int(stamps.to_vec()));
            let mut rows = [Data::Rows(columns.to_records())];
            let mut cols = [Data::Columns(columns)];
            let (mut rejected_rows, mut rejected_columns) = (Vec::new(), Vec::new());
            assert_eq!(by_columns.stamp(&mut cols, &mut rejected_columns), by_rows.stamp(&mut rows, &mut rejected_rows));
            let [Data::Columns(stamped)] = cols else { unreachable!() };
            let [Data::Rows(want)] = rows else { unreachable!() };
            assert_eq!(stamped.timestamps, want.iter().map(|r| r.timestamp).collect::<Vec<_>>());
            assert_eq!(rejected_columns.iter().map(|r| &r.error).collect::<Vec<_>>(), rejected_rows.iter().map(|r| &r.error).collect::<Vec<_>>());
        }
        assert_eq!((by_columns.max_seen, by_columns.emitted), (by_rows.max_seen, by_rows.emitted));
    }

    #[test]
    fn column_batches_are_stamped_as_rows_are() {
        let mode = || TimeMode::Event { timestamp: Expr::compile("ts").unwrap(), max_out_of_orderness: 200, idle_timeout: None, interval: 200, max_drift: 2000 };
        let stamps = [Value::Int(1000), Value::Int(1100), Value::str("bad"), Value::Int(1500), Value::Int(1200), Value::Int(1699), Value::Int(1700)];
        let mut columns = Columns::new((0..stamps.len() as u64).collect());
        columns.set(crate::value::Sym::new("ts"), Column::from_values(stamps.to_vec()));
        let rows = columns.to_records();
        let (mut by_rows, mut by_columns) = (Timestamper::new(mode()), Timestamper::new(mode()));
        let (mut rejected_rows, mut rejected_columns) = (Vec::new(), Vec::new());
        // Split in two pieces: positions count across the poll.
        let mut cols = columns.clone();
        let second = cols.split_off(3);
        let mut pieces = [Data::Columns(cols), Data::Columns(second)];
        let mut row_pieces = [Data::Rows(rows)];
        let marks = by_columns.stamp(&mut pieces, &mut rejected_columns);
        assert_eq!(marks, by_rows.stamp(&mut row_pieces, &mut rejected_rows));
        let stamped: Vec<Record> = pieces.into_iter().flat_map(Data::into_records).collect();
        let [Data::Rows(want)] = row_pieces else { unreachable!() };
        assert_eq!(stamped.iter().map(|r| r.timestamp).collect::<Vec<_>>(), want.iter().map(|r| r.timestamp).collect::<Vec<_>>());
        assert_eq!(stamped, want);
        assert_eq!(rejected_columns.len(), 1);
        assert_eq!(rejected_columns[0].error, rejected_rows[0].error);
    }
}
