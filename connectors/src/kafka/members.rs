//! Scale-out membership: the `rill run` processes of one pipeline with `scale_out:` join one
//! Kafka consumer group, subscribed to the topics of the pipeline's Kafka sources, and take the
//! partition numbers the group's assignor gives them as the tasks they run. The member reads
//! nothing (its partitions are paused as soon as they are assigned): the group is only how
//! the processes agree, and learn when one of them is gone (after `session_timeout`). The
//! range assignor gives partition `p` of every subscribed topic to the same member, so a task
//! sees partition `p` of each of its topics, as a Kafka Streams task does.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rill_engine::config::{PipelineConfig, Role};
use rill_engine::registry::BuildContext;

use super::source::KafkaSourceConfig;

/// This process's place in the group.
pub struct Members {
    consumer: BaseConsumer<MemberContext>,
    assigned: Arc<Mutex<Option<BTreeSet<u32>>>>,
    bootstrap: String,
}

struct MemberContext {
    watch: super::Watch,
    /// The tasks of the newest assignment, until [`Members::poll`] takes it.
    assigned: Arc<Mutex<Option<BTreeSet<u32>>>>,
}

impl rdkafka::ClientContext for MemberContext {
    fn error(&self, error: KafkaError, reason: &str) {
        rdkafka::ClientContext::error(&self.watch, error, reason)
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        rdkafka::ClientContext::log(&self.watch, level, fac, message)
    }
}

impl ConsumerContext for MemberContext {
    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!("scale-out: cannot pause the group's partitions (the member would read them): {e}");
                }
                let tasks = tpl.elements().iter().filter_map(|e| u32::try_from(e.partition()).ok()).collect();
                *self.assigned.lock().expect("not poisoned") = Some(tasks);
            }
            // The tasks keep running until the next assignment says which of them moved:
            // their folders' locks keep a new owner waiting until they have stopped.
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!("scale-out: rebalance failed: {e}"),
        }
    }
}

impl Members {
    /// Joins `group` with the Kafka sources' brokers, settings and topics.
    pub fn join(pipeline: &PipelineConfig, group: &str, session_timeout: Duration) -> Result<Members, String> {
        let aggregates = rill_engine::aggregate::AggregateRegistry::default();
        let mut bootstrap: Option<(String, std::collections::BTreeMap<String, String>)> = None;
        let mut topics = Vec::new();
        for c in pipeline.components.iter().filter(|c| c.role == Role::Source && c.type_name.value == "kafka") {
            let ctx = BuildContext { name: &c.name, type_name: &c.type_name.value, options: &c.options, pipeline, aggregates: &aggregates };
            let cfg: KafkaSourceConfig = ctx.options().map_err(|e| format!("source `{}`: {e}", c.name))?;
            // Its problems (a literal secret) were reported when the plan was built.
            let properties = super::properties(&ctx, &cfg.properties, &mut Vec::new());
            match &bootstrap {
                None => bootstrap = Some((cfg.bootstrap_servers.value.clone(), properties)),
                Some((b, _)) if *b != cfg.bootstrap_servers.value => {
                    return Err(format!("source `{}` reads from {}, another source from {b}: scaled-out Kafka sources must share one cluster (the group lives there)", c.name, cfg.bootstrap_servers.value))
                }
                Some(_) => {}
            }
            topics.extend(cfg.subscription());
        }
        let Some((bootstrap, properties)) = bootstrap else {
            return Err("`scale_out` shares the partitions of Kafka sources, and the pipeline has none".into());
        };
        let session = session_timeout.as_millis().max(1000) as u64;
        let mut config = super::client_config(&bootstrap, &properties)?;
        config
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", session.to_string())
            .set("heartbeat.interval.ms", (session / 4).max(100).to_string())
            .set("partition.assignment.strategy", "range")
            // New partitions become tasks within this long.
            .set("topic.metadata.refresh.interval.ms", "10000");
        let assigned = Arc::new(Mutex::new(None));
        let context = MemberContext { watch: super::Watch::default(), assigned: assigned.clone() };
        let consumer: BaseConsumer<MemberContext> = config.create_with_context(context).map_err(|e| format!("cannot create the group member: {e}"))?;
        let subscription: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&subscription).map_err(|e| format!("cannot subscribe to {}: {e}", topics.join(", ")))?;
        Ok(Members { consumer, assigned, bootstrap })
    }

    /// Serves the group for up to `wait`; the tasks of a new assignment, if one came.
    pub fn poll(&self, wait: Duration) -> Result<Option<BTreeSet<u32>>, String> {
        match self.consumer.poll(wait) {
            // Paused partitions send nothing; a message fetched before the pause is dropped
            // (the tasks read the partitions themselves).
            Some(Ok(_)) | None => {}
            Some(Err(e)) => tracing::debug!("scale-out member: {e}"),
        }
        if let Some(e) = self.consumer.context().watch.refused.error(&self.bootstrap) {
            return Err(e.to_string());
        }
        Ok(self.assigned.lock().expect("not poisoned").take())
    }

    /// Leaves the group at once (the others take the tasks without waiting for the session
    /// to time out).
    pub fn leave(self) {
        self.consumer.unsubscribe();
        let _ = self.consumer.poll(Duration::from_millis(100));
    }
}
