//! The input gate: every input channel of one operator instance merged into one stream of
//! `(input index, message)`, polled round-robin. Inputs held for barrier alignment are skipped,
//! which leaves their messages in their bounded channels and so backpressures their senders.

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
}

/// Holds and releases inputs of a gate from the actor that consumes it.
#[derive(Clone)]
pub(crate) struct GateControl(Rc<RefCell<HoldState>>);

impl GateControl {
    pub(crate) fn hold(&self, input: usize) {
        self.0.borrow_mut().held[input] = true;
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
}

impl InputGate {
    pub(crate) fn new(inputs: Vec<Receiver<Message>>) -> (InputGate, GateControl) {
        let state = Rc::new(RefCell::new(HoldState { held: vec![false; inputs.len()], waker: None }));
        (InputGate { inputs: inputs.into_iter().map(Some).collect(), state: state.clone(), next: 0 }, GateControl(state))
    }
}

impl Stream for InputGate {
    type Item = (usize, Message);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<(usize, Message)>> {
        let this = &mut *self;
        let n = this.inputs.len();
        let mut open = false;
        for k in 0..n {
            let i = (this.next + k) % n;
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
                    this.inputs[i] = None;
                    return Poll::Ready(Some((i, Message::End)));
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
