//! Custom operators written against Rill's public extension API: `dedupe` (below) and
//! `velocity` (keyed state with a TTL and timers, in [`velocity`]).
//!
//! The rest of this page is about `dedupe`.
//!
//! `dedupe` drops every record whose key has been seen before and passes the first one on. It is
//! keyed (`key_by`), so the runtime routes each key to one instance and the `seen` set of an
//! instance only holds its own keys. Its state is written by `snapshot` and read back by
//! `restore`, which is all a checkpoint needs from it.
//!
//! Registering it is one call; after that `type: dedupe` works in any pipeline:
//!
//! ```
//! let mut registry = rill::registry();
//! rill_examples::register(&mut registry);
//! assert!(registry.type_names().1.contains(&"dedupe"));
//! ```

use std::collections::HashSet;

use rill::engine::config::{ConfigErrors, Spanned};
use rill::engine::value::Key;
use rill::{BuildContext, Collector, Epoch, Expr, Operator, OperatorError, Record, Registry, TransformSpec};

/// Options of `type: dedupe` (the doc comments are the user documentation).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DedupeConfig {
    /// What makes two records duplicates: an expression, e.g. `order_id`.
    key_by: Spanned<String>,
}

/// Passes on the first record of each key and counts the duplicates it drops.
pub struct Dedupe {
    key: Expr,
    seen: HashSet<Key>,
    dropped: u64,
}

impl Operator for Dedupe {
    fn process(&mut self, record: Record, out: &mut Collector) -> Result<(), OperatorError> {
        match self.key.eval(&record) {
            Ok(k) => {
                if self.seen.insert(Key(k)) {
                    out.emit(record);
                } else {
                    self.dropped += 1;
                }
            }
            Err(e) => out.reject(record, format!("dedupe key `{}`: {e}", self.key.source())),
        }
        Ok(())
    }

    fn snapshot(&mut self, _epoch: Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        let keys: Vec<&rill::Value> = self.seen.iter().map(|k| &k.0).collect();
        serde_json::to_vec(&keys).map(Some).map_err(|e| OperatorError::new(e.to_string()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), OperatorError> {
        let keys: Vec<rill::Value> = serde_json::from_slice(state).map_err(|e| OperatorError::new(e.to_string()))?;
        self.seen = keys.into_iter().map(Key).collect();
        Ok(())
    }
}

fn build(ctx: &BuildContext) -> Result<TransformSpec, ConfigErrors> {
    let cfg: DedupeConfig = ctx.options()?;
    let key = ctx.expr(&cfg.key_by)?;
    let mut spec = TransformSpec::new(format!("drops repeated `{}`", key.source()), {
        let key = key.clone();
        move |_| Ok(Dedupe { key: key.clone(), seen: HashSet::new(), dropped: 0 })
    });
    spec.key_by = Some(key);
    Ok(spec)
}

pub mod velocity;

/// Registers `dedupe` and `velocity`.
pub fn register(registry: &mut Registry) {
    registry.register_transform("dedupe", build);
    registry.register_transform("velocity", velocity::build);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_repeats_and_survives_snapshot_restore() {
        let key = Expr::compile("id").unwrap();
        let mut op = Dedupe { key: key.clone(), seen: HashSet::new(), dropped: 0 };
        let mut out = Collector::default();
        for id in [1i64, 2, 1, 3, 2] {
            op.process([("id", id)].into_iter().collect(), &mut out).unwrap();
        }
        let ids: Vec<String> = out.records().iter().map(|r| r.to_json()).collect();
        assert_eq!(ids, [r#"{"id":1}"#, r#"{"id":2}"#, r#"{"id":3}"#]);
        assert_eq!(op.dropped, 2);

        let state = op.snapshot(Epoch(1)).unwrap().unwrap();
        let mut restored = Dedupe { key, seen: HashSet::new(), dropped: 0 };
        restored.restore(&state).unwrap();
        let mut out = Collector::default();
        for id in [3i64, 4] {
            restored.process([("id", id)].into_iter().collect(), &mut out).unwrap();
        }
        assert_eq!(out.records().len(), 1);
    }
}
