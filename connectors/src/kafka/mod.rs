//! `kafka` source and sink, through librdkafka (the `rdkafka` crate, bundled build).
//!
//! The source reads the partitions of one or more topics, spread over its instances; its
//! checkpointed position is the next offset of every partition it owns, so recovery (and a
//! restore at another parallelism) resumes exactly after what the checkpoint covered. The sink
//! writes at-least-once (flushed at every barrier) or exactly-once (one Kafka transaction per
//! instance and checkpoint, committed when the checkpoint is complete; see [`sink`]).

mod control;
pub(crate) mod sink;
pub(crate) mod source;

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rill_engine::config::{ConfigError, Spanned};

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
