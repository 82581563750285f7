//! The checkpoint coordinator's protocol, apart from the actors and the clock: start a
//! checkpoint (inject barriers), collect one acknowledgement per instance, complete, or abandon
//! it (timeout, a source that cannot take the barrier, instances finishing). A checkpoint
//! completes once, only with an acknowledgement from every instance for its own epoch; late
//! acknowledgements of an abandoned checkpoint are ignored. Tested under interleavings with
//! loom (`tests` below) and by the chaos harness.

use std::time::{Duration, Instant};

use crate::checkpoint::InstanceState;

#[derive(Debug)]
pub struct Coordinator {
    /// Acknowledgements that complete a checkpoint (every source and operator instance).
    instances: usize,
    /// The last epoch started (a restored job continues after the checkpoint it restored).
    epoch: u64,
    in_flight: Option<InFlight>,
    /// Instances started finishing: no checkpoint can complete any more.
    finishing: bool,
    /// A checkpoint abandoned past its timeout, not yet reported by [`Coordinator::take_expired`].
    expired: Option<u64>,
}

#[derive(Debug)]
struct InFlight {
    epoch: u64,
    began: Instant,
    states: Vec<InstanceState>,
}

/// What [`Coordinator::trigger`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Inject barriers for this epoch.
    Start(u64),
    /// The checkpoint in flight has time left: wait for it.
    Wait,
    /// Instances are finishing: no more checkpoints.
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
    pub fn new(instances: usize, last_epoch: u64) -> Coordinator {
        Coordinator { instances, epoch: last_epoch, in_flight: None, finishing: false, expired: None }
    }

    /// Time for a checkpoint. One still in flight within `timeout` is waited for; one past it
    /// is abandoned (with a warning) and a new one starts.
    pub fn trigger(&mut self, now: Instant, timeout: Duration) -> Trigger {
        if self.finishing {
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
        self.in_flight = Some(InFlight { epoch: self.epoch, began: now, states: Vec::new() });
        Trigger::Start(self.epoch)
    }

    /// The checkpoint in flight cannot complete (a barrier could not be delivered).
    pub fn abandon(&mut self) {
        self.in_flight = None;
    }

    /// An instance finished its input: the checkpoint in flight cannot complete, nor later ones.
    pub fn instance_finished(&mut self) {
        self.finishing = true;
        self.in_flight = None;
    }

    /// An instance acknowledged checkpoint `epoch` with its state; returns the checkpoint when
    /// this was the last acknowledgement it needed.
    pub fn ack(&mut self, epoch: u64, state: InstanceState, now: Instant) -> Option<Completed> {
        let f = self.in_flight.as_mut().filter(|f| f.epoch == epoch)?;
        debug_assert!(
            !f.states.iter().any(|s| s.component == state.component && s.subtask == state.subtask),
            "an instance acknowledged checkpoint {epoch} twice"
        );
        f.states.push(state);
        if f.states.len() < self.instances {
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
        InstanceState { component: "op".into(), subtask: i, state: Some(crate::checkpoint::SavedState::Source(serde_json::json!(epoch))) }
    }

    #[test]
    fn completes_once_with_every_acknowledgement() {
        let t = Instant::now();
        let mut c = Coordinator::new(2, 4);
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
        c.instance_finished();
        assert_eq!(c.trigger(t, Duration::ZERO), Trigger::Finishing);
        assert!(c.ack(7, state(0, 7), t).is_none());
    }

    #[test]
    fn the_job_fails_after_one_failure_more_than_tolerated_in_a_row() {
        let t = Instant::now();
        let mut c = Coordinator::new(1, 0);
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
    /// one in flight, as a timeout does) and an instance may finish: in every interleaving a
    /// checkpoint completes at most once, only with both instances' states of its own epoch,
    /// and epochs complete in increasing order.
    #[test]
    fn loom_acknowledgements_race_with_timeouts_and_finishing() {
        // Every interleaving with up to 3 preemptions (loom's bound keeps the run to seconds).
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let t = Instant::now();
            let c = Arc::new(Mutex::new(Coordinator::new(2, 0)));
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
                        c.lock().unwrap().instance_finished();
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
            let decided = trigger.join().unwrap();
            let done = completed.lock().unwrap();
            assert!(done.len() <= 2);
            for d in done.iter() {
                let mut subtasks: Vec<u32> = d.states.iter().map(|s| s.subtask).collect();
                subtasks.sort();
                assert_eq!(subtasks, [0, 1], "epoch {} completed without both instances", d.epoch);
                assert!(d.states.iter().all(|s| s.state == Some(crate::checkpoint::SavedState::Source(serde_json::json!(d.epoch)))), "a state of another epoch");
            }
            assert!(done.windows(2).all(|w| w[0].epoch < w[1].epoch));
            if decided == Trigger::Finishing {
                assert!(done.iter().all(|d| d.epoch == 1));
            }
        });
    }
}
