//! `file` source and sink.
//!
//! The source reads one file or every file of a directory (sorted by name), as JSON Lines or CSV.
//! Instance `s` of `p` reads files `s, s + p, ...`, so parallelism is at most the number of
//! files. With `follow: true` it keeps reading the last file as it grows until the job is
//! stopped, and, like `tail -F`, notices when that file is truncated or replaced (rotated: the
//! path names a new file) and reads the new contents from their beginning; a line the old file
//! ended without a newline is taken as its last line, not glued to the new contents. Its
//! position (file index, byte offset) is what a checkpoint records.

use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::Duration;

use rill_engine::config::{ConfigError, ConfigErrors, Spanned};
use rill_engine::operator::{Collector, OperatorContext, OperatorError, Sink};
use rill_engine::record::Batch;
use rill_engine::registry::{BuildContext, SinkSpec, SourceSpec};
use rill_engine::source::{Progress, Source, SourceContext, SourceOutput, SourceStatus};

use crate::format::{Decoder, Encoder, Format, FormatConfig};

/// Files that cannot be synced (`/dev/null`, some pipes) have nothing to make durable.
fn unsyncable(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::InvalidInput { Ok(()) } else { Err(e) }
}

/// An I/O error on `path`, naming it (an external error: the disk or the file system).
fn at(path: &std::path::Path) -> impl Fn(std::io::Error) -> OperatorError + '_ {
    move |e| OperatorError::external(format!("{}: {e}", path.display()))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSourceConfig {
    /// A file, or a directory whose files are all read.
    path: Spanned<String>,
    #[serde(default)]
    format: FormatConfig,
    /// Keep reading the last file as it grows, until the job is stopped.
    #[serde(default)]
    follow: bool,
    /// With `follow`, how often to look for new data.
    #[serde(default, with = "rill_engine::config::de::duration::option")]
    poll_interval: Option<Duration>,
    /// Replay at this many records per second (over all instances) instead of as fast as
    /// possible.
    rate: Option<Spanned<f64>>,
}

pub(crate) fn build_source(ctx: &BuildContext) -> Result<SourceSpec, ConfigErrors> {
    let cfg: FileSourceConfig = ctx.options()?;
    let format = cfg.format.build()?;
    let path = ctx.pipeline.resolve(&cfg.path.value);
    let files = list_files(&path).map_err(|m| {
        ConfigError::new(Some(&cfg.path.span), m).hint("a relative path is taken from the pipeline file's folder; check the name or create the file")
    })?;
    let n = files.len() as u32;
    let follow = cfg.follow;
    let poll = cfg.poll_interval.unwrap_or(Duration::from_millis(100));
    if let Some(r) = &cfg.rate {
        if !(r.value > 0.0 && r.value.is_finite()) {
            return Err(ConfigError::new(Some(&r.span), "`rate` must be a positive number of records per second").into());
        }
    }
    let rate = cfg.rate.as_ref().map(|r| r.value);
    let description = format!(
        "reads {} ({} file{}, {}){}",
        path.display(),
        n,
        if n == 1 { "" } else { "s" },
        match format {
            Format::Json => "JSON Lines",
            Format::Raw => "text lines",
            Format::Csv { .. } => "CSV",
        },
        if follow { ", following new data" } else { "" }
    ) + &rate.map(|r| format!(" at {r} records/s")).unwrap_or_default();
    let mut spec = SourceSpec::new(description, move |c: &SourceContext| {
        let mine: Vec<PathBuf> = files.iter().skip(c.subtask as usize).step_by(c.parallelism as usize).cloned().collect();
        let mut source = FileSource::new(mine, format.clone(), follow, poll);
        source.pace = rate.map(|r| crate::pace::Pace::new(r / c.parallelism as f64));
        Ok(source)
    });
    spec.max_parallelism = Some(n.max(1));
    if !follow {
        // Reads as fast as it is asked: instances keep within one poll of each other.
        spec.default_max_drift_ms = 0;
    }
    Ok(spec)
}

fn list_files(path: &std::path::Path) -> Result<Vec<PathBuf>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("input path `{}` cannot be read: {e}", path.display()))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| format!("cannot list directory `{}`: {e}", path.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("directory `{}` has no files", path.display()));
    }
    Ok(files)
}

pub struct FileSource {
    files: Vec<PathBuf>,
    sizes: Vec<u64>,
    format: Format,
    follow: bool,
    poll: Duration,
    current: usize,
    reader: Option<BufReader<File>>,
    decoder: Decoder,
    /// Bytes of the current line read so far (a line is consumed only once complete).
    line_buf: Vec<u8>,
    offset: u64,
    line: u64,
    pace: Option<crate::pace::Pace>,
}

impl FileSource {
    pub fn new(files: Vec<PathBuf>, format: Format, follow: bool, poll: Duration) -> FileSource {
        let decoder = Decoder::new(&format);
        FileSource { files, sizes: Vec::new(), format, follow, poll, current: 0, reader: None, decoder, line_buf: Vec::new(), offset: 0, line: 0, pace: None }
    }

    /// Reads up to `budget` records (and at most what fits in `out`).
    fn read(&mut self, out: &mut SourceOutput, budget: usize) -> Result<SourceStatus, OperatorError> {
        let limit = out.len().saturating_add(budget);
        while !out.is_full() && out.len() < limit {
            if self.reader.is_none() {
                let Some(path) = self.files.get(self.current) else { return Ok(SourceStatus::Finished) };
                let f = File::open(path).map_err(|e| OperatorError::external(format!("cannot open {}: {e}", path.display())))?;
                self.reader = Some(BufReader::with_capacity(256 * 1024, f));
                self.decoder = Decoder::new(&self.format);
                self.offset = 0;
                self.line = 0;
            }
            let reader = self.reader.as_mut().expect("opened above");
            let n = reader
                .read_until(b'\n', &mut self.line_buf)
                .map_err(|e| OperatorError::external(format!("cannot read {}: {e}", self.files[self.current].display())))?;
            let complete = self.line_buf.last() == Some(&b'\n');
            if complete {
                self.consume_line(out)?;
                continue;
            }
            debug_assert!(n == 0 || !complete);
            // End of the file for now.
            if self.following_last() && self.replaced()? {
                if !self.line_buf.is_empty() {
                    self.consume_line(out)?;
                }
                tracing::info!("{} was truncated or replaced: reading it from the beginning", self.files[self.current].display());
                self.reader = None;
                continue;
            }
            if self.following_last() {
                if let Some(size) = self.sizes.get_mut(self.current) {
                    *size = (*size).max(self.offset + self.line_buf.len() as u64);
                }
                return Ok(if out.is_empty() { SourceStatus::Idle(self.poll) } else { SourceStatus::Ready });
            }
            if !self.line_buf.is_empty() {
                self.consume_line(out)?;
            }
            self.reader = None;
            self.current += 1;
        }
        Ok(SourceStatus::Ready)
    }

    fn following_last(&self) -> bool {
        self.follow && self.current + 1 == self.files.len()
    }

    /// Whether the followed file at its end for now was replaced (its path names another file)
    /// or truncated (it is shorter than what was read of it). A path missing for the moment (in
    /// the middle of a rotation) is neither: it is looked at again at the next poll.
    fn replaced(&self) -> Result<bool, OperatorError> {
        use std::os::unix::fs::MetadataExt;
        let path = &self.files[self.current];
        let Ok(now) = std::fs::metadata(path) else { return Ok(false) };
        let open = self.reader.as_ref().expect("reading").get_ref().metadata().map_err(|e| OperatorError::external(format!("cannot stat {}: {e}", path.display())))?;
        Ok(now.ino() != open.ino() || now.dev() != open.dev() || now.len() < self.offset + self.line_buf.len() as u64)
    }

    /// Decodes the line in `line_buf`; `Err` when the whole file is unusable.
    fn consume_line(&mut self, out: &mut SourceOutput) -> Result<(), OperatorError> {
        let start = self.offset;
        self.offset += self.line_buf.len() as u64;
        self.line += 1;
        let text = self.line_buf.strip_suffix(b"\n").unwrap_or(&self.line_buf);
        match self.decoder.decode(text) {
            Ok(Some(mut r)) => {
                r.origin.offset = start;
                out.emit(r);
            }
            Ok(None) => {}
            Err(e) if e.fatal => {
                let file = self.files[self.current].display();
                return Err(OperatorError::user(format!("{} at {file}:{}:{}", e.message, self.line, e.column)));
            }
            Err(e) => {
                let file = self.files[self.current].display().to_string();
                out.reject_raw(
                    String::from_utf8_lossy(text),
                    format!("{} at {file}:{}:{}", e.message, self.line, e.column),
                    serde_json::json!({"file": file, "line": self.line, "column": e.column, "offset": start}),
                );
            }
        }
        self.line_buf.clear();
        Ok(())
    }
}

impl Source for FileSource {
    fn open(&mut self, _ctx: &SourceContext) -> Result<(), OperatorError> {
        self.sizes = self.files.iter().map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0)).collect();
        Ok(())
    }

    fn poll(&mut self, out: &mut SourceOutput) -> Result<SourceStatus, OperatorError> {
        let budget = match &mut self.pace {
            None => usize::MAX,
            Some(pace) => match pace.allowance(out.remaining() as u64) {
                Ok(n) => n as usize,
                Err(wait) => return Ok(SourceStatus::Idle(wait)),
            },
        };
        let before = out.len();
        let status = self.read(out, budget);
        if let Some(pace) = &mut self.pace {
            pace.sent((out.len() - before) as u64);
        }
        status
    }

    fn position(&self) -> serde_json::Value {
        serde_json::json!({"file": self.current, "offset": self.offset, "line": self.line})
    }


    fn restore(&mut self, position: &serde_json::Value) -> Result<(), OperatorError> {
        let bad = || OperatorError::new(format!("file source: checkpointed position {position} does not fit these files"));
        let file = position["file"].as_u64().ok_or_else(bad)? as usize;
        let offset = position["offset"].as_u64().ok_or_else(bad)?;
        self.current = file;
        self.reader = None;
        self.line_buf.clear();
        let Some(path) = self.files.get(file) else {
            return if file == self.files.len() { Ok(()) } else { Err(bad()) };
        };
        let mut f = File::open(path).map_err(|e| OperatorError::external(format!("cannot open {}: {e}", path.display())))?;
        f.seek(SeekFrom::Start(offset)).map_err(at(path))?;
        self.reader = Some(BufReader::with_capacity(256 * 1024, f));
        self.decoder = Decoder::new(&self.format);
        if let Format::Csv { header: true, .. } = self.format {
            // Read the header again for the column names.
            let mut header = Vec::new();
            BufReader::new(File::open(path).map_err(at(path))?).read_until(b'\n', &mut header).map_err(at(path))?;
            let _ = self.decoder.decode(header.strip_suffix(b"\n").unwrap_or(&header));
        }
        self.offset = offset;
        self.line = position["line"].as_u64().unwrap_or(0);
        if let Some(p) = &mut self.pace {
            p.restart();
        }
        Ok(())
    }

    fn progress(&self) -> Option<Progress> {
        let done: u64 = self.sizes.iter().take(self.current).sum::<u64>() + self.offset;
        Some(Progress { done, total: self.sizes.iter().sum() })
    }
}

// ---------------------------------------------------------------------------------------------

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSinkConfig {
    /// File to write (replaced at start unless `append`); parent directories are created.
    path: String,
    #[serde(default)]
    format: FormatConfig,
    #[serde(default)]
    append: bool,
}

pub(crate) fn build_sink(ctx: &BuildContext) -> Result<SinkSpec, ConfigErrors> {
    let cfg: FileSinkConfig = ctx.options()?;
    let format = cfg.format.build()?;
    let path = ctx.pipeline.resolve(&cfg.path);
    let append = cfg.append;
    let mut spec = SinkSpec::new(format!("writes {} (exactly-once with checkpoints)", path.display()), move |_: &OperatorContext| {
        Ok(FileSink {
            path: path.clone(),
            append,
            encoder: Encoder::new(&format),
            file: None,
            buf: Vec::new(),
            committed: 0,
            pending: Vec::new(),
            staged_len: 0,
            direct: true,
        })
    });
    spec.exactly_once = true;
    spec.max_parallelism = Some(1);
    Ok(spec)
}

/// Writes one file, exactly once with checkpoints.
///
/// Records of the current checkpoint go to `<path>.inprogress`. At a barrier that file is made
/// durable and renamed `<path>.pending-<epoch>` (pre-commit); when the checkpoint is complete it
/// is appended to `<path>` and removed (commit). The checkpoint records the length `<path>` has
/// once everything up to it is committed, so recovery can truncate anything written after it
/// (or by a commit interrupted half-way) and append what was pending again: nothing lost,
/// nothing twice. Without checkpoints, everything is committed at the end of the job.
pub struct FileSink {
    path: PathBuf,
    append: bool,
    encoder: Encoder,
    file: Option<File>,
    buf: Vec<u8>,
    /// Length of `path` with everything committed so far.
    committed: u64,
    /// Staged epochs: (epoch, pending file, its length).
    pending: Vec<(u64, PathBuf, u64)>,
    staged_len: u64,
    /// Without checkpoints: write straight to `path`, visible at once.
    direct: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct FileSinkCheckpoint {
    epoch: u64,
    /// Length of the output once every epoch up to `epoch` is committed.
    final_len: u64,
    /// Epochs staged but not yet committed at the checkpoint, in order.
    pending: Vec<(u64, u64)>,
}

impl FileSink {
    fn sibling(&self, suffix: &str) -> PathBuf {
        let mut name = self.path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
        name.push(suffix);
        self.path.with_file_name(name)
    }

    fn pending_path(&self, epoch: u64) -> PathBuf {
        self.sibling(&format!(".pending-{epoch}"))
    }

    fn open_staging(&mut self) -> Result<(), OperatorError> {
        let p = self.sibling(".inprogress");
        let f = File::create(&p).map_err(|e| OperatorError::external(format!("cannot create {}: {e}", p.display())))?;
        self.file = Some(f);
        self.staged_len = 0;
        Ok(())
    }

    /// Appends pending files up to `epoch` to the output, in order.
    fn publish(&mut self, epoch: u64) -> Result<(), OperatorError> {
        let ready: Vec<(u64, PathBuf, u64)> = self.pending.iter().filter(|(e, _, _)| *e <= epoch).cloned().collect();
        if ready.is_empty() {
            return Ok(());
        }
        let mut out = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(at(&self.path))?;
        for (e, p, len) in &ready {
            let mut src = File::open(p).map_err(|err| OperatorError::external(format!("cannot read {}: {err}", p.display())))?;
            std::io::copy(&mut src, &mut out).map_err(at(&self.path))?;
            out.sync_data().or_else(unsyncable).map_err(at(&self.path))?;
            std::fs::remove_file(p).map_err(at(p))?;
            self.committed += len;
            self.pending.retain(|(x, _, _)| x != e);
        }
        Ok(())
    }

    fn remove_leftovers(&self) -> Result<(), OperatorError> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
        let name = self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        for entry in std::fs::read_dir(dir).map_err(at(dir))?.flatten() {
            let n = entry.file_name().to_string_lossy().into_owned();
            if n.starts_with(&format!("{name}.pending-")) || n == format!("{name}.inprogress") {
                std::fs::remove_file(entry.path()).map_err(at(&entry.path()))?;
            }
        }
        Ok(())
    }
}

impl Sink for FileSink {
    fn open(&mut self, ctx: &OperatorContext) -> Result<(), OperatorError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| OperatorError::external(format!("cannot create {}: {e}", dir.display())))?;
        }
        self.direct = !ctx.checkpointing;
        if ctx.restoring {
            return Ok(()); // `recover` puts the output back to the checkpoint's state
        }
        if self.direct {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .write(true)
                .append(self.append)
                .truncate(!self.append)
                .open(&self.path)
                .map_err(|e| OperatorError::external(format!("cannot open {} for writing: {e}", self.path.display())))?;
            self.file = Some(f);
            return Ok(());
        }
        // A fresh start: replace (or, with `append`, extend) the output.
        self.remove_leftovers()?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(!self.append)
            .open(&self.path)
            .map_err(|e| OperatorError::external(format!("cannot open {} for writing: {e}", self.path.display())))?;
        self.committed = f.metadata().map_err(at(&self.path))?.len();
        self.open_staging()
    }

    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        self.buf.clear();
        self.encoder.encode_batch(&batch, &mut self.buf);
        let f = self.file.as_mut().expect("opened");
        f.write_all(&self.buf).map_err(|e| OperatorError::external(format!("cannot write {}: {e}", self.path.display())))?;
        self.staged_len += self.buf.len() as u64;
        Ok(())
    }

    fn pre_commit(&mut self, epoch: rill_engine::message::Epoch) -> Result<Option<Vec<u8>>, OperatorError> {
        let f = self.file.take().expect("opened");
        f.sync_data().or_else(unsyncable).map_err(at(&self.sibling(".inprogress")))?;
        drop(f);
        let pending = self.pending_path(epoch.0);
        std::fs::rename(self.sibling(".inprogress"), &pending).map_err(at(&pending))?;
        self.pending.push((epoch.0, pending, self.staged_len));
        self.open_staging()?;
        let cp = FileSinkCheckpoint {
            epoch: epoch.0,
            final_len: self.committed + self.pending.iter().map(|(_, _, l)| l).sum::<u64>(),
            pending: self.pending.iter().map(|(e, _, l)| (*e, *l)).collect(),
        };
        Ok(Some(serde_json::to_vec(&cp).expect("serializes")))
    }

    fn commit(&mut self, epoch: rill_engine::message::Epoch) -> Result<(), OperatorError> {
        self.publish(epoch.0)
    }

    fn recover(&mut self, state: Option<&[u8]>) -> Result<(), OperatorError> {
        let Some(state) = state else { return Ok(()) };
        let cp: FileSinkCheckpoint = serde_json::from_slice(state).map_err(|e| OperatorError::new(format!("file sink checkpoint: {e}")))?;
        // Pending epochs of the checkpoint that still have their file were not (fully) published.
        let still: Vec<(u64, u64)> = cp.pending.iter().filter(|(e, _)| self.pending_path(*e).exists()).cloned().collect();
        let changed = |what: String| {
            OperatorError::user(format!(
                "cannot recover {}: {what}, which checkpoint {} does not allow; it was changed outside Rill. Put it back, or start afresh with --from-scratch",
                self.path.display(),
                cp.epoch
            ))
        };
        for (e, len) in &still {
            let p = self.pending_path(*e);
            let have = std::fs::metadata(&p).map_err(|err| OperatorError::external(format!("cannot read {}: {err}", p.display())))?.len();
            if have != *len {
                return Err(changed(format!("its staged part {} holds {have} bytes, not the {len} staged", p.display())));
            }
        }
        let base = cp.final_len - still.iter().map(|(_, l)| l).sum::<u64>();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(&self.path)
            .map_err(|e| OperatorError::external(format!("cannot open {}: {e}", self.path.display())))?;
        // Longer is normal (written after the checkpoint, or a commit cut short); shorter means
        // committed output is missing, and padding it would forge it.
        let have = out.metadata().map_err(at(&self.path))?.len();
        if have < base {
            return Err(changed(format!("it holds {have} bytes, fewer than the {base} committed")));
        }
        out.set_len(base).map_err(at(&self.path))?;
        out.sync_data().or_else(unsyncable).map_err(at(&self.path))?;
        self.committed = base;
        self.pending = still.iter().map(|(e, l)| (*e, self.pending_path(*e), *l)).collect();
        self.publish(cp.epoch)?;
        debug_assert_eq!(std::fs::metadata(&self.path).map_err(at(&self.path))?.len(), cp.final_len, "published exactly the staged lengths");
        self.committed = cp.final_len;
        // Anything staged after the checkpoint is discarded: it will be produced again.
        self.remove_leftovers()?;
        self.open_staging()
    }

    fn close(&mut self) -> Result<(), OperatorError> {
        if self.direct {
            if let Some(f) = self.file.as_mut() {
                f.flush().map_err(at(&self.path))?;
                f.sync_data().or_else(unsyncable).map_err(at(&self.path))?;
            }
            return Ok(());
        }
        // The job ended: everything written is final.
        let last = self.pending.last().map(|(e, _, _)| *e).unwrap_or(0) + 1;
        self.pre_commit(rill_engine::message::Epoch(last))?;
        self.publish(u64::MAX)?;
        if let Some(f) = self.file.take() {
            drop(f);
            let _ = std::fs::remove_file(self.sibling(".inprogress"));
        }
        let out = std::fs::OpenOptions::new().append(true).open(&self.path).map_err(at(&self.path))?;
        out.sync_data().or_else(unsyncable).map_err(at(&self.path))?;
        Ok(())
    }
}
