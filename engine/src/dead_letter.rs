//! The dead-letter output: every rejected record, with its error and where it came from, as one
//! JSON object per line. Rejects are rare, so one shared writer behind a mutex is enough.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::config::DeadLetterConfig;
use crate::operator::{Rejected, RejectedInput};

pub struct DeadLetter {
    out: Mutex<Option<Box<dyn Write + Send>>>,
    count: AtomicU64,
    pub description: String,
    /// Per component, fields whose values are kept out (`redact:`).
    redact: HashMap<String, Vec<String>>,
    /// The last few entries written (redacted as written), for the HTTP API.
    recent: Mutex<std::collections::VecDeque<serde_json::Value>>,
}

/// Dead letters kept for [`DeadLetter::recent`].
const RECENT: usize = 20;

/// What a redacted field's value becomes.
pub const REDACTED: &str = "[redacted]";

impl DeadLetter {
    pub fn open(cfg: &DeadLetterConfig) -> std::io::Result<DeadLetter> {
        let (out, description): (Option<Box<dyn Write + Send>>, String) = match cfg {
            DeadLetterConfig::File(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)?;
                }
                let f = std::fs::OpenOptions::new().create(true).append(true).open(p)?;
                (Some(Box::new(std::io::BufWriter::new(f))), p.display().to_string())
            }
            DeadLetterConfig::Stdout => (Some(Box::new(std::io::stdout())), "stdout".into()),
            DeadLetterConfig::Stderr => (Some(Box::new(std::io::stderr())), "stderr".into()),
            DeadLetterConfig::Discard => (None, "discarded (counted only)".into()),
        };
        Ok(DeadLetter { out: Mutex::new(out), count: AtomicU64::new(0), description, redact: HashMap::new(), recent: Default::default() })
    }

    /// Keeps `fields` of each component's rejected records out of what is written: their values
    /// become `"[redacted]"`, and are cut out of the error message too (values of 3 or more
    /// characters); a line that never became a record is withheld whole.
    pub fn redacting(mut self, fields: HashMap<String, Vec<String>>) -> DeadLetter {
        self.redact = fields;
        self
    }

    /// The fields `component` keeps out (its own `redact:` and its upstream's).
    pub fn redacted(&self, component: &str) -> &[String] {
        self.redact.get(component).map(Vec::as_slice).unwrap_or_default()
    }

    /// Writes rejected records of `component`. `origin` describes a record's source position.
    /// Counts only what was written: when the output fails (a full disk), the error says how
    /// many records were not recorded, and the job must fail with it (nothing vanishes).
    pub fn write(&self, component: &str, rejected: Vec<Rejected>, origin: impl Fn(&crate::record::Record) -> serde_json::Value) -> Result<(), String> {
        if rejected.is_empty() {
            return Ok(());
        }
        let n = rejected.len() as u64;
        let mut guard = self.out.lock().expect("dead-letter lock");
        let Some(out) = guard.as_mut() else {
            self.count.fetch_add(n, Relaxed);
            return Ok(());
        };
        let mut lines = Vec::new();
        let redact = self.redact.get(component).map(Vec::as_slice).unwrap_or_default();
        for r in rejected {
            let mut error = r.error;
            let (input, position) = match &r.input {
                RejectedInput::Raw(s) if !redact.is_empty() => (
                    serde_json::Value::String(format!("[withheld: {} bytes that did not parse; `redact` is set]", s.len())),
                    r.position.clone().unwrap_or_default(),
                ),
                RejectedInput::Raw(s) => (serde_json::Value::String(s.clone()), r.position.clone().unwrap_or_default()),
                RejectedInput::Record(rec) => {
                    let mut value = serde_json::to_value(rec).unwrap_or_default();
                    for field in redact {
                        if let Some(v) = value.get_mut(field.as_str()).filter(|v| !v.is_null()) {
                            error = scrub(&error, &[text(v)]);
                            *v = serde_json::Value::String(REDACTED.into());
                        }
                    }
                    (value, r.position.clone().unwrap_or_else(|| origin(rec)))
                }
            };
            let entry = serde_json::json!({
                "component": component,
                "error": error,
                "position": position,
                "input": input,
            });
            serde_json::to_writer(&mut lines, &entry).expect("JSON of JSON");
            lines.push(b'\n');
            let mut recent = self.recent.lock().expect("dead-letter lock");
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(entry);
        }
        out.write_all(&lines).and_then(|_| out.flush()).map_err(|e| {
            format!("cannot write to the dead-letter output {}: {e} ({n} rejected records of `{component}` could not be recorded)", self.description)
        })?;
        self.count.fetch_add(n, Relaxed);
        Ok(())
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    /// The last few entries written, oldest first (with `redact:` applied).
    pub fn recent(&self) -> Vec<serde_json::Value> {
        self.recent.lock().expect("dead-letter lock").iter().cloned().collect()
    }

    pub fn flush(&self) {
        if let Some(out) = self.out.lock().expect("dead-letter lock").as_mut() {
            let _ = out.flush();
        }
    }
}

/// A value as it would appear in a message: a string's text, anything else as JSON.
fn text(v: &serde_json::Value) -> String {
    match v.as_str() {
        Some(s) => s.to_string(),
        None => v.to_string(),
    }
}

/// The values of `fields` in `data` (3 characters or more: shorter ones would cut ordinary
/// words out of a message), to [`scrub`] from what is said about it.
pub fn secrets(fields: &[crate::value::Sym], data: &crate::record::Data) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut keep = |v: &crate::value::Value| {
        if !v.is_null() {
            let t = text(&serde_json::to_value(v).unwrap_or_default());
            if t.chars().count() >= 3 {
                out.push(t);
            }
        }
    };
    match data {
        crate::record::Data::Rows(rows) => rows.iter().for_each(|r| fields.iter().filter_map(|&f| r.get(f)).for_each(&mut keep)),
        crate::record::Data::Columns(c) => {
            for col in fields.iter().filter_map(|&f| c.column(f)) {
                (0..col.len()).for_each(|i| keep(&col.get(i)));
            }
        }
    }
    out.sort_by_key(|t| std::cmp::Reverse(t.len())); // longest first: one inside another goes too
    out.dedup();
    out
}

/// `message` with each of `secrets` (of 3 characters or more) replaced by `"[redacted]"`.
pub fn scrub(message: &str, secrets: &[String]) -> String {
    secrets.iter().filter(|s| s.chars().count() >= 3).fold(message.to_string(), |m, s| m.replace(s.as_str(), REDACTED))
}
