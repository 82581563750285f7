//! The `kafka` source.
//!
//! Partitions are the source's splits. Partition `p` of topic `t` belongs to instance
//! `(start(t) + p) % parallelism`, where `start(t)` comes from the topic's name (Flink's Kafka
//! source does the same), so partitions found later never move the ones already owned. Every
//! instance assigns its partitions itself (no consumer-group rebalancing: the checkpoint, not
//! the group, says where to resume), resolves where each starts to a concrete offset before
//! reading, and checkpoints the next offset of each. Offsets are committed to the group when a
//! checkpoint completes, for monitoring tools only.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rill_engine::config::de::duration;
use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::operator::OperatorError;
use rill_engine::record::Record;
use rill_engine::registry::{BuildContext, SourceSpec};
use rill_engine::source::{Source, SourceContext, SourceOutput, SourceStatus};
use rill_engine::value::{Sym, Value};

use crate::format::{Decoder, Format, FormatConfig};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KafkaSourceConfig {
    pub(crate) bootstrap_servers: Spanned<String>,
    topic: Option<String>,
    topics: Option<Vec<String>>,
    /// A regular expression over topic names, matched whole.
    topic_pattern: Option<Spanned<String>>,
    /// The consumer group offsets are committed to (default `rill-<job>-<source>`).
    group_id: Option<String>,
    #[serde(default)]
    start: Option<Spanned<StartConfig>>,
    stop: Option<Spanned<StopConfig>>,
    #[serde(default)]
    format: FormatConfig,
    /// A field that gets the message's topic, partition, offset, key, timestamp and headers.
    metadata: Option<String>,
    /// librdkafka settings (`security.protocol`, `ssl.ca.location`, `sasl.password: ${VAR}`...).
    #[serde(default)]
    pub(crate) properties: BTreeMap<String, String>,
    /// How often to look for new partitions and topics (default 10s).
    #[serde(default, with = "duration::option")]
    discovery_interval: Option<Duration>,
}

impl KafkaSourceConfig {
    /// A `topic_pattern` as the regular expression it is, matched whole.
    fn pattern(p: &str) -> String {
        format!("^(?:{p})$")
    }

    /// What a consumer-group member subscribes to for these topics (librdkafka takes a name
    /// starting with `^` as a regular expression).
    pub(crate) fn subscription(&self) -> Vec<String> {
        match (&self.topic, &self.topics, &self.topic_pattern) {
            (Some(t), _, _) => vec![t.clone()],
            (None, Some(ts), _) => ts.clone(),
            (None, None, Some(p)) => vec![Self::pattern(&p.value)],
            (None, None, None) => Vec::new(),
        }
    }
}

#[derive(serde::Deserialize, Clone, Debug)]
#[serde(untagged)]
enum StartConfig {
    Named(String),
    At { timestamp: TimeSpec },
}

#[derive(serde::Deserialize, Clone, Debug)]
#[serde(untagged)]
enum TimeSpec {
    Millis(i64),
    Text(String),
}

#[derive(serde::Deserialize, Clone, Debug)]
#[serde(untagged)]
enum StopConfig {
    Named(String),
    /// `{offsets: {topic: {partition: offset}}}`: stop before these offsets.
    Offsets { offsets: BTreeMap<String, BTreeMap<i32, i64>> },
}

#[derive(Clone, Debug)]
enum Start {
    Earliest,
    Latest,
    Committed,
    Timestamp(i64),
}

#[derive(Clone, Debug)]
enum Stop {
    /// The partitions' ends when the job starts reading them.
    Latest,
    Offsets(HashMap<(String, i32), i64>),
}

#[derive(Clone, Debug)]
enum Topics {
    Names(Vec<String>),
    Pattern(regex::Regex),
}

/// What every instance of one `kafka` source shares.
struct Settings {
    bootstrap: String,
    topics: Topics,
    group_id: String,
    start: Start,
    stop: Option<Stop>,
    format: Format,
    metadata: Option<Sym>,
    properties: BTreeMap<String, String>,
    discovery: Duration,
    /// A scaled-out task reads only this partition (of each topic).
    task: Option<i32>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) fn build(ctx: &BuildContext) -> Result<SourceSpec, ConfigErrors> {
    let cfg: KafkaSourceConfig = ctx.options()?;
    let mut errors = Vec::new();
    if let Err(e) = super::check_bootstrap(&cfg.bootstrap_servers) {
        errors.push(e);
    }
    let topics = match (&cfg.topic, &cfg.topics, &cfg.topic_pattern) {
        (Some(t), None, None) => Some(Topics::Names(vec![t.clone()])),
        (None, Some(ts), None) if !ts.is_empty() => Some(Topics::Names(ts.clone())),
        (None, None, Some(p)) => match regex::Regex::new(&KafkaSourceConfig::pattern(&p.value)) {
            Ok(r) => Some(Topics::Pattern(r)),
            Err(e) => {
                errors.push(ConfigError::new(Some(&p.span), format!("`topic_pattern` is not a regular expression: {e}")));
                None
            }
        },
        _ => {
            errors.push(ConfigError::new(Some(&ctx.options.span), "a `kafka` source needs one of `topic`, `topics` (a non-empty list) or `topic_pattern`").hint("e.g. `topic: transactions`"));
            None
        }
    };
    if let Topics::Names(names) = topics.as_ref().unwrap_or(&Topics::Names(vec![])) {
        for t in names.iter().filter(|t| !super::is_topic_name(t)) {
            errors.push(ConfigError::new(Some(&ctx.options.span), format!("`{t}` is not a Kafka topic name (letters, digits, `.`, `_` and `-`)")));
        }
    }
    let start = match cfg.start.as_ref().map(|s| (&s.value, &s.span)) {
        None => Some(Start::Earliest),
        Some((StartConfig::Named(n), span)) => match n.as_str() {
            "earliest" => Some(Start::Earliest),
            "latest" => Some(Start::Latest),
            "committed" => Some(Start::Committed),
            other => {
                errors.push(ConfigError::new(Some(span), format!("unknown `start`: `{other}`")).hint("`start` is earliest, latest, committed or {timestamp: 2026-12-01T00:00:00Z}"));
                None
            }
        },
        Some((StartConfig::At { timestamp }, span)) => match timestamp {
            TimeSpec::Millis(ms) => Some(Start::Timestamp(*ms)),
            TimeSpec::Text(t) => match rill_engine::time::parse_timestamp(&Value::str(t)) {
                Ok(ms) => Some(Start::Timestamp(ms)),
                Err(e) => {
                    errors.push(ConfigError::new(Some(span), format!("`start.timestamp`: {e}")));
                    None
                }
            },
        },
    };
    let stop = match cfg.stop.as_ref().map(|s| (&s.value, &s.span)) {
        None => None,
        Some((StopConfig::Named(n), _)) if n == "latest" => Some(Stop::Latest),
        Some((StopConfig::Named(n), span)) => {
            errors.push(ConfigError::new(Some(span), format!("unknown `stop`: `{n}`")).hint("`stop` is latest or {offsets: {topic: {partition: offset}}}"));
            None
        }
        Some((StopConfig::Offsets { offsets }, _)) => {
            Some(Stop::Offsets(offsets.iter().flat_map(|(t, ps)| ps.iter().map(move |(p, o)| ((t.clone(), *p), *o))).collect()))
        }
    };
    if let (Some(_), Some(stop)) = (&ctx.pipeline.scale_out, &cfg.stop) {
        errors.push(
            ConfigError::new(Some(&stop.span), "a bounded Kafka source (`stop`) cannot scale out: no process could tell when the other processes' tasks are done")
                .hint("run a backfill as one `rill run` without `scale_out`, or leave `stop` out"),
        );
    }
    let format = super::keep(
        cfg.format.build().and_then(|f| match f {
            Format::Csv { header: true, .. } => Err(ConfigError::new(Some(&ctx.options.span), "Kafka messages have no header line")
                .hint("write `format: {type: csv, header: false, schema: {column: type, ...}}`")),
            f => Ok(f),
        }),
        &mut errors,
    );
    let properties = super::properties(ctx, &cfg.properties, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let settings = Arc::new(Settings {
        bootstrap: cfg.bootstrap_servers.value.clone(),
        topics: topics.expect("checked"),
        group_id: cfg.group_id.clone().unwrap_or_else(|| format!("rill-{}-{}", ctx.pipeline.name, ctx.name)),
        start: start.expect("checked"),
        stop,
        format: format.expect("checked"),
        metadata: cfg.metadata.as_deref().map(Sym::new),
        properties,
        discovery: cfg.discovery_interval.unwrap_or(Duration::from_secs(10)),
        task: ctx.pipeline.scale_out.as_ref().and_then(|s| s.task).map(|t| t as i32),
    });
    let what = match &settings.topics {
        Topics::Names(n) => format!("topic{} {}", if n.len() == 1 { "" } else { "s" }, n.join(", ")),
        Topics::Pattern(p) => format!("topics matching {}", p.as_str()),
    };
    let description = format!(
        "reads Kafka {what} from {} (group {}){}",
        settings.bootstrap,
        settings.group_id,
        if settings.stop.is_some() { ", up to the end offsets" } else { "" }
    );
    let description = match settings.task {
        Some(t) => format!("{description}, partition {t} only (scale-out task {t})"),
        None => description,
    };
    let mut spec = SourceSpec::new(description, move |c: &SourceContext| Ok(KafkaSource::new(settings.clone(), c)));
    spec.rescalable = true;
    Ok(spec)
}

/// Java's `String.hashCode`, as Flink's Kafka source spreads partitions with it.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// The instance that owns partition `partition` of `topic`.
pub(crate) fn owner(topic: &str, partition: i32, parallelism: u32) -> u32 {
    let start = (java_hash(topic).wrapping_mul(31) & 0x7FFF_FFFF) as u32 % parallelism;
    (start + partition as u32 % parallelism) % parallelism
}

/// One owned partition.
#[derive(Debug)]
struct Part {
    /// The next offset to emit.
    next: i64,
    /// Stop before this offset (bounded mode).
    stop: Option<i64>,
    /// `stop: latest` not resolved yet: the stop is where the partition's end is first reached.
    until_end: bool,
    /// Its split id (for per-partition watermarks).
    id: u64,
    /// Its end was reported (`SourceOutput::split_finished`).
    ended: bool,
    /// Bounded mode, for progress: where it started, and where it ends (the stop, or while
    /// `stop: latest` is unresolved the end the broker reported when it was assigned).
    first: i64,
    end_hint: Option<i64>,
}

impl Part {
    fn done(&self) -> bool {
        self.stop.is_some_and(|s| self.next >= s)
    }
}

type Kc = BaseConsumer<super::Watch>;

pub struct KafkaSource {
    s: Arc<Settings>,
    subtask: u32,
    parallelism: u32,
    consumer: Option<Kc>,
    watch: super::Watch,
    parts: BTreeMap<(String, i32), Part>,
    /// Offsets from the checkpoint being restored, for partitions not assigned yet.
    restored: HashMap<(String, i32), i64>,
    /// Stop offsets from that checkpoint (bounded mode resolves `latest` once, at the start).
    restored_stops: HashMap<(String, i32), i64>,
    decoder: Decoder,
    next_discovery: Instant,
    /// Partitions assigned at least once (those found later start at their beginning).
    discovered: bool,
    value: Sym,
    /// Partitions assigned since the last poll, to declare as splits.
    declared: Vec<u64>,
    next_end_check: Instant,
    /// The messages of its partitions after those it has read, shown by the HTTP API.
    lag: Option<Arc<rill_engine::metrics::NamedGauge>>,
    next_lag: Instant,
    /// The partition of the last message (the key into `parts`).
    current: (String, i32),
}

impl KafkaSource {
    fn new(s: Arc<Settings>, c: &SourceContext) -> KafkaSource {
        let decoder = Decoder::new(&s.format);
        KafkaSource {
            s,
            subtask: c.subtask,
            parallelism: c.parallelism,
            consumer: None,
            watch: super::Watch::default(),
            parts: BTreeMap::new(),
            restored: HashMap::new(),
            restored_stops: HashMap::new(),
            decoder,
            next_discovery: Instant::now(),
            discovered: false,
            value: Sym::new("value"),
            declared: Vec::new(),
            next_end_check: Instant::now(),
            lag: None,
            next_lag: Instant::now(),
            current: (String::new(), -1),
        }
    }

    fn consumer(&self) -> &Kc {
        self.consumer.as_ref().expect("opened")
    }

    /// The error for a failed call: the broker's refusal, if that is why.
    fn external(&self, what: &str, e: impl std::fmt::Display) -> OperatorError {
        self.watch.refused.error(&self.s.bootstrap).unwrap_or_else(|| OperatorError::external(format!("Kafka at {}: {what}: {e}", self.s.bootstrap)))
    }

    /// The broker's metadata (of one topic, or all), tried again for up to `TIMEOUT` while the
    /// brokers cannot be reached, and not at all once one refused this client.
    fn metadata(&self, topic: Option<&str>) -> Result<rdkafka::metadata::Metadata, KafkaError> {
        use rdkafka::types::RDKafkaErrorCode::{BrokerTransportFailure, OperationTimedOut};
        let until = Instant::now() + TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.consumer().fetch_metadata(topic, left.min(Duration::from_millis(500))) {
                Err(e) if matches!(e.rdkafka_error_code(), Some(BrokerTransportFailure | OperationTimedOut)) && !left.is_zero() => {
                    // librdkafka's reports of why (a refused handshake) come by polling, which
                    // cannot take a message from us while no partition is assigned.
                    if self.parts.is_empty() {
                        let _ = self.consumer().poll(Duration::ZERO);
                    }
                    if self.watch.refused.seen() {
                        return Err(e);
                    }
                    std::thread::sleep(Duration::from_millis(20).min(left));
                }
                other => return other,
            }
        }
    }

    /// Sets the lag gauge from the high watermarks librdkafka last reported.
    fn show_lag(&self) {
        let high = self.watch.high.lock().expect("not poisoned");
        let known: Vec<i64> = self.parts.iter().filter_map(|(k, p)| Some((high.get(k)? - p.next).max(0))).collect();
        if let (Some(g), false) = (&self.lag, known.is_empty()) {
            g.set(known.iter().sum::<i64>() as f64);
        }
    }

    /// The partitions of the configured topics now on the broker.
    fn partitions(&self) -> Result<Vec<(String, i32)>, OperatorError> {
        let mut out = Vec::new();
        match &self.s.topics {
            Topics::Names(names) => {
                for t in names {
                    let md = self.metadata(Some(t)).map_err(|e| self.external(&format!("cannot read the metadata of topic `{t}`"), e))?;
                    let topic = md.topics().iter().find(|m| m.name() == t);
                    match topic {
                        Some(m) if m.error().is_none() && !m.partitions().is_empty() => out.extend(m.partitions().iter().map(|p| (t.clone(), p.id()))),
                        _ => {
                            return Err(OperatorError::user(format!(
                                "Kafka topic `{t}` does not exist on {}: create it first (Rill does not create topics), e.g. `tansu topic create --broker tcp://{} --partitions 4 {t}`",
                                self.s.bootstrap,
                                self.s.bootstrap.split(',').next().unwrap_or_default()
                            )))
                        }
                    }
                }
            }
            Topics::Pattern(p) => {
                let md = self.metadata(None).map_err(|e| self.external("cannot list topics", e))?;
                for m in md.topics().iter().filter(|m| p.is_match(m.name()) && m.error().is_none()) {
                    out.extend(m.partitions().iter().map(|p| (m.name().to_string(), p.id())));
                }
            }
        }
        if let Some(task) = self.s.task {
            out.retain(|(_, p)| *p == task);
        }
        out.sort();
        Ok(out)
    }

    /// Finds partitions this instance owns and has not assigned yet, resolves where each
    /// starts (and stops), and assigns the lot.
    fn discover(&mut self) -> Result<(), OperatorError> {
        self.next_discovery = Instant::now() + self.s.discovery;
        let found: Vec<(String, i32)> = self.partitions()?.into_iter().filter(|(t, p)| owner(t, *p, self.parallelism) == self.subtask && !self.parts.contains_key(&(t.clone(), *p))).collect();
        if found.is_empty() && self.discovered {
            return Ok(());
        }
        let first = !self.discovered;
        self.discovered = true;
        for (t, p) in found {
            let key = (t.clone(), p);
            let next = match self.restored.remove(&key) {
                Some(o) => o,
                // Found after the job began: it is new, read it all (as Flink does).
                None if !first => self.watermarks(&t, p)?.0,
                None => self.start_offset(&t, p)?,
            };
            let stop = match &self.s.stop {
                None => None,
                Some(_) if self.restored_stops.contains_key(&key) => self.restored_stops.remove(&key),
                // Resolved when the consumer reaches the end (`end_reached`): the broker's
                // offset lookup is not always exact (tansu answers the start of the last batch
                // plus one), the fetch position at the end is.
                Some(Stop::Latest) => None,
                Some(Stop::Offsets(o)) => Some(o.get(&key).copied().unwrap_or(next)),
            };
            let until_end = stop.is_none() && matches!(self.s.stop, Some(Stop::Latest));
            tracing::debug!("kafka source {}: partition {t}/{p} from offset {next}{}", self.subtask, stop.map(|s| format!(" to {s}")).unwrap_or_default());
            let end_hint = match (&self.s.stop, stop) {
                (None, _) => None,
                (Some(_), Some(s)) => Some(s),
                (Some(_), None) => Some(self.watermarks(&t, p)?.1),
            };
            let id = self.parts.len() as u64;
            self.declared.push(id);
            self.parts.insert(key, Part { next, stop, until_end, id, ended: false, first: next, end_hint });
        }
        self.assign()
    }

    fn assign(&self) -> Result<(), OperatorError> {
        let mut tpl = TopicPartitionList::new();
        for ((t, p), part) in &self.parts {
            if !part.done() {
                tpl.add_partition_offset(t, *p, Offset::Offset(part.next)).map_err(|e| self.external("cannot assign partitions", e))?;
            }
        }
        self.consumer().assign(&tpl).map_err(|e| self.external("cannot assign partitions", e))
    }

    fn watermarks(&self, t: &str, p: i32) -> Result<(i64, i64), OperatorError> {
        self.consumer().fetch_watermarks(t, p, TIMEOUT).map_err(|e| self.external(&format!("cannot read the offsets of {t}/{p}"), e))
    }

    /// Where partition `p` of `t` starts by `start`, as a concrete offset (so that the first
    /// checkpoint, and a restart before any message came, resume at the same place).
    fn start_offset(&self, t: &str, p: i32) -> Result<i64, OperatorError> {
        let (low, high) = self.watermarks(t, p)?;
        Ok(match self.s.start {
            Start::Earliest => low,
            Start::Latest => high,
            Start::Committed => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(t, p);
                let got = self.consumer().committed_offsets(tpl, TIMEOUT).map_err(|e| self.external("cannot read the group's committed offsets", e))?;
                match got.find_partition(t, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => o.clamp(low, high),
                    _ => low,
                }
            }
            Start::Timestamp(ms) => {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(t, p, Offset::Offset(ms)).map_err(|e| self.external("cannot look up offsets by time", e))?;
                let got = self.consumer().offsets_for_times(tpl, TIMEOUT).map_err(|e| self.external("cannot look up offsets by time", e))?;
                match got.find_partition(t, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) if o >= 0 => o.clamp(low, high),
                    _ => high,
                }
            }
        })
    }

    fn message(&mut self, m: &BorrowedMessage<'_>, out: &mut SourceOutput) {
        // Messages come in runs from one partition: its key is made once per run, not per message.
        if self.current.0 != m.topic() || self.current.1 != m.partition() {
            self.current = (m.topic().to_string(), m.partition());
        }
        let Some(part) = self.parts.get_mut(&self.current) else { return };
        let offset = m.offset();
        if offset < part.next || part.done() || part.stop.is_some_and(|s| offset >= s) {
            return;
        }
        part.next = offset + 1;
        out.split(part.id);
        let payload = m.payload();
        let decoded = match (&self.s.format, payload) {
            (Format::Raw, p) => {
                let mut r = Record::with_capacity(2);
                r.push(self.value, p.map_or(Value::Null, |b| Value::str(&String::from_utf8_lossy(b))));
                Ok(r)
            }
            (_, None) => Err("the message has no value (a tombstone)".to_string()),
            (_, Some(b)) => match self.decoder.decode(b) {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err("the message is empty".to_string()),
                Err(e) => Err(format!("{} at column {}", e.message, e.column)),
            },
        };
        let at = || serde_json::json!({"topic": m.topic(), "partition": m.partition(), "offset": offset});
        match decoded {
            Ok(mut r) => {
                r.origin.offset = offset as u64;
                if let Some(field) = self.s.metadata {
                    r.push(field, metadata(m));
                }
                out.emit(r);
            }
            Err(e) => out.reject_raw(
                payload.map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default(),
                format!("{e} (Kafka message {}/{}@{offset})", m.topic(), m.partition()),
                at(),
            ),
        }
    }

    /// The consumer reached the end of partitions numbered `eof` (of some topic): partitions
    /// still reading `until_end` whose fetch position is at the end the broker last reported
    /// stop there.
    /// (`None`: any partition, as when the consumer is idle; a partition assigned at its very
    /// end gets no end-of-partition event).
    fn end_reached(&mut self, eof: Option<&[i32]>) {
        let client = self.consumer.as_ref().expect("opened").client().native_ptr();
        let positions = self.consumer.as_ref().expect("opened").position().ok();
        for ((t, p), part) in self.parts.iter_mut().filter(|((_, p), part)| eof.is_none_or(|e| e.contains(p)) && part.until_end) {
            let Ok(topic) = std::ffi::CString::new(t.as_str()) else { continue };
            let (mut low, mut high) = (0i64, 0i64);
            // The high watermark of the last fetch response (cached, no request).
            let err = unsafe { rdkafka::bindings::rd_kafka_get_watermark_offsets(client, topic.as_ptr(), *p, &mut low, &mut high) };
            let position = positions.as_ref().and_then(|l| l.find_partition(t, *p)).and_then(|e| e.offset().to_raw()).filter(|o| *o >= 0).unwrap_or(part.next).max(part.next);
            if err == rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0 && position >= high {
                part.until_end = false;
                part.stop = Some(high.max(part.next));
                part.next = part.stop.expect("set");
                tracing::debug!("kafka source {}: partition {t}/{p} ends at {high}", self.subtask);
            }
        }
    }

    /// Whether every owned partition has reached its stop offset. The consumer's own position
    /// counts too: it moves past transaction markers, which are never delivered as messages.
    fn all_done(&mut self) -> bool {
        if self.parts.values().all(Part::done) {
            return true;
        }
        self.end_reached(None);
        if let Ok(pos) = self.consumer.as_ref().expect("opened").position() {
            for e in pos.elements() {
                if let (Some(part), Offset::Offset(o)) = (self.parts.get_mut(&(e.topic().to_string(), e.partition())), e.offset()) {
                    if part.stop.is_some_and(|s| o >= s) {
                        part.next = part.next.max(part.stop.expect("some"));
                    }
                }
            }
        }
        self.parts.values().all(Part::done)
    }
}

/// `{topic, partition, offset, key, timestamp, headers}` of a message.
fn metadata(m: &BorrowedMessage<'_>) -> Value {
    let text = |b: Option<&[u8]>| b.map_or(Value::Null, |b| Value::str(&String::from_utf8_lossy(b)));
    let mut r = Record::with_capacity(6);
    r.push(Sym::new("topic"), Value::str(m.topic()));
    r.push(Sym::new("partition"), Value::Int(m.partition() as i64));
    r.push(Sym::new("offset"), Value::Int(m.offset()));
    r.push(Sym::new("key"), text(m.key()));
    r.push(Sym::new("timestamp"), m.timestamp().to_millis().map_or(Value::Null, Value::Int));
    let mut headers = Record::new();
    if let Some(hs) = m.headers() {
        for h in hs.iter() {
            headers.push(Sym::new(h.key), text(h.value));
        }
    }
    r.push(Sym::new("headers"), Value::Map(Arc::new(headers)));
    Value::Map(Arc::new(r))
}

/// Offsets in a checkpointed position: `{"offsets": {topic: {partition: next offset}}}` (and
/// the same shape under `"stops"` in bounded mode).
fn read_position(position: &serde_json::Value, into: &mut HashMap<(String, i32), i64>) -> Result<(), OperatorError> {
    read_offsets(position, "offsets", into)
}

fn read_offsets(position: &serde_json::Value, what: &str, into: &mut HashMap<(String, i32), i64>) -> Result<(), OperatorError> {
    let bad = || OperatorError::new(format!("kafka source: checkpointed position {position} is not a map of offsets"));
    let Some(found) = position.get(what) else {
        return if what == "offsets" { Err(bad()) } else { Ok(()) };
    };
    let topics = found.as_object().ok_or_else(bad)?;
    for (t, parts) in topics {
        for (p, o) in parts.as_object().ok_or_else(bad)? {
            into.insert((t.clone(), p.parse().map_err(|_| bad())?), o.as_i64().ok_or_else(bad)?);
        }
    }
    Ok(())
}

impl Source for KafkaSource {
    fn open(&mut self, ctx: &SourceContext) -> Result<(), OperatorError> {
        self.lag = Some(ctx.gauge("rill_kafka_consumer_lag_messages", "Messages in a Kafka source instance's partitions after those it has read: each partition's high watermark less its next offset."));
        let mut c = super::client_config(&self.s.bootstrap, &self.s.properties).map_err(OperatorError::user)?;
        // The partitions' high watermarks come with librdkafka's statistics, for the lag.
        c.set("statistics.interval.ms", "1000");
        c.set("group.id", &self.s.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", if self.s.stop.is_some() { "true" } else { "false" })
            .set("auto.offset.reset", "error");
        self.consumer = Some(c.create_with_context(self.watch.clone()).map_err(|e| self.external("cannot create a consumer", e))?);
        Ok(())
    }

    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError> {
        if Instant::now() >= self.next_lag {
            self.next_lag = Instant::now() + Duration::from_secs(1);
            self.show_lag();
        }
        if Instant::now() >= self.next_discovery {
            self.discover()?;
        }
        for id in self.declared.drain(..) {
            out.split(id);
        }
        // The messages borrow the consumer: take it out while they are decoded.
        let consumer = self.consumer.take().expect("opened");
        let mut failed = None;
        let mut eof = Vec::new();
        while !out.is_full() {
            match consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => self.message(&m, out),
                Some(Err(KafkaError::PartitionEOF(p))) => eof.push(p),
                Some(Err(e)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::Fatal) => {
                    failed = Some(e);
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!("Kafka at {}: {e} (retrying)", self.s.bootstrap);
                    break;
                }
            }
        }
        self.consumer = Some(consumer);
        self.watch.refused.check(&self.s.bootstrap)?;
        if let Some(e) = failed {
            return Err(self.external("consumer failed", e));
        }
        if !eof.is_empty() {
            self.end_reached(Some(&eof));
        }
        // A partition assigned at its very end gets no end-of-partition event: look now and
        // then, not only when idle (busy partitions would keep it waiting, and its watermark
        // with it).
        if self.s.stop.is_some() && Instant::now() >= self.next_end_check {
            self.next_end_check = Instant::now() + Duration::from_millis(50);
            self.end_reached(None);
        }
        if self.s.stop.is_some() {
            // Ended partitions stop holding the watermark back.
            let finished = out.is_empty() && self.all_done();
            for part in self.parts.values_mut().filter(|p| p.done() && !p.ended) {
                part.ended = true;
                out.split_finished(part.id);
            }
            if finished {
                return Ok(SourceStatus::Finished);
            }
        }
        if !out.is_empty() {
            return Ok(SourceStatus::Ready);
        }
        if self.parts.is_empty() {
            out.idle();
        }
        Ok(SourceStatus::Idle(Duration::from_millis(5)))
    }

    /// Bounded mode: offsets read of those to read, over the partitions assigned so far (an
    /// end the broker under-reported grows as the reads pass it).
    fn progress(&self) -> Option<rill_engine::source::Progress> {
        self.s.stop.as_ref()?;
        let (mut done, mut total) = (0u64, 0u64);
        for part in self.parts.values() {
            let end = part.stop.or(part.end_hint).unwrap_or(part.next).max(part.next);
            let all = (end - part.first).max(0) as u64;
            total += all;
            done += if part.done() { all } else { ((part.next - part.first).max(0) as u64).min(all) };
        }
        (total > 0).then_some(rill_engine::source::Progress { done, total })
    }

    fn position(&self) -> serde_json::Value {
        let mut topics = serde_json::Map::new();
        for ((t, p), part) in &self.parts {
            topics.entry(t.clone()).or_insert_with(|| serde_json::json!({}))[p.to_string()] = part.next.into();
        }
        // Restored partitions not assigned yet keep their place.
        for ((t, p), o) in &self.restored {
            topics.entry(t.clone()).or_insert_with(|| serde_json::json!({}))[p.to_string()] = (*o).into();
        }
        let mut stops = serde_json::Map::new();
        let known = self.parts.iter().filter_map(|(k, part)| Some((k, part.stop?))).chain(self.restored_stops.iter().map(|(k, s)| (k, *s)));
        for ((t, p), s) in known {
            stops.entry(t.clone()).or_insert_with(|| serde_json::json!({}))[p.to_string()] = s.into();
        }
        serde_json::json!({ "offsets": topics, "stops": stops })
    }

    fn restore(&mut self, position: &serde_json::Value) -> Result<(), OperatorError> {
        read_position(position, &mut self.restored)?;
        read_offsets(position, "stops", &mut self.restored_stops)
    }

    fn restore_rescaled(&mut self, positions: &[serde_json::Value]) -> Result<(), OperatorError> {
        for p in positions {
            self.restore(p)?;
        }
        // Keep only the partitions this instance owns now.
        let (subtask, parallelism) = (self.subtask, self.parallelism);
        self.restored.retain(|(t, p), _| owner(t, *p, parallelism) == subtask);
        self.restored_stops.retain(|(t, p), _| owner(t, *p, parallelism) == subtask);
        Ok(())
    }

    fn checkpoint_complete(&mut self, position: &serde_json::Value) -> Result<(), OperatorError> {
        let mut offsets = HashMap::new();
        read_position(position, &mut offsets)?;
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in offsets {
            let _ = tpl.add_partition_offset(&t, p, Offset::Offset(o));
        }
        if tpl.count() > 0 {
            // For monitoring only (lag): a failure here loses nothing.
            if let Err(e) = self.consumer().commit(&tpl, CommitMode::Async) {
                tracing::warn!("Kafka at {}: cannot commit offsets to group {}: {e}", self.s.bootstrap, self.s.group_id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_hash_matches_java() {
        // `"transactions".hashCode()` and `"alerts".hashCode()` in Java (the second overflows).
        assert_eq!(java_hash("transactions"), 1_954_122_069);
        assert_eq!(java_hash("alerts"), -1_415_077_225);
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("a"), 97);
        assert_eq!(java_hash("ab"), 97 * 31 + 98);
    }

    #[test]
    fn partitions_spread_evenly_and_stay_put_when_more_come() {
        for p in 1..6u32 {
            let owners: Vec<u32> = (0..4 * p as i32).map(|part| owner("transactions", part, p)).collect();
            for s in 0..p {
                assert_eq!(owners.iter().filter(|o| **o == s).count(), 4, "p = {p}: {owners:?}");
            }
            // A partition's owner depends on the partition alone, not on how many there are.
            assert_eq!(owner("transactions", 3, p), owners[3]);
        }
    }

    #[test]
    fn positions_merge_for_a_rescale() {
        let mut into = HashMap::new();
        read_position(&serde_json::json!({"offsets": {"t": {"0": 5, "2": 7}}}), &mut into).unwrap();
        read_position(&serde_json::json!({"offsets": {"t": {"1": 9}, "u": {"0": 1}}}), &mut into).unwrap();
        assert_eq!(into.len(), 4);
        assert_eq!(into[&("t".to_string(), 1)], 9);
        assert!(read_position(&serde_json::json!({"file": 1}), &mut into).is_err());
    }
}
