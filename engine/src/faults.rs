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
//!   (as root, a test cannot make a folder read-only).
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
            _ => None,
        };
        if parsed.is_none() {
            tracing::warn!("RILL_FAULTS: ignoring `{entry}` (write panic=COMPONENT@N or slow=COMPONENT:5ms)");
        }
    }
    (f.panic_at.is_some() || f.slow.is_some()).then_some(f)
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
    }
}
