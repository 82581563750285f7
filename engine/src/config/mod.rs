//! Pipeline files: loading, `--set` overrides, and the top-level structure.
//!
//! A pipeline is named components in the style of Vector: `sources`, `transforms` and `sinks`,
//! each a map of name → `{type, inputs, parallelism, ...options}`. This module checks the shape
//! common to every component; each component type checks its own options (see
//! [`crate::registry`]). Every problem is collected, not just the first.

pub mod de;
pub mod interpolate;
pub mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

pub use de::{from_node, DeError, Spanned};
pub use yaml::{Node, NodeKind, Span};

/// An ordered `name: value` map from a pipeline file (serde's maps do not keep order).
#[derive(Debug, Clone)]
pub struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of `name: value`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Ordered<T>, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = m.next_entry::<String, T>()? {
                    out.push((k, v));
                }
                Ok(Ordered(out))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// One problem in a pipeline: what, where, and what to do about it.
#[derive(Clone, Debug)]
pub struct ConfigError {
    pub span: Option<Span>,
    pub message: String,
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(span: Option<&Span>, message: impl Into<String>) -> ConfigError {
        ConfigError { span: span.cloned(), message: message.into(), hint: None }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> ConfigError {
        self.hint = Some(hint.into());
        self
    }
}

/// serde reports only the first unknown option of a map. Given that error and the document it
/// came from, returns it with one error for every other unknown key of the same map, so that
/// `validate` shows all of them at once (the known names are those the error lists).
pub fn every_unknown_field(root: &Node, first: ConfigError) -> Vec<ConfigError> {
    // "unknown field `colour`, expected one of `count`, `rate`": the name, then what follows.
    let parsed = first.message.strip_prefix("unknown field `").and_then(|r| r.split_once('`'));
    let (Some(span), Some((name, rest))) = (first.span.clone(), parsed) else { return vec![first] };
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    fn map_with_key<'a>(n: &'a Node, span: &Span) -> Option<&'a [(Node, Node)]> {
        match &n.kind {
            NodeKind::Map(entries) if entries.iter().any(|(k, _)| k.span == *span) => Some(entries),
            NodeKind::Map(entries) => entries.iter().find_map(|(_, v)| map_with_key(v, span)),
            NodeKind::Seq(items) => items.iter().find_map(|v| map_with_key(v, span)),
            NodeKind::Scalar { .. } => None,
        }
    }
    let Some(entries) = map_with_key(root, &span) else { return vec![first] };
    let mut out = Vec::new();
    for (k, _) in entries {
        match &k.kind {
            _ if k.span == span => out.push(first.clone()),
            NodeKind::Scalar { text, .. } if text != name && !expected.contains(&text.as_str()) => {
                out.push(ConfigError { span: Some(k.span.clone()), message: format!("unknown field `{text}`{rest}"), hint: first.hint.clone() })
            }
            _ => {}
        }
    }
    out
}

impl From<DeError> for ConfigError {
    fn from(e: DeError) -> ConfigError {
        let hint = if e.message.contains("unknown field") {
            Some("remove the option or fix its spelling; the README lists every option of each component type".to_string())
        } else {
            None
        };
        ConfigError { span: e.span, message: e.message, hint }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.span {
            Some(s) => write!(f, "{s}: error: {}", self.message)?,
            None => write!(f, "error: {}", self.message)?,
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  help: {h}")?;
        }
        Ok(())
    }
}

/// Every problem found in a pipeline.
#[derive(Clone, Debug, Default)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// With every value that came from the environment written as its `${VAR}` again.
    pub fn scrubbed(self, values: &interpolate::Interpolated) -> ConfigErrors {
        if values.is_empty() {
            return self;
        }
        ConfigErrors(
            self.0
                .into_iter()
                .map(|e| ConfigError { message: values.scrub(&e.message), hint: e.hint.map(|h| values.scrub(&h)), ..e })
                .collect(),
        )
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl From<DeError> for ConfigErrors {
    fn from(e: DeError) -> Self {
        ConfigErrors(vec![e.into()])
    }
}

/// Records per batch unless `batch_size` says otherwise: large enough to amortise a channel
/// operation and an actor message over many records (W0 in BENCHMARKS.md), small enough that a
/// batch of typical records stays well under a megabyte.
pub const DEFAULT_BATCH_SIZE: usize = 2048;

/// Which section a component is declared in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Source,
    Transform,
    Sink,
}

impl Role {
    pub fn section(self) -> &'static str {
        match self {
            Role::Source => "sources",
            Role::Transform => "transforms",
            Role::Sink => "sinks",
        }
    }
}

/// One component as written, before its type has checked its options.
#[derive(Clone, Debug)]
pub struct ComponentConfig {
    pub name: String,
    pub name_span: Span,
    pub role: Role,
    pub type_name: Spanned<String>,
    /// `name` or `name.port` references.
    pub inputs: Vec<Spanned<String>>,
    pub parallelism: Option<Spanned<u32>>,
    /// Sources: `event_time` and `ingestion_time` (see [`crate::time`]).
    pub event_time: Option<Node>,
    pub ingestion_time: Option<Node>,
    /// The component's own options (everything but `type`, `inputs`, `parallelism` and, for
    /// sources, the time options).
    pub options: Node,
    /// `redact: [field, ...]`: fields kept out of dead letters (here and downstream).
    pub redact: Vec<String>,
    /// Problems that leave the component usable for further checks (a default was taken);
    /// the plan still fails with them.
    pub problems: Vec<ConfigError>,
}

/// Where rejected records go.
#[derive(Clone, Debug, PartialEq)]
pub enum DeadLetterConfig {
    File(PathBuf),
    Stdout,
    Stderr,
    /// Discarded but counted.
    Discard,
}

impl DeadLetterConfig {
    /// Where dead letters go, for messages.
    pub fn describe(&self) -> String {
        match self {
            DeadLetterConfig::File(p) => p.display().to_string(),
            DeadLetterConfig::Stdout => "stdout".into(),
            DeadLetterConfig::Stderr => "stderr".into(),
            DeadLetterConfig::Discard => "discard".into(),
        }
    }
}

/// A whole pipeline file, structurally checked.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub file: PathBuf,
    /// The pipeline file's folder: relative paths in it are taken from here ([`Self::resolve`]).
    pub folder: PathBuf,
    pub name: String,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub batch_size: usize,
    /// Folder for the job's files (dead letters by default; state and checkpoints later).
    pub work_dir: PathBuf,
    pub dead_letter: DeadLetterConfig,
    /// Keyed-state entries each state keeps in memory before spilling to sled.
    pub state_cache_entries: usize,
    /// Periodic checkpoints (exactly-once), if configured.
    pub checkpoint: Option<CheckpointConfig>,
    /// Restarts after a failure, if configured.
    pub restart: Option<RestartConfig>,
    pub components: Vec<ComponentConfig>,
    /// Named secrets (`keys:`), for expressions that hash or encrypt with them.
    pub keys: crate::secrets::Keys,
    /// The audit trail, if configured (`audit: {path, key}`).
    pub audit: Option<crate::audit::AuditConfig>,
    /// The HTTP API, if configured (`http:`; `rill run --http ADDR` too).
    pub http: Option<HttpConfig>,
    /// Several processes sharing the Kafka partitions, if configured.
    pub scale_out: Option<ScaleOutConfig>,
    /// The environment's values put in for `${VAR}`, to be shown as `${VAR}` again.
    pub interpolated: interpolate::Interpolated,
    /// The whole document, for checks that need more than the common structure.
    pub root: Node,
    /// Problems found that did not stop the checks (an option out of range: its default was
    /// taken). [`crate::plan::JobPlan::build`] reports them with its own and fails.
    pub problems: Vec<ConfigError>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    name: Option<String>,
    parallelism: Option<Spanned<u32>>,
    max_parallelism: Option<Spanned<u32>>,
    batch_size: Option<Spanned<usize>>,
    work_dir: Option<String>,
    dead_letter: Option<DeadLetterRaw>,
    state: Option<StateConfig>,
    checkpoint: Option<CheckpointRaw>,
    restart: Option<RestartRaw>,
    /// Named secrets, read by [`crate::secrets::Keys::load`].
    #[serde(rename = "keys")]
    _keys: Option<serde::de::IgnoredAny>,
    audit: Option<AuditRaw>,
    http: Option<HttpRaw>,
    scale_out: Option<ScaleOutRaw>,
    #[serde(rename = "sources")]
    _sources: Option<serde::de::IgnoredAny>,
    #[serde(rename = "transforms")]
    _transforms: Option<serde::de::IgnoredAny>,
    #[serde(rename = "sinks")]
    _sinks: Option<serde::de::IgnoredAny>,
    /// Unit tests, for `rill test` (which checks them).
    #[serde(rename = "tests")]
    _tests: Option<serde::de::IgnoredAny>,
}

/// `scale_out:` at the top level: several `rill run` processes of this pipeline share the
/// partitions of its Kafka sources. Each partition number is a *task*, a job of its own (with
/// its own state, checkpoints and transactions) that one process runs at a time; the processes
/// agree who runs which through a Kafka consumer group (see `rill::scale_out`).
#[derive(Clone, Debug)]
pub struct ScaleOutConfig {
    /// The consumer group the processes join to share the tasks (default `rill-<name>-processes`).
    pub group: String,
    /// How long a process may go unheard before its tasks move to the others.
    pub session_timeout: std::time::Duration,
    /// Set by the coordinating process for the job it starts for one task: this run is that
    /// task (its folders are `task-N` below the pipeline's, its Kafka sources read partition N).
    pub task: Option<u32>,
    /// Where `scale_out:` is written.
    pub span: Span,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleOutRaw {
    group: Option<String>,
    #[serde(default, with = "de::duration::option")]
    session_timeout: Option<std::time::Duration>,
    task: Option<u32>,
}

/// `checkpoint:` at the top level.
#[derive(Clone, Debug)]
pub struct CheckpointConfig {
    pub interval: std::time::Duration,
    pub dir: PathBuf,
    /// Complete checkpoints kept.
    pub retain: usize,
    /// A checkpoint not complete after this long is abandoned.
    pub timeout: std::time::Duration,
    /// Consecutive failed checkpoints tolerated before the job fails.
    pub tolerable_failed_checkpoints: u32,
}

/// Consecutive checkpoint failures tolerated unless `checkpoint.tolerable_failed_checkpoints` says otherwise.
pub const DEFAULT_TOLERABLE_FAILED_CHECKPOINTS: u32 = 3;

/// `restart:` at the top level: how often, and how patiently, a failed job is restarted from its
/// latest checkpoint before it fails for good.
#[derive(Clone, Debug)]
pub struct RestartConfig {
    pub max_attempts: u32,
    /// Wait before the first restart; doubled for each further one.
    pub backoff: std::time::Duration,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartRaw {
    max_attempts: u32,
    #[serde(default, with = "de::duration::option")]
    backoff: Option<std::time::Duration>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckpointRaw {
    #[serde(with = "de::duration")]
    interval: std::time::Duration,
    dir: Option<String>,
    retain: Option<usize>,
    #[serde(default, with = "de::duration::option")]
    timeout: Option<std::time::Duration>,
    tolerable_failed_checkpoints: Option<u32>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditRaw {
    path: String,
    /// The name of a key in `keys:`.
    key: Spanned<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpRaw {
    listen: Spanned<String>,
    tls: Option<HttpTls>,
    tokens: Option<TokensRaw>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensRaw {
    file: String,
}

/// `http:` at the top level: the HTTP API (metrics, status, control, the live page).
#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub listen: std::net::SocketAddr,
    pub tls: Option<HttpTls>,
    /// The tokens file (`NAME ROLE TOKEN` a line): with it every endpoint needs a token, and
    /// the control endpoints are served.
    pub tokens: Option<PathBuf>,
}

/// `http.tls`: PEM files; with `client_ca`, clients must present a certificate it signed.
#[derive(serde::Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct HttpTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
}

impl HttpConfig {
    /// `listen` as given (`--http` or `http.listen`), checked: an address that is not loopback
    /// needs tokens, or anyone who reaches it could read (and, were control served, stop) the job.
    pub fn check(listen: &str, tokens: bool) -> Result<std::net::SocketAddr, (String, String)> {
        let addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|e| (format!("`{listen}` is not an address to listen on ({e})"), "give an IP address and a port, e.g. `127.0.0.1:8642`".to_string()))?;
        if !addr.ip().is_loopback() && !tokens {
            return Err((
                format!("the HTTP API would listen on {addr}, which is not a loopback address, without `http.tokens`"),
                "add `tokens: {file: ...}` under `http:` (every endpoint then needs a token), or listen on 127.0.0.1".to_string(),
            ));
        }
        Ok(addr)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StateConfig {
    cache_entries: Option<usize>,
}

/// The most instances one component may have: each is an actor with its own channels, and
/// a machine runs them on its cores.
pub const MAX_INSTANCES: usize = 1024;
/// The most key groups (`max_parallelism`), as in Flink.
pub const MAX_KEY_GROUPS: usize = 32_768;
/// The most records in one batch.
pub const MAX_BATCH_SIZE: usize = 1 << 20;

/// `v` if it is between 1 and `max`.
fn in_range(v: &Spanned<usize>, what: &str, max: usize) -> Result<usize, ConfigError> {
    if (1..=max).contains(&v.value) {
        Ok(v.value)
    } else {
        Err(ConfigError::new(Some(&v.span), format!("`{what}` must be between 1 and {max}, not {}", v.value)))
    }
}

/// Keyed-state entries kept in memory per state unless `state.cache_entries` says otherwise.
pub const DEFAULT_STATE_CACHE_ENTRIES: usize = 1_000_000;

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum DeadLetterRaw {
    Path(String),
    Spec(DeadLetterSpec),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterSpec {
    #[serde(rename = "type")]
    kind: String,
    path: Option<String>,
}

/// `path` as the pipeline in `folder` means it: absolute as it is, relative from `folder`.
fn resolve_in(folder: &Path, path: &str) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() || folder.as_os_str().is_empty() {
        p.to_path_buf()
    } else {
        folder.join(p)
    }
}

impl PipelineConfig {
    /// A path option of the pipeline (a file to read or write, a model, a certificate): a
    /// relative one is taken from the pipeline file's folder, so that a pipeline runs the same
    /// from any current directory.
    pub fn resolve(&self, path: &str) -> PathBuf {
        resolve_in(&self.folder, path)
    }

    /// The fields each component keeps out of its dead letters: its own `redact` and that of
    /// every component upstream of it (a field is as sensitive after a map as before).
    pub fn redacted_fields(&self) -> std::collections::HashMap<String, Vec<String>> {
        let by_name: std::collections::HashMap<&str, &ComponentConfig> = self.components.iter().map(|c| (c.name.as_str(), c)).collect();
        let mut out = std::collections::HashMap::new();
        for c in &self.components {
            let (mut seen, mut todo, mut fields) = (std::collections::HashSet::new(), vec![c.name.as_str()], Vec::new());
            while let Some(name) = todo.pop() {
                let Some(c) = by_name.get(name).filter(|_| seen.insert(name)) else { continue };
                fields.extend(c.redact.iter().cloned());
                todo.extend(c.inputs.iter().map(|i| i.value.split('.').next().unwrap_or_default()));
            }
            fields.sort();
            fields.dedup();
            if !fields.is_empty() {
                out.insert(c.name.clone(), fields);
            }
        }
        out
    }

    /// Reads `file`, applies `--set` overrides (`a.b.c=value`), and checks the structure.
    pub fn load(file: &Path, sets: &[String]) -> Result<PipelineConfig, ConfigErrors> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            ConfigError::new(None, format!("cannot read pipeline file {}: {e}", file.display()))
                .hint("check the path; `rill validate FILE` takes a YAML pipeline")
        })?;
        Self::parse(&text, &file.display().to_string(), sets)
    }

    /// Like [`load`](Self::load), from text.
    pub fn parse(text: &str, file: &str, sets: &[String]) -> Result<PipelineConfig, ConfigErrors> {
        Self::from_root(Self::document(text, file)?, file, sets)
    }

    /// The YAML document of a pipeline file, not checked yet.
    pub fn document(text: &str, file: &str) -> Result<Node, ConfigErrors> {
        Node::parse(text, file).map_err(|e| {
            ConfigError::new(Some(&e.span), format!("invalid YAML: {}", e.message))
                .hint("check indentation and quoting around this place")
                .into()
        })
    }

    /// Like [`parse`](Self::parse), from the document (`file` names where it came from).
    pub fn from_root(mut root: Node, file: &str, sets: &[String]) -> Result<PipelineConfig, ConfigErrors> {
        let mut errors = Vec::new();
        let mut problems = Vec::new();
        for (i, set) in sets.iter().enumerate() {
            if let Err(e) = apply_set(&mut root, set, i + 1) {
                errors.push(e);
            }
        }
        let mut interpolated = interpolate::Interpolated::default();
        interpolate::interpolate(&mut root, &mut errors, &mut interpolated);
        if !matches!(root.kind, NodeKind::Map(_)) {
            return Err(ConfigError::new(Some(&root.span), "a pipeline must be a map with `sources`, `transforms` and `sinks`").into());
        }
        let top: Option<TopLevel> = match from_node(&root) {
            Ok(t) => Some(t),
            Err(e) => {
                let mut e: ConfigError = e.into();
                if e.message.contains("unknown field") {
                    e.hint = Some("top-level keys are: name, parallelism, max_parallelism, batch_size, work_dir, dead_letter, state, checkpoint, restart, keys, audit, http, scale_out, sources, transforms, sinks, tests".into());
                }
                errors.extend(every_unknown_field(&root, e));
                None
            }
        };
        let name = top.as_ref().and_then(|t| t.name.clone()).unwrap_or_else(|| {
            Path::new(file).file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "job".into())
        });
        let within = |v: Option<Spanned<usize>>, what: &str, max: usize, default: usize, errors: &mut Vec<ConfigError>| match v {
            Some(p) => match in_range(&p, what, max) {
                Ok(v) => v,
                Err(e) => {
                    errors.push(e);
                    default
                }
            },
            None => default,
        };
        let widen = |v: Option<Spanned<u32>>| v.map(|p| Spanned { value: p.value as usize, span: p.span });
        let parallelism = within(widen(top.as_ref().and_then(|t| t.parallelism.clone())), "parallelism", MAX_INSTANCES, 1, &mut problems) as u32;
        let max_parallelism = within(
            widen(top.as_ref().and_then(|t| t.max_parallelism.clone())),
            "max_parallelism",
            MAX_KEY_GROUPS,
            crate::exchange::DEFAULT_MAX_PARALLELISM as usize,
            &mut problems,
        ) as u32;
        let batch_size = within(top.as_ref().and_then(|t| t.batch_size.clone()), "batch_size", MAX_BATCH_SIZE, DEFAULT_BATCH_SIZE, &mut problems);
        // Relative paths are the pipeline file's folder's, wherever `rill` runs.
        let folder = Path::new(file).parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: &str| resolve_in(&folder, p);
        let work_dir = top.as_ref().and_then(|t| t.work_dir.as_deref()).map(resolve).unwrap_or_else(|| resolve(".rill").join(&name));
        let scale_out = top.as_ref().and_then(|t| t.scale_out.as_ref()).map(|s| ScaleOutConfig {
            group: s.group.clone().unwrap_or_else(|| format!("rill-{name}-processes")),
            session_timeout: s.session_timeout.unwrap_or(std::time::Duration::from_secs(10)),
            task: s.task,
            span: root.get("scale_out").map(|n| n.span.clone()).unwrap_or_else(|| root.span.clone()),
        });
        // A task's folders are its own, below the pipeline's (so dead letters are too).
        let task_dir = |dir: PathBuf| match scale_out.as_ref().and_then(|s| s.task) {
            Some(t) => dir.join(format!("task-{t}")),
            None => dir,
        };
        let work_dir = task_dir(work_dir);
        let task_file = |file: PathBuf| match (file.parent(), file.file_name()) {
            (Some(dir), Some(name)) => task_dir(dir.to_path_buf()).join(name),
            _ => file,
        };
        let dead_letter = match top.as_ref().and_then(|t| t.dead_letter.as_ref()) {
            None => DeadLetterConfig::File(work_dir.join("dead_letter.jsonl")),
            Some(DeadLetterRaw::Path(p)) => DeadLetterConfig::File(task_file(resolve(p))),
            Some(DeadLetterRaw::Spec(s)) => match (s.kind.as_str(), &s.path) {
                ("file", Some(p)) => DeadLetterConfig::File(task_file(resolve(p))),
                ("stdout", None) => DeadLetterConfig::Stdout,
                ("stderr", None) => DeadLetterConfig::Stderr,
                ("blackhole", None) => DeadLetterConfig::Discard,
                _ => {
                    errors.push(
                        ConfigError::new(root.get("dead_letter").map(|n| &n.span), "invalid `dead_letter`")
                            .hint("write `dead_letter: {type: file, path: FILE}`, `{type: stdout}`, `{type: stderr}` or `{type: blackhole}`"),
                    );
                    DeadLetterConfig::Discard
                }
            },
        };

        let mut components = Vec::new();
        let mut seen: std::collections::HashMap<String, Span> = Default::default();
        for role in [Role::Source, Role::Transform, Role::Sink] {
            let Some(section) = root.get(role.section()) else { continue };
            if section.is_null() {
                continue;
            }
            let Some(entries) = section.entries() else {
                errors.push(ConfigError::new(Some(&section.span), format!("`{}` must be a map of name → component", role.section())));
                continue;
            };
            for (k, v) in entries {
                let Some(name) = k.as_str().map(str::to_string) else {
                    errors.push(ConfigError::new(Some(&k.span), "a component name must be a plain string"));
                    continue;
                };
                if let Some(first) = seen.get(&name) {
                    errors.push(ConfigError::new(Some(&k.span), format!("component `{name}` is declared twice (first at {first})")));
                    continue;
                }
                if name.is_empty() || name.contains(['.', ' ']) {
                    errors.push(
                        ConfigError::new(Some(&k.span), format!("invalid component name `{name}`"))
                            .hint("use letters, digits, `_` and `-`; `.` separates a component from its output port in `inputs`"),
                    );
                    continue;
                }
                seen.insert(name.clone(), k.span.clone());
                match component(&name, k, v, role) {
                    Ok(c) => components.push(c),
                    Err(mut es) => errors.append(&mut es),
                }
            }
        }
        let keys = match root.get("keys") {
            Some(k) => crate::secrets::Keys::load(k, &folder, &mut errors),
            None => crate::secrets::Keys::default(),
        };
        let audit = top.as_ref().and_then(|t| t.audit.as_ref()).and_then(|a| match keys.get(&a.key.value) {
            Some(key) => Some(crate::audit::AuditConfig { path: task_file(resolve(&a.path)), key: key.clone() }),
            None => {
                errors.push(
                    ConfigError::new(Some(&a.key.span), format!("`audit.key` names key `{}`, which `keys:` does not define", a.key.value))
                        .hint("add it under `keys:`, e.g. `keys: {audit_key: {env: RILL_AUDIT_KEY}}`"),
                );
                None
            }
        });
        let http = top.as_ref().and_then(|t| t.http.as_ref()).and_then(|h| match HttpConfig::check(&h.listen.value, h.tokens.is_some()) {
            Ok(listen) => Some(HttpConfig {
                listen,
                tls: h.tls.as_ref().map(|t| HttpTls {
                    cert: resolve(&t.cert).display().to_string(),
                    key: resolve(&t.key).display().to_string(),
                    client_ca: t.client_ca.as_deref().map(|c| resolve(c).display().to_string()),
                }),
                tokens: h.tokens.as_ref().map(|t| resolve(&t.file)),
            }),
            Err((msg, hint)) => {
                errors.push(ConfigError::new(Some(&h.listen.span), msg).hint(hint));
                None
            }
        });
        if components.iter().all(|c| c.role != Role::Source) && errors.is_empty() {
            errors.push(ConfigError::new(Some(&root.span), "the pipeline has no sources").hint("add a `sources:` section"));
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).scrubbed(&interpolated));
        }
        let checkpoint = top.as_ref().and_then(|t| t.checkpoint.as_ref()).map(|c| CheckpointConfig {
            interval: c.interval.max(std::time::Duration::from_millis(1)),
            dir: c.dir.as_deref().map(|d| task_dir(resolve(d))).unwrap_or_else(|| work_dir.join("checkpoints")),
            retain: c.retain.unwrap_or(3).max(1),
            timeout: c.timeout.unwrap_or(std::time::Duration::from_secs(60)),
            tolerable_failed_checkpoints: c.tolerable_failed_checkpoints.unwrap_or(DEFAULT_TOLERABLE_FAILED_CHECKPOINTS),
        });
        problems.extend(components.iter().flat_map(|c| c.problems.iter().cloned()));
        Ok(PipelineConfig {
            file: PathBuf::from(file),
            folder,
            name,
            parallelism,
            max_parallelism,
            batch_size,
            work_dir,
            dead_letter,
            state_cache_entries: top.as_ref().and_then(|t| t.state.as_ref()).and_then(|s| s.cache_entries).unwrap_or(DEFAULT_STATE_CACHE_ENTRIES),
            checkpoint,
            restart: top.as_ref().and_then(|t| t.restart.as_ref()).map(|r| RestartConfig {
                max_attempts: r.max_attempts,
                backoff: r.backoff.unwrap_or(std::time::Duration::from_secs(1)),
            }),
            components,
            keys,
            audit,
            http,
            scale_out,
            interpolated,
            problems,
            root,
        })
    }
}

fn component(name: &str, key: &Node, node: &Node, role: Role) -> Result<ComponentConfig, Vec<ConfigError>> {
    let Some(entries) = node.entries() else {
        return Err(vec![ConfigError::new(Some(&node.span), format!("component `{name}` must be a map with at least `type`"))]);
    };
    let mut errors = Vec::new();
    let mut type_name = None;
    let mut inputs = Vec::new();
    let mut parallelism = None;
    let mut options = Vec::new();
    let mut problems = Vec::new();
    let mut inputs_given = false;
    let mut redact = Vec::new();
    let (mut event_time, mut ingestion_time) = (None, None);
    for (k, v) in entries {
        match k.as_str() {
            Some("event_time") if role == Role::Source => event_time = Some(v.clone()),
            Some("ingestion_time") if role == Role::Source => ingestion_time = Some(v.clone()),
            Some("type") => match from_node::<Spanned<String>>(v) {
                Ok(t) => type_name = Some(t),
                Err(e) => errors.push(e.into()),
            },
            Some("inputs") => {
                inputs_given = true;
                match from_node::<Vec<Spanned<String>>>(v) {
                    Ok(i) => inputs = i,
                    Err(e) => errors.push(ConfigError::from(e).hint("write `inputs: [name, ...]`")),
                }
            }
            Some("redact") => match from_node::<Vec<String>>(v) {
                Ok(r) => redact = r,
                Err(e) => errors.push(ConfigError::from(e).hint("write `redact: [field, ...]`: top-level fields kept out of dead letters")),
            },
            Some("parallelism") => match from_node::<Spanned<u32>>(v) {
                Ok(p) => match in_range(&Spanned { value: p.value as usize, span: p.span.clone() }, "parallelism", MAX_INSTANCES) {
                    Ok(_) => parallelism = Some(p),
                    Err(e) => problems.push(e),
                },
                Err(e) => errors.push(e.into()),
            },
            _ => options.push((k.clone(), v.clone())),
        }
    }
    let Some(type_name) = type_name else {
        errors.push(ConfigError::new(Some(&key.span), format!("component `{name}` has no `type`")).hint("add `type: ...`; `rill validate --help` lists the types"));
        return Err(errors);
    };
    match role {
        Role::Source if inputs_given => errors.push(ConfigError::new(
            node.get("inputs").map(|n| &n.span),
            format!("source `{name}` cannot have `inputs`"),
        )),
        Role::Transform | Role::Sink if inputs.is_empty() => errors.push(
            ConfigError::new(Some(&key.span), format!("{} `{name}` has no inputs", if role == Role::Sink { "sink" } else { "transform" }))
                .hint("add `inputs: [a_source_or_transform]`"),
        ),
        _ => {}
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ComponentConfig {
        problems,
        name: name.to_string(),
        name_span: key.span.clone(),
        role,
        type_name,
        inputs,
        parallelism,
        event_time,
        ingestion_time,
        options: Node { span: node.span.clone(), kind: NodeKind::Map(options) },
        redact,
    })
}

fn apply_set(root: &mut Node, set: &str, index: usize) -> Result<(), ConfigError> {
    let origin = format!("--set #{index}");
    let Some((path, value)) = set.split_once('=') else {
        return Err(ConfigError::new(None, format!("{origin} `{set}` has no `=`")).hint("write --set path.to.option=value"));
    };
    let value = Node::parse(value, &format!("<{origin}>"))
        .map_err(|e| ConfigError::new(Some(&e.span), format!("{origin}: invalid value: {}", e.message)))?;
    let parts: Vec<&str> = path.trim().split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        return Err(ConfigError::new(None, format!("{origin}: invalid path `{path}`")).hint("write --set sources.NAME.option=value"));
    }
    // `--set path=null` takes the option out (its default applies); a quoted "null" is a string.
    if value.is_null() {
        root.remove_path(&parts);
        return Ok(());
    }
    root.set_path(&parts, value).map_err(|e| ConfigError::new(None, format!("{origin} `{path}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_structural_problem() {
        let y = "name: x\ncolour: red\nsources:\n  a: {type: file, inputs: [b]}\ntransforms:\n  t: {type: filter}\nsinks:\n  s: {inputs: [t]}\n";
        let e = PipelineConfig::parse(y, "p.yaml", &[]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("p.yaml:2:1: error: unknown field `colour`"), "{text}");
        assert!(text.contains("source `a` cannot have `inputs`"), "{text}");
        assert!(text.contains("transform `t` has no inputs"), "{text}");
        assert!(text.contains("p.yaml:8:3: error: component `s` has no `type`"), "{text}");
    }

    #[test]
    fn set_overrides_options() {
        let y = "parallelism: 2\nsources:\n  a: {type: generator, count: 5}\n";
        let c = PipelineConfig::parse(y, "p", &["parallelism=3".into(), "sources.a.count=7".into()]).unwrap();
        assert_eq!(c.parallelism, 3);
        assert_eq!(c.components[0].options.get("count").unwrap().as_str(), Some("7"));
    }
}
