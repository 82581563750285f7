//! `rill schema`: a JSON Schema (draft 2020-12) of the pipeline format, for editors (the YAML
//! language server: `# yaml-language-server: $schema=rill.schema.json`).
//!
//! The top level is written out here; each component type's options come from the registry
//! itself (the fields of the options struct its factory reads, see
//! [`Registry::option_names`]), so built-in and custom types are all there and the schema cannot
//! drift from what `rill validate` accepts. Option values are not typed in it (`validate` checks
//! them, with positions); a type whose options are not one struct allows any.

use serde_json::{json, Map, Value};

use crate::{PipelineConfig, Registry};
use rill_engine::config::Role;

/// Options every component of a role takes, besides its type's own.
fn common(role: Role) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("parallelism".into(), json!({"type": "integer", "minimum": 1, "description": "instances of this component"}));
    m.insert("redact".into(), json!({"type": "array", "items": {"type": "string"}, "description": "top-level fields kept out of dead letters, taps and the page"}));
    match role {
        Role::Source => {
            m.insert("event_time".into(), json!({"type": "object", "description": "{field | expression, max_out_of_orderness, idle_timeout, watermark_interval}"}));
            m.insert("ingestion_time".into(), json!({"description": "stamp records with the time they were read"}));
        }
        Role::Transform | Role::Sink => {
            m.insert("inputs".into(), json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "description": "components (or `name.port`) this one reads"}));
        }
    }
    m
}

/// The schema of a component of `role`, one of `types`.
fn component(role: Role, types: &[&str], registry: &Registry, pipeline: &PipelineConfig) -> Value {
    let mut props = common(role);
    props.insert("type".into(), json!({"enum": types}));
    let cases: Vec<Value> = types
        .iter()
        .map(|t| {
            let then = match registry.option_names(role, t, pipeline) {
                Some(names) => {
                    let mut own = common(role);
                    own.insert("type".into(), json!({"const": t}));
                    for n in names {
                        own.insert(n.to_string(), json!({}));
                    }
                    json!({"properties": own, "additionalProperties": false})
                }
                None => json!({}),
            };
            json!({"if": {"properties": {"type": {"const": t}}, "required": ["type"]}, "then": then})
        })
        .collect();
    let mut required = vec!["type"];
    if role != Role::Source {
        required.push("inputs");
    }
    json!({"type": "object", "required": required, "properties": props, "allOf": cases})
}

/// The whole schema.
pub fn schema(registry: &Registry) -> Value {
    let pipeline = PipelineConfig::parse("name: schema\nsources: {g: {type: generator}}\nsinks: {s: {type: blackhole, inputs: [g]}}\n", "<schema>", &[]).expect("a minimal pipeline");
    let (sources, transforms, sinks) = registry.type_names();
    let duration = json!({"type": ["string", "integer"], "description": "a duration: 500ms, 10s, 5m (or milliseconds)"});
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Rill pipeline",
        "description": "A Rill pipeline: sources → transforms → sinks (README, \"Pipelines\").",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string"},
            "parallelism": {"type": "integer", "minimum": 1},
            "max_parallelism": {"type": "integer", "minimum": 1},
            "batch_size": {"type": "integer", "minimum": 1},
            "work_dir": {"type": "string"},
            "dead_letter": {"oneOf": [{"type": "string"}, {"type": "object", "properties": {"type": {"enum": ["file", "stdout", "stderr", "blackhole"]}, "path": {"type": "string"}}, "required": ["type"], "additionalProperties": false}]},
            "state": {"type": "object", "properties": {"cache_entries": {"type": "integer", "minimum": 1}}, "additionalProperties": false},
            "checkpoint": {"type": "object", "required": ["interval"], "additionalProperties": false, "properties": {
                "interval": duration, "dir": {"type": "string"}, "retain": {"type": "integer", "minimum": 1}, "timeout": duration, "tolerable_failed_checkpoints": {"type": "integer", "minimum": 0}}},
            "restart": {"type": "object", "required": ["max_attempts"], "additionalProperties": false, "properties": {"max_attempts": {"type": "integer", "minimum": 0}, "backoff": duration}},
            "keys": {"type": "object", "additionalProperties": {"oneOf": [
                {"type": "object", "required": ["env"], "properties": {"env": {"type": "string"}}, "additionalProperties": false},
                {"type": "object", "required": ["file"], "properties": {"file": {"type": "string"}}, "additionalProperties": false}]}},
            "audit": {"type": "object", "required": ["path", "key"], "additionalProperties": false, "properties": {"path": {"type": "string"}, "key": {"type": "string"}}},
            "http": {"type": "object", "required": ["listen"], "additionalProperties": false, "properties": {
                "listen": {"type": "string"},
                "tls": {"type": "object", "required": ["cert", "key"], "additionalProperties": false, "properties": {"cert": {"type": "string"}, "key": {"type": "string"}, "client_ca": {"type": "string"}}},
                "tokens": {"type": "object", "required": ["file"], "additionalProperties": false, "properties": {"file": {"type": "string"}}}}},
            "sources": {"type": "object", "additionalProperties": component(Role::Source, &sources, registry, &pipeline)},
            "transforms": {"type": "object", "additionalProperties": component(Role::Transform, &transforms, registry, &pipeline)},
            "sinks": {"type": "object", "additionalProperties": component(Role::Sink, &sinks, registry, &pipeline)},
            "tests": {"type": "array", "items": {"type": "object", "required": ["name"], "additionalProperties": false, "properties": {
                "name": {"type": "string"},
                "inputs": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
                "outputs": {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "object"}}},
                "dead_letters": {"type": "integer", "minimum": 0}}}},
        },
    })
}
