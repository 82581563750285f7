//! The input gate: every input channel of one operator instance merged into one stream of
//! `(input index, message)`. Inputs held for barrier alignment are skipped, which leaves their
//! messages in their bounded channels and so backpressures their senders.
//!
//! Inputs are polled in order of their watermark, lowest first (round-robin among equals): an
//! input that is ahead in event time is read only when the ones behind it have nothing ready,
//! so parallel sources stay close in event time and windows waiting for the slowest input do
//! not pile up (the effect of Flink's watermark alignment, without pausing sources).
//!
//! An input whose sender goes away without `End` ends the whole stream at once, marked
//! [`GateControl::aborted`]: the upstream failed, and the operator must not finish as if its
//! input were complete.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use futures::Stream;
use tokio::sync::mpsc::Receiver;

use crate::message::Message;

#[derive(Default)]
struct HoldState {
    held: Vec<bool>,
    waker: Option<Waker>,
    /// Input watermarks, for the polling order.
    marks: Vec<i64>,
    /// An input's sender went away without `End` (it failed): the gate ended its stream early.
    aborted: bool,
}

/// Holds and releases inputs of a gate from the actor that consumes it.
#[derive(Clone)]
pub(crate) struct GateControl(Rc<RefCell<HoldState>>);

impl GateControl {
    pub(crate) fn hold(&self, input: usize) {
        self.0.borrow_mut().held[input] = true;
    }

    /// Input `input` reached watermark `wm`.
    pub(crate) fn set_watermark(&self, input: usize, wm: i64) {
        self.0.borrow_mut().marks[input] = wm;
    }

    /// Whether the gate ended because an input's sender stopped before the end of its stream.
    pub(crate) fn aborted(&self) -> bool {
        self.0.borrow().aborted
    }

    pub(crate) fn release_all(&self) {
        let mut s = self.0.borrow_mut();
        s.held.iter_mut().for_each(|h| *h = false);
        if let Some(w) = s.waker.take() {
            w.wake()
        }
    }
}

/// One input channel, as the gate reads it: tokio's bounded receiver in a job, a loom-modelled
/// channel in the gate's concurrency tests (so that they check this gate, not a copy of it).
pub(crate) trait Channel: Unpin {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>>;
}

impl Channel for Receiver<Message> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        Receiver::poll_recv(self, cx)
    }
}

pub(crate) struct InputGate<R: Channel = Receiver<Message>> {
    inputs: Vec<Option<R>>,
    state: Rc<RefCell<HoldState>>,
    next: usize,
    /// Polling order, rebuilt in place on each poll.
    order: Vec<usize>,
}

impl<R: Channel> InputGate<R> {
    pub(crate) fn new(inputs: Vec<R>) -> (InputGate<R>, GateControl) {
        let state = Rc::new(RefCell::new(HoldState { held: vec![false; inputs.len()], waker: None, marks: vec![i64::MIN; inputs.len()], aborted: false }));
        (InputGate { inputs: inputs.into_iter().map(Some).collect(), state: state.clone(), next: 0, order: Vec::new() }, GateControl(state))
    }
}

impl<R: Channel> Stream for InputGate<R> {
    type Item = (usize, Message);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(usize, Message)>> {
        let this = &mut *self;
        let n = this.inputs.len();
        let mut open = false;
        this.order.clear();
        this.order.extend((0..n).map(|k| (this.next + k) % n));
        if n > 1 {
            let st = this.state.borrow();
            this.order.sort_by_key(|&i| st.marks[i]);
        }
        for k in 0..n {
            let i = this.order[k];
            let Some(rx) = this.inputs[i].as_mut() else { continue };
            open = true;
            if this.state.borrow().held[i] {
                continue;
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => {
                    this.next = (i + 1) % n;
                    if matches!(m, Message::End) {
                        this.inputs[i] = None;
                    }
                    return Poll::Ready(Some((i, m)));
                }
                Poll::Ready(None) => {
                    // The sender is gone without `End` (it failed): the job is being torn down.
                    // Ending the stream here, not delivering an `End`, keeps the operator from
                    // finishing (and sinks from publishing) on partial input.
                    this.inputs.iter_mut().for_each(|i| *i = None);
                    this.state.borrow_mut().aborted = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => {}
            }
        }
        if !open {
            return Poll::Ready(None);
        }
        this.state.borrow_mut().waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use futures::StreamExt;
    use loom::future::AtomicWaker;
    use loom::sync::{Arc, Mutex};

    use super::*;
    use crate::message::{Barrier, Epoch};
    use crate::record::{Batch, Record};
    use crate::runtime::alignment::{Alignment, BarrierAligner};
    use crate::value::Value;

    /// A channel loom can interleave: a queue under a mutex and the receiver's waker.
    struct Shared {
        queue: Mutex<(VecDeque<Message>, bool)>,
        waker: AtomicWaker,
    }

    struct Tx(Arc<Shared>);
    struct Rx(Arc<Shared>);

    fn channel() -> (Tx, Rx) {
        let shared = Arc::new(Shared { queue: Mutex::new((VecDeque::new(), false)), waker: AtomicWaker::new() });
        (Tx(shared.clone()), Rx(shared))
    }

    impl Tx {
        fn send(&self, m: Message) {
            self.0.queue.lock().unwrap().0.push_back(m);
            self.0.waker.wake();
        }
    }

    impl Drop for Tx {
        fn drop(&mut self) {
            self.0.queue.lock().unwrap().1 = true;
            self.0.waker.wake();
        }
    }

    impl Channel for Rx {
        fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
            // Registered before looking, so that a send after the look wakes this poll.
            self.0.waker.register_by_ref(cx.waker());
            let mut q = self.0.queue.lock().unwrap();
            match q.0.pop_front() {
                Some(m) => Poll::Ready(Some(m)),
                None if q.1 => Poll::Ready(None),
                None => Poll::Pending,
            }
        }
    }

    fn data(input: usize, k: i64) -> Message {
        let r: Record = [("input", Value::Int(input as i64)), ("k", Value::Int(k))].into_iter().collect();
        Message::Data(Batch::new(vec![r]))
    }

    fn barrier() -> Barrier {
        Barrier { epoch: Epoch(1), savepoint: false }
    }

    /// Two upstream instances send a record, barrier 1, another record and the end, each on its
    /// own thread; the operator reads them through the real `InputGate`, holding an input at its
    /// barrier as the operator actor does. In every interleaving the snapshot taken when the
    /// barrier is aligned holds exactly the records sent before it on each input, a held input
    /// delivers nothing, and every message arrives once.
    #[test]
    fn loom_the_gate_aligns_a_barrier_consistently_across_inputs() {
        let mut model = loom::model::Builder::new();
        // Bound 2 covers every interleaving that two preemptions give (bound 3 took five minutes
        // in a debug build and found nothing more).
        model.preemption_bound = Some(2);
        model.check(|| {
            let mut receivers = Vec::new();
            let mut producers = Vec::new();
            for input in 0..2 {
                let (tx, rx) = channel();
                receivers.push(rx);
                producers.push(loom::thread::spawn(move || {
                    for m in [data(input, 0), Message::Barrier(barrier()), data(input, 1), Message::End] {
                        tx.send(m);
                    }
                }));
            }
            let (mut gate, control) = InputGate::new(receivers);
            let mut aligner = BarrierAligner::new(2);
            let mut held = [false; 2];
            let mut seen: Vec<(usize, i64)> = Vec::new();
            let mut snapshots = Vec::new();
            loom::future::block_on(async {
                while let Some((i, m)) = gate.next().await {
                    assert!(!held[i], "input {i} delivered while held for alignment");
                    match m {
                        Message::Data(b) => {
                            let k = match b.into_records()[0].get_str("k") {
                                Some(Value::Int(k)) => *k,
                                other => panic!("{other:?}"),
                            };
                            seen.push((i, k));
                        }
                        Message::Barrier(bar) => match aligner.on_barrier(i, bar) {
                            Alignment::Hold => {
                                held[i] = true;
                                control.hold(i);
                            }
                            Alignment::Complete(bar) => {
                                let mut snapshot = seen.clone();
                                snapshot.sort();
                                snapshots.push((bar, snapshot));
                                held = [false; 2];
                                control.release_all();
                            }
                        },
                        Message::End => {
                            aligner.on_end(i);
                        }
                        other => panic!("{other:?}"),
                    }
                }
            });
            for p in producers {
                p.join().unwrap();
            }
            assert!(!control.aborted());
            assert_eq!(snapshots, [(barrier(), vec![(0, 0), (1, 0)])]);
            seen.sort();
            assert_eq!(seen, [(0, 0), (0, 1), (1, 0), (1, 1)]);
        });
    }
}
