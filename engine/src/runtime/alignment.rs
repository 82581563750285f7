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
}
