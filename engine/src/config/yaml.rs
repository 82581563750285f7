//! A YAML document as a tree of nodes that remember where they were written.
//!
//! Built from `saphyr-parser` events. Every node carries its [`Span`] so that any problem found
//! later (an unknown option, a bad expression, an input that names nothing) is reported at its
//! file:line:column.

use std::fmt;
use std::sync::Arc;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Where a node was written: file (or `--set N`), 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub file: Arc<str>,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A scalar and whether it was written plain (unquoted): only plain scalars can be numbers,
    /// booleans or null.
    Scalar { text: String, plain: bool },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub span: Span,
    pub kind: NodeKind,
}

/// A document that is not valid YAML.
#[derive(Clone, Debug)]
pub struct SyntaxError {
    pub span: Span,
    pub message: String,
}

impl Node {
    /// Parses a whole document. An empty document is an empty map.
    pub fn parse(text: &str, file: &str) -> Result<Node, SyntaxError> {
        let file: Arc<str> = file.into();
        let mut parser = Parser::new_from_str(text);
        let mut stack: Vec<(Node, Option<Node>)> = Vec::new();
        let mut anchors: std::collections::HashMap<usize, Node> = Default::default();
        let mut anchor_stack: Vec<usize> = Vec::new();
        let mut root: Option<Node> = None;
        let span_of = |m: &saphyr_parser::Marker| Span { file: file.clone(), line: m.line(), column: m.col() + 1 };
        while let Some(ev) = parser.next_event() {
            let (ev, span) = ev.map_err(|e| SyntaxError {
                span: span_of(e.marker()),
                message: e.info().to_string(),
            })?;
            let here = span_of(&span.start);
            let finished: Option<(Node, usize)> = match ev {
                Event::Scalar(text, style, anchor, _tag) => {
                    let mut span = here;
                    if matches!(style, ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted) {
                        // Point at the text, so that columns inside it (an expression's) add up.
                        span.column += 1;
                    }
                    Some((Node { span, kind: NodeKind::Scalar { text: text.into_owned(), plain: style == ScalarStyle::Plain } }, anchor))
                }
                Event::SequenceStart(anchor, _) => {
                    stack.push((Node { span: here, kind: NodeKind::Seq(Vec::new()) }, None));
                    anchor_stack.push(anchor);
                    None
                }
                Event::MappingStart(anchor, _) => {
                    stack.push((Node { span: here, kind: NodeKind::Map(Vec::new()) }, None));
                    anchor_stack.push(anchor);
                    None
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let (n, _) = stack.pop().expect("parser balances start and end events");
                    Some((n, anchor_stack.pop().unwrap_or(0)))
                }
                Event::Alias(id) => match anchors.get(&id) {
                    Some(n) => Some((n.clone(), 0)),
                    None => return Err(SyntaxError { span: here, message: "alias to an unknown anchor".into() }),
                },
                Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => None,
            };
            let Some((node, anchor)) = finished else { continue };
            if anchor != 0 {
                anchors.insert(anchor, node.clone());
            }
            match stack.last_mut() {
                None => {
                    if root.is_none() {
                        root = Some(node);
                    }
                }
                Some((parent, pending_key)) => match &mut parent.kind {
                    NodeKind::Seq(items) => items.push(node),
                    NodeKind::Map(entries) => match pending_key.take() {
                        None => *pending_key = Some(node),
                        Some(k) => entries.push((k, node)),
                    },
                    NodeKind::Scalar { .. } => unreachable!("scalars are never on the stack"),
                },
            }
        }
        Ok(root.unwrap_or(Node {
            span: Span { file, line: 1, column: 1 },
            kind: NodeKind::Map(Vec::new()),
        }))
    }

    /// The scalar text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// Whether this is `null`, `~` or an empty plain scalar.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { text, plain: true } if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    pub fn entries(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(e) => Some(e),
            _ => None,
        }
    }

    /// The value under `key` in a map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entries()?.iter().find(|(k, _)| k.as_str() == Some(key)).map(|(_, v)| v)
    }

    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } if self.is_null() => "null",
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a map",
        }
    }

    /// Sets the value at a dotted path (`sources.orders.path`), creating maps on the way;
    /// used by `--set`.
    pub fn set_path(&mut self, path: &[&str], value: Node) -> Result<(), String> {
        let Some((first, rest)) = path.split_first() else {
            *self = value;
            return Ok(());
        };
        if let NodeKind::Seq(items) = &mut self.kind {
            let i: usize = first.parse().map_err(|_| format!("`{first}` is not a list index"))?;
            let n = items.len();
            let item = items.get_mut(i).ok_or_else(|| format!("index {i} is out of range (the list has {n} items)"))?;
            return item.set_path(rest, value);
        }
        if !matches!(self.kind, NodeKind::Map(_)) {
            if self.is_null() {
                self.kind = NodeKind::Map(Vec::new());
            } else {
                return Err(format!("`{first}` cannot be set inside {}", self.kind_name()));
            }
        }
        let NodeKind::Map(entries) = &mut self.kind else { unreachable!("made a map above") };
        if let Some((_, v)) = entries.iter_mut().find(|(k, _)| k.as_str() == Some(*first)) {
            return v.set_path(rest, value);
        }
        let key = Node { span: value.span.clone(), kind: NodeKind::Scalar { text: first.to_string(), plain: true } };
        let mut child = Node { span: value.span.clone(), kind: NodeKind::Map(Vec::new()) };
        child.set_path(rest, value)?;
        entries.push((key, child));
        Ok(())
    }

    /// Removes the option at a dotted path (`--set path=null`); whether it was there.
    pub fn remove_path(&mut self, path: &[&str]) -> bool {
        let Some((last, parents)) = path.split_last() else { return false };
        let mut node = self;
        for p in parents {
            let next = match &mut node.kind {
                NodeKind::Map(entries) => entries.iter_mut().find(|(k, _)| k.as_str() == Some(*p)).map(|(_, v)| v),
                NodeKind::Seq(items) => p.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
                NodeKind::Scalar { .. } => None,
            };
            let Some(next) = next else { return false };
            node = next;
        }
        let NodeKind::Map(entries) = &mut node.kind else { return false };
        let before = entries.len();
        entries.retain(|(k, _)| k.as_str() != Some(*last));
        entries.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_values() {
        let n = Node::parse("a: 1\nb:\n  c: [x, 'y']\n", "p.yaml").unwrap();
        let c = n.get("b").unwrap().get("c").unwrap();
        assert_eq!((c.span.line, c.span.column), (3, 6));
        let NodeKind::Seq(items) = &c.kind else { panic!() };
        assert_eq!(items[1].kind, NodeKind::Scalar { text: "y".into(), plain: false });
        assert_eq!(items[1].span.to_string(), "p.yaml:3:11", "quoted: the first character inside the quotes");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = Node::parse("a: [1, 2\nb: 3\n", "p.yaml").unwrap_err();
        assert_eq!(&*e.span.file, "p.yaml");
        assert!(e.span.line >= 2, "{e:?}");
    }

    #[test]
    fn remove_path_takes_an_option_out() {
        let mut n = Node::parse("a: {b: 1, c: 2}\nl: [{x: 1}]\n", "p").unwrap();
        assert!(n.remove_path(&["a", "b"]));
        assert!(n.get("a").unwrap().get("b").is_none() && n.get("a").unwrap().get("c").is_some());
        assert!(n.remove_path(&["l", "0", "x"]));
        assert!(!n.remove_path(&["a", "zz"]) && !n.remove_path(&["nope", "b"]));
    }

    #[test]
    fn set_path_creates_and_replaces() {
        let mut n = Node::parse("a: {b: 1}\n", "p").unwrap();
        let v = Node::parse("2", "--set").unwrap();
        n.set_path(&["a", "b"], v.clone()).unwrap();
        n.set_path(&["x", "y"], v).unwrap();
        assert_eq!(n.get("a").unwrap().get("b").unwrap().as_str(), Some("2"));
        assert_eq!(n.get("x").unwrap().get("y").unwrap().as_str(), Some("2"));
    }
}
