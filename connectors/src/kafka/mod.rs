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
/// `properties` (TLS, SASL, tuning), whose values may name environment variables (`${VAR}`).
pub(crate) fn client_config(bootstrap: &str, properties: &BTreeMap<String, String>) -> Result<ClientConfig, String> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    for (k, v) in properties {
        c.set(k, expand_env(v).map_err(|var| format!("property `{k}` names the environment variable `{var}`, which is not set"))?);
    }
    Ok(c)
}

/// `${NAME}` replaced by the environment variable's value (secrets stay out of the pipeline).
fn expand_env(v: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = v;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &rest[start + 2..start + end];
        out.push_str(&std::env::var(name).map_err(|_| name.to_string())?);
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
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
    fn environment_variables_fill_properties() {
        std::env::set_var("RILL_KAFKA_TEST_SECRET", "s3cret");
        assert_eq!(expand_env("user:${RILL_KAFKA_TEST_SECRET}!").unwrap(), "user:s3cret!");
        assert_eq!(expand_env("plain").unwrap(), "plain");
        assert_eq!(expand_env("${RILL_KAFKA_TEST_UNSET_VARIABLE}").unwrap_err(), "RILL_KAFKA_TEST_UNSET_VARIABLE");
    }

    #[test]
    fn topic_names_and_expressions_are_told_apart() {
        assert!(is_topic_name("alerts") && is_topic_name("fraud.alerts-v2_eu"));
        assert!(!is_topic_name("'alerts-' + region") && !is_topic_name(""));
    }
}
