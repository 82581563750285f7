//! The `kafka` sink.
//!
//! `at_least_once` (the default): records are produced as they come and every barrier waits
//! until the broker has acknowledged all of them (a delivery error fails the job, which then
//! restarts from its last checkpoint). After a crash, records since that checkpoint may be
//! written twice.
//!
//! `exactly_once`: each instance has its own transactional id (`<prefix>-<instance>`) and one
//! Kafka transaction per checkpoint. Records are produced into the open transaction as they
//! come; at the barrier the transaction is flushed and the epoch's records go into the
//! checkpoint as well; when the checkpoint is complete the transaction is committed. A consumer
//! with `isolation.level=read_committed` sees each record once.
//!
//! The hard case is a crash after the checkpoint completed and before (or while) its
//! transaction committed: librdkafka cannot resume another producer's transaction, and starting
//! the producer again (`init_transactions`) aborts it. So every transaction also commits, as
//! part of itself, a consumer-group offset used as a marker: group `<transactional id>`,
//! partition 0 of the sink's topic, offset = the checkpoint's epoch. Kafka makes a
//! transaction's offsets visible if and only if the transaction commits. On recovery the sink
//! reads the marker: if it is below the checkpoint's epoch, that epoch's transaction never
//! committed and its records (kept in the checkpoint) are produced again in a new transaction;
//! otherwise they are already there. Transactions left open by a crashed run are aborted when
//! the producer starts (`init_transactions` with the same id).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, Message, Offset, TopicPartitionList};
use rill_engine::config::de::duration;
use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::expr::Expr;
use rill_engine::message::Epoch;
use rill_engine::operator::{Collector, OperatorContext, OperatorError, Sink};
use rill_engine::record::{Batch, Record};
use rill_engine::registry::{BuildContext, SinkSpec};
use rill_engine::value::Value;

use crate::format::{Encoder, Format, FormatConfig};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaSinkConfig {
    bootstrap_servers: Spanned<String>,
    /// A topic name, or an expression giving one per record.
    topic: Spanned<String>,
    /// Expression for the message key (partitioning); none: no key.
    key: Option<Spanned<String>>,
    /// Expression for the partition (an int from 0); none: by key, as the producer hashes it.
    partition: Option<Spanned<String>>,
    #[serde(default)]
    format: FormatConfig,
    #[serde(default)]
    delivery: Option<Spanned<String>>,
    /// Exactly-once: transactional ids are `<prefix>-<instance>` (default `rill-<job>-<sink>`).
    transactional_id_prefix: Option<String>,
    /// Exactly-once with a topic per record: an existing topic whose partition 0 holds the
    /// transactions' markers (consumer-group offsets; nothing is written to it).
    marker_topic: Option<Spanned<String>>,
    /// Exactly-once: the broker aborts a transaction open longer than this (default 15 min).
    #[serde(default, with = "duration::option")]
    transaction_timeout: Option<Duration>,
    /// librdkafka settings (`security.protocol`, `linger.ms`, `sasl.password: ${VAR}`...).
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

#[derive(Clone)]
enum TopicChoice {
    Fixed(String),
    Per(Expr),
}

struct Settings {
    bootstrap: String,
    topic: TopicChoice,
    key: Option<Expr>,
    partition: Option<Expr>,
    format: Format,
    exactly_once: bool,
    /// Exactly-once: the topic whose partition 0 holds the transaction markers.
    marker_topic: Option<String>,
    transactional_prefix: String,
    transaction_timeout: Duration,
    properties: BTreeMap<String, String>,
}

const TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn build(ctx: &BuildContext) -> Result<SinkSpec, ConfigErrors> {
    let cfg: KafkaSinkConfig = ctx.options()?;
    let mut errors = Vec::new();
    if let Err(e) = super::check_bootstrap(&cfg.bootstrap_servers) {
        errors.push(e);
    }
    let topic = if super::is_topic_name(&cfg.topic.value) {
        Some(TopicChoice::Fixed(cfg.topic.value.clone()))
    } else {
        match ctx.expr(&cfg.topic) {
            Ok(e) => Some(TopicChoice::Per(e)),
            Err(e) => {
                errors.push(e.hint("`topic` is a topic name (letters, digits, `.`, `_`, `-`) or an expression giving one, e.g. `'alerts-' + region`"));
                None
            }
        }
    };
    let key = cfg.key.as_ref().and_then(|k| super::keep(ctx.expr(k), &mut errors));
    let partition = cfg.partition.as_ref().and_then(|p| super::keep(ctx.expr(p), &mut errors));
    let exactly_once = crate::options::choice(&cfg.delivery, "delivery", &["at_least_once", "exactly_once"], &mut errors) == 1;
    let timeout = cfg.transaction_timeout.unwrap_or(Duration::from_secs(15 * 60));
    let marker_topic = match (&topic, &cfg.marker_topic) {
        (_, Some(m)) if !exactly_once => {
            errors.push(ConfigError::new(Some(&m.span), "`marker_topic` is for `delivery: exactly_once`"));
            None
        }
        (_, Some(m)) if !super::is_topic_name(&m.value) => {
            errors.push(ConfigError::new(Some(&m.span), format!("`marker_topic` `{}` is not a Kafka topic name", m.value)));
            None
        }
        (_, Some(m)) => Some(m.value.clone()),
        (Some(TopicChoice::Fixed(t)), None) => Some(t.clone()),
        (Some(TopicChoice::Per(_)), None) if exactly_once => {
            errors.push(
                ConfigError::new(Some(&cfg.topic.span), "`delivery: exactly_once` with a topic per record needs `marker_topic`: the transactions' commit markers (consumer-group offsets) live on partition 0 of one topic")
                    .hint("add `marker_topic: NAME`, an existing topic (one of the output topics will do; nothing is written to it)"),
            );
            None
        }
        _ => None,
    };
    if exactly_once {
        match &ctx.pipeline.checkpoint {
            None => errors.push(
                ConfigError::new(Some(&ctx.options.span), "`delivery: exactly_once` needs checkpoints: transactions commit when a checkpoint completes")
                    .hint("add `checkpoint: {interval: 10s}` to the pipeline, or use `delivery: at_least_once`"),
            ),
            Some(ck) if ck.interval + ck.timeout >= timeout => errors.push(
                ConfigError::new(Some(&ctx.options.span), format!(
                    "`transaction_timeout` ({}) must be longer than the checkpoint interval plus its timeout ({}): the broker would abort transactions before their checkpoint completes",
                    humantime::format_duration(timeout),
                    humantime::format_duration(ck.interval + ck.timeout)
                ))
                .hint("raise `transaction_timeout` (the broker caps it at its `transaction.max.timeout.ms`) or checkpoint more often"),
            ),
            Some(_) => {}
        }
    } else if cfg.transactional_id_prefix.is_some() || cfg.transaction_timeout.is_some() {
        errors.push(ConfigError::new(Some(&ctx.options.span), "`transactional_id_prefix` and `transaction_timeout` are for `delivery: exactly_once`"));
    }
    let format = super::keep(cfg.format.build(), &mut errors);
    let properties = super::properties(ctx, &cfg.properties, &mut errors);
    if !errors.is_empty() {
        return Err(ConfigErrors(errors));
    }
    let s = Arc::new(Settings {
        bootstrap: cfg.bootstrap_servers.value.clone(),
        topic: topic.expect("checked"),
        key,
        partition,
        format: format.expect("checked"),
        exactly_once,
        marker_topic,
        // A scaled-out task's transactions are its own: the next owner of the task fences and
        // aborts what a dead owner left open by initialising the same ids.
        transactional_prefix: {
            let prefix = cfg.transactional_id_prefix.clone().unwrap_or_else(|| format!("rill-{}-{}", ctx.pipeline.name, ctx.name));
            match ctx.pipeline.scale_out.as_ref().and_then(|s| s.task) {
                Some(task) => format!("{prefix}-task-{task}"),
                None => prefix,
            }
        },
        transaction_timeout: timeout,
        properties,
    });
    let description = format!(
        "writes Kafka {} on {} ({})",
        match &s.topic {
            TopicChoice::Fixed(t) => format!("topic {t}"),
            TopicChoice::Per(e) => format!("topics `{}`", e.source()),
        },
        s.bootstrap,
        if exactly_once { "exactly-once with checkpoints: one transaction per checkpoint" } else { "at-least-once" }
    );
    // One producer per partition: the records of a partition go to one instance.
    let key_by = s.partition.clone();
    let mut spec = SinkSpec::new(description, move |c: &OperatorContext| Ok(KafkaSink::new(s.clone(), c)));
    spec.exactly_once = exactly_once;
    spec.key_by = key_by;
    spec.rescalable = true;
    Ok(spec)
}

/// One message as produced (and, exactly-once, as kept in the checkpoint).
#[derive(serde::Serialize, serde::Deserialize, Clone, Debug)]
struct Msg {
    topic: String,
    key: Option<Vec<u8>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    partition: Option<i32>,
    value: Vec<u8>,
}

/// Delivery reports: the first error is kept and fails the job at the next flush; where the
/// first message delivered since the last look went (for [`super::control::fate`]), taken
/// without a lock per message.
#[derive(Clone)]
struct Reports {
    failed: Arc<Mutex<Option<String>>>,
    watch: super::Watch,
    want_location: Arc<std::sync::atomic::AtomicBool>,
    location: Arc<Mutex<Option<(String, i32, i64)>>>,
}

impl Default for Reports {
    fn default() -> Reports {
        Reports { failed: Arc::default(), watch: super::Watch::default(), want_location: Arc::new(true.into()), location: Arc::default() }
    }
}

impl ClientContext for Reports {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.watch.error(error, reason);
    }
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.watch.log(level, fac, message);
    }
}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Err((e, m)) => {
                let mut f = self.failed.lock().expect("not poisoned");
                f.get_or_insert_with(|| format!("delivery to {}/{} failed: {e}", m.topic(), m.partition()));
            }
            Ok(m) => {
                if self.want_location.swap(false, std::sync::atomic::Ordering::Relaxed) {
                    *self.location.lock().expect("not poisoned") = Some((m.topic().to_string(), m.partition(), m.offset()));
                }
            }
        }
    }
}

/// The exactly-once sink's part of a checkpoint: its epoch, and the epochs whose transactions
/// were not known to be committed at the barrier, with their records.
#[derive(serde::Serialize, serde::Deserialize, Default, Debug)]
struct Pending {
    epoch: u64,
    /// The instance that staged it (missing in checkpoints of before rescaling: its place).
    #[serde(default)]
    instance: Option<u32>,
    epochs: Vec<(u64, Vec<Msg>)>,
    /// Where the staged epoch's records went: (epoch, topic, partition, first offset).
    #[serde(default)]
    located: Option<(u64, String, i32, i64)>,
}

pub struct KafkaSink {
    s: Arc<Settings>,
    subtask: u32,
    parallelism: u32,
    producer: Option<ThreadedProducer<Reports>>,
    reports: Reports,
    encoder: Encoder,
    /// Exactly-once: the group whose offset marks committed epochs.
    marker: Option<BaseConsumer<super::Watch>>,
    /// Exactly-once: records produced into the open transaction since the last barrier.
    open: Vec<Msg>,
    in_transaction: bool,
    /// Exactly-once: the transaction flushed at a barrier, waiting for its checkpoint.
    staged: Option<(u64, Vec<Msg>)>,
    /// Where one of the staged transaction's records went (topic, partition, offset).
    staged_at: Option<(String, i32, i64)>,
    /// Exactly-once: records that came while a transaction was staged, by the barrier they
    /// came before (`u64::MAX`: no barrier yet), produced once that transaction commits.
    held: Vec<(u64, Vec<Msg>)>,
    last_epoch: u64,
    /// Where the last transaction of a finished run notes where its first message went, before
    /// committing (`<work_dir>/kafka-<transactional id>.final`): a restart that finds the note
    /// and that transaction committed knows the run had finished, even if the broker lost the
    /// transaction's marker offset.
    final_note: Option<std::path::PathBuf>,
    /// Restored after a run that had finished (its last transaction committed everything up
    /// to the end of the input): what comes again is already in Kafka.
    finished_before: bool,
}

impl KafkaSink {
    fn new(s: Arc<Settings>, c: &OperatorContext) -> KafkaSink {
        let encoder = Encoder::new(&s.format);
        KafkaSink {
            s,
            subtask: c.subtask,
            parallelism: c.parallelism,
            producer: None,
            reports: Reports::default(),
            encoder,
            marker: None,
            open: Vec::new(),
            in_transaction: false,
            staged: None,
            staged_at: None,
            held: Vec::new(),
            last_epoch: 0,
            finished_before: false,
            final_note: None,
        }
    }

    fn transactional_id(&self) -> String {
        format!("{}-{}", self.s.transactional_prefix, self.subtask)
    }

    /// The error for a failed call: the broker's refusal, if that is why.
    fn external(&self, what: &str, e: impl std::fmt::Display) -> OperatorError {
        self.reports.watch.refused.error(&self.s.bootstrap).unwrap_or_else(|| OperatorError::external(format!("Kafka at {}: {what}: {e}", self.s.bootstrap)))
    }

    fn producer(&self) -> &ThreadedProducer<Reports> {
        self.producer.as_ref().expect("opened")
    }

    /// Where the commit marker goes: the sink's topic (exactly-once has one).
    fn marker_topic(&self) -> String {
        self.s.marker_topic.clone().expect("exactly-once has a marker topic (checked at build)")
    }

    fn encode(&mut self, r: &Record) -> Result<Msg, String> {
        let topic = match &self.s.topic {
            TopicChoice::Fixed(t) => t.clone(),
            TopicChoice::Per(e) => match e.eval(r) {
                Ok(Value::Str(t)) if super::is_topic_name(&t) => t.to_string(),
                Ok(v) => return Err(format!("topic `{}` gives {v}, not a topic name", e.source())),
                Err(err) => return Err(format!("topic `{}`: {err}", e.source())),
            },
        };
        let key = match &self.s.key {
            None => None,
            Some(e) => match e.eval(r) {
                Ok(Value::Null) => None,
                Ok(Value::Str(s)) => Some(s.as_bytes().to_vec()),
                Ok(v) => Some(v.to_string().into_bytes()),
                Err(err) => return Err(format!("key `{}`: {err}", e.source())),
            },
        };
        let partition = match &self.s.partition {
            None => None,
            Some(e) => match e.eval(r) {
                Ok(Value::Int(p)) if (0..=i64::from(i32::MAX)).contains(&p) => Some(p as i32),
                Ok(v) => return Err(format!("partition `{}` gives {v}, not a partition number (an int from 0)", e.source())),
                Err(err) => return Err(format!("partition `{}`: {err}", e.source())),
            },
        };
        let mut value = Vec::new();
        self.encoder.encode(r, &mut value);
        if value.last() == Some(&b'\n') {
            value.pop();
        }
        Ok(Msg { topic, key, partition, value })
    }

    /// Hands one message to librdkafka, waiting while its queue is full.
    fn send(&self, m: &Msg) -> Result<(), OperatorError> {
        loop {
            let mut rec = BaseRecord::to(&m.topic).payload(&m.value);
            if let Some(k) = &m.key {
                rec = rec.key(k);
            }
            if let Some(p) = m.partition {
                rec = rec.partition(p);
            }
            match self.producer().send(rec) {
                Ok(()) => return Ok(()),
                Err((rdkafka::error::KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), _)) => {
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(self.external(&format!("cannot produce to `{}`", m.topic), e)),
            }
            self.check()?;
        }
    }

    fn check(&self) -> Result<(), OperatorError> {
        self.reports.watch.refused.check(&self.s.bootstrap)?;
        match self.reports.failed.lock().expect("not poisoned").take() {
            Some(e) => Err(OperatorError::external(format!("Kafka at {}: {e}", self.s.bootstrap))),
            None => Ok(()),
        }
    }

    /// Waits (up to `TIMEOUT`) until the broker has every message, in short steps so that a
    /// refusal fails at once.
    fn flush(&self) -> Result<(), OperatorError> {
        let until = std::time::Instant::now() + TIMEOUT;
        loop {
            match self.producer().flush(Duration::from_millis(100)) {
                Ok(()) => return self.check(),
                Err(e) if std::time::Instant::now() >= until => return Err(self.external("flush timed out", e)),
                Err(_) => self.reports.watch.refused.check(&self.s.bootstrap)?,
            }
        }
    }

    /// Where the records flushed since the last call went (one location suffices).
    fn take_location(&self) -> Option<(String, i32, i64)> {
        let at = self.reports.location.lock().expect("not poisoned").take();
        self.reports.want_location.store(true, std::sync::atomic::Ordering::Relaxed);
        at
    }

    fn begin(&mut self) -> Result<(), OperatorError> {
        if !self.in_transaction {
            self.producer().begin_transaction().map_err(|e| self.external("cannot begin a transaction", e))?;
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Commits the group offset `epoch` inside the open transaction (see the module docs).
    fn mark(&self, epoch: u64, topic: &str) -> Result<(), OperatorError> {
        self.mark_in(self.marker.as_ref().expect("exactly-once"), epoch, topic)
    }

    /// Commits the offset `epoch` of `marker`'s group inside the open transaction.
    fn mark_in(&self, marker: &BaseConsumer<super::Watch>, epoch: u64, topic: &str) -> Result<(), OperatorError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(epoch as i64)).map_err(|e| self.external("cannot mark the transaction", e))?;
        let group = marker.group_metadata().ok_or_else(|| self.external("cannot mark the transaction", "no group metadata"))?;
        tracing::debug!("kafka sink {}: transaction marked with epoch {epoch}", self.transactional_id());
        self.producer().send_offsets_to_transaction(&tpl, &group, TIMEOUT).map_err(|e| self.external("cannot mark the transaction", e))
    }

    fn commit_open(&mut self) -> Result<(), OperatorError> {
        tracing::debug!("kafka sink {}: committing", self.transactional_id());
        self.producer().commit_transaction(TIMEOUT).map_err(|e| self.external("cannot commit the transaction", e))?;
        self.in_transaction = false;
        self.check()
    }

    /// The highest epoch whose transaction committed (the marker in `marker`'s group), if any.
    fn committed_epoch(&self, marker: &BaseConsumer<super::Watch>, topic: &str) -> Result<Option<u64>, OperatorError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        let got = marker.committed_offsets(tpl, TIMEOUT).map_err(|e| self.external("cannot read the transaction marker", e))?;
        Ok(match got.find_partition(topic, 0).map(|e| e.offset()) {
            Some(Offset::Offset(o)) if o >= 0 => Some(o as u64),
            _ => None,
        })
    }

    /// Whether the note of a final transaction after checkpoint `epoch` is there and that
    /// transaction committed (see `final_note`). A note that does not say so is removed.
    fn finished_after(&self, note: Option<&std::path::Path>, epoch: u64) -> bool {
        let Some(path) = note else { return false };
        let Ok(text) = std::fs::read(path) else { return false };
        let note: Option<(u64, String, i32, i64)> = serde_json::from_slice(&text).ok();
        let committed = note.is_some_and(|(after, t, part, offset)| {
            after >= epoch && self.leader(&t, part).ok().and_then(|l| super::control::fate(&l, &t, part, offset).ok()).is_some_and(|(first, _)| first == Some(true))
        });
        if !committed {
            let _ = std::fs::remove_file(path);
        }
        committed
    }

    /// The address of the leader of `topic`/`partition`.
    /// The address of the partition's leader, for reading its log with one raw request (see
    /// [`super::control`]), which speaks neither TLS nor SASL.
    fn leader(&self, topic: &str, partition: i32) -> Result<String, String> {
        match self.s.properties.get("security.protocol").map(|p| p.to_ascii_lowercase()) {
            Some(p) if p != "plaintext" => return Err(format!("the log is read only over plain connections, and `security.protocol` is {p}")),
            _ => {}
        }
        let md = self.marker.as_ref().expect("exactly-once").fetch_metadata(Some(topic), TIMEOUT).map_err(|e| e.to_string())?;
        let leader = md.topics().iter().find(|t| t.name() == topic).and_then(|t| t.partitions().iter().find(|p| p.id() == partition)).map(|p| p.leader()).ok_or("no such partition")?;
        md.brokers().iter().find(|b| b.id() == leader).map(|b| format!("{}:{}", b.host(), b.port())).ok_or_else(|| "no leader".to_string())
    }

    /// Produces `epochs` (none of them committed) in one transaction marked with the last, and
    /// with each of `others` (the marker groups of instances gone after a rescale whose epochs
    /// are among them, with their last epoch).
    fn produce_committed(&mut self, epochs: Vec<(u64, Vec<Msg>)>, others: &[(BaseConsumer<super::Watch>, u64)]) -> Result<(), OperatorError> {
        let Some(last) = epochs.iter().map(|(e, _)| *e).max() else { return Ok(()) };
        let msgs: Vec<Msg> = epochs.into_iter().flat_map(|(_, m)| m).collect();
        if msgs.is_empty() {
            return Ok(());
        }
        self.begin()?;
        for m in &msgs {
            self.send(m)?;
        }
        self.flush()?;
        let topic = self.marker_topic();
        self.mark(last, &topic)?;
        for (marker, epoch) in others {
            self.mark_in(marker, *epoch, &topic)?;
        }
        self.commit_open()?;
        self.take_location();
        Ok(())
    }

    /// Makes `c` a transactional producer's settings, with id `id`.
    fn transactional(&self, c: &mut rdkafka::config::ClientConfig, id: &str) {
        c.set("transactional.id", id).set("transaction.timeout.ms", self.s.transaction_timeout.as_millis().to_string());
    }

    /// The consumer whose group holds the transaction marker of transactional id `id`.
    fn marker_for(&self, id: &str) -> Result<BaseConsumer<super::Watch>, OperatorError> {
        let mut m = super::client_config(&self.s.bootstrap, &self.s.properties).map_err(OperatorError::user)?;
        m.set("group.id", id).set("enable.auto.commit", "false");
        m.create_with_context(self.reports.watch.clone()).map_err(|e| self.external("cannot create the marker consumer", e))
    }

    /// Aborts what transactional id `id` left open, and fences it: initialising the id does.
    fn abort_lingering(&self, id: &str) -> Result<(), OperatorError> {
        let mut c = super::client_config(&self.s.bootstrap, &self.s.properties).map_err(OperatorError::user)?;
        self.transactional(&mut c, id);
        let reports = Reports { watch: self.reports.watch.clone(), ..Reports::default() };
        let p: rdkafka::producer::BaseProducer<Reports> = c.create_with_context(reports).map_err(|e| self.external("cannot create a producer", e))?;
        p.init_transactions(TIMEOUT).map_err(|e| self.external(&format!("cannot abort what transactional producer `{id}` left open"), e))?;
        tracing::info!("kafka sink {}: aborted what `{id}` (an instance the rescale removed) left open", self.transactional_id());
        Ok(())
    }

    /// What of `p` (staged by transactional id `id`, whose marker group `marker` reads, and
    /// whose final note is `note`) never committed: what recovery produces again; `None` if
    /// that run finished after `p`'s checkpoint and committed everything.
    fn uncommitted(&self, id: &str, marker: &BaseConsumer<super::Watch>, note: Option<&std::path::Path>, p: Pending) -> Result<Option<Vec<(u64, Vec<Msg>)>>, OperatorError> {
        let topic = self.marker_topic();
        let committed = self.committed_epoch(marker, &topic)?;
        // Only the last transaction of a finished run is marked beyond every checkpoint.
        if self.finished_after(note, p.epoch) || committed.is_some_and(|k| k > p.epoch) {
            tracing::info!("kafka sink {id}: the run before this one finished after checkpoint {} and committed everything", p.epoch);
            return Ok(None);
        }
        // The marker says not committed; a broker that lost a commit's offsets (tansu, when the
        // committing client died during `EndTxn`) may still have committed its records: the
        // transaction marker after them decides.
        let (mut staged_committed, mut all_committed) = (None, false);
        if let Some((e, t, part, offset)) = &p.located {
            if committed.is_none_or(|c| *e > c) {
                match self.leader(t, *part).and_then(|leader| super::control::fate(&leader, t, *part, *offset).map_err(|e| e.to_string())) {
                    Ok((first, later)) => {
                        if first == Some(true) {
                            tracing::warn!("kafka sink {id}: epoch {e}'s transaction committed without its marker offset (the broker lost it); not producing it again");
                            staged_committed = Some(*e);
                        }
                        // After the checkpoint's own transaction, only a recovery from this
                        // checkpoint commits a transaction of ours here: it held every pending
                        // epoch.
                        if later {
                            tracing::warn!("kafka sink {id}: an earlier recovery from this checkpoint committed without its marker offset; not producing again");
                            all_committed = true;
                        }
                    }
                    Err(err) => tracing::warn!("kafka sink {id}: cannot read how epoch {e}'s transaction ended from the log ({err}); going by the marker offset"),
                }
            }
        }
        let todo: Vec<(u64, Vec<Msg>)> = if all_committed {
            Vec::new()
        } else {
            p.epochs.into_iter().filter(|(e, _)| committed.is_none_or(|c| *e > c) && staged_committed != Some(*e)).collect()
        };
        tracing::info!(
            "kafka sink {id}: recovering; transactions committed up to epoch {}; producing {} epoch(s) again",
            committed.map(|c| c.to_string()).unwrap_or_else(|| "none".into()),
            todo.len()
        );
        Ok(Some(todo))
    }
}

impl Sink for KafkaSink {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        let mut c = super::client_config(&self.s.bootstrap, &self.s.properties).map_err(OperatorError::user)?;
        if self.s.exactly_once && ctx.checkpointing {
            self.transactional(&mut c, &self.transactional_id());
            self.marker = Some(self.marker_for(&self.transactional_id())?);
        } else {
            c.set("enable.idempotence", "true");
        }
        let producer: ThreadedProducer<Reports> = c.create_with_context(self.reports.clone()).map_err(|e| self.external("cannot create a producer", e))?;
        if self.marker.is_some() {
            let note = ctx.work_dir.join(format!("kafka-{}.final", self.transactional_id()));
            if !ctx.restoring {
                let _ = std::fs::remove_file(&note);
            }
            self.final_note = Some(note);
            // Aborts what an earlier run of this instance left open.
            producer.init_transactions(TIMEOUT).map_err(|e| self.external(&format!("cannot start transactional producer `{}`", self.transactional_id()), e))?;
        }
        self.producer = Some(producer);
        Ok(())
    }

    fn write(&mut self, batch: Batch, out: &mut Collector) -> Result<(), OperatorError> {
        if self.finished_before {
            return Ok(());
        }
        for r in batch.records().iter() {
            let m = match self.encode(r) {
                Ok(m) => m,
                Err(e) => {
                    out.reject(r.clone(), e);
                    continue;
                }
            };
            if self.marker.is_none() {
                self.send(&m)?;
            } else if self.staged.is_some() {
                match self.held.last_mut() {
                    Some((u64::MAX, msgs)) => msgs.push(m),
                    _ => self.held.push((u64::MAX, vec![m])),
                }
            } else {
                self.begin()?;
                self.send(&m)?;
                self.open.push(m);
            }
        }
        Ok(())
    }

    fn pre_commit(&mut self, epoch: Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        self.last_epoch = epoch.0;
        if self.marker.is_none() {
            self.flush()?;
            return Ok(None);
        }
        if self.staged.is_none() {
            if !self.open.is_empty() {
                rill_engine::faults::crash_point("kafka-before-flush");
                self.flush()?;
                let msgs = std::mem::take(&mut self.open);
                self.mark(epoch.0, &self.marker_topic())?;
                self.staged_at = self.take_location();
                self.staged = Some((epoch.0, msgs));
            }
        } else if let Some(last) = self.held.last_mut().filter(|(e, _)| *e == u64::MAX) {
            last.0 = epoch.0;
        }
        let pending = Pending {
            epoch: epoch.0,
            instance: Some(self.subtask),
            epochs: self.staged.iter().cloned().chain(self.held.iter().filter(|(e, _)| *e != u64::MAX).cloned()).collect(),
            located: self.staged.as_ref().zip(self.staged_at.as_ref()).map(|((e, _), (t, p, o))| (*e, t.clone(), *p, *o)),
        };
        Ok(Some(serde_json::to_vec(&pending).expect("serializes")))
    }

    fn commit(&mut self, epoch: Epoch) -> Result<(), OperatorError> {
        if self.marker.is_none() {
            return Ok(());
        }
        match &self.staged {
            Some((e, _)) if *e <= epoch.0 => {
                rill_engine::faults::crash_point("kafka-before-commit");
                self.commit_open()?;
                self.staged = None;
            }
            Some(_) => return Ok(()),
            None => {}
        }
        // Records held back behind the staged transaction: those whose checkpoint is complete
        // now are committed at once; the next epoch becomes the staged (or open) transaction.
        let (ready, mut rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held).into_iter().partition(|(e, _)| *e <= epoch.0);
        self.produce_committed(ready, &[])?;
        if rest.is_empty() {
            return Ok(());
        }
        let (e, msgs) = rest.remove(0);
        self.begin()?;
        for m in &msgs {
            self.send(m)?;
        }
        if e == u64::MAX {
            self.open = msgs;
        } else {
            self.flush()?;
            self.mark(e, &self.marker_topic())?;
            self.staged_at = self.take_location();
            self.staged = Some((e, msgs));
            self.held = rest;
        }
        Ok(())
    }

    fn recover(&mut self, pending: Option<&[u8]>) -> Result<(), OperatorError> {
        let Some(bytes) = pending else { return Ok(()) };
        let Some(marker) = &self.marker else { return Ok(()) };
        let p: Pending = serde_json::from_slice(bytes).map_err(|e| OperatorError::new(format!("kafka sink checkpoint: {e}")))?;
        match self.uncommitted(&self.transactional_id(), marker, self.final_note.as_deref(), p)? {
            None => {
                self.finished_before = true; // what it produces again is dropped
                Ok(())
            }
            Some(todo) => self.produce_committed(todo, &[]),
        }
    }

    /// Restored at another parallelism: old instance `j`'s pending epochs are this instance's
    /// to finish if `j % parallelism` is this one. An old instance that no longer exists has
    /// what it left open aborted (its id initialised once), its uncommitted epochs produced
    /// again here, and its marker group marked in the same transaction, so that another
    /// recovery from this checkpoint does not produce them a third time.
    fn recover_rescaled(&mut self, pending: &[Vec<u8>]) -> Result<(), OperatorError> {
        let Some(marker) = &self.marker else { return Ok(()) };
        let (mut todo, mut others) = (Vec::new(), Vec::new());
        for (place, bytes) in pending.iter().enumerate() {
            let p: Pending = serde_json::from_slice(bytes).map_err(|e| OperatorError::new(format!("kafka sink checkpoint: {e}")))?;
            let old = p.instance.unwrap_or(place as u32);
            if old % self.parallelism != self.subtask {
                continue;
            }
            if old == self.subtask {
                match self.uncommitted(&self.transactional_id(), marker, self.final_note.as_deref(), p)? {
                    None => {
                        self.finished_before = true;
                        return Ok(());
                    }
                    Some(t) => todo.extend(t),
                }
                continue;
            }
            let id = format!("{}-{old}", self.s.transactional_prefix);
            self.abort_lingering(&id)?;
            let theirs = self.marker_for(&id)?;
            let note = self.final_note.as_ref().map(|n| n.with_file_name(format!("kafka-{id}.final")));
            if let Some(t) = self.uncommitted(&id, &theirs, note.as_deref(), p)? {
                if let Some(last) = t.iter().map(|(e, _)| *e).max() {
                    others.push((theirs, last));
                    todo.extend(t);
                }
            }
        }
        todo.sort_by_key(|(e, _)| *e);
        self.produce_committed(todo, &others)
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        if self.marker.is_none() {
            return self.flush();
        }
        if self.finished_before {
            return Ok(());
        }
        // The job ended: everything written is final, in one transaction (the staged one, if
        // any, with everything held behind it) marked beyond every checkpoint, so that a
        // restart before the job records that it finished knows (see `recover`).
        let held: Vec<Msg> = std::mem::take(&mut self.held).into_iter().flat_map(|(_, m)| m).collect();
        if !self.in_transaction && held.is_empty() {
            return Ok(());
        }
        self.begin()?;
        for m in &held {
            self.send(m)?;
        }
        self.flush()?;
        self.mark(self.last_epoch + 1, &self.marker_topic())?;
        // A message of this transaction: the staged epoch's first, or one of those sent since.
        let first = self.take_location().or_else(|| self.staged.as_ref().and(self.staged_at.clone()));
        if let (Some(path), Some((t, part, offset))) = (&self.final_note, first) {
            let note = serde_json::to_vec(&(self.last_epoch, t, part, offset)).expect("serializes");
            std::fs::write(path, note)
                .and_then(|()| std::fs::File::open(path)?.sync_all())
                .map_err(|e| OperatorError::external(format!("cannot write {}: {e}", path.display())))?;
        }
        self.commit_open()?;
        rill_engine::faults::crash_point("kafka-after-final-commit");
        self.staged = None;
        self.open.clear();
        Ok(())
    }
}
