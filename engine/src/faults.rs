//! Injected faults, for testing recovery: a panic at the N-th record (once per process, so a
//! job restarted in the same process runs through) and a slow operator (a sleep per batch).
//! The `fault` transform sets them in a pipeline; the chaos harness (`rill chaos --panics N
//! --slow`) sets them from outside through the environment variable `RILL_FAULTS`, which holds
//! `;`-separated entries
//!
//! - `panic=COMPONENT@N`: instance 0 of `COMPONENT` panics when it has received N records —
//!   once per process, so a job restarted in the same process (`restart:`) runs through;
//! - `slow=COMPONENT:DURATION`: every instance of `COMPONENT` sleeps that long per batch;
//! - `checkpoint=fail`: writing a checkpoint's metadata fails as on a read-only file system
//!   (as root, a test cannot make a folder read-only);
//! - `crash=POINT@N`: the process aborts (as if killed) the N-th time it reaches the named
//!   point ([`crash_point`]; the Kafka sink has `kafka-before-commit`, between "checkpoint
//!   complete" and "transaction committed", `kafka-before-flush`, between producing and
//!   flushing at a barrier, and `kafka-after-final-commit`, after the last transaction of a
//!   finished job and before the job records that it finished; the PostgreSQL sink has
//!   `postgres-before-prepare`, `postgres-before-commit` and `postgres-after-final-commit`, at
//!   the same places of its two-phase commit).
//!
//! Unknown entries are ignored with a warning (the variable is for tests, not for users).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static PANICKED: AtomicBool = AtomicBool::new(false);

pub struct InjectedFault {
    panic_at: Option<u64>,
    slow: Option<Duration>,
    seen: u64,
}

/// The fault `RILL_FAULTS` sets for instance `subtask` of `component`, if any.
pub fn for_instance(component: &str, subtask: u32) -> Option<InjectedFault> {
    parse(&std::env::var("RILL_FAULTS").ok()?, component, subtask)
}

fn parse(spec: &str, component: &str, subtask: u32) -> Option<InjectedFault> {
    let mut f = InjectedFault::new(None, None);
    for entry in spec.split(';').map(str::trim).filter(|e| !e.is_empty()) {
        let parsed = match entry.split_once('=') {
            Some(("panic", rest)) => rest.rsplit_once('@').and_then(|(c, n)| Some((c, n.parse::<u64>().ok()?))).map(|(c, n)| {
                if c == component && subtask == 0 {
                    f.panic_at = Some(n);
                }
            }),
            Some(("slow", rest)) => rest.rsplit_once(':').and_then(|(c, d)| Some((c, humantime::parse_duration(d).ok()?))).map(|(c, d)| {
                if c == component {
                    f.slow = Some(d);
                }
            }),
            Some(("checkpoint", "fail")) => Some(()),
            Some(("crash", rest)) => crash_entry(rest).map(|_| ()),
            _ => None,
        };
        if parsed.is_none() {
            tracing::warn!("RILL_FAULTS: ignoring `{entry}` (write panic=COMPONENT@N or slow=COMPONENT:5ms)");
        }
    }
    (f.panic_at.is_some() || f.slow.is_some()).then_some(f)
}

fn crash_entry(rest: &str) -> Option<(&str, u64)> {
    rest.rsplit_once('@').and_then(|(p, n)| Some((p, n.parse::<u64>().ok().filter(|n| *n > 0)?)))
}

/// How many times each crash point was reached in this process.
static CRASH_HITS: std::sync::Mutex<Vec<(String, u64)>> = std::sync::Mutex::new(Vec::new());

/// A named point where `RILL_FAULTS=crash=POINT@N` aborts the process the N-th time it is
/// reached (nothing is flushed or cleaned up, as with `kill -9`).
pub fn crash_point(point: &str) {
    let Ok(spec) = std::env::var("RILL_FAULTS") else { return };
    let Some(at) = spec.split(';').filter_map(|e| e.trim().strip_prefix("crash=")).filter_map(crash_entry).find(|(p, _)| *p == point).map(|(_, n)| n) else {
        return;
    };
    let mut hits = CRASH_HITS.lock().unwrap_or_else(|e| e.into_inner());
    let n = match hits.iter_mut().find(|(p, _)| p == point) {
        Some((_, n)) => {
            *n += 1;
            *n
        }
        None => {
            hits.push((point.to_string(), 1));
            1
        }
    };
    if n == at {
        eprintln!("RILL_FAULTS: crashing at `{point}` (time {n})");
        std::process::abort();
    }
}

/// Whether `RILL_FAULTS` makes checkpoint writes fail (`checkpoint=fail`).
pub fn checkpoints_fail() -> bool {
    std::env::var("RILL_FAULTS").is_ok_and(|v| v.split(';').any(|e| e.trim() == "checkpoint=fail"))
}

impl InjectedFault {
    /// Panics (once per process) when the instance has received `panic_at` records; sleeps
    /// `slow` per batch.
    pub fn new(panic_at: Option<u64>, slow: Option<Duration>) -> InjectedFault {
        InjectedFault { panic_at, slow, seen: 0 }
    }

    /// Called before the instance processes a batch of `n` records.
    pub fn before_batch(&mut self, n: usize) {
        if let Some(d) = self.slow {
            std::thread::sleep(d);
        }
        self.seen += n as u64;
        if let Some(at) = self.panic_at {
            if self.seen >= at && !PANICKED.swap(true, Ordering::SeqCst) {
                panic!("injected fault after {at} records");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_entries_for_the_named_component() {
        let spec = "panic=w@10; slow=w:5ms; slow=other:1s; bogus";
        let f = parse(spec, "w", 0).unwrap();
        assert_eq!((f.panic_at, f.slow), (Some(10), Some(Duration::from_millis(5))));
        let g = parse(spec, "w", 1).unwrap();
        assert_eq!((g.panic_at, g.slow), (None, Some(Duration::from_millis(5))));
        assert!(parse(spec, "x", 0).is_none());
        assert_eq!(crash_entry("kafka-before-commit@3"), Some(("kafka-before-commit", 3)));
        assert_eq!(crash_entry("kafka-before-commit@0"), None);
        assert_eq!(crash_entry("kafka-before-commit"), None);
    }
}
