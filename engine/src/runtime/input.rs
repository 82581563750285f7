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

pub(crate) struct InputGate {
    inputs: Vec<Option<Receiver<Message>>>,
    state: Rc<RefCell<HoldState>>,
    next: usize,
    /// Polling order, rebuilt in place on each poll.
    order: Vec<usize>,
}

impl InputGate {
    pub(crate) fn new(inputs: Vec<Receiver<Message>>) -> (InputGate, GateControl) {
        let state = Rc::new(RefCell::new(HoldState { held: vec![false; inputs.len()], waker: None, marks: vec![i64::MIN; inputs.len()], aborted: false }));
        (InputGate { inputs: inputs.into_iter().map(Some).collect(), state: state.clone(), next: 0, order: Vec::new() }, GateControl(state))
    }
}

impl Stream for InputGate {
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
