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

use crate::exchange::{Exchange, Owners};
use crate::message::{Message, Watermark};
use crate::operator::Rejected;
use crate::columns::{Column, Columns};
use crate::record::{Batch, Data, Record};
use crate::value::Value;

/// Adds `wm` after the first `len` records of a batch being built, replacing a watermark
/// already there.
fn mark_at(watermarks: &mut Vec<(usize, Watermark)>, len: usize, wm: Watermark) {
    match watermarks.last_mut() {
        Some((n, last)) if *n == len => *last = wm,
        _ => watermarks.push((len, wm)),
    }
}

fn mark(b: &mut Batch, wm: Watermark) {
    let len = b.len();
    mark_at(&mut b.watermarks, len, wm)
}

fn key_error(key: &crate::expr::Expr, r: Record, err: impl std::fmt::Display) -> Rejected {
    Rejected { input: crate::operator::RejectedInput::Record(r), error: format!("key `{}`: {err}", key.source()), position: None }
}

/// Splits records among `n` channels by the key group of their key.
fn hash_rows(key: &crate::expr::Expr, owners: &Owners, n: usize, records: Vec<Record>, marks: &[(usize, Watermark)], failed: &mut Vec<Rejected>) -> Vec<Batch> {
    let mut buckets: Vec<Batch> = (0..n).map(|_| Batch::default()).collect();
    let mut rows: Vec<Vec<Record>> = (0..n).map(|_| Vec::new()).collect();
    let mut m = 0;
    for (i, r) in records.into_iter().enumerate() {
        while m < marks.len() && marks[m].0 <= i {
            for (b, rows) in buckets.iter_mut().zip(&rows) {
                mark_at(&mut b.watermarks, rows.len(), marks[m].1);
            }
            m += 1;
        }
        match key.eval(&r) {
            Ok(kv) => rows[owners.of_hash(kv.stable_hash())].push(r),
            Err(err) => failed.push(key_error(key, r, err)),
        }
    }
    for (b, rows) in buckets.iter_mut().zip(rows) {
        for &(_, wm) in &marks[m..] {
            mark_at(&mut b.watermarks, rows.len(), wm);
        }
        b.data = Data::Rows(rows);
    }
    buckets
}

/// [`hash_rows`] for a column batch: the key is evaluated over the batch, each channel gets the
/// rows of its key groups as columns.
fn hash_columns(key: &crate::expr::Expr, owners: &Owners, n: usize, columns: Columns, marks: &[(usize, Watermark)], failed: &mut Vec<Rejected>) -> Vec<Batch> {
    let evaluated = key.eval_columns(&columns);
    let mut errors = evaluated.errors.into_iter().peekable();
    let mut buckets: Vec<Batch> = (0..n).map(|_| Batch::default()).collect();
    let mut rows: Vec<Vec<u32>> = (0..n).map(|_| Vec::with_capacity(columns.len() / n + 1)).collect();
    let mut m = 0;
    for i in 0..columns.len() {
        while m < marks.len() && marks[m].0 <= i {
            for (b, rows) in buckets.iter_mut().zip(&rows) {
                mark_at(&mut b.watermarks, rows.len(), marks[m].1);
            }
            m += 1;
        }
        if let Some((_, err)) = errors.next_if(|(row, _)| *row == i) {
            failed.push(key_error(key, columns.row(i), err));
            continue;
        }
        let hash = match &*evaluated.column {
            Column::Int(x) => Value::Int(x[i]).stable_hash(),
            c => c.get(i).stable_hash(),
        };
        rows[owners.of_hash(hash)].push(i as u32);
    }
    for (b, rows) in buckets.iter_mut().zip(rows) {
        for &(_, wm) in &marks[m..] {
            mark_at(&mut b.watermarks, rows.len(), wm);
        }
        if !rows.is_empty() {
            b.data = Data::Columns(columns.gather(&rows));
        }
    }
    buckets
}

pub(crate) struct OutEdge {
    pub(crate) port: usize,
    pub(crate) exchange: Exchange,
    pub(crate) senders: Vec<Sender<Message>>,
    pub(crate) next: usize,
    /// Built at the first hashed batch.
    pub(crate) owners: Option<Owners>,
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

    /// Routes records emitted on `port` (`pieces`, in order) to every edge reading it, with the
    /// watermarks reached among them (`marks`, positions across the pieces). Every channel of
    /// those edges gets every watermark in its place: inside the batch it sends there, or alone
    /// where it sends no records. Returns how many records were emitted (counted once, however
    /// many edges read them); records whose key cannot be computed are rejected.
    pub(crate) fn route(&mut self, port: usize, pieces: Vec<Data>, marks: &[(usize, Watermark)], rejected: &mut Vec<Rejected>) -> u64 {
        let (mut sent, mut start, mut m) = (0, 0, 0);
        let count = pieces.len();
        for (p, piece) in pieces.into_iter().enumerate() {
            let end = start + piece.len();
            let mut local = Vec::new();
            while m < marks.len() && (marks[m].0 <= end || p + 1 == count) {
                local.push((marks[m].0.saturating_sub(start).min(piece.len()), marks[m].1));
                m += 1;
            }
            sent += self.route_piece(port, piece, &local, rejected);
            start = end;
        }
        if m < marks.len() {
            self.route_piece(port, Data::default(), &marks[m..], rejected);
        }
        sent
    }

    fn route_piece(&mut self, port: usize, data: Data, marks: &[(usize, Watermark)], rejected: &mut Vec<Rejected>) -> u64 {
        if data.is_empty() && marks.is_empty() {
            return 0;
        }
        let targets: Vec<usize> = (0..self.edges.len()).filter(|&e| self.edges[e].port == port).collect();
        let mut sent = 0;
        let mut data = Some(data);
        for (k, &e) in targets.iter().enumerate() {
            let data = if k + 1 == targets.len() { data.take().expect("taken once") } else { data.as_ref().expect("present").clone() };
            let edge = &mut self.edges[e];
            let n = edge.senders.len();
            let mut failed = Vec::new();
            let buckets: Vec<Batch> = match &edge.exchange {
                Exchange::Hash { key, max_parallelism } if n > 1 => {
                    let owners = edge.owners.get_or_insert_with(|| Owners::new(*max_parallelism, n as u32));
                    match data {
                        Data::Rows(records) => hash_rows(key, owners, n, records, marks, &mut failed),
                        Data::Columns(columns) => hash_columns(key, owners, n, columns, marks, &mut failed),
                    }
                }
                _ => {
                    let t = edge.next;
                    if !data.is_empty() {
                        edge.next = (edge.next + 1) % n;
                    }
                    let mut buckets: Vec<Batch> = (0..n).map(|_| Batch::default()).collect();
                    let last = marks.last().map(|&(_, wm)| wm);
                    buckets[t] = Batch { data, watermarks: marks.to_vec() };
                    if let Some(last) = last {
                        for (i, b) in buckets.iter_mut().enumerate() {
                            if i != t {
                                mark(b, last);
                            }
                        }
                    }
                    buckets
                }
            };
            let total: usize = buckets.iter().map(Batch::len).sum();
            if k == 0 {
                sent = total as u64;
            }
            rejected.append(&mut failed);
            for (t, b) in buckets.into_iter().enumerate() {
                if !b.is_empty() {
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

    /// Messages queued in the output channels (sent, not yet taken), and their room in all.
    pub(crate) fn fill(&self) -> (u64, u64) {
        let senders = self.edges.iter().flat_map(|e| &e.senders);
        senders.fold((self.pending.len() as u64, 0), |(q, c), s| (q + (s.max_capacity() - s.capacity()) as u64, c + s.max_capacity() as u64))
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::expr::Expr;

    /// What each channel received: its records (as rows) and watermarks, in order.
    fn deliveries(pieces: Vec<Data>, marks: &[(usize, Watermark)], key: &str) -> (Vec<Vec<String>>, usize) {
        let (senders, mut receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| tokio::sync::mpsc::channel::<Message>(1000)).unzip();
        let exchange = Exchange::Hash { key: Expr::compile(key).unwrap(), max_parallelism: 128 };
        let mut outs = Outputs::new(vec![OutEdge { port: 0, exchange, senders, next: 0, owners: None }]);
        let mut rejected = Vec::new();
        outs.route(0, pieces, marks, &mut rejected);
        let got = receivers
            .iter_mut()
            .map(|rx| {
                let mut seen = Vec::new();
                while let Ok(m) = rx.try_recv() {
                    match m {
                        Message::Data(b) => {
                            let mut at = 0;
                            let records = b.records().into_owned();
                            for (n, wm) in &b.watermarks {
                                seen.extend(records[at..*n].iter().map(|r| r.to_json()));
                                seen.push(format!("wm {}", wm.0));
                                at = *n;
                            }
                            seen.extend(records[at..].iter().map(|r| r.to_json()));
                        }
                        Message::Watermark(wm) => seen.push(format!("wm {}", wm.0)),
                        other => seen.push(format!("{other:?}")),
                    }
                }
                seen
            })
            .collect();
        (got, rejected.len())
    }

    proptest! {
        /// A hash exchange sends every channel the same records and watermarks, in the same
        /// places, whether the output is rows or columns (in the same pieces).
        #[test]
        fn columns_and_rows_are_routed_alike(keys in proptest::collection::vec(-5i64..5, 1..40), cut in 0usize..40, mark_at in proptest::collection::vec(0usize..40, 0..4)) {
            let n = keys.len();
            let mut columns = Columns::new((0..n as u64).collect());
            columns.set(crate::value::Sym::new("k"), Column::Int(keys.clone()));
            // `10 / k` fails where k == 0: those records are rejected on both paths.
            let mut marks: Vec<(usize, Watermark)> = mark_at.iter().map(|&p| p.min(n)).collect::<std::collections::BTreeSet<_>>().into_iter().enumerate().map(|(i, p)| (p, Watermark(i as i64))).collect();
            marks.sort();
            let mut front = columns.clone();
            let back = front.split_off(cut.min(n));
            for key in ["k", "10 / k"] {
                let (by_rows, rejected_rows) = deliveries(vec![Data::Rows(front.to_records()), Data::Rows(back.to_records())], &marks, key);
                let (by_columns, rejected_columns) = deliveries(vec![Data::Columns(front.clone()), Data::Columns(back.clone())], &marks, key);
                prop_assert_eq!(&by_columns, &by_rows, "key {}", key);
                prop_assert_eq!(rejected_columns, rejected_rows);
            }
        }
    }
}
