//! Barrier alignment for one operator instance with several inputs: an input that delivered
//! barrier `n` is held back until every open input has delivered it; then the operator
//! snapshots and forwards the barrier.

use crate::message::Barrier;

#[derive(Debug, Clone)]
pub struct BarrierAligner {
    arrived: Vec<bool>,
    ended: Vec<bool>,
    pending: Option<Barrier>,
}

/// What to do after a barrier arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alignment {
    /// Hold this input until the others catch up.
    Hold,
    /// Every input delivered the barrier: snapshot, forward it, release the inputs.
    Complete(Barrier),
}

impl BarrierAligner {
    pub fn new(inputs: usize) -> BarrierAligner {
        BarrierAligner { arrived: vec![false; inputs], ended: vec![false; inputs], pending: None }
    }

    pub fn on_barrier(&mut self, input: usize, barrier: Barrier) -> Alignment {
        debug_assert!(self.pending.is_none_or(|p| p.epoch == barrier.epoch), "barriers of two epochs overlap");
        self.pending = Some(barrier);
        self.arrived[input] = true;
        self.check().map(Alignment::Complete).unwrap_or(Alignment::Hold)
    }

    /// Input ended: it no longer takes part in alignment.
    pub fn on_end(&mut self, input: usize) -> Option<Barrier> {
        self.ended[input] = true;
        self.check()
    }

    fn check(&mut self) -> Option<Barrier> {
        let done = self.arrived.iter().zip(&self.ended).all(|(a, e)| *a || *e);
        if done && self.pending.is_some() {
            self.arrived.iter_mut().for_each(|a| *a = false);
            self.pending.take()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Epoch;

    fn b(n: u64) -> Barrier {
        Barrier { epoch: Epoch(n), savepoint: false }
    }

    #[test]
    fn completes_when_every_open_input_delivered() {
        let mut a = BarrierAligner::new(3);
        assert_eq!(a.on_barrier(0, b(1)), Alignment::Hold);
        assert_eq!(a.on_end(2), None);
        assert_eq!(a.on_barrier(1, b(1)), Alignment::Complete(b(1)));
        assert_eq!(a.on_barrier(1, b(2)), Alignment::Hold);
        assert_eq!(a.on_end(0), Some(b(2)));
    }

    enum Msg {
        Data(u32),
        Barrier(Barrier),
        End,
    }

    /// Two upstream instances send a record, barrier 1, another record and the end, on their
    /// own threads; the operator polls its inputs as the input gate does (skipping held ones)
    /// and aligns with `BarrierAligner`. In every interleaving the snapshot taken at barrier 1
    /// holds exactly the records sent before it on each input — none from after it.
    #[test]
    fn loom_the_snapshot_at_a_barrier_is_consistent_across_inputs() {
        let mut model = loom::model::Builder::new();
        model.preemption_bound = Some(3);
        model.check(|| {
            let mut receivers = Vec::new();
            let mut producers = Vec::new();
            for _ in 0..2 {
                let (tx, rx) = loom::sync::mpsc::channel();
                receivers.push(rx);
                producers.push(loom::thread::spawn(move || {
                    for m in [Msg::Data(0), Msg::Barrier(b(1)), Msg::Data(1), Msg::End] {
                        tx.send(m).unwrap();
                    }
                }));
            }
            let mut aligner = BarrierAligner::new(2);
            let (mut held, mut ended) = ([false; 2], [false; 2]);
            let mut seen: Vec<(usize, u32)> = Vec::new();
            let mut snapshots: Vec<(Barrier, Vec<(usize, u32)>)> = Vec::new();
            while !ended.iter().all(|e| *e) {
                let mut progressed = false;
                for i in 0..2 {
                    if held[i] || ended[i] {
                        continue;
                    }
                    let Ok(m) = receivers[i].try_recv() else { continue };
                    progressed = true;
                    let completed = match m {
                        Msg::Data(k) => {
                            seen.push((i, k));
                            None
                        }
                        Msg::Barrier(bar) => match aligner.on_barrier(i, bar) {
                            Alignment::Hold => {
                                held[i] = true;
                                None
                            }
                            Alignment::Complete(bar) => Some(bar),
                        },
                        Msg::End => {
                            ended[i] = true;
                            aligner.on_end(i)
                        }
                    };
                    if let Some(bar) = completed {
                        let mut snap = seen.clone();
                        snap.sort();
                        snapshots.push((bar, snap));
                        held = [false; 2];
                    }
                }
                if !progressed {
                    loom::thread::yield_now();
                }
            }
            for p in producers {
                p.join().unwrap();
            }
            assert_eq!(snapshots.len(), 1);
            assert_eq!(snapshots[0], (b(1), vec![(0, 0), (1, 0)]));
            assert_eq!(seen.len(), 4);
        });
    }
}
