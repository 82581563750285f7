//! The checkpoint coordinator's protocol, apart from the actors and the clock: start a
//! checkpoint (inject barriers), collect one acknowledgement per instance, complete, or abandon
//! it (timeout, a source that cannot take the barrier). A checkpoint completes once, only with
//! a state from every instance for its own epoch; late acknowledgements of an abandoned
//! checkpoint are ignored.
//!
//! An instance that finished (its input ended) takes no more barriers: what it left when it
//! finished stands for it in the checkpoint in flight (if it had not acknowledged it) and in
//! every later one, so checkpoints go on while the rest of the job runs (Flink's checkpoints
//! after tasks finished, FLIP-147). That is consistent: everything a finished instance sent
//! came before its end of stream, which the instances after it count as aligned, so their
//! states include it. Once every source instance has finished no barrier can start, and no
//! checkpoint either. Tested under interleavings with loom (`tests` below) and by the chaos
//! harness.

use std::time::{Duration, Instant};

use crate::checkpoint::InstanceState;

#[derive(Debug)]
pub struct Coordinator {
    /// States that complete a checkpoint (every source and operator instance).
    instances: usize,
    /// Source instances: barriers start there.
    sources: usize,
    /// The last epoch started (a restored job continues after the checkpoint it restored).
    epoch: u64,
    in_flight: Option<InFlight>,
    /// What each finished instance left, standing for it in every checkpoint from now on.
    finished: Vec<InstanceState>,
    finished_sources: usize,
    /// A checkpoint abandoned past its timeout, not yet reported by [`Coordinator::take_expired`].
    expired: Option<u64>,
}

#[derive(Debug)]
struct InFlight {
    epoch: u64,
    began: Instant,
    states: Vec<InstanceState>,
}

impl InFlight {
    fn has(&self, component: &str, subtask: u32) -> bool {
        self.states.iter().any(|s| s.component == component && s.subtask == subtask)
    }
}

/// What [`Coordinator::trigger`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Inject barriers for this epoch.
    Start(u64),
    /// The checkpoint in flight has time left: wait for it.
    Wait,
    /// Every source instance has finished: no barrier can start, so no more checkpoints.
    Finishing,
}

/// A checkpoint every instance acknowledged.
#[derive(Debug)]
pub struct Completed {
    pub epoch: u64,
    pub duration: Duration,
    pub states: Vec<InstanceState>,
}

impl Coordinator {
    pub fn new(instances: usize, sources: usize, last_epoch: u64) -> Coordinator {
        Coordinator { instances, sources, epoch: last_epoch, in_flight: None, finished: Vec::new(), finished_sources: 0, expired: None }
    }

    /// Time for a checkpoint. One still in flight within `timeout` is waited for; one past it
    /// is abandoned (with a warning) and a new one starts.
    pub fn trigger(&mut self, now: Instant, timeout: Duration) -> Trigger {
        if !self.can_checkpoint() {
            return Trigger::Finishing;
        }
        if let Some(f) = &self.in_flight {
            if now.saturating_duration_since(f.began) < timeout {
                return Trigger::Wait;
            }
            tracing::warn!("checkpoint {} abandoned after {timeout:?}", f.epoch);
            self.expired = Some(f.epoch);
        }
        self.epoch += 1;
        self.in_flight = Some(InFlight { epoch: self.epoch, began: now, states: self.finished.clone() });
        Trigger::Start(self.epoch)
    }

    /// Whether a checkpoint can still start (a source instance is still running).
    pub fn can_checkpoint(&self) -> bool {
        self.finished_sources < self.sources
    }

    /// The checkpoint in flight cannot complete (a barrier could not be delivered).
    pub fn abandon(&mut self) {
        self.in_flight = None;
    }

    /// An instance (a source one, if `source`) finished, leaving `state`: it stands for the
    /// instance from now on. Returns the checkpoint in flight when that was the last state it
    /// needed.
    pub fn instance_finished(&mut self, state: InstanceState, source: bool, now: Instant) -> Option<Completed> {
        debug_assert!(state.finished, "a finished instance's state is marked finished");
        self.finished_sources += source as usize;
        let counted = self.in_flight.as_ref().is_some_and(|f| f.has(&state.component, state.subtask));
        self.finished.push(state.clone());
        // The checkpoint in flight still completes: the instances after this one count its end
        // of stream as aligned, and the rest get the barrier from the sources that took it (or
        // finish too).
        let f = self.in_flight.as_mut()?;
        if !counted {
            f.states.push(state);
        }
        self.complete_if_whole(now)
    }

    /// An instance acknowledged checkpoint `epoch` with its state; returns the checkpoint when
    /// this was the last acknowledgement it needed.
    pub fn ack(&mut self, epoch: u64, state: InstanceState, now: Instant) -> Option<Completed> {
        let f = self.in_flight.as_mut().filter(|f| f.epoch == epoch)?;
        debug_assert!(!f.has(&state.component, state.subtask), "an instance acknowledged checkpoint {epoch} twice");
        f.states.push(state);
        self.complete_if_whole(now)
    }

    fn complete_if_whole(&mut self, now: Instant) -> Option<Completed> {
        if self.in_flight.as_ref()?.states.len() < self.instances {
            return None;
        }
        let f = self.in_flight.take().expect("checked above");
        Some(Completed { epoch: f.epoch, duration: now.saturating_duration_since(f.began), states: f.states })
    }

    /// The checkpoint the last [`trigger`](Self::trigger) abandoned past its timeout, once.
    pub fn take_expired(&mut self) -> Option<u64> {
        self.expired.take()
    }

    /// The epoch of the checkpoint in flight, if any.
    pub fn in_flight(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|f| f.epoch)
    }
}

/// Consecutive checkpoint failures (a metadata write that failed, a checkpoint past its
/// timeout), as Flink's `tolerable-failed-checkpoints`: the job fails once more than
/// `tolerable` checkpoints in a row have failed; a completed checkpoint resets the count.
#[derive(Debug)]
pub struct FailureCounter {
    tolerable: u32,
    in_a_row: u32,
}

impl FailureCounter {
    pub fn new(tolerable: u32) -> FailureCounter {
        FailureCounter { tolerable, in_a_row: 0 }
    }

    pub fn completed(&mut self) {
        self.in_a_row = 0;
    }

    /// Checkpoint `epoch` failed with `cause`: `Err` with the job's failure message once that
    /// is one failure too many.
    pub fn failed(&mut self, epoch: u64, cause: &str) -> Result<(), String> {
        self.in_a_row += 1;
        tracing::error!("checkpoint {epoch} failed ({} in a row, {} tolerated): {cause}", self.in_a_row, self.tolerable);
        if self.in_a_row > self.tolerable {
            return Err(format!(
                "{} checkpoints in a row failed (checkpoint.tolerable_failed_checkpoints is {}); the last, {epoch}: {cause}",
                self.in_a_row, self.tolerable
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom::sync::{Arc, Mutex};

    fn state(i: u32, epoch: u64) -> InstanceState {
        InstanceState { component: "op".into(), subtask: i, state: Some(crate::checkpoint::SavedState::Source(serde_json::json!(epoch))), finished: false }
    }

    /// What instance `i` left when it finished.
    fn ended(i: u32) -> InstanceState {
        InstanceState { component: "op".into(), subtask: i, state: Some(crate::checkpoint::SavedState::Source(serde_json::json!("end"))), finished: true }
    }

    #[test]
    fn completes_once_with_every_acknowledgement() {
        let t = Instant::now();
        let mut c = Coordinator::new(2, 2, 4);
        assert_eq!(c.trigger(t, Duration::from_secs(1)), Trigger::Start(5));
        assert_eq!(c.trigger(t, Duration::from_secs(1)), Trigger::Wait);
        assert!(c.ack(5, state(0, 5), t).is_none());
        assert!(c.ack(4, state(1, 4), t).is_none(), "an old epoch does not count");
        let done = c.ack(5, state(1, 5), t).unwrap();
        assert_eq!((done.epoch, done.states.len()), (5, 2));
        assert!(c.ack(5, state(1, 5), t).is_none(), "completes once");
        // Timed out: abandoned, and its late acknowledgements are ignored.
        assert_eq!(c.trigger(t, Duration::ZERO), Trigger::Start(6));
        assert!(c.ack(6, state(0, 6), t).is_none());
        assert_eq!(c.trigger(t, Duration::ZERO), Trigger::Start(7));
        assert!(c.ack(6, state(1, 6), t).is_none());
        // Instance 1 finishes before taking barrier 7: what it left stands for it, in 7 and after.
        assert!(c.instance_finished(ended(1), true, t).is_none());
        let done = c.ack(7, state(0, 7), t).unwrap();
        assert_eq!((done.epoch, done.states), (7, vec![ended(1), state(0, 7)]));
        assert_eq!(c.trigger(t, Duration::ZERO), Trigger::Start(8));
        let done = c.ack(8, state(0, 8), t).unwrap();
        assert_eq!(done.states, vec![ended(1), state(0, 8)]);
        // Every source has finished: no barrier can start any more.
        assert!(c.instance_finished(ended(0), true, t).is_none());
        assert_eq!(c.trigger(t, Duration::ZERO), Trigger::Finishing);
    }

    #[test]
    fn an_instance_that_finishes_after_acknowledging_counts_once() {
        let t = Instant::now();
        // Two source instances and an operator.
        let op = |e: u64| InstanceState { component: "map".into(), ..state(0, e) };
        let mut c = Coordinator::new(3, 2, 0);
        assert_eq!(c.trigger(t, Duration::from_secs(1)), Trigger::Start(1));
        assert!(c.ack(1, state(0, 1), t).is_none());
        assert!(c.instance_finished(ended(0), true, t).is_none(), "it acknowledged 1 already");
        assert!(c.ack(1, state(1, 1), t).is_none());
        let done = c.ack(1, op(1), t).unwrap();
        assert_eq!(done.states, vec![state(0, 1), state(1, 1), op(1)]);
        assert_eq!(c.trigger(t, Duration::from_secs(1)), Trigger::Start(2));
        assert!(c.ack(2, state(1, 2), t).is_none());
        // The operator finishes (its inputs ended) before barrier 2 reached it.
        let op_last = InstanceState { finished: true, state: None, ..op(2) };
        let done = c.instance_finished(op_last.clone(), false, t).unwrap();
        assert_eq!(done.states, vec![ended(0), state(1, 2), op_last]);
    }

    #[test]
    fn the_job_fails_after_one_failure_more_than_tolerated_in_a_row() {
        let t = Instant::now();
        let mut c = Coordinator::new(1, 1, 0);
        assert_eq!(c.trigger(t, Duration::ZERO), Trigger::Start(1));
        assert_eq!(c.take_expired(), None);
        assert_eq!(c.trigger(t, Duration::ZERO), Trigger::Start(2));
        assert_eq!(c.take_expired(), Some(1));
        assert_eq!(c.take_expired(), None, "reported once");
        let mut f = FailureCounter::new(2);
        assert!(f.failed(1, "disk").is_ok());
        assert!(f.failed(2, "disk").is_ok());
        f.completed();
        assert!(f.failed(4, "disk").is_ok());
        assert!(f.failed(5, "disk").is_ok());
        let err = f.failed(6, "read-only file system").unwrap_err();
        assert!(err.starts_with("3 checkpoints in a row failed") && err.ends_with("6: read-only file system"), "{err}");
    }

    /// Two instances acknowledge while the clock triggers the next checkpoint (abandoning the
    /// one in flight, as a timeout does) and one then finishes: in every interleaving a
    /// checkpoint completes at most once, only with both instances' states of its own epoch (or
    /// what the finished one left), and epochs complete in increasing order.
    #[test]
    fn loom_acknowledgements_race_with_timeouts_and_finishing() {
        // Every interleaving with up to 3 preemptions (loom's bound keeps the run to seconds).
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let t = Instant::now();
            let c = Arc::new(Mutex::new(Coordinator::new(2, 2, 0)));
            assert_eq!(c.lock().unwrap().trigger(t, Duration::ZERO), Trigger::Start(1));
            let completed = Arc::new(Mutex::new(Vec::new()));
            let acker = |i: u32, finish: bool| {
                let (c, completed) = (c.clone(), completed.clone());
                loom::thread::spawn(move || {
                    // Each instance sees a barrier, then acknowledges it in a later step (its
                    // acknowledgement travels while the clock may start a newer checkpoint).
                    let mut last = 0;
                    for _ in 0..2 {
                        let seen = c.lock().unwrap().in_flight().filter(|&e| e > last);
                        loom::thread::yield_now();
                        if let Some(e) = seen {
                            last = e;
                            if let Some(done) = c.lock().unwrap().ack(e, state(i, e), t) {
                                completed.lock().unwrap().push(done);
                            }
                        }
                    }
                    if finish {
                        if let Some(done) = c.lock().unwrap().instance_finished(ended(i), true, t) {
                            completed.lock().unwrap().push(done);
                        }
                    }
                })
            };
            let a = acker(0, false);
            let b = acker(1, true);
            // The clock: a new checkpoint (the one in flight is past its timeout).
            let trigger = {
                let c = c.clone();
                loom::thread::spawn(move || c.lock().unwrap().trigger(t, Duration::ZERO))
            };
            a.join().unwrap();
            b.join().unwrap();
            assert_ne!(trigger.join().unwrap(), Trigger::Finishing, "a source is still running");
            let done = completed.lock().unwrap();
            assert!(done.len() <= 2);
            for d in done.iter() {
                let mut subtasks: Vec<u32> = d.states.iter().map(|s| s.subtask).collect();
                subtasks.sort();
                assert_eq!(subtasks, [0, 1], "epoch {} completed without both instances", d.epoch);
                assert!(d.states.iter().all(|s| *s == state(s.subtask, d.epoch) || *s == ended(1)), "a state of another epoch: {:?}", d.states);
            }
            assert!(done.windows(2).all(|w| w[0].epoch < w[1].epoch));
        });
    }
}
