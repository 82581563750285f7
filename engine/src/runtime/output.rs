//! Routing an instance's output onto its outgoing channels.
//!
//! Messages are first offered with `try_send`; once one channel is full, that message and every
//! later one queue in order in `pending`, and the actor awaits [`Outputs::flush`] (in `ctx.wait`,
//! so it takes no new input meanwhile). That is the backpressure path: a full channel stops the
//! sender, all the way back to the sources.
//!
//! A channel found closed means its receiver stopped before the end of the stream: the job is
//! failing (whoever failed has reported it) or being torn down. Nothing more can be delivered
//! there, so [`Outputs::closed`] tells the sending actor to stop too, rather than go on producing
//! into nothing.

use std::collections::VecDeque;

use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::mpsc::Sender;

use crate::exchange::{Exchange, KeyGroup};
use crate::message::{Message, Watermark};
use crate::operator::Rejected;
use crate::record::{Batch, Record};

/// Adds `wm` at the end of `b`, replacing a watermark already there.
fn mark(b: &mut Batch, wm: Watermark) {
    match b.watermarks.last_mut() {
        Some((n, last)) if *n == b.records.len() => *last = wm,
        _ => b.watermarks.push((b.records.len(), wm)),
    }
}

pub(crate) struct OutEdge {
    pub(crate) port: usize,
    pub(crate) exchange: Exchange,
    pub(crate) senders: Vec<Sender<Message>>,
    pub(crate) next: usize,
}

pub(crate) struct Outputs {
    edges: Vec<OutEdge>,
    pending: VecDeque<(usize, usize, Message)>,
    closed: bool,
}

impl Outputs {
    pub(crate) fn new(edges: Vec<OutEdge>) -> Outputs {
        Outputs { edges, pending: VecDeque::new(), closed: false }
    }

    /// Whether some receiver has stopped before the end of the stream (see the module docs).
    pub(crate) fn closed(&self) -> bool {
        self.closed
    }

    /// Whether any edge reads `port`.
    pub(crate) fn reads(&self, port: usize) -> bool {
        self.edges.iter().any(|e| e.port == port)
    }

    /// Routes records emitted on `port` to every edge reading it, with the watermarks reached
    /// among them (`marks`, positions in `records`). Every channel of those edges gets every
    /// watermark in its place: inside the batch it sends there, or alone where it sends no
    /// records. Returns how many records were emitted (counted once, however many edges read
    /// them); records whose key cannot be computed are rejected.
    pub(crate) fn route(&mut self, port: usize, records: Vec<Record>, marks: &[(usize, Watermark)], rejected: &mut Vec<Rejected>) -> u64 {
        if records.is_empty() && marks.is_empty() {
            return 0;
        }
        let targets: Vec<usize> = (0..self.edges.len()).filter(|&e| self.edges[e].port == port).collect();
        let mut sent = 0;
        let mut records = Some(records);
        for (k, &e) in targets.iter().enumerate() {
            let recs = if k + 1 == targets.len() {
                records.take().expect("taken once")
            } else {
                records.as_ref().expect("present").clone()
            };
            if k == 0 {
                sent = recs.len() as u64;
            }
            let edge = &mut self.edges[e];
            let n = edge.senders.len();
            let mut buckets: Vec<Batch> = (0..n).map(|_| Batch::default()).collect();
            match &edge.exchange {
                Exchange::Hash { key, max_parallelism } if n > 1 => {
                    let mut m = 0;
                    for (i, r) in recs.into_iter().enumerate() {
                        while m < marks.len() && marks[m].0 <= i {
                            buckets.iter_mut().for_each(|b| mark(b, marks[m].1));
                            m += 1;
                        }
                        match key.eval(&r) {
                            Ok(kv) => {
                                let kg = KeyGroup::of_hash(kv.stable_hash(), *max_parallelism);
                                buckets[kg.subtask(*max_parallelism, n as u32) as usize].records.push(r)
                            }
                            Err(err) => {
                                if k == 0 {
                                    sent -= 1;
                                }
                                rejected.push(Rejected {
                                    input: crate::operator::RejectedInput::Record(r),
                                    error: format!("key `{}`: {err}", key.source()),
                                    position: None,
                                })
                            }
                        }
                    }
                    for &(_, wm) in &marks[m..] {
                        buckets.iter_mut().for_each(|b| mark(b, wm));
                    }
                }
                _ => {
                    let t = edge.next;
                    if !recs.is_empty() {
                        edge.next = (edge.next + 1) % n;
                    }
                    buckets[t] = Batch { records: recs, watermarks: marks.to_vec() };
                    if let Some(&(_, last)) = marks.last() {
                        for (i, b) in buckets.iter_mut().enumerate() {
                            if i != t {
                                mark(b, last);
                            }
                        }
                    }
                }
            }
            for (t, b) in buckets.into_iter().enumerate() {
                if !b.records.is_empty() {
                    self.push(e, t, Message::Data(b));
                } else if let Some(&(_, wm)) = b.watermarks.last() {
                    self.push(e, t, Message::Watermark(wm));
                }
            }
        }
        sent
    }

    /// Sends watermark `wm` on the edges of every side output (they carry no records now).
    pub(crate) fn watermark_side_ports(&mut self, wm: Watermark) {
        for e in 0..self.edges.len() {
            if self.edges[e].port != 0 {
                for t in 0..self.edges[e].senders.len() {
                    self.push(e, t, Message::Watermark(wm));
                }
            }
        }
    }

    /// Sends `msg` on every channel.
    pub(crate) fn broadcast(&mut self, msg: Message) {
        for e in 0..self.edges.len() {
            for t in 0..self.edges[e].senders.len() {
                self.push(e, t, msg.clone());
            }
        }
    }

    fn push(&mut self, e: usize, t: usize, msg: Message) {
        if !self.pending.is_empty() {
            self.pending.push_back((e, t, msg));
            return;
        }
        match self.edges[e].senders[t].try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg)) => self.pending.push_back((e, t, msg)),
            Err(TrySendError::Closed(_)) => self.closed = true,
        }
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Sends everything pending, waiting for channel capacity.
    pub(crate) async fn flush(mut self) -> Outputs {
        while let Some((e, t, msg)) = self.pending.pop_front() {
            if self.edges[e].senders[t].send(msg).await.is_err() {
                self.closed = true;
            }
        }
        self
    }
}
