//! The source actor: polls its source, stamps time, routes batches, injects barriers.

use super::*;

pub(crate) struct SourceActor {
    pub(crate) ctx: SourceContext,
    pub(crate) source: Option<Box<dyn Source>>,
    pub(crate) make: crate::registry::MakeSource,
    pub(crate) outputs: Option<Outputs>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shared: Shared,
    pub(crate) stop_requested: bool,
    pub(crate) done: bool,
    pub(crate) time: crate::time::Timestamper,
    /// Watermarks of every instance of every event-time source of the job (alignment).
    pub(crate) siblings: Arc<Vec<std::sync::atomic::AtomicI64>>,
    /// This instance's place in `siblings`.
    pub(crate) slot: usize,
    /// How far this instance's last poll moved its watermark (event time).
    pub(crate) last_span: i64,
    /// Where to resume from (restoring a checkpoint).
    pub(crate) restore: Option<SourceRestore>,
    /// Positions recorded at barriers whose checkpoint is not complete yet, by epoch.
    pub(crate) positions: std::collections::BTreeMap<u64, serde_json::Value>,
    /// Where it had ended, when restored as ended ([`SourceRestore::Finished`]).
    pub(crate) ended_at: Option<serde_json::Value>,
}

/// What a source instance resumes from.
pub(crate) enum SourceRestore {
    /// Its own position in the checkpoint.
    Own(serde_json::Value),
    /// Every instance's position: the checkpoint was taken at another parallelism.
    Rescaled(Vec<serde_json::Value>),
    /// It had finished before the checkpoint, at this position: it ends at once.
    Finished(serde_json::Value),
}

/// Checkpoint `barrier`: the source records its position and sends the barrier downstream.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Inject(pub(crate) crate::message::Barrier);

/// Checkpoint `epoch` is complete.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Commit(pub(crate) crate::message::Epoch);

impl SourceActor {
    fn publish_watermark(&self, wm: i64) {
        self.siblings[self.slot].store(wm, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this instance is too far ahead of the slowest event-time source instance (of
    /// this source or another) to read more now: by more
    /// than `max_drift` plus what its last poll covered, so that instances whose batches each
    /// span more than `max_drift` of event time run side by side (one poll apart) instead of
    /// taking turns (W1 at p = 2: 4 s of event time per batch; taking turns made it slower
    /// than p = 1). Two polls' worth held a join's rows of the side ahead for twice as long and
    /// made the join 25 % slower, and gained W1 nothing.
    fn ahead(&self) -> bool {
        let Some(drift) = self.time.max_drift() else { return false };
        if self.siblings.len() < 2 {
            return false;
        }
        let slowest = self.siblings.iter().map(|w| w.load(std::sync::atomic::Ordering::Relaxed)).min().unwrap_or(i64::MIN);
        too_far_ahead(self.time.emitted(), slowest, drift, self.last_span)
    }
}

/// Whether an instance at watermark `mine`, whose last poll moved it by `span`, is ahead of the
/// slowest sibling (`slowest`; `i64::MIN`: one has not started) by more than it may be.
fn too_far_ahead(mine: i64, slowest: i64, drift: i64, span: i64) -> bool {
    slowest != i64::MIN && mine > slowest.saturating_add(drift).saturating_add(span)
}

#[derive(Message)]
#[rtype(result = "()")]
struct Step;

/// Asks a source to stop at its next poll (Ctrl-C): it then ends its stream as if its input had
/// ended, so everything downstream drains and sinks flush.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Stop;

impl HasOutputs for SourceActor {
    fn outputs(&mut self) -> &mut Option<Outputs> {
        &mut self.outputs
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn downstream_gone(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!("source `{}` instance {}: a receiver stopped; stopping", self.ctx.name, self.ctx.subtask);
        self.done = true;
        self.publish_watermark(i64::MAX);
        ctx.stop();
    }
}

impl Actor for SourceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(SourceRestore::Finished(position)) = self.restore.take_if(|r| matches!(r, SourceRestore::Finished(_))) {
            tracing::info!("source `{}` instance {} had ended before the checkpoint; it ends at once", self.ctx.name, self.ctx.subtask);
            self.ended_at = Some(position);
            return self.finish(ctx);
        }
        let make = self.make.clone();
        let sctx = self.ctx.clone();
        let restore = self.restore.take();
        let opened = guarded("open", || {
            let mut s = make(&sctx)?;
            s.open(&sctx)?;
            match &restore {
                Some(SourceRestore::Own(pos)) => s.restore(pos)?,
                Some(SourceRestore::Rescaled(all)) => s.restore_rescaled(all)?,
                None | Some(SourceRestore::Finished(_)) => {}
            }
            Ok(s)
        });
        match opened {
            Ok(s) => {
                self.source = Some(s);
                ctx.notify(Step);
            }
            Err(e) => self.fail(ctx, e),
        }
    }
}

impl SourceActor {
    fn fail(&mut self, ctx: &mut Context<Self>, e: OperatorError) {
        self.done = true;
        self.publish_watermark(i64::MAX);
        let _ = self.shared.events.send(JobEvent::Failed {
            component: self.ctx.name.to_string(),
            subtask: self.ctx.subtask,
            message: e.message,
            domain: e.domain,
        });
        ctx.stop();
    }

    fn finish(&mut self, ctx: &mut Context<Self>) {
        tracing::info!(
            "source `{}` instance {} ended after {} records",
            self.ctx.name,
            self.ctx.subtask,
            self.counters.records_in.load(std::sync::atomic::Ordering::Relaxed)
        );
        self.done = true;
        self.publish_watermark(i64::MAX);
        // Where it ended stands for it in the checkpoints taken while the rest of the job runs.
        let state = self.source.as_ref().map(|s| s.position()).or_else(|| self.ended_at.take()).map(SavedState::Source);
        let outs = self.outputs.as_mut().expect("outputs present");
        outs.broadcast(Message::Watermark(Watermark::MAX));
        outs.broadcast(Message::End);
        after_flush(self, ctx, |act, ctx| {
            let _ = act.shared.events.send(JobEvent::Finished { component: act.ctx.name.to_string(), subtask: act.ctx.subtask, state, source: true });
            ctx.stop();
        });
    }
}

impl Handler<Step> for SourceActor {
    type Result = ();

    fn handle(&mut self, _: Step, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        if self.outputs.is_none() {
            // A flush is still waiting for channel space: come back when it may be done.
            ctx.notify_later(Step, std::time::Duration::from_micros(100));
            return;
        }
        if self.stop_requested {
            return self.finish(ctx);
        }
        if self.ahead() {
            ctx.notify_later(Step, std::time::Duration::from_micros(200));
            return;
        }
        let mut out = SourceOutput::new(self.ctx.batch_size);
        let source = self.source.as_mut().expect("opened");
        let began = std::time::Instant::now();
        let status = guarded("poll", || source.poll(&mut out));
        Counters::add(&self.counters.busy_us, began.elapsed().as_micros() as u64);
        if let Some(p) = source.progress() {
            self.counters.progress_done.store(p.done, std::sync::atomic::Ordering::Relaxed);
            self.counters.progress_total.store(p.total, std::sync::atomic::Ordering::Relaxed);
        }
        let status = match status {
            Ok(s) => s,
            Err(e) => return self.fail(ctx, e),
        };
        let mut pieces = out.take();
        let mut rejected = std::mem::take(&mut out.rejected);
        let total: usize = pieces.iter().map(Data::len).sum();
        self.time.splits(&out.splits, &out.finished_splits, total);
        if !pieces.is_empty() {
            let (origin, born) = (self.ctx.source_index, crate::time::mono_micros());
            let mut count = 0;
            for piece in &mut pieces {
                count += piece.len();
                match piece {
                    Data::Rows(records) => records.iter_mut().for_each(|r| {
                        r.origin.source = origin;
                        r.born = born;
                    }),
                    Data::Columns(c) => {
                        c.source = origin;
                        c.born = born;
                    }
                }
            }
            Counters::add(&self.counters.records_in, count as u64);
            Counters::add(&self.counters.batches, 1);
            let before = self.time.emitted();
            let marks = self.time.stamp(&mut pieces, &mut rejected);
            if let Some(&(_, wm)) = marks.last() {
                if before != i64::MIN {
                    self.last_span = wm.0.saturating_sub(before);
                }
                self.publish_watermark(wm.0);
                self.counters.watermark.set(wm.0);
            }
            // What the poll and the stamping rejected is written before the records go on, so
            // that a source's dead letters come before those of the operators after it.
            if let Err(e) = self.shared.reject(&self.ctx.name, std::mem::take(&mut rejected), &self.counters) {
                return self.fail(ctx, e);
            }
            if self.counters.tap.wanted() {
                self.counters.tap.offer(&pieces);
            }
            let outs = self.outputs.as_mut().expect("outputs present");
            let sent = outs.route(0, pieces, &marks, &mut rejected);
            Counters::add(&self.counters.records_out, sent);
            self.counters.set_fill(outs.fill());
        }
        if let Err(e) = self.shared.reject(&self.ctx.name, rejected, &self.counters) {
            return self.fail(ctx, e);
        }
        let outs = self.outputs.as_mut().expect("outputs present");
        if let Some(wm) = self.time.watermark() {
            outs.broadcast(Message::Watermark(wm));
        }
        if (out.idle && self.time.force_idle()) || (matches!(status, SourceStatus::Idle(_)) && self.time.became_idle()) {
            outs.broadcast(Message::Idle);
            self.publish_watermark(i64::MAX);
        }
        match status {
            SourceStatus::Ready => after_flush(self, ctx, |_, ctx| ctx.notify(Step)),
            SourceStatus::Idle(d) => after_flush(self, ctx, move |_, ctx| {
                ctx.notify_later(Step, d);
            }),
            SourceStatus::Finished => after_flush(self, ctx, |act, ctx| act.finish(ctx)),
        }
    }
}

impl Handler<Inject> for SourceActor {
    type Result = ();
    fn handle(&mut self, Inject(barrier): Inject, ctx: &mut Context<Self>) {
        if self.done {
            return;
        }
        if self.outputs.is_none() {
            ctx.notify_later(Inject(barrier), std::time::Duration::from_micros(100));
            return;
        }
        let position = self.source.as_ref().map(|s| s.position());
        if let Some(p) = &position {
            self.positions.insert(barrier.epoch.0, p.clone());
        }
        let position = position.map(SavedState::Source);
        let _ = self.shared.events.send(JobEvent::Ack {
            epoch: barrier.epoch.0,
            component: self.ctx.name.to_string(),
            subtask: self.ctx.subtask,
            state: position,
            alignment_ms: 0,
        });
        self.outputs.as_mut().expect("outputs present").broadcast(Message::Barrier(barrier));
        after_flush(self, ctx, |_, _| {});
    }
}

impl Handler<Commit> for SourceActor {
    type Result = ();
    fn handle(&mut self, Commit(epoch): Commit, ctx: &mut Context<Self>) {
        let later = self.positions.split_off(&(epoch.0 + 1));
        let done = std::mem::replace(&mut self.positions, later);
        let (Some((_, position)), Some(source)) = (done.into_iter().next_back(), self.source.as_mut()) else { return };
        if let Err(e) = guarded("checkpoint_complete", || source.checkpoint_complete(&position)) {
            self.fail(ctx, e);
        }
    }
}

impl Handler<Stop> for SourceActor {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        if !self.stop_requested && !self.done {
            self.stop_requested = true;
            ctx.notify(Step);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::too_far_ahead;

    #[test]
    fn an_instance_pauses_only_beyond_max_drift_plus_one_poll() {
        // Polls of 100 ms of event time: 2 s + 100 ms ahead is allowed, more is not.
        assert!(!too_far_ahead(12_100, 10_000, 2_000, 100));
        assert!(too_far_ahead(12_101, 10_000, 2_000, 100));
        // Without drift (the default): one poll ahead.
        assert!(!too_far_ahead(10_100, 10_000, 0, 100));
        assert!(too_far_ahead(10_101, 10_000, 0, 100));
        // Polls of 4 s each (W1 at p = 2): one of them ahead still runs side by side.
        assert!(!too_far_ahead(12_000, 8_000, 0, 4_000));
        assert!(too_far_ahead(12_001, 8_000, 0, 4_000));
        // A sibling that has not started yet holds nobody back; the end of time saturates.
        assert!(!too_far_ahead(i64::MAX, i64::MIN, 2_000, 100));
        assert!(!too_far_ahead(i64::MAX, i64::MAX - 1, 2_000, i64::MAX));
    }
}
