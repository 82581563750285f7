//! `scale_out:`: several `rill run` processes of one pipeline, on one machine or many, share
//! the partitions of its Kafka sources, as Kafka Streams instances do.
//!
//! Partition number `p` is *task* `p`: the pipeline run for partition `p` of each Kafka source,
//! a job of its own with its own folders (`task-p` below the work and checkpoint folders), its
//! own checkpoints and its own Kafka transactions (`<prefix>-task-p-…`). Each process joins a
//! consumer group ([`rill_connectors::kafka::members`]) and runs the tasks the group gives it,
//! each as a child `rill run` with `scale_out.task` set. When the group moves a task (a process
//! joined, left or died), the old owner stops its child at a final checkpoint, and the new
//! owner's child takes the task's folder lock once that is done (until then it is refused and
//! started again) and resumes from the task's newest checkpoint: the same recovery a single
//! job has, exactly-once sinks included (the same transactional ids fence and abort what a dead
//! owner left open). The checkpoint folder must therefore be one every process reaches (on one
//! machine, any folder; on several, shared storage).
//!
//! A child is killed with its process (`PR_SET_PDEATHSIG`), so a killed process leaves no task
//! running; it is in a process group of its own, so a terminal's Ctrl-C reaches it once, from
//! its parent.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rill_engine::config::{ConfigError, ConfigErrors, PipelineConfig, Role};
use rill_engine::exchange::Exchange;
use rill_engine::plan::JobPlan;

/// A child's exit status when its task's folders are still held (by the previous owner,
/// stopping): started again shortly.
pub const BUSY: u8 = 75;

/// How long a task's child may take to stop at a final checkpoint before it is killed.
const STOP_LIMIT: Duration = Duration::from_secs(60);

/// What a scaled-out pipeline may not have, with where it is written.
pub fn check(config: &PipelineConfig) -> Result<(), ConfigErrors> {
    let Some(so) = &config.scale_out else { return Ok(()) };
    let mut errors = Vec::new();
    if config.checkpoint.is_none() {
        errors.push(
            ConfigError::new(Some(&so.span), "`scale_out` needs `checkpoint:`: a task that moves to another process resumes from its newest checkpoint")
                .hint("add `checkpoint: {interval: 10s}` (on several machines, with `dir` on storage every process reaches)"),
        );
    }
    if config.http.is_some() {
        errors.push(
            ConfigError::new(Some(&so.span), "the HTTP API cannot serve a scaled-out pipeline yet: each task is a job of its own, in a process of its own")
                .hint("leave `http` (and `--http`) out; each task prints its own summary"),
        );
    }
    for c in &config.components {
        let kind = c.type_name.value.as_str();
        match c.role {
            Role::Source if kind != "kafka" => errors.push(
                ConfigError::new(Some(&c.type_name.span), format!("source `{}` is `{kind}`: with `scale_out` every source must be `kafka`, whose partitions the processes share (every task would read all of a `{kind}` source)", c.name))
                    .hint("read this input from a Kafka topic, or leave `scale_out` out"),
            ),
            Role::Sink if kind == "file" => errors.push(
                ConfigError::new(Some(&c.type_name.span), format!("sink `{}` is a `file`: every task of a scaled-out pipeline would write the same file", c.name))
                    .hint("write to Kafka or PostgreSQL, or leave `scale_out` out"),
            ),
            _ => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ConfigErrors(errors))
    }
}

/// What `validate` and `graph` say about a scaled-out pipeline: which components are correct
/// only when the topics are partitioned by their key, and which are not partition-local.
pub fn notes(p: &JobPlan) -> Vec<String> {
    if p.config.scale_out.is_none() {
        return Vec::new();
    }
    let mut notes = vec!["scale_out: each process runs the tasks (partition numbers) its group gives it; a task sees partition N of every Kafka source".to_string()];
    for e in &p.edges {
        let to = &p.nodes[e.to].name;
        match &e.exchange {
            Exchange::Hash { key, .. } => notes.push(format!(
                "  `{to}` groups by `{}`: correct across processes only if the input topics are partitioned by that key (each message written with it as the Kafka key, or by a partitioner that agrees)",
                key.source()
            )),
            Exchange::Single => notes.push(format!(
                "  `{to}` is not partition-local: it takes its whole input into one instance, so each task computes its own `{to}` over its partition only"
            )),
            Exchange::Forward | Exchange::Rebalance => {}
        }
    }
    notes
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// One task's child process.
struct Task {
    child: Option<Child>,
    /// The thread copying the child's stderr.
    log: Option<std::thread::JoinHandle<()>>,
    /// Asked to stop (the task moved, or this process is stopping), and since when.
    stopping: Option<Instant>,
    /// Refused its folders (still held): start again at this moment.
    retry_at: Option<Instant>,
}

/// Runs this process's share of a scaled-out pipeline until Ctrl-C (SIGINT or SIGTERM) or a
/// task fails; `args` (the user's `--set`s and such) go to every task's `rill run`.
pub fn run(pipeline: &Path, args: &[String], p: &JobPlan) -> ExitCode {
    let so = p.config.scale_out.as_ref().expect("a scaled-out pipeline");
    let name = &p.config.name;
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as extern "C" fn(libc::c_int) as *const () as libc::sighandler_t);
    }
    let members = match rill_connectors::kafka::members::Members::join(&p.config, &so.group, so.session_timeout) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: cannot scale out job `{name}`: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!("job `{name}` scales out in group `{}` (pid {}); waiting for tasks", so.group, std::process::id());
    let mut tasks: BTreeMap<u32, Task> = BTreeMap::new();
    let mut owned = std::collections::BTreeSet::new();
    let mut failure: Option<String> = None;
    while !STOP.load(Ordering::SeqCst) && failure.is_none() {
        match members.poll(Duration::from_millis(100)) {
            Ok(Some(assigned)) => {
                eprintln!("job `{name}`: this process runs task{} {:?}", if assigned.len() == 1 { "" } else { "s" }, assigned);
                for (t, task) in tasks.iter_mut().filter(|(t, _)| !assigned.contains(t)) {
                    eprintln!("job `{name}`: task {t} moved to another process; stopping it here at a checkpoint");
                    task.stop();
                }
                owned = assigned;
            }
            Ok(None) => {}
            Err(e) => failure = Some(e),
        }
        for &t in &owned {
            let task = tasks.entry(t).or_insert(Task { child: None, log: None, stopping: None, retry_at: Some(Instant::now()) });
            if task.child.is_none() && task.stopping.is_none() && task.retry_at.is_some_and(|at| at <= Instant::now()) {
                task.retry_at = None;
                match spawn(pipeline, args, t) {
                    Ok((c, log)) => {
                        task.child = Some(c);
                        task.log = Some(log);
                    }
                    Err(e) => failure = Some(format!("cannot start task {t}: {e}")),
                }
            }
        }
        tasks.retain(|&t, task| match task.reap() {
            Reaped::Running => true,
            // Moved away: gone, unless it has come back to this process meanwhile.
            Reaped::Stopped => {
                task.stopping = None;
                task.retry_at = Some(Instant::now());
                owned.contains(&t)
            }
            Reaped::Busy => {
                task.retry_at = Some(Instant::now() + Duration::from_millis(250));
                owned.contains(&t)
            }
            Reaped::Ended => {
                eprintln!("job `{name}`: task {t} ended");
                true
            }
            Reaped::Failed(why) => {
                failure.get_or_insert(format!("task {t} failed ({why}); its log is above"));
                false
            }
        });
    }
    // Stop every task at a final checkpoint, then leave the group (its tasks move at once).
    for task in tasks.values_mut() {
        task.stop();
    }
    for (t, task) in &mut tasks {
        if let Reaped::Failed(why) = task.wait() {
            failure.get_or_insert(format!("task {t} failed while stopping ({why})"));
        }
    }
    members.leave();
    match failure {
        Some(e) => {
            eprintln!("error: job `{name}`: {e}");
            ExitCode::from(1)
        }
        None => {
            eprintln!("job `{name}`: stopped; its tasks resume from their checkpoints in whichever process runs them next");
            ExitCode::SUCCESS
        }
    }
}

enum Reaped {
    Running,
    /// Exited after being asked to stop (or never started).
    Stopped,
    /// Refused its folders: the previous owner still holds them.
    Busy,
    /// Exited 0 unasked (its job finished).
    Ended,
    Failed(String),
}

impl Task {
    fn stop(&mut self) {
        if let (Some(c), None) = (&self.child, self.stopping) {
            // SAFETY: signals our own child, whose pid is live until we reap it.
            unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGINT) };
        }
        self.stopping.get_or_insert_with(Instant::now);
        self.retry_at = None;
    }

    fn reap(&mut self) -> Reaped {
        let Some(c) = &mut self.child else {
            return if self.stopping.is_some() { Reaped::Stopped } else { Reaped::Running };
        };
        let status = match c.try_wait() {
            Ok(Some(s)) => s,
            Ok(None) => {
                if self.stopping.is_some_and(|at| at.elapsed() > STOP_LIMIT) {
                    let _ = c.kill();
                }
                return Reaped::Running;
            }
            Err(e) => return Reaped::Failed(format!("cannot wait for it: {e}")),
        };
        self.child = None;
        if let Some(log) = self.log.take() {
            let _ = log.join();
        }
        match (status.code(), self.stopping.is_some()) {
            (Some(0), true) => Reaped::Stopped,
            (Some(0), false) => Reaped::Ended,
            (Some(c), _) if c == i32::from(BUSY) => Reaped::Busy,
            (Some(c), _) => Reaped::Failed(format!("exit status {c}")),
            (None, _) => Reaped::Failed(format!("killed by signal {}", status.signal().unwrap_or(0))),
        }
    }

    /// Waits for the child to exit (killing it after [`STOP_LIMIT`]).
    fn wait(&mut self) -> Reaped {
        loop {
            match self.reap() {
                Reaped::Running => std::thread::sleep(Duration::from_millis(20)),
                other => return other,
            }
        }
    }
}

/// Starts `rill run PIPELINE ARGS --set scale_out.task=T`, its stderr lines prefixed with the
/// task by a thread.
fn spawn(pipeline: &Path, args: &[String], task: u32) -> std::io::Result<(Child, std::thread::JoinHandle<()>)> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("run").arg(pipeline).args(["--progress", "never"]).args(args);
    cmd.arg("--set").arg(format!("scale_out.task={task}"));
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The parent may have died before the line above: then nothing would kill us.
            if libc::getppid() != parent {
                libc::_exit(1);
            }
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let stderr = child.stderr.take().expect("piped");
    let log = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("task {task}: {line}");
        }
    });
    Ok((child, log))
}
