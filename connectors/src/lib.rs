//! Rill's connectors: where records come from and go to.

pub mod console;
pub mod file;
pub mod format;
pub mod generator;
pub mod kafka;
pub mod lookup;
pub mod postgres;
mod options;
mod pace;
pub mod socket;
pub mod tls;

use rill_engine::registry::Registry;

/// Registers the sources `file`, `socket`, `generator`, `kafka` and the sinks `file`, `socket`,
/// `kafka`, `stdout`, `blackhole`.
pub fn register(registry: &mut Registry) {
    registry.register_source("file", file::build_source);
    registry.register_source("socket", socket::build_source);
    registry.register_source("generator", generator::build);
    registry.register_source("kafka", kafka::source::build);
    registry.register_source("postgres", postgres::source::build);
    registry.register_transform("lookup", lookup::build);
    registry.register_sink("file", file::build_sink);
    registry.register_sink("socket", socket::build_sink);
    registry.register_sink("kafka", kafka::sink::build);
    registry.register_sink("postgres", postgres::sink::build);
    registry.register_sink("stdout", console::build_stdout);
    registry.register_sink("blackhole", console::build_blackhole);
}
