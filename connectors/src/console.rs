//! `stdout` and `blackhole` sinks.

use std::io::Write;

use rill_engine::config::ConfigErrors;
use rill_engine::operator::{Collector, OperatorContext, OperatorError, Sink};
use rill_engine::record::Batch;
use rill_engine::registry::{BuildContext, SinkSpec};

use crate::format::{Encoder, FormatConfig};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StdoutConfig {
    #[serde(default)]
    format: FormatConfig,
}

pub(crate) fn build_stdout(ctx: &BuildContext) -> Result<SinkSpec, ConfigErrors> {
    let cfg: StdoutConfig = ctx.options()?;
    let format = cfg.format.build()?;
    let mut spec = SinkSpec::new("prints to standard output (at-least-once)", move |_: &OperatorContext| {
        Ok(Stdout { encoder: Encoder::new(&format), buf: Vec::new() })
    });
    spec.max_parallelism = Some(1);
    Ok(spec)
}

pub struct Stdout {
    encoder: Encoder,
    buf: Vec<u8>,
}

impl Sink for Stdout {
    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        self.buf.clear();
        self.encoder.encode_batch(&batch, &mut self.buf);
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)?;
        out.flush()?;
        Ok(())
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct BlackholeConfig {}

pub(crate) fn build_blackhole(ctx: &BuildContext) -> Result<SinkSpec, ConfigErrors> {
    let _: BlackholeConfig = ctx.options()?;
    Ok(SinkSpec::new("discards records (counted in the summary)", |_: &OperatorContext| Ok(Blackhole)))
}

/// Discards records; the runtime's counters count them.
pub struct Blackhole;

impl Sink for Blackhole {
    fn write(&mut self, batch: Batch, _out: &mut Collector) -> Result<(), OperatorError> {
        drop(batch);
        Ok(())
    }
}
