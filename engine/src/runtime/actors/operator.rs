//! The operator actor: one transform or sink instance — input gate, watermarks, barrier
//! alignment, snapshots and restore, deferred work, timers.

use super::*;

pub(crate) struct OperatorActor {
    pub(crate) name: Arc<str>,
    pub(crate) subtask: u32,
    pub(crate) op: Box<dyn Operator>,
    pub(crate) outputs: Option<Outputs>,
    pub(crate) gate: GateControl,
    pub(crate) watermarks: WatermarkTracker,
    pub(crate) aligner: BarrierAligner,
    pub(crate) open_inputs: usize,
    pub(crate) collector: Collector,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shared: Shared,
    /// Failed (and reported it) or stopping because the job is failing: handles nothing more.
    pub(crate) failed: bool,
    pub(crate) octx: crate::operator::OperatorContext,
    /// The instance could not be made; reported once the actor runs.
    pub(crate) init_error: Option<OperatorError>,
    /// When the next processing-time tick is scheduled.
    pub(crate) next_tick: Option<i64>,
    /// State to restore (from a checkpoint).
    pub(crate) restore: Option<Restore>,
    /// When the first input of the current checkpoint was held for alignment.
    pub(crate) aligning_since: Option<std::time::Instant>,
    /// What to do once the output of the message being handled is routed.
    pub(crate) then: Vec<Then>,
    /// Deferred output ([`Collector::defer`]) is being awaited.
    pub(crate) busy: bool,
    /// A sink: measures source-to-sink latency.
    pub(crate) is_sink: bool,
    /// Names of the operator's side outputs (port 1, 2, ...).
    pub(crate) side_outputs: Vec<String>,
    /// A fault injected by the chaos harness (`RILL_FAULTS`).
    pub(crate) fault: Option<crate::faults::InjectedFault>,
    /// The snapshot files the next checkpoint builds on.
    pub(crate) chain: Chain,
    /// For each input channel, the component's input it belongs to (its place in `inputs:`).
    pub(crate) input_of: Vec<usize>,
    /// Restored as finished ([`Restore::Finished`]): it only waits for its inputs to end.
    pub(crate) ended_before: bool,
    /// The fields `redact:` keeps out here, and their values in the last batch, cut out of the
    /// message should the instance fail (a sink's error may quote a value).
    pub(crate) redact: Vec<crate::value::Sym>,
    pub(crate) secrets: Vec<String>,
}

/// Steps that follow the operator's output of one message, in order.
pub(crate) enum Then {
    Broadcast(Message),
    /// Poll every input again (a checkpoint's alignment ended).
    ReleaseInputs,
    /// Every input ended: the instance is done once its output is sent.
    Finish,
}

/// What an operator instance restores.
pub(crate) enum Restore {
    /// Its own state (same parallelism as the checkpoint).
    Own(OperatorState),
    /// Every instance's state (the parallelism changed): keep this instance's key groups.
    Rescaled(Vec<OperatorState>),
    /// It had finished before the checkpoint (so had everything before it): it is not opened,
    /// and ends once its inputs have.
    Finished,
}

/// One instance's entry of a checkpoint, read back: its snapshot chain (a full snapshot, then
/// deltas; one element for a snapshot kept inline), its timers and its managed keyed state.
struct SavedInstance {
    chain: Vec<Vec<u8>>,
    /// The chain's files, to continue it.
    files: Vec<StateFile>,
    timers: Vec<SavedTimer>,
    /// The states the runtime manages for the operator, by name.
    managed: Vec<(String, crate::state::Entries)>,
}

impl SavedInstance {
    fn read(saved: &OperatorState) -> Result<SavedInstance, OperatorError> {
        let (chain, files) = match &saved.snapshot {
            Some(s) => (s.read().map_err(OperatorError::new)?, if let Stored::Files(f) = s { f.clone() } else { Vec::new() }),
            None => (Vec::new(), Vec::new()),
        };
        let managed = match &saved.managed {
            Some(m) => decode_managed(&m.read().map_err(OperatorError::new)?.concat()).map_err(|e| OperatorError::new(format!("checkpoint keyed state: {e}")))?,
            None => Vec::new(),
        };
        Ok(SavedInstance { chain, files, timers: saved.timers.clone(), managed })
    }
}

/// The managed states' entries as bytes: per state, its name and its entries
/// ([`crate::state::entries_to_bytes`] inside the same framing).
fn encode_managed(states: &[(String, crate::state::Entries)]) -> Vec<u8> {
    let named: crate::state::Entries = states.iter().map(|(n, e)| (n.as_bytes().to_vec(), crate::state::entries_to_bytes(e))).collect();
    crate::state::entries_to_bytes(&named)
}

fn decode_managed(bytes: &[u8]) -> Result<Vec<(String, crate::state::Entries)>, String> {
    crate::state::entries_from_bytes(bytes)?
        .into_iter()
        .map(|(n, e)| Ok((String::from_utf8(n).map_err(|_| "a state name is not UTF-8")?, crate::state::entries_from_bytes(&e)?)))
        .collect()
}

/// An instance's current chain of snapshot files (with the bytes of each), and when to start a
/// new one.
#[derive(Default)]
pub(crate) struct Chain {
    files: Vec<(StateFile, u64)>,
}

impl Chain {
    /// Deltas after a full snapshot before the next full one.
    const MAX_DELTAS: usize = 8;

    fn from_restored(files: Vec<StateFile>) -> Chain {
        let size = |f: &StateFile| std::fs::metadata(&f.path).map(|m| m.len()).unwrap_or(0);
        Chain { files: files.into_iter().map(|f| (f.clone(), size(&f))).collect() }
    }

    /// Whether the next snapshot must be full: no base yet, too many deltas, or the deltas
    /// together as large as the base (restoring would read more than a new base costs).
    fn needs_full(&self) -> bool {
        let Some(((_, base), deltas)) = self.files.split_first() else { return true };
        deltas.len() >= Self::MAX_DELTAS || deltas.iter().map(|(_, b)| b).sum::<u64>() >= *base
    }

    fn stored(&self) -> Stored {
        Stored::Files(self.files.iter().map(|(f, _)| f.clone()).collect())
    }
}

/// Stands in for an operator whose factory failed.
pub(crate) struct Unmade;

impl Operator for Unmade {
    fn process(&mut self, _: Record, _: &mut Collector) -> Result<(), OperatorError> {
        Err(OperatorError::new("operator was not created"))
    }
}

impl HasOutputs for OperatorActor {
    fn outputs(&mut self) -> &mut Option<Outputs> {
        &mut self.outputs
    }

    fn counters(&self) -> &Counters {
        &self.counters
    }

    fn downstream_gone(&mut self, ctx: &mut Context<Self>) {
        tracing::debug!("`{}` instance {}: a receiver stopped; stopping", self.name, self.subtask);
        self.failed = true;
        ctx.stop();
    }
}

impl Actor for OperatorActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let Some(e) = self.init_error.take() {
            return self.fail(ctx, e);
        }
        if self.restore.take_if(|r| matches!(r, Restore::Finished)).is_some() {
            tracing::info!("`{}` instance {} had finished before the checkpoint; it ends with its inputs", self.name, self.subtask);
            self.ended_before = true;
            return;
        }
        let (op, octx) = (&mut self.op, &self.octx);
        let restore = self.restore.take();
        let restoring_since = restore.as_ref().map(|_| std::time::Instant::now());
        let mut timers: Vec<SavedTimer> = Vec::new();
        let mut chain_files: Vec<StateFile> = Vec::new();
        let r = guarded("open", || {
            op.open(octx)?;
            match &restore {
                None | Some(Restore::Finished) => {}
                Some(Restore::Own(saved)) => {
                    let s = SavedInstance::read(saved)?;
                    op.restore_chain(&s.chain)?;
                    octx.managed.restore(&s.managed, |_| true)?;
                    timers = s.timers;
                    chain_files = s.files;
                }
                Some(Restore::Rescaled(all)) => {
                    let (mut chains, mut managed) = (Vec::new(), Vec::new());
                    let (max, range) = (octx.max_parallelism, octx.key_groups.clone());
                    for saved in all {
                        let s = SavedInstance::read(saved)?;
                        chains.push(s.chain);
                        managed.extend(s.managed);
                        timers.extend(s.timers.into_iter().filter(|(_, _, k, _)| range.contains(&crate::exchange::KeyGroup::of_hash(k.stable_hash(), max).0)));
                    }
                    chains.retain(|c| !c.is_empty());
                    if !chains.is_empty() {
                        op.restore_rescaled_chains(&chains)?;
                    }
                    octx.managed.restore(&managed, |e| range.contains(&crate::state::entry_key_group(e)))?;
                }
            }
            Ok(())
        });
        let r = r.and_then(|()| {
            let rejected = self.op.take_rejected();
            self.shared.reject(&self.name, rejected, &self.counters)
        });
        // Deltas continue the restored chain (a rescaled instance starts a new one).
        self.chain = Chain::from_restored(chain_files);
        self.collector.timers().load(timers);
        if let Some(t) = restoring_since {
            tracing::info!("restored `{}` instance {} in {} ms", self.name, self.subtask, t.elapsed().as_millis());
        }
        if let Err(e) = r {
            self.fail(ctx, e);
        }
    }
}

impl OperatorActor {
    fn fail(&mut self, ctx: &mut Context<Self>, e: OperatorError) {
        if self.failed {
            return;
        }
        self.failed = true;
        let _ = self.shared.events.send(JobEvent::Failed {
            component: self.name.to_string(),
            subtask: self.subtask,
            message: crate::dead_letter::scrub(&e.message, &self.secrets),
            domain: e.domain,
        });
        ctx.stop();
    }

    /// Routes what the operator emitted, with the watermarks reached meanwhile, then takes the
    /// steps queued in `then`. Deferred output is awaited first (the actor handles nothing else
    /// meanwhile), so that everything leaves in the order the operator produced it.
    fn dispatch(&mut self, ctx: &mut Context<Self>) {
        let mut collected = self.collector.take();
        let then = std::mem::take(&mut self.then);
        if collected.deferred.is_empty() {
            return match self.route(collected) {
                Ok(()) => self.run_then(then, ctx),
                Err(e) => self.fail(ctx, e),
            };
        }
        self.busy = true;
        let works = collected.take_deferred();
        ctx.wait(futures::future::join_all(works).into_actor(self).map(move |results, act, ctx| {
            act.busy = false;
            match collected.splice(results).and_then(|()| act.route(collected)) {
                Ok(()) => act.run_then(then, ctx),
                Err(e) => act.fail(ctx, e),
            }
        }));
    }

    fn route(&mut self, collected: crate::operator::Collected) -> Result<(), OperatorError> {
        let crate::operator::Collected { main, side, mut rejected, marks, .. } = collected;
        if self.counters.tap.wanted() {
            self.counters.tap.offer(&main);
        }
        let outs = self.outputs.as_mut().expect("outputs present");
        let mut sent = outs.route(0, main, &marks, &mut rejected);
        if !side.is_empty() {
            let mut by_port: std::collections::BTreeMap<usize, Vec<Record>> = Default::default();
            for (port, r) in side {
                by_port.entry(port + 1).or_default().push(r);
            }
            for (port, recs) in by_port {
                if self.side_outputs.get(port - 1).is_some_and(|s| s == "late") {
                    Counters::add(&self.counters.late, recs.len() as u64);
                }
                if outs.reads(port) {
                    sent += outs.route(port, vec![Data::Rows(recs)], &[], &mut rejected);
                } else {
                    // Nothing reads this side output (`late`, say): its records are not lost
                    // but dead-lettered, and counted.
                    let side = self.side_outputs.get(port - 1).map(String::as_str).unwrap_or("?");
                    let error = format!("sent to `{}.{side}`, which no component reads (add `inputs: [{}.{side}]` to a sink to keep these)", self.name, self.name);
                    rejected.extend(recs.into_iter().map(|r| Rejected { input: RejectedInput::Record(r), error: error.clone(), position: None }));
                }
            }
        }
        if let Some(&(_, wm)) = marks.last() {
            outs.watermark_side_ports(wm);
        }
        Counters::add(&self.counters.records_out, sent);
        self.counters.set_fill(outs.fill());
        self.shared.reject(&self.name, rejected, &self.counters)
    }

    fn run_then(&mut self, then: Vec<Then>, ctx: &mut Context<Self>) {
        let mut finish = false;
        for step in then {
            match step {
                Then::Broadcast(m) => self.outputs.as_mut().expect("outputs present").broadcast(m),
                Then::ReleaseInputs => self.gate.release_all(),
                Then::Finish => finish = true,
            }
        }
        if finish {
            *self.counters.report.lock().expect("report lock") = self.op.report();
            after_flush(self, ctx, |act, ctx| {
                // It leaves no state: everything it had to say went out before its end of
                // stream (and a run resuming from a later checkpoint starts it finished).
                let _ = act.shared.events.send(JobEvent::Finished { component: act.name.to_string(), subtask: act.subtask, state: None, source: false });
                ctx.stop();
            });
        } else {
            after_flush(self, ctx, |_, _| {});
        }
    }

    fn handle_message(&mut self, input: usize, msg: Message, ctx: &mut Context<Self>) -> Result<(), OperatorError> {
        if self.ended_before {
            return self.ended_input(msg, ctx);
        }
        match msg {
            Message::Data(batch) => {
                self.watermarks.activate(input);
                if self.is_sink {
                    let now = crate::time::mono_micros();
                    let mut latency = self.counters.latency.lock().expect("latency lock");
                    match &batch.data {
                        Data::Rows(records) => records.iter().filter(|r| r.born != 0).for_each(|r| latency.record(now.saturating_sub(r.born))),
                        Data::Columns(c) if c.born != 0 => latency.record_n(now.saturating_sub(c.born), c.len() as u64),
                        Data::Columns(_) => {}
                    }
                }
                Counters::add(&self.counters.records_in, batch.len() as u64);
                Counters::add(&self.counters.batches, 1);
                if self.is_sink && self.counters.tap.wanted() {
                    self.counters.tap.offer(std::slice::from_ref(&batch.data));
                }
                if let Some(f) = &mut self.fault {
                    guarded("process", || {
                        f.before_batch(batch.len());
                        Ok(())
                    })?;
                }
                self.collector.reserve(batch.len());
                if !self.redact.is_empty() {
                    self.secrets = crate::dead_letter::secrets(&self.redact, &batch.data);
                }
                let Batch { data, watermarks } = batch;
                let side = self.input_of[input];
                // Where the operator's watermark moves inside the batch (the input's may move
                // while the combined one stays).
                let moves: Vec<(usize, i64)> = match watermarks.is_empty() {
                    true => Vec::new(),
                    false => {
                        let mut tracker = self.watermarks.clone();
                        watermarks.iter().filter_map(|(pos, wm)| tracker.update(input, *wm).map(|w| (*pos, w.0))).collect()
                    }
                };
                let whole = moves.is_empty() || match &data {
                    Data::Columns(columns) => {
                        let (op, out) = (&mut self.op, &mut self.collector);
                        guarded("process", || op.process_watermarked(side, columns, &moves, out))?
                    }
                    Data::Rows(_) => false,
                };
                if whole {
                    if moves.is_empty() {
                        let (op, out) = (&mut self.op, &mut self.collector);
                        guarded("process", || op.process_input(side, Batch { data, watermarks: Vec::new() }, out))?;
                    }
                    for (_, wm) in watermarks {
                        self.gate.set_watermark(input, wm.0);
                        if let Some(w) = self.watermarks.update(input, wm) {
                            self.advance_watermark(w)?;
                        }
                    }
                } else {
                    // Segment by segment, advancing the watermark between them. Cut from the
                    // back, so that each row is copied once (into its own segment).
                    let mut rest = data;
                    let mut segments = Vec::with_capacity(watermarks.len() + 1);
                    for (pos, _) in watermarks.iter().rev() {
                        let at = (*pos).min(rest.len());
                        segments.push(rest.split_off(at));
                    }
                    segments.push(rest);
                    let mut segments = segments.into_iter().rev();
                    let process = |this: &mut Self, segment: Option<Data>| match segment {
                        Some(segment) if !segment.is_empty() => {
                            let (op, out) = (&mut this.op, &mut this.collector);
                            guarded("process", || op.process_input(side, Batch { data: segment, watermarks: Vec::new() }, out))
                        }
                        _ => Ok(()),
                    };
                    process(self, segments.next())?;
                    for (_, wm) in watermarks {
                        self.gate.set_watermark(input, wm.0);
                        if let Some(w) = self.watermarks.update(input, wm) {
                            self.advance_watermark(w)?;
                        }
                        process(self, segments.next())?;
                    }
                }
            }
            Message::Watermark(wm) => {
                self.gate.set_watermark(input, wm.0);
                if let Some(wm) = self.watermarks.update(input, wm) {
                    self.advance_watermark(wm)?;
                }
            }
            Message::Idle => {
                if let Some(wm) = self.watermarks.set_idle(input) {
                    self.advance_watermark(wm)?;
                }
                if self.watermarks.all_idle() {
                    self.then.push(Then::Broadcast(Message::Idle));
                }
            }
            Message::Barrier(b) => match self.aligner.on_barrier(input, b) {
                Alignment::Hold => {
                    self.aligning_since.get_or_insert_with(std::time::Instant::now);
                    self.gate.hold(input)
                }
                Alignment::Complete(b) => self.complete_barrier(b)?,
            },
            Message::End => {
                self.open_inputs -= 1;
                if let Some(b) = self.aligner.on_end(input) {
                    self.complete_barrier(b)?;
                }
                if let Some(wm) = self.watermarks.close(input) {
                    self.advance_watermark(wm)?;
                }
                if self.open_inputs == 0 {
                    let (op, out) = (&mut self.op, &mut self.collector);
                    guarded("on_end", || op.on_end(out))?;
                    self.then.push(Then::Broadcast(Message::End));
                    self.then.push(Then::Finish);
                }
            }
        }
        self.dispatch(ctx);
        Ok(())
    }

    /// An instance restored as finished: its inputs, finished too, only end (a record would
    /// mean the checkpoint was not consistent, and is an error rather than lost).
    fn ended_input(&mut self, msg: Message, ctx: &mut Context<Self>) -> Result<(), OperatorError> {
        match msg {
            Message::Data(_) => {
                return Err(OperatorError::new(format!(
                    "a record reached `{}` instance {}, which had finished before the checkpoint this run resumed from",
                    self.name, self.subtask
                )))
            }
            Message::End => {
                self.open_inputs -= 1;
                if self.open_inputs == 0 {
                    self.then.push(Then::Broadcast(Message::End));
                    self.then.push(Then::Finish);
                }
            }
            Message::Watermark(_) | Message::Idle | Message::Barrier(_) => {}
        }
        self.dispatch(ctx);
        Ok(())
    }

    fn advance_watermark(&mut self, wm: Watermark) -> Result<(), OperatorError> {
        self.counters.watermark.set(wm.0);
        let (op, out) = (&mut self.op, &mut self.collector);
        for t in out.timers().due(crate::state::TimeDomain::Event, wm.0) {
            guarded("on_timer", || op.on_timer(t, out))?;
        }
        guarded("on_watermark", || op.on_watermark(wm, out))?;
        out.mark(op.output_watermark(wm));
        Ok(())
    }

    fn complete_barrier(&mut self, b: crate::message::Barrier) -> Result<(), OperatorError> {
        let (op, out) = (&mut self.op, &mut self.collector);
        guarded("before_barrier", || op.before_barrier(b.epoch, out))?;
        let full = self.chain.needs_full();
        let snapshot = guarded("snapshot", || op.snapshot_incremental(b.epoch, full))?;
        let timers = self.collector.timers().save();
        let epoch = b.epoch.0;
        let dir = self.shared.checkpoint_dir.clone().expect("snapshots are taken with checkpoints only");
        let (name, subtask) = (self.name.clone(), self.subtask);
        let write = |part: &str, bytes: &[u8]| -> Result<StateFile, OperatorError> {
            let file = crate::checkpoint::write_state_file(&dir, epoch, &format!("{name}{part}"), subtask, bytes)
                .map_err(|e| OperatorError::external(format!("writing checkpoint {epoch} state under {}: {e}", dir.display())))?;
            Ok(StateFile { file, path: std::path::PathBuf::new() })
        };
        let mut saved = OperatorState { timers, ..Default::default() };
        saved.snapshot = match snapshot {
            Some(Snapshot::Full(bytes)) if bytes.len() > crate::checkpoint::INLINE_LIMIT => {
                self.chain.files = vec![(write("", &bytes)?, bytes.len() as u64)];
                saved.written += bytes.len() as u64;
                Some(self.chain.stored())
            }
            Some(Snapshot::Delta(bytes)) => {
                if self.chain.files.is_empty() {
                    return Err(OperatorError::new("the operator returned a delta snapshot where a full one was asked for"));
                }
                self.chain.files.push((write("", &bytes)?, bytes.len() as u64));
                saved.written += bytes.len() as u64;
                Some(self.chain.stored())
            }
            // Small (or no) state: inline in the metadata, whole every time.
            Some(Snapshot::Full(bytes)) => {
                self.chain.files.clear();
                Some(Stored::inline(&bytes))
            }
            None => {
                self.chain.files.clear();
                None
            }
        };
        // The states made through the context: whole at every checkpoint, inline when small.
        if !self.octx.managed.is_empty() {
            let bytes = encode_managed(&self.octx.managed.snapshot()?);
            saved.managed = Some(if bytes.len() > crate::checkpoint::INLINE_LIMIT {
                saved.written += bytes.len() as u64;
                Stored::Files(vec![write(".managed", &bytes)?])
            } else {
                Stored::inline(&bytes)
            });
        }
        let _ = self.shared.events.send(JobEvent::Ack {
            epoch: b.epoch.0,
            component: self.name.to_string(),
            subtask: self.subtask,
            state: Some(SavedState::Operator(saved)),
            alignment_ms: self.aligning_since.take().map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
        });
        self.then.push(Then::Broadcast(Message::Barrier(b)));
        self.then.push(Then::ReleaseInputs);
        Ok(())
    }
}

impl Handler<Commit> for OperatorActor {
    type Result = ();
    fn handle(&mut self, Commit(epoch): Commit, ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        let op = &mut self.op;
        let r = guarded("notify_checkpoint_complete", || op.notify_checkpoint_complete(epoch)).and_then(|()| {
            let rejected = self.op.take_rejected();
            self.shared.reject(&self.name, rejected, &self.counters)
        });
        if let Err(e) = r {
            self.fail(ctx, e);
        }
    }
}

impl OperatorActor {
    /// Fires due processing-time timers, and arranges to be called when the next one is due.
    fn processing_timers(&mut self, ctx: &mut Context<Self>) -> Result<(), OperatorError> {
        if self.outputs.is_none() || self.busy {
            // Output is waiting for channel space or for deferred work; try again shortly.
            Self::timers_later(ctx, std::time::Duration::from_millis(1));
            return Ok(());
        }
        let now = crate::time::now_millis();
        let (op, out) = (&mut self.op, &mut self.collector);
        let due = out.timers().due(crate::state::TimeDomain::Processing, now);
        if !due.is_empty() {
            for t in due {
                guarded("on_timer", || op.on_timer(t, out))?;
            }
            self.dispatch(ctx);
        }
        if let Some(next) = self.collector.timers().next_processing() {
            if self.next_tick.is_none_or(|t| next < t) {
                self.next_tick = Some(next);
                Self::timers_later(ctx, std::time::Duration::from_millis((next - now).max(1) as u64));
            }
        }
        Ok(())
    }

    /// Runs [`processing_timers`](Self::processing_timers) after `wait`.
    fn timers_later(ctx: &mut Context<Self>, wait: std::time::Duration) {
        ctx.run_later(wait, |act, ctx| {
            act.next_tick = None;
            if !act.failed {
                if let Err(e) = act.processing_timers(ctx) {
                    act.fail(ctx, e);
                }
            }
        });
    }
}

impl StreamHandler<(usize, Message)> for OperatorActor {
    fn handle(&mut self, (input, msg): (usize, Message), ctx: &mut Context<Self>) {
        if self.failed {
            return;
        }
        let ended = matches!(msg, Message::End) && self.open_inputs == 1;
        let began = std::time::Instant::now();
        let handled = self.handle_message(input, msg, ctx);
        Counters::add(&self.counters.busy_us, began.elapsed().as_micros() as u64);
        if let Err(e) = handled {
            return self.fail(ctx, e);
        }
        if !ended && self.collector.timers().next_processing().is_some() {
            if let Err(e) = self.processing_timers(ctx) {
                self.fail(ctx, e);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Context<Self>) {
        if self.gate.aborted() {
            // An upstream instance stopped without ending its stream: the job is failing. Stop
            // without `on_end`, so that nothing is finished or published on partial input.
            tracing::debug!("`{}` instance {}: an input stopped before its end; stopping", self.name, self.subtask);
            self.failed = true;
            ctx.stop();
        }
        // Otherwise every input ended; `End` handling already finished the actor.
    }
}
