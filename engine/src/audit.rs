//! The audit trail: an append-only JSON Lines file of who did what to a job and with what
//! result, each line chained to the one before by an HMAC, so that an edited, inserted or
//! removed line is found by [`verify`].
//!
//! ```json
//! {"seq":3,"time":"2026-12-03T12:00:00.123Z","who":"user:ana pid:4242","job":"fraud","action":"start","details":{...},"result":"ok","prev":"<mac of line 2>","mac":"<hex>"}
//! ```
//!
//! `mac` is HMAC-SHA-256, with the pipeline's `audit.key`, of the line's bytes up to `,"mac"`
//! followed by `}` (so of the entry as written, which holds `prev`, the mac of the line before;
//! the first line's `prev` is empty). Each line is written with one `write` and `fsync`ed before
//! the action goes on. What the chain cannot show by itself: lines cut off the end of the file
//! (compare the last `seq` with a copy kept elsewhere).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::secrets::Secret;

/// `audit:` in a pipeline.
#[derive(Clone, Debug)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub key: Arc<Secret>,
}

const MAC: &str = ",\"mac\":\"";

/// The entry a line holds (its bytes up to the mac) and its mac, if it has that shape.
fn split(line: &str) -> Option<(String, &str)> {
    let at = line.rfind(MAC)?;
    let mac = line[at + MAC.len()..].strip_suffix("\"}")?;
    Some((format!("{}}}", &line[..at]), mac))
}

/// An open audit log, appending.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    key: Arc<Secret>,
    file: std::fs::File,
    seq: u64,
    prev: String,
    who: String,
    job: String,
}

/// Who runs this process: the OS user and the pid.
pub fn this_process() -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
    format!("user:{user} pid:{}", std::process::id())
}

impl AuditLog {
    /// Opens (or starts) the log at `cfg.path`, continuing its chain. A log whose last line is
    /// damaged is refused: `rill audit verify` says where.
    pub fn open(cfg: &AuditConfig, job: &str) -> Result<AuditLog, String> {
        if let Some(dir) = cfg.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let (seq, prev) = match std::fs::read_to_string(&cfg.path) {
            Ok(text) => match text.lines().rfind(|l| !l.trim().is_empty()) {
                None => (0, String::new()),
                Some(last) => {
                    let seq = split(last).and_then(|(entry, mac)| Some((serde_json::from_str::<serde_json::Value>(&entry).ok()?["seq"].as_u64()?, mac.to_string())));
                    match seq {
                        Some((seq, mac)) if text.ends_with('\n') => (seq, mac),
                        _ => return Err(format!("the audit log {} ends in a damaged line; `rill audit verify` shows where", cfg.path.display())),
                    }
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (0, String::new()),
            Err(e) => return Err(format!("cannot read the audit log {}: {e}", cfg.path.display())),
        };
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&cfg.path).map_err(|e| format!("cannot open the audit log {}: {e}", cfg.path.display()))?;
        Ok(AuditLog { path: cfg.path.clone(), key: cfg.key.clone(), file, seq, prev, who: this_process(), job: job.into() })
    }

    /// Appends one entry and syncs it to disk.
    pub fn record(&mut self, action: &str, details: serde_json::Value, result: &str) -> Result<(), String> {
        let entry = serde_json::json!({
            "seq": self.seq + 1,
            "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            "who": self.who,
            "job": self.job,
            "action": action,
            "details": details,
            "result": result,
            "prev": self.prev,
        });
        let body = serde_json::to_string(&entry).expect("JSON of JSON");
        let mac = self.key.hmac_sha256(body.as_bytes());
        let line = format!("{}{MAC}{mac}\"}}\n", &body[..body.len() - 1]);
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.sync_data())
            .map_err(|e| format!("cannot write the audit log {}: {e}", self.path.display()))?;
        self.seq += 1;
        self.prev = mac;
        Ok(())
    }
}

/// Checks the chain of the log at `path`: `Ok(entries)`, or the first bad line (1-based) and
/// what is wrong with it.
pub fn verify(path: &Path, key: &Secret) -> Result<u64, (usize, String)> {
    let text = std::fs::read_to_string(path).map_err(|e| (0, format!("cannot read {}: {e}", path.display())))?;
    let mut prev = String::new();
    let mut seq = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let n = i + 1;
        let Some(line) = line.strip_suffix('\n') else { return Err((n, "the line is cut off (no end of line)".into())) };
        let Some((entry, mac)) = split(line) else { return Err((n, "not an audit entry (no `mac` at its end)".into())) };
        if key.hmac_sha256(entry.as_bytes()) != mac {
            return Err((n, "its mac does not match: the line was changed, or written with another key".into()));
        }
        let v: serde_json::Value = serde_json::from_str(&entry).map_err(|e| (n, format!("not JSON: {e}")))?;
        if v["prev"].as_str() != Some(prev.as_str()) {
            return Err((n, "it does not follow the line before it: a line was removed or moved".into()));
        }
        if v["seq"].as_u64() != Some(seq + 1) {
            return Err((n, format!("its seq is {}, the line before it was {seq}: a line was removed", v["seq"])));
        }
        prev = mac.to_string();
        seq += 1;
    }
    Ok(seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(dir: &Path) -> (AuditConfig, Secret) {
        let cfg = AuditConfig { path: dir.join("a/audit.jsonl"), key: Arc::new(Secret::new("k", b"audit secret".to_vec())) };
        (cfg, Secret::new("k", b"audit secret".to_vec()))
    }

    #[test]
    fn the_chain_holds_across_opens_and_catches_every_edit() {
        let dir = tempfile::tempdir().unwrap();
        let (cfg, key) = log(dir.path());
        for round in 0..2 {
            let mut l = AuditLog::open(&cfg, "job").unwrap();
            l.record("start", serde_json::json!({"round": round}), "ok").unwrap();
            l.record("stop", serde_json::json!({}), "ok").unwrap();
        }
        assert_eq!(verify(&cfg.path, &key), Ok(4));
        assert!(verify(&cfg.path, &Secret::new("k", b"another".to_vec())).unwrap_err().1.contains("another key"));
        let text = std::fs::read_to_string(&cfg.path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let check = |t: String| {
            std::fs::write(&cfg.path, t).unwrap();
            verify(&cfg.path, &key)
        };
        // An edited field, a removed line, two lines swapped, a cut-off line.
        assert_eq!(check(text.replacen("\"round\":1", "\"round\":7", 1)).unwrap_err().0, 3);
        assert_eq!(check(format!("{}\n{}\n{}\n", lines[0], lines[2], lines[3])).unwrap_err().0, 2);
        assert_eq!(check(format!("{}\n{}\n{}\n{}\n", lines[0], lines[2], lines[1], lines[3])).unwrap_err().0, 2);
        assert_eq!(check(format!("{}\n{}", lines[0], &lines[1][..20])).unwrap_err().0, 2);
        // A damaged end is refused when the log is opened again.
        assert!(AuditLog::open(&cfg, "job").unwrap_err().contains("damaged"));
        assert_eq!(check(text.clone()), Ok(4));
    }
}
