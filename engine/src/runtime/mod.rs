//! Runs a [`JobPlan`] on actix actors.
//!
//! Every operator instance is an actor. Instances are spread over `threads` arbiters (event
//! loops, one OS thread each): instance `s` of every component runs on arbiter `s % threads`, so
//! a forward-connected chain of instances stays on one thread. Data moves over bounded channels
//! (capacity [`RunOptions::channel_capacity`] batches), which is what bounds memory and carries
//! backpressure from a slow sink back to the sources.

mod actors;
pub mod coordinator;
pub mod alignment;
mod input;
mod output;
pub mod watermarks;

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;

use crate::checkpoint::SavedState;
use crate::config::Role;
use crate::dead_letter::DeadLetter;
use crate::exchange::{key_group_range, Exchange};
use crate::metrics::{ComponentSummary, JobMetrics};
use crate::operator::{OperatorContext, SinkOperator};
use crate::plan::{JobPlan, NodeSpec};
use crate::live::{Control, JobState};
use crate::runtime::actors::{Commit, Inject, OperatorActor, Shared, SourceActor, Stop, Unmade};
use crate::runtime::input::InputGate;
use crate::runtime::output::{OutEdge, Outputs};
use crate::runtime::watermarks::WatermarkTracker;
use crate::source::SourceContext;

/// How to run a job.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Event-loop threads; default: the number of cores (at most one per instance).
    pub threads: Option<usize>,
    /// Capacity of each channel, in batches.
    pub channel_capacity: usize,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Stop cleanly on Ctrl-C (sources end, everything drains, sinks flush).
    pub handle_ctrl_c: bool,
    /// Resume from this checkpoint.
    pub restore: Option<crate::checkpoint::Checkpoint>,
    /// The job's folders, already locked by the caller (who had to look at its checkpoints
    /// before the run); [`run`] takes the lock itself if this is `None`.
    pub lock: Option<Arc<crate::lock::JobLock>>,
    /// The status the HTTP API serves, and the requests it passes on.
    pub live: Option<Arc<crate::live::Live>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { threads: None, channel_capacity: 4, progress: false, handle_ctrl_c: true, restore: None, lock: None, live: None }
    }
}

/// What a finished job reports.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub components: Vec<ComponentSummary>,
    pub dead_letters: u64,
    pub dead_letter_output: String,
    pub elapsed: Duration,
    /// Stopped by Ctrl-C rather than by its sources ending.
    pub interrupted: bool,
    /// Ctrl-C on a checkpointed job: the checkpoint it stopped at (everything up to it is
    /// committed; the next run resumes from it). `None` with `interrupted`: nothing after the
    /// last checkpoint was committed (or, without checkpoints, the job drained).
    pub stopped_at: Option<u64>,
    /// Stopped after taking this savepoint (folder).
    pub savepoint: Option<std::path::PathBuf>,
    /// Restarts after failures (with `restart:`).
    pub restarts: u32,
    /// Checkpoints completed by this run.
    pub checkpoints: CheckpointStats,
}

/// Checkpoint metrics of one run.
#[derive(Debug, Clone, Default)]
pub struct CheckpointStats {
    pub completed: u64,
    pub last_duration_ms: u64,
    pub max_duration_ms: u64,
    /// Longest time any instance held inputs waiting for barriers.
    pub max_alignment_ms: u64,
    pub last_bytes: u64,
}

/// Why a job failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RunError {
    #[error("cannot start the job: {0}")]
    Setup(String),
    #[error("component `{component}` (instance {subtask}) failed ({}{}): {message}", domain.describe(), if domain.retryable() { "" } else { ", not retried" })]
    Failed { component: String, subtask: u32, message: String, domain: crate::operator::ErrorDomain },
    #[error("checkpoints are failing: {0}")]
    Checkpoints(String),
}

impl RunError {
    /// Whether running again may succeed (what `restart:` retries).
    pub fn retryable(&self) -> bool {
        match self {
            RunError::Setup(_) => false,
            RunError::Failed { domain, .. } => domain.retryable(),
            RunError::Checkpoints(_) => true,
        }
    }
}

/// How a run ended (when it did not fail).
enum Outcome {
    Finished,
    /// Ctrl-C; at this checkpoint, if it took a final one.
    Interrupted(Option<u64>),
    Savepoint(std::path::PathBuf),
}

/// Why a checkpointed job stops at its next complete checkpoint.
#[derive(Clone, Copy, PartialEq)]
enum StopAt {
    /// `rill savepoint` (SIGUSR1): kept regardless of `retain`.
    Savepoint,
    /// Ctrl-C: a regular checkpoint.
    CtrlC,
}

pub(crate) enum JobEvent {
    /// An instance's input ended and it sent everything on; `state` is what it leaves (a
    /// source's final position), standing for it in the checkpoints still to come.
    Finished { component: String, subtask: u32, state: Option<SavedState>, source: bool },
    Failed { component: String, subtask: u32, message: String, domain: crate::operator::ErrorDomain },
    /// An instance took its part of checkpoint `epoch`, after holding inputs for `alignment_ms`.
    Ack { epoch: u64, component: String, subtask: u32, state: Option<SavedState>, alignment_ms: u64 },
}

/// Runs the job to completion (bounded sources ended, or Ctrl-C). With `restart:`, a failure
/// restarts the job from its latest complete checkpoint (from the beginning without
/// checkpoints), waiting `backoff`, then twice as long each time, up to `max_attempts`
/// restarts; then the job fails with the last cause.
///
/// The job holds its work and checkpoint folders ([`crate::lock`]) until it returns: a second
/// run on the same folders fails with [`RunError::Setup`].
pub fn run(plan: JobPlan, mut opts: RunOptions) -> Result<JobReport, RunError> {
    if opts.lock.is_none() {
        let ck = plan.config.checkpoint.as_ref().map(|c| c.dir.as_path());
        let lock = crate::lock::JobLock::acquire(&plan.config.work_dir, ck).map_err(|e| RunError::Setup(e.to_string()))?;
        opts.lock = Some(Arc::new(lock));
    }
    let policy = plan.config.restart.clone();
    let mut attempt = 0u32;
    let live = opts.live.clone();
    loop {
        match run_once(plan.clone(), opts.clone()) {
            Err(e @ (RunError::Failed { .. } | RunError::Checkpoints(_))) if e.retryable() && policy.as_ref().is_some_and(|p| attempt < p.max_attempts) => {
                if let Some(l) = &live {
                    l.failed(&e.to_string(), true);
                }
                let p = policy.as_ref().expect("checked");
                let wait = p.backoff.saturating_mul(1 << attempt.min(20));
                attempt += 1;
                eprintln!("{e}
restarting ({attempt} of {}) in {} ms", p.max_attempts, wait.as_millis());
                std::thread::sleep(wait);
                opts.restore = match &plan.config.checkpoint {
                    Some(ck) => {
                        let (latest, skipped) = crate::checkpoint::latest(&ck.dir).map_err(RunError::Setup)?;
                        for s in skipped {
                            eprintln!("skipping checkpoint {}: {}", s.epoch, s.reason);
                        }
                        latest
                    }
                    None => None,
                };
            }
            r => {
                if let Some(l) = &live {
                    match &r {
                        Ok(_) => l.set_state(JobState::Finished),
                        Err(e) => l.failed(&e.to_string(), false),
                    }
                }
                return r.map(|mut report| {
                    report.restarts = attempt;
                    report
                });
            }
        }
    }
}

fn run_once(plan: JobPlan, opts: RunOptions) -> Result<JobReport, RunError> {
    let cfg = &plan.config;
    std::fs::create_dir_all(&cfg.work_dir)
        .map_err(|e| RunError::Setup(format!("cannot create the work directory {}: {e}", cfg.work_dir.display())))?;
    let dead_letter = Arc::new(
        DeadLetter::open(&cfg.dead_letter)
            .map_err(|e| RunError::Setup(format!("cannot open the dead-letter output {}: {e}", cfg.dead_letter.describe())))?
            .redacting(cfg.redacted_fields()),
    );
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let instances: usize = plan.nodes.iter().map(|n| n.parallelism as usize).sum();
    let threads = opts.threads.unwrap_or(cores.min(instances)).max(1);
    let metrics = JobMetrics::default();
    let started = Instant::now();
    if let Some(l) = &opts.live {
        l.running(&metrics, &dead_letter);
    }
    let system = actix::System::new();
    let dl = dead_letter.clone();
    let m = metrics.clone();
    let mut stats = CheckpointStats::default();
    let result = system.block_on(drive(plan, opts, threads, dl, m, &mut stats));
    dead_letter.flush();
    let outcome = result?;
    Ok(JobReport {
        components: metrics.summary(),
        dead_letters: dead_letter.count(),
        dead_letter_output: dead_letter.description.clone(),
        elapsed: started.elapsed(),
        checkpoints: stats,
        interrupted: matches!(outcome, Outcome::Interrupted(_)),
        stopped_at: match outcome {
            Outcome::Interrupted(at) => at,
            _ => None,
        },
        savepoint: match outcome {
            Outcome::Savepoint(p) => Some(p),
            _ => None,
        },
        restarts: 0,
    })
}

async fn drive(
    plan: JobPlan,
    opts: RunOptions,
    threads: usize,
    dead_letter: Arc<DeadLetter>,
    metrics: JobMetrics,
    stats: &mut CheckpointStats,
) -> Result<Outcome, RunError> {
    // Listening before anything runs: a signal that comes once the job is visible (it has
    // opened a file or a socket) is never missed.
    use tokio::signal::unix::{signal, SignalKind};
    let listen = |kind: SignalKind, name: &str| signal(kind).map_err(|e| RunError::Setup(format!("cannot listen for {name}: {e}")));
    let mut interrupts = if opts.handle_ctrl_c { Some(listen(SignalKind::interrupt(), "Ctrl-C")?) } else { None };
    let mut savepoint_signal = listen(SignalKind::user_defined1(), "SIGUSR1")?;
    let instances: usize = plan.nodes.iter().map(|n| n.parallelism as usize).sum();
    tracing::info!(
        "starting job `{}`: {} components, {instances} instances on {threads} event-loop threads; {}",
        plan.config.name,
        plan.nodes.len(),
        match (&plan.config.checkpoint, &opts.restore) {
            (Some(_), Some(cp)) => format!("resuming from checkpoint {}", cp.epoch),
            (Some(ck), None) => format!("checkpoints every {:?} in {}", ck.interval, ck.dir.display()),
            (None, _) => "no checkpoints".into(),
        }
    );
    let arbiters: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let sources = plan.sources();
    let shared = Shared {
        events: events_tx,
        dead_letter,
        source_names: Arc::new(sources.iter().map(|&i| plan.nodes[i].name.clone()).collect()),
        checkpoint_dir: plan.config.checkpoint.as_ref().map(|c| c.dir.clone()),
    };
    let cfg = &plan.config;
    if let Some(ck) = &cfg.checkpoint {
        // Half-written checkpoints of an earlier run are of no use.
        crate::checkpoint::discard_staging(&ck.dir, None);
    }
    let restore_epoch = opts.restore.as_ref().map(|c| c.epoch).unwrap_or(0);
    let state = crate::state::StateBackend::open_fresh(&cfg.work_dir.join("state"), cfg.state_cache_entries, cfg.max_parallelism)
        .map_err(RunError::Setup)?;

    let Started { sources: source_addrs, operators: operator_addrs, instances: actors } = start_actors(&plan, &opts, &arbiters, &shared, &state, &metrics);
    debug_assert!(plan.nodes.iter().filter(|n| n.role == Role::Source).count() > 0);

    let mut finished = 0usize;
    let mut interrupted = false;
    let mut progress = tokio::time::interval(Duration::from_secs(1));
    progress.tick().await;
    let started = Instant::now();
    let checkpointing = cfg.checkpoint.clone();
    let mut ticker = tokio::time::interval(checkpointing.as_ref().map(|c| c.interval).unwrap_or(Duration::from_secs(3600)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    let source_instances = plan.nodes.iter().filter(|n| n.role == Role::Source).map(|n| n.parallelism as usize).sum();
    let mut coordinator = coordinator::Coordinator::new(actors, source_instances, restore_epoch);
    // Instances that finished: they take no more barriers or commits.
    let mut gone: std::collections::HashSet<(String, u32)> = Default::default();
    let mut failures = coordinator::FailureCounter::new(checkpointing.as_ref().map(|c| c.tolerable_failed_checkpoints).unwrap_or(0));
    let mut max_alignment = 0u64;
    let mut stop: Option<StopAt> = None;
    let live = opts.live.clone();
    let set_state = |state: JobState| {
        if let Some(l) = &live {
            l.set_state(state);
        }
    };
    let mut requests = live.as_ref().and_then(|l| l.take_requests());
    // The first Ctrl-C, or a stop asked for through the HTTP API.
    macro_rules! begin_stop {
        ($again:expr) => {{
            interrupted = true;
            set_state(JobState::Stopping);
            match &checkpointing {
                // Committed output is never taken back: stop at a final checkpoint rather
                // than flush partial results that the next run, resuming from an older
                // checkpoint, would retract.
                Some(_) if coordinator.can_checkpoint() => {
                    eprintln!("\nstopping: taking a final checkpoint, then stopping; `rill run` resumes from it ({})", $again);
                    stop.get_or_insert(StopAt::CtrlC);
                    ticker.reset_immediately();
                }
                Some(_) => {
                    eprintln!("\nstopping: every source has ended, so no further checkpoint can start; nothing after the last one is committed, and `rill run` resumes from it");
                    break Ok(Outcome::Interrupted(None));
                }
                None => {
                    eprintln!("\nstopping: sources end now, everything in flight is processed and sinks are flushed ({})", $again);
                    // Not awaited here: a source waiting for channel space takes the
                    // message only then, and the loop must stay free for a second Ctrl-C.
                    for (_, a) in source_addrs.clone() {
                        actix::spawn(async move {
                            let _ = a.send(Stop).await;
                        });
                    }
                }
            }
        }};
    }
    let result = loop {
        tokio::select! {
            ev = events.recv() => {
                let done = match ev {
                    Some(JobEvent::Finished { component, subtask, state, source }) => {
                        finished += 1;
                        if finished == actors {
                            break Ok(if interrupted { Outcome::Interrupted(None) } else { Outcome::Finished });
                        }
                        gone.insert((component.clone(), subtask));
                        let last = crate::checkpoint::InstanceState { component, subtask, state, finished: true };
                        if checkpointing.is_some() { coordinator.instance_finished(last, source, Instant::now()) } else { None }
                    }
                    Some(JobEvent::Ack { epoch: e, component, subtask, state, alignment_ms }) => {
                        if coordinator.in_flight() == Some(e) {
                            max_alignment = max_alignment.max(alignment_ms);
                        }
                        coordinator.ack(e, crate::checkpoint::InstanceState { component, subtask, state, finished: false }, Instant::now())
                    }
                    Some(JobEvent::Failed { component, subtask, message, domain }) => break Err(RunError::Failed { component, subtask, message, domain }),
                    None => break Err(RunError::Setup("every actor stopped without reporting".into())),
                };
                if let Some(done) = done {
                    let ck = checkpointing.as_ref().expect("acks only with checkpoints");
                    let e = done.epoch;
                    match write_checkpoint(ck, &cfg.name, done, stop == Some(StopAt::Savepoint), std::mem::take(&mut max_alignment), stats, &mut failures, live.as_deref()) {
                        Err(err) => break Err(err),
                        Ok(false) => {}
                        Ok(true) => {
                            // Stopping here: publish up to this checkpoint, then stop where we
                            // are; nothing after it is committed, and the next run resumes
                            // from it (Flink's stop without drain).
                            commit(operator_addrs.iter().filter(|(id, _)| !gone.contains(id)).map(|(_, a)| a), e, stop.is_some()).await;
                            for (_, a) in source_addrs.iter().filter(|(id, _)| !gone.contains(id)) {
                                if a.try_send(actors::Commit(crate::message::Epoch(e))).is_err() {
                                    tracing::warn!("a source instance did not take the completion of checkpoint {e}; it hears of the next one");
                                }
                            }
                            if let Some(why) = stop {
                                break Ok(match why {
                                    StopAt::Savepoint => Outcome::Savepoint(ck.dir.join(format!("chk-{e}"))),
                                    StopAt::CtrlC => Outcome::Interrupted(Some(e)),
                                });
                            }
                        }
                    }
                }
            },
            _ = next_interrupt(&mut interrupts) => {
                if interrupted {
                    eprintln!("aborted");
                    std::process::exit(130);
                }
                begin_stop!("Ctrl-C again to abort");
            }
            Some(request) = next_request(&mut requests) => match request {
                Control::Savepoint if checkpointing.is_some() && stop != Some(StopAt::Savepoint) && coordinator.can_checkpoint() => {
                    eprintln!("savepoint requested (HTTP API): taking it, then stopping");
                    stop = Some(StopAt::Savepoint);
                    set_state(JobState::Stopping);
                    ticker.reset_immediately();
                }
                Control::Savepoint => tracing::warn!("a savepoint was requested, but none can be taken now"),
                Control::Stop { checkpoint: false } if checkpointing.is_some() => {
                    eprintln!("stop requested (HTTP API), without a final checkpoint: stopping now; nothing after the last complete checkpoint is committed, and `rill run` resumes from it");
                    break Ok(Outcome::Interrupted(None));
                }
                Control::Stop { .. } if !interrupted => {
                    begin_stop!("a stop requested with the HTTP API");
                }
                Control::Stop { .. } => {}
            },
            _ = progress.tick(), if opts.progress => print_progress(&metrics, started.elapsed()),
            _ = savepoint_signal.recv(), if checkpointing.is_some() && stop != Some(StopAt::Savepoint) => {
                eprintln!("savepoint requested: taking it, then stopping");
                stop = Some(StopAt::Savepoint);
                set_state(JobState::Stopping);
            }
            _ = ticker.tick(), if checkpointing.is_some() => {
                let ck = checkpointing.as_ref().expect("checked");
                let trigger = coordinator.trigger(Instant::now(), ck.timeout);
                if let Some(expired) = coordinator.take_expired() {
                    let cause = format!("not complete within checkpoint.timeout ({:?})", ck.timeout);
                    if let Some(l) = &live {
                        l.checkpoint_failed(expired, &cause);
                    }
                    if let Err(msg) = failures.failed(expired, &cause) {
                        break Err(RunError::Checkpoints(msg));
                    }
                }
                let coordinator::Trigger::Start(epoch) = trigger else { continue };
                max_alignment = 0;
                let barrier = crate::message::Barrier { epoch: crate::message::Epoch(epoch), savepoint: stop == Some(StopAt::Savepoint) };
                for (_, a) in source_addrs.iter().filter(|(id, _)| !gone.contains(id)) {
                    match a.try_send(Inject(barrier)) {
                        Ok(()) => {}
                        // It has just finished: what it left will stand for it.
                        Err(actix::dev::SendError::Closed(_)) => {}
                        Err(actix::dev::SendError::Full(_)) => {
                            tracing::warn!("a source could not take barrier {epoch}; the checkpoint is abandoned");
                            coordinator.abandon();
                            break;
                        }
                    }
                }
            }
        }
    };
    if let (Ok(Outcome::Finished), Some(ck)) = (&result, &checkpointing) {
        // Finished normally: the next run starts afresh rather than resuming.
        let _ = std::fs::create_dir_all(&ck.dir).and_then(|_| std::fs::File::create(ck.dir.join("_finished")));
    }
    if opts.progress {
        eprintln!();
    }
    if let (Some(l), Some(r)) = (&live, requests) {
        l.give_back(r);
    }
    stop_arbiters(arbiters, result.is_err(), interrupts).await;
    result
}

/// The next request through the HTTP API, if it is served (else never).
async fn next_request(requests: &mut Option<tokio::sync::mpsc::UnboundedReceiver<Control>>) -> Option<Control> {
    match requests {
        Some(r) => r.recv().await,
        None => futures::future::pending().await,
    }
}

/// The next Ctrl-C, if the job handles them (else never).
async fn next_interrupt(interrupts: &mut Option<tokio::signal::unix::Signal>) {
    match interrupts {
        Some(s) => drop(s.recv().await),
        None => futures::future::pending().await,
    }
}

/// How long a job's event loops get to stop once it is over. Every actor of a failed job
/// stops as soon as it notices a stopped neighbour; a loop still busy after this (an operator
/// stuck in a blocking call) is left behind, since the process exits anyway.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Stops the job's event loops and waits for them (up to [`STOP_TIMEOUT`] after a failure),
/// still listening for Ctrl-C: one aborts the wait at once (exit 130).
async fn stop_arbiters(arbiters: Vec<Arbiter>, failed: bool, mut interrupts: Option<tokio::signal::unix::Signal>) {
    for a in &arbiters {
        a.stop();
    }
    let joined = tokio::task::spawn_blocking(move || arbiters.into_iter().for_each(|a| drop(a.join())));
    let limit = async {
        if failed {
            tokio::time::sleep(STOP_TIMEOUT).await
        } else {
            futures::future::pending::<()>().await
        }
    };
    tokio::select! {
        _ = joined => {}
        _ = limit => tracing::warn!("the job's event loops did not stop within {STOP_TIMEOUT:?}; leaving them"),
        _ = next_interrupt(&mut interrupts) => {
            eprintln!("aborted");
            std::process::exit(130);
        }
    }
}

/// The actors of a running job.
struct Started {
    /// By (component, subtask).
    sources: Vec<((String, u32), Addr<SourceActor>)>,
    operators: Vec<((String, u32), Addr<OperatorActor>)>,
    /// All of them (what a checkpoint needs an acknowledgement from).
    instances: usize,
}

/// Starts one actor per instance on `arbiters`, downstream first so that every actor exists
/// before the sources start, each with its channels, counters and what it restores.
fn start_actors(plan: &JobPlan, opts: &RunOptions, arbiters: &[Arbiter], shared: &Shared, state: &crate::state::StateBackend, metrics: &JobMetrics) -> Started {
    let (cfg, threads, sources) = (&plan.config, arbiters.len(), plan.sources());
    let restored: std::collections::BTreeMap<(String, u32), &crate::checkpoint::InstanceState> =
        opts.restore.as_ref().map(|c| c.by_instance()).unwrap_or_default();
    let n = plan.nodes.len();
    let (mut inputs, mut outputs) = wire(plan, opts.channel_capacity);

    // Counters in plan order, so the summary reads from sources to sinks.
    let mut counters: Vec<Vec<_>> =
        plan.nodes.iter().map(|node| (0..node.parallelism).map(|s| Some(metrics.register(&node.name, &node.type_name, s))).collect()).collect();
    let mut source_addrs = Vec::new();
    let mut operator_addrs = Vec::new();
    let mut actors = 0usize;
    // Every instance of every event-time source publishes its watermark in one place, so that
    // one far ahead of the slowest pauses: the instances of a source, and the sources that
    // meet in a join or union (a stream racing ahead of the other side would pile up in the
    // join's state while the watermark waits).
    let event_time = |node: &crate::plan::PlanNode| node.role == crate::config::Role::Source && matches!(node.time, crate::time::TimeMode::Event { .. });
    let aligned_slots: u32 = plan.nodes.iter().filter(|n| event_time(n)).map(|n| n.parallelism).sum();
    let aligned: Arc<Vec<std::sync::atomic::AtomicI64>> = Arc::new((0..aligned_slots).map(|_| std::sync::atomic::AtomicI64::new(i64::MIN)).collect());
    let mut first_slot = Vec::with_capacity(n);
    let mut next_slot = 0u32;
    for node in &plan.nodes {
        first_slot.push(next_slot);
        if event_time(node) {
            next_slot += node.parallelism;
        }
    }
    // Downstream first, so that every actor exists before the sources start.
    for i in (0..n).rev() {
        let node = &plan.nodes[i];
        let (siblings, first_slot): (Arc<Vec<std::sync::atomic::AtomicI64>>, u32) = if event_time(node) {
            (aligned.clone(), first_slot[i])
        } else {
            (Arc::new((0..node.parallelism).map(|_| std::sync::atomic::AtomicI64::new(i64::MIN)).collect()), 0)
        };
        for s in 0..node.parallelism {
            let arbiter = arbiters[placement(i, s, node.parallelism, threads)].handle();
            let counters = counters[i][s as usize].take().expect("one actor per instance");
            let outs = Outputs::new(std::mem::take(&mut outputs[i][s as usize]));
            let shared = shared.clone();
            actors += 1;
            match &node.spec {
                NodeSpec::Source(spec) => {
                    let sctx = SourceContext {
                        name: node.name.clone(),
                        subtask: s,
                        parallelism: node.parallelism,
                        source_index: sources.iter().position(|&x| x == i).expect("a source") as u32,
                        batch_size: cfg.batch_size,
                        counters: Some(counters.clone()),
                    };
                    let make = spec.make.clone();
                    let time = node.time.clone();
                    let siblings = siblings.clone();
                    let saved: Vec<(u32, serde_json::Value)> = restored
                        .iter()
                        .filter(|((c, _), _)| **c == *node.name)
                        .filter_map(|((_, i), v)| match &v.state {
                            Some(SavedState::Source(p)) => Some((*i, p.clone())),
                            Some(SavedState::Operator(_)) => {
                                tracing::warn!("the checkpoint holds an operator's state for source `{}`; it starts from the beginning", node.name);
                                None
                            }
                            None => None,
                        })
                        .collect();
                    let instances_before = restored.keys().filter(|(c, _)| **c == *node.name).count() as u32;
                    let position = if instances_before != 0 && instances_before != node.parallelism && spec.rescalable {
                        let mut all = saved;
                        all.sort_by_key(|(i, _)| *i);
                        Some(actors::SourceRestore::Rescaled(all.into_iter().map(|(_, p)| p).collect()))
                    } else {
                        let finished = restored.get(&(node.name.to_string(), s)).is_some_and(|v| v.finished);
                        saved.into_iter().find(|(i, _)| *i == s).map(|(_, p)| if finished { actors::SourceRestore::Finished(p) } else { actors::SourceRestore::Own(p) })
                    };
                    let addr = SourceActor::start_in_arbiter(&arbiter, move |_| SourceActor {
                        ctx: sctx,
                        source: None,
                        make,
                        outputs: Some(outs),
                        counters,
                        shared,
                        stop_requested: false,
                        done: false,
                        restore: position,
                        positions: Default::default(),
                        ended_at: None,
                        time: crate::time::Timestamper::new(time),
                        siblings,
                        slot: (first_slot + s) as usize,
                        last_span: 0,
                    });
                    source_addrs.push(((node.name.to_string(), s), addr));
                }
                NodeSpec::Transform(_) | NodeSpec::Sink(_) => {
                    let (rxs, input_of): (Vec<_>, Vec<usize>) = std::mem::take(&mut inputs[i][s as usize]).into_iter().unzip();
                    let octx = OperatorContext {
                        name: node.name.clone(),
                        subtask: s,
                        parallelism: node.parallelism,
                        max_parallelism: cfg.max_parallelism,
                        key_groups: key_group_range(cfg.max_parallelism, node.parallelism, s),
                        work_dir: cfg.work_dir.clone(),
                        state: Some(state.clone()),
                        checkpointing: cfg.checkpoint.is_some(),
                        restoring: opts.restore.is_some(),
                        managed: Default::default(),
                        counters: Some(counters.clone()),
                    };
                    let before: Vec<&Option<SavedState>> = restored.iter().filter(|((c, _), _)| **c == *node.name).map(|(_, v)| &v.state).collect();
                    let operator_state = |v: &Option<SavedState>| match v {
                        Some(SavedState::Operator(o)) => Some(o.clone()),
                        _ => None,
                    };
                    let own = restored.get(&(node.name.to_string(), s));
                    let restore = if before.len() as u32 == node.parallelism && own.is_some_and(|v| v.finished) {
                        Some(actors::Restore::Finished)
                    } else if before.len() as u32 == node.parallelism {
                        own.and_then(|v| operator_state(&v.state)).map(actors::Restore::Own)
                    } else if before.is_empty() {
                        None
                    } else {
                        Some(actors::Restore::Rescaled(before.iter().filter_map(|v| operator_state(v)).collect()))
                    };
                    let spec = node.spec.clone();
                    let addr = OperatorActor::start_in_arbiter(&arbiter, move |ctx| {
                        let made = match &spec {
                            NodeSpec::Transform(t) => (t.make)(&octx),
                            NodeSpec::Sink(k) => (k.make)(&octx).map(|s| Box::new(SinkOperator(s)) as Box<dyn crate::operator::Operator>),
                            NodeSpec::Source(_) => unreachable!("sources are started above"),
                        };
                        let (op, init_error) = match made {
                            Ok(op) => (op, None),
                            Err(e) => (Box::new(Unmade) as Box<dyn crate::operator::Operator>, Some(e)),
                        };
                        let n_inputs = rxs.len();
                        let fault = crate::faults::for_instance(&octx.name, s);
                        let (gate, control) = InputGate::new(rxs);
                        ctx.add_stream(gate);
                        let redact = shared.dead_letter.redacted(&octx.name).iter().map(|f| crate::value::Sym::new(f)).collect();
                        OperatorActor {
                            name: octx.name.clone(),
                            subtask: s,
                            op,
                            outputs: Some(outs),
                            gate: control,
                            watermarks: WatermarkTracker::new(n_inputs),
                            aligner: crate::runtime::alignment::BarrierAligner::new(n_inputs),
                            open_inputs: n_inputs,
                            collector: Default::default(),
                            counters,
                            shared,
                            failed: false,
                            octx,
                            init_error,
                            next_tick: None,
                            restore,
                            aligning_since: None,
                            then: Vec::new(),
                            busy: false,
                            is_sink: matches!(spec, NodeSpec::Sink(_)),
                            side_outputs: match &spec {
                                NodeSpec::Transform(t) => t.side_outputs.clone(),
                                _ => Vec::new(),
                            },
                            fault,
                            chain: Default::default(),
                            input_of,
                            ended_before: false,
                            redact,
                            secrets: Vec::new(),
                        }
                    });
                    operator_addrs.push(((node.name.to_string(), s), addr));
                }
            }
        }
    }
    Started { sources: source_addrs, operators: operator_addrs, instances: actors }
}

/// Writes checkpoint `done` (as a savepoint if asked) and counts it in `stats`. A write that
/// fails counts against `failures`: `Ok(false)` while that is tolerated, then the job's error.
fn write_checkpoint(
    ck: &crate::config::CheckpointConfig,
    job: &str,
    done: coordinator::Completed,
    savepoint: bool,
    alignment_ms: u64,
    stats: &mut CheckpointStats,
    failures: &mut coordinator::FailureCounter,
    live: Option<&crate::live::Live>,
) -> Result<bool, RunError> {
    let epoch = done.epoch;
    let cp = crate::checkpoint::Checkpoint {
        job: job.to_string(),
        epoch,
        savepoint,
        created_ms: crate::time::now_millis(),
        duration_ms: done.duration.as_millis() as u64,
        alignment_ms,
        instances: done.states,
        folder: None,
    };
    match crate::checkpoint::write(&ck.dir, &cp, ck.retain) {
        Ok(bytes) => {
            failures.completed();
            tracing::info!("checkpoint {epoch} complete in {} ms (alignment {} ms), {bytes} bytes", cp.duration_ms, cp.alignment_ms);
            stats.completed += 1;
            stats.last_duration_ms = cp.duration_ms;
            stats.max_duration_ms = stats.max_duration_ms.max(cp.duration_ms);
            stats.max_alignment_ms = stats.max_alignment_ms.max(cp.alignment_ms);
            stats.last_bytes = bytes;
            if let Some(l) = live {
                l.checkpoint_completed(crate::live::CheckpointEntry { epoch, completed_ms: crate::time::now_millis(), duration_ms: cp.duration_ms, alignment_ms: cp.alignment_ms, bytes });
            }
            Ok(true)
        }
        Err(err) => {
            let cause = format!("cannot write it under {}: {err}", ck.dir.display());
            if let Some(l) = live {
                l.checkpoint_failed(epoch, &cause);
            }
            failures.failed(epoch, &cause).map(|()| false).map_err(RunError::Checkpoints)
        }
    }
}

/// Tells every operator instance that checkpoint `epoch` is complete (sinks publish). With
/// `wait` (the job stops there) each is waited for, up to 5 s; otherwise an instance whose
/// mailbox is full commits at the next checkpoint.
async fn commit<'a>(operators: impl Iterator<Item = &'a Addr<OperatorActor>>, epoch: u64, wait: bool) {
    for a in operators {
        let c = Commit(crate::message::Epoch(epoch));
        if wait {
            let _ = tokio::time::timeout(Duration::from_secs(5), a.send(c)).await;
        } else if a.try_send(c).is_err() {
            tracing::warn!("an instance did not take the commit of checkpoint {epoch}; it commits at the next one");
        }
    }
}

/// Each instance's input channels (receivers, with the input of the component each belongs
/// to) and output edges, by component and instance.
type Wiring = (Vec<Vec<Vec<(mpsc::Receiver<crate::message::Message>, usize)>>>, Vec<Vec<Vec<OutEdge>>>);

/// The channels of a job: one per (upstream instance, downstream instance) pair that talk,
/// bounded to `capacity` messages.
fn wire(plan: &JobPlan, capacity: usize) -> Wiring {
    let mut inputs: Vec<Vec<Vec<(mpsc::Receiver<crate::message::Message>, usize)>>> =
        plan.nodes.iter().map(|node| (0..node.parallelism).map(|_| Vec::new()).collect()).collect();
    let mut outputs: Vec<Vec<Vec<OutEdge>>> = plan.nodes.iter().map(|node| (0..node.parallelism).map(|_| Vec::new()).collect()).collect();
    for e in &plan.edges {
        let (pu, pd) = (plan.nodes[e.from].parallelism, plan.nodes[e.to].parallelism);
        for u in 0..pu {
            let targets: Vec<u32> = match e.exchange {
                Exchange::Forward => vec![u],
                _ => (0..pd).collect(),
            };
            let mut senders = Vec::with_capacity(targets.len());
            for d in targets {
                let (tx, rx) = mpsc::channel(capacity.max(1));
                senders.push(tx);
                inputs[e.to][d as usize].push((rx, e.input));
            }
            let next = u as usize % senders.len();
            outputs[e.from][u as usize].push(OutEdge { port: e.port, exchange: e.exchange.clone(), senders, next, owners: None });
        }
    }
    (inputs, outputs)
}

/// The arbiter of instance `s` of component `i`. A component with at least one instance per
/// thread puts instance `s` on thread `s % threads`, so forward chains stay on one thread; a
/// component with fewer instances than threads is offset by its position in the plan, so that
/// consecutive operators of a narrow pipeline run on different threads (pipeline parallelism).
fn placement(i: usize, s: u32, parallelism: u32, threads: usize) -> usize {
    let offset = if parallelism as usize >= threads { 0 } else { i };
    (s as usize + offset) % threads
}

fn print_progress(metrics: &JobMetrics, elapsed: Duration) {
    let (done, total) = metrics.progress();
    let summary = metrics.summary();
    let read: u64 = summary.iter().filter(|s| s.records_in > 0).map(|s| s.records_in).next().unwrap_or(0);
    let rejected: u64 = summary.iter().map(|s| s.rejected).sum();
    let pct = if total > 0 { format!("{:5.1}% of input · ", 100.0 * done as f64 / total as f64) } else { String::new() };
    eprint!("\r{pct}{read} records read · {rejected} rejected · {:.0}s   ", elapsed.as_secs_f64());
}
