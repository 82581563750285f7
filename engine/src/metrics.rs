//! Per-instance counters, updated once per batch (relaxed atomics) and read by the progress line
//! and the summary printed at the end of a run.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

#[derive(Default, Debug)]
pub struct Counters {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub rejected: AtomicU64,
    pub batches: AtomicU64,
    /// Bounded sources: how far they are (bytes or records) and of how much.
    pub progress_done: AtomicU64,
    pub progress_total: AtomicU64,
}

impl Counters {
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }
}

/// Counters of one operator instance.
#[derive(Debug, Clone)]
pub struct InstanceMetrics {
    pub component: Arc<str>,
    pub type_name: Arc<str>,
    pub subtask: u32,
    pub counters: Arc<Counters>,
}

/// All counters of a job.
#[derive(Debug, Default, Clone)]
pub struct JobMetrics {
    pub instances: Arc<Mutex<Vec<InstanceMetrics>>>,
}

/// Totals of one component over its instances.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComponentSummary {
    pub component: String,
    pub type_name: String,
    pub instances: u32,
    pub records_in: u64,
    pub records_out: u64,
    pub rejected: u64,
    pub batches: u64,
}

impl JobMetrics {
    pub fn register(&self, component: &Arc<str>, type_name: &str, subtask: u32) -> Arc<Counters> {
        let counters = Arc::new(Counters::default());
        self.instances.lock().expect("metrics lock").push(InstanceMetrics {
            component: component.clone(),
            type_name: type_name.into(),
            subtask,
            counters: counters.clone(),
        });
        counters
    }

    /// Per-component totals, in registration order.
    pub fn summary(&self) -> Vec<ComponentSummary> {
        let mut out: Vec<ComponentSummary> = Vec::new();
        for i in self.instances.lock().expect("metrics lock").iter() {
            let pos = match out.iter().position(|s| *s.component == *i.component) {
                Some(p) => p,
                None => {
                    out.push(ComponentSummary {
                        component: i.component.to_string(),
                        type_name: i.type_name.to_string(),
                        ..Default::default()
                    });
                    out.len() - 1
                }
            };
            let s = &mut out[pos];
            s.instances += 1;
            s.records_in += Counters::get(&i.counters.records_in);
            s.records_out += Counters::get(&i.counters.records_out);
            s.rejected += Counters::get(&i.counters.rejected);
            s.batches += Counters::get(&i.counters.batches);
        }
        out
    }

    /// (done, total) over every bounded source that reports progress.
    pub fn progress(&self) -> (u64, u64) {
        let mut done = 0;
        let mut total = 0;
        for i in self.instances.lock().expect("metrics lock").iter() {
            done += Counters::get(&i.counters.progress_done);
            total += Counters::get(&i.counters.progress_total);
        }
        (done, total)
    }
}
