//! The `rill` command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::{JobPlan, PipelineConfig, Registry, RunOptions};

/// Rill runs stream-processing pipelines written in YAML: sources → transforms → sinks.
///
/// Exit codes: 0 success, 1 the job failed while running, 2 invalid pipeline or usage.
#[derive(Parser, Debug)]
#[command(name = "rill", version, about, long_about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a pipeline until its bounded sources end, or until Ctrl-C (which stops the sources,
    /// lets everything in flight finish and flushes the sinks).
    ///
    /// Prints a summary per component at the end (records in/out, rejected, batches). Rejected
    /// records go to the dead-letter output (`dead_letter:` in the pipeline; default
    /// `.rill/<name>/dead_letter.jsonl` next to the pipeline file; relative paths in a pipeline
    /// are its folder's).
    Run {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Override an option: `--set path.to.option=value` (repeatable), e.g.
        /// `--set parallelism=4` or `--set sources.orders.path=other.jsonl`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
        /// Event-loop threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Progress line on stderr: auto (when stderr is a terminal), always, never.
        #[arg(long, value_enum, default_value_t = Progress::Auto)]
        progress: Progress,
        /// Do not print the summary.
        #[arg(short, long)]
        quiet: bool,
        /// Print the summary as one JSON object (on stderr, where the summary goes), also when
        /// the job fails.
        #[arg(long, conflicts_with = "quiet")]
        json: bool,
        /// Ignore (and delete) earlier checkpoints and start from the beginning of the inputs.
        #[arg(long, conflicts_with = "from")]
        from_scratch: bool,
        /// Resume from this checkpoint or savepoint folder instead of the latest one.
        #[arg(long, value_name = "PATH")]
        from: Option<PathBuf>,
        /// Serve the HTTP API (metrics, status, control) on this address, e.g. 127.0.0.1:8642
        /// (the same as `--set http.listen=ADDR`).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// Take a savepoint of a running job and stop it: `rill run` resumes from it later, also
    /// after changes to the pipeline that keep the names of stateful components.
    Savepoint {
        /// The pipeline file of the running job (its work directory holds the job's pid).
        pipeline: PathBuf,
        /// Override an option, as for `run`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Check the audit trail (`audit:` in the pipeline): every line's HMAC and its chain to the
    /// line before. Exit 1 naming the first line that was changed, inserted or removed.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// A live table of a running job's components (rates, backpressure, watermark lag),
    /// refreshed in place, from its HTTP API (`rill run --http ADDR`).
    Top {
        /// The API's address: HOST:PORT, http://HOST:PORT or https://HOST:PORT.
        #[arg(default_value = "127.0.0.1:8642")]
        addr: String,
        #[command(flatten)]
        client: ClientArgs,
        /// Print the table once and exit.
        #[arg(long)]
        once: bool,
        /// How often to refresh.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
    },
    /// Print records as they leave a component of a running job (at most one of each batch, so
    /// the job slows only by the copies), one JSON object a line: `rill tap [ADDR] COMPONENT`.
    Tap {
        /// `[ADDR] COMPONENT`: the API's address (default 127.0.0.1:8642) and the component.
        #[arg(num_args = 1..=2, required = true, value_name = "ADDR] [COMPONENT")]
        args: Vec<String>,
        /// How many records to print.
        #[arg(long, default_value_t = 10)]
        limit: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script: `rill completions bash > /etc/bash_completion.d/rill`,
    /// `rill completions zsh > ~/.zfunc/_rill`, `rill completions fish > ~/.config/fish/completions/rill.fish`.
    Completions {
        shell: clap_complete::Shell,
    },
    /// Inspect checkpoints.
    Checkpoints {
        #[command(subcommand)]
        command: CheckpointsCommand,
    },
    /// Chaos test: run a pipeline, kill it with SIGKILL at random moments (and, with
    /// `--panics`, make operators panic; with `--slow`, slow one down), restart it each time,
    /// let it finish, and compare its file sinks with a failure-free run. Reports lost and
    /// duplicated records; exits 1 on any difference.
    ///
    /// The pipeline needs `checkpoint:` and is run with its work directory and file sinks
    /// redirected into a temporary folder.
    Chaos {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// How many times to kill it.
        #[arg(long, default_value_t = 20)]
        kills: u32,
        /// How many more runs to end by an operator panic (injected into a random transform or
        /// sink at a random record) instead of a kill.
        #[arg(long, default_value_t = 0)]
        panics: u32,
        /// Slow a random transform or sink by 1-10 ms per batch in every run.
        #[arg(long)]
        slow: bool,
        /// Seed for the kill times.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Longest time to let a run go before killing it (default: half the failure-free run).
        #[arg(long, value_parser = humantime_parse)]
        max_delay: Option<std::time::Duration>,
        /// Override an option, as for `run`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Check a pipeline without running it; prints every problem with file:line:column.
    Validate {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Override an option, as for `run`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
    /// Run the unit tests declared in a pipeline (`tests:`): each feeds records to sources and
    /// checks what components emit, running the pipeline itself with its sinks discarding.
    /// Exit 0 if all pass, 1 if one fails, 2 if the pipeline or a test is not valid.
    Test {
        /// The pipeline file (YAML) with its `tests:`.
        pipeline: PathBuf,
        /// Run only the tests whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
    /// Print a JSON Schema of the pipeline format, for editors: `rill schema > rill.schema.json`,
    /// then `# yaml-language-server: $schema=rill.schema.json` atop a pipeline. Every
    /// component type's options are in it, custom ones too.
    Schema,
    /// Print the dataflow: components, parallelism, and the exchange on every edge.
    Graph {
        /// The pipeline file (YAML).
        pipeline: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = GraphFormat::Text)]
        format: GraphFormat,
        /// Override an option, as for `run`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
}

/// How `rill top` and `rill tap` reach the API.
#[derive(clap::Args, Debug)]
pub struct ClientArgs {
    /// A token of the API's tokens file (else RILL_TOKEN; a flag shows in `ps`, the variable does not).
    #[arg(long)]
    token: Option<String>,
    /// For https://: the PEM of the CA that signed the API's certificate.
    #[arg(long, value_name = "PEM")]
    ca: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Verify the audit log of a pipeline.
    Verify {
        /// The pipeline file (YAML) whose `audit:` names the log and its key.
        pipeline: PathBuf,
        /// Override an option, as for `run`.
        #[arg(long = "set", value_name = "PATH=VALUE")]
        sets: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum CheckpointsCommand {
    /// List the checkpoints in a checkpoint folder, with their metrics.
    List {
        /// The checkpoint folder (`checkpoint.dir`, by default `<work_dir>/checkpoints`).
        dir: PathBuf,
    },
}

fn humantime_parse(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq)]
pub enum Progress {
    Auto,
    Always,
    Never,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum GraphFormat {
    Text,
    Mermaid,
    Dot,
}

fn plan(pipeline: &std::path::Path, sets: &[String], registry: &Registry) -> Result<JobPlan, ExitCode> {
    let report = |e: crate::ConfigErrors| {
        eprintln!("{e}");
        let n = e.0.len();
        eprintln!("\n{} problem{} found in {}", n, if n == 1 { "" } else { "s" }, pipeline.display());
        ExitCode::from(2)
    };
    let config = PipelineConfig::load(pipeline, sets).map_err(report)?;
    let scaling = crate::scale_out::check(&config);
    match (JobPlan::build(config, registry), scaling) {
        (Ok(plan), Ok(())) => Ok(plan),
        (Err(e), Ok(())) | (Ok(_), Err(e)) => Err(report(e)),
        (Err(mut e), Err(more)) => {
            e.0.extend(more.0);
            Err(report(e))
        }
    }
}

/// Runs the command line with `registry` (the built-ins plus any custom components).
pub fn main(registry: Registry) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    // Rill's own crates at the level asked for; libraries (sled, rdkafka, actix) stay at
    // warnings unless RUST_LOG asks for them.
    let ours = |level: &str| ["rill", "rill_engine", "rill_operators", "rill_connectors", "rill_torch"].map(|c| format!("{c}={level}")).join(",");
    let level = match cli.verbose {
        0 => "warn".to_string(),
        1 => format!("warn,{}", ours("info")),
        _ => format!("warn,{}", ours("debug")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&level)))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    match cli.command {
        Command::Schema => {
            println!("{}", serde_json::to_string_pretty(&crate::schema::schema(&registry)).expect("JSON"));
            ExitCode::SUCCESS
        }
        Command::Test { pipeline, only } => crate::unit::main(&pipeline, only.as_deref(), &registry),
        Command::Validate { pipeline, sets } => match plan(&pipeline, &sets, &registry) {
            Ok(p) => {
                println!(
                    "{}: pipeline `{}` is valid: {} components, {} instances",
                    pipeline.display(),
                    p.config.interpolated.scrub(&p.config.name),
                    p.nodes.len(),
                    p.nodes.iter().map(|n| n.parallelism).sum::<u32>()
                );
                let checkpointed = p.config.checkpoint.is_some();
                for n in &p.nodes {
                    let rill_engine::plan::NodeSpec::Sink(sink) = &n.spec else { continue };
                    let guarantee = match (sink.exactly_once, checkpointed) {
                        (true, true) => "exactly-once (two-phase commit on checkpoints)",
                        (false, true) => "at-least-once (cannot take part in two-phase commit: after a failure it may repeat records)",
                        (true, false) => "no recovery: exactly-once once the pipeline has `checkpoint:`",
                        (false, false) => "no recovery: at-least-once once the pipeline has `checkpoint:`",
                    };
                    println!("  sink `{}` ({}): {guarantee}", n.name, n.type_name);
                }
                for note in crate::scale_out::notes(&p) {
                    println!("{note}");
                }
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Graph { pipeline, format, sets } => match plan(&pipeline, &sets, &registry) {
            Ok(p) => {
                let (mut text, comment) = match format {
                    GraphFormat::Text => (p.to_text(), ""),
                    GraphFormat::Mermaid => (p.to_mermaid(), "%% "),
                    GraphFormat::Dot => (p.to_dot(), "// "),
                };
                for note in crate::scale_out::notes(&p) {
                    text.push_str(&format!("{comment}{note}\n"));
                }
                // Values from the environment are shown as the `${VAR}` the file has.
                print!("{}", p.config.interpolated.scrub(&text));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Checkpoints { command: CheckpointsCommand::List { dir } } => {
            let complete = rill_engine::checkpoint::complete(&dir).unwrap_or_default();
            let history = rill_engine::checkpoint::history(&dir);
            if complete.is_empty() && history.is_empty() {
                eprintln!("no checkpoints in {}", dir.display());
                return ExitCode::from(2);
            }
            println!("{:>8} {:>10} {:>10} {:>12} {:>12} {:>9}  kept", "epoch", "kind", "ms", "align ms", "bytes", "age s");
            let now = rill_engine::time::now_millis();
            for h in history {
                let kept = complete.iter().any(|(e, _)| *e == h.epoch);
                println!(
                    "{:>8} {:>10} {:>10} {:>12} {:>12} {:>9.1}  {}",
                    h.epoch,
                    if h.savepoint { "savepoint" } else { "checkpoint" },
                    h.duration_ms,
                    h.alignment_ms,
                    h.bytes,
                    (now - h.created_ms) as f64 / 1000.0,
                    if kept { "yes" } else { "" }
                );
            }
            ExitCode::SUCCESS
        }
        Command::Savepoint { pipeline, sets } => savepoint(&pipeline, &sets),
        Command::Top { addr, client, once, interval } => client_main(crate::client::Target::new(&addr, client.ca, client.token).and_then(|t| crate::client::top(&t, interval, once))),
        Command::Tap { args, limit, client } => {
            let (addr, component) = match &args[..] {
                [c] => ("127.0.0.1:8642", c.as_str()),
                [a, c] => (a.as_str(), c.as_str()),
                _ => unreachable!("clap takes one or two"),
            };
            client_main(crate::client::Target::new(addr, client.ca, client.token).and_then(|t| crate::client::tap(&t, component, limit)))
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut <Cli as clap::CommandFactory>::command(), "rill", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Audit { command: AuditCommand::Verify { pipeline, sets } } => {
            let cfg = match config(&pipeline, &sets) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let Some(audit) = &cfg.audit else {
                eprintln!("error: {} has no `audit:`", pipeline.display());
                return ExitCode::from(2);
            };
            match rill_engine::audit::verify(&audit.path, &audit.key) {
                Ok(n) => {
                    println!("{}: {n} entries; every line's mac and its chain to the line before hold", audit.path.display());
                    ExitCode::SUCCESS
                }
                Err((0, why)) => {
                    eprintln!("error: {why}");
                    ExitCode::from(1)
                }
                Err((line, why)) => {
                    eprintln!("error: {}:{line}: {why}", audit.path.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::Chaos { pipeline, kills, panics, slow, seed, max_delay, sets } => {
            crate::chaos::main(&pipeline, crate::chaos::Faults { kills, panics, slow }, seed, max_delay, &sets, &registry)
        }
        Command::Run { pipeline, mut sets, threads, progress, quiet, json, from_scratch, from, http } => {
            if let Some(addr) = http {
                sets.push(format!("http.listen={addr}"));
            }
            let p = match plan(&pipeline, &sets, &registry) {
                Ok(p) => p,
                Err(code) => return code,
            };
            let task = p.config.scale_out.as_ref().map(|s| s.task);
            if task == Some(None) {
                if from_scratch || from.is_some() {
                    eprintln!("error: `--from-scratch` and `--from` would act on every task this process is given, also on tasks taken over from another process; run the pipeline without `scale_out` to start it afresh");
                    return ExitCode::from(2);
                }
                let mut args: Vec<String> = sets.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect();
                args.extend(threads.map(|t| format!("--threads={t}")));
                args.extend(quiet.then(|| "--quiet".to_string()));
                args.extend(json.then(|| "--json".to_string()));
                return crate::scale_out::run(&pipeline, &args, &p);
            }
            let mut audit = match Audit::open(&p, &pipeline, &sets) {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("error: cannot run job `{}`: {e}", p.config.name);
                    return ExitCode::from(1);
                }
            };
            // Before looking at (or deleting) checkpoints: they may be a running job's.
            let lock = match rill_engine::lock::JobLock::acquire(&p.config.work_dir, p.config.checkpoint.as_ref().map(|c| c.dir.as_path())) {
                Ok(l) => std::sync::Arc::new(l),
                Err(e) => {
                    let _ = audit.record("start", serde_json::json!({}), &format!("refused: {e}"));
                    // A scaled-out task's previous owner is still stopping: its parent tries again.
                    if let (Some(Some(_)), rill_engine::lock::LockError::Busy { .. }) = (task, &e) {
                        return ExitCode::from(crate::scale_out::BUSY);
                    }
                    eprintln!("error: cannot run job `{}`: {e}", p.config.name);
                    return ExitCode::from(1);
                }
            };
            let restore = match restore_point(&p, from_scratch, from.as_deref()) {
                Ok(r) => r,
                Err(msg) => {
                    let _ = audit.record("start", serde_json::json!({}), &format!("refused: {msg}"));
                    eprintln!("error: {msg}");
                    return ExitCode::from(2);
                }
            };
            if let Some(cp) = &restore {
                eprintln!("resuming from checkpoint {} of job `{}`", cp.epoch, cp.job);
            }
            let restored = restore.as_ref().map(|cp| serde_json::json!({"epoch": cp.epoch, "path": cp.folder.as_ref().map(|f| f.display().to_string())}));
            if let Err(e) = audit.record("start", serde_json::json!({"restore": restored, "from_scratch": from_scratch}), "ok") {
                eprintln!("error: cannot run job `{}`: {e}", p.config.name);
                return ExitCode::from(1);
            }
            let name = p.config.name.clone();
            let audit = std::sync::Arc::new(std::sync::Mutex::new(audit));
            let live = p.config.http.as_ref().map(|_| rill_engine::live::Live::new(&p));
            let api = match (&p.config.http, &live) {
                (Some(h), Some(live)) => {
                    let a = audit.clone();
                    let auditor: crate::api::Auditor = std::sync::Arc::new(move |action: &str, details: serde_json::Value, result: &str| {
                        if let Err(e) = a.lock().expect("audit lock").record(action, details, result) {
                            tracing::error!("audit trail: {e}");
                        }
                    });
                    match crate::api::start(live.clone(), h, auditor) {
                        Ok(api) => {
                            eprintln!(
                                "HTTP API at {}://{}/ (GET /metrics, GET /api/v1/job{})",
                                if api.tls { "https" } else { "http" },
                                api.addr,
                                if h.tokens.is_some() { ", POST /api/v1/savepoint, POST /api/v1/stop; tokens required" } else { "; no tokens, so no control endpoints" }
                            );
                            Some(api)
                        }
                        Err(e) => {
                            let _ = audit.lock().expect("audit lock").record("start", serde_json::json!({}), &format!("refused: {e}"));
                            eprintln!("error: cannot run job `{name}`: {e}");
                            return ExitCode::from(1);
                        }
                    }
                }
                _ => None,
            };
            let opts = RunOptions {
                threads,
                progress: match progress {
                    Progress::Always => true,
                    Progress::Never => false,
                    Progress::Auto => std::io::stderr().is_terminal() && !quiet,
                },
                restore,
                lock: Some(lock),
                live,
                ..RunOptions::default()
            };
            let (code, action, details, result) = match crate::run(p, opts) {
                Ok(report) => {
                    if json {
                        eprintln!("{}", summary_json(&name, &report));
                    } else if !quiet {
                        eprint!("{}", summary(&name, &report));
                    }
                    if let Some(sp) = &report.savepoint {
                        eprintln!("stopped at savepoint {}; `rill run` resumes from it", sp.display());
                    }
                    let action = match (&report.savepoint, report.interrupted) {
                        (Some(_), _) => "savepoint",
                        (None, true) => "stop",
                        (None, false) => "finish",
                    };
                    let details = serde_json::json!({
                        "elapsed_ms": report.elapsed.as_millis() as u64,
                        "checkpoint": report.stopped_at,
                        "savepoint": report.savepoint.as_ref().map(|s| s.display().to_string()),
                        "dead_letters": report.dead_letters,
                        "restarts": report.restarts,
                    });
                    (ExitCode::SUCCESS, action, details, "ok".to_string())
                }
                Err(e) => {
                    eprintln!("error: job `{name}` failed: {e}");
                    if json {
                        eprintln!("{}", serde_json::json!({"job": name, "outcome": "failed", "error": e.to_string()}));
                    }
                    (ExitCode::from(1), "fail", serde_json::json!({}), format!("error: {e}"))
                }
            };
            if let Some(api) = api {
                api.stop();
            }
            let recorded = audit.lock().expect("audit lock").record(action, details, &result);
            match recorded {
                Ok(()) => code,
                Err(e) => {
                    eprintln!("error: job `{name}`: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn client_main(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// The job's audit trail, if its pipeline has `audit:` (else every call does nothing).
struct Audit(Option<rill_engine::audit::AuditLog>, serde_json::Value);

impl Audit {
    fn open(p: &JobPlan, pipeline: &std::path::Path, sets: &[String]) -> Result<Audit, String> {
        let Some(cfg) = &p.config.audit else { return Ok(Audit(None, serde_json::Value::Null)) };
        let log = rill_engine::audit::AuditLog::open(cfg, &p.config.name)?;
        // What ran: the pipeline file's bytes and the overrides (the hash, not the text, which
        // may name secrets' places).
        let mut hashed = std::fs::read(pipeline).unwrap_or_default();
        for s in sets {
            hashed.extend_from_slice(b"\n--set ");
            hashed.extend_from_slice(s.as_bytes());
        }
        let config = serde_json::json!({"pipeline": pipeline.display().to_string(), "config_sha256": rill_engine::secrets::sha256_hex(&hashed), "sets": sets.len()});
        Ok(Audit(Some(log), config))
    }

    /// Records `action` (with the configuration's hash for `start`).
    fn record(&mut self, action: &str, mut details: serde_json::Value, result: &str) -> Result<(), String> {
        let Some(log) = &mut self.0 else { return Ok(()) };
        if action == "start" {
            if let (Some(d), Some(c)) = (details.as_object_mut(), self.1.as_object()) {
                d.extend(c.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        log.record(action, details, result)
    }
}

/// The pipeline's configuration, or its problems printed and exit code 2.
fn config(pipeline: &std::path::Path, sets: &[String]) -> Result<PipelineConfig, ExitCode> {
    PipelineConfig::load(pipeline, sets).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn savepoint(pipeline: &std::path::Path, sets: &[String]) -> ExitCode {
    let cfg = match config(pipeline, sets) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(ck) = &cfg.checkpoint else {
        eprintln!("error: {} has no `checkpoint:`; savepoints need it", pipeline.display());
        return ExitCode::from(2);
    };
    // Only the process holding the job's lock is the job: a pid from a file alone may be stale.
    let rill_engine::lock::Holder::Pid(pid) = rill_engine::lock::JobLock::holder(&cfg.work_dir) else {
        eprintln!("error: no running job `{}` holds {}", cfg.name, cfg.work_dir.join(rill_engine::lock::WORK_LOCK).display());
        return ExitCode::from(1);
    };
    let sent = std::process::Command::new("kill").args(["-USR1", &pid.to_string()]).status().is_ok_and(|s| s.success());
    if !sent {
        eprintln!("error: cannot signal process {pid}");
        return ExitCode::from(1);
    }
    // Running, as opposed to gone or exited but not yet reaped by its parent (a zombie).
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s.rsplit(')').next().map(|rest| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false)
    };
    let deadline = std::time::Instant::now() + ck.timeout + ck.interval * 2;
    while running() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    match rill_engine::checkpoint::complete(&ck.dir).ok().and_then(|mut v| v.pop()) {
        Some((epoch, path)) if path.join("_savepoint").exists() && !running() => {
            println!("savepoint {epoch}: {}", path.display());
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("error: job {pid} did not stop with a savepoint in time");
            ExitCode::from(1)
        }
    }
}

/// The checkpoint to resume from: `--from`, else the latest complete one of an unfinished
/// earlier run, else none. Checks that every instance of the plan has its state there.
fn restore_point(p: &JobPlan, from_scratch: bool, from: Option<&std::path::Path>) -> Result<Option<rill_engine::checkpoint::Checkpoint>, String> {
    let Some(ck) = &p.config.checkpoint else {
        return match from {
            Some(_) => Err("--from needs a pipeline with `checkpoint:`".into()),
            None => Ok(None),
        };
    };
    let cp = match from {
        Some(path) => Some(rill_engine::checkpoint::load_checked(path)?),
        None if from_scratch || ck.dir.join("_finished").exists() => {
            rill_engine::checkpoint::clear(&ck.dir).map_err(|e| e.to_string())?;
            None
        }
        None => {
            let (latest, skipped) = rill_engine::checkpoint::latest(&ck.dir)?;
            for s in skipped {
                eprintln!("skipping checkpoint {}: {}", s.epoch, s.reason);
            }
            latest
        }
    };
    let Some(cp) = cp else { return Ok(None) };
    let have = cp.by_instance();
    for n in &p.nodes {
        let before = have.keys().filter(|(c, _)| **c == *n.name).count() as u32;
        // A component new since the checkpoint starts empty; keyed transforms move key groups.
        let keyed = matches!(&n.spec, rill_engine::plan::NodeSpec::Transform(t) if t.key_by.is_some() || t.input_keys.is_some())
            || matches!(&n.spec, rill_engine::plan::NodeSpec::Source(s) if s.rescalable)
            || matches!(&n.spec, rill_engine::plan::NodeSpec::Sink(s) if s.rescalable);
        let stateless = n.role != rill_engine::config::Role::Source
            && have
                .iter()
                .filter(|((c, _), _)| **c == *n.name)
                .all(|(_, v)| v.state.as_ref().is_none_or(|v| matches!(v, rill_engine::checkpoint::SavedState::Operator(o) if o.is_empty())));
        if before != 0 && before != n.parallelism && !keyed && !stateless {
            return Err(format!(
                "checkpoint {} has {before} instance(s) of `{}`, the pipeline now has {}: only keyed transforms, stateless ones, Kafka sources and PostgreSQL sinks can change parallelism; other sources and sinks cannot (use --from-scratch)",
                cp.epoch, n.name, n.parallelism
            ));
        }
    }
    Ok(Some(cp))
}

/// The end-of-run summary as JSON (`rill run --json`).
pub fn summary_json(name: &str, r: &crate::JobReport) -> serde_json::Value {
    let outcome = match (r.interrupted, &r.savepoint) {
        (_, Some(_)) => "savepoint",
        (true, None) => "stopped",
        (false, None) => "finished",
    };
    let components: Vec<serde_json::Value> = r
        .components
        .iter()
        .map(|c| {
            serde_json::json!({
                "component": c.component, "type": c.type_name, "instances": c.instances,
                "records_in": c.records_in, "records_out": c.records_out, "rejected": c.rejected, "batches": c.batches,
                "reports": c.reports, "latency": c.latency.as_ref().map(|h| h.describe()),
            })
        })
        .collect();
    let c = &r.checkpoints;
    serde_json::json!({
        "job": name,
        "outcome": outcome,
        "elapsed_ms": r.elapsed.as_millis() as u64,
        "components": components,
        "dead_letters": {"count": r.dead_letters, "output": r.dead_letter_output},
        "checkpoints": {"completed": c.completed, "last_duration_ms": c.last_duration_ms, "max_duration_ms": c.max_duration_ms, "max_alignment_ms": c.max_alignment_ms, "last_bytes": c.last_bytes},
        "stopped_at_checkpoint": r.stopped_at,
        "savepoint": r.savepoint.as_ref().map(|s| s.display().to_string()),
        "restarts": r.restarts,
    })
}

/// The end-of-run summary.
pub fn summary(name: &str, r: &crate::JobReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let how = match (r.interrupted, r.stopped_at) {
        (true, Some(epoch)) => format!("stopped (Ctrl-C) at checkpoint {epoch}, which `rill run` resumes from,"),
        (true, None) => "stopped (Ctrl-C)".into(),
        _ if r.savepoint.is_some() => "stopped at a savepoint".into(),
        _ => "finished".into(),
    };
    let _ = writeln!(s, "job `{name}` {how} in {:.3} s", r.elapsed.as_secs_f64());
    // Columns as wide as their longest name (`logistic_regression` is wider than most).
    let cw = r.components.iter().map(|c| c.component.len()).max().unwrap_or(0).max(20);
    let tw = r.components.iter().map(|c| c.type_name.len()).max().unwrap_or(0).max(10);
    let _ = writeln!(s, "{:<cw$} {:<tw$} {:>4} {:>12} {:>12} {:>9} {:>9}", "component", "type", "inst", "records in", "records out", "rejected", "batches");
    for c in &r.components {
        let _ = writeln!(
            s,
            "{:<cw$} {:<tw$} {:>4} {:>12} {:>12} {:>9} {:>9}",
            c.component, c.type_name, c.instances, c.records_in, c.records_out, c.rejected, c.batches
        );
    }
    for c in &r.components {
        for line in &c.reports {
            let _ = writeln!(s, "{} {line}", c.component);
        }
        if let Some(h) = &c.latency {
            let _ = writeln!(s, "{} latency from source: {}", c.component, h.describe());
        }
    }
    let _ = writeln!(s, "dead letters: {} ({})", r.dead_letters, r.dead_letter_output);
    let c = &r.checkpoints;
    if c.completed > 0 {
        let _ = writeln!(
            s,
            "checkpoints: {} completed; last {} ms, longest {} ms, longest alignment {} ms, last size {} bytes",
            c.completed, c.last_duration_ms, c.max_duration_ms, c.max_alignment_ms, c.last_bytes
        );
    }
    if r.restarts > 0 {
        let _ = writeln!(s, "restarts after failures: {}", r.restarts);
    }
    s
}
