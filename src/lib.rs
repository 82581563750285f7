//! Rill: a stream-processing engine with deep-learning inference built in.
//!
//! This crate is the facade: it re-exports the public API (records, values, the operator
//! traits, the registry) and offers [`registry`] with every built-in component and [`cli::main`]
//! so that a program with custom operators gets the same `rill` command line.
//!
//! ```
//! let registry = rill::registry();
//! let (sources, transforms, sinks) = registry.type_names();
//! assert!(sources.contains(&"file") && transforms.contains(&"filter") && sinks.contains(&"stdout"));
//! ```

pub use rill_connectors as connectors;
pub use rill_engine as engine;
pub use rill_engine::config::{ConfigError, ConfigErrors, PipelineConfig};
pub use rill_engine::expr::Expr;
pub use rill_engine::message::{Barrier, Epoch, Message, Watermark};
pub use rill_engine::operator::{Collector, Operator, OperatorContext, OperatorError, Sink};
pub use rill_engine::plan::JobPlan;
pub use rill_engine::columns::{Column, Columns};
pub use rill_engine::record::{Batch, Data, Record};
pub use rill_engine::registry::{BuildContext, Registry, SinkSpec, SourceSpec, TransformSpec};
pub use rill_engine::runtime::{run, JobReport, RunError, RunOptions};
pub use rill_engine::source::{Source, SourceContext, SourceOutput, SourceStatus};
pub use rill_engine::value::{Sym, Value};
pub use rill_operators as operators;

pub mod api;
pub mod client;
pub mod chaos;
pub mod cli;
pub mod scale_out;
pub mod schema;
pub mod unit;

/// A registry with every built-in source, transform and sink.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    rill_operators::register(&mut r);
    rill_connectors::register(&mut r);
    r
}
