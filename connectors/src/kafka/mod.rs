//! `kafka` source and sink, through librdkafka (the `rdkafka` crate, bundled build).
//!
//! The source reads the partitions of one or more topics, spread over its instances; its
//! checkpointed position is the next offset of every partition it owns, so recovery (and a
//! restore at another parallelism) resumes exactly after what the checkpoint covered. The sink
//! writes at-least-once (flushed at every barrier) or exactly-once (one Kafka transaction per
//! instance and checkpoint, committed when the checkpoint is complete; see [`sink`]).

mod control;
pub mod members;
pub(crate) mod sink;
pub(crate) mod source;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rill_engine::config::{ConfigError, Spanned};
use rill_engine::operator::OperatorError;

/// librdkafka settings every Kafka client of a component gets: the brokers and the user's own
/// `properties` (TLS, SASL, tuning), whose `${VAR}`s the pipeline's interpolation has filled in
/// (`rill_engine::config::interpolate`).
pub(crate) fn client_config(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in properties {
        c.set(k, v);
    }
    Ok(c)
}

pub(crate) use crate::options::keep;

/// librdkafka settings that hold a secret: they must come from the environment.
const SECRETS: [&str; 5] = ["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret", "ssl.key.pem"];
/// librdkafka settings that name a file: taken from the pipeline file's folder when relative.
const FILES: [&str; 5] = ["ssl.ca.location", "ssl.certificate.location", "ssl.key.location", "ssl.keystore.location", "ssl.crl.location"];

/// The user's `properties`, checked: a secret must come from the environment (`${VAR}`), not
/// sit in the pipeline file; relative file names are taken from the pipeline file's folder.
pub(crate) fn properties(ctx: &rill_engine::registry::BuildContext, raw: &BTreeMap<String, String>, errors: &mut Vec<ConfigError>) -> BTreeMap<String, String> {
    let mut out = raw.clone();
    for (k, v) in out.iter_mut() {
        if SECRETS.contains(&k.as_str()) && !ctx.pipeline.interpolated.from_environment(v) {
            errors.push(
                ConfigError::new(Some(&ctx.options.span), format!("`properties.{k}` is written in the pipeline, where files, logs and version control would keep it"))
                    .hint(format!("read it from the environment: `{k}: ${{KAFKA_PASSWORD}}` (any variable name)")),
            );
        }
        // (`ssl.ca.location: probe` asks librdkafka to look in the usual places.)
        if FILES.contains(&k.as_str()) && v != "probe" {
            *v = ctx.pipeline.resolve(v).display().to_string();
        }
    }
    out
}

/// A broker's refusal of this client, as librdkafka reported it: a failed TLS handshake (a
/// certificate not trusted, no TLS on the other side) or a failed SASL authentication.
/// librdkafka retries these for good; they do not get better without new settings, so Rill
/// fails the job with what librdkafka said instead of hanging.
#[derive(Clone, Default)]
pub(crate) struct Refused(Arc<Mutex<Option<String>>>);

impl Refused {
    /// Notes `reason` if it tells of a refused handshake; tells whether it did.
    fn note(&self, reason: &str) -> bool {
        let refusal = ["SSL handshake failed", "state SSL_HANDSHAKE", "certificate verify failed", "SASL authentication error", "state AUTH_"].iter().any(|s| reason.contains(s));
        if refusal {
            self.keep(reason);
        }
        refusal
    }

    /// Keeps `reason` (the first one), without librdkafka's thread name
    /// (`[thrd:ssl://host:port/bootstrap]: `).
    fn keep(&self, reason: &str) {
        let reason = reason.strip_prefix("[thrd:").and_then(|r| r.split_once("]: ")).map_or(reason, |(_, r)| r);
        self.0.lock().expect("not poisoned").get_or_insert_with(|| reason.to_string());
    }

    /// The job's error if the broker refused this client.
    pub fn error(&self, bootstrap: &str) -> Option<OperatorError> {
        self.0.lock().expect("not poisoned").as_ref().map(|reason| {
            OperatorError::user(format!(
                "Kafka at {bootstrap} refused the connection: {reason} (check the TLS and SASL settings in `properties`: security.protocol, ssl.ca.location, sasl.mechanism, sasl.username, sasl.password)"
            ))
        })
    }

    /// Whether a refusal was noted.
    pub fn seen(&self) -> bool {
        self.0.lock().expect("not poisoned").is_some()
    }

    pub fn check(&self, bootstrap: &str) -> Result<(), OperatorError> {
        self.error(bootstrap).map_or(Ok(()), Err)
    }
}

/// A client context that notes refusals and logs librdkafka's other errors as warnings
/// (librdkafka retries them). Reaching a partition's end is reported as an error too, which
/// is news only to the source's poll loop.
#[derive(Clone, Default)]
pub(crate) struct Watch {
    pub refused: Refused,
    /// Each partition's high watermark, from librdkafka's statistics (`statistics.interval.ms`).
    pub high: Arc<Mutex<BTreeMap<(String, i32), i64>>>,
}

impl rdkafka::ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        let eof = matches!(error, KafkaError::PartitionEOF(_)) || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
        let refused = match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL | RDKafkaErrorCode::SaslAuthenticationFailed) => {
                self.refused.keep(reason);
                true
            }
            // A failed handshake comes as a transport failure in the state it failed in.
            Some(RDKafkaErrorCode::BrokerTransportFailure) => self.refused.note(reason),
            _ => false,
        };
        if !eof && !refused {
            tracing::warn!("librdkafka: {error}: {reason}");
        }
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        let mut high = self.high.lock().expect("not poisoned");
        for (topic, t) in stats.topics {
            for (p, part) in t.partitions.into_iter().filter(|(p, part)| *p >= 0 && part.hi_offset >= 0) {
                high.insert((topic.clone(), p), part.hi_offset);
            }
        }
    }

    /// librdkafka's log, as rdkafka logs it (rdkafka hands it over when the client is polled,
    /// as it does errors).
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel::*;
        match level {
            Emerg | Alert | Critical | Error => {
                self.refused.note(message);
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            Notice | Info => tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}"),
            Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }
}

impl rdkafka::consumer::ConsumerContext for Watch {}

/// Checks `bootstrap_servers` (host:port, comma-separated).
pub(crate) fn check_bootstrap(b: &Spanned<String>) -> Result<(), ConfigError> {
    let bad = b.value.split(',').map(str::trim).find(|s| s.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()));
    match bad {
        Some(s) => Err(ConfigError::new(Some(&b.span), format!("`{s}` is not a broker address")).hint("write `bootstrap_servers: host:port` (several separated by commas)")),
        None => Ok(()),
    }
}

/// Whether `name` is a plain Kafka topic name (letters, digits, `.`, `_`, `-`), as opposed to
/// an expression that computes one per record.
pub(crate) fn is_topic_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 249 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_and_expressions_are_told_apart() {
        assert!(is_topic_name("alerts") && is_topic_name("fraud.alerts-v2_eu"));
        assert!(!is_topic_name("'alerts-' + region") && !is_topic_name(""));
    }
}
