//! From a checked pipeline to a job plan: component specs, parallelism and the exchange on every
//! edge. Building the plan is where `rill validate` finds unknown types, inputs that name
//! nothing, and cycles — all of them, each at its position.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use crate::config::{ConfigError, ConfigErrors, PipelineConfig, Role};
use crate::exchange::Exchange;
use crate::registry::{BuildContext, Registry, SinkSpec, SourceSpec, TransformSpec};

#[derive(Clone)]
pub enum NodeSpec {
    Source(SourceSpec),
    Transform(TransformSpec),
    Sink(SinkSpec),
}

/// One component in the plan.
#[derive(Clone)]
pub struct PlanNode {
    pub name: Arc<str>,
    pub type_name: String,
    pub role: Role,
    pub parallelism: u32,
    /// Why parallelism is lower than asked, if it is.
    pub parallelism_note: Option<String>,
    pub spec: NodeSpec,
    /// Output ports: index 0 is the main output, then side outputs.
    pub ports: Vec<String>,
    /// Sources: how records are stamped with time.
    pub time: crate::time::TimeMode,
}

/// A dataflow edge between two components.
#[derive(Clone, Debug)]
pub struct PlanEdge {
    pub from: usize,
    pub port: usize,
    pub to: usize,
    /// Which of `to`'s inputs this is (its place in `inputs:`).
    pub input: usize,
    pub exchange: Exchange,
}

/// A validated job, ready to run. Nodes are in topological order.
#[derive(Clone)]
pub struct JobPlan {
    pub config: PipelineConfig,
    pub nodes: Vec<PlanNode>,
    pub edges: Vec<PlanEdge>,
}

impl JobPlan {
    /// Builds the plan, collecting every problem.
    pub fn build(config: PipelineConfig, registry: &Registry) -> Result<JobPlan, ConfigErrors> {
        let mut errors = config.problems.clone();
        let (src_types, tr_types, sink_types) = registry.type_names();
        let mut built: Vec<Option<(NodeSpec, Vec<String>)>> = Vec::new();
        let mut times = Vec::new();
        for c in &config.components {
            match crate::time::TimeMode::from_options(c.event_time.as_ref(), c.ingestion_time.as_ref()) {
                Ok(t) => times.push(t),
                Err(mut es) => {
                    errors.append(&mut es.0);
                    times.push(crate::time::TimeMode::Processing);
                }
            }
            let ctx = BuildContext { name: &c.name, type_name: &c.type_name.value, options: &c.options, pipeline: &config, aggregates: registry.aggregates() };
            let t = c.type_name.value.as_str();
            type Built = Option<Result<(NodeSpec, Vec<String>), ConfigErrors>>;
            let (result, known): (Built, &Vec<&str>) = match c.role {
                Role::Source => (registry.source(t).map(|f| f(&ctx).map(|s| (NodeSpec::Source(s), vec![String::new()]))), &src_types),
                Role::Transform => (
                    registry.transform(t).map(|f| {
                        f(&ctx).map(|s| {
                            let mut ports = vec![String::new()];
                            ports.extend(s.side_outputs.iter().cloned());
                            (NodeSpec::Transform(s), ports)
                        })
                    }),
                    &tr_types,
                ),
                Role::Sink => (registry.sink(t).map(|f| f(&ctx).map(|s| (NodeSpec::Sink(s), Vec::new()))), &sink_types),
            };
            match result {
                None => {
                    let other = [(Role::Source, &src_types), (Role::Transform, &tr_types), (Role::Sink, &sink_types)]
                        .into_iter()
                        .find(|(r, names)| *r != c.role && names.contains(&t))
                        .map(|(r, _)| format!(" (`{t}` is a {} type: move it under `{}`)", &r.section()[..r.section().len() - 1], r.section()))
                        .unwrap_or_default();
                    errors.push(
                        ConfigError::new(Some(&c.type_name.span), format!("unknown {} type `{t}`{other}", &c.role.section()[..c.role.section().len() - 1]))
                            .hint(format!("known {}: {}", c.role.section(), known.join(", "))),
                    );
                    built.push(None);
                }
                Some(Err(mut es)) => {
                    errors.append(&mut es.0);
                    built.push(None);
                }
                Some(Ok(x)) => built.push(Some(x)),
            }
        }

        // Resolve inputs.
        let index: HashMap<&str, usize> = config.components.iter().enumerate().map(|(i, c)| (c.name.as_str(), i)).collect();
        let mut raw_edges: Vec<(usize, usize, usize)> = Vec::new(); // (from, port, to)
        let mut input_of_edge: Vec<usize> = Vec::new();
        for (to, c) in config.components.iter().enumerate() {
            if let Some((NodeSpec::Transform(TransformSpec { input_keys: Some(keys), .. }), _)) = &built[to] {
                if keys.len() != c.inputs.len() {
                    let at = c.inputs.get(keys.len()).map(|i| &i.span).unwrap_or(&c.type_name.span);
                    errors.push(
                        ConfigError::new(Some(at), format!("`{}` (`{}`) reads {} inputs; it names {}", c.name, c.type_name.value, keys.len(), c.inputs.len()))
                            .hint("write `inputs: [left, right]`: the first input is the left side, the second the right"),
                    );
                }
            }
            for (ordinal, input) in c.inputs.iter().enumerate() {
                let (name, port) = match input.value.split_once('.') {
                    Some((n, p)) => (n, Some(p)),
                    None => (input.value.as_str(), None),
                };
                let Some(&from) = index.get(name) else {
                    let names: Vec<&str> = config.components.iter().filter(|c| c.role != Role::Sink).map(|c| c.name.as_str()).collect();
                    errors.push(
                        ConfigError::new(Some(&input.span), format!("input `{}` of `{}` is not a component of this pipeline", input.value, c.name))
                            .hint(format!("inputs name sources or transforms: {}", names.join(", "))),
                    );
                    continue;
                };
                if config.components[from].role == Role::Sink {
                    errors.push(ConfigError::new(Some(&input.span), format!("`{name}` is a sink and has no output to read")));
                    continue;
                }
                if from == to {
                    errors.push(ConfigError::new(Some(&input.span), format!("`{name}` cannot read its own output")));
                    continue;
                }
                let port_index = match (port, &built[from]) {
                    (None, _) => 0,
                    (Some(p), Some((_, ports))) => match ports.iter().position(|x| x == p) {
                        Some(i) if i > 0 => i,
                        _ => {
                            let side: Vec<&str> = ports[1..].iter().map(String::as_str).collect();
                            errors.push(
                                ConfigError::new(Some(&input.span), format!("`{name}` has no output `{p}`")).hint(if side.is_empty() {
                                    format!("`{name}` has only its main output: write `{name}`")
                                } else {
                                    format!("outputs of `{name}`: {}", side.join(", "))
                                }),
                            );
                            continue;
                        }
                    },
                    (Some(_), None) => continue,
                };
                raw_edges.push((from, port_index, to));
                input_of_edge.push(ordinal);
            }
        }

        // Topological order (Kahn); whatever is left is on a cycle.
        let n = config.components.len();
        let mut indegree = vec![0usize; n];
        for &(_, _, to) in &raw_edges {
            indegree[to] += 1;
        }
        let mut order: Vec<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut head = 0;
        while head < order.len() {
            let u = order[head];
            head += 1;
            for &(from, _, to) in &raw_edges {
                if from == u {
                    indegree[to] -= 1;
                    if indegree[to] == 0 {
                        order.push(to);
                    }
                }
            }
        }
        if order.len() < n {
            // Left over: the cycles and whatever is downstream of them. Dropping, again and
            // again, the nodes none of whose outputs lead back into what is left keeps only
            // the cycles, named in the order their edges run.
            let mut left: Vec<bool> = (0..n).map(|i| !order.contains(&i)).collect();
            while let Some(i) = (0..n).find(|&i| left[i] && !raw_edges.iter().any(|&(from, _, to)| from == i && left[to])) {
                left[i] = false;
            }
            let mut on_cycle: Vec<usize> = Vec::new();
            let mut at = (0..n).find(|&i| left[i]);
            while let Some(u) = at.filter(|u| !on_cycle.contains(u)) {
                on_cycle.push(u);
                at = raw_edges.iter().find(|&&(from, _, to)| from == u && left[to]).map(|&(_, _, to)| to);
            }
            let names: Vec<&str> = on_cycle.iter().map(|&i| config.components[i].name.as_str()).collect();
            let first = &config.components[on_cycle[0]];
            errors.push(
                ConfigError::new(Some(&first.name_span), format!("the pipeline has a cycle through: {}", names.join(" → ")))
                    .hint("a dataflow must be acyclic: remove one of these `inputs` references"),
            );
        }
        if !errors.is_empty() {
            return Err(ConfigErrors(errors).scrubbed(&config.interpolated));
        }

        // Nodes in topological order.
        let position: HashMap<usize, usize> = order.iter().enumerate().map(|(pos, &i)| (i, pos)).collect();
        let mut nodes = Vec::with_capacity(n);
        for &i in &order {
            let c = &config.components[i];
            let (spec, ports) = built[i].take().expect("built without errors");
            let asked = c.parallelism.as_ref().map(|p| p.value).unwrap_or(config.parallelism);
            let (cap, why) = match &spec {
                NodeSpec::Source(s) => (s.max_parallelism, "this source cannot be split further"),
                NodeSpec::Transform(t) => (t.max_parallelism, "this transform runs as one instance"),
                NodeSpec::Sink(s) => (s.max_parallelism, "this sink writes one output"),
            };
            let mut parallelism = asked.min(cap.unwrap_or(u32::MAX));
            let mut note = (parallelism < asked).then(|| format!("{why} (asked for {asked})"));
            if matches!(&spec, NodeSpec::Transform(t) if t.key_by.is_some() || t.input_keys.is_some()) && parallelism > config.max_parallelism {
                note = Some(format!("keyed operators run at most max_parallelism = {} instances", config.max_parallelism));
                parallelism = config.max_parallelism;
            }
            let time = match (&spec, times[i].clone()) {
                // A source's own default drift where the pipeline gives none.
                (NodeSpec::Source(s), crate::time::TimeMode::Event { timestamp, max_out_of_orderness, idle_timeout, interval, .. })
                    if c.event_time.as_ref().and_then(|e| e.get("max_drift")).is_none() =>
                {
                    crate::time::TimeMode::Event { timestamp, max_out_of_orderness, idle_timeout, interval, max_drift: s.default_max_drift_ms }
                }
                (_, t) => t,
            };
            nodes.push(PlanNode {
                name: c.name.as_str().into(),
                type_name: c.type_name.value.clone(),
                role: c.role,
                parallelism,
                parallelism_note: note,
                spec,
                ports,
                time,
            });
        }
        let edges = raw_edges
            .into_iter()
            .zip(input_of_edge)
            .map(|((from, port, to), input)| {
                let (from, to) = (position[&from], position[&to]);
                let exchange = match &nodes[to].spec {
                    NodeSpec::Transform(TransformSpec { input_keys: Some(keys), .. }) => {
                        Exchange::Hash { key: keys[input].clone(), max_parallelism: config.max_parallelism }
                    }
                    NodeSpec::Transform(TransformSpec { key_by: Some(key), .. }) => {
                        Exchange::Hash { key: key.clone(), max_parallelism: config.max_parallelism }
                    }
                    NodeSpec::Sink(SinkSpec { key_by: Some(key), .. }) if nodes[to].parallelism > 1 => {
                        Exchange::Hash { key: key.clone(), max_parallelism: config.max_parallelism }
                    }
                    _ if nodes[to].parallelism == 1 && nodes[from].parallelism > 1 => Exchange::Single,
                    _ if nodes[to].parallelism == nodes[from].parallelism => Exchange::Forward,
                    _ => Exchange::Rebalance,
                };
                PlanEdge { from, port, to, input, exchange }
            })
            .collect();
        Ok(JobPlan { config, nodes, edges })
    }

    /// Indexes of the source nodes, in plan order (a record's `origin.source` indexes this).
    pub fn sources(&self) -> Vec<usize> {
        self.nodes.iter().enumerate().filter(|(_, n)| n.role == Role::Source).map(|(i, _)| i).collect()
    }

    fn describe(&self, i: usize) -> &str {
        match &self.nodes[i].spec {
            NodeSpec::Source(s) => &s.description,
            NodeSpec::Transform(t) => &t.description,
            NodeSpec::Sink(s) => &s.description,
        }
    }

    fn edge_label(&self, e: &PlanEdge) -> String {
        let port = &self.nodes[e.from].ports.get(e.port).cloned().unwrap_or_default();
        if port.is_empty() {
            e.exchange.name()
        } else {
            format!("{port}: {}", e.exchange.name())
        }
    }

    /// The dataflow as indented text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "job `{}`: {} components, {} instances", self.config.name, self.nodes.len(), self.nodes.iter().map(|n| n.parallelism).sum::<u32>());
        for (i, n) in self.nodes.iter().enumerate() {
            let role = &n.role.section()[..n.role.section().len() - 1];
            let _ = write!(s, "\n{} ({role} `{}`), parallelism {}", n.name, n.type_name, n.parallelism);
            if let Some(note) = &n.parallelism_note {
                let _ = write!(s, " — {note}");
            }
            let _ = write!(s, "\n    {}", self.describe(i));
            if n.role == Role::Source && !matches!(n.time, crate::time::TimeMode::Processing) {
                let _ = write!(s, "; {}", n.time.describe());
            }
            for e in self.edges.iter().filter(|e| e.to == i) {
                let _ = write!(s, "\n    <- {} via {}", self.nodes[e.from].name, self.edge_label(e));
            }
        }
        s.push('\n');
        s
    }

    /// The dataflow as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut s = String::from("flowchart LR\n");
        for (i, n) in self.nodes.iter().enumerate() {
            let (open, close) = match n.role {
                Role::Source => ("([", "])"),
                Role::Transform => ("[", "]"),
                Role::Sink => ("[(", ")]"),
            };
            let _ = writeln!(s, "    n{i}{open}\"{}<br/>{} ×{}\"{close}", n.name, n.type_name, n.parallelism);
        }
        for e in &self.edges {
            let _ = writeln!(s, "    n{} -->|\"{}\"| n{}", e.from, self.edge_label(e).replace('"', "'"), e.to);
        }
        s
    }

    /// The dataflow in Graphviz DOT.
    pub fn to_dot(&self) -> String {
        let mut s = format!("digraph \"{}\" {{\n    rankdir=LR;\n", self.config.name.replace('"', "'"));
        for (i, n) in self.nodes.iter().enumerate() {
            let shape = match n.role {
                Role::Source => "invhouse",
                Role::Transform => "box",
                Role::Sink => "house",
            };
            let _ = writeln!(s, "    n{i} [shape={shape}, label=\"{}\\n{} ×{}\"];", n.name, n.type_name, n.parallelism);
        }
        for e in &self.edges {
            let _ = writeln!(s, "    n{} -> n{} [label=\"{}\"];", e.from, e.to, self.edge_label(e).replace('"', "'"));
        }
        s.push_str("}\n");
        s
    }
}
