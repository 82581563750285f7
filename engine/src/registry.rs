//! Component types by name: the explicit map from a YAML `type:` to the code that builds it.
//!
//! Built-ins are registered by the `rill` facade; a custom operator is one
//! [`Registry::register_transform`] call. Each factory checks its component's options (returning
//! every problem with its position) and returns a spec that says how to make one instance per
//! subtask. Instances are made on the thread they run on, so they need not be `Send`.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{from_node, ConfigError, ConfigErrors, Node, Ordered, PipelineConfig, Spanned};
use crate::value::Sym;
use crate::expr::Expr;
use crate::operator::{Operator, OperatorContext, OperatorError, Sink};
use crate::source::{Source, SourceContext};

/// What a factory gets: the component's name and options, and the pipeline around it.
pub struct BuildContext<'a> {
    pub name: &'a str,
    pub type_name: &'a str,
    pub options: &'a Node,
    pub pipeline: &'a PipelineConfig,
    /// Aggregate functions (built-in and registered), for `fn(expression)` options.
    pub aggregates: &'a crate::aggregate::AggregateRegistry,
}

impl BuildContext<'_> {
    /// Deserializes the component's options (`type`, `inputs` and `parallelism` removed).
    pub fn options<'de, T: serde::Deserialize<'de>>(&'de self) -> Result<T, ConfigErrors> {
        from_node(self.options).map_err(|e| {
            let mut e: ConfigError = e.into();
            if e.message.contains("unknown field") {
                e.hint = Some(format!("`{}` components take the options listed in the README under `{}`", self.type_name, self.type_name));
            }
            ConfigErrors(crate::config::every_unknown_field(self.options, e))
        })
    }

    /// Compiles a `name: expression` map (`map` fields, generator fields), collecting every
    /// error.
    pub fn named_exprs(&self, map: &Ordered<Spanned<String>>) -> Result<Vec<(Sym, Expr)>, Vec<ConfigError>> {
        let mut out = Vec::with_capacity(map.0.len());
        let mut errors = Vec::new();
        for (name, src) in &map.0 {
            match self.expr(src) {
                Ok(e) => out.push((Sym::new(name), e)),
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// Compiles an expression option, reporting errors at its position.
    /// Compiles a condition: an expression that must give a bool (checked where the type is
    /// known before any record arrives).
    pub fn condition(&self, source: &Spanned<String>) -> Result<Expr, ConfigError> {
        let e = self.expr(source)?;
        match e.not_a_condition() {
            Some(why) => Err(ConfigError::new(Some(&source.span), format!("condition {why}")).hint("write a comparison, e.g. `amount > 100.0`, or combine them with `&&` and `||`")),
            None => Ok(e),
        }
    }

    pub fn expr(&self, source: &Spanned<String>) -> Result<Expr, ConfigError> {
        Expr::compile_with(&source.value, &self.pipeline.keys).map_err(|e| {
            let mut span = source.span.clone();
            if e.line == 1 {
                span.column += e.column - 1;
            } else {
                span.line += e.line - 1;
                span.column = e.column;
            }
            ConfigError::new(Some(&span), format!("in expression `{}`: {}", source.value, e.message))
                .hint("expressions use CEL syntax: fields by name, `&&`, `||`, `==`, 'strings', functions like `double(x)`, `coalesce(a, b)`")
        })
    }
}

pub type MakeSource = Arc<dyn Fn(&SourceContext) -> Result<Box<dyn Source>, OperatorError> + Send + Sync>;
pub type MakeOperator = Arc<dyn Fn(&OperatorContext) -> Result<Box<dyn Operator>, OperatorError> + Send + Sync>;
pub type MakeSink = Arc<dyn Fn(&OperatorContext) -> Result<Box<dyn Sink>, OperatorError> + Send + Sync>;

/// A checked source component.
#[derive(Clone)]
pub struct SourceSpec {
    pub make: MakeSource,
    /// Upper bound on instances (a single file can only be read by one).
    pub max_parallelism: Option<u32>,
    /// Whether a checkpoint taken at another parallelism can be restored
    /// ([`Source::restore_rescaled`](crate::source::Source::restore_rescaled)).
    pub rescalable: bool,
    /// One line for `rill graph`.
    pub description: String,
    /// Event time an instance may run ahead of the slowest event-time source instance, beyond
    /// its own last poll, unless the pipeline says (`event_time.max_drift`): 2 s
    /// ([`DEFAULT_MAX_DRIFT_MS`](crate::time::DEFAULT_MAX_DRIFT_MS)) for sources whose reads
    /// arrive unevenly (a broker's fetches); 0 for those that read as fast as they are asked
    /// (files, the generator), so that rows of the side ahead do not wait in a join's state.
    pub default_max_drift_ms: i64,
}

/// A checked transform component.
#[derive(Clone)]
pub struct TransformSpec {
    pub make: MakeOperator,
    /// Records are routed to instances by this key (hash exchange on the input).
    pub key_by: Option<Expr>,
    /// An operator of several inputs keyed on each (a join): the key of input `i` (in the
    /// order of `inputs:`) routes that input. The pipeline must give exactly this many inputs;
    /// the operator learns which input a batch came from in
    /// [`Operator::process_input`](crate::operator::Operator::process_input).
    pub input_keys: Option<Vec<Expr>>,
    /// Names of side outputs (`inputs: [name.port]`), in the order used by
    /// [`Collector::emit_side`](crate::operator::Collector::emit_side).
    pub side_outputs: Vec<String>,
    pub max_parallelism: Option<u32>,
    pub description: String,
}

/// A checked sink component.
#[derive(Clone)]
pub struct SinkSpec {
    pub make: MakeSink,
    pub max_parallelism: Option<u32>,
    pub description: String,
    /// With checkpoints, its output is exactly-once (it stages at barriers and publishes on
    /// completion, and recovers what a crash left); else at-least-once. `rill validate` says so.
    pub exactly_once: bool,
    /// Records with the same value of this expression go to the same instance (an upsert
    /// sink: one writer per key).
    pub key_by: Option<Expr>,
    /// Can be restored at another parallelism ([`Sink::recover_rescaled`](crate::operator::Sink::recover_rescaled)).
    pub rescalable: bool,
}

impl SourceSpec {
    pub fn new<S: Source>(description: impl Into<String>, make: impl Fn(&SourceContext) -> Result<S, OperatorError> + Send + Sync + 'static) -> SourceSpec {
        SourceSpec {
            make: Arc::new(move |c| make(c).map(|s| Box::new(s) as Box<dyn Source>)),
            max_parallelism: None,
            rescalable: false,
            description: description.into(),
            default_max_drift_ms: crate::time::DEFAULT_MAX_DRIFT_MS,
        }
    }
}

impl TransformSpec {
    pub fn new<O: Operator>(description: impl Into<String>, make: impl Fn(&OperatorContext) -> Result<O, OperatorError> + Send + Sync + 'static) -> TransformSpec {
        TransformSpec {
            make: Arc::new(move |c| make(c).map(|o| Box::new(o) as Box<dyn Operator>)),
            key_by: None,
            input_keys: None,
            side_outputs: Vec::new(),
            max_parallelism: None,
            description: description.into(),
        }
    }
}

impl SinkSpec {
    pub fn new<S: Sink>(description: impl Into<String>, make: impl Fn(&OperatorContext) -> Result<S, OperatorError> + Send + Sync + 'static) -> SinkSpec {
        SinkSpec {
            make: Arc::new(move |c| make(c).map(|s| Box::new(s) as Box<dyn Sink>)),
            max_parallelism: None,
            description: description.into(),
            exactly_once: false,
            key_by: None,
            rescalable: false,
        }
    }
}

type Factory<T> = Arc<dyn Fn(&BuildContext) -> Result<T, ConfigErrors> + Send + Sync>;

/// Component types by name.
#[derive(Clone, Default)]
pub struct Registry {
    aggregates: crate::aggregate::AggregateRegistry,
    sources: BTreeMap<String, Factory<SourceSpec>>,
    transforms: BTreeMap<String, Factory<TransformSpec>>,
    sinks: BTreeMap<String, Factory<SinkSpec>>,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    pub fn register_source(&mut self, type_name: &str, f: impl Fn(&BuildContext) -> Result<SourceSpec, ConfigErrors> + Send + Sync + 'static) {
        self.sources.insert(type_name.into(), Arc::new(f));
    }

    pub fn register_transform(&mut self, type_name: &str, f: impl Fn(&BuildContext) -> Result<TransformSpec, ConfigErrors> + Send + Sync + 'static) {
        self.transforms.insert(type_name.into(), Arc::new(f));
    }

    pub fn register_sink(&mut self, type_name: &str, f: impl Fn(&BuildContext) -> Result<SinkSpec, ConfigErrors> + Send + Sync + 'static) {
        self.sinks.insert(type_name.into(), Arc::new(f));
    }

    /// Registers a user-defined aggregate function, usable as `name(expression)` in
    /// `aggregate` and `window` components.
    pub fn register_aggregate(&mut self, name: &str, f: impl crate::aggregate::AggregateFunction + 'static) {
        self.aggregates.register(name, f);
    }

    pub fn aggregates(&self) -> &crate::aggregate::AggregateRegistry {
        &self.aggregates
    }

    pub(crate) fn source(&self, t: &str) -> Option<&Factory<SourceSpec>> {
        self.sources.get(t)
    }
    pub(crate) fn transform(&self, t: &str) -> Option<&Factory<TransformSpec>> {
        self.transforms.get(t)
    }
    pub(crate) fn sink(&self, t: &str) -> Option<&Factory<SinkSpec>> {
        self.sinks.get(t)
    }

    /// The option names of a component type (as its options struct declares them; `None` if
    /// its factory does not read them into one), for `rill schema`: its factory is called with
    /// no options inside [`crate::config::de::option_names`].
    pub fn option_names(&self, role: crate::config::Role, type_name: &str, pipeline: &PipelineConfig) -> Option<&'static [&'static str]> {
        use crate::config::Role;
        let options = Node::parse("{}", "<schema>").expect("an empty map");
        let ctx = BuildContext { name: "probe", type_name, options: &options, pipeline, aggregates: &self.aggregates };
        crate::config::de::option_names(|| match role {
            Role::Source => drop(self.sources.get(type_name).map(|f| f(&ctx))),
            Role::Transform => drop(self.transforms.get(type_name).map(|f| f(&ctx))),
            Role::Sink => drop(self.sinks.get(type_name).map(|f| f(&ctx))),
        })
    }

    /// Registered type names: (sources, transforms, sinks).
    pub fn type_names(&self) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
        (
            self.sources.keys().map(String::as_str).collect(),
            self.transforms.keys().map(String::as_str).collect(),
            self.sinks.keys().map(String::as_str).collect(),
        )
    }
}
